"""Multi-omics integration: product-of-experts fusion, the `integrate` analysis, metrics."""

from diffomics.integration._integrate import IntegrationModel as IntegrationModel
from diffomics.integration._integrate import StreamedRows as StreamedRows
from diffomics.integration._integrate import integrate as integrate
from diffomics.integration._integrate import open_zarr as open_zarr
from diffomics.integration._metrics import foscttm as foscttm
from diffomics.integration._metrics import imputation_correlation as imputation_correlation
from diffomics.integration._metrics import knn_label_accuracy as knn_label_accuracy
from diffomics.integration._metrics import label_silhouette as label_silhouette
from diffomics.integration._poe import gaussian_kl as gaussian_kl
from diffomics.integration._poe import product_of_experts as product_of_experts
from diffomics.integration._poe import symmetric_gaussian_kl as symmetric_gaussian_kl
from diffomics.integration._priors import protein_background_prior as protein_background_prior

__all__ = [
    "IntegrationModel",
    "StreamedRows",
    "foscttm",
    "gaussian_kl",
    "imputation_correlation",
    "integrate",
    "knn_label_accuracy",
    "label_silhouette",
    "open_zarr",
    "product_of_experts",
    "protein_background_prior",
    "symmetric_gaussian_kl",
]
