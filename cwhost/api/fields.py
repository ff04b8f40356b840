"""The field types and helpers the API's schemas share: strict JSON numbers, timestamps, sizes, the list envelope."""

from __future__ import annotations

from datetime import UTC, datetime

import marshmallow as ma
from flask import url_for
from marshmallow import fields, validate

from cwhost.ids import unix_to_rfc3339
from drivers.base import Display

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,63}$"
TYPE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
# Generous schema-level ceilings: they keep absurd numbers out before the
# service compares a request with this host's real capacity.
MAX_CPU_CORES = 4096
MAX_MEMORY_GB = 1024 * 1024
MAX_STORAGE_GB = 1024 * 1024
MAX_TIMEOUT_MINUTES = 60 * 24 * 366
# VGA to 4K UHD: what QEMU's virtio-vga draws and noVNC shows.
MIN_DISPLAY = Display(640, 480)
MAX_DISPLAY = Display(3840, 2160)


class WholeNumber(fields.Integer):
    """An integer in JSON: never a string, a float or a boolean."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


class JsonNumber(fields.Float):
    """A number in JSON: never a string or a boolean."""

    def _validated(self, value):
        if isinstance(value, (str, bool)):
            raise self.make_error("invalid")
        return super()._validated(value)


class Timestamp(fields.String):
    """An RFC 3339 UTC time, stored and shown as text such as 2025-09-11T12:00:00Z."""

    def __init__(self, metadata=None, **kwargs):
        super().__init__(metadata={"format": "date-time", **(metadata or {})}, **kwargs)


class UnixTime(fields.Field):
    """A moment held as UNIX seconds, shown as RFC 3339 UTC text like Timestamp."""

    def __init__(self, metadata=None, **kwargs):
        super().__init__(metadata={"type": "string", "format": "date-time", **(metadata or {})}, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else unix_to_rfc3339(value)


def size_field(maximum: int, description: str, **kwargs) -> WholeNumber:
    return WholeNumber(validate=validate.Range(min=1, max=maximum), metadata={"description": description}, **kwargs)


def timeout_field(description: str, **kwargs) -> WholeNumber:
    return WholeNumber(
        validate=validate.Range(min=0, max=MAX_TIMEOUT_MINUTES),
        metadata={"description": description + " 0 turns it off."},
        **kwargs,
    )


class StrictSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE
        ordered = True


def within_calendar(moment: datetime) -> None:
    """The instant must be a UTC time of years 1 to 9999, the range timestamps are written in."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ma.ValidationError("Must fall within the years 1 to 9999 in UTC.") from None


def list_schema(item_schema: type[ma.Schema], name: str) -> type[ma.Schema]:
    """The list envelope of API.md for ``item_schema``."""
    return ma.Schema.from_dict(
        {
            "object": fields.String(required=True, validate=validate.Equal("list")),
            "data": fields.List(fields.Nested(item_schema), required=True),
            "has_more": fields.Boolean(data_key="hasMore", required=True),
            "next_cursor": fields.String(data_key="nextCursor", allow_none=True, required=True),
        },
        name=name,
    )


def url_field(endpoint: str, description: str, **parameters: str) -> fields.Function:
    """A link to ``endpoint``; each URL parameter is read from the attribute of the object it names."""
    return fields.Function(
        lambda obj: url_for(endpoint, **{name: getattr(obj, attribute) for name, attribute in parameters.items()}),
        required=True,
        metadata={"type": "string", "description": description},
    )
