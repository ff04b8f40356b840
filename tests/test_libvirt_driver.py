"""The libvirt driver behind the API, on libvirt's test driver (a private host per test)."""

from __future__ import annotations

import threading

import pytest

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.db.database import Database
from tests.helpers import bearer, create_stopped, make_config
from tests.test_driver_contract import NODE_XML

kvm = pytest.importorskip("drivers.libvirt.driver", reason="libvirt-python is not installed")


def _driver(tmp_path, uri=None):
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.read_text())
    return kvm.LibvirtDriver(uri or f"test://{node}", disk_dir=tmp_path / "disks", console_dir=tmp_path / "consoles")


@pytest.fixture
def libvirt_app(tmp_path):
    config = make_config(tmp_path / "data")
    Database(config.database_path).migrate()
    driver = _driver(tmp_path)
    app = create_app(config, driver=driver)
    yield app
    app.extensions["cwhost"].services.background.wait_idle()


def test_two_concurrent_launches_for_the_only_gpu_of_a_model(libvirt_app, tmp_path):
    client = libvirt_app.test_client()
    db = libvirt_app.extensions["cwhost"].db
    alice = bearer(auth.create_key(db, "alice").token)
    admin = bearer(auth.create_key(db, "ops", admin=True).token)
    l40s = next(g for g in client.get("/v1/host", headers=admin).get_json()["gpus"] if "L40S" in g["model"])
    ids = [create_stopped(client, alice, name=f"g{i}", gpu=l40s["model"], cpuCores=2)["id"] for i in range(2)]
    barrier = threading.Barrier(2)
    answers = {}

    def launch(ws_id):
        own = libvirt_app.test_client()
        barrier.wait()
        answers[ws_id] = own.post(f"/v1/workstations/{ws_id}/launch", headers=alice)

    threads = [threading.Thread(target=launch, args=(ws_id,)) for ws_id in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(response.status_code for response in answers.values())
    assert statuses == [200, 503]
    winner = next(ws_id for ws_id, r in answers.items() if r.status_code == 200)
    loser = next(r for r in answers.values() if r.status_code == 503)
    assert l40s["model"] in loser.get_json()["message"]
    held = next(
        g for g in client.get("/v1/host", headers=admin).get_json()["gpus"] if g["pciAddress"] == l40s["pciAddress"]
    )
    assert (held["state"], held["holder"]) == ("assigned", winner)


def test_gpu_models_come_from_pci_names_without_nvml_and_from_nvml_with_it(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.read_text())
    plain = kvm.LibvirtDriver(f"test://{node}", disk_dir=tmp_path / "d", console_dir=tmp_path / "c")
    assert [g.model for g in plain.host().gpus] == ["GA102GL [RTX A5000]", "AD102GL [L40S]"]
    named = kvm.LibvirtDriver(
        f"test://{node}",
        disk_dir=tmp_path / "d",
        console_dir=tmp_path / "c",
        gpu_names={"0000:ca:00.0": "NVIDIA L40S"},
    )
    assert [g.model for g in named.host().gpus] == ["GA102GL [RTX A5000]", "NVIDIA L40S"]
    assert [g.iommu_group for g in named.host().gpus] == [12, 40]


def test_an_unreachable_libvirtd_is_503_not_500(tmp_path):
    config = make_config(tmp_path / "data")
    Database(config.database_path).migrate()
    driver = _driver(tmp_path, uri=f"qemu+unix:///system?socket={tmp_path}/no-such.sock")
    app = create_app(config, driver=driver)
    client = app.test_client()
    alice = bearer(auth.create_key(app.extensions["cwhost"].db, "alice").token)
    for response in (
        client.get("/v1/host", headers=alice),
        client.post(
            "/v1/workstations",
            json={"name": "x", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}},
            headers=alice,
        ),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"] == "unavailable"
        assert response.headers["Retry-After"]


def test_a_dropped_connection_is_reopened_by_the_next_call(tmp_path):
    driver = _driver(tmp_path)
    driver.host()
    driver._libvirt._connection.close()  # what a restart of libvirtd does to our end
    assert len(driver.host().gpus) == 2


def _qemu_img_info(path):
    import json
    import subprocess

    return json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True).stdout
    )


def test_disks_are_qcow2_sized_to_storage_and_grow_on_update(tmp_path):
    from drivers.base import DomainSpec

    driver = _driver(tmp_path)
    driver.define(DomainSpec("cwhost-ws-disk0001", "d", 1, 1, 3))
    disk = driver.disk_path("cwhost-ws-disk0001")
    assert _qemu_img_info(disk)["format"] == "qcow2"
    assert _qemu_img_info(disk)["virtual-size"] == 3 * 1024**3
    driver.update(DomainSpec("cwhost-ws-disk0001", "d", 1, 1, 5))
    assert _qemu_img_info(disk)["virtual-size"] == 5 * 1024**3
    driver.delete("cwhost-ws-disk0001")
    assert not disk.exists()


def test_with_a_base_image_each_disk_is_a_copy_on_write_overlay(tmp_path):
    import subprocess

    from drivers.base import DomainSpec

    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "2G"], check=True)
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.read_text())
    driver = kvm.LibvirtDriver(
        f"test://{node}", disk_dir=tmp_path / "disks", console_dir=tmp_path / "consoles", base_image=base
    )
    driver.define(DomainSpec("cwhost-ws-cow00001", "c", 1, 1, 8))
    info = _qemu_img_info(driver.disk_path("cwhost-ws-cow00001"))
    assert info["backing-filename"] == str(base)
    assert info["virtual-size"] == 8 * 1024**3


def test_a_start_makes_cwhosts_guest_network_and_refuses_one_of_another_address_by_name(tmp_path):
    import ipaddress

    from drivers.base import DomainSpec, ProvisioningError
    from drivers.libvirt.network import GuestNetwork

    driver = _driver(tmp_path)
    driver.define(DomainSpec("cwhost-ws-net00001", "n", 1, 1, 1))
    driver.start("cwhost-ws-net00001")
    # The test driver's connection is private to the driver: look through the driver's own.
    made = driver._libvirt.get().networkLookupByName("cwhost")
    assert made.isActive() and made.autostart() and "192.168.150.1" in made.XMLDesc(0)
    driver.destroy("cwhost-ws-net00001")

    (tmp_path / "other").mkdir()
    elsewhere = _driver(tmp_path / "other")
    elsewhere._libvirt.get().networkDefineXML(GuestNetwork(subnet=ipaddress.IPv4Network("10.77.0.0/24")).to_xml())
    elsewhere.define(DomainSpec("cwhost-ws-net00002", "n", 1, 1, 1))
    with pytest.raises(ProvisioningError, match="net-undefine cwhost"):
        elsewhere.start("cwhost-ws-net00002")


def test_a_start_on_a_host_without_libvirts_traffic_filter_says_what_to_install(tmp_path):
    import libvirt

    from drivers.base import DomainSpec, DomainState, ProvisioningError

    driver = _driver(tmp_path)
    driver.define(DomainSpec("cwhost-ws-nof00001", "n", 1, 1, 1))
    connection = driver._libvirt.get()

    def no_such_filter(name):
        missing = libvirt.libvirtError(f"Network filter not found: no nwfilter with matching name '{name}'")
        missing.err = (libvirt.VIR_ERR_NO_NWFILTER, 0, str(missing), 0, "", "", "", 0, 0)
        raise missing

    connection.nwfilterLookupByName = no_such_filter
    with pytest.raises(ProvisioningError, match="apt-get install libvirt-daemon-config-nwfilter"):
        driver.start("cwhost-ws-nof00001")
    assert driver.state("cwhost-ws-nof00001") is DomainState.STOPPED
