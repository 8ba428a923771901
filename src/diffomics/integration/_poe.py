"""Product-of-experts fusion of Gaussian posteriors, with the standard-normal prior expert."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

__all__ = ["gaussian_kl", "product_of_experts"]


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


def gaussian_kl(mean: Array, logvar: Array) -> Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per row, summed over the last axis.

    Args:
      mean: `(..., latent_dim)` posterior means.
      logvar: same shape, posterior log-variances.

    Returns:
      `(...)` KL divergences in nats.

    Examples:
      >>> float(gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0])
      0.0
    """
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
