"""Small real datasets bundled with diffomics, with provenance and checksums."""

from diffomics.datasets._readers import eccite_pbmc500 as eccite_pbmc500
from diffomics.datasets._readers import gm12878_annotations as gm12878_annotations
from diffomics.datasets._readers import gm12878_hic as gm12878_hic
from diffomics.datasets._readers import mouse_olfactory_bulb as mouse_olfactory_bulb
from diffomics.datasets._readers import osmfish as osmfish
from diffomics.datasets._readers import provenance as provenance
from diffomics.datasets._readers import seqfish_cortex as seqfish_cortex
from diffomics.datasets._readers import snareseq_celllines as snareseq_celllines
from diffomics.datasets._registry import DATA_DIR as DATA_DIR
from diffomics.datasets._registry import DATASETS as DATASETS
from diffomics.datasets._registry import DatasetInfo as DatasetInfo

__all__ = [
    "DATASETS",
    "DATA_DIR",
    "DatasetInfo",
    "eccite_pbmc500",
    "gm12878_annotations",
    "gm12878_hic",
    "mouse_olfactory_bulb",
    "osmfish",
    "provenance",
    "seqfish_cortex",
    "snareseq_celllines",
]
