"""Gradient-safe numerics: functions whose gradients stay finite where the plain ones do not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["default_float", "float_dtype", "safe_eigh", "safe_sqrt"]


def default_float() -> np.dtype:
    """The float dtype diffomics computes in: float32, or float64 when JAX runs with x64.

    float32 is the default on every device (and what the tests check against the
    reference tools); setting ``JAX_ENABLE_X64=1`` (or ``jax.config.update(
    "jax_enable_x64", True)`` before any computation) makes the analyses, their
    parameters and their fits float64, for users who need the precision or want to check
    that float32 suffices (``tests/reliability/test_precision.py`` does).

    Examples:
      >>> default_float()  # JAX's default
      dtype('float32')
    """
    return jax.dtypes.canonicalize_dtype(np.float64)


def float_dtype(x) -> jnp.dtype:
    """The floating dtype to compute `x` in: that of `x` or `default_float`, the wider.

    Integers and float32 compute in float32 by default, in float64 under x64; a float64
    input computes in float64 whenever JAX allows it (x64).

    Examples:
      >>> float_dtype(np.arange(3)), float_dtype(np.ones(3, np.float32))
      (dtype('float32'), dtype('float32'))
    """
    return jnp.result_type(x, default_float())


def safe_sqrt(x: Array) -> Array:
    """``sqrt(x)`` for ``x >= 0`` whose gradient at 0 is 0 instead of infinite.

    The double-``where`` trick (as optax's ``safe_norm``): the square root only ever sees
    positive values, so no ``inf * 0 = NaN`` reaches the gradient of a zero variance.

    Examples:
      >>> import jax
      >>> float(safe_sqrt(jnp.float32(4.0))), float(jax.grad(safe_sqrt)(jnp.float32(0.0)))
      (2.0, 0.0)
    """
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


#: Relative broadening of eigenvalue gaps in the backward pass of `safe_eigh`.
_EIGH_BROADENING = 1e-5


@jax.custom_vjp
def safe_eigh(a: Array) -> tuple[Array, Array]:
    """Eigendecomposition of a symmetric matrix with a gradient that stays finite.

    The forward pass is ``jnp.linalg.eigh``. The exact backward pass divides by eigenvalue
    gaps ``w_j - w_i``, which is infinite for repeated eigenvalues and huge for the clusters
    of tiny eigenvalues that smooth kernels have; here each ``1 / (w_j - w_i)`` becomes
    ``(w_j - w_i) / ((w_j - w_i)^2 + eps^2)`` with ``eps = 1e-5 max|w|`` (Lorentzian
    broadening). Functions that depend on the spectrum smoothly (log-determinants,
    quadratic forms, posterior means) get their usual gradient up to that broadening.

    Args:
      a: symmetric matrix, shape `(n, n)`.

    Returns:
      ``(w, v)``: eigenvalues in ascending order, shape `(n,)`, and eigenvectors as columns,
      shape `(n, n)`.

    References:
      Seeger, Hetzel, Dai, Meissner & Lawrence, "Auto-differentiating linear algebra",
      arXiv:1710.08717 (2017); the broadening as in Liao et al., "Differentiable programming
      tensor networks", PRX 9:031041 (2019), https://doi.org/10.1103/PhysRevX.9.031041.

    Examples:
      >>> g = jax.grad(lambda a: jnp.sum(safe_eigh(a)[0] ** 2))(jnp.eye(3))
      >>> g.tolist()  # d tr(A^2) / dA = 2 A, finite despite the triple eigenvalue
      [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    """
    w, v = jnp.linalg.eigh(a)
    return w, v  # a plain tuple, as the forward rule returns (not eigh's EighResult)


def _safe_eigh_fwd(a):
    w, v = jnp.linalg.eigh(a)
    return (w, v), (w, v)


def _safe_eigh_bwd(residuals, cotangents):
    w, v = residuals
    gw, gv = cotangents
    gap = w[None, :] - w[:, None]
    eps = _EIGH_BROADENING * jnp.max(jnp.abs(w))
    inv_gap = gap / (gap**2 + eps**2)
    inner = jnp.diag(gw) + inv_gap * (v.T @ gv)
    grad = v @ inner @ v.T
    return (0.5 * (grad + grad.T),)


safe_eigh.defvjp(_safe_eigh_fwd, _safe_eigh_bwd)
