"""An account's SSH public keys: checked to be real OpenSSH public keys, stored, listed, removed.

A key is parsed with ``cryptography`` (the key itself, not only its shape), so
a truncated, mistyped or private key is refused with the reason. Only keys the
images' OpenSSH (9.2, Debian 12) would use are taken: no DSA (ssh-dss is off
by default since OpenSSH 7.0) and no RSA under 2048 bits; and no control
character, which a comment would otherwise carry into authorized_keys. Its
fingerprint is OpenSSH's own (``ssh-keygen -lf``): SHA-256 of the key's blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from cwhost.accounts.tokens import Principal
from cwhost.db.database import Database, split_page
from cwhost.errors import InvalidRequest, NotFound, QuotaExceeded
from cwhost.ids import new_id, unix_to_rfc3339

MAX_KEY_CHARACTERS = 16 * 1024
MAX_KEYS_PER_ACCOUNT = 100
MIN_RSA_BITS = 2048
# Tabs part the fields as spaces do; every other control character is refused.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class SshKey:
    id: str
    account_id: str
    name: str
    public_key: str
    fingerprint: str
    created_at: str


def _refuse(reason: str) -> InvalidRequest:
    return InvalidRequest(f"Not a valid OpenSSH public key: {reason}.", details={"public_key": [reason]})


def parse_public_key(text: str) -> tuple[str, str]:
    """The key as one ``type base64 [comment]`` line, and its SHA256 fingerprint; InvalidRequest if it is not one."""
    line = text.strip()
    if not line:
        raise _refuse("it is empty")
    if len(line) > MAX_KEY_CHARACTERS:
        raise _refuse(f"it is longer than {MAX_KEY_CHARACTERS} characters")
    if "PRIVATE KEY" in line:
        raise _refuse("it is a private key; give the public one (the .pub file)")
    if "\n" in line or "\r" in line:
        raise _refuse("it is more than one line; add one key at a time")
    if _CONTROL.search(line):
        raise _refuse("it holds a control character")
    parts = line.split()
    if len(parts) < 2:
        raise _refuse("it needs a key type and the key, as in a .pub file")
    if parts[0] == "ssh-dss":
        raise _refuse("DSA keys (ssh-dss) are refused by OpenSSH on the images; use an ed25519 key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        key = load_ssh_public_key(line.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise _refuse("its key part is not base64") from None
    except UnsupportedAlgorithm:
        raise _refuse(f"key type {parts[0]!r} is not supported") from None
    except ValueError as exc:
        raise _refuse(str(exc).rstrip(".") or "it does not parse") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise _refuse(f"an RSA key of {key.key_size} bits is too weak; it needs at least {MIN_RSA_BITS}")
    return " ".join(parts), fingerprint(blob)


def fingerprint(blob: bytes) -> str:
    """A key's SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def authorized_lines(keys: list[str]) -> list[str]:
    """Each key as one authorized_keys line; InvalidRequest naming the first that is not an OpenSSH public key."""
    lines = []
    for index, key in enumerate(keys):
        try:
            lines.append(parse_public_key(key)[0])
        except InvalidRequest as error:
            reason = error.details["public_key"] if error.details else [error.message]
            raise InvalidRequest(
                f"SSH key {index + 1} of the request: {error.message}",
                details={"ssh_public_keys": {str(index): reason}},
            ) from None
    return lines


def _from_row(row: dict) -> SshKey:
    return SshKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        public_key=row["public_key"],
        fingerprint=row["fingerprint"],
        created_at=row["created_at"],
    )


class SshKeys:
    def __init__(self, db: Database, clock=time.time):
        self._db = db
        self._clock = clock

    def page(self, principal: Principal, limit: int, after: int | None) -> tuple[list[SshKey], str | None]:
        rows = self._db.query(
            "SELECT rowid AS cursor, * FROM ssh_keys WHERE account_id = ? AND rowid > ? ORDER BY rowid LIMIT ?",
            [principal.account_id, after or 0, limit + 1],
        )
        rows, next_cursor = split_page(rows, limit, "cursor")
        return [_from_row(r) for r in rows], next_cursor

    def add(self, principal: Principal, name: str, public_key: str) -> SshKey:
        line, fingerprint = parse_public_key(public_key)
        row = {
            "id": new_id("sshkey"),
            "account_id": principal.account_id,
            "name": name,
            "public_key": line,
            "fingerprint": fingerprint,
            "created_at": unix_to_rfc3339(self._clock()),
        }
        with self._db.write() as tx:
            count = tx.execute("SELECT COUNT(*) FROM ssh_keys WHERE account_id = ?", [principal.account_id])
            if count.fetchone()[0] >= MAX_KEYS_PER_ACCOUNT:
                raise QuotaExceeded(f"An account may register at most {MAX_KEYS_PER_ACCOUNT} SSH keys.")
            same = tx.execute(
                "SELECT id FROM ssh_keys WHERE account_id = ? AND fingerprint = ?", [principal.account_id, fingerprint]
            ).fetchone()
            if same is not None:
                raise InvalidRequest(
                    f"This key is already registered as {same[0]}.",
                    details={"public_key": ["already registered"]},
                )
            tx.table("ssh_keys").insert(row)
        return _from_row(row)

    def delete(self, principal: Principal, key_id: str) -> None:
        with self._db.write() as tx:
            removed = tx.execute("DELETE FROM ssh_keys WHERE id = ? AND account_id = ?", [key_id, principal.account_id])
            if removed.rowcount != 1:
                raise NotFound(f"No SSH key {key_id!r}.")

    def of_account(self, account_id: str) -> list[str]:
        """The account's keys as authorized_keys lines, oldest first: what its workstations receive."""
        rows = self._db.query("SELECT public_key FROM ssh_keys WHERE account_id = ? ORDER BY rowid", [account_id])
        return [r["public_key"] for r in rows]
