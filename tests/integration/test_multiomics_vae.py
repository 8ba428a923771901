"""`DifferentiableMultiOmicsVAE`, product of experts, likelihoods, `integrate`, metrics and
`MultiOmicsEmbeddingSource`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from diffomics.core import CountsError, NonFiniteError, ShapeError
from diffomics.core._errors import ConfigError
from diffomics.core._likelihoods import (
    bernoulli_log_prob,
    gaussian_log_prob,
    nb_log_prob,
    poisson_log_prob,
    zinb_log_prob,
)
from diffomics.integration import foscttm, integrate, knn_label_accuracy, product_of_experts
from diffomics.operators.multiomics import DifferentiableMultiOmicsVAE, MultiOmicsVAEConfig


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "rna_counts": rng.poisson(3.0, (n, 12)).astype(np.float32),
        "atac_counts": (rng.random((n, 20)) < 0.3).astype(np.float32),
    }


def _vae(seed=0, **kwargs):
    kwargs = {"modality_dims": [12, 20], "latent_dim": 3, "hidden_dim": 16, **kwargs}
    return DifferentiableMultiOmicsVAE(MultiOmicsVAEConfig(**kwargs), rngs=nnx.Rngs(seed))


# --- product of experts ------------------------------------------------------------------


def test_poe_includes_the_prior_expert():
    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
    logvars = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
    mean, logvar = product_of_experts(means, logvars)
    precision = 1.0 + np.exp(-np.asarray(logvars)).sum(0)
    np.testing.assert_allclose(np.exp(-logvar), precision, rtol=1e-5)
    want = (np.asarray(means) * np.exp(-np.asarray(logvars))).sum(0) / precision
    np.testing.assert_allclose(mean, want, rtol=1e-5, atol=1e-6)


def test_one_modality_is_its_posterior_times_the_prior_and_masks_drop_experts():
    means = jnp.array([[[2.0]], [[-5.0]]])
    logvars = jnp.log(jnp.array([[[0.5]], [[0.1]]]))
    mean, logvar = product_of_experts(means, logvars, mask=jnp.array([[1.0], [0.0]]))
    # N(2, 0.5) x N(0, 1): precision 3, mean 2 * 2 / 3
    np.testing.assert_allclose(np.exp(-logvar), [[3.0]], rtol=1e-6)
    np.testing.assert_allclose(mean, [[4.0 / 3.0]], rtol=1e-6)
    mean, logvar = product_of_experts(means, logvars, mask=jnp.zeros((2, 1)))
    np.testing.assert_allclose(mean, [[0.0]])  # no expert left: the prior
    np.testing.assert_allclose(logvar, [[0.0]], atol=1e-7)


# --- likelihoods against scipy --------------------------------------------------------------


def test_likelihoods_match_scipy():
    x = np.array([0.0, 1.0, 3.0, 10.0, 40.0])
    mu, theta = 4.0, 2.5
    p = theta / (theta + mu)
    np.testing.assert_allclose(nb_log_prob(jnp.asarray(x), mu, theta),
                               scipy.stats.nbinom.logpmf(x, theta, p), rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(poisson_log_prob(jnp.asarray(x), mu),
                               scipy.stats.poisson.logpmf(x, mu), rtol=1e-5)  # fmt: skip
    pi = 0.3
    zinb = np.log(np.where(x == 0, pi, 0.0) + (1 - pi) * scipy.stats.nbinom.pmf(x, theta, p))
    got = zinb_log_prob(jnp.asarray(x), mu, theta, jnp.log(pi / (1 - pi)))
    np.testing.assert_allclose(got, zinb, rtol=1e-4)
    b = np.array([0.0, 1.0, 1.0])
    q = np.array([0.2, 0.7, 0.999])
    np.testing.assert_allclose(bernoulli_log_prob(jnp.asarray(b), jnp.log(q)),
                               scipy.stats.bernoulli.logpmf(b, q), rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(gaussian_log_prob(jnp.asarray(x), 3.0, 2.0),
                               scipy.stats.norm.logpdf(x, 3.0, 2.0), rtol=1e-5)  # fmt: skip


# --- the operator ---------------------------------------------------------------------------


def test_quick_start_and_outputs():
    data = _data()
    out, state, meta = _vae().apply(data, {}, None)
    assert out["joint_latent"].shape == (24, 3) and out["elbo_loss"].shape == ()
    assert out["rna_reconstructed"].shape == (24, 12)
    assert out["atac_reconstructed"].shape == (24, 20)
    assert np.isfinite(float(out["elbo_loss"])) and state == {} and meta is None
    # NB means sum to each cell's library; Bernoulli means are probabilities
    np.testing.assert_allclose(out["rna_reconstructed"].sum(1), data["rna_counts"].sum(1),
                               rtol=1e-4)  # fmt: skip
    atac = np.asarray(out["atac_reconstructed"])
    assert ((atac > 0) & (atac < 1)).all()


def test_three_modalities_use_indexed_keys():
    rng = np.random.default_rng(1)
    vae = _vae(modality_dims=[5, 6, 7])
    data = {f"modality_{i}_counts": rng.normal(size=(10, d)).astype(np.float32)
            for i, d in enumerate([5, 6, 7])}  # fmt: skip
    out, _, _ = vae.apply(data, {}, None)
    assert out["modality_2_reconstructed"].shape == (10, 7)


def test_noise_differs_between_calls_and_repeats_with_the_seed():
    data = _data()
    a, b = _vae(seed=3), _vae(seed=3)
    a.eval()  # dropout off: only the reparameterisation noise is random
    b.eval()
    first, second = a.apply(data, {}, None)[0], a.apply(data, {}, None)[0]
    assert not np.allclose(first["rna_reconstructed"], second["rna_reconstructed"])
    again = b.apply(data, {}, None)[0]
    np.testing.assert_array_equal(first["rna_reconstructed"], again["rna_reconstructed"])
    np.testing.assert_array_equal(first["joint_latent"], second["joint_latent"])  # the mean


def test_gradients_reach_every_encoder_and_decoder():
    data = _data()
    for lik in (["nb", "bernoulli"], ["zinb", "poisson"]):
        vae = _vae(likelihoods=lik, modality_weight_mode="learnable")
        grads = nnx.grad(lambda m: m.loss(data))(vae)
        for part in ("encoders", "decoders"):
            for k in range(2):
                leaves = jax.tree.leaves(getattr(grads, part)[k])
                assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
                assert max(float(jnp.abs(g).max()) for g in leaves) > 0, (lik, part, k)
        assert float(jnp.abs(grads.weight_logits[...]).max()) > 0


def test_masks_drop_experts_and_likelihood_terms():
    data = _data()
    vae = _vae()
    vae.eval()
    masked = {**data, "atac_mask": np.r_[np.ones(12), np.zeros(12)].astype(np.float32)}
    t = vae.terms(masked)
    assert (np.asarray(t["log_likelihood"])[1, 12:] == 0).all()
    # a cell without ATAC embeds as from RNA alone, whatever its ATAC values say
    scrambled = {**masked, "atac_counts": 1.0 - data["atac_counts"]}
    np.testing.assert_allclose(vae.encode(masked)[0][12:], vae.encode(scrambled)[0][12:], atol=1e-6)
    np.testing.assert_allclose(vae.encode(masked)[0][12:], vae.encode(data, ["rna"])[0][12:],
                               atol=1e-6)  # fmt: skip


def test_learnable_weights_stay_balanced_and_gradnorm_runs():
    from diffomics.operators._multiomics_vae import gradnorm_step

    data = _data(n=64)
    vae = _vae(modality_weight_mode="learnable")
    opt = nnx.Optimizer(vae, __import__("optax").adam(0.05), wrt=nnx.Param)
    step = nnx.jit(lambda m, o: o.update(m, nnx.grad(lambda mm: mm.loss(data))(m)))
    for _ in range(60):
        step(vae, opt)
    w = np.asarray(vae.modality_weights())
    assert abs(w.sum() - 2) < 1e-5 and w.min() > 0.75  # no collapse onto one modality
    assert not np.allclose(w, 1.0)  # but they did learn
    g = _vae(modality_weight_mode="learnable", use_gradnorm=True)
    before = np.asarray(g.modality_weights())
    terms = g.terms(data)
    initial = -(terms["log_likelihood"].sum(1) / terms["mask"].sum(1))
    step = nnx.jit(gradnorm_step)
    for _ in range(5):
        step(g, data, initial)
    after = np.asarray(g.modality_weights())
    assert not np.allclose(before, after) and abs(after.sum() - 2) < 1e-5


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"rna_counts": -np.ones((24, 12), np.float32)}, CountsError, "negative"),
        ({"rna_counts": np.full((24, 12), np.nan, np.float32)}, NonFiniteError, "NaN"),
        ({"atac_counts": np.ones((23, 20), np.float32)}, ShapeError, "cells"),
        ({"atac_counts": np.ones((24, 3), np.float32)}, ShapeError, "atac_counts"),
    ],
)
def test_bad_inputs_are_refused(change, error, match):
    with pytest.raises(error, match=match):
        _vae().apply({**_data(), **change}, {}, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality_dims": [5, 0]}, "modality_dims"),
        ({"modality_weight_mode": "max"}, "modality_weight_mode"),
        ({"use_gradnorm": True}, "use_gradnorm"),
        ({"likelihoods": ["nb", "beta"]}, "likelihoods"),
        ({"modality_names": ["rna", "rna"]}, "distinct"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MultiOmicsVAEConfig(**{"modality_dims": [5, 6], **kwargs})


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([2, 9]), st.integers(0, 1000))
def test_random_counts_give_finite_outputs(n, seed):
    rng = np.random.default_rng(seed)
    data = {"rna_counts": rng.poisson(rng.uniform(0, 50), (n, 12)).astype(np.float32),
            "atac_counts": rng.poisson(0.5, (n, 20)).astype(np.float32)}  # fmt: skip
    out, _, _ = _vae().apply(data, {}, None)
    for key in ("joint_latent", "rna_reconstructed", "atac_reconstructed", "elbo_loss"):
        assert np.isfinite(np.asarray(out[key])).all(), key


# --- the analysis on real data --------------------------------------------------------------


@pytest.fixture(scope="module")
def snare():
    from diffomics.datasets import snareseq_celllines

    data = snareseq_celllines()
    model = integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, max_epochs=60,
                      progress=False)  # fmt: skip
    return data, model


def test_snareseq_cell_lines_separate_and_modalities_align(snare):
    data, model = snare
    labels = data["rna"].obs["cell_line"].to_numpy()
    assert knn_label_accuracy(model.latent(), labels) > 0.9
    assert foscttm(model.latent(["rna"]), model.latent(["atac"])) < 0.3  # random: 0.5
    assert data["atac"].obsm["X_diffomics"].shape == (1047, 10)
    imputed = model.impute("atac", ["rna"])
    assert imputed.shape == (1047, 19)
    r = np.corrcoef(imputed[:, 0], data["atac"].X[:, 0])[0, 1]
    assert r > 0.3  # predicted from RNA alone, back in the original units


def test_save_and_load_give_the_same_latent(snare, tmp_path):
    from diffomics.integration import IntegrationModel

    data, model = snare
    model.save(tmp_path / "m")
    loaded = IntegrationModel.load(tmp_path / "m", {k: v for k, v in data.items()})
    loaded.scales = model.scales
    # the loaded model standardises nothing itself: compare on the training inputs
    np.testing.assert_allclose(loaded.latent(data=model.data), model.latent(), atol=1e-5)


def test_mosaic_cells_train_and_embed():
    from diffomics.datasets import snareseq_celllines

    data = snareseq_celllines()
    data["atac"] = data["atac"][200:].copy()  # the first 200 cells have RNA only
    with pytest.warns(UserWarning, match="join='outer'"):
        inner = integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"},
                          max_epochs=1, progress=False)  # fmt: skip
    assert inner.report["n_cells"] == 847
    model = integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, join="outer",
                      max_epochs=20, progress=False)  # fmt: skip
    assert model.report["cells_without_atac"] == 200
    z = model.latent()
    labels = data["rna"].obs["cell_line"].to_numpy()
    assert knn_label_accuracy(z, labels) > 0.85  # RNA-only cells land with their lines


def test_cells_that_do_not_match_are_refused():
    from diffomics.datasets import snareseq_celllines

    data = snareseq_celllines()
    data["atac"].obs_names = [f"other_{i}" for i in range(data["atac"].n_obs)]
    with pytest.raises(ShapeError, match="no cell"):
        integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, progress=False)
    data = snareseq_celllines()
    data["rna"].obs_names = ["same"] * data["rna"].n_obs
    with pytest.raises(ShapeError, match="duplicated"):
        integrate(data, progress=False)


def test_embedding_source_aligns_and_refuses_mismatches(tmp_path):
    from diffomics.sources import (
        EmbeddingSpec,
        MultiOmicsEmbeddingConfig,
        MultiOmicsEmbeddingSource,
    )

    np.savez(tmp_path / "rna.npz", embedding=np.arange(8.0).reshape(4, 2),
             sample_ids=np.array(["a", "b", "c", "d"]))  # fmt: skip
    np.save(tmp_path / "atac.npy", np.arange(12.0).reshape(4, 3))
    (tmp_path / "ids.txt").write_text("d\nc\nb\na\n")
    specs = (EmbeddingSpec(modality="rna", path=tmp_path / "rna.npz", tool="PCA"),
             EmbeddingSpec(modality="atac", path=tmp_path / "atac.npy",
                           ids_path=tmp_path / "ids.txt", tool="LSI"))  # fmt: skip
    out = MultiOmicsEmbeddingSource(MultiOmicsEmbeddingConfig(embeddings=specs)).load()
    np.testing.assert_array_equal(out["atac"][0], [9.0, 10.0, 11.0])  # id "a" was last
    assert out["provenance"]["atac"]["tool"] == "LSI"
    assert len(out["provenance"]["rna"]["sha256"]) == 64
    (tmp_path / "ids.txt").write_text("d\nc\nb\ne\n")
    with pytest.raises(ShapeError, match="differ"):
        MultiOmicsEmbeddingSource(MultiOmicsEmbeddingConfig(embeddings=specs)).load()
    config = MultiOmicsEmbeddingConfig(embeddings=specs, join="inner")
    inner = MultiOmicsEmbeddingSource(config).load()
    assert inner["sample_ids"].tolist() == ["b", "c", "d"]
    (tmp_path / "ids.txt").write_text("d\nd\nb\na\n")
    with pytest.raises(ShapeError, match="duplicated"):
        MultiOmicsEmbeddingSource(MultiOmicsEmbeddingConfig(embeddings=specs)).load()
