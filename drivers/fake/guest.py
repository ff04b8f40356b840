"""The process a fake domain runs: it burns a share of one CPU and holds some memory.

It stands in for a VM's qemu process so that metering reads a real process:
``python -S drivers/fake/guest.py --cpu-share 0.05 --memory-mb 16 --detach``
(standard library only: it runs without site-packages).
With ``--detach`` it prints the pid of a detached copy of itself and exits, so
that the guest is nobody's child, as a qemu process is not cwhost's. It exits
on SIGTERM, as a guest powers off on ACPI.
"""

from __future__ import annotations

import os
import signal
import sys
import time

PERIOD_SECONDS = 0.02
DEFAULTS = {"--cpu-share": "0.05", "--memory-mb": "16", "--owner": ""}


def options(argv: list[str]) -> tuple[dict[str, str], bool]:
    """The ``--name value`` options and whether ``--detach`` was given.

    Read by hand: importing argparse alone doubles the interpreter's start
    (12 ms of CPU against 6, measured), which every launch pays. The owner
    names the driver that started the guest, so that a driver finds its own
    guests in the process table; the guest itself never reads it.
    """
    values, detach, rest = dict(DEFAULTS), False, list(argv)
    while rest:
        name = rest.pop(0)
        if name == "--detach":
            detach = True
        elif name in DEFAULTS and rest:
            values[name] = rest.pop(0)
        else:
            raise SystemExit(f"fake_guest: unknown or incomplete option {name}")
    return values, detach


def main(argv=None) -> int:
    values, detach = options(sys.argv[1:] if argv is None else argv)
    cpu_share, memory_mb = float(values["--cpu-share"]), int(values["--memory-mb"])
    if detach:
        _detach()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Touch every page so the memory is resident, not merely reserved; the
    # name keeps it alive for the life of the process.
    held = bytearray(b"\x01" * (memory_mb * 1024 * 1024))  # noqa: F841
    busy = PERIOD_SECONDS * min(max(cpu_share, 0.0), 1.0)
    while True:
        start = time.process_time()
        while time.process_time() - start < busy:
            pass
        time.sleep(PERIOD_SECONDS - busy)


def _detach() -> None:
    child = os.fork()
    if child:
        print(child, flush=True)
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


if __name__ == "__main__":
    sys.exit(main())
