"""The workspaces' pages: list, create, archive, delete; one workspace's files, uploaded (streamed, with
progress) and downloaded."""

from __future__ import annotations

import sys

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, send_file, url_for
from marshmallow import ValidationError

from cwhost.api.components import services
from cwhost.api.workspace_schemas import WorkspaceCreateSchema
from cwhost.errors import ServiceError
from cwhost.web.forms import field_errors
from cwhost.web.guard import signed_in

# As many as a page shows; the API pages further.
SHOWN = 500


def _list(errors=None, message=None, status=200):
    items, _ = services().workspaces.page(g.principal, SHOWN, None)
    page = render_template("workspaces.html", workspaces=items, errors=errors or {}, message=message, form=request.form)
    return page, status


@signed_in
def workspaces():
    return _list()


@signed_in
def create_workspace():
    name = request.form.get("name", "").strip()
    try:
        body = WorkspaceCreateSchema().load({"name": name} if name else {})
        services().workspaces.create(g.principal, body.get("name"))
    except ValidationError as exc:
        return _list(errors=field_errors(exc.messages), message="The workspace was not created.", status=422)
    except ServiceError as exc:
        return _list(message=exc.message, status=exc.status)
    return redirect(url_for("web.workspaces"))


@signed_in
def change_workspace(workspace_id: str, action: str):
    retirement = services().retirement
    if action == "archive":
        retirement.archive(g.principal, workspace_id)
    elif action == "delete":
        retirement.delete(g.principal, workspace_id)
    else:
        abort(404)
    return redirect(url_for("web.workspaces"))


@signed_in
def workspace(workspace_id: str):
    domain = services()
    found = domain.workspaces.get(g.principal, workspace_id)
    files = domain.workspace_files.list_files(g.principal, workspace_id, SHOWN, request.args.get("after"))
    return render_template("workspace.html", workspace=found, files=files)


@signed_in
def download(workspace_id: str, file_id: str):
    stream, info = services().workspace_files.open_file(g.principal, workspace_id, file_id)
    return send_file(
        stream,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=info.path.rsplit("/", 1)[-1],
        max_age=0,
    )


@signed_in
def upload(workspace_id: str, file_path: str):
    """The page's upload: the file's bytes as the request body, streamed to disk as the API's upload is."""
    # Counted against the upload limit as the bytes stream, not the app's JSON body limit.
    request.max_content_length = sys.maxsize
    try:
        info, created = services().workspace_files.upload(
            g.principal, workspace_id, file_path, request.stream, request.content_length
        )
    except ServiceError as exc:  # the page's script shows the message (a 404 across accounts too)
        return jsonify({"message": exc.message}), exc.status
    return jsonify({"path": info.path, "size": info.size}), 201 if created else 200


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/workspaces", "workspaces", workspaces)
    blp.add_url_rule("/workspaces", "create_workspace", create_workspace, methods=["POST"])
    blp.add_url_rule("/workspaces/<workspace_id>", "workspace", workspace)
    blp.add_url_rule("/workspaces/<workspace_id>/<action>", "change_workspace", change_workspace, methods=["POST"])
    blp.add_url_rule("/workspaces/<workspace_id>/download/<file_id>", "download", download)
    blp.add_url_rule(
        "/workspaces/<workspace_id>/files/<path:file_path>", "upload", upload, methods=["PUT"], merge_slashes=False
    )
