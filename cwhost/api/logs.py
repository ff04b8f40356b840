"""/v1/workstations/{id}/logs: what happened to a workstation, and its serial console."""

from __future__ import annotations

import os

import flask
from flask import g, url_for

from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.components import services
from cwhost.api.query_args import PageArgsSchema
from cwhost.api.schemas import (
    LogListSchema,
)
from cwhost.errors import NotFound
from cwhost.ids import unix_to_rfc3339
from cwhost.workstations.store import LogEntry

blp = ApiBlueprint("logs", __name__, url_prefix="/v1/workstations", description="Workstation logs.")
CONSOLE = "console"
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def _url(workstation_id: str, log_id: str) -> str:
    return url_for("logs.log_content", workstation_id=workstation_id, log_id=log_id)


@blp.route("/<string:workstation_id>/logs")
@blp.arguments(PageArgsSchema, location="query")
@blp.response(200, LogListSchema)
@error_responses(blp, 400, 404)
@blp.doc(operationId="listWorkstationLogs")
def logs(args, workstation_id):
    """Its log: the serial console (when there is one) first, then events, oldest first."""
    after = int(args["after"]) if "after" in args else None
    domain = services()
    ws = domain.store.load(g.principal, workstation_id)
    entries, next_cursor = domain.store.events(ws.id, args["limit"], after)
    console = domain.lifecycle.console_log(ws) if after is None else None
    if console is not None:
        message = "The virtual machine's serial console."
        entries.insert(0, LogEntry(CONSOLE, ws.id, "console", "info", os.stat(console).st_mtime, message))
    return list_body(entries, next_cursor)


@blp.route("/<string:workstation_id>/logs/<string:log_id>/content")
@blp.doc(responses={200: {"description": "The log's text.", **_TEXT}})
@error_responses(blp, 404)
@blp.doc(operationId="downloadWorkstationLog")
def log_content(workstation_id, log_id):
    """Download one log's text."""
    domain = services()
    ws = domain.store.load(g.principal, workstation_id)
    if log_id == CONSOLE:
        path = domain.lifecycle.console_log(ws)
        if path is None:
            raise NotFound(f"Workstation {workstation_id} has no console log.")
        return flask.send_file(path, mimetype="text/plain", max_age=0)
    if not log_id.startswith("log-") or not log_id[4:].isdigit() or len(log_id) > 22:
        raise NotFound(f"No log {log_id!r}.")
    row = domain.store.event(ws.id, int(log_id[4:]))
    text = f"{unix_to_rfc3339(row['at'])} {row['level'].upper()} {row['message']}\n"
    return flask.Response(text, mimetype="text/plain")
