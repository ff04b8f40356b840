"""The browser console: the page a one-time ``access.console.url`` opens, and noVNC's files for it.

The page needs no Bearer token: its one-time link is the credential, and it
is used up by opening it. The page connects to the console bridge
(cwhost.remote.door_tokens) with a WebSocket token minted as it is served, and gives
noVNC the VNC password of this run. noVNC comes from Debian's ``novnc``
package, served from here, so the page needs no internet.
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, render_template_string, send_from_directory

from cwhost.api.common import ApiBlueprint, error_responses
from cwhost.api.components import components
from cwhost.api.live_view_schemas import LiveViewCreateSchema, LiveViewListSchema, NewLiveViewSchema
from cwhost.api.workstation_json import live_view_url
from cwhost.errors import InvalidState, NotFound, Unavailable
from cwhost.model import RUNNING, Workstation

blp = ApiBlueprint("console", __name__, description="The browser console and the live views of a running workstation.")

# noVNC's directories the page loads modules from; nothing else of the package is served.
NOVNC_PARTS = ("core", "vendor")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ name }}: console</title>
<style nonce="{{ nonce }}">
html, body { margin: 0; height: 100%; background: #1b1b1b; color: #ddd; font: 14px sans-serif; }
#status { height: 24px; line-height: 24px; padding: 0 8px; }
#screen { position: absolute; top: 24px; bottom: 0; left: 0; right: 0; }
</style>
</head>
<body>
<div id="status">Connecting</div>
<div id="screen"></div>
<script type="module" nonce="{{ nonce }}">
import RFB from "/console/novnc/core/rfb.js";
const settings = {{ settings|tojson }};
const scheme = location.protocol === "https:" ? "wss" : "ws";
const url = `${scheme}://${location.hostname}:${settings.port}/?${settings.query}`;
const status = document.getElementById("status");
const rfb = new RFB(document.getElementById("screen"), url, {credentials: {password: settings.password}});
rfb.scaleViewport = true;
rfb.viewOnly = settings.viewOnly;
rfb.addEventListener("connect", () => { status.textContent = "Connected"; });
rfb.addEventListener("disconnect", (e) => {
  status.textContent = e.detail.clean ? "Disconnected" : "Connection failed";
});
rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({password: settings.password}));
</script>
</body>
</html>
"""


@blp.route("/console/<string:token>")
@blp.doc(
    security=[],
    operationId="openConsole",
    responses={
        200: {"description": "The console page (HTML).", "content": {"text/html": {"schema": {"type": "string"}}}},
        400: "BAD_REQUEST",
        404: "NOT_FOUND",
        503: "SERVICE_UNAVAILABLE",
    },
)
def console_page(token: str):
    """The VM's display in the browser (noVNC), from a link in `access.console.url`: once, for a few minutes."""
    parts = components()
    tokens = parts.console
    grant = tokens.link_grant(token) if tokens is not None else None
    if tokens is None or grant is None:
        raise NotFound("This console link is unknown, used or expired; read the workstation again for a fresh one.")
    ws = parts.services.store.find(grant.workstation_id)
    if ws is None:
        raise NotFound("This console link is unknown, used or expired; read the workstation again for a fresh one.")
    if ws.status != RUNNING:
        raise InvalidState(f"Workstation {ws.id} is {ws.status}; only a running workstation has a console.")
    if not ws.ready:
        # The link is not used up: it opens once the guest is ready, while it lasts.
        raise Unavailable(f"Workstation {ws.id} is not ready yet; GET it with ?wait=ready, then open the link again.")
    if tokens.open_link(token) is None:
        raise NotFound("This console link is unknown, used or expired; read the workstation again for a fresh one.")
    socket_query = urlencode({"token": tokens.websocket_token(grant.workstation_id)})
    return _novnc_page(ws, socket_query, view_only=False, framed_by="'self'")


def _novnc_page(ws: Workstation, socket_query: str, view_only: bool, framed_by: str) -> Response:
    """noVNC's page for a running workstation's display, connecting to the console bridge with ``socket_query``."""
    parts = components()
    live = parts.services.live.get(ws.id)
    if live is None or live.console is None:
        raise Unavailable("The workstation's display cannot be reached right now; try again shortly.")
    nonce = secrets.token_urlsafe(16)
    settings = {
        "port": parts.config.console.port,
        "query": socket_query,
        "password": live.console.password,
        "viewOnly": view_only,
    }
    page = render_template_string(PAGE, name=ws.name, settings=settings, nonce=nonce)
    return Response(
        page,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": f"default-src 'self'; script-src 'nonce-{nonce}' 'self';"
            f" style-src 'nonce-{nonce}'; connect-src 'self' ws: wss:; img-src 'self' data:;"
            f" frame-ancestors {framed_by}",
        },
    )


@blp.route("/v1/workstations/<string:workstation_id>/live-views", methods=["POST"])
@blp.arguments(LiveViewCreateSchema)
@blp.response(201, NewLiveViewSchema)
@error_responses(blp, 400, 403, 404, 415, 503)
@blp.doc(operationId="createLiveView")
def create_live_view(body, workstation_id):
    """A link to the running workstation's screen, to embed in any page: view-only unless `interactive`,
    for `minutes`, until revoked. Its input is dropped on the server when view-only."""
    parts = components()
    ws = parts.services.store.load(g.principal, workstation_id)
    view, token = parts.live_views.open(ws, body["interactive"], body.get("minutes"), parts.config.console)
    return {**asdict(view), "url": live_view_url(token)}


@blp.route("/v1/workstations/<string:workstation_id>/live-views")
@blp.response(200, LiveViewListSchema)
@error_responses(blp, 404)
@blp.doc(operationId="listLiveViews")
def list_live_views(workstation_id):
    """The workstation's live views that have not expired nor been revoked (their links are not shown again)."""
    ws = components().services.store.load(g.principal, workstation_id)
    views = components().live_views.of(ws.id)
    return {"object": "list", "data": views, "has_more": False, "next_cursor": None}


@blp.route("/v1/workstations/<string:workstation_id>/live-views/<string:view_id>", methods=["DELETE"])
@blp.response(204)
@error_responses(blp, 404)
@blp.doc(operationId="revokeLiveView")
def revoke_live_view(workstation_id, view_id):
    """Revoke a live view: its link opens nothing from now, and its open connections are cut."""
    ws = components().services.store.load(g.principal, workstation_id)
    components().live_views.revoke(ws.id, view_id)


@blp.route("/live/<string:token>")
@blp.doc(
    security=[],
    operationId="openLiveView",
    responses={
        200: {"description": "The live view (HTML).", "content": {"text/html": {"schema": {"type": "string"}}}},
        400: "BAD_REQUEST",
        404: "NOT_FOUND",
        503: "SERVICE_UNAVAILABLE",
    },
)
def live_view_page(token: str):
    """A live view's page, from its `url`: as often as wanted while it lasts, in any page's iframe."""
    parts = components()
    view = parts.live_views.grant(token)
    ws = parts.services.store.find(view.workstation_id) if view is not None else None
    if view is None or ws is None:
        raise NotFound("This live view is unknown, revoked or expired.")
    if ws.status != RUNNING:
        raise InvalidState(f"Workstation {ws.id} is {ws.status}; its screen shows while it runs.")
    return _novnc_page(ws, urlencode({"live": token}), view_only=not view.interactive, framed_by="*")


def register_novnc_assets(app: Flask) -> None:
    @app.route("/console/novnc/<path:filename>")
    def novnc_assets(filename):
        clean = posixpath.normpath(filename)
        if clean.split("/", 1)[0] not in NOVNC_PARTS:
            abort(404)
        return send_from_directory(Path(components().config.console.novnc_dir), clean)
