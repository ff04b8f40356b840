"""``python3 -m guest_service --port 9224 --peer-file /etc/cwhost/host-address`` in a guest."""

from __future__ import annotations

import argparse
import os
import socket

from .server import SERVICE_PORT, GuestServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="guest_service", description=__doc__)
    parser.add_argument("--port", type=int, default=SERVICE_PORT)
    parser.add_argument("--peer-file", required=True, help="the one address it answers, in a file")
    args = parser.parse_args()
    with GuestServer(args.port, args.peer_file) as server:
        _tell_systemd_ready()
        server.serve_forever()


def _tell_systemd_ready() -> None:
    """sd_notify's READY=1, for a Type=notify unit: it listens now."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", address)


if __name__ == "__main__":
    main()
