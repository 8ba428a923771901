"""Product-of-experts fusion of Gaussian posteriors, with the standard-normal prior expert."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

__all__ = ["gaussian_kl", "product_of_experts", "symmetric_gaussian_kl"]


def product_of_experts(
    means: Array, logvars: Array, mask: Array | None = None, weights: Array | None = None
) -> tuple[Array, Array]:
    """Fuse per-modality Gaussian posteriors and the N(0, I) prior into one Gaussian.

    ``precision = 1 + sum_m w_m mask_m / var_m`` and
    ``mean = sum_m w_m mask_m mean_m / var_m / precision`` (the prior expert contributes
    precision 1 and mean 0), as in MVAE (Wu & Goodman 2018). A cell whose modality ``m`` is
    missing has ``mask_m = 0``, which drops that expert; with no expert left the result is
    the prior. Weights ``w_m`` temper the experts (1 is the plain product).

    Args:
      means: `(n_modalities, n_cells, latent_dim)` expert means.
      logvars: same shape, expert log-variances.
      mask: `(n_modalities, n_cells)` 1 where a modality is observed (None: all observed).
      weights: `(n_modalities,)` expert weights (None: all 1).

    Returns:
      ``(mean, logvar)``, each `(n_cells, latent_dim)`.

    References:
      Wu & Goodman, "Multimodal generative models for scalable weakly-supervised learning",
      NeurIPS 2018, https://arxiv.org/abs/1802.05335.

    Examples:
      >>> m, lv = product_of_experts(jnp.ones((1, 1, 1)), jnp.zeros((1, 1, 1)))
      >>> float(m[0, 0]), float(jnp.exp(lv[0, 0]))  # N(1, 1) x N(0, 1) = N(0.5, 0.5)
      (0.5, 0.5)
    """
    n_mod, n_cells = means.shape[:2]
    mask = jnp.ones((n_mod, n_cells)) if mask is None else jnp.asarray(mask, means.dtype)
    weights = jnp.ones((n_mod,)) if weights is None else weights
    precision = jnp.exp(-logvars) * (mask * weights[:, None])[..., None]
    joint_precision = 1.0 + jnp.sum(precision, axis=0)
    mean = jnp.sum(precision * means, axis=0) / joint_precision
    return mean, -jnp.log(joint_precision)


def gaussian_kl(
    mean: Array, logvar: Array, prior_mean: Array | float = 0.0, prior_logvar: Array | float = 0.0
) -> Array:
    """``KL(N(mean, exp(logvar)) || N(prior_mean, exp(prior_logvar)))`` per row.

    Diagonal Gaussians, summed over the last axis; the prior defaults to N(0, I).

    Args:
      mean: `(..., latent_dim)` posterior means.
      logvar: same shape, posterior log-variances.
      prior_mean: prior means, broadcastable to `mean`.
      prior_logvar: prior log-variances, broadcastable to `mean`.

    Returns:
      `(...)` KL divergences in nats.

    Examples:
      >>> float(gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0])
      0.0
      >>> float(gaussian_kl(jnp.ones((1, 1)), jnp.zeros((1, 1)), 1.0, 0.0)[0])
      0.0
    """
    ratio = jnp.exp(logvar - prior_logvar)
    return 0.5 * jnp.sum(
        ratio + (mean - prior_mean) ** 2 * jnp.exp(-prior_logvar) - 1.0 - logvar + prior_logvar,
        axis=-1,
    )


def symmetric_gaussian_kl(mean1: Array, logvar1: Array, mean2: Array, logvar2: Array) -> Array:
    """Jeffreys divergence ``KL(q1 || q2) + KL(q2 || q1)`` of diagonal Gaussians, per row.

    ``0.5 sum_d [v1/v2 + v2/v1 - 2 + (m1 - m2)^2 (1/v1 + 1/v2)]``: zero only when the two
    Gaussians are equal. MultiVI adds it between the modality-specific posteriors of a cell
    (``modality_penalty="Jeffreys"``) to align the modalities.

    Args:
      mean1: `(..., latent_dim)` means of the first Gaussian.
      logvar1: same shape, its log-variances.
      mean2: means of the second Gaussian, same shape.
      logvar2: its log-variances, same shape.

    Returns:
      `(...)` divergences in nats, summed over the last axis.

    References:
      Ashuach, Gabitto, Koodli, Saldi, Jordan & Yosef, "MultiVI: deep generative model for
      the integration of multimodal data", Nat. Methods 20:1222 (2023),
      https://doi.org/10.1038/s41592-023-01909-9 (``scvi.module.MULTIVAE``, ``sym_kld``).

    Examples:
      >>> z = jnp.zeros((1, 2))
      >>> float(symmetric_gaussian_kl(z, z, z + 1.0, z)[0])  # unit variances: |m1 - m2|^2
      2.0
    """
    ratio = jnp.exp(logvar1 - logvar2)
    sq = (mean1 - mean2) ** 2
    terms = ratio + 1.0 / ratio - 2.0 + sq * (jnp.exp(-logvar1) + jnp.exp(-logvar2))
    return 0.5 * jnp.sum(terms, axis=-1)
