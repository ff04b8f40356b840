"""Live views: links that show a workstation's screen in any page (an iframe), view-only unless asked,
for a set time, revocable.

A live view's token is its link's credential and is kept only as its SHA-256 digest, in memory: a
restart ends every live view (as it ends console links). The page it opens connects to the console
bridge with the same token, while the view lasts; revoking it, or its expiry, also cuts the
connections it has open. A view-only connection's input never reaches the VNC server
(cwhost.remote.rfb_filter drops it on the bridge).
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cwhost.config.server import ConsoleConfig
from cwhost.errors import InvalidRequest, InvalidState, NotFound, QuotaExceeded, Unavailable
from cwhost.model import RUNNING, Workstation


@dataclass(frozen=True)
class LiveView:
    id: str
    workstation_id: str
    interactive: bool
    created_at: float
    expires_at: float


@dataclass
class _Held:
    view: LiveView
    digest: bytes
    # The bridge's open connections of this view, cut when it ends.
    connections: set[socket.socket] = field(default_factory=set)


class LiveViews:
    def __init__(self, target_of: Callable[[str], tuple[str, int] | None], max_per_workstation: int, clock=time.time):
        # Where a running workstation's VNC listens (the console's own), None when it does not run.
        self._target_of = target_of
        self._max_per_workstation = max_per_workstation
        self._clock = clock
        self._lock = threading.Lock()
        self._views: dict[str, _Held] = {}
        self._by_digest: dict[bytes, str] = {}

    def open(
        self, ws: Workstation, interactive: bool, minutes: int | None, settings: ConsoleConfig
    ) -> tuple[LiveView, str]:
        """A view of a running workstation, for ``minutes`` (the configured default if None), and its token."""
        if not settings.port:
            raise Unavailable("This server's console bridge is off ([console] port), and live views ride on it.")
        if ws.status != RUNNING:
            raise InvalidState(f"Workstation {ws.id} is {ws.status}; only a running workstation has a screen to view.")
        minutes = settings.live_view_default_minutes if minutes is None else minutes
        if minutes > settings.live_view_max_minutes:
            raise InvalidRequest(
                f"A live view lasts at most {settings.live_view_max_minutes} minutes on this server.",
                details={"minutes": [f"Must be at most {settings.live_view_max_minutes}."]},
            )
        return self.create(ws.id, interactive, minutes * 60)

    def create(self, workstation_id: str, interactive: bool, seconds: float) -> tuple[LiveView, str]:
        """A new view and its token (given once, never kept)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        view = LiveView("lv-" + secrets.token_hex(6), workstation_id, interactive, now, now + seconds)
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._forget_expired(now)
            if len(self.of(workstation_id)) >= self._max_per_workstation:
                raise QuotaExceeded(
                    f"Workstation {workstation_id} has {self._max_per_workstation} live views"
                    " (console.live_views_per_workstation); revoke one first."
                )
            self._views[view.id] = _Held(view, digest)
            self._by_digest[digest] = view.id
        return view, token

    def of(self, workstation_id: str) -> list[LiveView]:
        now = self._clock()
        return sorted(
            (held.view for held in list(self._views.values())
             if held.view.workstation_id == workstation_id and held.view.expires_at > now),
            key=lambda view: view.created_at,
        )  # fmt: skip

    def revoke(self, workstation_id: str, view_id: str) -> None:
        with self._lock:
            held = self._views.get(view_id)
            if held is None or held.view.workstation_id != workstation_id:
                raise NotFound(f"No live view {view_id} of workstation {workstation_id}.")
            self._end(held)

    def grant(self, token: str) -> LiveView | None:
        """The view a token opens, while it lasts."""
        view_id = self._by_digest.get(hashlib.sha256(token.encode()).digest())
        held = self._views.get(view_id) if view_id else None
        return held.view if held is not None and held.view.expires_at > self._clock() else None

    def lookup(self, token: str) -> tuple[LiveView, tuple[str, int]] | None:
        """The view a token opens and where its workstation's VNC listens, while it lasts and runs."""
        view = self.grant(token)
        target = self._target_of(view.workstation_id) if view is not None else None
        return (view, target) if view is not None and target is not None else None

    def attach(self, view_id: str, connection: socket.socket) -> Callable[[], None] | None:
        """Count a bridge connection of the view, cut when the view is revoked or expires; None if it has
        ended. The function returned uncounts it."""
        with self._lock:
            held = self._views.get(view_id)
            left = held.view.expires_at - self._clock() if held is not None else 0
            if held is None or left <= 0:
                return None
            held.connections.add(connection)
        timer = threading.Timer(left, _cut, [connection])
        timer.daemon = True
        timer.start()

        def detach() -> None:
            timer.cancel()
            with self._lock:
                held.connections.discard(connection)

        return detach

    def _forget_expired(self, now: float) -> None:
        for held in [held for held in self._views.values() if held.view.expires_at <= now]:
            self._end(held)

    def _end(self, held: _Held) -> None:
        del self._views[held.view.id]
        self._by_digest.pop(held.digest, None)
        for connection in held.connections:
            _cut(connection)


def _cut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already
