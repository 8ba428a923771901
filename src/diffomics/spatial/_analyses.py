"""`deconvolve`: cell-type deconvolution of a spatial AnnData with a single-cell reference."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from tqdm.auto import tqdm

from diffomics.core._checks import check_choice, check_counts
from diffomics.core._errors import ConfigError, MissingKeyError
from diffomics.core._fit import FitResult, fit
from diffomics.core._numerics import default_float
from diffomics.core._sharding import (
    check_in_every_process,
    on_disk,
    pad_rows,
    padded_size,
    process_rows,
    row_weights,
    shard_rows,
    shard_rows_from,
    sum_over_processes,
    to_host,
)
from diffomics.operators._keys import DECONVOLUTION_KEYS as K
from diffomics.spatial._graph import knn_graph
from diffomics.spatial._reference import (
    layer_matrix,
    match_genes,
    reference_dispersion,
    reference_profiles,
    to_dense,
)

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from diffomics.operators._spatial_deconvolution import SpatialDeconvolution

__all__ = ["DeconvolutionResult", "deconvolve"]

#: Spots per chunk when `deconvolve` reads them from a file and no `chunk_size` is given.
DEFAULT_CHUNK_SIZE = 50_000


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
    chunk_size: int | None = None,
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

    Spots can be fitted a chunk at a time (`chunk_size`), read from the file when `spatial`
    is opened backed (``anndata.read_h5ad(path, backed="r")``) or from Zarr
    (`diffomics.integration.open_zarr`), so host memory holds one chunk, not the matrix.
    The bulk stage needs only the spots' sum, which is accumulated chunk by chunk, and in
    ``mode="direct"`` with the platform effect, dispersions and prior then fixed, the
    negative log-posterior is a sum over spots: each chunk is fitted on its own from the
    bulk composition, and Adam, which moves every logit by its own gradient, takes the same
    steps as in one fit of all spots. Only the stopping point differs (each chunk stops on
    its own loss, within `tol`).

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
        one-device fit up to float32 rounding. On a mesh over several processes
        (``jax.distributed``), each process reads only its devices' spots of each chunk.
        In ``mode="direct"``, ``result.model`` then holds logits for the padded spots too.
        None (default): no placement.
      chunk_size: spots fitted at a time. None (default) fits all at once when `spatial`
        is in memory, and 50,000 at a time when its ``X`` (or `layer`) is read from a file
        and the settings allow it (below). Chunks need an objective that is a sum over
        spots: ``mode="direct"``, a count likelihood, ``dispersion="reference"``,
        ``background=False`` and ``spatial_prior=0`` (a `ConfigError` names the setting
        otherwise). ``result.model`` then holds the last chunk's logits, and
        ``result.fit`` the fits of the chunks one after another (``history``
        concatenated, ``n_steps`` summed, ``converged`` when all did). With `checkpoint`,
        chunk ``i`` saves to ``<checkpoint stem>.chunk<i>.npz``, so a run killed and
        started again skips the chunks already fitted.
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
        the shared genes (its index counts from the first spot, chunks or not).
      ConfigError: an argument out of range, or a `chunk_size` the settings do not allow.

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
    n_spots = spatial.n_obs
    chunks = _spot_chunks(
        n_spots,
        chunk_size,
        streamed=on_disk(spatial),
        coupled=_coupling(mode, likelihood, dispersion, background, spatial_prior),
    )
    read = _spot_reader(spatial, layer, spatial.var_names.get_indexer(genes))
    name = f"spatial counts over the {len(genes)} shared genes"
    rows = max(stop - start for start, stop in chunks)
    rows = rows if mesh is None else padded_size(rows, mesh)  # one compiled shape
    # on a mesh over several processes, each reads only the spots of its own devices
    split = mesh is not None and mesh.is_multi_process
    own = process_rows(rows, mesh) if split else slice(0, rows)

    def scan():
        """Checks and the pooled spots; each chunk (this process's rows) is read once."""
        pooled, integers, x = np.zeros(len(genes)), True, None
        for start, stop in chunks:
            a, b = start + min(own.start, stop - start), start + min(own.stop, stop - start)
            if a == b:
                continue
            x = read(a, b)
            check_counts(x, name, row_name="spot", row_offset=a)
            pooled += x.sum(axis=0, dtype=np.float64)
            integers = integers and np.allclose(x, np.round(x))
        return pooled, integers, x

    pooled, integers, x = scan() if not split else check_in_every_process(scan, mesh, name)
    if split:  # the pooled spots of every process
        pooled = sum_over_processes(pooled, mesh)
        integers = not sum_over_processes([not integers], mesh)[0]
    if likelihood != "gaussian" and not integers:
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
        n_spots=rows if mode == "direct" else None,
        platform_effect_scale=platform_effect_scale,
        background=background,
        proportion_prior=proportion_prior,
    )
    model = SpatialDeconvolution(config, rngs=nnx.Rngs(seed))
    spot_params = SPOT_PARAMS
    if likelihood == "nb":
        theta = reference_dispersion(reference[:, genes], labels_key, layer=reference_layer)
        model.log_theta[...] = jnp.log(jnp.asarray(theta.to_numpy(default_float())))
        if dispersion == "reference":
            spot_params = nnx.All(SPOT_PARAMS, nnx.Not(nnx.PathContains("log_theta")))
    f = default_float()
    bulk = {
        K.SPATIAL_EXPRESSION: jnp.asarray(pooled[None, :], f),
        K.REFERENCE_PROFILES: jnp.asarray(profiles.to_numpy(f)),
    }
    if learning_rate is None:
        learning_rate = 0.05 if mode == "direct" else 0.003
    settings = {"learning_rate": learning_rate, "max_steps": max_steps, "tol": tol}
    fit(model, lambda m, d: m.bulk_loss(d), (bulk,), wrt=BULK_PARAMS, progress=False,
        **settings)  # fmt: skip

    def loss_fn(m, d, e, w):
        return m.loss(d, edges=e, spatial_prior=spatial_prior, spot_weight=w)

    out = {K.PROPORTIONS: np.empty((n_spots, config.n_cell_types)), K.SPOT_SCALE: []}
    fits = []
    several = len(chunks) > 1
    shown = several and (sys.stderr.isatty() if progress is None else progress)
    for i, (start, stop) in enumerate(tqdm(chunks, disable=not shown, unit="chunk")):
        n = stop - start
        weight = row_weights(n, rows) if several or rows > n else None
        if split:  # each device's spots read by its process; padding repeats the last spot
            x = shard_rows_from(_padded_reader(read, start, n), (rows, len(genes)), mesh)
        else:
            x = pad_rows(x if not several else read(start, stop), rows)
        if mesh is not None:  # spots split over the devices; padding rows get weight 0
            x = x if split else shard_rows(x, mesh)
            weight = None if weight is None else shard_rows(weight, mesh)
        data = {K.SPATIAL_EXPRESSION: jnp.asarray(x),
                K.REFERENCE_PROFILES: bulk[K.REFERENCE_PROFILES]}  # fmt: skip
        model.initialize_from_bulk(bulk)  # every chunk starts from the bulk composition
        path = checkpoint
        if several and checkpoint is not None:
            path = Path(checkpoint).with_suffix(f".chunk{i}.npz")
        fits.append(fit(model, loss_fn, (data, edges, weight), wrt=spot_params, mesh=mesh,
                        progress=False if several else progress, checkpoint=path,
                        **settings))  # fmt: skip
        result = model.outputs(data, spot_weight=weight)
        out[K.PROPORTIONS][start:stop] = to_host(result[K.PROPORTIONS])[:n]
        out[K.SPOT_SCALE].append(to_host(result[K.SPOT_SCALE])[:n])
    fit_result = _chained(fits)
    types = profiles.index.astype(str)
    proportions = pd.DataFrame(out[K.PROPORTIONS], index=spatial.obs_names, columns=types)
    scale = pd.Series(np.concatenate(out[K.SPOT_SCALE]), index=spatial.obs_names, name="scale")
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
        "n_chunks": len(chunks),
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


def _coupling(mode, likelihood, dispersion, background, spatial_prior) -> list[str]:
    """The deconvolution settings that make the spot fit more than a sum over spots."""
    reasons = []
    if mode != "direct":
        reasons.append(f"mode={mode!r} (one encoder for all spots)")
    if likelihood == "gaussian":
        reasons.append("likelihood='gaussian' (each gene's variance is a mean over spots)")
    if likelihood == "nb" and dispersion == "fit":
        reasons.append("dispersion='fit' (gene dispersions fitted on all spots)")
    if background:
        reasons.append("background=True (gene backgrounds fitted on all spots)")
    if spatial_prior > 0:
        reasons.append(f"spatial_prior={spatial_prior} (neighbouring spots)")
    return reasons


def _spot_chunks(
    n_spots: int, chunk_size: int | None, *, streamed: bool, coupled: list[str]
) -> list[tuple[int, int]]:
    """``(start, stop)`` of the chunks of spots `deconvolve` fits one after another."""
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE if streamed and not coupled else n_spots
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        msg = f"chunk_size must be an int >= 1 or None; found {chunk_size!r}."
        raise ConfigError(msg)
    if chunk_size < n_spots and coupled:
        msg = (
            f"chunk_size={chunk_size} fits the {n_spots} spots in separate chunks, which "
            "needs an objective that is a sum over spots; these settings couple the spots: "
            f"{'; '.join(coupled)}. Pass chunk_size=None to fit them all at once."
        )
        raise ConfigError(msg)
    return [(a, min(a + chunk_size, n_spots)) for a in range(0, n_spots, chunk_size)]


def _spot_reader(spatial: ad.AnnData, layer: str | None, genes: np.ndarray):
    """``read(start, stop)``: those spots' values over `genes` (column indices), dense."""
    source = layer_matrix(spatial, layer, name="spatial")

    def read(start: int, stop: int) -> np.ndarray:
        return to_dense(source[start:stop][:, genes])  # in memory, or from the file

    return read


def _padded_reader(read, start: int, n: int):
    """``read`` of rows of a chunk of `n` spots from `start`, padded with its last spot."""

    def rows(block: slice) -> np.ndarray:
        idx = np.minimum(np.arange(block.start, block.stop), n - 1)
        return read(start + idx[0], start + idx[-1] + 1)[idx - idx[0]]

    return rows


def _chained(fits: list[FitResult]) -> FitResult:
    """The fits of the chunks as one `FitResult`, one after another."""
    if len(fits) == 1:
        return fits[0]
    return FitResult(
        history=np.concatenate([r.history for r in fits]),
        n_steps=sum(r.n_steps for r in fits),
        converged=all(r.converged for r in fits),
        compile_seconds=fits[0].compile_seconds,
        fit_seconds=sum(r.fit_seconds for r in fits)
        + sum(r.compile_seconds for r in fits[1:]),
    )
