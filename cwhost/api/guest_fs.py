"""The files of a running workstation's guest: stat or list, read, write (streamed), make
directories, delete, and watch a directory as Server-Sent Events."""

from __future__ import annotations

import time

from flask import g, request

from cwhost.api.common import ApiBlueprint, error_responses, raw_body, take_file_body
from cwhost.api.components import components, services
from cwhost.api.process_schemas import (
    DirectoryCreateSchema,
    GuestDeleteArgsSchema,
    GuestEntrySchema,
    GuestPathArgsSchema,
    GuestPathSchema,
)
from cwhost.api.streams import KEEPALIVE, OPENING, sse_event, stream_answer, streamed, take_stream_slot
from cwhost.errors import PayloadTooLarge
from drivers.guest_service.client import Connection, GuestServiceRefused, GuestServiceUnavailable

blp = ApiBlueprint(
    "guest_fs",
    __name__,
    url_prefix="/v1/workstations",
    description="The guest's files, as the guest user: any path that user may use.",
)
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
CHUNK_BYTES = 256 * 1024


@blp.route("/<string:workstation_id>/fs")
@blp.arguments(GuestPathArgsSchema, location="query")
@blp.response(200, GuestPathSchema)
@error_responses(blp, 400, 403, 404, 422)
@blp.doc(operationId="statGuestPath")
def stat(args, workstation_id):
    """A path's entry (file, directory, symlink, other); a directory's with its entries."""
    return services().guest_fs.stat(g.principal, workstation_id, args["path"])


@blp.route("/<string:workstation_id>/fs", methods=["DELETE"])
@blp.arguments(GuestDeleteArgsSchema, location="query")
@blp.response(204)
@error_responses(blp, 400, 403, 404, 409, 422)
@blp.doc(operationId="deleteGuestPath")
def delete(args, workstation_id):
    """Delete a file, a link or an empty directory; a full one with `recursive=true`."""
    services().guest_fs.delete(g.principal, workstation_id, args["path"], args["recursive"])


@blp.route("/<string:workstation_id>/fs/directories", methods=["POST"])
@blp.arguments(DirectoryCreateSchema)
@blp.response(201, GuestEntrySchema)
@error_responses(blp, 400, 403, 404, 409, 415, 422)
@blp.doc(operationId="createGuestDirectory")
def make_directory(body, workstation_id):
    """Make a directory (and its missing parents, with `parents`); 409 if it exists."""
    return services().guest_fs.make_directory(g.principal, workstation_id, body["path"], body["parents"])


@blp.route("/<string:workstation_id>/fs/content")
@blp.arguments(GuestPathArgsSchema, location="query")
@blp.doc(operationId="readGuestFile", responses={200: {"description": "The file's bytes.", "content": _BINARY}})
@error_responses(blp, 400, 403, 404, 422)
def read_content(args, workstation_id):
    """A file's bytes, streamed as the guest reads them (one of the account's stream slots)."""
    entry, chunks = services().guest_fs.read(g.principal, workstation_id, args["path"])
    try:
        release = take_stream_slot()
    except BaseException:
        chunks.close()  # type: ignore[attr-defined]
        raise
    headers = {"Content-Length": str(entry["size"])} if entry["type"] == "file" else {}
    return streamed(_guarded(chunks), release, "application/octet-stream", headers=headers)


def _guarded(chunks):
    """The bytes; a guest that breaks off midway cuts the body short, which the client sees."""
    try:
        yield from chunks
    except (GuestServiceUnavailable, GuestServiceRefused, OSError):
        return


@blp.route("/<string:workstation_id>/fs/content", methods=["PUT"])
@raw_body
@blp.arguments(GuestPathArgsSchema, location="query")
@blp.doc(
    operationId="writeGuestFile",
    requestBody={"required": False, "description": "The file's bytes (up to guest_files.max_write_bytes).",
                 "content": _BINARY},
)  # fmt: skip
@blp.response(200, GuestEntrySchema)
@error_responses(blp, 400, 403, 404, 409, 413, 422)
def write_content(args, workstation_id):
    """Write a file, created or replaced whole once every byte is there: a write cut short changes nothing."""
    fs = services().guest_fs
    take_file_body()  # counted against guest_files.max_write_bytes
    if request.content_length is not None and request.content_length > fs.max_write_bytes:
        raise PayloadTooLarge(f"The file is larger than this server writes at once ({fs.max_write_bytes} bytes).")
    return fs.write(g.principal, workstation_id, args["path"], _body_chunks())


def _body_chunks():
    stream = request.stream
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


@blp.route("/<string:workstation_id>/fs/watch")
@blp.arguments(GuestPathArgsSchema, location="query")
@blp.doc(
    operationId="watchGuestDirectory",
    responses=stream_answer(
        "text/event-stream",
        "text/event-stream: `created`, `modified` and `deleted` events ({path, type}) for the directory's"
        " entries, as the guest sees them change (compared every half second); ends when the directory is"
        " deleted, or after streams.max_seconds.",
    ),
)
@error_responses(blp, 400, 403, 404, 422)
def watch(args, workstation_id):
    """Watch a directory's entries (one of the account's stream slots)."""
    settings = components().config.streams
    _, connection = services().guest_fs.watch(g.principal, workstation_id, args["path"], settings.keepalive_seconds)
    try:
        release = take_stream_slot()
    except BaseException:
        connection.close()
        raise
    events = _changes(connection, settings.max_seconds)
    return streamed(events, release, "text/event-stream", end=connection.close)


def _changes(connection: Connection, max_seconds: float):
    yield OPENING
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        try:
            change = connection.answer()
        except TimeoutError:
            yield KEEPALIVE
            continue
        except (GuestServiceUnavailable, GuestServiceRefused):
            return
        event, path, kind = change.get("event"), change.get("path"), change.get("type")
        if event in ("created", "modified", "deleted") and isinstance(path, str) and isinstance(kind, str):
            yield sse_event(event, {"path": path, "type": kind})
