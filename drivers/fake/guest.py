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
DEFAULTS = {"--cpu-share": "0.05", "--memory-mb": "16", "--owner": "", "--service": ""}


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
    # Bound before the launcher learns the pid: a connection made as soon as it has returned waits
    # in the socket's backlog rather than failing.
    service = _bind_service(values["--service"]) if values["--service"] else None
    if detach:
        _detach()
    if service is not None:
        _serve(service)
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


def _bind_service(directory: str):
    """The simulated guest service of this fake guest, listening: its socket in ``directory``, its
    file system under ``directory``/root."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from guest_service.server import SimulatedServer, local_socket_path

    root = os.path.join(directory, "root")
    os.makedirs(root, exist_ok=True)
    with local_socket_path(directory) as path:
        if os.path.exists(path):
            os.unlink(path)  # the last run's
        return SimulatedServer(path, root)


def _serve(service) -> None:
    """Serve in a child that ends with this guest."""
    service.parent_pid = os.getpid()
    if os.fork():
        service.socket.close()
        return
    service.serve_forever(poll_interval=0.5)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
