"""Session fixtures that run the slow parts of the guide's tests in child processes.

- `page_results`: the pages' Python blocks, one page per task, in a pool of worker processes
  (`page_runner.run_page`); each test of `test_examples.py` waits for its page's results.
- `site_build`: ``mkdocs build --strict`` of the whole guide; `test_site_build.py` waits.

In a plain pytest run both start with the folder's first selected test and the pool has two
workers, so the build (one CPU-bound Python process) and the examples (mostly JAX
compilation, one core each) run side by side. Under pytest-xdist, which already runs test
files in parallel (``--dist loadfile``), nothing starts early and the pool has one worker;
pages are submitted when their first test runs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.markdown_blocks import DOCS, ROOT
from tests.docs.page_runner import init_worker, run_page

BUILD_TIMEOUT_S = 600
PAGE_TIMEOUT_S = 900
SINGLE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Pages that train models go first, so that the pool ends with the short ones.
HEAVY_FOLDERS = ("operators",)


def _under_xdist() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


@dataclasses.dataclass
class SiteBuild:
    """A running (then finished) ``mkdocs build --strict`` into `site_dir`."""

    process: subprocess.Popen
    site_dir: Path
    log: Path

    def wait(self) -> tuple[int, str]:
        """Exit status and the build's output (stdout and stderr)."""
        try:
            code = self.process.wait(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return code, self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def site_build(tmp_path_factory):
    """Start the strict build of the guide; yields a `SiteBuild`."""
    folder = tmp_path_factory.mktemp("docs_build")
    site_dir, log = folder / "site", folder / "mkdocs.log"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's start-up banner
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
           str(ROOT / "mkdocs.yml"), "--site-dir", str(site_dir)]  # fmt: skip
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    build = SiteBuild(process, site_dir, log)
    yield build
    if process.poll() is None:
        process.kill()
        process.wait()


@dataclasses.dataclass
class PageResults:
    """Pages run in the worker pool: `submit` them (once), `records` waits for one."""

    pool: multiprocessing.pool.Pool
    folder: Path
    log: Path
    pending: dict = dataclasses.field(default_factory=dict)

    def submit(self, page: Path) -> None:
        """Queue `page` (no-op when it is queued already)."""
        if page not in self.pending:
            name = page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "_")
            workdir = self.folder / name
            workdir.mkdir()
            self.pending[page] = self.pool.apply_async(run_page, (str(page), str(workdir)))

    def records(self, page: Path) -> list[dict]:
        """The records of `page`'s blocks (see `page_runner.run_page`)."""
        self.submit(page)
        return self.pending[page].get(timeout=PAGE_TIMEOUT_S)


def _selected_pages(session) -> list[Path]:
    pages = []
    for item in session.items:
        block = getattr(item, "callspec", None) and item.callspec.params.get("block")
        if block is not None and block.page not in pages:
            pages.append(block.page)
    # the longest first, so that the pool ends with short pages: pages that train models
    # first, the longer files of those first
    return sorted(
        pages,
        key=lambda p: (not any(f in p.parts for f in HEAVY_FOLDERS), -p.stat().st_size, p),
    )


@pytest.fixture(scope="session")
def page_results(tmp_path_factory):
    """A pool of worker processes for the guide's pages; yields a `PageResults`."""
    folder = tmp_path_factory.mktemp("docs_examples")
    log = folder / "workers.log"
    n_workers = 1 if _under_xdist() else max(1, min(2, os.cpu_count() or 1))
    # one thread per library and worker: the workers share the cores, and BLAS threads that
    # spin-wait for a busy core make a small eigendecomposition 100 times slower
    saved = dict(os.environ)
    os.environ.update({name: "1" for name in SINGLE_THREAD})
    os.environ["XLA_FLAGS"] = (
        saved.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()
    try:
        pool = multiprocessing.get_context("spawn").Pool(
            n_workers, initializer=init_worker, initargs=(str(log),)
        )
    finally:  # the workers have copied the environment
        os.environ.clear()
        os.environ.update(saved)
    yield PageResults(pool, folder, log)
    pool.terminate()
    pool.join()


@pytest.fixture(scope="session", autouse=True)
def _start_early(request):
    """In a plain run, start the examples and the build with the folder's first test."""
    if _under_xdist():
        return
    names = {item.path.name for item in request.session.items}
    if "test_examples.py" in names:
        results = request.getfixturevalue("page_results")
        for page in _selected_pages(request.session):
            results.submit(page)
    if "test_site_build.py" in names:
        request.getfixturevalue("site_build")
