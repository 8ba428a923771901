"""Spatial transcriptomics: deconvolution statistics, graphs and analyses."""

from diffomics.spatial._analyses import DeconvolutionResult as DeconvolutionResult
from diffomics.spatial._analyses import deconvolve as deconvolve
from diffomics.spatial._deconvolution import (
    deconvolution_log_likelihood as deconvolution_log_likelihood,
)
from diffomics.spatial._deconvolution import deconvolution_mean as deconvolution_mean
from diffomics.spatial._deconvolution import (
    deconvolution_neg_log_posterior as deconvolution_neg_log_posterior,
)
from diffomics.spatial._deconvolution import (
    platform_effect_neg_log_marginal as platform_effect_neg_log_marginal,
)
from diffomics.spatial._deconvolution import (
    platform_effect_posterior_mean as platform_effect_posterior_mean,
)
from diffomics.spatial._deconvolution import spot_scale as spot_scale
from diffomics.spatial._graph import car_penalty as car_penalty
from diffomics.spatial._graph import knn_graph as knn_graph
from diffomics.spatial._metrics import proportion_metrics as proportion_metrics
from diffomics.spatial._pseudospots import pool_pseudo_spots as pool_pseudo_spots
from diffomics.spatial._pseudospots import split_cells as split_cells
from diffomics.spatial._reference import match_genes as match_genes
from diffomics.spatial._reference import reference_dispersion as reference_dispersion
from diffomics.spatial._reference import reference_profiles as reference_profiles

__all__ = [
    "DeconvolutionResult",
    "car_penalty",
    "deconvolution_log_likelihood",
    "deconvolution_mean",
    "deconvolution_neg_log_posterior",
    "deconvolve",
    "knn_graph",
    "match_genes",
    "platform_effect_neg_log_marginal",
    "platform_effect_posterior_mean",
    "pool_pseudo_spots",
    "proportion_metrics",
    "reference_dispersion",
    "reference_profiles",
    "split_cells",
    "spot_scale",
]
