"""Sharded runs equal one-device runs, on 4 simulated CPU devices.

Not collected by a plain ``pytest`` run (the name has no ``test_`` prefix): XLA fixes the
device count when JAX starts, so `test_distributed.py` runs this module in a fresh process
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``. Each test compares the same
computation without a mesh and on a 4-device `data_mesh`, and checks that the arrays were
really split over the devices. Tolerances are stated per test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from diffomics.core import (
    data_mesh,
    fit,
    pad_rows,
    padded_size,
    replicate,
    row_weights,
    shard_rows,
)

pytestmark = pytest.mark.skipif(
    jax.device_count() < 4, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=4"
)


def _n_devices(a: jax.Array) -> int:
    return len({s.device for s in a.addressable_shards})


def test_rows_are_split_and_parameters_replicated():
    mesh = data_mesh()
    x = shard_rows(pad_rows(np.arange(20.0).reshape(10, 2), padded_size(10, mesh)), mesh)
    assert x.sharding.spec == PartitionSpec("data")
    assert [s.data.shape for s in x.addressable_shards] == [(3, 2)] * 4
    np.testing.assert_array_equal(np.asarray(x)[10:], [[18.0, 19.0], [18.0, 19.0]])
    w = replicate(np.ones(3), mesh)
    assert w.sharding.is_fully_replicated and _n_devices(w) == 4


class _Line(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros(3))


def _weighted_mse(model, x, y, weight):
    residual = (x @ model.w[...] - y) ** 2
    return jnp.sum(weight * residual) / jnp.sum(weight)


def test_fit_on_a_mesh_reaches_the_one_device_least_squares_fit():
    # 10 rows padded to 12 with weight-0 copies: the fit must be the unpadded one
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=10)).astype(np.float32)
    settings = {"learning_rate": 0.05, "max_steps": 400, "tol": 0.0}
    single = _Line()
    fit(single, _weighted_mse, (x, y, np.ones(10, np.float32)), progress=False, **settings)
    mesh = data_mesh()
    sharded = _Line()
    n = padded_size(10, mesh)
    args = (shard_rows(pad_rows(x, n), mesh), shard_rows(pad_rows(y, n), mesh),
            shard_rows(row_weights(10, n), mesh))  # fmt: skip
    fit(sharded, _weighted_mse, args, progress=False, mesh=mesh, **settings)
    w = sharded.w[...]
    assert w.sharding.is_fully_replicated and _n_devices(w) == 4
    lstsq = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(w), np.asarray(single.w[...]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(w), lstsq, atol=1e-3)


@pytest.fixture(scope="module")
def pseudo_spots():
    from diffomics.datasets import seqfish_cortex
    from diffomics.spatial import pool_pseudo_spots

    cells, reference = seqfish_cortex()
    return pool_pseudo_spots(cells, "cell_type", spot_size=500.0), reference  # 79 spots


def test_deconvolve_on_four_devices_equals_one_device(pseudo_spots):
    # real seqFISH+ cortex cells pooled into 79 spots (one padding spot on 4 devices); NB,
    # background on (its gene means over spots must ignore the padding); after 200 Adam
    # steps the proportions agree to 1e-4 (float32 sums in another order) and the weakly
    # identified background to 1%
    from diffomics.spatial import deconvolve

    spots, reference = pseudo_spots
    kwargs = {"likelihood": "nb", "background": True, "max_steps": 200, "progress": False}
    single = deconvolve(spots.copy(), reference, "cell_type", **kwargs)
    sharded = deconvolve(spots.copy(), reference, "cell_type", mesh=data_mesh(), **kwargs)
    # the per-spot logits follow their spots (XLA keeps them split by rows); the gene-level
    # parameters are replicated
    logits, background = sharded.model.logits[...], sharded.model.log_background[...]
    assert logits.shape == (80, 8) and logits.sharding.spec == PartitionSpec("data")
    assert background.sharding.is_fully_replicated and _n_devices(background) == 4
    assert sharded.proportions.shape == (79, 8)
    np.testing.assert_allclose(
        sharded.proportions.to_numpy(), single.proportions.to_numpy(), atol=1e-4
    )
    np.testing.assert_allclose(sharded.fit.history, single.fit.history, rtol=1e-4)
    np.testing.assert_allclose(
        sharded.background.to_numpy(), single.background.to_numpy(), rtol=1e-2, atol=1e-6
    )
    one = deconvolve(spots.copy(), reference, "cell_type", mesh=data_mesh(jax.devices()[:1]),
                     **kwargs)  # fmt: skip
    # a one-device mesh is the same program as no mesh
    np.testing.assert_array_equal(one.proportions.to_numpy(), single.proportions.to_numpy())


def test_integrate_on_four_devices_equals_one_device():
    # 210 SNARE-seq cells: minibatches of 50 and a validation chunk of 21 are padded to 52
    # and 24 with masked cells; two epochs agree to 1e-4 relative in every loss and 1e-4
    # in the latent
    from diffomics.datasets import snareseq_celllines
    from diffomics.integration import integrate

    def data():
        return {k: v[:210].copy() for k, v in snareseq_celllines().items()}

    kwargs = {"likelihoods": {"rna": "gaussian", "atac": "gaussian"}, "max_epochs": 2,
              "batch_size": 50, "hidden_dim": 16, "n_layers": 1, "progress": False}  # fmt: skip
    single = integrate(data(), **kwargs)
    sharded = integrate(data(), mesh=data_mesh(), **kwargs)
    param = jax.tree.leaves(nnx.state(sharded.module, nnx.Param))[0]
    assert param.sharding.is_fully_replicated and _n_devices(param) == 4
    columns = ["train_loss", "validation_loss", "validation_reconstruction_loss"]
    np.testing.assert_allclose(
        sharded.history[columns].to_numpy(), single.history[columns].to_numpy(), rtol=1e-4
    )
    np.testing.assert_allclose(sharded.latent(), single.latent(), atol=1e-4)


def test_gp_test_split_over_spots_and_genes_equals_one_device():
    # Stahl 2016 olfactory bulb, 259 of its 260 spots (padded to 260 with a zero row), 42
    # genes (padded to 44): the projection U^T y and the null-space sums are summed over
    # blocks of spots, then the genes are fitted apart. The statistic agrees to 1e-4
    # relative; its argmax in log delta, where the likelihood is flat, to 1e-2, and the FSV
    # to 2e-3
    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.spatial import exact_factor, fit_gp, kernel_matrix, nystrom_factor
    from diffomics.spatial._gp_test import _place_factor, standardize
    from diffomics.spatial._kernels import inducing_points

    adata = mouse_olfactory_bulb()[:259]
    x = np.asarray(adata.X, dtype=np.float64)
    genes = np.argsort(-(x > 0).sum(axis=0))[:42]
    z = np.asarray(standardize(jnp.asarray(np.log1p(x[:, genes]), jnp.float32))[0])
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    mesh = data_mesh()
    factors = [
        exact_factor(np.asarray(kernel_matrix(coords, lengthscale=2.0))),
        nystrom_factor(coords, inducing_points(coords, n_inducing=40, seed=0), kernel="se",
                       lengthscale=2.0),
    ]  # fmt: skip
    for factor in factors:
        placed = _place_factor(factor, mesh)
        assert placed.u.shape[0] == 260 and placed.u.sharding.spec == PartitionSpec("data")
        assert _n_devices(placed.u) == 4
        single = fit_gp(z, factor)
        sharded = fit_gp(z, factor, mesh=mesh)
        for name, tol in (("llr", {"rtol": 1e-4, "atol": 1e-4}), ("log_delta", {"atol": 1e-2}),
                          ("fsv", {"atol": 2e-3}), ("fsv_se", {"rtol": 5e-2, "atol": 1e-3})):
            a, b = np.asarray(getattr(single, name)), np.asarray(getattr(sharded, name))
            np.testing.assert_allclose(b, a, err_msg=name, **tol)
        assert float(np.max(single.llr)) > 10.0  # some genes are spatial: not a vacuous match
    whole = fit_gp(z[:, :40], factors[0], mesh=mesh)  # 40 genes: no padding, stays split
    assert whole.llr.sharding.spec == PartitionSpec("data") and _n_devices(whole.llr) == 4


def test_spatial_genes_on_four_devices_equals_one_device():
    # the analysis end to end (observed and permuted genes, p-values): the same calls; the
    # statistics agree to float32 rounding, and so do the fitted kernel and the p-value of
    # every gene with a non-zero statistic (where llr ~ 0 the best lengthscale is a tie)
    from diffomics.datasets import mouse_olfactory_bulb
    from diffomics.spatial import spatial_genes

    adata = mouse_olfactory_bulb()
    counts = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    adata = adata[:, np.argsort(-counts)[:30]].copy()
    kwargs = {"n_lengthscales": 3, "n_smoothed": 0, "progress": False}
    single = spatial_genes(adata.copy(), **kwargs)
    sharded = spatial_genes(adata.copy(), mesh=data_mesh(), **kwargs)
    np.testing.assert_allclose(sharded["llr"], single["llr"], rtol=1e-4, atol=1e-3)
    signal = single["llr"].to_numpy() > 1.0
    assert signal.sum() >= 10
    for column, tol in (("fsv", {"atol": 2e-3}), ("lengthscale", {"rtol": 1e-6}),
                        ("pval", {"rtol": 1e-3}), ("qval", {"rtol": 1e-3})):
        np.testing.assert_allclose(sharded[column].to_numpy(float)[signal],
                                   single[column].to_numpy(float)[signal], err_msg=column,
                                   **tol)  # fmt: skip
    assert single["is_spatial"].sum() > 0
    assert (sharded["is_spatial"] == single["is_spatial"]).all()


def test_hic_analysis_on_four_devices_equals_one_device():
    # GM12878 chr22 at 50 kb: ICE, the expected and the band from pixels split over the
    # devices; the same weights, expected and insulation to float32 rounding (log2 scores:
    # 7e-5 measured with row tiles of the band), the same boundaries
    from diffomics.datasets import gm12878_hic
    from diffomics.hic import analyze, read_cool
    from diffomics.hic._analysis import _padded_bins, _padded_pixels

    cmap = read_cool(gm12878_hic("chr22"))
    mesh = data_mesh()
    single = analyze(cmap, loops=False)
    sharded = analyze(cmap, loops=False, mesh=mesh)
    b1, _, counts = _padded_pixels(cmap, _padded_bins(cmap.n_bins, mesh), mesh)
    assert counts.sharding.spec == PartitionSpec("data") and _n_devices(counts) == 4
    np.testing.assert_array_equal(np.isnan(sharded.weights), np.isnan(single.weights))
    np.testing.assert_allclose(sharded.weights, single.weights, rtol=1e-5)
    np.testing.assert_allclose(sharded.expected["balanced.avg"], single.expected["balanced.avg"],
                               rtol=1e-5)  # fmt: skip
    scores = [c for c in single.insulation if c.startswith("log2_insulation_score_")]
    np.testing.assert_allclose(sharded.insulation[scores].to_numpy(float),
                               single.insulation[scores].to_numpy(float), atol=2e-4)  # fmt: skip
    pd.testing.assert_frame_equal(sharded.boundaries[["start", "window"]],
                                  single.boundaries[["start", "window"]])  # fmt: skip
    assert len(single.boundaries) > 50
    np.testing.assert_allclose(sharded.compartments["E1"], single.compartments["E1"], atol=1e-4)


def test_insulation_tiled_over_devices_equals_one_device():
    # GM12878 chr22 at 50 kb (1,027 bins, not divisible by 4): the balanced band comes out
    # of analyze's band step with its rows split over the devices; each device sums the
    # diamonds of its block with the window - 1 rows before it from its neighbour. Row
    # sums do not depend on the blocks, so the scores are those of one device to 1e-6
    from diffomics.datasets import gm12878_hic
    from diffomics.hic import ice_balance, insulation, read_cool
    from diffomics.hic._analysis import _balanced_band, _padded_bins, _padded_pixels

    cmap = read_cool(gm12878_hic("chr22"))
    mesh, n = data_mesh(), cmap.n_bins
    weights = np.nan_to_num(ice_balance(cmap)[0])
    n_pad = _padded_bins(n, mesh)
    valid = np.r_[weights > 0, np.zeros(n_pad - n, bool)]
    w = jnp.asarray(np.r_[weights, np.zeros(n_pad - n)], jnp.float32)
    pixels = _padded_pixels(cmap, n_pad, mesh)
    _, band, mask = _balanced_band(*pixels, w, valid, n_bins=n_pad, n_diags=40, mesh=mesh)
    assert band.sharding.spec == PartitionSpec("data") and _n_devices(band) == 4
    band, mask = np.asarray(band)[:n], np.asarray(mask)[:n]
    for window in (3, 10, 20):
        one = insulation(band, mask, window)
        four = jax.jit(insulation, static_argnames=("window", "mesh"))(band, mask, window,
                                                                      mesh=mesh)  # fmt: skip
        np.testing.assert_allclose(four.n_pixels, one.n_pixels)
        np.testing.assert_allclose(four.sum_balanced, one.sum_balanced, rtol=1e-6)
        np.testing.assert_allclose(four.log2_score, one.log2_score, rtol=1e-6, atol=1e-7)
    assert np.isfinite(one.log2_score).sum() > 600  # chr22 p arm is unmappable
    # blocks of 3 rows are shorter than a window's 9 rows before a bin: one device
    short = insulation(band[:12], mask[:12], 10, mesh=mesh)
    np.testing.assert_allclose(short.log2_score, insulation(band[:12], mask[:12], 10).log2_score)


def test_hic_regions_spread_over_the_devices_equal_one_device():
    # 10 mouse chromosomes at 10 Mb (cooler's test map): balanced with the pixels split over
    # the devices, then analysed at the same time, each chromosome whole on one device
    # (largest first, to the least loaded); the same tables as without a mesh to float32
    # rounding of the weights, the same boundaries
    from pathlib import Path

    from diffomics.hic import analyze

    cool = Path(__file__).parents[1] / "data" / "hic" / "CN.mm9.10000kb.cool"
    chroms = [f"chr{k}" for k in range(1, 9)] + ["chrX", "chrY"]
    kwargs = {"windows": (30_000_000,), "loops": False, "progress": False}
    single = analyze(cool, region=chroms, **kwargs)
    spread = analyze(cool, region=chroms, mesh=data_mesh(), **kwargs)
    placed = {name: r.report["device"] for name, r in spread.regions.items()}
    assert len(set(placed.values())) == 4 and list(placed) == chroms
    assert "device" not in single.regions["chr1"].report
    np.testing.assert_allclose(spread.weights, single.weights, rtol=1e-5)
    for table, column, tol in (("expected", "balanced.avg", {"rtol": 1e-5}),
                               ("compartments", "E1", {"atol": 1e-4}),
                               ("insulation", "log2_insulation_score_30000000",
                                {"atol": 2e-4})):  # fmt: skip
        np.testing.assert_allclose(getattr(spread, table)[column].to_numpy(float),
                                   getattr(single, table)[column].to_numpy(float),
                                   **tol)  # fmt: skip
    pd.testing.assert_frame_equal(spread.boundaries[["chrom", "start"]],
                                  single.boundaries[["chrom", "start"]])  # fmt: skip


def test_dots_scored_one_tile_per_device_equal_one_device():
    # GM12878 chr20 at 25 kb: the dots' kernel sums on tiles along the diagonal, four
    # tiles at a time, one per device (tile_rows=256 gives 10 tiles: the last group of
    # two is filled up with copies); the same dots as one tile at a time without a mesh
    from diffomics.datasets import gm12878_hic
    from diffomics.hic import analyze, band_from_pixels, call_dots, read_cool

    cmap = read_cool(gm12878_hic("chr20"))
    single = analyze(cmap, windows=(250_000,), n_eigs=0, progress=False)
    band = np.asarray(band_from_pixels(cmap.bin1, cmap.bin2, cmap.count, cmap.n_bins, 100))
    kwargs = {"resolution": 25_000, "max_distance_bins": 80, "tile_rows": 256}
    expected = single.expected["balanced.avg"].to_numpy()
    one = call_dots(band, single.weights, expected, **kwargs)
    four = call_dots(band, single.weights, expected, mesh=data_mesh(), **kwargs)
    assert len(one) > 50 and -(-cmap.n_bins // 256) % 4 != 0
    pd.testing.assert_frame_equal(four, one, rtol=1e-6)
    # analyze passes its mesh on: the same loops as without one
    sharded = analyze(cmap, windows=(250_000,), n_eigs=0, progress=False, mesh=data_mesh())
    pd.testing.assert_frame_equal(sharded.loops[["start1", "start2"]],
                                  single.loops[["start1", "start2"]])  # fmt: skip
