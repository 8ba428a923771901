"""Agreement with hmmlearn 0.3.3 (outputs committed by tests/_scripts/hmmlearn_reference.py).

hmmlearn is not imported: its posteriors, log-likelihoods, Viterbi paths and a 10-iteration
Baum-Welch fit on fixed simulated data live in ``tests/data/epigenomics/hmmlearn_reference.npz``.
"""

from pathlib import Path

import numpy as np
import pytest

from diffomics.epigenomics import (
    HMMParams,
    baum_welch,
    emission_log_prob,
    forward_backward,
    viterbi,
)

REF = Path(__file__).parents[1] / "data" / "epigenomics" / "hmmlearn_reference.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(REF) as f:
        return dict(f)


def _natural(means, model):
    return np.log(means / (1.0 - means)) if model == "bernoulli" else np.log(means)


@pytest.mark.parametrize("model", ["poisson", "bernoulli"])
def test_posteriors_likelihood_and_viterbi_equal_hmmlearn(ref, model):
    r = {k.removeprefix(f"{model}_"): v for k, v in ref.items() if k.startswith(model)}
    x = r["x"].astype(np.float32)
    log_e = emission_log_prob(x, _natural(r["means"], model), emission_model=model)
    log_pi, log_a = np.log(r["pi"]), np.log(r["transmat"])
    log_m, ll = forward_backward(log_pi, log_a, log_e)
    np.testing.assert_allclose(np.exp(log_m), r["posteriors"], atol=1e-6)
    np.testing.assert_allclose(float(ll), r["loglik"], rtol=2e-6)
    path, log_prob = viterbi(log_pi, log_a, log_e)
    np.testing.assert_array_equal(np.asarray(path), r["viterbi"])
    np.testing.assert_allclose(float(log_prob), r["viterbi_logprob"], rtol=2e-6)


def test_baum_welch_equals_hmmlearn_fit(ref):
    r = {k.removeprefix("poisson_"): v for k, v in ref.items() if k.startswith("poisson")}
    init = HMMParams(
        np.log(r["init_pi"]), np.log(r["init_transmat"]), np.log(r["init_means"]),
        np.zeros(r["x"].shape[1]),
    )  # fmt: skip
    n_iter = len(r["fit_history"])
    x = r["x"].astype(np.float32)
    res = baum_welch(x, init, emission_model="poisson", max_iter=n_iter, tol=0.0)
    # hmmlearn's monitor records the log-likelihood entering each iteration, as ours does
    ours = res.log_likelihood[: len(r["fit_history"])]
    np.testing.assert_allclose(ours, r["fit_history"][: len(ours)], rtol=2e-6)
    p = res.params
    np.testing.assert_allclose(np.exp(p.emission), r["fit_means"], rtol=1e-5)
    np.testing.assert_allclose(np.exp(p.log_A), r["fit_transmat"], atol=1e-6)
    np.testing.assert_allclose(np.exp(p.log_pi), r["fit_pi"], atol=1e-6)
