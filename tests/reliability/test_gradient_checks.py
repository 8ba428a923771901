"""Every floating-point output of every operator has correct first derivatives.

`jax.test_util.check_grads` compares reverse-mode gradients with central finite differences
in float64, at small sizes: with respect to each float input, and along a random direction
in the parameters (the operators compute in the input's float dtype). The operators' noise
is fixed by rebuilding the module from the same state for every evaluation (`nnx.split` /
`nnx.merge`), so the function is deterministic.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from tests.hic.simulate import simulate_map


def _operator(kind):
    """The operator of `kind` and its small float64 inputs."""
    rng = np.random.default_rng(0)
    if kind == "deconvolution":
        from diffomics.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig

        ref = rng.gamma(2.0, 1.0, size=(3, 8))
        x = rng.poisson(ref.sum(0) * 0.5, size=(5, 8)).astype(np.float64) + 1.0
        config = SpatialDeconvolutionConfig(n_cell_types=3, n_genes=8, hidden_dim=4)
        return SpatialDeconvolution(config, rngs=nnx.Rngs(0)), {
            "spatial_expression": x, "reference_profiles": ref}  # fmt: skip
    if kind == "spatial_genes":
        from diffomics.operators.multiomics import (
            DifferentiableSpatialGeneDetector,
            SpatialGeneDetectorConfig,
        )

        xy = rng.uniform(0, 5, size=(16, 2))
        y = np.sin(xy[:, :1]) + 0.3 * rng.normal(size=(16, 3))
        config = SpatialGeneDetectorConfig(n_genes=3, lengthscale=2.0, hidden_dims=[4])
        return DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(0)), {
            "spatial_coords": xy, "expression": y}  # fmt: skip
    if kind == "hic":
        from diffomics.operators.multiomics import HiCContactAnalysis, HiCContactAnalysisConfig

        sim = simulate_map(n=24, depth=400.0, empty=(), loop_boost=3.0, seed=1)
        config = HiCContactAnalysisConfig(resolution=10_000, hidden_dim=8, n_layers=2,
                                          insulation_window=30_000)  # fmt: skip
        x = sim.counts.astype(np.float64) + 1.0
        return HiCContactAnalysis(config, rngs=nnx.Rngs(0)), {"contact_matrix": x}
    if kind == "vae":
        from diffomics.operators.multiomics import DifferentiableMultiOmicsVAE, MultiOmicsVAEConfig

        config = MultiOmicsVAEConfig(modality_dims=[6, 5], latent_dim=2, hidden_dim=8,
                                     likelihoods=["gaussian", "gaussian"])  # fmt: skip
        data = {"rna_counts": rng.normal(size=(4, 6)), "atac_counts": rng.normal(size=(4, 5))}
        return DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(0)), data
    if kind == "chromatin":
        from diffomics.operators.epigenomics import (
            ChromatinStateAnnotator,
            ChromatinStateAnnotatorConfig,
        )

        config = ChromatinStateAnnotatorConfig(n_states=3, n_marks=4, emission_model="poisson")
        marks = rng.poisson(2.0, size=(12, 4)).astype(np.float64)
        return ChromatinStateAnnotator(config, rngs=nnx.Rngs(0)), {"histone_marks": marks}
    raise ValueError(kind)


FLOAT_OUTPUTS = {
    "deconvolution": ["proportions", "reconstructed", "spot_scale"],
    "spatial_genes": ["fsv", "spatial_pvalues", "is_spatial", "smoothed_expression"],
    "hic": ["normalized_contacts", "compartments", "tad_boundaries", "loop_scores", "expected",
            "balancing_weights", "insulation", "decay_penalty"],  # fmt: skip
    "vae": ["joint_latent", "rna_reconstructed", "atac_reconstructed", "elbo_loss"],
    "chromatin": ["state_probabilities", "log_likelihood"],
}

# The kernel eigendecomposition's backward pass (`diffomics.core._numerics.safe_eigh`)
# broadens eigenvalue gaps by a relative 1e-5 so that near-degenerate kernels keep finite
# gradients: the gradient with respect to the coordinates is then exact to ~1e-4, not 1e-8.
RTOL = {"spatial_genes": 1e-3}


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _outputs(graphdef, state, data, keys, scales):
    """Every float output of a module rebuilt from `state` (fixed noise), each divided by its
    typical size and with its undefined entries (NaN, e.g. the expected of ignored
    diagonals) set to 0, concatenated into one vector."""
    module = nnx.merge(graphdef, state, copy=True)
    out = module.apply({k: jnp.asarray(v) for k, v in data.items()}, {}, None)[0]
    parts = [jnp.where(jnp.isfinite(out[k]), out[k], 0.0).ravel() / s
             for k, s in zip(keys, scales, strict=True)]  # fmt: skip
    return jnp.concatenate(parts)


@pytest.mark.parametrize("kind", list(FLOAT_OUTPUTS))
def test_gradients_match_finite_differences(kind):
    op, data = _operator(kind)
    keys = FLOAT_OUTPUTS[kind]
    graphdef, state = nnx.split(op)
    out = nnx.merge(graphdef, state).apply({k: jnp.asarray(v) for k, v in data.items()}, {},
                                           None)[0]  # fmt: skip
    assert set(keys) <= set(out)
    scales = [float(np.nanmax(np.abs(out[k]))) + 1e-3 for k in keys]
    params = nnx.state(op, nnx.Param)
    direction = jax.tree.map(lambda p: np.random.default_rng(2).normal(size=p.shape), params)
    names = list(data)

    @jax.jit
    def f(t, *inputs):
        """The outputs at the inputs and at the parameters moved by `t` along `direction`."""
        moved = jax.tree.map(lambda p, d: p.astype(jnp.float64) + t * d, params, direction)
        given = dict(zip(names, inputs, strict=True))
        if kind == "hic":  # contact maps are symmetric: perturb them symmetrically (the
            # 99.9th-percentile clip has a kink where two mirror pixels tie)
            given = {k: (v + v.T) / 2 for k, v in given.items()}
        return _outputs(graphdef, nnx.merge_state(state, moved), given, keys, scales)

    args = (jnp.asarray(0.0), *(jnp.asarray(data[k]) for k in names))
    value, pullback = jax.vjp(f, *args)
    grads = pullback(jnp.asarray(np.random.default_rng(3).normal(size=value.shape)))
    for name, grad in zip(["parameters", *names], grads, strict=True):
        assert np.isfinite(grad).all() and np.abs(grad).max() > 0, name
    check_grads(f, args, order=1, modes=("rev",), atol=1e-5, rtol=RTOL.get(kind, 1e-4), eps=1e-6)
