"""The operator contract: ``apply(data, state, metadata) -> (result, state, metadata)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from flax import nnx

from diffomics.core._checks import check_keys
from diffomics.core._numerics import default_float

__all__ = ["Operator", "OperatorConfig"]


def linear(n_in: int, n_out: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer of an operator, its parameters in `default_float` (float64 under x64)."""
    return nnx.Linear(n_in, n_out, param_dtype=default_float(), rngs=rngs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Base of the frozen operator configs: subclasses validate their fields in `validate`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field (no-op in the base class)."""


class Operator(nnx.Module):
    """Base of the public operators: a Flax NNX module with a dictionary interface.

    Subclasses set `input_keys` (required), `optional_keys`, and implement `outputs`, which
    maps the input dictionary to the dictionary of new keys. `apply` checks the required
    keys and returns the inputs merged with the outputs, so operators chain: the result of
    one is the data of the next. ``apply`` is pure for given parameters, so it runs under
    ``nnx.jit`` (or ``jax.jit`` after ``nnx.split``) and ``jax.grad`` flows through it.
    """

    input_keys: ClassVar[tuple[str, ...]] = ()
    optional_keys: ClassVar[tuple[str, ...]] = ()

    def outputs(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Compute the output keys from `data` (implemented by each operator)."""
        raise NotImplementedError

    def apply(
        self, data: Mapping[str, Any], state: Any, metadata: Any
    ) -> tuple[dict[str, Any], Any, Any]:
        """Run the operator.

        Args:
          data: dictionary holding at least `input_keys`.
          state: passed through unchanged (kept for the operator-family contract).
          metadata: passed through unchanged.

        Returns:
          ``(result, state, metadata)`` where ``result`` is a new dict with the inputs and
          the outputs; the inputs are not modified.
        """
        check_keys(data, self.input_keys, name="data")
        return {**data, **self.outputs(data)}, state, metadata
