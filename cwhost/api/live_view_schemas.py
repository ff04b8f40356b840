"""What POST /v1/workstations/{id}/live-views takes, and a live view as the API shows it."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema, UnixTime, WholeNumber, list_schema

# The longest any server lets a live view last: a week. Its own configuration may say less.
MAX_MINUTES = 7 * 24 * 60


class LiveViewCreateSchema(StrictSchema):
    interactive = fields.Boolean(
        load_default=False,
        truthy={True},  # JSON's true and false only: not "yes", not 1
        falsy={False},
        metadata={"description": "Whether the viewer may type and point; view-only (false) by default."},
    )
    minutes = WholeNumber(
        validate=validate.Range(min=1, max=MAX_MINUTES),
        metadata={"description": "How long the link lasts; the server's console.live_view_default_minutes if absent."},
    )


class LiveViewSchema(ma.Schema):
    id = fields.String(required=True)
    interactive = fields.Boolean(required=True)
    created_at = UnixTime(data_key="createdAt", required=True)
    expires_at = UnixTime(data_key="expiresAt", required=True)


class NewLiveViewSchema(LiveViewSchema):
    url = fields.String(
        required=True,
        metadata={
            "description": "The page to embed (an iframe) or open; its token is the credential, shown only here."
        },
    )


LiveViewListSchema = list_schema(LiveViewSchema, "LiveViewList")
