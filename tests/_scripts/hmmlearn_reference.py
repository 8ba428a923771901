"""Reference HMM posteriors, likelihoods, Viterbi paths and Baum-Welch fits from hmmlearn.

Run in the benchmark environment (hmmlearn is never a dependency of diffomics):

    .venv-bench/bin/python tests/_scripts/hmmlearn_reference.py

writes ``tests/data/epigenomics/hmmlearn_reference.npz``, read by
``tests/epigenomics/test_hmmlearn_reference.py``. Data: `tests/epigenomics/simulate.py`.

- ``poisson_*``: 1,000 bins x 6 marks of counts from 4 planted states; `hmmlearn.hmm.PoissonHMM`
  with the true parameters: ``predict_proba`` (posterior marginals), ``score``
  (log-likelihood), ``decode(algorithm="viterbi")``; then ``fit`` for exactly 10 Baum-Welch
  iterations (``tol=-inf``, no priors) from a fixed start (``poisson_init_*``), giving the
  fitted parameters and ``monitor_.history`` (log-likelihood before each M-step).
- ``bernoulli_*``: 1,000 bins x 6 binary marks from 4 planted states. hmmlearn has no
  multivariate Bernoulli HMM, but independent Bernoulli marks are exactly a categorical
  emission over the 2**6 mark combinations (symbol ``sum_m x_m 2**m``) with probability
  ``prod_m p_km**x_m (1 - p_km)**(1 - x_m)``; `hmmlearn.hmm.CategoricalHMM` with that
  emission matrix gives the reference posteriors, log-likelihood and Viterbi path.
"""

import sys
from pathlib import Path

import hmmlearn
import numpy as np
from hmmlearn import hmm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.epigenomics.simulate import simulate  # noqa: E402

OUT = REPO / "tests" / "data" / "epigenomics" / "hmmlearn_reference.npz"
N_BINS, N_STATES, N_MARKS, N_ITER = 1000, 4, 6, 10


def poisson() -> dict:
    sim = simulate(N_BINS, model="poisson", n_states=N_STATES, n_marks=N_MARKS, seed=1)
    x = sim.x.astype(np.int64)
    model = hmm.PoissonHMM(n_components=N_STATES, init_params="", params="")
    model.startprob_, model.transmat_, model.lambdas_ = sim.pi, sim.transmat, sim.means
    logprob, path = model.decode(x, algorithm="viterbi")
    out = {
        "x": x.astype(np.int16),
        "pi": sim.pi,
        "transmat": sim.transmat,
        "means": sim.means,
        "posteriors": model.predict_proba(x),
        "loglik": np.float64(model.score(x)),
        "viterbi": path,
        "viterbi_logprob": np.float64(logprob),
    }
    # Baum-Welch from a fixed start, exactly N_ITER iterations, no priors
    init_pi = np.array([0.4, 0.3, 0.2, 0.1])
    init_a = np.full((N_STATES, N_STATES), 0.1) + np.diag([0.5, 0.4, 0.3, 0.2])
    init_a /= init_a.sum(axis=1, keepdims=True)
    init_means = sim.means * np.array([[1.5], [0.7], [1.2], [0.5]]) + 1.0
    fit = hmm.PoissonHMM(
        n_components=N_STATES, init_params="", params="stl", n_iter=N_ITER, tol=-np.inf,
        lambdas_prior=0.0, lambdas_weight=0.0,
    )  # fmt: skip
    fit.startprob_, fit.transmat_, fit.lambdas_ = init_pi, init_a, init_means
    fit.fit(x)
    out.update(
        {
            "init_pi": init_pi,
            "init_transmat": init_a,
            "init_means": init_means,
            "fit_pi": fit.startprob_,
            "fit_transmat": fit.transmat_,
            "fit_means": fit.lambdas_,
            "fit_history": np.asarray(fit.monitor_.history),
        }
    )
    return out


def bernoulli() -> dict:
    sim = simulate(N_BINS, model="bernoulli", n_states=N_STATES, n_marks=N_MARKS, seed=2)
    bits = (np.arange(2**N_MARKS)[:, None] >> np.arange(N_MARKS)[None, :]) & 1  # (64, 6)
    emission = np.prod(
        np.where(bits[None, :, :] == 1, sim.means[:, None, :], 1.0 - sim.means[:, None, :]),
        axis=2,
    )  # (n_states, 64)
    symbols = (sim.x.astype(np.int64) << np.arange(N_MARKS)[None, :]).sum(axis=1)[:, None]
    model = hmm.CategoricalHMM(
        n_components=N_STATES, n_features=2**N_MARKS, init_params="", params=""
    )
    model.startprob_, model.transmat_, model.emissionprob_ = sim.pi, sim.transmat, emission
    logprob, path = model.decode(symbols, algorithm="viterbi")
    return {
        "x": sim.x.astype(np.int8),
        "pi": sim.pi,
        "transmat": sim.transmat,
        "means": sim.means,
        "posteriors": model.predict_proba(symbols),
        "loglik": np.float64(model.score(symbols)),
        "viterbi": path,
        "viterbi_logprob": np.float64(logprob),
    }


def main() -> None:
    arrays = {f"poisson_{k}": v for k, v in poisson().items()}
    arrays.update({f"bernoulli_{k}": v for k, v in bernoulli().items()})
    arrays["versions"] = np.array([f"hmmlearn {hmmlearn.__version__}", f"numpy {np.__version__}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {', '.join(arrays['versions'])}")


if __name__ == "__main__":
    main()
