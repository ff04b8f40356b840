"""The libvirt/KVM driver: workstations as libvirt domains with a whole GPU passed through.

Storage is one qcow2 file per workstation in ``disk_dir`` (made with
qemu-img, as a copy-on-write overlay of a base image when one is configured),
not a libvirt storage pool: it needs nothing configured on the host beyond a
directory, and it behaves the same under libvirt's test driver.

The connection is opened lazily, guarded by a lock, and replaced when it has
died (libvirtd restarted): the call in flight raises ``HypervisorUnavailable``
and the next one reconnects.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import replace
from pathlib import Path

import libvirt

from drivers.base import (
    Access,
    BootSource,
    ConsoleAccess,
    DomainNotFound,
    DomainSpec,
    DomainState,
    GpuDevice,
    GuestSeed,
    HostInfo,
    HypervisorDriver,
    InvalidDomainState,
    PortForward,
    ProvisioningError,
    require_shared_directory,
)
from drivers.libvirt import qcow2
from drivers.libvirt.cloud_init import read_seed_iso, seed_of, write_seed_iso
from drivers.libvirt.connection import LibvirtConnection
from drivers.libvirt.domain_xml import DomainXml, Graphics, KernelBoot, PciAddress, from_xml, to_xml
from drivers.libvirt.guest_agent import guest_addresses
from drivers.libvirt.guest_doors import GuestDoors
from drivers.libvirt.host import host_info
from drivers.libvirt.network import GuestNetwork, NetworkMismatch, ensure_running
from drivers.libvirt.reported_xml import live_console

NVIDIA = 0x10DE
SHUTDOWN_POLL_SECONDS = 0.2
# cwhost's own guest network as it is by default.
OWN_NETWORK = GuestNetwork()

# Keep libvirt from printing every error to stderr; each is raised as an exception.
libvirt.registerErrorHandler(lambda context, error: None, None)


class LibvirtDriver(GuestDoors, HypervisorDriver):
    def __init__(
        self,
        uri: str,
        disk_dir: Path,
        console_dir: Path,
        domain_type: str = "kvm",
        network: GuestNetwork | str = OWN_NETWORK,
        graphics: str | None = "vnc",
        graphics_listen: str = "127.0.0.1",
        kernel_boot: KernelBoot | None = None,
        base_image: Path | None = None,
        pid_dir: Path = Path("/run/libvirt/qemu"),
        gpu_vendors: tuple[int, ...] = (NVIDIA,),
        gpu_names: dict[str, str] | None = None,
    ):
        self._libvirt = LibvirtConnection(uri)
        self._disk_dir = Path(disk_dir)
        self._console_dir = Path(console_dir)
        self._domain_type = domain_type
        # cwhost's own isolated network, or the name of an operator's (a bridge to the LAN, say).
        self._own_network = network if isinstance(network, GuestNetwork) else None
        self._network = network.name if isinstance(network, GuestNetwork) else network
        # On an operator's network the guest has an address of its own, and its ports are the LAN's business.
        self.forwards_ports = self._own_network is not None
        self._graphics = graphics
        self._graphics_listen = graphics_listen
        self._kernel_boot = kernel_boot
        self._base_image = base_image
        self._pid_dir = Path(pid_dir)
        self._gpu_vendors = gpu_vendors
        # PCI address -> model name, from NVML where the host sees the card.
        self._gpu_names = gpu_names or {}
        self._disk_dir.mkdir(parents=True, exist_ok=True)
        # qemu runs as libvirt-qemu and must reach its disk here (libvirt gives
        # it the file itself); traverse, not list, whatever the umask made.
        self._disk_dir.chmod(0o711)
        self._console_dir.mkdir(parents=True, exist_ok=True)

    def _domain(self, name: str) -> libvirt.virDomain:
        with self._libvirt.translated(name):
            return self._libvirt.get().lookupByName(name)

    # -- files -----------------------------------------------------------------

    def disk_path(self, name: str) -> Path:
        return self._disk_dir / f"{name}.qcow2"

    def console_log(self, name: str) -> Path:
        return self._console_dir / f"{name}.log"

    def _base_for(self, spec: DomainSpec) -> str | None:
        if spec.boot.image:
            return spec.boot.image
        return str(self._base_image) if self._base_image else None

    def _kernel_for(self, spec: DomainSpec) -> KernelBoot | None:
        if spec.boot.kernel:
            return KernelBoot(spec.boot.kernel, spec.boot.initrd, spec.boot.cmdline)
        return self._kernel_boot

    # -- XML -------------------------------------------------------------------

    def _xml(
        self,
        spec: DomainSpec,
        uuid_text: str,
        gpu: GpuDevice | None = None,
        password: str | None = None,
        share: Path | None = None,
        seed_iso: Path | None = None,
        forwards: tuple[PortForward, ...] = (),
    ) -> str:
        return to_xml(
            DomainXml(
                name=spec.name,
                uuid=uuid_text,
                title=spec.title,
                domain_type=self._domain_type,
                vcpus=spec.cpu_cores,
                memory_mib=spec.memory_gb * 1024,
                disk_path=str(self.disk_path(spec.name)),
                storage_gb=spec.storage_gb,
                console_log=str(self.console_log(spec.name)),
                network=self._network,
                graphics=Graphics(self._graphics, self._graphics_listen, password) if self._graphics else None,
                kernel_boot=self._kernel_for(spec),
                gpu=PciAddress.parse(gpu.pci_address) if gpu else None,
                share=str(share) if share else None,
                base_image=spec.boot.image,
                seed_iso=str(seed_iso) if seed_iso else None,
                forwards=forwards,
                display=spec.display,
            )
        )

    def _define_xml(self, xml: str) -> None:
        with self._libvirt.translated():
            self._libvirt.get().defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)

    def _inactive(self, domain: libvirt.virDomain) -> DomainXml:
        return from_xml(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def _spec(self, parsed: DomainXml) -> DomainSpec:
        own_kernel = parsed.kernel_boot if parsed.kernel_boot != self._kernel_boot else None
        return DomainSpec(
            name=parsed.name,
            title=parsed.title,
            cpu_cores=parsed.vcpus,
            memory_gb=parsed.memory_mib // 1024,
            storage_gb=parsed.storage_gb,
            boot=BootSource(
                image=parsed.base_image,
                kernel=own_kernel.kernel if own_kernel else None,
                initrd=own_kernel.initrd if own_kernel else None,
                cmdline=own_kernel.cmdline if own_kernel else None,
            ),
            display=parsed.display,
        )

    # -- HypervisorDriver ------------------------------------------------------

    def host(self) -> HostInfo:
        with self._libvirt.translated():
            return host_info(self._libvirt.get(), self._disk_dir, self._gpu_vendors, self._gpu_names)

    def define(self, spec: DomainSpec) -> None:
        try:
            existing = self.describe(spec.name)
        except DomainNotFound:
            existing = None
        if existing is not None:
            if existing != spec:
                raise ProvisioningError(f"domain {spec.name} exists with another spec")
            return
        disk = self.disk_path(spec.name)
        if not disk.exists():
            qcow2.create(disk, spec.storage_gb, self._base_for(spec))
        try:
            self._define_xml(self._xml(spec, str(uuid.uuid4())))
        except Exception:
            disk.unlink(missing_ok=True)
            raise

    def update(self, spec: DomainSpec) -> None:
        domain = self._domain(spec.name)
        if domain.isActive():
            raise InvalidDomainState(f"domain {spec.name} is not stopped")
        current = self._inactive(domain)
        if spec.storage_gb < current.storage_gb:
            raise ProvisioningError("a disk can grow but never shrink")
        if spec.storage_gb > current.storage_gb:
            qcow2.grow(self.disk_path(spec.name), spec.storage_gb)
        self._define_xml(self._xml(spec, current.uuid))

    def start(
        self,
        name: str,
        gpu: GpuDevice | None = None,
        share: Path | None = None,
        seed: GuestSeed | None = None,
        forwards: tuple[PortForward, ...] = (),
    ) -> None:
        domain = self._domain(name)
        if domain.isActive():
            raise InvalidDomainState(f"domain {name} is already running")
        if forwards and not self.forwards_ports:
            raise ProvisioningError("ports are forwarded only on cwhost's own network, not on an operator's")
        require_shared_directory(share)
        current = self._inactive(domain)
        seed_iso = None
        if seed is not None:
            seed_iso = self.seed_path(name)
            if self._own_network is not None:
                seed = replace(seed, host_address=str(self._own_network.gateway))
            write_seed_iso(seed_iso, seed, name)
        # A new console password at every launch; the GPU, the share and the
        # seed are in the definition only for the run that has them.
        password = secrets.token_urlsafe(6)[:8]
        self._define_xml(self._xml(self._spec(current), current.uuid, gpu, password, share, seed_iso, forwards))
        try:
            with self._libvirt.translated(name):
                if self._own_network is not None:
                    ensure_running(self._libvirt.get(), self._own_network)
                domain.create()
        except NetworkMismatch as exc:
            raise ProvisioningError(str(exc)) from exc

    def shutdown(self, name: str, timeout_seconds: float) -> bool:
        domain = self._domain(name)
        with self._libvirt.translated(name):
            domain.shutdown()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            with self._libvirt.translated(name):
                if not domain.isActive():
                    return True
            time.sleep(SHUTDOWN_POLL_SECONDS)
        return not domain.isActive()

    def destroy(self, name: str) -> None:
        with self._libvirt.translated(name):
            self._domain(name).destroy()

    def delete(self, name: str) -> None:
        try:
            domain = self._domain(name)
        except DomainNotFound:
            domain = None
        if domain is not None:
            if domain.isActive():
                raise InvalidDomainState(f"domain {name} is running")
            with self._libvirt.translated(name):
                domain.undefine()
        self.disk_path(name).unlink(missing_ok=True)
        # Nothing of a deleted workstation stays behind: its console log and seed go too.
        self.console_log(name).unlink(missing_ok=True)
        self.seed_path(name).unlink(missing_ok=True)

    def state(self, name: str) -> DomainState:
        with self._libvirt.translated(name):
            active = self._domain(name).isActive()
        return DomainState.RUNNING if active else DomainState.STOPPED

    def describe(self, name: str) -> DomainSpec:
        return self._spec(self._inactive(self._domain(name)))

    def list_domains(self) -> dict[str, DomainState]:
        with self._libvirt.translated():
            domains = self._libvirt.get().listAllDomains()
            return {d.name(): DomainState.RUNNING if d.isActive() else DomainState.STOPPED for d in domains}

    def access(self, name: str) -> Access | None:
        domain = self._domain(name)
        with self._libvirt.translated(name):
            if not domain.isActive():
                return None
            description = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
            console = live_console(description)
        return Access(
            console=(
                ConsoleAccess(console.kind, console.listen, console.port, console.password)
                if console and console.port
                else None
            ),
            ip_addresses=guest_addresses(domain),
            forwards=from_xml(description).forwards,
        )

    def seed_path(self, name: str) -> Path:
        return self._disk_dir / f"{name}.seed.iso"

    def guest_seed(self, name: str) -> GuestSeed | None:
        live = self._live(name)
        return seed_of(read_seed_iso(Path(live.seed_iso))) if live and live.seed_iso else None

    def shared_directory(self, name: str) -> Path | None:
        live = self._live(name)
        return Path(live.share) if live and live.share else None

    def pid(self, name: str) -> int | None:
        if self.state(name) != DomainState.RUNNING:
            return None
        try:
            return int((self._pid_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
