"""Core: errors, input checks, likelihoods, the operator base, the fitting loop and sharding."""

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
from diffomics.core._numerics import default_float as default_float
from diffomics.core._numerics import safe_eigh as safe_eigh
from diffomics.core._operator import Operator as Operator
from diffomics.core._operator import OperatorConfig as OperatorConfig
from diffomics.core._sharding import DATA_AXIS as DATA_AXIS
from diffomics.core._sharding import check_in_every_process as check_in_every_process
from diffomics.core._sharding import data_mesh as data_mesh
from diffomics.core._sharding import pad_rows as pad_rows
from diffomics.core._sharding import padded_size as padded_size
from diffomics.core._sharding import process_rows as process_rows
from diffomics.core._sharding import replicate as replicate
from diffomics.core._sharding import row_weights as row_weights
from diffomics.core._sharding import shard_rows as shard_rows
from diffomics.core._sharding import shard_rows_from as shard_rows_from
from diffomics.core._sharding import sum_over_processes as sum_over_processes
from diffomics.core._sharding import to_host as to_host

__all__ = [
    "DATA_AXIS",
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
    "check_in_every_process",
    "check_matrix",
    "data_mesh",
    "default_float",
    "fit",
    "gaussian_log_prob",
    "nb_log_prob",
    "pad_rows",
    "padded_size",
    "poisson_log_prob",
    "process_rows",
    "replicate",
    "row_weights",
    "safe_eigh",
    "shard_rows",
    "shard_rows_from",
    "sum_over_processes",
    "to_host",
    "storey_pi0",
]
