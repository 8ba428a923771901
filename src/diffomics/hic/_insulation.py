"""Diamond insulation score, boundary strength by prominence, and soft boundaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.sharding import PartitionSpec

from diffomics.core._sharding import DATA_AXIS, padded_size

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = [
    "Insulation",
    "boundary_strength",
    "insulation",
    "li_threshold",
    "peak_prominence",
    "soft_boundaries",
]


class Insulation(NamedTuple):
    """Per-bin insulation, each `(n_bins,)`.

    Attributes:
      sum_balanced: balanced contacts in the diamond.
      n_pixels: valid pixels in the diamond.
      log2_score: ``log2(score / median(score))`` with ``score = sum_balanced / n_pixels``;
        NaN where the diamond has no valid pixel or no contact.
    """

    sum_balanced: Array
    n_pixels: Array
    log2_score: Array


def _diamond_sum(x: Array, window: int, ignore_diags: int) -> Array:
    """``sum_{0 <= a, b < window, a + b >= ignore_diags} A[k - a, k + b]`` from a band.

    Row ``k - a`` of the band holds the diamond's pixels ``(k - a, k + b)`` on diagonals
    ``a + b``: the sum over ``b`` is a difference of cumulative sums along that row (over at
    most ``2 * window - 1`` diagonals), and the diamond adds ``window`` such row sums,
    shifted. Differences of cumulative sums along the chromosome cancel in float32 (log2
    scores off by 1e-2, and two empty diamonds given a tiny positive sum, on GM12878 chr22's
    raw counts at 50 kb, 1,027 bins); sums along one row do not.
    """
    n, n_diags = x.shape
    width = min(2 * window - 1, n_diags)
    x = jnp.where(jnp.arange(width) >= ignore_diags, x[:, :width], 0.0)
    csum = jnp.concatenate([jnp.zeros((n, 1), x.dtype), jnp.cumsum(x, axis=1)], axis=1)
    total = jnp.zeros(n, x.dtype)
    for a in range(min(window, n)):
        row = csum[:, min(a + window, width)] - csum[:, min(a, width)]  # diagonals a .. a+w-1
        total = total + jnp.pad(row[: n - a], (a, 0))  # bin k reads row k - a
    return total


def _diamond_sums(x: Array, valid: Array, window: int, ignore_diags: int) -> tuple[Array, Array]:
    """Diamond sums of the contacts and of the valid pixels."""
    return _diamond_sum(x, window, ignore_diags), _diamond_sum(valid, window, ignore_diags)


def _tiled_diamond_sums(x: Array, valid: Array, window: int, ignore_diags: int, mesh: Mesh):
    """`_diamond_sums` with the band's rows split over the mesh, one block per device.

    A bin's diamond reads its own row of the band and the ``window - 1`` rows above it, so
    each device takes the last ``window - 1`` rows of the previous device's block
    (``ppermute``; the first device gets zeros, rows before the matrix) and sums its own.
    """
    n, halo, n_dev = x.shape[0], window - 1, mesh.devices.size
    n_pad = padded_size(n, mesh)
    x, valid = (jnp.pad(a, ((0, n_pad - n), (0, 0))) for a in (x, valid))
    shift = [(i, i + 1) for i in range(n_dev - 1)]

    def block(xb, vb):
        if halo:
            xb, vb = (jnp.concatenate([jax.lax.ppermute(a[-halo:], DATA_AXIS, shift), a])
                      for a in (xb, vb))  # fmt: skip
        return tuple(s[halo:] for s in _diamond_sums(xb, vb, window, ignore_diags))

    rows = PartitionSpec(DATA_AXIS)
    sums = jax.shard_map(block, mesh=mesh, in_specs=(rows, rows), out_specs=(rows, rows))
    return tuple(s[:n] for s in sums(x, valid))


def insulation(
    band: Array, mask: Array, window: int, *, ignore_diags: int = 2, mesh: Mesh | None = None
) -> Insulation:
    """Diamond insulation score of every bin, as ``cooltools.insulation``.

    For bin ``k`` the diamond holds the pixels ``(k - a, k + b)`` with ``0 <= a, b < window``
    and ``a + b >= ignore_diags``: contacts between the `window` bins upstream of the bin
    (itself included) and the `window` bins downstream. The score is their mean balanced
    contact frequency over valid pixels, normalised by the median over bins and log2
    transformed; minima mark insulating boundaries (Crane et al. 2015). Runs on a band of
    at least ``2 * window - 1`` diagonals, memory ``O(n_bins * n_diags)``, and is
    differentiable in the balanced contacts.

    A diamond sum adds ``window`` partial sums along rows of the band. With a `mesh`, the
    band is cut into one block of consecutive rows (a stretch of the diagonal) per device,
    and each device sums the diamonds of its block from its rows and the ``window - 1``
    rows before it, received from the previous device: memory per device is its block,
    and the sums are the one-device sums (to float rounding).

    Args:
      band: balanced contacts, `(n_bins, n_diags)` (see `band_from_pixels`).
      mask: valid band entries, boolean `(n_bins, n_diags)` (see `band_mask`).
      window: diamond size in bins, >= 1.
      ignore_diags: diagonals left out of the diamond.
      mesh: a device mesh (`diffomics.core.data_mesh`) whose devices each take a block of
        rows; with blocks shorter than ``window - 1`` rows, or None (default), the whole
        band on the default device.

    Returns:
      An `Insulation`.

    References:
      Crane et al., "Condensin-driven remodelling of X chromosome topology during dosage
      compensation", Nature 523:240 (2015), https://doi.org/10.1038/nature14450.

    Examples:
      >>> from diffomics.hic import band_from_dense, band_mask
      >>> a = jnp.ones((6, 6)).at[:3, 3:].set(0.1).at[3:, :3].set(0.1)  # two blocks
      >>> ins = insulation(band_from_dense(a, 5), band_mask(jnp.ones(6, bool), 5), 2,
      ...                  ignore_diags=1)
      >>> int(jnp.nanargmin(ins.log2_score))  # the boundary between the blocks
      2
    """
    x = jnp.where(mask, band, 0.0)
    valid = mask.astype(x.dtype)
    n_dev = 1 if mesh is None else mesh.devices.size
    if n_dev > 1 and padded_size(x.shape[0], mesh) // n_dev >= window - 1:
        total, n_pixels = _tiled_diamond_sums(x, valid, window, ignore_diags, mesh)
    else:
        total, n_pixels = _diamond_sums(x, valid, window, ignore_diags)
    ok = (n_pixels > 0) & (total > 0)
    score = jnp.where(ok, total / jnp.where(ok, n_pixels, 1.0), 1.0)  # gradient-safe
    median = jnp.nanmedian(jnp.where(ok, score, jnp.nan))
    log2 = jnp.where(ok, jnp.log2(score / median), jnp.nan)
    return Insulation(total, n_pixels, log2)


def _nearest_higher_left(x: np.ndarray) -> np.ndarray:
    """Index of the nearest point to the left of each point that is strictly higher (-1: none).

    One pass with a stack of decreasing values, O(n).
    """
    out = np.full(x.size, -1, np.int64)
    stack: list[int] = []
    for i, v in enumerate(x.tolist()):
        while stack and x[stack[-1]] <= v:
            stack.pop()
        if stack:
            out[i] = stack[-1]
        stack.append(i)
    return out


def peak_prominence(x: np.ndarray) -> np.ndarray:
    """Prominence of each local maximum of a track, as cooltools' ``find_peak_prominence``.

    A local maximum is strictly higher than both neighbours. On each side, its prominence is
    its height over the lowest point between it and the nearest strictly higher point on that
    side; with a higher point on one side only, that side's value; with both, the smaller.
    The highest peak (no higher point on either side) is measured from the lowest local
    minimum of the track. This differs from the textbook (and ``scipy.signal``) prominence,
    which measures a side with no higher point down to the edge of the track: near the ends
    of a chromosome, or of an unmappable block, that gives a smaller value.

    Args:
      x: `(n,)` finite values.

    Returns:
      `(n,)` float64: prominence at local maxima, NaN elsewhere.

    Examples:
      >>> peak_prominence(np.array([0.0, 2.0, 1.0, 3.0, 0.5])).tolist()
      [nan, 1.0, nan, 2.0, nan]
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    out = np.full(n, np.nan)
    if n < 3:
        return out
    inner = x[1:-1]
    peaks = np.flatnonzero((inner > x[:-2]) & (inner > x[2:])) + 1
    if peaks.size == 0:
        return out
    left = _nearest_higher_left(x)
    mirrored = _nearest_higher_left(x[::-1])[::-1]
    right = np.where(mirrored >= 0, n - 1 - mirrored, -1)
    on_left = np.array([x[p] - x[left[p] : p].min() if left[p] >= 0 else np.nan for p in peaks])
    on_right = np.array([x[p] - x[p : right[p]].min() if right[p] >= 0 else np.nan
                         for p in peaks])  # fmt: skip
    prominence = np.fmin(on_left, on_right)
    highest = np.flatnonzero(np.isnan(prominence))
    if highest.size:  # the first highest peak (cooltools leaves any tied one NaN)
        minima = np.flatnonzero((inner < x[:-2]) & (inner < x[2:])) + 1
        base = x[minima].min() if minima.size else x.min()
        prominence[highest[0]] = x[peaks[highest[0]]] - base
    out[peaks] = prominence
    return out


def boundary_strength(log2_score: np.ndarray, n_pixels: np.ndarray, *, min_frac_valid_pixels=0.66):
    """Boundary strength of each local minimum of the insulation profile.

    The strength is the prominence of the minimum (`peak_prominence` of the negated
    profile), as cooltools' ``find_boundaries``; bins whose diamond has fewer than
    ``min_frac_valid_pixels`` of the most valid pixels are left out first, and the profile
    runs on over them.

    Args:
      log2_score: `(n_bins,)` log2 insulation (NaN allowed).
      n_pixels: `(n_bins,)` valid pixels per diamond.
      min_frac_valid_pixels: fraction of the maximum number of valid pixels required.

    Returns:
      `(n_bins,)` float64: prominence at local minima, NaN elsewhere.

    Examples:
      >>> s = np.array([0.5, 0.0, 0.4, -0.6, 0.3, 0.2])
      >>> boundary_strength(s, np.ones(6)).round(2).tolist()
      [nan, 0.4, nan, 1.0, nan, nan]
    """
    log2_score = np.asarray(log2_score, dtype=np.float64)
    n_pixels = np.asarray(n_pixels, dtype=np.float64)
    keep = (n_pixels >= np.max(n_pixels) * min_frac_valid_pixels) & np.isfinite(log2_score)
    idx = np.flatnonzero(keep)
    out = np.full(log2_score.shape, np.nan)
    out[idx] = peak_prominence(-log2_score[idx])
    return out


def li_threshold(values: np.ndarray, *, tol: float | None = None) -> float:
    """Li's minimum cross-entropy threshold (Li & Tam 1998), NaN ignored.

    Iterates ``t <- (m_b - m_f) / (log m_b - log m_f)`` where ``m_b``, ``m_f`` are the means
    below and above ``t`` (values shifted to start at 0), from the mean, until ``t`` moves
    less than `tol` (default: half the smallest gap between distinct values). cooltools
    calls boundaries whose strength reaches this threshold (``threshold="Li"``).

    Args:
      values: 1-D array.
      tol: convergence tolerance.

    Returns:
      The threshold (NaN for no finite value).

    References:
      Li & Tam, "An iterative algorithm for minimum cross entropy thresholding", Pattern
      Recognit. Lett. 19:771 (1998), https://doi.org/10.1016/S0167-8655(98)00057-9.

    Examples:
      >>> round(li_threshold(np.r_[np.full(50, 0.1), np.full(10, 1.0)]), 3)
      0.25
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    low = x.min()
    x = x - low
    if np.all(x == 0):
        return float(low)
    uniq = np.unique(x)
    tol = np.min(np.diff(uniq)) / 2 if tol is None else tol
    t_next, t = x.mean(), -2 * tol
    while abs(t_next - t) > tol:
        t = t_next
        fore, back = x[x > t], x[x <= t]
        m_f, m_b = fore.mean(), back.mean()
        if m_b == 0:
            break
        t_next = (m_b - m_f) / (np.log(m_b) - np.log(m_f))
    return float(t_next + low)


def soft_boundaries(log2_score: Array, window: int, *, threshold: float, temperature: float):
    """Differentiable boundary probability per bin from an insulation profile.

    A smooth version of "local minimum whose prominence within `window` bins exceeds
    `threshold`": ``p_k = m_k * sigmoid((s_k - threshold) / temperature)`` where ``s_k`` is
    the depth of bin ``k`` below the lower of the maxima of the profile in the `window`
    bins on its left and on its right, and ``m_k`` softly tests that ``k`` is below both
    neighbours (sigmoids of the differences over `temperature`). NaN bins get 0.

    Args:
      log2_score: `(n_bins,)` log2 insulation.
      window: half-width, in bins, of the neighbourhood defining the prominence.
      threshold: prominence at which ``p = 0.5`` (for a clear local minimum).
      temperature: softness, in log2 units.

    Returns:
      `(n_bins,)` in [0, 1].
    """
    ok = jnp.isfinite(log2_score)
    x = jnp.where(ok, log2_score, jnp.nanmax(log2_score))
    pad = jnp.pad(x, window, mode="edge")
    n = x.shape[0]
    left = jnp.max(jnp.stack([pad[window - s : window - s + n] for s in range(1, window + 1)]), 0)
    right = jnp.max(jnp.stack([pad[window + s : window + s + n] for s in range(1, window + 1)]), 0)
    depth = jnp.minimum(left, right) - x
    below = jax.nn.sigmoid((pad[window - 1 : window - 1 + n] - x) / temperature) * jax.nn.sigmoid(
        (pad[window + 1 : window + 1 + n] - x) / temperature
    )
    p = below * jax.nn.sigmoid((depth - threshold) / temperature)
    return jnp.where(ok, p, 0.0)
