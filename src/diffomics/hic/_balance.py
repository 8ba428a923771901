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
    ignore_diags: int = 2,
    min_nnz: int = 10,
    min_count: float = 0,
    mad_max: float = 5.0,
    blacklist: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Bins kept for balancing, by cooler's filters (``cooler balance`` defaults).

    Contacts closer than `ignore_diags` diagonals are set aside first. A bin is dropped when
    it has fewer than `min_nnz` non-zero pixels, fewer than `min_count` contacts, or a
    coverage (relative to the chromosome's median) below ``exp(median - mad_max * MAD)`` of
    the log coverages (MAD unscaled, as cooler), or when it is in `blacklist`.

    Args:
      bin1: row bin index of each pixel, shape `(nnz,)`.
      bin2: column bin index of each pixel (``>= bin1``), shape `(nnz,)`.
      counts: raw counts, shape `(nnz,)`.
      n_bins: number of bins.
      ignore_diags: diagonals set aside (2 drops the main and first off-diagonal).
      min_nnz: minimum number of non-zero pixels per bin.
      min_count: minimum total contacts per bin.
      mad_max: cut-off in median absolute deviations of log coverage (0 disables).
      blacklist: indices of bins to drop.

    Returns:
      ``(valid, report)``: boolean `(n_bins,)` and the number of bins each filter dropped.
    """
    keep = (bin2 - bin1) >= ignore_diags
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
        rel = coverage / np.median(coverage[coverage > 0])
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
      variance: relative variance of the non-zero marginals at the last iteration.
      n_iter: iterations run.
      converged: whether `variance` fell below the tolerance.
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
    ignore_diags: int = 2,
    max_iter: int = 200,
    tol: float = 1e-10,
    differentiable: bool = False,
) -> IceResult:
    """Iterative correction (ICE) of a symmetric contact matrix stored as pixels.

    Each iteration divides the bias of every bin by its marginal relative to the mean
    non-zero marginal (Imakaev et al. 2012; cooler's ``balance`` in cis mode). Diagonals
    closer than `ignore_diags` are set aside and bins outside `valid` get weight 0. At the
    end the weights are rescaled so that every kept row of the balanced matrix sums to 1.

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
    """
    bin1, bin2 = jnp.asarray(bin1), jnp.asarray(bin2)
    valid = jnp.asarray(valid, bool)
    n_bins = valid.shape[0]
    counts = jnp.asarray(counts, float_dtype(counts))
    c = jnp.where(bin2 - bin1 >= ignore_diags, counts, 0.0)

    def step(bias):
        marg = marginals(bin1, bin2, c * bias[bin1] * bias[bin2], n_bins)
        nz = marg != 0
        mean = jnp.sum(marg) / jnp.maximum(jnp.sum(nz), 1)
        rel = jnp.where(nz, marg / mean, 1.0)
        var = jnp.sum(jnp.where(nz, (rel - 1.0) ** 2, 0.0)) / jnp.maximum(jnp.sum(nz), 1)
        return bias / rel, var, mean

    bias0 = valid.astype(counts.dtype)
    if differentiable:

        def body(carry, _):
            bias, var, mean, it, done = carry
            new_bias, new_var, new_mean = step(bias)
            keep = lambda old, new: jnp.where(done, old, new)  # noqa: E731
            carry = (
                keep(bias, new_bias),
                keep(var, new_var),
                keep(mean, new_mean),
                it + (~done).astype(jnp.int32),
                done | (new_var < tol),
            )
            return carry, None

        one = jnp.ones((), counts.dtype)
        init = (bias0, jnp.inf * one, one, jnp.int32(0), jnp.zeros((), bool))
        (bias, var, mean, it, _), _ = jax.lax.scan(body, init, None, length=max_iter)
    else:

        def cond(carry):
            _, var, _, it = carry
            return (var >= tol) & (it < max_iter)

        def body(carry):
            bias, _, _, it = carry
            bias, var, mean = step(bias)
            return bias, var, mean, it + 1

        one = jnp.ones((), counts.dtype)
        init = (bias0, jnp.inf * one, one, jnp.int32(0))
        bias, var, mean, it = jax.lax.while_loop(cond, body, init)
    weights = bias / jnp.sqrt(mean)
    return IceResult(weights, var, it, var < tol)
