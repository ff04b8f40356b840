"""An account's SSH keys as the API takes and shows them."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import StrictSchema, Timestamp, list_schema
from cwhost.api.schemas import name_field
from cwhost.patterns import SSH_PUBLIC_KEY_PATTERN


class SshKeyCreateSchema(StrictSchema):
    name = name_field(required=True)
    public_key = fields.String(
        data_key="publicKey",
        required=True,
        validate=validate.Length(1, 16 * 1024),
        metadata={
            "description": "One OpenSSH public key line, as in a .pub file: type, key, optional comment.",
            "pattern": SSH_PUBLIC_KEY_PATTERN,
        },
    )


class SshKeySchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    public_key = fields.String(data_key="publicKey", required=True)
    fingerprint = fields.String(required=True, metadata={"description": "As ssh-keygen -lf shows it: SHA256:…"})
    created_at = Timestamp(data_key="createdAt", required=True)


SshKeyListSchema = list_schema(SshKeySchema, "SshKeyList")
