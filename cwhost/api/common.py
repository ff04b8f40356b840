"""What every API module shares: the blueprint class, the one error format, the list envelope, links.

Every error, whatever layer raised it, leaves through ``error_response`` and so
has the body ``{"error", "message", "requestId"[, "details"]}``.
"""

from __future__ import annotations

import base64
import http
import logging
import re
import sys
import uuid

import flask
from apispec import BasePlugin
from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api, Blueprint
from flask_smorest.utils import prepare_response
from marshmallow import RAISE, ValidationError
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, PathConverter

from cwhost.api.account_schemas import CreditsSchema
from cwhost.api.idempotency import IdempotencyHeaderPlugin
from cwhost.api.schemas import ConfigurationInSchema, ErrorSchema, WorkstationCreateSchema
from cwhost.api.ssh_key_schemas import SshKeyCreateSchema
from cwhost.errors import InvalidRequest, ServiceError
from cwhost.workspaces.paths import FILE_ID_PATTERN

log = logging.getLogger(__name__)

_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
AUTHENTICATED_PREFIXES = ("/v1/", "/metrics")

_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "payment_required",
    403: "quota_exceeded",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unknown_asset",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal",
    503: "unavailable",
}
MESSAGES = {
    401: "A valid bearer token is required.",
    404: "No such resource.",
    405: "That method is not allowed on this resource.",
    413: "The request body is too large.",
    429: "Too many requests for this token; retry after the time in Retry-After.",
    415: "The request body must be application/json.",
    500: "An internal error occurred; it has been logged with this request's id.",
}


class JsonParser(FlaskParser):
    """webargs' parser, answering 400 (as API.md says) and surviving hostile JSON."""

    DEFAULT_VALIDATION_STATUS = 400
    # A misspelt filter (?staus=running) must be an error, not silently ignored.
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }

    def pre_load(self, location_data, *, schema, req, location):
        # The document says every JSON body is required; no body at all is refused, not read as {}.
        if location == "json" and not req.get_data(cache=True):
            raise ValidationError({"_schema": ["The request needs a JSON body."]})
        return super().pre_load(location_data, schema=schema, req=req, location=location)

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except (RecursionError, ValueError) as exc:
            # Deep nesting and integers of thousands of digits escape
            # json.JSONDecodeError; they are malformed input all the same.
            return self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]  # any decode failure


class FileIdConverter(BaseConverter):
    """A workspace file's id (see cwhost.workspaces.paths.file_id)."""

    regex = FILE_ID_PATTERN


class AnyPathConverter(PathConverter):
    """A file path as the client wrote it, so that the view can refuse a bad one clearly.

    Unlike ``path`` it matches a path starting with '/' or holding a newline.
    It never matches ``<file id>/content``, the download URL, so that each URL
    of a workspace's files names one resource with one set of methods.
    """

    regex = rf"(?!{FILE_ID_PATTERN}/content\Z)/*[\s\S]+?"


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = JsonParser()

    def arguments(self, schema, *args, **kwargs):
        # webargs makes a new instance of a schema class on every request (30 µs and more);
        # marshmallow's schemas are safe to share, so one instance serves them all.
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


def raw_body(view):
    """Mark a view whose request body is not JSON (a file), so no 415 is answered for it."""
    view.raw_body = True
    return view


def list_body(data: list, next_cursor: str | None = None) -> dict:
    """API.md's list envelope around one page of ``data``."""
    return {"object": "list", "data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor}


# What any authenticated operation can answer, whatever it does: a refused
# token, the rate limit, shedding under overload or storage that cannot be
# read or written, an unexpected failure.
_EVERY_OPERATIONS_ERRORS = (401, 429, 500, 503)


def error_responses(blp: Blueprint, *statuses: int):
    """Document the error answers an authenticated operation can give, besides those of every one.

    One ``doc`` entry rather than an ``alt_response`` per status: each
    ``alt_response`` wraps the view in another function that runs on every
    request, and these exist only for the document.
    """
    every = sorted({*statuses, *_EVERY_OPERATIONS_ERRORS})
    return blp.doc(responses={status: http.HTTPStatus(status).name for status in every})


def error_body(status: int, message: str, request_id: str, code=None, details=None, extra=None) -> dict:
    """API.md's error body, whoever answers: the application, or waitress before it."""
    body = {"error": code or _CODES.get(status, "error"), "message": message, "requestId": request_id}
    if details:
        body["details"] = details
    body.update(extra or {})
    return body


def links(blp: Blueprint, status: int, parameter: str, targets: dict[str, tuple[str, str]]):
    """Document OpenAPI links from a response's ``id`` to the operations that take it as ``parameter``.

    ``targets`` maps a link's name to the (method, path template) it leads to.
    Clients, and schemathesis's stateful tests, follow them: create, then
    launch, stop, patch and delete what was created.
    """
    return blp.doc(
        responses={
            status: {
                "links": {
                    name: {
                        "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
                        "parameters": {parameter: "$response.body#/id"},
                    }
                    for name, (method, path) in targets.items()
                }
            }
        }
    )


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer …`` header; empty if it is not one."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class StrictJsonProvider(DefaultJSONProvider):
    """JSON on the wire is strict: a NaN or an infinity is a bug to surface, never output.

    Python's json writes them as ``NaN`` and ``Infinity``, which no JSON parser
    has to accept; with ``allow_nan=False`` such a value raises, and the
    request answers a logged 500 instead of a body clients cannot read.
    """

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def request_id() -> str:
    rid = g.get("request_id")
    if rid is None:
        supplied = request.headers.get("X-Request-Id", "")
        rid = supplied if _REQUEST_ID_PATTERN.fullmatch(supplied) else uuid.uuid4().hex
        g.request_id = rid
    return rid


def error_response(status: int, message: str, details=None, headers=None, code=None, extra=None):
    body = error_body(status, message, request_id(), code, details, extra)
    response = flask.current_app.json.response(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation_details(data) -> dict | None:
    """webargs reports {location: {field: [messages]}}; clients want {field: [messages]}."""
    messages = (data or {}).get("messages")
    if not isinstance(messages, dict):
        return None
    details: dict = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            details.update(fields)
        else:
            details[location] = fields
    return details


# The response headers API.md promises, as OpenAPI header components.
_HEADERS = {
    "X_REQUEST_ID": {
        "description": "This request's id: the client's own X-Request-Id if it sent a valid one.",
        "required": True,
        "schema": {"type": "string", "pattern": _REQUEST_ID_PATTERN.pattern},
    },
    "RETRY_AFTER": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
    },
    "WWW_AUTHENTICATE": {
        "description": "The scheme the API expects.",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    },
}
# Besides X-Request-Id, which every answer carries.
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "WWW_AUTHENTICATE"},
    429: {"Retry-After": "RETRY_AFTER"},
    503: {"Retry-After": "RETRY_AFTER"},
}


class RequestIdHeaderPlugin(BasePlugin):
    """Document X-Request-Id on each operation's own responses; the shared error ones carry it already."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict):
                    response.setdefault("headers", {})["X-Request-Id"] = "X_REQUEST_ID"


class SchemaExtraPlugin(BasePlugin):
    """Add a schema's ``OPENAPI_EXTRA`` (rules across fields, such as anyOf) to its component."""

    def schema_helper(self, name, definition, **kwargs):
        schema = kwargs.get("schema")
        schema_class = schema if isinstance(schema, type) else type(schema)
        return dict(getattr(schema_class, "OPENAPI_EXTRA", {}))


class CwhostApi(Api):
    ERROR_SCHEMA = ErrorSchema

    def __init__(self, app: Flask):
        super().__init__(
            app,
            spec_kwargs={"extra_plugins": [RequestIdHeaderPlugin(), IdempotencyHeaderPlugin(), SchemaExtraPlugin()]},
        )

    def _register_responses(self):
        """flask-smorest's shared error responses, with the headers API.md promises on them.

        It replaces flask-smorest's own registration, which offers no way to
        add headers to these responses.
        """
        for name, header in _HEADERS.items():
            self.spec.components.header(name, header, lazy=True)
        for status in http.HTTPStatus:
            response: dict[str, object] = {"description": status.phrase}
            if status >= 200 and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            self._register_error_response(status.name, response, _ERROR_HEADERS.get(status, {}))
        self._register_error_response(
            "DEFAULT_ERROR", {"description": "Default error response", "schema": self.ERROR_SCHEMA}, {}
        )

    def _register_error_response(self, name: str, response: dict, headers: dict) -> None:
        prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
        response["headers"] = {"X-Request-Id": "X_REQUEST_ID", **headers}
        self.spec.components.response(name, response, lazy=True)

    def handle_http_exception(self, error: HTTPException):
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        details = _validation_details(data)
        if status == 400 and details and "json" in (data.get("messages") or {}):
            json_messages = data["messages"]["json"]
            if json_messages in (["Invalid JSON body."],):
                return error_response(400, "The request body is not valid JSON.")
        if status == 400 and details:
            message = "The request has invalid fields; see details."
        else:
            message = MESSAGES.get(status) or (error.description or http.HTTPStatus(status).phrase)
        headers = {}
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(status, message, details, headers)


def client_names(details):
    """The domain names fields as the code does (``cpu_cores``); clients know them as the API does (``cpuCores``)."""
    if not isinstance(details, dict):
        return details
    return {CLIENT_FIELD_NAMES.get(key, key): client_names(value) for key, value in details.items()}


def handle_service_error(error: ServiceError):
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    if error.status >= 500:
        # A 503 (no capacity, hypervisor or disk away) is the client's to retry,
        # with its reason in the answer; only a 500 is a fault of ours.
        log.log(
            logging.WARNING if error.status == 503 else logging.ERROR, "request %s: %s", request_id(), error.message
        )
    details = client_names(error.details)
    extra = client_names(error.extra)
    return error_response(error.status, error.message, details, headers, code=error.code, extra=extra)


def handle_unexpected(error: Exception):
    log.exception("request %s failed", request_id())
    return error_response(500, MESSAGES[500])


# Field names as the code spells them, and as clients see them, from the schemas themselves.
CLIENT_FIELD_NAMES = {
    name: field.data_key
    for schema in (ConfigurationInSchema, CreditsSchema, SshKeyCreateSchema, WorkstationCreateSchema)
    for name, field in schema().fields.items()
    if field.data_key
}


def take_file_body() -> None:
    """Let this request's body be a file: the JSON body limit does not apply (the view counts the
    bytes against its own limit as they stream, and says what it is), and a chunked body the server
    cannot see the end of is refused, since werkzeug would read it as empty and an empty file would
    be stored."""
    request.max_content_length = sys.maxsize  # None would mean the app's JSON limit
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if chunked and not request.environ.get("wsgi.input_terminated"):
        raise InvalidRequest("This server cannot take a chunked upload; send a Content-Length.")


def text_or_base64(data: bytes) -> tuple[str, str]:
    """Bytes for JSON: as text when they are UTF-8, else base64; and which ("utf-8" or "base64")."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
