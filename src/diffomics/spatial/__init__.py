"""Spatial transcriptomics: deconvolution, spatially variable genes, graphs and analyses."""

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
from diffomics.spatial._gp_test import GPFit as GPFit
from diffomics.spatial._gp_test import fit_gp as fit_gp
from diffomics.spatial._gp_test import fit_gp_implicit as fit_gp_implicit
from diffomics.spatial._gp_test import mixture_log_pvalue as mixture_log_pvalue
from diffomics.spatial._gp_test import mixture_pvalue as mixture_pvalue
from diffomics.spatial._gp_test import permutation_null as permutation_null
from diffomics.spatial._graph import car_penalty as car_penalty
from diffomics.spatial._graph import knn_graph as knn_graph
from diffomics.spatial._kernels import KernelFactor as KernelFactor
from diffomics.spatial._kernels import exact_factor as exact_factor
from diffomics.spatial._kernels import kernel_matrix as kernel_matrix
from diffomics.spatial._kernels import lengthscale_grid as lengthscale_grid
from diffomics.spatial._kernels import nystrom_factor as nystrom_factor
from diffomics.spatial._metrics import proportion_metrics as proportion_metrics
from diffomics.spatial._preprocess import anscombe as anscombe
from diffomics.spatial._preprocess import nb_overdispersion as nb_overdispersion
from diffomics.spatial._preprocess import regress_out as regress_out
from diffomics.spatial._preprocess import stabilize as stabilize
from diffomics.spatial._pseudospots import pool_pseudo_spots as pool_pseudo_spots
from diffomics.spatial._pseudospots import split_cells as split_cells
from diffomics.spatial._reference import match_genes as match_genes
from diffomics.spatial._reference import reference_dispersion as reference_dispersion
from diffomics.spatial._reference import reference_profiles as reference_profiles
from diffomics.spatial._svg_analysis import spatial_genes as spatial_genes

__all__ = [
    "DeconvolutionResult",
    "GPFit",
    "KernelFactor",
    "anscombe",
    "car_penalty",
    "deconvolution_log_likelihood",
    "deconvolution_mean",
    "deconvolution_neg_log_posterior",
    "deconvolve",
    "exact_factor",
    "fit_gp",
    "fit_gp_implicit",
    "kernel_matrix",
    "lengthscale_grid",
    "mixture_log_pvalue",
    "mixture_pvalue",
    "nb_overdispersion",
    "nystrom_factor",
    "permutation_null",
    "knn_graph",
    "match_genes",
    "platform_effect_neg_log_marginal",
    "platform_effect_posterior_mean",
    "pool_pseudo_spots",
    "proportion_metrics",
    "reference_dispersion",
    "reference_profiles",
    "regress_out",
    "spatial_genes",
    "stabilize",
    "split_cells",
    "spot_scale",
]
