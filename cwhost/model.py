"""What a workstation is: its states, its configuration, its row in the database, its domain's name.

A leaf: it imports nothing of cwhost's but identifiers, so that the sampler,
the schemas and every layer can use it without cycles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from drivers.base import DEFAULT_DISPLAY, BootSource, ConsoleAccess, Display, DomainSpec

PROVISIONING, STOPPED, RUNNING, ERROR = "provisioning", "stopped", "running", "error"
STATUSES = (PROVISIONING, STOPPED, RUNNING, ERROR)
DOMAIN_PREFIX = "cwhost-"
# What a type gives a workstation it makes; the display is every workstation's own (by default XGA).
TYPE_CONFIGURATION_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "gpu", "region")
CONFIGURATION_FIELDS = (*TYPE_CONFIGURATION_FIELDS, "display_width", "display_height")
# What a running workstation holds of the host, and what is true of its run only, as its row's
# columns: given back, or forgotten, when it stops.
HELD_WHILE_RUNNING = ("gpu_address", "ssh_port", "ready_at")
RELEASED = dict.fromkeys(HELD_WHILE_RUNNING)


def domain_name(workstation_id: str) -> str:
    return DOMAIN_PREFIX + workstation_id


@dataclass(frozen=True)
class Configuration:
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    gpu: str | None
    region: str
    display_width: int = DEFAULT_DISPLAY.width
    display_height: int = DEFAULT_DISPLAY.height

    @property
    def display(self) -> Display:
        return Display(self.display_width, self.display_height)


@dataclass(frozen=True)
class Workstation:
    id: str
    account_id: str
    name: str
    status: str
    type: str | None
    workspace_id: str | None
    configuration: Configuration
    created_at: str
    started_at: str | None
    status_message: str | None
    idle_timeout_minutes: int
    running_timeout_minutes: int
    gpu_address: str | None
    boot: BootSource = BootSource()
    # Keys given for this workstation alone, besides its account's.
    ssh_public_keys: tuple[str, ...] = ()
    # The host port forwarded to its SSH while it runs.
    ssh_port: int | None = None
    # Its SSH host key's public line (cwhost made the key); None for one made before host keys.
    ssh_host_key: str | None = None
    # When its guest reported ready, in this run; None until then and while stopped.
    ready_at: str | None = None
    # What other layers derive from this version of the record, computed once (the API's JSON of it).
    # Every change makes a new Workstation, and dataclasses.replace() starts it empty.
    derived: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def domain_name(self) -> str:
        return domain_name(self.id)

    @property
    def ready(self) -> bool:
        """Whether it runs and its guest has said it is ready, in this run."""
        return self.status == RUNNING and self.ready_at is not None

    def spec(self) -> DomainSpec:
        c = self.configuration
        return DomainSpec(
            name=self.domain_name,
            title=self.name,
            cpu_cores=c.cpu_cores,
            memory_gb=c.memory_gb,
            storage_gb=c.storage_gb,
            boot=self.boot,
            display=c.display,
        )


@dataclass(frozen=True)
class SshAccess:
    host: str
    port: int
    user: str
    # The guest's host key as clients check it; None for a workstation made before cwhost made them.
    host_key_fingerprint: str | None = None
    known_hosts: str | None = None

    @property
    def command(self) -> str:
        return f"ssh -p {self.port} {self.user}@{self.host}" if self.port != 22 else f"ssh {self.user}@{self.host}"


@dataclass(frozen=True)
class Reach:
    """How a user reaches a running workstation: SSH, its console, the guest's addresses."""

    ssh: SshAccess | None
    console: ConsoleAccess | None
    ip_addresses: tuple[str, ...]


def from_row(row: dict) -> Workstation:
    return Workstation(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        status=row["status"],
        type=row["type"],
        workspace_id=row["workspace_id"],
        configuration=Configuration(**{name: row[name] for name in CONFIGURATION_FIELDS}),
        created_at=row["created_at"],
        started_at=row["started_at"],
        status_message=row["status_message"],
        idle_timeout_minutes=row["idle_timeout_minutes"],
        running_timeout_minutes=row["running_timeout_minutes"],
        gpu_address=row["gpu_address"],
        boot=BootSource(
            image=row.get("boot_image"),
            kernel=row.get("boot_kernel"),
            initrd=row.get("boot_initrd"),
            cmdline=row.get("boot_cmdline"),
        ),
        ssh_public_keys=tuple(json.loads(row.get("ssh_public_keys") or "[]")),
        ssh_port=row.get("ssh_port"),
        ssh_host_key=row.get("ssh_host_key"),
        ready_at=row.get("ready_at"),
    )


def to_row(ws: Workstation) -> dict:
    """The workstation's columns, as ``from_row`` reads them (a live one: ``deleted_at`` is not its to say)."""
    boot = ws.boot
    return {
        "id": ws.id,
        "account_id": ws.account_id,
        "name": ws.name,
        "status": ws.status,
        "type": ws.type,
        "workspace_id": ws.workspace_id,
        **{name: getattr(ws.configuration, name) for name in CONFIGURATION_FIELDS},
        "created_at": ws.created_at,
        "started_at": ws.started_at,
        "status_message": ws.status_message,
        "idle_timeout_minutes": ws.idle_timeout_minutes,
        "running_timeout_minutes": ws.running_timeout_minutes,
        "gpu_address": ws.gpu_address,
        "boot_image": boot.image,
        "boot_kernel": boot.kernel,
        "boot_initrd": boot.initrd,
        "boot_cmdline": boot.cmdline,
        "ssh_public_keys": json.dumps(list(ws.ssh_public_keys)),
        "ssh_port": ws.ssh_port,
        "ssh_host_key": ws.ssh_host_key,
        "ready_at": ws.ready_at,
    }


def describe_change(old: Workstation, new: Workstation) -> str:
    """The log's sentence for a PATCH: what changed, from what to what."""
    changes = []
    if new.name != old.name:
        changes.append(f"name {old.name} -> {new.name}")
    for name in CONFIGURATION_FIELDS:
        before, after = getattr(old.configuration, name), getattr(new.configuration, name)
        if before != after:
            changes.append(f"{name} {before} -> {after}")
    if new.ssh_public_keys != old.ssh_public_keys:
        changes.append(f"its own SSH keys {len(old.ssh_public_keys)} -> {len(new.ssh_public_keys)}")
    return "Reconfigured: " + (", ".join(changes) if changes else "nothing changed") + "."
