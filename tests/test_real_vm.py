"""A real virtual machine through cwhost's own HTTP API, on qemu:///system.

Needs a running libvirtd and a guest built by ``tests/guest/build-guest.sh``,
named by ``CWHOST_REAL_VM_GUEST``; ``.ci/run`` provides both. Elsewhere it
skips (and in CI a skip is a failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import REPO, cli, start_server, wait_until
from tests.test_deployment_files import unit_service_section

GUEST = os.environ.get("CWHOST_REAL_VM_GUEST")
pytestmark = pytest.mark.skipif(not GUEST, reason="CWHOST_REAL_VM_GUEST is not set (see .ci/run)")
libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")


class _CpuWatch(threading.Thread):
    """The process's CPU time (user + system), read every 10 ms until it exits: the last figure seen."""

    def __init__(self, process: psutil.Process):
        super().__init__(daemon=True)
        self.process = process
        self.cpu = sum(process.cpu_times()[:2])

    def run(self):
        try:
            while True:
                self.cpu = sum(self.process.cpu_times()[:2])
                time.sleep(0.01)
        except psutil.NoSuchProcess:
            pass


def _watch_cpu_until_exit(process: psutil.Process) -> _CpuWatch:
    watch = _CpuWatch(process)
    watch.start()
    return watch


def _libvirtd_running() -> bool:
    return any(p.info["name"] == "libvirtd" for p in psutil.process_iter(["name"]))


@pytest.fixture
def vm_server(tmp_path):
    # The layout of the systemd unit: StateDirectoryMode=0751 and UMask=0027
    # (read from the unit itself). qemu runs as libvirt-qemu and must still
    # reach its disk; pytest's private temporary directories it could not.
    service = unit_service_section()
    data_dir = Path(tempfile.mkdtemp(prefix="cwhost-realvm-", dir="/var/tmp"))
    data_dir.chmod(int(service["StateDirectoryMode"], 8))
    config = f"""
[driver]
name = "libvirt"
stop_timeout_seconds = 30
[driver.libvirt]
uri = "qemu:///system"
domain_type = "qemu"
network = ""
graphics = "vnc"
kernel = "{GUEST}/vmlinuz"
initrd = "{GUEST}/initrd.img"
cmdline = "console=ttyS0"
[sampler]
interval_seconds = 1.0
"""
    server = start_server(
        tmp_path, config, extra_env={"CWHOST_DATA_DIR": str(data_dir)}, umask=int(service["UMask"], 8)
    )
    yield server, data_dir
    if server.process.poll() is None:
        server.stop()
    # Its disks and consoles are gone with the workstations it deleted; what a failure left goes too.
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_real_vm_through_the_api(vm_server):
    server, data_dir = vm_server
    http = requests.Session()
    http.headers["Authorization"] = "Bearer " + cli(server.env, "keys", "create", "--account", "ci").stdout.split()[-1]
    created = http.post(
        server.url + "/v1/workstations",
        json={"name": "real-vm", "configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}},
    )
    assert created.status_code == 201, created.text
    ws = created.json()
    url = f"{server.url}/v1/workstations/{ws['id']}"
    domain = f"cwhost-{ws['id']}"
    wait_until(lambda: http.get(url).json()["status"] == "stopped", 60, "provisioning")
    disk = data_dir / "disks" / f"{domain}.qcow2"
    assert disk.exists()

    # Launch: the guest boots and says so on its serial console.
    launched = http.post(url + "/launch")
    assert launched.status_code == 200, launched.text
    assert launched.json()["status"] == "running"
    first_console = launched.json()["access"]["console"]
    assert first_console["protocol"] == "vnc" and first_console["port"] >= 5900
    assert first_console["password"]
    console = data_dir / "consoles" / f"{domain}.log"
    wait_until(lambda: console.exists() and "cwhost-guest: booted" in console.read_text(errors="replace"), 90, "boot")
    # The same console, through the logs API.
    logs = http.get(url + "/logs").json()["data"]
    console_log = next(entry for entry in logs if entry["type"] == "console")
    assert "cwhost-guest: booted" in http.get(server.url + console_log["url"]).text
    assert any(entry["message"] == "Launched." for entry in logs)

    # Usage reads the real qemu process: within 1 % of its kernel CPU counter.
    qemu = psutil.Process(int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text()))
    assert qemu.name().startswith("qemu-system")
    time.sleep(3)
    wait_until(lambda: http.get(url + "/usage").json()["cpuHours"] > 0, 30, "a sample")
    kernel_cpu = sum(qemu.cpu_times()[:2])

    # Graceful stop: ACPI, well before the 30 s after which it would be forced.
    # The guest's CPU while it shuts down is metered too: the ledger ends
    # within 0.5 CPU-second of the last figure the kernel showed for the process.
    last_seen = _watch_cpu_until_exit(qemu)
    began = time.monotonic()
    stopped = http.post(url + "/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert time.monotonic() - began < 25
    last_seen.join(timeout=30)
    metered = http.get(url + "/usage").json()["cpuHours"] * 3600
    assert metered >= kernel_cpu * 0.99
    assert last_seen.cpu - 0.5 < metered <= last_seen.cpu + 0.01, (metered, last_seen.cpu)

    # Launch again, then lose libvirtd: 503 while it is down, recovery after, no restart of cwhost.
    relaunched = http.post(url + "/launch").json()
    assert relaunched["status"] == "running"
    assert relaunched["access"]["console"]["password"] != first_console["password"]
    subprocess.run(["pkill", "-x", "libvirtd"], check=True)
    wait_until(lambda: not _libvirtd_running(), 30, "libvirtd to exit")
    down = http.get(server.url + "/v1/host")
    assert (down.status_code, down.json()["error"]) == (503, "unavailable")
    while_down = http.get(url).json()
    # A read asks the hypervisor nothing: how to reach the VM (still running) is still shown.
    assert while_down["status"] == "running"
    assert while_down["access"]["ssh"]["port"] == relaunched["access"]["ssh"]["port"]
    assert while_down["access"]["console"]["port"] == relaunched["access"]["console"]["port"]
    subprocess.run(["bash", str(REPO / ".ci" / "start-libvirtd")], check=True, timeout=120)
    wait_until(lambda: http.get(server.url + "/v1/host").status_code == 200, 60, "cwhost to reconnect")

    forced = http.post(url + "/stop", params={"force": "true"})
    assert forced.status_code == 200 and forced.json()["status"] == "stopped"
    assert http.delete(url).status_code == 204
    assert http.get(url).status_code == 404

    conn = libvirt.open("qemu:///system")
    try:
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(domain)
    finally:
        conn.close()
    assert not disk.exists()
