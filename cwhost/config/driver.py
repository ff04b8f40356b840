"""The hypervisor driver's settings: which driver, the fake's simulated host, libvirt's domains and network."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import marshmallow as ma
from marshmallow import fields
from marshmallow.validate import Length, OneOf, Range

from cwhost.patterns import FullMatch
from cwhost.settings import setting, strict_table
from drivers.base import GpuDevice

_GPU_TABLE = strict_table(
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
    # How long after its start a fake guest says it is ready.
    guest_ready_seconds: float = setting(0.0, validate=Range(0, 3600))
    gpus: tuple[GpuDevice, ...] = setting(
        (
            GpuDevice("NVIDIA RTX A5000", "0000:65:00.0"),
            GpuDevice("NVIDIA RTX A5000", "0000:b3:00.0"),
            GpuDevice("NVIDIA L40S", "0000:ca:00.0"),
        ),
        field=fields.List(fields.Nested(_GPU_TABLE)),
        convert=lambda tables: tuple(GpuDevice(t["model"], t["pci_address"]) for t in tables),
    )


def _guest_subnet(value: str) -> None:
    try:
        subnet = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise ma.ValidationError(f"must be an IPv4 subnet like 192.168.150.0/24 ({exc})") from exc
    if not subnet.is_private or subnet.prefixlen > 28:
        raise ma.ValidationError("must be a private IPv4 subnet of at least 16 addresses (/28)")


@dataclass(frozen=True)
class LibvirtDriverConfig:
    """Empty strings mean "none": no operator network (cwhost's own), no graphics, no base image."""

    uri: str = setting("qemu:///system")
    domain_type: str = setting("kvm", validate=OneOf(["kvm", "qemu"]))
    # An operator's libvirt network (a bridge to the LAN, say) for guests to
    # have LAN addresses of their own; then no ports are forwarded and no
    # browser is reached over CDP. Empty: cwhost's own isolated NAT network.
    network: str = setting("")
    # cwhost's own network: its libvirt name, its bridge and its IPv4 subnet
    # (the host takes the first address; guests get the rest by DHCP).
    guest_network: str = setting("cwhost", validate=FullMatch(r"^[A-Za-z0-9_-]{1,15}$", error="must be a short name"))
    guest_bridge: str = setting("cwhost0", validate=FullMatch(r"^[A-Za-z0-9_-]{1,15}$", error="must be a bridge name"))
    guest_subnet: str = setting("192.168.150.0/24", validate=_guest_subnet)
    graphics: str = setting("vnc", validate=OneOf(["vnc", "spice", ""]))
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
