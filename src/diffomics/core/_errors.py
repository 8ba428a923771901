"""Exceptions raised on bad input.

Every exception is a `ValueError` subclass, so ``except ValueError`` catches all of them,
and every message names the argument, what was expected, what was found and the fix.
"""

from __future__ import annotations

__all__ = [
    "DataIntegrityError",
    "ConfigError",
    "CountsError",
    "GeneMatchError",
    "MissingKeyError",
    "NonFiniteError",
    "ShapeError",
]


class ShapeError(ValueError):
    """An array has the wrong number of dimensions or a size that disagrees with another input."""


class NonFiniteError(ValueError):
    """An array holds NaN or infinite values."""


class CountsError(ValueError):
    """Counts are negative, or a spot / cell / gene has no counts at all."""


class GeneMatchError(ValueError):
    """Two datasets share too few gene (feature) names."""


class MissingKeyError(ValueError):
    """A required key is missing from a data dictionary or an AnnData field."""


class ConfigError(ValueError):
    """A configuration field is outside its valid range."""


class DataIntegrityError(ValueError):
    """A data file does not match its recorded checksum or expected layout."""
