"""Preprocessing of counts for Gaussian-process tests: variance stabilisation, covariates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from diffomics.core._checks import check_counts

__all__ = ["regress_out", "stabilize"]


def stabilize(counts: Array) -> tuple[Array, Array]:
    """Variance-stabilise negative-binomial counts: ``log(x + 1 / (2 phi))``, up to an affine map.

    ``phi`` is the common NB overdispersion, fitted by least squares of the gene variances on
    ``mu + phi mu^2`` over the gene means (Anscombe's transformation, as NaiveDE's
    ``stabilize`` used by SpatialDE). The model is linear in ``phi``, so the fit is the
    closed form ``phi = sum mu^2 (v - mu) / sum mu^4`` and the whole map is differentiable.
    The values returned are ``log1p(2 phi x) / (2 phi)``, which is NaiveDE's
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
    # phi = sum m^2 (v - m) / sum m^4 is computed on x / s (s the largest gene mean), where
    # it reads sum m'^2 (v' - m' / s) / sum m'^4: the fourth powers neither overflow float32
    # for large counts (1e30) nor underflow for tiny values; no counts at all give the floor
    s = jax.lax.stop_gradient(jnp.max(jnp.mean(x, axis=0)))
    s = jnp.where(s > 0, s, 1.0)
    mean = jnp.mean(x / s, axis=0)
    var = jnp.var(x / s, axis=0, ddof=1)
    denominator = jnp.sum(mean**4)
    ratio = jnp.sum(mean**2 * (var - mean / s)) / jnp.where(denominator > 0, denominator, 1.0)
    phi = jnp.maximum(ratio, 1e-8)
    return jnp.log1p(2.0 * phi * x) / (2.0 * phi), phi


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
