"""`DifferentiableSpatialGeneDetector` on random arrays: valid outputs or the documented error.

Valid means FSV in [0, 1], p-values in [0, 1], `is_spatial` in [0, 1], a finite smoothed
expression, and a finite loss gradient; shapes come from small buckets (3, 7 or 12 spots,
1 or 4 genes) so that the operator compiles a handful of times.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffomics import CountsError, NonFiniteError, ShapeError
from diffomics.operators import SPATIAL_GENE_KEYS as K
from diffomics.operators.multiomics import (
    DifferentiableSpatialGeneDetector,
    SpatialGeneDetectorConfig,
)

SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))


def _problem(n_spots, n_genes, values, scale, coords, coord_scale, constant_gene, totals, seed):
    rng = np.random.default_rng(seed)
    if values == "counts":
        y = rng.poisson(4.0, size=(n_spots, n_genes)).astype(np.float64)
    else:
        y = rng.normal(size=(n_spots, n_genes))
    y *= scale
    if constant_gene:
        y[:, -1] = 0.0
    if coords == "uniform":
        xy = rng.uniform(0.0, 10.0, size=(n_spots, 2))
    elif coords == "duplicated":
        xy = rng.uniform(0.0, 10.0, size=(2, 2))[np.arange(n_spots) % 2]
    else:
        xy = np.c_[np.arange(n_spots, dtype=float), np.zeros(n_spots)]
    data = {K.SPATIAL_COORDS: jnp.asarray(xy * coord_scale, jnp.float32),
            K.EXPRESSION: jnp.asarray(y, jnp.float32)}  # fmt: skip
    if totals and values == "counts":
        data[K.TOTAL_COUNTS] = jnp.asarray(rng.uniform(1.0, 100.0, n_spots), jnp.float32)
    return data


problems = st.builds(
    _problem,
    n_spots=st.sampled_from([3, 7, 12]),
    n_genes=st.sampled_from([1, 4]),
    values=st.sampled_from(["counts", "normal"]),
    scale=st.sampled_from([1e-20, 1.0, 1e20]),
    coords=st.sampled_from(["uniform", "duplicated", "line"]),
    coord_scale=st.sampled_from([1e-3, 1.0, 1e3]),
    constant_gene=st.booleans(),
    totals=st.booleans(),
    seed=st.integers(0, 2**16),
)


def _detector(n_genes, lengthscale):
    config = SpatialGeneDetectorConfig(n_genes=n_genes, lengthscale=lengthscale,
                                       hidden_dims=[4])  # fmt: skip
    return DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(0))


@SETTINGS
@given(problems, st.sampled_from([0.1, 1.0, 10.0]))
def test_random_inputs_give_valid_outputs(data, lengthscale):
    n_genes = data[K.EXPRESSION].shape[1]
    op = _detector(n_genes, lengthscale)
    out, _, _ = op.apply(data, {}, None)
    for key in (K.FSV, K.SPATIAL_PVALUES, K.IS_SPATIAL):
        v = np.asarray(out[key])
        assert v.shape == (n_genes,) and np.isfinite(v).all(), key
        assert ((v >= 0) & (v <= 1)).all(), key
    assert np.isfinite(np.asarray(out[K.SMOOTHED_EXPRESSION])).all()
    grads = nnx.grad(lambda m: jnp.sum(m.apply(data, {}, None)[0][K.FSV]))(op)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


FAULTS = {
    "nan_expression": (NonFiniteError, K.EXPRESSION),
    "inf_coordinate": (NonFiniteError, K.SPATIAL_COORDS),
    "nan_totals": (NonFiniteError, K.TOTAL_COUNTS),
    "zero_totals": (CountsError, K.TOTAL_COUNTS),
    "three_columns": (ShapeError, K.SPATIAL_COORDS),
    "wrong_gene_count": (ShapeError, K.EXPRESSION),
    "two_spots": (ShapeError, "spots"),
}


@SETTINGS
@given(problems, st.sampled_from(sorted(FAULTS)))
def test_bad_inputs_raise_the_documented_error(data, fault):
    data = dict(data)
    n_spots, n_genes = data[K.EXPRESSION].shape
    op = _detector(n_genes, 1.0)
    y, xy = np.array(data[K.EXPRESSION]), np.array(data[K.SPATIAL_COORDS])
    if fault == "nan_expression":
        y[0, 0] = np.nan
    elif fault == "inf_coordinate":
        xy[-1, 0] = np.inf
    elif fault in ("nan_totals", "zero_totals"):
        totals = np.ones(n_spots, np.float32)
        totals[0] = np.nan if fault == "nan_totals" else 0.0
        data[K.TOTAL_COUNTS] = totals
    elif fault == "three_columns":
        xy = np.c_[xy, xy[:, :1]]
    elif fault == "wrong_gene_count":
        y = np.c_[y, y[:, :1]]
    else:
        y, xy = y[:2], xy[:2]
        data.pop(K.TOTAL_COUNTS, None)
    data[K.EXPRESSION], data[K.SPATIAL_COORDS] = y, xy
    error, match = FAULTS[fault]
    with pytest.raises(error, match=match):
        op.apply(data, {}, None)
