"""Reading the user's files and writing ours: atomic writes, figures, AnnData and MuData."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "UserError",
    "atomic",
    "atomic_folder",
    "read_h5ad",
    "read_modalities",
    "read_track",
    "save_figure",
]


class UserError(Exception):
    """A problem with the user's input, reported in one line."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write `path` through a temporary file in the same folder, then rename it into place.

    An interrupted run leaves either the previous file or none, never a truncated one. The
    file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_folder(path: Path, write: Callable[[Path], None]) -> Path:
    """Write the folder `path` through a temporary folder beside it, then swap it into place."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        for child in tmp.rglob("*"):
            if child.is_file():
                os.chmod(child, 0o666 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def save_figure(fig, stem: Path, formats=("png", "svg")) -> list[Path]:
    """Write `fig` atomically as ``stem.<format>`` for each format, then close it."""
    import matplotlib.pyplot as plt

    paths = [
        atomic(
            stem.with_name(f"{stem.name}.{fmt}"),
            lambda p, f=fmt: fig.savefig(p, dpi=110, format=f, bbox_inches="tight"),
        )
        for fmt in formats
    ]
    plt.close(fig)
    return paths


def _existing(path: str, *, folder: bool = False) -> Path:
    """`path` as a Path, or a `UserError` when it is not a file (or, with `folder`, a folder)."""
    if not (Path(path).is_file() or (folder and Path(path).is_dir())):
        msg = f"{path}: no such file."
        raise UserError(msg)
    return Path(path)


def read_h5ad(path: str, *, backed: bool = False):
    """An AnnData from `path` (with `backed`, its X left on disk), or a one-line `UserError`."""
    import anndata as ad

    _existing(path)
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except OSError as err:
        msg = f"{path}: not a readable .h5ad file ({err})."
        raise UserError(msg) from err


def _read_h5mu(path: Path) -> dict:
    """The modalities of a MuData file (``/mod/<name>`` AnnData groups), without mudata."""
    import anndata.io
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "mod" not in f or not len(f["mod"]):
                msg = f"{path}: an .h5mu file needs modalities under /mod; found {list(f)}."
                raise UserError(msg)
            order = [str(n) for n in f["mod"].attrs.get("mod-order", list(f["mod"]))]
            return {name: anndata.io.read_elem(f["mod"][name]) for name in order}
    except OSError as err:
        msg = f"{path}: not a readable .h5mu file ({err})."
        raise UserError(msg) from err


def _read_zarr(path: str):
    """An AnnData Zarr store with its X left on disk (`open_zarr`), or a `UserError`."""
    from diffomics.integration import open_zarr

    _existing(path, folder=True)  # a Zarr store is a folder
    try:
        return open_zarr(path)
    except (OSError, ValueError) as err:
        msg = f"{path}: not a readable AnnData Zarr store ({err})."
        raise UserError(msg) from err


def read_annotated(path: str, *, backed: bool = False):
    """An AnnData from an ``.h5ad`` file or a Zarr store, or a `UserError`.

    A Zarr store's X, and with `backed` an ``.h5ad`` file's, stays on disk.
    """
    return _read_zarr(path) if path.endswith(".zarr") else read_h5ad(path, backed=backed)


def light_copy(adata):
    """`adata` to write: itself in memory, its annotations when its X is read from a file."""
    import anndata as ad

    from diffomics.core._sharding import on_disk

    if not on_disk(adata):
        return adata
    return ad.AnnData(obs=adata.obs, var=adata.var, obsm=dict(adata.obsm), uns=dict(adata.uns))


def read_modalities(specs: list[str], *, backed: bool = False) -> tuple[dict, str]:
    """Modalities from one ``DATA.h5mu`` or several ``[NAME=]FILE.h5ad|.zarr``; a file stem.

    A file without ``NAME=`` is named by its stem (``rna.h5ad`` -> ``rna``). A ``.zarr``
    store is opened with its X on disk (`diffomics.integration.open_zarr`); so is an
    ``.h5ad`` when `backed` (``backed="r"``): `integrate` then streams them.
    """
    if len(specs) == 1 and specs[0].endswith(".h5mu"):
        path = _existing(specs[0])
        if backed:  # read whole, it would not be streamed: say so rather than ignore it
            msg = (f"{path}: --backed streams .h5ad files and Zarr stores; an .h5mu file is "
                   "read into memory. Write each modality to .h5ad or .zarr to stream it.")
            raise UserError(msg)
        return _read_h5mu(path), path.stem
    mods = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        if path.endswith(".h5mu"):
            msg = f"{spec}: give one .h5mu file alone, or several .h5ad files."
            raise UserError(msg)
        path = path.rstrip("/")
        name = name or Path(path).stem
        if name in mods:
            msg = f"modality {name!r} is given twice; name them as NAME=FILE.h5ad."
            raise UserError(msg)
        mods[name] = read_annotated(path, backed=backed)
    if len(mods) < 2:
        msg = f"integrate needs two or more modalities; found {len(mods)} ({specs})."
        raise UserError(msg)
    return mods, "_".join(mods)


def read_track(path: str, bins):
    """A phasing track: a bedGraph (4th column numeric) or features counted per bin."""
    import pandas as pd

    from diffomics.hic import count_features

    _existing(path)
    table = pd.read_csv(path, sep="\t", header=None, comment="#")
    if table.shape[1] < 3:
        msg = f"{path}: expected a BED / bedGraph file (chrom, start, end[, value])."
        raise UserError(msg)
    table = table.rename(columns={0: "chrom", 1: "start", 2: "end"})
    if table.shape[1] >= 4 and pd.api.types.is_numeric_dtype(table[3]):
        return table[["chrom", "start", "end", 3]].rename(columns={3: "value"})
    return count_features(table, bins)
