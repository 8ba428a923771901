"""Cell-type deconvolution of spatial spots: the generative model and its likelihood.

Model (cell2location / RCTD family, with the per-spot scale profiled out):

    mu[s, g] = scale[s] * m[g] * sum_k pi[s, k] * R[k, g] + beta[g]
    x[s, g] ~ NB(mu[s, g], theta[g])  |  Poisson(mu[s, g])  |  Normal(mu[s, g], sigma[g]^2)

``R`` holds the reference profiles (one row per cell type), ``pi`` the proportions (rows on the
simplex), ``m`` a gene-specific platform effect between the reference and the spatial
technology, ``beta`` an additive per-gene background (ambient RNA, free-floating signal; as
cell2location's ``s_eg``), expressed as a fraction ``b[g]`` of the gene's mean expression over
spots, and ``scale`` the spot's depth / cell abundance. ``scale`` and ``sigma`` are set to
closed-form estimates given the rest (a profile likelihood), so they are not free parameters
and the model applies to spots it has not seen.

References:
  Kleshchevnikov et al., "Cell2location maps fine-grained cell types in spatial
  transcriptomics", Nature Biotechnology 2022, https://doi.org/10.1038/s41587-021-01139-4.
  Cable et al., "Robust decomposition of cell type mixtures in spatial transcriptomics"
  (RCTD), Nature Biotechnology 2022, https://doi.org/10.1038/s41587-021-00830-w.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from diffomics.core._likelihoods import (
    dirichlet_softmax_log_prob,
    gaussian_log_prob,
    nb_log_prob,
    poisson_log_prob,
)
from diffomics.spatial._graph import car_penalty

__all__ = [
    "deconvolution_log_likelihood",
    "deconvolution_mean",
    "deconvolution_neg_log_posterior",
    "log_relative_expression",
    "platform_effect_neg_log_marginal",
    "platform_effect_posterior_mean",
    "platform_effect_residual",
    "spot_scale",
]

_TINY = 1e-12


def _spot_mean(v: Array, spot_weight: Array | None) -> Array:
    """Mean over spots (axis 0) of `v`, weighted by `spot_weight` when given."""
    if spot_weight is None:
        return jnp.mean(v, axis=0)
    return jnp.sum(spot_weight[:, None] * v, axis=0) / jnp.sum(spot_weight)


def _spot_sum(v: Array, spot_weight: Array | None) -> Array:
    """Sum over spots (axis 0) of `v`, weighted by `spot_weight` when given."""
    if spot_weight is None:
        return jnp.sum(v, axis=0)
    return jnp.sum(spot_weight.reshape((-1,) + (1,) * (v.ndim - 1)) * v, axis=0)


def spot_scale(x: Array, rate: Array, background: Array, *, likelihood: str) -> Array:
    """Per-spot scale given the per-unit rate and the additive background.

    Counts (``"nb"``, ``"poisson"``): the moment estimate
    ``(sum_g x - sum_g background) / sum_g rate``, which is the Poisson maximum-likelihood
    estimate when the background is 0. Gaussian: the least-squares
    ``(x - background) . rate / rate . rate``. Both are floored at a tiny positive value.

    Args:
      x: observed expression, shape `(n_spots, n_genes)`.
      rate: per-unit expected expression ``m * (pi @ R)``, shape `(n_spots, n_genes)`, >= 0.
      background: additive expression per gene, shape `(n_genes,)`, >= 0, units of `x`.
      likelihood: one of ``"nb"``, ``"poisson"``, ``"gaussian"``.

    Returns:
      Scale per spot, shape `(n_spots,)`, > 0, in units of the reference profiles.

    Examples:
      >>> import jax.numpy as jnp
      >>> spot_scale(jnp.array([[2.0, 4.0]]), jnp.array([[1.0, 2.0]]), jnp.zeros(2),
      ...            likelihood="nb")
      Array([2.], dtype=float32)
    """
    signal = x - background[None, :]
    if likelihood == "gaussian":
        scale = jnp.sum(signal * rate, axis=-1) / (jnp.sum(rate * rate, axis=-1) + _TINY)
    else:
        scale = jnp.sum(signal, axis=-1) / (jnp.sum(rate, axis=-1) + _TINY)
    return jnp.maximum(scale, 1e-6)


def deconvolution_mean(
    x: Array,
    proportions: Array,
    reference_profiles: Array,
    platform_effect: Array,
    background_fraction: Array,
    *,
    likelihood: str,
    spot_weight: Array | None = None,
) -> tuple[Array, Array]:
    """Expected spot expression under the deconvolution model.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`; used to profile out the
        per-spot scale and to put the background in the units of `x`.
      proportions: cell-type proportions, shape `(n_spots, n_cell_types)`, rows on the simplex.
      reference_profiles: expression per cell type, shape `(n_cell_types, n_genes)`, >= 0.
      platform_effect: multiplicative gene effect ``m``, shape `(n_genes,)`, > 0.
      background_fraction: additive background ``b`` per gene, shape `(n_genes,)`, >= 0, as a
        fraction of the gene's mean expression over the spots in `x`.
      likelihood: which scale estimator to use (see `spot_scale`).
      spot_weight: weight of each spot in the gene means, shape `(n_spots,)`, 1 for real
        spots and 0 for padding rows (`diffomics.core.row_weights`); None weighs all by 1.

    Returns:
      ``(mu, scale)``: the mean, shape `(n_spots, n_genes)` in the units of `x`, and the
      per-spot scale, shape `(n_spots,)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> R = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> mu, c = deconvolution_mean(jnp.array([[3.0, 1.0]]), jnp.array([[0.75, 0.25]]),
      ...                            R, jnp.ones(2), jnp.zeros(2), likelihood="poisson")
      >>> mu, c
      (Array([[3., 1.]], dtype=float32), Array([4.], dtype=float32))
    """
    rate = platform_effect[None, :] * (proportions @ reference_profiles)
    background = background_fraction * _spot_mean(x, spot_weight)
    scale = spot_scale(x, rate, background, likelihood=likelihood)
    return scale[:, None] * rate + background[None, :], scale


def deconvolution_log_likelihood(
    x: Array,
    mu: Array,
    *,
    likelihood: str,
    theta: Array | None = None,
    spot_weight: Array | None = None,
) -> Array:
    """Log-likelihood of each spot under the deconvolution model.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`.
      mu: expected expression from `deconvolution_mean`, same shape.
      likelihood: ``"nb"`` (raw counts, default of the analyses), ``"poisson"`` (raw counts)
        or ``"gaussian"`` (already normalised values; the per-gene variance is set to its
        maximum-likelihood value, the mean squared residual over spots).
      theta: NB inverse dispersion per gene, shape `(n_genes,)`; required for ``"nb"``.
      spot_weight: weight of each spot in the Gaussian variance, shape `(n_spots,)` (0 for
        padding rows); None weighs all by 1.

    Returns:
      Log-likelihood per spot in nats, shape `(n_spots,)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 2.0], [3.0, 0.0]])
      >>> deconvolution_log_likelihood(x, x, likelihood="poisson").shape
      (2,)
    """
    if likelihood == "nb":
        per_entry = nb_log_prob(x, mu, theta)
    elif likelihood == "poisson":
        per_entry = poisson_log_prob(x, mu)
    else:
        sigma = jnp.sqrt(_spot_mean((x - mu) ** 2, spot_weight) + 1e-6)
        per_entry = gaussian_log_prob(x, mu, sigma)
    return jnp.sum(per_entry, axis=-1)


def log_relative_expression(x: Array) -> Array:
    """Depth-free log features of spots: ``log1p(x / mean_g x)``.

    Dividing by the spot's mean over genes removes its depth, and the log keeps counts in the
    thousands from saturating a network fed with them.

    Args:
      x: expression, shape `(n_spots, n_genes)`, >= 0, no all-zero spot.

    Returns:
      Features, shape `(n_spots, n_genes)`, >= 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> log_relative_expression(jnp.array([[1.0, 1.0], [10.0, 10.0]]))
      Array([[0.693..., 0.693...],
             [0.693..., 0.693...]], dtype=float32)
    """
    return jnp.log1p(x / (jnp.mean(x, axis=-1, keepdims=True) + _TINY))


def deconvolution_neg_log_posterior(
    x: Array,
    mu: Array,
    log_proportions: Array,
    *,
    likelihood: str,
    theta: Array | None,
    background_fraction: Array,
    background_mean: float = 0.05,
    log_prior_mean: Array | None = None,
    proportion_prior: float = 0.0,
    edges: Array | None = None,
    spatial_prior: float = 0.0,
    spot_weight: Array | None = None,
) -> Array:
    """Negative log-posterior of the per-spot deconvolution, in nats per spot.

    ``-(1/n_spots) [sum_s log p(x_s | mu_s) + log p(b) + sum_s log p(pi_s) + log p_CAR(pi)]``
    with priors

    - ``b_g ~ Exponential(mean = background_mean)``: background is small unless the data
      insist;
    - ``pi_s ~ Dirichlet(proportion_prior * exp(log_prior_mean))`` in the softmax basis
      (`dirichlet_softmax_log_prob`), shrinking each spot towards the tissue's mean
      composition by `proportion_prior` pseudo-cells (off when 0);
    - an intrinsic CAR prior with precision `spatial_prior` on the centred log-ratio of the
      proportions over the spot graph `edges` (off when `spatial_prior` is 0).

    The platform effect is not in this objective: it is estimated from the pooled spots
    first (`platform_effect_neg_log_marginal`) and then held fixed, as RCTD does, because
    fitted jointly with free per-spot proportions it trades off against them.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`.
      mu: expected expression from `deconvolution_mean`, same shape.
      log_proportions: ``log pi``, shape `(n_spots, n_cell_types)`.
      likelihood: ``"nb"``, ``"poisson"`` or ``"gaussian"``.
      theta: NB inverse dispersion, shape `(n_genes,)` (unused otherwise).
      background_fraction: ``b``, shape `(n_genes,)`, >= 0.
      background_mean: prior mean of ``b``, > 0.
      log_prior_mean: log of the prior mean composition, shape `(n_cell_types,)`; needed when
        `proportion_prior` > 0.
      proportion_prior: Dirichlet concentration (pseudo-cells), >= 0.
      edges: spot graph from `knn_graph`, shape `(n_edges, 2)`; needed when `spatial_prior` > 0.
      spatial_prior: CAR precision, >= 0.
      spot_weight: weight of each spot, shape `(n_spots,)`: 1 for real spots, 0 for the
        padding rows that make spots divide over devices (`diffomics.core.row_weights`),
        which then add nothing to the loss; None weighs all by 1.

    Returns:
      Scalar loss in nats per spot.
    """
    n_spots = x.shape[0] if spot_weight is None else jnp.sum(spot_weight)
    per_spot = deconvolution_log_likelihood(
        x, mu, likelihood=likelihood, theta=theta, spot_weight=spot_weight
    )
    log_lik = _spot_sum(per_spot, spot_weight)
    log_prior = -jnp.sum(background_fraction) / background_mean
    if proportion_prior > 0:
        log_prior += _spot_sum(
            dirichlet_softmax_log_prob(log_proportions, log_prior_mean, proportion_prior),
            spot_weight,
        )
    if spatial_prior > 0:
        clr = log_proportions - jnp.mean(log_proportions, axis=-1, keepdims=True)
        log_prior -= spatial_prior * car_penalty(clr, edges)
    return -(log_lik + log_prior) / n_spots


def platform_effect_residual(
    x: Array,
    log_bulk_proportions: Array,
    reference_profiles: Array,
    *,
    platform_effect_scale: float,
    spot_weight: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Log-ratio of the pooled spots to a bulk mixture of the reference, and its variance.

    The spots are summed into one pseudo-bulk sample ``X_g = sum_s x_sg`` (RCTD's "bulk"). On
    the log scale, ``log X_g = log c + log m_g + log (w @ R)_g + e_g`` with the platform effect
    ``log m_g ~ Normal(0, platform_effect_scale^2)`` and the Poisson sampling error
    ``e_g ~ Normal(0, 1 / X_g)`` (delta method). The depth ``log c`` is set to its weighted
    least-squares value.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`.
      log_bulk_proportions: logits of the bulk composition ``w``, shape `(n_cell_types,)`.
      reference_profiles: shape `(n_cell_types, n_genes)`, >= 0.
      platform_effect_scale: prior standard deviation of ``log m``, > 0.
      spot_weight: weight of each spot in the pooled sum, shape `(n_spots,)` (0 for
        padding rows); None weighs all by 1.

    Returns:
      ``(residual, variance, shrinkage)``, each shape `(n_genes,)`: the residual
      ``log X_g - log c - log (w @ R)_g``, its marginal variance
      ``platform_effect_scale^2 + 1 / X_g``, and the factor ``platform_effect_scale^2 /
      variance`` that turns a residual into the posterior mean of ``log m_g``.
    """
    bulk = _spot_sum(x, spot_weight)
    w = jnp.exp(log_bulk_proportions - jnp.max(log_bulk_proportions))
    log_mixture = jnp.log((w / jnp.sum(w)) @ reference_profiles + _TINY)
    prior_var = platform_effect_scale**2
    variance = prior_var + 1.0 / (bulk + 1.0)
    raw = jnp.log(bulk + _TINY) - log_mixture
    log_depth = jnp.sum(raw / variance) / jnp.sum(1.0 / variance)
    residual = raw - log_depth
    return residual, variance, prior_var / variance


def platform_effect_neg_log_marginal(
    x: Array,
    log_bulk_proportions: Array,
    reference_profiles: Array,
    *,
    platform_effect_scale: float,
    spot_weight: Array | None = None,
) -> Array:
    """Negative log marginal likelihood of the bulk composition, platform effect integrated out.

    With the Gaussian model of `platform_effect_residual`, integrating over ``log m`` leaves
    ``residual_g ~ Normal(0, variance_g)``. Minimising over the bulk composition ``w`` picks
    the mixture of the reference that needs the smallest platform effect; the posterior mean
    of ``log m`` is then ``shrinkage * residual`` (`platform_effect_posterior_mean`). That
    platform effect is held fixed in the per-spot fit, as RCTD does, because fitted jointly
    with free per-spot proportions it trades off against them.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`.
      log_bulk_proportions: logits of the bulk composition, shape `(n_cell_types,)`.
      reference_profiles: shape `(n_cell_types, n_genes)`, >= 0.
      platform_effect_scale: prior standard deviation of ``log m``, > 0.
      spot_weight: as in `platform_effect_residual`.

    Returns:
      Scalar, nats per gene.

    References:
      Cable et al. 2022 (RCTD), platform effect normalisation from the pooled pixels,
      https://doi.org/10.1038/s41587-021-00830-w.

    Examples:
      >>> import jax.numpy as jnp
      >>> R = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
      >>> x = jnp.array([[30.0, 10.0, 40.0]])
      >>> loss = lambda w: platform_effect_neg_log_marginal(
      ...     x, jnp.log(jnp.array(w)), R, platform_effect_scale=0.5)
      >>> bool(loss([0.75, 0.25]) < loss([0.5, 0.5]))
      True
    """
    residual, variance, _ = platform_effect_residual(
        x,
        log_bulk_proportions,
        reference_profiles,
        platform_effect_scale=platform_effect_scale,
        spot_weight=spot_weight,
    )
    return 0.5 * jnp.mean(residual**2 / variance + jnp.log(2 * jnp.pi * variance))


def platform_effect_posterior_mean(
    x: Array,
    log_bulk_proportions: Array,
    reference_profiles: Array,
    *,
    platform_effect_scale: float,
    spot_weight: Array | None = None,
) -> Array:
    """Posterior mean of the log platform effect ``log m`` given the bulk composition.

    See `platform_effect_residual` for the model.

    Args:
      x: observed spot expression, shape `(n_spots, n_genes)`.
      log_bulk_proportions: logits of the bulk composition, shape `(n_cell_types,)`.
      reference_profiles: shape `(n_cell_types, n_genes)`, >= 0.
      platform_effect_scale: prior standard deviation of ``log m``, >= 0 (0 gives 0).
      spot_weight: as in `platform_effect_residual`.

    Returns:
      ``log m``, shape `(n_genes,)`.
    """
    residual, _, shrinkage = platform_effect_residual(
        x,
        log_bulk_proportions,
        reference_profiles,
        platform_effect_scale=platform_effect_scale,
        spot_weight=spot_weight,
    )
    return shrinkage * residual
