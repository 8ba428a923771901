"""Peer runner: scvi-tools MultiVI and totalVI on the integration benchmark.

Runs inside the benchmark environment (``.venv-bench``: torch on CPU, scvi-tools 1.4.2,
mudata) and is imported by the benchmark driver in a child process of its own.

- `fit_totalvi`: ``TOTALVI.setup_mudata`` on a MuData with ``rna`` and ``protein`` counts,
  ``TOTALVI(mdata, n_latent=...)`` and ``train()`` with the package's default training
  settings (Adam, lr 4e-3, batch 256, 90/10 split, early stopping on the validation ELBO,
  ``max_epochs`` = min(400, 20000 / n_cells * 400) as 1.4.2 computes it). totalVI has one
  joint latent only (no modality-specific posterior). Its protein prediction is
  ``get_normalized_expression(include_protein_background=True, n_samples=25,
  return_mean=True)``, the expected protein counts (foreground and background mixture); the
  encoder reads the cell's protein counts, so with proteins observed this is a denoised
  reconstruction, not a cross-modal prediction. With ``heldout`` cells the proteins of those
  cells are set to zero and they form their own batch, which totalVI treats as a batch with
  missing proteins (its documented protein-imputation set-up; the adversarial classifier
  switches on), and the proteins of the held-out cells are predicted with
  ``transform_batch="observed"`` as the totalVI tutorial does.
- `fit_multivi`: ``MULTIVI.setup_mudata`` with ``modalities={"rna_layer": "rna",
  "atac_layer": "atac"}`` (1.4.2's ``setup_anndata`` registers nothing), ``MULTIVI(mdata,
  n_latent=...)`` (``fully_paired=False``, the default, so the modality-specific latents
  exist) and ``train()`` with the defaults (Adam, lr 1e-4, weight decay 1e-3, batch 128,
  early stopping, KL warm-up 50 epochs, ``max_epochs`` 500). Joint latent:
  ``get_latent_representation()``; per modality: ``modality="expression"`` and
  ``"accessibility"``.

Epoch timing comes from a Lightning callback: the time between the starts of successive
training epochs (so it includes that epoch's validation pass), and from the last start to
the end of training. Torch runs on the CPU with ``torch.set_num_threads(threads)`` and a
fixed seed (``scvi.settings.seed``).
"""

from __future__ import annotations

import logging
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["fit_multivi", "fit_totalvi"]

_PROTEIN_SAMPLES = 25
# Known, harmless messages of Lightning / scvi-tools on CPU-only runs.
_IGNORED_WARNINGS = (
    r".*does not have many workers.*",
    r".*isinstance\(treespec, LeafSpec\).* is deprecated.*",
    r".*smaller than the logging interval.*",
    r".*GPU available but not used.*",
)


def _quiet() -> None:
    """Silence the Lightning banners and per-run info messages (not warnings)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _epoch_timer():
    """A Lightning callback recording the wall time of every training epoch."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.end: float | None = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            self.end = time.perf_counter()

        def seconds(self) -> np.ndarray:
            marks = [*self.starts, self.end if self.end is not None else time.perf_counter()]
            return np.diff(np.asarray(marks, dtype=np.float64))

    return EpochTimer()


def _setup(threads: int, seed: int) -> None:
    import scvi
    import torch

    _quiet()
    torch.set_num_threads(int(threads))
    scvi.settings.seed = int(seed)
    scvi.settings.dl_num_workers = 0


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def _history_summary(model) -> dict:
    history = model.history or {}
    out = {}
    for key in ("elbo_train", "elbo_validation", "validation_loss"):
        if key in history:
            out[f"final_{key}"] = float(np.asarray(history[key]).ravel()[-1])
    return out


def fit_totalvi(
    rna: ad.AnnData,
    protein: ad.AnnData,
    *,
    seed: int = 0,
    threads: int = 2,
    n_latent: int = 10,
    heldout: np.ndarray | None = None,
) -> dict:
    """Train totalVI on paired RNA and protein counts; embed and predict the proteins.

    Args:
      rna: cells x genes counts.
      protein: cells x proteins counts, the same ``obs_names`` in the same order.
      seed: ``scvi.settings.seed``.
      threads: torch intra-op threads.
      n_latent: size of the latent space.
      heldout: boolean mask of cells whose proteins are hidden from training (None: none).

    Returns:
      A dict with ``latent_joint``, ``protein_predicted`` (expected counts, cells x
      proteins), ``epoch_seconds``, ``fit_seconds`` (``train()``), ``setup_seconds``,
      ``epochs`` and ``notes``.

    Raises:
      ValueError: the modalities list different cells.
    """
    import mudata as md
    import scvi

    if not rna.obs_names.equals(protein.obs_names):
        msg = "rna and protein must list the same cells in the same order."
        raise ValueError(msg)
    _setup(threads, seed)
    index = pd.Index(rna.obs_names.astype(str))
    y = _dense(protein.X)
    obs = pd.DataFrame(index=index)
    if heldout is not None:
        heldout = np.asarray(heldout, dtype=bool)
        y = y.copy()
        y[heldout] = 0.0
        obs["batch"] = pd.Categorical(np.where(heldout, "heldout", "observed"))
    mods = {
        "rna": ad.AnnData(_dense(rna.X), obs=obs.copy(),
                          var=pd.DataFrame(index=rna.var_names.astype(str))),
        "protein": ad.AnnData(y, obs=obs.copy(),
                              var=pd.DataFrame(index=protein.var_names.astype(str))),
    }  # fmt: skip
    mdata = md.MuData(mods)
    modalities = {"rna_layer": "rna", "protein_layer": "protein"}
    kwargs = {}
    if heldout is not None:
        modalities["batch_key"] = "rna"
        kwargs["batch_key"] = "batch"
    timer = _epoch_timer()
    with warnings.catch_warnings():
        for message in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        start = time.perf_counter()
        scvi.model.TOTALVI.setup_mudata(mdata, modalities=modalities, **kwargs)
        model = scvi.model.TOTALVI(mdata, n_latent=int(n_latent))
        setup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        model.train(accelerator="cpu", enable_progress_bar=False, callbacks=[timer])
        fit_seconds = time.perf_counter() - start
        latent = model.get_latent_representation()
        _, predicted = model.get_normalized_expression(
            n_samples=_PROTEIN_SAMPLES,
            include_protein_background=True,
            sample_protein_mixing=False,
            return_mean=True,
            return_numpy=True,
            transform_batch="observed" if heldout is not None else None,
        )
    seconds = timer.seconds()
    notes = (
        f"scvi-tools {scvi.__version__} TOTALVI, default train() settings; "
        f"n_latent={n_latent}; protein = get_normalized_expression(include_protein_background"
        f"=True, n_samples={_PROTEIN_SAMPLES})"
    )
    if heldout is not None:
        notes += (
            f"; proteins of {int(heldout.sum())} cells hidden (own batch, zero counts), "
            "predicted with transform_batch='observed'"
        )
    else:
        notes += "; the encoder reads the observed proteins (a reconstruction, not cross-modal)"
    return {
        "latent_joint": np.asarray(latent, dtype=np.float64),
        "protein_predicted": np.asarray(predicted, dtype=np.float64),
        "epoch_seconds": seconds,
        "fit_seconds": float(fit_seconds),
        "setup_seconds": float(setup_seconds),
        "epochs": len(seconds),
        "notes": notes,
        **_history_summary(model),
    }


def fit_multivi(
    rna: ad.AnnData,
    atac: ad.AnnData,
    *,
    seed: int = 0,
    threads: int = 2,
    n_latent: int | None = None,
) -> dict:
    """Train MultiVI on paired RNA and ATAC; return the joint and per-modality latents.

    Args:
      rna: cells x genes (MultiVI models them as counts with a ZINB likelihood).
      atac: cells x peaks (MultiVI models accessibility with a Bernoulli likelihood; the
        values are binarised here, ``x > 0``).
      seed: ``scvi.settings.seed``.
      threads: torch intra-op threads.
      n_latent: size of the latent space (None: MultiVI's default, sqrt(n_hidden)).

    Returns:
      A dict with ``latent_joint``, ``latent_rna``, ``latent_atac``, ``epoch_seconds``,
      ``fit_seconds``, ``setup_seconds``, ``epochs``, ``non_integer_rna`` and ``notes``.

    Raises:
      ValueError: the modalities list different cells.
    """
    import mudata as md
    import scvi

    if not rna.obs_names.equals(atac.obs_names):
        msg = "rna and atac must list the same cells in the same order."
        raise ValueError(msg)
    _setup(threads, seed)
    index = pd.Index(rna.obs_names.astype(str))
    x_rna = _dense(rna.X)
    x_atac = atac.X
    x_atac = (x_atac > 0).astype(np.float32) if sp.issparse(x_atac) else (
        np.asarray(x_atac) > 0).astype(np.float32)  # fmt: skip
    mods = {
        "rna": ad.AnnData(x_rna, obs=pd.DataFrame(index=index),
                          var=pd.DataFrame(index=rna.var_names.astype(str))),
        "atac": ad.AnnData(sp.csr_matrix(x_atac), obs=pd.DataFrame(index=index),
                           var=pd.DataFrame(index=atac.var_names.astype(str))),
    }  # fmt: skip
    mdata = md.MuData(mods)
    timer = _epoch_timer()
    with warnings.catch_warnings():
        for message in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        start = time.perf_counter()
        scvi.model.MULTIVI.setup_mudata(
            mdata, modalities={"rna_layer": "rna", "atac_layer": "atac"}
        )
        model = scvi.model.MULTIVI(mdata, n_latent=n_latent)
        setup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        model.train(accelerator="cpu", enable_progress_bar=False, callbacks=[timer])
        fit_seconds = time.perf_counter() - start
        joint = model.get_latent_representation()
        latent_rna = model.get_latent_representation(modality="expression")
        latent_atac = model.get_latent_representation(modality="accessibility")
    seconds = timer.seconds()
    non_integer = bool(not np.array_equal(np.round(x_rna), x_rna))
    notes = (
        f"scvi-tools {scvi.__version__} MULTIVI (setup_mudata), default train() settings; "
        f"n_latent={model.module.n_latent}, n_hidden={model.module.n_hidden}; ATAC binarised "
        "(x > 0)"
    )
    if non_integer:
        notes += "; RNA values are not counts (normalised, non-integer) but fed as they are"
    return {
        "latent_joint": np.asarray(joint, dtype=np.float64),
        "latent_rna": np.asarray(latent_rna, dtype=np.float64),
        "latent_atac": np.asarray(latent_atac, dtype=np.float64),
        "epoch_seconds": seconds,
        "fit_seconds": float(fit_seconds),
        "setup_seconds": float(setup_seconds),
        "epochs": len(seconds),
        "non_integer_rna": non_integer,
        "notes": notes,
        **_history_summary(model),
    }
