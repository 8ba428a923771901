"""Peer runner: one Hi-C step with diffomics or with cooler 0.11 / cooltools 0.7.1, timed.

Runs inside the benchmark environment (``.venv-bench``) in a child process started by
``benchmarks/hic.py``, one step of one tool on one map per process, so that the process's peak
memory is that step's. A map is described by a `spec` dict (``name``, ``path`` of a raw-count
``.cool``, ``chroms``, ``resolution``, ``windows_bins``, ``phasing`` TSV path or None,
``max_loci_separation``, ``n_eigs``).

Each step runs twice on the same input: the first call includes JAX's or numba's compilation,
the second is steady. The cooltools expected, eigs, insulation and dots run a third time with
a pool of ``threads`` worker processes (their ``nproc`` / ``map``); the first two calls use one
process, so the peak memory is that of a single process doing the whole step. What a call
does:

- diffomics balance: ``ice_balance(read_cool(path, region=<every chromosome of the file>),
  cis_only=True)``, the whole file at once as cooler's call (the filters' MAD cut-off is set
  from all chromosomes, each chromosome is balanced on its own).
- diffomics expected / eigs / insulation / dots: ``analyze(path, region=<the chromosomes>,
  balance=<their weights>, ...)``, one call over the chromosomes as cooltools' over its view,
  with only that step enabled (``windows=()``, ``n_eigs=0``, ``loops=False`` otherwise).
  `analyze` always computes the expected, which is cheap.
- cooler balance: ``balance_cooler(clr, cis_only=True, store=True)`` with cooler's defaults,
  on a copy of the file (``shutil.copyfile``: the sources are read-only).
- cooltools: ``expected_cis(smooth=False, aggregate_smoothed=False)`` (diffomics does not
  smooth; the dots use ``balanced.avg``), ``eigs_cis(phasing_track, n_eigs)``,
  ``insulation(windows, ignore_diags=2)`` and ``dots(expected, expected_value_col=
  "balanced.avg")``, whose expected is computed before the timed calls.

Every call reads the map from the ``.cool`` file (both tools), so reading is timed too. The
outputs (weights, expected, eigenvectors, insulation, dots) go to ``<folder>/<step>.*`` as
files, and the timings to ``<folder>/<step>.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["STEPS", "baseline", "run_step"]

STEPS = ("balance", "expected", "eigs", "insulation", "dots")
BALANCE_KW = dict(
    cis_only=True, ignore_diags=2, mad_max=5, min_nnz=10, min_count=0, tol=1e-5, max_iters=200
)
EXPECTED_KW = dict(ignore_diags=2, smooth=False, aggregate_smoothed=False)


def baseline(tool: str) -> dict:
    """Import what a step of `tool` imports before it touches data; nothing else."""
    if tool == "diffomics":
        import cooler  # noqa: F401 - read_cool's reader
        import jax.numpy as jnp

        import diffomics.hic  # noqa: F401

        jnp.zeros(1).block_until_ready()  # start the XLA CPU client, as every step does
    else:
        import bioframe  # noqa: F401
        import cooler  # noqa: F401
        import cooltools  # noqa: F401
    return {}


class StepTimeout(Exception):
    """A call ran past the time limit."""


def _on_alarm(signum, frame):
    raise StepTimeout


def _timed(fn: Callable, limit: float) -> tuple[object, float]:
    """`fn()` and its seconds; `StepTimeout` after `limit` seconds (SIGALRM)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(limit)))
    try:
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _calls(fn: Callable, limit: float, extra: Callable | None = None) -> tuple[object, dict]:
    """Run `fn` twice (once if the first call takes over half of `limit` seconds).

    `extra` (the cooltools call with a process pool) runs third. Each call is stopped after
    `limit` seconds.
    """
    out, first = _timed(fn, limit)
    timing = {"first_s": first, "steady_s": None, "compile_s": None, "warm_nproc_s": None}
    if first > limit / 2:
        timing["note"] = f"first call took {first:.0f} s (> limit / 2); not run again"
        return out, timing
    out, timing["steady_s"] = _timed(fn, limit)
    timing["compile_s"] = max(first - timing["steady_s"], 0.0)
    if extra is not None:
        _, timing["warm_nproc_s"] = _timed(extra, limit)
    return out, timing


def _track(spec: dict) -> pd.DataFrame | None:
    if spec.get("phasing") is None:
        return None
    track = pd.read_csv(spec["phasing"], sep="\t")
    return track.rename(columns={"ctcf": "value"}).astype({"value": float})


def _windows(spec: dict) -> list[int]:
    return [int(k * spec["resolution"]) for k in spec["windows_bins"]]


def _view(spec: dict, clr) -> pd.DataFrame | None:
    """The cooltools view of the spec's chromosomes (None: the file's only chromosome)."""
    if list(clr.chromnames) == list(spec["chroms"]):
        return None
    sizes = clr.chromsizes
    return pd.DataFrame(
        {"chrom": spec["chroms"], "start": 0, "end": [int(sizes[c]) for c in spec["chroms"]],
         "name": spec["chroms"]}
    )  # fmt: skip


# --- diffomics -------------------------------------------------------------------------------


def _diffomics(step: str, spec: dict, folder: Path, limit: float) -> dict:
    import cooler

    from diffomics.hic import analyze, ice_balance, read_cool

    path, chroms = spec["path"], spec["chroms"]
    info: dict = {}
    if step == "balance":

        def fn():
            genome = read_cool(path, region=cooler.Cooler(path).chromnames)
            w, report = ice_balance(genome, cis_only=True)
            by_chrom = genome.bins["chrom"].to_numpy()
            return {c: w[by_chrom == c] for c in chroms}, report

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (weights, report), timing = _calls(fn, limit)
        info["warnings"] = sorted({str(w.message) for w in caught})
        info["ice_iterations"] = report["ice_iterations"]
        info["ice_converged"] = report["ice_converged"]
        np.savez(folder / "weights.npz", **weights)
        np.save(folder / "weights.npy", np.concatenate([weights[c] for c in chroms]))
        return {**timing, "info": info}

    with np.load(folder / "weights.npz") as saved:
        weights = np.concatenate([saved[c] for c in chroms])
    track = _track(spec)
    kwargs = {"windows": (), "n_eigs": 0, "loops": False}
    if step == "eigs":
        kwargs.update(n_eigs=spec["n_eigs"], phasing_track=track)
    elif step == "insulation":
        kwargs.update(windows=tuple(_windows(spec)))
    elif step == "dots":
        kwargs.update(loops=True, max_loci_separation=spec["max_loci_separation"])

    def fn():
        return analyze(path, region=chroms, balance=weights, **kwargs)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, timing = _calls(fn, limit)
    info["warnings"] = sorted({str(w.message) for w in caught})
    if step == "expected":
        result.expected[["region1", "dist", "n_valid", "balanced.avg"]].to_csv(
            folder / "expected.tsv", sep="\t", index=False
        )
    elif step == "eigs":
        result.compartments.to_csv(folder / "eigs.tsv", sep="\t", index=False)
        info["compartment_resolution"] = result.compartment_resolution
    elif step == "insulation":
        result.insulation.to_csv(folder / "insulation.tsv", sep="\t", index=False)
    elif step == "dots":
        result.loops.to_csv(folder / "dots.tsv", sep="\t", index=False)
        info["n_dots"] = len(result.loops)
    return {**timing, "info": info}


# --- cooler / cooltools ----------------------------------------------------------------------


def _pool_call(threads: int, fn: Callable) -> Callable:
    """`fn(map_function)` run with a process pool of `threads` workers (as ``nproc``)."""

    def call():
        import multiprocess

        with multiprocess.Pool(threads) as pool:
            return fn(pool.map)

    return call


def _cooltools(step: str, spec: dict, folder: Path, limit: float, threads: int) -> dict:
    import cooler
    import cooltools

    logging.getLogger().setLevel(logging.WARNING)  # cooltools logs every tile at INFO
    cool = folder / "map.cool"
    info: dict = {}
    if step == "balance":
        shutil.copyfile(spec["path"], cool)  # copyfile: shutil.copy would keep r--r--r--
        clr = cooler.Cooler(str(cool))

        def fn():
            return cooler.balance_cooler(clr, store=True, **BALANCE_KW)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (_, stats), timing = _calls(fn, limit)
        info["warnings"] = sorted({str(w.message) for w in caught})
        info["converged"] = bool(np.all(stats["converged"]))
        clr = cooler.Cooler(str(cool))
        weights = [clr.bins().fetch(c)["weight"].to_numpy(np.float64) for c in spec["chroms"]]
        np.save(folder / "weights.npy", np.concatenate(weights))
        return {**timing, "info": info}

    clr = cooler.Cooler(str(cool))
    view = _view(spec, clr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if step == "expected":
            run = lambda nproc: cooltools.expected_cis(  # noqa: E731
                clr, view_df=view, nproc=nproc, **EXPECTED_KW
            )
            table, timing = _calls(lambda: run(1), limit, lambda: run(threads))
            table[["region1", "dist", "n_valid", "balanced.avg"]].to_csv(
                folder / "expected.tsv", sep="\t", index=False
            )
        elif step == "eigs":
            track = _track(spec)
            run = lambda map_: cooltools.eigs_cis(  # noqa: E731
                clr, phasing_track=track, view_df=view, n_eigs=spec["n_eigs"], map=map_
            )
            (_, vecs), timing = _calls(lambda: run(map), limit, _pool_call(threads, run))
            vecs.to_csv(folder / "eigs.tsv", sep="\t", index=False)
        elif step == "insulation":
            windows = _windows(spec)
            run = lambda nproc: cooltools.insulation(  # noqa: E731
                clr, windows, view_df=view, ignore_diags=2, nproc=nproc
            )
            table, timing = _calls(lambda: run(1), limit, lambda: run(threads))
            table.to_csv(folder / "insulation.tsv", sep="\t", index=False)
        elif step == "dots":
            expected = cooltools.expected_cis(clr, view_df=view, nproc=1, **EXPECTED_KW)
            run = lambda nproc: cooltools.dots(  # noqa: E731
                clr,
                expected=expected,
                expected_value_col="balanced.avg",
                view_df=view,
                max_loci_separation=spec["max_loci_separation"],
                nproc=nproc,
            )
            table, timing = _calls(lambda: run(1), limit, lambda: run(threads))
            table.to_csv(folder / "dots.tsv", sep="\t", index=False)
            info["n_dots"] = len(table)
        else:
            msg = f"unknown step {step!r}; expected one of {STEPS}."
            raise ValueError(msg)
    info["warnings"] = sorted({str(w.message) for w in caught})[:5]
    return {**timing, "info": info}


def run_step(tool: str, step: str, spec: dict, folder: Path, *, threads: int, limit: float) -> dict:
    """Run `step` of `tool` on the map `spec`; write outputs and timings under `folder`.

    Args:
      tool: ``"diffomics"`` or ``"cooltools"``.
      step: one of `STEPS`.
      spec: the map (see the module docstring).
      folder: output folder of this tool on this map (``<step>.*`` files are written there;
        the balance step also leaves the weights, or the balanced ``map.cool``, for the
        later steps).
      threads: worker processes of cooltools' third call.
      limit: seconds per call; a first call over half of it is not repeated.

    Returns:
      dict with ``first_s``, ``steady_s``, ``compile_s`` (first minus steady),
      ``warm_nproc_s`` (cooltools with `threads` processes, else None) and ``info``; or
      ``error`` when a call ran past `limit`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if tool not in ("diffomics", "cooltools"):
        msg = f"unknown tool {tool!r}; expected 'diffomics' or 'cooltools'."
        raise ValueError(msg)
    try:
        if tool == "diffomics":
            record = _diffomics(step, spec, folder, limit)
        else:
            record = _cooltools(step, spec, folder, limit, threads)
    except StepTimeout:
        record = {"error": f"not run to completion: a call ran past the {limit:.0f} s limit"}
    (folder / f"{step}.json").write_text(json.dumps(record, indent=1, default=str))
    return record
