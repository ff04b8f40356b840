"""A hypervisor that only pretends, for CI and for trying cwhost on a laptop.

It keeps each domain in a JSON file under its state directory, so that they
outlive a restart of the service exactly as libvirt's definitions do. Every
domain gets a real sparse disk file, and every running domain a real process
(``drivers.fake.guest``, burning a configured share of a CPU) in its own
session, so that it outlives the service as a VM does and metering reads a
real process. It raises the same exceptions as a real driver, including
``HypervisorUnavailable`` while ``set_available(False)`` is in force.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import time
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path

from drivers.base import (
    GIB,
    Access,
    BootSource,
    ConsoleAccess,
    Display,
    DomainSpec,
    DomainState,
    ExecRequest,
    ExecResult,
    GpuDevice,
    GuestSeed,
    HostInfo,
    HostKey,
    HypervisorDriver,
    HypervisorUnavailable,
    InvalidDomainState,
    PortForward,
    ProvisioningError,
    ReadinessReport,
    require_shared_directory,
)
from drivers.fake.domain import FakeDomain, stopped
from drivers.fake.domains import DomainBook
from drivers.fake.guest_agent import simulate_exec, simulated_readiness, simulated_screen
from drivers.fake.processes import launch_guest, stop_domain_guest, stop_unrecorded_guests
from drivers.guest_service.client import GuestService
from drivers.guest_service.server import local_socket_path
from drivers.input_events import InputAction, all_batches

# The newest characters typed that a simulated screen shows.
TYPED_KEPT = 200
# Connecting to a guest's service: a local socket answers at once, or is not there.
CONNECT_SECONDS = 5.0


@dataclass(frozen=True)
class GuestLoad:
    """What each fake guest process does: a share of one CPU, and memory held."""

    cpu_share: float = 0.02
    memory_mb: int = 8
    # From its start until it says it is ready.
    ready_seconds: float = 0.0


class FakeDriver(HypervisorDriver):
    # Its guests are processes of its own: images are recorded, never booted.
    boots_images = False

    def __init__(
        self,
        state_dir: Path,
        host: HostInfo,
        guest: GuestLoad = GuestLoad(),
        console_host: str = "127.0.0.1",
    ):
        self._state_dir = Path(state_dir)
        self._disk_dir = self._state_dir / "disks"
        self._host = host
        self._guest = guest
        self._console_host = console_host
        self._disk_dir.mkdir(parents=True, exist_ok=True)
        self._domains = DomainBook(self._state_dir)
        # What was typed on each domain's screen (text actions), shown on its simulated screen.
        self._typed: dict[str, str] = {}
        stop_unrecorded_guests(self._domains.running_pids(), str(self._state_dir.resolve()))

    @staticmethod
    def _same(domain: FakeDomain, spec: DomainSpec) -> bool:
        return (domain.cpu_cores, domain.memory_gb, domain.storage_gb, domain.boot) == (
            spec.cpu_cores,
            spec.memory_gb,
            spec.storage_gb,
            asdict(spec.boot),
        )

    def disk_path(self, name: str) -> Path:
        return self._disk_dir / f"{name}.img"

    def _service_dir(self, name: str) -> Path:
        """The simulated guest service's socket and the guest's file system, kept as a disk is."""
        return self._state_dir / "guests" / name

    # -- test controls -------------------------------------------------------

    def set_available(self, available: bool) -> None:
        """Simulate the hypervisor daemon going away and coming back."""
        self._domains.available = available

    def set_never_ready(self, name: str, never: bool) -> None:
        """Simulate a guest that hangs at boot: it never says it is ready."""
        with self._domains.changing(name):
            domain = self._domains.current(name)
            self._domains.commit(name, domain, replace(domain, never_ready=never))

    def set_ignores_acpi(self, name: str, ignores: bool) -> None:
        """Simulate a guest that does not power off when asked."""
        with self._domains.changing(name):
            domain = self._domains.current(name)
            self._domains.commit(name, domain, replace(domain, ignores_acpi=ignores))

    # -- helpers -------------------------------------------------------------

    def _size_disk(self, name: str, storage_gb: int) -> None:
        try:
            with open(self.disk_path(name), "ab") as disk:
                disk.truncate(storage_gb * GIB)
        except OSError as exc:
            raise ProvisioningError(f"cannot size disk for {name}: {exc.strerror}") from exc

    # -- HypervisorDriver ----------------------------------------------------

    def host(self) -> HostInfo:
        self._domains.check_available()
        return self._host

    def define(self, spec: DomainSpec) -> None:
        with self._domains.changing(spec.name):
            existing = self._domains.found(spec.name)
            if existing is not None:
                if not self._same(existing, spec):
                    raise ProvisioningError(f"domain {spec.name} exists with another spec")
                return
            self._size_disk(spec.name, spec.storage_gb)
            self._domains.commit(spec.name, None, FakeDomain(**_defined_by(spec)))

    def update(self, spec: DomainSpec) -> None:
        with self._domains.changing(spec.name):
            domain = self._domains.current(spec.name)
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {spec.name} is not stopped")
            if spec.storage_gb < domain.storage_gb:
                raise ProvisioningError("a disk can grow but never shrink")
            self._size_disk(spec.name, spec.storage_gb)
            self._domains.commit(spec.name, domain, replace(domain, **_defined_by(spec)))

    def start(
        self,
        name: str,
        gpu: GpuDevice | None = None,
        share: Path | None = None,
        seed: GuestSeed | None = None,
        forwards: tuple[PortForward, ...] = (),
    ) -> None:
        with self._domains.changing(name):
            domain = self._domains.current(name)
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {name} is already running")
            if gpu is not None and gpu not in self._host.gpus:
                raise ProvisioningError(f"no GPU at {gpu.pci_address} on this host")
            require_shared_directory(share)
            service_dir = self._service_dir(name)
            service_dir.mkdir(parents=True, exist_ok=True)
            pid, pid_started = launch_guest(self._guest, str(self._state_dir.resolve()), service_dir)
            running = self._domains.show_with_console_port(
                name,
                replace(
                    domain,
                    state=DomainState.RUNNING.value,
                    pid=pid,
                    pid_started=pid_started,
                    console_password=secrets.token_urlsafe(6)[:8],
                    gpu=gpu.pci_address if gpu else None,
                    share=str(share) if share else None,
                    seed=asdict(seed) if seed else None,
                    forwards=[astuple(forward) for forward in forwards],
                ),
            )
            try:
                self._domains.commit(name, domain, running)
            except HypervisorUnavailable:
                stop_domain_guest(running.pid, running.pid_started)
                raise

    def shutdown(self, name: str, timeout_seconds: float) -> bool:
        with self._domains.changing(name):
            domain = self._domains.current(name)
            if domain.state != DomainState.RUNNING.value:
                raise InvalidDomainState(f"domain {name} is not running")
            if domain.ignores_acpi:
                return False
            self._power_off(name, domain)
        return True

    def destroy(self, name: str) -> None:
        with self._domains.changing(name):
            domain = self._domains.current(name)
            if domain.state != DomainState.RUNNING.value:
                raise InvalidDomainState(f"domain {name} is not running")
            self._power_off(name, domain)

    def _power_off(self, name: str, domain: FakeDomain) -> None:
        """Record a running domain as stopped, then stop its guest.

        Recorded first: if the record cannot be written the guest runs on, as
        recorded; a crash after the record leaves a guest that the next driver
        stops as unrecorded. Only this domain's lock is held meanwhile, so one
        slow guest does not hold up every other domain.
        """
        self._domains.commit(name, domain, stopped(domain))
        self._typed.pop(name, None)  # a new boot's screen starts blank
        stop_domain_guest(domain.pid, domain.pid_started)

    def delete(self, name: str) -> None:
        with self._domains.changing(name):
            domain = self._domains.found(name)
            if domain is None:
                self.disk_path(name).unlink(missing_ok=True)
                return
            if domain.state != DomainState.STOPPED.value:
                raise InvalidDomainState(f"domain {name} is running")
            self.disk_path(name).unlink(missing_ok=True)
            shutil.rmtree(self._service_dir(name), ignore_errors=True)
            self._domains.commit(name, domain, None)

    def state(self, name: str) -> DomainState:
        return DomainState(self._domains.current(name).state)

    def describe(self, name: str) -> DomainSpec:
        d = self._domains.current(name)
        return DomainSpec(
            name=name,
            title=d.title,
            cpu_cores=d.cpu_cores,
            memory_gb=d.memory_gb,
            storage_gb=d.storage_gb,
            boot=BootSource(**(d.boot or {})),
            display=Display(*d.display),
        )

    def list_domains(self) -> dict[str, DomainState]:
        return self._domains.states()

    def _live(self, name: str) -> FakeDomain | None:
        """The running domain's record (never changed in place); None when it is stopped."""
        domain = self._domains.current(name)
        return domain if domain.state == DomainState.RUNNING.value else None

    def access(self, name: str) -> Access | None:
        domain = self._live(name)
        if domain is None or domain.console_port is None:
            return None
        return Access(
            ConsoleAccess("vnc", self._console_host, domain.console_port, domain.console_password),
            ip_addresses=(),
            forwards=tuple(PortForward(*forward) for forward in domain.forwards or ()),
        )

    def console_log(self, name: str) -> Path | None:
        return None  # a fake guest has no serial console

    def guest_endpoint(self, name: str, guest_port: int) -> tuple[str, int] | None:
        self._domains.current(name)
        return None  # a fake guest is a host process with no network of its own

    def guest_seed(self, name: str) -> GuestSeed | None:
        domain = self._live(name)
        if domain is None or domain.seed is None:
            return None
        host_key = domain.seed.get("host_key")
        return GuestSeed(
            **{
                **domain.seed,
                "ssh_keys": tuple(domain.seed["ssh_keys"]),
                "host_key": HostKey(**host_key) if host_key else None,
            }
        )

    def shared_directory(self, name: str) -> Path | None:
        domain = self._live(name)
        return Path(domain.share) if domain and domain.share else None

    def pid(self, name: str) -> int | None:
        domain = self._live(name)
        return domain.pid if domain else None

    def guest_service(self, name: str, user: str) -> GuestService:
        if self._live(name) is None:
            raise InvalidDomainState(f"domain {name} is not running")
        directory = str(self._service_dir(name))

        def connect() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_SECONDS)
                with local_socket_path(directory) as path:
                    sock.connect(path)
            except BaseException:
                sock.close()
                raise
            return sock

        return GuestService(connect, user)

    def readiness(self, name: str) -> ReadinessReport | None:
        domain = self._live(name)
        if domain is None or domain.pid_started is None:
            return None
        return simulated_readiness(
            time.time() - domain.pid_started,
            self._guest.ready_seconds,
            with_workspace=domain.share is not None,
            never=domain.never_ready,
        )

    def exec(self, name: str, request: ExecRequest) -> ExecResult:
        if self._live(name) is None:
            raise InvalidDomainState(f"domain {name} is not running")
        return simulate_exec(request)

    def send_input(self, name: str, actions: tuple[InputAction, ...]) -> None:
        domain = self._live(name)
        if domain is None:
            raise InvalidDomainState(f"domain {name} is not running")
        # Checked as a real display would take them; text typed shows on the simulated screen.
        all_batches(actions, Display(*domain.display))
        typed = "".join(action.text for action in actions if action.type == "text")
        if typed:
            with self._domains.changing(name):
                self._typed[name] = (self._typed.get(name, "") + typed)[-TYPED_KEPT:]

    def screenshot(self, name: str) -> bytes:
        domain = self._live(name)
        if domain is None:
            raise InvalidDomainState(f"domain {name} is not running")
        return simulated_screen(domain.title, Display(*domain.display), self._typed.get(name, ""))

    def screen_frame(self, name: str) -> bytes:
        domain = self._live(name)
        if domain is None:
            raise InvalidDomainState(f"domain {name} is not running")
        return simulated_screen(domain.title, Display(*domain.display), self._typed.get(name, ""), "PPM")


def _defined_by(spec: DomainSpec) -> dict:
    """The fields of a domain's record that its spec sets."""
    return {
        "title": spec.title,
        "cpu_cores": spec.cpu_cores,
        "memory_gb": spec.memory_gb,
        "storage_gb": spec.storage_gb,
        "boot": asdict(spec.boot),
        "display": list(spec.display),
    }
