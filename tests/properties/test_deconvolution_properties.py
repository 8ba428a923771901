"""Random inputs: a valid result or the documented error, never a crash or a silent NaN."""

import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffomics import CountsError, NonFiniteError, ShapeError
from diffomics.operators import DECONVOLUTION_KEYS as K
from diffomics.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n_spots = draw(st.integers(1, 6))
    n_types = draw(st.integers(1, 4))
    n_genes = draw(st.integers(1, 7))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = (rng.gamma(0.5, 1.0, size=(n_spots, n_genes)) * scale).astype(np.float32)
    r = rng.gamma(0.5, 1.0, size=(n_types, n_genes)).astype(np.float32)
    x[:, 0] += scale  # no empty spot
    r[:, 0] += 1.0
    zero_genes = draw(st.booleans())
    if zero_genes and n_genes > 1:
        x[:, -1] = 0.0
        r[:, -1] = 0.0
    likelihood = draw(st.sampled_from(["nb", "poisson", "gaussian"]))
    mode = draw(st.sampled_from(["amortized", "direct"]))
    return x, r, likelihood, mode


def _op(x, r, likelihood, mode):
    config = SpatialDeconvolutionConfig(
        n_cell_types=r.shape[0],
        n_genes=r.shape[1],
        hidden_dim=4,
        likelihood=likelihood,
        mode=mode,
        n_spots=x.shape[0],
    )
    return SpatialDeconvolution(config, rngs=nnx.Rngs(0))


@SETTINGS
@given(problems())
def test_valid_inputs_give_finite_outputs_on_the_simplex(problem):
    x, r, likelihood, mode = problem
    op = _op(*problem)
    data = {K.SPATIAL_EXPRESSION: jnp.asarray(x), K.REFERENCE_PROFILES: jnp.asarray(r)}
    out = op.outputs(data)
    p = np.asarray(out[K.PROPORTIONS])
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.isfinite(np.asarray(out[K.RECONSTRUCTED])).all()
    assert np.isfinite(float(op.loss(data)))
    assert np.isfinite(float(op.bulk_loss(data)))


@SETTINGS
@given(
    problems(),
    st.sampled_from(["nan", "inf", "negative", "empty_spot", "empty_type", "genes", "types"]),
    st.sampled_from([K.SPATIAL_EXPRESSION, K.REFERENCE_PROFILES]),
)
def test_bad_inputs_raise_documented_errors(problem, fault, target):
    x, r, likelihood, mode = problem
    op = _op(*problem)
    data = {K.SPATIAL_EXPRESSION: x.copy(), K.REFERENCE_PROFILES: r.copy()}
    arr = data[target]
    expected = {
        "nan": NonFiniteError,
        "inf": NonFiniteError,
        "negative": CountsError,
        "empty_spot": CountsError,
        "empty_type": CountsError,
        "genes": ShapeError,
        "types": ShapeError,
    }[fault]
    if fault == "nan":
        arr[0, 0] = np.nan
    elif fault == "inf":
        arr[-1, -1] = np.inf
    elif fault == "negative":
        arr[0, -1] = -0.5
    elif fault in ("empty_spot", "empty_type"):
        arr[-1] = 0.0
    elif fault == "genes":
        data[target] = np.concatenate([arr, arr[:, :1]], axis=1)
    elif target == K.REFERENCE_PROFILES:
        data[target] = np.concatenate([arr, arr[:1]], axis=0)
    elif mode == "direct":
        data[target] = np.concatenate([arr, arr[:1]], axis=0)
    else:
        return  # amortized mode accepts any number of spots
    try:
        op.apply(data, {}, None)
    except expected as err:
        assert target in str(err) or "spot" in str(err) or "cell type" in str(err)
    else:
        raise AssertionError(f"{fault} in {target} was accepted")
