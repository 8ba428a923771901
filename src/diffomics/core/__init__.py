"""Core: errors, input checks, likelihoods, the operator base and the fitting loop."""

from diffomics.core._checks import check_counts as check_counts
from diffomics.core._checks import check_finite as check_finite
from diffomics.core._checks import check_matrix as check_matrix
from diffomics.core._errors import ConfigError as ConfigError
from diffomics.core._errors import CountsError as CountsError
from diffomics.core._errors import DataIntegrityError as DataIntegrityError
from diffomics.core._errors import GeneMatchError as GeneMatchError
from diffomics.core._errors import MissingKeyError as MissingKeyError
from diffomics.core._errors import NonFiniteError as NonFiniteError
from diffomics.core._errors import ShapeError as ShapeError
from diffomics.core._fit import FitResult as FitResult
from diffomics.core._fit import fit as fit
from diffomics.core._likelihoods import gaussian_log_prob as gaussian_log_prob
from diffomics.core._likelihoods import nb_log_prob as nb_log_prob
from diffomics.core._likelihoods import poisson_log_prob as poisson_log_prob
from diffomics.core._multiple_testing import benjamini_hochberg as benjamini_hochberg
from diffomics.core._multiple_testing import storey_pi0 as storey_pi0
from diffomics.core._numerics import safe_eigh as safe_eigh
from diffomics.core._operator import Operator as Operator
from diffomics.core._operator import OperatorConfig as OperatorConfig

__all__ = [
    "ConfigError",
    "CountsError",
    "DataIntegrityError",
    "FitResult",
    "GeneMatchError",
    "MissingKeyError",
    "NonFiniteError",
    "Operator",
    "OperatorConfig",
    "ShapeError",
    "benjamini_hochberg",
    "check_counts",
    "check_finite",
    "check_matrix",
    "fit",
    "gaussian_log_prob",
    "nb_log_prob",
    "poisson_log_prob",
    "safe_eigh",
    "storey_pi0",
]
