"""Data keys of the public operators, defined once; code and tests import them from here."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DECONVOLUTION_KEYS"]


class _DeconvolutionKeys(NamedTuple):
    SPATIAL_EXPRESSION: str = "spatial_expression"
    REFERENCE_PROFILES: str = "reference_profiles"
    PROPORTIONS: str = "proportions"
    RECONSTRUCTED: str = "reconstructed"
    SPOT_SCALE: str = "spot_scale"


DECONVOLUTION_KEYS = _DeconvolutionKeys()
