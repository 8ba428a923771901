"""Pseudo-spots: pooling imaged single cells on a square grid, with exact proportions."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from diffomics.core._checks import check_finite, check_positive
from diffomics.core._errors import ConfigError, MissingKeyError
from diffomics.spatial._reference import dense_layer

__all__ = ["pool_pseudo_spots", "split_cells"]


def pool_pseudo_spots(
    cells: ad.AnnData,
    labels_key: str,
    *,
    spot_size: float,
    spatial_key: str = "spatial",
    min_cells: int = 2,
    layer: str | None = None,
) -> ad.AnnData:
    """Sum single cells into square grid spots, recording the true cell-type proportions.

    The benchmark design of the seqFISH+/MERFISH/osmFISH deconvolution studies: lay a square
    grid of side `spot_size` over the cell centroids and sum each square's cells into one spot;
    the true proportions are the fractions of each label among the pooled cells.

    Args:
      cells: single-cell AnnData with coordinates in ``obsm[spatial_key]`` and labels in
        ``obs[labels_key]``.
      labels_key: column of ``cells.obs`` with cell types.
      spot_size: grid side length, in the units of the coordinates, > 0.
      spatial_key: key of the coordinates in ``cells.obsm``.
      min_cells: squares with fewer cells are not made into spots (reported in
        ``uns["pseudo_spots"]["n_cells_dropped"]``).
      layer: layer to sum; None sums ``X``.

    Returns:
      AnnData of spots x genes with ``X`` (summed expression, float32), ``obs["n_cells"]``
      (int), ``obsm["spatial"]`` (square centres, float64), ``obsm["proportions_true"]``
      (DataFrame, spots x sorted cell types, rows sum to 1) and ``uns["pseudo_spots"]``
      (parameters and the count of cells in dropped squares).

    Examples:
      >>> import anndata as ad, numpy as np, pandas as pd
      >>> cells = ad.AnnData(np.ones((4, 2)), obs=pd.DataFrame(
      ...     {"t": ["a", "b", "a", "a"]}, index=list("wxyz")))
      >>> cells.obsm["spatial"] = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [5.0, 5.0]])
      >>> spots = pool_pseudo_spots(cells, "t", spot_size=1.0)
      >>> spots.obsm["proportions_true"].round(3).to_numpy().tolist(), spots.X.tolist()
      ([[0.667, 0.333]], [[3.0, 3.0]])
    """
    check_positive(spot_size, "spot_size")
    for key, store, where in ((spatial_key, cells.obsm, "obsm"), (labels_key, cells.obs, "obs")):
        if key not in store:
            msg = f"cells.{where} has no {key!r}; found {list(store.keys())}."
            raise MissingKeyError(msg)
    coords = np.asarray(cells.obsm[spatial_key], dtype=np.float64)[:, :2]
    check_finite(coords, f"cells.obsm[{spatial_key!r}]")
    x = dense_layer(cells, layer, name="cells")
    origin = coords.min(axis=0)
    cell_square = np.floor((coords - origin) / spot_size).astype(np.int64)
    square_id, inverse, n_cells = np.unique(
        cell_square, axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    keep = n_cells >= min_cells
    index = np.cumsum(keep) - 1
    member = keep[inverse]
    spot_of_cell = index[inverse[member]]
    n_spots = int(keep.sum())
    summed = np.zeros((n_spots, x.shape[1]), dtype=np.float64)
    np.add.at(summed, spot_of_cell, x[member])
    labels = pd.Categorical(cells.obs[labels_key].astype(str))
    onehot = np.zeros((n_spots, len(labels.categories)))
    np.add.at(onehot, (spot_of_cell, labels.codes[member]), 1.0)
    names = [f"spot_{i}_{j}" for i, j in square_id[keep]]
    spots = ad.AnnData(
        summed.astype(np.float32),
        obs=pd.DataFrame({"n_cells": n_cells[keep].astype(np.int64)}, index=names),
        var=pd.DataFrame(index=cells.var_names.copy()),
    )
    spots.obsm["spatial"] = origin + (square_id[keep] + 0.5) * spot_size
    spots.obsm["proportions_true"] = pd.DataFrame(
        onehot / onehot.sum(axis=1, keepdims=True),
        index=names,
        columns=labels.categories.astype(str),
    )
    spots.uns["pseudo_spots"] = {
        "labels_key": labels_key,
        "spot_size": float(spot_size),
        "min_cells": int(min_cells),
        "n_cells_dropped": int((~member).sum()),
    }
    return spots


def split_cells(
    cells: ad.AnnData, labels_key: str, *, fraction: float = 0.5, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Split cells into two disjoint sets, taking `fraction` of every cell type for the first.

    The protocol for a reference from the same section: one part builds the reference
    profiles, the other is pooled into pseudo-spots, so no cell is on both sides.

    Args:
      cells: single-cell AnnData with labels in ``obs[labels_key]``.
      labels_key: column of ``cells.obs`` with cell types.
      fraction: share of each type's cells (rounded up) in the first set, in (0, 1).
      seed: seed of the random choice.

    Returns:
      ``(first, rest)``, copies, each keeping the original cell order.

    Examples:
      >>> import anndata as ad, numpy as np, pandas as pd
      >>> cells = ad.AnnData(np.ones((6, 1)), obs=pd.DataFrame(
      ...     {"t": list("aaabbb")}, index=list("uvwxyz")))
      >>> ref, rest = split_cells(cells, "t", fraction=0.5, seed=0)
      >>> ref.obs["t"].value_counts().to_dict(), rest.n_obs
      ({'a': 2, 'b': 2}, 2)
    """
    if labels_key not in cells.obs:
        msg = f"cells.obs has no {labels_key!r}; found {list(cells.obs.columns)}."
        raise MissingKeyError(msg)
    if not 0.0 < fraction < 1.0:
        msg = f"fraction must be in (0, 1); found {fraction!r}."
        raise ConfigError(msg)
    rng = np.random.default_rng(seed)
    labels = cells.obs[labels_key].astype(str).to_numpy()
    first = np.zeros(cells.n_obs, dtype=bool)
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        first[rng.choice(idx, size=int(np.ceil(fraction * idx.size)), replace=False)] = True
    return cells[first].copy(), cells[~first].copy()
