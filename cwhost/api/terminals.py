"""Terminals in a running workstation: open one (its WebSocket is on the console bridge), list, close."""

from __future__ import annotations

from flask import g, request
from flask.views import MethodView

from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.components import components, services
from cwhost.api.process_schemas import NewTerminalSchema, TerminalCreateSchema, TerminalListSchema
from cwhost.api.workstation_json import server_names
from cwhost.errors import Unavailable
from cwhost.workstations.terminals import Terminal

blp = ApiBlueprint(
    "terminals",
    __name__,
    url_prefix="/v1/workstations",
    description="Terminals in a running workstation: a pseudo-terminal over a token-bound WebSocket.",
)


def _shown(terminal: Terminal) -> dict:
    return {
        "id": terminal.id,
        "command": list(terminal.command),
        "created_at": terminal.created_at,
        "connected": terminal.viewer is not None,
    }


@blp.route("/<string:workstation_id>/terminals")
class TerminalCollection(MethodView):
    @blp.response(200, TerminalListSchema)
    @error_responses(blp, 404)
    @blp.doc(operationId="listTerminals")
    def get(self, workstation_id):
        """This workstation's open terminals (their WebSocket URLs are not shown again)."""
        return list_body([_shown(t) for t in services().terminals.listed(g.principal, workstation_id)])

    @blp.arguments(TerminalCreateSchema)
    @blp.response(201, NewTerminalSchema)
    @error_responses(blp, 400, 404, 415, 422)
    @blp.doc(operationId="openTerminal")
    def post(self, body, workstation_id):
        """Open a terminal: a program (the login shell by default) on a new pseudo-terminal, as the guest user."""
        parts = components()
        parts.services.store.load(g.principal, workstation_id)  # another account's is 404, whatever else holds
        if not parts.config.console.port:
            raise Unavailable("This server's console bridge is off ([console] port), and terminals ride on it.")
        terminal, token = parts.services.terminals.open(
            g.principal, workstation_id, body.get("command") or [], body["cols"], body["rows"]
        )
        host, _ = server_names(parts.config.access.public_host)
        scheme = "wss" if request.scheme == "https" else "ws"
        return {**_shown(terminal), "websocket_url": f"{scheme}://{host}:{parts.config.console.port}/?terminal={token}"}


@blp.route("/<string:workstation_id>/terminals/<string:terminal_id>", methods=["DELETE"])
@blp.response(204)
@error_responses(blp, 404)
@blp.doc(operationId="closeTerminal")
def close(workstation_id, terminal_id):
    """Close it: its program gets SIGHUP (then SIGKILL), its connection ends."""
    services().terminals.close(g.principal, workstation_id, terminal_id)
