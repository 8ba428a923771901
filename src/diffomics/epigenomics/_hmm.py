"""Hidden Markov model inference in log space: forward-backward, likelihood and Viterbi.

Plain functions, ``jnp`` in and ``jnp`` out, written with `jax.lax.scan` and ``logsumexp``;
differentiable in every float argument and usable under `jax.jit` and `jax.vmap`.

The forward and backward messages are kept normalised at every bin (Rabiner's scaling, done
in log space): ``log_alpha_t`` is the log filtering distribution ``log p(s_t | x_1..t)`` and
``log c_t = log p(x_t | x_1..t-1)``, so the log-likelihood is ``sum_t log c_t`` and the
posterior ``log_alpha_t + log_beta_t`` needs no large cancellation: unnormalised log messages
have the size of the log-likelihood and lose ``1e-7 * |log-likelihood|`` in float32.
Rounding of the backward scale still drifts slowly along the sequence (a few 1e-5 over
thousands of bins); the drift is common to all states of a bin, so the posterior of each bin
(and each pair of bins) is log-normalised over states, which removes it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

from diffomics.core._errors import ShapeError

__all__ = [
    "HMMMessages",
    "expected_transitions",
    "forward_backward",
    "hmm_log_likelihood",
    "hmm_messages",
    "viterbi",
]


class HMMMessages(NamedTuple):
    """Normalised forward-backward messages of one sequence.

    Attributes:
      log_alpha: log filtering distribution ``log p(s_t | x_1..t)``, `(n_bins, n_states)`.
      log_beta: scaled log backward message ``log p(x_t+1..T | s_t) - sum_{u>t} log c_u``,
        `(n_bins, n_states)`; zero at the last bin.
      log_c: ``log p(x_t | x_1..t-1)`` per bin, `(n_bins,)`; sums to the log-likelihood.
    """

    log_alpha: Array
    log_beta: Array
    log_c: Array


def _forward(log_pi: Array, log_a: Array, log_e: Array) -> tuple[Array, Array]:
    def step(prev, e_t):
        a = logsumexp(prev[:, None] + log_a, axis=0) + e_t
        c = logsumexp(a)
        return a - c, (a - c, c)

    a0 = log_pi + log_e[0]
    c0 = logsumexp(a0)
    _, (rest, cs) = jax.lax.scan(step, a0 - c0, log_e[1:])
    return jnp.concatenate([(a0 - c0)[None, :], rest]), jnp.concatenate([c0[None], cs])


def _backward(log_a: Array, log_e: Array, log_c: Array) -> Array:
    def step(nxt, inputs):
        e_next, c_next = inputs
        b = logsumexp(log_a + (e_next + nxt)[None, :], axis=1) - c_next
        return b, b

    last = jnp.zeros(log_e.shape[1], log_e.dtype)
    _, rest = jax.lax.scan(step, last, (log_e[1:], log_c[1:]), reverse=True)
    return jnp.concatenate([rest, last[None, :]])


def _messages_impl(log_pi: Array, log_a: Array, log_e: Array) -> HMMMessages:
    log_alpha, log_c = _forward(log_pi, log_a, log_e)
    return HMMMessages(log_alpha, _backward(log_a, log_e, log_c), log_c)


@jax.jit
def _messages(log_pi, log_a, log_e, temperature=1.0) -> HMMMessages:
    # x / 1.0 == x exactly, so temperature 1 is the model itself
    return _messages_impl(log_pi / temperature, log_a / temperature, log_e / temperature)


@jax.jit
def _posterior(log_pi, log_a, log_e, temperature):
    m = _messages(log_pi, log_a, log_e, temperature)
    log_m = m.log_alpha + m.log_beta
    return log_m - logsumexp(log_m, axis=1, keepdims=True), jnp.sum(m.log_c)


def _check_shapes(log_pi, log_a, log_e) -> None:
    k = log_pi.shape[-1] if log_pi.ndim == 1 else None
    if log_pi.ndim != 1 or log_a.shape != (k, k) or log_e.ndim != 2 or log_e.shape[1] != k:
        msg = (
            "HMM potentials must have shapes log_pi (n_states,), log_A (n_states, n_states) and "
            f"log_emission (n_bins, n_states); found {log_pi.shape}, {log_a.shape} and "
            f"{log_e.shape}."
        )
        raise ShapeError(msg)
    if log_e.shape[0] == 0:
        msg = "log_emission has no bins (shape (0, n_states)); it needs at least one."
        raise ShapeError(msg)


def _potentials(log_pi, log_a, log_e):
    log_pi, log_a, log_e = (jnp.asarray(v) for v in (log_pi, log_a, log_e))
    _check_shapes(log_pi, log_a, log_e)
    return log_pi, log_a, log_e


def hmm_messages(
    log_pi: Array, log_A: Array, log_emission: Array, *, temperature: float = 1.0
) -> HMMMessages:
    """Forward and backward messages, normalised per bin (Rabiner's scaling in log space).

    Args:
      log_pi: log initial state distribution, `(n_states,)`, log-normalised.
      log_A: log transition matrix, `(n_states, n_states)`, ``log_A[i, j] = log p(j | i)``,
        rows log-normalised.
      log_emission: ``log p(x_t | s_t = k)``, `(n_bins, n_states)` (see `emission_log_prob`).
      temperature: divides every log potential (> 0); 1 is the model itself.

    Returns:
      `HMMMessages`.

    Examples:
      >>> import jax.numpy as jnp
      >>> m = hmm_messages(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.full((2, 2), 0.5)),
      ...                  jnp.log(jnp.array([[0.2, 0.6], [0.3, 0.3]])))
      >>> round(float(m.log_c.sum()), 4)  # log(0.4 * 0.3)
      -2.1203
    """
    return _messages(*_potentials(log_pi, log_A, log_emission), temperature)


def forward_backward(
    log_pi: Array, log_A: Array, log_emission: Array, *, temperature: float = 1.0
) -> tuple[Array, Array]:
    """Posterior state marginals and log-likelihood of an HMM by forward-backward in log space.

    ``log p(s_t = k | x_1..T)`` for every bin and state, and ``log p(x_1..T)``, by the
    forward-backward recursions of Rabiner (1989) with `jax.lax.scan` and ``logsumexp``.
    Differentiable in all three arguments (gradients of the log-likelihood with respect to
    ``log_emission`` are the marginals themselves).

    With ``temperature`` T != 1 every log potential is divided by T first: the marginals are
    those of the distribution proportional to ``p(s, x) ** (1 / T)`` (T < 1 sharpens them
    towards the Viterbi path, T > 1 flattens them), and the returned log-likelihood is the log
    normaliser of that tempered model.

    Args:
      log_pi: log initial state distribution, `(n_states,)`, log-normalised.
      log_A: log transition matrix, `(n_states, n_states)`, ``log_A[i, j] = log p(j | i)``,
        rows log-normalised.
      log_emission: ``log p(x_t | s_t = k)`` in nats, `(n_bins, n_states)`.
      temperature: > 0; 1 gives the exact posterior.

    Returns:
      ``(log_marginals, log_likelihood)``: `(n_bins, n_states)`, each row log-normalised
      over states, and a scalar in nats.

    Raises:
      ShapeError: the shapes disagree, or there are no bins.

    References:
      Rabiner, "A tutorial on hidden Markov models and selected applications in speech
      recognition", Proceedings of the IEEE 77:257 (1989), https://doi.org/10.1109/5.18626.

    Examples:
      >>> import jax.numpy as jnp
      >>> log_pi = jnp.log(jnp.array([0.5, 0.5]))
      >>> log_A = jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]]))
      >>> log_e = jnp.log(jnp.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]]))
      >>> log_m, ll = forward_backward(log_pi, log_A, log_e)
      >>> jnp.exp(log_m).sum(axis=1).round(5).tolist(), round(float(ll), 4)
      ([1.0, 1.0, 1.0], -1.7361)
    """
    return _posterior(*_potentials(log_pi, log_A, log_emission), temperature)


@jax.jit
def _log_likelihood(log_pi, log_a, log_e):
    return jnp.sum(_forward(log_pi, log_a, log_e)[1])


def hmm_log_likelihood(log_pi: Array, log_A: Array, log_emission: Array) -> Array:
    """Log-likelihood ``log p(x_1..T)`` of an HMM by the forward algorithm alone (Rabiner 1989).

    Half the work of `forward_backward` when only the likelihood is needed (a training loss).

    Args:
      log_pi: log initial state distribution, `(n_states,)`.
      log_A: log transition matrix, `(n_states, n_states)`, rows log-normalised.
      log_emission: `(n_bins, n_states)`, nats.

    Returns:
      Scalar log-likelihood in nats.

    Examples:
      >>> import jax.numpy as jnp
      >>> ll = hmm_log_likelihood(jnp.log(jnp.array([1.0, 0.0])), jnp.zeros((2, 2)) - jnp.log(2.0),
      ...                         jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]])))
      >>> round(float(ll), 4)  # log(0.5 * (0.5 * 0.25 + 0.5 * 0.75))
      -1.3863
    """
    return _log_likelihood(*_potentials(log_pi, log_A, log_emission))


@jax.jit
def _expected_transitions(log_a, log_e, messages):
    log_alpha, log_beta, _ = messages
    log_xi = log_alpha[:-1, :, None] + log_a[None, :, :] + (log_e[1:] + log_beta[1:])[:, None, :]
    log_xi = log_xi - logsumexp(log_xi, axis=(1, 2), keepdims=True)  # p(s_t, s_t+1 | x)
    return jnp.exp(logsumexp(log_xi, axis=0))


def expected_transitions(log_A: Array, log_emission: Array, messages: HMMMessages) -> Array:
    """Posterior expected number of ``i -> j`` transitions, ``sum_t p(s_t=i, s_t+1=j | x)``.

    The E-step statistic of Baum-Welch (Rabiner 1989, eq. 37-38), from the messages of
    `hmm_messages` computed with the same potentials.

    Args:
      log_A: log transition matrix, `(n_states, n_states)`.
      log_emission: `(n_bins, n_states)`.
      messages: `HMMMessages` of the same sequence.

    Returns:
      Expected counts, `(n_states, n_states)`; they sum to ``n_bins - 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> log_pi, log_A = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.full((2, 2), 0.5))
      >>> log_e = jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]]))
      >>> xi = expected_transitions(log_A, log_e, hmm_messages(log_pi, log_A, log_e))
      >>> xi.round(2).tolist()
      [[0.09, 0.81], [0.01, 0.09]]
    """
    return _expected_transitions(jnp.asarray(log_A), jnp.asarray(log_emission), messages)


@jax.jit
def _viterbi(log_pi, log_a, log_e):
    def step(prev, e_t):
        scores = prev[:, None] + log_a  # (from, to)
        best = jnp.argmax(scores, axis=0)
        d = jnp.max(scores, axis=0) + e_t
        top = jnp.max(d)
        return d - top, (best, top)

    d0 = log_pi + log_e[0]
    top0 = jnp.max(d0)
    last, (back, tops) = jax.lax.scan(step, d0 - top0, log_e[1:])
    end = jnp.argmax(last)

    def trace(state, pointers):
        prev = pointers[state]
        return prev, prev

    _, path = jax.lax.scan(trace, end, back, reverse=True)
    path = jnp.concatenate([path, end[None]]).astype(jnp.int32)
    return path, top0 + jnp.sum(tops) + last[end]


def viterbi(log_pi: Array, log_A: Array, log_emission: Array) -> tuple[Array, Array]:
    """Most probable state sequence of an HMM (Viterbi decoding, in log space).

    The max-product recursion of Rabiner (1989) with `jax.lax.scan`; the running scores are
    shifted by their maximum at every bin (which changes no argmax), so their size stays
    independent of the sequence length. Ties go to the lowest state index.

    Args:
      log_pi: log initial state distribution, `(n_states,)`.
      log_A: log transition matrix, `(n_states, n_states)`, rows log-normalised.
      log_emission: `(n_bins, n_states)`, nats.

    Returns:
      ``(path, log_prob)``: the states, `(n_bins,)` int32, and ``log p(path, x)`` in nats.

    References:
      Rabiner 1989 (see `forward_backward`); Viterbi, "Error bounds for convolutional codes
      and an asymptotically optimum decoding algorithm", IEEE Trans. Inf. Theory 13:260 (1967),
      https://doi.org/10.1109/TIT.1967.1054010.

    Examples:
      >>> import jax.numpy as jnp
      >>> log_pi = jnp.log(jnp.array([0.5, 0.5]))
      >>> log_A = jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]]))
      >>> log_e = jnp.log(jnp.array([[0.9, 0.1], [0.4, 0.6], [0.9, 0.1]]))
      >>> path, lp = viterbi(log_pi, log_A, log_e)
      >>> path.tolist(), round(float(lp), 4)  # log(0.5 * 0.9 * 0.9 * 0.4 * 0.9 * 0.9)
      ([0, 0, 0], -2.0309)
    """
    return _viterbi(*_potentials(log_pi, log_A, log_emission))
