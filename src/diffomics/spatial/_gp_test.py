"""The Gaussian-process likelihood-ratio test for spatially variable genes (SpatialDE model).

For one gene with values ``y`` at ``n`` spots and a kernel ``K = U diag(s) U^T``:

    alternative:  y ~ N(mu 1, s2 (K + delta I))     (spatial + independent noise)
    null:         y ~ N(mu 1, s2 I)                  (no spatial effect)

``mu`` and ``s2`` are profiled out in closed form and ``delta`` (noise / spatial variance) is
maximised on the log scale, so each gene costs O(m) per evaluation once ``U^T y`` is known;
every gene shares the kernel's factor. The statistic is ``2 * (logL_alt - logL_null)``
(SpatialDE v1 used the log-likelihood ratio itself, without the factor 2). The fraction of
spatial variance is ``FSV = gower / (gower + delta)``, with its standard error from the
observed information of ``log delta`` (delta method).

Because ``mu`` and ``s2`` are profiled, the statistic is invariant to shifting and scaling
``y``. For Gaussian noise and one kernel its null is the boundary mixture
``0.5 chi2_0 + 0.5 chi2_1`` (Self & Liang; `mixture_pvalue`). The maximum over a lengthscale
grid, and genes far from Gaussian (sparse counts), need more: their null is taken from the
same genes permuted over spots, within strata of sparsity (`permutation_null`).

References:
  Svensson, Teichmann & Stegle, "SpatialDE", Nature Methods 15:343 (2018),
  https://doi.org/10.1038/nmeth.4636.
  Self & Liang, "Asymptotic properties of maximum likelihood estimators and likelihood ratio
  tests under nonstandard conditions", JASA 82:605 (1987), https://doi.org/10.2307/2289471.
  Crainiceanu & Ruppert, "Likelihood ratio tests in linear mixed models with one variance
  component", JRSS B 66:165 (2004), https://doi.org/10.1111/j.1467-9868.2004.00438.x.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import log_ndtr
from jax.sharding import NamedSharding, PartitionSpec

from diffomics.core._numerics import default_float, safe_sqrt
from diffomics.core._sharding import DATA_AXIS, pad_rows, padded_size, shard_rows
from diffomics.spatial._kernels import KernelFactor

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = [
    "GPFit",
    "LOG_DELTA_BOUNDS",
    "NullSpace",
    "PermutationNull",
    "fit_gp",
    "fit_gp_implicit",
    "gene_sparsity",
    "gp_log_likelihood_ratio",
    "gp_posterior_mean",
    "mixture_log_pvalue",
    "mixture_pvalue",
    "permutation_null",
    "permute_genes",
    "standardize",
]

#: Search range of log(delta), SpatialDE's bounds.
LOG_DELTA_BOUNDS = (-10.0, 20.0)
_GRID = 61
_GOLDEN_STEPS = 26
#: Statistics below this are numerically zero (float32 noise at the boundary delta -> inf).
_ZERO = 1e-3


class GPFit(NamedTuple):
    """Per-gene maximum-likelihood fit for one kernel (arrays of shape `(n_genes,)`).

    Attributes:
      llr: ``logL_alt - logL_null`` at the optimum, >= 0 (nats).
      log_delta: fitted ``log(noise variance / spatial variance)``.
      fsv: fraction of spatial variance ``gower / (gower + delta)``, in [0, 1].
      fsv_se: its standard error (NaN where the likelihood is flat in ``delta``).
    """

    llr: Array
    log_delta: Array
    fsv: Array
    fsv_se: Array


def standardize(y: Array) -> tuple[Array, Array]:
    """Centre and scale each gene (column) to mean 0 and variance 1.

    The test statistic is invariant to both, and standardised values keep float32 sums
    accurate. Constant genes are returned as zeros and flagged.

    Args:
      y: expression, shape `(n_spots, n_genes)`.

    Returns:
      ``(z, constant)``: standardised values, same shape, and a `(n_genes,)` bool mask of
      genes with zero variance.

    Examples:
      >>> z, const = standardize(jnp.array([[1.0, 5.0], [3.0, 5.0]]))
      >>> z.tolist(), const.tolist()
      ([[-1.0, 0.0], [1.0, 0.0]], [False, True])
    """
    # each gene is first divided by its largest |value| (the result does not depend on it,
    # so its gradient is stopped): squares of 1e30 overflow float32 and of 1e-30 underflow
    scale = jax.lax.stop_gradient(jnp.max(jnp.abs(y), axis=0, keepdims=True))
    y = y / jnp.where(scale > 0, scale, 1.0)
    centred = y - jnp.mean(y, axis=0, keepdims=True)
    sd = safe_sqrt(jnp.mean(centred**2, axis=0))  # sqrt'(0) would make NaN gradients
    constant = sd <= 1e-12 * (1.0 + jnp.max(jnp.abs(y), axis=0))
    return centred / jnp.where(constant, 1.0, sd)[None, :], constant


class NullSpace(NamedTuple):
    """Sums over a low-rank kernel's null space (eigenvalue 0).

    With ``P = I - U U^T``: ``ones = 1^T P 1`` (scalar), ``cross = 1^T P y`` and
    ``squares = y^T P y`` (each `(n_genes,)`). As differences (``n - |U^T 1|^2``, ...) they
    cancel in float32 at large ``n``, so `fit_gp` forms ``P 1`` and ``1^T P 1`` in float64
    and sums ``(P 1) * y`` and ``(P y)^2`` over the spots, ``P y = y - U (U^T y)``.
    """

    ones: Array
    cross: Array
    squares: Array


def _llr_from_sums(a, b, c, logdet, log_delta, *, n, m, rest):
    """Finish the profile LLR from the in-span sums (shapes `(n_genes, k)`)."""
    if rest is not None:
        d = jnp.exp(log_delta)
        a = a + rest.ones / d
        b = b + rest.cross[:, None] / d
        c = c + rest.squares[:, None] / d
        logdet = logdet + (n - m) * log_delta
    resid = jnp.maximum(c - b**2 / a, 1e-30)
    return -0.5 * (n * jnp.log(resid / n) + logdet)


def gp_log_likelihood_ratio(
    log_delta: Array, uty: Array, ut1: Array, s: Array, *, n: int, rest: NullSpace | None = None
) -> Array:
    """Profile log-likelihood ratio of the GP model against the constant model, per gene.

    For standardised genes (mean 0, variance 1), with ``d = exp(log_delta)`` and the
    components of ``y`` and ``1`` along the kernel's eigenvectors, ``mu`` and ``s2``
    maximised out:
    ``LLR = -1/2 [n log(r / n) + sum_i log(s_i + d) + (n - m) log d]`` where
    ``r = (y - mu 1)^T (K + d I)^{-1} (y - mu 1)``. Components outside a low-rank kernel's
    span (eigenvalue 0) enter through `rest`.

    Args:
      log_delta: ``log d`` per gene, shape `(n_genes,)`.
      uty: ``U^T y`` per gene, shape `(n_genes, m)`.
      ut1: ``U^T 1``, shape `(m,)`.
      s: eigenvalues, shape `(m,)`.
      n: number of spots.
      rest: the null-space sums of a low-rank kernel (``m < n``); None for an exact one.

    Returns:
      LLR in nats, shape `(n_genes,)`.
    """
    ld = log_delta[:, None]
    w = 1.0 / (s[None, :] + jnp.exp(ld))  # (n_genes, m)
    a = jnp.sum(w * (ut1**2)[None, :], axis=1)[:, None]
    b = jnp.sum(w * ut1[None, :] * uty, axis=1)[:, None]
    c = jnp.sum(w * uty**2, axis=1)[:, None]
    logdet = jnp.sum(jnp.log(s[None, :] + jnp.exp(ld)), axis=1)[:, None]
    return _llr_from_sums(a, b, c, logdet, ld, n=n, m=s.shape[0], rest=rest)[:, 0]


def _llr_grid(grid, uty, ut1, s, *, n, rest):
    """`gp_log_likelihood_ratio` on a grid of log deltas shared by all genes, `(n_genes, k)`."""
    w = 1.0 / (s[None, :] + jnp.exp(grid)[:, None])  # (k, m)
    a = (w @ ut1**2)[None, :]
    b = (uty * ut1[None, :]) @ w.T
    c = uty**2 @ w.T
    logdet = jnp.sum(jnp.log(s[None, :] + jnp.exp(grid)[:, None]), axis=1)[None, :]
    ld = jnp.broadcast_to(grid[None, :], c.shape)
    return _llr_from_sums(a, b, c, logdet, ld, n=n, m=s.shape[0], rest=rest)


def _argmax_log_delta(uty, ut1, s, *, n, rest):
    """Maximise the LLR over log delta per gene: grid, then golden-section search."""
    lo, hi = LOG_DELTA_BOUNDS
    grid = jnp.linspace(lo, hi, _GRID)
    values = _llr_grid(grid, uty, ut1, s, n=n, rest=rest)
    best = jnp.argmax(values, axis=1)
    step = (hi - lo) / (_GRID - 1)
    a = jnp.clip(grid[best] - step, lo, hi)
    b = jnp.clip(grid[best] + step, lo, hi)

    def f(x):
        return gp_log_likelihood_ratio(x, uty, ut1, s, n=n, rest=rest)

    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)

    def golden(_, state):
        # one new evaluation per step: the surviving interior point keeps its value
        a, b, c, d, fc, fd = state
        left = fc >= fd  # the maximum is in [a, d], else in [c, b]
        a2, b2 = jnp.where(left, a, c), jnp.where(left, d, b)
        new = jnp.where(left, b2 - ratio * (b2 - a2), a2 + ratio * (b2 - a2))
        fnew = f(new)
        c2, fc2 = jnp.where(left, new, d), jnp.where(left, fnew, fd)
        d2, fd2 = jnp.where(left, c, new), jnp.where(left, fc, fnew)
        return a2, b2, c2, d2, fc2, fd2

    a, b, *_ = jax.lax.fori_loop(0, _GOLDEN_STEPS, golden, (a, b, c, d, f(c), f(d)))
    x = 0.5 * (a + b)
    fx = f(x)
    grid_best = jnp.max(values, axis=1)
    return jnp.where(fx >= grid_best, x, grid[best]), jnp.maximum(fx, grid_best)


def _derivatives(x, uty, ut1, s, *, n, rest):
    """First and second derivative of each gene's LLR in log delta at `x`."""
    if rest is None:
        cross = squares = jnp.zeros_like(x)
    else:
        cross, squares = rest.cross, rest.squares

    def one(xi, u, c, q):
        gene = None if rest is None else NullSpace(rest.ones, c[None], q[None])
        return gp_log_likelihood_ratio(xi[None], u[None, :], ut1, s, n=n, rest=gene)[0]

    first = jax.vmap(jax.grad(one))(x, uty, cross, squares)
    second = jax.vmap(jax.grad(jax.grad(one)))(x, uty, cross, squares)
    return first, second


def _fsv(x, gower, curvature):
    delta = jnp.exp(x)
    fsv = gower / (gower + delta)
    dfsv = -gower * delta / (gower + delta) ** 2
    var = jnp.where(curvature < 0, -1.0 / jnp.where(curvature < 0, curvature, -1.0), jnp.nan)
    return fsv, jnp.abs(dfsv) * jnp.sqrt(var)


@functools.partial(jax.jit, static_argnames=("n", "standard_error"))
def _fit(uty, ut1, s, gower, rest, *, n, standard_error):
    x, llr = _argmax_log_delta(uty, ut1, s, n=n, rest=rest)
    if standard_error:
        _, curvature = _derivatives(x, uty, ut1, s, n=n, rest=rest)
    else:
        curvature = jnp.full_like(x, jnp.nan)
    fsv, fsv_se = _fsv(x, gower, curvature)
    return GPFit(llr=jnp.maximum(llr, 0.0), log_delta=x, fsv=fsv, fsv_se=fsv_se)


def fit_gp_implicit(
    z: Array, eigvals: Array, eigvecs: Array, gower: Array, *, constant: Array | None = None
) -> GPFit:
    """`fit_gp` for an exact kernel, traceable and differentiable in the data and the kernel.

    The optimum ``log delta*`` is found without gradients, then one Newton step is taken
    from it: its value is unchanged (the first derivative vanishes at an interior optimum)
    and its derivative is the implicit-function derivative of ``log delta*`` with respect to
    ``z``, the eigenvalues and the eigenvectors. Optima on the search bounds keep a zero
    derivative.

    Args:
      z: standardised expression, shape `(n_spots, n_genes)`.
      eigvals: kernel eigenvalues, shape `(n_spots,)`, > 0.
      eigvecs: kernel eigenvectors as columns, shape `(n_spots, n_spots)`.
      gower: Gower factor of the kernel, scalar.
      constant: `(n_genes,)` bool mask of constant genes (`standardize`). They have no test:
        their profile LLR degenerates (the residual of a zero vector is 0, clipped, which
        would give a large made-up statistic), so they get ``llr`` 0, ``fsv`` 0 (``log_delta``
        at its upper bound) and ``fsv_se`` 0, with zero gradients (a placeholder gene is
        fitted in their place, so that no NaN reaches the gradients of the others).

    Returns:
      A `GPFit`; ``llr``, ``log_delta`` and ``fsv`` carry gradients.
    """
    n = z.shape[0]
    if constant is not None:
        placeholder, _ = standardize(jnp.arange(n, dtype=z.dtype)[:, None])
        z = jnp.where(constant[None, :], placeholder, z)
    uty = z.T @ eigvecs
    ut1 = jnp.sum(eigvecs, axis=0)
    frozen = [jax.lax.stop_gradient(v) for v in (uty, ut1, eigvals)]
    x_star, _ = _argmax_log_delta(*frozen, n=n, rest=None)
    x_star = jax.lax.stop_gradient(x_star)
    first, second = _derivatives(x_star, uty, ut1, eigvals, n=n, rest=None)
    lo, hi = LOG_DELTA_BOUNDS
    interior = (x_star > lo + 1e-3) & (x_star < hi - 1e-3) & (second < 0)
    step = jnp.where(interior, first / jnp.where(interior, second, -1.0), 0.0)
    x = x_star - step
    llr = gp_log_likelihood_ratio(x, uty, ut1, eigvals, n=n)
    fsv, fsv_se = _fsv(x, gower, second)
    fit = GPFit(llr=jnp.maximum(llr, 0.0), log_delta=x, fsv=fsv, fsv_se=fsv_se)
    if constant is None:
        return fit
    untested = (0.0, hi, 0.0, 0.0)
    return GPFit(*(jnp.where(constant, u, v) for u, v in zip(untested, fit, strict=True)))


class _PlacedFactor(NamedTuple):
    """A `KernelFactor` in float32 on the devices, its spots split over a mesh when given.

    ``u`` and ``p1`` have the spots padded with zero rows to a multiple of the mesh's
    devices: a zero row adds nothing to any sum over spots.
    """

    u: Array  # (padded spots, m) eigenvectors
    s: Array  # (m,) eigenvalues
    ut1: Array  # (m,) U^T 1
    gower: Array
    p1: Array | None  # (padded spots,) P 1 = 1 - U U^T 1, low-rank factors only
    ones: Array | None  # 1^T P 1
    n: int  # spots


def _place_factor(factor: KernelFactor, mesh: Mesh | None) -> _PlacedFactor:
    """Copy `factor` to the devices once, for every chunk of genes fitted with it."""
    u64 = np.asarray(factor.eigvecs, dtype=np.float64)
    n, m = u64.shape
    n_rows = n if mesh is None else padded_size(n, mesh)
    ut1 = u64.sum(axis=0)
    # P 1 and 1^T P 1 in float64 on the host: the constant is nearly in a smooth kernel's
    # span, so 1^T P 1 = n - |U^T 1|^2 is a difference of nearly equal numbers
    p1 = 1.0 - u64 @ ut1 if m < n else None
    f = default_float()

    def spots_out(a):  # spots split over the mesh, padded with zero rows
        a = np.asarray(a, dtype=f)
        if mesh is None:
            return jnp.asarray(a)
        return shard_rows(np.pad(a, [(0, n_rows - n)] + [(0, 0)] * (a.ndim - 1)), mesh)

    return _PlacedFactor(
        u=spots_out(u64), s=jnp.asarray(factor.eigvals, f), ut1=jnp.asarray(ut1, f),
        gower=jnp.asarray(factor.gower, f),
        p1=None if p1 is None else spots_out(p1),
        ones=None if p1 is None else jnp.asarray(p1 @ p1, f), n=n,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("n", "standard_error", "genes"))
def _project_and_fit(z, placed, *, n, standard_error, genes):
    """``U^T y`` and the null-space sums by a sum over spots, then `_fit` per gene.

    The spots of `z` and of the factor may be split over devices (the compiler adds the
    sums over them); `genes`, a sharding or None, then splits the fit over the genes.
    The null-space sums are not ``y^T y - |U^T y|^2``, which cancels in float32 at large
    ``n``, but sums of the residual ``P y = y - U (U^T y)`` (two passes over the spots).
    """
    def split(a):  # per-gene values split over the genes
        return a if genes is None else jax.lax.with_sharding_constraint(a, genes)

    uty = z.T @ placed.u  # (n_genes, m)
    rest = None
    if placed.p1 is not None:
        resid = z - placed.u @ uty.T
        rest = NullSpace(placed.ones, split(placed.p1 @ z), split(jnp.sum(resid**2, axis=0)))
    uty = split(uty)
    return _fit(uty, placed.ut1, placed.s, placed.gower, rest, n=n,
                standard_error=standard_error)  # fmt: skip


def _fit_placed(z, placed: _PlacedFactor, *, standard_error: bool, mesh: Mesh | None) -> GPFit:
    """`fit_gp` with the factor already on the devices (`_place_factor`)."""
    n_genes = z.shape[1]
    z = np.asarray(z, dtype=default_float())
    if mesh is None:
        return _project_and_fit(jnp.asarray(z), placed, n=placed.n,
                                standard_error=standard_error, genes=None)  # fmt: skip
    n_padded = padded_size(n_genes, mesh)
    # genes padded with copies of the last one (dropped below), spots with zero rows
    z = pad_rows(z.T, n_padded).T
    z = shard_rows(np.pad(z, ((0, placed.u.shape[0] - placed.n), (0, 0))), mesh)
    genes = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    fit = _project_and_fit(z, placed, n=placed.n, standard_error=standard_error, genes=genes)
    return fit if n_padded == n_genes else GPFit(*(v[:n_genes] for v in fit))


def fit_gp(
    z: Array, factor: KernelFactor, *, standard_error: bool = True, mesh: Mesh | None = None
) -> GPFit:
    """Fit the SpatialDE GP model to every gene for one kernel.

    Each gene's projection ``U^T y`` on the kernel's eigenvectors is a sum over spots, and
    for a low-rank (Nystrom) factor so are the sums over its null space, taken of the
    residual ``y - U U^T y`` rather than as ``y^T y - |U^T y|^2`` (that difference
    cancels in float32 at large ``n``); then the noise ratio of every gene is fitted.

    Args:
      z: standardised expression (`standardize`), shape `(n_spots, n_genes)`.
      factor: the kernel's `KernelFactor` (from `exact_factor` or `nystrom_factor`).
      standard_error: compute ``fsv_se`` (a second derivative per gene); False fills NaN.
      mesh: a device mesh (`diffomics.core.data_mesh`). The sums over spots are split over
        its devices (the spots of `z` and of the factor's eigenvectors in one block per
        device, padded with zero rows), and the fit over genes (padded with copies of the
        last gene, dropped from the result). The result equals the one-device fit up to
        float32 rounding. None: no placement.

    Returns:
      A `GPFit` of `(n_genes,)` arrays.

    Examples:
      >>> from diffomics.spatial._kernels import exact_factor, kernel_matrix
      >>> x = jnp.linspace(0.0, 10.0, 40)[:, None]
      >>> factor = exact_factor(np.asarray(kernel_matrix(x, lengthscale=2.0)))
      >>> y = jnp.stack([jnp.sin(x[:, 0]), jnp.cos(3.7 * jnp.arange(40.0) ** 2)], axis=1)
      >>> fit = fit_gp(standardize(y)[0], factor)
      >>> bool(fit.llr[0] > 20.0), bool(fit.fsv[0] > 0.9)  # a smooth wave is spatial
      (True, True)
    """
    return _fit_placed(z, _place_factor(factor, mesh), standard_error=standard_error,
                       mesh=mesh)  # fmt: skip


def gp_posterior_mean(z: Array, factor: KernelFactor, log_delta: Array) -> Array:
    """Posterior mean of the spatial component of standardised genes (GP smoothing).

    ``E[f | y] = K (K + delta I)^{-1} y = U diag(s / (s + delta)) U^T y`` per gene, with the
    gene's own noise ratio; directions outside a low-rank kernel's span are smoothed to 0.

    Args:
      z: standardised expression, shape `(n_spots, n_genes)`.
      factor: the kernel's `KernelFactor`.
      log_delta: fitted ``log delta`` per gene, shape `(n_genes,)`.

    Returns:
      Smoothed values on the standardised scale, shape `(n_spots, n_genes)`.

    Examples:
      >>> from diffomics.spatial._kernels import exact_factor
      >>> smooth = gp_posterior_mean(jnp.eye(3)[:, :1], exact_factor(np.eye(3)), jnp.zeros(1))
      >>> smooth.ravel().tolist()  # K = I, delta = 1: halfway to the data
      [0.5, 0.0, 0.0]
    """
    u = jnp.asarray(factor.eigvecs, dtype=default_float())
    s = jnp.asarray(factor.eigvals, dtype=default_float())
    shrink = s[:, None] / (s[:, None] + jnp.exp(log_delta)[None, :])
    return u @ (shrink * (u.T @ z))


def mixture_log_pvalue(statistic: Array) -> Array:
    """Log p-value of ``2 * LLR`` under the boundary mixture ``0.5 chi2_0 + 0.5 chi2_1``.

    The null of one variance component tested on the boundary of its parameter space
    (Self & Liang 1987): ``p = 0.5 P(chi2_1 > t) = Phi(-sqrt(t))`` for ``t > 0`` and 1 for
    ``t = 0``. Computed as ``log_ndtr`` so that tiny p-values neither underflow nor lose
    their gradient; the square root is gradient-safe at 0.

    Args:
      statistic: ``2 * LLR`` >= 0, any shape.

    Returns:
      ``log p``, same shape, <= 0.

    Examples:
      >>> np.exp(mixture_log_pvalue(jnp.array([0.0, 2.706, 3.841]))).round(3).tolist()
      [1.0, 0.05, 0.025]
    """
    t = jnp.asarray(statistic)
    positive = t > _ZERO
    root = jnp.sqrt(jnp.where(positive, t, 1.0))
    return jnp.where(positive, log_ndtr(-root), 0.0)


def mixture_pvalue(statistic: Array) -> Array:
    """P-value of ``2 * LLR`` under ``0.5 chi2_0 + 0.5 chi2_1`` (see `mixture_log_pvalue`).

    Args:
      statistic: ``2 * LLR`` >= 0, any shape.

    Returns:
      P-values in (0, 1], same shape.
    """
    return jnp.exp(mixture_log_pvalue(statistic))


def gene_sparsity(y: np.ndarray) -> np.ndarray:
    """Fraction of spots at each gene's smallest value (zeros, for counts), shape `(n_genes,)`."""
    y = np.asarray(y)
    return np.mean(y <= y.min(axis=0, keepdims=True), axis=0)


class PermutationNull(NamedTuple):
    """Null of the statistic from permuted genes, stratified by sparsity, with a fitted tail.

    Within a stratum the p-value of ``t`` is the permutation p-value
    ``(1 + #{null >= t}) / (1 + N)`` up to the stratum's 95% null quantile ``u``, and beyond
    it the exponential tail ``0.05 * exp(-(t - u) / beta)`` fitted (by maximum likelihood)
    to the null exceedances of ``u``, so that small p-values are not floored at ``1 / N``.

    Attributes:
      edges: upper sparsity edge of each stratum, shape `(n_strata,)` (the last is inf).
      samples: sorted null statistics of each stratum.
      threshold: ``u`` per stratum.
      beta: tail scale per stratum.
    """

    edges: np.ndarray
    samples: tuple[np.ndarray, ...]
    threshold: np.ndarray
    beta: np.ndarray

    def pvalue(self, statistic: np.ndarray, sparsity: np.ndarray) -> np.ndarray:
        """P-values of statistics ``2 * LLR`` of genes with the given sparsity."""
        t = np.asarray(statistic, dtype=np.float64)
        stratum = np.searchsorted(self.edges, np.asarray(sparsity), side="left")
        p = np.ones_like(t)
        for k, null in enumerate(self.samples):
            idx = np.flatnonzero(stratum == k)
            if idx.size == 0:
                continue
            tk = t[idx]
            exceed = null.size - np.searchsorted(null, tk - 1e-9, side="left")
            empirical = (1.0 + exceed) / (1.0 + null.size)
            tail = 0.05 * np.exp(-(tk - self.threshold[k]) / self.beta[k])
            p[idx] = np.where(tk > self.threshold[k], np.minimum(tail, empirical), empirical)
        return np.where(t > _ZERO, p, 1.0)



def permutation_null(
    statistic: np.ndarray, sparsity: np.ndarray, *, n_strata: int = 5, min_per_stratum: int = 400
) -> PermutationNull:
    """Build the stratified permutation null from statistics of permuted genes.

    The statistic's null law does not depend on a gene's mean or variance (both are
    profiled) but does depend on the shape of its distribution: sparse genes (mostly zeros)
    have heavier tails than dense ones. So the genes are permuted over spots (each gene on
    its own permutation), the statistic recomputed, and its null estimated within strata of
    sparsity (`gene_sparsity`), each holding about the same number of genes.

    Args:
      statistic: ``2 * LLR`` of the permuted genes, shape `(n_genes,)`.
      sparsity: `gene_sparsity` of those genes, shape `(n_genes,)`.
      n_strata: number of strata at most.
      min_per_stratum: fewer strata are used when a stratum would get fewer genes.

    Returns:
      A `PermutationNull`.
    """
    t = np.asarray(statistic, dtype=np.float64)
    sparsity = np.asarray(sparsity, dtype=np.float64)
    k = int(max(1, min(n_strata, t.size // max(min_per_stratum, 1))))
    cuts = np.unique(np.quantile(sparsity, np.linspace(0.0, 1.0, k + 1)[1:-1]))
    edges = np.append(cuts, np.inf)
    stratum = np.searchsorted(edges, sparsity, side="left")
    samples, thresholds, betas = [], [], []
    for j in range(edges.size):
        null = np.sort(t[stratum == j]) if np.any(stratum == j) else np.sort(t)
        u = np.quantile(null, 0.95)
        excess = null[null > u] - u
        samples.append(null)
        thresholds.append(u)
        betas.append(excess.mean() if excess.size else 1.0)
    return PermutationNull(edges, tuple(samples), np.asarray(thresholds), np.asarray(betas))


def permute_genes(z: np.ndarray, *, seed=0, genes: np.ndarray | None = None) -> np.ndarray:
    """Permute every gene (column) over spots with its own permutation.

    Gene ``j`` is permuted by ``numpy.random.default_rng([*seed, genes[j]]).permutation``:
    a gene's permutation depends on the seed and its index only, so genes permuted a chunk
    at a time get the permutations they would get all at once.

    Args:
      z: expression, shape `(n_spots, n_genes)`.
      seed: an int >= 0, or a sequence of them.
      genes: the genes' indices (in the whole gene set), shape `(n_genes,)`; None:
        ``0, 1, ...``.

    Returns:
      The permuted copy, same shape.

    Examples:
      >>> z = np.arange(8.0).reshape(4, 2)
      >>> np.array_equal(permute_genes(z)[:, 1], permute_genes(z[:, 1:], genes=[1])[:, 0])
      True
    """
    z = np.asarray(z)
    genes = np.arange(z.shape[1]) if genes is None else np.asarray(genes)
    root = [int(s) for s in np.atleast_1d(seed)]
    out = np.empty_like(z)
    for k, gene in enumerate(genes):
        out[:, k] = z[np.random.default_rng([*root, int(gene)]).permutation(z.shape[0]), k]
    return out
