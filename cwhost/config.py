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

from cwhost.patterns import FullMatch
from cwhost.settings import flatten_errors, schema_for, setting
from cwhost.workstations.model import Configuration
from drivers.base import BootSource, GpuDevice

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def default_data_dir(environ=os.environ) -> str:
    # systemd's StateDirectory= exports STATE_DIRECTORY; elsewhere follow XDG.
    if environ.get("STATE_DIRECTORY"):
        return environ["STATE_DIRECTORY"].split(":")[0]
    xdg = environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(xdg, "cwhost")


def _strict_table(**declared: fields.Field) -> type[ma.Schema]:
    schema = ma.Schema.from_dict(declared)
    schema.Meta.unknown = ma.RAISE  # type: ignore[attr-defined]
    return schema


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


_GPU_TABLE = _strict_table(
    model=fields.String(required=True, validate=Length(1, 128)),
    pci_address=fields.String(
        required=True,
        validate=FullMatch(
            r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", error="must be a PCI address like 0000:65:00.0"
        ),
    ),
)


@dataclass(frozen=True)
class FakeDriverConfig:
    cpu_cores: int = setting(32, validate=Range(1))
    memory_gb: int = setting(128, validate=Range(1))
    storage_gb: int = setting(4096, validate=Range(1))
    # Each running fake guest is a real process burning this share of a CPU and holding this memory.
    guest_cpu_share: float = setting(0.02, validate=Range(0, 1))
    guest_memory_mb: int = setting(8, validate=Range(1, 65536))
    gpus: tuple[GpuDevice, ...] = setting(
        (
            GpuDevice("NVIDIA RTX A5000", "0000:65:00.0"),
            GpuDevice("NVIDIA RTX A5000", "0000:b3:00.0"),
            GpuDevice("NVIDIA L40S", "0000:ca:00.0"),
        ),
        field=fields.List(fields.Nested(_GPU_TABLE)),
        convert=lambda tables: tuple(GpuDevice(t["model"], t["pci_address"]) for t in tables),
    )


@dataclass(frozen=True)
class LibvirtDriverConfig:
    """Empty strings mean "none": no network (user-mode networking), no graphics, no base image."""

    uri: str = setting("qemu:///system")
    domain_type: str = setting("kvm", validate=OneOf(["kvm", "qemu"]))
    network: str = setting("default")
    graphics: str = setting("vnc", validate=OneOf(["vnc", "spice", ""]))
    graphics_listen: str = setting("127.0.0.1")
    disk_dir: str = setting("")
    base_image: str = setting("")
    kernel: str = setting("")
    initrd: str = setting("")
    cmdline: str = setting("")
    pid_dir: str = setting("/run/libvirt/qemu")
    gpu_vendors: tuple[int, ...] = setting(
        (0x10DE,),
        field=fields.List(fields.String(validate=FullMatch(r"^0x[0-9a-fA-F]{4}$", error="must be like 0x10de"))),
        convert=lambda vendors: tuple(int(v, 16) for v in vendors),
    )


@dataclass(frozen=True)
class DriverConfig:
    name: str = setting("fake", validate=OneOf(["fake", "libvirt"]))
    stop_timeout_seconds: float = setting(60.0, validate=Range(0, 3600))
    reconcile_interval_seconds: float = setting(30.0, validate=Range(0.1, 86400))
    fake: FakeDriverConfig = setting(FakeDriverConfig)
    libvirt: LibvirtDriverConfig = setting(LibvirtDriverConfig)


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
class Pricing:
    """Rates in USD; a GPU model without its own rate costs ``default_gpu_hour_usd``."""

    cpu_hour_usd: float = setting(0.02, validate=Range(0))
    memory_gb_hour_usd: float = setting(0.005, validate=Range(0))
    storage_gb_hour_usd: float = setting(0.0002, validate=Range(0))
    default_gpu_hour_usd: float = setting(1.0, validate=Range(0))
    gpu_hour_usd: tuple[tuple[str, float], ...] = setting(
        (),
        field=fields.Dict(keys=fields.String(validate=Length(1, 128)), values=fields.Float(validate=Range(0))),
        convert=lambda rates: tuple(sorted(rates.items())),
    )

    def gpu_rate(self, model: str) -> float:
        return dict(self.gpu_hour_usd).get(model, self.default_gpu_hour_usd)


@dataclass(frozen=True)
class AccountLimits:
    max_workstations: int
    max_running_cpu_cores: int
    max_running_memory_gb: int
    max_running_gpus: int
    # Workstations' disks and workspaces' files together, in GiB.
    max_storage_gb: int


_LIMIT_OVERRIDES = _strict_table(
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
    # The user cloud-init makes in every guest, with the account's SSH keys and sudo.
    user: str = setting("dev", validate=FullMatch(r"^[a-z_][a-z0-9_-]{0,31}$", error="must be a Linux user name"))


@dataclass(frozen=True)
class TypeSettings:
    """A workstation type as the file declares it (``[types.ID]``)."""

    cpu_cores: int = setting(validate=Range(1))
    memory_gb: int = setting(validate=Range(1))
    storage_gb: int = setting(validate=Range(1))
    description: str = setting("")
    gpu: str = setting("")
    region: str = setting("")
    idle_timeout_minutes: int = setting(0, validate=Range(0))
    running_timeout_minutes: int = setting(0, validate=Range(0))
    image: str = setting("")
    kernel: str = setting("")
    initrd: str = setting("")
    cmdline: str = setting("")


@dataclass(frozen=True)
class WorkstationType:
    id: str
    description: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    gpu: str | None
    region: str | None
    idle_timeout_minutes: int
    running_timeout_minutes: int
    boot: BootSource

    @classmethod
    def declared(cls, type_id: str, t: TypeSettings) -> WorkstationType:
        return cls(
            id=type_id,
            description=t.description,
            cpu_cores=t.cpu_cores,
            memory_gb=t.memory_gb,
            storage_gb=t.storage_gb,
            gpu=t.gpu or None,
            region=t.region or None,
            idle_timeout_minutes=t.idle_timeout_minutes,
            running_timeout_minutes=t.running_timeout_minutes,
            boot=BootSource(
                image=t.image or None, kernel=t.kernel or None, initrd=t.initrd or None, cmdline=t.cmdline or None
            ),
        )

    @property
    def missing_files(self) -> list[str]:
        """The boot files this type names that are not on disk."""
        named = (self.boot.image, self.boot.kernel, self.boot.initrd)
        return [path for path in named if path and not os.path.isfile(path)]

    @property
    def image_present(self) -> bool:
        return not self.missing_files

    @property
    def configuration(self) -> Configuration:
        """The configuration a workstation of this type gets by default."""
        return Configuration(self.cpu_cores, self.memory_gb, self.storage_gb, self.gpu, self.region or "")


# The second seed's types, with sizes for what each is for; no images, for the fake driver.
_SEED_TYPES = {
    "python": ("Python development", 4, 8, 64, 120),
    "nodejs": ("Node.js development", 4, 8, 64, 120),
    "golang": ("Go development", 4, 8, 64, 120),
    "chromium": ("A Chromium browser", 2, 4, 32, 60),
    "zoom-chromium": ("Chromium for Zoom calls", 4, 8, 32, 60),
    "meet-chromium": ("Chromium for Google Meet calls", 4, 8, 32, 60),
    "voip": ("A VoIP softphone", 2, 4, 16, 60),
    "voip-chromium": ("A VoIP softphone with Chromium", 4, 8, 32, 60),
    "max": ("The largest workstation this server offers", 16, 64, 512, 0),
}


def _types(declared: dict) -> tuple[WorkstationType, ...]:
    return tuple(WorkstationType.declared(type_id, t) for type_id, t in sorted(declared.items()))


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
    # Defining any type replaces the seed's nine.
    types: tuple[WorkstationType, ...] = setting(
        lambda: _types(
            {k: TypeSettings(*v[1:4], description=v[0], idle_timeout_minutes=v[4]) for k, v in _SEED_TYPES.items()}
        ),
        field=fields.Dict(keys=fields.String(validate=FullMatch(SLUG)), values=fields.Nested(schema_for(TypeSettings))),
        convert=_types,
    )

    @property
    def credits_when_exhausted(self) -> str:
        return self.credits.when_exhausted

    def workstation_type(self, type_id: str) -> WorkstationType | None:
        return next((t for t in self.types if t.id == type_id), None)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "cwhost.db"

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
