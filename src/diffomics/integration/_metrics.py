"""Integration metrics the field reports.

FOSCTTM, label silhouette, kNN label transfer and cross-modal imputation correlation.
"""

from __future__ import annotations

import numpy as np
import scipy.spatial

from diffomics.core._errors import ShapeError

__all__ = ["foscttm", "imputation_correlation", "knn_label_accuracy", "label_silhouette"]


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        msg = f"x and y must be paired (n_cells, dim) arrays of one shape; found {x.shape}, "
        msg += f"{y.shape}."
        raise ShapeError(msg)
    return x, y


def foscttm(x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples closer than the true match, averaged over both directions.

    Row ``i`` of `x` and of `y` embed the same cell from two modalities. For each cell, the
    fraction of the other modality's cells closer (Euclidean) than its own match; 0 is a
    perfect alignment, 0.5 a random one (Liu et al. 2019, SCOT, MultiVI).

    Args:
      x: `(n_cells, dim)` embedding from one modality.
      y: `(n_cells, dim)` embedding of the same cells from another.

    Returns:
      The mean FOSCTTM.

    Examples:
      >>> x = np.arange(8.0).reshape(4, 2)
      >>> foscttm(x, x), round(foscttm(x, x[::-1]), 3)  # reversed: worse than random
      (0.0, 0.667)
    """
    x, y = _paired(x, y)
    d = scipy.spatial.distance.cdist(x, y)
    true = np.diag(d)
    n = len(true)
    x_to_y = (d < true[:, None]).sum(axis=1) / (n - 1)
    y_to_x = (d < true[None, :]).sum(axis=0) / (n - 1)
    return float((x_to_y.mean() + y_to_x.mean()) / 2)


def label_silhouette(embedding: np.ndarray, labels) -> float:
    """Mean silhouette width of the labels in an embedding, rescaled to [0, 1] (scIB).

    Args:
      embedding: `(n_cells, dim)`.
      labels: `(n_cells,)` labels (at least two distinct).

    Returns:
      ``(mean silhouette + 1) / 2``; 1 means tight, separated label clusters.

    Examples:
      >>> e = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10] + np.arange(10)[:, None] * 0.01
      >>> round(label_silhouette(e, [0] * 5 + [1] * 5), 2)
      1.0
    """
    e = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    uniq = np.unique(labels)
    if len(uniq) < 2 or len(labels) != len(e):
        msg = f"labels need >= 2 distinct values and one per cell; found {len(uniq)} for {len(e)}."
        raise ShapeError(msg)
    d = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(e))
    own = labels[:, None] == labels[None, :]
    sizes = own.sum(1)
    a = np.where(sizes > 1, (d * own).sum(1) / np.maximum(sizes - 1, 1), 0.0)
    b = np.full(len(e), np.inf)
    for lab in uniq:
        other = labels == lab
        b = np.where(labels != lab, np.minimum(b, d[:, other].mean(1)), b)
    s = np.where(sizes > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float((s.mean() + 1) / 2)


def knn_label_accuracy(embedding: np.ndarray, labels, *, k: int = 15) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour majority vote of the labels.

    Args:
      embedding: `(n_cells, dim)`.
      labels: `(n_cells,)`.
      k: neighbours (the cell itself excluded).

    Returns:
      Fraction of cells whose label is the majority of their `k` neighbours' labels.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> two_groups = np.r_[rng.normal(0, 1, (20, 2)), rng.normal(8, 1, (20, 2))]
      >>> knn_label_accuracy(two_groups, np.repeat(["a", "b"], 20), k=5)
      1.0
      >>> shuffled = rng.permutation(np.repeat(["a", "b"], 20))
      >>> knn_label_accuracy(two_groups, shuffled, k=5) < 0.8
      True
    """
    e = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    _, codes = np.unique(labels, return_inverse=True)
    _, idx = scipy.spatial.cKDTree(e).query(e, k=min(k + 1, len(e)))
    votes = codes[idx[:, 1:]]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float((predicted == codes).mean())


def imputation_correlation(observed: np.ndarray, imputed: np.ndarray) -> dict[str, float]:
    """How well one modality predicts another: Pearson correlations of imputed vs observed.

    Args:
      observed: `(n_cells, n_features)` held-out measurements.
      imputed: same shape, predicted from the other modalities.

    Returns:
      ``{"per_feature": median over features, "per_cell": median over cells}`` of the
      Pearson correlation (constant rows / columns skipped).

    Examples:
      >>> observed = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 1.0], [3.0, 5.0, 2.0]])
      >>> r = imputation_correlation(observed, 2 * observed + 1)  # a linear map: r = 1
      >>> {k: round(v, 6) for k, v in r.items()}
      {'per_feature': 1.0, 'per_cell': 1.0}
      >>> round(imputation_correlation(observed, -observed)["per_feature"], 6)
      -1.0
    """
    x, y = _paired(observed, imputed)

    def rowwise(a, b):
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        den = np.sqrt((a**2).sum(1) * (b**2).sum(1))
        ok = den > 0
        return np.median((a * b).sum(1)[ok] / den[ok]) if ok.any() else float("nan")

    return {"per_feature": float(rowwise(x.T, y.T)), "per_cell": float(rowwise(x, y))}
