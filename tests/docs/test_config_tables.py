"""Every configuration table of the guide matches its dataclass: names, types, defaults.

A renamed, added, removed or re-typed field, or a changed default, fails here until the
guide is updated.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect

import pytest

from tests.docs.markdown_blocks import DOCS, config_tables, pages, unquote

TABLES = [table for page in pages() for table in config_tables(page)]

#: Where the public configuration dataclasses live; each must have a table in the guide.
PUBLIC_CONFIGS = (
    "diffomics.operators.multiomics",
    "diffomics.operators.epigenomics",
    "diffomics.sources",
)


def _resolve(target: str):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _type_name(field: dataclasses.Field) -> str:
    # the config modules use `from __future__ import annotations`: annotations are strings
    return field.type if isinstance(field.type, str) else inspect.formatannotation(field.type)


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def test_every_operator_page_has_a_configuration_table():
    for page in sorted((DOCS / "operators").glob("*.md")):
        assert config_tables(page), f"{page.name} has no '<!-- config: ... -->' table"


def test_every_public_config_is_documented():
    documented = {_resolve(t.target) for t in TABLES}
    for name in PUBLIC_CONFIGS:
        module = importlib.import_module(name)
        for item in module.__all__:
            obj = getattr(module, item)
            if dataclasses.is_dataclass(obj) and isinstance(obj, type):
                assert obj in documented, f"{name}.{item} has no configuration table in docs/"


@pytest.mark.parametrize("table", TABLES, ids=[t.name for t in TABLES])
def test_config_table_matches_dataclass(table):
    cls = _resolve(table.target)
    assert dataclasses.is_dataclass(cls), f"{table.target} is not a dataclass"
    fields = dataclasses.fields(cls)
    where = f"{table.page.relative_to(DOCS)}:{table.line}"
    assert [unquote(row.get("field", "")) for row in table.rows] == [f.name for f in fields], (
        f"{where}: the table's fields differ from {cls.__name__}'s"
    )
    for row, field in zip(table.rows, fields, strict=True):
        assert set(row) >= {"field", "type", "default", "meaning"}, f"{where}: columns {set(row)}"
        assert unquote(row["type"]) == _type_name(field), f"{where}: type of {field.name}"
        expected = _default(field)
        if expected is dataclasses.MISSING:
            assert row["default"] == "required", f"{where}: {field.name} has no default"
        else:
            documented = ast.literal_eval(unquote(row["default"]))
            assert documented == expected and type(documented) is type(expected), (
                f"{where}: default of {field.name} is {expected!r}, the table says {row['default']}"
            )
        assert row["meaning"].strip(), f"{where}: {field.name} has no meaning"
