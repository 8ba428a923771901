"""Loops (dots) as HiCCUPS.

Local expected from donut-type kernels, Poisson tests, FDR thresholds within lambda bins,
clustering of adjacent enriched pixels, and HiCCUPS' filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.stats
from jax import Array

from diffomics.core._errors import ConfigError
from diffomics.core._numerics import default_float, float_dtype
from diffomics.core._sharding import shard_rows, to_host

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = [
    "KERNEL_NAMES",
    "LocalExpected",
    "birch_labels",
    "call_dots",
    "hiccups_kernels",
    "lambda_thresholds",
    "local_expected",
    "recommend_kernel_size",
]

KERNEL_NAMES = ("donut", "vertical", "horizontal", "lowleft")
#: Largest observed count kept apart in the lambda-bin histograms. Counts at or above it share
#: the last column: the number of pixels with at least ``c`` counts stays exact for every
#: ``c`` up to it, and a larger count gets the q-value of this one (conservative).
_MAX_HIST_COUNT = 2**16


def recommend_kernel_size(resolution: int) -> tuple[int, int]:
    """HiCCUPS kernel half-width ``w`` and inner half-width ``p`` for a bin size (bp).

    Rao et al. 2014 used (w, p) = (7, 4) at 5 kb, (5, 2) at 10 kb and (3, 1) at 25 kb.

    Examples:
      >>> recommend_kernel_size(25_000)
      (3, 1)
    """
    if resolution >= 18_000:
        return 3, 1
    if resolution >= 8_000:
        return 5, 2
    return 7, 4


def hiccups_kernels(w: int, p: int) -> dict[str, np.ndarray]:
    """The four HiCCUPS neighbourhoods as 0/1 footprints of shape `(2w + 1, 2w + 1)`.

    Entry ``[w + a, w + b]`` weighs the pixel ``(i + a, j + b)`` when scoring pixel
    ``(i, j)`` (``a`` down the rows, ``b`` along the columns). All four leave out the inner
    ``(2p + 1)^2`` square around the pixel: ``donut`` is the rest of the square minus the
    pixel's own row and column; ``vertical`` and ``horizontal`` are 3-pixel-wide strips;
    ``lowleft`` is the quadrant towards the diagonal (rows below, columns to the left).

    Args:
      w: half-width, > p.
      p: inner half-width, >= 0.

    Returns:
      dict name -> int array.

    Examples:
      >>> k = hiccups_kernels(2, 0)
      >>> int(k["donut"].sum()), int(k["lowleft"].sum()), int(k["vertical"].sum())
      (16, 4, 14)
    """
    if not 0 <= p < w:
        msg = f"kernel sizes must satisfy 0 <= p < w; found w={w}, p={p}."
        raise ConfigError(msg)
    a, b = np.ogrid[-w : w + 1, -w : w + 1]
    inner = (np.abs(a) <= p) & (np.abs(b) <= p)
    full = np.ones((2 * w + 1, 2 * w + 1), dtype=bool)
    shapes = {
        "donut": full & (a != 0) & (b != 0),
        "vertical": full & (np.abs(b) <= 1),
        "horizontal": full & (np.abs(a) <= 1),
        "lowleft": full & (a > 0) & (b < 0),
    }
    return {k: (v & ~inner).astype(np.int64) for k, v in shapes.items()}


def _sheared(kernel: np.ndarray) -> np.ndarray:
    """A pixel-space kernel ``K[a, b]`` in band coordinates: ``S[a, c] = K[a, a + c]``."""
    w = kernel.shape[0] // 2
    out = np.zeros((2 * w + 1, 4 * w + 1), kernel.dtype)
    for a in range(-w, w + 1):
        for b in range(-w, w + 1):
            out[a + w, b - a + 2 * w] = kernel[a + w, b + w]
    return out


class LocalExpected(NamedTuple):
    """Kernel sums around every band pixel, each `(n_kernels, n_rows, n_diags)`.

    Attributes:
      factor: ``sum_K O / sum_K E`` (balanced), the local enrichment of the neighbourhood
        over the distance expected (NaN where ``sum_K E = 0``); the local expected of a
        pixel is its expected times this.
      n_nans: invalid pixels (masked bins, first diagonals, lower triangle) in the footprint.
    """

    factor: Array
    n_nans: Array


def local_expected(
    observed: Array, expected: Array, invalid: Array, kernels: Mapping[str, np.ndarray]
) -> LocalExpected:
    """Neighbourhood sums of observed and expected around every pixel of a band.

    The inputs are bands (`diffomics.hic.band_from_dense` layout) of balanced observed and
    expected contacts and of invalid pixels, with the first and last ``w`` rows a halo
    (rows outside the matrix are invalid). Diagonals below 0 (the lower triangle) count as
    invalid, and the band must hold ``2 w`` diagonals more than the pixels to be scored.
    Differentiable in `observed` and `expected`.

    Args:
      observed: `(n_rows + 2w, n_diags)` balanced observed, 0 where invalid.
      expected: `(n_rows + 2w, n_diags)` balanced expected, 0 where invalid.
      invalid: boolean, same shape.
      kernels: name -> footprint `(2w + 1, 2w + 1)` (`hiccups_kernels`).

    Returns:
      A `LocalExpected` for the `n_rows` central rows and all `n_diags` diagonals.
    """
    dtype = jnp.result_type(float_dtype(observed), float_dtype(expected))
    stack = np.stack([_sheared(k) for k in kernels.values()])
    w = stack.shape[1] // 2
    rhs = jnp.asarray(stack, dtype)[:, None]  # (K, 1, 2w + 1, 4w + 1)

    def conv(x, pad_value):
        x = jnp.pad(jnp.asarray(x, dtype), ((0, 0), (2 * w, 2 * w)), constant_values=pad_value)
        out = jax.lax.conv_general_dilated(x[None, None], rhs, (1, 1), "VALID")
        return out[0]

    ko = conv(observed, 0.0)
    ke = conv(expected, 0.0)
    nn = conv(invalid, 1.0)
    defined = ke > 0
    factor = jnp.where(defined, ko / jnp.where(defined, ke, 1.0), jnp.nan)  # gradient-safe
    return LocalExpected(factor, jnp.round(nn))


def lambda_edges(n_lambda_bins: int = 40) -> np.ndarray:
    """HiCCUPS lambda-bin edges: ``-inf, 2^(k/3) for k < n_lambda_bins, inf``."""
    return np.r_[-np.inf, 2.0 ** (np.arange(n_lambda_bins) / 3.0), np.inf]


def lambda_thresholds(hist: np.ndarray, edges: np.ndarray, fdr: float):
    """Count thresholds and q-values per lambda bin from a histogram of observed counts.

    Within a lambda bin ``(l_lo, l_hi]`` the pixels are tested against Poisson(``l_hi``)
    (the conservative end, as HiCCUPS). For a candidate threshold ``c`` the expected number
    of false discoveries is ``N * P(X >= c)`` and the observed number of discoveries
    ``N(>= c)``; the threshold is the smallest ``c`` with ``N * P(X >= c) <= fdr * N(>= c)``
    (Benjamini-Hochberg within the bin), and the q-value of a count ``c`` is the minimum of
    that ratio over thresholds ``<= c``.

    Args:
      hist: `(n_bins, max_count + 1)` pixel counts per lambda bin and observed count.
      edges: `(n_bins + 1,)` lambda-bin edges.
      fdr: false discovery rate per bin.

    Returns:
      ``(thresholds, qvalues)``: `(n_bins,)` int (``max_count + 1`` when none passes) and
      `(n_bins, max_count + 1)`.
    """
    n_bins, n_counts = hist.shape
    at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
    c = np.arange(n_counts)
    lam = np.minimum(edges[1:], np.finfo(np.float64).max)[:, None]
    null = at_least[:, :1] * scipy.stats.poisson.sf(c[None, :] - 1, lam)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(at_least > 0, null / at_least, np.inf)
    passes = np.maximum.accumulate(ratio <= fdr, axis=1) & (at_least > 0)
    thresholds = np.where(passes.any(1), np.argmax(passes, axis=1), n_counts)
    qvalues = np.minimum(np.minimum.accumulate(ratio, axis=1), 1.0)
    return thresholds, qvalues


def _tiles(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def call_dots(
    band_counts: np.ndarray,
    weights: np.ndarray,
    expected: np.ndarray,
    *,
    resolution: int,
    max_distance_bins: int,
    kernel_size: tuple[int, int] | None = None,
    n_lambda_bins: int = 40,
    lambda_bin_fdr: float = 0.1,
    clustering_radius: int = 20_000,
    cluster_filtering: bool = True,
    tile_rows: int = 1024,
    mesh: Mesh | None = None,
) -> pd.DataFrame:
    """HiCCUPS-style dot calling on a banded raw-count matrix, in tiles along the diagonal.

    1. For each pixel ``(i, j)`` with ``0 < j - i < max_distance_bins`` and four kernels
       (`hiccups_kernels`): the local expected, in raw counts,
       ``E_raw(i, j) * sum_K O_bal / sum_K E_bal`` (Rao et al. 2014); pixels whose
       footprints touch an invalid pixel are not scored.
    2. Lambda-binned FDR: per kernel, pixels are grouped by local expected into log bins
       (`lambda_edges`) and thresholded by `lambda_thresholds` at `lambda_bin_fdr`.
    3. Pixels passing all four kernels, in ``(bin1, bin2)`` order, are clustered as
       cooltools does (`birch_labels`: blobs of radius <= `clustering_radius` bp around
       their centroid); each cluster is represented by its brightest pixel (the first in
       order on ties), with ``c_size`` its number of pixels and ``cbin1, cbin2`` its
       centroid. With the default 20 kb, two adjacent pixels merge at 25 kb bins but a row
       of three does not; at 5 and 10 kb, blobs span up to about 40 kb.
    4. HiCCUPS filters (``cluster_filtering``): observed > 1.75x the donut and lower-left
       and > 1.5x the vertical and horizontal local expected, > 2x one of donut or
       lower-left, and singletons need the sum of their four q-values <= 0.02.

    A tile is `tile_rows` rows of the band (a stretch of the diagonal, out to
    `max_distance_bins`) with a halo of ``w`` rows on each side. The kernel sums of a tile
    (`local_expected`) run on a device; the tests, thresholds and clustering on the host.
    Memory is ``O(tile_rows * n_diags)`` per tile on top of the band.

    Args:
      band_counts: raw counts band `(n_bins, n_diags)` with ``n_diags >=
        max_distance_bins + 2w``.
      weights: `(n_bins,)` balancing weights, 0 or NaN for masked bins.
      expected: `(n_diags,)` balanced expected per diagonal (NaN where not defined).
      resolution: bin size in bp.
      max_distance_bins: largest ``j - i`` scored (exclusive).
      kernel_size: ``(w, p)``; default `recommend_kernel_size`.
      n_lambda_bins: number of lambda bins.
      lambda_bin_fdr: FDR within each lambda bin.
      clustering_radius: in bp.
      cluster_filtering: apply the HiCCUPS filters.
      tile_rows: rows per tile.
      mesh: a device mesh (`diffomics.core.data_mesh`): the tiles' kernel sums are computed
        as many tiles at a time as it has devices, one tile per device (the tiles stacked
        and split over ``"data"``). The same dots as without a mesh. None (default): one
        tile at a time on the default device.

    Returns:
      DataFrame with ``bin1_id, bin2_id, count, la_exp.<kernel>.value``,
      ``la_exp.<kernel>.qval`` (raw-count local expected and q-value per kernel),
      ``c_size`` and ``cbin1, cbin2`` (cluster centroid), one row per dot.

    References:
      Rao et al., "A 3D map of the human genome at kilobase resolution reveals principles of
      chromatin looping", Cell 159:1665 (2014), https://doi.org/10.1016/j.cell.2014.11.021.
    """
    w, p = kernel_size or recommend_kernel_size(resolution)
    kernels = hiccups_kernels(w, p)
    n, n_diags = band_counts.shape
    need = min(max_distance_bins, n) + 2 * w
    if n_diags < min(need, n):
        msg = f"band_counts needs >= {need} diagonals for max_distance_bins={max_distance_bins}"
        raise ConfigError(msg + f" and w={w}; found {n_diags}.")
    expected = np.asarray(expected, dtype=np.float64)[:n_diags]
    if n_diags < need:  # the missing diagonals lie outside the matrix
        band_counts = np.pad(band_counts, ((0, 0), (0, need - n_diags)))
        expected = np.pad(expected, (0, need - n_diags), constant_values=np.nan)
        n_diags = need
    weights = np.nan_to_num(np.asarray(weights, dtype=np.float64))
    edges = lambda_edges(n_lambda_bins)
    names = list(kernels)

    def score(o, e, bad):
        return local_expected(o, e, bad, kernels)

    score_one, score_many = jax.jit(score), jax.jit(jax.vmap(score))
    size = min(tile_rows, n)
    group = 1 if mesh is None else mesh.devices.size

    def inputs(start):  # always `size` rows (the last tile padded): one compiled shape
        rows = np.arange(start - w, start + size + w)
        inside_rows = (rows >= 0) & (rows < n)
        r = np.clip(rows, 0, n - 1)
        cols = r[:, None] + np.arange(n_diags)[None, :]
        inside = inside_rows[:, None] & (cols < n)
        wi = weights[r][:, None]
        wj = weights[np.minimum(cols, n - 1)]
        e = np.broadcast_to(expected[None, :], cols.shape)
        bad = ~inside | (wi == 0) | (wj == 0) | ~np.isfinite(e)
        counts = band_counts[r]
        o_bal = np.where(bad, 0.0, counts * wi * wj)
        e_bal = np.where(bad, 0.0, e)
        return o_bal, e_bal, bad, counts, wi * wj

    def on_device(o_bal, e_bal, bad):  # the kernel sums' inputs in the working precision
        f = default_float()
        return o_bal.astype(f), e_bal.astype(f), bad

    def scored(bounds, prepared, factor, n_nans):
        """``(b1, b2, obs, lams, raw)`` of the scored pixels of one tile."""
        (start, stop), (_, e_bal, bad, counts, wij) = bounds, prepared
        core = slice(w, w + size)
        with np.errstate(divide="ignore", invalid="ignore"):
            e_raw = np.where(bad, np.nan, e_bal / wij)[core]
        la = e_raw[None] * factor
        d = np.arange(n_diags)[None, :]
        ok = (
            ~bad[core]
            & (np.arange(size) < stop - start)[:, None]
            & (d >= 1)
            & (d < max_distance_bins)
            & np.all(n_nans == 0, axis=0)
            & np.all(np.isfinite(factor), axis=0)
        )
        i_idx, d_idx = np.nonzero(ok)
        # counts above _MAX_HIST_COUNT share the histogram's last column (as Juicer caps its
        # at 10,000): its memory stays bounded and huge values (1e30) do not overflow int64
        raw = counts[core][i_idx, d_idx]
        obs = np.minimum(raw, _MAX_HIST_COUNT).astype(np.int64)
        lams = la[:, i_idx, d_idx]
        return i_idx + start, i_idx + start + d_idx, obs, lams, raw

    def tiles():
        """Every tile's pixels, the kernel sums of `group` tiles at a time (one per device)."""
        bounds = list(_tiles(n, size))
        for g in range(0, len(bounds), group):
            part = bounds[g : g + group]
            prepared = [inputs(start) for start, _ in part]
            if mesh is None:
                local = score_one(*on_device(*prepared[0][:3]))
                sums = [(np.asarray(local.factor, np.float64), np.asarray(local.n_nans))]
            else:  # the last group is filled up with copies of its last tile
                stack = [np.stack([p[k] for p in prepared] + [prepared[-1][k]] *
                                  (group - len(part))) for k in range(3)]  # fmt: skip
                local = score_many(*(shard_rows(a, mesh) for a in on_device(*stack)))
                factor, n_nans = to_host(local.factor), to_host(local.n_nans)
                sums = [(np.asarray(factor[t], np.float64), n_nans[t]) for t in range(len(part))]
            for bound, p, (factor, n_nans) in zip(part, prepared, sums, strict=True):
                yield scored(bound, p, factor, n_nans)

    # pass 1: histograms of observed counts per lambda bin, per kernel
    hist = np.zeros((len(names), len(edges) - 1, 1), dtype=np.int64)
    for _, _, obs, lams, _ in tiles():
        if obs.size and obs.max() >= hist.shape[2]:
            hist = np.pad(hist, ((0, 0), (0, 0), (0, obs.max() + 1 - hist.shape[2])))
        for k in range(len(names)):
            lbin = np.searchsorted(edges, lams[k], side="left") - 1
            np.add.at(hist[k], (lbin, obs), 1)
    thresholds, qvalues = zip(
        *(lambda_thresholds(hist[k], edges, lambda_bin_fdr) for k in range(len(names))),
        strict=True,
    )
    # pass 2: pixels over every kernel's threshold
    found = []
    for b1, b2, obs, lams, raw in tiles():
        lbins = [np.searchsorted(edges, lams[k], side="left") - 1 for k in range(len(names))]
        keep = np.all([obs >= thresholds[k][lbins[k]] for k in range(len(names))], axis=0)
        if keep.any():
            count = raw[keep] if raw.max() > _MAX_HIST_COUNT else obs[keep]
            cols = {"bin1_id": b1[keep], "bin2_id": b2[keep], "count": count}
            for k, name in enumerate(names):
                cols[f"la_exp.{name}.value"] = lams[k][keep]
                cols[f"la_exp.{name}.qval"] = qvalues[k][lbins[k][keep], obs[keep]]
            found.append(pd.DataFrame(cols))
    columns = ["bin1_id", "bin2_id", "count"]
    columns += [f"la_exp.{k}.{s}" for s in ("value", "qval") for k in names]
    pixels = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)
    dots = _cluster(pixels, resolution, clustering_radius)
    if cluster_filtering and len(dots):
        dots = dots[_hiccups_filter(dots)].reset_index(drop=True)
    return dots


def birch_labels(points: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Cluster points into blobs of radius at most `threshold`, as BIRCH's leaf subclusters.

    The points are taken in order. Each joins the subcluster whose centroid is nearest when
    the joined subcluster's radius (root-mean-square distance of its points to their
    centroid) stays ``<= threshold``; otherwise it starts a new subcluster. Every point is
    then labelled by its nearest final centroid. This is BIRCH without the global step
    (``sklearn.cluster.Birch(n_clusters=None, threshold=...)``, which cooltools' ``dots``
    runs on the enriched pixels' ``start1, start2``), with the nearest subcluster searched
    over all subclusters rather than down a CF-tree. Two pixels up to ``2 * threshold``
    apart merge, a row of three at spacing ``s`` only if ``s <= 1.22 * threshold``.

    Args:
      points: `(n, 2)` coordinates (bp), in the order they are inserted.
      threshold: largest subcluster radius, same unit.

    Returns:
      ``(labels, centroids)``: int `(n,)` subcluster of each point, and `(n_clusters, 2)`
      centroids (a subcluster may end up with no point labelled to it).

    References:
      Zhang, Ramakrishnan and Livny, "BIRCH: an efficient data clustering method for very
      large databases", SIGMOD 1996, https://doi.org/10.1145/233269.233324.

    Examples:
      >>> pts = np.array([[0.0, 0.0], [25.0, 0.0], [50.0, 0.0], [500.0, 500.0]])
      >>> labels, centroids = birch_labels(pts, 20.0)
      >>> labels.tolist(), centroids[:, 0].tolist()
      ([0, 0, 1, 2], [12.5, 50.0, 500.0])
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    linear = np.zeros((n, points.shape[1]))
    squares = np.zeros(n)
    sizes = np.zeros(n)
    centroids = np.zeros_like(linear)
    norms = np.zeros(n)
    k = 0
    limit = float(threshold) ** 2
    for x in points:
        if k:
            nearest = int(np.argmin(norms[:k] - 2.0 * (centroids[:k] @ x)))
            size = sizes[nearest] + 1
            lin = linear[nearest] + x
            sq = squares[nearest] + x @ x
            centre = lin / size
            if sq / size - centre @ centre <= limit:
                sizes[nearest], linear[nearest], squares[nearest] = size, lin, sq
                centroids[nearest], norms[nearest] = centre, centre @ centre
                continue
        sizes[k], linear[k], squares[k] = 1, x, x @ x
        centroids[k], norms[k] = x, x @ x
        k += 1
    centroids = centroids[:k]
    labels = np.argmin(norms[None, :k] - 2.0 * (points @ centroids.T), axis=1) if n else []
    return np.asarray(labels, dtype=np.int64), centroids


def _cluster(pixels: pd.DataFrame, resolution: int, radius: float) -> pd.DataFrame:
    """BIRCH blobs of pixels (`birch_labels` on bp positions); keep each one's brightest."""
    if pixels.empty:
        return pixels.assign(c_size=pd.Series(dtype=int), cbin1=[], cbin2=[])
    xy = pixels[["bin1_id", "bin2_id"]].to_numpy(dtype=np.float64) * resolution
    label, centroids = birch_labels(xy, radius)
    pixels = pixels.assign(c_label=label)
    grouped = pixels.groupby("c_label")
    size = grouped["count"].transform("size")
    centre = centroids[label] / resolution
    pixels = pixels.assign(c_size=size, cbin1=centre[:, 0], cbin2=centre[:, 1])
    brightest = pixels.loc[grouped["count"].idxmax()]
    return brightest.drop(columns="c_label").sort_values(["bin1_id", "bin2_id"])


def _hiccups_filter(dots: pd.DataFrame) -> np.ndarray:
    """HiCCUPS post-filter of cluster summits (Rao et al. 2014, extended procedures)."""
    obs = dots["count"].to_numpy()
    la = {k: dots[f"la_exp.{k}.value"].to_numpy() for k in KERNEL_NAMES}
    q = sum(dots[f"la_exp.{k}.qval"].to_numpy() for k in KERNEL_NAMES)
    return (
        (obs > 1.75 * la["lowleft"])
        & (obs > 1.75 * la["donut"])
        & (obs > 1.5 * la["vertical"])
        & (obs > 1.5 * la["horizontal"])
        & ((obs > 2.0 * la["lowleft"]) | (obs > 2.0 * la["donut"]))
        & ((dots["c_size"].to_numpy() > 1) | (q <= 0.02))
    )
