"""What the fake driver records of each domain, in its JSON state file."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import DomainState


@dataclass
class FakeDomain:
    title: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    state: str = DomainState.STOPPED.value
    gpu: str | None = None
    ignores_acpi: bool = False
    pid: int | None = None
    pid_started: float | None = None
    console_port: int | None = None
    console_password: str | None = None
    boot: dict | None = None
    share: str | None = None
    # The GuestSeed of this run, as a dict (the state file is JSON).
    seed: dict | None = None
    # This run's PortForwards, as lists of their fields: recorded, never opened on the host.
    forwards: list | None = None


def mark_stopped(domain: FakeDomain) -> None:
    """Stopped, with nothing left of its last run."""
    domain.state = DomainState.STOPPED.value
    domain.gpu = domain.pid = domain.pid_started = domain.share = domain.seed = domain.forwards = None
    domain.console_port = domain.console_password = None
