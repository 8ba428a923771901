"""A/B compartments: leading eigenvectors of the observed/expected contact matrix."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax import Array
from jax.experimental.sparse.linalg import lobpcg_standard

from diffomics.core._errors import ConfigError
from diffomics.core._numerics import float_dtype, safe_eigh

__all__ = [
    "Eigs",
    "cis_eigs",
    "compartment_eigs",
    "distance_groups",
    "observed_over_expected",
    "phase_eigs",
]


def distance_groups(n_bins: int, ratio: float = 1.03) -> np.ndarray:
    """Group of every diagonal ``d`` in log-spaced distance bins (short ones on their own).

    The edges are ``0`` then the distinct rounded values of ``n_bins`` log-spaced points
    from 1 to ``n_bins``, so each group spans a distance ratio of about `ratio`.

    Args:
      n_bins: number of diagonals.
      ratio: target ratio of the largest to the smallest distance in a group.

    Returns:
      int `(n_bins,)` group index per diagonal.

    Examples:
      >>> distance_groups(6, ratio=1.5).tolist()
      [0, 1, 2, 3, 3, 3]
    """
    n_edges = max(int(np.log(max(n_bins, 2)) / np.log(ratio)), 2)
    edges = np.unique(np.rint(np.geomspace(1, max(n_bins, 2), n_edges)).astype(int))
    edges = np.r_[0, edges]
    return np.searchsorted(edges, np.arange(n_bins), side="right") - 1


def observed_over_expected(
    matrix: Array,
    valid: Array,
    *,
    ignore_diags: int = 2,
    ratio: float = 1.03,
    n_bins: int | None = None,
) -> Array:
    """Balanced contacts divided by the mean of their distance group (valid pixels only).

    As cooltools' ``cis_eig``: the first `ignore_diags` diagonals are set to 1 first, the
    mean of each log-spaced group of diagonals (`distance_groups`) is taken over pixels
    whose bins are both valid, and only valid pixels are divided.

    Args:
      matrix: balanced symmetric matrix, `(n_bins, n_bins)` (NaN read as 0).
      valid: boolean `(n_bins,)`.
      ignore_diags: diagonals set to 1 before normalising.
      ratio: distance-group ratio.
      n_bins: size the distance groups are built for (default: the matrix size); a matrix
        padded with invalid bins passes its unpadded size.

    Returns:
      `(n_bins, n_bins)` observed / expected.
    """
    n = matrix.shape[0]
    groups = distance_groups(n if n_bins is None else n_bins, ratio)
    groups = np.r_[groups, np.full(max(0, n - groups.size), groups[-1])]
    a = jnp.nan_to_num(jnp.asarray(matrix, float_dtype(matrix)), nan=0.0, posinf=0.0)
    idx = jnp.arange(n)
    dist = jnp.abs(idx[:, None] - idx[None, :])  # in-graph: no n x n constant to fold
    a = jnp.where(dist < ignore_diags, 1.0, a)
    group = jnp.asarray(groups)[dist]
    pair = valid[:, None] & valid[None, :]
    n_groups = int(groups.max()) + 1
    sums = jax.ops.segment_sum(jnp.where(pair, a, 0.0).ravel(), group.ravel(), n_groups)
    counts = jax.ops.segment_sum(pair.astype(a.dtype).ravel(), group.ravel(), n_groups)
    mean = sums / jnp.maximum(counts, 1.0)
    expected = mean[group]
    return jnp.where(pair & (expected > 0), a / jnp.where(expected > 0, expected, 1.0), a)


class Eigs(NamedTuple):
    """Leading eigenpairs, ordered by decreasing absolute eigenvalue.

    Attributes:
      eigvals: `(n_eigs,)`.
      eigvecs: `(n_eigs, n_bins)`, each of norm ``sqrt(|eigval|)`` (cooltools' scaling), 0
        at invalid bins.
    """

    eigvals: Array
    eigvecs: Array


def _percentile(values: Array, mask: Array, q: float) -> Array:
    """``np.percentile(values[mask], q)`` (linear interpolation), jit-compatible.

    For upper percentiles only the top ``(1 - q / 100)`` of the entries are needed, found by
    `jax.lax.top_k` instead of a full sort (20x faster at 99.9 on a 2,500-bin matrix).
    """
    flat = jnp.where(mask, values, -jnp.inf).ravel()
    n = jnp.sum(mask)
    pos = q / 100.0 * (n - 1)
    lo = jnp.floor(pos)
    frac = pos - lo
    k = min(flat.size, int(np.ceil((1.0 - q / 100.0) * flat.size)) + 2)
    if q < 50.0:
        return jnp.nanpercentile(jnp.where(mask, values, jnp.nan), q)
    top = jax.lax.top_k(flat, k)[0]  # descending: ascending rank r sits at n - 1 - r
    first = top[jnp.clip(n - 1 - lo, 0, k - 1).astype(jnp.int32)]
    second = top[jnp.clip(n - 2 - lo, 0, k - 1).astype(jnp.int32)]
    return first + frac * (second - first)


def compartment_eigs(
    oe: Array,
    valid: Array,
    *,
    n_eigs: int = 3,
    clip_percentile: float | None = 99.9,
    correlation: bool = False,
    solver: str = "eigh",
) -> Eigs:
    """Leading eigenpairs of an observed/expected matrix (the compartment signal).

    Observed/expected is clipped to ``[0, q]`` with ``q`` its `clip_percentile` over valid
    pixels, centred by subtracting 1, invalid rows and columns are zeroed, and the
    eigenpairs of largest absolute eigenvalue are returned (cooltools' ``cis_eig``). With
    ``correlation=True`` the matrix decomposed is instead the Pearson correlation of the
    centred rows (Lieberman-Aiden et al. 2009). Signs are arbitrary until `phase_eigs`.
    Differentiable (`diffomics.core.safe_eigh`); dense, so use it on a bounded block.

    Args:
      oe: observed / expected, `(n_bins, n_bins)`.
      valid: boolean `(n_bins,)`.
      n_eigs: number of eigenpairs.
      clip_percentile: percentile clip (None: no clipping).
      correlation: decompose the correlation matrix instead.
      solver: ``"eigh"`` (full decomposition, differentiable) or ``"lobpcg"`` (far faster
        on large matrices, not reverse-differentiable): LOBPCG finds the ``n_eigs + 2``
        leading eigenvectors of ``M^2`` (those of ``M`` of largest absolute eigenvalue,
        with the gaps squared), applied as two products with ``M``, and a Rayleigh-Ritz
        step with ``M`` on that subspace gives the eigenpairs and their signs. cooltools
        uses ARPACK (``scipy.sparse.linalg.eigsh``) for the same eigenpairs.

    Returns:
      An `Eigs`.

    References:
      Lieberman-Aiden et al., "Comprehensive mapping of long-range interactions reveals
      folding principles of the human genome", Science 326:289 (2009),
      https://doi.org/10.1126/science.1181369.
    """
    valid = jnp.asarray(valid, bool)
    pair = valid[:, None] & valid[None, :]
    if clip_percentile is not None and clip_percentile < 100:
        top = _percentile(oe, pair, clip_percentile)
        oe = jnp.clip(oe, 0.0, top)
    m = jnp.where(pair, oe - 1.0, 0.0)
    if correlation:
        w = valid.astype(m.dtype)
        k = jnp.maximum(jnp.sum(w), 2.0)
        centred = (m - (m @ w)[:, None] / k) * w[None, :]
        norm = jnp.sqrt(jnp.sum(centred**2, axis=1))
        z = centred / jnp.where(norm > 0, norm, 1.0)[:, None]
        m = jnp.where(pair, z @ z.T, 0.0)
    block = n_eigs + 2
    if solver == "lobpcg" and m.shape[0] >= 10 * block:
        x0 = jax.random.normal(jax.random.key(0), (m.shape[0], block), m.dtype)
        _, basis, _ = lobpcg_standard(lambda x: m @ (m @ x), x0, m=300)
        vals, rotation = jnp.linalg.eigh(basis.T @ (m @ basis))  # Rayleigh-Ritz with M
        vecs = basis @ rotation
    elif solver in ("eigh", "lobpcg"):
        vals, vecs = safe_eigh(m)
    else:
        msg = f"solver must be 'eigh' or 'lobpcg'; found {solver!r}."
        raise ConfigError(msg)
    order = jnp.argsort(-jnp.abs(vals))[:n_eigs]
    vals, vecs = vals[order], vecs[:, order].T
    return Eigs(vals, vecs * jnp.sqrt(jnp.abs(vals))[:, None])


def cis_eigs(
    matrix: Array,
    valid: Array,
    *,
    n_eigs: int = 3,
    ignore_diags: int = 2,
    clip_percentile: float | None = 99.9,
    solver: str = "eigh",
    n_bins: int | None = None,
) -> Eigs:
    """Compartment eigenvectors of a balanced cis contact matrix, as ``cooltools.eigs_cis``.

    `observed_over_expected` (log-binned distance means) then `compartment_eigs`.

    Args:
      matrix: balanced symmetric matrix, `(n_bins, n_bins)`.
      valid: boolean `(n_bins,)`.
      n_eigs: number of eigenpairs.
      ignore_diags: diagonals set aside.
      clip_percentile: percentile clip of observed/expected (None: no clipping).
      solver: eigensolver, see `compartment_eigs`.
      n_bins: unpadded size, see `observed_over_expected`.

    Returns:
      An `Eigs`: eigenvectors of norm ``sqrt(|eigval|)``, 0 at invalid bins.

    Examples:
      >>> idx = np.arange(40)
      >>> ab = np.where((idx // 10) % 2 == 0, 1.0, -1.0)  # alternating A/B blocks
      >>> m = (1 + 0.5 * np.outer(ab, ab)) / (1 + np.abs(idx[:, None] - idx[None, :]))
      >>> e = cis_eigs(jnp.asarray(m), jnp.ones(40, bool), n_eigs=1)
      >>> bool(abs(np.corrcoef(np.asarray(e.eigvecs[0]), ab)[0, 1]) > 0.95)
      True
    """
    valid = jnp.asarray(valid, bool)
    oe = observed_over_expected(matrix, valid, ignore_diags=ignore_diags, n_bins=n_bins)
    return compartment_eigs(oe, valid, n_eigs=n_eigs, clip_percentile=clip_percentile,
                            solver=solver)  # fmt: skip


def phase_eigs(eigvecs: np.ndarray, track: np.ndarray) -> np.ndarray:
    """Flip each eigenvector to correlate positively (Spearman) with a phasing track.

    Args:
      eigvecs: `(n_eigs, n_bins)`, NaN allowed.
      track: `(n_bins,)`, for example GC content or gene density (higher in A).

    Returns:
      The flipped `(n_eigs, n_bins)` array.
    """
    out = np.array(eigvecs, dtype=np.float64)
    track = np.asarray(track, dtype=np.float64)
    for vec in out:
        ok = np.isfinite(vec) & np.isfinite(track)
        if ok.sum() > 2:
            rho = scipy.stats.spearmanr(track[ok], vec[ok])[0]
            if np.isfinite(rho) and rho < 0:
                vec *= -1
    return out
