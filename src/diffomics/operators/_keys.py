"""Data keys of the public operators, defined once; code and tests import them from here."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CHROMATIN_STATE_KEYS", "DECONVOLUTION_KEYS", "HIC_KEYS", "SPATIAL_GENE_KEYS"]


class _DeconvolutionKeys(NamedTuple):
    SPATIAL_EXPRESSION: str = "spatial_expression"
    REFERENCE_PROFILES: str = "reference_profiles"
    PROPORTIONS: str = "proportions"
    RECONSTRUCTED: str = "reconstructed"
    SPOT_SCALE: str = "spot_scale"


DECONVOLUTION_KEYS = _DeconvolutionKeys()


class _SpatialGeneKeys(NamedTuple):
    SPATIAL_COORDS: str = "spatial_coords"
    EXPRESSION: str = "expression"
    TOTAL_COUNTS: str = "total_counts"
    FSV: str = "fsv"
    SPATIAL_PVALUES: str = "spatial_pvalues"
    IS_SPATIAL: str = "is_spatial"
    SMOOTHED_EXPRESSION: str = "smoothed_expression"


SPATIAL_GENE_KEYS = _SpatialGeneKeys()


class _HiCKeys(NamedTuple):
    CONTACT_MATRIX: str = "contact_matrix"
    PHASING_TRACK: str = "phasing_track"
    NORMALIZED_CONTACTS: str = "normalized_contacts"
    COMPARTMENTS: str = "compartments"
    TAD_BOUNDARIES: str = "tad_boundaries"
    LOOP_SCORES: str = "loop_scores"
    EXPECTED: str = "expected"
    BALANCING_WEIGHTS: str = "balancing_weights"
    INSULATION: str = "insulation"
    DECAY_PENALTY: str = "decay_penalty"


HIC_KEYS = _HiCKeys()


class _ChromatinStateKeys(NamedTuple):
    HISTONE_MARKS: str = "histone_marks"
    STATE_PROBABILITIES: str = "state_probabilities"
    VITERBI_PATH: str = "viterbi_path"
    LOG_LIKELIHOOD: str = "log_likelihood"


CHROMATIN_STATE_KEYS = _ChromatinStateKeys()
