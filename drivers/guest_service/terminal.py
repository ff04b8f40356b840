"""One terminal per connection: a program on a new pseudo-terminal, its screen's bytes streamed out,
the host's keys and window sizes taken in.

After the request (``command``, optional: the user's login shell; ``cols``, ``rows``) the
service answers ``{"pid": n}``, then sends STDOUT frames as the terminal writes, and
``{"exit": code, "signal": name}`` when its program has ended. The host sends STDIN frames
(keys), ``{"resize": [cols, rows]}`` and ``{"signal": "INT"}``. When the host's side closes,
the terminal's session gets SIGHUP, as a closed terminal's does, then SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import pwd
import select
import signal
import socket
import struct
import termios
import time

from . import frames
from .spawn import StdinFeed, environment, signal_named, simulated

HANGUP_GRACE_SECONDS = 1.0


def _command(request: dict, place) -> list[str]:
    command = request.get("command") or []
    if place.simulated:
        # Beside a fake guest: its harmless programs only, and no shell of the host's.
        return simulated(command or ["cat"], place, place.home)
    return command or [pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh", "-l"]


def _size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(1, min(rows, 1000)), max(1, min(cols, 1000)), 0, 0))


def run(sock: socket.socket, reader: frames.Reader, request: dict, place) -> None:
    try:
        command = _command(request, place)
        pid, fd = pty.fork()
    except OSError as exc:
        frames.send_json(sock, {"error": {"code": "not_started", "message": str(exc)}})
        return
    if pid == 0:
        _child(command, request, place)
    _size(fd, int(request.get("cols") or 80), int(request.get("rows") or 24))
    frames.send_json(sock, {"pid": pid})
    try:
        _pump(sock, fd, pid)
    except (OSError, frames.ProtocolError):
        _hang_up(pid)
        raise
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    frames.send_json(
        sock,
        {"exit": code if code >= 0 else None, "signal": signal.Signals(-code).name[3:] if code < 0 else None},
    )


def _child(command: list[str], request: dict, place) -> None:
    """In the child, on the new terminal: run the program, or say why not and end."""
    try:
        os.chdir(place.local(place.home))
        os.execvpe(command[0], command, environment(place, request, TERM="xterm-256color"))
    except OSError as exc:
        os.write(2, f"cwhost: cannot start {command[0]}: {exc.strerror}\r\n".encode())
    os._exit(127)


def _pump(sock: socket.socket, fd: int, pid: int) -> None:
    """Carry the screen out and the keys in until the program has closed its terminal."""
    parser, keys = frames.Parser(), StdinFeed(os.fdopen(os.dup(fd), "wb", buffering=0))
    while True:
        readable, _, _ = select.select([sock.fileno(), fd], [], [])
        if fd in readable:
            try:
                chunk = os.read(fd, 64 * 1024)
            except OSError:  # EIO: every holder of the terminal has closed it
                chunk = b""
            if not chunk:
                return
            frames.send(sock, frames.STDOUT, chunk)
        if sock.fileno() in readable:
            data = sock.recv(256 * 1024)
            if not data:
                raise ConnectionAbortedError("the host closed the connection")
            for kind, payload in parser.feed(data):
                if kind == frames.STDIN:
                    keys.put(payload)
                elif kind == frames.JSON:
                    message = json.loads(payload)
                    if "resize" in message:
                        cols, rows = message["resize"]
                        _size(fd, int(cols), int(rows))
                    else:
                        signal_named(pid, message)


def _hang_up(pid: int) -> None:
    for number in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(pid, number)
        except ProcessLookupError:
            return
        time.sleep(HANGUP_GRACE_SECONDS if number == signal.SIGHUP else 0)
