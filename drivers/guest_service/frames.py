"""The frames of the guest service's connections: a kind byte, a 4-byte length, the payload.

One connection carries one operation. The host opens it with a JSON frame (the
request); the rest depends on the operation (cwhost.agents' client and the
service's operations say which). Data frames carry bytes as they are, so a
file or a process's output crosses without any encoding.
"""

from __future__ import annotations

import json
import socket
import struct

HEADER = struct.Struct(">cI")
MAX_PAYLOAD = 1024 * 1024
JSON = b"J"
STDOUT = b"O"
STDERR = b"E"
STDIN = b"I"
DATA = b"D"
# The end of a stream of DATA or STDIN frames.
END = b"Z"
KINDS = frozenset((JSON, STDOUT, STDERR, STDIN, DATA, END))


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes")
    return HEADER.pack(kind, len(payload)) + payload


def send(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    for start in range(0, max(len(payload), 1), MAX_PAYLOAD):
        sock.sendall(encode(kind, payload[start : start + MAX_PAYLOAD]))


def send_json(sock: socket.socket, message: dict) -> None:
    send(sock, JSON, json.dumps(message, separators=(",", ":")).encode())


class Parser:
    """Frames out of bytes as they arrive, in any pieces."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._pending += data
        frames = []
        while len(self._pending) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._pending)
            if kind not in KINDS or length > MAX_PAYLOAD:
                raise ProtocolError(f"not a frame: kind {kind!r}, length {length}")
            end = HEADER.size + length
            if len(self._pending) < end:
                break
            frames.append((kind, bytes(self._pending[HEADER.size : end])))
            del self._pending[:end]
        return frames


class Reader:
    """Frames read one at a time from a blocking socket; None at its end."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._parser = Parser()
        self._ready: list[tuple[bytes, bytes]] = []

    def next(self) -> tuple[bytes, bytes] | None:
        while not self._ready:
            data = self._sock.recv(256 * 1024)
            if not data:
                return None
            self._ready.extend(self._parser.feed(data))
        return self._ready.pop(0)

    def next_json(self) -> dict | None:
        frame = self.next()
        if frame is None:
            return None
        kind, payload = frame
        if kind != JSON:
            raise ProtocolError(f"expected a JSON frame, got {kind!r}")
        try:
            message = json.loads(payload)
        except ValueError as exc:
            raise ProtocolError(f"a JSON frame that is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("a JSON frame that is not an object")
        return message
