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
from pathlib import Path

from flask import Flask, Response, abort, render_template_string, send_from_directory

from cwhost.api.common import ApiBlueprint
from cwhost.api.components import components
from cwhost.errors import InvalidState, NotFound, Unavailable
from cwhost.model import RUNNING

blp = ApiBlueprint("console", __name__, description="The browser console of a running workstation.")

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
const url = `${scheme}://${location.hostname}:${settings.port}/?token=${settings.token}`;
const status = document.getElementById("status");
const rfb = new RFB(document.getElementById("screen"), url, {credentials: {password: settings.password}});
rfb.scaleViewport = true;
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
    live = parts.services.live.get(ws.id)
    if live is None or live.console is None:
        raise Unavailable("The workstation's display cannot be reached right now; try again shortly.")
    nonce = secrets.token_urlsafe(16)
    settings = {
        "port": parts.config.console.port,
        "token": tokens.websocket_token(grant.workstation_id),
        "password": live.console.password,
    }
    page = render_template_string(PAGE, name=ws.name, settings=settings, nonce=nonce)
    return Response(
        page,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": f"default-src 'self'; script-src 'nonce-{nonce}' 'self';"
            f" style-src 'nonce-{nonce}'; connect-src 'self' ws: wss:; img-src 'self' data:",
        },
    )


def register_novnc_assets(app: Flask) -> None:
    @app.route("/console/novnc/<path:filename>")
    def novnc_assets(filename):
        clean = posixpath.normpath(filename)
        if clean.split("/", 1)[0] not in NOVNC_PARTS:
            abort(404)
        return send_from_directory(Path(components().config.console.novnc_dir), clean)
