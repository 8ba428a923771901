"""Epigenomics: chromatin-state hidden Markov models (ChromHMM-style) as plain JAX functions.

`emission_log_prob` scores each genomic bin's histone marks under each state (independent
Bernoulli per mark as ChromHMM, or Poisson / negative-binomial counts),
`forward_backward` gives the posterior state marginals and the log-likelihood, `viterbi`
the most probable state path, and `baum_welch` (EM) or `fit_hmm` (Adam) fit the parameters.
The `diffomics.operators.epigenomics.ChromatinStateAnnotator` operator calls these functions.

Examples:
  >>> import numpy as np
  >>> from diffomics.epigenomics import (baum_welch, emission_log_prob, forward_backward,
  ...                                    init_hmm_params, viterbi)
  >>> rng = np.random.default_rng(0)
  >>> states = np.repeat([0, 1, 0, 1], 10)  # 40 bins in 4 domains
  >>> x = (rng.random((40, 2)) < np.array([[0.9, 0.1], [0.1, 0.9]])[states]).astype(np.float32)
  >>> init = init_hmm_params(x, n_states=2, emission_model="bernoulli", seed=0)
  >>> p = baum_welch(x, init, emission_model="bernoulli").params
  >>> log_e = emission_log_prob(x, p.emission, emission_model="bernoulli")
  >>> log_m, ll = forward_backward(p.log_pi, p.log_A, log_e)
  >>> path, _ = viterbi(p.log_pi, p.log_A, log_e)
  >>> agree = (np.asarray(path) == states).mean()
  >>> bool(max(agree, 1 - agree) > 0.9)
  True
"""

from diffomics.epigenomics._emissions import EMISSION_MODELS as EMISSION_MODELS
from diffomics.epigenomics._emissions import check_histone_marks as check_histone_marks
from diffomics.epigenomics._emissions import emission_log_prob as emission_log_prob
from diffomics.epigenomics._emissions import emission_mean as emission_mean
from diffomics.epigenomics._fit import BaumWelchResult as BaumWelchResult
from diffomics.epigenomics._fit import HMMFitResult as HMMFitResult
from diffomics.epigenomics._fit import HMMParams as HMMParams
from diffomics.epigenomics._fit import baum_welch as baum_welch
from diffomics.epigenomics._fit import fit_hmm as fit_hmm
from diffomics.epigenomics._fit import hmm_neg_log_likelihood as hmm_neg_log_likelihood
from diffomics.epigenomics._fit import init_hmm_params as init_hmm_params
from diffomics.epigenomics._hmm import HMMMessages as HMMMessages
from diffomics.epigenomics._hmm import expected_transitions as expected_transitions
from diffomics.epigenomics._hmm import forward_backward as forward_backward
from diffomics.epigenomics._hmm import hmm_log_likelihood as hmm_log_likelihood
from diffomics.epigenomics._hmm import hmm_messages as hmm_messages
from diffomics.epigenomics._hmm import viterbi as viterbi

__all__ = [
    "EMISSION_MODELS",
    "BaumWelchResult",
    "HMMFitResult",
    "HMMMessages",
    "HMMParams",
    "baum_welch",
    "check_histone_marks",
    "emission_log_prob",
    "emission_mean",
    "expected_transitions",
    "fit_hmm",
    "forward_backward",
    "hmm_log_likelihood",
    "hmm_messages",
    "hmm_neg_log_likelihood",
    "init_hmm_params",
    "viterbi",
]
