"""What a request asks for, checked against what this server offers: types, sizes, regions, GPU models."""

from __future__ import annotations

from dataclasses import dataclass

from cwhost.config.server import Config
from cwhost.errors import InvalidRequest, UnknownAsset
from cwhost.ids import new_id, unix_to_rfc3339
from cwhost.images.catalog import ImageCatalog
from cwhost.images.types import WorkstationType
from cwhost.model import PROVISIONING, TYPE_CONFIGURATION_FIELDS, Configuration, Workstation
from drivers.base import DEFAULT_DISPLAY, BootSource, HostInfo

_SIZES = ("cpu_cores", "memory_gb", "storage_gb")


@dataclass(frozen=True)
class Request:
    """A create, resolved: its configuration, its auto-stop rules and what it boots."""

    configuration: Configuration
    idle_timeout_minutes: int
    running_timeout_minutes: int
    boot: BootSource

    def workstation(
        self, account_id: str, name: str, type_id, workspace_id, ssh_keys: list[str], now: float
    ) -> Workstation:
        """The new workstation, as it is first stored: provisioning."""
        return Workstation(
            id=new_id("ws"),
            account_id=account_id,
            name=name,
            status=PROVISIONING,
            type=type_id,
            workspace_id=workspace_id,
            configuration=self.configuration,
            created_at=unix_to_rfc3339(now),
            started_at=None,
            status_message=None,
            idle_timeout_minutes=self.idle_timeout_minutes,
            running_timeout_minutes=self.running_timeout_minutes,
            gpu_address=None,
            boot=self.boot,
            ssh_public_keys=tuple(ssh_keys),
        )


@dataclass(frozen=True)
class Images:
    """Where types' images are, and whether this server's driver boots them (the fake driver does not)."""

    catalog: ImageCatalog
    required: bool


def usable_type(config: Config, type_id: str, images: Images) -> tuple[WorkstationType, BootSource]:
    """The type and what its new workstations boot; UnknownAsset if it is not offered or cannot boot."""
    wtype = config.workstation_type(type_id)
    if wtype is None:
        raise UnknownAsset(f"This server offers no workstation type {type_id!r}; GET /v1/workstation-types lists them.")
    missing = wtype.missing_files
    if missing:
        raise UnknownAsset(
            f"Workstation type {type_id!r} cannot be used: its file {missing[0]} is missing"
            " on the server (an operator's fix: see 'cwhost types check')."
        )
    boot = images.catalog.boot_for(wtype)
    if boot is None and images.required:
        raise UnknownAsset(
            f"Workstation type {type_id!r} has no image on this server: {images.catalog.expected_disk(type_id)}"
            f" is missing. An operator builds it with: cwhost images build {type_id}"
        )
    return wtype, boot or BootSource()


def resolve(
    config: Config,
    configuration: dict | None,
    type_id: str | None,
    idle_timeout_minutes: int | None,
    running_timeout_minutes: int | None,
    images: Images,
) -> Request:
    """A type's defaults for whatever the request leaves out; InvalidRequest if sizes are still missing."""
    wtype, boot = usable_type(config, type_id, images) if type_id is not None else (None, BootSource())
    settings = dict(configuration or {})
    if wtype is not None:
        for key in TYPE_CONFIGURATION_FIELDS:
            settings.setdefault(key, getattr(wtype, key))
    absent = [key for key in _SIZES if key not in settings]
    if absent:
        raise InvalidRequest(
            "A configuration is required unless a type gives one.",
            details={"configuration": {key: ["Missing data for required field."] for key in absent}},
        )
    return Request(
        configuration=Configuration(
            cpu_cores=settings["cpu_cores"],
            memory_gb=settings["memory_gb"],
            storage_gb=settings["storage_gb"],
            gpu=settings.get("gpu"),
            region=settings.get("region") or config.regions[0],
            display_width=settings.get("display_width", DEFAULT_DISPLAY.width),
            display_height=settings.get("display_height", DEFAULT_DISPLAY.height),
        ),
        idle_timeout_minutes=(
            idle_timeout_minutes if idle_timeout_minutes is not None else (wtype.idle_timeout_minutes if wtype else 0)
        ),
        running_timeout_minutes=(
            running_timeout_minutes
            if running_timeout_minutes is not None
            else (wtype.running_timeout_minutes if wtype else 0)
        ),
        boot=boot,
    )


def validate(config: Config, host: HostInfo, configuration: Configuration) -> None:
    """InvalidRequest for sizes beyond this host or the configured limits, or a region not served;
    UnknownAsset for a GPU model the host does not have."""
    limits = config.workstation
    errors: dict[str, list[str]] = {}
    for field, value, host_max, limit in (
        ("cpu_cores", configuration.cpu_cores, host.cpu_cores, limits.max_cpu_cores),
        ("memory_gb", configuration.memory_gb, host.memory_gb, limits.max_memory_gb),
        ("storage_gb", configuration.storage_gb, host.storage_gb, limits.max_storage_gb),
    ):
        ceiling = min(host_max, limit)
        if value > ceiling:
            errors[field] = [f"Must be at most {ceiling} on this server."]
    if configuration.region not in config.regions:
        errors["region"] = ["Must be one of the regions this server serves: " + ", ".join(config.regions) + "."]
    if errors:
        raise InvalidRequest("The configuration does not fit this server.", details={"configuration": errors})
    models = {g.model for g in host.gpus}
    if configuration.gpu is not None and configuration.gpu not in models:
        raise UnknownAsset(
            f"This host has no GPU model {configuration.gpu!r}; it has: {', '.join(sorted(models) or ['none'])}."
        )
