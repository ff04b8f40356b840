"""A list of 200 running workstations on the libvirt driver (libvirt's test driver) against one GET.

Prints the median time of ``GET /v1/workstations?limit=200`` and of ``GET
/v1/workstations/{id}``, side by side in one run through the WSGI app
in-process, their ratio (target: within 3x), and the driver calls each list
made (target: none; what a list shows is taken at launch and by the
reconciler).

    python benchmarks/lists.py [--workstations 200] [--rounds 30]
"""

from __future__ import annotations

import argparse
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import replace
from pathlib import Path

from medians import median_ms

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.config.server import build_config
from cwhost.db.database import Database
from drivers.base import ConsoleAccess
from drivers.libvirt.driver import LibvirtDriver


class CountingDriver(LibvirtDriver):
    """libvirt's driver, counting every call made to it by name."""

    calls: Counter = Counter()

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if callable(attribute) and not name.startswith("_"):
            CountingDriver.calls[name] += 1
        return attribute

    def access(self, name):
        """libvirt's answer, with the VNC port QEMU would have chosen (the test driver leaves it at -1)."""
        found = super().access(name)
        if found is None or found.console is not None:
            return found
        return replace(found, console=ConsoleAccess("vnc", "127.0.0.1", 5900 + len(name), "password"))


def _big_node(path: Path, cores: int) -> None:
    """A test-driver host with room for every workstation at once."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (("nodes", 1), ("sockets", 1), ("cores", cores), ("threads", 1), ("active", cores)):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(cores * 2 * 1024 * 1024)
    ET.ElementTree(node).write(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workstations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cwhost-bench-lists-", dir="/var/tmp"))
    _big_node(work / "node.xml", cores=args.workstations * 2)
    many = args.workstations * 2
    config = build_config(
        {
            "data_dir": str(work / "data"),
            "limits": {"max_workstations": many, "max_running_cpu_cores": many, "max_running_memory_gb": many},
            "access": {"ssh_port_first": 40000, "ssh_port_last": 40000 + many},
            # As deployed (config/cwhost.toml): every running row shows fresh console links.
            "console": {"port": 6080},
            "browser": {"port": 6090},
        }
    )
    Database(config.database_path).migrate()
    driver = CountingDriver(f"test://{work / 'node.xml'}", disk_dir=work / "disks", console_dir=work / "consoles")
    app = create_app(config, driver=driver)
    client = app.test_client()
    headers = {"Authorization": "Bearer " + auth.create_key(app.extensions["cwhost"].db, "bench").token}
    body = {"configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
    ids = [
        client.post("/v1/workstations", json={"name": f"w{i}", **body}, headers=headers).get_json()["id"]
        for i in range(args.workstations)
    ]
    app.extensions["cwhost"].services.background.wait_idle()
    for workstation_id in ids:
        assert client.post(f"/v1/workstations/{workstation_id}/launch", headers=headers).status_code == 200

    CountingDriver.calls.clear()
    listed = median_ms(lambda: client.get(f"/v1/workstations?limit={args.workstations}", headers=headers), 3)
    calls_per_list = sum(CountingDriver.calls.values()) / 3
    single = median_ms(lambda: client.get(f"/v1/workstations/{ids[0]}", headers=headers), args.rounds)
    listed = median_ms(lambda: client.get(f"/v1/workstations?limit={args.workstations}", headers=headers), args.rounds)
    print(f"one GET: median {single:.2f} ms")
    print(f"list of {args.workstations} running: median {listed:.2f} ms = {listed / single:.1f}x one GET (target 3x)")
    print(f"driver calls per list request: {calls_per_list:g}")
    row = client.get(f"/v1/workstations/{ids[0]}", headers=headers).get_json()
    print(f"each row shows a fresh console link: {'url' in (row['access']['console'] or {})}")


if __name__ == "__main__":
    main()
