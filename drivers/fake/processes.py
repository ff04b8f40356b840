"""The fake driver's guests as processes: started detached, found again, stopped like a VM on ACPI.

A guest is nobody's child (as a qemu process is not cwhost's), so waiting for
it and recognising it again go through the process table, by pid and start time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from drivers.base import ProvisioningError

GUEST_EXIT_TIMEOUT_SECONDS = 5.0


def exited(process: psutil.Process, timeout: float) -> bool:
    """Wait for a process that is not our child; a zombie has exited too.

    The guest's parent is whatever adopted it, which may never reap it, so
    psutil's own wait() could wait for a zombie until the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


GUEST_PROGRAM = Path(__file__).with_name("guest.py")


def is_guest(cmdline: list[str]) -> bool:
    """Whether a process table's command line is a fake guest's."""
    return str(GUEST_PROGRAM) in cmdline


def owner_of(cmdline: list[str]) -> str | None:
    try:
        return cmdline[cmdline.index("--owner") + 1]
    except (ValueError, IndexError):
        return None


def live_guest(pid: int | None, started: float | None) -> psutil.Process | None:
    """The guest process with this pid and start time, if it still runs (a reused pid is not it)."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        if process.create_time() != started or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def launch_guest(load, owner: str, service_dir: Path) -> tuple[int, float]:
    """Start a detached guest burning ``load``, its simulated guest service in ``service_dir``; its
    pid and start time."""
    try:
        launcher = subprocess.run(
            [
                sys.executable,
                # By its path, without site-packages (-S): the guest needs only the standard
                # library, and skipping site halves the interpreter's start, which every launch pays.
                "-S",
                str(GUEST_PROGRAM),
                "--cpu-share",
                str(load.cpu_share),
                "--memory-mb",
                str(load.memory_mb),
                "--detach",
                "--owner",
                owner,
                "--service",
                str(service_dir),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        pid = int(launcher.stdout)
        return pid, psutil.Process(pid).create_time()
    except (OSError, ValueError, subprocess.SubprocessError, psutil.Error) as exc:
        raise ProvisioningError(f"cannot start the guest process: {exc}") from exc


def stop_guest(process: psutil.Process) -> None:
    """SIGTERM, as a guest powers off on ACPI; SIGKILL if it does not go."""
    process.terminate()
    if not exited(process, GUEST_EXIT_TIMEOUT_SECONDS):
        process.kill()
        exited(process, GUEST_EXIT_TIMEOUT_SECONDS)


def stop_domain_guest(pid: int | None, started: float | None) -> None:
    """Stop a domain's guest, if it still runs."""
    process = live_guest(pid, started)
    if process is not None:
        stop_guest(process)


def stop_unrecorded_guests(recorded_pids: set[int | None], owner: str) -> None:
    """Stop guests ``owner``'s driver started but never recorded (the service died in between).

    A hypervisor knows every VM it runs; this one learns a guest's pid only
    after starting it, so a crash in that window leaves a guest that no
    domain owns. One scan of the process table, at start-up only.
    """
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if is_guest(cmdline) and owner_of(cmdline) == owner and process.pid not in recorded_pids:
            try:
                process.terminate()
            except psutil.Error:
                pass
