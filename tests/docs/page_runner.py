"""Run the Python blocks of one page of the guide, as a reader would, in a worker process.

The blocks of a page run in order in one namespace, in the page's own folder. A block marked
``<!-- skip: reason -->`` is skipped; after a failing block the rest of the page is skipped.
Pages run in worker processes (`conftest.page_results`), so that the guide's examples, which
mostly compile JAX programs on one core, use every core of the machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import traceback
from pathlib import Path

from tests.docs.markdown_blocks import code_blocks


def init_worker(log_path: str) -> None:
    """Apply the test suite's JAX and matplotlib settings; send raw output to `log_path`.

    XLA's optimisation passes are switched off (`jax_disable_most_optimizations`): on the
    guide's small examples compilation dominates, and the programs compute the same values
    up to floating-point rounding.
    """
    import warnings

    import jax

    import tests.conftest  # noqa: F401 - strict rank promotion, the Agg backend

    # as pyproject's filterwarnings for the main process
    warnings.filterwarnings("error", category=DeprecationWarning, module="diffomics.*")
    # the examples run on small data, where XLA's optimisation passes cost more time than
    # they save (about a fifth of the guide's test time)
    jax.config.update("jax_disable_most_optimizations", True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run_page(page: str, workdir: str) -> list[dict]:
    """Run every block of `page` in `workdir`; one record per block, in order.

    Each record has ``line`` (the block's first code line), ``status`` (``"passed"``,
    ``"failed"`` or ``"skipped"``), ``reason`` (skips), ``traceback`` (failures),
    ``output`` (what the block printed) and ``seconds``.
    """
    import matplotlib.pyplot as plt

    path = Path(page)
    namespace: dict = {"__name__": "__docs__"}
    records, failed = [], None
    for block in code_blocks(path):
        record = {"line": block.line, "status": "passed", "reason": "", "traceback": "",
                  "output": "", "seconds": 0.0}  # fmt: skip
        if block.skip is not None:
            record.update(status="skipped", reason=f"marked in the guide: {block.skip}")
        elif failed is not None:
            reason = f"an earlier block of the page failed ({failed})"
            record.update(status="skipped", reason=reason)
        else:
            # keep the page's line numbers, so tracebacks point into the Markdown file
            code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
            output = io.StringIO()
            previous = os.getcwd()
            start = time.perf_counter()
            try:
                os.chdir(workdir)
                with contextlib.redirect_stdout(output):
                    exec(code, namespace)  # noqa: S102 - the guide's own examples
            except Exception:  # noqa: BLE001 - reported to the test that owns the block
                record.update(status="failed", traceback=traceback.format_exc())
                failed = block.name
            finally:
                os.chdir(previous)
                plt.close("all")
            record.update(output=output.getvalue(), seconds=time.perf_counter() - start)
        records.append(record)
    return records
