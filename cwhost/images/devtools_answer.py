"""Wait until Chromium's DevTools answer, for the readiness report of a browser type (run in the
guest as /usr/local/lib/cwhost/devtools-answer, standard library only).

A browser that has just started to listen answers no request until its UI thread is free: under
TCG at boot, every /json/version asked from the moment it listens is answered together 6 to 7 s
later. So no request is given up on: a new one is asked every half second beside those still open
(should the browser drop one), and the first answer ends the wait at once. No request half-closes
its connection, which the browser takes for a client gone.

Usage: devtools-answer [PORT]  (on the guest's loopback; 9222 unless given)
"""

from __future__ import annotations

import selectors
import socket
import sys

ANSWER_MARK = b"webSocketDebuggerUrl"
MOST_OPEN = 30
ASK_EVERY_SECONDS = 0.5


def request(port: int) -> bytes:
    return f"GET /json/version HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()


def ask(selector: selectors.BaseSelector, port: int) -> None:
    """One more request, if the browser listens (refused at once on the loopback if not)."""
    try:
        connection = socket.create_connection(("127.0.0.1", port), timeout=2)
        connection.sendall(request(port))
    except OSError:
        return
    connection.setblocking(False)
    selector.register(connection, selectors.EVENT_READ, bytearray())


def answered(key: selectors.SelectorKey, selector: selectors.BaseSelector) -> bool:
    """Read what came on one request's connection: True once its answer is DevTools'."""
    try:
        chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
    except OSError:
        chunk = b""
    key.data.extend(chunk)
    if ANSWER_MARK in key.data:
        return True
    if not chunk:
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    return False


def wait_for_devtools(port: int) -> None:
    selector = selectors.DefaultSelector()
    try:
        while True:
            if len(selector.get_map()) < MOST_OPEN:
                ask(selector, port)
            for key, _ in selector.select(timeout=ASK_EVERY_SECONDS):
                if answered(key, selector):
                    return
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


if __name__ == "__main__":
    wait_for_devtools(int(sys.argv[1]) if len(sys.argv) > 1 else 9222)
