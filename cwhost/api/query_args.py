"""Query parameters of the API's operations: paging, filters, windows. Unknown ones are refused."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import TYPE_ID_PATTERN, StrictSchema, within_calendar
from cwhost.model import STATUSES
from cwhost.patterns import FullMatch
from cwhost.workspaces.paths import FILE_ID_PATTERN


class PageArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    after = fields.String(
        validate=FullMatch(r"^[0-9]{1,18}$", error="Not a cursor this server issued."),
        metadata={"description": "The nextCursor of the previous page."},
    )


class WorkstationListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    type = fields.String(validate=validate.Length(1, 63))


class StopArgsSchema(StrictSchema):
    force = fields.Boolean(
        load_default=False, metadata={"description": "Power off at once instead of asking the guest."}
    )


class WorkstationGetArgsSchema(StrictSchema):
    wait = fields.String(
        validate=validate.OneOf(["ready"]),
        metadata={
            "description": "ready: answer once the workstation is ready (or stops running, or its guest is"
            " reported not ready in time), or when timeoutSeconds have passed; then read `ready`."
        },
    )
    timeout_seconds = fields.Integer(
        data_key="timeoutSeconds",
        load_default=30,
        validate=validate.Range(1, 600),
        metadata={"description": "The longest to wait, in seconds; at most the server's readiness.max_wait_seconds."},
    )


class DeleteArgsSchema(StrictSchema):
    force = fields.Boolean(
        load_default=False,
        metadata={"description": "Delete a running workstation too: powered off at once, metered to the end."},
    )


class UsageArgsSchema(StrictSchema):
    from_ = fields.AwareDateTime(data_key="from", default_timezone=None, validate=within_calendar)
    to = fields.AwareDateTime(validate=within_calendar)
    granularity = fields.String(validate=validate.OneOf(["hour", "day"]))

    @ma.validates_schema
    def _window_is_not_empty(self, data, **kwargs):
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ma.ValidationError("Must be before 'to'.", field_name="from")


class AccountUsageArgsSchema(StrictSchema):
    from_ = fields.AwareDateTime(data_key="from", default_timezone=None, validate=within_calendar)
    to = fields.AwareDateTime(validate=within_calendar)
    granularity = fields.String(
        validate=validate.OneOf(["day", "month"]), metadata={"description": "Add periods: UTC days or calendar months."}
    )

    @ma.validates_schema
    def _window_is_not_empty(self, data, **kwargs):
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ma.ValidationError("Must be before 'to'.", field_name="from")


class TypeListArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    after = fields.String(
        validate=FullMatch(TYPE_ID_PATTERN, error="Not a cursor this server issued."),
        metadata={"description": "The nextCursor of the previous page."},
    )


class FileListArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    after = fields.String(
        validate=FullMatch(f"^{FILE_ID_PATTERN}$", error="Not a cursor this server issued."),
        metadata={"description": "The nextCursor of the previous page."},
    )
