"""Eager input checks shared by operators and analyses.

Value checks (NaN, negative counts, empty rows) run only on concrete arrays: under `jax.jit`
the inputs are tracers and only their shapes can be checked (see ``is_traced``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from diffomics.core._errors import (
    ConfigError,
    CountsError,
    MissingKeyError,
    NonFiniteError,
    ShapeError,
)
from diffomics.core._sharding import to_host

__all__ = [
    "check_choice",
    "check_counts",
    "check_finite",
    "check_keys",
    "check_matrix",
    "check_positive",
    "is_traced",
]


def is_traced(x) -> bool:
    """Whether `x` is a JAX tracer (its values are unknown until run time)."""
    return isinstance(x, jax.core.Tracer)


def check_keys(data: Mapping, required: Sequence[str], *, name: str = "data") -> None:
    """Raise `MissingKeyError` if any of `required` is not a key of `data`."""
    missing = [k for k in required if k not in data]
    if missing:
        msg = (
            f"{name} is missing required key(s) {missing}; found keys {sorted(map(str, data))}. "
            f"Pass a dict holding {list(required)}."
        )
        raise MissingKeyError(msg)


def check_matrix(x, name: str, *, ndim: int = 2, shape: Sequence[int | None] | None = None) -> None:
    """Raise `ShapeError` unless `x` has `ndim` dimensions and matches `shape` (None = any size).

    Args:
      x: array-like with ``.shape``.
      name: the argument name used in the message.
      ndim: expected number of dimensions.
      shape: expected sizes, one per dimension; ``None`` entries accept any size.
    """
    got = tuple(np.shape(x))
    if len(got) != ndim:
        msg = f"{name} must have {ndim} dimension(s); found shape {got}."
        raise ShapeError(msg)
    if shape is not None:
        for axis, (want, have) in enumerate(zip(shape, got, strict=True)):
            if want is not None and want != have:
                msg = f"{name} must have size {want} on axis {axis}; found shape {got}."
                raise ShapeError(msg)
    if any(s == 0 for s in got):
        msg = f"{name} is empty (shape {got}); it needs at least one entry on every axis."
        raise ShapeError(msg)


def check_finite(x, name: str, *, row_offset: int = 0, col_offset: int = 0) -> None:
    """Raise `NonFiniteError` if `x` holds NaN or inf (skipped for tracers).

    Args:
      x: array-like.
      name: the argument name used in the message.
      row_offset: added to the first index in the message, when `x` is a block of rows
        starting there.
      col_offset: added to the second index, when `x` is a block of columns starting there.
    """
    if is_traced(x):
        return
    arr = to_host(x)  # a matrix split over processes is gathered: the index is global
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        where = _shifted(np.argwhere(bad)[0], row_offset, col_offset)
        msg = (
            f"{name} holds {int(bad.sum())} non-finite value(s) ({n_nan} NaN, "
            f"{int(bad.sum()) - n_nan} inf) at e.g. index {where}. "
            "Impute or remove them before calling."
        )
        raise NonFiniteError(msg)


def _shifted(index, row_offset: int, col_offset: int = 0) -> tuple[int, ...]:
    offsets = (row_offset, col_offset)
    return tuple(int(i) + (offsets[axis] if axis < 2 else 0) for axis, i in enumerate(index))


def check_counts(
    x,
    name: str,
    *,
    row_name: str = "row",
    allow_empty_rows: bool = False,
    row_offset: int = 0,
) -> None:
    """Raise unless `x` is a finite, non-negative matrix whose rows are not all zero.

    Args:
      x: matrix, shape `(n_rows, n_cols)`.
      name: the argument name used in the message.
      row_name: what a row is (``"spot"``, ``"cell type"``), for the message.
      allow_empty_rows: accept rows that sum to zero.
      row_offset: added to the row indices in the messages, when `x` is a block of rows
        starting there (a chunk read from a file).

    Raises:
      NonFiniteError: NaN or inf present.
      CountsError: a negative value, or an all-zero row.
    """
    if is_traced(x):
        return
    arr = to_host(x)  # once: a matrix split over processes is gathered for both checks
    check_finite(arr, name, row_offset=row_offset)
    if (arr < 0).any():
        first = np.argwhere(arr < 0)[0]
        msg = (
            f"{name} must be non-negative; found {int((arr < 0).sum())} negative value(s), "
            f"e.g. {arr[tuple(first)]!r} at index {_shifted(first, row_offset)}."
        )
        raise CountsError(msg)
    if not allow_empty_rows:
        empty = np.flatnonzero(arr.reshape(arr.shape[0], -1).sum(axis=1) == 0)
        if empty.size:
            msg = (
                f"{name} has {empty.size} {row_name}(s) with zero total (e.g. index "
                f"{(empty[:5] + row_offset).tolist()}); remove them first, they carry no "
                "information."
            )
            raise CountsError(msg)


def check_positive(value, name: str, *, allow_zero: bool = False) -> None:
    """Raise `ConfigError` unless `value` is a finite number > 0 (>= 0 with `allow_zero`)."""
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a finite number {bound}; found {value!r}."
        raise ConfigError(msg)


def check_choice(value, name: str, choices: Sequence) -> None:
    """Raise `ConfigError` unless `value` is one of `choices`."""
    if value not in choices:
        msg = f"{name} must be one of {list(choices)}; found {value!r}."
        raise ConfigError(msg)
