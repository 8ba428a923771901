"""Operators: Flax NNX modules with the ``apply(data, state, metadata)`` contract."""

from diffomics.operators._keys import CHROMATIN_STATE_KEYS as CHROMATIN_STATE_KEYS
from diffomics.operators._keys import DECONVOLUTION_KEYS as DECONVOLUTION_KEYS
from diffomics.operators._keys import HIC_KEYS as HIC_KEYS
from diffomics.operators._keys import SPATIAL_GENE_KEYS as SPATIAL_GENE_KEYS
from diffomics.operators.epigenomics import ChromatinStateAnnotator as ChromatinStateAnnotator
from diffomics.operators.epigenomics import (
    ChromatinStateAnnotatorConfig as ChromatinStateAnnotatorConfig,
)
from diffomics.operators.multiomics import (
    DifferentiableMultiOmicsVAE as DifferentiableMultiOmicsVAE,
)
from diffomics.operators.multiomics import (
    DifferentiableSpatialGeneDetector as DifferentiableSpatialGeneDetector,
)
from diffomics.operators.multiomics import HiCContactAnalysis as HiCContactAnalysis
from diffomics.operators.multiomics import HiCContactAnalysisConfig as HiCContactAnalysisConfig
from diffomics.operators.multiomics import MultiOmicsVAEConfig as MultiOmicsVAEConfig
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
    "HIC_KEYS",
    "SPATIAL_GENE_KEYS",
    "ChromatinStateAnnotator",
    "ChromatinStateAnnotatorConfig",
    "DifferentiableMultiOmicsVAE",
    "DifferentiableSpatialGeneDetector",
    "HiCContactAnalysis",
    "HiCContactAnalysisConfig",
    "MultiOmicsVAEConfig",
    "SpatialDeconvolution",
    "SpatialDeconvolutionConfig",
    "SpatialGeneDetectorConfig",
]
