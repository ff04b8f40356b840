"""Does recording the screen slow the guest? The same CPU-bound work timed in a real `python`
workstation (by the guest's own clock) with and without a recording of its screen under way, taking
turns round by round in one run, so the machine's load falls on both alike.

A recording's pictures are the hypervisor's screenshots and its encoding is ffmpeg's on the host:
the guest runs nothing for it, so what it may cost the guest is the host's CPU taken from the VM.
Target: the guest's work within 1.10x with a recording at the default 2 pictures a second.

Runs the real ``cwhost serve`` on the libvirt driver (qemu:///system, as root) with a built
``python`` image. Needs the test extra (paramiko, requests).

    python benchmarks/recording.py --images /var/tmp/cwhost-ci-images-python-KEY [--rounds 5] [--fps 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch_timing import Server  # noqa: E402

TARGET = 1.10
WORK = "import time; t = time.perf_counter(); sum(i * i for i in range(2_000_000)); print(time.perf_counter() - t)"


def guest_seconds(server: Server, one: str) -> float:
    return float(server.exec(one, "python3", "-c", WORK))


def recorded(server: Server, one: str, fps: int) -> float:
    started = server.http.post(one + "/recordings", json={"framesPerSecond": fps})
    started.raise_for_status()
    try:
        return guest_seconds(server, one)
    finally:
        stopped = server.http.post(f"{one}/recordings/{started.json()['id']}/stop", timeout=200).json()
        assert stopped["status"] == "ready" and stopped["sizeBytes"] > 0, stopped


def _rounds(server: Server, one: str, rounds: int, fps: int) -> tuple[list[float], list[float]]:
    launched = server.http.post(one + "/launch")
    assert launched.status_code == 200, launched.text
    server.ready(one)
    guest_seconds(server, one)  # warm: the interpreter's files in the guest's cache
    plain, with_recording = [], []
    for _ in range(rounds):
        plain.append(guest_seconds(server, one))
        with_recording.append(recorded(server, one, fps))
    return plain, with_recording


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a directory holding python/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fps", type=int, default=2)
    args = parser.parse_args()
    image = args.images / "python" / "current"
    with tempfile.TemporaryDirectory(prefix="cwhost-bench-", dir="/var/tmp") as scratch:
        Path(scratch).chmod(0o755)  # QEMU, as libvirt's own user, opens the disks in it
        kernel, initrd = image / "vmlinuz", image / "initrd.img"
        with Server(Path(scratch), [("python", args.images)], kernel, initrd) as server:
            body = {"name": "bench", "type": "python", "configuration": {"cpuCores": 2, "memoryGB": 2, "storageGB": 8}}
            one = server.created(body)
            try:
                plain, with_recording = _rounds(server, one, args.rounds, args.fps)
            finally:
                # Whatever happened, no VM is left running on the machine.
                server.http.delete(one, params={"force": "true"})
    ratio = statistics.median(with_recording) / statistics.median(plain)
    print(f"guest work, median of {args.rounds}: {statistics.median(plain):.3f} s plain,")
    print(f"  {statistics.median(with_recording):.3f} s while recording at {args.fps} pictures a second")
    print(f"ratio {ratio:.3f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
