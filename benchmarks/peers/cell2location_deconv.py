"""Peer runner: cell2location (Kleshchevnikov et al. 2022) on the deconvolution benchmark.

Runs inside the benchmark environment (``.venv-bench``: torch on CPU, cell2location, pyro,
scvi-tools) and is imported by the benchmark driver. It follows the published two-stage
cell2location workflow:

1. ``RegressionModel`` on the labelled single-cell reference estimates one expression
   signature per cell type (posterior mean of ``per_cluster_mu_fg``, scaled by the average
   detection efficiency, as ``export_posterior`` does by default);
2. ``Cell2location`` on the spots with those signatures, ``N_cells_per_location`` set to the
   expected number of cells per spot and ``detection_alpha=20`` (the tutorial's value);
3. the posterior mean of the cell abundance ``w_sf`` of each spot, divided by its row sum, is
   returned as the cell-type proportions.

Both models need raw integer counts; non-integer inputs (e.g. the 0-101 normalised scale of
the seqFISH+ cortex data) are rounded to the nearest integer and the rounding is reported in
``notes``. Training runs on the CPU with a fixed number of torch threads and a fixed seed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["deconvolve_cell2location"]

# Posterior samples drawn by ``export_posterior`` (the tutorial's value).
_NUM_POSTERIOR_SAMPLES = 1000
# Reference minibatch size and learning rate of the tutorial (and the package defaults).
_REF_BATCH_SIZE = 2500
_LEARNING_RATE = 0.002
_DETECTION_ALPHA = 20.0
# Known, harmless warnings of Lightning with the Pyro training plans of scvi-tools.
_IGNORED_WARNINGS = (
    r".*does not have many workers.*",
    r".*val_dataloader.* but have no .*validation_step.*",
    r".*isinstance\(treespec, LeafSpec\).* is deprecated.*",
    r".*smaller than the logging interval.*",
)


def _dense(x) -> np.ndarray:
    """A dense float64 copy of a matrix that may be sparse."""
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _as_counts(x: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """Validate non-negative finite values and round them to integers when they are not.

    Args:
      x: values, obs x genes.
      name: what `x` is, for messages.

    Returns:
      ``(counts, rounded)``: float32 integer-valued counts and whether rounding was needed.

    Raises:
      ValueError: non-finite or negative values.
    """
    if not np.all(np.isfinite(x)):
        msg = f"{name} has non-finite values; cell2location needs finite counts."
        raise ValueError(msg)
    if np.any(x < 0):
        msg = f"{name} has negative values; cell2location needs non-negative counts."
        raise ValueError(msg)
    rounded = np.round(x)
    was_integer = bool(np.array_equal(rounded, x))
    return rounded.astype(np.float32), not was_integer


def _quiet_training() -> None:
    """Silence the Lightning banners and per-run info messages (not warnings)."""
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.fabric.utilities.seed",
        "scvi",
        "cell2location",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def deconvolve_cell2location(
    spatial: ad.AnnData,
    reference: ad.AnnData,
    labels_key: str,
    *,
    n_cells_per_spot: float,
    seed: int = 0,
    threads: int = 2,
    max_epochs: int = 30000,
    ref_max_epochs: int = 250,
) -> dict:
    """Cell-type proportions of each spot estimated by cell2location.

    Args:
      spatial: spots x genes AnnData with counts in ``X``.
      reference: cells x genes AnnData with counts in ``X`` and labels in
        ``obs[labels_key]``.
      labels_key: column of ``reference.obs`` with the cell types.
      n_cells_per_spot: expected number of cells per spot (cell2location's
        ``N_cells_per_location`` hyperparameter).
      seed: seed of torch, numpy and pyro (``scvi.settings.seed``).
      threads: torch intra-op threads (``torch.set_num_threads``); the setting stays in
        effect after the call.
      max_epochs: training epochs of the spatial model (full batch, so one epoch is one
        step); 30000 is the package default and the tutorial's value.
      ref_max_epochs: training epochs of the reference regression model (tutorial: 250).

    Returns:
      A dict with ``proportions`` (DataFrame, ``spatial.obs_names`` x sorted cell types,
      rows sum to 1), ``fit_seconds`` (wall time of the two trainings, without posterior
      sampling), ``compile_seconds`` (0.0: nothing is compiled), ``params`` (the settings
      used) and ``notes`` (a short description, including any rounding of the inputs and
      the posterior-sampling time).

    Raises:
      KeyError: `labels_key` is not a column of ``reference.obs``.
      ValueError: no gene is shared, duplicated gene names, or negative or non-finite
        values.
    """
    import scvi
    import torch
    from cell2location.models import Cell2location, RegressionModel

    if labels_key not in reference.obs:
        msg = f"reference.obs has no column {labels_key!r}; found {list(reference.obs.columns)}."
        raise KeyError(msg)
    genes = spatial.var_names[spatial.var_names.isin(reference.var_names)]
    if len(genes) == 0:
        msg = "spatial and reference share no gene names."
        raise ValueError(msg)
    if genes.has_duplicates or reference.var_names.has_duplicates:
        msg = "duplicated gene names in spatial or reference var_names; make them unique first."
        raise ValueError(msg)

    x_sp, rounded_sp = _as_counts(_dense(spatial[:, genes].X), "spatial")
    x_ref, rounded_ref = _as_counts(_dense(reference[:, genes].X), "reference")
    keep = x_ref.sum(axis=1) > 0
    labels = reference.obs[labels_key].astype(str).to_numpy()
    types = sorted(set(labels[keep]))

    # Private copies: setup_anndata writes into obs/uns, and the callers' data stay untouched.
    var = pd.DataFrame(index=pd.Index(genes.astype(str)))
    adata_ref = ad.AnnData(
        x_ref[keep],
        obs=pd.DataFrame(
            {labels_key: pd.Categorical(labels[keep], categories=types)},
            index=reference.obs_names[keep].astype(str),
        ),
        var=var.copy(),
    )
    adata_sp = ad.AnnData(
        x_sp, obs=pd.DataFrame(index=spatial.obs_names.astype(str)), var=var.copy()
    )

    _quiet_training()
    torch.set_num_threads(int(threads))
    scvi.settings.seed = int(seed)
    scvi.settings.dl_num_workers = 0
    trainer_kwargs = {"accelerator": "cpu", "enable_progress_bar": False}

    with warnings.catch_warnings():
        # Known, harmless messages of Lightning with scvi-tools' Pyro training plans.
        for message in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        start = time.perf_counter()
        RegressionModel.setup_anndata(adata_ref, labels_key=labels_key)
        ref_model = RegressionModel(adata_ref)
        ref_model.train(
            max_epochs=int(ref_max_epochs),
            batch_size=_REF_BATCH_SIZE,
            train_size=1,
            lr=_LEARNING_RATE,
            **trainer_kwargs,
        )
        ref_seconds = time.perf_counter() - start

        post_start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # scvi's sampling progress bars
            adata_ref = ref_model.export_posterior(
                adata_ref,
                sample_kwargs={
                    "num_samples": _NUM_POSTERIOR_SAMPLES,
                    "batch_size": _REF_BATCH_SIZE,
                    "accelerator": "cpu",
                },
            )
        ref_post_seconds = time.perf_counter() - post_start
        factor_names = list(adata_ref.uns["mod"]["factor_names"])
        signatures = adata_ref.varm["means_per_cluster_mu_fg"][
            [f"means_per_cluster_mu_fg_{name}" for name in factor_names]
        ].copy()
        signatures.columns = factor_names
        signatures = signatures.loc[adata_sp.var_names]

        start = time.perf_counter()
        Cell2location.setup_anndata(adata_sp)
        sp_model = Cell2location(
            adata_sp,
            cell_state_df=signatures,
            N_cells_per_location=float(n_cells_per_spot),
            detection_alpha=_DETECTION_ALPHA,
        )
        sp_model.train(
            max_epochs=int(max_epochs),
            batch_size=None,
            train_size=1,
            lr=_LEARNING_RATE,
            **trainer_kwargs,
        )
        sp_seconds = time.perf_counter() - start

        post_start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            adata_sp = sp_model.export_posterior(
                adata_sp,
                sample_kwargs={
                    "num_samples": _NUM_POSTERIOR_SAMPLES,
                    "batch_size": adata_sp.n_obs,
                    "accelerator": "cpu",
                },
            )
        sp_post_seconds = time.perf_counter() - post_start

    abundance = adata_sp.obsm["means_cell_abundance_w_sf"]
    abundance = abundance[[f"meanscell_abundance_w_sf_{name}" for name in factor_names]]
    values = abundance.to_numpy(dtype=np.float64)
    proportions = pd.DataFrame(
        values / values.sum(axis=1, keepdims=True),
        index=spatial.obs_names,
        columns=pd.Index(factor_names),
    )
    proportions = proportions[sorted(proportions.columns)]

    history = sp_model.history or {}
    elbo = history.get("elbo_train")
    final_elbo = float(np.asarray(elbo).ravel()[-1]) if elbo is not None else float("nan")
    rounding = [
        name for name, flag in (("spatial", rounded_sp), ("reference", rounded_ref)) if flag
    ]
    notes = (
        "cell2location RegressionModel signatures -> Cell2location; proportions = posterior "
        f"mean of cell abundance w_sf ({_NUM_POSTERIOR_SAMPLES} samples) / row sum. "
        f"Training {ref_seconds:.1f}s reference + {sp_seconds:.1f}s spatial; posterior "
        f"sampling {ref_post_seconds + sp_post_seconds:.1f}s (not in fit_seconds); "
        f"final spatial ELBO loss {final_elbo:.4g}."
    )
    if rounding:
        notes += f" Non-integer values in {' and '.join(rounding)} rounded to integer counts."
    if not keep.all():
        notes += f" {int((~keep).sum())} reference cell(s) with zero counts left out."
    params = {
        "labels_key": labels_key,
        "n_cells_per_spot": float(n_cells_per_spot),
        "detection_alpha": _DETECTION_ALPHA,
        "seed": int(seed),
        "threads": int(threads),
        "max_epochs": int(max_epochs),
        "ref_max_epochs": int(ref_max_epochs),
        "ref_batch_size": _REF_BATCH_SIZE,
        "learning_rate": _LEARNING_RATE,
        "num_posterior_samples": _NUM_POSTERIOR_SAMPLES,
        "posterior_summary": "mean",
        "n_genes": len(genes),
        "rounded_to_counts": rounding,
        "accelerator": "cpu",
    }
    return {
        "proportions": proportions,
        "fit_seconds": float(ref_seconds + sp_seconds),
        "compile_seconds": 0.0,
        "params": params,
        "notes": notes,
    }
