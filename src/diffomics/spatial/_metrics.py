"""Accuracy of estimated cell-type proportions against known ones (pseudo-spot benchmarks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffomics.core._errors import ShapeError

__all__ = ["proportion_metrics"]


def _js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits (0 = equal, 1 = disjoint)."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return 0.5 * (kl_p + kl_q)


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def proportion_metrics(true: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, float]:
    """Compare estimated cell-type proportions with the truth, spot by spot and type by type.

    Rows are aligned by index and columns by name; a cell type present in only one table
    counts as proportion 0 in the other. Rows are renormalised to sum to 1.

    Args:
      true: spots x cell types, known proportions (e.g. ``obsm["proportions_true"]`` of
        `pool_pseudo_spots`).
      predicted: spots x cell types, estimates (same spots).

    Returns:
      ``rmse`` (root mean squared error over all spot-type entries), ``jsd`` (mean over
      spots of the Jensen-Shannon divergence in bits, in [0, 1]), ``pearson_spot`` (mean over
      spots of the correlation across types), ``pearson_type`` (mean over cell types of the
      correlation across spots; types constant in either table are skipped) and
      ``n_types_scored`` (how many types entered ``pearson_type``).

    Raises:
      ShapeError: the two tables do not hold the same spots.

    References:
      Li et al., "Benchmarking spatial and single-cell transcriptomics integration methods
      for transcript distribution prediction and cell type deconvolution", Nature Methods
      2022, https://doi.org/10.1038/s41592-022-01480-9 (RMSE and JSD on pseudo-spots).

    Examples:
      >>> t = pd.DataFrame([[1.0, 0.0], [0.5, 0.5]], columns=["a", "b"])
      >>> m = proportion_metrics(t, t)
      >>> m["rmse"], m["jsd"], m["pearson_type"]
      (0.0, 0.0, 1.0)
    """
    if not true.index.sort_values().equals(predicted.index.sort_values()):
        msg = (
            f"true and predicted must hold the same spots; found {len(true)} and "
            f"{len(predicted)} rows, {len(true.index.difference(predicted.index))} not shared."
        )
        raise ShapeError(msg)
    columns = true.columns.union(predicted.columns)
    t = true.reindex(columns=columns, fill_value=0.0).to_numpy(np.float64)
    p = predicted.reindex(index=true.index, columns=columns, fill_value=0.0).to_numpy(np.float64)
    t = t / t.sum(axis=1, keepdims=True)
    p = p / p.sum(axis=1, keepdims=True)
    per_type = _row_pearson(t.T, p.T)
    scored = per_type[np.isfinite(per_type)]
    return {
        "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
        "jsd": float(np.mean(_js_divergence(t, p))),
        "pearson_spot": float(np.nanmean(_row_pearson(t, p))),
        "pearson_type": float(scored.mean()) if scored.size else float("nan"),
        "n_types_scored": int(scored.size),
    }
