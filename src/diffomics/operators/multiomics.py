"""The public multi-omics operators (names and config fields fixed by the design contract)."""

from diffomics.operators._spatial_deconvolution import (
    SpatialDeconvolution as SpatialDeconvolution,
)
from diffomics.operators._spatial_deconvolution import (
    SpatialDeconvolutionConfig as SpatialDeconvolutionConfig,
)

__all__ = ["SpatialDeconvolution", "SpatialDeconvolutionConfig"]
