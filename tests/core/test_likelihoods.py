from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import gammaln

from diffomics.core import gaussian_log_prob, nb_log_prob, poisson_log_prob
from diffomics.core._likelihoods import dirichlet_softmax_log_prob

DATA = Path(__file__).parents[1] / "data"


def test_nb_matches_scipy():
    x = np.repeat(np.arange(0, 40, dtype=np.float64)[:, None], 3, axis=1)
    mu = np.tile([0.5, 3.0, 20.0], (40, 1))
    theta = np.tile([0.3, 2.0, 50.0], (40, 1))
    expected = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    got = nb_log_prob(
        jnp.asarray(x, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(theta, jnp.float32)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_nb_matches_scvi_tools():
    """Values computed by scvi-tools 1.4.2 (tests/_scripts/scvi_nb_log_prob.py)."""
    table = pd.read_csv(DATA / "scvi_nb_log_prob.csv", comment="#")
    got = nb_log_prob(
        jnp.asarray(table.x.to_numpy(np.float32)),
        jnp.asarray(table.mu.to_numpy(np.float32)),
        jnp.asarray(table.theta.to_numpy(np.float32)),
    )
    np.testing.assert_allclose(got, table.log_prob, rtol=1e-4, atol=1e-4)


def test_nb_tends_to_poisson():
    x = jnp.arange(0.0, 20.0)
    rate = jnp.full(20, 4.0)
    np.testing.assert_allclose(
        nb_log_prob(x, rate, jnp.full(20, 1e6)), poisson_log_prob(x, rate), atol=1e-3
    )


def test_poisson_and_gaussian_match_scipy():
    x = np.arange(0, 15, dtype=np.float32)
    np.testing.assert_allclose(
        poisson_log_prob(jnp.asarray(x), jnp.float32(3.5)),
        stats.poisson.logpmf(x, 3.5),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        gaussian_log_prob(jnp.asarray(x), jnp.float32(2.0), jnp.float32(3.0)),
        stats.norm.logpdf(x, 2.0, 3.0),
        rtol=1e-5,
    )


def test_nb_gradients_finite_at_zero_counts_and_tiny_mean():
    g = jax.grad(lambda mu, th: nb_log_prob(jnp.zeros(3), mu, th).sum(), argnums=(0, 1))(
        jnp.array([1e-9, 1e-3, 5.0]), jnp.array([0.1, 1.0, 10.0])
    )
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in g)
    assert float(jnp.abs(g[0]).min()) > 0


def test_nb_gradient_in_theta_matches_float64_digammas():
    # the NB's log binomial coefficient is betaln with a hand-written derivative in theta,
    # psi(theta) - psi(theta + x + 1), series for large theta: against scipy in float64
    # from theta 1e-3 to 1e6 and counts 0 to 1e4, the whole NB gradient to 1e-4 relative
    from scipy.special import digamma

    from diffomics.core._likelihoods import digamma_difference

    theta, x = np.meshgrid(np.geomspace(1e-3, 1e6, 300), [0.0, 1.0, 2.0, 6.0, 49.0, 1e3, 1e4])
    mu = np.full_like(theta, 3.0)
    # d/dtheta of logpmf: psi(x + theta) - psi(theta) + log(theta / (theta + mu)) + ...
    expected = (digamma(x + theta) - digamma(theta) + np.log(theta / (theta + mu))
                + (mu - x) / (theta + mu))  # fmt: skip
    got = jax.grad(lambda t: nb_log_prob(jnp.asarray(x, jnp.float32), jnp.asarray(mu, jnp.float32),
                                         t).sum())(jnp.asarray(theta, jnp.float32))  # fmt: skip
    scale = np.abs(digamma(x + theta) - digamma(theta)) + np.abs(expected)
    error = np.abs(np.asarray(got, np.float64) - expected)
    np.testing.assert_array_less(error, 1e-4 * scale + 1e-7)
    d = digamma_difference(jnp.asarray(theta, jnp.float32), jnp.asarray(x + 1.0, jnp.float32))
    reference = digamma(theta) - digamma(theta + x + 1.0)
    np.testing.assert_allclose(np.asarray(d, np.float64), reference, rtol=1e-5)


def test_dirichlet_softmax_basis_density():
    """Equals the simplex Dirichlet density times the softmax Jacobian prod_k p_k."""
    rng = np.random.default_rng(0)
    mean = rng.dirichlet(np.ones(4))
    conc = 6.0
    p = rng.dirichlet(np.ones(4), size=5)
    simplex = stats.dirichlet.logpdf(p.T, conc * mean)
    expected = simplex + np.log(p).sum(axis=1)
    got = dirichlet_softmax_log_prob(
        jnp.log(jnp.asarray(p, jnp.float32)),
        jnp.log(jnp.asarray(mean, jnp.float32)),
        jnp.float32(conc),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # maximal at p = mean
    at_mean = dirichlet_softmax_log_prob(
        jnp.log(jnp.asarray(mean, jnp.float32)),
        jnp.log(jnp.asarray(mean, jnp.float32)),
        jnp.float32(conc),
    )
    assert float(at_mean) > float(got.max())


def test_nb_log_prob_sums_to_one():
    x = np.arange(0, 400, dtype=np.float32)
    total = np.exp(
        np.asarray(
            nb_log_prob(jnp.asarray(x), jnp.float32(7.0), jnp.float32(1.5)), dtype=np.float64
        )
    ).sum()
    assert total == pytest.approx(1.0, abs=1e-4)
    assert gammaln(1.0) == 0.0
