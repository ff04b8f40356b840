"""The one behaviour every hypervisor driver must have; each driver joins through ``driver``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from drivers.base import (
    DEFAULT_DISPLAY,
    BootSource,
    Display,
    DomainNotFound,
    DomainSpec,
    DomainState,
    GpuDevice,
    GuestSeed,
    HostInfo,
    InvalidDomainState,
    ProvisioningError,
)
from drivers.fake.driver import FakeDriver

HOST = HostInfo(
    cpu_cores=16,
    memory_gb=64,
    storage_gb=500,
    gpus=(
        GpuDevice("NVIDIA RTX A5000", "0000:65:00.0"),
        GpuDevice("NVIDIA L40S", "0000:ca:00.0"),
    ),
)


NODE_XML = Path(__file__).resolve().parent / "data" / "node.xml"


def _fake(tmp_path):
    return FakeDriver(tmp_path / "fake", HOST)


def _libvirt(tmp_path):
    """libvirt's test driver, private to this test: its own copy of a host with two NVIDIA GPUs."""
    kvm = pytest.importorskip("drivers.libvirt.driver", reason="libvirt-python is not installed")
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.read_text())
    return kvm.LibvirtDriver(f"test://{node}", disk_dir=tmp_path / "disks", console_dir=tmp_path / "consoles")


DRIVERS = {"fake": _fake, "libvirt": _libvirt}
# Drivers whose running domains are real host processes (libvirt's test driver has none;
# the real-VM test covers libvirt's).
WITH_PROCESSES = {"fake"}


def power_off_all(driver):
    for name, state in driver.list_domains().items():
        if state == DomainState.RUNNING:
            driver.destroy(name)


@pytest.fixture(params=sorted(DRIVERS))
def driver(request, tmp_path):
    driver = DRIVERS[request.param](tmp_path)
    yield driver
    power_off_all(driver)


@pytest.fixture(params=sorted(WITH_PROCESSES))
def driver_with_processes(request, tmp_path):
    driver = DRIVERS[request.param](tmp_path)
    yield driver
    power_off_all(driver)


def spec(name="cwhost-ws-test0001", title="My-Workstation", storage_gb=10, **kwargs):
    return DomainSpec(
        name=name,
        title=title,
        cpu_cores=kwargs.get("cpu_cores", 2),
        memory_gb=kwargs.get("memory_gb", 1),
        storage_gb=storage_gb,
        display=kwargs.get("display", DEFAULT_DISPLAY),
    )


def test_host_reports_capacity_and_gpus(driver):
    host = driver.host()
    assert host.cpu_cores > 0 and host.memory_gb > 0 and host.storage_gb > 0
    assert len(host.gpus) == 2 and len({gpu.model for gpu in host.gpus}) == 2
    assert {gpu.pci_address for gpu in host.gpus} == {"0000:65:00.0", "0000:ca:00.0"}


def test_defined_domain_is_listed_stopped_with_no_process(driver):
    driver.define(spec())
    assert driver.list_domains() == {"cwhost-ws-test0001": DomainState.STOPPED}
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED
    assert driver.pid("cwhost-ws-test0001") is None


def test_define_is_idempotent_but_refuses_a_different_spec(driver):
    driver.define(spec())
    driver.define(spec())
    with pytest.raises(ProvisioningError):
        driver.define(spec(cpu_cores=8))
    assert len(driver.list_domains()) == 1


def test_start_runs_the_domain_once(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    assert driver.state("cwhost-ws-test0001") == DomainState.RUNNING
    with pytest.raises(InvalidDomainState):
        driver.start("cwhost-ws-test0001")


def test_start_with_a_host_gpu(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001", driver.host().gpus[0])
    assert driver.state("cwhost-ws-test0001") == DomainState.RUNNING


def test_a_shared_directory_is_attached_for_one_run_only(driver, tmp_path):
    workspace = tmp_path / "workspace with <markup> & spaces"
    workspace.mkdir()
    driver.define(spec())
    assert driver.shared_directory("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001", driver.host().gpus[0], workspace)
    assert driver.shared_directory("cwhost-ws-test0001") == workspace
    driver.destroy("cwhost-ws-test0001")
    assert driver.shared_directory("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001")
    assert driver.shared_directory("cwhost-ws-test0001") is None


def test_sharing_a_missing_directory_refuses_to_start(driver, tmp_path):
    driver.define(spec())
    with pytest.raises(ProvisioningError):
        driver.start("cwhost-ws-test0001", share=tmp_path / "gone")
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED


def test_a_running_domain_has_a_live_process_until_it_stops(driver_with_processes):
    driver = driver_with_processes
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    pid = driver.pid("cwhost-ws-test0001")
    assert pid is not None and psutil.Process(pid).is_running()
    driver.destroy("cwhost-ws-test0001")
    assert driver.pid("cwhost-ws-test0001") is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_access_exists_only_while_running_with_a_new_password_each_launch(driver):
    driver.define(spec())
    assert driver.access("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001")
    first = driver.access("cwhost-ws-test0001")
    assert first is not None
    driver.destroy("cwhost-ws-test0001")
    assert driver.access("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001")
    second = driver.access("cwhost-ws-test0001")
    if first.console and second.console:
        assert first.console.password and first.console.password != second.console.password


def test_graceful_shutdown_stops_the_domain(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    assert driver.shutdown("cwhost-ws-test0001", timeout_seconds=5) is True
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED


def test_destroy_stops_at_once_and_only_a_running_domain(driver):
    driver.define(spec())
    with pytest.raises(InvalidDomainState):
        driver.destroy("cwhost-ws-test0001")
    driver.start("cwhost-ws-test0001")
    driver.destroy("cwhost-ws-test0001")
    assert driver.state("cwhost-ws-test0001") == DomainState.STOPPED
    driver.start("cwhost-ws-test0001")
    assert driver.state("cwhost-ws-test0001") == DomainState.RUNNING


def test_describe_reads_back_what_was_defined(driver):
    driver.define(spec(title="<b>&\"'</b>", cpu_cores=3, memory_gb=2, storage_gb=7))
    assert driver.describe("cwhost-ws-test0001") == spec(title="<b>&\"'</b>", cpu_cores=3, memory_gb=2, storage_gb=7)


def test_a_boot_source_is_kept_with_the_domain(driver, tmp_path):
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    boot = BootSource(kernel=str(kernel), initrd=str(initrd), cmdline="console=ttyS0")
    driver.define(DomainSpec("cwhost-ws-boot0001", "b", 1, 1, 1, boot))
    assert driver.describe("cwhost-ws-boot0001").boot == boot
    with pytest.raises(ProvisioningError):
        driver.define(DomainSpec("cwhost-ws-boot0001", "b", 1, 1, 1))


def test_the_display_is_kept_changed_while_stopped_and_shown_at_its_size(driver):
    import io

    from PIL import Image

    driver.define(spec(display=Display(1280, 800)))
    assert driver.describe("cwhost-ws-test0001").display == (1280, 800)
    driver.update(spec(display=Display(800, 600)))
    assert driver.describe("cwhost-ws-test0001") == spec(display=Display(800, 600))
    driver.start("cwhost-ws-test0001")
    if isinstance(driver, FakeDriver):
        # A real guest's screen has the size its guest sets (the firmware's first, then the one offered):
        # the real-VM image test checks it.
        assert Image.open(io.BytesIO(driver.screenshot("cwhost-ws-test0001"))).size == (800, 600)


def test_update_grows_but_never_shrinks_and_only_when_stopped(driver):
    driver.define(spec(storage_gb=10))
    driver.update(spec(storage_gb=20, cpu_cores=4))
    assert driver.describe("cwhost-ws-test0001") == spec(storage_gb=20, cpu_cores=4)
    with pytest.raises(ProvisioningError):
        driver.update(spec(storage_gb=15))
    driver.start("cwhost-ws-test0001")
    with pytest.raises(InvalidDomainState):
        driver.update(spec(storage_gb=30))


def test_delete_removes_a_stopped_domain_and_ignores_a_missing_one(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    with pytest.raises(InvalidDomainState):
        driver.delete("cwhost-ws-test0001")
    driver.destroy("cwhost-ws-test0001")
    driver.delete("cwhost-ws-test0001")
    assert driver.list_domains() == {}
    driver.delete("cwhost-ws-test0001")


def test_unknown_domains_raise_domain_not_found(driver):
    for operation in (driver.state, driver.start, driver.destroy, driver.describe):
        with pytest.raises(DomainNotFound):
            operation("cwhost-ws-missing0")
    with pytest.raises(DomainNotFound):
        driver.update(spec(name="cwhost-ws-missing0"))


def test_a_title_with_markup_characters_is_kept_as_data(driver):
    driver.define(spec(title="<b>&\"'</b>"))
    driver.define(spec(name="cwhost-ws-test0002", title="plain"))
    assert set(driver.list_domains()) == {"cwhost-ws-test0001", "cwhost-ws-test0002"}


def test_delete_leaves_no_file_of_the_domain_behind(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    driver.destroy("cwhost-ws-test0001")
    log = driver.console_log("cwhost-ws-test0001")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("what the guest printed")
    driver.delete("cwhost-ws-test0001")
    assert not driver.disk_path("cwhost-ws-test0001").exists()
    assert log is None or not log.exists()


def test_a_shutdown_without_waiting_only_asks(driver):
    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    stopped = driver.shutdown("cwhost-ws-test0001", 0)
    # Whether the guest is gone at once is the guest's affair; the answer says which.
    assert stopped == (driver.state("cwhost-ws-test0001") == DomainState.STOPPED)


def test_a_seed_is_given_for_one_run_only(driver):
    seed = GuestSeed(
        "my-box", "dev", ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+oWZ5C4NzdHUnsH/I6CyJpex+Gh3+oYR2m+HorZHGM a",)
    )
    driver.define(spec())
    assert driver.guest_seed("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001", seed=seed)
    given = driver.guest_seed("cwhost-ws-test0001")
    # A driver that owns the guest's network tells the guest its own address on it.
    assert given is not None and replace(given, host_address=None) == seed
    driver.destroy("cwhost-ws-test0001")
    assert driver.guest_seed("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001")
    assert driver.guest_seed("cwhost-ws-test0001") is None


def test_a_guest_endpoint_is_given_only_while_running(driver):
    with pytest.raises(DomainNotFound):
        driver.guest_endpoint("cwhost-ws-nothere1", 9223)
    driver.define(spec())
    assert driver.guest_endpoint("cwhost-ws-test0001", 9223) is None
    driver.start("cwhost-ws-test0001")
    # Before the guest has an address (neither of these drivers' guests ever gets one) there is none.
    assert driver.guest_endpoint("cwhost-ws-test0001", 9223) is None
    driver.destroy("cwhost-ws-test0001")
    assert driver.guest_endpoint("cwhost-ws-test0001", 9223) is None


def test_a_screenshot_is_a_png_of_a_running_domains_display(driver):
    import io

    from PIL import Image

    driver.define(spec())
    with pytest.raises(InvalidDomainState):
        driver.screenshot("cwhost-ws-test0001")
    driver.start("cwhost-ws-test0001")
    image = Image.open(io.BytesIO(driver.screenshot("cwhost-ws-test0001")))
    assert image.format == "PNG" and image.width > 0 and image.height > 0


def test_commands_run_only_in_a_running_guest(driver):
    from drivers.base import DriverError, ExecRequest

    request = ExecRequest(command=("echo", "hi"), user="dev", timeout_seconds=5)
    driver.define(spec())
    with pytest.raises(InvalidDomainState):
        driver.exec("cwhost-ws-test0001", request)
    driver.start("cwhost-ws-test0001")
    try:
        result = driver.exec("cwhost-ws-test0001", request)
    except DriverError:
        # libvirt's test driver has no guest agent to reach; the real VM's agent is in test_real_vm_image.
        assert not isinstance(driver, FakeDriver)
        return
    assert (result.exit_code, result.stdout) == (0, b"hi\n")


def test_input_goes_only_to_a_running_display(driver):
    from drivers.base import DriverError
    from drivers.input_events import InputAction

    actions = (InputAction("move", x=10, y=10), InputAction("text", text="hi"))
    driver.define(spec())
    with pytest.raises(InvalidDomainState):
        driver.send_input("cwhost-ws-test0001", actions)
    driver.start("cwhost-ws-test0001")
    try:
        driver.send_input("cwhost-ws-test0001", actions)
    except DriverError:
        # libvirt's test driver has no QEMU monitor; the real VM's display is in test_real_vm_image.
        assert not isinstance(driver, FakeDriver)


def test_port_forwards_are_given_for_one_run_only(driver):
    from drivers.base import PortForward

    forward = PortForward(22014, 22, "127.0.0.1")
    driver.define(spec())
    assert driver.forwards_ports
    driver.start("cwhost-ws-test0001", forwards=(forward,))
    assert driver.access("cwhost-ws-test0001").forwards == (forward,)
    driver.destroy("cwhost-ws-test0001")
    assert driver.access("cwhost-ws-test0001") is None
    driver.start("cwhost-ws-test0001")
    assert driver.access("cwhost-ws-test0001").forwards == ()


def test_the_guest_service_is_reached_only_in_a_running_guest(driver):
    from drivers.guest_service import frames
    from drivers.guest_service.client import GuestServiceUnavailable

    with pytest.raises(DomainNotFound):
        driver.guest_service("cwhost-ws-nothere1", "dev")
    driver.define(spec())
    with pytest.raises(InvalidDomainState):
        driver.guest_service("cwhost-ws-test0001", "dev")
    driver.start("cwhost-ws-test0001")
    service = driver.guest_service("cwhost-ws-test0001", "dev")
    try:
        written = service.write("note.txt", [b"kept"], max_bytes=100, timeout=10)
    except GuestServiceUnavailable:
        # libvirt's test driver runs no guest to answer; the real VM's service is in test_real_vm_image.
        assert not isinstance(driver, FakeDriver)
        return
    assert written["path"] == "/home/dev/note.txt"
    entry, chunks = service.read("/home/dev/note.txt", timeout=10)
    assert entry["size"] == 4 and b"".join(chunks) == b"kept"
    pid, connection = service.spawn({"command": ["echo", "hi"]})
    assert isinstance(pid, int)
    assert connection.frame() == (frames.STDOUT, b"hi\n")
    assert connection.answer()["exit"] == 0
    connection.close()
    driver.destroy("cwhost-ws-test0001")
    with pytest.raises(InvalidDomainState):
        driver.guest_service("cwhost-ws-test0001", "dev")
    # The guest's files outlive a run, as a disk does, and go with the domain.
    driver.start("cwhost-ws-test0001")
    entry, chunks = driver.guest_service("cwhost-ws-test0001", "dev").read("note.txt", timeout=10)
    assert b"".join(chunks) == b"kept"


def test_a_terminal_in_the_guest_echoes_keys_and_ends_with_its_program(driver):
    from drivers.guest_service import frames
    from drivers.guest_service.client import GuestServiceUnavailable

    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    service = driver.guest_service("cwhost-ws-test0001", "dev")
    try:
        pid, connection = service.terminal({"command": ["cat"], "cols": 80, "rows": 24})
    except GuestServiceUnavailable:
        assert not isinstance(driver, FakeDriver)  # libvirt's test driver runs no guest
        return
    assert isinstance(pid, int)
    connection.send(frames.STDIN, b"typed\r")
    screen = b""
    while screen.count(b"typed") < 2:  # the terminal's echo, then cat's copy
        kind, payload = connection.frame()
        assert kind == frames.STDOUT
        screen += payload
    connection.send(frames.STDIN, b"\x04")  # ^D: cat reads its end
    while (frame := connection.frame())[0] == frames.STDOUT:
        pass
    assert json.loads(frame[1])["exit"] == 0
    connection.close()


def test_the_guests_speaker_is_recorded_while_it_runs_and_goes_quiet_with_it(driver):
    from drivers.guest_service import frames
    from drivers.guest_service.client import GuestServiceUnavailable

    driver.define(spec())
    driver.start("cwhost-ws-test0001")
    service = driver.guest_service("cwhost-ws-test0001", "dev")
    try:
        _, connection = service.record_speaker(16000, 1, silence_seconds=10)
    except GuestServiceUnavailable:
        assert not isinstance(driver, FakeDriver)  # libvirt's test driver runs no guest
        return
    heard = b""
    while len(heard) < 3200:  # a tenth of a second
        kind, payload = connection.frame()
        assert kind == frames.STDOUT
        heard += payload
    driver.destroy("cwhost-ws-test0001")
    # A powered-off guest's recording ends (the connection closes, or breaks off) rather than going
    # silent: a silence of 10 s would be a TimeoutError here.
    try:
        while (frame := connection.frame()) is not None and frame[0] == frames.STDOUT:
            pass
    except GuestServiceUnavailable:
        pass
    connection.close()
