"""Fitting chromatin-state HMMs: planted states recovered, EM monotone, seeds reproducible."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffomics import ConfigError, ShapeError
from diffomics.epigenomics import (
    HMMParams,
    baum_welch,
    emission_log_prob,
    emission_mean,
    fit_hmm,
    hmm_log_likelihood,
    init_hmm_params,
    viterbi,
)
from tests.epigenomics.simulate import adjusted_rand_index, simulate

N_BINS = 1000


def _decode(params, x, model):
    log_e = emission_log_prob(x, params.emission, emission_model=model, log_theta=params.log_theta)
    return np.asarray(viterbi(params.log_pi, params.log_A, log_e)[0])


def _true_log_likelihood(sim, model):
    natural = np.log(sim.means / (1 - sim.means)) if model == "bernoulli" else np.log(sim.means)
    log_theta = np.full(sim.x.shape[1], np.log(sim.theta or 1.0))
    log_e = emission_log_prob(sim.x, natural, emission_model=model, log_theta=log_theta)
    return float(hmm_log_likelihood(np.log(sim.pi), np.log(sim.transmat), log_e))


def test_adjusted_rand_index_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    # sklearn's documented example: adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714...
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert abs(adjusted_rand_index(np.arange(400) % 4, np.arange(400) // 100)) < 0.01


def test_baum_welch_recovers_planted_states_and_never_decreases():
    # (Poisson Baum-Welch is compared step by step with hmmlearn in test_hmmlearn_reference)
    model = "bernoulli"
    sim = simulate(N_BINS, model=model, n_states=4, seed=10)
    init = init_hmm_params(sim.x, n_states=4, emission_model=model, seed=0)
    res = baum_welch(sim.x, init, emission_model=model, max_iter=60)
    ll = res.log_likelihood
    assert len(ll) == res.n_iter + 1 and res.converged
    assert np.all(np.diff(ll) >= -1e-6 * np.abs(ll[:-1])), np.diff(ll).min()
    assert ll[-1] > ll[0] + 10.0  # EM moved
    # the maximum-likelihood fit explains the data at least as well as the truth
    assert ll[-1] >= _true_log_likelihood(sim, model) - 1e-5 * abs(ll[-1])
    assert adjusted_rand_index(_decode(res.params, sim.x, model), sim.states) > 0.9
    # the fitted state profiles are the planted ones, up to relabelling
    fitted = np.asarray(emission_mean(res.params.emission, emission_model=model))
    match = [int(np.argmin(np.abs(fitted - m).sum(1))) for m in sim.means]
    assert sorted(match) == [0, 1, 2, 3]
    assert np.all(np.abs(fitted[match] - sim.means) < 0.1)
    np.testing.assert_allclose(np.exp(res.params.log_A).sum(1), 1.0, atol=1e-5)


def test_gradient_fit_recovers_planted_nb_states_and_learns_dispersion():
    sim = simulate(N_BINS, model="negative_binomial", n_states=4, theta=3.0, seed=11)
    res = fit_hmm(sim.x, n_states=4, emission_model="negative_binomial", seed=0, n_steps=100,
                  learning_rate=0.1)  # fmt: skip
    assert res.history.shape == (100,)
    assert res.history[-1] < res.history[0] - 0.1
    assert np.all(np.diff(res.history[-30:]) < 1e-4)  # settled, not oscillating
    assert adjusted_rand_index(_decode(res.params, sim.x, "negative_binomial"), sim.states) > 0.9
    theta = np.exp(np.asarray(res.params.log_theta))
    assert np.all((theta > 1.5) & (theta < 8.0)), theta  # planted 3, started at 10


def test_same_seed_same_start_and_different_seed_different_start():
    sim = simulate(300, model="bernoulli", n_states=4, seed=12)
    a, b, c = (init_hmm_params(sim.x, n_states=4, emission_model="bernoulli", seed=s)
               for s in (1, 1, 2))  # fmt: skip
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a.emission, c.emission)


def test_bad_settings_are_refused():
    x = np.eye(3)[np.arange(30) % 3]
    init = init_hmm_params(x, n_states=2, emission_model="bernoulli", seed=0)
    with pytest.raises(ShapeError, match="x must have size 3"):
        baum_welch(x[:, :2], init, emission_model="bernoulli")
    with pytest.raises(ConfigError, match="max_iter"):
        baum_welch(x, init, emission_model="bernoulli", max_iter=0)
    with pytest.raises(ConfigError, match="n_states"):
        init_hmm_params(x, n_states=31, emission_model="bernoulli", seed=0)
    with pytest.raises(ConfigError, match="emission_model"):
        init_hmm_params(x, n_states=2, emission_model="gaussian", seed=0)
    with pytest.raises(ConfigError, match="init has 2 states"):
        fit_hmm(x, n_states=3, emission_model="bernoulli", seed=0, init=init)
    bad = HMMParams(init.log_pi, init.log_A, init.emission, jnp.zeros(3))
    with pytest.raises(ConfigError, match="learning_rate"):
        fit_hmm(x, n_states=2, emission_model="bernoulli", seed=0, init=bad, learning_rate=0.0)
