"""Operators: Flax NNX modules with the ``apply(data, state, metadata)`` contract."""

from diffomics.operators._keys import CHROMATIN_STATE_KEYS as CHROMATIN_STATE_KEYS
from diffomics.operators._keys import DECONVOLUTION_KEYS as DECONVOLUTION_KEYS
from diffomics.operators._keys import SPATIAL_GENE_KEYS as SPATIAL_GENE_KEYS
from diffomics.operators.epigenomics import ChromatinStateAnnotator as ChromatinStateAnnotator
from diffomics.operators.epigenomics import (
    ChromatinStateAnnotatorConfig as ChromatinStateAnnotatorConfig,
)
from diffomics.operators.multiomics import (
    DifferentiableSpatialGeneDetector as DifferentiableSpatialGeneDetector,
)
from diffomics.operators.multiomics import SpatialDeconvolution as SpatialDeconvolution
from diffomics.operators.multiomics import (
    SpatialDeconvolutionConfig as SpatialDeconvolutionConfig,
)
from diffomics.operators.multiomics import (
    SpatialGeneDetectorConfig as SpatialGeneDetectorConfig,
)

__all__ = [
    "CHROMATIN_STATE_KEYS",
    "DECONVOLUTION_KEYS",
    "SPATIAL_GENE_KEYS",
    "ChromatinStateAnnotator",
    "ChromatinStateAnnotatorConfig",
    "DifferentiableSpatialGeneDetector",
    "SpatialDeconvolution",
    "SpatialDeconvolutionConfig",
    "SpatialGeneDetectorConfig",
]
