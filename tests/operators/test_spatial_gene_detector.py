"""`DifferentiableSpatialGeneDetector`: same numbers as the statistic, gradients, every field."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffomics import ConfigError, CountsError, NonFiniteError, ShapeError
from diffomics.core._numerics import safe_eigh
from diffomics.operators import SPATIAL_GENE_KEYS as K
from diffomics.operators.multiomics import (
    DifferentiableSpatialGeneDetector,
    SpatialGeneDetectorConfig,
)
from diffomics.spatial import exact_factor, fit_gp, mixture_pvalue
from diffomics.spatial._gp_test import standardize


def _data(n=60, genes=4, seed=0, counts=False):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, size=(n, 2)).astype(np.float32)
    signal = np.stack([np.sin(xy[:, 0] * (1 + g) / 2) for g in range(genes)], 1)
    y = signal + rng.normal(size=(n, genes))
    data = {K.SPATIAL_COORDS: jnp.asarray(xy), K.EXPRESSION: jnp.asarray(y, jnp.float32)}
    if counts:
        data[K.EXPRESSION] = jnp.asarray(rng.poisson(5 * np.exp(signal)), jnp.float32)
        data[K.TOTAL_COUNTS] = jnp.asarray(rng.uniform(500, 1500, size=n), jnp.float32)
    return data


def _op(**kwargs):
    config = SpatialGeneDetectorConfig(**{"n_genes": 4, "lengthscale": 2.0, **kwargs})
    return DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(0))


def test_quick_start_runs_as_written():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 20, size=(100, 2)).astype(np.float32)
    expression = rng.poisson(3.0, size=(100, 2000)).astype(np.float32)
    total_counts = expression.sum(1)
    config = SpatialGeneDetectorConfig(n_genes=2000, lengthscale=1.0, variance=1.0,
                                       noise_variance=0.1, hidden_dims=[64, 32],
                                       temperature=1.0, pvalue_threshold=0.05)
    detector = DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(42))
    data = {"spatial_coords": coords, "expression": expression, "total_counts": total_counts}
    result, state, metadata = detector.apply(data, {}, None)
    for key in ("fsv", "spatial_pvalues", "is_spatial"):
        assert result[key].shape == (2000,)
        assert bool(jnp.all(jnp.isfinite(result[key])))
    assert result["smoothed_expression"].shape == (100, 2000)
    p = np.asarray(result["spatial_pvalues"])
    assert 0.02 < np.mean(p < 0.05) < 0.08  # pure noise: about 5% below 0.05


def test_operator_equals_the_statistic():
    data = _data()
    op = _op()
    out = op.outputs(data)
    z = standardize(data[K.EXPRESSION])[0]
    d2 = ((np.asarray(data[K.SPATIAL_COORDS])[:, None] - np.asarray(
        data[K.SPATIAL_COORDS])[None]) ** 2).sum(-1)
    fit = fit_gp(z, exact_factor(np.exp(-d2 / (2 * 2.0**2))))
    np.testing.assert_allclose(out[K.SPATIAL_PVALUES], mixture_pvalue(2 * fit.llr), rtol=2e-3,
                               atol=1e-6)
    np.testing.assert_allclose(out[K.FSV], fit.fsv, atol=2e-3)


def test_a_constant_gene_is_not_tested_and_keeps_gradients_finite():
    # a constant gene once got a made-up LLR of ~100 (its zero residual clipped to 1e-30)
    # and so a tiny p-value, and NaN gradients for every kernel parameter
    data = _data()
    y = np.array(data[K.EXPRESSION])
    y[:, 3] = 2.5
    data[K.EXPRESSION] = jnp.asarray(y)
    op = _op()
    out, _, _ = op.apply(data, {}, None)
    assert float(out[K.SPATIAL_PVALUES][3]) == 1.0 and float(out[K.FSV][3]) == 0.0
    np.testing.assert_allclose(out[K.SMOOTHED_EXPRESSION][:, 3], 2.5, rtol=1e-6)
    alone, _, _ = _op(n_genes=3).apply({**data, K.EXPRESSION: data[K.EXPRESSION][:, :3]}, {},
                                        None)  # fmt: skip
    np.testing.assert_allclose(out[K.FSV][:3], alone[K.FSV], rtol=1e-6)  # others unchanged
    grads = nnx.grad(lambda m: jnp.sum(m.apply(data, {}, None)[0][K.FSV]))(op)
    g = float(grads.log_lengthscale[...])
    assert np.isfinite(g) and g != 0.0
    dy = jax.grad(lambda e: jnp.sum(op.apply({**data, K.EXPRESSION: e}, {}, None)[0][K.FSV]))(
        data[K.EXPRESSION]
    )
    assert bool(jnp.all(jnp.isfinite(dy))) and float(jnp.abs(dy[:, 3]).max()) == 0.0


def test_jit_equals_eager():
    data = _data(counts=True)
    op = _op()
    eager = op.outputs(data)
    compiled = nnx.jit(lambda m, d: m.outputs(d))(op, data)
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_kernel_parameters():
    data = _data()
    op = _op()
    grads = nnx.grad(lambda m: m.loss(data))(op)
    for name in ("log_lengthscale", "log_variance", "log_noise_variance"):
        value = float(getattr(grads, name)[...])
        assert np.isfinite(value) and abs(value) > 1e-6, name
    g = nnx.grad(lambda m: jnp.sum(m.outputs(data)[K.FSV]))(op)
    assert abs(float(g.log_lengthscale[...])) > 1e-6
    g_in = jax.grad(lambda y: jnp.sum(op.outputs({**data, K.EXPRESSION: y})[K.IS_SPATIAL]))(
        data[K.EXPRESSION])
    assert bool(jnp.all(jnp.isfinite(g_in))) and float(jnp.abs(g_in).max()) > 0


def test_lengthscale_gradient_matches_finite_differences():
    data = _data(n=40)
    op = _op(hidden_dims=[])
    g = float(nnx.grad(lambda m: m.loss(data))(op).log_lengthscale[...])
    x0, eps, values = float(op.log_lengthscale[...]), 1e-2, []
    for x in (x0 + eps, x0 - eps):
        op.log_lengthscale[...] = jnp.float32(x)
        values.append(float(op.loss(data)))
    assert g == pytest.approx((values[0] - values[1]) / (2 * eps), rel=2e-2)


def test_training_the_kernel_lowers_the_loss():
    import optax

    data = _data(n=50)
    op = _op()
    graphdef, params, rest = nnx.split(op, nnx.Param, ...)
    tx = optax.adam(0.05)
    state = tx.init(params)

    def loss(p):
        return nnx.merge(graphdef, p, rest).loss(data)

    start = float(loss(params))
    for _ in range(30):
        g = jax.grad(loss)(params)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss(params)) < start - 0.1


def test_fixed_kernel_is_not_a_parameter():
    op = _op(learnable_kernel=False)
    names = {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(op, nnx.Param))}
    assert not names & {"log_lengthscale", "log_variance", "log_noise_variance"}


def test_safe_eigh_gradient_matches_finite_differences_and_is_finite_when_degenerate():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    a = jnp.asarray(a @ a.T + np.eye(5), jnp.float32)
    y = jnp.asarray(rng.normal(size=5), jnp.float32)

    def f(m):
        w, v = safe_eigh(m)
        return jnp.sum((v.T @ y) ** 2 / (w + 0.5))

    g = jax.grad(f)(a)
    expected = jax.grad(lambda m: y @ jnp.linalg.solve(m + 0.5 * jnp.eye(5), y))(a)
    np.testing.assert_allclose(g, expected, rtol=1e-3, atol=1e-4)
    degenerate = jax.grad(f)(jnp.eye(5))
    assert bool(jnp.all(jnp.isfinite(degenerate)))


CHANGES = {
    "n_genes": {"n_genes": 3},
    "lengthscale": {"lengthscale": 4.0},
    "variance": {"variance": 3.0},
    "noise_variance": {"noise_variance": 1.0},
    "hidden_dims": {"hidden_dims": [8]},
    "temperature": {"temperature": 3.0},
    "pvalue_threshold": {"pvalue_threshold": 0.01},
    "learnable_kernel": {"learnable_kernel": False},
}


def _summary(config):
    data = _data(genes=config.n_genes)
    op = DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(0))
    if op.smoother is not None:  # give the zero-initialised network an output to compare
        last = op.smoother.layers[-1]
        last.bias[...] = jnp.linspace(0.0, 1.0, config.n_genes)
    out = op.outputs(data)
    n_params = sum(v.size for v in jax.tree.leaves(nnx.state(op, nnx.Param)))
    return tuple(round(float(jnp.sum(v)), 5) for v in out.values()) + (n_params,)


def test_every_config_field_is_tested():
    assert {f.name for f in dataclasses.fields(SpatialGeneDetectorConfig)} == set(CHANGES)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_config_field_changes_the_output(field):
    base = SpatialGeneDetectorConfig(n_genes=4, lengthscale=2.0)
    assert _summary(dataclasses.replace(base, **CHANGES[field])) != _summary(base)


def test_untrained_network_adds_nothing():
    data = _data()
    with_net, without = _op(), _op(hidden_dims=[])
    np.testing.assert_allclose(with_net.outputs(data)[K.SMOOTHED_EXPRESSION],
                               without.outputs(data)[K.SMOOTHED_EXPRESSION], rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lengthscale": 0.0}, "lengthscale"),
    ({"pvalue_threshold": 1.0}, "pvalue_threshold"),
    ({"hidden_dims": [0]}, "hidden_dims"),
    ({"n_genes": 0}, "n_genes"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SpatialGeneDetectorConfig(**kwargs)


def test_bad_inputs():
    op = _op()
    data = _data()
    xy = np.array(data[K.SPATIAL_COORDS])
    xy[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="spatial_coords"):
        op.apply({**data, K.SPATIAL_COORDS: xy}, {}, None)
    with pytest.raises(ShapeError, match="expression"):
        op.apply({**data, K.EXPRESSION: data[K.EXPRESSION][:, :3]}, {}, None)
    with pytest.raises(ShapeError, match="at least 3 spots"):
        op.apply({K.SPATIAL_COORDS: xy[:2], K.EXPRESSION: data[K.EXPRESSION][:2]}, {}, None)
    with pytest.raises(CountsError, match="total_counts"):
        op.apply({**_data(counts=True), K.TOTAL_COUNTS: jnp.zeros(60)}, {}, None)
