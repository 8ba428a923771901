"""HMM inference: forward-backward, likelihood and Viterbi against slow, obvious oracles."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from diffomics import ShapeError
from diffomics.epigenomics import (
    emission_log_prob,
    expected_transitions,
    forward_backward,
    hmm_log_likelihood,
    hmm_messages,
    viterbi,
)
from tests.epigenomics.simulate import simulate, sticky_transitions


def _random_hmm(rng, n_bins=5, n_states=3):
    log_pi = np.log(rng.dirichlet(np.ones(n_states)))
    log_a = np.log(rng.dirichlet(np.ones(n_states), size=n_states))
    log_e = rng.normal(-2.0, 1.5, size=(n_bins, n_states))  # need not be normalised
    return log_pi, log_a, log_e


def _joint_log_probs(log_pi, log_a, log_e):
    """log p(path, x) of every path, by enumeration: (paths, values)."""
    n_bins, n_states = log_e.shape
    paths = np.array(list(itertools.product(range(n_states), repeat=n_bins)))
    t = np.arange(n_bins)
    values = (
        log_pi[paths[:, 0]]
        + log_e[t[None, :], paths].sum(axis=1)
        + log_a[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    )
    return paths, values


def _numpy_forward(log_pi, log_a, log_e):
    """Textbook forward pass in float64 (Rabiner 1989, eq. 19-20), unscaled: log alpha_t."""
    alpha = [log_pi + log_e[0]]
    for t in range(1, len(log_e)):
        alpha.append(logsumexp(alpha[-1][:, None] + log_a, axis=0) + log_e[t])
    return np.array(alpha)


def _numpy_backward(log_a, log_e):
    """Textbook backward pass in float64 (Rabiner 1989, eq. 24-25), unscaled: log beta_t."""
    beta = [np.zeros(log_e.shape[1])]
    for t in range(len(log_e) - 2, -1, -1):
        beta.append(logsumexp(log_a + (log_e[t + 1] + beta[-1])[None, :], axis=1))
    return np.array(beta[::-1])


def test_forward_backward_equals_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(4):
        log_pi, log_a, log_e = _random_hmm(rng)
        paths, values = _joint_log_probs(log_pi, log_a, log_e)
        loglik = logsumexp(values)
        post = np.exp(values - loglik)
        marginals = np.stack([np.bincount(paths[:, t], post, minlength=3) for t in range(5)])
        log_m, ll = forward_backward(log_pi, log_a, log_e)
        np.testing.assert_allclose(float(ll), loglik, rtol=1e-5)
        np.testing.assert_allclose(np.exp(log_m), marginals, atol=2e-6)
        # pairwise marginals summed over t (the Baum-Welch E-step)
        xi = np.zeros((3, 3))
        for t in range(4):
            np.add.at(xi, (paths[:, t], paths[:, t + 1]), post)
        got = expected_transitions(log_a, log_e, hmm_messages(log_pi, log_a, log_e))
        np.testing.assert_allclose(got, xi, atol=5e-6)


def test_tempered_marginals_equal_enumeration_of_the_powered_joint():
    rng = np.random.default_rng(1)
    log_pi, log_a, log_e = _random_hmm(rng)
    paths, values = _joint_log_probs(log_pi, log_a, log_e)
    for temperature in (0.5, 3.0):
        w = np.exp(values / temperature - logsumexp(values / temperature))
        want = np.stack([np.bincount(paths[:, t], w, minlength=3) for t in range(5)])
        log_m, ll = forward_backward(log_pi, log_a, log_e, temperature=temperature)
        np.testing.assert_allclose(np.exp(log_m), want, atol=2e-6)
        np.testing.assert_allclose(float(ll), logsumexp(values / temperature), rtol=1e-5)
    # a cold posterior concentrates on the Viterbi path
    cold, _ = forward_backward(log_pi, log_a, log_e, temperature=0.02)
    warm, _ = forward_backward(log_pi, log_a, log_e)
    np.testing.assert_array_equal(np.argmax(cold, axis=1), paths[np.argmax(values)])
    assert np.exp(cold).max(axis=1).mean() > np.exp(warm).max(axis=1).mean() + 0.1


def test_viterbi_equals_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(6):
        log_pi, log_a, log_e = _random_hmm(rng)
        paths, values = _joint_log_probs(log_pi, log_a, log_e)
        path, log_prob = viterbi(log_pi, log_a, log_e)
        np.testing.assert_array_equal(np.asarray(path), paths[np.argmax(values)])
        np.testing.assert_allclose(float(log_prob), values.max(), rtol=1e-5)
        assert path.dtype == jnp.int32


@pytest.fixture(scope="module")
def long_track():
    sim = simulate(1000, model="poisson", n_states=4, seed=3)
    log_e = np.asarray(emission_log_prob(sim.x, np.log(sim.means), emission_model="poisson"))
    return np.log(sim.pi), np.log(sim.transmat), log_e.astype(np.float64), sim


def test_long_sequence_equals_float64_forward_backward(long_track):
    log_pi, log_a, log_e, _ = long_track
    alpha, beta = _numpy_forward(log_pi, log_a, log_e), _numpy_backward(log_a, log_e)
    want = logsumexp(alpha[-1])
    log_m, ll = forward_backward(log_pi, log_a, log_e)
    assert abs(want) > 5e3  # unscaled float32 log messages would lose ~1e-3 here
    np.testing.assert_allclose(float(ll), want, rtol=2e-6)
    np.testing.assert_allclose(float(hmm_log_likelihood(log_pi, log_a, log_e)), want, rtol=2e-6)
    np.testing.assert_allclose(np.exp(log_m), np.exp(alpha + beta - want), atol=2e-5)


def test_posteriors_recover_the_planted_states(long_track):
    log_pi, log_a, log_e, sim = long_track
    log_m, _ = forward_backward(log_pi, log_a, log_e)
    path, _ = viterbi(log_pi, log_a, log_e)
    assert (np.argmax(log_m, axis=1) == sim.states).mean() > 0.97
    assert (np.asarray(path) == sim.states).mean() > 0.97


def test_gradient_of_the_log_likelihood_is_the_posterior():
    # d log p(x) / d log_emission[t, k] = p(s_t = k | x), and d log p(x) / d log_A[i, j] is the
    # expected number of i -> j transitions (Eisner 2016): the scan's reverse-mode gradient
    # against the forward-backward statistics
    rng = np.random.default_rng(4)
    log_pi, log_a, log_e = (jnp.asarray(v, jnp.float32) for v in _random_hmm(rng))
    grad_a, grad_e = jax.grad(hmm_log_likelihood, argnums=(1, 2))(log_pi, log_a, log_e)
    log_m, _ = forward_backward(log_pi, log_a, log_e)
    np.testing.assert_allclose(grad_e, np.exp(log_m), atol=1e-5)
    xi = expected_transitions(log_a, log_e, hmm_messages(log_pi, log_a, log_e))
    np.testing.assert_allclose(grad_a, xi, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["bernoulli", "poisson", "negative_binomial"])
def test_emission_log_prob_equals_scipy(model):
    # the shapes of the tracks in the other tests (1000 bins, 4 states, 6 marks), so the
    # compiled kernels are shared
    rng = np.random.default_rng(6)
    means = rng.uniform(0.1, 0.9, (4, 6)) if model == "bernoulli" else rng.gamma(2.0, 2.0, (4, 6))
    theta = np.array([0.5, 2.0, 10.0, 100.0, 1.0, 5.0])
    if model == "bernoulli":
        x = (rng.random((1000, 6)) < 0.5).astype(np.float64)
        natural = np.log(means / (1 - means))
        per = stats.bernoulli.logpmf(x[:, None, :], means[None])
    else:
        x = rng.poisson(3.0, (1000, 6)).astype(np.float64)
        natural = np.log(means)
        if model == "poisson":
            per = stats.poisson.logpmf(x[:, None, :], means[None])
        else:
            per = stats.nbinom.logpmf(x[:, None, :], theta, theta / (theta + means[None]))
    got = emission_log_prob(x, natural, emission_model=model, log_theta=np.log(theta))
    np.testing.assert_allclose(got, per.sum(axis=-1), rtol=2e-5, atol=2e-5)


def test_shape_errors_name_the_arguments():
    log_pi, log_a = np.log(np.full(2, 0.5)), np.log(sticky_transitions(2, 0.9))
    with pytest.raises(ShapeError, match="log_emission"):
        forward_backward(log_pi, log_a, np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="no bins"):
        viterbi(log_pi, log_a, np.zeros((0, 2)))
