"""Contact maps: read `.cool` / `.mcool` files (cooler) or dense and sparse matrices."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import pandas as pd
import scipy.sparse

from diffomics.core._checks import check_finite
from diffomics.core._errors import (
    ConfigError,
    CountsError,
    DataIntegrityError,
    MissingKeyError,
    ShapeError,
)

__all__ = ["ContactMap", "as_contact_map", "count_features", "from_dense", "read_cool"]


@dataclasses.dataclass(frozen=True)
class ContactMap:
    """A contact matrix as upper-triangle pixels: one chromosome, a region, or a genome.

    Memory grows with the number of non-zero pixels, never with ``n_bins^2``. A map of
    several chromosomes (``read_cool(path, region=[...])``) holds their cis and trans
    pixels, bins in file order: `ice_balance` balances them together, `analyze` analyses
    each chromosome's cis pixels (`by_chrom`); `coarsen` takes one chromosome.

    Attributes:
      bins: DataFrame with ``chrom, start, end`` (bp), one row per bin, index ``0..n-1``.
      bin1, bin2: int `(nnz,)` pixel bin indices with ``bin1 <= bin2``.
      count: `(nnz,)` raw contact counts.
      resolution: bin size in bp.
      weights: the file's balancing weights (cooler's multiplicative ``weight``), or None.
      source: where the map came from, for reports.
    """

    bins: pd.DataFrame
    bin1: np.ndarray
    bin2: np.ndarray
    count: np.ndarray
    resolution: int
    weights: np.ndarray | None = None
    source: str = "matrix"

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.bins)

    @property
    def chroms(self) -> list[str]:
        """The chromosomes of the map, in bin order."""
        return list(pd.unique(self.bins["chrom"]))

    @property
    def chrom_ids(self) -> np.ndarray:
        """Chromosome index (into `chroms`) of each bin, int `(n_bins,)`."""
        return pd.factorize(self.bins["chrom"])[0].astype(np.int64)

    def dense(self, values: np.ndarray | None = None) -> np.ndarray:
        """The symmetric dense matrix of `values` (default: the counts), `(n_bins, n_bins)`."""
        values = self.count if values is None else values
        n = self.n_bins
        m = np.bincount(self.bin1 * n + self.bin2, values, n * n).reshape(n, n)
        m += m.T
        m[np.diag_indices(n)] /= 2
        return m

    def coarsen(self, factor: int) -> ContactMap:
        """Sum the counts into bins `factor` times larger (weights dropped)."""
        if factor == 1:
            return self
        b1, b2 = self.bin1 // factor, self.bin2 // factor
        n = -(-self.n_bins // factor)
        flat = pd.Series(self.count).groupby(b1 * n + b2).sum()
        starts = self.bins["start"].to_numpy()[::factor]
        ends = np.r_[starts[1:], self.bins["end"].to_numpy()[-1]]
        bins = pd.DataFrame({"chrom": self.bins["chrom"].iloc[0], "start": starts, "end": ends})
        index = flat.index.to_numpy()
        return ContactMap(
            bins,
            index // n,
            index % n,
            flat.to_numpy(),
            self.resolution * factor,
            None,
            f"{self.source} (coarsened x{factor})",
        )

    def by_chrom(self) -> list[ContactMap]:
        """Each chromosome's own map (its cis pixels, bins from 0), in bin order."""
        ids = self.chrom_ids
        if ids.max() == 0:
            return [self]
        if np.any(np.diff(ids) < 0):
            msg = f"the bins of each chromosome must be contiguous; {self.source} interleaves them."
            raise ShapeError(msg)
        bounds = np.r_[0, np.cumsum(np.bincount(ids))]
        cis = ids[self.bin1] == ids[self.bin2]
        order = np.argsort(ids[self.bin1[cis]], kind="stable")
        b1, b2, count = self.bin1[cis][order], self.bin2[cis][order], self.count[cis][order]
        ends = np.r_[0, np.cumsum(np.bincount(ids[b1], minlength=bounds.size - 1))]
        maps = []
        for k, chrom in enumerate(self.chroms):
            lo, hi, rows = bounds[k], bounds[k + 1], slice(ends[k], ends[k + 1])
            maps.append(
                ContactMap(
                    self.bins.iloc[lo:hi].reset_index(drop=True),
                    b1[rows] - lo,
                    b2[rows] - lo,
                    count[rows],
                    self.resolution,
                    None if self.weights is None else self.weights[lo:hi],
                    f"{self.source} {chrom}",
                )
            )
        return maps


def stack_maps(maps: list[ContactMap], source: str) -> ContactMap:
    """One map of several (their bins one after the other, no contacts between them)."""
    sizes = np.cumsum([0] + [m.n_bins for m in maps])
    weights = [m.weights for m in maps]
    return ContactMap(
        pd.concat([m.bins for m in maps], ignore_index=True),
        np.concatenate([m.bin1 + k for m, k in zip(maps, sizes, strict=False)]),
        np.concatenate([m.bin2 + k for m, k in zip(maps, sizes, strict=False)]),
        np.concatenate([m.count for m in maps]),
        maps[0].resolution,
        None if any(w is None for w in weights) else np.concatenate(weights),
        source,
    )


def from_dense(
    matrix, *, resolution: int = 1, chrom: str = "chr", start: int = 0, name: str = "matrix"
) -> ContactMap:
    """A `ContactMap` from a dense or scipy-sparse symmetric matrix of raw counts.

    Args:
      matrix: `(n_bins, n_bins)` symmetric, finite, non-negative.
      resolution: bin size in bp.
      chrom: chromosome name for the bin table.
      start: genomic start of the first bin, in bp.
      name: the argument name used in error messages.

    Raises:
      ShapeError: not square, or not symmetric.
      NonFiniteError: NaN or inf.
      CountsError: negative values, or no contacts at all.

    Examples:
      >>> cm = from_dense(np.array([[4, 1], [1, 2]]), resolution=10_000, chrom="chr1")
      >>> cm.n_bins, cm.bins["end"].tolist(), cm.count.tolist()
      (2, [10000, 20000], [4.0, 1.0, 2.0])
    """
    sparse = scipy.sparse.issparse(matrix)
    shape = matrix.shape if sparse else np.shape(matrix)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        msg = f"{name} must be a square (n_bins, n_bins) matrix; found shape {tuple(shape)}."
        raise ShapeError(msg)
    if sparse:
        coo = scipy.sparse.coo_matrix(matrix)
        check_finite(coo.data, name)
        diff = abs(coo - coo.T)
        asym = diff.max() if diff.nnz else 0.0
        scale = abs(coo).max() if coo.nnz else 0.0
        upper = scipy.sparse.triu(coo).tocoo()
        i, j, v = upper.row, upper.col, upper.data.astype(np.float64)
    else:
        m = np.asarray(matrix, dtype=np.float64)
        check_finite(m, name)
        asym = float(np.max(np.abs(m - m.T)))
        scale = float(np.max(np.abs(m)))
        i, j = np.nonzero(np.triu(m))
        v = m[i, j]
    if asym > 1e-6 * max(scale, 1.0):
        msg = (
            f"{name} must be symmetric (a cis contact matrix); the largest |A - A.T| is "
            f"{asym:.3g}. Symmetrise it first, e.g. A + A.T - diag(A) for an upper triangle."
        )
        raise ShapeError(msg)
    if (v < 0).any():
        msg = f"{name} must hold non-negative contact counts; found {int((v < 0).sum())} negative."
        raise CountsError(msg)
    if v.sum() == 0:
        msg = f"{name} has no contacts (all zero)."
        raise CountsError(msg)
    n = shape[0]
    starts = start + resolution * np.arange(n)
    bins = pd.DataFrame({"chrom": chrom, "start": starts, "end": starts + resolution})
    keep = v != 0
    return ContactMap(bins, i[keep].astype(np.int64), j[keep].astype(np.int64), v[keep], resolution)


_REGION = re.compile(r"^([^:]+)(?::([\d,_]+)-([\d,_]+))?$")


def _parse_region(region: str) -> tuple[str, int | None, int | None]:
    m = _REGION.match(region.strip())
    if not m:
        msg = f"region must look like 'chr20' or 'chr20:10,000,000-20,000,000'; found {region!r}."
        raise ConfigError(msg)
    chrom, lo, hi = m.groups()
    if lo is None:
        return chrom, None, None
    return chrom, int(re.sub("[,_]", "", lo)), int(re.sub("[,_]", "", hi))


def open_cooler(uri: str):
    """A `cooler.Cooler` for `uri` and its chromosome names, or a clear error."""
    import cooler  # noqa: PLC0415 - optional heavy import, only for file input

    path = uri.split("::")[0]
    if not os.path.exists(path):
        msg = f"no such file: {path!r}."
        raise FileNotFoundError(msg)
    try:
        clr = cooler.Cooler(uri)
        return clr, list(clr.chromnames)
    except Exception as err:  # cooler raises KeyError/OSError/ValueError for non-coolers
        try:
            resolutions = cooler.fileops.list_coolers(path)
        except Exception:  # noqa: BLE001 - not an HDF5 file at all
            resolutions = []
        hint = (
            f" It holds several coolers {resolutions[:8]}: pass '{path}::{resolutions[0]}'."
            if resolutions
            else " Expected a .cool or .mcool file (cooler format)."
        )
        msg = f"{uri!r} is not a cooler file ({type(err).__name__}: {err}).{hint}"
        raise DataIntegrityError(msg) from err


def read_cool(
    uri: str | os.PathLike, region: str | list[str] | tuple[str, ...] | None = None
) -> ContactMap:
    """Read one chromosome or region, or several chromosomes, of a `.cool` / `.mcool` file.

    Args:
      uri: ``path.cool``, or ``path.mcool::/resolutions/N`` for one resolution of a
        multi-resolution file.
      region: ``"chr20"`` or ``"chr20:10,000,000-20,000,000"``; may be omitted when the
        file holds a single chromosome. A list of whole chromosomes (``cooler.Cooler(path)
        .chromnames`` for the genome) reads them with the contacts between them, in file
        order, for genome-wide balancing.

    Returns:
      A `ContactMap` of raw counts, with the file's ``weight`` column when present.

    Raises:
      FileNotFoundError: no such file.
      DataIntegrityError: the file is not a cooler (or an `.mcool` without a resolution).
      MissingKeyError: the chromosome is not in the file, or `region` is needed.
    """
    uri = os.fspath(uri)
    clr, chromnames = open_cooler(uri)
    if region is None:
        if len(chromnames) != 1:
            msg = (
                f"region is required: {uri!r} holds {len(chromnames)} chromosomes "
                f"({chromnames[:6]}...); pass region='{chromnames[0]}'."
            )
            raise MissingKeyError(msg)
        region = chromnames[0]
    if isinstance(region, str):
        return read_regions(clr, uri, [region], chromnames)[0]
    return _read_chroms(clr, uri, _file_order(uri, region, chromnames), chromnames)


def _file_order(uri: str, chroms, chromnames: list[str]) -> list[str]:
    """`chroms` (whole chromosomes of the file) in file order."""
    unknown = [c for c in chroms if c not in chromnames]
    if unknown or not len(chroms):
        msg = f"region lists chromosomes {unknown or chroms} not in {uri!r}; it has {chromnames}."
        raise MissingKeyError(msg)
    return [c for c in chromnames if c in set(chroms)]


def _extent(clr, uri: str, region: str, chromnames: list[str]) -> tuple[str, int, int]:
    """Chromosome of `region` and its bin ids ``[first, last)``."""
    chrom, lo, hi = _parse_region(region)
    if chrom not in chromnames:
        msg = f"chromosome {chrom!r} is not in {uri!r}; it has {chromnames[:25]}."
        raise MissingKeyError(msg)
    first, last = clr.extent(chrom if lo is None else (chrom, lo, hi))
    return chrom, int(first), int(last)


def _rows(group, first: int, last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of the rows of bins ``[first, last)``: bin1, bin2 (file ids) and counts.

    Each read of a compressed HDF5 column costs its chunks, so only ``bin2_id`` and
    ``count`` are read; ``bin1`` follows from the row index (``indexes/bin1_offset``, which
    cooler's own reader uses the same way).
    """
    offsets = group["indexes/bin1_offset"][first : last + 1].astype(np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    bin1 = np.repeat(np.arange(first, last, dtype=np.int64), np.diff(offsets))
    bin2 = group["pixels/bin2_id"][start:stop].astype(np.int64)
    count = group["pixels/count"][start:stop].astype(np.float64)
    return bin1, bin2, count


def _bin_table(group, chrom: str, first: int, last: int) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Bins ``[first, last)`` of chromosome `chrom`, and the file's weights for them or None."""
    bins = pd.DataFrame({"chrom": chrom, "start": group["bins/start"][first:last],
                         "end": group["bins/end"][first:last]})  # fmt: skip
    bins = bins.astype({"chrom": str, "start": np.int64, "end": np.int64})
    stored = group["bins"]
    weights = stored["weight"][first:last].astype(np.float64) if "weight" in stored else None
    return bins, weights


def read_regions(clr, uri: str, regions: list[str], chromnames: list[str]) -> list[ContactMap]:
    """The cis maps of several regions of an open cooler, reading the file once.

    The pixel table is sorted by bin1 and holds the upper triangle (bin2 >= bin1), so a
    region's pixels are the rows of its bins ``[first, last)`` whose bin2 is below `last`.
    """
    extents = [_extent(clr, uri, r, chromnames) for r in regions]
    maps = []
    with clr.open("r") as group:
        for region, (chrom, first, last) in zip(regions, extents, strict=True):
            b1, b2, count = _rows(group, first, last)
            inside = b2 < last
            bins, weights = _bin_table(group, chrom, first, last)
            maps.append(
                ContactMap(
                    bins,
                    b1[inside] - first,
                    b2[inside] - first,
                    count[inside],
                    int(clr.binsize),
                    weights,
                    f"{uri}::{region}" if "::" not in uri else f"{uri} {region}",
                )
            )
    return maps


def _read_chroms(clr, uri: str, chroms: list[str], chromnames: list[str]) -> ContactMap:
    """Whole chromosomes of a cooler with their cis and trans pixels, in file order."""
    offsets = clr._load_dset("indexes/chrom_offset")
    new_id = np.full(int(clr.info["nbins"]), -1, np.int64)
    tables, weights, pieces, n = [], [], [], 0
    with clr.open("r") as group:
        for c in chroms:
            k = chromnames.index(c)
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            new_id[lo:hi] = np.arange(hi - lo) + n
            n += hi - lo
            bins, w = _bin_table(group, c, lo, hi)
            tables.append(bins)
            weights.append(w)
            pieces.append(_rows(group, lo, hi))
    b1, b2, count = (np.concatenate(column) for column in zip(*pieces, strict=True))
    b1, b2 = new_id[b1], new_id[b2]
    keep = b2 >= 0
    return ContactMap(
        pd.concat(tables, ignore_index=True),
        b1[keep],
        b2[keep],
        count[keep],
        int(clr.binsize),
        None if weights[0] is None else np.concatenate(weights),
        f"{uri} {','.join(chroms)}",
    )


def as_contact_map(data, *, region: str | None = None, resolution: int | None = None):
    """A `ContactMap` from a path / URI, a `cooler.Cooler`, a `ContactMap` or a matrix."""
    if isinstance(data, ContactMap):
        return data
    if isinstance(data, str | os.PathLike):
        return read_cool(data, region)
    if type(data).__name__ == "Cooler":
        return read_cool(data.uri, region)
    return from_dense(data, resolution=resolution or 1, name="contact matrix")


def count_features(features: pd.DataFrame, bins: pd.DataFrame, *, position: str = "start"):
    """Number of features (peaks, genes, CpG islands) whose position falls in each bin.

    A phasing track for compartments (gene or CTCF-peak density is higher in A) or an
    annotation to test boundaries against.

    Args:
      features: DataFrame with ``chrom`` and the `position` column (bp).
      bins: the bin table (``chrom, start, end``) of a `ContactMap`.
      position: column holding each feature's position.

    Returns:
      DataFrame ``chrom, start, end, count``, one row per bin.

    Examples:
      >>> bins = pd.DataFrame({"chrom": "chr1", "start": [0, 10], "end": [10, 20]})
      >>> peaks = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [3, 4, 5]})
      >>> count_features(peaks, bins)["count"].tolist()
      [2, 0]
    """
    missing = {"chrom", position} - set(features.columns)
    if missing:
        msg = f"features needs columns chrom and {position!r}; missing {sorted(missing)}."
        raise MissingKeyError(msg)
    out = bins[["chrom", "start", "end"]].copy()
    counts = np.zeros(len(out), dtype=np.int64)
    for chrom, rows in out.groupby("chrom", sort=False).groups.items():
        rows = np.asarray(rows)
        edges = out["start"].to_numpy()[rows]
        pos = features.loc[features["chrom"] == chrom, position].to_numpy()
        idx = np.searchsorted(edges, pos, side="right") - 1
        ok = (idx >= 0) & (pos < out["end"].to_numpy()[rows][-1])
        np.add.at(counts, rows[idx[ok]], 1)
    out["count"] = counts
    return out
