"""What the console bridge and the CDP proxy share with the API's port: connection caps and deadlines.

Each is a thread per connection, so each connection is bounded: at most
``max_connections`` in all and ``max_per_peer`` from one address (a guest or a
LAN host holding idle sockets cannot lock the others out or grow cwhost by a
thread each), and a connection that has not shown a valid token within
``HANDSHAKE_SECONDS`` of its first byte is closed, however slowly it drips.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable

# Seconds an unauthenticated connection may take, from accept to a checked token.
HANDSHAKE_SECONDS = 10
# The kernel's queue of connections not yet accepted (socketserver's default is 5).
BACKLOG = 128


def close_at_deadline(connection: socket.socket) -> Callable[[], None]:
    """Shut ``connection`` down after HANDSHAKE_SECONDS unless the returned function is called first.

    A timeout per ``recv`` would let one byte every few seconds keep it open for ever.
    """

    def expire() -> None:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    timer = threading.Timer(HANDSHAKE_SECONDS, expire)
    timer.daemon = True
    timer.start()
    return timer.cancel


class PeerCounts:
    """Open connections by peer address, at most ``cap`` each (the API's port counts its channels with it)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, peer: str) -> bool:
        with self._lock:
            if self._open[peer] >= self.cap:
                return False
            self._open[peer] += 1
            return True

    def release(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            if self._open[peer] <= 0:
                del self._open[peer]


class ConnectionCaps:
    """Counts of open connections, in all and by peer address; one instance per listener."""

    def __init__(self, max_connections: int, max_per_peer: int):
        self._max_connections = max_connections
        self._peers = PeerCounts(max_per_peer)
        self._lock = threading.Lock()
        # Each admitted connection's peer, by the connection's identity (a closed socket has no peer name).
        self._counted: dict[int, str] = {}

    def admit(self, connection: socket.socket, peer: str) -> bool:
        with self._lock:
            if len(self._counted) >= self._max_connections or not self._peers.admit(peer):
                return False
            self._counted[id(connection)] = peer
            return True

    def release(self, connection: socket.socket) -> None:
        with self._lock:
            peer = self._counted.pop(id(connection), None)
        if peer is not None:  # None: refused by admit, never counted
            self._peers.release(peer)


class GuardedServer:
    """A mixin for a threading socketserver: admits connections within ``caps``, with a deep backlog.

    The subclass's handler arms ``close_at_deadline`` when it starts reading.
    """

    request_queue_size = BACKLOG
    caps: ConnectionCaps

    def verify_request(self, request, client_address) -> bool:
        return self.caps.admit(request, client_address[0])

    def shutdown_request(self, request) -> None:
        self.caps.release(request)
        super().shutdown_request(request)  # type: ignore[misc]
