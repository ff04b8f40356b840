"""Settings declared once: a frozen dataclass field each, from which the validating schema is made.

``setting(default, validate=…)`` declares a field with its default and its
rule; ``schema_for(cls)`` turns the dataclass into a marshmallow schema that
refuses unknown keys, checks every rule, names a bad value by its dotted
path, and loads straight into the dataclass. A setting whose file form
differs from its value (a list of tables that becomes a tuple of objects, a
hex string that becomes a number) gives the marshmallow field to read it
with and a function to convert what that field loads.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from marshmallow import fields

_SIMPLE: dict[type, Callable[[], fields.Field]] = {
    int: lambda: fields.Integer(strict=True),
    float: lambda: fields.Float(allow_nan=False),
    str: fields.String,
    bool: fields.Boolean,
}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    validate: Callable | None = None,
    field: fields.Field | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is also a setting.

    A nested section's default is its dataclass; a mutable default is given as a factory.
    """
    metadata = {"validate": validate, "field": field, "convert": convert}
    # A dataclass is a type, so callable; other types (int, str) are defaults' kinds, never factories.
    if callable(default) and (not isinstance(default, type) or dataclasses.is_dataclass(default)):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _field_for(kind: Any, spec: dataclasses.Field) -> fields.Field:
    given = spec.metadata.get("field")
    if given is not None:
        return given
    validate = spec.metadata.get("validate")
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return fields.Nested(schema_for(kind))
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return fields.List(_SIMPLE[item](), validate=validate)
    made: fields.Field = _SIMPLE[kind]()
    if validate is not None:
        made.validators.append(validate)
    # A setting without a default must be given.
    made.required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    return made


@functools.cache
def schema_for(cls: type) -> ma.Schema:
    """The schema of a settings dataclass: every field optional (its default applies), unknown ones refused."""
    hints = typing.get_type_hints(cls)
    specs = dataclasses.fields(cls)
    declared = ma.Schema.from_dict({spec.name: _field_for(hints[spec.name], spec) for spec in specs})

    class Loaded(declared):  # type: ignore[valid-type, misc]
        class Meta:
            unknown = ma.RAISE

        @ma.post_load
        def _make(self, data, **kwargs):
            values = {}
            for spec in specs:
                if spec.name in data:
                    convert = spec.metadata.get("convert")
                    values[spec.name] = convert(data[spec.name]) if convert else data[spec.name]
            return cls(**values)

    return Loaded()


def flatten_errors(messages, prefix: str = ""):
    """marshmallow's nested messages as ``dotted.name: message`` lines."""
    for key, value in messages.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten_errors(value, f"{name}.")
        else:
            yield f"{name}: {' '.join(str(v) for v in value)}"


def strict_table(**declared: fields.Field) -> type[ma.Schema]:
    schema = ma.Schema.from_dict(declared)
    schema.Meta.unknown = ma.RAISE  # type: ignore[attr-defined]
    return schema
