"""What only the fake driver promises: state on disk, real disk files, simulated faults."""

from __future__ import annotations

import time

import psutil
import pytest

from drivers.base import DomainSpec, DomainState, HypervisorUnavailable
from drivers.fake.driver import GIB, FakeDriver, GuestLoad
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
    """A guest's share of a CPU, measured against a guest with a fifth of it, side by side: on a busy
    machine both get less than they ask, but the larger share still burns far more, and none burns more
    than it asks."""
    burning = FakeDriver(tmp_path / "half", HOST, GuestLoad(cpu_share=0.5, memory_mb=64))
    idling = FakeDriver(tmp_path / "tenth", HOST, GuestLoad(cpu_share=0.1, memory_mb=8))
    guests = []
    try:
        for driver in (burning, idling):
            driver.define(spec())
            driver.start("cwhost-ws-test0001")
            guests.append(psutil.Process(driver.pid("cwhost-ws-test0001")))
        time.sleep(1)  # past their start (Python, and the memory touched page by page)
        before = [sum(guest.cpu_times()[:2]) for guest in guests]
        began = time.monotonic()
        time.sleep(3)
        elapsed = time.monotonic() - began
        half, tenth = (sum(guest.cpu_times()[:2]) - was for guest, was in zip(guests, before, strict=True))
        assert half / elapsed < 0.5 + 0.15 and tenth / elapsed < 0.1 + 0.15
        assert half > 2 * tenth, (half, tenth)
        assert guests[0].memory_info().rss > 64 * 1024 * 1024
    finally:
        for guest in guests:
            guest.kill()


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
    (tmp_path / "fake" / "domains" / "cwhost-ws-test0001.json").write_text(
        '{"title": "t", "cpu_cores": 1, "memory_gb": 1, "storage_gb": 1}'
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


def test_the_single_state_file_of_earlier_versions_is_split_into_a_file_per_domain(tmp_path):
    (tmp_path / "domains.json").write_text(
        '{"cwhost-ws-old1": {"title": "old", "cpu_cores": 2, "memory_gb": 4, "storage_gb": 1}}'
    )
    driver = FakeDriver(tmp_path, HOST)
    assert driver.describe("cwhost-ws-old1").cpu_cores == 2
    assert not (tmp_path / "domains.json").exists()
    assert (tmp_path / "domains" / "cwhost-ws-old1.json").exists()
    assert FakeDriver(tmp_path, HOST).list_domains() == {"cwhost-ws-old1": DomainState.STOPPED}


def test_a_domain_that_is_slow_to_start_holds_up_no_other_domain(tmp_path, monkeypatch):
    import threading

    import drivers.fake.driver

    driver = FakeDriver(tmp_path, HOST)
    slow, quick = spec("cwhost-ws-slow"), spec("cwhost-ws-quick")
    driver.define(slow)
    driver.define(quick)
    release, launching = threading.Event(), threading.Event()
    real_launch = drivers.fake.driver.launch_guest

    def launch(load, owner, service_dir):
        if threading.current_thread().name == "slow-start":
            launching.set()
            release.wait(10)
        return real_launch(load, owner, service_dir)

    monkeypatch.setattr(drivers.fake.driver, "launch_guest", launch)
    starter = threading.Thread(target=driver.start, args=(slow.name,), name="slow-start")
    starter.start()
    try:
        assert launching.wait(5)
        driver.start(quick.name)
        driver.set_ignores_acpi(quick.name, False)
        assert driver.shutdown(quick.name, 1)
        assert driver.list_domains() == {slow.name: DomainState.STOPPED, quick.name: DomainState.STOPPED}
        assert starter.is_alive(), "the slow start was let go before the other domain's changes were done"
    finally:
        release.set()
        starter.join(10)
    assert driver.state(slow.name) == DomainState.RUNNING
    driver.destroy(slow.name)


def test_a_record_that_cannot_be_written_changes_nothing(tmp_path, monkeypatch):
    driver = FakeDriver(tmp_path, HOST)
    driver.define(spec())
    before = (tmp_path / "domains" / "cwhost-ws-test0001.json").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("drivers.fake.domain.tempfile.mkstemp", disk_full)
    with pytest.raises(HypervisorUnavailable):
        driver.start("cwhost-ws-test0001")
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED
    assert driver.pid("cwhost-ws-test0001") is None
    assert (tmp_path / "domains" / "cwhost-ws-test0001.json").read_bytes() == before
    monkeypatch.undo()
    assert FakeDriver(tmp_path, HOST).state("cwhost-ws-test0001") == DomainState.STOPPED


def test_a_guest_reads_its_options_and_refuses_one_it_does_not_know():
    from drivers.fake.guest import options

    assert options(["--cpu-share", "0.5", "--detach", "--owner", "/x"]) == (
        {"--cpu-share": "0.5", "--memory-mb": "16", "--owner": "/x", "--service": ""},
        True,
    )
    for bad in (["--cpu"], ["--memory-mb"]):
        with pytest.raises(SystemExit):
            options(bad)
