"""What the fake driver records of each domain, and the JSON files it keeps them in."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from drivers.base import DEFAULT_DISPLAY, DomainState


@dataclass(frozen=True)
class FakeDomain:
    """Never changed in place: a change is a new record, shown whole."""

    title: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    state: str = DomainState.STOPPED.value
    gpu: str | None = None
    ignores_acpi: bool = False
    never_ready: bool = False
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
    # Its screen, [width, height] (the state file is JSON).
    display: list = field(default_factory=lambda: list(DEFAULT_DISPLAY))


def stopped(domain: FakeDomain) -> FakeDomain:
    """The domain stopped, with nothing left of its last run."""
    return replace(
        domain,
        state=DomainState.STOPPED.value,
        gpu=None,
        pid=None,
        pid_started=None,
        share=None,
        seed=None,
        forwards=None,
        console_port=None,
        console_password=None,
    )


class DomainFiles:
    """Each domain's record in a JSON file of its own, as libvirt keeps an XML file per domain.

    A change to one domain writes only that domain's file, so changes to
    different domains never queue behind each other's fsync. Each file is
    written then renamed, so a crash leaves the old record or the new, never
    half. The single ``domains.json`` of earlier versions is split on load.
    """

    def __init__(self, state_dir: Path):
        self._dir = state_dir / "domains"
        self._single_file = state_dir / "domains.json"
        self._dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, FakeDomain]:
        if self._single_file.exists():
            for name, fields in json.loads(self._single_file.read_text()).items():
                self.write(name, FakeDomain(**fields))
            self._single_file.unlink()
        return {path.stem: FakeDomain(**json.loads(path.read_text())) for path in self._dir.glob("*.json")}

    def write(self, name: str, domain: FakeDomain) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(domain), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._dir / f"{name}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self, name: str) -> None:
        (self._dir / f"{name}.json").unlink(missing_ok=True)
