"""Matrix balancing by iterative correction (ICE), with cooler's filters and conventions."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffomics.core._numerics import float_dtype

__all__ = ["IceResult", "ice", "ice_filters", "marginals"]


def marginals(bin1, bin2, values, n_bins: int) -> Array:
    """Row sums of a symmetric matrix stored as upper-triangle pixels.

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      values: pixel values, shape `(nnz,)`.
      n_bins: number of bins.

    Returns:
      `(n_bins,)`: ``sum_j A[i, j]`` (a diagonal pixel counted once).

    Examples:
      >>> marginals(jnp.array([0, 0, 1]), jnp.array([0, 1, 1]), jnp.array([1.0, 2.0, 3.0]), 2)
      Array([3., 5.], dtype=float32)
    """
    bin1, bin2 = jnp.asarray(bin1), jnp.asarray(bin2)
    off = (bin1 != bin2).astype(values.dtype)
    return jax.ops.segment_sum(values * off, bin1, n_bins) + jax.ops.segment_sum(
        values, bin2, n_bins
    )


def ice_filters(
    bin1: np.ndarray,
    bin2: np.ndarray,
    counts: np.ndarray,
    n_bins: int,
    *,
    chrom: np.ndarray | None = None,
    cis_only: bool = False,
    ignore_diags: int = 2,
    min_nnz: int = 10,
    min_count: float = 0,
    mad_max: float = 5.0,
    blacklist: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Bins kept for balancing, by cooler's filters (``cooler balance`` defaults).

    Contacts closer than `ignore_diags` diagonals (of the whole matrix, as cooler) are set
    aside first, and with `cis_only` the contacts between chromosomes too. A bin is dropped
    when it has fewer than `min_nnz` non-zero pixels, fewer than `min_count` contacts, or a
    coverage below ``exp(median - mad_max * MAD)`` of the log coverages (MAD unscaled, as
    cooler), or when it is in `blacklist`. The coverage of each bin is taken relative to the
    median non-zero coverage of its chromosome, and the median and MAD are then pooled over
    all chromosomes of the map, as ``cooler.balance_cooler`` does on a whole-genome file.

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      counts: raw counts, shape `(nnz,)`.
      n_bins: number of bins.
      chrom: chromosome index of each bin, int `(n_bins,)`; None: one chromosome.
      cis_only: count only contacts within a chromosome (cooler's ``cis_only``).
      ignore_diags: diagonals set aside (2 drops the main and first off-diagonal).
      min_nnz: minimum number of non-zero pixels per bin.
      min_count: minimum total contacts per bin.
      mad_max: cut-off in median absolute deviations of log coverage (0 disables).
      blacklist: indices of bins to drop.

    Returns:
      ``(valid, report)``: boolean `(n_bins,)` and the number of bins each filter dropped.

    Examples:
      Contacts up to 10 bins apart: the 7 bins at each end have fewer than 15 partners.

      >>> i, j = np.triu_indices(30)
      >>> near = j - i <= 10
      >>> valid, report = ice_filters(i[near], j[near], np.ones(near.sum()), 30, min_nnz=15)
      >>> int(valid.sum()), report
      (16, {'min_nnz': 14, 'mad_max': 0})
    """
    chrom = np.zeros(n_bins, np.int64) if chrom is None else np.asarray(chrom)
    keep = (bin2 - bin1) >= ignore_diags
    if cis_only:
        keep &= chrom[bin1] == chrom[bin2]
    b1, b2, c = bin1[keep], bin2[keep], np.asarray(counts, dtype=np.float64)[keep]

    def marg(values):
        off = b1 != b2
        return np.bincount(b1[off], values[off], n_bins) + np.bincount(b2, values, n_bins)

    valid = np.ones(n_bins, dtype=bool)
    report = {}
    if min_nnz > 0:
        drop = marg((c > 0).astype(np.float64)) < min_nnz
        report["min_nnz"] = int((drop & valid).sum())
        valid &= ~drop
    coverage = marg(c)
    if min_count:
        drop = coverage < min_count
        report["min_count"] = int((drop & valid).sum())
        valid &= ~drop
    if mad_max > 0 and (coverage > 0).any():
        rel = np.zeros(n_bins)
        for k in np.unique(chrom):
            on = chrom == k
            nz = coverage[on & (coverage > 0)]
            if nz.size:
                rel[on] = coverage[on] / np.median(nz)
        logs = np.log(rel[rel > 0])
        median = np.median(logs)
        cutoff = np.exp(median - mad_max * np.median(np.abs(logs - median)))
        drop = rel < cutoff
        report["mad_max"] = int((drop & valid).sum())
        valid &= ~drop
    if blacklist is not None:
        drop = np.zeros(n_bins, dtype=bool)
        drop[np.asarray(blacklist, dtype=int)] = True
        report["blacklist"] = int((drop & valid).sum())
        valid &= ~drop
    return valid, report


class IceResult(NamedTuple):
    """Output of `ice`.

    Attributes:
      weights: `(n_bins,)` multiplicative weights (cooler's ``weight`` column); 0 for
        dropped bins. Balanced contacts are ``count * w_i * w_j``, with rows summing to 1.
      variance: relative variance of the non-zero marginals at the last iteration (the
        largest over chromosomes with ``cis_only``).
      n_iter: iterations run.
      converged: whether `variance` fell below the tolerance (on every chromosome).
    """

    weights: Array
    variance: Array
    n_iter: Array
    converged: Array


def ice(
    bin1,
    bin2,
    counts,
    valid,
    *,
    chrom=None,
    cis_only: bool = False,
    trans_only: bool = False,
    ignore_diags: int = 2,
    max_iter: int = 200,
    tol: float = 1e-10,
    differentiable: bool = False,
) -> IceResult:
    """Iterative correction (ICE) of a symmetric contact matrix stored as pixels.

    Each iteration divides the bias of every bin by its marginal relative to the mean
    non-zero marginal (Imakaev et al. 2012; cooler's ``balance``). Diagonals closer than
    `ignore_diags` are set aside and bins outside `valid` get weight 0. At the end the
    weights are rescaled so that every kept row of the balanced matrix sums to 1.

    On a map of several chromosomes (`chrom` given) the three modes of
    ``cooler.balance_cooler`` are offered. Genome-wide (default): all contacts, one mean.
    `cis_only`: contacts between chromosomes are ignored and each chromosome is balanced on
    its own (its own mean, convergence and final scale; a converged chromosome is frozen).
    `trans_only`: only contacts between chromosomes, each bin's bias weighted by
    ``1 / (1 - n_c / n)`` for a chromosome of ``n_c`` of the map's ``n`` bins, as cooler.

    Convergence is tested on the variance of marginal / mean marginal (cooler tests the
    unscaled variance, whose size depends on the sequencing depth). With
    ``differentiable=True`` the loop runs a fixed `max_iter` steps (`jax.lax.scan`; steps
    after convergence leave the weights unchanged), so reverse-mode gradients flow from the
    weights to `counts`; otherwise it stops at convergence (`jax.lax.while_loop`).

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      counts: raw counts, shape `(nnz,)`.
      valid: bins to balance, boolean `(n_bins,)` (see `ice_filters`).
      chrom: chromosome index of each bin, int `(n_bins,)`, -1 for padding bins; None: one
        chromosome.
      cis_only: balance each chromosome on its contacts within it.
      trans_only: balance on contacts between chromosomes only.
      ignore_diags: diagonals set aside.
      max_iter: iteration limit.
      tol: convergence threshold on the relative variance of the marginals.
      differentiable: fixed iterations, reverse-mode differentiable.

    Returns:
      An `IceResult`.

    References:
      Imakaev et al., "Iterative correction of Hi-C data reveals hallmarks of chromosome
      organization", Nat. Methods 9:999 (2012), https://doi.org/10.1038/nmeth.2148.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> a = rng.poisson(50, size=(30, 30)).astype("float32"); a = np.triu(a + a.T)
      >>> i, j = np.nonzero(a)
      >>> res = ice(i, j, a[i, j], np.ones(30, bool), ignore_diags=0)
      >>> row_sums = marginals(i, j, a[i, j] * res.weights[i] * res.weights[j], 30)
      >>> bool(jnp.allclose(row_sums, 1.0, atol=1e-4)), bool(res.converged)
      (True, True)

      Two chromosomes balanced each on its own (``cis_only``): every row sums to 1 over the
      contacts within its chromosome.

      >>> chrom = np.repeat([0, 1], 15)
      >>> res = ice(i, j, a[i, j], np.ones(30, bool), chrom=chrom, cis_only=True, ignore_diags=0)
      >>> cis = chrom[i] == chrom[j]
      >>> w = res.weights
      >>> row_sums = marginals(i[cis], j[cis], a[i, j][cis] * w[i[cis]] * w[j[cis]], 30)
      >>> bool(jnp.allclose(row_sums, 1.0, atol=1e-4))
      True
    """
    bin1, bin2 = jnp.asarray(bin1), jnp.asarray(bin2)
    valid = jnp.asarray(valid, bool)
    n_bins = valid.shape[0]
    counts = jnp.asarray(counts, float_dtype(counts))
    c = jnp.where(bin2 - bin1 >= ignore_diags, counts, 0.0)
    group = jnp.zeros(n_bins, jnp.int32)
    scale = jnp.ones(n_bins, counts.dtype)
    if chrom is not None:
        chrom = jnp.asarray(chrom, jnp.int32)
        same = chrom[bin1] == chrom[bin2]
        if cis_only:
            c = jnp.where(same, c, 0.0)
            group = jnp.maximum(chrom, 0)
        elif trans_only:
            c = jnp.where(same, 0.0, c)
            real = chrom >= 0
            size = jax.ops.segment_sum(real.astype(counts.dtype), jnp.maximum(chrom, 0), n_bins)
            frac = size[jnp.maximum(chrom, 0)] / jnp.sum(real).astype(counts.dtype)
            scale = jnp.where(real & (frac < 1), 1.0 / jnp.where(frac < 1, 1.0 - frac, 1.0), 1.0)

    def segment(x):
        return jax.ops.segment_sum(x, group, n_bins)

    def step(bias, done):
        """One ICE update of the groups not `done`; the variance and mean per group."""
        vec = bias * scale
        marg = marginals(bin1, bin2, c * vec[bin1] * vec[bin2], n_bins)
        nz = marg != 0
        n_nz = jnp.maximum(segment(nz.astype(marg.dtype)), 1.0)
        mean = segment(marg) / n_nz
        rel = jnp.where(nz, marg / jnp.where(nz, mean[group], 1.0), 1.0)
        var = segment(jnp.where(nz, (rel - 1.0) ** 2, 0.0)) / n_nz
        new_bias = jnp.where(done[group], bias, bias / rel)
        return new_bias, done | (var < tol), var, mean

    bias0 = valid.astype(counts.dtype)
    done0 = jnp.zeros(n_bins, bool)
    one = jnp.ones(n_bins, counts.dtype)
    init = (bias0, done0, jnp.inf * one, one, jnp.int32(0))
    if differentiable:

        def body(carry, _):
            bias, done, var, mean, it = carry
            new_bias, new_done, new_var, new_mean = step(bias, done)
            keep = lambda old, new: jnp.where(done, old, new)  # noqa: E731
            carry = (new_bias, new_done, keep(var, new_var), keep(mean, new_mean),
                     it + (~jnp.all(done)).astype(jnp.int32))  # fmt: skip
            return carry, None

        (bias, done, var, mean, it), _ = jax.lax.scan(body, init, None, length=max_iter)
    else:

        def cond(carry):
            _, done, _, _, it = carry
            return ~jnp.all(done) & (it < max_iter)

        def body(carry):
            bias, done, var, mean, it = carry
            new_bias, new_done, new_var, new_mean = step(bias, done)
            keep = lambda old, new: jnp.where(done, old, new)  # noqa: E731
            return new_bias, new_done, keep(var, new_var), keep(mean, new_mean), it + 1

        bias, done, var, mean, it = jax.lax.while_loop(cond, body, init)
    used = segment(jnp.ones(n_bins, counts.dtype)) > 0
    variance = jnp.max(jnp.where(used, var, 0.0))
    mean = jnp.where(mean > 0, mean, 1.0)  # a chromosome with every bin masked
    weights = bias / jnp.sqrt(mean[group])
    return IceResult(weights, variance, it, jnp.all(done | ~used))
