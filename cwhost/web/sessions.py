"""The dashboard's sign-in sessions: in memory, each bound to the digest of the API token that opened it.

The browser holds only a random session id (its cookie); the server keeps
the id's digest, never the token. Every request checks the token again
through the API's own verifier, so a token revoked with ``cwhost keys
revoke`` ends its sessions within VERIFIED_TOKEN_SECONDS, as it ends its API
calls. A restart of the server signs everyone out: nothing of a session is
worth keeping on disk.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from cwhost.accounts.tokens import Principal, TokenVerifier, hash_token

# Sessions one account may hold at once; the oldest goes when a new one would pass it.
MAX_SESSIONS_PER_ACCOUNT = 16


@dataclass(frozen=True)
class WebSession:
    token_digest: str
    account_id: str
    csrf_token: str
    expires_at: float


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class WebSessions:
    def __init__(self, tokens: TokenVerifier, lifetime_seconds: float, clock=time.monotonic):
        self._tokens = tokens
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, WebSession] = {}

    def open(self, token: str) -> tuple[str, Principal] | None:
        """A new session for ``token``'s account: its id (for the cookie) and who it is; None for a bad token."""
        principal = self._tokens.verify(token)
        if principal is None:
            return None
        session_id = secrets.token_urlsafe(32)
        session = WebSession(
            hash_token(token), principal.account_id, secrets.token_urlsafe(32), self._clock() + self.lifetime_seconds
        )
        with self._lock:
            mine = sorted(
                (s.expires_at, key) for key, s in self._sessions.items() if s.account_id == principal.account_id
            )
            for _, key in mine[: max(0, len(mine) - MAX_SESSIONS_PER_ACCOUNT + 1)]:
                del self._sessions[key]
            self._sessions[_digest(session_id)] = session
        return session_id, principal

    def find(self, session_id: str | None) -> tuple[WebSession, Principal] | None:
        """The session and who it is, while it lasts and its token is not revoked."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires_at <= self._clock():
                del self._sessions[key]
                session = None
        if session is None:
            return None
        principal = self._tokens.verify_digest(session.token_digest)
        if principal is None:
            self.close(session_id)
            return None
        return session, principal

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)
