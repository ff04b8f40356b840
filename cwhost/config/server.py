"""Configuration: a TOML file, then environment overrides, validated once at start.

Every setting is declared once, as a field of a frozen dataclass with its
default and its rule (cwhost.settings); the validating schema is made from
those declarations. So ``cwhost serve`` with no file at all runs the fake
driver on a data directory of its own, and a bad value is reported with its
dotted name, e.g. ``server.port: Must be greater than or equal to 1``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

import marshmallow as ma
from marshmallow import fields
from marshmallow.validate import Length, OneOf, Range

from cwhost.config.agents import AudioConfig, GuestFilesConfig, ProcessesConfig, RecordingsConfig, StreamsConfig
from cwhost.config.driver import DriverConfig
from cwhost.images.types import TypeSettings, WorkstationType, declared_types, seed_types
from cwhost.patterns import MIRROR_PATTERN, FullMatch
from cwhost.settings import flatten_errors, schema_for, setting, strict_table
from cwhost.usage.pricing import Pricing

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def default_data_dir(environ=os.environ) -> str:
    # systemd's StateDirectory= exports STATE_DIRECTORY; elsewhere follow XDG.
    if environ.get("STATE_DIRECTORY"):
        return environ["STATE_DIRECTORY"].split(":")[0]
    xdg = environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(xdg, "cwhost")


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1")
    port: int = setting(8080, validate=Range(1, 65535))
    threads: int = setting(16, validate=Range(2, 256))
    # API requests handled at once; more are shed with 503. Fewer than threads,
    # so that /healthz and the 503s themselves always find a thread.
    max_in_flight: int = setting(12, validate=Range(1, 255))
    rate_limit_per_minute: int = setting(600, validate=Range(1))
    max_body_bytes: int = setting(1024 * 1024, validate=Range(1024, 1024**3))
    idempotency_key_hours: float = setting(24.0, validate=Range(0.01, 24 * 365))
    # Open sockets in all; and per client address, so that one host holding
    # idle or slow connections cannot lock the others out.
    connection_limit: int = setting(1024, validate=Range(16, 65536))
    max_connections_per_peer: int = setting(64, validate=Range(1, 65536))
    # An idle connection is closed after this long.
    idle_connection_seconds: int = setting(60, validate=Range(1, 3600))


@dataclass(frozen=True)
class WorkstationSizeConfig:
    """The largest single workstation an account may ask for, whatever the host has."""

    max_cpu_cores: int = setting(64, validate=Range(1))
    max_memory_gb: int = setting(512, validate=Range(1))
    max_storage_gb: int = setting(16384, validate=Range(1))
    # Storage promised to all workstations and workspaces, as a multiple of the host's.
    storage_overcommit: float = setting(1.0, validate=Range(0.1, 100))


@dataclass(frozen=True)
class SamplerConfig:
    interval_seconds: float = setting(10.0, validate=Range(0.05, 3600))
    # A workstation is idle while its VM uses less than this share of its cores.
    idle_cpu_share: float = setting(0.05, validate=Range(0, 1))
    retention_days: int = setting(30, validate=Range(1, 3650))


@dataclass(frozen=True)
class AccountLimits:
    max_workstations: int
    max_running_cpu_cores: int
    max_running_memory_gb: int
    max_running_gpus: int
    # Workstations' disks, workspaces' files and screen recordings together, in GiB.
    max_storage_gb: int


_LIMIT_OVERRIDES = strict_table(
    **{spec.name: fields.Integer(strict=True, validate=Range(0)) for spec in dataclass_fields(AccountLimits)}
)


@dataclass(frozen=True)
class LimitsConfig:
    """Per account: these defaults, with what ``accounts.NAME`` sets for one account."""

    max_workstations: int = setting(20, validate=Range(0))
    max_running_cpu_cores: int = setting(64, validate=Range(0))
    max_running_memory_gb: int = setting(256, validate=Range(0))
    max_running_gpus: int = setting(4, validate=Range(0))
    max_storage_gb: int = setting(2048, validate=Range(0))
    accounts: tuple[tuple[str, dict], ...] = setting(
        (),
        field=fields.Dict(keys=fields.String(validate=Length(1, 128)), values=fields.Nested(_LIMIT_OVERRIDES)),
        convert=lambda accounts: tuple(sorted(accounts.items())),
    )

    def for_account(self, name: str) -> AccountLimits:
        defaults = {spec.name: getattr(self, spec.name) for spec in dataclass_fields(AccountLimits)}
        return AccountLimits(**{**defaults, **dict(self.accounts).get(name, {})})


@dataclass(frozen=True)
class CreditsConfig:
    # "stop": an account out of credit has its workstations stopped; "refuse":
    # only new creates and launches are refused.
    when_exhausted: str = setting("stop", validate=OneOf(["stop", "refuse"]))


@dataclass(frozen=True)
class WorkspacesConfig:
    # Where workspaces live: empty means <data_dir>/workspaces. It must be one
    # file system, since uploads are staged in it and then renamed into place.
    dir: str = setting("")
    max_upload_bytes: int = setting(1024**3, validate=Range(1024, 1024**4))


@dataclass(frozen=True)
class GuestConfig:
    # The user the seed makes in every guest, with the account's SSH keys and sudo.
    user: str = setting("dev", validate=FullMatch(r"^[a-z_][a-z0-9_-]{0,31}$", error="must be a Linux user name"))


@dataclass(frozen=True)
class AccessConfig:
    # The server's name as users on the LAN reach it, in ssh commands, console
    # links and CDP URLs alike; empty means the name each request was sent to.
    public_host: str = setting("")
    # The host address forwarded ports listen on: every address by default.
    forward_listen: str = setting("0.0.0.0")
    # Host ports given to running workstations for SSH, each to one at a time.
    ssh_port_first: int = setting(22000, validate=Range(1024, 65535))
    ssh_port_last: int = setting(22999, validate=Range(1024, 65535))


@dataclass(frozen=True)
class SideListenerConfig:
    """A listener beside the API's port (the console's bridge, the CDP proxy); port 0, the default, is off."""

    port: int = setting(0, validate=Range(0, 65535))
    # Loopback, as the API: the LAN reaches it through a TLS proxy in front (docs/operations.md).
    listen: str = setting("127.0.0.1")
    # Open connections in all, and from one address: each holds a thread.
    max_connections: int = setting(256, validate=Range(1, 65536))
    max_connections_per_peer: int = setting(16, validate=Range(1, 65536))


@dataclass(frozen=True)
class ConsoleConfig(SideListenerConfig):
    """The WebSocket bridge between browsers and the VMs' VNC, which listens on the host's loopback only
    (the example configuration turns it on, at 6080)."""

    # noVNC's files, from Debian's novnc package.
    novnc_dir: str = setting("/usr/share/novnc")
    # How long a console link, and the WebSocket token it leads to, may wait to be used.
    link_seconds: float = setting(300.0, validate=Range(5, 3600))
    # Live views (POST /v1/workstations/{id}/live-views), which this bridge carries: how long one lasts
    # unless it says, the longest it may ask for, and how many a workstation may have at once.
    live_view_default_minutes: int = setting(60, validate=Range(1, 10080))
    live_view_max_minutes: int = setting(1440, validate=Range(1, 10080))
    live_views_per_workstation: int = setting(20, validate=Range(1, 1000))


@dataclass(frozen=True)
class BrowserConfig(SideListenerConfig):
    """The token-bound proxy to browser types' Chromium over CDP (access.browser.cdpUrl)."""


@dataclass(frozen=True)
class ExecConfig:
    # POST /v1/workstations/{id}/exec: each of stdout and stderr is cut to this.
    max_output_bytes: int = setting(1024 * 1024, validate=Range(1024, 16 * 1024 * 1024))
    # Guest operations (exec, input, screenshot) one account may have under
    # way at once; more answer 429. Keep it well under server.max_in_flight,
    # so that long commands of one account never hold every request slot.
    max_per_account: int = setting(2, validate=Range(1, 254))


@dataclass(frozen=True)
class ReadinessConfig:
    # A running workstation whose guest has not said it is ready this long after its launch gets
    # a log entry with what the guest last said, and a statusMessage; it stays running.
    timeout_seconds: float = setting(900.0, validate=Range(10, 86400))
    # How often cwhost asks the guests that are not ready yet (through their own agent channel).
    poll_seconds: float = setting(1.0, validate=Range(0.05, 60))
    # GET /v1/workstations/{id}?wait=ready: the longest one request waits, how many waits one
    # account may have at once (more answer 429), and how many in all (more answer 503). Waits
    # hold none of server.max_in_flight's slots, and have threads of their own.
    max_wait_seconds: int = setting(60, validate=Range(1, 600))
    max_waits_per_account: int = setting(4, validate=Range(1, 1024))
    max_waits: int = setting(32, validate=Range(1, 1024))


@dataclass(frozen=True)
class WebConfig:
    # The dashboard at /ui/: how long a sign-in lasts (its session cookie's life).
    session_minutes: int = setting(480, validate=Range(5, 10080))


@dataclass(frozen=True)
class ImagesConfig:
    # Where built images live: empty means <data_dir>/images.
    dir: str = setting("")
    # The Debian mirror to build from; empty means the host's own apt sources.
    mirror: str = setting("", validate=FullMatch(MIRROR_PATTERN, error="must be an http(s):// or file:// URI"))


@dataclass(frozen=True)
class Config:
    data_dir: Path = setting(field=fields.String(required=True), convert=lambda text: Path(text).expanduser().resolve())
    regions: tuple[str, ...] = setting(
        ("local",), field=fields.List(fields.String(validate=FullMatch(SLUG)), validate=Length(min=1)), convert=tuple
    )
    log_level: str = setting("INFO", validate=OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))
    server: ServerConfig = setting(ServerConfig)
    driver: DriverConfig = setting(DriverConfig)
    workstation: WorkstationSizeConfig = setting(WorkstationSizeConfig)
    sampler: SamplerConfig = setting(SamplerConfig)
    pricing: Pricing = setting(Pricing)
    limits: LimitsConfig = setting(LimitsConfig)
    credits: CreditsConfig = setting(CreditsConfig)
    workspaces: WorkspacesConfig = setting(WorkspacesConfig)
    guest: GuestConfig = setting(GuestConfig)
    images: ImagesConfig = setting(ImagesConfig)
    access: AccessConfig = setting(AccessConfig)
    console: ConsoleConfig = setting(ConsoleConfig)
    exec: ExecConfig = setting(ExecConfig)
    browser: BrowserConfig = setting(BrowserConfig)
    readiness: ReadinessConfig = setting(ReadinessConfig)
    web: WebConfig = setting(WebConfig)
    processes: ProcessesConfig = setting(ProcessesConfig)
    guest_files: GuestFilesConfig = setting(GuestFilesConfig)
    streams: StreamsConfig = setting(StreamsConfig)
    recordings: RecordingsConfig = setting(RecordingsConfig)
    audio: AudioConfig = setting(AudioConfig)
    # Defining any type replaces the seed's nine.
    types: tuple[WorkstationType, ...] = setting(
        seed_types,
        field=fields.Dict(keys=fields.String(validate=FullMatch(SLUG)), values=fields.Nested(schema_for(TypeSettings))),
        convert=declared_types,
    )

    @property
    def credits_when_exhausted(self) -> str:
        return self.credits.when_exhausted

    def workstation_type(self, type_id: str | None) -> WorkstationType | None:
        """The type ``type_id`` names; None for no type (a workstation made from a configuration alone)."""
        return next((t for t in self.types if t.id == type_id), None) if type_id else None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "cwhost.db"

    @property
    def guests_on_own_network(self) -> bool:
        """Whether guests are on cwhost's own isolated network (not an operator's bridge to the LAN)."""
        return self.driver.name == "fake" or not self.driver.libvirt.network

    @property
    def ssh_ports(self) -> range:
        return range(self.access.ssh_port_first, self.access.ssh_port_last + 1)

    @property
    def disk_dir(self) -> Path:
        """Where the libvirt driver makes the workstations' disks."""
        return Path(self.driver.libvirt.disk_dir) if self.driver.libvirt.disk_dir else self.data_dir / "disks"

    @property
    def images_dir(self) -> Path:
        return Path(self.images.dir) if self.images.dir else self.data_dir / "images"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def workspaces_dir(self) -> Path:
        return Path(self.workspaces.dir) if self.workspaces.dir else self.data_dir / "workspaces"


# Environment variables that override one setting each; the value is parsed as
# the setting's type by the same schema as the file.
ENV_OVERRIDES = {
    "CWHOST_DATA_DIR": ("data_dir",),
    "CWHOST_HOST": ("server", "host"),
    "CWHOST_PORT": ("server", "port"),
    "CWHOST_DRIVER": ("driver", "name"),
    "CWHOST_LOG_LEVEL": ("log_level",),
}
_INTEGER_SETTINGS = {("server", "port")}


def build_config(raw: dict) -> Config:
    """Validate a configuration mapping (as read from TOML) into a Config."""
    try:
        config = schema_for(Config).load(raw)
    except ma.ValidationError as exc:
        raise ConfigError("invalid configuration: " + "; ".join(flatten_errors(exc.messages))) from None
    # A type without a region is offered in the server's first.
    config = replace(config, types=tuple(replace(t, region=t.region or config.regions[0]) for t in config.types))
    if config.access.ssh_port_first > config.access.ssh_port_last:
        raise ConfigError("invalid configuration: access.ssh_port_first must not be above access.ssh_port_last")
    if config.server.max_in_flight >= config.server.threads:
        raise ConfigError(
            "invalid configuration: server.max_in_flight must be less than server.threads"
            " (so that /healthz and shed requests are still answered)"
        )
    return config


def load_config(path: str | os.PathLike | None = None, environ=os.environ) -> Config:
    """Read ``path`` (or ``$CWHOST_CONFIG``), apply environment overrides, validate."""
    path = path or environ.get("CWHOST_CONFIG")
    raw: dict = {}
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    raw.setdefault("data_dir", default_data_dir(environ))
    for variable, keys in ENV_OVERRIDES.items():
        if variable in environ:
            section = raw
            for key in keys[:-1]:
                section = section.setdefault(key, {})
            section[keys[-1]] = _env_value(variable, environ[variable], keys)
    return build_config(raw)


def _env_value(variable: str, value: str, keys: tuple[str, ...]):
    if keys not in _INTEGER_SETTINGS:
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{variable} must be an integer, got {value!r}") from None
