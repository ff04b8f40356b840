"""Accounts and API tokens.

A token is 32 random bytes, shown once and stored only as its SHA-256. A
fast hash is enough here because the secret is high-entropy: nothing can be
guessed from the digest, and a slow password hash would cost every request.
The row is found through the unique index on the digest; the final
``hmac.compare_digest`` keeps the comparison itself constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from cwhost.db.database import Database
from cwhost.ids import new_id, utc_now

TOKEN_PREFIX = "cwh_"
# Anything longer cannot be one of ours; refusing it early keeps a 10 KB
# header from being hashed on every request.
MAX_TOKEN_LENGTH = 128
# How long a running server trusts a token it has verified, and so the
# longest a revoked token (revocation is the CLI's, another process) goes on
# being accepted.
VERIFIED_TOKEN_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account a token belongs to and what the token may do."""

    account_id: str
    key_id: str
    admin: bool


@dataclass(frozen=True)
class NewKey:
    key_id: str
    account_id: str
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def ensure_account(db: Database, name: str) -> str:
    """The id of the account called ``name``, created if it does not exist."""
    with db.write() as tx:
        row = next(tx.query("SELECT id FROM accounts WHERE name = ?", [name]), None)
        if row:
            return row["id"]
        account_id = new_id("acct")
        tx.table("accounts").insert({"id": account_id, "name": name, "created_at": utc_now()})
        return account_id


def create_key(db: Database, account_name: str, admin: bool = False) -> NewKey:
    account_id = ensure_account(db, account_name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    with db.write() as tx:
        tx.table("api_keys").insert(
            {
                "id": key_id,
                "account_id": account_id,
                "token_hash": hash_token(token),
                "admin": int(admin),
                "created_at": utc_now(),
                "revoked_at": None,
            }
        )
    return NewKey(key_id=key_id, account_id=account_id, token=token)


def list_keys(db: Database) -> list[dict]:
    return db.query(
        """SELECT k.id, a.name AS account, k.admin, k.created_at, k.revoked_at
           FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.rowid"""
    )


def revoke_key(db: Database, key_id: str) -> bool:
    """Revoke a key; False if no active key has that id."""
    with db.write() as tx:
        cursor = tx.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [utc_now(), key_id],
        )
        return cursor.rowcount == 1


def has_any_key(db: Database) -> bool:
    return db.query_one("SELECT 1 AS found FROM api_keys LIMIT 1") is not None


class TokenVerifier:
    """Who a Bearer token belongs to, remembering each verified token for VERIFIED_TOKEN_SECONDS.

    Without the memory every request made two database reads, its token's and
    its own; with it a busy client's token is read once a second. Only tokens
    that verified are remembered, under their digest, so that made-up tokens
    can neither fill the memory nor skip the database.
    """

    def __init__(self, db: Database, clock=time.monotonic, max_remembered: int = 10_000):
        self._db = db
        self._clock = clock
        self._max_remembered = max_remembered
        self._verified: dict[str, tuple[float, Principal]] = {}

    def verify(self, token: str) -> Principal | None:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        return self.verify_digest(hash_token(token))

    def verify_digest(self, digest: str) -> Principal | None:
        """As ``verify``, for a token of which only the digest is kept (the dashboard's sessions)."""
        now = self._clock()
        remembered = self._verified.get(digest)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        principal = self._read(digest)
        if principal is None:
            self._verified.pop(digest, None)
            return None
        if len(self._verified) >= self._max_remembered:
            # Tokens in use are read again at their next request.
            self._verified = {}
        self._verified[digest] = (now + VERIFIED_TOKEN_SECONDS, principal)
        return principal

    def _read(self, digest: str) -> Principal | None:
        row = self._db.query_one(
            "SELECT id, account_id, admin, token_hash FROM api_keys WHERE token_hash = ? AND revoked_at IS NULL",
            [digest],
        )
        if row is None or not hmac.compare_digest(row["token_hash"], digest):
            return None
        return Principal(account_id=row["account_id"], key_id=row["id"], admin=bool(row["admin"]))
