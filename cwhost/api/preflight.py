"""What the API can decide from a request's head, before its body is read.

The HTTP server (cwhost.cli.http_server) asks this for every request whose body
is chunked or larger than a small bound. A request without a valid token, an
upload to a workspace the caller may not write, or an upload declared over the
limit is answered at once, so that nobody can make the server read and spool
gigabytes it will refuse anyway.
The application checks the same things again when the request reaches it;
this only answers earlier.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from werkzeug.exceptions import HTTPException

from cwhost.api.common import AUTHENTICATED_PREFIXES, MESSAGES, bearer_token
from cwhost.api.components import components
from cwhost.errors import ServiceError
from cwhost.workspaces.paths import too_large

_UPLOAD_ENDPOINT = "workspaces.upload_file"
_GUEST_WRITE_ENDPOINT = "guest_fs.write_content"


@dataclass(frozen=True)
class Refusal:
    """An answer given from the request's head alone."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def make_preflight(app: Flask):
    parts = components(app)
    routes = app.url_map.bind("localhost")

    def preflight(method: str, wsgi_path: str, headers: dict, declared: int | None) -> Refusal | None:
        path = wsgi_path.encode("latin-1").decode("utf-8", "replace")
        if not path.startswith(AUTHENTICATED_PREFIXES):
            return None
        principal = parts.tokens.verify(bearer_token(headers.get("AUTHORIZATION", "")))
        if principal is None:
            return Refusal(401, MESSAGES[401], (("WWW-Authenticate", "Bearer"),))
        try:
            endpoint, arguments = routes.match(path, method)
        except HTTPException:
            return None  # the application answers 404 or 405, with no body to read
        if endpoint == _GUEST_WRITE_ENDPOINT:
            return _guest_write(parts.services, principal, arguments["workstation_id"], declared)
        if endpoint != _UPLOAD_ENDPOINT:
            return None
        try:
            parts.services.workspace_files.writable(principal, arguments["workspace_id"])
        except ServiceError as error:
            return Refusal(error.status, error.message)
        limit = parts.services.workspace_files.max_upload_bytes
        if declared is not None and declared > limit:
            return Refusal(413, too_large(limit).message)
        return None

    return preflight


def _guest_write(services, principal, workstation_id: str, declared: int | None) -> Refusal | None:
    """A write to a guest's file: refused before its body if the workstation is not the caller's, or
    the body is declared over guest_files.max_write_bytes."""
    try:
        services.store.load(principal, workstation_id)
    except ServiceError as error:
        return Refusal(error.status, error.message)
    limit = services.guest_fs.max_write_bytes
    if declared is not None and declared > limit:
        return Refusal(413, f"The file is larger than this server writes at once ({limit} bytes).")
    return None
