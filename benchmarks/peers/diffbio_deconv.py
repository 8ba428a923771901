"""Peer runner: the upstream DiffBio ``SpatialDeconvolution`` operator, trained as its docs do.

Run in the DiffBio environment (``.venv-diffbio``, Python >= 3.12, ``diffbio==0.1.9``) as a
separate process, since DiffBio's dependencies cannot share an environment with diffomics::

    python benchmarks/peers/diffbio_deconv.py IN.npz OUT.npz

It imports only numpy, jax, flax, optax and diffbio.

``IN.npz`` holds ``spots`` (n_spots x n_genes), ``coords`` (n_spots x 2),
``reference_profiles`` (n_cell_types x n_genes, the same genes) and the scalars ``seed``,
``n_steps``, ``learning_rate`` and ``threads``. ``OUT.npz`` receives ``proportions``
(n_spots x n_cell_types, rows sum to 1), ``fit_seconds`` (steady-state training time: steps
2..n_steps, without the first step), ``compile_seconds`` (the first step, which includes the
JIT compilation), ``final_loss`` (the loss at the returned parameters) and ``loss_history``
(the loss before each step).

Training follows the DiffBio user guide ("Training for Deconvolution"): the operator is built
with ``SpatialDeconvolutionConfig(n_cell_types=K, n_genes=G, hidden_dim=128,
temperature=1.0)`` and ``nnx.Rngs(seed)``, and every parameter is fitted by
``optax.adam(learning_rate)`` on full batches for ``n_steps`` jit-compiled steps with the
documented loss::

    mean((reconstructed - spot_expression) ** 2) - 0.01 * entropy(proportions)

where the entropy is summed over spots and cell types. Only the data keys differ from the
guide, which uses ``spatial_expression``/``proportions``/``reconstructed``: the 0.1.9 code
reads ``spot_expression``, ``reference_profiles`` and ``coordinates`` and writes
``cell_proportions`` and ``reconstructed_expression``.

To give the upstream operator a fair shot, two preprocessing steps are applied; neither
changes the estimand:

* Its reconstruction ``cell_proportions @ reference_profiles`` has no per-spot scale (depth,
  number of cells), so each spot is first rescaled to the mean total of the reference
  profiles. Without this, a spot pooling five cells cannot be matched by any convex
  combination of single-cell profiles, and the squared error is dominated by the scale
  mismatch rather than the composition.
* The coordinates are standardised to zero mean and unit variance per axis: raw coordinates
  in the thousands (pixels, micrometres) saturate the GELU MLP of its spatial encoder.

Two properties of the documented recipe shape the results, and are kept as documented:
the entropy term is subtracted, so it rewards spread-out proportions (the guide's comment
says it encourages sparse ones), and the expression enters the encoders unscaled, so at
count scale (tens per gene) the attention scores are in the thousands, the softmax is
saturated from the first steps and the gradients through it vanish. Dividing spots and
profiles by a common factor avoids the saturation but lets the entropy term dominate, and
the proportions tend to uniform instead.

Thread limits: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set
from ``threads`` before jax is imported, and ``JAX_PLATFORMS`` defaults to ``cpu`` (an
already-set value is respected). XLA's own CPU thread pool is not sized by these variables;
pin the process (e.g. with ``taskset``) to limit it strictly.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _threads import limit_threads

__all__ = ["main", "prepare_inputs", "train_diffbio"]

_ENTROPY_WEIGHT = 0.01
_LOG_EPS = 1e-8
_HIDDEN_DIM = 128
_TEMPERATURE = 1.0


def prepare_inputs(
    spots: np.ndarray, coords: np.ndarray, profiles: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the inputs, rescale spots to the reference scale and standardise coordinates.

    Args:
      spots: spot expression, n_spots x n_genes, >= 0.
      coords: spot coordinates, n_spots x 2.
      profiles: reference profiles, n_cell_types x n_genes, >= 0.

    Returns:
      ``(spots, coords, profiles)`` as float32: each spot with a positive total scaled to
      the mean total of the profiles (all-zero spots are left as they are), coordinates with
      zero mean and unit variance per axis (a constant axis is only centred), profiles
      unchanged.

    Raises:
      ValueError: wrong shapes, non-finite or negative values.

    Examples:
      >>> s, c, p = prepare_inputs(
      ...     np.array([[2.0, 2.0], [0.0, 8.0]]),
      ...     np.array([[0.0, 5.0], [10.0, 5.0]]),
      ...     np.array([[1.0, 1.0], [3.0, 3.0]]),
      ... )
      >>> s.tolist(), c.tolist()
      ([[2.0, 2.0], [0.0, 4.0]], [[-1.0, 0.0], [1.0, 0.0]])
    """
    spots = np.asarray(spots, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    profiles = np.asarray(profiles, dtype=np.float64)
    if spots.ndim != 2 or profiles.ndim != 2 or spots.shape[1] != profiles.shape[1]:
        msg = (
            f"spots {spots.shape} and reference_profiles {profiles.shape} must be 2-D with "
            "the same number of genes (columns)."
        )
        raise ValueError(msg)
    if coords.shape != (spots.shape[0], 2):
        msg = f"coords must have shape ({spots.shape[0]}, 2); got {coords.shape}."
        raise ValueError(msg)
    for name, x in (("spots", spots), ("coords", coords), ("reference_profiles", profiles)):
        if not np.all(np.isfinite(x)):
            msg = f"{name} has non-finite values."
            raise ValueError(msg)
    if np.any(spots < 0) or np.any(profiles < 0):
        msg = "spots and reference_profiles must be non-negative."
        raise ValueError(msg)

    target = profiles.sum(axis=1).mean()
    totals = spots.sum(axis=1, keepdims=True)
    factor = np.divide(target, totals, out=np.ones_like(totals), where=totals > 0)
    std = coords.std(axis=0)
    coords = (coords - coords.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return (
        (spots * factor).astype(np.float32),
        coords.astype(np.float32),
        profiles.astype(np.float32),
    )


def train_diffbio(
    spots: np.ndarray,
    coords: np.ndarray,
    profiles: np.ndarray,
    *,
    seed: int,
    n_steps: int,
    learning_rate: float,
) -> dict[str, np.ndarray | float]:
    """Train the upstream ``SpatialDeconvolution`` with the loss of the DiffBio docs.

    Args:
      spots: prepared spot expression, n_spots x n_genes (see `prepare_inputs`).
      coords: prepared coordinates, n_spots x 2.
      profiles: reference profiles, n_cell_types x n_genes.
      seed: seed of ``nnx.Rngs`` (parameter initialisation).
      n_steps: number of full-batch Adam steps, >= 1.
      learning_rate: Adam step size.

    Returns:
      A dict with ``proportions`` (n_spots x n_cell_types), ``fit_seconds`` (steps
      2..n_steps), ``compile_seconds`` (step 1, with the JIT compilation), ``final_loss``
      (loss at the returned parameters) and ``loss_history`` (loss before each step).

    Raises:
      ValueError: `n_steps` < 1.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from diffbio.operators.multiomics import SpatialDeconvolution, SpatialDeconvolutionConfig
    from flax import nnx

    if n_steps < 1:
        msg = f"n_steps must be >= 1; got {n_steps}."
        raise ValueError(msg)
    config = SpatialDeconvolutionConfig(
        n_cell_types=profiles.shape[0],
        n_genes=profiles.shape[1],
        hidden_dim=_HIDDEN_DIM,
        temperature=_TEMPERATURE,
    )
    model = SpatialDeconvolution(config, rngs=nnx.Rngs(int(seed)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    data = {
        "spot_expression": jnp.asarray(spots),
        "reference_profiles": jnp.asarray(profiles),
        "coordinates": jnp.asarray(coords),
    }
    tx = optax.adam(float(learning_rate))

    def forward(p, batch):
        result, _, _ = nnx.merge(graphdef, p, rest).apply(batch, {}, None)
        proportions = result["cell_proportions"]
        recon_loss = jnp.mean((result["reconstructed_expression"] - batch["spot_expression"]) ** 2)
        entropy = -jnp.sum(proportions * jnp.log(proportions + _LOG_EPS))
        return recon_loss - _ENTROPY_WEIGHT * entropy, proportions

    @jax.jit
    def step(p, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(forward, has_aux=True)(p, batch)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    evaluate = jax.jit(forward)
    opt_state = tx.init(params)
    losses = []

    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, data)
    jax.block_until_ready((params, opt_state, loss))
    compile_seconds = time.perf_counter() - start
    losses.append(loss)

    start = time.perf_counter()
    for _ in range(int(n_steps) - 1):
        params, opt_state, loss = step(params, opt_state, data)
        losses.append(loss)
    jax.block_until_ready((params, opt_state, loss))
    fit_seconds = time.perf_counter() - start

    final_loss, proportions = evaluate(params, data)
    return {
        "proportions": np.asarray(proportions, dtype=np.float64),
        "fit_seconds": float(fit_seconds),
        "compile_seconds": float(compile_seconds),
        "final_loss": float(final_loss),
        "loss_history": np.asarray(jnp.stack(losses), dtype=np.float64),
    }


def main(argv: list[str] | None = None) -> int:
    """Read ``IN.npz``, train, write ``OUT.npz``; see the module docstring.

    Args:
      argv: ``[IN.npz, OUT.npz]``; None reads ``sys.argv[1:]``.

    Returns:
      The exit status (0 on success, 2 on a usage error).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: diffbio_deconv.py IN.npz OUT.npz\n")
        return 2
    with np.load(argv[0]) as inputs:
        arrays = {key: inputs[key] for key in inputs.files}
    limit_threads(int(arrays["threads"]))
    spots, coords, profiles = prepare_inputs(
        arrays["spots"], arrays["coords"], arrays["reference_profiles"]
    )
    result = train_diffbio(
        spots,
        coords,
        profiles,
        seed=int(arrays["seed"]),
        n_steps=int(arrays["n_steps"]),
        learning_rate=float(arrays["learning_rate"]),
    )
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
