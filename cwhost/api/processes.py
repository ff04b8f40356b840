"""Background processes in a running workstation: start, list, read, stdin, signal, wait, forget,
and their output as Server-Sent Events."""

from __future__ import annotations

import base64
import binascii
import time

from flask import g, request
from flask.views import MethodView

from cwhost.api.common import ApiBlueprint, error_responses, list_body, text_or_base64
from cwhost.api.components import components, services
from cwhost.api.process_schemas import (
    ProcessGetArgsSchema,
    ProcessListSchema,
    ProcessSchema,
    ProcessSignalSchema,
    ProcessStartSchema,
    ProcessStdinSchema,
)
from cwhost.api.streams import KEEPALIVE, OPENING, sse_event, stream_answer, streamed, take_stream_slot
from cwhost.errors import InvalidRequest
from cwhost.workstations.process_output import ProcessOutput
from cwhost.workstations.processes import BackgroundProcess

blp = ApiBlueprint(
    "processes",
    __name__,
    url_prefix="/v1/workstations",
    description="Background processes in a running workstation, their output streamed as it is written.",
)
_SSE_DOC = stream_answer(
    "text/event-stream",
    "text/event-stream: `stdout` and `stderr` events ({data, encoding: utf-8 or base64}, id the"
    " byte where the chunk ends: send it back as Last-Event-ID to resume), then one `exit` event"
    " ({exitCode, signal, timedOut, status}). A stream also ends after streams.max_seconds; reconnect.",
)


def _shown(process: BackgroundProcess) -> dict:
    return {
        "id": process.id,
        "command": list(process.command),
        "status": process.status,
        "exit_code": process.exit_code,
        "signal": process.signal,
        "timed_out": process.timed_out,
        "started_at": process.started_at,
        "ended_at": process.ended_at,
        "output_dropped_bytes": process.output.dropped,
    }


@blp.route("/<string:workstation_id>/processes")
class ProcessCollection(MethodView):
    @blp.response(200, ProcessListSchema)
    @error_responses(blp, 404)
    @blp.doc(operationId="listProcesses")
    def get(self, workstation_id):
        """This workstation's processes: those running, and those ended lately (processes.keep_finished_seconds)."""
        return list_body([_shown(p) for p in services().processes.listed(g.principal, workstation_id)])

    @blp.arguments(ProcessStartSchema)
    @blp.response(201, ProcessSchema)
    @error_responses(blp, 400, 404, 413, 415, 422)
    @blp.doc(operationId="startProcess")
    def post(self, body, workstation_id):
        """Start a command in the background, as the guest user, and answer at once with its id."""
        process = services().processes.start(
            g.principal,
            workstation_id,
            command=body["command"],
            env=body["env"],
            working_directory=body.get("working_directory"),
            timeout_seconds=body.get("timeout_seconds"),
        )
        return _shown(process)


@blp.route("/<string:workstation_id>/processes/<string:process_id>")
class ProcessById(MethodView):
    @blp.arguments(ProcessGetArgsSchema, location="query")
    @blp.response(200, ProcessSchema)
    @error_responses(blp, 400, 404)
    @blp.doc(operationId="getProcess")
    def get(self, args, workstation_id, process_id):
        """One process; with `?wait=exit`, once it has ended or the wait is over (holding a stream slot,
        none of the server's request slots)."""
        process = services().processes.one(g.principal, workstation_id, process_id)
        if args.get("wait") == "exit":
            release = take_stream_slot()
            try:
                process.output.wait_for_end(min(args["timeout_seconds"], components().config.streams.max_wait_seconds))
            finally:
                release()
        return _shown(process)

    @blp.response(204)
    @error_responses(blp, 404)
    @blp.doc(operationId="deleteProcess")
    def delete(self, workstation_id, process_id):
        """Kill it if it runs (with everything it started) and forget it."""
        services().processes.forget(g.principal, workstation_id, process_id)


@blp.route("/<string:workstation_id>/processes/<string:process_id>/stdin", methods=["POST"])
@blp.arguments(ProcessStdinSchema)
@blp.response(204)
@error_responses(blp, 400, 404, 413, 415)
@blp.doc(operationId="writeProcessStdin")
def write_stdin(body, workstation_id, process_id):
    """Write to a running process's stdin, and close it with `eof`; 400 once it has ended."""
    data = body["data"].encode()
    if body["encoding"] == "base64":
        try:
            data = base64.b64decode(body["data"], validate=True)
        except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
            raise InvalidRequest("data is not base64.", details={"data": ["Not valid base64."]}) from None
    services().processes.write_stdin(g.principal, workstation_id, process_id, data, body["eof"])


@blp.route("/<string:workstation_id>/processes/<string:process_id>/signal", methods=["POST"])
@blp.arguments(ProcessSignalSchema)
@blp.response(200, ProcessSchema)
@error_responses(blp, 400, 404, 415)
@blp.doc(operationId="signalProcess")
def send_signal(body, workstation_id, process_id):
    """Send a signal to the process and everything it started; 400 once it has ended."""
    return _shown(services().processes.signal(g.principal, workstation_id, process_id, body["signal"]))


@blp.route("/<string:workstation_id>/processes/<string:process_id>/output")
@blp.doc(operationId="streamProcessOutput", responses=_SSE_DOC)
@error_responses(blp, 400, 404)
def output(workstation_id, process_id):
    """The process's stdout and stderr as Server-Sent Events, from the oldest byte kept (or after
    Last-Event-ID), live until it ends. Holds one of the account's stream slots."""
    process = services().processes.one(g.principal, workstation_id, process_id)
    seen = _last_event_id()
    settings = components().config.streams
    release = take_stream_slot()
    return streamed(
        _events(process, seen, settings.max_seconds, settings.keepalive_seconds), release, "text/event-stream"
    )


def _last_event_id() -> int:
    text = request.headers.get("Last-Event-ID", "0").strip() or "0"
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest("Last-Event-ID must be a byte offset, as an earlier event's id gave it.")
    return int(text)


def _events(process: BackgroundProcess, seen: int, max_seconds: float, keepalive: float):
    output: ProcessOutput = process.output
    yield OPENING
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        chunks, ended = output.after(seen, min(keepalive, max(deadline - time.monotonic(), 0)))
        for chunk in chunks:
            text, encoding = text_or_base64(chunk.data)
            yield sse_event(chunk.stream, {"data": text, "encoding": encoding}, chunk.end)
            seen = chunk.end
        if ended:
            ending = {"status": process.status, "exitCode": process.exit_code, "signal": process.signal}
            yield sse_event("exit", {**ending, "timedOut": process.timed_out})
            return
        if not chunks:
            yield KEEPALIVE
