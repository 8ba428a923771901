"""`SeqFISHSource`: the bundled seqFISH cortex data as arrays, with provenance per modality."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from diffomics.core._errors import ConfigError, MissingKeyError
from diffomics.datasets._readers import seqfish_cortex

__all__ = ["SEQFISH_KEYS", "SeqFISHConfig", "SeqFISHSource"]


class _SeqFISHKeys(NamedTuple):
    COUNTS: str = "counts"
    CELL_IDS: str = "cell_ids"
    CELL_TYPE_LABELS: str = "cell_type_labels"
    CELL_TYPE_NAMES: str = "cell_type_names"
    SPATIAL_COORDS: str = "spatial_coords"
    GENE_NAMES: str = "gene_names"
    REFERENCE_COUNTS: str = "reference_counts"
    REFERENCE_LABELS: str = "reference_labels"
    N_CELLS: str = "n_cells"
    N_GENES: str = "n_genes"
    N_TYPES: str = "n_types"
    PROVENANCE: str = "dataset_provenance"
    CONTRACT: str = "modality_contract"


#: Keys of the dictionary returned by `SeqFISHSource.load`.
SEQFISH_KEYS = _SeqFISHKeys()
K = SEQFISH_KEYS

_RNA_FILES = ("seqfish_cortex_b2_testing.txt.gz", "seqfish_labels.tsv")
_SPATIAL_FILES = ("fcortex.coordinates.txt",)
_REFERENCE_FILES = ("tasic_training_b2.txt.gz", "tasic_labels.tsv")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeqFISHConfig:
    """Configuration of `SeqFISHSource`.

    Attributes:
      data_dir: folder with the dataset files; None uses the copy bundled with diffomics.
      subsample: keep this many randomly chosen seqFISH cells (None keeps all 1,597).
      seed: seed of the subsampling.
      label_key: column of ``obs`` with the cell types.
      spatial_key: key of ``obsm`` with the coordinates.
      verify: check the files against their committed sha256 digests.
    """

    data_dir: str | None = None
    subsample: int | None = None
    seed: int = 0
    label_key: str = "cell_type"
    spatial_key: str = "spatial"
    verify: bool = True

    def __post_init__(self) -> None:
        if self.subsample is not None and (
            not isinstance(self.subsample, int) or self.subsample < 1
        ):
            msg = f"SeqFISHConfig.subsample must be None or an int >= 1; found {self.subsample!r}."
            raise ConfigError(msg)


class SeqFISHSource:
    """seqFISH mouse visual cortex (Zhu et al. 2018) with its Tasic 2016 scRNA-seq reference.

    Loads eagerly at construction, offline, from the files bundled with diffomics (or
    `SeqFISHConfig.data_dir`), after checking their sha256 digests. The values are the
    authors' cross-platform normalised 0-101 scale, not counts: use a Gaussian likelihood
    (or treat them as pseudo-counts and say so).

    `load` returns a dictionary with the keys in `SEQFISH_KEYS`:

    - ``counts``: `(n_cells, n_genes)` float32, seqFISH expression (0-101 scale).
    - ``cell_ids``: tuple of `n_cells` str.
    - ``cell_type_labels``: `(n_cells,)` int32 codes into ``cell_type_names``.
    - ``cell_type_names``: list of the 8 class names, sorted.
    - ``spatial_coords``: `(n_cells, 2)` float32, x/y in image units.
    - ``gene_names``: list of `n_genes` str (lower-case symbols).
    - ``reference_counts``: `(n_reference_cells, n_genes)` float32, Tasic scRNA-seq, same
      genes and scale.
    - ``reference_labels``: `(n_reference_cells,)` int32 codes into ``cell_type_names``.
    - ``n_cells``, ``n_genes``, ``n_types``: ints.
    - ``dataset_provenance``: dataset name, publications, origin, licence, modalities, the
      sha256 of every file, and one record per modality (``rna``, ``spatial``, and the
      ``reference``) naming its files, its key and its units.
    - ``modality_contract``: which key holds what (counts, coordinates, labels, reference).

    The AnnData objects are kept as ``source.spatial`` and ``source.reference``.

    Args:
      config: a `SeqFISHConfig`; the default loads every cell from the bundled copy.

    Examples:
      >>> source = SeqFISHSource(SeqFISHConfig(subsample=100))
      >>> data = source.load()
      >>> data["counts"].shape, data["spatial_coords"].shape, data["n_types"]
      ((100, 113), (100, 2), 8)
      >>> sorted(data["dataset_provenance"]["modality_records"])
      ['reference', 'rna', 'spatial']
    """

    def __init__(self, config: SeqFISHConfig | None = None) -> None:
        self.config = config = SeqFISHConfig() if config is None else config
        spatial, reference = seqfish_cortex(config.data_dir, verify=config.verify)
        for key, store, where in (
            (config.label_key, spatial.obs, "obs"),
            (config.spatial_key, spatial.obsm, "obsm"),
        ):
            if key not in store:
                msg = f"seqFISH AnnData has no {where}[{key!r}]; found {list(store.keys())}."
                raise MissingKeyError(msg)
        if config.subsample is not None and config.subsample < spatial.n_obs:
            rng = np.random.default_rng(config.seed)
            keep = np.sort(rng.choice(spatial.n_obs, size=config.subsample, replace=False))
            spatial = spatial[keep].copy()
        self.spatial, self.reference = spatial, reference
        self._data = self._arrays()

    def _arrays(self) -> dict[str, Any]:
        c, spatial, reference = self.config, self.spatial, self.reference
        names = sorted(set(spatial.obs[c.label_key]) | set(reference.obs[c.label_key]))
        code = {name: i for i, name in enumerate(names)}
        record = dict(spatial.uns["provenance"])
        record["modality_records"] = {
            "rna": {"key": K.COUNTS, "files": list(_RNA_FILES), "units": record["value_scale"]},
            "spatial": {
                "key": K.SPATIAL_COORDS,
                "files": list(_SPATIAL_FILES),
                "units": "image units of the stitched fields",
            },
            "reference": {
                "key": K.REFERENCE_COUNTS,
                "files": list(_REFERENCE_FILES),
                "units": record["value_scale"],
            },
        }
        return {
            K.COUNTS: jnp.asarray(spatial.X, dtype=jnp.float32),
            K.CELL_IDS: tuple(spatial.obs_names.astype(str)),
            K.CELL_TYPE_LABELS: jnp.asarray(
                [code[v] for v in spatial.obs[c.label_key]], dtype=jnp.int32
            ),
            K.CELL_TYPE_NAMES: names,
            K.SPATIAL_COORDS: jnp.asarray(spatial.obsm[c.spatial_key], dtype=jnp.float32),
            K.GENE_NAMES: spatial.var_names.astype(str).tolist(),
            K.REFERENCE_COUNTS: jnp.asarray(reference.X, dtype=jnp.float32),
            K.REFERENCE_LABELS: jnp.asarray(
                [code[v] for v in reference.obs[c.label_key]], dtype=jnp.int32
            ),
            K.N_CELLS: int(spatial.n_obs),
            K.N_GENES: int(spatial.n_vars),
            K.N_TYPES: len(names),
            K.PROVENANCE: record,
            K.CONTRACT: {
                "modalities": ["rna", "spatial"],
                "primary_modality": "rna",
                "count_key": K.COUNTS,
                "spatial_key": K.SPATIAL_COORDS,
                "label_key": K.CELL_TYPE_LABELS,
                "label_names_key": K.CELL_TYPE_NAMES,
                "reference_count_key": K.REFERENCE_COUNTS,
                "reference_label_key": K.REFERENCE_LABELS,
                "obs_axis": 0,
                "feature_names_key": K.GENE_NAMES,
            },
        }

    def load(self) -> dict[str, Any]:
        """The dataset as a dictionary (see the class docstring); a new dict each call."""
        return dict(self._data)

    def __len__(self) -> int:
        return int(self._data[K.N_CELLS])
