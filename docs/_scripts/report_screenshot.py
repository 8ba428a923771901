"""Screenshot of the demo report for the README: ``python docs/_scripts/report_screenshot.py``.

Needs ``make demo`` first (it writes ``demo_out/report.html``) and Debian's chromium. Writes
``docs/images/demo_report.png``: the top of the page at 1200 x 1500 CSS pixels.
"""

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """Load the demo report in headless Chromium and save the top of the page as a PNG."""
    report = ROOT / "demo_out" / "report.html"
    if not report.is_file():
        sys.exit(f"{report} is missing: run `make demo` first.")
    target = ROOT / "docs" / "images" / "demo_report.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        page.goto(report.as_uri(), wait_until="load")
        page.screenshot(path=target)
        browser.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
