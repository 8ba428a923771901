"""Operators compose: one optimiser trains SpatialDeconvolution + ChromatinStateAnnotator + a
downstream `nnx.Linear` end to end, under `jax.jit` and `jax.vmap` over samples, and the
pipeline checkpoints and restores."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffomics.operators import DECONVOLUTION_KEYS as DK
from diffomics.operators.epigenomics import CHROMATIN_STATE_KEYS as CK
from diffomics.operators.epigenomics import ChromatinStateAnnotator, ChromatinStateAnnotatorConfig
from diffomics.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig
from tests.epigenomics.simulate import simulate

N_SAMPLES, N_SPOTS, N_GENES, N_TYPES = 4, 10, 12, 3
N_BINS, N_MARKS, N_STATES = 40, 4, 3


class Pipeline(nnx.Module):
    """Per sample: mean cell-type composition of a section and mean chromatin-state occupancy
    of a histone track, concatenated, then a linear head."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.deconv = SpatialDeconvolution(
            SpatialDeconvolutionConfig(n_cell_types=N_TYPES, n_genes=N_GENES, hidden_dim=8),
            rngs=rngs,
        )
        self.chrom = ChromatinStateAnnotator(
            ChromatinStateAnnotatorConfig(n_states=N_STATES, n_marks=N_MARKS), rngs=rngs
        )
        self.head = nnx.Linear(N_TYPES + N_STATES, 1, rngs=rngs)

    def __call__(self, sample):
        data, _, _ = self.deconv.apply(sample, {}, None)
        data, _, _ = self.chrom.apply(data, {}, None)
        features = jnp.concatenate(
            [data[DK.PROPORTIONS].mean(axis=0), data[CK.STATE_PROBABILITIES].mean(axis=0)],
            axis=-1,
        )
        return self.head(features)[0], data


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    reference = rng.gamma(1.0, 5.0, size=(N_TYPES, N_GENES))
    samples, targets = [], []
    for s in range(N_SAMPLES):
        props = rng.dirichlet(np.full(N_TYPES, 1.0) + 4.0 * np.eye(N_TYPES)[s % N_TYPES],
                              size=N_SPOTS)  # fmt: skip
        expression = rng.poisson(3.0 * props @ reference) + 1.0
        track = simulate(N_BINS, model="bernoulli", n_states=N_STATES, n_marks=N_MARKS, seed=s)
        samples.append((expression, reference, track.x))
        targets.append(props[:, 0].mean() + (track.states == 0).mean())
    expression, reference, marks = (
        np.stack(v).astype(np.float32) for v in zip(*samples, strict=True)
    )
    data = {
        DK.SPATIAL_EXPRESSION: jnp.asarray(expression),
        DK.REFERENCE_PROFILES: jnp.asarray(reference),
        CK.HISTONE_MARKS: jnp.asarray(marks),
    }
    return data, jnp.asarray(targets, jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def _predict_state(graphdef, state, data):
    return jax.vmap(lambda sample: nnx.merge(graphdef, state)(sample)[0])(data)


def _predict(model, data):
    return _predict_state(*nnx.split(model), data)


def _losses(model, data, target):
    """Supervised loss, and the chromatin operator's own loss (nats per bin), batch means.

    (The deconvolution's own loss, `SpatialDeconvolution.loss`, would join the same way; it is
    left out to keep the test's compile time down: the deconvolution is trained through the
    supervised loss.)
    """
    graphdef, state = nnx.split(model)

    def one(sample):
        m = nnx.merge(graphdef, state)
        prediction, out = m(sample)
        own = -out[CK.LOG_LIKELIHOOD] / N_BINS
        return prediction, own

    prediction, own = jax.vmap(one)(data)
    return jnp.mean((prediction - target) ** 2), jnp.mean(own)


def _max_abs(tree):
    return max(float(jnp.abs(v).max()) for v in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def trained(batch):
    """31 Adam steps of one optimiser over all parameters; the first on the supervised loss
    alone (its gradients are kept), the others on supervised + 0.1 x the chromatin NLL."""
    data, target = batch
    model = Pipeline(rngs=nnx.Rngs(0))
    before = nnx.clone(model)
    optimizer = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    # SpatialDeconvolution initialises two parameters weakly typed (jnp.full of a Python
    # float); the first update makes them strong, which would retrace the step: pin them now
    state = jax.tree.map(lambda v: jnp.asarray(v, dtype=v.dtype), state)

    @jax.jit
    def step(state, own_weight):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            supervised, own = _losses(model, data, target)
            return supervised + own_weight * own, supervised

        (loss, supervised), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss, supervised, grads

    state, _, first_supervised, first_grads = step(state, 0.0)
    history = []
    for _ in range(30):
        state, loss, supervised, _ = step(state, 0.1)
        history.append((float(loss), float(supervised)))
    nnx.update((model, optimizer), state)
    return model, before, float(first_supervised), first_grads, np.array(history)


def test_supervised_gradient_reaches_every_operator(trained):
    grads = trained[3]
    # through the concatenated features, back into both operators' parameters
    assert _max_abs(grads["deconv"]["encoder"]) > 1e-6
    for name in ("emission", "transition_logits", "initial_logits"):
        assert _max_abs(grads["chrom"][name]) > 1e-6, name
    assert _max_abs(grads["head"]) > 1e-4


def test_one_optimiser_trains_all_operators_jointly(trained):
    model, before, first_supervised, _, history = trained
    loss, supervised = history[:, 0], history[:, 1]
    assert np.all(np.isfinite(history))
    assert loss[-1] < loss[0] - 0.1
    assert supervised[-1] < 0.5 * first_supervised
    for name in ("deconv", "chrom", "head"):
        moved = jax.tree.map(lambda a, b: jnp.abs(a - b).max(),
                             nnx.state(getattr(model, name), nnx.Param),
                             nnx.state(getattr(before, name), nnx.Param))  # fmt: skip
        assert _max_abs(moved) > 1e-3, name


def test_vmap_over_samples_equals_one_sample_at_a_time(trained, batch):
    model = trained[0]
    data, _ = batch
    batched = _predict(model, data)
    single = nnx.jit(lambda m, sample: m(sample))
    for i in range(N_SAMPLES):
        one = single(model, {k: v[i] for k, v in data.items()})[0]
        np.testing.assert_allclose(batched[i], one, rtol=1e-5, atol=1e-6)


def test_checkpoint_restores_the_trained_pipeline(trained, batch, tmp_path):
    model = trained[0]
    data, _ = batch
    path = tmp_path / "pipeline.npz"
    flat = nnx.to_flat_state(nnx.state(model))
    np.savez(path, **{"/".join(map(str, p)): np.asarray(v[...]) for p, v in flat})

    restored = Pipeline(rngs=nnx.Rngs(123))
    assert not np.allclose(_predict(restored, data), _predict(model, data))
    with np.load(path) as saved:
        loaded = [(p, v.replace(jnp.asarray(saved["/".join(map(str, p))])))
                  for p, v in nnx.to_flat_state(nnx.state(restored))]  # fmt: skip
    nnx.update(restored, nnx.from_flat_state(loaded))
    np.testing.assert_array_equal(_predict(restored, data), _predict(model, data))
    for name in ("emission", "transition_logits", "initial_logits"):
        np.testing.assert_array_equal(getattr(restored.chrom, name)[...],
                                      getattr(model.chrom, name)[...])  # fmt: skip
