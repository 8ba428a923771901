"""Preprocessing of counts for Gaussian-process tests: variance stabilisation, covariates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from diffomics.core._checks import check_counts

__all__ = ["anscombe", "nb_overdispersion", "regress_out", "stabilize"]


def stabilize(counts: Array) -> tuple[Array, Array]:
    """Variance-stabilise negative-binomial counts: ``log(x + 1 / (2 phi))``, up to an affine map.

    ``phi`` is the common NB overdispersion, fitted by least squares of the gene variances on
    ``mu + phi mu^2`` over the gene means (Anscombe's transformation, as NaiveDE's
    ``stabilize`` used by SpatialDE). The model is linear in ``phi``, so the fit is the
    closed form ``phi = sum mu^2 (v - mu) / sum mu^4`` (`nb_overdispersion`) and the whole
    map is differentiable. The values returned are ``log1p(2 phi x) / (2 phi)``
    (`anscombe`), which is NaiveDE's
    ``log(x + 1 / (2 phi))`` shifted by ``log(2 phi)`` and scaled by ``1 / (2 phi)``: the
    same for every test that is invariant to a gene's location and scale (the GP test is),
    accurate in float32 even for Poisson-like data where ``phi -> 0`` (where it tends to
    ``x``, while NaiveDE's form rounds away every difference).

    Args:
      counts: spots x genes, >= 0.

    Returns:
      ``(values, phi)``: transformed values (same shape) and the fitted ``phi`` (scalar,
      floored at 1e-8).

    References:
      Anscombe, "The transformation of Poisson, binomial and negative-binomial data",
      Biometrika 35:246 (1948), https://doi.org/10.2307/2332343.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> mu = rng.uniform(1, 50, size=300)
      >>> x = rng.negative_binomial(5.0, 5.0 / (5.0 + mu), size=(400, 300)).astype("float32")
      >>> round(float(stabilize(jnp.asarray(x))[1]), 2)  # the planted phi is 1 / 5
      0.2
    """
    check_counts(counts, "counts", row_name="spot", allow_empty_rows=True)
    x = jnp.asarray(counts)
    # the moments are taken of x / s (s the largest gene mean; see `nb_overdispersion`)
    s = jax.lax.stop_gradient(jnp.max(jnp.mean(x, axis=0)))
    s = jnp.where(s > 0, s, 1.0)
    phi = nb_overdispersion(jnp.mean(x / s, axis=0), jnp.var(x / s, axis=0, ddof=1), s)
    return anscombe(x, phi), phi


def nb_overdispersion(mean: Array, var: Array, scale: Array) -> Array:
    """The common NB overdispersion of `stabilize`, from each gene's moments of ``x / scale``.

    ``phi = sum m^2 (v - m) / sum m^4`` over genes, written for the moments ``m' = m /
    scale`` and ``v' = v / scale^2`` as ``sum m'^2 (v' - m' / scale) / sum m'^4``: with
    `scale` the largest gene mean the fourth powers neither overflow float32 for large counts
    (1e30) nor underflow for tiny values. No counts at all give the floor 1e-8.

    Args:
      mean: each gene's mean of ``x / scale`` over spots, shape `(n_genes,)`.
      var: each gene's variance (``ddof=1``) of ``x / scale``, shape `(n_genes,)`.
      scale: the scale, > 0 (scalar).

    Returns:
      ``phi`` (scalar), >= 1e-8.

    Examples:
      >>> float(nb_overdispersion(jnp.array([1.0]), jnp.array([2.0]), 1.0))  # v = m + phi m^2
      1.0
    """
    denominator = jnp.sum(mean**4)
    ratio = jnp.sum(mean**2 * (var - mean / scale)) / jnp.where(denominator > 0, denominator, 1.0)
    return jnp.maximum(ratio, 1e-8)


def anscombe(counts: Array, phi: Array) -> Array:
    """``log1p(2 phi x) / (2 phi)``: `stabilize`'s transform for a given ``phi``.

    Args:
      counts: counts, any shape, >= 0.
      phi: NB overdispersion > 0 (`nb_overdispersion`).

    Returns:
      Transformed values, the shape of `counts`.

    Examples:
      >>> [round(float(v), 4) for v in anscombe(jnp.array([0.0, 1.0]), 0.5)]
      [0.0, 0.6931]
    """
    return jnp.log1p(2.0 * phi * counts) / (2.0 * phi)


def regress_out(values: Array, covariate: Array) -> Array:
    """Remove a covariate's linear effect from every gene.

    Least squares of each gene on ``[1, covariate]``; the covariate's term is subtracted and
    the intercept kept (limma's ``removeBatchEffect``, NaiveDE's ``regress_out`` with design
    ``1``).

    Args:
      values: spots x genes.
      covariate: shape `(n_spots,)` (e.g. log total counts), or `(n_spots, n_genes)` for one
        covariate per gene (e.g. log counts of the other genes).

    Returns:
      Residual values, same shape.

    Examples:
      >>> t = jnp.arange(5.0)
      >>> regress_out(jnp.stack([3.0 + 2.0 * t, 1.0 - t], axis=1), t)[:2].round(4).tolist()
      [[3.0, 1.0], [3.0, 1.0]]
    """
    y = jnp.asarray(values)
    c = jnp.asarray(covariate)
    c = jnp.broadcast_to(c[:, None] if c.ndim == 1 else c, y.shape)
    centred = c - jnp.mean(c, axis=0, keepdims=True)
    resid = y - jnp.mean(y, axis=0, keepdims=True)
    spread = jnp.sum(centred**2, axis=0)
    # a constant covariate (one gene: no "other genes"; equal totals) has no effect to remove
    beta = jnp.where(spread > 0, jnp.sum(centred * resid, axis=0), 0.0) / jnp.where(
        spread > 0, spread, 1.0
    )
    return y - c * beta[None, :]
