"""What a PATCH of a stopped workstation changes: the configuration it asks for, checked, and the
record as it will be."""

from __future__ import annotations

import json
from dataclasses import replace

from cwhost.config.server import Config
from cwhost.errors import InvalidRequest
from cwhost.model import CONFIGURATION_FIELDS, Configuration, Workstation
from cwhost.workstations import sizing
from drivers.base import HostInfo


def checked_configuration(ws: Workstation, changes: dict, config: Config, host: HostInfo) -> Configuration:
    """The configuration a PATCH asks for, checked: storage only grows, all fits the host (quotas are
    the storage budget's)."""
    was = ws.configuration.storage_gb
    new = replace(ws.configuration, **{key: value for key, value in changes.items() if key in CONFIGURATION_FIELDS})
    if new.storage_gb < was:
        raise InvalidRequest(
            f"Storage can grow but never shrink (it is {was} GB).",
            details={"configuration": {"storage_gb": [f"Must be at least {was}."]}},
        )
    sizing.validate(config, host, new)
    return new


def changed(
    ws: Workstation,
    new: Configuration,
    name: str | None,
    keys: tuple[str, ...] | None,
    idle_timeout_minutes: int | None,
    running_timeout_minutes: int | None,
) -> tuple[Workstation, dict]:
    """The workstation as the PATCH leaves it, and its row's columns that say so; what is not given stays."""
    updated = replace(ws, name=name or ws.name, configuration=new, ssh_public_keys=_given_or(keys, ws.ssh_public_keys))
    columns = {
        "name": updated.name,
        **{field: getattr(new, field) for field in CONFIGURATION_FIELDS},
        "idle_timeout_minutes": _given_or(idle_timeout_minutes, ws.idle_timeout_minutes),
        "running_timeout_minutes": _given_or(running_timeout_minutes, ws.running_timeout_minutes),
        "ssh_public_keys": json.dumps(list(updated.ssh_public_keys)),
    }
    return updated, columns


def _given_or(value, current):
    return current if value is None else value
