"""`analyze`: the cooltools workflow on one chromosome, with cooltools' column names.

Balance, expected, compartments, insulation and boundaries, dots.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import warnings
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from diffomics.core._checks import check_choice
from diffomics.core._errors import ConfigError, CountsError, ShapeError
from diffomics.core._numerics import default_float
from diffomics.core._sharding import DATA_AXIS, padded_size, shard_rows, to_host
from diffomics.hic._balance import ice, ice_filters
from diffomics.hic._band import band_from_pixels, band_mask
from diffomics.hic._compartments import cis_eigs, phase_eigs
from diffomics.hic._dots import call_dots, recommend_kernel_size
from diffomics.hic._expected import expected_cis
from diffomics.hic._insulation import boundary_strength, insulation, li_threshold
from diffomics.hic._io import ContactMap, as_contact_map, open_cooler, read_regions, stack_maps

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["HiCResult", "analyze", "ice_balance"]


def _bucket(n: int) -> int:
    """`n` rounded up to a multiple of 1/8 of its power of two (at most 12.5% padding).

    Maps of similar sizes then share one compiled program, chromosome after chromosome.
    """
    step = 1 << max(int(n).bit_length() - 4, 0)  # 1/8 of the largest power of two <= n
    return -(-n // step) * step


_ice_jit = jax.jit(
    ice,
    static_argnames=("cis_only", "trans_only", "ignore_diags", "max_iter", "tol", "differentiable"),
)


# one compiled program per bucketed size instead of one dispatch per operation: chromosome
# after chromosome the per-call cost is then a few milliseconds
_expected_jit = jax.jit(expected_cis, static_argnames=("n_diags", "ignore_diags"))
_insulation_jit = jax.jit(insulation, static_argnames=("window", "ignore_diags", "mesh"))


@functools.partial(jax.jit, static_argnames=("n_bins", "n_diags", "mesh"))
def _balanced_band(bin1, bin2, counts, weights, valid, *, n_bins, n_diags, mesh=None):
    """Raw and balanced band of the pixels, and its mask of valid entries.

    With a mesh, the balanced band and the mask come out with their rows split over it
    (insulation's blocks); the raw band, which dot calling reads on the host, is replicated.
    """
    counts_band = band_from_pixels(bin1, bin2, counts, n_bins, n_diags)  # padded rows empty
    mask = band_mask(valid, n_diags)
    idx = jnp.minimum(jnp.arange(n_bins)[:, None] + jnp.arange(n_diags)[None, :], n_bins - 1)
    balanced = counts_band * weights[:, None] * weights[idx]
    if mesh is not None:
        rows = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        balanced, mask = (jax.lax.with_sharding_constraint(a, rows) for a in (balanced, mask))
        every = NamedSharding(mesh, PartitionSpec())
        counts_band = jax.lax.with_sharding_constraint(counts_band, every)
    return counts_band, balanced, mask


# up to this many bins the full decomposition is as fast as LOBPCG and compiles 3 times
# faster (CPU, 2 threads, 3 eigenpairs: 128 bins 2 ms against 4 ms, compiling 0.6 s against
# 2.0 s; 256 bins 15 ms against 5 ms; 1,024 bins 0.35 s against 0.06 s)
_EIGH_MAX_BINS = 192


@functools.partial(jax.jit, static_argnames=("n_eigs", "ignore_diags", "n_bins"))
def _cis_eigs_jit(matrix, valid, *, n_eigs, ignore_diags, n_bins):
    solver = "eigh" if matrix.shape[0] <= _EIGH_MAX_BINS else "lobpcg"
    return cis_eigs(matrix, valid, n_eigs=n_eigs, ignore_diags=ignore_diags, solver=solver,
                    n_bins=n_bins)  # fmt: skip


def _padded_bins(n: int, mesh: Mesh | None) -> int:
    """Rows of the padded band: bucketed, and divisible over the mesh's devices."""
    return _bucket(n) if mesh is None else padded_size(_bucket(n), mesh)


def _padded_pixels(cmap: ContactMap, n_bins: int, mesh: Mesh | None = None):
    """Pixel arrays padded with zero-count pixels to a bucketed length (split over `mesh`)."""
    nnz = cmap.bin1.size
    size = _bucket(max(nnz, 1))
    size = size if mesh is None else padded_size(size, mesh)
    zeros = np.zeros(size - nnz, np.int64)
    last = n_bins - 1
    arrays = (np.r_[cmap.bin1, zeros + last], np.r_[cmap.bin2, zeros + last],
              np.r_[cmap.count, np.zeros(size - nnz)])  # fmt: skip
    return arrays if mesh is None else tuple(shard_rows(a, mesh) for a in arrays)


@dataclasses.dataclass
class HiCResult:
    """Tables of one `analyze` run (cooltools-compatible column names).

    Attributes:
      map: the `ContactMap` analysed.
      weights: `(n_bins,)` balancing weights, NaN for masked bins.
      expected: per-distance expected (``dist``, ``dist_bp``, ``n_valid``, ``count.sum``,
        ``balanced.sum``, ``balanced.avg``), as ``cooltools.expected_cis``.
      compartments: bins with ``E1..En`` (as ``cooltools.eigs_cis``), at
        `compartment_resolution`.
      eigvals: the eigenvalues, one row.
      insulation: bins with ``log2_insulation_score_<w>``, ``n_valid_pixels_<w>``,
        ``boundary_strength_<w>``, ``is_boundary_<w>`` per window ``w`` (bp), as
        ``cooltools.insulation``.
      boundaries: the called boundaries, long format (``chrom, start, end, window,
        boundary_strength``).
      loops: dots in BEDPE columns (``chrom1, start1, end1, chrom2, start2, end2``) with the
        observed ``count``, the local expected and q-value per kernel, and ``c_size``.
      report: what was filtered and how the fits went (of several regions: the balancing's,
        and each region's under ``"regions"``).
      compartment_resolution: bin size (bp) of the compartment table.
      regions: of an analysis of several regions, each region's own `HiCResult` (by
        name, in order); the tables above are theirs one after the other. Empty for one.
    """

    map: ContactMap
    weights: np.ndarray
    expected: pd.DataFrame
    compartments: pd.DataFrame | None
    eigvals: pd.DataFrame | None
    insulation: pd.DataFrame
    boundaries: pd.DataFrame
    loops: pd.DataFrame | None
    report: dict
    compartment_resolution: int | None = None
    regions: dict[str, HiCResult] = dataclasses.field(default_factory=dict)

    def write_bed(self, path: str | os.PathLike) -> None:
        """Boundaries as BED (``chrom start end name score``; name = window in bp)."""
        b = self.boundaries
        out = pd.DataFrame(
            {
                "chrom": b["chrom"],
                "start": b["start"],
                "end": b["end"],
                "name": "boundary_" + b["window"].astype(str),
                "score": b["boundary_strength"].round(4),
            }
        )
        out.to_csv(path, sep="\t", header=False, index=False)

    def write_bedpe(self, path: str | os.PathLike) -> None:
        """Loops as BEDPE (six coordinate columns, then ``count`` and the donut q-value)."""
        if self.loops is None:
            msg = "no loops were called (analyze(..., loops=False)); nothing to write."
            raise ConfigError(msg)
        cols = ["chrom1", "start1", "end1", "chrom2", "start2", "end2", "count"]
        self.loops[[*cols, "la_exp.donut.qval"]].to_csv(path, sep="\t", header=False, index=False)


def ice_balance(
    cmap: ContactMap,
    *,
    cis_only: bool = False,
    trans_only: bool = False,
    ignore_diags: int = 2,
    min_nnz: int = 10,
    min_count: float = 0,
    mad_max: float = 5.0,
    max_iter: int = 200,
    tol: float = 1e-10,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, dict]:
    """ICE weights of a contact map with cooler's filters (`ice_filters`, `ice`).

    On a map of one chromosome this is ``cooler.balance_cooler`` on that chromosome. On a
    map of several (``read_cool(path, region=chromnames)``) it is ``balance_cooler`` on the
    file: the filters see every chromosome at once (coverage relative to each chromosome's
    median, one MAD cut-off for the genome), and the balancing is genome-wide, per
    chromosome (`cis_only`, cooler's choice for maps without trans contacts) or on trans
    contacts only (`trans_only`).

    Args:
      cmap: the `ContactMap` (raw counts).
      cis_only: filter and balance on contacts within chromosomes, each on its own.
      trans_only: balance on contacts between chromosomes (the filters use all contacts,
        as cooler's).
      ignore_diags: diagonals set aside.
      min_nnz: minimum non-zero pixels per bin.
      min_count: minimum total contacts per bin.
      mad_max: coverage cut-off in MADs of log coverage.
      max_iter: ICE iteration limit.
      tol: convergence threshold on the relative variance of the marginals.
      mesh: a device mesh (`diffomics.core.data_mesh`): the pixels are split over its
        devices (padded with zero-count pixels); each ICE iteration sums the marginals of
        every device's pixels (XLA inserts the reduction). None: no placement.

    Returns:
      ``(weights, report)``: `(n_bins,)` with NaN for masked bins (cooler's convention), and
      the filters' counts and convergence.

    Raises:
      ConfigError: both `cis_only` and `trans_only`, or `trans_only` on one chromosome.
      CountsError: fewer than 3 bins pass the filters.

    Examples:
      >>> from diffomics.datasets import gm12878_hic
      >>> from diffomics.hic import read_cool
      >>> weights, report = ice_balance(read_cool(gm12878_hic("chr22")))
      >>> report["n_masked_bins"], report["ice_converged"]
      (383, True)
    """
    if cis_only and trans_only:
        msg = "cis_only and trans_only are exclusive; pass at most one of them."
        raise ConfigError(msg)
    chrom = cmap.chrom_ids
    if trans_only and chrom.max() == 0:
        msg = f"trans_only needs a map of several chromosomes; {cmap.source} has one."
        raise ConfigError(msg)
    valid, report = ice_filters(
        cmap.bin1, cmap.bin2, cmap.count, cmap.n_bins, chrom=chrom, cis_only=cis_only,
        ignore_diags=ignore_diags, min_nnz=min_nnz, min_count=min_count, mad_max=mad_max,
    )  # fmt: skip
    if valid.sum() < 3:
        msg = (
            f"contact map has {int(valid.sum())} bin(s) left after filtering (of "
            f"{cmap.n_bins}; dropped {report}); it needs at least 3 to balance."
        )
        raise CountsError(msg)
    n_pad = _bucket(cmap.n_bins)
    b1, b2, counts = _padded_pixels(cmap, n_pad, mesh)
    pad = n_pad - cmap.n_bins
    res = _ice_jit(b1, b2, counts, np.r_[valid, np.zeros(pad, bool)],
                   chrom=np.r_[chrom, np.full(pad, -1)], cis_only=cis_only,
                   trans_only=trans_only, ignore_diags=ignore_diags, max_iter=max_iter,
                   tol=tol)  # fmt: skip
    weights = np.asarray(res.weights, dtype=np.float64)[: cmap.n_bins]
    weights = np.where(valid & (weights > 0), weights, np.nan)
    report = {
        "filtered_bins": report,
        "n_masked_bins": int(np.isnan(weights).sum()),
        "ice_iterations": int(res.n_iter),
        "ice_converged": bool(res.converged),
        "ice_relative_variance": float(res.variance),
    }
    if not res.converged:
        warnings.warn(
            f"ICE did not converge in {max_iter} iterations (relative variance "
            f"{float(res.variance):.2g} > tol {tol:g}); the weights are approximate.",
            stacklevel=2,
        )
    return weights, report


def _phasing(track, bins: pd.DataFrame) -> np.ndarray:
    """A phasing track aligned to `bins` (array, Series, or bed-like DataFrame)."""
    if isinstance(track, pd.DataFrame):
        if not {"chrom", "start"}.issubset(track.columns):
            msg = "phasing_track DataFrame needs chrom, start, end and a value column."
            raise ConfigError(msg)
        value = [c for c in track.columns if c not in ("chrom", "start", "end")][0]
        key = track.set_index(["chrom", "start"])[value]
        return key.reindex(pd.MultiIndex.from_frame(bins[["chrom", "start"]])).to_numpy(float)
    arr = np.asarray(track, dtype=np.float64)
    if arr.shape != (len(bins),):
        msg = f"phasing_track must have one value per bin ({len(bins)}); found {arr.shape}."
        raise ShapeError(msg)
    return arr


def _coarse_track(track: np.ndarray, factor: int) -> np.ndarray:
    n = -(-track.size // factor)
    padded = np.pad(track, (0, n * factor - track.size), constant_values=np.nan).reshape(n, factor)
    # the mean of the finite values, NaN where none (nanmean's warning filter is not
    # thread-safe, and regions may run in threads: `_over_devices`)
    seen = np.isfinite(padded)
    count = seen.sum(axis=1)
    total = np.where(seen, padded, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def analyze(
    data,
    *,
    region: str | list[str] | tuple[str, ...] | None = None,
    resolution: int | None = None,
    balance: bool | str | np.ndarray = True,
    ignore_diags: int = 2,
    windows: tuple[int, ...] | None = None,
    min_frac_valid_pixels: float = 0.66,
    boundary_threshold: str | float = "Li",
    phasing_track=None,
    n_eigs: int = 3,
    compartment_max_bins: int = 3000,
    loops: bool = True,
    max_loci_separation: int = 10_000_000,
    kernel_size: tuple[int, int] | None = None,
    lambda_bin_fdr: float = 0.1,
    clustering_radius: int = 20_000,
    progress: bool | None = None,
    mesh: Mesh | None = None,
) -> HiCResult:
    """Analyse a Hi-C map as cooltools does: one region, or several chromosomes in one call.

    Steps: ICE balancing with cooler's filters (`balance`), expected by distance
    (`expected_cis`), compartment eigenvectors (`cis_eigs`, phased by `phasing_track`),
    diamond insulation and boundaries by prominence with Li's threshold (`insulation`,
    `boundary_strength`, `li_threshold`) and HiCCUPS dots (`call_dots`). Expected,
    insulation and dots run on pixels or a band of the matrix (memory linear in bins);
    compartments run on a dense matrix of at most `compartment_max_bins` bins, coarsening
    the map by an integer factor when it is larger (recorded in ``compartment_resolution``).

    Several regions (a list, as a cooltools view, or a map of several chromosomes) are read
    from the file in one pass; each is analysed on its own (cis contacts only) and the
    tables are stacked, with a ``region`` column where cooltools has one. They are balanced
    together as ``cooler balance --cis-only`` (`ice_balance` with ``cis_only=True``: each
    chromosome on its own, one MAD cut-off for all), and their compartments use one
    resolution (the coarsening the largest needs).

    Args:
      data: a `.cool` / `.mcool::/resolutions/N` path, a `cooler.Cooler`, a `ContactMap`, or
        a dense / scipy-sparse symmetric raw-count matrix.
      region: chromosome or ``chrom:start-end`` (files with several chromosomes), or a
        list of them on different chromosomes (``cooler.Cooler(path).chromnames``: the
        genome). Only with a file for a list; a `ContactMap` of several chromosomes is
        analysed chromosome by chromosome as it is.
      resolution: bin size in bp for matrix input.
      balance: True: ICE; a string: the name of the file's weight column (``"weight"``);
        an array: multiplicative weights, NaN for masked bins (from an earlier run; of
        every bin of the regions, in order); False: raw counts (weights 1 on bins with
        contacts).
      ignore_diags: diagonals set aside everywhere (cooler's default 2).
      windows: insulation windows in bp (multiples of the resolution); default 3, 5 and 10
        bins; ``()`` skips insulation.
      min_frac_valid_pixels: insulation bins with fewer valid pixels are not boundaries.
      boundary_threshold: ``"Li"``, ``"Otsu"`` is not offered; or a fixed strength.
      phasing_track: per-bin values (array, or DataFrame ``chrom, start, end, value``) that
        are higher in the A compartment (GC content, gene density).
      n_eigs: eigenvectors computed (0 skips compartments).
      compartment_max_bins: largest dense matrix for the eigendecomposition.
      loops: call dots (needs a resolution of at most 28 kb, as HiCCUPS' kernels).
      max_loci_separation: largest loop span, bp.
      kernel_size: HiCCUPS ``(w, p)``; default from the resolution.
      lambda_bin_fdr: FDR within lambda bins.
      clustering_radius: bp.
      progress: a progress bar over the steps (None: only on a terminal).
      mesh: a device mesh (`diffomics.core.data_mesh`): balancing, the expected and the
        band are computed from pixels split over its devices (one sum of the per-device
        marginals per ICE iteration). The dots' kernel sums are computed on tiles along
        the diagonal, one tile per device (`call_dots`). The balanced band's rows are split
        over the devices, and each device computes the insulation of its block of bins
        (`insulation`). The raw band that dot calling reads, and the compartments (one
        dense matrix of at most `compartment_max_bins`), are not split. With several
        regions, the balancing is split over pixels, then the regions are spread over the
        devices (largest first, to the least loaded) and analysed at the same time, each
        whole on its device (``result.regions[name].report["device"]``); over several
        processes, each analyses the regions of its devices and the results are
        exchanged.
        The tables equal the one-device ones up to float32 rounding. None (default): no
        placement.

    Returns:
      A `HiCResult`.

    Raises:
      DataIntegrityError: the file is not a cooler.
      MissingKeyError: unknown chromosome, or a missing weight column.
      ShapeError, NonFiniteError, CountsError: a bad matrix.
      ConfigError: a bad argument, or a list of regions that share a chromosome.

    Examples:
      >>> from diffomics.datasets import gm12878_hic
      >>> result = analyze(gm12878_hic("chr22"), windows=(250_000,), loops=False)
      >>> result.insulation.columns[5:8].tolist()
      ['log2_insulation_score_250000', 'n_valid_pixels_250000', 'boundary_strength_250000']
    """
    maps, genome, names = _regions(data, region, resolution)
    res = genome.resolution
    windows = tuple(windows) if windows is not None else tuple(res * k for k in (3, 5, 10))
    for w in windows:
        if w % res or w < res:
            msg = f"insulation windows must be positive multiples of the resolution {res}; "
            msg += f"found {w}."
            raise ConfigError(msg)
    if not isinstance(boundary_threshold, int | float):
        check_choice(boundary_threshold, "boundary_threshold", ["Li"])
    weights, report = _weights(genome, balance, ignore_diags=ignore_diags, mesh=mesh)
    options = dict(
        ignore_diags=ignore_diags, windows=windows, min_frac_valid_pixels=min_frac_valid_pixels,
        boundary_threshold=boundary_threshold, n_eigs=n_eigs, loops=loops,
        max_loci_separation=max_loci_separation, kernel_size=kernel_size,
        lambda_bin_fdr=lambda_bin_fdr, clustering_radius=clustering_radius, mesh=mesh,
        # one compartment resolution for every region, as one cooltools call at one
        compartment_factor=-(-max(m.n_bins for m in maps) // compartment_max_bins),
        compartment_max_bins=compartment_max_bins,
    )  # fmt: skip
    if len(maps) == 1:
        return _analyze_map(genome, weights, report, phasing_track, progress=progress, **options)
    bounds = np.cumsum([0] + [m.n_bins for m in maps])  # each region's bins in `genome`
    tracks = _split_track(phasing_track, genome, bounds)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(maps), desc="hic", unit="region", disable=not show)

    def one(k: int, mesh=mesh) -> HiCResult:
        sub = weights[bounds[k] : bounds[k + 1]]
        info = {"source": maps[k].source, "resolution": res,
                "n_masked_bins": int(np.isnan(sub).sum())}  # fmt: skip
        out = _analyze_map(maps[k], sub, info, tracks[k], progress=False,
                           **{**options, "mesh": mesh})  # fmt: skip
        bar.update()
        return out

    with bar:
        if mesh is None or mesh.devices.size == 1:
            results = {name: one(k) for k, name in enumerate(names)}
        else:  # the chromosomes spread over the devices, each analysed whole on one
            spread = _over_devices(functools.partial(one, mesh=None), maps,
                                   list(mesh.devices.flat))  # fmt: skip
            results = dict(zip(names, spread, strict=True))
    return _merge(genome, weights, report, results)


def _over_devices(analyse, maps: list[ContactMap], devices: list) -> list[HiCResult]:
    """``analyse(k)`` of every map, each on one device; the devices work at the same time.

    Maps go to devices largest first, each to the device with the fewest bins so far (a
    greedy balance of the work), and each device's maps run in order in a thread of their
    own with that device as JAX's default: every array of the map's analysis lives there,
    and the devices' computations overlap. Each map is analysed as it would be alone on one
    device, so the results are those of ``mesh=None``. With the devices of several
    processes, each process runs the maps of its own devices, and the results are then
    exchanged (`_from_every_process`), so every process returns all of them.
    """
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    load, queues = [0] * len(devices), [[] for _ in devices]
    for k in sorted(range(len(maps)), key=lambda k: -maps[k].n_bins):
        d = int(np.argmin(load))
        queues[d].append(k)
        load[d] += maps[k].n_bins
    mine = [d for d, device in enumerate(devices) if device.process_index == jax.process_index()]

    def run(d: int) -> dict[int, HiCResult]:
        done = {}
        with jax.default_device(devices[d]):
            for k in queues[d]:
                done[k] = analyse(k)
                done[k].report["device"] = str(devices[d])
        return done

    results = {}
    with ThreadPoolExecutor(max_workers=len(mine)) as pool:
        for part in pool.map(run, mine):
            results.update(part)
    if len(mine) < len(devices):
        results = {k: r for part in _from_every_process(results) for k, r in part.items()}
    return [results[k] for k in range(len(maps))]


def _from_every_process(obj) -> list:
    """`obj` of every process of JAX's distributed runtime, in process order.

    Each process pickles its object and the bytes go to every process by JAX's
    all-gather (`jax.experimental.multihost_utils.process_allgather`, padded to the longest).
    """
    import pickle  # noqa: PLC0415

    from jax.experimental import multihost_utils  # noqa: PLC0415

    data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    parts = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(parts[p, : int(sizes[p, 0])].tobytes())  # bytes of our own processes
            for p in range(parts.shape[0])]  # fmt: skip


def _regions(data, region, resolution) -> tuple[list[ContactMap], ContactMap, list[str]]:
    """Maps of the regions analysed, the map of all of them, and the regions' names.

    One region: ``([map], map, [name])``. Several (a list of regions, or a map of several
    chromosomes): each region's cis map, and one map of them all for the balancing.
    """
    if region is not None and not isinstance(region, str):
        if not isinstance(data, str | os.PathLike) and type(data).__name__ != "Cooler":
            msg = (
                "region: a list of regions needs a .cool path or a cooler.Cooler; found "
                f"{type(data).__name__}. A ContactMap of several chromosomes is analysed "
                "chromosome by chromosome with region=None."
            )
            raise ConfigError(msg)
        uri = os.fspath(data) if isinstance(data, str | os.PathLike) else data.uri
        regions = list(region)
        clr, chromnames = open_cooler(uri)
        maps = read_regions(clr, uri, regions, chromnames)
        chroms = [m.chroms[0] for m in maps]
        if not maps or len(set(chroms)) < len(chroms):
            msg = (
                "region: the regions of one call must be on different chromosomes (each is "
                f"balanced and analysed on its own); found {regions}."
            )
            raise ConfigError(msg)
        return maps, stack_maps(maps, f"{uri} {','.join(regions)}"), regions
    cmap = as_contact_map(data, region=region, resolution=resolution)
    if len(cmap.chroms) == 1:
        return [cmap], cmap, [cmap.chroms[0]]
    return cmap.by_chrom(), cmap, cmap.chroms


def _weights(cmap: ContactMap, balance, *, ignore_diags: int, mesh) -> tuple[np.ndarray, dict]:
    """Balancing weights of the whole map (NaN: masked) and what the balancing reported.

    Several chromosomes are balanced each on its own, with the filters' MAD cut-off pooled
    over them (``cooler balance --cis-only``).
    """
    n = cmap.n_bins
    report: dict = {"source": cmap.source, "n_bins": n, "resolution": cmap.resolution,
                    "nnz": cmap.bin1.size}  # fmt: skip
    if balance is True:
        cis_only = len(cmap.chroms) > 1
        weights, info = ice_balance(cmap, cis_only=cis_only, ignore_diags=ignore_diags, mesh=mesh)
        report.update(info)
    elif isinstance(balance, np.ndarray):
        if balance.shape != (n,):
            msg = f"balance weights must have shape ({n},); found {balance.shape}."
            raise ShapeError(msg)
        weights = np.asarray(balance, dtype=np.float64)
    elif isinstance(balance, str):
        if cmap.weights is None:
            msg = f"balance={balance!r}: the map has no weight column; use balance=True (ICE)."
            raise ConfigError(msg)
        weights = cmap.weights
    else:
        cover = np.bincount(cmap.bin1, minlength=n) + np.bincount(cmap.bin2, minlength=n)
        weights = np.where(cover > 0, 1.0, np.nan)
    return weights, report


def _split_track(track, genome: ContactMap, bounds: np.ndarray) -> list:
    """A phasing track per region: a bed-like table as it is, an array cut by bins.

    Region `k` holds bins ``bounds[k]:bounds[k + 1]`` of `genome`.
    """
    if track is None or isinstance(track, pd.DataFrame):
        return [track] * (len(bounds) - 1)
    values = _phasing(track, genome.bins)
    return [values[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _merge(genome: ContactMap, weights, report: dict, results: dict[str, HiCResult]):
    """One result of several regions: their tables one after the other."""
    parts = list(results.values())

    def concat(name):
        tables = [getattr(r, name) for r in parts if getattr(r, name) is not None]
        return pd.concat(tables, ignore_index=True) if tables else None

    report = {**report, "regions": {name: r.report for name, r in results.items()}}
    if parts[0].loops is not None:
        report["n_loops"] = sum(len(r.loops) for r in parts)
    resolutions = {r.compartment_resolution for r in parts}
    return HiCResult(
        map=genome,
        weights=weights,
        expected=concat("expected"),
        compartments=concat("compartments"),
        eigvals=concat("eigvals"),
        insulation=concat("insulation"),
        boundaries=concat("boundaries"),
        loops=concat("loops"),
        report=report,
        compartment_resolution=resolutions.pop(),
        regions=results,
    )


def _analyze_map(
    cmap: ContactMap,
    weights: np.ndarray,
    report: dict,
    phasing_track,
    *,
    ignore_diags: int,
    windows: tuple[int, ...],
    min_frac_valid_pixels: float,
    boundary_threshold,
    n_eigs: int,
    compartment_factor: int,
    compartment_max_bins: int,
    loops: bool,
    max_loci_separation: int,
    kernel_size,
    lambda_bin_fdr: float,
    clustering_radius: int,
    progress: bool | None,
    mesh,
) -> HiCResult:
    """`analyze` on the map of one chromosome or region, with its weights."""
    res = cmap.resolution
    n = cmap.n_bins
    report = {**report, "n_bins": n, "nnz": cmap.bin1.size}
    show = sys.stderr.isatty() if progress is None else progress
    steps = tqdm(total=5, desc=f"hic {cmap.bins['chrom'].iloc[0]}", unit="step", disable=not show)
    steps.set_postfix_str("balance")
    valid = np.isfinite(weights) & (weights > 0)
    w0 = np.where(valid, weights, 0.0)

    steps.update()
    steps.set_postfix_str("expected")
    n_pad = _padded_bins(n, mesh)
    b1, b2, counts = _padded_pixels(cmap, n_pad, mesh)
    wj = jnp.asarray(np.r_[w0, np.zeros(n_pad - n)], default_float())
    exp = _expected_jit(b1, b2, counts, wj, n_diags=n_pad, ignore_diags=ignore_diags)
    exp = type(exp)(*(np.asarray(a)[:n] for a in exp))
    chrom = str(cmap.bins["chrom"].iloc[0])
    expected = pd.DataFrame(
        {
            "region1": chrom,
            "region2": chrom,
            "dist": np.arange(n),
            "dist_bp": np.arange(n) * res,
            "n_valid": np.asarray(exp.n_valid, dtype=np.int64),
            "count.sum": np.asarray(exp.count_sum, dtype=np.float64),
            "balanced.sum": np.asarray(exp.balanced_sum, dtype=np.float64),
            "balanced.avg": np.asarray(exp.balanced_avg, dtype=np.float64),
        }
    )

    w_max = max(windows, default=res) // res
    do_loops = loops and res <= 28_000
    if loops and not do_loops:
        report["loops_skipped"] = f"resolution {res} bp is coarser than HiCCUPS' 28 kb limit"
    kw = kernel_size or recommend_kernel_size(res)
    max_dist = min(max_loci_separation // res, n)
    n_diags = min(n, max(2 * w_max, max_dist + 2 * kw[0] + 1 if do_loops else 0))
    counts_band, balanced_band, mask = _balanced_band(
        b1, b2, counts, wj, np.r_[valid, np.zeros(n_pad - n, bool)], n_bins=n_pad,
        n_diags=n_diags, mesh=mesh,
    )  # fmt: skip

    steps.update()
    steps.set_postfix_str("insulation")
    table = cmap.bins[["chrom", "start", "end"]].copy()
    table["region"] = chrom
    table["is_bad_bin"] = ~valid
    boundaries = []
    for w in windows:
        ins = _insulation_jit(balanced_band, mask, w // res, ignore_diags=ignore_diags, mesh=mesh)
        table[f"log2_insulation_score_{w}"] = to_host(ins.log2_score).astype(np.float64)[:n]
        table[f"n_valid_pixels_{w}"] = to_host(ins.n_pixels).astype(np.float64)[:n]
        strength = boundary_strength(
            table[f"log2_insulation_score_{w}"].to_numpy(),
            table[f"n_valid_pixels_{w}"].to_numpy(),
            min_frac_valid_pixels=min_frac_valid_pixels,
        )
        cut = (
            li_threshold(strength)
            if boundary_threshold == "Li"
            else float(boundary_threshold)
        )
        table[f"boundary_strength_{w}"] = strength
        table[f"is_boundary_{w}"] = np.nan_to_num(strength, nan=-np.inf) >= cut
        called = table[table[f"is_boundary_{w}"]]
        boundaries.append(
            called[["chrom", "start", "end"]].assign(
                window=w, boundary_strength=called[f"boundary_strength_{w}"]
            )
        )

    steps.update()
    steps.set_postfix_str("compartments")
    compartments = eigvals = comp_res = None
    if n_eigs:
        compartments, eigvals, comp_res = _compartments(
            cmap, weights, phasing_track, report, n_eigs=n_eigs, factor=compartment_factor,
            compartment_max_bins=compartment_max_bins, ignore_diags=ignore_diags,
        )  # fmt: skip

    steps.update()
    steps.set_postfix_str("dots")
    dots = None
    if do_loops:
        found = call_dots(
            to_host(counts_band)[:n],
            weights,
            np.asarray(exp.balanced_avg)[:n_diags],
            resolution=res,
            max_distance_bins=max_dist,
            kernel_size=kw,
            lambda_bin_fdr=lambda_bin_fdr,
            clustering_radius=clustering_radius,
            mesh=mesh,
        )
        starts = cmap.bins["start"].to_numpy()
        ends = cmap.bins["end"].to_numpy()
        b1, b2 = found["bin1_id"].to_numpy(int), found["bin2_id"].to_numpy(int)
        coords = pd.DataFrame(
            {"chrom1": chrom, "start1": starts[b1], "end1": ends[b1],
             "chrom2": chrom, "start2": starts[b2], "end2": ends[b2]}
        )  # fmt: skip
        dots = pd.concat([coords, found.reset_index(drop=True)], axis=1)
        report["n_loops"] = len(dots)
    steps.update()
    steps.close()

    return HiCResult(
        map=cmap,
        weights=weights,
        expected=expected,
        compartments=compartments,
        eigvals=eigvals,
        insulation=table,
        boundaries=pd.concat(boundaries, ignore_index=True)
        if boundaries
        else pd.DataFrame(columns=["chrom", "start", "end", "window", "boundary_strength"]),
        loops=dots,
        report=report,
        compartment_resolution=comp_res,
    )


def _compartments(cmap: ContactMap, weights, phasing_track, report: dict, *, n_eigs: int,
                  factor: int, compartment_max_bins: int, ignore_diags: int):  # fmt: skip
    """Compartment table, eigenvalues and resolution of one region (`analyze`'s step).

    A region with at most ``ignore_diags + 3`` valid bins gets NaN, as in cooltools'
    ``cis_eig`` (in a genome: chrY, chrM).
    """
    chrom = str(cmap.bins["chrom"].iloc[0])
    coarse = cmap.coarsen(factor)
    too_few = ignore_diags + 3
    if factor > 1 and np.isfinite(weights).sum() > too_few:
        try:
            cw, info = ice_balance(coarse, ignore_diags=ignore_diags)
        except CountsError as err:  # say that it is the coarsened map, and what to do
            msg = (
                f"compartments: the map coarsened to {coarse.resolution:,} bp bins (at most "
                f"compartment_max_bins={compartment_max_bins} bins) cannot be balanced: "
                f"{err} Pass n_eigs=0 to skip compartments, or a larger compartment_max_bins."
            )
            raise CountsError(msg) from err
        report["compartment_balance"] = info
    else:
        cw = weights if factor == 1 else np.full(coarse.n_bins, np.nan)
    cvalid = np.isfinite(cw) & (cw > 0)
    nc = coarse.n_bins
    if cvalid.sum() > too_few:
        cw0 = np.where(cvalid, cw, 0.0)
        nc_pad = _bucket(nc)
        dense = np.zeros((nc_pad, nc_pad), default_float())
        dense[:nc, :nc] = coarse.dense(coarse.count * cw0[coarse.bin1] * cw0[coarse.bin2])
        padded_valid = np.r_[cvalid, np.zeros(nc_pad - nc, bool)]
        eig = _cis_eigs_jit(jnp.asarray(dense), jnp.asarray(padded_valid), n_eigs=n_eigs,
                            ignore_diags=ignore_diags, n_bins=nc)  # fmt: skip
        vecs = np.asarray(eig.eigvecs, dtype=np.float64)[:, :nc]
        vecs = np.where(cvalid[None, :], vecs, np.nan)
        values = np.asarray(eig.eigvals, dtype=np.float64)
    else:
        vecs, values = np.full((n_eigs, nc), np.nan), np.full(n_eigs, np.nan)
    if phasing_track is not None:
        track = _phasing(phasing_track, cmap.bins)
        vecs = phase_eigs(vecs, _coarse_track(track, factor))
    compartments = coarse.bins[["chrom", "start", "end"]].copy()
    for k in range(n_eigs):
        compartments[f"E{k + 1}"] = vecs[k]
    eigvals = pd.DataFrame({"region": [chrom], **{f"eigval{k + 1}": [float(values[k])]
                                                  for k in range(n_eigs)}})  # fmt: skip
    return compartments, eigvals, coarse.resolution
