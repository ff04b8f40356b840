"""A launch against the floor of this machine, side by side in one run: each phase of a real `python`
(and `chromium`) workstation's launch, as a ratio to the floor's.

The floor is the same kernel, booted by the same cwhost the same way with the
same forwarding, from a minimal initramfs whose init answers a TCP connection
on the forwarded SSH port (benchmarks/boot_floor.py): launch → banner. A real
launch is timed from the launch call: QEMU started (the call's answer), then
the guest's own phases (kernel and initramfs, first-boot work, sshd,
workspace, DevTools for chromium, ready) as its readiness report gives them,
placed on the host's clock through /proc/uptime read over exec; then an SSH
login with the published known_hosts line. `systemd-analyze time` and the
slowest units of `systemd-analyze blame` are printed as the guest says them. Runs are
interleaved (floor, python, its relaunch, chromium) so that the machine's
load falls on each alike.

Runs the real ``cwhost serve`` on the libvirt driver (qemu:///system, as root)
with an images directory holding built images (``cwhost images build python``
and, for --chromium, ``chromium``). Needs the test extra (paramiko, requests).

    python benchmarks/create_to_ssh.py --images /var/tmp/cwhost-ci-images-KEY [--runs 3] [--chromium DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_floor import BANNER, build_floor_initramfs  # noqa: E402
from launch_timing import Server, ssh_login  # noqa: E402

TARGETS = {"python ready": 2.5, "chromium devtools": 3.5}


def floor_run(server: Server) -> dict[str, float]:
    body = {"name": "floor", "configuration": {"cpuCores": 2, "memoryGB": 2, "storageGB": 1}}
    one = server.created(body)
    began = time.monotonic()
    launched = server.http.post(one + "/launch").json()
    answered = time.monotonic()
    port = launched["access"]["ssh"]["port"]
    while not _banner(port):
        assert time.monotonic() - began < 600, "the floor never answered"
        time.sleep(0.05)
    floor = time.monotonic() - began
    server.http.delete(one, params={"force": "true"})
    return {"qemu started": answered - began, "floor": floor}


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.settimeout(2)
            return connection.recv(64).startswith(BANNER)
    except OSError:
        return False


def real_run(server: Server, type_id: str, relaunch: bool) -> list[tuple[str, dict[str, float], str]]:
    """The first launch's phases, and the relaunch's if asked: (label, phases in s after launch, guest's say)."""
    workspace = server.http.post(server.url + "/v1/workspaces", json={}).json()["id"]
    sized = {"cpuCores": 2, "memoryGB": 2}  # what a 2-core host can give
    one = server.created({"name": type_id, "type": type_id, "workspaceId": workspace, "configuration": sized})
    runs = [(type_id, *_launch(server, one))]
    if relaunch:
        server.http.post(one + "/stop").raise_for_status()
        runs.append((f"{type_id} relaunch", *_launch(server, one)))
    server.http.delete(one, params={"force": "true"})
    server.http.delete(f"{server.url}/v1/workspaces/{workspace}")
    return runs


def _launch(server: Server, one: str) -> tuple[dict[str, float], str]:
    began = time.monotonic()
    launched = server.http.post(one + "/launch").json()
    phases = {"qemu started": time.monotonic() - began}
    shown = server.ready(one)
    phases["ready (API)"] = time.monotonic() - began
    seen = server.exec(one, "sh", "-c", "cat /proc/uptime /run/cwhost/ready.json")
    booted = time.monotonic() - began - float(seen.split()[0])
    report = json.loads(seen.split("\n", 1)[1])
    for name, seconds in report["phases"]:
        phases[name] = booted + seconds
    ssh = shown["access"]["ssh"]
    ssh_login(ssh["port"], server.key, ssh["knownHosts"])
    phases["ssh login"] = time.monotonic() - began
    said = server.exec(
        one,
        "sh",
        "-c",
        "timeout 50 systemctl is-system-running --wait >/dev/null;"
        " systemd-analyze time; systemd-analyze blame | head -n 8",
    )
    assert launched["status"] == "running"
    return phases, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="an images directory with `python` built")
    parser.add_argument("--chromium", type=Path, help="an images directory with `chromium` built")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cwhost-bench-", dir="/var/tmp"))
    data_dir.chmod(0o751)
    vmlinuz = args.images / "python" / "current" / "vmlinuz"
    floor_initrd = build_floor_initramfs(vmlinuz, data_dir / "floor-initrd.img")
    images = [("python", args.images)] + ([("chromium", args.chromium)] if args.chromium else [])
    results: dict[str, list[dict[str, float]]] = {}
    with Server(data_dir, images, vmlinuz, floor_initrd) as server:
        for _ in range(args.runs):
            results.setdefault("floor", []).append(floor_run(server))
            for label, phases, said in real_run(server, "python", relaunch=True):
                results.setdefault(label, []).append(phases)
                print(f"{label}: {said.strip()}", file=sys.stderr)
            if args.chromium:
                for label, phases, said in real_run(server, "chromium", relaunch=False):
                    results.setdefault(label, []).append(phases)
                    print(f"{label}: {said.strip()}", file=sys.stderr)
    report(results, args.runs)


def report(results: dict[str, list[dict[str, float]]], runs: int) -> None:
    floor = statistics.median(run["floor"] for run in results["floor"])
    print(f"floor (launch → a TCP answer on the forwarded port): median {floor:.1f} s over {runs} runs")
    for label, phase_runs in results.items():
        if label == "floor":
            continue
        print(f"\n{label}: each phase, seconds after the launch call (median), and its ratio to the floor")
        for phase in phase_runs[0]:
            median = statistics.median(run[phase] for run in phase_runs if phase in run)
            print(f"  {phase:>14}: {median:7.1f} s   {median / floor:5.2f}x")
    floors = [run["floor"] for run in results["floor"]]
    ratios = {
        "python ready": _ratios(results["python"], "ready (API)", floors),
        "python relaunch / first": _ratios(
            results["python relaunch"], "ready (API)", [run["ready (API)"] for run in results["python"]]
        ),
    }
    if "chromium" in results:
        ratios["chromium devtools"] = _ratios(results["chromium"], "devtools", floors)
    print(f"\ntargets ({os.cpu_count()} cores, TCG unless KVM works here), medians, and each round's own:")
    for name, (ratio, rounds) in ratios.items():
        target = TARGETS.get(name, 1.0)
        each = ", ".join(f"{one:.2f}x" for one in rounds)
        verdict = "met" if ratio <= target else "NOT met"
        print(f"  {name:>24}: {ratio:5.2f}x   target ≤ {target}x   {verdict}   ({each})")


def _ratios(runs: list[dict[str, float]], phase: str, references: list[float]) -> tuple[float, list[float]]:
    """The median of a phase over the median of its references, and each round's phase over that round's
    reference: how far a busy spell of the machine moved one round."""
    median = statistics.median(run[phase] for run in runs) / statistics.median(references)
    return median, [run[phase] / reference for run, reference in zip(runs, references, strict=True)]


if __name__ == "__main__":
    main()
