"""marshmallow schemas: what the API accepts and what it answers, and so the OpenAPI document."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.api.fields import (
    MAX_CPU_CORES,
    MAX_DISPLAY,
    MAX_MEMORY_GB,
    MAX_STORAGE_GB,
    MIN_DISPLAY,
    NAME_PATTERN,
    StrictSchema,
    Timestamp,
    UnixTime,
    WholeNumber,
    list_schema,
    size_field,
    timeout_field,
    url_field,
)
from cwhost.model import STATUSES
from cwhost.patterns import SSH_PUBLIC_KEY_PATTERN, FullMatch

# -- requests -----------------------------------------------------------------


class DisplayInSchema(StrictSchema):
    width = WholeNumber(
        required=True,
        validate=validate.Range(min=MIN_DISPLAY.width, max=MAX_DISPLAY.width),
        metadata={"description": "Pixels across."},
    )
    height = WholeNumber(
        required=True,
        validate=validate.Range(min=MIN_DISPLAY.height, max=MAX_DISPLAY.height),
        metadata={"description": "Pixels down."},
    )


class ConfigurationInSchema(StrictSchema):
    """A configuration in a request: on create, what a type does not give; on PATCH, what changes."""

    cpu_cores = size_field(MAX_CPU_CORES, "Virtual CPU cores.", data_key="cpuCores")
    memory_gb = size_field(MAX_MEMORY_GB, "Memory in GB.", data_key="memoryGB")
    storage_gb = size_field(
        MAX_STORAGE_GB, "Disk size in GB; by PATCH it may grow, never shrink.", data_key="storageGB"
    )
    gpu = fields.String(
        allow_none=True,
        validate=validate.Length(1, 128),
        metadata={"description": "A GPU model this host has (see GET /v1/host), or null."},
    )
    region = fields.String(
        validate=validate.Length(1, 63),
        metadata={"description": "A region this server serves; defaults to its first."},
    )
    display = fields.Nested(
        DisplayInSchema,
        metadata={
            "description": "Its screen, which screenshots show and input coordinates address; 1024x768 by default."
        },
    )

    @ma.post_load
    def _display_as_columns(self, data, **kwargs):
        display = data.pop("display", None)
        if display is not None:
            data["display_width"], data["display_height"] = display["width"], display["height"]
        return data


def name_field(description: str | None = None, **kwargs) -> fields.String:
    """A name: 1 to 63 of A-Za-z0-9._- (the pattern is also the document's)."""
    metadata = {"pattern": NAME_PATTERN, **({"description": description} if description else {})}
    return fields.String(
        validate=FullMatch(NAME_PATTERN, error="Must be 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' or '-'."),
        metadata=metadata,
        **kwargs,
    )


class WorkstationCreateSchema(StrictSchema):
    # The rule the service applies, told to clients: without a type, a whole
    # configuration. As if/then, which client generators leave alone, rather
    # than anyOf, which they turn into a union of anonymous types.
    OPENAPI_EXTRA = {
        "if": {"not": {"required": ["type"]}},
        "then": {
            "required": ["configuration"],
            "properties": {"configuration": {"required": ["cpuCores", "memoryGB", "storageGB"]}},
        },
    }
    name = name_field(required=True)
    configuration = fields.Nested(
        ConfigurationInSchema,
        metadata={
            "description": "cpuCores, memoryGB and storageGB are required unless `type` gives"
            " them; what is given overrides the type's defaults."
        },
    )
    type = fields.String(
        validate=validate.Length(1, 63),
        metadata={"description": "A workstation type id (GET /v1/workstation-types)."},
    )
    workspace_id = fields.String(data_key="workspaceId", validate=validate.Length(1, 63))
    ssh_public_keys = fields.List(
        fields.String(validate=validate.Length(1, 16 * 1024), metadata={"pattern": SSH_PUBLIC_KEY_PATTERN}),
        data_key="sshPublicKeys",
        validate=validate.Length(max=20),
        metadata={"description": "OpenSSH public keys for this workstation alone, besides the account's."},
    )
    idle_timeout_minutes = timeout_field(
        "Stop after this many idle minutes; default: the type's, else 0.", data_key="idleTimeoutMinutes"
    )
    running_timeout_minutes = timeout_field(
        "Stop after this many running minutes; default: the type's, else 0.",
        data_key="runningTimeoutMinutes",
    )


def create_arguments(body: dict) -> dict:
    """A loaded WorkstationCreateSchema body as Lifecycle.create's keyword arguments (the API's and the dashboard's)."""
    return {
        "name": body["name"],
        "configuration": body.get("configuration"),
        "type_id": body.get("type"),
        "workspace_id": body.get("workspace_id"),
        "idle_timeout_minutes": body.get("idle_timeout_minutes"),
        "running_timeout_minutes": body.get("running_timeout_minutes"),
        "ssh_public_keys": body.get("ssh_public_keys"),
    }


class WorkstationPatchSchema(StrictSchema):
    name = name_field()
    configuration = fields.Nested(ConfigurationInSchema, load_default=dict)
    ssh_public_keys = fields.List(
        fields.String(validate=validate.Length(1, 16 * 1024), metadata={"pattern": SSH_PUBLIC_KEY_PATTERN}),
        data_key="sshPublicKeys",
        validate=validate.Length(max=20),
        metadata={"description": "Replaces the workstation's own keys ([] removes them); used from its next launch."},
    )
    idle_timeout_minutes = timeout_field("Stop after this many idle minutes.", data_key="idleTimeoutMinutes")
    running_timeout_minutes = timeout_field("Stop after this many running minutes.", data_key="runningTimeoutMinutes")


def patch_arguments(body: dict) -> dict:
    """A loaded WorkstationPatchSchema body as Lifecycle.patch's keyword arguments (the API's and the dashboard's)."""
    return {
        "name": body.get("name"),
        "configuration": body["configuration"],
        "idle_timeout_minutes": body.get("idle_timeout_minutes"),
        "running_timeout_minutes": body.get("running_timeout_minutes"),
        "ssh_public_keys": body.get("ssh_public_keys"),
    }


# -- responses ----------------------------------------------------------------


class ErrorSchema(ma.Schema):
    error = fields.String(required=True, metadata={"description": "A stable error code."})
    message = fields.String(required=True, metadata={"description": "One human sentence."})
    request_id = fields.String(data_key="requestId", required=True)
    details = fields.Dict(metadata={"description": "Validation messages by field."})
    balance_usd = fields.Float(data_key="balanceUSD", metadata={"description": "With 402: the account's balance."})


class DisplaySchema(ma.Schema):
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)


class ConfigurationSchema(ma.Schema):
    cpu_cores = fields.Integer(data_key="cpuCores", required=True)
    memory_gb = fields.Integer(data_key="memoryGB", required=True)
    gpu = fields.String(allow_none=True, required=True)
    storage_gb = fields.Integer(data_key="storageGB", required=True)
    region = fields.String(required=True)
    display = fields.Nested(DisplaySchema, required=True)


class WorkspaceRefSchema(ma.Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["active", "archived"]))
    created_at = Timestamp(data_key="createdAt", required=True)


class ConsoleSchema(ma.Schema):
    protocol = fields.String(required=True, validate=validate.OneOf(["vnc", "spice"]))
    host = fields.String(required=True, metadata={"description": "The host's loopback: reach it through `url`."})
    port = fields.Integer(required=True)
    password = fields.String(allow_none=True, required=True, metadata={"description": "Made anew at every launch."})
    url = fields.String(
        metadata={
            "description": "Opens the display in a browser (noVNC). Works once, for a few minutes;"
            " reading the workstation again gives a fresh one."
        }
    )
    websocket_url = fields.String(
        data_key="websocketUrl",
        metadata={"description": "The token-bound WebSocket behind the browser console, for programs embedding noVNC."},
    )


class SshSchema(ma.Schema):
    host = fields.String(required=True, metadata={"description": "The server's name on the LAN."})
    port = fields.Integer(required=True, metadata={"description": "A host port forwarded to the guest's port 22."})
    user = fields.String(required=True)
    command = fields.String(required=True, metadata={"example": "ssh -p 22014 dev@gpu-server.lan"})
    host_key_fingerprint = fields.String(
        data_key="hostKeyFingerprint",
        allow_none=True,
        required=True,
        metadata={
            "description": "The guest's SSH host key (ed25519, made by cwhost), as ssh-keygen -l prints it;"
            " null for a workstation made before cwhost made host keys.",
            "example": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        },
    )
    known_hosts = fields.String(
        data_key="knownHosts",
        allow_none=True,
        required=True,
        metadata={
            "description": "One line for ~/.ssh/known_hosts, naming [host]:port as ssh looks it up, so that"
            " StrictHostKeyChecking=yes accepts the guest and no other; null as hostKeyFingerprint.",
            "example": "[gpu-server.lan]:22014 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP...",
        },
    )


class BrowserSchema(ma.Schema):
    cdp_url = fields.String(
        data_key="cdpUrl",
        required=True,
        metadata={
            "description": "The browser's Chrome DevTools Protocol WebSocket, bound to a token (connect within"
            " a few minutes): Playwright's connect_over_cdp(), Puppeteer's connect({browserWSEndpoint})."
        },
    )


class AccessSchema(ma.Schema):
    ssh = fields.Nested(
        SshSchema,
        allow_none=True,
        required=True,
        metadata={"description": "Null until the guest's address is known, on a bridged network."},
    )
    console = fields.Nested(
        ConsoleSchema,
        allow_none=True,
        required=True,
        metadata={"description": "Null when the server offers no console, or the hypervisor is unreachable."},
    )
    browser = fields.Nested(
        BrowserSchema, allow_none=True, metadata={"description": "For types with Chromium, when cwhost proxies CDP."}
    )
    ip_addresses = fields.List(
        fields.String(),
        data_key="ipAddresses",
        required=True,
        metadata={"description": "The guest's addresses, once its agent reports them."},
    )


class WorkstationSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    type = fields.String(allow_none=True, required=True)
    workspace = fields.Nested(WorkspaceRefSchema, allow_none=True, required=True)
    configuration = fields.Nested(ConfigurationSchema, required=True)
    created_at = Timestamp(data_key="createdAt", required=True)
    started_at = Timestamp(data_key="startedAt", allow_none=True, required=True)
    status_message = fields.String(data_key="statusMessage", allow_none=True, required=True)
    ready = fields.Boolean(
        required=True,
        metadata={
            "description": "Running, and its guest has said it is ready: first-boot work done, workspace"
            " mounted, sshd answering, and DevTools for browser types. Wait for it with ?wait=ready."
        },
    )
    ready_at = Timestamp(
        data_key="readyAt",
        allow_none=True,
        required=True,
        metadata={"description": "When its guest said it was ready, in this run; null until then."},
    )
    access = fields.Nested(AccessSchema, allow_none=True, required=True)
    idle_timeout_minutes = fields.Integer(data_key="idleTimeoutMinutes", required=True)
    running_timeout_minutes = fields.Integer(data_key="runningTimeoutMinutes", required=True)


WorkstationListSchema = list_schema(WorkstationSchema, "WorkstationList")


class GpuSchema(ma.Schema):
    model = fields.String(required=True)
    pci_address = fields.String(data_key="pciAddress", required=True)
    iommu_group = fields.Integer(data_key="iommuGroup", allow_none=True, required=True)
    state = fields.String(required=True, validate=validate.OneOf(["free", "assigned"]))
    holder = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "The workstation holding it, when the caller may see that one."},
    )


class HostSchema(ma.Schema):
    cpu_cores = fields.Integer(data_key="cpuCores", required=True)
    memory_gb = fields.Integer(data_key="memoryGB", required=True)
    storage_gb = fields.Integer(data_key="storageGB", required=True)
    cpu_cores_allocated = fields.Integer(data_key="cpuCoresAllocated", required=True)
    memory_gb_allocated = fields.Integer(data_key="memoryGBAllocated", required=True)
    regions = fields.List(fields.String(), required=True)
    gpus = fields.List(fields.Nested(GpuSchema), required=True)


class HealthSchema(ma.Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class LogSchema(ma.Schema):
    id = fields.String(required=True)
    type = fields.String(
        required=True,
        validate=validate.OneOf(["event", "console"]),
        metadata={"description": "event: a state change, error or finding; console: the VM's serial console."},
    )
    level = fields.String(required=True, validate=validate.OneOf(["debug", "info", "warning", "error"]))
    url = url_field("logs.log_content", "Downloads the log's text.", workstation_id="workstation_id", log_id="id")
    created_at = UnixTime(data_key="createdAt", required=True)
    message = fields.String(required=True)


LogListSchema = list_schema(LogSchema, "LogList")
