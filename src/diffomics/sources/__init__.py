"""Data sources: real datasets as arrays with provenance and a modality contract."""

from diffomics.sources._embeddings import EmbeddingSpec as EmbeddingSpec
from diffomics.sources._embeddings import MultiOmicsEmbeddingConfig as MultiOmicsEmbeddingConfig
from diffomics.sources._embeddings import MultiOmicsEmbeddingSource as MultiOmicsEmbeddingSource
from diffomics.sources._seqfish import SEQFISH_KEYS as SEQFISH_KEYS
from diffomics.sources._seqfish import SeqFISHConfig as SeqFISHConfig
from diffomics.sources._seqfish import SeqFISHSource as SeqFISHSource

__all__ = [
    "SEQFISH_KEYS",
    "EmbeddingSpec",
    "MultiOmicsEmbeddingConfig",
    "MultiOmicsEmbeddingSource",
    "SeqFISHConfig",
    "SeqFISHSource",
]
