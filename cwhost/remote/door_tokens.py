"""The short-lived tokens that open a running workstation's doors: the browser console's one-time
links and WebSocket tokens, and the CDP proxy's URLs. Each door has its own DoorTokens (its own key).

Tokens are signed, not stored: a token names its workstation, its expiry and
its answer's nonce, and carries a keyed BLAKE2b MAC of them under a key made at start-up and
kept in memory only. Minting one is a hash, with nothing written or kept, so
a list of 200 running workstations can show each a fresh link; a restart
makes a new key, and every token from before it answers 404. One MAC gives
both tokens of a workstation in an answer: its first half signs the console
link, its second the WebSocket token, and neither half tells the other.

A console link works once, within ``link_seconds`` (the links opened are
remembered until they expire); opening it mints a WebSocket token the page
connects with. ``websocket_token`` mints one for a program that embeds noVNC
itself. ``lookup`` says where a WebSocket token leads, while it lasts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# The most opened, unexpired links remembered at once; beyond it links are refused.
MAX_OPENED = 100_000
# Two 128-bit MACs from one 256-bit digest, in hex.
_LINK, _SOCKET = slice(0, 32), slice(32, 64)
_MAC = re.compile(r"[0-9a-f]{32}")


class NotReady(Exception):
    """Where a token leads is running, but its guest has not said it is ready: try again shortly."""


@dataclass(frozen=True)
class Grant:
    workstation_id: str
    expires_at: float


class DoorTokens:
    """The tokens of a workstation's doors: the console's links and WebSockets, and CDP URLs."""

    def __init__(
        self,
        target_of: Callable[[str], tuple[str, int] | None],
        link_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        # Where a token of a running workstation leads (its VNC, or its DevTools relay); None when nowhere.
        self._target_of = target_of
        self.link_seconds = link_seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # Console links already opened, until they expire; in the order they were opened.
        self._opened: dict[str, float] = {}

    def minter(self, link_prefix: str = "", socket_prefix: str = "") -> Callable[[str], tuple[str, str]]:
        """For one answer: each workstation's (console link, WebSocket token), valid ``link_seconds``.

        Each comes after its prefix: the answer's URLs, whole, with no second concatenation per row.
        """
        # The answer's own nonce: reading the same workstation twice in a second gives fresh links too.
        answer = f"_{int(self._clock() + self.link_seconds)}_{secrets.token_hex(8)}"
        # Keyed once per answer; each workstation's MAC continues a copy of it.
        keyed = hashlib.blake2b(key=self._key, digest_size=32)

        def tokens(workstation_id: str) -> tuple[str, str]:
            signed = workstation_id + answer
            mac = keyed.copy()
            mac.update(signed.encode())
            digest = mac.hexdigest()
            return f"{link_prefix}{signed}_{digest[_LINK]}", f"{socket_prefix}{signed}_{digest[_SOCKET]}"

        return tokens

    def console_link(self, workstation_id: str) -> str:
        """A token for one opening of the console page."""
        return self.minter()(workstation_id)[0]

    def websocket_token(self, workstation_id: str) -> str:
        """A token to connect to the workstation's VNC over WebSocket, until it expires."""
        return self.minter()(workstation_id)[1]

    def _verified(self, token: str, half: slice) -> Grant | None:
        parts = token.rsplit("_", 3)
        if len(parts) != 4 or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        workstation_id, expires, nonce, mac = parts
        # compare_digest takes ASCII text only: anything else is no MAC of ours.
        if _MAC.fullmatch(mac) is None or not workstation_id.isascii() or not nonce.isascii():
            return None
        signed = f"{workstation_id}_{expires}_{nonce}".encode()
        expected = hashlib.blake2b(signed, key=self._key, digest_size=32).hexdigest()[half]
        if not hmac.compare_digest(expected, mac) or int(expires) <= self._clock():
            return None
        return Grant(workstation_id, float(expires))

    def link_grant(self, token: str) -> Grant | None:
        """The grant of a console link, if it is one of ours and unexpired, without using it up."""
        return self._verified(token, _LINK)

    def open_link(self, token: str) -> Grant | None:
        """The grant of a console link, used up by this call; None if unknown, used or expired."""
        grant = self._verified(token, _LINK)
        if grant is None:
            return None
        now = self._clock()
        with self._lock:
            if token in self._opened:
                return None
            while self._opened and next(iter(self._opened.values())) <= now:
                del self._opened[next(iter(self._opened))]
            if len(self._opened) >= MAX_OPENED:
                # Expiries are not in opening order, so expired links may sit behind a live one.
                self._opened = {opened: until for opened, until in self._opened.items() if until > now}
                if len(self._opened) >= MAX_OPENED:
                    # Forgetting a live link would let it open twice.
                    return None
            self._opened[token] = grant.expires_at
        return grant

    def lookup(self, token: str) -> tuple[str, int] | None:
        """Where a WebSocket token leads, while it lasts and the workstation runs (the bridge and the CDP proxy ask);
        NotReady while its guest is not ready, where the door waits for that."""
        grant = self._verified(token, _SOCKET)
        return self._target_of(grant.workstation_id) if grant is not None else None
