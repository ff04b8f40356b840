"""The images' readiness reporter, run with /bin/sh against a stand-in systemctl: what it writes is a
report cwhost's reader takes, phase by phase, and a boot that stalls says how far it got."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cwhost.images.guest_files import REPORT_READY
from drivers.libvirt.guest_agent import parse_readiness

# A systemctl that answers `show -p PROPERTY --value [UNIT...]` from files named after each unit, as
# systemd does: one value a unit, in the order asked, separated by blank lines; 0 for one not active.
STAND_IN_SYSTEMCTL = """#!/bin/sh
property=$3
shift 4
if [ "$property" = UserspaceTimestampMonotonic ]; then echo 2500000; exit 0; fi
first=yes
for unit in "$@"; do
    [ -n "$first" ] || echo
    first=
    if [ -f "$UNITS/$unit" ]; then cat "$UNITS/$unit"; else echo 0; fi
done
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
    try:
        subprocess.run(["/bin/sh", str(script)], env=env, timeout=seconds, check=True)
    except subprocess.TimeoutExpired:
        pass
    return report.read_bytes()


def test_a_boot_that_passes_every_phase_is_reported_ready_with_each_phase_in_order(tmp_path):
    written = _run(tmp_path, {"cwhost-seed.service": 31_250_000, "ssh.service": 12_000_000}, seconds=20)
    report = parse_readiness(written)
    assert report is not None and report.ready
    names = [name for name, _ in report.phases]
    assert names[:3] == ["kernel", "first-boot", "sshd"] and names[-1] == "ready"
    assert dict(report.phases)["kernel"] == 2.5 and dict(report.phases)["first-boot"] == 31.25


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
