"""The `SpatialDeconvolution` operator contract: quick start, jit, gradients, every field."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffomics import ConfigError, CountsError, MissingKeyError, NonFiniteError, ShapeError
from diffomics.operators import DECONVOLUTION_KEYS as K
from diffomics.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig


def _data(n_spots=12, n_types=3, n_genes=20, seed=0):
    rng = np.random.default_rng(seed)
    reference = rng.gamma(1.0, 5.0, size=(n_types, n_genes)).astype(np.float32)
    props = rng.dirichlet(np.ones(n_types), size=n_spots)
    x = rng.poisson(4.0 * props @ reference).astype(np.float32) + 1.0
    return {K.SPATIAL_EXPRESSION: jnp.asarray(x), K.REFERENCE_PROFILES: jnp.asarray(reference)}


def test_quick_start_runs_as_written():
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.poisson(3.0, size=(50, 2000)).astype(np.float32) + 1.0)
    R = jnp.asarray(rng.gamma(1.0, 1.0, size=(10, 2000)).astype(np.float32))
    config = SpatialDeconvolutionConfig(
        n_cell_types=10, n_genes=2000, hidden_dim=128, temperature=1.0
    )
    deconv = SpatialDeconvolution(config, rngs=nnx.Rngs(42))
    result, state, metadata = deconv.apply(
        {"spatial_expression": X, "reference_profiles": R}, {}, None
    )
    assert result["proportions"].shape == (50, 10)
    assert result["reconstructed"].shape == (50, 2000)
    np.testing.assert_allclose(result["proportions"].sum(axis=-1), 1.0, atol=1e-5)
    assert result["spatial_expression"] is X and state == {} and metadata is None


def test_reconstruction_is_the_mixture_at_the_spot_depth():
    data = _data()
    op = SpatialDeconvolution(
        SpatialDeconvolutionConfig(n_cell_types=3, n_genes=20), rngs=nnx.Rngs(0)
    )
    out = op.outputs(data)
    expected = out[K.SPOT_SCALE][:, None] * (out[K.PROPORTIONS] @ data[K.REFERENCE_PROFILES])
    np.testing.assert_allclose(out[K.RECONSTRUCTED], expected, rtol=1e-5)
    # the depth is profiled out: totals of the reconstruction equal the observed totals
    np.testing.assert_allclose(
        out[K.RECONSTRUCTED].sum(-1), data[K.SPATIAL_EXPRESSION].sum(-1), rtol=1e-5
    )


@pytest.mark.parametrize("mode", ["amortized", "direct"])
def test_jit_equals_eager_and_compiles_once(mode):
    data = _data()
    op = SpatialDeconvolution(
        SpatialDeconvolutionConfig(n_cell_types=3, n_genes=20, mode=mode, n_spots=12),
        rngs=nnx.Rngs(0),
    )
    traces = []

    @nnx.jit
    def run(op, data):
        traces.append(1)
        return op.apply(data, {}, None)[0]

    eager = op.apply(data, {}, None)[0]
    compiled = run(op, data)
    run(op, data)
    for key in (K.PROPORTIONS, K.RECONSTRUCTED, K.SPOT_SCALE):
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-5, atol=1e-6)
    assert len(traces) == 1


def test_gradients_reach_inputs_and_parameters():
    data = _data()
    op = SpatialDeconvolution(
        SpatialDeconvolutionConfig(n_cell_types=3, n_genes=20), rngs=nnx.Rngs(0)
    )
    weights = jnp.linspace(-1.0, 1.0, 3)[None, :]

    def readout(x):
        return jnp.sum(op.outputs({**data, K.SPATIAL_EXPRESSION: x})[K.PROPORTIONS] * weights)

    g_x = jax.grad(readout)(data[K.SPATIAL_EXPRESSION])
    assert bool(jnp.all(jnp.isfinite(g_x))) and float(jnp.abs(g_x).max()) > 1e-6
    g_ref = jax.grad(lambda r: op.loss({**data, K.REFERENCE_PROFILES: r}))(
        data[K.REFERENCE_PROFILES]
    )
    assert bool(jnp.all(jnp.isfinite(g_ref))) and float(jnp.abs(g_ref).max()) > 1e-6
    grads = nnx.grad(lambda m: m.loss(data))(op)
    for path in (("encoder", "layers", 0, "kernel"), ("log_theta",)):
        leaf = grads
        for p in path:
            leaf = leaf[p]
        value = leaf[...]
        assert bool(jnp.all(jnp.isfinite(value))) and float(jnp.abs(value).max()) > 1e-8


def test_gradients_match_finite_differences():
    data = _data(n_spots=4, n_genes=6)
    op = SpatialDeconvolution(
        SpatialDeconvolutionConfig(
            n_cell_types=3, n_genes=6, mode="direct", n_spots=4, likelihood="poisson"
        ),
        rngs=nnx.Rngs(0),
    )
    op.logits[...] = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
    x = data[K.SPATIAL_EXPRESSION]
    f = lambda r: op.loss({**data, K.REFERENCE_PROFILES: r})  # noqa: E731
    r0 = data[K.REFERENCE_PROFILES]
    g = jax.grad(f)(r0)
    eps = 1e-2
    for idx in [(0, 0), (1, 3), (2, 5)]:
        e = jnp.zeros_like(r0).at[idx].set(eps)
        fd = (f(r0 + e) - f(r0 - e)) / (2 * eps)
        assert float(g[idx]) == pytest.approx(float(fd), rel=2e-2, abs=1e-3)
    assert x.shape == (4, 6)


BASE = SpatialDeconvolutionConfig(
    n_cell_types=3,
    n_genes=20,
    mode="direct",
    n_spots=12,
    likelihood="nb",
    platform_effect_scale=0.5,
)
CHANGES = {
    "hidden_dim": {"mode": "amortized", "hidden_dim": 7},
    "temperature": {"temperature": 0.5},
    "likelihood": {"likelihood": "poisson"},
    "mode": {"mode": "amortized"},
    "platform_effect_scale": {"platform_effect_scale": 0.0},
    "background": {"background": True},
    "proportion_prior": {"proportion_prior": 5.0},
    "n_cell_types": {"n_cell_types": 4},
    "n_genes": {"n_genes": 21},
    "n_spots": {"n_spots": 13},
}


def _summary(config):
    data = _data(n_spots=config.n_spots or 12, n_types=config.n_cell_types, n_genes=config.n_genes)
    op = SpatialDeconvolution(config, rngs=nnx.Rngs(0))
    if config.mode == "direct":
        op.logits[...] = jnp.asarray(
            np.random.default_rng(2).normal(size=op.logits.shape), jnp.float32
        )
    op.log_platform_effect[...] = jnp.linspace(-0.3, 0.3, config.n_genes)
    op.bulk_logits[...] = jnp.linspace(-1.0, 1.0, config.n_cell_types)
    out = op.outputs(data)
    n_params = sum(v.size for v in jax.tree.leaves(nnx.state(op, nnx.Param)))
    return (
        out[K.PROPORTIONS].shape,
        out[K.RECONSTRUCTED].shape,
        float(op.loss(data)),
        float(jnp.sum(out[K.PROPORTIONS] ** 2)),
        float(out[K.RECONSTRUCTED].sum()),
        n_params,
    )


def test_every_config_field_is_tested():
    fields = {f.name for f in dataclasses.fields(SpatialDeconvolutionConfig)}
    assert fields == set(CHANGES)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_config_field_changes_the_output(field):
    base = dataclasses.replace(
        BASE, **{k: v for k, v in CHANGES[field].items() if k == "mode" and field == "hidden_dim"}
    )
    changed = dataclasses.replace(base, **CHANGES[field])
    assert _summary(changed) != _summary(base)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cell_types": 0}, "n_cell_types"),
        ({"n_genes": 2.5}, "n_genes"),
        ({"temperature": 0.0}, "temperature"),
        ({"likelihood": "zinb"}, "likelihood"),
        ({"mode": "direct"}, "n_spots"),
        ({"proportion_prior": -1.0}, "proportion_prior"),
        ({"platform_effect_scale": float("nan")}, "platform_effect_scale"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SpatialDeconvolutionConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.temperature = 2.0


def test_bad_inputs_raise_clear_errors():
    op = SpatialDeconvolution(
        SpatialDeconvolutionConfig(n_cell_types=3, n_genes=20), rngs=nnx.Rngs(0)
    )
    data = _data()
    with pytest.raises(MissingKeyError, match="reference_profiles"):
        op.apply({K.SPATIAL_EXPRESSION: data[K.SPATIAL_EXPRESSION]}, {}, None)
    with pytest.raises(ShapeError, match="reference_profiles"):
        op.apply({**data, K.REFERENCE_PROFILES: data[K.REFERENCE_PROFILES][:, :19]}, {}, None)
    with pytest.raises(ShapeError, match="spatial_expression"):
        op.apply({**data, K.SPATIAL_EXPRESSION: data[K.SPATIAL_EXPRESSION][0]}, {}, None)
    x = np.array(data[K.SPATIAL_EXPRESSION])
    x[1, 1] = np.inf
    with pytest.raises(NonFiniteError, match="spatial_expression"):
        op.apply({**data, K.SPATIAL_EXPRESSION: x}, {}, None)
    x[1, 1] = -2.0
    with pytest.raises(CountsError, match="spatial_expression"):
        op.apply({**data, K.SPATIAL_EXPRESSION: x}, {}, None)
    x[1] = 0.0
    with pytest.raises(CountsError, match="zero total"):
        op.apply({**data, K.SPATIAL_EXPRESSION: x}, {}, None)
