"""One background process per connection: its output streamed as written, its stdin and signals
taken as they come, its exit told last.

After the request the service answers ``{"pid": n}`` (or ``{"error": ...}``),
then sends STDOUT and STDERR frames as the process writes, and ``{"exit": code,
"signal": name or null, "timedOut": bool}`` once it has exited and its output
is drained. The host sends STDIN frames, END (stdin closed) and
``{"signal": "TERM"}``. When the host's side closes, the process's whole
session is killed: nothing outlives the host's interest in it.
"""

from __future__ import annotations

import json
import os
import posixpath
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
import typing

from . import frames, simulated_speaker

SIGNALS = frozenset(("HUP", "INT", "QUIT", "KILL", "TERM", "USR1", "USR2", "STOP", "CONT"))
# A process that has exited but whose descendants still hold its output open
# is reported exited this long after, rather than never.
DRAIN_SECONDS = 1.0
ROUND_SECONDS = 0.25
# Beside a fake guest: programs that read nothing of the host, each with the arguments it may take.
SIMULATED = {
    "echo": lambda args: True,
    "cat": lambda args: not args,
    "sleep": lambda args: len(args) == 1,
    "true": lambda args: not args,
    "false": lambda args: not args,
}
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def simulated(command: list[str], place, working_directory: str) -> list[str]:
    """Beside a fake guest: one of its harmless programs with arguments it may take, by its name
    (never a path of the host's), or its speaker's player; FileNotFoundError for anything else."""
    program = os.path.basename(command[0])
    if program == "paplay" and len(command) == 2:
        return simulated_speaker.player(place, posixpath.join(working_directory, command[1]))
    if program not in SIMULATED or not SIMULATED[program](command[1:]):
        raise FileNotFoundError(f"{command[0]}: a fake guest runs only {', '.join(SIMULATED)} and paplay FILE")
    return [program, *command[1:]]


def environment(place, request: dict, **extra: str) -> dict[str, str]:
    """A program's environment: the basics, the guest user's own, ``extra``, then what the request adds."""
    # A fake guest's service has the host's environment, which is not the guest's to see.
    own = {} if place.simulated else os.environ
    return {"PATH": PATH, "LANG": "C.UTF-8", "HOME": place.home, **own, **extra, **dict(request.get("env") or {})}


def _popen(request: dict, place) -> subprocess.Popen:
    working_directory = request.get("workingDirectory") or place.home
    command = simulated(request["command"], place, working_directory) if place.simulated else request["command"]
    return popen(command, place.local(working_directory), environment(place, request))


def popen(command: list[str], cwd: str, env: dict[str, str]) -> subprocess.Popen:
    """A program in a session of its own (a signal or a kill reaches all it starts), its three
    streams piped."""
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


def run(sock: socket.socket, reader: frames.Reader, request: dict, place) -> None:
    try:
        process = _popen(request, place)
    except OSError as exc:
        frames.send_json(sock, {"error": {"code": "not_started", "message": str(exc)}})
        return
    carry(sock, process, float(request.get("timeoutSeconds") or 0))


def carry(sock: socket.socket, process: subprocess.Popen, timeout: float) -> None:
    """Tell the host a started process's pid, carry its output and input until it has exited, then
    tell how it ended."""
    frames.send_json(sock, {"pid": process.pid})
    try:
        timed_out = _pump(sock, process, timeout)
    except (OSError, frames.ProtocolError):
        _kill(process, signal.SIGKILL)
        raise
    code = process.wait()
    frames.send_json(
        sock,
        {
            "exit": code if code >= 0 else None,
            "signal": signal.Signals(-code).name[3:] if code < 0 else None,
            "timedOut": timed_out,
        },
    )


def _kill(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        pass


def _pump(sock: socket.socket, process: subprocess.Popen, timeout: float) -> bool:
    """Carry output out and input in until the process has exited and its output is drained;
    whether it was killed at its timeout."""
    selector = selectors.DefaultSelector()
    assert process.stdout is not None and process.stderr is not None  # both are pipes
    selector.register(process.stdout, selectors.EVENT_READ, frames.STDOUT)
    selector.register(process.stderr, selectors.EVENT_READ, frames.STDERR)
    selector.register(sock, selectors.EVENT_READ, None)
    assert process.stdin is not None  # a pipe
    parser, stdin = frames.Parser(), StdinFeed(process.stdin)
    deadline, exited_at, timed_out = time.monotonic() + timeout, None, False
    while len(selector.get_map()) > 1 and (exited_at is None or time.monotonic() - exited_at < DRAIN_SECONDS):
        for key, _ in selector.select(ROUND_SECONDS):
            if key.data is None:
                data = sock.recv(256 * 1024)
                if not data:
                    raise ConnectionAbortedError("the host closed the connection")
                for kind, payload in parser.feed(data):
                    _take(process, stdin, kind, payload)
                continue
            chunk = os.read(key.fd, 64 * 1024)
            if chunk:
                frames.send(sock, key.data, chunk)
            else:
                selector.unregister(key.fileobj)
        if exited_at is None and process.poll() is not None:
            exited_at = time.monotonic()
        if timeout and not timed_out and time.monotonic() > deadline and process.poll() is None:
            _kill(process, signal.SIGKILL)
            timed_out = True
    return timed_out


class StdinFeed:
    """Writes the host's stdin to the process on a thread of its own: a process that does not read
    its stdin blocks only this thread, never its output."""

    def __init__(self, pipe: typing.IO[bytes]):
        self._pipe = pipe
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(target=self._write, daemon=True).start()

    def put(self, data: bytes | None) -> None:
        self._queue.put(data)

    def _write(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                self._pipe.write(data)
                self._pipe.flush()
        except OSError:
            pass  # the process closed its stdin: what is left is dropped, as a pipe would
        finally:
            try:
                self._pipe.close()
            except OSError:
                pass


def _take(process: subprocess.Popen, stdin: StdinFeed, kind: bytes, payload: bytes) -> None:
    """What the host sends a running process: stdin, its end, or a signal."""
    if kind == frames.STDIN:
        stdin.put(payload)
    elif kind == frames.END:
        stdin.put(None)
    elif kind == frames.JSON:
        signal_named(process.pid, json.loads(payload))


def signal_named(group: int, message: dict) -> None:
    """The signal a host's ``{"signal": "TERM"}`` names, to the whole process group ``group``."""
    name = message.get("signal")
    if name not in SIGNALS:
        raise frames.ProtocolError(f"no such signal: {name!r}")
    try:
        os.killpg(group, signal.Signals["SIG" + name])
    except ProcessLookupError:
        pass
