"""The service's listener, who each connection runs as, and which operation it asks for.

Two forms, one code:

- **In a guest** (``--port``): TCP on every address, answering one peer only, the host's
  address on cwhost's network (the seed's host-address file), where no other guest can
  reach it. Each connection is served by a forked child that becomes the user named in
  the request (never root) before it reads a byte more.
- **Simulated** (``--unix PATH --root DIR``), beside a fake guest: a UNIX socket, paths
  kept under ``DIR`` (the fake guest's file system) and programs limited to a few
  harmless ones (``spawn.SIMULATED``), as the fake driver never runs a tenant's command
  on the host.
"""

from __future__ import annotations

import os
import posixpath
import pwd
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import files, frames, spawn, speaker, terminal

# The port it listens on in a guest, on the routed NIC.
SERVICE_PORT = 9224
# How often a simulated service's connection looks whether its fake guest is still there.
WATCH_SECONDS = 0.5
OPERATIONS = {
    "spawn": spawn.run,
    "terminal": terminal.run,
    "stat": files.stat,
    "list": files.listing,
    "read": files.read,
    "write": files.write,
    "mkdir": files.mkdir,
    "delete": files.delete,
    "watch": files.watch,
    "audio": speaker.run,
}


@dataclass(frozen=True)
class Place:
    """Where one connection's operation runs: its user's home, and how a guest path maps to a
    path here (the same path in a guest; under the simulated root beside a fake guest)."""

    home: str
    root: str | None = None
    simulated: bool = False

    def local(self, path: str) -> str:
        absolute = posixpath.normpath(posixpath.join(self.home, path))
        if self.root is None:
            return absolute
        # normpath keeps an absolute path at or below "/", so this stays under root.
        return posixpath.join(self.root, absolute.lstrip("/"))

    def shown(self, local: str) -> str:
        """A local path as the guest names it."""
        if self.root is None:
            return local
        inside = posixpath.relpath(local, self.root)
        return "/" if inside == "." else "/" + inside


def become(user: str) -> Place:
    """Turn this (forked) process into ``user``, in its home; root is refused."""
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        raise PermissionError("the guest service runs nothing as root")
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.clear()
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name, LANG="C.UTF-8")
    os.chdir(entry.pw_dir)
    return Place(home=entry.pw_dir)


def simulated_place(root: str, user: str) -> Place:
    home = f"/home/{user}"
    os.makedirs(posixpath.join(root, home.lstrip("/")), exist_ok=True)
    return Place(home=home, root=root, simulated=True)


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = frames.Reader(sock)
        try:
            request = reader.next_json()
            if request is None:
                return
            user, op = request.get("user"), request.get("op")
            operation = OPERATIONS.get(op) if isinstance(op, str) else None
            if not isinstance(user, str) or operation is None:
                raise frames.ProtocolError("a request names a user and a known operation")
            root = self.server.simulated_root  # type: ignore[attr-defined]
            if root is not None:
                _end_with_the_service(sock)
            place = become(user) if root is None else simulated_place(root, user)
            operation(sock, reader, request, place)
        except (frames.ProtocolError, KeyError, PermissionError) as exc:
            _refuse(sock, "invalid", str(exc))
        except OSError:
            pass  # the host went away; nothing is left to tell


def _end_with_the_service(sock: socket.socket) -> None:
    """Beside a fake guest: when the guest is gone (its service ends with it), end this connection
    too, as a VM's power-off ends everything in it; its operation then ends what it started."""
    service = os.getppid()

    def watch() -> None:
        while os.getppid() == service:
            time.sleep(WATCH_SECONDS)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    threading.Thread(target=watch, daemon=True).start()


def _refuse(sock: socket.socket, code: str, message: str) -> None:
    try:
        frames.send_json(sock, {"error": {"code": code, "message": message}})
    except OSError:
        pass


class GuestServer(socketserver.ForkingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    simulated_root = None

    def __init__(self, port: int, peer_file: str):
        self._peer_file = peer_file
        super().__init__(("0.0.0.0", port), Handler)

    def verify_request(self, request, client_address) -> bool:
        try:
            with open(self._peer_file) as f:
                return client_address[0] == f.read().strip()
        except OSError:
            return False


class SimulatedServer(socketserver.ForkingMixIn, socketserver.UnixStreamServer):
    # The fake guest it serves; set once it runs.
    parent_pid: int | None = None

    def __init__(self, path: str, root: str):
        self.simulated_root = root
        super().__init__(path, Handler)

    def service_actions(self) -> None:
        super().service_actions()
        if os.getppid() != self.parent_pid:
            # The fake guest it serves is gone: so is its service.
            raise SystemExit(0)


SOCKET_NAME = "service.sock"


@contextmanager
def local_socket_path(directory: str) -> Iterator[str]:
    """The simulated service's socket in ``directory``, named through a descriptor of it: a UNIX
    socket's path may be 107 bytes at most, and a state directory's may be longer."""
    handle = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{handle}/{SOCKET_NAME}"
    finally:
        os.close(handle)
