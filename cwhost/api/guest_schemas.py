"""What POST /v1/workstations/{id}/exec takes and answers."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema
from drivers.input_events import InputAction

MAX_ARGUMENTS = 4096
MAX_TEXT = 1024 * 1024


def no_nul(text: str) -> None:
    if "\x00" in text:
        raise ma.ValidationError("Must not contain NUL: it cannot be passed to a program.")


def program_named(argv: list[str]) -> None:
    if argv and not argv[0]:
        raise ma.ValidationError("The program's name must not be empty.")


class ExecRequestSchema(StrictSchema):
    command = fields.List(
        fields.String(validate=[validate.Length(max=MAX_TEXT), no_nul]),
        required=True,
        validate=[validate.Length(1, MAX_ARGUMENTS), program_named],
        metadata={
            "description": "The program and its arguments, as a list: no shell parses them.",
            "example": ["python3", "-c", "print(6*7)"],
        },
    )
    stdin = fields.String(
        load_default="", validate=validate.Length(max=MAX_TEXT), metadata={"description": "Text given on stdin."}
    )
    env = fields.Dict(
        keys=fields.String(validate=[validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$"), no_nul]),
        values=fields.String(validate=[validate.Length(max=MAX_TEXT), no_nul]),
        load_default=dict,
        validate=validate.Length(max=256),
        metadata={"description": "Variables added to PATH, HOME, USER and LANG."},
    )
    working_directory = fields.String(
        data_key="workingDirectory",
        validate=[validate.Length(1, 4096), no_nul],
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


class InputActionSchema(StrictSchema):
    # What each type needs, stated in the document as ``_what_each_needs`` checks it.
    OPENAPI_EXTRA = {
        "oneOf": [
            {"properties": {"type": {"const": "key"}}, "required": ["keys"]},
            {"properties": {"type": {"const": "text"}}, "required": ["text"]},
            {"properties": {"type": {"enum": ["move", "drag"]}}, "required": ["x", "y"]},
            {"properties": {"type": {"enum": ["click", "double_click", "scroll"]}}},
        ],
        "if": {"properties": {"type": {"const": "drag"}}},
        "then": {"required": ["toX", "toY"]},
        "dependentRequired": {"x": ["y"], "y": ["x"]},
    }

    type = fields.String(
        required=True, validate=validate.OneOf(["key", "text", "move", "click", "double_click", "drag", "scroll"])
    )
    keys = fields.List(
        fields.String(validate=validate.Length(1, 32)),
        validate=validate.Length(1, 8),
        metadata={
            "description": "For key: a combination, pressed in order and released in reverse.",
            "example": ["ctrl", "c"],
        },
    )
    text = fields.String(validate=validate.Length(1, 10_000), metadata={"description": "For text: typed (US layout)."})
    x = fields.Integer(validate=validate.Range(0, 16384), metadata={"description": "Screenshot pixels from the left."})
    y = fields.Integer(validate=validate.Range(0, 16384))
    to_x = fields.Integer(
        data_key="toX", validate=validate.Range(0, 16384), metadata={"description": "Where a drag ends."}
    )
    to_y = fields.Integer(data_key="toY", validate=validate.Range(0, 16384))
    button = fields.String(load_default="left", validate=validate.OneOf(["left", "right", "middle"]))
    dx = fields.Integer(load_default=0, validate=validate.Range(-100, 100))
    dy = fields.Integer(
        load_default=0, validate=validate.Range(-100, 100), metadata={"description": "Wheel steps; negative is up."}
    )

    @ma.validates_schema
    def _what_each_needs(self, data, **kwargs):
        needs = {"key": ("keys",), "text": ("text",), "move": ("x", "y"), "drag": ("x", "y", "to_x", "to_y")}
        missing = [name for name in needs.get(data["type"], ()) if name not in data]
        if missing:
            raise ma.ValidationError({name: [f"Required for {data['type']}."] for name in missing})
        if ("x" in data) != ("y" in data):
            raise ma.ValidationError("x and y go together.")

    @ma.post_load
    def _action(self, data, **kwargs) -> InputAction:
        return InputAction(**{**data, "keys": tuple(data.get("keys", ()))})


class InputSchema(StrictSchema):
    actions = fields.List(fields.Nested(InputActionSchema), required=True, validate=validate.Length(1, 1000))


class InputResultSchema(ma.Schema):
    sent = fields.Integer(required=True, metadata={"description": "How many actions were sent, in order."})
