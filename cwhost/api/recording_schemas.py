"""What the screen-recording endpoints take and answer."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema, UnixTime, WholeNumber, list_schema

# The most pictures a second any server takes; its own recordings.max_frames_per_second may say less.
MAX_FRAMES_PER_SECOND = 30


class RecordingStartSchema(StrictSchema):
    frames_per_second = WholeNumber(
        data_key="framesPerSecond",
        validate=validate.Range(1, MAX_FRAMES_PER_SECOND),
        metadata={"description": "Pictures a second; the server's recordings.frames_per_second (2) if absent."},
    )


class RecordingSchema(ma.Schema):
    id = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["recording", "ready", "failed"]),
        metadata={"description": "ready: its video can be downloaded; failed: `message` says why."},
    )
    frames_per_second = WholeNumber(data_key="framesPerSecond", required=True)
    started_at = UnixTime(data_key="startedAt", required=True)
    ended_at = UnixTime(data_key="endedAt", allow_none=True, required=True)
    size_bytes = WholeNumber(
        data_key="sizeBytes", required=True, metadata={"description": "Its file, counted in the account's storage."}
    )
    format = fields.String(required=True, metadata={"description": "webm (VP8)."})
    message = fields.String(allow_none=True, required=True, metadata={"description": "Why it ended by itself."})


RecordingListSchema = list_schema(RecordingSchema, "RecordingList")
