"""`spatial_genes`: spatially variable genes of a spatial AnnData (SpatialDE-style GP test)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from typing import TYPE_CHECKING

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from diffomics.core._checks import check_choice, check_finite, check_matrix
from diffomics.core._errors import ConfigError, MissingKeyError, ShapeError
from diffomics.core._multiple_testing import benjamini_hochberg, storey_pi0
from diffomics.core._numerics import default_float
from diffomics.core._sharding import on_disk, to_host
from diffomics.spatial._gp_test import (
    GPFit,
    _fit_placed,
    _place_factor,
    gp_posterior_mean,
    permutation_null,
)
from diffomics.spatial._kernels import (
    KERNELS,
    exact_factor,
    gower_factor,
    inducing_points,
    kernel_matrix,
    lengthscale_grid,
    nystrom_factor,
)
from diffomics.spatial._reference import layer_matrix
from diffomics.spatial._svg_values import permuted_store, tested_values

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["spatial_genes"]

#: Free parameters of each model for the BIC (mean, two variances, lengthscale), as SpatialDE.
_N_PARAMS = {"se": 4, "periodic": 4, "linear": 3}
#: Size of the permutation null: at least (small gene sets are permuted several times) and
#: at most (a random subset of larger ones is permuted).
_MIN_NULL = 2000
_MAX_NULL = 20000


def _coordinates(adata: ad.AnnData, spatial_key: str) -> np.ndarray:
    if spatial_key not in adata.obsm:
        msg = f"adata.obsm has no {spatial_key!r} coordinates; found {list(adata.obsm)}."
        raise MissingKeyError(msg)
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    check_matrix(coords, f"adata.obsm[{spatial_key!r}]")
    check_finite(coords, f"adata.obsm[{spatial_key!r}]")
    if coords.shape[0] < 3:
        msg = f"spatial_genes needs at least 3 spots; found {coords.shape[0]}."
        raise ShapeError(msg)
    if np.unique(coords, axis=0).shape[0] < 2:
        msg = f"adata.obsm[{spatial_key!r}] holds one position for every spot; nothing is spatial."
        raise ShapeError(msg)
    return coords[:, :2] if coords.shape[1] > 2 else coords


def _factors(coords, kernel, scales, *, exact_max_spots, n_inducing, seed):
    """Yield ``(scale, factor)`` for every kernel in the family, one at a time."""
    exact = coords.shape[0] <= exact_max_spots
    inducing = None if exact else inducing_points(coords, n_inducing=n_inducing, seed=seed)
    for scale in scales:
        if exact:
            k = np.asarray(kernel_matrix(coords, kernel=kernel, lengthscale=float(scale)))
            yield scale, exact_factor(k)
        else:
            yield scale, nystrom_factor(coords, inducing, kernel=kernel, lengthscale=float(scale))


def _scan(z_list, coords, kernel, scales, *, chunk_size, exact_max_spots, n_inducing, seed,
          progress, mesh=None):
    """Best fit over a kernel family for each gene-major store in `z_list` (genes in chunks)."""
    best = [
        {k: np.full(z.shape[0], np.nan if k != "llr" else -np.inf) for k in
         ("llr", "fsv", "fsv_se", "lengthscale", "log_delta")}
        for z in z_list
    ]
    n_chunks = sum(-(-z.shape[0] // chunk_size) for z in z_list)
    bar = tqdm(total=len(scales) * n_chunks, disable=not progress, unit="chunk",
               desc=f"GP test ({kernel})")
    with bar:
        for scale, factor in _factors(coords, kernel, scales, exact_max_spots=exact_max_spots,
                                      n_inducing=n_inducing, seed=seed):
            placed = _place_factor(factor, mesh)  # on the devices once for every chunk
            for i, (z, out) in enumerate(zip(z_list, best, strict=True)):
                for start in range(0, z.shape[0], chunk_size):
                    sl = slice(start, start + chunk_size)
                    block = np.asarray(z[sl]).T  # spots x genes
                    width = block.shape[1]
                    if z.shape[0] > chunk_size and width < chunk_size:
                        # pad the last chunk: every chunk has one shape, compiled once
                        block = np.pad(block, ((0, 0), (0, chunk_size - width)))
                    fit = _fit_placed(block, placed, standard_error=i == 0, mesh=mesh)
                    # on the host (gathered from every process when split over them)
                    fit = GPFit(*(to_host(v)[:width] for v in fit))
                    llr = np.asarray(fit.llr, dtype=np.float64)
                    better = llr > out["llr"][sl]
                    out["llr"][sl] = np.where(better, llr, out["llr"][sl])
                    out["fsv"][sl] = np.where(better, np.asarray(fit.fsv), out["fsv"][sl])
                    out["fsv_se"][sl] = np.where(better, np.asarray(fit.fsv_se),
                                                 out["fsv_se"][sl])
                    out["lengthscale"][sl] = np.where(better, scale, out["lengthscale"][sl])
                    out["log_delta"][sl] = np.where(better, np.asarray(fit.log_delta),
                                                    out["log_delta"][sl])
                    bar.update(1)
    return best


def _family_scales(coords, kernel, lengthscales, *, n_lengthscales, exact_max_spots,
                   n_inducing):
    """The kernel family's grid, and the scales dropped as too short for the Nystrom path."""
    n = coords.shape[0]
    if kernel == "linear":
        return np.array([np.nan]), []
    if lengthscales is not None:
        scales = np.asarray(lengthscales, dtype=np.float64)
        if scales.ndim != 1 or np.any(~np.isfinite(scales)) or np.any(scales <= 0):
            msg = f"lengthscales must be a 1-d array of finite values > 0; found {scales!r}."
            raise ConfigError(msg)
    else:
        scales = lengthscale_grid(coords, n=n_lengthscales)
    if n <= exact_max_spots:
        return scales, []
    spacing = np.sqrt(np.prod(np.ptp(coords, axis=0)) / n_inducing)
    keep = scales >= 0.5 * spacing
    if not keep.any():
        msg = (
            f"every lengthscale is shorter than half the inducing-point spacing "
            f"({spacing:.3g}); raise n_inducing."
        )
        raise ConfigError(msg)
    return scales[keep], scales[~keep].tolist()


def _model_search(z, coords, log_lik_null, best_bic, kernel, *, n_lengthscales, **scan_kwargs):
    """BIC of each kernel family for the genes in `z`; SpatialDE's ``model_search``."""
    n = coords.shape[0]
    bics = {kernel: best_bic}
    for family in KERNELS:
        if family == kernel:
            continue
        scales, _ = _family_scales(
            coords, family, None, n_lengthscales=n_lengthscales,
            exact_max_spots=scan_kwargs["exact_max_spots"], n_inducing=scan_kwargs["n_inducing"],
        )
        fit = _scan([z], coords, family, scales, **scan_kwargs)[0]
        bics[family] = -2.0 * (np.maximum(fit["llr"], 0.0) + log_lik_null)
        bics[family] = bics[family] + _N_PARAMS[family] * np.log(n)
    names = list(bics)
    matrix = np.stack([bics[k] for k in names], axis=1)
    log_w = -0.5 * (matrix - matrix.min(axis=1, keepdims=True))
    prob = np.exp(log_w) / np.exp(log_w).sum(axis=1, keepdims=True)
    best = matrix.argmin(axis=1)
    return np.array(names)[best], prob[np.arange(len(best)), best], bics


def _smoothed(table, tested, fits, coords, kernel, n_top, *, index, **factor_kwargs):
    """GP posterior means of the strongest significant genes, back in the values' units."""
    ranked = table.assign(_i=np.arange(len(table)))[table["is_spatial"]]
    top = ranked.sort_values("llr", ascending=False).head(n_top)
    columns = {}
    for scale in np.unique(top["lengthscale"].to_numpy()):
        genes = top[top["lengthscale"] == scale]
        idx = genes["_i"].to_numpy()
        (_, factor), = _factors(coords, kernel, [scale], **factor_kwargs)
        smooth = np.asarray(gp_posterior_mean(
            jnp.asarray(np.asarray(tested.z[idx]).T), factor,
            jnp.asarray(fits["log_delta"][idx], default_float())))  # fmt: skip
        sd, mean = tested.sd[idx], tested.mean[idx]
        for j, name in enumerate(genes.index):
            columns[name] = mean[j] + sd[j] * smooth[:, j]
    return pd.DataFrame({g: columns[g] for g in top.index}, index=index)


def _refine_lengthscales(z, coords, start, *, steps=40, learning_rate=0.05):
    """Per-gene continuous lengthscale by gradient ascent on the profile LLR (exact kernels)."""
    import optax

    from diffomics.core._numerics import safe_eigh
    from diffomics.spatial._gp_test import fit_gp_implicit

    xy = jnp.asarray(coords, dtype=default_float())

    def llr(log_l, y):
        k = kernel_matrix(xy, kernel="se", lengthscale=jnp.exp(log_l))
        s, u = safe_eigh(k)
        gower = gower_factor(k)
        fit = fit_gp_implicit(y[:, None], jnp.maximum(s, 1e-8), u, gower)
        return fit.llr[0], fit.fsv[0]

    tx = optax.adam(learning_rate)

    @jax.jit
    def step(log_l, state, y):
        (value, fsv), grad = jax.value_and_grad(llr, has_aux=True)(log_l, y)
        updates, state = tx.update(-grad, state)
        return optax.apply_updates(log_l, updates), state, value, fsv

    out = np.zeros((z.shape[1], 3))
    for g in range(z.shape[1]):
        log_l = jnp.log(jnp.asarray(start[g], default_float()))
        state = tx.init(log_l)
        y = jnp.asarray(z[:, g])
        best = (-np.inf, start[g], np.nan)
        for _ in range(steps):
            new, state, value, fsv = step(log_l, state, y)
            if float(value) > best[0]:
                best = (float(value), float(jnp.exp(log_l)), float(fsv))
            log_l = new
        out[g] = best
    return out


def spatial_genes(
    adata: ad.AnnData,
    *,
    spatial_key: str = "spatial",
    layer: str | None = None,
    kernel: str = "se",
    lengthscales: np.ndarray | None = None,
    n_lengthscales: int = 10,
    counts: bool | None = None,
    total_counts_key: str | None = None,
    exact_max_spots: int = 3000,
    n_inducing: int = 500,
    chunk_size: int = 2000,
    alpha: float = 0.05,
    storey: bool = False,
    model_search: bool = False,
    refine_lengthscale: bool = False,
    n_smoothed: int = 12,
    seed: int = 0,
    progress: bool | None = None,
    mesh: Mesh | None = None,
    key_added: str = "spatial_genes",
) -> pd.DataFrame:
    """Test every gene for spatial variation with SpatialDE's Gaussian-process model.

    Steps:

    1. raw counts (detected, or ``counts=True``) are variance-stabilised
       (`diffomics.spatial.stabilize`) and the spot's log total counts regressed out (from
       ``obs[total_counts_key]`` as given, as SpatialDE does; by default, for each gene,
       ``log(1 + counts of the other genes)``, because with few genes a gene's own counts in
       the total bias its coefficient and regressing the total's spatial pattern out then
       writes that pattern into null genes: 35 of 180 null genes called at 10,000 spots with
       the plain total, 0 without it); other values are used as they are;
    2. for each kernel of the family (SpatialDE's grid of ``n_lengthscales`` lengthscales from
       half the smallest to twice the largest distance, or `lengthscales`) every gene's
       GP likelihood ratio against the constant model is maximised over the noise ratio,
       and the best kernel kept per gene;
    3. the same is done with each gene permuted over the spots (several times when there
       are fewer than 2,000 genes; a random 20,000 when there are more), and the p-value of
       ``2 * LLR`` read from that permutation null within strata of gene sparsity with a
       fitted exponential tail (`permutation_null`), so the p-values are calibrated for the
       maximum over lengthscales and for sparse, non-Gaussian genes;
    4. q-values by Benjamini-Hochberg (``storey=True`` scales them by Storey's pi0).

    Up to `exact_max_spots` spots the kernels are eigendecomposed exactly (O(n^3) once per
    lengthscale, shared by all genes); above it a Nystrom factor with `n_inducing` k-means
    inducing points is used (O(n m^2)), a valid reduced-rank GP whose test stays calibrated
    through the same permutation null. Lengthscales shorter than the inducing points'
    spacing are then not representable and are dropped (reported). Genes go through the
    test in chunks of `chunk_size`.

    The expression is read twice, a chunk of genes at a time (about 16 million values):
    once for the checks, each spot's total counts and the genes' moments, once to
    transform and standardise each gene. The standardised values and their permutations
    are kept gene-major, in memory (4 bytes a value, as many as the matrix and its
    permutations hold), or, when `adata` is on disk (``anndata.read_h5ad(path,
    backed="r")``, `diffomics.integration.open_zarr`), in files of a temporary folder
    (removed at the end), so host memory is O(n (m + chunk_size)) whatever the number of
    genes. Each gene's permutation depends on `seed` and its index only.

    Args:
      adata: spots x genes AnnData with coordinates in ``obsm[spatial_key]``; its ``X`` (or
        `layer`) dense, sparse, or on disk (backed h5ad or Zarr; read in chunks of genes).
      spatial_key: key of the coordinates (the first two columns are used).
      layer: layer with the expression; None uses ``X``.
      kernel: ``"se"`` (squared exponential, default), ``"periodic"`` (SpatialDE's cosine
        kernel; the grid holds periods) or ``"linear"`` (a linear trend).
      lengthscales: explicit grid (or periods); None uses SpatialDE's grid.
      n_lengthscales: size of SpatialDE's grid.
      counts: whether the values are raw counts; None decides from the data (non-negative
        integers).
      total_counts_key: column of ``obs`` with the total counts per spot, regressed out as
        they are; None uses, per gene, the counts of the other genes in `adata`.
      exact_max_spots: above this many spots, use the Nystrom factor.
      n_inducing: inducing points of the Nystrom factor.
      chunk_size: genes per chunk.
      alpha: FDR level of ``is_spatial``.
      storey: use Storey's pi0 in the q-values.
      refine_lengthscale: for the significant genes, also fit the squared-exponential
        lengthscale continuously per gene by gradient ascent on the profile likelihood
        ratio (`safe_eigh` and implicit derivatives through the noise ratio), starting from
        the grid's best; adds ``lengthscale_refined``, ``llr_refined`` and ``fsv_refined``.
        Exact kernels only (one eigendecomposition per gene and step). The p-values stay
        those of the grid test, whose null they were calibrated for.
      n_smoothed: how many of the strongest significant genes get their GP posterior mean
        (the smoothed expression, in the units of the tested values) stored for plotting.
      model_search: for the significant genes, also fit the other kernel families
        (squared exponential, periodic, linear) and choose by BIC, as SpatialDE's
        ``model_search`` does; adds ``model``, ``model_prob`` (the chosen model's BIC weight
        ``exp(-BIC/2)`` normalised over the families; SpatialDE uses ``exp(-BIC)``) and
        ``bic_<family>``.
      seed: seed of the permutations and of the inducing points.
      progress: progress bar over chunks; None shows it on a terminal only.
      mesh: a device mesh (`diffomics.core.data_mesh`): the projections of each chunk of
        genes (observed and permuted) on the kernel's eigenvectors are summed over blocks
        of spots, one block per device, then the genes are fitted split over the devices
        (`fit_gp`); the table equals the one-device one up to the order of float32 sums.
        The kernel's factor (in float64, once per lengthscale, its rows then placed on
        the devices) and the steps after the test are computed on the host. None
        (default): no placement.
      key_added: ``adata.uns[key_added]`` receives the parameters and the null summary.

    Returns:
      DataFrame indexed by gene with columns ``fsv`` (fraction of spatial variance, float),
      ``fsv_se`` (its standard error; NaN where the likelihood is flat), ``lengthscale``
      (of the best kernel, in coordinate units), ``llr`` (log-likelihood ratio, nats),
      ``pval``, ``qval``, ``is_spatial`` (``qval < alpha``), ``sparsity`` (fraction of spots
      at the gene's minimum) and ``bic`` (of the best kernel). The same columns are written
      to ``adata.var`` (``fsv``, ``pval``, ...); nothing else in `adata` changes except
      ``adata.uns[key_added]`` and ``adata.obsm[f"{key_added}_smoothed"]`` (DataFrame,
      spots x up to `n_smoothed` genes, strongest first).

    Raises:
      MissingKeyError: no coordinates, layer or total-count column.
      ShapeError: fewer than 3 spots, or every gene constant.
      CountsError: a spot with zero total counts, or negative values with ``counts=True``.
      NonFiniteError: NaN or inf in the coordinates or the expression.
      ConfigError: an argument out of range.

    References:
      Svensson, Teichmann & Stegle, "SpatialDE: identification of spatially variable
      genes", Nature Methods 15:343 (2018), https://doi.org/10.1038/nmeth.4636.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> xy = rng.uniform(0, 10, size=(150, 2))
      >>> wave = rng.poisson(5 * np.exp(np.sin(xy[:, 0]))).astype(float)
      >>> noise = rng.poisson(5.0, size=(150, 3)).astype(float)
      >>> adata = ad.AnnData(np.column_stack([wave, noise]))
      >>> adata.obsm["spatial"] = xy
      >>> table = spatial_genes(adata, progress=False)
      >>> table["is_spatial"].tolist()
      [True, False, False, False]
    """
    check_choice(kernel, "kernel", KERNELS)
    for name, value in (("n_lengthscales", n_lengthscales), ("chunk_size", chunk_size),
                        ("n_inducing", n_inducing), ("exact_max_spots", exact_max_spots)):
        if not isinstance(value, int | np.integer) or value < 1:
            msg = f"{name} must be an int >= 1; found {value!r}."
            raise ConfigError(msg)
    if not 0.0 < alpha < 1.0:
        msg = f"alpha must be in (0, 1); found {alpha!r}."
        raise ConfigError(msg)
    coords = _coordinates(adata, spatial_key)
    matrix = layer_matrix(adata, layer, name="adata")
    # a matrix on disk is read a chunk of genes at a time, its standardised values (and
    # their permutations) written to files, so host memory holds a chunk, not the matrix
    scratch = (tempfile.TemporaryDirectory(prefix="diffomics-svg-") if on_disk(adata)
               else contextlib.nullcontext())  # fmt: skip
    with scratch as folder:  # None: the stores are kept in memory
        tested = tested_values(matrix, adata.obs, counts=counts, total_counts_key=total_counts_key,
                               folder=folder)  # fmt: skip
        z, constant, sparsity, report = tested.z, tested.constant, tested.sparsity, tested.report
        if constant.all():
            msg = (f"every one of the {constant.size} genes is constant over the spots; "
                   "nothing to test.")
            raise ShapeError(msg)
        if constant.any():
            warnings.warn(
                f"{int(constant.sum())} gene(s) are constant over the spots (e.g. "
                f"{list(adata.var_names[np.asarray(constant)][:3])}); they get llr 0 and "
                "p-value 1.",
                stacklevel=2,
            )
        n = coords.shape[0]
        scales, dropped = _family_scales(
            coords, kernel, lengthscales, n_lengthscales=n_lengthscales,
            exact_max_spots=exact_max_spots, n_inducing=n_inducing,
        )
        show = sys.stderr.isatty() if progress is None else progress
        # the permutation null needs enough statistics, and no more: permute small gene sets
        # several times, and only a random subset of large ones
        n_perm = int(np.ceil(_MIN_NULL / z.shape[0]))
        null_genes = np.arange(z.shape[0])
        if z.shape[0] > _MAX_NULL:
            null_genes = np.sort(
                np.random.default_rng(seed).choice(z.shape[0], _MAX_NULL, replace=False)
            )
        permuted = permuted_store(z, null_genes, n_perm, seed=seed, folder=folder)
        observed, null = _scan(
            [z, permuted], coords, kernel, scales, chunk_size=chunk_size,
            exact_max_spots=exact_max_spots, n_inducing=n_inducing, seed=seed, progress=show,
            mesh=mesh,
        )
        const = np.asarray(constant)
        observed["llr"] = np.where(const, 0.0, np.maximum(observed["llr"], 0.0))
        null_const = np.tile(const[null_genes], n_perm)
        null_dist = permutation_null(
            2.0 * null["llr"][~null_const], np.tile(sparsity[null_genes], n_perm)[~null_const]
        )
        pval = null_dist.pvalue(2.0 * observed["llr"], sparsity)
        pval = np.where(const, 1.0, pval)
        pi0 = storey_pi0(pval) if storey else 1.0
        qval = benjamini_hochberg(pval, pi0=pi0)
        variance = tested.sd**2
        log_lik_null = -0.5 * n * (np.log(2.0 * np.pi * np.maximum(variance, 1e-300)) + 1.0)
        bic = -2.0 * (observed["llr"] + log_lik_null) + _N_PARAMS[kernel] * np.log(n)
        table = pd.DataFrame(
            {
                "fsv": np.where(const, 0.0, observed["fsv"]),
                "fsv_se": observed["fsv_se"],
                "lengthscale": observed["lengthscale"],
                "llr": observed["llr"],
                "pval": pval,
                "qval": qval,
                "is_spatial": qval < alpha,
                "sparsity": sparsity,
                "bic": bic,
            },
            index=adata.var_names.copy(),
        )
        if model_search:
            table["model"] = ""
            table["model_prob"] = np.nan
            chosen = table["is_spatial"].to_numpy()
            if chosen.any():
                model, prob, bics = _model_search(
                    z[chosen], coords, log_lik_null[chosen], bic[chosen], kernel,
                    n_lengthscales=n_lengthscales, chunk_size=chunk_size,
                    exact_max_spots=exact_max_spots, n_inducing=n_inducing, seed=seed,
                    progress=show, mesh=mesh,
                )
                table.loc[chosen, "model"] = model
                table.loc[chosen, "model_prob"] = prob
                for family, family_bic in bics.items():
                    table[f"bic_{family}"] = np.nan
                    table.loc[chosen, f"bic_{family}"] = family_bic
        if refine_lengthscale:
            if kernel != "se" or n > exact_max_spots:
                msg = ("refine_lengthscale needs kernel='se' and the exact path "
                       "(n <= exact_max_spots).")
                raise ConfigError(msg)
            chosen = table["is_spatial"].to_numpy()
            refined = np.full((len(table), 3), np.nan)
            if chosen.any():
                refined[chosen] = _refine_lengthscales(
                    np.asarray(z[chosen]).T, coords, table["lengthscale"].to_numpy()[chosen]
                )
            table["llr_refined"], table["lengthscale_refined"], table["fsv_refined"] = refined.T
        for column in table.columns:
            adata.var[column] = table[column].to_numpy()
        adata.obsm[f"{key_added}_smoothed"] = _smoothed(
            table, tested, observed, coords, kernel, n_smoothed,
            exact_max_spots=exact_max_spots, n_inducing=n_inducing, seed=seed,
            index=adata.obs_names,
        )
        adata.uns[key_added] = {
            "params": {
                "spatial_key": spatial_key,
                "layer": layer,
                "kernel": kernel,
                "lengthscales": [float(s) for s in scales],
                "lengthscales_dropped": [float(s) for s in dropped],
                "exact": bool(n <= exact_max_spots),
                "n_inducing": int(n_inducing),
                "alpha": float(alpha),
                "pi0": float(pi0),
                "seed": int(seed),
            },
            "preprocessing": report,
            "null": {
                "strata_upper_sparsity": [float(e) for e in null_dist.edges],
                "tail_threshold": [float(u) for u in null_dist.threshold],
                "tail_scale": [float(b) for b in null_dist.beta],
                "n_statistics": int((~null_const).sum()),
                "n_permutations": n_perm,
            },
            "n_constant_genes": int(const.sum()),
        }
        return table
