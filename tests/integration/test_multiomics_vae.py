"""`DifferentiableMultiOmicsVAE`, product of experts, likelihoods, `integrate`, metrics and
`MultiOmicsEmbeddingSource`."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
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
    nb_mixture_log_prob,
    poisson_log_prob,
    zinb_log_prob,
)
from diffomics.integration import (
    foscttm,
    gaussian_kl,
    integrate,
    knn_label_accuracy,
    product_of_experts,
    protein_background_prior,
    symmetric_gaussian_kl,
)
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


def test_symmetric_kl_matches_the_closed_form_of_both_directions():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=(2, 4, 3))
    lv1, lv2 = rng.normal(size=(2, 4, 3))
    s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)

    def kl(ma, sa, mb, sb):  # KL(N(ma, sa^2) || N(mb, sb^2)), per dimension
        return np.log(sb / sa) + (sa**2 + (ma - mb) ** 2) / (2 * sb**2) - 0.5

    want = (kl(m1, s1, m2, s2) + kl(m2, s2, m1, s1)).sum(-1)
    got = symmetric_gaussian_kl(*(jnp.asarray(a, jnp.float32) for a in (m1, lv1, m2, lv2)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    zero = jnp.zeros((4, 3))
    np.testing.assert_allclose(symmetric_gaussian_kl(jnp.asarray(m1), jnp.asarray(lv1), zero, zero),
                               gaussian_kl(jnp.asarray(m1), jnp.asarray(lv1))
                               + kl(0.0, 1.0, m1, s1).sum(-1), rtol=1e-5)  # fmt: skip
    assert float(jnp.abs(symmetric_gaussian_kl(zero + 1.0, zero, zero + 1.0, zero)).max()) == 0.0


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


def test_nb_mixture_matches_scipy_and_the_gaussian_kl_its_closed_form():
    x = np.array([0.0, 2.0, 7.0, 30.0, 200.0])
    mu_b, mu_f, theta, pi = 3.0, 60.0, 4.0, 0.35  # pi: the background probability
    pmf = (pi * scipy.stats.nbinom.pmf(x, theta, theta / (theta + mu_b))
           + (1 - pi) * scipy.stats.nbinom.pmf(x, theta, theta / (theta + mu_f)))  # fmt: skip
    got = nb_mixture_log_prob(jnp.asarray(x), mu_b, mu_f, theta, np.log(pi / (1 - pi)))
    np.testing.assert_allclose(got, np.log(pmf), rtol=1e-4)
    # KL(N(m1, v1) || N(m2, v2)) = log(s2 / s1) + (v1 + (m1 - m2)^2) / (2 v2) - 1/2
    m1, v1, m2, v2 = 0.3, 0.5, -1.0, 2.0
    want = 0.5 * np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5
    got = gaussian_kl(jnp.full((1, 1), m1), jnp.log(jnp.full((1, 1), v1)), m2, np.log(v2))
    np.testing.assert_allclose(float(got[0]), want, rtol=1e-5)


def test_protein_background_prior_finds_the_lower_mode():
    rng = np.random.default_rng(0)
    n = 400
    positive = rng.random(n) < 0.4
    background = rng.negative_binomial(10, 10 / (10 + np.array([4.0, 20.0])), (n, 2))
    counts = np.where(positive[:, None], background * 15, background)
    mean, sd = protein_background_prior(counts)
    np.testing.assert_allclose(np.expm1(mean), [4.0, 20.0], rtol=0.25)
    want_sd = np.log1p(background[~positive]).std(0)
    np.testing.assert_allclose(sd, want_sd, rtol=0.25)
    with pytest.raises(CountsError, match="negative"):
        protein_background_prior(-counts)
    with pytest.raises(ShapeError, match="counts"):
        protein_background_prior(counts[:, 0])


def test_nb_mixture_protein_modality_trains_and_learns_its_background():
    rng = np.random.default_rng(2)
    n = 60
    data = _data(n)
    positive = rng.random((n, 12)) < 0.5
    protein = rng.poisson(np.where(positive, 80.0, 5.0)).astype(np.float32)
    vae = _vae(modality_dims=[12, 12], modality_names=["rna", "protein"],
               likelihoods=["nb", "nb_mixture"])  # fmt: skip
    data = {"rna_counts": data["rna_counts"], "protein_counts": protein}
    vae.set_background_prior("protein", protein)
    prior = vae.decoders[1].mixture
    np.testing.assert_allclose(np.expm1(np.asarray(prior["prior_mean"][...])), 5.0, rtol=0.3)
    out, _, _ = vae.apply(data, {}, None)
    assert np.isfinite(float(out["elbo_loss"])) and out["protein_reconstructed"].shape == (n, 12)
    # the background latent's KL is part of the KL term: it varies with the prior
    vae.eval()
    t = vae.terms(data)
    prior["prior_mean"][...] = prior["prior_mean"][...] + 3.0
    assert float(jnp.mean(vae.terms(data)["kl"])) > float(jnp.mean(t["kl"])) + 1.0
    vae.train()
    grads = nnx.grad(lambda m: m.loss(data))(vae)
    leaves = jax.tree.leaves(grads.decoders[1].mixture)
    assert len(leaves) == 8  # three layers' weights and biases, the prior's mean and sd
    for leaf in leaves:
        assert bool(jnp.all(jnp.isfinite(leaf))) and float(jnp.abs(leaf).max()) > 0
    with pytest.raises(ConfigError, match="nb_mixture"):
        vae.set_background_prior("rna", data["rna_counts"])


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


def test_subset_sampling_is_an_unbiased_estimate_of_the_summed_elbos():
    # training with subset_sampling decodes each cell once, from its joint or one modality's
    # posterior drawn at random, times 3: over many draws its mean is the exact loss's (a
    # missing factor, a wrong KL mask or a biased draw would put them many SE apart); mosaic
    # cells (half without ATAC) included. In evaluation mode the two are the same loss.
    data = {**_data(n=32), "atac_mask": np.r_[np.ones(16), np.zeros(16)].astype(np.float32)}
    kwargs = {"dropout_rate": 0.0, "likelihoods": ["nb", "bernoulli"]}
    sampled = _vae(seed=3, subset_sampling=True, **kwargs)
    exact = _vae(seed=3, subset_sampling=False, **kwargs)
    for m in (sampled, exact):
        m.eval()
    assert float(sampled.loss(data)) == float(exact.loss(data))
    for m in (sampled, exact):
        m.train()
    step = nnx.jit(lambda m: m.loss(data))
    draws = {name: np.array([float(step(m)) for _ in range(300)])
             for name, m in (("sampled", sampled), ("exact", exact))}  # fmt: skip
    se = np.sqrt(sum(d.var(ddof=1) / len(d) for d in draws.values()))
    assert abs(draws["sampled"].mean() - draws["exact"].mean()) < 4 * se
    assert draws["sampled"].std() > 1.3 * draws["exact"].std()  # it is the noisier estimate
    assert "subsets" in sampled.terms(data) and "unimodal" not in sampled.terms(data)
    # the operator's outputs (reconstructions, elbo_loss) stay the exact, joint-posterior ones
    twins = [_vae(seed=4, subset_sampling=flag, **kwargs) for flag in (True, False)]
    a, b = (m.outputs(data) for m in twins)
    np.testing.assert_array_equal(a["atac_reconstructed"], b["atac_reconstructed"])
    assert float(a["elbo_loss"]) == float(b["elbo_loss"])
    grads = nnx.grad(lambda m: m.loss(data))(sampled)
    for part in ("encoders", "decoders"):
        for k in range(2):
            leaves = jax.tree.leaves(getattr(grads, part)[k])
            assert max(float(jnp.abs(g).max()) for g in leaves) > 0, (part, k)


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


def test_gradnorm_balances_the_weighted_gradient_norms():
    # GradNorm moves the weights until every modality's weighted gradient norm at the
    # shared latent is the mean one times its relative training rate (1 here, the losses
    # being their own initial values): RNA counts of 1,000s against binary peaks start
    # with norms far apart, and the GradNorm loss sum_m |w_m G_m - mean(w G)| (relative)
    # falls from 0.68 to a floor of about 0.1 set by the sampled latent
    from diffomics.operators._multiomics_vae import gradnorm_step

    data = _data(n=64)
    data["rna_counts"] = data["rna_counts"] * 300
    g = _vae(modality_weight_mode="learnable", use_gradnorm=True)
    g.eval()
    terms = g.terms(data, exact=True)
    initial = -(terms["log_likelihood"].sum(1) / terms["mask"].sum(1))
    step = nnx.jit(gradnorm_step)
    losses = [float(step(g, data, initial)) for _ in range(300)]
    w = np.asarray(g.modality_weights())
    assert np.mean(losses[-100:]) < 0.3 * losses[0], (losses[0], np.mean(losses[-100:]))
    assert abs(w.sum() - 2) < 1e-5 and w[0] < 0.5 < 1.5 < w[1]  # the louder modality down


def test_jeffreys_penalty_is_the_symmetric_kl_of_the_single_modality_posteriors():
    data = {**_data(), "atac_mask": np.r_[np.ones(20), np.zeros(4)].astype(np.float32)}
    with_penalty, without = _vae(seed=5), _vae(seed=5, modality_penalty="none")
    with_penalty.eval()
    without.eval()
    t = with_penalty.terms(data)
    q_rna, q_atac = with_penalty.encode(data, ["rna"]), with_penalty.encode(data, ["atac"])
    want = np.asarray(symmetric_gaussian_kl(*q_rna, *q_atac)) * data["atac_mask"]
    np.testing.assert_allclose(t["modality_penalty"], want, rtol=1e-5, atol=1e-6)
    assert (want[:20] > 0).all() and (np.asarray(t["modality_penalty"])[20:] == 0).all()
    assert "modality_penalty" not in without.terms(data)
    # same parameters and noise: the losses differ by the mean penalty exactly
    diff = float(with_penalty.loss(data)) - float(without.loss(data))
    np.testing.assert_allclose(diff, want.mean(), rtol=1e-4)
    # without the KL terms, the loss is the reconstruction loss plus the penalty
    rest = with_penalty.loss_from_terms(t, kl_scale=0.0)
    rest = rest - with_penalty.reconstruction_loss_from_terms(t)
    np.testing.assert_allclose(float(rest), want.mean(), rtol=1e-4)


def test_kl_scale_multiplies_every_kl_term():
    data = _data()
    a, b = _vae(seed=6), _vae(seed=6)
    a.eval()
    b.eval()
    t = _vae(seed=6)
    t.eval()
    terms = t.terms(data)
    kl = terms["kl"] + sum(kl_m for _, kl_m in terms["unimodal"])
    diff = float(a.loss(data, kl_scale=0.25)) - float(b.loss(data))
    np.testing.assert_allclose(diff, -0.75 * float(jnp.mean(kl)), rtol=1e-4)


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


_LEARNABLE = {"modality_weight_mode": "learnable"}
#: field -> (the base config's other settings, the change): each change must move the output
CHANGES = {
    "modality_dims": ({}, {"modality_dims": [12, 21]}),
    "latent_dim": ({}, {"latent_dim": 4}),
    "hidden_dim": ({}, {"hidden_dim": 8}),
    "modality_weight_mode": ({}, _LEARNABLE),
    "use_gradnorm": (_LEARNABLE, {"use_gradnorm": True}),
    "modality_names": ({}, {"modality_names": ["gex", "peaks"]}),
    "likelihoods": ({}, {"likelihoods": ["zinb", "bernoulli"]}),
    "n_layers": ({}, {"n_layers": 1}),
    "n_batches": ({}, {"n_batches": 2}),
    "dropout_rate": ({}, {"dropout_rate": 0.5}),
    "kl_weight": ({}, {"kl_weight": 0.5}),
    "weight_penalty": (_LEARNABLE, {"weight_penalty": 1.0}),
    "gradnorm_alpha": ({**_LEARNABLE, "use_gradnorm": True}, {"gradnorm_alpha": 0.5}),
    "unimodal_elbo": ({}, {"unimodal_elbo": False}),
    "subset_sampling": ({}, {"subset_sampling": False}),
    "modality_penalty": ({}, {"modality_penalty": "none"}),
}


def _summary(config: MultiOmicsVAEConfig) -> tuple:
    """Output keys, rounded sums, loss, parameter count and a GradNorm step of a fixed model."""
    from diffomics.operators._multiomics_vae import gradnorm_step

    rng = np.random.default_rng(0)
    (rna, atac), n = config.modality_dims, 24
    gex, peaks = config.names
    data = {f"{gex}_counts": rng.poisson(3.0, (n, rna)).astype(np.float32),
            f"{peaks}_counts": (rng.random((n, atac)) < 0.3).astype(np.float32),
            f"{peaks}_mask": np.r_[np.ones(n - 4), np.zeros(4)].astype(np.float32),
            "batch": np.arange(n) % 2}  # fmt: skip
    vae = DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(0))  # training mode: noise, dropout
    if config.modality_weight_mode == "learnable":  # weights off the uniform start
        vae.weight_logits[...] = jnp.array([0.4, -0.4])
    out = vae.outputs(data)
    summary = [*sorted(out), *(round(float(jnp.sum(v)), 4) for v in out.values())]
    summary += [round(float(vae.loss(data)), 4),
                sum(v.size for v in jax.tree.leaves(nnx.state(vae, nnx.Param)))]  # fmt: skip
    if config.use_gradnorm:
        summary.append(round(float(gradnorm_step(vae, data, jnp.array([1.0, 3.0]))), 4))
    return tuple(summary)


def test_every_config_field_is_tested():
    assert {f.name for f in dataclasses.fields(MultiOmicsVAEConfig)} == set(CHANGES)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_config_field_changes_the_output(field):
    settings_, change = CHANGES[field]
    base = MultiOmicsVAEConfig(**{"modality_dims": [12, 20], "latent_dim": 3, "hidden_dim": 16,
                                  **settings_})  # fmt: skip
    assert _summary(dataclasses.replace(base, **change)) != _summary(base)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality_dims": [5, 0]}, "modality_dims"),
        ({"modality_weight_mode": "max"}, "modality_weight_mode"),
        ({"use_gradnorm": True}, "use_gradnorm"),
        ({"likelihoods": ["nb", "beta"]}, "likelihoods"),
        ({"modality_names": ["rna", "rna"]}, "distinct"),
        ({"modality_penalty": "mmd"}, "modality_penalty"),
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
    # the loaded model standardises the (Gaussian) data with the saved means and sds
    loaded = IntegrationModel.load(tmp_path / "m", {k: v.copy() for k, v in data.items()})
    np.testing.assert_allclose(loaded.latent(), model.latent(), atol=1e-5)
    np.testing.assert_allclose(loaded.impute("atac", ["rna"]), model.impute("atac", ["rna"]),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_early_stopping_restores_the_lowest_validation_loss_and_warms_up_the_kl(snare):
    # the snare fixture's settings: the jitted steps compiled for it are reused here
    data = {k: v.copy() for k, v in snare[0].items()}
    kwargs = {"likelihoods": {"rna": "gaussian", "atac": "gaussian"}, "n_epochs_kl_warmup": 4,
              "progress": False}  # fmt: skip
    model = integrate(data, patience=2, **kwargs)
    h, rep = model.history, model.report
    np.testing.assert_allclose(h["kl_scale"][:6], [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    monitored = h["validation_reconstruction_loss"]  # the default monitor
    best = int(monitored.idxmin())
    assert rep["best_epoch"] == best and rep["best_validation_loss"] == monitored.min()
    assert rep["stopped_early"] and rep["epochs"] == best + 3  # two epochs without a new best
    assert (h["validation_loss"] > monitored).all()  # the ELBO adds the KL and the penalty
    # the same seed trained for best + 1 epochs ends on the same parameters, not the last ones
    again = integrate(data, max_epochs=best + 1, **kwargs)
    np.testing.assert_allclose(model.latent(), again.latent(), rtol=1e-5, atol=1e-5)
    # an absolute min_delta larger than any change: patience runs out 3 epochs after the first
    elbo = integrate(data, min_delta=1e9, patience=3, early_stopping_monitor="elbo_validation",
                     **kwargs)  # fmt: skip
    assert elbo.report["epochs"] == 4
    assert elbo.report["best_epoch"] == int(elbo.history["validation_loss"].idxmin())


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


def _mods(n=80, seed=0):
    import anndata as ad

    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], n // 2)
    rna = rng.poisson(np.where(group[:, None] == 1, 6.0, 1.0) * np.ones(12), (n, 12))
    atac = rng.random((n, 20)) < np.where(group[:, None] == 1, 0.6, 0.1)
    names = [f"c{i}" for i in range(n)]
    return {key: ad.AnnData(x.astype(np.float32), obs={"obs_names": names}).copy()
            for key, x in (("rna", rna), ("atac", atac))}  # fmt: skip


def test_background_prior_is_fitted_to_a_seeded_sample_of_the_cells(monkeypatch):
    # above _PRIOR_CELLS cells the prior is fitted to a sample drawn with the seed (the same
    # cells in every process, and a file is not read whole for it); it still finds the
    # planted background of 5 counts
    import anndata as ad

    import diffomics.integration._integrate as module

    monkeypatch.setattr(module, "_PRIOR_CELLS", 50)
    fitted = []
    fit = DifferentiableMultiOmicsVAE.set_background_prior
    monkeypatch.setattr(DifferentiableMultiOmicsVAE, "set_background_prior",
                        lambda self, name, counts: fitted.append(np.asarray(counts))
                        or fit(self, name, counts))  # fmt: skip
    mods = _mods(n=160)
    rng = np.random.default_rng(3)
    protein = rng.poisson(np.where(rng.random((160, 6)) < 0.5, 80.0, 5.0)).astype(np.float32)
    mods["protein"] = ad.AnnData(protein, obs=mods.pop("atac").obs)
    kwargs = {"hidden_dim": 8, "n_layers": 1, "max_epochs": 1, "progress": False,
              "likelihoods": {"protein": "nb_mixture"}}  # fmt: skip
    for seed in (1, 0):
        model = integrate(mods, seed=seed, **kwargs)
    other, first = fitted
    assert first.shape == (50, 6)
    draw = np.sort(np.random.default_rng(0).choice(160, 50, replace=False))
    np.testing.assert_array_equal(first, protein[draw])  # the seed's sample of the cells
    assert not np.array_equal(first, other)
    mean = np.asarray(model.module.decoders[1].mixture["prior_mean"][...])
    np.testing.assert_allclose(np.expm1(mean), 5.0, rtol=0.3)


def test_training_resumes_from_its_checkpoint_bitwise(tmp_path):
    # NB + Bernoulli with dropout: the restored state includes the random-key streams of
    # the sampling noise and of dropout, and the generator that shuffles the minibatches
    kwargs = {"hidden_dim": 16, "n_layers": 1, "batch_size": 32, "n_epochs_kl_warmup": 2,
              "progress": False}  # fmt: skip
    through = integrate(_mods(), max_epochs=6, **kwargs)
    path = tmp_path / "train.npz"
    first = integrate(_mods(), max_epochs=3, checkpoint=path, **kwargs)
    assert first.report["epochs"] == 3 and path.exists()
    resumed = integrate(_mods(), max_epochs=6, checkpoint=path, **kwargs)
    pd.testing.assert_frame_equal(resumed.history, through.history, check_exact=True)
    np.testing.assert_array_equal(resumed.latent(), through.latent())
    assert not np.array_equal(first.latent(), through.latent())  # 3 more epochs did train
    again = integrate(_mods(), max_epochs=6, checkpoint=path, **kwargs)  # finished: no epoch
    np.testing.assert_array_equal(again.latent(), through.latent())
    with pytest.raises(ConfigError, match="other data or arguments"):
        integrate(_mods(), max_epochs=6, checkpoint=path, seed=1, **kwargs)
    with pytest.raises(ConfigError, match="checkpoint"):
        integrate(_mods(n=60), max_epochs=6, checkpoint=path, **kwargs)


@pytest.mark.parametrize(
    ("likelihoods", "store"),
    [(None, "h5ad"), ({"rna": "gaussian"}, "h5ad"), (None, "zarr")],
    ids=["counts", "gaussian", "zarr"],
)
def test_backed_anndata_is_streamed_and_trains_as_in_memory(tmp_path, likelihoods, store):
    import anndata as ad
    import scipy.sparse

    from diffomics.integration import StreamedRows, open_zarr

    # the checkpoint test's settings (its compiled steps are reused); mosaic: 10 cells
    # have no peaks; the peaks are stored sparse (CSR), the RNA dense
    kwargs = {"hidden_dim": 16, "n_layers": 1, "batch_size": 32, "n_epochs_kl_warmup": 2,
              "progress": False, "max_epochs": 3, "join": "outer",
              "likelihoods": likelihoods}  # fmt: skip
    mods = _mods()
    mods["atac"] = mods["atac"][10:].copy()
    mods["atac"].X = scipy.sparse.csr_matrix(mods["atac"].X)
    in_memory = integrate(mods, **kwargs)
    backed = {}
    for name, adata in mods.items():
        path = tmp_path / f"{name}.{store}"
        if store == "zarr":
            adata.write_zarr(path)
            backed[name] = open_zarr(path)
        else:
            adata.write_h5ad(path)
            backed[name] = ad.read_h5ad(path, backed="r")
    streamed = integrate(backed, **kwargs)
    assert all(isinstance(streamed.data[f"{n}_counts"], StreamedRows) for n in mods)
    pd.testing.assert_frame_equal(streamed.history, in_memory.history, check_exact=True)
    np.testing.assert_array_equal(streamed.latent(), in_memory.latent())
    np.testing.assert_array_equal(backed["atac"].obsm["X_diffomics"], in_memory.latent()[10:])
    for target, source in (("rna", "atac"), ("atac", "rna")):
        np.testing.assert_allclose(streamed.impute(target, [source]),
                                   in_memory.impute(target, [source]), rtol=1e-6)  # fmt: skip


def test_streamed_rows_read_only_the_rows_asked_for_in_file_order():
    from diffomics.integration import StreamedRows

    class Spy:
        def __init__(self, x):
            self.x, self.reads = x, []

        def __getitem__(self, rows):
            self.reads.append(np.asarray(rows))
            return self.x[rows]

    x = np.arange(12.0).reshape(6, 2)
    spy = Spy(x)
    rows = StreamedRows(spy, np.array([5, -1, 0, 2]), 2)  # cell 1 lacks the modality
    got = rows[np.array([3, 1, 0, 3])]
    np.testing.assert_array_equal(got, [x[2], [0, 0], x[5], x[2]])
    np.testing.assert_array_equal(spy.reads[-1], [2, 5])  # unique, increasing, nothing else
    np.testing.assert_array_equal(rows[1:3], [[0, 0], x[0]])
    rows.scale = (np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    np.testing.assert_array_equal(rows[np.array([1, 2])], [[0, 0], (x[0] - 1) / 2])
    assert rows.shape == (4, 2) and len(rows) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"patience": 0}, "patience"), ({"min_delta": -1.0}, "min_delta"),
     ({"learning_rate": float("nan")}, "learning_rate"),
     ({"n_epochs_kl_warmup": 2.5}, "n_epochs_kl_warmup"),
     ({"early_stopping_monitor": "loss"}, "early_stopping_monitor")],
)  # fmt: skip
def test_integrate_refuses_bad_training_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        integrate(_mods(), progress=False, **kwargs)


def test_accessibility_prediction_does_not_read_the_target_peaks():
    from diffomics.integration import IntegrationModel

    data = _data()
    data["rna_counts"][1] = data["rna_counts"][0]  # cells 0 and 1: same RNA, other peaks
    data["atac_counts"][1] = 1.0 - data["atac_counts"][0]
    module = _vae(seed=1)
    model = IntegrationModel(module, None, data, None, {})
    median = model.impute("atac", ["rna"], library="median")
    np.testing.assert_allclose(median[0], median[1], rtol=1e-6)
    observed = model.impute("atac", ["rna"], library="observed")
    assert not np.allclose(observed[0], observed[1])
    predicted = model.impute("atac", ["rna"])  # the default: depth predicted from the RNA
    np.testing.assert_allclose(predicted[0], predicted[1], rtol=1e-6)
    half = model.impute("atac", ["rna"], library=0.5)
    ratio = half / model.impute("atac", ["rna"], library=1.0)
    np.testing.assert_allclose(ratio, 0.5, rtol=1e-4)
    with pytest.raises(ConfigError, match="Bernoulli"):
        model.impute("atac", ["rna"], library=3.0)


def test_predicted_library_is_the_depth_regressed_on_the_source_modalities():
    # protein totals planted as a log-linear function of the RNA totals: fitted on the cells
    # with protein, the prediction recovers the held-out cells' totals (an NB mean sums to
    # its library), which the median library does not
    from diffomics.integration import IntegrationModel

    rng = np.random.default_rng(3)
    n = 40
    rna = rng.poisson(rng.uniform(1.0, 20.0, (n, 1)) * np.ones((1, 12))).astype(np.float32)
    total = np.exp(0.5 + 0.8 * np.log1p(rna.sum(1)))
    share = rng.dirichlet(np.ones(5), n)
    data = {"rna_counts": rna, "protein_counts": (total[:, None] * share).astype(np.float32),
            "protein_mask": (np.arange(n) % 2).astype(np.float32)}  # fmt: skip
    module = _vae(modality_dims=[12, 5], modality_names=["rna", "protein"],
                  likelihoods=["nb", "nb"])  # fmt: skip
    model = IntegrationModel(module, None, data, None, {})
    held = data["protein_mask"] == 0
    predicted = model.impute("protein", ["rna"]).sum(1)
    np.testing.assert_allclose(predicted[held], total[held], rtol=1e-3)
    median = model.impute("protein", ["rna"], library="median").sum(1)
    assert np.ptp(median) < 1e-3 * median.max()
    # mosaic: cells without RNA get its mean log total and a column of their own, so the
    # cells with RNA keep their prediction
    data["rna_mask"] = np.ones(n, np.float32)
    data["rna_mask"][:4] = 0
    design = model._depth_design(model.latent(["rna"]), ["rna"], data)
    assert design.shape == (n, 1 + 3 + 2) and design[:4, -1].tolist() == [1.0] * 4
    np.testing.assert_allclose(design[:4, -2], design[4:, -2].mean())
    data["protein_mask"][:] = 0
    data["protein_mask"][:3] = 1  # 3 measured cells for 5 regressors (1, z, RNA total)
    with pytest.raises(ConfigError, match="needs more cells"):
        model.impute("protein", ["rna"])
    with pytest.raises(ConfigError, match="library must be"):
        model.impute("protein", ["rna"], library="mean")


def test_integrate_repeats_with_its_seed_and_changes_with_another():
    kwargs = {"hidden_dim": 16, "n_layers": 1, "batch_size": 32, "max_epochs": 3,
              "progress": False}  # fmt: skip
    a, b = integrate(_mods(), **kwargs), integrate(_mods(), **kwargs)
    np.testing.assert_array_equal(a.latent(), b.latent())
    assert not np.allclose(integrate(_mods(), seed=1, **kwargs).latent(), a.latent())


def test_integrate_runs_gradnorm_on_the_modality_weights():
    kwargs = {"hidden_dim": 16, "n_layers": 1, "batch_size": 32, "max_epochs": 5,
              "modality_weight_mode": "learnable", "progress": False}  # fmt: skip
    by_loss = integrate(_mods(), **kwargs).report["modality_weights"]
    by_gradnorm = integrate(_mods(), use_gradnorm=True, **kwargs).report["modality_weights"]
    assert abs(sum(by_gradnorm) - 2) < 1e-3 and not np.allclose(by_gradnorm, 1.0, atol=0.02)
    assert not np.allclose(by_gradnorm, by_loss, atol=0.02)


def _batch_mods(n=240, seed=0):
    # two cell groups in two batches; batch b1 has 5x the counts of RNA genes 10-29 and
    # opens ATAC peaks 20-39 (0.5 against 0.1)
    import anndata as ad

    rng = np.random.default_rng(seed)
    group, batch = rng.integers(0, 2, n), rng.integers(0, 2, n)
    rate = np.ones((n, 30))
    rate[:, :10] *= np.where(group[:, None] == 1, 6.0, 1.0)
    rate[:, 10:] *= np.where(batch[:, None] == 1, 5.0, 1.0)
    p = np.full((n, 40), 0.1)
    p[:, :15] = np.where(group[:, None] == 1, 0.6, 0.1)
    p[:, 20:] = np.where(batch[:, None] == 1, 0.5, 0.1)
    obs = pd.DataFrame({"batch": [f"b{b}" for b in batch], "group": group},
                       index=[f"c{i}" for i in range(n)])  # fmt: skip
    return {"rna": ad.AnnData(rng.poisson(rate).astype(np.float32), obs=obs),
            "atac": ad.AnnData((rng.random((n, 40)) < p).astype(np.float32), obs=obs)}


def test_batch_covariate_explains_a_planted_batch_effect(tmp_path):
    from diffomics.core._errors import MissingKeyError
    from diffomics.integration import IntegrationModel

    data = _batch_mods()
    model = integrate(data, batch_key="batch", max_epochs=60, batch_size=32, hidden_dim=32,
                      n_layers=1, n_epochs_kl_warmup=10, progress=False)  # fmt: skip
    assert model.report["batch_categories"] == ["b0", "b1"]
    z = model.latent()
    assert knn_label_accuracy(z, data["rna"].obs["group"]) > 0.8
    # the decoder explains the batch effect through the covariate: the cells' own batches
    # fit better than the swapped ones, and decoding the same latent as b1 rather than b0
    # raises genes 10-29 against genes 0-9 by about the planted 5x
    x = jnp.asarray(data["rna"].X)
    own = (data["rna"].obs["batch"] == "b1").to_numpy().astype(int)
    decoder = model.module.decoders[0]

    def decode(codes):
        return decoder(jnp.asarray(z), jax.nn.one_hot(codes, 2), x, x.sum(1))

    assert float(decode(own)[0].sum() - decode(1 - own)[0].sum()) > 2 * len(own)  # nats
    b0, b1 = (np.asarray(decode(np.full(len(own), b))[1]) for b in (0, 1))
    fold = (b1[:, 10:].sum(1) / b1[:, :10].sum(1)) / (b0[:, 10:].sum(1) / b0[:, :10].sum(1))
    assert 2.5 < np.median(fold) < 12.5
    # saved and loaded, new data are coded by the saved batch labels
    loaded = IntegrationModel.load(model.save(tmp_path / "m"), _batch_mods())
    np.testing.assert_allclose(loaded.latent(), z, atol=1e-5)
    other = _batch_mods()
    other["rna"].obs["batch"] = other["atac"].obs["batch"] = "b7"
    with pytest.raises(MissingKeyError, match="b7"):
        IntegrationModel.load(tmp_path / "m", other)
    other["rna"].obs["batch"] = other["atac"].obs["batch"] = None
    with pytest.raises(MissingKeyError, match="batch label"):
        integrate(other, batch_key="batch", max_epochs=1, progress=False)


def test_mudata_input_gets_the_latent_and_left_out_cells_nan_rows():
    mudata = pytest.importorskip("mudata")
    mods = _mods()
    mods["atac"] = mods["atac"][10:].copy()  # 10 cells have RNA only
    mdata = mudata.MuData(mods)
    with pytest.warns(UserWarning, match="10 cells"):
        model = integrate(mdata, hidden_dim=16, n_layers=1, max_epochs=2, progress=False)
    assert model.report["n_cells"] == 70
    rna = mdata.mod["rna"].obsm["X_diffomics"]
    assert rna.shape == (80, 10) and np.isnan(rna[:10]).all() and np.isfinite(rna[10:]).all()
    np.testing.assert_array_equal(mdata.mod["atac"].obsm["X_diffomics"], rna[10:])
    joint, pos = mdata.obsm["X_diffomics"], model.cells.get_indexer(mdata.obs_names)
    np.testing.assert_array_equal(joint[pos >= 0], model.latent()[pos[pos >= 0]])
    assert (pos < 0).sum() == 10 and np.isnan(joint[pos < 0]).all()


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


def test_a_nan_is_named_by_its_cell_before_standardising():
    # checked on the raw values: standardised first, the NaN would spread over its column
    from diffomics.datasets import snareseq_celllines

    data = snareseq_celllines()
    data["rna"].X[200, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"1 non-finite .*\(200, 0\)"):
        integrate(data, likelihoods={"rna": "gaussian", "atac": "gaussian"}, progress=False)


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
    # a .parquet table indexed by sample id, rows in another order
    pytest.importorskip("pyarrow")
    table = pd.DataFrame(np.arange(8.0).reshape(4, 2), index=["c", "a", "d", "b"],
                         columns=["pc1", "pc2"])  # fmt: skip
    table.to_parquet(tmp_path / "protein.parquet")
    specs = (specs[0], EmbeddingSpec(modality="protein", path=tmp_path / "protein.parquet"))
    out = MultiOmicsEmbeddingSource(MultiOmicsEmbeddingConfig(embeddings=specs)).load()
    np.testing.assert_array_equal(out["protein"], [[2.0, 3.0], [6.0, 7.0], [0.0, 1.0],
                                                   [4.0, 5.0]])  # a, b, c, d  # fmt: skip
    assert out["provenance"]["protein"]["file"].endswith("protein.parquet")
