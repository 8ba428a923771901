"""``diffomics bench``: time each analysis on the bundled data on this machine.

Every analysis runs twice in one process on the same inputs: the first call includes JAX's
JIT compilation, the second reuses the compiled programs (steady state). Peer tools are not
run here (they are not dependencies of the package); the side-by-side comparisons are the
``make bench`` targets of a source checkout, whose results are in ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from diffomics.cli._io import UserError, atomic
from diffomics.cli._report import Section

__all__ = ["ANALYSES", "run_bench"]


def _deconvolution() -> tuple[Callable[[], object], str]:
    from diffomics.sources import SeqFISHSource
    from diffomics.spatial import deconvolve, pool_pseudo_spots

    source = SeqFISHSource()
    spots = pool_pseudo_spots(source.spatial, "cell_type", spot_size=250.0)
    reference = source.reference

    def run():
        return deconvolve(spots, reference, "cell_type", likelihood="gaussian", progress=False)

    return run, f"seqFISH cortex: {spots.n_obs} pseudo-spots, {reference.n_obs} reference cells"


def _spatial_genes() -> tuple[Callable[[], object], str]:
    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.spatial import spatial_genes

    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(axis=0)).ravel() >= 3].copy()

    def run():
        return spatial_genes(mob.copy(), total_counts_key="total_counts", progress=False)

    return run, f"mouse olfactory bulb: {mob.n_vars} genes x {mob.n_obs} spots"


def _hic() -> tuple[Callable[[], object], str]:
    from diffomics.datasets import gm12878_hic
    from diffomics.hic import analyze, read_cool

    cmap = read_cool(gm12878_hic("chr20"))

    def run():
        return analyze(cmap)

    return run, f"GM12878 chr20: {cmap.n_bins} bins of 25 kb, all steps"


def _integration() -> tuple[Callable[[], object], str]:
    from diffomics.datasets import snareseq_celllines
    from diffomics.integration import integrate

    data = snareseq_celllines()

    def run():
        return integrate(
            data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, max_epochs=50,
            patience=50, progress=False,
        )  # fmt: skip

    return run, f"SNARE-seq: {data['rna'].n_obs} cells, 50 epochs"


ANALYSES = {
    "deconvolve": _deconvolution,
    "spatial-genes": _spatial_genes,
    "hic": _hic,
    "integrate": _integration,
}


def _machine() -> dict:
    import jax

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "XLA_FLAGS")},
    }


def _markdown(table: pd.DataFrame, machine: dict) -> str:
    lines = [
        "# diffomics bench",
        "",
        f"Command: `diffomics bench`; {machine['backend']} backend, {machine['cpus']} CPUs, "
        f"jax {machine['jax']}, Python {machine['python']}.",
        "",
        "| analysis | data | first call s (with compilation) | second call s | compile s |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.iterrows():
        lines.append(
            f"| {name} | {row['data']} | {row['first call s']:.2f} | {row['second call s']:.2f} "
            f"| {row['compile s (difference)']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_bench(args: argparse.Namespace) -> Section:
    """Time the chosen analyses twice each; write ``bench.json``, ``bench.md``."""
    chosen = list(ANALYSES) if args.analyses is None else args.analyses.split(",")
    unknown = set(chosen) - set(ANALYSES)
    if unknown:
        msg = f"--analyses: unknown {sorted(unknown)}; choose from {list(ANALYSES)}."
        raise UserError(msg)
    start = time.perf_counter()
    rows = {}
    for i, name in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {name}", flush=True)
        run, what = ANALYSES[name]()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        rows[name] = {
            "data": what,
            "first call s": times[0],
            "second call s": times[1],
            "compile s (difference)": max(times[0] - times[1], 0.0),
        }
        print(f"  {what}: first {times[0]:.2f} s, second {times[1]:.2f} s", flush=True)
    table = pd.DataFrame(rows).T
    machine = _machine()
    out = Path(args.out)
    payload = {"machine": machine, "results": rows}
    written = [
        atomic(out / "bench.json", lambda p: p.write_text(json.dumps(payload, indent=2))),
        atomic(out / "bench.md", lambda p: p.write_text(_markdown(table, machine))),
    ]
    summary = (
        f"Each analysis ran twice on the bundled data in one process ({machine['backend']} "
        f"backend, {machine['cpus']} CPUs): the first call includes JIT compilation, the second "
        "reuses the compiled programs. Comparisons with the peer tools (cooltools, SpatialDE, "
        "cell2location, scvi-tools) are the `make bench` targets of a source checkout."
    )
    return Section(
        "Timings on this machine",
        summary,
        tables=[("Seconds per call", table)],
        files=written,
        seconds=time.perf_counter() - start,
    )
