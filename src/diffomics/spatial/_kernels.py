"""Spatial covariance kernels, SpatialDE's lengthscale grid, and their eigen-factors.

A `KernelFactor` holds what the Gaussian-process test needs from a kernel matrix ``K``:
its non-zero eigenvalues, the matching eigenvectors and its Gower factor. The exact factor
eigendecomposes the dense ``n x n`` matrix (O(n^3)); the Nystrom factor uses ``m`` inducing
points and costs O(n m^2), for data too large for the exact one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import Array
from scipy.cluster.vq import kmeans2
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.spatial.distance import cdist

from diffomics.core._checks import check_finite, check_matrix
from diffomics.core._errors import ConfigError, ShapeError

__all__ = [
    "KernelFactor",
    "exact_factor",
    "gower_factor",
    "kernel_matrix",
    "lengthscale_grid",
    "nystrom_factor",
    "squared_distances",
]

KERNELS = ("se", "periodic", "linear")


class KernelFactor(NamedTuple):
    """Eigen-factor of a (possibly low-rank) kernel matrix ``K = U diag(s) U^T``.

    Attributes:
      eigvals: ``s``, shape `(m,)`, >= 0, float64.
      eigvecs: ``U``, shape `(n, m)`, orthonormal columns, float64.
      gower: Gower factor of ``K`` (`gower_factor`), scalar float.
    """

    eigvals: np.ndarray
    eigvecs: np.ndarray
    gower: float


def squared_distances(a: Array, b: Array | None = None) -> Array:
    """Squared Euclidean distances between rows, clipped at 0.

    Args:
      a: shape `(n, d)`.
      b: shape `(m, d)`; None uses `a`.

    Returns:
      Shape `(n, m)`.

    Examples:
      >>> squared_distances(jnp.array([[0.0, 0.0], [3.0, 4.0]]))
      Array([[ 0., 25.],
             [25.,  0.]], dtype=float32)
    """
    b = a if b is None else b
    aa = jnp.sum(a * a, axis=1)[:, None]
    bb = jnp.sum(b * b, axis=1)[None, :]
    return jnp.maximum(aa + bb - 2.0 * a @ b.T, 0.0)


def kernel_matrix(
    a: Array, b: Array | None = None, *, kernel: str = "se", lengthscale: float | Array = 1.0
) -> Array:
    """Kernel matrix between two sets of coordinates.

    - ``"se"``: squared exponential ``exp(-r^2 / (2 l^2))``;
    - ``"periodic"``: SpatialDE's cosine kernel ``cos(2 pi r / l)`` (``l`` is the period);
    - ``"linear"``: ``a b^T`` scaled so its largest entry is 1 (``lengthscale`` unused).

    Args:
      a: coordinates, shape `(n, d)`.
      b: coordinates, shape `(m, d)`; None uses `a`.
      kernel: one of ``"se"``, ``"periodic"``, ``"linear"``.
      lengthscale: ``l`` > 0, in the units of the coordinates.

    Returns:
      Shape `(n, m)`.

    References:
      Svensson, Teichmann & Stegle, "SpatialDE: identification of spatially variable
      genes", Nature Methods 15:343 (2018), https://doi.org/10.1038/nmeth.4636.

    Examples:
      >>> x = jnp.array([[0.0], [1.0]])
      >>> kernel_matrix(x, lengthscale=1.0).round(3)
      Array([[1.   , 0.607],
             [0.607, 1.   ]], dtype=float32)
    """
    if kernel == "linear":
        # the coordinates are divided by their largest |value| first (k / max k does not
        # change) so that products of coordinates of 1e20 do not overflow float32
        scale = jax.lax.stop_gradient(jnp.max(jnp.abs(a)))
        a = a / jnp.where(scale > 0, scale, 1.0)
        b = a if b is None else b / jnp.where(scale > 0, scale, 1.0)
        k = a @ b.T
        return k / jnp.max(k)
    # distances in lengthscales, from centred coordinates: float32 then neither overflows
    # nor underflows for coordinates of 1e20 or 1e-20 with a lengthscale of their order,
    # and a large offset (pixel coordinates) does not cancel the digits of nearby spots
    centre = jax.lax.stop_gradient(jnp.mean(a, axis=0, keepdims=True))
    a_l = (a - centre) / lengthscale
    r2 = squared_distances(a_l, None if b is None else (b - centre) / lengthscale)
    # pairs more than ~1e19 lengthscales apart overflow (inf - inf): they are infinitely far
    r2 = jnp.where(jnp.isnan(r2), jnp.inf, r2)
    if kernel == "se":
        return jnp.exp(-r2 / 2.0)
    if kernel == "periodic":
        return jnp.cos(2.0 * jnp.pi * jnp.sqrt(r2 + 1e-12))
    msg = f"kernel must be one of {list(KERNELS)}; found {kernel!r}."
    raise ConfigError(msg)


def gower_factor(k: Array) -> Array:
    """Gower normalisation factor ``tr(P K P) / (n - 1)`` with the centring matrix ``P``.

    The average variance a kernel induces around the sample mean; SpatialDE's fraction of
    spatial variance divides by it so that FSV is comparable across lengthscales.
    Differentiable in `k`.

    Args:
      k: kernel matrix, shape `(n, n)`.

    Returns:
      The factor, a scalar.

    Examples:
      >>> float(gower_factor(jnp.eye(4)))
      1.0
    """
    n = k.shape[0]
    return (jnp.trace(k) - jnp.sum(k) / n) / (n - 1)


def lengthscale_grid(coords: np.ndarray, *, n: int = 10) -> np.ndarray:
    """SpatialDE's lengthscale grid: log-spaced, half the smallest to twice the largest distance.

    The smallest non-zero distance comes from a k-d tree and the largest from the convex
    hull, so this is O(n log n), not O(n^2).

    Args:
      coords: spot coordinates, shape `(n_spots, 2)`.
      n: number of lengthscales, >= 1.

    Returns:
      Shape `(n,)`, increasing, in the units of `coords`.

    Raises:
      ShapeError: fewer than 2 distinct spots.

    Examples:
      >>> lengthscale_grid(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), n=3)
      array([0.5       , 1.73205081, 6.        ])
    """
    coords = np.asarray(coords, dtype=np.float64)
    check_matrix(coords, "coords")
    check_finite(coords, "coords")
    distinct = np.unique(coords, axis=0)
    if distinct.shape[0] < 2:
        msg = f"coords needs at least 2 distinct spots; found {distinct.shape[0]}."
        raise ShapeError(msg)
    d_min = cKDTree(distinct).query(distinct, k=2)[0][:, 1].min()
    try:
        hull = distinct[ConvexHull(distinct).vertices]
    except (QhullError, ValueError):  # collinear points or 1-d coordinates: take them all
        hull = distinct
    diff = hull[:, None, :] - hull[None, :, :]
    d_max = np.sqrt((diff**2).sum(-1).max())
    return np.logspace(np.log10(d_min / 2.0), np.log10(d_max * 2.0), n)


def exact_factor(k: np.ndarray) -> KernelFactor:
    """Eigendecompose a dense kernel matrix (float64, LAPACK ``syevd``), O(n^3).

    Eigenvalues are clipped at 1e-8 from below, as SpatialDE does.

    Args:
      k: symmetric kernel matrix, shape `(n, n)`.

    Returns:
      The `KernelFactor` with all ``n`` eigenpairs.
    """
    k = np.asarray(k, dtype=np.float64)
    s, u = scipy.linalg.eigh(k, driver="evd")
    return KernelFactor(np.clip(s, 1e-8, None), u, float(gower_factor(k)))


def inducing_points(coords: np.ndarray, *, n_inducing: int, seed: int = 0) -> np.ndarray:
    """K-means centres of the coordinates, used as Nystrom inducing points.

    Args:
      coords: shape `(n_spots, d)`.
      n_inducing: number of centres (at most the number of distinct spots).
      seed: seed of k-means++ initialisation.

    Returns:
      Shape `(n_inducing, d)`, float64.
    """
    coords = np.asarray(coords, dtype=np.float64)
    m = min(n_inducing, np.unique(coords, axis=0).shape[0])
    centres, _ = kmeans2(coords, _kmeans_plus_plus(coords, m, seed=seed), minit="matrix")
    return centres


def _kmeans_plus_plus(coords: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """The k-means++ seeding of ``scipy.cluster.vq.kmeans2(minit="++", seed=seed)``.

    The same draws from the same generator, so the same centres, but each spot's squared
    distance to its nearest centre is updated with the newest centre only: O(n k) instead
    of scipy's O(n k^2) (27 of the 80 s of `spatial_genes` at 100,000 spots and 500
    inducing points).
    """
    rng = np.random.RandomState(seed)  # what kmeans2 makes of an int seed
    n = coords.shape[0]
    centres = np.empty((k, coords.shape[1]))
    centres[0] = coords[rng.randint(n)]
    nearest = np.full(n, np.inf)
    for i in range(1, k):
        nearest = np.minimum(nearest, cdist(centres[i - 1 : i], coords, "sqeuclidean")[0])
        cumulative = (nearest / nearest.sum()).cumsum()
        centres[i] = coords[int(np.searchsorted(cumulative, rng.uniform()))]
    return centres


def nystrom_factor(
    coords: np.ndarray,
    inducing: np.ndarray,
    *,
    kernel: str = "se",
    lengthscale: float = 1.0,
    jitter: float = 1e-6,
) -> KernelFactor:
    """Low-rank factor of the kernel through ``m`` inducing points (Nystrom).

    ``K ~ Phi Phi^T`` with ``Phi = K_nm K_mm^{-1/2}``; the thin SVD of ``Phi`` gives the
    ``m`` non-zero eigenpairs in O(n m^2) time and O(n m) memory. The approximation is a
    valid kernel in its own right, so a likelihood-ratio test built on it is a test of that
    (reduced-rank) Gaussian process and stays calibrated.

    Args:
      coords: spot coordinates, shape `(n, d)`.
      inducing: inducing points, shape `(m, d)`.
      kernel: ``"se"`` or ``"periodic"`` (see `kernel_matrix`).
      lengthscale: kernel lengthscale (or period) > 0.
      jitter: added to the diagonal of ``K_mm`` (relative to its largest entry).

    Returns:
      The `KernelFactor` with at most ``m`` eigenpairs (numerically zero ones dropped).

    References:
      Williams & Seeger, "Using the Nystrom method to speed up kernel machines", NIPS 2000.
    """
    coords = np.asarray(coords, dtype=np.float64)
    inducing = np.asarray(inducing, dtype=np.float64)
    k_nm = np.asarray(kernel_matrix(coords, inducing, kernel=kernel, lengthscale=lengthscale))
    k_mm = np.asarray(kernel_matrix(inducing, kernel=kernel, lengthscale=lengthscale))
    k_nm, k_mm = k_nm.astype(np.float64), k_mm.astype(np.float64)
    w, v = scipy.linalg.eigh(k_mm + jitter * np.abs(k_mm).max() * np.eye(k_mm.shape[0]))
    keep = w > 1e-10 * w.max()
    phi = k_nm @ (v[:, keep] / np.sqrt(w[keep]))
    u, sigma, _ = scipy.linalg.svd(phi, full_matrices=False, lapack_driver="gesdd")
    s = sigma**2
    keep = s > 1e-10 * s.max()
    n = coords.shape[0]
    col = phi.sum(axis=0)
    gower = ((phi**2).sum() - col @ col / n) / (n - 1)
    return KernelFactor(s[keep], u[:, keep], float(gower))
