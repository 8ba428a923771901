"""Banded storage of a symmetric contact matrix: memory `n_bins x n_diags`, not `n_bins^2`.

A band ``B`` of a symmetric matrix ``A`` holds the upper diagonals in rows:
``B[i, d] = A[i, i + d]`` for ``0 <= d < n_diags`` and ``i + d < n_bins``; entries past the
end of the matrix are 0. Expected, insulation and loop calling only look at pixels within a
few megabases of the diagonal, so they run on a band whose memory grows linearly in bins.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array

from diffomics.core._numerics import float_dtype

__all__ = ["band_from_dense", "band_from_pixels", "band_mask", "dense_from_band"]


def _index(n_bins: int, n_diags: int) -> tuple[Array, Array]:
    """Column index ``i + d`` of every band entry, and whether it lies inside the matrix."""
    j = jnp.arange(n_bins)[:, None] + jnp.arange(n_diags)[None, :]
    return jnp.minimum(j, n_bins - 1), j < n_bins


def band_from_dense(matrix: Array, n_diags: int) -> Array:
    """The upper band of a dense matrix.

    Args:
      matrix: square matrix, shape `(n_bins, n_bins)` (only the upper triangle is read).
      n_diags: number of diagonals kept, counting the main one.

    Returns:
      `(n_bins, n_diags)` with ``B[i, d] = matrix[i, i + d]`` and 0 past the end.

    Examples:
      >>> a = jnp.arange(9.0).reshape(3, 3)
      >>> band_from_dense(a, 2).tolist()
      [[0.0, 1.0], [4.0, 5.0], [8.0, 0.0]]
    """
    n = matrix.shape[0]
    j, inside = _index(n, n_diags)
    return jnp.where(inside, jnp.take_along_axis(matrix, j, axis=1), 0.0)


def dense_from_band(band: Array) -> Array:
    """The symmetric dense matrix of a band (diagonals beyond the band are 0).

    Args:
      band: `(n_bins, n_diags)`.

    Returns:
      `(n_bins, n_bins)`, symmetric.

    Examples:
      >>> b = band_from_dense(jnp.array([[1.0, 2.0], [2.0, 3.0]]), 2)
      >>> dense_from_band(b).tolist()
      [[1.0, 2.0], [2.0, 3.0]]
    """
    n, n_diags = band.shape
    j, inside = _index(n, n_diags)
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], j.shape)
    upper = jnp.zeros((n, n), band.dtype).at[rows, j].add(jnp.where(inside, band, 0.0))
    return upper + jnp.triu(upper, 1).T


def band_from_pixels(bin1, bin2, values, n_bins: int, n_diags: int) -> Array:
    """A band from upper-triangle pixels (cooler's ``bin1_id <= bin2_id`` convention).

    Pixels further than ``n_diags - 1`` diagonals from the main one are dropped (they are
    outside the band by construction); duplicated pixels add up.

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      values: pixel values, shape `(nnz,)`.
      n_bins: number of bins.
      n_diags: number of diagonals kept.

    Returns:
      `(n_bins, n_diags)`.
    """
    bin1 = jnp.asarray(bin1)
    d = jnp.asarray(bin2) - bin1
    keep = d < n_diags
    flat = jnp.where(keep, bin1 * n_diags + d, n_bins * n_diags)
    out = jnp.zeros(n_bins * n_diags + 1, float_dtype(values))
    return out.at[flat].add(jnp.asarray(values))[:-1].reshape(n_bins, n_diags)


def band_mask(valid, n_diags: int) -> Array:
    """Valid band entries: both bins valid and the pixel inside the matrix.

    Args:
      valid: boolean, shape `(n_bins,)`.
      n_diags: number of diagonals.

    Returns:
      boolean `(n_bins, n_diags)`.
    """
    valid = jnp.asarray(valid, bool)
    j, inside = _index(valid.shape[0], n_diags)
    return valid[:, None] & valid[j] & inside


def n_diags_for(n_bins: int, n_diags: int | None) -> int:
    """Clip a band width to the matrix (None: the whole matrix)."""
    return n_bins if n_diags is None else int(np.clip(n_diags, 1, n_bins))
