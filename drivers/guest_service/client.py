"""The host's side of the guest service: one connection per operation (see ``frames``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from . import frames

# A simple operation (stat, list, make a directory, delete) answers within this.
CALL_SECONDS = 30.0
MESSAGE_CHARS = 300


class GuestServiceUnavailable(Exception):
    """The guest service cannot be reached (the guest is booting, or gone)."""


class GuestServiceRefused(Exception):
    """The guest service answered an error: ``code`` says which (not_found, exists,
    permission_denied, not_a_directory, is_a_directory, not_empty, no_space, too_large,
    not_started, invalid, io_error)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Connection:
    """One operation's connection: its frames, and its end."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = frames.Reader(sock)

    def answer(self) -> dict:
        """The next JSON frame; the guest's error raised as GuestServiceRefused."""
        try:
            message = self.reader.next_json()
        except TimeoutError:
            raise  # nothing within the socket's timeout: the caller decides what that means
        except (OSError, frames.ProtocolError) as exc:
            raise GuestServiceUnavailable(f"the guest service broke off: {exc}") from exc
        if message is None:
            raise GuestServiceUnavailable("the guest service closed the connection")
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            # What a guest says is cut to a line: it is shown to the caller, and a guest can say anything.
            raise GuestServiceRefused(str(error.get("code"))[:40], str(error.get("message"))[:MESSAGE_CHARS])
        return message

    def frame(self) -> tuple[bytes, bytes] | None:
        try:
            return self.reader.next()
        except frames.ProtocolError as exc:
            raise GuestServiceUnavailable(f"the guest service broke off: {exc}") from exc

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        frames.send(self.sock, kind, payload)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@dataclass
class GuestService:
    """A running guest's service, for one guest user; ``connect`` opens a new connection to it."""

    connect: Callable[[], socket.socket]
    user: str

    def open(self, op: str, timeout: float | None = CALL_SECONDS, **arguments) -> Connection:
        try:
            sock = self.connect()
        except OSError as exc:
            raise GuestServiceUnavailable(f"the guest service does not answer: {exc}") from exc
        sock.settimeout(timeout)
        connection = Connection(sock)
        try:
            frames.send_json(sock, {"op": op, "user": self.user, **arguments})
        except OSError as exc:
            connection.close()
            raise GuestServiceUnavailable(f"the guest service broke off: {exc}") from exc
        return connection

    def call(self, op: str, **arguments) -> dict:
        connection = self.open(op, **arguments)
        try:
            return connection.answer()
        finally:
            connection.close()

    def _opened(self, op: str, key: str, timeout: float | None, **arguments) -> tuple[object, Connection]:
        """The first answer's ``key``, and the connection, left open for what follows."""
        connection = self.open(op, timeout=timeout, **arguments)
        try:
            return connection.answer().get(key), connection
        except BaseException:
            connection.close()
            raise

    def read(self, path: str, timeout: float) -> tuple[object, Iterator[bytes]]:
        """A file's entry, and its bytes as they come (the connection closes at their end)."""
        found, connection = self._opened("read", "entry", timeout, path=path)
        return found, _data(connection)

    def write(self, path: str, chunks: Iterable[bytes], max_bytes: int, timeout: float) -> object:
        connection = self.open("write", timeout=timeout, path=path, maxBytes=max_bytes)
        try:
            connection.answer()
            try:
                for chunk in chunks:
                    connection.send(frames.DATA, chunk)
                connection.send(frames.END)
            except OSError as exc:
                # The guest stopped taking bytes: its answer says why, if it gave one.
                connection.answer()
                raise GuestServiceUnavailable(f"the guest service broke off: {exc}") from exc
            return connection.answer().get("entry")
        finally:
            connection.close()

    def watch(self, path: str, round_seconds: float) -> tuple[object, Connection]:
        """The directory's entry, and the connection its changes arrive on (``answer`` each; a
        timeout of ``round_seconds`` with none is TimeoutError)."""
        watched, connection = self._opened("watch", "watching", CALL_SECONDS, path=path)
        connection.sock.settimeout(round_seconds)
        return watched, connection

    def spawn(self, request: dict) -> tuple[object, Connection]:
        """A process started: its pid in the guest, and the connection its output comes on."""
        pid, connection = self._opened("spawn", "pid", CALL_SECONDS, **request)
        connection.sock.settimeout(None)
        return pid, connection

    def record_speaker(self, rate: int, channels: int, silence_seconds: float) -> tuple[object, Connection]:
        """The guest's speaker, recorded: its recorder's pid, and the connection its 16-bit samples come
        on as it plays, until closed (a guest silent for ``silence_seconds`` is TimeoutError: a speaker
        sends samples, silent or not)."""
        pid, connection = self._opened("audio", "pid", CALL_SECONDS, rate=rate, channels=channels)
        connection.sock.settimeout(silence_seconds)
        return pid, connection

    def terminal(self, request: dict) -> tuple[object, Connection]:
        """A program started on a new terminal: its pid in the guest, and the connection its screen
        comes on."""
        pid, connection = self._opened("terminal", "pid", CALL_SECONDS, **request)
        connection.sock.settimeout(None)
        return pid, connection


def _data(connection: Connection) -> Iterator[bytes]:
    try:
        while (frame := connection.frame()) is not None:
            kind, payload = frame
            if kind == frames.END:
                return
            yield payload
        raise GuestServiceUnavailable("the guest service closed the connection before the file's end")
    finally:
        connection.close()


def signal_frame(name: str) -> bytes:
    return json.dumps({"signal": name}).encode()
