import shutil

import numpy as np
import pytest

from diffomics import DataIntegrityError
from diffomics.datasets import DATASETS, osmfish, provenance, seqfish_cortex
from diffomics.sources import SEQFISH_KEYS as K
from diffomics.sources import SeqFISHConfig, SeqFISHSource


@pytest.fixture(scope="module")
def source():
    return SeqFISHSource()


def test_loads_the_published_dataset(source):
    data = source.load()
    assert data[K.COUNTS].shape == (1597, 113) and len(source) == 1597
    assert data[K.REFERENCE_COUNTS].shape == (1723, 113)
    assert data[K.SPATIAL_COORDS].shape == (1597, 2)
    names = data[K.CELL_TYPE_NAMES]
    assert data[K.N_TYPES] == len(names) == 8
    # the published composition (SOURCE.md): 859 glutamatergic and 556 GABA-ergic neurons
    counts = np.bincount(np.asarray(data[K.CELL_TYPE_LABELS]), minlength=8)
    assert counts[names.index("Glutamatergic Neuron")] == 859
    assert counts[names.index("GABA-ergic Neuron")] == 556
    ref_counts = np.bincount(np.asarray(data[K.REFERENCE_LABELS]), minlength=8)
    assert ref_counts[names.index("Glutamatergic Neuron")] == 812
    # the normalised scale is 0-101, not counts
    assert 0.0 <= float(data[K.COUNTS].min()) and float(data[K.COUNTS].max()) <= 101.0


def test_provenance_and_contract(source):
    data = source.load()
    record = data[K.PROVENANCE]
    assert record["dataset_name"] == "seqfish_cortex_zhu2018"
    assert record["modalities"] == ["rna", "spatial"]
    assert any("10.1038/nbt.4260" in p for p in record["publications"])
    assert set(record["sha256"]) == {
        "fcortex.coordinates.txt",
        "seqfish_cortex_b2_testing.txt.gz",
        "seqfish_labels.tsv",
        "tasic_labels.tsv",
        "tasic_training_b2.txt.gz",
    }
    for modality, entry in record["modality_records"].items():
        assert entry["key"] in data, modality
        assert set(entry["files"]) <= set(record["sha256"])
    contract = data[K.CONTRACT]
    for key in ("count_key", "spatial_key", "label_key", "reference_count_key"):
        assert contract[key] in data
    assert data[K.COUNTS].shape[0] == data[contract["spatial_key"]].shape[0]


def test_subsample_is_seeded():
    a = SeqFISHSource(SeqFISHConfig(subsample=50, seed=3)).load()
    b = SeqFISHSource(SeqFISHConfig(subsample=50, seed=3)).load()
    c = SeqFISHSource(SeqFISHConfig(subsample=50, seed=4)).load()
    assert a[K.CELL_IDS] == b[K.CELL_IDS] != c[K.CELL_IDS]
    with pytest.raises(ValueError, match="subsample"):
        SeqFISHConfig(subsample=0)


def test_modified_file_is_detected(tmp_path):
    folder = tmp_path / "seqfish"
    shutil.copytree(DATASETS["seqfish_cortex_zhu2018"].folder, folder)
    with open(folder / "seqfish_labels.tsv", "a") as handle:
        handle.write("extra line\n")
    with pytest.raises(DataIntegrityError, match="seqfish_labels.tsv"):
        seqfish_cortex(folder)
    (folder / "fcortex.coordinates.txt").unlink()
    with pytest.raises(DataIntegrityError, match="missing"):
        provenance("seqfish_cortex_zhu2018", folder)


def test_osmfish_counts_and_exclusions():
    cells = osmfish()
    assert cells.shape == (4839, 33)
    assert cells.uns["n_cells_excluded"] == 489
    assert "Excluded" not in set(cells.obs["cell_type"])
    assert cells.obs["cell_type"].nunique() == 31
    x = np.asarray(cells.X)
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
