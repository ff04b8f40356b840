"""The guest's wait for Chromium's DevTools (a browser type's readiness), against stand-in browsers
on the loopback: one slow to answer, one that drops a request or answers it with something else,
one that holds a request forever, and one not yet listening."""

from __future__ import annotations

import socket
import threading

import pytest

from cwhost.images.devtools_answer import wait_for_devtools

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
    b'{"webSocketDebuggerUrl": "ws://127.0.0.1/devtools/browser/x"}'
)


class StandInBrowser:
    """Accepts connections and hands each (with its number) to ``serve``."""

    def __init__(self, serve, listen_after: threading.Event | None = None):
        self.serve = serve
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        if listen_after is None:
            self.listener.listen(64)
        threading.Thread(target=self._accept, args=(listen_after,), daemon=True).start()

    def _accept(self, listen_after):
        if listen_after is not None:
            listen_after.wait()
            self.listener.listen(64)
        number = 0
        while True:
            connection, _ = self.listener.accept()
            threading.Thread(target=self._one, args=(connection, number), daemon=True).start()
            number += 1

    def _one(self, connection, number):
        with connection:
            self.requests.append(connection.recv(4096))
            self.serve(connection, number, self)


def closed_by_client(connection: socket.socket) -> bool:
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        connection.setblocking(True)


def waited(port: int) -> bool:
    """Whether the wait ended (given 30 s; the stand-ins answer within a few)."""
    waiter = threading.Thread(target=wait_for_devtools, args=(port,), daemon=True)
    waiter.start()
    waiter.join(30)
    return not waiter.is_alive()


def test_a_browser_slow_to_answer_is_waited_for_without_giving_up_its_request():
    first_answered = threading.Event()
    client_gone_early: list[int] = []

    def slow_then_answer(connection, number, browser):
        if number == 0:
            # A busy browser: the first request waits 3 s (longer than the 2 s the old probe gave).
            threading.Event().wait(3)
            if closed_by_client(connection):
                client_gone_early.append(number)
            else:
                # Set before the answer goes: the wait may end, and the test look, as soon as it does.
                first_answered.set()
                connection.sendall(ANSWER)
        else:
            first_answered.wait(10)

    browser = StandInBrowser(slow_then_answer)
    assert waited(browser.port)
    assert first_answered.is_set()
    assert browser.requests[0].startswith(b"GET /json/version HTTP/1.1\r\n")
    assert client_gone_early == [], "a request was given up on before the browser answered"


@pytest.mark.parametrize(
    "first_reply",
    [b"", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
    ids=["dropped", "not-devtools"],
)
def test_a_request_dropped_or_answered_by_something_else_is_asked_again(first_reply):
    def first_then_right(connection, number, browser):
        connection.sendall(first_reply if number == 0 else ANSWER)

    browser = StandInBrowser(first_then_right)
    assert waited(browser.port)
    assert len(browser.requests) >= 2


def test_a_request_held_forever_does_not_hold_the_wait():
    release = threading.Event()

    def hold_the_first(connection, number, browser):
        if number == 0:
            release.wait(60)
        else:
            connection.sendall(ANSWER)

    browser = StandInBrowser(hold_the_first)
    try:
        assert waited(browser.port)
    finally:
        release.set()


def test_a_browser_not_yet_listening_is_waited_for():
    listening = threading.Event()
    browser = StandInBrowser(lambda connection, number, browser: connection.sendall(ANSWER), listening)
    waiter = threading.Thread(target=wait_for_devtools, args=(browser.port,), daemon=True)
    waiter.start()
    waiter.join(1.5)
    assert waiter.is_alive(), "the wait ended before the browser listened"
    listening.set()
    waiter.join(30)
    assert not waiter.is_alive()
