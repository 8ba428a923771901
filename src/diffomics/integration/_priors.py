"""Data-driven initial values of model priors."""

from __future__ import annotations

import numpy as np

from diffomics.core._checks import check_finite
from diffomics.core._errors import CountsError, ShapeError

__all__ = ["protein_background_prior"]


def protein_background_prior(counts, *, n_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Background level of each protein: the lower of two Gaussians fitted to ``log1p``.

    Antibody-derived counts are bimodal: a background of ambient and non-specific binding
    and, in the cells that carry the protein, a foreground. As totalVI does to initialise
    its background prior, a two-component Gaussian mixture is fitted by EM to
    ``log1p(counts)`` of each protein (column), and the component with the lower mean is
    the background. Variances are floored at 1e-6 (scikit-learn's ``reg_covar``), so a
    constant column gets a background at its value with a tiny spread.

    Args:
      counts: `(n_cells, n_proteins)` counts, finite and >= 0.
      n_iter: EM iterations.

    Returns:
      ``(mean, sd)``, each `(n_proteins,)`, on the ``log1p`` scale.

    References:
      Gayoso et al., "Joint probabilistic modeling of single-cell multi-omic data with
      totalVI", Nat. Methods 18:272 (2021), https://doi.org/10.1038/s41592-020-01050-x
      (``empirical_protein_background_prior``).

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> background = rng.poisson(5.0, (300, 1))
      >>> cells = np.vstack([background, rng.poisson(200.0, (200, 1))])
      >>> mean, sd = protein_background_prior(cells)
      >>> round(float(np.expm1(mean[0])))  # about the background's 5 counts
      5
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        msg = f"counts must be (n_cells >= 2, n_proteins >= 1); found shape {x.shape}."
        raise ShapeError(msg)
    check_finite(x, "counts")
    if (x < 0).any():
        msg = "counts holds negative values; a background prior needs counts >= 0."
        raise CountsError(msg)
    y = np.log1p(x)
    floor = 1e-6
    means = np.stack([np.quantile(y, 0.2, axis=0), np.quantile(y, 0.8, axis=0)])
    var = np.maximum(np.var(y, axis=0), floor)[None, :].repeat(2, axis=0)
    weights = np.full((2, y.shape[1]), 0.5)
    for _ in range(n_iter):
        log_p = (np.log(weights)[:, None] - 0.5 * np.log(2 * np.pi * var)[:, None]
                 - 0.5 * (y[None] - means[:, None]) ** 2 / var[:, None])  # fmt: skip
        resp = np.exp(log_p - np.logaddexp(log_p[0], log_p[1])[None])
        total = resp.sum(1) + 1e-12
        weights = total / y.shape[0]
        means = (resp * y[None]).sum(1) / total
        var = np.maximum((resp * (y[None] - means[:, None]) ** 2).sum(1) / total, floor)
    low = np.argmin(means, axis=0)
    cols = np.arange(y.shape[1])
    return means[low, cols], np.sqrt(var[low, cols])
