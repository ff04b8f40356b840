"""Domain XML: golden files for each kind of workstation, and names that can never become markup."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drivers.base import Display, PortForward
from drivers.libvirt.domain_xml import (
    DomainXml,
    Graphics,
    KernelBoot,
    PciAddress,
    from_xml,
    to_xml,
)
from drivers.libvirt.reported_xml import parse_pci_device

DATA = Path(__file__).resolve().parent / "data"

BASE = dict(
    name="cwhost-ws-8f3k2m9q",
    uuid="6f1f7f4e-5a43-4c8e-9b1e-1b2e3c4d5e6f",
    title="My-New-Workstation",
    domain_type="kvm",
    vcpus=8,
    memory_mib=32768,
    disk_path="/var/lib/cwhost/disks/cwhost-ws-8f3k2m9q.qcow2",
    storage_gb=512,
    console_log="/var/lib/cwhost/consoles/cwhost-ws-8f3k2m9q.log",
    network="cwhost",
    graphics=Graphics("vnc", "192.168.1.10", "s3cretpw"),
)
KINDS = {
    "no-gpu": DomainXml(**BASE),
    "gpu": DomainXml(**BASE, gpu=PciAddress.parse("0000:65:00.0")),
    "gpu-workspace": DomainXml(
        **BASE, gpu=PciAddress.parse("0000:65:00.0"), share="/var/lib/cwhost/workspaces/wsp-1a2b3c4d"
    ),
    "workspace-seed": DomainXml(
        **BASE,
        share="/var/lib/cwhost/workspaces/wsp-1a2b3c4d",
        seed_iso="/var/lib/cwhost/disks/cwhost-ws-8f3k2m9q.seed.iso",
    ),
    # A second NIC, on QEMU's user-mode network restricted to SSH forwarded from a host port, and the seed.
    "forwards-seed": DomainXml(
        **{**BASE, "graphics": Graphics("vnc", "127.0.0.1", "s3cretpw"), "display": Display(1280, 800)},
        seed_iso="/var/lib/cwhost/disks/cwhost-ws-8f3k2m9q.seed.iso",
        forwards=(PortForward(22014, 22, "0.0.0.0"),),
        kernel_boot=KernelBoot(
            "/var/lib/cwhost/images/python/20261130T083029Z/vmlinuz",
            "/var/lib/cwhost/images/python/20261130T083029Z/initrd.img",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0",
        ),
        base_image="/var/lib/cwhost/images/python/20261130T083029Z/disk.qcow2",
    ),
    "kernel-boot": DomainXml(
        **{**BASE, "domain_type": "qemu", "network": "lan-bridge", "graphics": None},
        kernel_boot=KernelBoot("/srv/guest/vmlinuz", "/srv/guest/initrd.img", "console=ttyS0 quiet"),
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_domain_xml_matches_its_golden_file_and_parses_back(kind):
    golden = DATA / f"domain-{kind}.xml"
    produced = to_xml(KINDS[kind])
    if os.environ.get("CWHOST_UPDATE_GOLDEN") == "1":
        golden.write_text(produced + "\n")
    assert produced + "\n" == golden.read_text()
    assert from_xml(produced) == KINDS[kind]


def test_the_seed_is_a_read_only_virtio_disk_and_a_domain_with_the_old_cd_rom_seed_still_reads():
    domain = KINDS["workspace-seed"]
    root = ET.fromstring(to_xml(domain))
    seed = root.find("devices/disk[serial='cidata']")
    assert seed.get("device") == "disk" and seed.find("target").get("bus") == "virtio"
    assert seed.find("readonly") is not None and seed.find("source").get("file") == domain.seed_iso
    # A domain started before the seed moved to virtio keeps its CD-ROM until its next launch.
    seed.set("device", "cdrom")
    seed.remove(seed.find("serial"))
    seed.find("target").attrib.update(dev="sda", bus="sata")
    assert from_xml(ET.tostring(root, encoding="unicode")) == domain


HOSTILE_TITLES = [
    "<b>bold</b>",
    "a & b",
    "quote\" and 'apostrophe'",
    "]]><injected/><![CDATA[",
    "</title><devices><hostdev mode='subsystem'/></devices><title>",
    "&lt;already-escaped&gt;",
    "<!-- comment -->",
    "<?xml version='1.0'?>",
    "&xxe;",
]


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_title_with_markup_never_changes_the_document(title):
    hostile = to_xml(DomainXml(**{**BASE, "title": title}))
    plain = to_xml(DomainXml(**{**BASE, "title": "plain"}))

    def shape(text):
        return [(element.tag, sorted(element.attrib.items())) for element in ET.fromstring(text).iter()]

    assert shape(hostile) == shape(plain)
    assert ET.fromstring(hostile).findtext("title") == title
    assert from_xml(hostile).title == title


def test_pci_addresses_round_trip():
    for text in ("0000:65:00.0", "0000:ca:00.0", "0001:0a:1f.7"):
        assert str(PciAddress.parse(text)) == text


def test_only_display_controllers_are_gpus():
    node = ET.parse(DATA / "node.xml").getroot()
    found = [parse_pci_device(ET.tostring(device, encoding="unicode")) for device in node.iter("device")]
    gpus = [g for g in found if g is not None]
    assert [str(g.address) for g in gpus] == ["0000:65:00.0", "0000:ca:00.0", "0000:00:02.0"]
    assert [g.vendor_id for g in gpus] == [0x10DE, 0x10DE, 0x102B]
    assert gpus[0].iommu_group == 12 and gpus[2].iommu_group is None
    not_gpu = "<device><name>x</name><capability type='pci'><class>0x020000</class></capability></device>"
    assert parse_pci_device(not_gpu) is None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_libvirt_accepts_each_golden_document_under_schema_validation(kind, tmp_path):
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    node = tmp_path / "node.xml"
    node.write_text((DATA / "node.xml").read_text())
    conn = libvirt.open(f"test://{node}")
    try:
        domain = conn.defineXMLFlags((DATA / f"domain-{kind}.xml").read_text(), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        assert from_xml(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).title == "My-New-Workstation"
        with pytest.raises(libvirt.libvirtError):
            conn.defineXMLFlags(
                "<domain type='kvm'><name>x</name><bogus/></domain>", libvirt.VIR_DOMAIN_DEFINE_VALIDATE
            )
    finally:
        conn.close()
