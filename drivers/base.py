"""The hypervisor driver interface.

Vocabulary (shared by every driver and by the contract suite in
``tests/test_driver_contract.py``):

- A *domain* is one workstation's virtual machine, known to the hypervisor by a
  unique ``name`` chosen by the caller. A domain is *defined* (it exists, with its
  disk) and is either ``RUNNING`` or ``STOPPED``.
- ``define`` provisions a domain and its disk; it is idempotent for the same spec
  so that a caller that crashed half-way can simply call it again.
- ``start`` boots a stopped domain, optionally with one whole GPU passed through
  and one host directory shared with the guest (a workspace). Choosing *which*
  GPU and directory is the caller's policy; a driver only attaches what it is
  given, for this run of the domain only.
- ``shutdown`` asks the guest to power off (ACPI) and waits up to a timeout;
  ``destroy`` pulls the plug.
- ``update`` redefines a stopped domain with a new spec; disks may only grow.
- ``delete`` removes a stopped domain and its disk. Deleting a domain that does
  not exist is not an error, so deletion can be retried after a crash.

Every operation may raise ``HypervisorUnavailable`` when the hypervisor cannot
be reached; callers turn that into "try again later", never into a crash.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from drivers.guest_service.client import GuestService
from drivers.input_events import InputAction

# Sizes in the contract (memory_gb, storage_gb) are in GiB, as libvirt and QEMU count them.
GIB = 1024**3
# The tag a guest mounts its workspace by (mount -t virtiofs workspace /mnt).
SHARE_TAG = "workspace"
# The uid and gid of the guest's user. virtiofs passes ownership through by
# number, so a workspace's files belong to this uid on the host too.
GUEST_UID = 1000


class DriverError(Exception):
    """Base of every error a driver raises on purpose."""


class HypervisorUnavailable(DriverError):
    """The hypervisor cannot be reached right now; the same call may succeed later."""


class DomainNotFound(DriverError):
    """No domain of that name is defined."""


class InvalidDomainState(DriverError):
    """The domain is not in a state that allows the operation."""


class ProvisioningError(DriverError):
    """The domain or its disk could not be created or changed."""


class GuestAgentUnavailable(DriverError):
    """The guest's agent does not answer (yet): the guest is still booting, or has no agent."""


def require_shared_directory(share: Path | None) -> None:
    """What every driver checks of a directory to share before it boots anything."""
    if share is not None and not Path(share).is_dir():
        raise ProvisioningError(f"the directory to share, {share}, does not exist")


class DomainState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class GpuDevice:
    model: str
    pci_address: str
    iommu_group: int | None = None


@dataclass(frozen=True)
class HostInfo:
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    gpus: tuple[GpuDevice, ...]


@dataclass(frozen=True)
class ConsoleAccess:
    protocol: str  # "vnc" or "spice"
    host: str
    port: int
    password: str | None


@dataclass(frozen=True)
class PortForward:
    """A host TCP port that reaches a TCP port of the guest, for one run of the domain."""

    host_port: int
    guest_port: int
    # The host address the port listens on; 0.0.0.0 is every one (the LAN).
    listen: str = "0.0.0.0"


@dataclass(frozen=True)
class Access:
    """How a user reaches a running domain."""

    console: ConsoleAccess | None
    ip_addresses: tuple[str, ...]
    forwards: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class BootSource:
    """What a domain boots: its disk made from ``image``, or a kernel given directly.

    Empty means the driver's own default.
    """

    image: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class HostKey:
    """The guest's SSH host key, given rather than generated at boot: its OpenSSH private key and
    its public line."""

    private_openssh: str
    public_line: str

    def __repr__(self) -> str:
        return f"HostKey({self.public_line!r})"


@dataclass(frozen=True)
class GuestSeed:
    """What the guest is told when it boots (cloud-init): its name, its user, that user's keys, its share."""

    hostname: str
    user: str
    ssh_keys: tuple[str, ...] = ()
    # Mount the share (SHARE_TAG) at the user's ~/workspace.
    mount_share: bool = False
    # The host's address on the guest's private network: the one peer that
    # the guest's host-only services (the browser's DevTools relay) answer.
    # The driver fills it in; None on a network the host does not own.
    host_address: str | None = None
    # Its SSH host key; None lets the guest make its own.
    host_key: HostKey | None = None


@dataclass(frozen=True)
class ReadinessReport:
    """What a running guest last said of its boot: the phases it has passed, each with the seconds
    since its boot, in the order passed; and whether it is ready (it has passed all its type has:
    first-boot work, workspace, sshd, DevTools). The guest writes it; trust it for that guest only."""

    ready: bool
    phases: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ExecRequest:
    """A command for the guest's agent to run: an argument list, never a shell line."""

    command: tuple[str, ...]
    # The guest user it runs as, in that user's home unless ``working_directory`` says otherwise.
    user: str
    stdin: bytes = b""
    env: tuple[tuple[str, str], ...] = ()
    working_directory: str | None = None
    timeout_seconds: float = 60.0
    # Each of stdout and stderr is cut to this many bytes.
    max_output_bytes: int = 1024 * 1024


# The exit code of a command killed at its timeout: timeout(1) with SIGKILL gives 128 + 9.
KILLED_AT_TIMEOUT = 137


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    duration_ms: int
    truncated: bool
    timed_out: bool


class Display(NamedTuple):
    """A domain's screen, in pixels: what screenshots show and input coordinates address."""

    width: int
    height: int


# XGA: what Anthropic's computer-use guidance recommends for agents that look at the screen.
DEFAULT_DISPLAY = Display(1024, 768)


@dataclass(frozen=True)
class DomainSpec:
    """Everything a driver needs to define a domain.

    ``title`` is the human name shown in hypervisor tools; it is arbitrary user
    text, so drivers must treat it as data, never as markup or a file name.
    """

    name: str
    title: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    boot: BootSource = BootSource()
    display: Display = DEFAULT_DISPLAY


class Inspectable(Protocol):
    """What a driver was told, read back from the hypervisor: for the contract suite
    (tests/test_driver_contract.py), which checks every driver the same way. cwhost never asks."""

    def describe(self, name: str) -> DomainSpec:
        """The spec the hypervisor holds for the domain; DomainNotFound if undefined."""
        ...

    def guest_seed(self, name: str) -> GuestSeed | None:
        """The seed the running domain was started with; None when stopped or none."""
        ...

    def shared_directory(self, name: str) -> Path | None:
        """The host directory shared with the running domain; None when stopped or none."""
        ...


class HypervisorDriver(abc.ABC):
    """A hypervisor that runs workstation domains. See the module docstring."""

    # Whether domains really boot the images they are given (a simulation need not).
    boots_images = True
    # Whether ``start`` can forward host ports to the guest (with a bridged
    # network the guest has a LAN address of its own instead).
    forwards_ports = True

    @abc.abstractmethod
    def host(self) -> HostInfo:
        """Capacity of the host and its GPUs that can be passed through."""

    @abc.abstractmethod
    def define(self, spec: DomainSpec) -> None:
        """Create the domain and its disk; a no-op if an identical one exists."""

    @abc.abstractmethod
    def update(self, spec: DomainSpec) -> None:
        """Redefine a stopped domain; raises ProvisioningError if the disk would shrink."""

    @abc.abstractmethod
    def start(
        self,
        name: str,
        gpu: GpuDevice | None = None,
        share: Path | None = None,
        seed: GuestSeed | None = None,
        forwards: tuple[PortForward, ...] = (),
    ) -> None:
        """Boot a stopped domain, passing ``gpu`` through whole and sharing the directory ``share``.

        The guest sees ``share`` as the file system tagged ``SHARE_TAG``, and
        ``seed`` as a cloud-init NoCloud seed; each of ``forwards`` reaches
        the guest from the host. All of it for this run only.
        """

    @abc.abstractmethod
    def shutdown(self, name: str, timeout_seconds: float) -> bool:
        """Ask the guest to power off; True if it stopped within the timeout (0: ask, and do not wait)."""

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Stop a running domain at once."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove a stopped domain with every file of its own (disk, console log); absent domains are ignored."""

    @abc.abstractmethod
    def state(self, name: str) -> DomainState:
        """The domain's state as the hypervisor sees it; DomainNotFound if undefined."""

    @abc.abstractmethod
    def list_domains(self) -> dict[str, DomainState]:
        """Every domain this driver manages, by name."""

    @abc.abstractmethod
    def access(self, name: str) -> Access | None:
        """The console (with the password made at this launch) and guest addresses; None when stopped."""

    @abc.abstractmethod
    def guest_endpoint(self, name: str, guest_port: int) -> tuple[str, int] | None:
        """Where the host reaches ``guest_port`` of the running guest, on a path no other guest shares.

        None when the domain is stopped, its guest has no such path yet (it is
        still booting), or the driver gives none (an operator's network, where
        the LAN could reach the same port).
        """

    @abc.abstractmethod
    def guest_service(self, name: str, user: str) -> GuestService:
        """The running guest's service (drivers.guest_service), acting as ``user``: processes that
        stream, and files. InvalidDomainState when the domain is stopped; its calls raise
        GuestServiceUnavailable while the guest cannot be reached (it is still booting)."""

    @abc.abstractmethod
    def readiness(self, name: str) -> ReadinessReport | None:
        """What the running guest has said of its boot, over a channel of its own domain (no other
        guest can write it); None while it has said nothing, or its agent does not answer."""

    @abc.abstractmethod
    def exec(self, name: str, request: ExecRequest) -> ExecResult:
        """Run a command in the running guest through its agent, killing it inside the guest at its timeout.

        InvalidDomainState when the domain is not running; GuestAgentUnavailable
        while its agent does not answer.
        """

    @abc.abstractmethod
    def screenshot(self, name: str) -> bytes:
        """The running domain's display as PNG, taken by the hypervisor (nothing runs in the guest)."""

    @abc.abstractmethod
    def screen_frame(self, name: str) -> bytes:
        """The running domain's display as the hypervisor gives it (PPM or PNG, the same for every
        picture of a domain), with no work of the driver's: what a recording takes several times a
        second."""

    @abc.abstractmethod
    def send_input(self, name: str, actions: tuple[InputAction, ...]) -> None:
        """Type and point on the running domain's display, in screenshot coordinates.

        InputRejected (before anything is sent) for a key, character or place that cannot be sent.
        """

    @abc.abstractmethod
    def console_log(self, name: str) -> Path | None:
        """The file the domain's serial console is logged to, if the driver keeps one."""

    @abc.abstractmethod
    def pid(self, name: str) -> int | None:
        """The host process that runs the domain, for metering; None when stopped."""
