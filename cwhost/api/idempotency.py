"""``Idempotency-Key`` on the POSTs that change things (create, launch, stop).

The first answer to a key is stored with a fingerprint of the request; a retry
with the same key and the same request gets that answer again and changes
nothing; the same key with another request is 422. Only answers that are final
are stored: a 5xx or 429 may succeed when retried, so those are not replayed.
Concurrent requests with one key are serialised, so the second replays the first.

A workstation's ``access`` holds secrets (its console password, one-time
links): it is stored as null, and a replay shows the workstation's access as
it is now, with links minted for the replay.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time

import flask
import orjson
from apispec import BasePlugin
from flask import current_app, g, request

from cwhost.api.components import components, services
from cwhost.api.workstation_json import Presenter
from cwhost.errors import NotFound, ServiceError

HEADER = "Idempotency-Key"
# Printable ASCII without space, as the document says too.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_KEY_PATTERN = re.compile(KEY_PATTERN)
# Striped, so that memory does not grow with the number of keys ever seen.
_locks = [threading.Lock() for _ in range(64)]


class IdempotencyKeyReused(ServiceError):
    status = 422
    code = "idempotency_key_reused"


class InvalidIdempotencyKey(ServiceError):
    status = 400
    code = "invalid_request"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.path, request.query_string, request.get_data()):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _stored(body: str) -> str:
    """An answer as kept for replays: without a workstation's access."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict) or answer.get("access") is None:
        return body
    return json.dumps({**answer, "access": None}, separators=(",", ":"))


def _replayed(body: str) -> str:
    """A kept answer as replayed: a workstation's access as it is now, with fresh links."""
    answer = json.loads(body)
    if not isinstance(answer, dict) or "access" not in answer or not isinstance(answer.get("id"), str):
        return body
    try:
        ws = services().store.load(g.principal, answer["id"])
    except NotFound:
        return body  # deleted since: nothing to reach
    answer["access"] = orjson.loads(orjson.dumps(Presenter().one(ws)))["access"]
    return json.dumps(answer, separators=(",", ":"))


def idempotent(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not _KEY_PATTERN.fullmatch(key):
            raise InvalidIdempotencyKey(f"{HEADER} must be 1 to 255 printable ASCII characters.")
        parts = components()
        db, ttl = parts.db, parts.config.server.idempotency_key_hours * 3600
        account = g.principal.account_id
        with _locks[hash((account, key)) % len(_locks)]:
            with db.write() as tx:
                tx.execute("DELETE FROM idempotency_keys WHERE created_at < ?", [time.time() - ttl])
            stored = db.query_one("SELECT * FROM idempotency_keys WHERE account_id = ? AND key = ?", [account, key])
            fingerprint = _fingerprint()
            if stored is not None:
                if stored["fingerprint"] != fingerprint:
                    raise IdempotencyKeyReused(f"This {HEADER} was used for a different request; use a new key.")
                replay = flask.make_response(_replayed(stored["body"]), stored["status"])
                replay.mimetype = "application/json"
                if stored["location"]:
                    replay.headers["Location"] = stored["location"]
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            try:
                response = flask.make_response(view(*args, **kwargs))
            except ServiceError as error:
                response = flask.make_response(current_app.handle_user_exception(error))
            if response.status_code < 500 and response.status_code != 429:
                with db.write() as tx:
                    tx.table("idempotency_keys").insert(
                        {
                            "account_id": account,
                            "key": key,
                            "fingerprint": fingerprint,
                            "status": response.status_code,
                            "body": _stored(response.get_data(as_text=True)),
                            "location": response.headers.get("Location"),
                            "created_at": time.time(),
                        }
                    )
            return response

    return wrapper


# The marker ``document`` leaves on an operation; IdempotencyHeaderPlugin turns it into the header parameter.
MARKER = "x-cwhost-idempotent"

PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": KEY_PATTERN},
    "description": "Retrying with the same key and request returns the first answer"
    " and changes nothing; the same key with another request is 422.",
}


def document(blp):
    """Mark an operation as honouring the header, for the OpenAPI document.

    A marker, not ``parameters``: flask-smorest lets a doc's parameters replace
    those its arguments documented (the stop's ``force`` would vanish).
    """
    return blp.doc(**{MARKER: True})


class IdempotencyHeaderPlugin(BasePlugin):
    """Add the Idempotency-Key header to the parameters of each marked operation."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            if operation.pop(MARKER, False):
                operation.setdefault("parameters", []).append(dict(PARAMETER))
