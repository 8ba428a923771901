"""Peer runner: the upstream DiffBio ``DifferentiableMultiOmicsVAE``, trained on its own loss.

Run in the DiffBio environment (``.venv-diffbio``, Python >= 3.12, ``diffbio==0.1.9``) as a
separate process, since DiffBio's dependencies cannot share an environment with diffomics::

    python benchmarks/peers/diffbio_vae.py IN.npz OUT.npz

It imports only numpy, jax, flax, optax and diffbio.

``IN.npz`` holds ``x0`` and ``x1`` (n_cells x features of the two modalities, the same cells
in the same order) and the scalars ``seed``, ``threads``, ``latent_dim``, ``hidden_dim``,
``max_epochs``, ``batch_size``, ``learning_rate``, ``validation_fraction`` and ``patience``.
``OUT.npz`` receives ``latent_joint`` (the PoE posterior mean ``joint_mu`` of every cell),
``latent_0`` and ``latent_1`` (the posterior mean of each modality's own expert),
``impute_1_from_0`` (modality 1 decoded from ``latent_0``), ``history`` (epoch, mean
training loss, validation loss), ``epoch_seconds`` (wall time of every epoch),
``fit_seconds`` (the whole training loop), ``epochs`` and ``error`` (empty, or why training
stopped, e.g. a non-finite loss).

What the 0.1.9 operator is, read from its code (the DiffBio docs list it in the API
reference only; the examples never train it): two modalities use the data keys
``rna_counts`` and ``atac_counts`` whatever they hold (protein goes under ``atac``); every
encoder is an MLP of ``log1p(x)`` (so any value <= -1 gives NaN); the joint posterior is the
product of the modality experts without the prior expert; each decoder is an MLP with a
linear output, and ``elbo_loss`` is ``sum_m (1/M) mean_cells(sum_features (x_m - x_hat_m)^2)
+ KL`` (equal weights 1/M, KL summed over latent dimensions and averaged over cells), i.e.
squared error on the raw values, not a count likelihood. ``apply`` needs an explicit PRNG
key for the reparameterisation. There is no training routine, so this runner trains
``apply``'s ``elbo_loss`` with the protocol diffomics' ``integrate`` uses: Adam
(``learning_rate``), shuffled minibatches of ``batch_size`` cells (the last partial batch
dropped), a held-out ``validation_fraction`` of cells (seeded split) whose loss is checked
every epoch, stopping after ``patience`` epochs without improvement (relative 1e-3) or at
``max_epochs``, and the best parameters restored. The key of step ``t`` is
``fold_in(key(seed), t)``; the validation loss uses a fixed key.

The modality-specific latents (for FOSCTTM) and the cross-modal imputation are computed from
the operator's public submodules (``encoders[m]``, ``mu_heads[m]``, ``decoders[m]``), as
its own ``apply`` chains them; the operator has no method for them. ``latent_m`` is what
``product_of_experts`` returns for that expert alone.

Thread limits: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set
from ``threads`` before jax is imported, and ``JAX_PLATFORMS`` defaults to ``cpu``. XLA's own
CPU thread pool is not sized by these variables; the driver pins the process to its CPUs.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _threads import limit_threads

__all__ = ["main", "train_diffbio_vae"]

_EVAL_CHUNK = 1024


def train_diffbio_vae(
    x0: np.ndarray,
    x1: np.ndarray,
    *,
    seed: int,
    latent_dim: int,
    hidden_dim: int,
    max_epochs: int,
    batch_size: int,
    learning_rate: float,
    validation_fraction: float,
    patience: int,
) -> dict[str, np.ndarray | float | int | str]:
    """Train the upstream ``DifferentiableMultiOmicsVAE`` and embed every cell.

    Args:
      x0: first modality (``rna_counts``), n_cells x d0.
      x1: second modality (``atac_counts``), n_cells x d1, same cells.
      seed: seed of ``nnx.Rngs``, the split, the shuffling and the sampling keys.
      latent_dim: ``MultiOmicsVAEConfig.latent_dim``.
      hidden_dim: ``MultiOmicsVAEConfig.hidden_dim``.
      max_epochs: epoch limit.
      batch_size: cells per minibatch.
      learning_rate: Adam step size.
      validation_fraction: held-out fraction of cells for early stopping.
      patience: epochs without improvement that stop training.

    Returns:
      The ``OUT.npz`` entries described in the module docstring.

    Raises:
      ValueError: the modalities hold different numbers of cells.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from diffbio.operators.multiomics import DifferentiableMultiOmicsVAE, MultiOmicsVAEConfig
    from flax import nnx

    x0 = np.asarray(x0, dtype=np.float32)
    x1 = np.asarray(x1, dtype=np.float32)
    if x0.ndim != 2 or x1.ndim != 2 or len(x0) != len(x1):
        msg = f"x0 {x0.shape} and x1 {x1.shape} must be 2-D with the same number of cells."
        raise ValueError(msg)
    config = MultiOmicsVAEConfig(
        modality_dims=[x0.shape[1], x1.shape[1]],
        latent_dim=int(latent_dim),
        hidden_dim=int(hidden_dim),
    )
    model = DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(int(seed)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(float(learning_rate))
    opt_state = tx.init(params)
    base_key = jax.random.key(int(seed))

    def loss_fn(p, batch, key):
        result, _, _ = nnx.merge(graphdef, p, rest).apply(batch, {}, None, key)
        return result["elbo_loss"]

    @jax.jit
    def step(p, state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch, key)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    evaluate = jax.jit(loss_fn)

    @jax.jit
    def embed(p, a, b):
        op = nnx.merge(graphdef, p, rest)
        mus, logvars = [], []
        for m, x in enumerate((a, b)):
            h = op.encoders[m](jnp.log1p(x))
            mus.append(op.mu_heads[m](h))
            logvars.append(jnp.clip(op.logvar_heads[m](h), -10.0, 10.0))
        joint, _ = op.product_of_experts(mus, logvars)
        singles = [
            op.product_of_experts([mu], [lv])[0] for mu, lv in zip(mus, logvars, strict=True)
        ]
        return joint, singles[0], singles[1], op.decoders[1](singles[0])

    n = len(x0)
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(n)
    n_val = int(round(validation_fraction * n)) if n >= 20 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    batch_size = int(min(batch_size, len(train_idx)))

    def take(idx):
        return {"rna_counts": jnp.asarray(x0[idx]), "atac_counts": jnp.asarray(x1[idx])}

    val_key = jax.random.fold_in(base_key, 2**30)
    history, epoch_seconds = [], []
    best, best_params, waited, t, error = np.inf, params, 0, 0, ""
    fit_start = time.perf_counter()
    for epoch in range(int(max_epochs)):
        start = time.perf_counter()
        perm = rng.permutation(train_idx)
        losses = []
        for b in range(len(perm) // batch_size):
            batch = take(perm[b * batch_size : (b + 1) * batch_size])
            key = jax.random.fold_in(base_key, t)
            params, opt_state, loss = step(params, opt_state, batch, key)
            losses.append(float(loss))
            t += 1
        if n_val:
            chunks = [val_idx[s : s + _EVAL_CHUNK] for s in range(0, n_val, _EVAL_CHUNK)]
            val = float(np.mean([float(evaluate(params, take(c), val_key)) for c in chunks]))
        else:
            val = float(np.mean(losses))
        epoch_seconds.append(time.perf_counter() - start)
        history.append((epoch, float(np.mean(losses)), val))
        if not np.isfinite(val):
            error = f"non-finite loss ({val}) at epoch {epoch}"
            break
        if val < best - 1e-3 * abs(best if np.isfinite(best) else 0.0):
            best, best_params, waited = val, params, 0
        else:
            waited += 1
            if waited >= patience:
                break
    fit_seconds = time.perf_counter() - fit_start

    parts = [embed(best_params, jnp.asarray(x0[s : s + _EVAL_CHUNK]),
                   jnp.asarray(x1[s : s + _EVAL_CHUNK]))
             for s in range(0, n, _EVAL_CHUNK)]  # fmt: skip
    joint, lat0, lat1, imp = (np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(4))
    return {
        "latent_joint": joint.astype(np.float64),
        "latent_0": lat0.astype(np.float64),
        "latent_1": lat1.astype(np.float64),
        "impute_1_from_0": imp.astype(np.float64),
        "history": np.asarray(history, dtype=np.float64),
        "epoch_seconds": np.asarray(epoch_seconds, dtype=np.float64),
        "fit_seconds": float(fit_seconds),
        "epochs": len(history),
        "best_validation_loss": float(best),
        "error": error,
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
        sys.stderr.write("usage: diffbio_vae.py IN.npz OUT.npz\n")
        return 2
    with np.load(argv[0]) as inputs:
        arrays = {key: inputs[key] for key in inputs.files}
    limit_threads(int(arrays["threads"]))
    result = train_diffbio_vae(
        arrays["x0"],
        arrays["x1"],
        seed=int(arrays["seed"]),
        latent_dim=int(arrays["latent_dim"]),
        hidden_dim=int(arrays["hidden_dim"]),
        max_epochs=int(arrays["max_epochs"]),
        batch_size=int(arrays["batch_size"]),
        learning_rate=float(arrays["learning_rate"]),
        validation_fraction=float(arrays["validation_fraction"]),
        patience=int(arrays["patience"]),
    )
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
