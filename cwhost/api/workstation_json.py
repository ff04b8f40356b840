"""A workstation's JSON, encoded once per version of its record, with this answer's links put in.

marshmallow's dump of one workstation took about 50 µs, so a list of 200 took
10 ms. A workstation's JSON is a function of its record (and of its
workspace, which cannot change while attached: archiving detaches it), of
what the hypervisor last reported of it, and of the console and CDP links
each answer mints afresh. So WorkstationSchema dumps it once per version of
the record and report (the store's read model makes a new record at every
write; cwhost.workstations.access a new report at every refresh), orjson
encodes it with a placeholder for each link, and the encoded row is kept in
the record's ``derived``, cut at the placeholders. An answer joins the pieces
with its own links (a hash each, cwhost.remote.door_tokens) and hands the rows to orjson
as already-encoded fragments. The links' variable parts are encoded by orjson
too; tokens are URL-safe.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import orjson
from flask import Response, request

from cwhost.api.components import components
from cwhost.api.schemas import AccessSchema, WorkstationSchema
from cwhost.model import Workstation
from cwhost.workspaces.registry import Workspace
from cwhost.workstations.access import offers_browser, reach

_RECORD = WorkstationSchema(exclude=("access",))
_ACCESS = AccessSchema()
# Placeholders for the links, as strings no value can hold (NUL is refused in every input), and encoded.
_LINK, _SOCKET, _CDP, _HOST = "\x00link\x00", "\x00socket\x00", "\x00cdp\x00", "\x00host\x00"
_HOLE = {name: orjson.dumps(name)[1:-1] for name in (_LINK, _SOCKET, _CDP, _HOST)}
_HOLES = re.compile(b"(" + b"|".join(re.escape(encoded) for encoded in _HOLE.values()) + b")")


@dataclass(frozen=True)
class _Dumpable:
    """A workstation as WorkstationSchema reads it: the record's own fields, and its workspace."""

    workstation: Workstation
    workspace: Workspace | None

    def __getattr__(self, name):
        return getattr(self.workstation, name)


def json_response(body) -> Response:
    # Compact and newline-ended, as every other answer (the JSON provider) is written.
    return Response(orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE), mimetype="application/json")


class _Encoded:
    """A row's JSON cut at its placeholders: literal pieces at even places, placeholders at odd ones."""

    def __init__(self, body: dict):
        self.pieces = _HOLES.split(orjson.dumps(body))
        self.whole = orjson.Fragment(self.pieces[0]) if len(self.pieces) == 1 else None
        self.console = _HOLE[_LINK] in self.pieces
        self.browser = _HOLE[_CDP] in self.pieces
        self.host = _HOLE[_HOST] in self.pieces

    def filled(self, links: dict[bytes, bytes]) -> orjson.Fragment:
        if self.whole is not None:
            return self.whole
        pieces = self.pieces.copy()
        for place in range(1, len(pieces), 2):
            pieces[place] = links[pieces[place]]
        return orjson.Fragment(b"".join(pieces))


def server_names(public_host: str) -> tuple[str, str]:
    """The server's host, and host:port of this API, as an answer names them: ``[access] public_host``,
    else the host the request was sent to (its Host header, which names the caller's own answer only)."""
    try:
        sent = urlsplit("//" + request.host)
        name, port = sent.hostname or "localhost", sent.port
    except ValueError:
        name, port = "localhost", None
    host = public_host or (f"[{name}]" if ":" in name else name)
    return host, host + (f":{port}" if port else "")


def live_view_url(token: str) -> str:
    """A live view's page, named as the workstations' other links are (access.public_host, else the
    name the request was sent to)."""
    _, netloc = server_names(components().config.access.public_host)
    return f"{request.scheme}://{netloc}/live/{token}"


class Presenter:
    """Workstations' JSON for one request: one rule names the server in SSH, console and CDP alike
    (``server_names``), and its tokens share one expiry."""

    def __init__(self) -> None:
        parts = components()
        self._workspaces = parts.services.workspaces
        self._config = parts.config
        self._live_access = parts.services.live.get
        host, netloc = server_names(parts.config.access.public_host)
        self._host = _encoded(host).encode()
        console, browser = parts.console, parts.browser
        # The links' fixed parts: encoded by orjson, whatever the Host held.
        self._console_urls = (
            console.minter(
                _encoded(f"{request.scheme}://{netloc}/console/"),
                _encoded(f"ws://{host}:{parts.config.console.port}/?token="),
            )
            if console is not None
            else None
        )
        self._cdp_urls = (
            browser.minter(socket_prefix=_encoded(f"ws://{host}:{parts.config.browser.port}/cdp/"))
            if browser is not None
            else None
        )

    def one(self, ws: Workstation) -> orjson.Fragment:
        live = self._live_access(ws.id)
        cached = ws.derived.get("json")
        if cached is None or cached[0] is not live:
            cached = ws.derived["json"] = (live, _Encoded(self._body(ws, live)))
        encoded: _Encoded = cached[1]
        links = {_HOLE[_HOST]: self._host}
        if encoded.console:
            link, socket = self._console_urls(ws.id)  # type: ignore[misc]  # a placeholder means it is set
            links[_HOLE[_LINK]], links[_HOLE[_SOCKET]] = link.encode(), socket.encode()
        if encoded.browser:
            links[_HOLE[_CDP]] = self._cdp_urls(ws.id)[1].encode()  # type: ignore[misc]  # as above
        return encoded.filled(links)

    def page(self, items: list[Workstation], next_cursor: str | None) -> dict:
        """API.md's list envelope, as WorkstationListSchema has it."""
        one = self.one
        return {
            "object": "list",
            "data": [one(ws) for ws in items],
            "hasMore": next_cursor is not None,
            "nextCursor": next_cursor,
        }

    def _body(self, ws: Workstation, live) -> dict:
        """The row as WorkstationSchema has it, with placeholders where each answer's links go."""
        body = _RECORD.dump(_Dumpable(ws, self._workspaces.of_workstation(ws)))
        # The SSH host is filled in per answer, unless the configuration names it.
        found = reach(ws, live, self._config, self._config.access.public_host or _HOST)
        if found is None:
            return {**body, "access": None}
        console = asdict(found.console) if found.console else None
        access = _ACCESS.dump(
            {"ssh": found.ssh, "console": console, "browser": None, "ip_addresses": found.ip_addresses}
        )
        if console is not None and console["protocol"] == "vnc" and self._console_urls is not None:
            access["console"] = {**access["console"], "url": _LINK, "websocketUrl": _SOCKET}
        if self._cdp_urls is not None and offers_browser(ws, self._config):
            access["browser"] = {"cdpUrl": _CDP}
        return {**body, "access": access}


def _encoded(text: str) -> str:
    """``text`` as it stands inside a JSON string: it is put in a row's encoded JSON as it is."""
    return orjson.dumps(text).decode()[1:-1]
