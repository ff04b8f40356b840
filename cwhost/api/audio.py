"""The speaker of a running workstation whose type has sound: recorded as WAV, or listened to as text."""

from __future__ import annotations

import marshmallow as ma
from flask import g
from marshmallow import fields, validate

from cwhost.api.common import ApiBlueprint, error_responses
from cwhost.api.components import components, services
from cwhost.api.fields import StrictSchema, WholeNumber
from cwhost.api.streams import stream_answer, streamed, take_stream_slot
from cwhost.errors import InvalidRequest
from cwhost.workstations.audio import CHANNELS, RATES

blp = ApiBlueprint(
    "audio",
    __name__,
    url_prefix="/v1/workstations",
    description="The guest's speaker (types with sound): a WAV stream, or a transcript of what it says.",
)
# The most seconds any server takes; its own limits may say less.
MAX_SECONDS = 86400


class AudioStreamArgsSchema(StrictSchema):
    seconds = fields.Integer(
        validate=validate.Range(1, MAX_SECONDS),
        metadata={"description": "How long to record; streams.max_seconds (300) if absent, and at most that."},
    )
    rate = fields.Integer(
        load_default=RATES[0], validate=validate.OneOf(RATES), metadata={"description": "Samples a second."}
    )
    channels = fields.Integer(load_default=1, validate=validate.OneOf(CHANNELS), metadata={"description": "1 or 2."})


class ListenSchema(StrictSchema):
    seconds = WholeNumber(
        load_default=10,
        validate=validate.Range(1, MAX_SECONDS),
        metadata={"description": "How long to listen, from now; at most the server's audio.listen_max_seconds (60)."},
    )


class TranscriptSchema(ma.Schema):
    transcript = fields.String(
        required=True, metadata={"description": "The English words heard, lower case; empty if none."}
    )
    seconds = WholeNumber(required=True, metadata={"description": "How long it listened."})


@blp.route("/<string:workstation_id>/audio")
@blp.arguments(AudioStreamArgsSchema, location="query")
@blp.doc(
    operationId="streamAudio",
    responses=stream_answer(
        "audio/wav",
        "audio/wav, sent as the guest plays it: a WAV header for the whole length asked, then 16-bit"
        " little-endian samples (silence when nothing plays). It ends short if the guest stops.",
        binary=True,
    ),
)
@error_responses(blp, 400, 404, 422)
def stream(args, workstation_id):
    """Record the guest's speaker as a WAV stream (one of the account's stream slots)."""
    longest = components().config.streams.max_seconds
    seconds = args.get("seconds", longest)
    if seconds > longest:
        raise InvalidRequest(f"seconds is at most {longest} on this server (streams.max_seconds).")
    release = take_stream_slot()
    try:
        wav = services().audio.stream(g.principal, workstation_id, args["rate"], args["channels"], seconds)
    except BaseException:
        release()
        raise
    return streamed(wav, release, "audio/wav")


@blp.route("/<string:workstation_id>/audio/listen", methods=["POST"])
@blp.arguments(ListenSchema)
@blp.response(200, TranscriptSchema)
@error_responses(blp, 400, 404, 415, 422)
@blp.doc(operationId="listenToAudio")
def listen(body, workstation_id):
    """Listen to the guest's speaker for `seconds` from now, and answer what it said, transcribed
    offline (pocketsphinx's English model). Holds one of the account's stream slots meanwhile."""
    longest = components().config.audio.listen_max_seconds
    if body["seconds"] > longest:
        raise InvalidRequest(f"seconds is at most {longest} on this server (audio.listen_max_seconds).")
    release = take_stream_slot()
    try:
        transcript = services().audio.listen(g.principal, workstation_id, body["seconds"])
    finally:
        release()
    return {"transcript": transcript, "seconds": body["seconds"]}
