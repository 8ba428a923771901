"""Every ```python block of the guide runs, in order, on small data.

The blocks of one page share a namespace (as a reader running them one after the other),
each page runs in its own temporary folder, and a block preceded by
``<!-- skip: reason -->`` is skipped with that reason. The pages run in worker processes
(see `conftest.page_results`); each test reports its block's result.
"""

from __future__ import annotations

import pytest

from tests.docs.markdown_blocks import CodeBlock, code_blocks, pages

BLOCKS = [block for page in pages() for block in code_blocks(page)]


def test_the_guide_has_examples():
    assert len(BLOCKS) >= 10
    assert all(b.skip is None or b.skip.strip() for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_code_block_runs(block: CodeBlock, page_results):
    try:
        records = page_results.records(block.page)
    except Exception as err:
        log = page_results.log.read_text(errors="replace") if page_results.log.exists() else ""
        pytest.fail(f"the worker running {block.page.name} failed: {err!r}\n{log[-5000:]}")
    record = next(r for r in records if r["line"] == block.line)
    if record["status"] == "skipped":
        pytest.skip(record["reason"])
    if record["status"] == "failed":
        pytest.fail(
            f"{block.name} failed:\n{record['traceback']}\nprinted:\n{record['output']}",
            pytrace=False,
        )
    print(record["output"])
