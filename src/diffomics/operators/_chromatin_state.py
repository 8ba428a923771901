"""`ChromatinStateAnnotator`: ChromHMM-style chromatin states of genomic bins as an NNX module."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from diffomics.core._checks import check_choice, check_positive
from diffomics.core._errors import ConfigError, ShapeError
from diffomics.core._numerics import float_dtype
from diffomics.core._operator import Operator, OperatorConfig
from diffomics.epigenomics._emissions import (
    EMISSION_MODELS,
    check_histone_marks,
    emission_log_prob,
)
from diffomics.epigenomics._fit import HMMParams, hmm_neg_log_likelihood
from diffomics.epigenomics._hmm import forward_backward, hmm_log_likelihood, viterbi
from diffomics.operators._keys import CHROMATIN_STATE_KEYS as K

__all__ = ["ChromatinStateAnnotator", "ChromatinStateAnnotatorConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChromatinStateAnnotatorConfig(OperatorConfig):
    """Configuration of `ChromatinStateAnnotator`.

    Attributes:
      n_states: number of chromatin states, >= 2.
      n_marks: number of histone marks (columns of ``histone_marks``), >= 1; checked
        against the data.
      emission_model: ``"bernoulli"`` (binarised marks, independent Bernoulli per mark as
        ChromHMM), ``"poisson"`` or ``"negative_binomial"`` (read counts per bin).
      temperature: divides every log potential before forward-backward, > 0: the
        ``state_probabilities`` are the marginals of ``p(states, marks) ** (1 / temperature)``
        (below 1 sharper, towards the Viterbi path; above 1 flatter). ``log_likelihood`` and
        ``viterbi_path`` are those of the model itself at any temperature.
      self_transition: initial probability of staying in a state (the transition matrix
        starts with this diagonal and spreads the rest evenly), in (0, 1).
      theta: initial inverse dispersion of every mark (learnable), > 0; read only by
        ``"negative_binomial"``.
    """

    n_states: int = 8
    n_marks: int = 6
    emission_model: str = "bernoulli"
    temperature: float = 1.0
    self_transition: float = 0.9
    theta: float = 10.0

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        for name, low in (("n_states", 2), ("n_marks", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                msg = (
                    f"ChromatinStateAnnotatorConfig.{name} must be an int >= {low}; "
                    f"found {value!r}."
                )
                raise ConfigError(msg)
        check_choice(
            self.emission_model, "ChromatinStateAnnotatorConfig.emission_model", EMISSION_MODELS
        )
        check_positive(self.temperature, "ChromatinStateAnnotatorConfig.temperature")
        check_positive(self.theta, "ChromatinStateAnnotatorConfig.theta")
        if not 0.0 < self.self_transition < 1.0:
            msg = (
                "ChromatinStateAnnotatorConfig.self_transition must be in (0, 1); found "
                f"{self.self_transition!r}."
            )
            raise ConfigError(msg)


class ChromatinStateAnnotator(Operator):
    """Chromatin states of genomic bins from histone marks by a hidden Markov model.

    The bins of one chromosome (or region) in order form a Markov chain of `n_states` hidden
    states; each state emits the marks independently (`diffomics.epigenomics.
    emission_log_prob`). ``state_probabilities`` are the posterior marginals by
    forward-backward in log space (`diffomics.epigenomics.forward_backward`),
    ``viterbi_path`` the most probable path (`diffomics.epigenomics.viterbi`) and
    ``log_likelihood`` the log-likelihood of the marks. Parameters: the initial distribution
    and the rows of the transition matrix as softmax logits, the natural emission parameters
    and the NB log inverse dispersion. Fit them by Baum-Welch or Adam
    (`diffomics.epigenomics.baum_welch`, `fit_hmm`) and load them with `set_hmm_params`, or
    train the operator in a larger model with `loss`.

    Inputs (``data`` keys):
      ``histone_marks``: `(n_bins, n_marks)`, one row per genomic bin in genome order;
      0/1 for ``"bernoulli"``, counts >= 0 otherwise; finite.

    Outputs (added keys):
      ``state_probabilities``: `(n_bins, n_states)`, rows sum to 1.
      ``viterbi_path``: `(n_bins,)` int32 state indices.
      ``log_likelihood``: scalar, nats (``log p(histone_marks)``).

    Args:
      config: the `ChromatinStateAnnotatorConfig`.
      rngs: keyword-only Flax random streams for the initial emission parameters.

    References:
      Ernst & Kellis, "ChromHMM: automating chromatin-state discovery and characterization",
      Nature Methods 9:215 (2012), https://doi.org/10.1038/nmeth.1906; Rabiner, Proc. IEEE
      77:257 (1989), https://doi.org/10.1109/5.18626.

    Examples:
      >>> import numpy as np
      >>> from flax import nnx
      >>> cfg = ChromatinStateAnnotatorConfig(n_states=4, n_marks=5)
      >>> op = ChromatinStateAnnotator(cfg, rngs=nnx.Rngs(0))
      >>> marks = (np.random.default_rng(0).random((30, 5)) < 0.3).astype(np.float32)
      >>> out, _, _ = op.apply({"histone_marks": marks}, {}, None)
      >>> out["state_probabilities"].shape, out["viterbi_path"].shape, out["log_likelihood"].shape
      ((30, 4), (30,), ())
    """

    input_keys = (K.HISTONE_MARKS,)

    def __init__(self, config: ChromatinStateAnnotatorConfig, *, rngs: nnx.Rngs) -> None:
        self.config = c = config
        off = (1.0 - c.self_transition) / (c.n_states - 1)
        a = np.full((c.n_states, c.n_states), off)
        np.fill_diagonal(a, c.self_transition)
        self.initial_logits = nnx.Param(jnp.zeros(c.n_states))
        self.transition_logits = nnx.Param(jnp.asarray(np.log(a), jnp.float32))
        self.emission = nnx.Param(jax.random.normal(rngs.params(), (c.n_states, c.n_marks)))
        self.log_theta = nnx.Param(jnp.full(c.n_marks, np.log(c.theta), jnp.float32))

    def hmm_params(self) -> HMMParams:
        """The current parameters as normalised `HMMParams`."""
        return HMMParams(
            self.initial_logits[...],
            self.transition_logits[...],
            self.emission[...],
            self.log_theta[...],
        ).normalized()

    def set_hmm_params(self, params: HMMParams) -> None:
        """Load fitted parameters (from `baum_welch` or `fit_hmm`) into the operator.

        Raises:
          ShapeError: `params` has another number of states or marks than the config.
        """
        c = self.config
        if tuple(params.emission.shape) != (c.n_states, c.n_marks):
            msg = (
                f"params.emission must have shape ({c.n_states}, {c.n_marks}) (n_states, "
                f"n_marks); found {tuple(params.emission.shape)}."
            )
            raise ShapeError(msg)
        self.initial_logits[...] = jnp.asarray(params.log_pi, jnp.float32)
        self.transition_logits[...] = jnp.asarray(params.log_A, jnp.float32)
        self.emission[...] = jnp.asarray(params.emission, jnp.float32)
        self.log_theta[...] = jnp.asarray(params.log_theta, jnp.float32)

    def _marks(self, data: Mapping[str, Any]) -> Array:
        x = data[K.HISTONE_MARKS]
        c = self.config
        check_histone_marks(x, K.HISTONE_MARKS, n_marks=c.n_marks, emission_model=c.emission_model)
        return jnp.asarray(x, float_dtype(x))

    def outputs(self, data: Mapping[str, Any]) -> dict[str, Array]:
        """State probabilities, Viterbi path and log-likelihood (see the class docstring)."""
        c = self.config
        x = self._marks(data)
        p = self.hmm_params()
        log_e = emission_log_prob(
            x, p.emission, emission_model=c.emission_model, log_theta=p.log_theta
        )
        log_m, log_lik = forward_backward(p.log_pi, p.log_A, log_e, temperature=c.temperature)
        if c.temperature != 1.0:
            log_lik = hmm_log_likelihood(p.log_pi, p.log_A, log_e)
        path, _ = viterbi(p.log_pi, p.log_A, log_e)
        return {
            K.STATE_PROBABILITIES: jnp.exp(log_m),
            K.VITERBI_PATH: path,
            K.LOG_LIKELIHOOD: log_lik,
        }

    def loss(self, data: Mapping[str, Any]) -> Array:
        """Negative log-likelihood of ``histone_marks`` per bin (nats), to train the operator.

        Same value as ``-log_likelihood / n_bins`` from `apply`, by the forward pass alone
        (`diffomics.epigenomics.hmm_neg_log_likelihood`).
        """
        x = self._marks(data)
        params = HMMParams(
            self.initial_logits[...],
            self.transition_logits[...],
            self.emission[...],
            self.log_theta[...],
        )
        return hmm_neg_log_likelihood(params, x, emission_model=self.config.emission_model)
