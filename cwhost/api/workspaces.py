"""/v1/workspaces: persistent directories, their files, and the files of a workstation's workspace."""

from __future__ import annotations

import flask
from flask import g, request, url_for
from flask.views import MethodView

from cwhost.api.common import ApiBlueprint, error_responses, links, list_body, raw_body, take_file_body
from cwhost.api.components import services
from cwhost.api.idempotency import document as document_idempotency
from cwhost.api.idempotency import idempotent
from cwhost.api.query_args import FileListArgsSchema, PageArgsSchema
from cwhost.api.workspace_schemas import (
    WorkspaceCreateSchema,
    WorkspaceFileListSchema,
    WorkspaceFileSchema,
    WorkspaceListSchema,
    WorkspaceSchema,
)
from cwhost.errors import InvalidRequest

blp = ApiBlueprint("workspaces", __name__, url_prefix="/v1", description="Workspaces and their files.")
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@blp.route("/workspaces")
class WorkspaceCollection(MethodView):
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, WorkspaceListSchema)
    @error_responses(blp, 400)
    @blp.doc(operationId="listWorkspaces")
    def get(self, args):
        """The caller's workspaces, oldest first."""
        after = int(args["after"]) if "after" in args else None
        items, next_cursor = services().workspaces.page(g.principal, args["limit"], after)
        return list_body(items, next_cursor)

    @idempotent
    @blp.arguments(WorkspaceCreateSchema, required=False)
    @blp.response(201, WorkspaceSchema, headers={"Location": {"schema": {"type": "string"}}})
    @error_responses(blp, 400, 413, 415)
    @document_idempotency(blp)
    @links(
        blp,
        201,
        "workspace_id",
        {
            "get": ("get", "/v1/workspaces/{workspace_id}"),
            "files": ("get", "/v1/workspaces/{workspace_id}/files"),
            "archive": ("post", "/v1/workspaces/{workspace_id}/archive"),
            "delete": ("delete", "/v1/workspaces/{workspace_id}"),
        },
    )
    @blp.doc(operationId="createWorkspace")
    def post(self, body):
        """Create an empty workspace; give its id as `workspaceId` when creating workstations."""
        workspace = services().workspaces.create(g.principal, body.get("name"))
        location = url_for("workspaces.WorkspaceById", workspace_id=workspace.id)
        return workspace, 201, {"Location": location}


@blp.route("/workspaces/<string:workspace_id>")
class WorkspaceById(MethodView):
    @blp.response(200, WorkspaceSchema)
    @error_responses(blp, 404)
    @blp.doc(operationId="getWorkspace")
    def get(self, workspace_id):
        """One workspace."""
        return services().workspaces.get(g.principal, workspace_id)

    @blp.response(204)
    @error_responses(blp, 400, 404)
    @blp.doc(operationId="deleteWorkspace")
    def delete(self, workspace_id):
        """Delete a workspace and every file in it; refused while a running workstation has it.

        Stopped workstations that had it lose it, each with a log entry.
        """
        services().retirement.delete(g.principal, workspace_id)


@blp.route("/workspaces/<string:workspace_id>/archive", methods=["POST"])
@blp.response(200, WorkspaceSchema)
@error_responses(blp, 400, 404)
@blp.doc(operationId="archiveWorkspace")
def archive(workspace_id):
    """Make a workspace read-only and attached to nothing; refused while a running workstation has it."""
    return services().retirement.archive(g.principal, workspace_id)


@blp.route("/workspaces/<string:workspace_id>/files")
@blp.arguments(FileListArgsSchema, location="query")
@blp.response(200, WorkspaceFileListSchema)
@error_responses(blp, 400, 404)
@blp.doc(operationId="listWorkspaceFiles")
def files(args, workspace_id):
    """Every regular file in the workspace, at any depth, by path; links are not listed."""
    page = services().workspace_files.list_files(g.principal, workspace_id, args["limit"], args.get("after"))
    return list_body(page.items, page.next_cursor)


@blp.route("/workspaces/<string:workspace_id>/files/<fileid:file_id>/content")
@blp.doc(responses={200: {"description": "The file's bytes.", "content": _BINARY}})
@error_responses(blp, 400, 404)
@blp.doc(operationId="downloadWorkspaceFile")
def file_content(workspace_id, file_id):
    """Download one file."""
    stream, info = services().workspace_files.open_file(g.principal, workspace_id, file_id)
    return flask.send_file(
        stream,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=info.path.rsplit("/", 1)[-1],
        last_modified=info.modified_at,
        max_age=0,
    )


@blp.route("/workspaces/<string:workspace_id>/files/<anypath:file_path>", methods=["PUT"], merge_slashes=False)
@raw_body
@blp.doc(
    requestBody={
        "required": False,
        "description": "The file's bytes; an empty or absent body stores an empty file.",
        "content": _BINARY,
    },
    responses={
        200: {
            "description": "The file replaced one at that path.",
            "content": {"application/json": {"schema": WorkspaceFileSchema}},
        },
        201: {"description": "The file is new.", "content": {"application/json": {"schema": WorkspaceFileSchema}}},
    },
)
@error_responses(blp, 400, 404, 413)
@blp.doc(operationId="uploadWorkspaceFile")
def upload_file(workspace_id, file_path):
    """Upload a file to a path in the workspace, creating its directories; the body is the file.

    The body is streamed to disk and only then put in place, so a failed
    upload leaves no partial file. `..`, absolute paths, links and NUL bytes
    are refused with 400 and touch nothing.
    """
    _require_utf8_path()
    take_file_body()  # WorkspaceFiles.upload counts it against the upload limit
    info, created = services().workspace_files.upload(
        g.principal, workspace_id, file_path, request.stream, request.content_length
    )
    body = WorkspaceFileSchema().dump(info)
    return flask.jsonify(body), 201 if created else 200


def _require_utf8_path() -> None:
    """Refuse a path whose bytes are not UTF-8.

    Flask decodes such bytes to U+FFFD, so ``inv%ff.txt`` and ``inv%fe.txt``
    would both be stored as one name, the second silently replacing the first.
    PATH_INFO holds the request's real bytes (as Latin-1 text, per WSGI).
    """
    try:
        request.environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise InvalidRequest(
            "Invalid file path: it is not valid UTF-8.", details={"path": ["it is not valid UTF-8"]}
        ) from None


@blp.route("/workstations/<string:workstation_id>/files")
@blp.arguments(FileListArgsSchema, location="query")
@blp.response(200, WorkspaceFileListSchema)
@error_responses(blp, 400, 404)
@blp.doc(operationId="listWorkstationFiles")
def workstation_files(args, workstation_id):
    """The files of the workstation's workspace; an empty list when it has none."""
    domain = services()
    workspace = domain.workspaces.of_workstation(domain.store.load(g.principal, workstation_id))
    if workspace is None:
        return list_body([])
    page = domain.workspace_files.list_directory(workspace, args["limit"], args.get("after"))
    return list_body(page.items, page.next_cursor)
