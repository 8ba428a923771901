"""diffomics: differentiable multi-omics operators that compute the field's statistics."""

from importlib.metadata import version

from diffomics.core._errors import ConfigError as ConfigError
from diffomics.core._errors import CountsError as CountsError
from diffomics.core._errors import DataIntegrityError as DataIntegrityError
from diffomics.core._errors import GeneMatchError as GeneMatchError
from diffomics.core._errors import MissingKeyError as MissingKeyError
from diffomics.core._errors import NonFiniteError as NonFiniteError
from diffomics.core._errors import ShapeError as ShapeError

__version__ = version("diffomics")

__all__ = [
    "ConfigError",
    "CountsError",
    "DataIntegrityError",
    "GeneMatchError",
    "MissingKeyError",
    "NonFiniteError",
    "ShapeError",
    "__version__",
]
