"""A hypervisor that only pretends, for CI and for trying cwhost on a laptop.

It keeps its domains in a JSON file under its state directory, so that they
outlive a restart of the service exactly as libvirt's definitions do, and it
gives every domain a real sparse disk file so that provisioning, growth and
deletion have something to act on. It raises the same exceptions as a real
driver, including ``HypervisorUnavailable`` while ``set_available(False)`` is
in force.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from drivers.base import (
    DomainNotFound,
    DomainSpec,
    DomainState,
    GpuDevice,
    HostInfo,
    HypervisorDriver,
    HypervisorUnavailable,
    InvalidDomainState,
    ProvisioningError,
)

GIB = 1024**3


@dataclass
class _Domain:
    title: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    state: str = DomainState.STOPPED.value
    gpu: str | None = None
    ignores_acpi: bool = False


class FakeDriver(HypervisorDriver):
    def __init__(self, state_dir: Path, host: HostInfo):
        self._state_dir = Path(state_dir)
        self._disk_dir = self._state_dir / "disks"
        self._state_file = self._state_dir / "domains.json"
        self._host = host
        self._lock = threading.Lock()
        self._available = True
        self._disk_dir.mkdir(parents=True, exist_ok=True)
        self._domains = self._load()

    # -- persistence ---------------------------------------------------------

    def _load(self) -> dict[str, _Domain]:
        try:
            raw = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        return {name: _Domain(**fields) for name, fields in raw.items()}

    def _save(self) -> None:
        # Write-then-rename so that a crash leaves either the old or the new
        # state on disk, never a truncated file.
        payload = json.dumps({n: asdict(d) for n, d in self._domains.items()})
        fd, tmp = tempfile.mkstemp(dir=self._state_dir, prefix=".domains.")
        with os.fdopen(fd, "w") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file)

    def disk_path(self, name: str) -> Path:
        return self._disk_dir / f"{name}.img"

    # -- test controls -------------------------------------------------------

    def set_available(self, available: bool) -> None:
        """Simulate the hypervisor daemon going away and coming back."""
        self._available = available

    def set_ignores_acpi(self, name: str, ignores: bool) -> None:
        """Simulate a guest that does not power off when asked."""
        with self._lock:
            self._get(name).ignores_acpi = ignores
            self._save()

    # -- helpers -------------------------------------------------------------

    def _check_available(self) -> None:
        if not self._available:
            raise HypervisorUnavailable("fake hypervisor is unavailable")

    def _get(self, name: str) -> _Domain:
        try:
            return self._domains[name]
        except KeyError:
            raise DomainNotFound(name) from None

    def _size_disk(self, name: str, storage_gb: int) -> None:
        try:
            with open(self.disk_path(name), "ab") as disk:
                disk.truncate(storage_gb * GIB)
        except OSError as exc:
            raise ProvisioningError(f"cannot size disk for {name}: {exc.strerror}") from exc

    # -- HypervisorDriver ----------------------------------------------------

    def host(self) -> HostInfo:
        self._check_available()
        return self._host

    def define(self, spec: DomainSpec) -> None:
        with self._lock:
            self._check_available()
            existing = self._domains.get(spec.name)
            if existing is not None:
                if (existing.cpu_cores, existing.memory_gb, existing.storage_gb) != (
                    spec.cpu_cores,
                    spec.memory_gb,
                    spec.storage_gb,
                ):
                    raise ProvisioningError(f"domain {spec.name} exists with another spec")
                return
            self._size_disk(spec.name, spec.storage_gb)
            self._domains[spec.name] = _Domain(
                title=spec.title,
                cpu_cores=spec.cpu_cores,
                memory_gb=spec.memory_gb,
                storage_gb=spec.storage_gb,
            )
            self._save()

    def update(self, spec: DomainSpec) -> None:
        with self._lock:
            self._check_available()
            domain = self._get(spec.name)
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {spec.name} is not stopped")
            if spec.storage_gb < domain.storage_gb:
                raise ProvisioningError("a disk can grow but never shrink")
            self._size_disk(spec.name, spec.storage_gb)
            domain.title = spec.title
            domain.cpu_cores = spec.cpu_cores
            domain.memory_gb = spec.memory_gb
            domain.storage_gb = spec.storage_gb
            self._save()

    def start(self, name: str, gpu: GpuDevice | None = None) -> None:
        with self._lock:
            self._check_available()
            domain = self._get(name)
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {name} is already running")
            if gpu is not None and gpu not in self._host.gpus:
                raise ProvisioningError(f"no GPU at {gpu.pci_address} on this host")
            domain.state = DomainState.RUNNING.value
            domain.gpu = gpu.pci_address if gpu else None
            self._save()

    def shutdown(self, name: str, timeout_seconds: float) -> bool:
        with self._lock:
            self._check_available()
            domain = self._get(name)
            if domain.state != DomainState.RUNNING.value:
                raise InvalidDomainState(f"domain {name} is not running")
            if domain.ignores_acpi:
                return False
            self._power_off(domain)
            return True

    def destroy(self, name: str) -> None:
        with self._lock:
            self._check_available()
            domain = self._get(name)
            if domain.state != DomainState.RUNNING.value:
                raise InvalidDomainState(f"domain {name} is not running")
            self._power_off(domain)

    def _power_off(self, domain: _Domain) -> None:
        domain.state = DomainState.STOPPED.value
        domain.gpu = None
        self._save()

    def delete(self, name: str) -> None:
        with self._lock:
            self._check_available()
            domain = self._domains.get(name)
            if domain is None:
                self.disk_path(name).unlink(missing_ok=True)
                return
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {name} is running")
            self.disk_path(name).unlink(missing_ok=True)
            del self._domains[name]
            self._save()

    def state(self, name: str) -> DomainState:
        with self._lock:
            self._check_available()
            return DomainState(self._get(name).state)

    def describe(self, name: str) -> DomainSpec:
        with self._lock:
            self._check_available()
            d = self._get(name)
            return DomainSpec(
                name=name,
                title=d.title,
                cpu_cores=d.cpu_cores,
                memory_gb=d.memory_gb,
                storage_gb=d.storage_gb,
            )

    def list_domains(self) -> dict[str, DomainState]:
        with self._lock:
            self._check_available()
            return {name: DomainState(d.state) for name, d in self._domains.items()}

    def pid(self, name: str) -> int | None:
        self._check_available()
        return None
