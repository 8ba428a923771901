"""The deconvolution analysis on planted truth (tests/spatial/simulate.py) and on real data."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from scipy.optimize import nnls

from diffomics import ConfigError, CountsError, GeneMatchError, MissingKeyError, NonFiniteError
from diffomics.spatial import deconvolve, proportion_metrics, reference_profiles

from .simulate import simulate


def _nnls(spatial, reference):
    prof = reference_profiles(reference, "cell_type")
    w = np.array([nnls(prof.to_numpy().T, x)[0] for x in np.asarray(spatial.X)])
    return pd.DataFrame(w / w.sum(1, keepdims=True), index=spatial.obs_names, columns=prof.index)


@pytest.fixture(scope="module")
def planted():
    return simulate(seed=1)


@pytest.fixture(scope="module")
def fitted(planted):
    spatial, reference = planted
    spatial = spatial.copy()
    return spatial, deconvolve(spatial, reference, "cell_type", progress=False)


def test_recovers_planted_proportions(planted, fitted):
    spatial, result = fitted
    m = proportion_metrics(spatial.obsm["proportions_true"], result.proportions)
    assert m["rmse"] < 0.02
    assert m["jsd"] < 0.005
    assert m["pearson_type"] > 0.99


def test_result_layout_and_anndata_fields(planted, fitted):
    spatial, result = fitted
    props = result.proportions
    assert list(props.index) == list(spatial.obs_names)
    assert list(props.columns) == [f"type_{k}" for k in range(5)]
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)
    assert (props.to_numpy() >= 0).all()
    pd.testing.assert_frame_equal(spatial.obsm["proportions"], props)
    assert spatial.uns["proportions"]["genes"]["n_shared"] == 150
    assert spatial.uns["proportions"]["params"]["likelihood"] == "nb"
    # the spot scale is the number of pooled cells in reference-cell units (2 to 12 here)
    assert 1.0 < float(np.median(spatial.obs["proportions_scale"])) < 13.0


def test_platform_effect_is_recovered_and_corrected():
    spatial, reference = simulate(platform_sd=0.4, seed=2)
    truth = spatial.obsm["proportions_true"]
    result = deconvolve(spatial, reference, "cell_type", progress=False)
    r = np.corrcoef(np.log(result.platform_effect), np.log(spatial.uns["platform_effect_true"]))
    assert r[0, 1] > 0.9
    ours = proportion_metrics(truth, result.proportions)
    baseline = proportion_metrics(truth, _nnls(spatial, reference))
    assert ours["rmse"] < 0.7 * baseline["rmse"]


@pytest.mark.parametrize("likelihood", ["poisson", "gaussian"])
def test_other_likelihoods_recover_truth(likelihood):
    spatial, reference = simulate(likelihood="poisson", n_spots=120, seed=3)
    result = deconvolve(spatial, reference, "cell_type", likelihood=likelihood, progress=False)
    m = proportion_metrics(spatial.obsm["proportions_true"], result.proportions)
    assert m["rmse"] < 0.03


def test_amortized_encoder_deconvolves_new_spots():
    spatial, reference = simulate(n_spots=300, seed=4)
    train, test = spatial[:240].copy(), spatial[240:].copy()
    result = deconvolve(
        train, reference, "cell_type", mode="amortized", progress=False, max_steps=6000
    )
    from diffomics.operators import DECONVOLUTION_KEYS as K

    genes = list(result.reference_profiles.columns)
    out, _, _ = result.model.apply(
        {
            K.SPATIAL_EXPRESSION: np.asarray(test[:, genes].X),
            K.REFERENCE_PROFILES: result.reference_profiles.to_numpy(np.float32),
        },
        {},
        None,
    )
    predicted = pd.DataFrame(
        np.asarray(out[K.PROPORTIONS]), index=test.obs_names, columns=result.proportions.columns
    )
    assert proportion_metrics(test.obsm["proportions_true"], predicted)["rmse"] < 0.08


def test_spatial_prior_helps_smooth_tissue_at_low_depth():
    side = 16
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    share = 0.15 + 0.7 * (xy[:, 0] / (side - 1))
    props = np.stack([share, 1.0 - share], axis=1)
    spatial, reference = simulate(
        n_types=2, n_genes=40, depth=0.5, proportions=props, coords=xy, seed=5
    )
    truth = spatial.obsm["proportions_true"]
    plain = deconvolve(spatial.copy(), reference, "cell_type", progress=False)
    smooth = deconvolve(spatial.copy(), reference, "cell_type", spatial_prior=5.0, progress=False)
    assert (
        proportion_metrics(truth, smooth.proportions)["rmse"]
        < 0.8 * proportion_metrics(truth, plain.proportions)["rmse"]
    )


def test_genes_are_matched_by_name(planted, fitted):
    spatial, reference = planted
    _, result = fitted
    rng = np.random.default_rng(0)
    order = rng.permutation(reference.n_vars)
    extra_ref = ad.AnnData(
        np.ones((reference.n_obs, 7), np.float32),
        obs=reference.obs,
        var=pd.DataFrame(index=[f"ref_only_{i}" for i in range(7)]),
    )
    shuffled = ad.concat([reference[:, order], extra_ref], axis=1, merge="first")
    extra_sp = ad.AnnData(
        np.ones((spatial.n_obs, 3), np.float32),
        obs=spatial.obs,
        var=pd.DataFrame(index=[f"sp_only_{i}" for i in range(3)]),
    )
    wider = ad.concat([extra_sp, spatial], axis=1, merge="first")
    matched = deconvolve(wider, shuffled, "cell_type", progress=False)
    assert matched.genes == {"n_shared": 150, "n_dropped_spatial": 3, "n_dropped_reference": 7}
    np.testing.assert_allclose(matched.proportions, result.proportions, atol=1e-4)


def test_same_seed_same_numbers_and_seed_matters_for_the_encoder():
    spatial, reference = simulate(n_spots=60, n_genes=40, seed=6)
    runs = [
        deconvolve(
            spatial.copy(),
            reference,
            "cell_type",
            mode="amortized",
            seed=s,
            progress=False,
            max_steps=300,
        )
        for s in (0, 0, 1)
    ]
    np.testing.assert_array_equal(runs[0].proportions, runs[1].proportions)
    assert np.abs(runs[0].proportions.to_numpy() - runs[2].proportions.to_numpy()).max() > 1e-6


def test_bad_inputs_raise_clear_errors(planted):
    spatial, reference = planted
    renamed = reference.copy()
    renamed.var_names = [f"x{i}" for i in range(renamed.n_vars)]
    with pytest.raises(GeneMatchError, match="share no gene"):
        deconvolve(spatial, renamed, "cell_type")
    with pytest.raises(MissingKeyError, match="nope"):
        deconvolve(spatial, reference, "nope")
    bad = spatial.copy()
    bad.X[0, 0] = -1.0
    with pytest.raises(CountsError, match="non-negative"):
        deconvolve(bad, reference, "cell_type")
    bad = spatial.copy()
    bad.X[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        deconvolve(bad, reference, "cell_type")
    bad = spatial.copy()
    bad.X[5] = 0.0
    with pytest.raises(CountsError, match="zero total"):
        deconvolve(bad, reference, "cell_type")
    bad = spatial.copy()
    del bad.obsm["spatial"]
    with pytest.raises(MissingKeyError, match="obsm"):
        deconvolve(bad, reference, "cell_type", spatial_prior=1.0)


def test_dispersion_from_reference_is_held_fixed_unless_fitted():
    spatial, reference = simulate(n_spots=80, n_genes=40, seed=7)
    from diffomics.spatial import reference_dispersion

    expected = reference_dispersion(reference, "cell_type").to_numpy()
    fixed = deconvolve(spatial.copy(), reference, "cell_type", progress=False)
    np.testing.assert_allclose(np.exp(fixed.model.log_theta[...]), expected, rtol=1e-4)
    fitted = deconvolve(spatial.copy(), reference, "cell_type", dispersion="fit", progress=False)
    moved = np.abs(np.log(np.exp(fitted.model.log_theta[...]) / expected))
    assert moved.max() > 0.05
    with pytest.raises(ValueError, match="dispersion"):
        deconvolve(spatial, reference, "cell_type", dispersion="guess")


def test_chunks_take_the_same_steps_as_one_fit_of_all_spots():
    spatial, reference = simulate(n_spots=200, n_genes=60, seed=3)
    steps = {"max_steps": 300, "tol": 0.0, "progress": False}
    whole = deconvolve(spatial.copy(), reference, "cell_type", **steps)
    chunked = deconvolve(spatial.copy(), reference, "cell_type", chunk_size=64, **steps)
    # 4 chunks, the last of 8 spots padded to 64: Adam moves each spot's logits by its own
    # gradient, so only the loss's normalisation (per chunk, not per 200) and float32
    # rounding differ (measured 2e-7)
    assert chunked.params["n_chunks"] == 4 and chunked.fit.n_steps == 4 * 300
    np.testing.assert_allclose(chunked.proportions, whole.proportions, atol=1e-5)
    np.testing.assert_allclose(chunked.spot_scale, whole.spot_scale, rtol=1e-4)
    # with early stopping each chunk stops on its own loss: the same answer within tol
    stopped = deconvolve(spatial.copy(), reference, "cell_type", chunk_size=64, progress=False)
    truth = spatial.obsm["proportions_true"]
    assert proportion_metrics(truth, stopped.proportions)["rmse"] < 0.03


def test_spots_on_disk_are_fitted_chunk_by_chunk_as_in_memory(tmp_path):
    from diffomics.integration import open_zarr

    spatial, reference = simulate(n_spots=90, n_genes=40, seed=4)
    spatial.X = scipy.sparse.csr_matrix(spatial.X)
    spatial.write_h5ad(tmp_path / "spots.h5ad")
    spatial.write_zarr(tmp_path / "spots.zarr")
    steps = {"max_steps": 100, "progress": False, "chunk_size": 32}
    memory = deconvolve(spatial.copy(), reference, "cell_type", **steps)
    backed = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    on_file = deconvolve(backed, reference, "cell_type", **steps)
    np.testing.assert_array_equal(on_file.proportions, memory.proportions)
    zarr = deconvolve(open_zarr(tmp_path / "spots.zarr"), reference, "cell_type", **steps)
    np.testing.assert_array_equal(zarr.proportions, memory.proportions)
    # read from a file, spots go in chunks unless asked otherwise (or the settings couple them)
    assert on_file.params["n_chunks"] == 3
    default = deconvolve(backed, reference, "cell_type", max_steps=50, progress=False)
    assert default.params["n_chunks"] == 1  # 90 spots: one chunk of at most 50,000
    coupled = deconvolve(backed, reference, "cell_type", max_steps=50, progress=False,
                         background=True)  # fmt: skip
    assert coupled.params["n_chunks"] == 1


def test_chunked_fit_resumes_chunk_by_chunk(tmp_path):
    spatial, reference = simulate(n_spots=100, n_genes=40, seed=5)
    steps = {"max_steps": 150, "tol": 0.0, "progress": False, "chunk_size": 40}
    first = deconvolve(spatial.copy(), reference, "cell_type", checkpoint=tmp_path / "f.npz",
                       **steps)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f.chunk{i}.npz" for i in range(3)]
    (tmp_path / "f.chunk2.npz").unlink()  # as if killed during the last chunk
    again = deconvolve(spatial.copy(), reference, "cell_type", checkpoint=tmp_path / "f.npz",
                       **steps)  # fmt: skip
    np.testing.assert_array_equal(again.proportions, first.proportions)
    np.testing.assert_array_equal(again.fit.history, first.fit.history)


def test_chunks_refuse_coupled_settings_and_report_global_indices(planted):
    spatial, reference = planted
    for kwargs, named in [
        ({"spatial_prior": 1.0}, "spatial_prior"),
        ({"background": True}, "background"),
        ({"dispersion": "fit"}, "dispersion"),
        ({"mode": "amortized"}, "amortized"),
        ({"likelihood": "gaussian"}, "gaussian"),
    ]:
        with pytest.raises(ConfigError, match=f"chunk_size=50.*{named}"):
            deconvolve(spatial, reference, "cell_type", chunk_size=50, **kwargs)
    for bad_size in (0, 2.5, True):
        with pytest.raises(ConfigError, match="chunk_size"):
            deconvolve(spatial, reference, "cell_type", chunk_size=bad_size)
    bad = spatial.copy()
    bad.X[150, 3] = -1.0
    with pytest.raises(CountsError, match=r"index \(150, 3\)"):
        deconvolve(bad, reference, "cell_type", chunk_size=50)
    bad = spatial.copy()
    bad.X[130] = 0.0
    with pytest.raises(CountsError, match=r"zero total \(e\.g\. index \[130\]\)"):
        deconvolve(bad, reference, "cell_type", chunk_size=50)
