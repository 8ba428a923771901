"""Fitting chromatin-state HMMs: initialisation, Baum-Welch EM and gradient fitting."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array
from jax.scipy.special import logsumexp

from diffomics.core._checks import check_positive
from diffomics.core._errors import ConfigError
from diffomics.epigenomics._emissions import check_histone_marks, emission_log_prob
from diffomics.epigenomics._hmm import _expected_transitions, _forward, _messages_impl

__all__ = [
    "BaumWelchResult",
    "HMMFitResult",
    "HMMParams",
    "baum_welch",
    "fit_hmm",
    "hmm_neg_log_likelihood",
    "init_hmm_params",
]

_FLOOR = 1e-30  # smallest probability kept, so that no log-parameter is -inf
_P_CLIP = 1e-6  # Bernoulli presence probabilities are kept in [_P_CLIP, 1 - _P_CLIP]


class HMMParams(NamedTuple):
    """Parameters of a chromatin-state HMM (a JAX pytree).

    Attributes:
      log_pi: log initial state distribution, `(n_states,)`.
      log_A: log transition matrix, `(n_states, n_states)`, ``log_A[i, j] = log p(j | i)``.
      emission: natural emission parameters, `(n_states, n_marks)`: logit of the presence
        probability (``"bernoulli"``) or log mean count (``"poisson"``,
        ``"negative_binomial"``); see `emission_log_prob`.
      log_theta: log inverse dispersion per mark, `(n_marks,)`, read only by
        ``"negative_binomial"``.

    `log_pi` and the rows of `log_A` may be unnormalised logits; `normalized` log-normalises
    them (the fitting functions return normalised parameters).
    """

    log_pi: Array
    log_A: Array
    emission: Array
    log_theta: Array

    def normalized(self) -> HMMParams:
        """The same model with `log_pi` and the rows of `log_A` log-normalised."""
        return self._replace(
            log_pi=jax.nn.log_softmax(self.log_pi), log_A=jax.nn.log_softmax(self.log_A, axis=-1)
        )


def hmm_neg_log_likelihood(params: HMMParams, x: Array, *, emission_model: str) -> Array:
    """Negative log-likelihood per bin of the marks under an HMM (forward algorithm).

    The training loss of `fit_hmm` and of `ChromatinStateAnnotator.loss`; `params` may hold
    unnormalised logits (see `HMMParams.normalized`).

    Args:
      params: `HMMParams`.
      x: marks, `(n_bins, n_marks)`.
      emission_model: ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.

    Returns:
      Scalar, nats per bin.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = HMMParams(jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((2, 1)), jnp.zeros(1))
      >>> round(float(hmm_neg_log_likelihood(p, jnp.ones((4, 1)), emission_model="bernoulli")), 4)
      0.6931
    """
    return _neg_log_likelihood(params, jnp.asarray(x), emission_model=emission_model)


@functools.partial(jax.jit, static_argnames="emission_model")
def _neg_log_likelihood(params: HMMParams, x: Array, *, emission_model: str) -> Array:
    p = params.normalized()
    log_e = emission_log_prob(x, p.emission, emission_model=emission_model, log_theta=p.log_theta)
    return -jnp.sum(_forward(p.log_pi, p.log_A, log_e)[1]) / x.shape[0]


def _state_means(x: np.ndarray, weights: np.ndarray, prior_mean: np.ndarray) -> np.ndarray:
    # weighted means with one pseudo-bin at the overall mean, so no state is empty
    return (weights.T @ x + prior_mean[None, :]) / (weights.sum(axis=0)[:, None] + 1.0)


def _natural(mean, emission_model: str, xp=jnp):
    """Natural parameters (`emission_log_prob`) of the state means, in numpy or jax."""
    if emission_model == "bernoulli":
        p = xp.clip(mean, _P_CLIP, 1.0 - _P_CLIP)
        return xp.log(p) - xp.log1p(-p)
    return xp.log(xp.maximum(mean, _P_CLIP))


def _sq_dist(feats: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (feats**2).sum(1)[:, None] - 2.0 * feats @ centres.T + (centres**2).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans(feats: np.ndarray, k: int, rng, n_iter: int) -> tuple[np.ndarray, float]:
    """One k-means++ seeded Lloyd run: (labels, within-cluster sum of squares)."""
    n = feats.shape[0]
    centres = feats[[rng.integers(n)]]
    d2 = _sq_dist(feats, centres)[:, 0]
    for _ in range(1, k):  # next centre with probability proportional to squared distance
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres = np.vstack([centres, feats[pick]])
        d2 = np.minimum(d2, _sq_dist(feats, feats[[pick]])[:, 0])
    for _ in range(n_iter):
        labels = np.argmin(_sq_dist(feats, centres), axis=1)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, feats)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    d = _sq_dist(feats, centres)
    labels = np.argmin(d, axis=1)
    return labels, float(d[np.arange(n), labels].sum())


def init_hmm_params(
    x,
    *,
    n_states: int,
    emission_model: str,
    seed: int,
    self_transition: float = 0.9,
    theta: float = 10.0,
    kmeans_iterations: int = 20,
    kmeans_restarts: int = 10,
) -> HMMParams:
    """Starting parameters for `baum_welch` and `fit_hmm`, from k-means clusters of the bins.

    The bins are clustered by k-means (k-means++ seeding from `seed`, then Lloyd iterations,
    keeping the best of `kmeans_restarts` runs by within-cluster sum of squares; on ``log1p``
    counts for the count models), and each state's emission mean is the mean of its cluster
    with one pseudo-bin at the overall mean. EM and gradient fits find local optima, so a
    start near the planted partition matters (hmmlearn also starts from k-means). The initial
    distribution is uniform and the transition matrix keeps a state with probability
    `self_transition` and moves to each other state with equal probability.

    Args:
      x: marks, `(n_bins, n_marks)` (see `emission_log_prob`).
      n_states: number of chromatin states, >= 1 and <= n_bins.
      emission_model: ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.
      seed: keyword-only seed of the k-means++ seeding; the same seed gives the same start.
      self_transition: initial probability of staying in a state, in (0, 1).
      theta: initial inverse dispersion of every mark (``"negative_binomial"``), > 0.
      kmeans_iterations: Lloyd iterations after seeding, >= 0.
      kmeans_restarts: k-means runs (each seeded afresh), >= 1.

    Returns:
      Normalised `HMMParams` (float32).

    Raises:
      ConfigError: a setting out of range.
      ShapeError, NonFiniteError, CountsError: invalid `x` (see `check_histone_marks`).

    Examples:
      >>> import numpy as np
      >>> x = np.repeat(np.eye(2), 5, axis=0)
      >>> p = init_hmm_params(x, n_states=2, emission_model="bernoulli", seed=0)
      >>> sorted(np.round(1 / (1 + np.exp(-np.asarray(p.emission[:, 0]))), 2).tolist())
      [0.08, 0.92]
    """
    check_histone_marks(x, "x", n_marks=None, emission_model=emission_model)
    arr = np.asarray(x, dtype=np.float64)
    n_bins = arr.shape[0]
    if not isinstance(n_states, int) or not 1 <= n_states <= n_bins:
        msg = f"n_states must be an int in [1, n_bins={n_bins}]; found {n_states!r}."
        raise ConfigError(msg)
    if not 0.0 < self_transition < 1.0:
        msg = f"self_transition must be in (0, 1); found {self_transition!r}."
        raise ConfigError(msg)
    check_positive(theta, "theta")
    if kmeans_iterations < 0 or kmeans_restarts < 1:
        msg = (
            "kmeans_iterations must be >= 0 and kmeans_restarts >= 1; found "
            f"{kmeans_iterations} and {kmeans_restarts}."
        )
        raise ConfigError(msg)
    feats = arr if emission_model == "bernoulli" else np.log1p(arr)
    rng = np.random.default_rng(seed)
    runs = [_kmeans(feats, n_states, rng, kmeans_iterations) for _ in range(kmeans_restarts)]
    labels = min(runs, key=lambda run: run[1])[0]
    one_hot = np.eye(n_states)[labels]
    mean = _state_means(arr, one_hot, arr.mean(axis=0))
    off = (1.0 - self_transition) / max(n_states - 1, 1)
    a = np.full((n_states, n_states), off)
    np.fill_diagonal(a, self_transition if n_states > 1 else 1.0)
    return HMMParams(
        log_pi=jnp.asarray(np.full(n_states, -np.log(n_states)), jnp.float32),
        log_A=jnp.asarray(np.log(a), jnp.float32),
        emission=jnp.asarray(_natural(mean, emission_model, np), jnp.float32),
        log_theta=jnp.asarray(np.full(arr.shape[1], np.log(theta)), jnp.float32),
    )


class BaumWelchResult(NamedTuple):
    """What `baum_welch` returns.

    Attributes:
      params: the fitted, normalised `HMMParams`.
      log_likelihood: log-likelihood (nats) of the parameters entering each iteration, then of
        the returned parameters, `(n_iter + 1,)`; non-decreasing up to float32 rounding.
      n_iter: EM iterations run.
      converged: whether the last gain fell below `tol` before `max_iter`.
    """

    params: HMMParams
    log_likelihood: np.ndarray
    n_iter: int
    converged: bool


@functools.partial(jax.jit, static_argnames="emission_model")
def _em_step(params: HMMParams, x: Array, *, emission_model: str) -> tuple[HMMParams, Array]:
    log_e = emission_log_prob(
        x, params.emission, emission_model=emission_model, log_theta=params.log_theta
    )
    m = _messages_impl(params.log_pi, params.log_A, log_e)
    log_gamma = m.log_alpha + m.log_beta
    gamma = jnp.exp(log_gamma - logsumexp(log_gamma, axis=1, keepdims=True))  # see _hmm
    xi = _expected_transitions(params.log_A, log_e, m)
    a = xi / jnp.maximum(jnp.sum(xi, axis=1, keepdims=True), _FLOOR)
    # a state no bin visits keeps its emission; the mean is the gamma-weighted mean of x,
    # the exact M-step for all three models (for the negative binomial at fixed theta)
    weight = jnp.sum(gamma, axis=0)
    mean = (gamma.T @ x) / jnp.maximum(weight, _FLOOR)[:, None]
    emission = jnp.where((weight > 0)[:, None], _natural(mean, emission_model), params.emission)
    new = HMMParams(
        log_pi=jnp.log(jnp.maximum(gamma[0], _FLOOR)),
        log_A=jnp.log(jnp.maximum(a, _FLOOR)),
        emission=emission,
        log_theta=params.log_theta,
    )
    return new, jnp.sum(m.log_c)


def baum_welch(
    x,
    init: HMMParams,
    *,
    emission_model: str,
    max_iter: int = 100,
    tol: float = 1e-2,
) -> BaumWelchResult:
    """Maximum-likelihood HMM by Baum-Welch expectation-maximisation (as ChromHMM learns).

    Each iteration runs forward-backward (`forward_backward`'s normalised messages), then
    sets the initial distribution to the first bin's posterior, the transitions to the
    expected transition counts (`expected_transitions`) normalised per row, and each state's
    emission mean to the posterior-weighted mean of the marks. Bernoulli probabilities are
    clipped to [1e-6, 1 - 1e-6] and Poisson / NB means floored at 1e-6. The NB inverse
    dispersion stays at its initial value (a generalised EM step: the mean update is exact
    for fixed theta); learn it by `fit_hmm`. The log-likelihood never decreases (Dempster,
    Laird & Rubin 1977), up to float32 rounding.

    Args:
      x: marks, `(n_bins, n_marks)` (see `emission_log_prob`).
      init: starting `HMMParams`, e.g. from `init_hmm_params`.
      emission_model: ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.
      max_iter: most EM iterations, >= 1.
      tol: stop when an iteration gains less than `tol` nats of total log-likelihood, >= 0;
        0 runs exactly `max_iter` iterations.

    Returns:
      `BaumWelchResult`.

    Raises:
      ConfigError: a setting out of range.
      ShapeError: `init` does not match `x`.
      NonFiniteError, CountsError: invalid `x` (see `check_histone_marks`).

    References:
      Rabiner 1989 (see `forward_backward`); Baum, Petrie, Soules & Weiss, Ann. Math. Statist.
      41:164 (1970), https://doi.org/10.1214/aoms/1177697196; Ernst & Kellis, Nature Methods
      9:215 (2012).

    Examples:
      >>> import numpy as np
      >>> x = np.repeat(np.eye(2), 20, axis=0)
      >>> init = init_hmm_params(x, n_states=2, emission_model="bernoulli", seed=0)
      >>> res = baum_welch(x, init, emission_model="bernoulli")
      >>> bool(np.all(np.diff(res.log_likelihood) > -1e-3)), res.converged
      (True, True)
    """
    n_states, n_marks = init.emission.shape
    check_histone_marks(x, "x", n_marks=n_marks, emission_model=emission_model)
    if max_iter < 1:
        msg = f"max_iter must be >= 1; found {max_iter}."
        raise ConfigError(msg)
    check_positive(tol, "tol", allow_zero=True)
    x = jnp.asarray(x, jnp.float32)
    params = init.normalized()
    history, converged = [], False
    for _ in range(max_iter):
        params_next, ll = _em_step(params, x, emission_model=emission_model)
        history.append(float(ll))
        params = params_next
        if tol > 0 and len(history) > 1 and history[-1] - history[-2] < tol:
            converged = True
            break
    # the likelihood of the returned parameters: one more E-step (same compiled program)
    history.append(float(_em_step(params, x, emission_model=emission_model)[1]))
    return BaumWelchResult(params, np.asarray(history), len(history) - 1, converged)


class HMMFitResult(NamedTuple):
    """What `fit_hmm` returns.

    Attributes:
      params: the fitted, normalised `HMMParams`.
      history: loss (negative log-likelihood per bin, nats) before each step, `(n_steps,)`.
    """

    params: HMMParams
    history: np.ndarray


@functools.partial(jax.jit, static_argnames=("emission_model", "n_steps", "learn_theta"))
def _adam_fit(params, x, learning_rate, *, emission_model, n_steps, learn_theta):
    tx = optax.adam(learning_rate)

    def loss(p):
        if not learn_theta:
            p = p._replace(log_theta=jax.lax.stop_gradient(p.log_theta))
        return hmm_neg_log_likelihood(p, x, emission_model=emission_model)

    def step(carry, _):
        p, s = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    (params, _), history = jax.lax.scan(step, (params, tx.init(params)), None, length=n_steps)
    return params.normalized(), history


def fit_hmm(
    x,
    *,
    n_states: int,
    emission_model: str,
    seed: int,
    init: HMMParams | None = None,
    n_steps: int = 300,
    learning_rate: float = 0.05,
    self_transition: float = 0.9,
    learn_theta: bool = True,
) -> HMMFitResult:
    """Maximum-likelihood HMM by gradient descent (Adam) on the forward-algorithm likelihood.

    The alternative to `baum_welch` when the HMM is part of a larger differentiable model:
    the same loss (`hmm_neg_log_likelihood`), minimised over unconstrained parameters (the
    initial distribution and transition rows as softmax logits) in one compiled
    ``lax.scan`` of `n_steps` Adam steps. Unlike `baum_welch` it also learns the NB
    inverse dispersion.

    Args:
      x: marks, `(n_bins, n_marks)` (see `emission_log_prob`).
      n_states: number of chromatin states.
      emission_model: ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.
      seed: keyword-only seed of the starting point (`init_hmm_params`); unused with `init`.
      init: starting `HMMParams`; None: `init_hmm_params(x, seed=seed, ...)`.
      n_steps: Adam steps, >= 1.
      learning_rate: Adam step size, > 0.
      self_transition: passed to `init_hmm_params`.
      learn_theta: fit the NB inverse dispersion (``"negative_binomial"`` only).

    Returns:
      `HMMFitResult`.

    Raises:
      ConfigError: a setting out of range.
      NonFiniteError, CountsError, ShapeError: invalid `x`.

    Examples:
      >>> import numpy as np
      >>> x = np.repeat(np.eye(2), 20, axis=0)
      >>> res = fit_hmm(x, n_states=2, emission_model="bernoulli", seed=0, n_steps=50)
      >>> bool(res.history[-1] < res.history[0])
      True
    """
    if init is None:
        init = init_hmm_params(
            x, n_states=n_states, emission_model=emission_model, seed=seed,
            self_transition=self_transition,
        )  # fmt: skip
    if init.emission.shape[0] != n_states:
        msg = f"init has {init.emission.shape[0]} states; n_states is {n_states}."
        raise ConfigError(msg)
    check_histone_marks(x, "x", n_marks=init.emission.shape[1], emission_model=emission_model)
    if not isinstance(n_steps, int) or n_steps < 1:
        msg = f"n_steps must be an int >= 1; found {n_steps!r}."
        raise ConfigError(msg)
    check_positive(learning_rate, "learning_rate")
    params, history = _adam_fit(
        jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), init),
        jnp.asarray(x, jnp.float32),
        learning_rate,
        emission_model=emission_model,
        n_steps=n_steps,
        learn_theta=learn_theta and emission_model == "negative_binomial",
    )
    history = np.asarray(history)
    if not np.all(np.isfinite(history)):
        msg = "the loss became non-finite; lower learning_rate."
        raise ConfigError(msg)
    return HMMFitResult(params, history)
