"""The public multi-omics operators (names and config fields fixed by the design contract)."""

from diffomics.operators._hic_contact_analysis import (
    HiCContactAnalysis as HiCContactAnalysis,
)
from diffomics.operators._hic_contact_analysis import (
    HiCContactAnalysisConfig as HiCContactAnalysisConfig,
)
from diffomics.operators._multiomics_vae import (
    DifferentiableMultiOmicsVAE as DifferentiableMultiOmicsVAE,
)
from diffomics.operators._multiomics_vae import (
    MultiOmicsVAEConfig as MultiOmicsVAEConfig,
)
from diffomics.operators._spatial_deconvolution import (
    SpatialDeconvolution as SpatialDeconvolution,
)
from diffomics.operators._spatial_deconvolution import (
    SpatialDeconvolutionConfig as SpatialDeconvolutionConfig,
)
from diffomics.operators._spatial_gene_detector import (
    DifferentiableSpatialGeneDetector as DifferentiableSpatialGeneDetector,
)
from diffomics.operators._spatial_gene_detector import (
    SpatialGeneDetectorConfig as SpatialGeneDetectorConfig,
)

__all__ = [
    "DifferentiableMultiOmicsVAE",
    "DifferentiableSpatialGeneDetector",
    "HiCContactAnalysis",
    "HiCContactAnalysisConfig",
    "MultiOmicsVAEConfig",
    "SpatialDeconvolution",
    "SpatialDeconvolutionConfig",
    "SpatialGeneDetectorConfig",
]
