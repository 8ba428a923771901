"""Emission log-likelihoods of histone-mark observations given a chromatin state.

Each mark is independent given the state (ChromHMM's product of Bernoullis, or the count
analogues), so the log-likelihood of a bin in a state is the sum over marks of one of the
package's likelihoods from `diffomics.core` (`bernoulli_log_prob`, `poisson_log_prob`,
`nb_log_prob`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from diffomics.core._checks import check_choice, check_counts, check_matrix, is_traced
from diffomics.core._errors import ConfigError, CountsError
from diffomics.core._likelihoods import bernoulli_log_prob, nb_log_prob, poisson_log_prob

__all__ = ["EMISSION_MODELS", "check_histone_marks", "emission_log_prob", "emission_mean"]

#: Emission models accepted by ``emission_model=`` arguments.
EMISSION_MODELS = ("bernoulli", "poisson", "negative_binomial")


def emission_mean(emission: Array, *, emission_model: str) -> Array:
    """Mean of each mark in each state from the natural emission parameters.

    Args:
      emission: natural parameters, shape `(n_states, n_marks)`: the logit of the presence
        probability for ``"bernoulli"``, the log of the mean count for ``"poisson"`` and
        ``"negative_binomial"``.
      emission_model: one of `EMISSION_MODELS`.

    Returns:
      Presence probability (bernoulli) or expected count per bin, shape `(n_states, n_marks)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> emission_mean(jnp.zeros((1, 2)), emission_model="bernoulli").tolist()
      [[0.5, 0.5]]
    """
    check_choice(emission_model, "emission_model", EMISSION_MODELS)
    if emission_model == "bernoulli":
        return jax.nn.sigmoid(emission)
    return jnp.exp(emission)


def emission_log_prob(
    x: Array,
    emission: Array,
    *,
    emission_model: str,
    log_theta: Array | None = None,
) -> Array:
    """Log-likelihood of every bin's marks under every state, marks independent given the state.

    ``log p(x_t | s_t = k) = sum_m log p(x_tm | emission[k, m])`` with a Bernoulli (ChromHMM's
    model of binarised marks), Poisson or negative-binomial likelihood per mark.

    Args:
      x: marks per genomic bin, shape `(n_bins, n_marks)`: 0/1 for ``"bernoulli"``, counts
        (reads per bin, >= 0) otherwise. Float inputs are differentiable.
      emission: natural parameters, shape `(n_states, n_marks)` (see `emission_mean`).
      emission_model: ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.
      log_theta: log inverse dispersion of the negative binomial, broadcastable to
        `(n_states, n_marks)` (typically `(n_marks,)`); required by ``"negative_binomial"``
        and ignored otherwise.

    Returns:
      Log-likelihood in nats, shape `(n_bins, n_states)`.

    References:
      Ernst & Kellis, "ChromHMM: automating chromatin-state discovery and characterization",
      Nature Methods 9:215 (2012), https://doi.org/10.1038/nmeth.1906.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0]])
      >>> e = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]) / jnp.array([[0.5, 0.5], [0.1, 0.9]]))
      >>> jnp.exp(emission_log_prob(x, e, emission_model="bernoulli")).round(3).tolist()
      [[0.25, 0.81]]
    """
    check_choice(emission_model, "emission_model", EMISSION_MODELS)
    if emission_model == "negative_binomial" and log_theta is None:
        msg = "emission_model='negative_binomial' needs log_theta (n_marks,); found None."
        raise ConfigError(msg)
    return _emission_log_prob(x, emission, log_theta, emission_model=emission_model)


@functools.partial(jax.jit, static_argnames="emission_model")
def _emission_log_prob(x, emission, log_theta, *, emission_model):
    xb = x[:, None, :]
    eb = emission[None, :, :]
    if emission_model == "bernoulli":
        per_mark = bernoulli_log_prob(xb, jax.nn.log_sigmoid(eb))
    elif emission_model == "poisson":
        per_mark = poisson_log_prob(xb, jnp.exp(eb))
    else:
        theta = jnp.broadcast_to(jnp.exp(log_theta), emission.shape)
        per_mark = nb_log_prob(xb, jnp.exp(eb), theta[None, :, :])
    return jnp.sum(per_mark, axis=-1)


def check_histone_marks(x, name: str, *, n_marks: int | None, emission_model: str) -> None:
    """Raise unless `x` is a valid `(n_bins, n_marks)` matrix for `emission_model`.

    Shapes are checked always; values (finite, >= 0, 0/1 for ``"bernoulli"``) only on
    concrete arrays, since under `jax.jit` they are unknown.

    Args:
      x: the marks, `(n_bins, n_marks)`.
      name: the argument name used in messages.
      n_marks: expected number of marks (columns); None accepts any.
      emission_model: one of `EMISSION_MODELS`.

    Raises:
      ShapeError: not 2-D, no bins, or the wrong number of marks.
      NonFiniteError: NaN or inf present.
      CountsError: negative values, or values other than 0 and 1 for ``"bernoulli"``.
    """
    check_choice(emission_model, "emission_model", EMISSION_MODELS)
    check_matrix(x, name, shape=(None, n_marks))
    check_counts(x, name, row_name="bin", allow_empty_rows=True)
    if emission_model == "bernoulli" and not is_traced(x):
        arr = np.asarray(x)
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            msg = (
                f"{name} must be binarised (0 or 1) for emission_model='bernoulli'; found "
                f"{int(bad.sum())} other value(s), e.g. {arr[idx]!r} at index {idx}. Binarise "
                "the signal first (ChromHMM BinarizeBam / BinarizeBed), or use "
                "emission_model='poisson' or 'negative_binomial' for counts."
            )
            raise CountsError(msg)
