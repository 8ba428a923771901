"""Figures of spatial analyses; they read what the analyses wrote and compute nothing."""

from __future__ import annotations

import math

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from diffomics.core._errors import MissingKeyError

__all__ = ["proportions_on_tissue", "spatial_genes_on_tissue"]


def proportions_on_tissue(
    adata: ad.AnnData,
    key: str = "proportions",
    *,
    spatial_key: str = "spatial",
    cell_types: list[str] | None = None,
    ncols: int = 4,
    panel_size: float = 2.6,
    point_size: float | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Draw each cell type's proportion on the tissue coordinates, one panel per type.

    Args:
      adata: spots x genes AnnData with proportions in ``obsm[key]`` (a DataFrame, as
        `diffomics.spatial.deconvolve` writes) and coordinates in ``obsm[spatial_key]``.
      key: key of the proportions in ``obsm``.
      spatial_key: key of the coordinates in ``obsm``.
      cell_types: which types to draw, in order; None draws every column.
      ncols: panels per row.
      panel_size: width and height of one panel, in inches.
      point_size: marker area; None picks one from the number of spots.
      cmap: matplotlib colour map; every panel uses the colour scale [0, 1].

    Returns:
      The matplotlib `Figure` (not shown, so it composes with the caller's own plots).

    Raises:
      MissingKeyError: ``obsm[key]`` or ``obsm[spatial_key]`` is missing.

    Examples:
      >>> import pandas as pd
      >>> spots = ad.AnnData(np.ones((3, 1)))
      >>> spots.obsm["spatial"] = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
      >>> spots.obsm["proportions"] = pd.DataFrame(
      ...     {"A": [1.0, 0.5, 0.0], "B": [0.0, 0.5, 1.0]}, index=spots.obs_names)
      >>> len(proportions_on_tissue(spots).axes)  # two panels and one colour bar
      3
    """
    for needed in (key, spatial_key):
        if needed not in adata.obsm:
            msg = f"adata.obsm has no {needed!r}; found {list(adata.obsm)}."
            raise MissingKeyError(msg)
    frame = adata.obsm[key]
    columns = list(frame.columns) if cell_types is None else list(cell_types)
    return _tissue_panels(
        np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2],
        np.asarray(frame[columns], dtype=float),
        [str(c) for c in columns],
        ncols=ncols,
        panel_size=panel_size,
        point_size=point_size,
        cmap=cmap,
        limits=(0.0, 1.0),
        label="proportion",
    )


def spatial_genes_on_tissue(
    adata: ad.AnnData,
    key: str = "spatial_genes",
    *,
    spatial_key: str = "spatial",
    genes: list[str] | None = None,
    ncols: int = 4,
    panel_size: float = 2.6,
    point_size: float | None = None,
    cmap: str = "magma",
) -> Figure:
    """Draw the GP-smoothed expression of spatially variable genes on the tissue.

    Reads what `diffomics.spatial.spatial_genes` wrote: the smoothed expression in
    ``obsm[f"{key}_smoothed"]`` and the test results in ``var`` (the titles give FSV and
    q-value). Each panel has its own colour scale.

    Args:
      adata: the AnnData `spatial_genes` ran on.
      key: its ``key_added``.
      spatial_key: key of the coordinates in ``obsm``.
      genes: which of the smoothed genes to draw; None draws all (strongest first).
      ncols: panels per row.
      panel_size: width and height of one panel, in inches.
      point_size: marker area; None picks one from the number of spots.
      cmap: matplotlib colour map.

    Returns:
      The matplotlib `Figure`.

    Raises:
      MissingKeyError: `spatial_genes` has not been run with this `key`.
    """
    smoothed_key = f"{key}_smoothed"
    for needed in (smoothed_key, spatial_key):
        if needed not in adata.obsm:
            msg = (
                f"adata.obsm has no {needed!r}; run diffomics.spatial.spatial_genes first "
                f"(found {list(adata.obsm)})."
            )
            raise MissingKeyError(msg)
    frame = adata.obsm[smoothed_key]
    names = list(frame.columns) if genes is None else list(genes)
    titles = [
        f"{g}\nFSV {adata.var.loc[g, 'fsv']:.2f}, q {adata.var.loc[g, 'qval']:.1e}" for g in names
    ]
    return _tissue_panels(
        np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2],
        np.asarray(frame[names], dtype=float),
        titles,
        ncols=ncols,
        panel_size=panel_size,
        point_size=point_size,
        cmap=cmap,
        limits=None,
        label="smoothed expression",
    )


def _tissue_panels(xy, values, titles, *, ncols, panel_size, point_size, cmap, limits, label):
    """One scatter panel per column of `values` over the coordinates `xy`."""
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    size = point_size if point_size is not None else max(4.0, 4000.0 / max(len(xy), 1))
    span = np.ptp(xy, axis=0)
    aspect = float(np.clip(span[1] / span[0], 0.3, 3.0)) if span[0] > 0 else 1.0
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols + 1.0, panel_size * aspect * nrows + 0.5 * nrows),
        squeeze=False,
    )
    image = None
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= len(titles):
            continue
        vmin, vmax = limits if limits is not None else (None, None)
        image = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=values[:, i],
            s=size,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            marker="s",
            linewidths=0,
        )
        ax.set_aspect("equal")
        ax.set_title(titles[i], fontsize=8)
        if limits is None:
            fig.colorbar(image, ax=ax, shrink=0.7)
    if limits is not None and image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label=label)
    return fig
