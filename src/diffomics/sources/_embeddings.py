"""`MultiOmicsEmbeddingSource`: precomputed per-modality embeddings, aligned by sample id.

With provenance: file, sha256, modality, producing tool.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffomics.core._checks import check_finite
from diffomics.core._errors import ConfigError, DataIntegrityError, MissingKeyError, ShapeError
from diffomics.datasets._registry import sha256

__all__ = ["EmbeddingSpec", "MultiOmicsEmbeddingConfig", "MultiOmicsEmbeddingSource"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingSpec:
    """Where one modality's embedding is and what produced it.

    Attributes:
      modality: name (``"rna"``, ``"atac"``, ``"protein"``, ...).
      path: ``.npy``, ``.npz``, ``.h5ad`` or ``.parquet`` file.
      key: ``.npz``: the array name (default: the only one, or ``"embedding"``);
        ``.h5ad``: the ``obsm`` key (default ``"X_emb"`` if present, else the only one).
      ids_path: for ``.npy``, a text file with one sample id per row; ``.npz`` may hold an
        array ``sample_ids``; ``.h5ad`` uses ``obs_names``; ``.parquet`` its index (or a
        ``sample_id`` column), the other columns being the embedding.
      tool: what produced the embedding (e.g. ``"scGPT 0.2.1"``), recorded as given.
    """

    modality: str
    path: str | os.PathLike
    key: str | None = None
    ids_path: str | os.PathLike | None = None
    tool: str = "unknown"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiOmicsEmbeddingConfig:
    """Configuration of `MultiOmicsEmbeddingSource`.

    Attributes:
      embeddings: one `EmbeddingSpec` per modality (distinct modality names).
      join: ``"strict"`` (every modality must hold exactly the same ids, else an error
        listing the differences) or ``"inner"`` (keep the shared ids, report the others).
    """

    embeddings: tuple[EmbeddingSpec, ...]
    join: str = "strict"

    def __post_init__(self) -> None:
        names = [e.modality for e in self.embeddings]
        if not names or len(set(names)) != len(names):
            msg = f"embeddings need distinct modality names; found {names}."
            raise ConfigError(msg)
        if self.join not in ("strict", "inner"):
            msg = f"join must be 'strict' or 'inner'; found {self.join!r}."
            raise ConfigError(msg)


def _only(names: list[str], wanted: str | None, what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            msg = f"{path}: no {what} {wanted!r}; it has {names}."
            raise MissingKeyError(msg)
        return wanted
    if len(names) == 1:
        return names[0]
    if "embedding" in names:
        return "embedding"
    msg = f"{path} holds several {what}s {names}; pass key= to choose one."
    raise MissingKeyError(msg)


def _read(spec: EmbeddingSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(embedding (n, d), sample ids (n,))`` of one file."""
    path = Path(spec.path)
    if not path.is_file():
        msg = f"embedding file for {spec.modality!r} not found: {path}."
        raise FileNotFoundError(msg)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = np.load(path)
        if spec.ids_path is None:
            msg = f"{path}: a .npy embedding needs ids_path (one sample id per line)."
            raise MissingKeyError(msg)
        ids = pd.read_csv(spec.ids_path, header=None, dtype=str)[0].to_numpy()
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = [n for n in z.files if n != "sample_ids"]
            x = z[_only(names, spec.key, "array", path)]
            if "sample_ids" in z.files:
                ids = z["sample_ids"].astype(str)
            elif spec.ids_path is not None:
                ids = pd.read_csv(spec.ids_path, header=None, dtype=str)[0].to_numpy()
            else:
                msg = f"{path}: no 'sample_ids' array and no ids_path."
                raise MissingKeyError(msg)
    elif suffix == ".h5ad":
        import anndata as ad

        adata = ad.read_h5ad(path)
        keys = list(adata.obsm)
        key = spec.key or ("X_emb" if "X_emb" in keys else None)
        x = np.asarray(adata.obsm[_only(keys, key, "obsm key", path)])
        ids = adata.obs_names.to_numpy().astype(str)
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
        if "sample_id" in table.columns:
            table = table.set_index("sample_id")
        ids = table.index.astype(str).to_numpy()
        x = table.to_numpy(dtype=np.float64)
    else:
        msg = f"{path}: unsupported embedding format {suffix!r} (.npy, .npz, .h5ad, .parquet)."
        raise DataIntegrityError(msg)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(ids):
        msg = (
            f"{path}: the embedding must be (n_samples, dim) with one id per row; found shape "
            f"{x.shape} and {len(ids)} ids."
        )
        raise ShapeError(msg)
    check_finite(x, f"embedding {spec.modality!r} ({path.name})")
    return x, np.asarray(ids, dtype=str)


class MultiOmicsEmbeddingSource:
    """Precomputed embeddings of several modalities, aligned by sample id, with provenance.

    A loader and a metadata contract: it reads what other tools produced (foundation
    models, scVI, PCA) and checks that the samples line up; it computes nothing.

    Args:
      config: a `MultiOmicsEmbeddingConfig`.

    Examples:
      >>> import tempfile
      >>> folder = Path(tempfile.mkdtemp())
      >>> np.savez(folder / "rna.npz", embedding=np.ones((3, 4)), sample_ids=["a", "b", "c"])
      >>> np.savez(folder / "atac.npz", embedding=np.zeros((3, 2)), sample_ids=["c", "b", "a"])
      >>> source = MultiOmicsEmbeddingSource(MultiOmicsEmbeddingConfig(embeddings=(
      ...     EmbeddingSpec(modality="rna", path=folder / "rna.npz", tool="PCA"),
      ...     EmbeddingSpec(modality="atac", path=folder / "atac.npz", tool="LSI"))))
      >>> out = source.load()
      >>> out["sample_ids"].tolist(), out["rna"].shape, out["atac"].shape
      (['a', 'b', 'c'], (3, 4), (3, 2))
    """

    def __init__(self, config: MultiOmicsEmbeddingConfig) -> None:
        self.config = config

    def load(self) -> dict[str, Any]:
        """Read and align every modality.

        Returns:
          dict with one `(n_samples, dim)` float32 array per modality (rows in the order of
          ``sample_ids``), ``sample_ids``, ``provenance`` (per modality: file, sha256,
          modality, tool, shape) and ``alignment`` (ids dropped per modality).

        Raises:
          ShapeError: duplicated ids in a file, or (``join="strict"``) ids missing from or
            extra in a modality; no shared id at all.
          MissingKeyError, DataIntegrityError, FileNotFoundError: an unreadable file.
          NonFiniteError: NaN or inf in an embedding.
        """
        arrays, ids, provenance = {}, {}, {}
        for spec in self.config.embeddings:
            x, sample_ids = _read(spec)
            dup = pd.Index(sample_ids)
            if dup.has_duplicates:
                examples = dup[dup.duplicated()][:3].tolist()
                msg = f"embedding {spec.modality!r} has duplicated sample ids, e.g. {examples}."
                raise ShapeError(msg)
            arrays[spec.modality], ids[spec.modality] = x, dup
            provenance[spec.modality] = {
                "file": str(Path(spec.path).resolve()),
                "sha256": sha256(Path(spec.path)),
                "modality": spec.modality,
                "tool": spec.tool,
                "shape": list(x.shape),
            }
        names = list(ids)
        shared = ids[names[0]]
        for name in names[1:]:
            shared = shared.intersection(ids[name], sort=False)
        alignment = {
            name: {"missing": sorted(set(shared).symmetric_difference(ids[name]))[:10],
                   "n_dropped": int(len(ids[name]) - len(shared))}
            for name in names
        }  # fmt: skip
        if self.config.join == "strict" and any(a["n_dropped"] for a in alignment.values()):
            detail = "; ".join(
                f"{n}: {a['n_dropped']} id(s) not in every modality, e.g. {a['missing'][:3]}"
                for n, a in alignment.items()
                if a["n_dropped"]
            )
            msg = f"sample ids differ between modalities ({detail}). "
            msg += "Use join='inner' to keep the shared ones."
            raise ShapeError(msg)
        if len(shared) == 0:
            msg = "no sample id is shared by every modality."
            raise ShapeError(msg)
        out: dict[str, Any] = {
            name: arrays[name][ids[name].get_indexer(shared)] for name in names
        }
        out["sample_ids"] = shared.to_numpy()
        out["provenance"] = provenance
        out["alignment"] = alignment
        return out
