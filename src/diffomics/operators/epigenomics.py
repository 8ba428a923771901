"""The public epigenomics operator, and how operators compose into one trainable model.

`ChromatinStateAnnotator` follows the contract of `diffomics.operators.multiomics`:
``apply(data, state, metadata) -> (result, state, metadata)``, jit-able, differentiable.
Operators chain because each result holds its inputs plus its outputs, and their outputs can
be concatenated into the features of a downstream model. Below, a sample is a tissue section
(spots x genes) with a histone-mark track of the same tissue (bins x marks); the section's
mean cell-type composition and the track's mean chromatin-state occupancy are concatenated
and fed to a linear head. ``tests/operators/test_composition.py`` trains such a pipeline with
one optax optimiser, runs it under `jax.vmap` over a batch of samples, and checkpoints it.

Examples:
  >>> import jax.numpy as jnp, numpy as np
  >>> from flax import nnx
  >>> from diffomics.operators.epigenomics import (ChromatinStateAnnotator,
  ...                                               ChromatinStateAnnotatorConfig)
  >>> from diffomics.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig
  >>> deconv = SpatialDeconvolution(
  ...     SpatialDeconvolutionConfig(n_cell_types=3, n_genes=12, hidden_dim=8), rngs=nnx.Rngs(0))
  >>> chrom = ChromatinStateAnnotator(
  ...     ChromatinStateAnnotatorConfig(n_states=4, n_marks=5), rngs=nnx.Rngs(1))
  >>> head = nnx.Linear(3 + 4, 1, rngs=nnx.Rngs(2))
  >>> rng = np.random.default_rng(0)
  >>> sample = {
  ...     "spatial_expression": jnp.asarray(rng.poisson(5.0, (10, 12)) + 1.0, jnp.float32),
  ...     "reference_profiles": jnp.asarray(rng.gamma(2.0, 1.0, (3, 12)), jnp.float32),
  ...     "histone_marks": jnp.asarray(rng.random((30, 5)) < 0.3, jnp.float32)}
  >>> data, _, _ = deconv.apply(sample, {}, None)
  >>> data, _, _ = chrom.apply(data, {}, None)
  >>> features = jnp.concatenate(
  ...     [data["proportions"].mean(axis=0), data["state_probabilities"].mean(axis=0)], axis=-1)
  >>> features.shape, head(features).shape
  ((7,), (1,))
"""

from diffomics.operators._chromatin_state import (
    ChromatinStateAnnotator as ChromatinStateAnnotator,
)
from diffomics.operators._chromatin_state import (
    ChromatinStateAnnotatorConfig as ChromatinStateAnnotatorConfig,
)
from diffomics.operators._keys import CHROMATIN_STATE_KEYS as CHROMATIN_STATE_KEYS

__all__ = ["CHROMATIN_STATE_KEYS", "ChromatinStateAnnotator", "ChromatinStateAnnotatorConfig"]
