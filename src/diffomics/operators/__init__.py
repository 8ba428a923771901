"""Operators: Flax NNX modules with the ``apply(data, state, metadata)`` contract."""

from diffomics.operators._keys import DECONVOLUTION_KEYS as DECONVOLUTION_KEYS
from diffomics.operators.multiomics import SpatialDeconvolution as SpatialDeconvolution
from diffomics.operators.multiomics import (
    SpatialDeconvolutionConfig as SpatialDeconvolutionConfig,
)

__all__ = ["DECONVOLUTION_KEYS", "SpatialDeconvolution", "SpatialDeconvolutionConfig"]
