"""The request hooks, one job each, in the order Flask runs them.

Each ``before_request`` hook either lets the request on (None) or answers it;
the first answer ends the chain. Cheap refusals come first: under overload
the cheapest answer is the one that helps.
"""

from __future__ import annotations

import functools

import flask
from flask import Flask, g, request

from cwhost.api.common import (
    AUTHENTICATED_PREFIXES,
    MESSAGES,
    bearer_token,
    error_response,
    request_id,
)
from cwhost.api.components import components

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _authenticated_path() -> bool:
    return request.path.startswith(AUTHENTICATED_PREFIXES)


def assign_request_id():
    request_id()


def admit():
    """Shed what is over ``server.max_in_flight`` before any work, authentication included."""
    if not _authenticated_path():
        return None
    if not components().in_flight.acquire(blocking=False):
        return error_response(503, "The server is busy; retry shortly.", headers={"Retry-After": "1"})
    g.admitted = True
    return None


def authenticate():
    if not _authenticated_path():
        return None
    principal = components().tokens.verify(bearer_token(request.headers.get("Authorization", "")))
    if principal is None:
        return error_response(401, MESSAGES[401], headers={"WWW-Authenticate": "Bearer"})
    g.principal = principal
    return None


def limit_rate():
    if not _authenticated_path():
        return None
    retry_after = components().rate_limiter.retry_after(g.principal.key_id)
    if retry_after is not None:
        return error_response(429, MESSAGES[429], headers={"Retry-After": str(retry_after)})
    return None


@functools.cache
def _takes_query(view_function, method: str) -> bool:
    view = getattr(getattr(view_function, "view_class", None), method.lower(), view_function)
    parameters = getattr(view, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(parameter.get("in") == "query" for parameter in parameters)


def refuse_unknown_query():
    """An operation that takes no query parameter refuses any: a misspelt one must not pass silently.

    Operations that take some refuse the unknown ones through their schemas.
    """
    if not _authenticated_path() or not request.args or request.endpoint is None:
        return None
    if _takes_query(flask.current_app.view_functions[request.endpoint], request.method):
        return None
    names = sorted(request.args)
    return error_response(
        400,
        "The request has invalid fields; see details.",
        details={name: ["Unknown field."] for name in names},
    )


def require_json_body():
    if (
        _authenticated_path()
        and request.routing_exception is None
        and request.method in _BODY_METHODS
        and _has_body()
        and not request.is_json
        and not getattr(flask.current_app.view_functions.get(request.endpoint or ""), "raw_body", False)
    ):
        return error_response(415, MESSAGES[415])
    return None


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def release_admission(_error=None):
    if g.pop("admitted", False):
        components().in_flight.release()


def finish(response):
    response.headers["X-Request-Id"] = request_id()
    if response.status_code == 204:
        # No content, so no content type (Flask sets one on every response).
        del response.headers["Content-Type"]
    return response


def install(app: Flask) -> None:
    for hook in (assign_request_id, admit, authenticate, limit_rate, refuse_unknown_query, require_json_body):
        app.before_request(hook)
    app.after_request(finish)
    app.teardown_request(release_admission)
