"""A view-only live view's filter: pictures are asked for, nothing is typed, pointed, pasted or resized,
however the client's bytes are cut into pieces."""

from __future__ import annotations

import struct

import pytest

from cwhost.remote.rfb_filter import UnreadableStream, ViewOnlyFilter

HANDSHAKE = b"RFB 003.008\n" + bytes([2]) + bytes(range(16)) + bytes([1])
PIXEL_FORMAT = bytes([0, 0, 0, 0]) + bytes(16)
ENCODINGS = struct.pack(">BBH3i", 2, 0, 3, 0, 7, -223)
UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 1024, 768)
KEY = struct.pack(">BBHI", 4, 1, 0, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 100, 200)
CUT = struct.pack(">BxxxI", 6, 5) + b"hello"
EXTENDED_CUT = struct.pack(">Bxxxi", 6, -4) + b"\x00\x00\x00\x01"
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
DESKTOP_SIZE = struct.pack(">BxHHBx", 252, 1280, 800, 1) + bytes(16)
XVP = struct.pack(">BxBB", 251, 1, 2)  # a shutdown request
FENCE = struct.pack(">BxxxIB", 248, 0, 2) + b"ab"
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 1024, 768)
INPUT = (KEY, POINTER, CUT, EXTENDED_CUT, QEMU_KEY, DESKTOP_SIZE, XVP)
PICTURES = (PIXEL_FORMAT, ENCODINGS, UPDATE, FENCE, CONTINUOUS)


def _through(stream: bytes, piece: int) -> bytes:
    view = ViewOnlyFilter()
    return b"".join(view.feed(stream[at : at + piece]) for at in range(0, len(stream), piece))


@pytest.mark.parametrize("piece", [1, 3, 7, 64, 4096])
def test_the_handshake_and_picture_requests_pass_and_input_is_dropped_in_any_pieces(piece):
    stream = HANDSHAKE + b"".join(m for pair in zip(PICTURES, INPUT, strict=False) for m in pair) + UPDATE
    assert _through(stream, piece) == HANDSHAKE + b"".join(PICTURES) + UPDATE


def test_a_long_paste_is_skipped_without_being_held():
    paste = struct.pack(">BxxxI", 6, 5_000_000) + b"x" * 5_000_000
    view = ViewOnlyFilter()
    assert view.feed(HANDSHAKE) == HANDSHAKE
    assert view.feed(paste[:100]) == b""
    assert len(view._pending) == 0 and view._skipping == 5_000_000 - 92
    assert view.feed(paste[100:] + UPDATE) == UPDATE


@pytest.mark.parametrize(
    "stream",
    [
        b"RFB 003.003\n",
        b"RFB 003.008\n" + bytes([19]),  # VeNCrypt: nothing to read past it
        HANDSHAKE + bytes([7, 0, 0, 0]),
        HANDSHAKE + struct.pack(">BBH", 255, 9, 0),
    ],
)
def test_what_it_cannot_read_ends_the_connection(stream):
    with pytest.raises(UnreadableStream):
        ViewOnlyFilter().feed(stream)
