"""Data sources: real datasets as arrays with provenance and a modality contract."""

from diffomics.sources._seqfish import SEQFISH_KEYS as SEQFISH_KEYS
from diffomics.sources._seqfish import SeqFISHConfig as SeqFISHConfig
from diffomics.sources._seqfish import SeqFISHSource as SeqFISHSource

__all__ = ["SEQFISH_KEYS", "SeqFISHConfig", "SeqFISHSource"]
