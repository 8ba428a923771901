"""The values `spatial_genes` tests, read and standardised a chunk of genes at a time.

The GP test needs, per gene, the standardised values over all spots; the preprocessing
needs two things of all genes at once: each spot's total counts (the covariate) and the
common NB overdispersion (`nb_overdispersion`). So the matrix is read twice, a chunk of
genes at a time: first for the checks, the totals and each gene's moments; then each chunk
is transformed (`anscombe`, `regress_out`, `standardize`, the functions the differentiable
operator uses) and written, gene-major, to a store. The store is an array in memory, or for
a matrix on disk (a backed AnnData, Zarr) a file in a temporary folder (`RowFile`), so host
memory holds a chunk of the matrix, not all of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from diffomics.core._checks import check_finite
from diffomics.core._errors import CountsError, MissingKeyError
from diffomics.core._numerics import default_float
from diffomics.spatial._gp_test import gene_sparsity, permute_genes, standardize
from diffomics.spatial._preprocess import anscombe, nb_overdispersion, regress_out

#: Values read at a time (spots x genes of a chunk): 128 MiB in float64.
_READ_VALUES = 2**24


@dataclasses.dataclass
class TestedValues:
    """Standardised values of every gene and what the table needs of the unstandardised ones.

    Attributes:
      z: `(n_genes, n_spots)` standardised values, gene-major (an array or a `RowFile`).
      sparsity: `(n_genes,)` fraction of spots at the gene's smallest value.
      constant: `(n_genes,)` genes without variation (not tested).
      mean: `(n_genes,)` mean of the tested values (after the preprocessing).
      sd: `(n_genes,)` their standard deviation (``ddof=0``).
      report: the preprocessing: ``counts``, and for counts ``phi`` and ``regressed``.
    """

    z: np.ndarray
    sparsity: np.ndarray
    constant: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    report: dict


def gene_chunks(n_spots: int, n_genes: int) -> list[slice]:
    """Slices of genes, each of as many genes as fit `_READ_VALUES` values."""
    width = max(1, _READ_VALUES // max(n_spots, 1))
    return [slice(a, min(a + width, n_genes)) for a in range(0, n_genes, width)]


def _read(matrix, cols: slice) -> np.ndarray:
    """Genes `cols` of a spots x genes matrix (dense, sparse, backed or Zarr) in float64."""
    x = matrix[:, cols]
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return x.astype(np.float64)


class RowFile:
    """A 2-d array in a file, read and written by rows with plain file I/O.

    Not a memory map: the rows read are copies and nothing of the file stays mapped into
    the process, so its resident memory holds the rows in use only. Indexing takes a slice
    of rows (read or written), or integer or boolean indices of rows (read).
    """

    def __init__(self, path: Path, shape: tuple[int, int], dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self._row_bytes = shape[1] * self.dtype.itemsize
        with open(path, "wb") as f:
            f.truncate(shape[0] * self._row_bytes)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        count = max(stop - start, 0) * self.shape[1]
        out = np.fromfile(self.path, self.dtype, count=count, offset=start * self._row_bytes)
        return out.reshape(-1, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.shape[0])
            return self._rows(start, stop)
        rows = np.asarray(key)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        if rows.size == 0:
            return np.empty((0, self.shape[1]), self.dtype)
        # one read per run of consecutive rows (the permuted genes are usually all of them)
        runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
        return np.concatenate([self._rows(int(r[0]), int(r[-1]) + 1) for r in runs])

    def __setitem__(self, key: slice, value) -> None:
        start, stop, _ = key.indices(self.shape[0])
        with open(self.path, "r+b") as f:
            f.seek(start * self._row_bytes)
            f.write(np.ascontiguousarray(value, dtype=self.dtype).tobytes())


def new_store(shape: tuple[int, int], folder: str | None, name: str):
    """A `default_float` array of `shape`, in memory (`folder` None) or a `RowFile` there."""
    if folder is None:
        return np.empty(shape, dtype=default_float())
    return RowFile(Path(folder) / f"{name}.bin", shape, default_float())


def tested_values(
    matrix, obs, *, counts: bool | None, total_counts_key: str | None, folder: str | None
) -> TestedValues:
    """Read `matrix` (spots x genes) twice, a chunk of genes at a time, into `TestedValues`.

    Args:
      matrix: ``adata.X`` or a layer: dense, sparse, backed h5ad or Zarr.
      obs: ``adata.obs`` (for `total_counts_key`).
      counts: whether the values are counts; None: non-negative integers are.
      total_counts_key: column of `obs` with each spot's total counts, or None.
      folder: where the store of standardised values is written; None keeps it in memory.

    Returns:
      `TestedValues`.

    Raises:
      NonFiniteError: a NaN or inf value (its spot and gene are named).
      CountsError: negative values given as counts, or a spot without counts.
      MissingKeyError: no `total_counts_key` column.
    """
    n, g = matrix.shape
    chunks = gene_chunks(n, g)
    totals, mean, var = np.zeros(n), np.empty(g), np.empty(g)
    low, high = np.empty(g), np.empty(g)
    negative, integers = False, True
    for cols in chunks:  # 1: checks, totals, moments
        x = _read(matrix, cols)
        check_finite(x, "adata expression", col_offset=cols.start)
        negative = negative or bool((x < 0).any())
        integers = integers and bool(np.allclose(x, np.round(x)))
        totals += x.sum(axis=1)
        mean[cols], var[cols] = x.mean(axis=0), x.var(axis=0, ddof=1)
        low[cols], high[cols] = x.min(axis=0), x.max(axis=0)
    is_counts = (not negative and integers) if counts is None else bool(counts)
    report = {"counts": is_counts}
    f = default_float()
    covariate = None
    if is_counts:
        if negative:
            msg = (
                "adata expression holds negative values, which are not counts; pass "
                "counts=False to test the values as they are."
            )
            raise CountsError(msg)
        if total_counts_key is not None:
            if total_counts_key not in obs:
                msg = f"adata.obs has no {total_counts_key!r}; found {list(obs.columns)}."
                raise MissingKeyError(msg)
            totals = obs[total_counts_key].to_numpy(np.float64)
            covariate, name = np.log(np.maximum(totals, 1e-300)), "log_total_counts"
        else:
            # each gene against the counts of the *other* genes: a gene's own counts in the
            # total make its coefficient on log totals positive, and regressing the spatial
            # pattern of the total out of a null gene then writes that pattern into it
            name = "log1p_total_counts_of_other_genes"
        if np.any(totals <= 0):
            msg = (
                f"{int(np.sum(totals <= 0))} spot(s) have zero total counts; remove them first "
                "(they carry no information and log total counts is undefined)."
            )
            raise CountsError(msg)
        scale = mean.max() if mean.max() > 0 else 1.0
        phi = nb_overdispersion(jnp.asarray(mean / scale, f), jnp.asarray(var / scale**2, f),
                                jnp.asarray(scale, f))  # fmt: skip
        report.update(phi=float(phi), regressed=name)
    z = new_store((g, n), folder, "z")
    sparsity, constant = np.empty(g), high == low
    value_mean, value_sd = np.empty(g), np.empty(g)
    for cols in chunks:  # 2: the tested values, standardised
        x = _read(matrix, cols)
        sparsity[cols] = gene_sparsity(x)
        values = x
        if is_counts:
            c = covariate if covariate is not None else np.log1p(totals[:, None] - x)
            values = regress_out(anscombe(jnp.asarray(x, f), phi), jnp.asarray(c, f))
            values = np.asarray(values, dtype=np.float64)
        value_mean[cols], value_sd[cols] = values.mean(axis=0), values.std(axis=0)
        zc, flat = standardize(jnp.asarray(values, dtype=f))
        z[cols] = np.asarray(zc).T
        constant[cols] |= np.asarray(flat)
    return TestedValues(z, sparsity, constant, value_mean, value_sd, report)


def permuted_store(z: np.ndarray, genes: np.ndarray, n_perm: int, *, seed: int,
                   folder: str | None) -> np.ndarray:  # fmt: skip
    """`n_perm` permutations of the genes `genes` of the store `z`, gene-major.

    Row ``i * len(genes) + k`` is gene ``genes[k]`` permuted over the spots with the
    permutation `permute_genes` gives it for the seed ``[seed, i]``.
    """
    n = z.shape[1]
    out = new_store((n_perm * len(genes), n), folder, "null")
    for i in range(n_perm):
        for cols in gene_chunks(n, len(genes)):
            idx = genes[cols]
            block = permute_genes(np.asarray(z[idx]).T, seed=[seed, i], genes=idx)
            out[i * len(genes) + cols.start : i * len(genes) + cols.stop] = block.T
    return out
