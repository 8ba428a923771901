"""`HiCContactAnalysis`: the operator contract, agreement with the analysis functions,
gradients, planted structure, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from diffomics.core import CountsError, NonFiniteError, ShapeError
from diffomics.core._errors import ConfigError
from diffomics.hic import analyze
from diffomics.operators._keys import HIC_KEYS as K
from diffomics.operators.multiomics import HiCContactAnalysis, HiCContactAnalysisConfig
from tests.hic.simulate import simulate_map


def _op(**kwargs):
    kwargs = {"resolution": 10_000, "insulation_window": 50_000, **kwargs}
    return HiCContactAnalysis(HiCContactAnalysisConfig(**kwargs), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def sim():
    return simulate_map(n=150, depth=2000.0)


@pytest.fixture(scope="module")
def out(sim):
    data = {K.CONTACT_MATRIX: sim.counts.astype(np.float32), K.PHASING_TRACK: sim.compartment}
    return _op().apply(data, {}, None)[0]


def test_quick_start_contract(sim):
    config = HiCContactAnalysisConfig(resolution=10000, hidden_dim=64, n_layers=4,
                                      distance_decay=True)  # fmt: skip
    op = HiCContactAnalysis(config, rngs=nnx.Rngs(42))
    result, state, metadata = op.apply({"contact_matrix": sim.counts}, {}, None)
    assert state == {} and metadata is None
    n = sim.counts.shape[0]
    assert result["normalized_contacts"].shape == (n, n)
    assert result["loop_scores"].shape == (n, n)
    assert result["compartments"].shape == (n,) and result["tad_boundaries"].shape == (n,)
    assert result["contact_matrix"] is sim.counts
    c = np.asarray(result["compartments"])
    assert (np.abs(c) <= 1).all() and np.isfinite(c).all()
    p = np.asarray(result["tad_boundaries"])
    assert ((p >= 0) & (p <= 1)).all()


def test_any_number_of_bins_and_jit():
    op = _op()
    step = nnx.jit(lambda m, x: m.apply({K.CONTACT_MATRIX: x}, {}, None)[0][K.COMPARTMENTS])
    for n in (40, 73):
        x = simulate_map(n=n, depth=500.0, empty=(5,)).counts.astype(np.float32)
        eager = op.apply({K.CONTACT_MATRIX: x}, {}, None)[0][K.COMPARTMENTS]
        np.testing.assert_allclose(step(op, x), eager, atol=1e-4)


def test_planted_structure_is_recovered(sim, out):
    c = np.asarray(out[K.COMPARTMENTS])
    ok = np.ones(150, bool)
    ok[list(sim.empty)] = False
    assert np.corrcoef(c[ok], sim.compartment[ok])[0, 1] > 0.85  # phased by the track
    p = np.asarray(out[K.TAD_BOUNDARIES])
    top = np.sort(np.argsort(p)[-len(sim.boundaries) :])
    assert np.mean([np.abs(top - b).min() <= 1 for b in sim.boundaries]) >= 0.75
    scores = np.asarray(out[K.LOOP_SCORES])
    assert np.allclose(scores, scores.T)
    for i, j in sim.loops:
        assert scores[i, j] > 2.5, (i, j)
    d = np.abs(np.subtract.outer(np.arange(150), np.arange(150)))
    background = scores[(d > 5) & (scores > 0)]
    assert 0.8 < np.median(background) < 1.2


def test_empirical_expected_and_insulation_equal_the_analysis(sim):
    op = _op(distance_decay=False)
    out = op.apply({K.CONTACT_MATRIX: sim.counts}, {}, None)[0]
    res = analyze(sim.counts, resolution=10_000, balance=False, windows=[50_000], n_eigs=0,
                  loops=False)  # fmt: skip
    # the operator balances (ICE); compare balanced=False paths through the same functions
    raw = _op(distance_decay=False, balance=False).apply({K.CONTACT_MATRIX: sim.counts}, {},
                                                         None)[0]  # fmt: skip
    np.testing.assert_allclose(raw[K.EXPECTED], res.expected["balanced.avg"], rtol=1e-5)
    np.testing.assert_allclose(raw[K.INSULATION], res.insulation["log2_insulation_score_50000"],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # balanced: normalized contacts average to 1 on every diagonal (over valid pixels)
    oe = np.asarray(out[K.NORMALIZED_CONTACTS])
    for d in (2, 10, 50):
        diag = np.diagonal(oe, d)
        assert abs(diag[diag > 0].mean() - 1.0) < 0.02


def test_gradients_reach_the_matrix_and_the_decay_network(sim):
    x = jnp.asarray(sim.counts[:60, :60], jnp.float32)
    op = _op()
    graphdef, params, rest = nnx.split(op, nnx.Param, ...)
    outputs = (K.NORMALIZED_CONTACTS, K.COMPARTMENTS, K.TAD_BOUNDARIES, K.LOOP_SCORES)
    # random projections, so no output's gradient cancels by symmetry
    rng = np.random.default_rng(0)

    def loss(p, m, key):
        model = nnx.merge(graphdef, p, rest)
        y = model.apply({K.CONTACT_MATRIX: m}, {}, None)[0][key]
        return jnp.sum(y * jnp.asarray(rng.normal(size=y.shape), jnp.float32))

    for key in outputs:
        g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, x, key)
        assert bool(jnp.all(jnp.isfinite(g_x))) and float(jnp.abs(g_x).max()) > 0, key
        flat = jax.tree.leaves(g_params)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in flat), key
        reaches_decay = max(float(jnp.abs(v).max()) for v in flat) > 0
        # insulation uses balanced contacts only (as cooltools): no path to the expected
        assert reaches_decay == (key != K.TAD_BOUNDARIES), key


def test_decay_penalty_starts_at_zero_and_training_moves_the_expected(sim):
    import optax

    op = _op()
    x = jnp.asarray(sim.counts[:80, :80], jnp.float32)
    first = op.apply({K.CONTACT_MATRIX: x}, {}, None)[0]
    assert float(first[K.DECAY_PENALTY]) == 0.0
    opt = nnx.Optimizer(op, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(m):
            out = m.apply({K.CONTACT_MATRIX: x}, {}, None)[0]
            # pull the expected at 10-30 bins up by 20%, against the penalty
            target = jnp.log(out[K.EXPECTED][10:30] * 0 + 1.2 * first[K.EXPECTED][10:30])
            return jnp.mean((jnp.log(out[K.EXPECTED][10:30]) - target) ** 2) + out[K.DECAY_PENALTY]

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    losses = [float(step(op, opt)) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
    after = op.apply({K.CONTACT_MATRIX: x}, {}, None)[0]
    assert float(after[K.DECAY_PENALTY]) > 0


@pytest.mark.parametrize(
    ("matrix", "error", "match"),
    [
        (np.ones((4, 5)), ShapeError, "square"),
        (np.ones((2, 2)), ShapeError, "at least 3"),
        (np.triu(np.ones((6, 6))), ShapeError, "symmetric"),
        (-np.ones((6, 6)), CountsError, "non-negative"),
        (np.full((6, 6), np.nan), NonFiniteError, "NaN"),
        (np.eye(6), CountsError, "no contacts"),
    ],
)
def test_bad_matrices_are_refused(matrix, error, match):
    with pytest.raises(error, match=match):
        _op().apply({K.CONTACT_MATRIX: matrix}, {}, None)


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([9, 16]), st.integers(0, 10_000), st.integers(0, 5))
def test_random_maps_with_empty_rows_give_finite_valid_outputs(n, seed, n_empty):
    rng = np.random.default_rng(seed)
    m = rng.poisson(20.0, (n, n)).astype(np.float32)
    m = np.triu(m) + np.triu(m, 1).T
    empty = rng.choice(n, size=min(n_empty, n - 4), replace=False)
    m[empty] = 0
    m[:, empty] = 0
    out = _op(insulation_window=20_000).apply({K.CONTACT_MATRIX: m}, {}, None)[0]
    for key in (K.NORMALIZED_CONTACTS, K.COMPARTMENTS, K.TAD_BOUNDARIES, K.LOOP_SCORES):
        assert np.isfinite(np.asarray(out[key])).all(), key
    assert (np.abs(np.asarray(out[K.COMPARTMENTS])) <= 1).all()
    assert (np.asarray(out[K.COMPARTMENTS])[empty] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 0}, "resolution"),
        ({"n_layers": 0}, "n_layers"),
        ({"insulation_window": 15_000}, "insulation_window"),
        ({"loop_kernel_size": (2, 2)}, "loop_kernel_size"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HiCContactAnalysisConfig(**{"insulation_window": 50_000, **kwargs})
