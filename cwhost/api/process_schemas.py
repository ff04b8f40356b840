"""What the background-process and guest-file endpoints take and answer."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema, UnixTime, WholeNumber, list_schema
from cwhost.api.guest_schemas import MAX_TEXT, ExecRequestSchema, no_nul, program_named
from drivers.guest_service.spawn import SIGNALS

# The longest any server lets a process run: 30 days. Its own processes.max_seconds may say less.
MAX_PROCESS_SECONDS = 30 * 86400


class ProcessStartSchema(ExecRequestSchema):
    """As exec's body, without stdin (send it with .../stdin once the process runs)."""

    class Meta(ExecRequestSchema.Meta):
        exclude = ("stdin",)

    timeout_seconds = fields.Float(
        data_key="timeoutSeconds",
        allow_nan=False,
        validate=validate.Range(0.1, MAX_PROCESS_SECONDS),
        metadata={"description": "Killed in the guest after this long; the server's processes.max_seconds if absent."},
    )


class ProcessSchema(ma.Schema):
    id = fields.String(required=True)
    command = fields.List(fields.String(), required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["running", "exited", "killed"]),
        metadata={"description": "killed: ended by a signal, its timeout, or its guest going away."},
    )
    exit_code = fields.Integer(data_key="exitCode", allow_none=True, required=True)
    signal = fields.String(allow_none=True, required=True, metadata={"description": "The signal that ended it."})
    timed_out = fields.Boolean(data_key="timedOut", required=True)
    started_at = UnixTime(data_key="startedAt", required=True)
    ended_at = UnixTime(data_key="endedAt", allow_none=True, required=True)
    output_dropped_bytes = WholeNumber(
        data_key="outputDroppedBytes",
        required=True,
        metadata={"description": "Output written but no longer kept (past processes.max_output_bytes)."},
    )


ProcessListSchema = list_schema(ProcessSchema, "ProcessList")


class ProcessGetArgsSchema(StrictSchema):
    wait = fields.String(
        validate=validate.OneOf(["exit"]),
        metadata={"description": "exit: answer once the process has ended, or when timeoutSeconds have passed."},
    )
    timeout_seconds = fields.Integer(
        data_key="timeoutSeconds",
        load_default=30,
        validate=validate.Range(1, 600),
        metadata={"description": "The longest to wait, in seconds; at most the server's streams.max_wait_seconds."},
    )


class ProcessStdinSchema(StrictSchema):
    data = fields.String(
        load_default="", validate=validate.Length(max=MAX_TEXT), metadata={"description": "What to write."}
    )
    encoding = fields.String(load_default="utf-8", validate=validate.OneOf(["utf-8", "base64"]))
    eof = fields.Boolean(
        load_default=False,
        truthy={True},
        falsy={False},
        metadata={"description": "Close the process's stdin after the data."},
    )


class ProcessSignalSchema(StrictSchema):
    signal = fields.String(required=True, validate=validate.OneOf(sorted(SIGNALS)))


class GuestPathArgsSchema(StrictSchema):
    path = fields.String(
        required=True,
        validate=validate.Length(1, 4096),
        metadata={"description": "Absolute, or relative to the guest user's home."},
    )


class GuestDeleteArgsSchema(GuestPathArgsSchema):
    recursive = fields.Boolean(
        load_default=False, metadata={"description": "Delete a directory with everything in it."}
    )


class DirectoryCreateSchema(StrictSchema):
    path = fields.String(required=True, validate=validate.Length(1, 4096))
    parents = fields.Boolean(
        load_default=False, truthy={True}, falsy={False}, metadata={"description": "Make missing parents too."}
    )


class GuestEntrySchema(ma.Schema):
    path = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["file", "directory", "symlink", "other"]))
    size = WholeNumber(required=True)
    mode = fields.String(required=True, metadata={"description": "Permission bits, in octal (0644)."})
    modified_at = UnixTime(data_key="modifiedAt", required=True)


class GuestPathSchema(GuestEntrySchema):
    entries = fields.List(
        fields.Nested(GuestEntrySchema), metadata={"description": "A directory's entries, by name (directories only)."}
    )
    truncated = fields.Boolean(metadata={"description": "Whether entries stop at guest_files.max_list_entries."})


class TerminalCreateSchema(StrictSchema):
    command = fields.List(
        fields.String(validate=[validate.Length(max=MAX_TEXT), no_nul]),
        validate=[validate.Length(1, 4096), program_named],
        metadata={"description": "The program on the terminal; the guest user's login shell if absent."},
    )
    cols = WholeNumber(load_default=80, validate=validate.Range(1, 1000))
    rows = WholeNumber(load_default=24, validate=validate.Range(1, 1000))


class TerminalSchema(ma.Schema):
    id = fields.String(required=True)
    command = fields.List(fields.String(), required=True, metadata={"description": "Empty: the login shell."})
    created_at = UnixTime(data_key="createdAt", required=True)
    connected = fields.Boolean(required=True, metadata={"description": "Whether a client is connected now."})


class NewTerminalSchema(TerminalSchema):
    websocket_url = fields.String(
        data_key="websocketUrl",
        required=True,
        metadata={
            "description": "The terminal's token-bound WebSocket, shown only here: binary messages carry keys"
            ' in and the screen out; a message of a NUL byte then JSON, `\\u0000{"resize": {"cols": 120,'
            ' "rows": 40}}`, resizes it. Connecting again takes the terminal over and replays its recent'
            " screen first."
        },
    )


TerminalListSchema = list_schema(TerminalSchema, "TerminalList")
