"""API conventions checked mechanically (as scanpy's test_sig_conventions)."""

import dataclasses
import importlib
import inspect

import pytest

import diffomics

PUBLIC = [
    "diffomics",
    "diffomics.core",
    "diffomics.spatial",
    "diffomics.hic",
    "diffomics.integration",
    "diffomics.operators",
    "diffomics.operators.multiomics",
    "diffomics.operators.epigenomics",
    "diffomics.epigenomics",
    "diffomics.sources",
    "diffomics.datasets",
    "diffomics.plotting",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_explicit_and_importable(name):
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list)
    for item in module.__all__:
        assert hasattr(module, item), f"{name}.{item}"


def _functions():
    for name in PUBLIC:
        module = importlib.import_module(name)
        for item in module.__all__:
            obj = getattr(module, item)
            if inspect.isfunction(obj):
                yield f"{name}.{item}", obj


@pytest.mark.parametrize(("name", "func"), list(_functions()))
def test_signature_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and positional[0].name in ("adata", "spatial", "cells", "reference"):
        assert len(positional) <= 3, f"{name}: analyses take at most 3 positional arguments"
    for p in params:
        if p.name in ("seed", "rngs") or isinstance(p.default, bool):
            assert p.kind == p.KEYWORD_ONLY, f"{name}({p.name}) must be keyword-only"
    if params:
        assert func.__doc__ and "Args:" in func.__doc__, f"{name} documents no arguments"


def test_errors_are_value_errors():
    for name in (
        "ConfigError",
        "CountsError",
        "DataIntegrityError",
        "GeneMatchError",
        "MissingKeyError",
        "NonFiniteError",
        "ShapeError",
    ):
        assert issubclass(getattr(diffomics, name), ValueError)


def test_operator_configs_are_frozen_keyword_dataclasses():
    from diffomics.operators.multiomics import SpatialDeconvolutionConfig

    assert dataclasses.is_dataclass(SpatialDeconvolutionConfig)
    assert SpatialDeconvolutionConfig.__dataclass_params__.frozen
    with pytest.raises(TypeError):
        SpatialDeconvolutionConfig(3)
