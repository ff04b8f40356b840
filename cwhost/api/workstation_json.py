"""A workstation's JSON, with what its record decides built once per version of the record.

marshmallow's dump of one workstation took about 50 µs, so a list of 200 took
10 ms. Everything but ``access`` is a function of the record (and of its
workspace, which cannot change while attached: archiving detaches it), so
WorkstationSchema dumps it once per version of the record and keeps it in the
record's ``derived``: the store's read model makes a new record at every
write. ``access`` is dumped once per report of the hypervisor's. Each answer
adds only what must be new every time, the console and CDP tokens (a hash
each, cwhost.console), and orjson encodes the whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from flask import Response, current_app, request

from cwhost.api.schemas import AccessSchema, WorkstationSchema
from cwhost.workspaces import Workspace
from cwhost.workstations.access import reach
from cwhost.workstations.model import Workstation

_RECORD = WorkstationSchema(exclude=("access",))
_ACCESS = AccessSchema()


@dataclass(frozen=True)
class _Dumpable:
    """A workstation as WorkstationSchema reads it: the record's own fields, and its workspace."""

    workstation: Workstation
    workspace: Workspace | None

    def __getattr__(self, name):
        return getattr(self.workstation, name)


def json_response(body: dict) -> Response:
    # Compact and newline-ended, as every other answer (the JSON provider) is written.
    return Response(orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE), mimetype="application/json")


class Presenter:
    """Workstations' JSON for one request: its host names the links, and its tokens share one expiry."""

    def __init__(self) -> None:
        components = current_app.extensions["cwhost"]
        self._lifecycle = components.services.lifecycle
        self._config = components.config
        self._live_access = self._lifecycle.live.get
        host = request.host.rsplit(":", 1)[0]
        console, browser = components.console, components.browser
        self._console_urls = (
            console.minter(request.host_url + "console/", f"ws://{host}:{components.config.console.port}/?token=")
            if console is not None
            else None
        )
        self._cdp_urls = (
            browser.minter(socket_prefix=f"ws://{host}:{components.config.browser.port}/cdp/")
            if browser is not None
            else None
        )

    def one(self, ws: Workstation) -> dict:
        derived = ws.derived
        record = derived.get("json")
        if record is None:
            record = derived["json"] = _RECORD.dump(_Dumpable(ws, self._lifecycle.workspace_of(ws)))
        live = self._live_access(ws.id)
        cached = derived.get("access")
        if cached is None or cached[0] is not live:
            cached = derived["access"] = (live, self._dumped_access(ws, live))
        access = cached[1]
        return {**record, "access": self._fresh(ws, access) if access is not None else None}

    def page(self, items: list[Workstation], next_cursor: str | None) -> dict:
        """API.md's list envelope, as WorkstationListSchema has it."""
        one = self.one
        return {
            "object": "list",
            "data": [one(ws) for ws in items],
            "hasMore": next_cursor is not None,
            "nextCursor": next_cursor,
        }

    def _fresh(self, ws: Workstation, access: dict) -> dict:
        """``access`` with this answer's console links and CDP URL."""
        console = access["console"]
        with_console = console is not None and console["protocol"] == "vnc" and self._console_urls is not None
        with_browser = ws.cdp_port is not None and self._cdp_urls is not None
        if not (with_console or with_browser):
            return access
        access = dict(access)
        if with_console:
            url, websocket_url = self._console_urls(ws.id)  # type: ignore[misc]  # checked in with_console
            access["console"] = {**console, "url": url, "websocketUrl": websocket_url}
        if with_browser:
            access["browser"] = {"cdpUrl": self._cdp_urls(ws.id)[1]}  # type: ignore[misc]  # checked in with_browser
        return access

    def _dumped_access(self, ws: Workstation, live) -> dict | None:
        found = reach(ws, live, self._config)
        if found is None:
            return None
        console = asdict(found.console) if found.console else None
        return _ACCESS.dump({"ssh": found.ssh, "console": console, "browser": None, "ip_addresses": found.ip_addresses})
