"""Peer runner: SpatialDE v1 (Svensson, Teichmann & Stegle 2018) on the SVG benchmark.

Runs inside the benchmark environment (``.venv-bench``: ``SpatialDE==1.1.3``,
``NaiveDE==1.2.0``, patsy) and is imported by the benchmark driver. It applies the pipeline
SpatialDE published for the mouse olfactory bulb:

1. keep the genes with a total count >= 3 over the spots;
2. ``NaiveDE.stabilize`` (Anscombe-type log transform with one fitted negative-binomial
   overdispersion shared by all genes);
3. ``NaiveDE.regress_out(sample_info, ..., 'np.log(total_counts)')`` (the log library size
   is regressed out of every gene, limma ``removeBatchEffect`` style);
4. ``SpatialDE.run(X, resid_expr)`` with the default kernel space (ten squared-exponential
   lengthscales between half the smallest and twice the largest spot distance, against a
   constant-mean null model).

Unlike the published notebook, no ``log_total_count`` pseudo-gene is appended to the table:
only genes are tested. SpatialDE's numbers are kept as they are; in particular its p-values
are ``chi2(df=1).sf(LLR)`` of the log-likelihood ratio itself (not of ``2 * LLR``), and its
q-values are Storey's q-values (``SpatialDE.util.qvalue``, estimated null proportion).

Compatibility layer. SpatialDE 1.1.3 predates NumPy 2, SciPy >= 1.12 and pandas >= 2; the
runner makes it work without editing the installed package:

* ``SpatialDE.base`` imports ``scipy.misc.derivative``, which SciPy removed. During the
  import only, ``scipy.misc`` is given ``derivative``: the 3-point central difference of the
  removed function (default step 1.0, first and second derivatives). SpatialDE uses it for
  the standard errors ``s2_FSV`` and ``s2_logdelta``, which are not returned here.
* ``SpatialDE.util.qvalue`` calls the removed ``scipy.arange``/``array``/``argsort``/
  ``zeros_like`` aliases through its module-level ``sp`` name; that name is rebound to a
  namespace holding the NumPy functions (SciPy itself is left untouched). The p-values
  are passed to it as a NumPy array (``Series.ravel`` is deprecated).
* The kernel helpers index ``X`` with ``[:, None]``, which fails on pandas objects, so the
  coordinates are always passed as a NumPy array.
* ``get_mll_results`` calls ``groupby(...).transform(max)``, which pandas 2 still runs (with a
  ``FutureWarning``, silenced here). ``model_search`` (``DataFrame.drop(cols, 1)``) is not used.

Thread limits: BLAS/OpenMP pools are limited to ``threads`` with ``threadpoolctl`` for the
duration of the call. SpatialDE itself is single-threaded Python (one L-BFGS-B fit per gene
and lengthscale).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

__all__ = ["run_spatialde"]

# SpatialDE's published gene filter: total count over the spots >= 3.
_MIN_GENE_TOTAL = 3
_COVARIATE_FORMULA = "np.log(total_counts)"
_TABLE_COLUMNS = ["LLR", "pval", "qval", "FSV", "l"]


def _central_derivative(
    func: Callable[..., float],
    x0: float,
    dx: float = 1.0,
    n: int = 1,
    args: tuple = (),
    order: int = 3,
) -> float:
    """Three-point central-difference derivative, a stand-in for ``scipy.misc.derivative``.

    Only what SpatialDE calls is supported: ``order=3`` and ``n`` in ``(1, 2)``, with the
    removed function's defaults (``dx=1.0``).

    Args:
      func: scalar function ``func(x, *args)``.
      x0: point of evaluation.
      dx: step.
      n: derivative order, 1 or 2.
      args: extra positional arguments of `func`.
      order: number of points; only 3.

    Returns:
      The finite-difference estimate of the `n`-th derivative at `x0`.

    Raises:
      ValueError: unsupported `n` or `order`.

    Examples:
      >>> _central_derivative(lambda x: x**2, 3.0)  # (16 - 4) / 2
      6.0
      >>> _central_derivative(lambda x: x**2, 3.0, n=2)  # 16 - 2 * 9 + 4
      2.0
    """
    if order != 3 or n not in (1, 2):
        msg = f"only order=3 and n in (1, 2) are supported; got order={order}, n={n}."
        raise ValueError(msg)
    lower = func(x0 - dx, *args)
    upper = func(x0 + dx, *args)
    if n == 1:
        return (upper - lower) / (2.0 * dx)
    return (upper - 2.0 * func(x0, *args) + lower) / dx**2


@contextlib.contextmanager
def _scipy_misc_derivative() -> Iterator[None]:
    """Provide ``scipy.misc.derivative`` while the body runs, then undo the change."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import scipy.misc as misc

            placeholder = False
        except ImportError:  # SciPy >= 2 drops the module altogether.
            misc = types.ModuleType("scipy.misc")
            sys.modules["scipy.misc"] = misc
            placeholder = True
    added = not hasattr(misc, "derivative")
    if added:
        misc.derivative = _central_derivative
    try:
        yield
    finally:
        if placeholder:
            sys.modules.pop("scipy.misc", None)
        elif added:
            del misc.derivative


def _import_spatialde() -> tuple[types.ModuleType, types.ModuleType]:
    """Import SpatialDE and NaiveDE with the compatibility patches (idempotent).

    Returns:
      ``(SpatialDE, NaiveDE)``.
    """
    if "SpatialDE.base" in sys.modules:
        import NaiveDE
        import SpatialDE
    else:
        with _scipy_misc_derivative(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import NaiveDE
            import SpatialDE
    from SpatialDE import base, util

    # ``qvalue`` looks up arange/array/argsort/zeros_like on its module's ``sp`` name.
    if not isinstance(util.sp, types.SimpleNamespace):
        util.sp = types.SimpleNamespace(
            arange=np.arange, array=np.array, argsort=np.argsort, zeros_like=np.zeros_like
        )
    if not getattr(base.qvalue, "_diffomics_patched", False):
        original_qvalue = util.qvalue

        def qvalue(pv, pi0=None):
            return original_qvalue(np.asarray(pv, dtype=np.float64), pi0)

        qvalue._diffomics_patched = True
        base.qvalue = qvalue
    # The per-gene progress bars are noise in benchmark logs.
    base.tqdm = lambda iterable, *args, **kwargs: iterable
    return SpatialDE, NaiveDE


def _validate(
    counts: pd.DataFrame, coords: np.ndarray, total_counts: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Check shapes and values; return float64 copies."""
    if not isinstance(counts, pd.DataFrame):
        msg = f"counts must be a pandas DataFrame (spots x genes); got {type(counts).__name__}."
        raise TypeError(msg)
    n = counts.shape[0]
    coords = np.asarray(coords, dtype=np.float64)
    total_counts = np.asarray(total_counts, dtype=np.float64)
    if coords.shape != (n, 2):
        msg = f"coords must have shape ({n}, 2); got {coords.shape}."
        raise ValueError(msg)
    if total_counts.shape != (n,):
        msg = f"total_counts must have shape ({n},); got {total_counts.shape}."
        raise ValueError(msg)
    values = counts.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        msg = "counts must be finite and non-negative."
        raise ValueError(msg)
    if not np.all(np.isfinite(coords)):
        msg = "coords must be finite."
        raise ValueError(msg)
    if not np.all(total_counts > 0):
        msg = "total_counts must be positive (their log is regressed out)."
        raise ValueError(msg)
    if not counts.columns.is_unique:
        msg = "gene names (counts.columns) must be unique."
        raise ValueError(msg)
    counts = pd.DataFrame(values, index=counts.index.astype(str), columns=counts.columns)
    return counts, coords, total_counts


def run_spatialde(
    counts: pd.DataFrame,
    coords: np.ndarray,
    total_counts: np.ndarray,
    *,
    threads: int = 1,
) -> dict:
    """Spatially variable genes by SpatialDE's published pipeline.

    Args:
      counts: raw counts, spots x genes (columns are the gene names).
      coords: spot coordinates, shape ``(n_spots, 2)``.
      total_counts: library size of each spot, shape ``(n_spots,)``, > 0 (SpatialDE's MOB
        pipeline uses the total over the genes that pass the filter).
      threads: BLAS/OpenMP thread limit during the call.

    Returns:
      A dict with ``table`` (DataFrame indexed by gene, the genes with total count >= 3 in
      input order, columns ``LLR``, ``pval``, ``qval``, ``FSV``, ``l``),
      ``fit_seconds`` (``SpatialDE.run`` only), ``preprocess_seconds`` (filter, stabilise,
      regress out), ``notes`` and ``expression`` (the stabilised and regressed values
      SpatialDE tested, a spots x genes DataFrame, for peers that test the same values).

    Raises:
      TypeError: `counts` is not a DataFrame.
      ValueError: wrong shapes, negative or non-finite counts, non-positive totals, or no gene
        passing the filter.
    """
    from threadpoolctl import threadpool_limits

    counts, coords, total_counts = _validate(counts, coords, total_counts)
    spatialde, naivede = _import_spatialde()
    notes = []

    with threadpool_limits(limits=int(threads)), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # SpatialDE divides by zero second derivatives in its (unreturned) standard errors.
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        keep = counts.sum(axis=0).to_numpy() >= _MIN_GENE_TOTAL
        if not np.any(keep):
            msg = f"no gene has a total count >= {_MIN_GENE_TOTAL}."
            raise ValueError(msg)
        filtered = counts.loc[:, keep]
        n_dropped = int((~keep).sum())
        if n_dropped:
            notes.append(f"{n_dropped} genes with total count < {_MIN_GENE_TOTAL} removed")
        sample_info = pd.DataFrame({"total_counts": total_counts}, index=filtered.index)
        norm_expr = naivede.stabilize(filtered.T).T
        resid_expr = naivede.regress_out(sample_info, norm_expr.T, _COVARIATE_FORMULA).T
        preprocess_seconds = time.perf_counter() - start

        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            start = time.perf_counter()
            results = spatialde.run(coords, resid_expr)
            fit_seconds = time.perf_counter() - start
        finally:
            logger.setLevel(level)

    n_ties = int(results["g"].duplicated().sum())
    if n_ties:
        notes.append(f"{n_ties} genes had tied best lengthscales; the first was kept")
        results = results.drop_duplicates(subset="g", keep="first")
    table = results.set_index("g").reindex(filtered.columns)[_TABLE_COLUMNS]
    table.index.name = "gene"
    notes.append(
        f"{table.shape[0]} genes x {filtered.shape[0]} spots; SpatialDE.run default kernel "
        "space (10 SE lengthscales vs constant null); pval = chi2(1).sf(LLR) as in "
        "SpatialDE v1; qval = Storey q-value (SpatialDE.util.qvalue)"
    )
    return {
        "table": table,
        "fit_seconds": float(fit_seconds),
        "preprocess_seconds": float(preprocess_seconds),
        "notes": "; ".join(notes),
        "expression": resid_expr,
    }
