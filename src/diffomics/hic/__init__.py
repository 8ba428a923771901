"""Hi-C contact analysis, as plain JAX functions and one cooltools-style analysis.

Cooler I/O, banded matrices, ICE balancing, expected, compartments, insulation and
boundaries, and HiCCUPS-style loops.
"""

from diffomics.hic._analysis import HiCResult as HiCResult
from diffomics.hic._analysis import analyze as analyze
from diffomics.hic._analysis import ice_balance as ice_balance
from diffomics.hic._balance import IceResult as IceResult
from diffomics.hic._balance import ice as ice
from diffomics.hic._balance import ice_filters as ice_filters
from diffomics.hic._balance import marginals as marginals
from diffomics.hic._band import band_from_dense as band_from_dense
from diffomics.hic._band import band_from_pixels as band_from_pixels
from diffomics.hic._band import band_mask as band_mask
from diffomics.hic._band import dense_from_band as dense_from_band
from diffomics.hic._compartments import Eigs as Eigs
from diffomics.hic._compartments import cis_eigs as cis_eigs
from diffomics.hic._compartments import compartment_eigs as compartment_eigs
from diffomics.hic._compartments import observed_over_expected as observed_over_expected
from diffomics.hic._compartments import phase_eigs as phase_eigs
from diffomics.hic._dots import birch_labels as birch_labels
from diffomics.hic._dots import call_dots as call_dots
from diffomics.hic._dots import hiccups_kernels as hiccups_kernels
from diffomics.hic._dots import lambda_thresholds as lambda_thresholds
from diffomics.hic._dots import local_expected as local_expected
from diffomics.hic._expected import Expected as Expected
from diffomics.hic._expected import expected_cis as expected_cis
from diffomics.hic._insulation import Insulation as Insulation
from diffomics.hic._insulation import boundary_strength as boundary_strength
from diffomics.hic._insulation import insulation as insulation
from diffomics.hic._insulation import li_threshold as li_threshold
from diffomics.hic._insulation import peak_prominence as peak_prominence
from diffomics.hic._insulation import soft_boundaries as soft_boundaries
from diffomics.hic._io import ContactMap as ContactMap
from diffomics.hic._io import count_features as count_features
from diffomics.hic._io import from_dense as from_dense
from diffomics.hic._io import read_cool as read_cool

__all__ = [
    "ContactMap",
    "Eigs",
    "Expected",
    "HiCResult",
    "IceResult",
    "Insulation",
    "analyze",
    "band_from_dense",
    "band_from_pixels",
    "band_mask",
    "birch_labels",
    "boundary_strength",
    "call_dots",
    "cis_eigs",
    "compartment_eigs",
    "count_features",
    "dense_from_band",
    "expected_cis",
    "from_dense",
    "hiccups_kernels",
    "ice",
    "ice_balance",
    "ice_filters",
    "insulation",
    "lambda_thresholds",
    "li_threshold",
    "peak_prominence",
    "local_expected",
    "marginals",
    "observed_over_expected",
    "phase_eigs",
    "read_cool",
    "soft_boundaries",
]
