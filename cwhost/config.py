"""Configuration: a TOML file, then environment overrides, validated once at start.

Every setting has an embedded default, so ``cwhost serve`` with no file at all
runs the fake driver on a data directory of its own. Validation reuses
marshmallow (already needed by the API) so that a bad value is reported with
its dotted name, e.g. ``server.port: Must be greater than or equal to 1``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.patterns import FullMatch
from drivers.base import BootSource, GpuDevice


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def default_data_dir(environ=os.environ) -> str:
    # systemd's StateDirectory= exports STATE_DIRECTORY; elsewhere follow XDG.
    if environ.get("STATE_DIRECTORY"):
        return environ["STATE_DIRECTORY"].split(":")[0]
    xdg = environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return os.path.join(xdg, "cwhost")


class _Section(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class ServerSchema(_Section):
    host = fields.String(load_default="127.0.0.1")
    idempotency_key_hours = fields.Float(load_default=24.0, validate=validate.Range(0.01, 24 * 365))
    rate_limit_per_minute = fields.Integer(load_default=600, strict=True, validate=validate.Range(1))
    port = fields.Integer(load_default=8080, strict=True, validate=validate.Range(1, 65535))
    threads = fields.Integer(load_default=16, strict=True, validate=validate.Range(2, 256))
    max_in_flight = fields.Integer(load_default=12, strict=True, validate=validate.Range(1, 255))
    max_body_bytes = fields.Integer(
        load_default=1024 * 1024, strict=True, validate=validate.Range(1024, 1024**3)
    )
    connection_limit = fields.Integer(load_default=1024, strict=True, validate=validate.Range(16, 65536))
    max_connections_per_peer = fields.Integer(load_default=64, strict=True, validate=validate.Range(1, 65536))
    idle_connection_seconds = fields.Integer(load_default=60, strict=True, validate=validate.Range(1, 3600))


class FakeGpuSchema(_Section):
    model = fields.String(required=True, validate=validate.Length(1, 128))
    pci_address = fields.String(
        required=True,
        validate=FullMatch(
            r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$",
            error="must be a PCI address like 0000:65:00.0",
        ),
    )


class FakeDriverSchema(_Section):
    cpu_cores = fields.Integer(load_default=32, strict=True, validate=validate.Range(1))
    memory_gb = fields.Integer(load_default=128, strict=True, validate=validate.Range(1))
    storage_gb = fields.Integer(load_default=4096, strict=True, validate=validate.Range(1))
    guest_cpu_share = fields.Float(load_default=0.02, validate=validate.Range(0, 1))
    guest_memory_mb = fields.Integer(load_default=8, strict=True, validate=validate.Range(1, 65536))
    gpus = fields.List(
        fields.Nested(FakeGpuSchema),
        load_default=lambda: [
            {"model": "NVIDIA RTX A5000", "pci_address": "0000:65:00.0"},
            {"model": "NVIDIA RTX A5000", "pci_address": "0000:b3:00.0"},
            {"model": "NVIDIA L40S", "pci_address": "0000:ca:00.0"},
        ],
    )


class LibvirtDriverSchema(_Section):
    uri = fields.String(load_default="qemu:///system")
    domain_type = fields.String(load_default="kvm", validate=validate.OneOf(["kvm", "qemu"]))
    network = fields.String(load_default="default")
    graphics = fields.String(load_default="vnc", validate=validate.OneOf(["vnc", "spice", ""]))
    graphics_listen = fields.String(load_default="127.0.0.1")
    disk_dir = fields.String(load_default="")
    base_image = fields.String(load_default="")
    kernel = fields.String(load_default="")
    initrd = fields.String(load_default="")
    cmdline = fields.String(load_default="")
    pid_dir = fields.String(load_default="/run/libvirt/qemu")
    gpu_vendors = fields.List(
        fields.String(validate=FullMatch(r"^0x[0-9a-fA-F]{4}$", error="must be like 0x10de")),
        load_default=lambda: ["0x10de"],
    )


class DriverSchema(_Section):
    name = fields.String(load_default="fake", validate=validate.OneOf(["fake", "libvirt"]))
    stop_timeout_seconds = fields.Float(load_default=60.0, validate=validate.Range(0, 3600))
    reconcile_interval_seconds = fields.Float(load_default=30.0, validate=validate.Range(0.1, 86400))
    fake = fields.Nested(FakeDriverSchema, load_default=lambda: FakeDriverSchema().load({}))
    libvirt = fields.Nested(LibvirtDriverSchema, load_default=lambda: LibvirtDriverSchema().load({}))


class WorkstationSizeSchema(_Section):
    max_cpu_cores = fields.Integer(load_default=64, strict=True, validate=validate.Range(1))
    max_memory_gb = fields.Integer(load_default=512, strict=True, validate=validate.Range(1))
    max_storage_gb = fields.Integer(load_default=16384, strict=True, validate=validate.Range(1))
    storage_overcommit = fields.Float(load_default=1.0, validate=validate.Range(0.1, 100))


class SamplerSchema(_Section):
    interval_seconds = fields.Float(load_default=10.0, validate=validate.Range(0.05, 3600))
    idle_cpu_share = fields.Float(load_default=0.05, validate=validate.Range(0, 1))
    retention_days = fields.Integer(load_default=30, strict=True, validate=validate.Range(1, 3650))


class PricingSchema(_Section):
    cpu_hour_usd = fields.Float(load_default=0.02, validate=validate.Range(0))
    memory_gb_hour_usd = fields.Float(load_default=0.005, validate=validate.Range(0))
    storage_gb_hour_usd = fields.Float(load_default=0.0002, validate=validate.Range(0))
    default_gpu_hour_usd = fields.Float(load_default=1.0, validate=validate.Range(0))
    gpu_hour_usd = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 128)),
        values=fields.Float(validate=validate.Range(0)),
        load_default=dict,
    )


class AccountLimitsSchema(_Section):
    max_workstations = fields.Integer(strict=True, validate=validate.Range(0))
    max_running_cpu_cores = fields.Integer(strict=True, validate=validate.Range(0))
    max_running_memory_gb = fields.Integer(strict=True, validate=validate.Range(0))
    max_running_gpus = fields.Integer(strict=True, validate=validate.Range(0))
    max_storage_gb = fields.Integer(strict=True, validate=validate.Range(0))


class LimitsSchema(_Section):
    max_workstations = fields.Integer(load_default=20, strict=True, validate=validate.Range(0))
    max_running_cpu_cores = fields.Integer(load_default=64, strict=True, validate=validate.Range(0))
    max_running_memory_gb = fields.Integer(load_default=256, strict=True, validate=validate.Range(0))
    max_running_gpus = fields.Integer(load_default=4, strict=True, validate=validate.Range(0))
    max_storage_gb = fields.Integer(load_default=2048, strict=True, validate=validate.Range(0))
    accounts = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 128)),
        values=fields.Nested(AccountLimitsSchema),
        load_default=dict,
    )


class CreditsSchema(_Section):
    when_exhausted = fields.String(load_default="stop", validate=validate.OneOf(["stop", "refuse"]))


class WorkspacesSchema(_Section):
    dir = fields.String(load_default="")
    max_upload_bytes = fields.Integer(
        load_default=1024**3, strict=True, validate=validate.Range(1024, 1024**4)
    )


class WorkstationTypeSchema(_Section):
    description = fields.String(load_default="")
    cpu_cores = fields.Integer(required=True, strict=True, validate=validate.Range(1))
    memory_gb = fields.Integer(required=True, strict=True, validate=validate.Range(1))
    storage_gb = fields.Integer(required=True, strict=True, validate=validate.Range(1))
    gpu = fields.String(load_default="")
    region = fields.String(load_default="")
    idle_timeout_minutes = fields.Integer(load_default=0, strict=True, validate=validate.Range(0))
    running_timeout_minutes = fields.Integer(load_default=0, strict=True, validate=validate.Range(0))
    image = fields.String(load_default="")
    kernel = fields.String(load_default="")
    initrd = fields.String(load_default="")
    cmdline = fields.String(load_default="")


def _seed_types() -> dict:
    """The second seed's types, with sizes for what each is for; no images, for the fake driver."""
    sizes = {
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
    return {
        type_id: WorkstationTypeSchema().load(
            {
                "description": description,
                "cpu_cores": cores,
                "memory_gb": memory,
                "storage_gb": storage,
                "idle_timeout_minutes": idle,
            }
        )
        for type_id, (description, cores, memory, storage, idle) in sizes.items()
    }


class ConfigSchema(_Section):
    data_dir = fields.String(load_default=default_data_dir)
    regions = fields.List(
        fields.String(validate=FullMatch(r"^[a-z0-9][a-z0-9-]{0,62}$")),
        load_default=lambda: ["local"],
        validate=validate.Length(min=1),
    )
    log_level = fields.String(
        load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"])
    )
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    driver = fields.Nested(DriverSchema, load_default=lambda: DriverSchema().load({}))
    workstation = fields.Nested(
        WorkstationSizeSchema, load_default=lambda: WorkstationSizeSchema().load({})
    )
    sampler = fields.Nested(SamplerSchema, load_default=lambda: SamplerSchema().load({}))
    pricing = fields.Nested(PricingSchema, load_default=lambda: PricingSchema().load({}))
    limits = fields.Nested(LimitsSchema, load_default=lambda: LimitsSchema().load({}))
    credits = fields.Nested(CreditsSchema, load_default=lambda: CreditsSchema().load({}))
    workspaces = fields.Nested(WorkspacesSchema, load_default=lambda: WorkspacesSchema().load({}))
    types = fields.Dict(
        keys=fields.String(validate=FullMatch(r"^[a-z0-9][a-z0-9-]{0,62}$")),
        values=fields.Nested(WorkstationTypeSchema),
        load_default=_seed_types,
    )


@dataclass(frozen=True)
class ServerConfig:
    host: str
    idempotency_key_hours: float
    rate_limit_per_minute: int
    port: int
    threads: int
    # API requests handled at once; more are shed with 503. Fewer than threads,
    # so that /healthz and the 503s themselves always find a thread.
    max_in_flight: int
    max_body_bytes: int
    # Open sockets in all; and per client address, so that one host holding
    # idle or slow connections cannot lock the others out.
    connection_limit: int
    max_connections_per_peer: int
    # An idle connection is closed after this long.
    idle_connection_seconds: int


@dataclass(frozen=True)
class FakeDriverConfig:
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    guest_cpu_share: float
    guest_memory_mb: int
    gpus: tuple[GpuDevice, ...]


@dataclass(frozen=True)
class LibvirtDriverConfig:
    """Empty strings mean "none": no network (user-mode networking), no graphics, no base image."""

    uri: str
    domain_type: str
    network: str
    graphics: str
    graphics_listen: str
    disk_dir: str
    base_image: str
    kernel: str
    initrd: str
    cmdline: str
    pid_dir: str
    gpu_vendors: tuple[int, ...]


@dataclass(frozen=True)
class DriverConfig:
    name: str
    stop_timeout_seconds: float
    reconcile_interval_seconds: float
    fake: FakeDriverConfig
    libvirt: LibvirtDriverConfig


@dataclass(frozen=True)
class WorkstationSizeConfig:
    """Largest single workstation an account may ask for, whatever the host has."""

    max_cpu_cores: int
    max_memory_gb: int
    max_storage_gb: int
    # Storage promised to all workstations and workspaces, as a multiple of the host's.
    storage_overcommit: float


@dataclass(frozen=True)
class SamplerConfig:
    interval_seconds: float
    # A workstation is idle while its VM uses less than this share of its cores.
    idle_cpu_share: float
    retention_days: int


@dataclass(frozen=True)
class Pricing:
    """Rates in USD; a GPU model without its own rate costs ``default_gpu_hour_usd``."""

    cpu_hour_usd: float
    memory_gb_hour_usd: float
    storage_gb_hour_usd: float
    default_gpu_hour_usd: float
    gpu_hour_usd: tuple[tuple[str, float], ...]

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


@dataclass(frozen=True)
class LimitsConfig:
    defaults: AccountLimits
    accounts: tuple[tuple[str, dict], ...]

    def for_account(self, name: str) -> AccountLimits:
        """The defaults, with what the configuration sets for this account by name."""
        return replace(self.defaults, **dict(self.accounts).get(name, {}))


@dataclass(frozen=True)
class WorkspacesConfig:
    # Where workspaces live: empty means <data_dir>/workspaces. It must be one
    # file system, since uploads are staged in it and then renamed into place.
    dir: str
    max_upload_bytes: int


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

    def missing_files(self) -> list[str]:
        """The boot files this type names that are not on disk."""
        named = (self.boot.image, self.boot.kernel, self.boot.initrd)
        return [path for path in named if path and not os.path.isfile(path)]


@dataclass(frozen=True)
class Config:
    data_dir: Path
    regions: tuple[str, ...]
    log_level: str
    server: ServerConfig
    driver: DriverConfig
    workstation: WorkstationSizeConfig
    sampler: SamplerConfig
    pricing: Pricing
    limits: LimitsConfig
    # "stop": an account out of credit has its workstations stopped; "refuse":
    # only new creates and launches are refused.
    credits_when_exhausted: str
    types: tuple[WorkstationType, ...]
    workspaces: WorkspacesConfig

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


def _flatten_errors(messages, prefix=""):
    for key, value in messages.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten_errors(value, f"{name}.")
        else:
            yield f"{name}: {' '.join(str(v) for v in value)}"


def build_config(raw: dict) -> Config:
    """Validate a configuration mapping (as read from TOML) into a Config."""
    try:
        loaded = ConfigSchema().load(raw)
    except ma.ValidationError as exc:
        raise ConfigError("invalid configuration: " + "; ".join(_flatten_errors(exc.messages)))
    if loaded["server"]["max_in_flight"] >= loaded["server"]["threads"]:
        raise ConfigError(
            "invalid configuration: server.max_in_flight must be less than server.threads"
            " (so that /healthz and shed requests are still answered)"
        )
    fake = loaded["driver"]["fake"]
    return Config(
        data_dir=Path(loaded["data_dir"]).expanduser().resolve(),
        regions=tuple(loaded["regions"]),
        log_level=loaded["log_level"],
        server=ServerConfig(**loaded["server"]),
        driver=DriverConfig(
            name=loaded["driver"]["name"],
            stop_timeout_seconds=loaded["driver"]["stop_timeout_seconds"],
            reconcile_interval_seconds=loaded["driver"]["reconcile_interval_seconds"],
            fake=FakeDriverConfig(
                cpu_cores=fake["cpu_cores"],
                memory_gb=fake["memory_gb"],
                storage_gb=fake["storage_gb"],
                guest_cpu_share=fake["guest_cpu_share"],
                guest_memory_mb=fake["guest_memory_mb"],
                gpus=tuple(GpuDevice(g["model"], g["pci_address"]) for g in fake["gpus"]),
            ),
            libvirt=LibvirtDriverConfig(
                **{
                    **loaded["driver"]["libvirt"],
                    "gpu_vendors": tuple(int(v, 16) for v in loaded["driver"]["libvirt"]["gpu_vendors"]),
                }
            ),
        ),
        workstation=WorkstationSizeConfig(**loaded["workstation"]),
        sampler=SamplerConfig(**loaded["sampler"]),
        pricing=Pricing(
            **{k: v for k, v in loaded["pricing"].items() if k != "gpu_hour_usd"},
            gpu_hour_usd=tuple(sorted(loaded["pricing"]["gpu_hour_usd"].items())),
        ),
        limits=LimitsConfig(
            defaults=AccountLimits(**{k: v for k, v in loaded["limits"].items() if k != "accounts"}),
            accounts=tuple(sorted(loaded["limits"]["accounts"].items())),
        ),
        credits_when_exhausted=loaded["credits"]["when_exhausted"],
        workspaces=WorkspacesConfig(**loaded["workspaces"]),
        types=tuple(
            WorkstationType(
                id=type_id,
                description=t["description"],
                cpu_cores=t["cpu_cores"],
                memory_gb=t["memory_gb"],
                storage_gb=t["storage_gb"],
                gpu=t["gpu"] or None,
                region=t["region"] or None,
                idle_timeout_minutes=t["idle_timeout_minutes"],
                running_timeout_minutes=t["running_timeout_minutes"],
                boot=BootSource(
                    image=t["image"] or None,
                    kernel=t["kernel"] or None,
                    initrd=t["initrd"] or None,
                    cmdline=t["cmdline"] or None,
                ),
            )
            for type_id, t in sorted(loaded["types"].items())
        ),
    )


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
        if variable not in environ:
            continue
        value: object = environ[variable]
        if keys in _INTEGER_SETTINGS:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{variable} must be an integer, got {value!r}") from None
        section = raw
        for key in keys[:-1]:
            section = section.setdefault(key, {})
        section[keys[-1]] = value
    return build_config(raw)
