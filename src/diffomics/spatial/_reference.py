"""Reference profiles from a labelled single-cell AnnData, and gene matching by name."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from diffomics.core._checks import check_counts
from diffomics.core._errors import CountsError, GeneMatchError, MissingKeyError
from diffomics.core._numerics import default_float

__all__ = [
    "dense_layer",
    "layer_matrix",
    "match_genes",
    "reference_dispersion",
    "reference_profiles",
    "to_dense",
]


def layer_matrix(adata: ad.AnnData, layer: str | None, *, name: str):
    """``adata.X`` or ``adata.layers[layer]`` as stored (dense, sparse or on disk)."""
    if layer is not None and layer not in adata.layers:
        msg = f"{name}.layers has no {layer!r}; found {list(adata.layers)}. Pass layer=None for X."
        raise MissingKeyError(msg)
    return adata.X if layer is None else adata.layers[layer]


def to_dense(x) -> np.ndarray:
    """A dense or sparse matrix (or a block read from a file) as a dense `default_float` array."""
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return x.astype(default_float())


def dense_layer(adata: ad.AnnData, layer: str | None, *, name: str) -> np.ndarray:
    """``adata.X`` or ``adata.layers[layer]`` as a dense array (obs x vars) of `default_float`."""
    return to_dense(layer_matrix(adata, layer, name=name))


def _check_unique(names: pd.Index, name: str) -> None:
    dup = names[names.duplicated()]
    if len(dup):
        msg = (
            f"{name} has {len(dup)} duplicated gene name(s), e.g. {list(dup[:3])}; "
            "make them unique first (AnnData.var_names_make_unique)."
        )
        raise GeneMatchError(msg)


def match_genes(
    spatial_genes: Sequence[str], reference_genes: Sequence[str]
) -> tuple[list[str], dict[str, int]]:
    """Genes shared by two datasets, in the spatial data's order.

    Args:
      spatial_genes: gene names of the spatial data.
      reference_genes: gene names of the reference.

    Returns:
      ``(shared, report)``: the shared names and a report with the number of genes
      ``n_shared``, ``n_dropped_spatial`` and ``n_dropped_reference``.

    Raises:
      GeneMatchError: no gene is shared, or a list holds duplicated names.

    Examples:
      >>> match_genes(["a", "b", "c"], ["c", "a", "z"])
      (['a', 'c'], {'n_shared': 2, 'n_dropped_spatial': 1, 'n_dropped_reference': 1})
    """
    s, r = pd.Index(spatial_genes), pd.Index(reference_genes)
    _check_unique(s, "spatial var_names")
    _check_unique(r, "reference var_names")
    shared = s[s.isin(r)].tolist()
    if not shared:
        msg = (
            f"spatial and reference share no gene names (spatial e.g. {s[:3].tolist()}, "
            f"reference e.g. {r[:3].tolist()}). Use the same identifiers (symbols or Ensembl IDs) "
            "and case in both."
        )
        raise GeneMatchError(msg)
    report = {
        "n_shared": len(shared),
        "n_dropped_spatial": len(s) - len(shared),
        "n_dropped_reference": len(r) - len(shared),
    }
    return shared, report


def _labelled_cells(
    reference: ad.AnnData, labels_key: str, layer: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Counts and labels of the reference cells with a non-zero total (others reported)."""
    if labels_key not in reference.obs:
        msg = f"reference.obs has no column {labels_key!r}; found {list(reference.obs.columns)}."
        raise MissingKeyError(msg)
    labels = reference.obs[labels_key]
    if labels.isna().any():
        msg = (
            f"reference.obs[{labels_key!r}] has {int(labels.isna().sum())} missing label(s); "
            "drop those cells or label them."
        )
        raise MissingKeyError(msg)
    x = dense_layer(reference, layer, name="reference")
    check_counts(x, "reference counts", row_name="cell", allow_empty_rows=True)
    keep = x.sum(axis=1) > 0
    labels = labels.astype(str).to_numpy()
    lost = sorted(set(labels) - set(labels[keep]))
    if lost:
        msg = (
            f"reference cell type(s) {lost[:5]} have no cell with counts over the "
            f"{x.shape[1]} genes used; drop them from reference.obs[{labels_key!r}] or check "
            "the genes shared with the spatial data."
        )
        raise CountsError(msg)
    if not keep.all():
        warnings.warn(
            f"reference: left out {int((~keep).sum())} cell(s) with zero counts over "
            f"the {x.shape[1]} genes used.",
            stacklevel=3,
        )
    return x[keep], labels[keep]


def reference_profiles(
    reference: ad.AnnData,
    labels_key: str,
    *,
    layer: str | None = None,
    library_normalize: bool = True,
) -> pd.DataFrame:
    """Mean expression profile of each cell type in a labelled single-cell reference.

    With `library_normalize`, each cell is first scaled to the median library size of the
    reference (``x_c * median_total / total_c``), so the profile of a type is its mean
    composition at a common depth; without it, the profile is the mean raw counts per cell,
    which keeps the differences in RNA content between types (cell2location's signatures are
    in these units). Cells whose total is 0 are left out and reported with a warning.

    Args:
      reference: single-cell AnnData, cells x genes, counts in `layer` (or ``X``).
      labels_key: column of ``reference.obs`` holding the cell-type labels.
      layer: layer with counts; None uses ``X``.
      library_normalize: scale cells to the median library size before averaging.

    Returns:
      DataFrame, cell types (sorted label order) x genes (``reference.var_names``), >= 0.

    Raises:
      MissingKeyError: `labels_key` is not in ``reference.obs``, or `layer` is missing.
      NonFiniteError, CountsError: bad values in the counts.

    Examples:
      >>> import anndata as ad, numpy as np, pandas as pd
      >>> ref = ad.AnnData(np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0]]),
      ...                  obs=pd.DataFrame({"type": ["A", "A", "B"]}, index=["c1", "c2", "c3"]))
      >>> reference_profiles(ref, "type", library_normalize=False)
              0    1
      type
      A     3.0  0.0
      B     0.0  3.0
    """
    x, labels = _labelled_cells(reference, labels_key, layer)
    totals = x.sum(axis=1)
    if library_normalize:
        x = x * (np.median(totals) / totals)[:, None]
    frame = pd.DataFrame(x, columns=reference.var_names)
    profiles = frame.groupby(pd.Categorical(labels, ordered=False), observed=True).mean()
    profiles.index = profiles.index.astype(str).rename(labels_key)
    profiles.columns = profiles.columns.rename(None)
    return profiles.sort_index()


def reference_dispersion(
    reference: ad.AnnData,
    labels_key: str,
    *,
    layer: str | None = None,
    min_cells: int = 5,
    max_theta: float = 1e4,
) -> pd.Series:
    """Per-gene negative-binomial inverse dispersion of single cells within their cell type.

    Within each type every cell ``c`` has a size factor ``f_c`` (its total over the mean total
    of the type) and counts ``x_cg ~ NB(f_c mu_kg, theta_g)``. The method-of-moments estimate
    pools the types: ``theta_g = sum_c (f_c mu_kg)^2 / sum_c [(x_cg - f_c mu_kg)^2 - f_c mu_kg]``.
    Removing the size factor matters: cell-to-cell differences in total RNA move every gene of
    a cell together, and pooled in a spot they are differences in composition, not per-gene
    noise. Genes with no extra-Poisson variance get `max_theta`.

    Args:
      reference: single-cell AnnData, cells x genes, raw counts in `layer` (or ``X``).
      labels_key: column of ``reference.obs`` with the cell types.
      layer: layer with counts; None uses ``X``.
      min_cells: types with fewer cells are not used.
      max_theta: upper bound (and value for Poisson-like genes), > 0.

    Returns:
      Series indexed by gene, ``theta`` per cell, in (0, `max_theta`].

    Raises:
      MissingKeyError: `labels_key` or `layer` is missing.
      CountsError: no type has `min_cells` cells.

    References:
      Anscombe, "The statistical analysis of insect counts based on the negative binomial
      distribution", Biometrics 5:165 (1949), https://doi.org/10.2307/3001913.

    Examples:
      >>> import anndata as ad, numpy as np, pandas as pd
      >>> rng = np.random.default_rng(0)
      >>> x = rng.negative_binomial(4.0, 4.0 / (4.0 + 20.0), size=(2000, 300)).astype(float)
      >>> ref = ad.AnnData(x, obs=pd.DataFrame({"t": ["a"] * 2000}, index=map(str, range(2000))))
      >>> round(float(reference_dispersion(ref, "t").median()), 1)  # planted theta = 4
      4.0
    """
    x, labels = _labelled_cells(reference, labels_key, layer)
    x = x.astype(np.float64)
    signal = np.zeros(x.shape[1])
    excess = np.zeros(x.shape[1])
    used = 0
    for label in np.unique(labels):
        cells = x[labels == label]
        if cells.shape[0] < min_cells:
            continue
        used += 1
        totals = cells.sum(axis=1)
        size = totals / totals.mean()
        mean = size[:, None] * (cells.sum(axis=0) / size.sum())[None, :]
        signal += np.sum(mean**2, axis=0)
        excess += np.sum((cells - mean) ** 2 - mean, axis=0)
    if used == 0:
        msg = f"reference_dispersion needs a cell type with >= {min_cells} cells; found none."
        raise CountsError(msg)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where(excess > 0, signal / excess, max_theta)
    theta = np.clip(np.nan_to_num(theta, nan=max_theta), 1e-3, max_theta)
    return pd.Series(theta, index=reference.var_names.copy(), name="theta")
