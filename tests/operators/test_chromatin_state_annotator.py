"""`ChromatinStateAnnotator`: operator contract, agreement with the functions, planted states,
jit, gradients, every config field, and bad input."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from diffomics import ConfigError, CountsError, MissingKeyError, NonFiniteError, ShapeError
from diffomics.epigenomics import (
    HMMParams,
    check_histone_marks,
    emission_log_prob,
    forward_backward,
    init_hmm_params,
    viterbi,
)
from diffomics.operators.epigenomics import (
    CHROMATIN_STATE_KEYS as K,
)
from diffomics.operators.epigenomics import (
    ChromatinStateAnnotator,
    ChromatinStateAnnotatorConfig,
)
from tests.epigenomics.simulate import adjusted_rand_index, simulate

N_BINS, N_STATES, N_MARKS = 1000, 4, 6  # the shapes of tests/epigenomics: shared kernels


def _op(**kwargs):
    cfg = ChromatinStateAnnotatorConfig(**{"n_states": N_STATES, "n_marks": N_MARKS, **kwargs})
    return ChromatinStateAnnotator(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def binary():
    return simulate(N_BINS, model="bernoulli", n_states=N_STATES, seed=20)


@pytest.fixture(scope="module")
def counts():
    return simulate(N_BINS, model="negative_binomial", n_states=N_STATES, theta=4.0, seed=21)


def test_contract_and_planted_states_with_the_true_parameters(binary):
    x = binary.x.astype(np.float32)
    m = binary.means
    params = HMMParams(np.log(binary.pi), np.log(binary.transmat), np.log(m / (1 - m)),
                       np.zeros(N_MARKS))  # fmt: skip
    op = _op()
    op.set_hmm_params(params)
    data = {K.HISTONE_MARKS: x}
    result, state, metadata = op.apply(data, {"step": 1}, "meta")
    assert state == {"step": 1} and metadata == "meta"
    assert result[K.HISTONE_MARKS] is x and K.STATE_PROBABILITIES not in data
    probs = np.asarray(result[K.STATE_PROBABILITIES])
    assert probs.shape == (N_BINS, N_STATES) and result[K.VITERBI_PATH].shape == (N_BINS,)
    assert result[K.VITERBI_PATH].dtype == jnp.int32 and result[K.LOG_LIKELIHOOD].shape == ()
    # operator == statistics (one implementation)
    log_e = emission_log_prob(x, params.emission, emission_model="bernoulli")
    log_m, ll = forward_backward(params.log_pi, params.log_A, log_e)
    np.testing.assert_allclose(probs, np.exp(log_m), atol=1e-6)
    np.testing.assert_allclose(float(result[K.LOG_LIKELIHOOD]), float(ll), rtol=1e-6)
    path = viterbi(params.log_pi, params.log_A, log_e)[0]
    np.testing.assert_array_equal(result[K.VITERBI_PATH], path)
    assert adjusted_rand_index(np.asarray(path), binary.states) > 0.9
    assert adjusted_rand_index(probs.argmax(1), binary.states) > 0.9
    np.testing.assert_allclose(float(op.loss(data)), -float(ll) / N_BINS, rtol=1e-5)


def test_jit_and_grad_equal_eager_compile_once_and_reach_every_parameter(counts):
    op = _op(emission_model="negative_binomial")
    graphdef, params = nnx.split(op)
    x = jnp.asarray(counts.x, jnp.float32)
    proj = jnp.asarray(np.random.default_rng(0).normal(size=(N_BINS, N_STATES)), jnp.float32)
    traces = []

    @jax.jit
    @functools.partial(jax.value_and_grad, argnums=(0, 1), has_aux=True)
    def loss(p, x):
        traces.append(1)
        out = nnx.merge(graphdef, p).apply({K.HISTONE_MARKS: x}, {}, None)[0]
        value = jnp.sum(out[K.STATE_PROBABILITIES] * proj) + 1e-3 * out[K.LOG_LIKELIHOOD]
        return value, out

    (_, compiled), (g_params, g_x) = loss(params, x)
    loss(params, x + 1.0)
    assert len(traces) == 1
    eager = op.apply({K.HISTONE_MARKS: x}, {}, None)[0]
    np.testing.assert_allclose(compiled[K.STATE_PROBABILITIES], eager[K.STATE_PROBABILITIES],
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(compiled[K.VITERBI_PATH], eager[K.VITERBI_PATH])
    np.testing.assert_allclose(compiled[K.LOG_LIKELIHOOD], eager[K.LOG_LIKELIHOOD], rtol=1e-6)
    for name in ("initial_logits", "transition_logits", "emission", "log_theta"):
        g = np.asarray(getattr(g_params, name)[...])
        assert np.isfinite(g).all() and np.abs(g).max() > 1e-4, name
    assert np.isfinite(g_x).all() and float(jnp.abs(g_x).max()) > 1e-4


BASE = {"emission_model": "negative_binomial"}
CHANGES = [
    ("n_states", 3),
    ("n_marks", 5),
    ("emission_model", "poisson"),
    ("temperature", 0.5),
    ("self_transition", 0.6),
    ("theta", 1.0),
]


def test_every_config_field_is_tested():
    fields = {f.name for f in dataclasses.fields(ChromatinStateAnnotatorConfig)}
    assert fields == {name for name, _ in CHANGES}


@pytest.mark.parametrize(("field", "value"), CHANGES)
def test_every_config_field_changes_the_output(counts, field, value):
    def run(**kwargs):
        op = _op(**{**BASE, **kwargs})
        x = counts.x[:, : op.config.n_marks]
        return op.apply({K.HISTONE_MARKS: x}, {}, None)[0]

    base, changed = run(), run(**{field: value})
    a, b = np.asarray(base[K.STATE_PROBABILITIES]), np.asarray(changed[K.STATE_PROBABILITIES])
    assert a.shape != b.shape or np.abs(a - b).max() > 1e-3, field
    # temperature reshapes the marginals only: the model's likelihood and Viterbi path stay
    same_model = field == "temperature"
    assert (float(base[K.LOG_LIKELIHOOD]) == float(changed[K.LOG_LIKELIHOOD])) == same_model
    if same_model:
        np.testing.assert_array_equal(base[K.VITERBI_PATH], changed[K.VITERBI_PATH])


def test_missing_key_and_mismatched_parameters_are_refused(binary):
    with pytest.raises(MissingKeyError, match="histone_marks"):
        _op().apply({"marks": binary.x}, {}, None)
    params = init_hmm_params(binary.x[:, :5], n_states=N_STATES, emission_model="bernoulli",
                             seed=0)  # fmt: skip
    with pytest.raises(ShapeError, match=r"params.emission must have shape \(4, 6\)"):
        _op().set_hmm_params(params)


_BAD = st.sampled_from(["nan", "inf", "negative", "non_binary", "wrong_marks", "no_bins"])


@settings(max_examples=30, deadline=None)
@given(kind=_BAD, model=st.sampled_from(["bernoulli", "poisson"]), n_bins=st.integers(1, 30),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_bad_histone_marks_raise_the_package_errors(kind, model, n_bins, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((n_bins, N_MARKS)) < 0.5).astype(np.float32)
    i, j = rng.integers(n_bins), rng.integers(N_MARKS)
    if kind == "nan":
        x[i, j], error, match = np.nan, NonFiniteError, "histone_marks holds 1 non-finite"
    elif kind == "inf":
        x[i, j], error, match = np.inf, NonFiniteError, "histone_marks holds 1 non-finite"
    elif kind == "negative":
        x[i, j], error, match = -1.0, CountsError, "histone_marks must be non-negative"
    elif kind == "non_binary":
        x[i, j] = 2.0 if model == "poisson" else 0.5
        error, match = CountsError, "binarised"
    elif kind == "wrong_marks":
        x, error, match = x[:, :-1], ShapeError, f"size {N_MARKS} on axis 1"
    else:
        x, error, match = x[:0], ShapeError, "empty"
    if kind == "non_binary" and model == "poisson":  # counts above 1 are fine for counts
        check_histone_marks(x, K.HISTONE_MARKS, n_marks=N_MARKS, emission_model=model)
        return
    with pytest.raises(error, match=match):
        _op(emission_model=model).apply({K.HISTONE_MARKS: x}, {}, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_states": 1}, "n_states"),
        ({"n_marks": 0}, "n_marks"),
        ({"emission_model": "gaussian"}, "emission_model"),
        ({"temperature": 0.0}, "temperature"),
        ({"self_transition": 1.0}, "self_transition"),
        ({"theta": -1.0}, "theta"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ChromatinStateAnnotatorConfig(**kwargs)
