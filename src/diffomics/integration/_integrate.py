"""`integrate`: train the multi-omics VAE on AnnData / MuData.

Minibatches, KL warm-up and early stopping on the held-out ELBO; embed, impute across
modalities, save and load.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
import optax
import pandas as pd
import scipy.sparse
from flax import nnx
from tqdm.auto import tqdm

from diffomics.core._checkpoint import load_checkpoint, save_checkpoint
from diffomics.core._errors import ConfigError, MissingKeyError, ShapeError
from diffomics.core._fit import StaticGraph
from diffomics.core._numerics import default_float
from diffomics.core._sharding import (
    check_in_every_process,
    on_disk,
    pad_rows,
    padded_size,
    replicate,
    shard_rows_from,
    sum_over_processes,
)

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from diffomics.operators._multiomics_vae import DifferentiableMultiOmicsVAE

__all__ = ["IntegrationModel", "StreamedRows", "integrate", "open_zarr"]


def _modalities(data) -> dict:
    """``{name: AnnData}`` from a MuData or a mapping."""
    if hasattr(data, "mod"):
        return dict(data.mod)
    if isinstance(data, Mapping):
        return dict(data)
    msg = f"data must be a MuData or a dict of AnnData objects; found {type(data).__name__}."
    raise ConfigError(msg)


def open_zarr(store: str | os.PathLike):
    """An AnnData Zarr store (``AnnData.write_zarr``) opened with its ``X`` left on disk.

    ``obs``, ``var``, ``obsm`` and ``uns`` are read into memory; ``X`` stays in the store, a
    ``zarr.Array`` when dense or anndata's CSR/CSC dataset when sparse, read when indexed.
    `integrate` streams such an AnnData as it does one opened with
    ``anndata.read_h5ad(path, backed="r")``: a minibatch of cells at a time. The store is
    opened read-only; results (``obsm["X_diffomics"]``) go to the AnnData in memory.

    Args:
      store: path (or any store ``zarr.open_group`` accepts) of the AnnData written by
        ``AnnData.write_zarr``.

    Returns:
      An `anndata.AnnData` whose ``X`` is read from the store when indexed.

    Raises:
      MissingKeyError: the store has no ``X``.

    Examples:
      >>> import tempfile, anndata as ad
      >>> path = Path(tempfile.mkdtemp()) / "rna.zarr"
      >>> ad.AnnData(np.ones((3, 2), np.float32)).write_zarr(path)
      >>> adata = open_zarr(path)
      >>> type(adata.X).__name__, adata.X[np.array([0, 2])].shape
      ('Array', (2, 2))
    """
    import anndata as ad  # noqa: PLC0415 - anndata is slow to import
    import zarr  # noqa: PLC0415

    group = zarr.open_group(store, mode="r")
    if "X" not in group:
        msg = f"store {store} has no X; expected an AnnData written by AnnData.write_zarr."
        raise MissingKeyError(msg)
    x = group["X"]
    x = ad.io.sparse_dataset(x) if isinstance(x, zarr.Group) else x
    parts = {k: ad.io.read_elem(group[k]) for k in ("obs", "var", "obsm", "uns") if k in group}
    return ad.AnnData(X=x, **parts)


class StreamedRows:
    """The rows of one modality of an on-disk AnnData, read from its file when indexed.

    Stands in for the dense ``(n_cells, n_features)`` matrix of an in-memory modality:
    ``rows[idx]`` (an index array or a slice) reads only those cells (in increasing file
    order, as HDF5 wants, then put back in the order asked for), densified, in
    `default_float`; cells without this modality are rows of 0. A standardised Gaussian
    modality is standardised as it is read. Host memory then holds one minibatch of the
    modality at a time, not the matrix.

    Attributes:
      shape: ``(n_cells, n_features)``.
      dtype: the float type rows are returned in.
    """

    def __init__(self, x, rows: np.ndarray, n_features: int):
        self._x = x
        self._rows = np.asarray(rows, np.int64)
        self.shape = (len(self._rows), int(n_features))
        self.dtype = np.dtype(default_float())
        self.ndim = 2
        self.scale: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        rows = self._rows[idx]
        out = np.zeros((len(idx), self.shape[1]), self.dtype)
        have = rows >= 0
        if have.any():
            wanted, where = np.unique(rows[have], return_inverse=True)
            block = self._x[wanted]
            block = block.toarray() if scipy.sparse.issparse(block) else np.asarray(block)
            block = block.astype(self.dtype)[where]
            if self.scale is not None:
                mean, sd = self.scale
                block = ((block - mean) / sd).astype(self.dtype)
            out[have] = block
        return out


def _chunks(data: dict, size: int = 4096, rows: slice | None = None):
    """`data` (arrays or `StreamedRows` of one length) in chunks of `size` rows (of `rows`)."""
    n = len(next(iter(data.values())))
    first, last = (0, n) if rows is None else (rows.start, rows.stop)
    for start in range(first, last, size):
        yield {k: v[start : min(start + size, last)] for k, v in data.items()}


def _process_cells(n: int, mesh: Mesh | None) -> slice | None:
    """The cells whose checks and statistics this process computes (None: all of them).

    On a mesh over several processes, the cells are cut into one block per process, so a
    file is read once over all processes before training, not once per process.
    """
    if mesh is None or not mesh.is_multi_process:
        return None
    bounds = np.linspace(0, n, jax.process_count() + 1).round().astype(int)
    return slice(int(bounds[jax.process_index()]), int(bounds[jax.process_index() + 1]))


def _check_cells(module, inputs: dict, mesh: Mesh | None, size: int = 4096) -> None:
    """``module._check`` a chunk at a time (a file is read once), naming cells by index.

    On a mesh over several processes each checks its block of cells (`_process_cells`),
    and all raise when one finds bad input (`check_in_every_process`).
    """
    n = len(next(iter(inputs.values())))
    rows = _process_cells(n, mesh) or slice(0, n)

    def check():
        for k, chunk in enumerate(_chunks(inputs, size, rows)):
            module._check(chunk, row_offset=rows.start + k * size)

    if mesh is None:
        check()
    else:
        check_in_every_process(check, mesh, "the modalities")


def _column_moments(x, seen: np.ndarray, mesh: Mesh | None = None) -> tuple[np.ndarray, ...]:
    """Mean and sd (1 where 0) of each column over the `seen` rows, summed in float64.

    On a mesh over several processes each sums its block of cells (`_process_cells`) and
    the sums are added over the processes.
    """
    total = square = np.zeros(x.shape[1])
    for chunk in _chunks({"x": x, "seen": seen}, rows=_process_cells(len(seen), mesh)):
        part = np.asarray(chunk["x"], np.float64)[chunk["seen"]]
        total = total + part.sum(0)
        square = square + (part**2).sum(0)
    if mesh is not None:
        total, square = sum_over_processes(np.stack([total, square]), mesh)
    n = max(int(seen.sum()), 1)
    mean = total / n
    sd = np.sqrt(np.maximum(square / n - mean**2, 0.0))
    f = default_float()
    return mean.astype(f), np.where(sd > 0, sd, 1.0).astype(f)


def _batch_labels(mods: dict, cells: pd.Index, batch_key: str) -> np.ndarray:
    """Each cell's label in ``obs[batch_key]``, from the first modality that holds the cell."""
    holding = [a for a in mods.values() if batch_key in a.obs]
    if not holding:
        msg = f"batch_key {batch_key!r} is not a column of the obs of any modality ({list(mods)})."
        raise MissingKeyError(msg)
    labels = pd.Series(np.nan, index=cells, dtype=object)
    for adata in holding:
        labels = labels.fillna(adata.obs[batch_key].astype(object).reindex(cells))
    if labels.isna().any():
        missing = labels.index[labels.isna()]
        msg = (f"batch_key {batch_key!r}: every cell needs a batch label; found "
               f"{len(missing)} without one (e.g. {list(missing[:3])}).")  # fmt: skip
        raise MissingKeyError(msg)
    return labels.astype(str).to_numpy()


def _fit_scales(config, matrices: dict, masks: dict, mesh: Mesh | None = None) -> dict:
    """``{name: (mean, sd)}`` of the Gaussian modalities over the cells that have them."""
    return {name: _column_moments(matrices[name], masks[name] > 0, mesh)
            for name, lik in zip(config.names, config.likelihood_list, strict=True)
            if lik == "gaussian"}  # fmt: skip


def _standardize(inputs: dict, scales: dict) -> None:
    """Standardise the `scales` modalities of the module's `inputs` in place.

    Over the cells that have the modality; a streamed one is standardised as it is read.
    """
    f = default_float()
    for name, (mean, sd) in scales.items():
        x, seen = inputs[f"{name}_counts"], inputs[f"{name}_mask"] > 0
        if isinstance(x, StreamedRows):
            x.scale = (mean, sd)
        else:
            inputs[f"{name}_counts"] = np.where(seen[:, None], (x - mean) / sd, 0.0).astype(f)


def _model_inputs(config, matrices, masks, *, labels, categories, batch_key) -> dict:
    """The module's inputs, each cell's batch `labels` coded by `categories` (None: none).

    The same coding for training (`integrate`) and for data given to a loaded model
    (`IntegrationModel.load`), which uses the labels saved with it.
    """
    batch = None
    if categories is not None:
        codes = pd.Index(categories).get_indexer(labels)
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0]))[:5]
            msg = (f"batch_key {batch_key!r}: labels {unknown} are not among the model's "
                   f"batches {categories}.")  # fmt: skip
            raise MissingKeyError(msg)
        batch = codes.astype(np.int32)
    return _inputs(config.names, matrices, masks, batch)


def _align(mods: dict, join: str) -> tuple[pd.Index, dict, dict, dict]:
    """Cells (by obs_names) and, per modality, a dense matrix and an observed mask.

    The matrix of an on-disk AnnData (``anndata.read_h5ad(path, backed="r")``, `open_zarr`)
    is a `StreamedRows`, read a minibatch at a time.
    """
    for name, adata in mods.items():
        if adata.obs_names.has_duplicates:
            dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
            msg = f"modality {name!r} has duplicated obs_names (e.g. {dup}); make them unique."
            raise ShapeError(msg)
        if adata.n_vars == 0:
            msg = f"modality {name!r} has zero features."
            raise ShapeError(msg)
    indexes = [a.obs_names for a in mods.values()]
    union, inner = indexes[0], indexes[0]
    for idx in indexes[1:]:
        union, inner = union.union(idx, sort=False), inner.intersection(idx, sort=False)
    cells = inner if join == "inner" else union
    report = {"n_cells": len(cells), "join": join,
              "cells_not_in_every_modality": int(len(union) - len(inner))}  # fmt: skip
    if len(cells) == 0:
        msg = "no cell (obs_name) is shared by the modalities; check that the cells match."
        raise ShapeError(msg)
    matrices, masks = {}, {}
    for name, adata in mods.items():
        pos = adata.obs_names.get_indexer(cells)
        present = pos >= 0
        if on_disk(adata):
            matrices[name] = StreamedRows(adata.X, pos, adata.n_vars)
        else:
            x = adata.X[pos[present]]
            x = x.toarray() if scipy.sparse.issparse(x) else np.asarray(x)
            full = np.zeros((len(cells), adata.n_vars), dtype=default_float())
            full[present] = x
            matrices[name] = full
        masks[name] = present.astype(default_float())
        report[f"cells_without_{name}"] = int((~present).sum())
    if report["cells_not_in_every_modality"] and join == "inner":
        warnings.warn(
            f"{report['cells_not_in_every_modality']} cells are not in every modality and were "
            "left out (join='inner'); use join='outer' to keep them as mosaic data.",
            stacklevel=3,
        )
    return cells, matrices, masks, report


@dataclasses.dataclass
class IntegrationModel:
    """A trained `DifferentiableMultiOmicsVAE` with the cells it was trained on.

    Attributes:
      module: the trained operator.
      cells: obs_names of the cells, in row order.
      data: the training inputs (``<name>_counts``, ``<name>_mask``, ``batch``).
      history: DataFrame ``epoch, kl_scale, train_loss, validation_loss,
        validation_reconstruction_loss`` (per cell, in nats: the training loss at that
        epoch's KL scale; the validation loss at full KL weight and its reconstruction
        part).
      report: alignment, epochs, early stopping (``early_stopping_monitor``,
        ``best_epoch``, ``best_validation_loss`` (of the monitored loss),
        ``stopped_early``) and timings.
      scales: ``{name: (mean, sd)}`` of the standardised Gaussian modalities.
      batch_key: the ``obs`` column of the batch covariate (None: no batches).
      batch_categories: the batch labels, sorted; batch ``k`` of the module is the ``k``-th.
    """

    module: DifferentiableMultiOmicsVAE
    cells: pd.Index
    data: dict
    history: pd.DataFrame
    report: dict
    scales: dict = dataclasses.field(default_factory=dict)
    batch_key: str | None = None
    batch_categories: list[str] | None = None

    @property
    def names(self) -> list[str]:
        """Modality names."""
        return self.module.config.names

    def _batch(self, chunk: dict, n: int):
        """One-hot batch covariates of a chunk of `n` cells (`(n, 0)` without batches)."""
        c = self.module.config
        if c.n_batches:
            return jax.nn.one_hot(np.asarray(chunk["batch"]), c.n_batches)
        return np.zeros((n, 0), default_float())

    def latent(self, modalities: list[str] | None = None, data: dict | None = None) -> np.ndarray:
        """Joint posterior mean from all modalities or only `modalities`, `(n_cells, latent)`."""
        unknown = set(modalities or []) - set(self.names)
        if unknown:
            msg = f"unknown modalities {sorted(unknown)}; the model has {self.names}."
            raise MissingKeyError(msg)
        self.module.eval()
        parts = [np.asarray(self.module.encode(chunk, modalities)[0])
                 for chunk in _chunks(data or self.data, 1024)]  # fmt: skip
        return np.concatenate(parts)

    def impute(
        self, target: str, from_: list[str], data: dict | None = None, *, library="predicted"
    ) -> np.ndarray:
        """Expected `target` values decoded from the latent of the `from_` modalities.

        Args:
          target: modality to predict.
          from_: modalities the latent is computed from.
          data: inputs (default: the training inputs).
          library: size factor of count likelihoods: ``"predicted"`` (default: the log of
            each cell's `target` total predicted by least squares from the `from_`
            latent and the log totals of the `from_` count modalities, fitted on the cells
            where `target` is measured: a cross-modal prediction of the cell's depth, as
            totalVI's decoder predicts it from the latent), ``"median"`` (the median
            observed total, the same for every cell), ``"observed"`` (each cell's own
            observed total where measured: uses the target, so only for denoising), or a
            number. For a Bernoulli `target` the same choice applies to the logit of the
            cell accessibility factor (a number in (0, 1] is the factor itself).

        Returns:
          `(n_cells, n_features)` expected values, in the input's units.

        Raises:
          MissingKeyError: an unknown `target`.
          ConfigError: a `library` not listed above, or ``"predicted"`` with fewer cells
            measured in `target` than regressors.
        """
        if target not in self.names:
            msg = f"unknown target {target!r}; the model has {self.names}."
            raise MissingKeyError(msg)
        choices = ("predicted", "median", "observed")
        if not (library in choices or (isinstance(library, int | float) and library > 0)):
            msg = f"library must be one of {list(choices)} or a number > 0; found {library!r}."
            raise ConfigError(msg)
        data = data or self.data
        m = self.names.index(target)
        c = self.module.config
        decoder = self.module.decoders[m]
        bernoulli = c.likelihood_list[m] == "bernoulli"
        if bernoulli and not isinstance(library, str) and library > 1:
            msg = f"library for a Bernoulli target must be in (0, 1]; found {library!r}."
            raise ConfigError(msg)
        key = f"{target}_counts"
        totals, own = [], []
        for chunk in _chunks(data, 1024):  # every cell's total first: the median library
            x = np.asarray(chunk[key], dtype=default_float())
            totals.append(np.maximum(x.sum(1), 1.0))
            if bernoulli:  # the cell factor reads the cell's own peaks: keep them out
                binary = (x > 0).astype(default_float())
                own.append(np.asarray(decoder.cell_logit(binary, self._batch(chunk, len(x))))[:, 0])
        observed = np.concatenate(totals)
        n = len(observed)
        mask = np.asarray(data.get(f"{target}_mask", np.ones(n)), bool)
        z = self.latent(from_, data)
        if c.likelihood_list[m] == "gaussian":  # no size factor: the library is unused
            library = 1.0
        design = self._depth_design(z, from_, data) if library == "predicted" else None

        def per_cell(values, number, *, log_scale):
            """`library` applied to a per-cell quantity measured where `mask`."""
            centre = np.median(values[mask]) if mask.any() else (1.0 if log_scale else 0.0)
            if library == "median":
                out = np.full(n, centre)
            elif library == "observed":
                out = np.where(mask, values, centre)
            elif library == "predicted":
                y = np.log(values) if log_scale else values
                fitted = _least_squares(design, y, mask, what=f"{target}'s depth")
                out = np.exp(fitted) if log_scale else fitted
            else:
                out = np.full(n, number)
            return out.astype(default_float())

        number = None if isinstance(library, str) else float(library)
        lib = per_cell(observed, number, log_scale=True)
        cell = None
        if bernoulli:  # a number is the factor itself: its logit
            logit = None if number is None else np.log(number) - np.log1p(-min(number, 1 - 1e-7))
            cell = per_cell(np.concatenate(own), logit, log_scale=False)[:, None]
        means = []
        for k, chunk in enumerate(_chunks(data, 1024)):
            rows = slice(1024 * k, 1024 * (k + 1))
            x = np.asarray(chunk[key], dtype=default_float())
            _, mean, _ = decoder(z[rows], self._batch(chunk, len(x)), x, lib[rows],
                                 None if cell is None else cell[rows])  # fmt: skip
            means.append(np.asarray(mean))
        mean = np.concatenate(means)
        if target in self.scales:
            center, sd = self.scales[target]
            mean = mean * sd + center
        return mean

    def _depth_design(self, z: np.ndarray, from_: list[str], data: dict) -> np.ndarray:
        """Regressors of a cell's depth: 1, the latent and the `from_` count log totals.

        A cell without one of those modalities (mosaic data) gets that modality's mean log
        total over the cells that have it, and a column marks such cells.
        """
        liks = dict(zip(self.names, self.module.config.likelihood_list, strict=True))
        columns = [np.ones(len(z)), z]
        for name in (f for f in from_ if liks[f] != "gaussian"):
            sums = [np.asarray(chunk[f"{name}_counts"], np.float64).sum(1)
                    for chunk in _chunks(data, 1024)]  # fmt: skip
            total = np.log1p(np.concatenate(sums))
            have = np.asarray(data.get(f"{name}_mask", np.ones(len(z))), bool)
            if have.all():
                columns.append(total)
            elif have.any():
                columns += [np.where(have, total, total[have].mean()), (~have).astype(float)]
        return np.column_stack(columns)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to folder `path`.

        ``config.json`` (the module's config), ``state.npz`` (its parameters) and
        ``setup.json`` (how data are prepared for it: the batch key and labels, the means
        and sds of the standardised modalities), so that `load` embeds new data as
        `integrate` embedded the training cells.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = dataclasses.asdict(self.module.config)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        setup = {"batch_key": self.batch_key, "batch_categories": self.batch_categories,
                 "scales": {name: [np.asarray(a, np.float64).tolist() for a in pair]
                            for name, pair in self.scales.items()}}  # fmt: skip
        (path / "setup.json").write_text(json.dumps(setup))
        state = nnx.state(self.module, nnx.Param)
        leaves = {"/".join(map(str, k)): np.asarray(v) for k, v in _flat(state)}
        np.savez(path / "state.npz", **leaves)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, data=None, *, join: str = "inner") -> IntegrationModel:
        """Rebuild a model saved by `save`; `data` (MuData / dict of AnnData) to embed.

        `data` is prepared as the training data were: Gaussian modalities standardised with
        the saved means and sds, batches coded by the saved labels (a label the model was
        not trained on raises `MissingKeyError`).
        """
        from diffomics.operators._multiomics_vae import (  # noqa: PLC0415 - import cycle
            DifferentiableMultiOmicsVAE,
            MultiOmicsVAEConfig,
        )

        path = Path(path)
        config = MultiOmicsVAEConfig(**json.loads((path / "config.json").read_text()))
        module = DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(0))
        stored = np.load(path / "state.npz")
        state = nnx.state(module, nnx.Param)
        for key, var in _flat(state):
            var[...] = stored["/".join(map(str, key))]
        nnx.update(module, state)
        stored_setup = path / "setup.json"  # absent in models saved before it was written
        setup = (json.loads(stored_setup.read_text()) if stored_setup.exists()
                 else {"scales": {}, "batch_key": None, "batch_categories": None})  # fmt: skip
        f = default_float()
        scales = {name: tuple(np.asarray(a, f) for a in pair)
                  for name, pair in setup["scales"].items()}  # fmt: skip
        key, categories = setup["batch_key"], setup["batch_categories"]
        cells, inputs = pd.Index([]), {}
        if data is not None:
            mods = _modalities(data)
            cells, matrices, masks, _ = _align(mods, join)
            labels = None if key is None else _batch_labels(mods, cells, key)
            inputs = _model_inputs(config, matrices, masks, labels=labels,
                                   categories=categories, batch_key=key)  # fmt: skip
            _standardize(inputs, scales)
        return cls(module, cells, inputs, pd.DataFrame(), {"loaded_from": str(path)}, scales,
                   key, categories)  # fmt: skip


#: Cells an ``nb_mixture`` modality's background prior is fitted to, at most: a sample drawn
#: with the seed, the same in every process, so a large file is not read whole for it
#: (totalVI fits its empirical prior to 100 cells of each batch).
_PRIOR_CELLS = 20_000

#: What early stopping may watch (scvi-tools' names): the validation loss (negative ELBO
#: at full KL weight plus the penalties) or its reconstruction part alone.
_MONITORS = {"elbo_validation": "validation_loss",
             "reconstruction_loss_validation": "validation_reconstruction_loss"}  # fmt: skip


def _least_squares(design: np.ndarray, y: np.ndarray, rows: np.ndarray, *, what: str):
    """``design @ beta`` with ``beta`` the least-squares fit of `y` on the `rows` only."""
    if rows.sum() <= design.shape[1]:
        msg = (
            f"library='predicted' regresses {what} on {design.shape[1]} regressors and needs "
            f"more cells where it is measured; found {int(rows.sum())}. Use library='median'."
        )
        raise ConfigError(msg)
    beta, *_ = np.linalg.lstsq(design[rows], y[rows], rcond=None)
    return design @ beta


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    # one object per step size: the optimiser is static in the jitted step, so repeated fits
    # of one model shape reuse its compilation
    return optax.adam(learning_rate)


# The training loop holds the model and its optimiser as one split state (`nnx.split`) and
# calls plain `jax.jit` steps on it: `nnx.jit` flattens and rebuilds the module graph on
# every call, which on ECCITE-seq (4 steps an epoch) was a quarter of the epoch.


@functools.partial(jax.jit, static_argnums=0)
def _train_step(graph: StaticGraph, state, batch_data, kl_scale, scale):
    """One Adam step on ``scale * loss`` (`scale` undoes the padding's share of the mean).

    Returns the loss and the new state of ``(model, optimizer)``.
    """
    model, opt = nnx.merge(graph.graphdef, state)
    model.train()
    loss, grads = nnx.value_and_grad(
        lambda m: scale * m.loss(batch_data, kl_scale=kl_scale)
    )(model)
    opt.update(model, grads)
    return loss, nnx.state((model, opt))


@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(graph: StaticGraph, state, batch_data, scale):
    """``(loss, reconstruction loss)`` per cell at full KL weight, one forward pass.

    Returns them and the new state (the pass draws from the model's noise stream).
    """
    model, opt = nnx.merge(graph.graphdef, state)
    model.eval()
    terms = model.terms(batch_data)
    losses = (scale * model.loss_from_terms(terms),
              scale * model.reconstruction_loss_from_terms(terms))  # fmt: skip
    return losses, nnx.state((model, opt))


def _place(inputs: dict, idx: np.ndarray, names, mesh: Mesh | None) -> tuple[dict, np.floating]:
    """The cells `idx` of `inputs`, split over the devices of `mesh`, and the padding factor.

    Cells are padded to a multiple of the device count with copies of the last cell whose
    modality masks are 0: such a cell has no likelihood term and its joint posterior is the
    prior (KL 0), so it adds exactly 0 to every sum of the loss, and multiplying the mean
    over the padded cells by ``n_padded / n_cells`` gives the mean over the real ones. Each
    device's block of cells is read on its own (`shard_rows_from`), so in a run of several
    processes each process reads only its devices' cells (from the file, when streamed).
    """
    if mesh is None:
        return {k: v[idx] for k, v in inputs.items()}, default_float().type(1.0)
    n = len(idx)
    n_padded = padded_size(n, mesh)
    cells, real = pad_rows(idx, n_padded), np.arange(n_padded) < n
    masks = {f"{name}_mask" for name in names}

    def reader(key, values):
        def read(rows: slice) -> np.ndarray:
            block = np.asarray(values[cells[rows]])
            return np.where(real[rows], block, 0).astype(block.dtype) if key in masks else block

        return read

    placed = {k: shard_rows_from(reader(k, v), (n_padded, *v.shape[1:]), mesh)
              for k, v in inputs.items()}  # fmt: skip
    return placed, default_float().type(n_padded / n)


def _snapshot(state):
    """`state` as it is now: new Variables over the same (immutable) arrays.

    `nnx.state` returns the module's own Variables, which later updates of the module
    change; the arrays themselves are never written, so nothing needs copying.
    """
    return jax.tree.map(lambda a: a, state)


def _flat(state):
    return list(nnx.to_flat_state(state))


def kl_warmup_weight(epoch: int, n_epochs_kl_warmup: int) -> float:
    """Scale of the KL term in training epoch `epoch` (0-based): linear from 0 to 1.

    ``epoch / n_epochs_kl_warmup`` while ``epoch < n_epochs_kl_warmup``, then 1; 1 throughout
    when `n_epochs_kl_warmup` is 0 (no warm-up). The same schedule as scvi-tools'
    ``TrainingPlan(n_epochs_kl_warmup=...)`` (Sønderby et al. 2016, "Ladder variational
    autoencoders", NeurIPS, https://arxiv.org/abs/1602.02282).

    Examples:
      >>> [kl_warmup_weight(e, 4) for e in range(6)]
      [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if n_epochs_kl_warmup and epoch < n_epochs_kl_warmup:
        return epoch / n_epochs_kl_warmup
    return 1.0


def _inputs(names, matrices, masks, batch=None) -> dict:
    data = {}
    for name in names:
        data[f"{name}_counts"] = matrices[name]
        data[f"{name}_mask"] = masks[name]
    if batch is not None:
        data["batch"] = batch
    return data


def integrate(
    data,
    *,
    likelihoods: dict[str, str] | None = None,
    latent_dim: int = 10,
    hidden_dim: int = 128,
    n_layers: int = 2,
    batch_key: str | None = None,
    join: str = "inner",
    standardize: bool = True,
    modality_weight_mode: str = "equal",
    use_gradnorm: bool = False,
    modality_penalty: str = "jeffreys",
    subset_sampling: bool = True,
    max_epochs: int = 400,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    n_epochs_kl_warmup: int = 50,
    validation_fraction: float = 0.1,
    early_stopping_monitor: str = "reconstruction_loss_validation",
    patience: int = 45,
    min_delta: float = 0.0,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
) -> IntegrationModel:
    """Integrate paired (or mosaic) modalities into one latent space with the multi-omics VAE.

    Cells are matched by ``obs_names`` across modalities (``join="inner"`` keeps those in
    every modality and warns about the rest; ``"outer"`` keeps all, masking absent
    modalities). Training: Adam on minibatches of `batch_size` cells, the KL terms scaled
    by `kl_warmup_weight` (a linear warm-up over `n_epochs_kl_warmup` epochs). Early
    stopping as scvi-tools does it (Lightning's ``EarlyStopping``): after every epoch, the
    `early_stopping_monitor` loss per cell of a held-out `validation_fraction` of cells;
    training stops when `patience` epochs in a row have not beaten the reference loss by
    more than `min_delta` nats (the reference being the last loss that did), and the
    parameters of the epoch with the lowest monitored loss are restored (scvi-tools keeps
    the last epoch's unless asked to checkpoint). Writes the joint latent to
    ``obsm["X_diffomics"]`` of every AnnData (and of the MuData), one row per cell; the
    rows of cells left out of the model (by ``join="inner"``, which warns how many) are NaN.

    Args:
      data: a MuData, or a dict ``{name: AnnData}``; each ``X`` holds that modality
        (counts for count likelihoods). An AnnData whose ``X`` is on disk, opened in backed
        mode (``anndata.read_h5ad(path, backed="r")``) or from Zarr (`open_zarr`), dense or
        sparse, is streamed: each
        minibatch reads its cells from the file (`StreamedRows`), so host memory holds a
        minibatch of it rather than the matrix; training gives the same numbers as in
        memory. Standardising, the input checks and `IntegrationModel.impute` read it in
        chunks; the background prior of an ``nb_mixture`` modality (a protein panel) is
        fitted to at most 20,000 of its cells (a seeded sample, read once).
      likelihoods: ``{name: likelihood}`` (`MODALITY_LIKELIHOODS`); default by name (rna,
        protein: NB; atac: Bernoulli; others: Gaussian).
      latent_dim: size of the joint latent space.
      hidden_dim: width of the encoder and decoder layers.
      n_layers: hidden layers per encoder and decoder.
      batch_key: column of the first modality's ``obs`` with batch labels (covariate).
      join: ``"inner"`` or ``"outer"`` (mosaic).
      standardize: z-score each feature of Gaussian modalities (mean 0, sd 1 over the
        observed cells) before training; `IntegrationModel.impute` returns the original
        units.
      modality_weight_mode: ``"equal"`` or ``"learnable"``.
      use_gradnorm: learn the weights by GradNorm.
      modality_penalty: ``"jeffreys"`` (the symmetric KL between the single-modality
        posteriors of each cell, MultiVI's alignment penalty) or ``"none"``; see
        `MultiOmicsVAEConfig`. With the other defaults it lowered FOSCTTM on SNARE-seq
        (0.139 to 0.120) and ECCITE-seq (0.037 to 0.024) and raised the label silhouette on
        SNARE-seq (0.73 to 0.81) and sci-CAR (0.55 to 0.57), at a FOSCTTM on sci-CAR of
        0.044 against 0.036 without it (``benchmarks/integration.py``, 2026-12-04).
      subset_sampling: in training, decode each cell once, from its joint or one
        modality's posterior drawn at random, an unbiased estimate of the joint plus
        single-modality ELBOs (`MultiOmicsVAEConfig.subset_sampling`); validation losses
        stay exact. False decodes every posterior of every cell: twice the time per epoch
        on sci-CAR and ECCITE-seq, FOSCTTM lower by 0.01 on ECCITE-seq (0.015 against
        0.024, mean of 3 seeds) and SNARE-seq (0.111 against 0.118), label accuracy and
        held-out imputation no better.
      max_epochs: epoch limit.
      batch_size: cells per minibatch.
      learning_rate: Adam step size (> 0).
      n_epochs_kl_warmup: epochs over which the KL weight rises linearly from 0 to 1 (0:
        no warm-up); the history's ``kl_scale`` column records it. The default is
        MultiVI's (scvi-tools' generic ``TrainingPlan`` uses 400); on sci-CAR it roughly
        halved FOSCTTM.
      validation_fraction: held-out cells for early stopping.
      early_stopping_monitor: ``"reconstruction_loss_validation"`` (the default, as
        MultiVI: the negative log-likelihood of the held-out cells, joint and
        single-modality decodings, without KL terms or penalty) or ``"elbo_validation"``
        (the whole loss: negative ELBO at full KL weight plus the modality penalty).
        During the KL warm-up the ELBO compares epochs trained at different KL weights,
        and it can bottom out while the latent is still organising: on sci-CAR with the
        Jeffreys penalty it stopped at epoch 29 with FOSCTTM 0.056 and treatment-time
        15-NN accuracy 0.57, the reconstruction loss at epoch 56 with 0.032 and 0.83.
      patience: epochs without an improvement of more than `min_delta` that stop training
        (scvi-tools' default 45).
      min_delta: smallest decrease of the validation loss per cell, in nats, that counts
        as an improvement (>= 0; scvi-tools' default 0).
      seed: seeds initialisation, shuffling, the split and the sampling noise.
      progress: progress bar (None: only on a terminal).
      checkpoint: ``.npz`` path where training saves its whole state after every epoch
        (parameters, optimiser and random-key state, the best epoch's parameters, the
        shuffling generator, history and early-stopping counters), atomically. When the
        file exists, training resumes from it: a run killed mid-training and started again
        with the same data and arguments ends with bitwise the same model as one that ran
        through. A file written for other data or arguments is refused (ConfigError). The
        file is left in place; delete it to train afresh.
      mesh: a device mesh (`diffomics.core.data_mesh`) for data-parallel training: every
        minibatch (and validation chunk) is split over its devices, padded to a multiple of
        their number with cells whose modality masks are 0 (they add nothing to the loss),
        and the parameters and optimiser state are replicated; XLA sums the gradients over
        devices. The result equals the one-device run up to float32 rounding, which
        training amplifies over many epochs. None (default): no placement.

    Returns:
      An `IntegrationModel`.

    Raises:
      ShapeError: duplicated obs_names, a modality with zero features, or no shared cell.
      CountsError: negative values for a count likelihood.
      NonFiniteError: NaN or inf.
      ConfigError: a bad argument.
    """
    from diffomics.operators._multiomics_vae import (  # noqa: PLC0415 - import cycle
        DifferentiableMultiOmicsVAE,
        MultiOmicsVAEConfig,
        gradnorm_step,
    )

    if join not in ("inner", "outer"):
        msg = f"join must be 'inner' or 'outer'; found {join!r}."
        raise ConfigError(msg)
    if early_stopping_monitor not in _MONITORS:
        msg = f"early_stopping_monitor must be one of {sorted(_MONITORS)}; "
        msg += f"found {early_stopping_monitor!r}."
        raise ConfigError(msg)
    for name, value, low in (("max_epochs", max_epochs, 1), ("patience", patience, 1),
                             ("n_epochs_kl_warmup", n_epochs_kl_warmup, 0)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            msg = f"{name} must be an int >= {low}; found {value!r}."
            raise ConfigError(msg)
    for name, value in (("learning_rate", learning_rate), ("min_delta", min_delta)):
        if not np.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
            msg = f"{name} must be finite and {'> 0' if name == 'learning_rate' else '>= 0'}; "
            msg += f"found {value!r}."
            raise ConfigError(msg)
    mods = _modalities(data)
    names = list(mods)
    cells, matrices, masks, report = _align(mods, join)
    liks = likelihoods or {}
    unknown = set(liks) - set(names)
    if unknown:
        msg = f"likelihoods names {sorted(unknown)} are not modalities ({names})."
        raise MissingKeyError(msg)
    default = MultiOmicsVAEConfig(modality_dims=[1] * len(names), modality_names=names)
    labels = None if batch_key is None else _batch_labels(mods, cells, batch_key)
    categories = None if labels is None else sorted(set(labels))
    config = MultiOmicsVAEConfig(
        modality_dims=[matrices[n].shape[1] for n in names],
        modality_names=names,
        likelihoods=[liks.get(n, lik)
                     for n, lik in zip(names, default.likelihood_list, strict=True)],
        latent_dim=latent_dim,
        hidden_dim=hidden_dim,
        n_layers=n_layers,
        n_batches=len(categories or []),
        modality_weight_mode=modality_weight_mode,
        use_gradnorm=use_gradnorm,
        modality_penalty=modality_penalty,
        subset_sampling=subset_sampling,
    )
    module = DifferentiableMultiOmicsVAE(config, rngs=nnx.Rngs(params=seed, noise=seed + 1,
                                                               dropout=seed + 2))  # fmt: skip
    inputs = _model_inputs(config, matrices, masks, labels=labels, categories=categories,
                           batch_key=batch_key)  # fmt: skip
    # the raw values are checked first: a NaN would make every standardised value NaN
    _check_cells(module, inputs, mesh)
    scales = _fit_scales(config, matrices, masks, mesh) if standardize else {}
    _standardize(inputs, scales)
    if standardize:
        report["standardized"] = sorted(scales)
    if batch_key is not None:
        report["batch_categories"] = categories
    for name, lik in zip(names, config.likelihood_list, strict=True):
        if lik == "nb_mixture":  # totalVI's empirical background prior
            seen = np.flatnonzero(masks[name] > 0)  # (a protein panel)
            if len(seen) < 2:
                msg = (
                    f"modality {name!r} has likelihood 'nb_mixture', whose background prior "
                    f"is fitted to the cells' counts; it needs 2 or more cells, found {len(seen)}."
                )
                raise ShapeError(msg)
            if len(seen) > _PRIOR_CELLS:
                draw = np.random.default_rng(seed).choice(len(seen), _PRIOR_CELLS, replace=False)
                seen = seen[np.sort(draw)]
            module.set_background_prior(name, matrices[name][seen])

    n = len(cells)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(validation_fraction * n)) if n >= 20 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    batch_size = int(min(batch_size, len(train_idx)))

    optimizer = nnx.Optimizer(module, _adam(learning_rate), wrt=nnx.Param)
    gradnorm = nnx.jit(gradnorm_step) if use_gradnorm else None
    initial = None
    history = []
    best, best_epoch, best_state = np.inf, -1, _snapshot(nnx.state(module))
    reference, waited, stopped = np.inf, 0, False
    timings = []
    path = None if checkpoint is None else Path(checkpoint)
    # what a checkpoint must have been written for: the same cells, model and training
    signature = json.dumps([list(map(str, cells[:3])), n, config.modality_dims, config.names,
                            config.likelihood_list, latent_dim, hidden_dim, n_layers,
                            batch_size, learning_rate, n_epochs_kl_warmup, seed,
                            modality_weight_mode, use_gradnorm, modality_penalty,
                            early_stopping_monitor, subset_sampling])  # fmt: skip
    if path is not None and path.exists():
        like = (nnx.state(module), nnx.state(optimizer), best_state)
        (state, opt_state, best_state), stored = load_checkpoint(path, like)
        if str(stored["signature"]) != signature:
            msg = (
                f"checkpoint {path} was written by integrate with other data or arguments; "
                "delete it to train afresh, or pass the same ones to resume."
            )
            raise ConfigError(msg)
        nnx.update(module, state)
        nnx.update(optimizer, opt_state)
        history = [(int(row[0]), *row[1:]) for row in stored["history"].tolist()]
        timings = stored["timings"].tolist()
        best, best_epoch = float(stored["best"]), int(stored["best_epoch"])
        reference, waited = float(stored["reference"]), int(stored["waited"])
        stopped = bool(stored["stopped"])
        initial = stored["initial"] if stored["initial"].size else None
        rng.bit_generator.state = json.loads(str(stored["rng_state"]))
    graphdef, state = nnx.split((module, optimizer))  # state[0]: the model's, [1]: Adam's
    graph = StaticGraph(graphdef)
    if mesh is not None:  # parameters, optimiser state and random keys on every device
        state = replicate(state, mesh)
    first = len(history)
    # tqdm's disable=None: shown only when stderr is a terminal
    bar = tqdm(range(first, first if stopped else max_epochs),
               disable=None if progress is None else not progress,
               desc="integrate", unit="epoch", initial=first, total=max_epochs)  # fmt: skip
    for epoch in bar:
        start = time.perf_counter()
        kl_scale = kl_warmup_weight(epoch, n_epochs_kl_warmup)
        perm = rng.permutation(train_idx)
        losses = []
        for b in range(len(perm) // batch_size):
            batch_data, scale = _place(inputs, perm[b * batch_size : (b + 1) * batch_size],
                                       names, mesh)  # fmt: skip
            loss, state = _train_step(graph, state, batch_data,
                                      default_float().type(kl_scale), scale)  # fmt: skip
            losses.append(float(loss))
            if gradnorm is not None:
                nnx.update((module, optimizer), state)
                module.train()
                if initial is None:
                    t = module.terms(batch_data, exact=True)
                    initial = -(t["log_likelihood"].sum(1) / t["mask"].sum(1).clip(1))
                gradnorm(module, batch_data, initial)
                state = nnx.state((module, optimizer))
        if n_val:
            chunks = []
            for s in range(0, n_val, 1024):
                pair, state = _eval_loss(graph, state,
                                         *_place(inputs, val_idx[s : s + 1024], names, mesh))
                chunks.append(pair)
            val_elbo, val_rec = (float(np.mean([float(c[k]) for c in chunks])) for k in (0, 1))
        else:  # too few cells to hold any out: the training loss
            val_elbo = val_rec = float(np.mean(losses))
        val = val_rec if early_stopping_monitor == "reconstruction_loss_validation" else val_elbo
        timings.append(time.perf_counter() - start)
        history.append((epoch, kl_scale, float(np.mean(losses)), val_elbo, val_rec))
        bar.set_postfix(train=f"{np.mean(losses):.1f}", val=f"{val:.1f}")
        if not np.isfinite(val_elbo):
            msg = f"the ELBO became {val_elbo} at epoch {epoch}; lower learning_rate."
            raise ConfigError(msg)
        if val < best:  # the lowest validation loss so far: the parameters returned
            best, best_epoch, best_state = val, epoch, _snapshot(state[0])
        # Lightning's EarlyStopping (scvi-tools): patience resets when the loss beats the
        # last reference by more than min_delta, which then becomes the new reference
        if val < reference - min_delta:
            reference, waited = val, 0
        else:
            waited += 1
            stopped = waited >= patience
        if path is not None:
            save_checkpoint(
                path, (state[0], state[1], best_state),
                history=np.asarray(history, np.float64), timings=np.asarray(timings),
                best=best, best_epoch=best_epoch, reference=reference, waited=waited,
                stopped=stopped, signature=signature,
                initial=np.zeros(0) if initial is None else np.asarray(initial),
                rng_state=json.dumps(rng.bit_generator.state),
            )  # fmt: skip
        if stopped:
            break
    if mesh is not None and mesh.is_multi_process:  # each process returns its own copy
        best_state = jax.tree.map(lambda a: a.addressable_data(0), best_state)
    nnx.update(module, best_state)
    module.eval()
    report.update(
        epochs=len(history),
        early_stopping_monitor=early_stopping_monitor,
        best_epoch=best_epoch,
        best_validation_loss=best,
        stopped_early=len(history) < max_epochs,
        first_epoch_seconds=timings[0],
        seconds_per_epoch=float(np.median(timings[1:])) if len(timings) > 1 else timings[0],
        modality_weights=np.asarray(module.modality_weights()).round(4).tolist(),
    )
    model = IntegrationModel(
        module, cells, inputs,
        pd.DataFrame(history, columns=["epoch", "kl_scale", "train_loss", "validation_loss",
                                       "validation_reconstruction_loss"]),
        report,
        scales,
        batch_key,
        categories,
    )  # fmt: skip
    z = model.latent()
    for adata in [*mods.values(), *([data] if hasattr(data, "mod") else [])]:
        adata.obsm["X_diffomics"] = _rows_of(z, cells, adata.obs_names)
    return model


def _rows_of(z: np.ndarray, cells: pd.Index, names) -> np.ndarray:
    """The rows of `z` (one per cell of `cells`) for the cells `names`; NaN for the others."""
    pos = cells.get_indexer(names)
    out = np.full((len(pos), z.shape[1]), np.nan, z.dtype)
    out[pos >= 0] = z[pos[pos >= 0]]
    return out
