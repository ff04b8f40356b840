"""A view-only live view's client stream, filtered on its way to the VNC server: the RFB handshake and
the messages that only ask for pictures pass; keys, the pointer, the clipboard, desktop resizing and
power requests are dropped. The filter is the guarantee, not noVNC's ``viewOnly``: a viewer who
writes their own client still moves nothing. A message it cannot read ends the connection.

RFB (RFC 6143) with QEMU's extension; only versions 3.7 and 3.8, with no security or VNC
authentication, which are what QEMU offers and noVNC speaks.
"""

from __future__ import annotations

import struct


class UnreadableStream(Exception):
    """The client sent what a view-only connection cannot pass or skip safely."""


# Client message types (RFC 6143 7.5, and the registry's extensions) and their fixed lengths.
_SET_PIXEL_FORMAT, _SET_ENCODINGS, _UPDATE_REQUEST = 0, 2, 3
_KEY, _POINTER, _CUT_TEXT = 4, 5, 6
_CONTINUOUS_UPDATES, _FENCE, _XVP, _SET_DESKTOP_SIZE, _QEMU = 150, 248, 251, 252, 255
_PASSED_FIXED = {_SET_PIXEL_FORMAT: 20, _UPDATE_REQUEST: 10, _CONTINUOUS_UPDATES: 10}
_DROPPED_FIXED = {_KEY: 8, _POINTER: 6, _XVP: 4}
_QEMU_KEY, _QEMU_AUDIO = 0, 1
_VERSIONS = (b"RFB 003.007\n", b"RFB 003.008\n")
_NO_SECURITY, _VNC_AUTH = 1, 2


class ViewOnlyFilter:
    def __init__(self) -> None:
        self._pending = bytearray()
        self._skipping = 0  # bytes of a dropped message still to come
        self._stage = "version"

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` (and what came before it, still incomplete) goes on to the server."""
        out = bytearray()
        if self._skipping:
            skipped = min(self._skipping, len(data))
            self._skipping -= skipped
            data = data[skipped:]
        self._pending += data
        while self._pending and not self._skipping:
            length, passed, stage = self._next()
            if length is None or (passed and len(self._pending) < length):
                break  # the rest of it has not arrived
            if passed:
                out += self._pending[:length]
                del self._pending[:length]
            else:
                dropped = min(length, len(self._pending))
                del self._pending[:dropped]
                self._skipping = length - dropped
            self._stage = stage
        return bytes(out)

    def _next(self) -> tuple[int | None, bool, str]:
        """The next message's length (None while it is not known yet), whether it passes, and the stage after it."""
        pending = self._pending
        if self._stage == "version":
            if len(pending) < 12:
                return None, True, "version"
            if bytes(pending[:12]) not in _VERSIONS:
                raise UnreadableStream("only RFB 3.7 and 3.8 are passed")
            return 12, True, "security"
        if self._stage == "security":
            if pending[0] not in (_NO_SECURITY, _VNC_AUTH):
                raise UnreadableStream(f"security type {pending[0]} is not passed")
            return 1, True, "auth" if pending[0] == _VNC_AUTH else "init"
        if self._stage == "auth":
            return 16, True, "init"
        if self._stage == "init":
            return 1, True, "messages"
        length, passed = self._message_length()
        return length, passed, "messages"

    def _message_length(self) -> tuple[int | None, bool]:
        pending = self._pending
        kind = pending[0]
        if kind in _PASSED_FIXED:
            return _PASSED_FIXED[kind], True
        if kind in _DROPPED_FIXED:
            return _DROPPED_FIXED[kind], False
        if kind == _SET_ENCODINGS:
            return (None, True) if len(pending) < 4 else (4 + 4 * struct.unpack_from(">H", pending, 2)[0], True)
        if kind == _CUT_TEXT:
            # A negative length is the extended clipboard's: its size is the absolute value.
            return (None, False) if len(pending) < 8 else (8 + abs(struct.unpack_from(">i", pending, 4)[0]), False)
        if kind == _FENCE:
            return (None, True) if len(pending) < 9 else (9 + pending[8], True)
        if kind == _SET_DESKTOP_SIZE:
            return (None, False) if len(pending) < 8 else (8 + 16 * pending[6], False)
        if kind == _QEMU:
            return self._qemu_length()
        raise UnreadableStream(f"client message type {kind} is not known")

    def _qemu_length(self) -> tuple[int | None, bool]:
        pending = self._pending
        if len(pending) < 4:
            return None, True
        subtype = pending[1]
        if subtype == _QEMU_KEY:
            return 12, False
        if subtype == _QEMU_AUDIO:
            # Enable and disable are 4 bytes; setting the format adds sample format, channels and frequency.
            return (10 if struct.unpack_from(">H", pending, 2)[0] == 2 else 4), False
        raise UnreadableStream(f"QEMU client message {subtype} is not known")
