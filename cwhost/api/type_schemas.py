"""What /v1/workstation-types answers: each type's defaults, packages and built image."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from cwhost.api.fields import UnixTime, list_schema
from cwhost.api.schemas import ConfigurationSchema


class PackageVersionSchema(ma.Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)


class BuiltImageSchema(ma.Schema):
    built_at = UnixTime(data_key="builtAt", required=True)
    size_bytes = fields.Integer(data_key="sizeBytes", required=True, metadata={"description": "The qcow2 file's size."})
    sha256 = fields.String(required=True, metadata={"description": "The qcow2 file's SHA-256, in hex."})
    packages = fields.List(
        fields.Nested(PackageVersionSchema),
        required=True,
        metadata={"description": "The packages the image was built from, by name, with the versions installed."},
    )


class WorkstationTypeSchema(ma.Schema):
    id = fields.String(required=True)
    description = fields.String(required=True)
    configuration = fields.Nested(ConfigurationSchema, required=True)
    idle_timeout_minutes = fields.Integer(data_key="idleTimeoutMinutes", required=True)
    running_timeout_minutes = fields.Integer(data_key="runningTimeoutMinutes", required=True)
    packages = fields.List(
        fields.String(), required=True, metadata={"description": "What its image installs beyond the base."}
    )
    hardware = fields.List(fields.String(), required=True, metadata={"example": ["keyboard", "mouse", "display"]})
    software = fields.List(fields.String(), required=True, metadata={"example": ["ssh", "terminal", "vnc"]})
    capabilities = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "What a program can do through cwhost: exec, screenshot, input.", "example": ["exec"]},
    )
    image_present = fields.Boolean(
        data_key="imagePresent",
        required=True,
        metadata={"description": "Whether every file the type boots from is on the server."},
    )
    missing_files = fields.List(fields.String(), data_key="missingFiles", required=True)
    image = fields.Nested(
        BuiltImageSchema,
        required=True,
        allow_none=True,
        metadata={"description": "The image new workstations get, as `cwhost images build` made it; null if none."},
    )


WorkstationTypeListSchema = list_schema(WorkstationTypeSchema, "WorkstationTypeList")
