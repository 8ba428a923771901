"""Spatially variable genes: planted truth, null calibration, SpatialDE agreement, scale path."""

from pathlib import Path

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from diffomics import MissingKeyError, NonFiniteError, ShapeError
from diffomics.datasets import mouse_olfactory_bulb
from diffomics.spatial import (
    exact_factor,
    fit_gp,
    lengthscale_grid,
    nystrom_factor,
    spatial_genes,
)
from diffomics.spatial._gp_test import standardize
from diffomics.spatial._kernels import inducing_points

DATA = Path(__file__).parents[1] / "data"


def se_kernel(xy, lengthscale):
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * lengthscale**2))


def simulate_counts(n_spots=300, n_spatial=20, n_null=280, seed=0, lengthscale=1.5):
    """NB counts; the first genes have a log-mean drawn from a GP over the tissue."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0.0, 10.0, size=(n_spots, 2))
    chol = np.linalg.cholesky(se_kernel(xy, lengthscale) + 1e-5 * np.eye(n_spots))
    field = chol @ rng.standard_normal((n_spots, n_spatial))
    base = rng.uniform(1.0, 3.0, size=n_spatial + n_null)
    log_mu = np.tile(base, (n_spots, 1))
    log_mu[:, :n_spatial] += 0.8 * field
    mu = np.exp(log_mu)
    x = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float32)
    adata = ad.AnnData(x, var=pd.DataFrame(index=[f"g{i}" for i in range(x.shape[1])]))
    adata.obsm["spatial"] = xy
    return adata


def restricted_ks(p, upper=0.5):
    """KS distance to the uniform over [0, upper].

    ``2 LLR`` is exactly 0 for about half of the null genes (the noise ratio on its bound),
    so p-values have an atom at 1 and are uniform only below ``1 - P(atom)``.
    """
    grid = np.linspace(0.0, upper, 501)
    return float(np.max(np.abs([np.mean(p <= a) - a for a in grid])))


def test_planted_spatial_genes_are_found_and_null_genes_are_not():
    adata = simulate_counts()
    table = spatial_genes(adata, progress=False)
    truth = np.arange(adata.n_vars) < 20
    found = table["is_spatial"].to_numpy()
    assert found[truth].mean() >= 0.9
    assert found[~truth].sum() <= 3
    assert table["fsv"][truth].median() > 0.3
    # the planted lengthscale (1.5) is within one grid step of the selected ones
    grid = adata.uns["spatial_genes"]["params"]["lengthscales"]
    step = grid[1] / grid[0]
    assert 1.5 / step <= table["lengthscale"][truth].median() <= 1.5 * step
    for column in ("fsv", "fsv_se", "lengthscale", "llr", "pval", "qval", "is_spatial"):
        np.testing.assert_array_equal(adata.var[column].to_numpy(), table[column].to_numpy())


def test_null_pvalues_are_uniform_on_permuted_real_data():
    """MOB genes with their spots shuffled: no gene is spatial any more."""
    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(0)).ravel() >= 3].copy()
    rng = np.random.default_rng(11)
    genes = rng.choice(mob.n_vars, size=3000, replace=False)
    null = mob[:, genes].copy()
    null.X = np.take_along_axis(
        np.asarray(null.X), np.argsort(rng.random(null.shape), axis=0), axis=0
    )
    table = spatial_genes(null, total_counts_key="total_counts", seed=5, progress=False)
    p = table["pval"].to_numpy()
    assert 0.035 < np.mean(p < 0.05) < 0.065
    assert np.mean(p < 0.01) < 0.02
    assert restricted_ks(p) < 0.04
    assert table["is_spatial"].sum() <= 3


def test_agrees_with_spatialde_on_the_mouse_olfactory_bulb():
    mob = mouse_olfactory_bulb()
    mob = mob[:, np.asarray(mob.X.sum(0)).ravel() >= 3].copy()
    table = spatial_genes(mob, total_counts_key="total_counts", model_search=True,
                          progress=False)
    ref = pd.read_csv(DATA / "spatialde_mob_results.csv.gz").set_index("g")
    shared = table.index.intersection(ref.index)
    assert len(shared) == 14859
    ours, theirs = table.loc[shared, "llr"], ref.loc[shared, "LLR"]
    # same model, same grid: the log-likelihood ratios agree gene by gene ...
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9995
    strong = theirs > 5.0
    assert np.mean(np.abs(ours[strong] / theirs[strong] - 1.0) < 0.01) > 0.99
    # ... and where they differ, our search over the noise ratio found the higher maximum
    # (SpatialDE's L-BFGS-B from log delta = 0 sometimes stops early; its null also uses
    # the ddof=1 variance, about 0.001 nats lower)
    assert np.quantile(ours - theirs, 0.01) > -0.005
    # SpatialDE's 67 genes are found (its p-values use chi2_1 of LLR, not 2 LLR: stricter)
    published = set(ref.index[ref["qval"] < 0.05]) - {"log_total_count"}
    assert len(published) == 67
    assert len(published & set(table.index[table["is_spatial"]])) == 67
    # model search by BIC picks SpatialDE's kernel family for each of them (48 SE, 19 PER)
    search = pd.read_csv(DATA / "spatialde_mob_model_search.csv", index_col=0).set_index("g")
    genes = sorted(published)
    ours = table.loc[genes, "model"].map({"se": "SE", "periodic": "PER", "linear": "linear"})
    assert (ours == search.loc[genes, "model"]).mean() == 1.0


def test_nystrom_with_every_spot_as_inducing_point_equals_exact():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, size=(120, 2))
    z = standardize(jnp.asarray(rng.standard_normal((120, 30)) + np.sin(xy[:, :1]),
                                dtype=jnp.float32))[0]
    for lengthscale in (1.0, 3.0):
        exact = fit_gp(z, exact_factor(se_kernel(xy, lengthscale)))
        low_rank = fit_gp(z, nystrom_factor(xy, xy, lengthscale=lengthscale, jitter=1e-9))
        np.testing.assert_allclose(low_rank.llr, exact.llr, rtol=2e-3, atol=2e-2)


def test_low_rank_null_space_sums_keep_float32_precision_at_20000_spots():
    # The sums over a Nystrom kernel's null space cancel when taken as differences in
    # float32: at 20,000 spots and a long lengthscale, 1^T P 1 = n - |U^T 1|^2 puts the LLR
    # off by 17 nats and 1^T P y = 1^T y - (U^T 1)^T U^T y by 0.11 (measured). Formed as
    # sums of P 1 (float64) and of the residual P y = y - U U^T y, the LLR is off by 0.006,
    # the float32 rounding of the LLR itself (as with the projection in float64 on the host)
    rng = np.random.default_rng(0)
    n = 20_000
    xy = rng.uniform(0.0, 100.0, size=(n, 2))
    rate = np.full((n, 12), 5.0)
    rate[:, :6] *= np.exp(0.8 * np.sin(2 * np.pi * xy[:, :1] / np.arange(20.0, 32.0, 2.0)))
    z = np.asarray(standardize(jnp.asarray(np.log1p(rng.poisson(rate)), jnp.float32))[0])
    factor = nystrom_factor(xy, inducing_points(xy, n_inducing=200, seed=0), lengthscale=50.0)
    single = fit_gp(z, factor, standard_error=False)
    with jax.enable_x64(True):
        double = fit_gp(z.astype(np.float64), factor, standard_error=False)
        assert double.llr.dtype == jnp.float64
        llr, fsv = np.asarray(double.llr), np.asarray(double.fsv)
    assert llr[:6].min() > 100.0  # the planted waves are far from the null
    np.testing.assert_allclose(single.llr, llr, atol=0.02)
    np.testing.assert_allclose(single.fsv, fsv, atol=1e-3)


def test_approximate_path_agrees_with_exact_on_small_data():
    adata = simulate_counts(n_spots=400, n_spatial=10, n_null=60, seed=3)
    exact = spatial_genes(adata.copy(), progress=False)
    approx = spatial_genes(adata.copy(), exact_max_spots=100, n_inducing=200, progress=False)
    assert approx["is_spatial"][:10].mean() >= 0.9
    assert approx["is_spatial"][10:].sum() <= 2
    assert np.corrcoef(exact["llr"], approx["llr"])[0, 1] > 0.95
    planted = exact["llr"][:10].to_numpy()
    np.testing.assert_allclose(approx["llr"][:10], planted, rtol=0.25)


def test_fsv_recovers_the_planted_variance_ratio():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 10, size=(250, 2))
    k = se_kernel(xy, 2.0)
    factor = exact_factor(k)
    chol = np.linalg.cholesky(k + 1e-5 * np.eye(250))
    for fsv_true in (0.3, 0.8):
        signal = chol @ rng.standard_normal((250, 200)) * np.sqrt(fsv_true)
        noise = rng.standard_normal((250, 200)) * np.sqrt(1.0 - fsv_true)
        fit = fit_gp(standardize(jnp.asarray(signal + noise, dtype=jnp.float32))[0], factor)
        # FSV is Gower-normalised; for this kernel the Gower factor is close to 1
        estimate = np.asarray(fit.fsv)
        assert abs(np.median(estimate) - fsv_true * factor.gower /
                   (fsv_true * factor.gower + 1 - fsv_true)) < 0.05
        se = np.asarray(fit.fsv_se)
        assert 0.5 < np.nanmedian(se) / np.std(estimate) < 2.0


def test_lengthscale_grid_matches_spatialde_limits():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 5, size=(60, 2))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    grid = lengthscale_grid(xy, n=10)
    assert grid[0] == pytest.approx(d[d > 0].min() / 2)
    assert grid[-1] == pytest.approx(d.max() * 2)


def test_bad_inputs_and_documented_handling():
    adata = simulate_counts(n_spots=50, n_spatial=2, n_null=5)
    bad = adata.copy()
    bad.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(NonFiniteError, match="spatial"):
        spatial_genes(bad, progress=False)
    with pytest.raises(ShapeError, match="at least 3 spots"):
        spatial_genes(adata[:2].copy(), progress=False)
    with pytest.raises(MissingKeyError, match="coords"):
        spatial_genes(adata, spatial_key="coords", progress=False)
    constant = adata.copy()
    constant.X[:, 4] = 7.0
    with pytest.warns(UserWarning, match="constant"):
        table = spatial_genes(constant, progress=False)
    assert table["pval"].iloc[4] == 1.0 and table["llr"].iloc[4] == 0.0
    flat = adata.copy()
    flat.X[:] = 3.0
    with pytest.raises(ShapeError, match="constant"):
        spatial_genes(flat, progress=False)
    duplicated = adata.copy()
    duplicated.obsm["spatial"][1] = duplicated.obsm["spatial"][0]  # documented: allowed
    assert np.isfinite(spatial_genes(duplicated, progress=False)["pval"]).all()


@pytest.mark.parametrize("store", ["h5ad", "h5ad_sparse", "zarr"])
def test_a_matrix_on_disk_is_read_in_chunks_of_genes_and_tested_as_in_memory(
    tmp_path, monkeypatch, store
):
    # backed (dense or CSR) and Zarr: the genes are read a few at a time (5 here), and their
    # standardised values and permutations go to files; the table is the in-memory one
    import scipy.sparse

    import diffomics.spatial._svg_values as values
    from diffomics.integration import open_zarr

    adata = simulate_counts(n_spots=150, n_spatial=4, n_null=16, seed=4)
    monkeypatch.setattr(values, "_READ_VALUES", 150 * 5)
    reads, read = [], values._read
    monkeypatch.setattr(values, "_read", lambda m, cols: reads.append(cols) or read(m, cols))
    stores, new_store = [], values.new_store
    monkeypatch.setattr(values, "new_store",
                        lambda shape, folder, name: stores.append(folder)
                        or new_store(shape, folder, name))  # fmt: skip
    kwargs = {"n_lengthscales": 4, "model_search": True, "progress": False}
    memory = adata.copy()
    in_memory = spatial_genes(memory, **kwargs)
    assert len(reads) == 8  # 20 genes, 5 a time, twice
    if store == "h5ad_sparse":
        adata.X = scipy.sparse.csr_matrix(adata.X)
    path = tmp_path / f"spots.{store.split('_')[0]}"
    if store == "zarr":
        adata.write_zarr(path)
        on_disk = open_zarr(path)
    else:
        adata.write_h5ad(path)
        on_disk = ad.read_h5ad(path, backed="r")
    streamed = spatial_genes(on_disk, **kwargs)
    assert stores[:2] == [None, None] and all(stores[2:])  # values, permutations: files
    assert not Path(stores[2]).exists()  # removed at the end
    pd.testing.assert_frame_equal(streamed, in_memory)
    assert in_memory["is_spatial"][:4].all()
    pd.testing.assert_frame_equal(on_disk.obsm["spatial_genes_smoothed"],
                                  memory.obsm["spatial_genes_smoothed"])  # fmt: skip


def test_a_non_finite_value_is_named_by_spot_and_gene(monkeypatch):
    import diffomics.spatial._svg_values as values

    adata = simulate_counts(n_spots=40, n_spatial=2, n_null=8)
    adata.X[7, 6] = np.nan
    monkeypatch.setattr(values, "_READ_VALUES", 40 * 4)  # gene 6 is in the second chunk
    with pytest.raises(NonFiniteError, match=r"index \(7, 6\)"):
        spatial_genes(adata, progress=False)


def test_inducing_points_are_seeded_and_are_scipys_kmeans_plus_plus():
    from scipy.cluster.vq import kmeans2

    xy = np.random.default_rng(0).uniform(size=(2000, 2))
    ours = inducing_points(xy, n_inducing=60, seed=1)
    np.testing.assert_array_equal(ours, inducing_points(xy, n_inducing=60, seed=1))
    # the O(n k) seeding makes scipy's draws: the same centres as kmeans2 with "++"
    np.testing.assert_array_equal(ours, kmeans2(xy, 60, minit="++", seed=1)[0])
    assert not np.array_equal(ours, inducing_points(xy, n_inducing=60, seed=2))


def test_continuous_lengthscale_refinement_climbs_the_likelihood():
    adata = simulate_counts(n_spots=150, n_spatial=4, n_null=20, seed=2, lengthscale=2.0)
    table = spatial_genes(adata, refine_lengthscale=True, progress=False)
    hits = table[table["is_spatial"]]
    assert len(hits) >= 3
    assert (hits["llr_refined"] >= hits["llr"] - 1e-3).all()
    # planted lengthscale 2: the continuous fit lands nearer to it than the grid's spacing
    assert 1.0 < hits["lengthscale_refined"].median() < 4.0
    assert table.loc[~table["is_spatial"], "lengthscale_refined"].isna().all()
