"""Peer runner: Moran's I with squidpy on the SVG benchmark.

Runs inside the benchmark environment (``.venv-bench``, ``squidpy==1.8.2``) and is imported by
the benchmark driver. For each gene it computes Moran's I on a k-nearest-neighbour graph of
the spots, as squidpy's spatial-statistics tutorial does::

    sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=n_neighbors)
    sq.gr.spatial_autocorr(adata, mode="moran", n_perms=None)

with squidpy's defaults otherwise: the binary kNN connectivities are row-normalised
(``transformation=True``) and ``pval_norm`` is the analytic p-value under the normality
assumption with ``two_tailed=False``. The values are used as given (the driver passes the
same stabilised and regressed expression SpatialDE tests).

squidpy's one-tailed ``pval_norm`` is taken in the direction of the observed deviation: a gene
with I below its expectation ``-1 / (n - 1)`` (negative autocorrelation) gets the lower-tail
probability, not a p-value near 1. Under the null it is therefore uniform on ``[0, 0.5]``,
and about 10 % of null genes fall below 0.05. The table keeps that number as ``pval`` (it is
what squidpy reports) and adds ``pval_greater``, the upper-tail p-value of the test for
positive autocorrelation from the same normal approximation. That one is closer to
calibrated but still somewhat liberal: the normality-assumption variance ignores the
skewness and kurtosis of the values, and sparse genes (a few non-zero spots) can reach very
small p-values on spatially permuted data.

Timing: numba compiles squidpy's and scanpy's kernels on their first use in a process (or
loads them from its on-disk cache). The first call of `run_moran` in a process therefore
imports squidpy and runs both steps on a tiny random dataset; that time is returned as
``compile_seconds`` (0.0 on later calls) and is excluded from ``fit_seconds``. numba's
thread pool is limited to ``threads`` for the call.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from diffomics.core import benjamini_hochberg

__all__ = ["run_moran"]

_WARMED_UP = False
_WARMUP_SPOTS = 16
_WARMUP_GENES = 3


@contextlib.contextmanager
def _quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    """Raise the named loggers to WARNING while the body runs (squidpy logs each graph)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _numba_threads(threads: int) -> Iterator[None]:
    """Limit numba's thread pool while the body runs."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _moran_table(
    values: np.ndarray, coords: np.ndarray, genes: Sequence[str], n_neighbors: int, threads: int
) -> pd.DataFrame:
    """Build squidpy's kNN graph and Moran's I table, in the order of `genes`."""
    import anndata as ad
    import squidpy as sq

    adata = ad.AnnData(
        values,
        obs=pd.DataFrame(index=[str(i) for i in range(values.shape[0])]),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    adata.obsm["spatial"] = coords
    sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=n_neighbors)
    table = sq.gr.spatial_autocorr(
        adata,
        mode="moran",
        n_perms=None,
        corr_method=None,
        n_jobs=threads,
        show_progress_bar=False,
        copy=True,
    )
    return table.reindex(adata.var_names)


def _warm_up(threads: int) -> float:
    """Run squidpy once on a tiny dataset so that numba compiles; returns the seconds."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    _moran_table(
        rng.random((_WARMUP_SPOTS, _WARMUP_GENES)),
        rng.random((_WARMUP_SPOTS, 2)),
        [f"g{i}" for i in range(_WARMUP_GENES)],
        n_neighbors=4,
        threads=threads,
    )
    return time.perf_counter() - start


def run_moran(
    values: np.ndarray,
    coords: np.ndarray,
    genes: Sequence[str],
    *,
    n_neighbors: int = 6,
    threads: int = 1,
) -> dict:
    """Moran's I of every gene on squidpy's kNN spot graph.

    Args:
      values: normalised expression, spots x genes (used as given).
      coords: spot coordinates, shape ``(n_spots, 2)``.
      genes: gene names, one per column of `values`, unique.
      n_neighbors: neighbours of each spot in the kNN graph (``n_neighs``).
      threads: numba threads and squidpy ``n_jobs``.

    Returns:
      A dict with ``table`` (DataFrame indexed by gene in the order of `genes`, columns
      ``I``, ``pval`` (squidpy's ``pval_norm``), ``qval`` (Benjamini-Hochberg of ``pval``),
      ``pval_greater`` (upper-tail normal p-value for I > E[I]) and ``qval_greater``),
      ``fit_seconds`` (graph and statistic), ``compile_seconds`` (the squidpy import and
      warm-up of the first call in the process, else 0.0) and ``notes``.

    Raises:
      ValueError: wrong shapes, non-finite values, duplicate genes or too few spots for
        `n_neighbors`.
    """
    global _WARMED_UP

    values = np.asarray(values, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    genes = [str(g) for g in genes]
    if values.ndim != 2:
        msg = f"values must be 2-D (spots x genes); got shape {values.shape}."
        raise ValueError(msg)
    n, n_genes = values.shape
    if coords.shape != (n, 2):
        msg = f"coords must have shape ({n}, 2); got {coords.shape}."
        raise ValueError(msg)
    if len(genes) != n_genes or len(set(genes)) != n_genes:
        msg = f"genes must hold {n_genes} unique names; got {len(genes)}."
        raise ValueError(msg)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(coords))):
        msg = "values and coords must be finite."
        raise ValueError(msg)
    if not 1 <= int(n_neighbors) < n:
        msg = f"n_neighbors must be in [1, {n - 1}]; got {n_neighbors}."
        raise ValueError(msg)

    from scipy import stats

    # Imported before the loggers are quietened, since squidpy sets them up on import.
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # docrep, on squidpy's docstrings
        import squidpy  # noqa: F401
    import_seconds = time.perf_counter() - start

    notes = []
    quiet = _quiet_loggers(("spatialdata._logging", "squidpy"))
    with quiet, _numba_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        compile_seconds = 0.0
        if not _WARMED_UP:
            compile_seconds = import_seconds + _warm_up(threads)
            _WARMED_UP = True
        start = time.perf_counter()
        raw = _moran_table(values, coords, genes, int(n_neighbors), int(threads))
        fit_seconds = time.perf_counter() - start

    expected = -1.0 / (n - 1)
    z = (raw["I"].to_numpy() - expected) / np.sqrt(raw["var_norm"].to_numpy())
    table = pd.DataFrame(
        {"I": raw["I"].to_numpy(), "pval": raw["pval_norm"].to_numpy()},
        index=pd.Index(genes, name="gene"),
    )
    # squidpy gives NaN for constant genes: they count as p = 1 (not significant)
    table["qval"] = benjamini_hochberg(table["pval"].fillna(1.0).to_numpy())
    table["pval_greater"] = stats.norm.sf(z)
    table["qval_greater"] = benjamini_hochberg(table["pval_greater"].fillna(1.0).to_numpy())
    n_constant = int(np.sum(np.ptp(values, axis=0) == 0))
    if n_constant:
        notes.append(f"{n_constant} constant genes (Moran's I undefined)")
    n_negative = int(np.sum((table["I"] < expected) & (table["pval"] < 0.05)))
    notes.append(
        f"{n_genes} genes x {n} spots; {n_neighbors}-NN graph, row-normalised; pval = "
        f"squidpy pval_norm (one-tailed in the observed direction: {n_negative} genes have "
        "pval < 0.05 with I below its expectation); qval = Benjamini-Hochberg"
    )
    return {
        "table": table,
        "fit_seconds": float(fit_seconds),
        "compile_seconds": float(compile_seconds),
        "notes": "; ".join(notes),
    }
