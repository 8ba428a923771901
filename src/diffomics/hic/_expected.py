"""Distance-decay expected: the mean balanced contact frequency per diagonal."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from diffomics.core._numerics import float_dtype

__all__ = ["Expected", "expected_cis", "valid_pixel_counts"]


def valid_pixel_counts(valid, n_diags: int) -> Array:
    """Number of pixels on each diagonal whose two bins are both valid.

    ``n[d] = sum_i valid[i] * valid[i + d]``, the autocorrelation of the valid-bin mask,
    by FFT in O(n log n) (exact after rounding).

    Args:
      valid: boolean `(n_bins,)`.
      n_diags: number of diagonals returned.

    Returns:
      `(n_diags,)` float32 counts.

    Examples:
      >>> valid_pixel_counts(jnp.array([True, True, False, True]), 3).tolist()
      [3.0, 1.0, 1.0]
    """
    v = jnp.asarray(valid, jnp.float32)
    n = v.shape[0]
    size = 1 << (2 * n - 1).bit_length()
    f = jnp.fft.rfft(v, size)
    auto = jnp.fft.irfft(f * jnp.conj(f), size)[:n_diags]
    out = jnp.round(auto)
    return jnp.pad(out, (0, max(0, n_diags - out.shape[0])))


class Expected(NamedTuple):
    """Per-diagonal summaries, each `(n_diags,)` (``d`` = bin distance).

    Attributes:
      n_valid: pixels with both bins valid (cooltools ``n_valid``).
      count_sum: raw counts over those pixels (``count.sum``).
      balanced_sum: balanced counts over those pixels (``balanced.sum``).
      balanced_avg: ``balanced_sum / n_valid``; NaN for ``d < ignore_diags`` or no valid
        pixel (``balanced.avg``).
    """

    n_valid: Array
    count_sum: Array
    balanced_sum: Array
    balanced_avg: Array


def expected_cis(
    bin1, bin2, counts, weights, *, n_diags: int | None = None, ignore_diags: int = 2
) -> Expected:
    """Expected contact frequency at each genomic distance, as ``cooltools.expected_cis``.

    The mean of the balanced contacts ``count * w_i * w_j`` over the valid pixels of each
    diagonal (a pixel is valid when both its bins have a non-zero weight). Works on pixels,
    so memory grows with the number of non-zero pixels, not ``n_bins^2``. Differentiable in
    `counts` and `weights`.

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      counts: raw counts, shape `(nnz,)`.
      weights: balancing weights, `(n_bins,)`; 0 (or NaN) marks a dropped bin.
      n_diags: diagonals returned (None: all ``n_bins``).
      ignore_diags: the first diagonals reported as NaN.

    Returns:
      An `Expected`.

    References:
      Open2C et al., "Cooltools: enabling high-resolution Hi-C analysis in Python",
      PLoS Comput. Biol. 20:e1012067 (2024), https://doi.org/10.1371/journal.pcbi.1012067.

    Examples:
      >>> i, j = jnp.array([0, 0, 1, 1, 2]), jnp.array([1, 2, 2, 3, 3])
      >>> e = expected_cis(i, j, jnp.array([4.0, 1.0, 2.0, 6.0, 2.0]), jnp.ones(4), ignore_diags=1)
      >>> e.balanced_avg.tolist()[1:]
      [2.6666667461395264, 3.5, 0.0]
    """
    dtype = jnp.result_type(float_dtype(weights), float_dtype(counts))
    weights = jnp.nan_to_num(jnp.asarray(weights, dtype))
    n_bins = weights.shape[0]
    n_diags = n_bins if n_diags is None else n_diags
    bin1, bin2 = jnp.asarray(bin1), jnp.asarray(bin2)
    d = bin2 - bin1
    w1, w2 = weights[bin1], weights[bin2]
    ok = (w1 > 0) & (w2 > 0)
    counts = jnp.asarray(counts, dtype)
    count_sum = jax.ops.segment_sum(jnp.where(ok, counts, 0.0), d, n_diags)
    balanced_sum = jax.ops.segment_sum(counts * w1 * w2, d, n_diags)
    n_valid = valid_pixel_counts(weights > 0, n_diags)
    avg = balanced_sum / jnp.where(n_valid > 0, n_valid, jnp.nan)
    avg = jnp.where(jnp.arange(n_diags) < ignore_diags, jnp.nan, avg)
    return Expected(n_valid, count_sum, balanced_sum, avg)
