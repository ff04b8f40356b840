"""Answers that last: Server-Sent Events, and streamed bodies that hold one of the account's stream
slots (services().streams) from the request until the body is closed, and none of the server's
request slots meanwhile."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from flask import Response, g

from cwhost.api.components import services
from cwhost.api.hooks import release_admission

# An SSE comment: it keeps proxies from closing a quiet stream, and tells the server whether the
# client is still there (a write to a closed connection ends the stream).
KEEPALIVE = b": keep-alive\n\n"
# The first thing a stream sends: how soon an EventSource should reconnect. Sent at once, so the
# answer's head goes out before there is anything to tell (a WSGI server sends it with the first bytes).
OPENING = b"retry: 2000\n\n"
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse_event(event: str, data: dict, event_id: int | None = None) -> bytes:
    """One event: JSON data on one line (strict JSON: no NaN)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


class HeldBody:
    """A response body that gives its slot back, and ends what it reads, when the server closes it
    (which WSGI servers do whether or not the body was read at all)."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None], end: Callable[[], None] = lambda: None):
        self._chunks = chunks
        self._release = release
        self._end = end

    def __iter__(self) -> HeldBody:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self._end()
        finally:
            self._release()


def take_stream_slot() -> Callable[[], None]:
    """One of the caller's stream slots (429 past the account's count, 503 past the server's), and
    the request slot given back: a stream waits on a thread of its own."""
    release = services().streams.take(g.principal.account_id)
    release_admission()
    return release


def stream_answer(mimetype: str, description: str, binary: bool = False) -> dict:
    """The OpenAPI document's 200 answer of a streamed body."""
    schema = {"type": "string", "format": "binary"} if binary else {"type": "string"}
    return {200: {"description": description, "content": {mimetype: {"schema": schema}}}}


def streamed(chunks: Iterator[bytes], release, mimetype: str, end=lambda: None, headers=None) -> Response:
    return Response(HeldBody(chunks, release, end), mimetype=mimetype, headers={**SSE_HEADERS, **(headers or {})})
