"""The images' readiness reporter, run with /bin/sh against a stand-in systemctl: what it writes is a
report cwhost's reader takes, phase by phase, and a boot that stalls says how far it got."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from cwhost.images.guest_files import REPORT_READY
from drivers.libvirt.guest_agent import parse_readiness

# A systemctl as the reporter uses it: `start UNIT` returns once the unit is up (a file named after it
# appears, holding when it became active, in microseconds since boot), as a start job of the boot's
# does; `show -p PROPERTY --value [UNIT]` answers that time, or the kernel's.
STAND_IN_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$UNITS/calls"
case $1 in
start) until [ -f "$UNITS/$2" ]; do sleep 0.1; done ;;
show) if [ $# -eq 4 ]; then echo 2500000; else cat "$UNITS/$5"; fi ;;
esac
"""


def _run(tmp_path: Path, active: dict[str, int], seconds: float) -> bytes:
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir(exist_ok=True)
    units.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text(STAND_IN_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    for unit, microseconds in active.items():
        (units / unit).write_text(f"{microseconds}\n")
    script = tmp_path / "report-ready"
    script.write_text(REPORT_READY)
    report = tmp_path / "run" / "ready.json"
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "UNITS": str(units), "CWHOST_READY_FILE": str(report)}
    # A session of its own: the phases' processes, left waiting when it stalls, end with it.
    reporter = subprocess.Popen(["/bin/sh", str(script)], env=env, start_new_session=True)
    try:
        assert reporter.wait(timeout=seconds) == 0
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reporter.pid, signal.SIGKILL)
        reporter.wait()
    return report.read_bytes()


def test_a_boot_that_passes_every_phase_is_reported_ready_with_each_phase_in_order(tmp_path):
    written = _run(tmp_path, {"cwhost-seed.service": 31_250_000, "ssh.service": 12_000_000}, seconds=20)
    report = parse_readiness(written)
    assert report is not None and report.ready
    assert [name for name, _ in report.phases] == ["kernel", "sshd", "first-boot", "ready"]
    assert dict(report.phases)["kernel"] == 2.5 and dict(report.phases)["first-boot"] == 31.25
    assert dict(report.phases)["sshd"] == 12.0
    # It waited on each unit's start job once, and asked when each became active once: no polling.
    calls = (tmp_path / "units/calls").read_text().splitlines()
    assert sorted(call for call in calls if call.startswith("start")) == [
        "start cwhost-seed.service",
        "start ssh.service",
    ]
    assert len(calls) == 5


def test_a_boot_that_stalls_says_how_far_it_got_and_is_not_ready(tmp_path):
    written = _run(tmp_path, {"ssh.service": 12_000_000}, seconds=3)
    report = parse_readiness(written)
    assert report is not None and not report.ready
    assert [name for name, _ in report.phases] == ["kernel", "sshd"]


def test_what_a_guest_writes_that_is_not_a_report_is_none():
    good = b'{"ready": true, "phases": [["kernel", 2.5], ["ready", 30]]}'
    assert parse_readiness(good) is not None
    for hostile in (
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"ready": "yes", "phases": []}',
        b'{"ready": true, "phases": [["kernel", NaN]]}',
        b'{"ready": true, "phases": [["kernel", 1e400]]}',
        b'{"ready": true, "phases": [["kernel", -1]]}',
        b'{"ready": true, "phases": [["kernel", true]]}',
        b'{"ready": true, "phases": [["Kernel; rm -rf /", 1]]}',
        b'{"ready": true, "phases": [["a\\nb", 1]]}',
        b'{"ready": true, "phases": [["kernel", 1, 2]]}',
        b'{"ready": true, "phases": ' + b"[" + b",".join([b'["k", 1]'] * 17) + b"]}",
        b'{"ready": true}',
    ):
        assert parse_readiness(hostile) is None, hostile
