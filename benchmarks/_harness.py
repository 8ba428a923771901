"""Shared benchmark plumbing: thread pinning, child processes with peak memory, result files.

Every method runs in its own child process so that its peak resident memory is its own, and
every child gets the same thread limits (OpenMP, OpenBLAS, MKL, XLA) and is pinned to the same
`threads` CPUs, which also bounds the thread pools that no variable sizes (XLA's, torch's).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def thread_env(threads: int, extra_xla_flags: str = "") -> dict[str, str]:
    """Environment variables that cap every numeric library at `threads` threads.

    `extra_xla_flags` is appended to ``XLA_FLAGS`` (for example a simulated device count).
    """
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    # XLA's own threads are bounded by the CPUs the child is pinned to (`pinned_cpus`); until
    # 2026-12-04 a bare ``intra_op_parallelism_threads=N`` (not an XLA flag) followed, which
    # made the integration VAE's epochs 15% slower (ECCITE-seq 0.205 against 0.179 s)
    env["XLA_FLAGS"] = (
        f"{extra_xla_flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def pinned_cpus(threads: int) -> list[int]:
    """The first `threads` CPUs this process may run on (every child gets the same ones)."""
    return sorted(os.sched_getaffinity(0))[:threads]


def run_child(
    cmd: list[str], *, threads: int, timeout: float | None = None, extra_xla_flags: str = ""
) -> dict:
    """Run `cmd` on `pinned_cpus`; return its wall time, exit status and peak memory (MiB)."""
    cpus = pinned_cpus(threads)
    start = time.perf_counter()
    env = thread_env(threads, extra_xla_flags)
    proc = subprocess.Popen(cmd, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if timeout is not None and elapsed > timeout:
        print(f"warning: {cmd[:3]} took {elapsed:.0f} s (> {timeout:.0f} s)", file=sys.stderr)
    return {
        "returncode": proc.returncode,
        "wall_seconds": elapsed,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
    }


def machine() -> dict:
    """What the benchmark ran on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d"),
    }


def merge_previous(name: str, payload: dict, key: str, methods: list[str]) -> None:
    """Start ``payload[key]`` from the last run's results (``--update``), noting what reran."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return
    kept = json.loads(path.read_text())
    payload[key] = kept[key]
    payload["updated"] = kept.get("updated", []) + [
        {"methods": methods, "date": payload["machine"]["date"]}
    ]


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return both paths."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    for path, text in ((json_path, json.dumps(payload, indent=2) + "\n"), (md_path, markdown)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path
