"""`deconvolve`: cell-type deconvolution of a spatial AnnData with a single-cell reference."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING

import anndata as ad
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from diffomics.core._checks import check_choice, check_counts
from diffomics.core._errors import MissingKeyError
from diffomics.core._fit import FitResult, fit
from diffomics.core._numerics import default_float
from diffomics.core._sharding import pad_rows, padded_size, row_weights, shard_rows, to_host
from diffomics.operators._keys import DECONVOLUTION_KEYS as K
from diffomics.spatial._graph import knn_graph
from diffomics.spatial._reference import (
    dense_layer,
    match_genes,
    reference_dispersion,
    reference_profiles,
)

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from diffomics.operators._spatial_deconvolution import SpatialDeconvolution

__all__ = ["DeconvolutionResult", "deconvolve"]


@dataclasses.dataclass(frozen=True)
class DeconvolutionResult:
    """Output of `deconvolve`.

    Attributes:
      proportions: spots (``spatial.obs_names``) x cell types; rows sum to 1.
      spot_scale: per-spot depth / abundance in reference-profile units.
      platform_effect: fitted gene platform effect ``m`` (1 = same as the reference).
      background: fitted per-gene background, as a fraction of the gene's mean over spots
        (all zero unless `deconvolve(background=True)`).
      reference_profiles: cell types x genes profiles used (after gene matching).
      genes: report of gene matching (``n_shared``, ``n_dropped_spatial``,
        ``n_dropped_reference``).
      fit: the `FitResult` of the optimisation (loss history, steps, timings).
      params: the arguments of the call, as recorded in ``spatial.uns[key_added]``.
      model: the fitted `SpatialDeconvolution` operator.
    """

    proportions: pd.DataFrame
    spot_scale: pd.Series
    platform_effect: pd.Series
    background: pd.Series
    reference_profiles: pd.DataFrame
    genes: dict[str, int]
    fit: FitResult
    params: dict
    model: SpatialDeconvolution


def deconvolve(
    spatial: ad.AnnData,
    reference: ad.AnnData,
    labels_key: str,
    *,
    likelihood: str = "nb",
    dispersion: str = "reference",
    mode: str = "direct",
    spatial_prior: float = 0.0,
    n_neighbors: int = 6,
    spatial_key: str = "spatial",
    layer: str | None = None,
    reference_layer: str | None = None,
    library_normalize: bool = False,
    temperature: float = 1.0,
    platform_effect_scale: float = 0.5,
    background: bool = False,
    proportion_prior: float = 1.0,
    hidden_dim: int = 128,
    learning_rate: float | None = None,
    max_steps: int = 4000,
    tol: float = 1e-5,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    key_added: str = "proportions",
) -> DeconvolutionResult:
    """Estimate the cell-type proportions of each spot from a labelled single-cell reference.

    Steps:

    1. genes are matched by name (the intersection; the numbers dropped on each side are
       reported in ``result.genes``);
    2. reference profiles are the per-type mean counts per cell (`reference_profiles`);
    3. the pooled spots are fitted by a mixture of the profiles with the gene platform effect
       integrated out, which gives the tissue's bulk composition and the platform effect's
       posterior mean (RCTD's platform-effect normalisation);
    4. with the platform effect (and the NB dispersions, see `dispersion`) fixed, the
       per-spot proportions (and the background) are fitted by Adam on the negative
       log-posterior of a `SpatialDeconvolution` operator (jit-compiled steps, early
       stopping on the loss).

    ``mode="direct"`` (default) fits one logit vector per spot: the per-spot maximum a
    posteriori estimate that cell2location and RCTD compute, with no amortization gap, so it
    is the most accurate on a fixed set of spots. ``mode="amortized"`` fits an encoder from
    spot expression to logits instead, so the fitted operator (``result.model``) also
    deconvolves new spots in one forward pass.

    Proportions are fractions of *cells*: with per-cell mean profiles
    (``library_normalize=False``, default) a type with more RNA per cell contributes more
    counts per cell, as in cell2location's abundances; ``library_normalize=True`` gives
    fractions of RNA instead (RCTD's weights).

    Args:
      spatial: spots x genes AnnData with raw counts (or normalised values with
        ``likelihood="gaussian"``) and coordinates in ``obsm[spatial_key]`` when
        `spatial_prior` > 0.
      reference: cells x genes AnnData with the labels in ``obs[labels_key]``.
      labels_key: column of ``reference.obs`` with the cell types.
      likelihood: ``"nb"`` (raw counts; default), ``"poisson"`` (raw counts) or
        ``"gaussian"`` (values that are not counts, e.g. normalised).
      dispersion: NB inverse dispersion per gene: ``"reference"`` (default) estimates it
        from the reference cells within their types after removing each cell's size factor
        (`reference_dispersion`) and holds it fixed; ``"fit"`` starts there and fits it on
        the spots. Fitted on spots, it also absorbs variation that is shared by all genes
        of a cell (cell size, state) and so is not per-gene noise, which flattens the
        likelihood of the genes that carry the signal.
      mode: ``"direct"`` or ``"amortized"`` (see above).
      spatial_prior: precision of the CAR smoothness prior on the centred log-ratio of
        proportions over the k-nearest-neighbour spot graph; 0 (default) turns it off.
      n_neighbors: neighbours per spot in that graph.
      spatial_key: coordinates in ``spatial.obsm``.
      layer: layer of `spatial` with the counts; None uses ``X``.
      reference_layer: layer of `reference` with the counts; None uses ``X``.
      library_normalize: library-normalise reference cells before averaging (see above).
      temperature: softmax temperature of the operator.
      platform_effect_scale: prior standard deviation of the log gene platform effect
        between the reference and the spatial technology; 0 fixes it at 1.
      background: model an additive per-gene background (ambient RNA, as cell2location's
        ``s_eg``). Off by default: with imaging data or pooled cells there is none, and
        because the tissue's average profile is itself a mixture of the cell types, a
        background that is not there is fitted anyway and distorts the proportions.
      proportion_prior: Dirichlet concentration, in pseudo-cells, shrinking each spot's
        proportions towards the bulk composition; 0 gives maximum-likelihood proportions.
      hidden_dim: encoder width (``mode="amortized"`` only).
      learning_rate: Adam step size; None uses 0.05 (direct) or 0.003 (amortized).
      max_steps: maximum optimisation steps per stage.
      tol: relative loss improvement under which fitting stops (see `diffomics.core.fit`).
      seed: seed of the parameter initialisation; the same seed gives the same numbers.
      progress: progress bar; None shows it on a terminal only.
      checkpoint: ``.npz`` path where the spot fit saves its state after every chunk of
        steps and resumes from when the file exists (`diffomics.core.fit`): a run killed
        mid-fit and started again ends with the same proportions.
      mesh: a device mesh (`diffomics.core.data_mesh`) to fit on several devices: the spots
        are split over its devices (padded to a multiple of their number with weight-0
        copies of the last spot, which change no sum) and the parameters replicated; XLA
        sums the gradients over devices (`diffomics.core.fit`). The result equals the
        one-device fit up to float32 rounding. In ``mode="direct"``, ``result.model`` then
        holds logits for the padded spots too. None (default): no placement.
      key_added: where the results go in `spatial` (see Returns).

    Returns:
      A `DeconvolutionResult`. `spatial` gains ``obsm[key_added]`` (DataFrame, spots x cell
      types, float64, rows sum to 1), ``obs[f"{key_added}_scale"]`` (float32, the spot scale
      in reference cells) and ``uns[key_added]`` (dict: ``params``, ``cell_types``,
      ``genes``, ``n_steps``, ``converged``); nothing else in it is changed.

    Raises:
      GeneMatchError: no shared genes, or duplicated names.
      MissingKeyError: `labels_key`, a layer or the coordinates are missing.
      CountsError, NonFiniteError: negative, NaN or inf values; a spot with zero counts over
        the shared genes.
      ConfigError: an argument out of range.

    Examples:
      >>> from diffomics.datasets import seqfish_cortex
      >>> from diffomics.spatial import pool_pseudo_spots
      >>> cells, reference = seqfish_cortex()
      >>> spots = pool_pseudo_spots(cells, "cell_type", spot_size=500.0)
      >>> result = deconvolve(spots, reference, "cell_type", likelihood="gaussian")
      >>> result.proportions.shape, spots.obsm["proportions"].sum(axis=1).round(6).unique()
      ((79, 8), array([1.]))
    """
    # the operator imports this package's statistics, so it is imported here, not at the top
    from diffomics.operators._spatial_deconvolution import (
        BULK_PARAMS,
        SPOT_PARAMS,
        SpatialDeconvolution,
        SpatialDeconvolutionConfig,
    )

    check_choice(dispersion, "dispersion", ("reference", "fit"))
    genes, report = match_genes(spatial.var_names, reference.var_names)
    profiles = reference_profiles(
        reference[:, genes],
        labels_key,
        layer=reference_layer,
        library_normalize=library_normalize,
    )
    x = dense_layer(spatial[:, genes], layer, name="spatial")
    check_counts(x, f"spatial counts over the {len(genes)} shared genes", row_name="spot")
    if likelihood != "gaussian" and not np.allclose(x, np.round(x)):
        warnings.warn(
            f"spatial values are not integers; likelihood={likelihood!r} treats them as "
            "counts. For normalised data use likelihood='gaussian'.",
            stacklevel=2,
        )
    edges = None
    if spatial_prior > 0:
        if spatial_key not in spatial.obsm:
            msg = (
                f"spatial_prior > 0 needs coordinates in spatial.obsm[{spatial_key!r}]; "
                f"found keys {list(spatial.obsm)}."
            )
            raise MissingKeyError(msg)
        coords = np.asarray(spatial.obsm[spatial_key], dtype=np.float64)
        edges = jnp.asarray(knn_graph(coords, n_neighbors=n_neighbors))
    config = SpatialDeconvolutionConfig(
        n_cell_types=profiles.shape[0],
        n_genes=len(genes),
        hidden_dim=hidden_dim,
        temperature=temperature,
        likelihood=likelihood,
        mode=mode,
        n_spots=spatial.n_obs if mode == "direct" else None,
        platform_effect_scale=platform_effect_scale,
        background=background,
        proportion_prior=proportion_prior,
    )
    n_spots = spatial.n_obs
    weight = None
    if mesh is not None:  # spots split over the devices; padding rows get weight 0
        n_padded = padded_size(n_spots, mesh)
        if n_padded > n_spots:
            weight = shard_rows(row_weights(n_spots, n_padded), mesh)
        x = shard_rows(pad_rows(x, n_padded), mesh)
        config = dataclasses.replace(config, n_spots=n_padded if mode == "direct" else None)
    model = SpatialDeconvolution(config, rngs=nnx.Rngs(seed))
    spot_params = SPOT_PARAMS
    if likelihood == "nb":
        theta = reference_dispersion(reference[:, genes], labels_key, layer=reference_layer)
        model.log_theta[...] = jnp.log(jnp.asarray(theta.to_numpy(default_float())))
        if dispersion == "reference":
            spot_params = nnx.All(SPOT_PARAMS, nnx.Not(nnx.PathContains("log_theta")))
    data = {
        K.SPATIAL_EXPRESSION: x if mesh is not None else jnp.asarray(x),
        K.REFERENCE_PROFILES: jnp.asarray(profiles.to_numpy(default_float())),
    }

    if learning_rate is None:
        learning_rate = 0.05 if mode == "direct" else 0.003
    settings = {"learning_rate": learning_rate, "max_steps": max_steps, "tol": tol}
    settings["mesh"] = mesh
    fit(model, lambda m, d, w: m.bulk_loss(d, spot_weight=w), (data, weight),
        wrt=BULK_PARAMS, progress=False, **settings)  # fmt: skip
    model.initialize_from_bulk(data, spot_weight=weight)

    def loss_fn(m, d, e, w):
        return m.loss(d, edges=e, spatial_prior=spatial_prior, spot_weight=w)

    fit_result = fit(
        model,
        loss_fn,
        (data, edges, weight),
        wrt=spot_params,
        progress=progress,
        checkpoint=checkpoint,
        **settings,
    )
    out = {k: to_host(v)[:n_spots] for k, v in model.outputs(data, spot_weight=weight).items()}
    types = profiles.index.astype(str)
    proportions = pd.DataFrame(
        np.asarray(out[K.PROPORTIONS], dtype=np.float64), index=spatial.obs_names, columns=types
    )
    scale = pd.Series(np.asarray(out[K.SPOT_SCALE]), index=spatial.obs_names, name="scale")
    params = {
        "labels_key": labels_key,
        "likelihood": likelihood,
        "dispersion": dispersion,
        "mode": mode,
        "spatial_prior": float(spatial_prior),
        "n_neighbors": int(n_neighbors),
        "library_normalize": bool(library_normalize),
        "temperature": float(temperature),
        "platform_effect_scale": float(platform_effect_scale),
        "background": bool(background),
        "learning_rate": float(learning_rate),
        "max_steps": int(max_steps),
        "tol": float(tol),
        "seed": int(seed),
    }
    spatial.obsm[key_added] = proportions
    spatial.obs[f"{key_added}_scale"] = scale.to_numpy()
    spatial.uns[key_added] = {
        "params": params,
        "cell_types": list(types),
        "genes": dict(report),
        "n_steps": int(fit_result.n_steps),
        "converged": bool(fit_result.converged),
    }
    return DeconvolutionResult(
        proportions=proportions,
        spot_scale=scale,
        platform_effect=pd.Series(np.asarray(model.platform_effect()), index=genes),
        background=pd.Series(np.asarray(model.background_fraction()), index=genes),
        reference_profiles=profiles,
        genes=report,
        fit=fit_result,
        params=params,
        model=model,
    )
