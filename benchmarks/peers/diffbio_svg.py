"""Peer runner: the upstream DiffBio ``DifferentiableSpatialGeneDetector``, as its docs use it.

Run in the DiffBio environment (``.venv-diffbio``, Python >= 3.12, ``diffbio==0.1.9``) as a
separate process, since DiffBio's dependencies cannot share an environment with diffomics::

    python benchmarks/peers/diffbio_svg.py IN.npz OUT.npz

It imports only numpy, jax, flax and diffbio.

``IN.npz`` holds ``coords`` (n_spots x 2), ``expression`` (n_spots x n_genes raw counts),
``total_counts`` (n_spots,) and the scalar ``threads``. ``OUT.npz`` receives ``fsv`` and
``pvalues`` (n_genes,), ``is_spatial`` (n_genes, the operator's soft indicator),
``fit_seconds`` (the second, steady-state call of the jit-compiled ``apply``) and
``compile_seconds`` (the first call, which includes tracing and XLA compilation).

The operator is used exactly as the DiffBio Quick Start and "Interpreting Results" sections
show: it is built with ``SpatialGeneDetectorConfig(n_genes=G, lengthscale=1.0,
variance=1.0, noise_variance=0.1, hidden_dims=[64, 32], temperature=1.0,
pvalue_threshold=0.05)`` and ``nnx.Rngs(42)``, and ``apply`` is called, untrained, on
``{"spatial_coords", "expression", "total_counts"}``. The inputs are passed as they come
(raw counts; the operator normalises them by ``total_counts`` itself).

What the 0.1.9 code computes, for reading the results: the expression is scaled to the soft
median library size; a randomly initialised MLP of the standardised coordinates
(2 -> 64 -> 32 -> G) gives a "smoothed" deviation field; ``fsv`` is
``max(var(y) - var(y - mean(y) - field), 0) / var(y)`` per gene, and ``pvalues`` is the
pseudo p-value ``sigmoid(2 - n_spots * fsv)``, not a test p-value. The kernel parameters
(lengthscale, variance, noise variance, inducing points) are stored but not used by
``apply``, so without training the scores depend on the random initialisation only through
the MLP.

All genes are processed in one call: the operator has no inducing-point or per-gene
covariance code, and its largest arrays are n_spots x n_genes (about 15 MB in float32 for
the 14,859 genes of the mouse olfactory bulb), so no chunking is needed.

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

__all__ = ["detect_diffbio", "main"]

# The DiffBio Quick Start configuration and seed.
_LENGTHSCALE = 1.0
_VARIANCE = 1.0
_NOISE_VARIANCE = 0.1
_HIDDEN_DIMS = [64, 32]
_TEMPERATURE = 1.0
_PVALUE_THRESHOLD = 0.05
_SEED = 42


def _validate(
    coords: np.ndarray, expression: np.ndarray, total_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and values; return float32 copies.

    Args:
      coords: spot coordinates, n_spots x 2.
      expression: counts, n_spots x n_genes, >= 0.
      total_counts: library sizes, n_spots, > 0.

    Returns:
      ``(coords, expression, total_counts)`` as float32.

    Raises:
      ValueError: wrong shapes, non-finite or negative values, non-positive totals.

    Examples:
      >>> c, e, t = _validate(np.zeros((2, 2)), np.ones((2, 3)), np.array([3, 3]))
      >>> c.dtype, e.shape, t.tolist()
      (dtype('float32'), (2, 3), [3.0, 3.0])
    """
    coords = np.asarray(coords, dtype=np.float64)
    expression = np.asarray(expression, dtype=np.float64)
    total_counts = np.asarray(total_counts, dtype=np.float64)
    if expression.ndim != 2 or expression.shape[1] < 1:
        msg = f"expression must be 2-D (spots x genes); got shape {expression.shape}."
        raise ValueError(msg)
    n = expression.shape[0]
    if coords.shape != (n, 2) or total_counts.shape != (n,):
        msg = (
            f"coords must have shape ({n}, 2) and total_counts ({n},); got {coords.shape} "
            f"and {total_counts.shape}."
        )
        raise ValueError(msg)
    for name, x in (("coords", coords), ("expression", expression), ("total_counts", total_counts)):
        if not np.all(np.isfinite(x)):
            msg = f"{name} has non-finite values."
            raise ValueError(msg)
    if np.any(expression < 0) or np.any(total_counts <= 0):
        msg = "expression must be non-negative and total_counts positive."
        raise ValueError(msg)
    return coords.astype(np.float32), expression.astype(np.float32), total_counts.astype(np.float32)


def detect_diffbio(
    coords: np.ndarray, expression: np.ndarray, total_counts: np.ndarray
) -> dict[str, np.ndarray | float]:
    """Apply the untrained Quick Start ``DifferentiableSpatialGeneDetector`` under ``jax.jit``.

    Args:
      coords: spot coordinates, n_spots x 2.
      expression: raw counts, n_spots x n_genes.
      total_counts: library sizes, n_spots.

    Returns:
      A dict with ``fsv``, ``pvalues`` and ``is_spatial`` (n_genes, float64),
      ``compile_seconds`` (first call) and ``fit_seconds`` (second call).
    """
    import jax
    import jax.numpy as jnp
    from diffbio.operators.multiomics import (
        DifferentiableSpatialGeneDetector,
        SpatialGeneDetectorConfig,
    )
    from flax import nnx

    coords, expression, total_counts = _validate(coords, expression, total_counts)
    config = SpatialGeneDetectorConfig(
        n_genes=expression.shape[1],
        lengthscale=_LENGTHSCALE,
        variance=_VARIANCE,
        noise_variance=_NOISE_VARIANCE,
        hidden_dims=_HIDDEN_DIMS,
        temperature=_TEMPERATURE,
        pvalue_threshold=_PVALUE_THRESHOLD,
    )
    detector = DifferentiableSpatialGeneDetector(config, rngs=nnx.Rngs(_SEED))
    graphdef, state = nnx.split(detector)
    data = {
        "spatial_coords": jnp.asarray(coords),
        "expression": jnp.asarray(expression),
        "total_counts": jnp.asarray(total_counts),
    }

    @jax.jit
    def detect(model_state, batch):
        result, _, _ = nnx.merge(graphdef, model_state).apply(batch, {}, None)
        return result["fsv"], result["spatial_pvalues"], result["is_spatial"]

    start = time.perf_counter()
    jax.block_until_ready(detect(state, data))
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    fsv, pvalues, is_spatial = jax.block_until_ready(detect(state, data))
    fit_seconds = time.perf_counter() - start

    return {
        "fsv": np.asarray(fsv, dtype=np.float64),
        "pvalues": np.asarray(pvalues, dtype=np.float64),
        "is_spatial": np.asarray(is_spatial, dtype=np.float64),
        "fit_seconds": float(fit_seconds),
        "compile_seconds": float(compile_seconds),
    }


def main(argv: list[str] | None = None) -> int:
    """Read ``IN.npz``, apply the detector, write ``OUT.npz``; see the module docstring.

    Args:
      argv: ``[IN.npz, OUT.npz]``; None reads ``sys.argv[1:]``.

    Returns:
      The exit status (0 on success, 2 on a usage error).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: diffbio_svg.py IN.npz OUT.npz\n")
        return 2
    with np.load(argv[0]) as inputs:
        arrays = {key: inputs[key] for key in inputs.files}
    limit_threads(int(arrays["threads"]))
    result = detect_diffbio(arrays["coords"], arrays["expression"], arrays["total_counts"])
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
