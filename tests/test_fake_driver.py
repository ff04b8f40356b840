"""What only the fake driver promises: state on disk, real disk files, simulated faults."""

from __future__ import annotations

import time

import psutil
import pytest

from drivers.base import DomainSpec, DomainState, HypervisorUnavailable
from drivers.fake import GIB, FakeDriver, GuestLoad
from tests.test_driver_contract import HOST, spec


def test_domains_and_their_guests_survive_a_new_driver_on_the_same_directory(tmp_path):
    first = FakeDriver(tmp_path, HOST)
    first.define(spec())
    first.start("cwhost-ws-test0001", HOST.gpus[1])
    second = FakeDriver(tmp_path, HOST)
    assert second.list_domains() == {"cwhost-ws-test0001": DomainState.RUNNING}
    assert second.pid("cwhost-ws-test0001") == first.pid("cwhost-ws-test0001")
    second.destroy("cwhost-ws-test0001")


def test_a_guest_that_died_unwatched_is_a_stopped_domain(tmp_path):
    first = FakeDriver(tmp_path, HOST)
    first.define(spec())
    first.start("cwhost-ws-test0001")
    guest = psutil.Process(first.pid("cwhost-ws-test0001"))
    guest.kill()
    guest.wait(5)
    second = FakeDriver(tmp_path, HOST)
    assert second.state("cwhost-ws-test0001") == DomainState.STOPPED
    assert second.pid("cwhost-ws-test0001") is None


def test_guest_burns_its_cpu_share_and_holds_its_memory(tmp_path):
    driver = FakeDriver(tmp_path, HOST, GuestLoad(cpu_share=0.5, memory_mb=64))
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    guest = psutil.Process(driver.pid("cwhost-ws-test0001"))
    time.sleep(2)
    cpu = sum(guest.cpu_times()[:2])
    elapsed = time.time() - guest.create_time()
    assert 0.25 < cpu / elapsed < 0.75
    assert guest.memory_info().rss > 64 * 1024 * 1024
    driver.destroy("cwhost-ws-test0001")


def test_disk_file_is_sized_grown_and_removed(tmp_path):
    driver = FakeDriver(tmp_path, HOST)
    driver.define(spec(storage_gb=3))
    disk = driver.disk_path("cwhost-ws-test0001")
    assert disk.stat().st_size == 3 * GIB
    driver.update(spec(storage_gb=5))
    assert disk.stat().st_size == 5 * GIB
    driver.delete("cwhost-ws-test0001")
    assert not disk.exists()


def test_unavailable_hypervisor_raises_on_every_operation(tmp_path):
    driver = FakeDriver(tmp_path, HOST)
    driver.define(spec())
    driver.set_available(False)
    for call in (
        driver.host,
        driver.list_domains,
        lambda: driver.state("cwhost-ws-test0001"),
        lambda: driver.start("cwhost-ws-test0001"),
        lambda: driver.define(spec(name="cwhost-ws-other001")),
    ):
        with pytest.raises(HypervisorUnavailable):
            call()
    driver.set_available(True)
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED


def test_a_guest_that_ignores_acpi_does_not_stop_gracefully(tmp_path):
    driver = FakeDriver(tmp_path, HOST)
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    driver.set_ignores_acpi("cwhost-ws-test0001", True)
    assert driver.shutdown("cwhost-ws-test0001", timeout_seconds=0.1) is False
    assert driver.state("cwhost-ws-test0001") == DomainState.RUNNING
    driver.destroy("cwhost-ws-test0001")


def test_a_guest_started_but_never_recorded_is_stopped_by_the_next_driver(tmp_path):
    driver = FakeDriver(tmp_path / "fake", HOST)
    driver.define(DomainSpec("cwhost-ws-test0001", "t", 1, 1, 1))
    driver.start("cwhost-ws-test0001")
    orphan = psutil.Process(driver.pid("cwhost-ws-test0001"))
    # As if the service died after starting the guest, before saving its state.
    (tmp_path / "fake" / "domains.json").write_text(
        '{"cwhost-ws-test0001": {"title": "t", "cpu_cores": 1, "memory_gb": 1, "storage_gb": 1}}'
    )
    others = FakeDriver(tmp_path / "other", HOST)
    others.define(DomainSpec("cwhost-ws-test0002", "t", 1, 1, 1))
    others.start("cwhost-ws-test0002")
    FakeDriver(tmp_path / "fake", HOST)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(orphan.pid) and orphan.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the unrecorded guest still runs"
        time.sleep(0.05)
    assert others.state("cwhost-ws-test0002") == DomainState.RUNNING
    assert psutil.Process(others.pid("cwhost-ws-test0002")).is_running()
    others.destroy("cwhost-ws-test0002")
