"""Plotting: matplotlib figures of what the analyses wrote."""

from diffomics.plotting._embedding import latent_scatter as latent_scatter
from diffomics.plotting._hic import hic_tracks as hic_tracks
from diffomics.plotting._spatial import proportions_on_tissue as proportions_on_tissue
from diffomics.plotting._spatial import spatial_genes_on_tissue as spatial_genes_on_tissue

__all__ = ["hic_tracks", "latent_scatter", "proportions_on_tissue", "spatial_genes_on_tissue"]
