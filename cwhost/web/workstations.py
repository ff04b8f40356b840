"""The workstations' pages: the list (updating itself), the create form, the actions, one workstation's page."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError

from cwhost.api.components import components, services
from cwhost.api.live_view_schemas import LiveViewCreateSchema
from cwhost.api.schemas import WorkstationCreateSchema, WorkstationPatchSchema, create_arguments, patch_arguments
from cwhost.api.workstation_json import live_view_url
from cwhost.errors import NotFound, ServiceError
from cwhost.ids import unix_to_rfc3339
from cwhost.web import figures
from cwhost.web.forms import field_errors, form_number, service_errors
from cwhost.web.guard import signed_in
from cwhost.web.sessions import MAX_SESSIONS_PER_ACCOUNT
from cwhost.workstations.access import reach

# Enough for a person's list; the API pages further.
LIST_LIMIT = 500
ACTIONS = ("launch", "stop", "force-stop", "delete")
# The oldest events shown on a workstation's page, and how much of the end of its serial console.
EVENTS_SHOWN = 200
CONSOLE_TAIL_BYTES = 32 * 1024


def _rows():
    page = services().store.page(g.principal, limit=LIST_LIMIT)
    return figures.rows(page.items, _row_parts(g.web_session.csrf_token), services().month_costs, time.time())


def _row_parts(csrf: str):
    """Each row's parts are rendered once per version of the record and per session: a list of 200 is then
    mostly joined, not rendered (the whole rows' markup took 4 times the API's whole list), and every part is
    still autoescaped."""
    macros: Any = current_app.jinja_env.get_template("workstation_row.html").module  # its macros
    prefix = url_for("web.workstations") + "workstations/"

    def parts(ws) -> tuple[Markup, Markup]:
        by_session = ws.derived.setdefault("web-row", {})
        found = by_session.get(csrf)
        if found is None:
            if len(by_session) >= MAX_SESSIONS_PER_ACCOUNT:
                by_session.clear()  # mostly sessions long gone: a record lives as long as it is unchanged
            here = prefix + ws.id
            found = by_session[csrf] = (macros.head(ws, here), macros.tail(ws, here, csrf))
        return found

    return parts


@signed_in
def workstations():
    return render_template("workstations.html", rows=_rows())


@signed_in
def workstation_rows():
    return render_template("workstation_rows.html", rows=_rows())


def _form_body(form) -> dict:
    """The form as the API's request body: the same schema judges both."""
    body: dict = {"name": form.get("name", "")}
    if form.get("mode", "type") == "type":
        body["type"] = form.get("type", "")
    else:
        configuration = {key: form_number(form[key]) for key in ("cpuCores", "memoryGB", "storageGB") if form.get(key)}
        if form.get("gpu"):
            configuration["gpu"] = form["gpu"]
        body["configuration"] = configuration
    if form.get("workspaceId"):
        body["workspaceId"] = form["workspaceId"]
    keys = [line.strip() for line in form.get("sshPublicKeys", "").splitlines() if line.strip()]
    if keys:
        body["sshPublicKeys"] = keys
    return body


def _form(errors=None, message=None, status=200):
    workspaces, _ = services().workspaces.page(g.principal, LIST_LIMIT, None)
    page = render_template(
        "workstation_new.html",
        types=components().config.types,
        workspaces=[w for w in workspaces if w.status == "active"],
        form=request.form,
        errors=errors or {},
        message=message,
    )
    return page, status


@signed_in
def new_workstation():
    return _form()


@signed_in
def create_workstation():
    try:
        body = WorkstationCreateSchema().load(_form_body(request.form))
    except ValidationError as exc:
        return _form(errors=field_errors(exc.messages), message="Some fields need another value.", status=422)
    try:
        ws = services().lifecycle.create(g.principal, **create_arguments(body))
    except ServiceError as exc:
        return _form(errors=service_errors(exc), message=exc.message, status=exc.status)
    return redirect(url_for("web.workstation", workstation_id=ws.id))


@signed_in
def act(workstation_id: str, action: str):
    if action not in ACTIONS:
        abort(404)
    lifecycle = services().lifecycle
    if action == "launch":
        lifecycle.launch(g.principal, workstation_id)
    elif action in ("stop", "force-stop"):
        lifecycle.stop(g.principal, workstation_id, force=action == "force-stop")
    else:
        lifecycle.delete(g.principal, workstation_id, force=True)
        return redirect(url_for("web.workstations"))
    if request.form.get("back") == "list":
        return redirect(url_for("web.workstations"))
    return redirect(url_for("web.workstation", workstation_id=workstation_id))


@signed_in
def reconfigure(workstation_id: str):
    """A stopped workstation's name and configuration, changed as PATCH changes them."""
    form = request.form
    configuration = {key: form_number(form[key]) for key in ("cpuCores", "memoryGB", "storageGB") if form.get(key)}
    configuration["gpu"] = form.get("gpu") or None
    if form.get("width") or form.get("height"):
        configuration["display"] = {side: form_number(form.get(side, "")) for side in ("width", "height")}
    body = {"name": form.get("name", ""), "configuration": configuration}
    try:
        loaded = WorkstationPatchSchema().load(body)
        services().lifecycle.patch(g.principal, workstation_id, **patch_arguments(loaded))
    except ValidationError as exc:
        return _workstation_page(workstation_id, field_errors(exc.messages), 422)
    except NotFound:
        raise  # the page of a workstation that is not the caller's: 404, not a form
    except ServiceError as exc:
        return _workstation_page(workstation_id, service_errors(exc), exc.status)
    return redirect(url_for("web.workstation", workstation_id=workstation_id))


@signed_in
def workstation(workstation_id: str):
    return _workstation_page(workstation_id)


def _workstation_page(workstation_id: str, errors=None, status=200, new_live_view_url=None):
    domain = services()
    ws = domain.store.load(g.principal, workstation_id)
    sharing = components().console is not None and ws.status == "running"
    config, now = components().config, time.time()
    access = reach(ws, domain.live.get(ws.id), config, request.host.rsplit(":", 1)[0])
    charts = [figures.chart(ws, domain.ledger, config, window, now) for window in figures.WINDOWS]
    events, _ = domain.store.events(ws.id, EVENTS_SHOWN, None)
    return render_template(
        "workstation.html",
        ws=ws,
        ssh=access.ssh if access else None,
        console_url=_console_link(ws, access),
        charts=charts,
        events=[(unix_to_rfc3339(e.created_at), e.level, e.message) for e in events],
        console_tail=_console_tail(domain.lifecycle.console_log(ws)),
        errors=errors or {},
        form=request.form if errors else {},
        live_views=components().live_views.of(ws.id) if sharing else None,
        new_live_view_url=new_live_view_url,
    ), status


def _console_link(ws, access) -> str | None:
    """A one-time console link for the page's embedded console, as the API mints them; None without one."""
    console = components().console
    if console is None or access is None or access.console is None or access.console.protocol != "vnc" or not ws.ready:
        return None
    prefix = url_for("console.console_page", token="_").removesuffix("_")
    link, _ = console.minter(prefix, "")(ws.id)
    return link


@signed_in
def share_screen(workstation_id: str):
    """A live view, as POST .../live-views makes it; its link is shown on this page, once."""
    ws = services().store.load(g.principal, workstation_id)
    parts = components()
    body = {"interactive": request.form.get("interactive") == "on"}
    if request.form.get("minutes"):
        body["minutes"] = form_number(request.form["minutes"])
    try:
        loaded = LiveViewCreateSchema().load(body)
        _, token = parts.live_views.open(ws, loaded["interactive"], loaded.get("minutes"), parts.config.console)
    except ValidationError as exc:
        return _workstation_page(workstation_id, field_errors(exc.messages), 422)
    except ServiceError as exc:
        return _workstation_page(workstation_id, service_errors(exc), exc.status)
    return _workstation_page(workstation_id, new_live_view_url=live_view_url(token))


@signed_in
def revoke_live_view(workstation_id: str, view_id: str):
    ws = services().store.load(g.principal, workstation_id)
    components().live_views.revoke(ws.id, view_id)
    return redirect(url_for("web.workstation", workstation_id=workstation_id))


@signed_in
def screenshot(workstation_id: str):
    """The display, for the page's thumbnail: the API's screenshot, within the same per-account limits."""
    png = services().guest_actions.screenshot(g.principal, workstation_id)
    return Response(png, content_type="image/png", headers={"Cache-Control": "no-store"})


def _console_tail(path) -> str | None:
    """The end of the serial console's text, as much as a page shows; None when it has none."""
    if path is None:
        return None
    try:
        with open(path, "rb") as console:
            console.seek(0, os.SEEK_END)
            console.seek(max(0, console.tell() - CONSOLE_TAIL_BYTES))
            return console.read().decode(errors="replace")
    except OSError:
        return None


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/", "workstations", workstations)
    blp.add_url_rule("/workstations/rows", "workstation_rows", workstation_rows)
    blp.add_url_rule("/workstations/new", "new_workstation", new_workstation)
    blp.add_url_rule("/workstations", "create_workstation", create_workstation, methods=["POST"])
    blp.add_url_rule("/workstations/<workstation_id>", "workstation", workstation)
    blp.add_url_rule("/workstations/<workstation_id>/screenshot.png", "screenshot", screenshot)
    blp.add_url_rule("/workstations/<workstation_id>/live-views", "share_screen", share_screen, methods=["POST"])
    blp.add_url_rule(
        "/workstations/<workstation_id>/live-views/<view_id>/revoke",
        "revoke_live_view",
        revoke_live_view,
        methods=["POST"],
    )
    blp.add_url_rule("/workstations/<workstation_id>/reconfigure", "reconfigure", reconfigure, methods=["POST"])
    blp.add_url_rule("/workstations/<workstation_id>/<action>", "act", act, methods=["POST"])
