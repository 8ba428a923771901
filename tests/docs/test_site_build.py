"""The guide builds offline in strict mode and loads nothing from the network; its figures are
small and each is shown somewhere.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.docs.markdown_blocks import DOCS, ROOT, pages

MAX_IMAGE_BYTES = 300_000
#: Anything the rendered pages would fetch from another host (scripts, styles, images, fonts).
_REMOTE = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=[\"'](?:https?:)?//"
    r"|<link\b[^>]*\brel=[\"'](?:stylesheet|preconnect|preload|icon)[\"'][^>]*\bhref=[\"'](?:https?:)?//"
    r"|<link\b[^>]*\bhref=[\"'](?:https?:)?//[^>]*\brel=[\"'](?:stylesheet|preconnect|preload|icon)"
    r"|@import\s+url\([\"']?(?:https?:)?//"
)
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")


def test_docs_dependencies_are_installed():
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None]  # fmt: skip
    assert not missing, f"install the docs extra: pip install -e '.[docs]' (missing {missing})"


def test_site_builds_strict_and_offline(site_build):
    code, output = site_build.wait()
    assert code == 0, f"mkdocs build --strict failed:\n{output}"
    assert "WARNING" not in output, output
    html = sorted(site_build.site_dir.rglob("*.html"))
    assert len(html) >= len(pages())
    for path in html:
        match = _REMOTE.search(path.read_text(encoding="utf-8"))
        assert match is None, f"{path.relative_to(site_build.site_dir)} loads {match.group(0)}"
    for page in pages():
        built = site_build.site_dir / page.relative_to(DOCS).with_suffix("")
        if page.name == "index.md":
            built = built.parent
        assert (built / "index.html").is_file() or page.stem == "index", page


@pytest.mark.parametrize("image", sorted((DOCS / "images").glob("*.png")), ids=lambda p: p.name)
def test_figure_is_small_and_used(image):
    assert image.stat().st_size < MAX_IMAGE_BYTES, f"{image.name}: {image.stat().st_size} bytes"
    used = {
        (page.parent / target).resolve()
        for page in [*pages(), ROOT / "README.md"]
        for target in _IMAGE.findall(page.read_text(encoding="utf-8"))
    }
    assert image.resolve() in used, f"{image.name} is shown on no page (nor in README.md)"
