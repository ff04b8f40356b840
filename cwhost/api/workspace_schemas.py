"""Workspaces and their files as the API takes and shows them."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema, Timestamp, UnixTime, list_schema, url_field
from cwhost.api.schemas import name_field


class WorkspaceCreateSchema(StrictSchema):
    name = name_field("A label for people; optional.")


class WorkspaceSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(allow_none=True, required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["active", "archived"]),
        metadata={"description": "archived: read-only, and attached to no workstation."},
    )
    created_at = Timestamp(data_key="createdAt", required=True)


WorkspaceListSchema = list_schema(WorkspaceSchema, "WorkspaceList")


class WorkspaceFileSchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "Stable while the file keeps its path."})
    name = fields.String(attribute="path", required=True, metadata={"description": "Its path inside the workspace."})
    url = url_field("workspaces.file_content", "Downloads its content.", workspace_id="workspace_id", file_id="id")
    size = fields.Integer(required=True, metadata={"description": "In bytes."})
    created_at = UnixTime(
        attribute="modified_at",
        data_key="createdAt",
        required=True,
        metadata={"description": "When its content was last written."},
    )


WorkspaceFileListSchema = list_schema(WorkspaceFileSchema, "WorkspaceFileList")
