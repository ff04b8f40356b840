"""What POST /v1/workstations/{id}/exec takes and answers."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema

MAX_ARGUMENTS = 4096
MAX_TEXT = 1024 * 1024


def _no_nul(text: str) -> None:
    if "\x00" in text:
        raise ma.ValidationError("Must not contain NUL: it cannot be passed to a program.")


def _program_named(argv: list[str]) -> None:
    if argv and not argv[0]:
        raise ma.ValidationError("The program's name must not be empty.")


class ExecRequestSchema(StrictSchema):
    command = fields.List(
        fields.String(validate=[validate.Length(max=MAX_TEXT), _no_nul]),
        required=True,
        validate=[validate.Length(1, MAX_ARGUMENTS), _program_named],
        metadata={
            "description": "The program and its arguments, as a list: no shell parses them.",
            "example": ["python3", "-c", "print(6*7)"],
        },
    )
    stdin = fields.String(
        load_default="", validate=validate.Length(max=MAX_TEXT), metadata={"description": "Text given on stdin."}
    )
    env = fields.Dict(
        keys=fields.String(validate=[validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$"), _no_nul]),
        values=fields.String(validate=[validate.Length(max=MAX_TEXT), _no_nul]),
        load_default=dict,
        validate=validate.Length(max=256),
        metadata={"description": "Variables added to PATH, HOME, USER and LANG."},
    )
    working_directory = fields.String(
        data_key="workingDirectory",
        validate=[validate.Length(1, 4096), _no_nul],
        metadata={"description": "Default: the guest user's home."},
    )
    timeout_seconds = fields.Float(
        data_key="timeoutSeconds",
        load_default=60.0,
        allow_nan=False,
        validate=validate.Range(0.1, 3600),
        metadata={"description": "The command is killed inside the guest after this long."},
    )


class ExecResultSchema(ma.Schema):
    exit_code = fields.Integer(
        data_key="exitCode", required=True, allow_none=True, metadata={"description": "137 when killed."}
    )
    stdout = fields.String(required=True)
    stderr = fields.String(required=True)
    stdout_encoding = fields.String(
        data_key="stdoutEncoding",
        required=True,
        validate=validate.OneOf(["utf-8", "base64"]),
        metadata={"description": "base64 when the output is not UTF-8 text."},
    )
    stderr_encoding = fields.String(
        data_key="stderrEncoding", required=True, validate=validate.OneOf(["utf-8", "base64"])
    )
    duration_ms = fields.Integer(data_key="durationMs", required=True)
    truncated = fields.Boolean(
        required=True, metadata={"description": "Output beyond the server's limit (exec.max_output_bytes) was cut."}
    )
    timed_out = fields.Boolean(data_key="timedOut", required=True)
