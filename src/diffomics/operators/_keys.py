"""Data keys of the public operators, defined once; code and tests import them from here."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DECONVOLUTION_KEYS", "SPATIAL_GENE_KEYS"]


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
