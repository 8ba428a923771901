"""A full-batch optax fitting loop for NNX modules with early stopping on the loss."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from diffomics.core._checkpoint import load_checkpoint, save_checkpoint
from diffomics.core._checks import check_positive
from diffomics.core._errors import ConfigError
from diffomics.core._sharding import replicate

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["FitResult", "fit"]


def _on_mesh(a, mesh: Mesh):
    """`a` as it is when already placed on `mesh`, else replicated on it."""
    sharding = getattr(a, "sharding", None)
    if getattr(sharding, "mesh", None) == mesh:
        return a
    return replicate(a, mesh)


class StaticGraph:
    """A `GraphDef` as a static argument of `jax.jit`, which needs it hashable.

    An operator's config (lists) makes its GraphDef unhashable; equal GraphDefs print
    alike, so their repr is the hash and the GraphDef's own equality decides. Equal models
    then share one compiled program, fit after fit.
    """

    def __init__(self, graphdef):
        self.graphdef = graphdef
        self._hash = hash(repr(graphdef))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        same = isinstance(other, StaticGraph) and self.graphdef == other.graphdef
        return other is self or same


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "learning_rate", "length"))
def _run_chunk(params, opt_state, rest, args, *, graph, loss_fn, learning_rate, length):
    """`length` Adam steps on ``loss_fn(model, *args)``; compiled once per model and loss."""
    tx = optax.adam(learning_rate)

    def objective(p):
        return loss_fn(nnx.merge(graph.graphdef, p, rest), *args)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(objective)(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), None, length=length)
    return params, opt_state, losses


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` did.

    Attributes:
      history: loss after each optimisation step, shape `(n_steps,)`.
      n_steps: number of optimisation steps taken.
      converged: True when early stopping triggered before `max_steps`.
      compile_seconds: wall time of the first chunk of steps (JIT compilation plus its steps).
      fit_seconds: wall time of all later chunks (steady state).
    """

    history: np.ndarray
    n_steps: int
    converged: bool
    compile_seconds: float
    fit_seconds: float


def fit(
    model: nnx.Module,
    loss_fn: Callable[..., jax.Array],
    args: tuple[Any, ...] = (),
    *,
    learning_rate: float = 0.05,
    max_steps: int = 3000,
    steps_per_check: int = 50,
    tol: float = 1e-5,
    patience: int = 2,
    progress: bool | None = None,
    wrt: nnx.filterlib.Filter = nnx.Param,
    checkpoint: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
) -> FitResult:
    """Minimise ``loss_fn(model, *args)`` over the model's parameters with Adam, in place.

    Steps run in jit-compiled chunks of `steps_per_check` (a ``lax.scan``). After each chunk
    the mean loss of the chunk is compared with the previous chunk's; when the relative
    improvement stays below `tol` for `patience` chunks in a row, fitting stops. Full-batch
    and deterministic: the same model and arguments give the same numbers.

    Args:
      model: the module to fit; its parameters are updated in place.
      loss_fn: ``loss_fn(model, *args) -> scalar``, traceable by JAX. It is a static
        argument of the compiled steps (fits with the same model shapes and the same
        `loss_fn` object share one compilation), so pass data through `args`: arrays a
        closure holds would be baked into the program and kept alive by JAX's cache.
      args: arrays passed to `loss_fn` (traced, not baked into the compiled program).
      learning_rate: Adam step size, > 0.
      max_steps: upper bound on optimisation steps.
      steps_per_check: steps per compiled chunk (and between convergence checks).
      tol: relative improvement of the chunk-mean loss below which a chunk counts as flat.
      patience: number of consecutive flat chunks that stop the fit.
      progress: show a progress bar; None shows one only when stderr is a terminal.
      wrt: NNX filter of the variables to optimise (default: every `nnx.Param`); the others
        are held fixed.
      checkpoint: an ``.npz`` path. After every chunk the parameters, the optimiser state
        and the loss history are written there atomically; when the file exists at the
        start, fitting resumes from it. Fitting is deterministic, so a fit that was killed
        and resumed ends with the same numbers as one that ran through (the file is left
        in place; delete it to start afresh).
      mesh: a device mesh (`diffomics.core.data_mesh`) for data-parallel fitting. The
        parameters and the optimiser state are replicated on every device; arrays of `args`
        already sharded on `mesh` (`diffomics.core.shard_rows`) stay sharded and the others
        are replicated. XLA partitions each step by the data's rows and sums the gradients
        over devices itself. None (default) leaves every array where it is.

    Returns:
      A `FitResult`.

    Raises:
      ConfigError: a setting is out of range, or the loss became NaN / inf.
    """
    check_positive(learning_rate, "learning_rate")
    for name, value in (("max_steps", max_steps), ("steps_per_check", steps_per_check)):
        if value < 1:
            msg = f"{name} must be >= 1; found {value}."
            raise ConfigError(msg)
    graphdef, params, rest = nnx.split(model, wrt, ...)
    opt_state = optax.adam(learning_rate).init(params)
    run_chunk = functools.partial(
        _run_chunk,
        graph=StaticGraph(graphdef),
        loss_fn=loss_fn,
        learning_rate=learning_rate,
        length=steps_per_check,
    )

    show = sys.stderr.isatty() if progress is None else progress
    n_chunks = -(-max_steps // steps_per_check)
    history, flat, converged = [], 0, False
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        (params, opt_state), stored = load_checkpoint(path, (params, opt_state))
        history, flat = stored["history"].tolist(), int(stored["flat"])
        converged = flat >= patience
    if mesh is not None:
        params, opt_state, rest = replicate((params, opt_state, rest), mesh)
        args = jax.tree.map(lambda a: _on_mesh(a, mesh), args)
    compile_seconds = fit_seconds = 0.0
    done = len(history) // steps_per_check
    with tqdm(total=n_chunks * steps_per_check, initial=done * steps_per_check,
              disable=not show, unit="step") as bar:  # fmt: skip
        for i in range(done, n_chunks):
            if converged:
                break
            t0 = time.perf_counter()
            params, opt_state, losses = run_chunk(params, opt_state, rest, args)
            losses = np.asarray(losses)
            elapsed = time.perf_counter() - t0
            if i == done:
                compile_seconds = elapsed
            else:
                fit_seconds += elapsed
            if not np.all(np.isfinite(losses)):
                step = len(history) + int(np.argmin(np.isfinite(losses)))
                msg = (
                    f"loss became non-finite at step {step}; "
                    "lower learning_rate or check the inputs for extreme values."
                )
                raise ConfigError(msg)
            bar.update(steps_per_check)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if history:
                prev = np.mean(history[-steps_per_check:])
                improvement = (prev - losses.mean()) / max(abs(prev), 1e-12)
                flat = flat + 1 if improvement < tol else 0
            history.extend(losses.tolist())
            if path is not None:
                save_checkpoint(path, (params, opt_state),
                                history=np.asarray(history, np.float64), flat=flat)
            if flat >= patience:
                converged = True
                break
    nnx.update(model, params)
    return FitResult(
        history=np.asarray(history),
        n_steps=len(history),
        converged=converged,
        compile_seconds=compile_seconds,
        fit_seconds=fit_seconds,
    )
