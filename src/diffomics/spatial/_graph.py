"""Spatial neighbour graphs and the intrinsic CAR smoothness penalty on them."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from scipy.spatial import cKDTree

from diffomics.core._checks import check_finite, check_matrix
from diffomics.core._errors import ConfigError

__all__ = ["car_penalty", "knn_graph"]


def knn_graph(coords: np.ndarray, *, n_neighbors: int = 6) -> np.ndarray:
    """Undirected k-nearest-neighbour graph of spot coordinates.

    Each spot is joined to its `n_neighbors` nearest spots (Euclidean); the union of those
    directed edges is returned once per pair, as squidpy's ``spatial_neighbors`` does for
    generic coordinates.

    Args:
      coords: spot coordinates, shape `(n_spots, n_dims)`, any length unit.
      n_neighbors: neighbours per spot, 1 <= n_neighbors < n_spots.

    Returns:
      Edge list, shape `(n_edges, 2)`, int32, each row ``(i, j)`` with ``i < j``, sorted.

    Raises:
      ShapeError: `coords` is not a matrix.
      ConfigError: `n_neighbors` out of range.

    Examples:
      >>> knn_graph(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]), n_neighbors=1)
      array([[0, 1],
             [1, 2]], dtype=int32)
    """
    check_matrix(coords, "coords")
    check_finite(coords, "coords")
    n = coords.shape[0]
    if not 1 <= n_neighbors < n:
        msg = f"n_neighbors must be in [1, n_spots - 1] = [1, {n - 1}]; found {n_neighbors}."
        raise ConfigError(msg)
    _, nbrs = cKDTree(coords).query(coords, k=n_neighbors + 1)
    src = np.repeat(np.arange(n), n_neighbors)
    dst = nbrs[:, 1:].ravel()
    pairs = np.sort(np.stack([src, dst], axis=1), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0).astype(np.int32)


def car_penalty(values: Array, edges: Array) -> Array:
    """Intrinsic conditional-autoregressive (ICAR) energy ``1/2 sum_{i~j} ||v_i - v_j||^2``.

    The negative log-density (up to a constant) of an intrinsic Gaussian CAR prior with unit
    precision; multiply by the precision (``spatial_prior``) to use it as a penalty.

    Args:
      values: per-spot vectors, shape `(n_spots, n_features)`.
      edges: edge list from `knn_graph`, shape `(n_edges, 2)`.

    Returns:
      Scalar energy, >= 0.

    References:
      Besag, York & Mollié, "Bayesian image restoration, with two applications in spatial
      statistics", Ann. Inst. Stat. Math. 1991, https://doi.org/10.1007/BF00116466.

    Examples:
      >>> float(car_penalty(jnp.array([[0.0], [2.0]]), jnp.array([[0, 1]])))
      2.0
    """
    diff = values[edges[:, 0]] - values[edges[:, 1]]
    return 0.5 * jnp.sum(diff**2)
