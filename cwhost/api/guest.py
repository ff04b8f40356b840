"""A program's way into a running workstation: run a command, see the screen."""

from __future__ import annotations

from flask import Response, g

from cwhost.api.common import ApiBlueprint, error_responses, text_or_base64
from cwhost.api.components import services
from cwhost.api.guest_schemas import ExecRequestSchema, ExecResultSchema, InputResultSchema, InputSchema
from drivers.base import ExecResult

blp = ApiBlueprint(
    "guest", __name__, url_prefix="/v1/workstations", description="Commands and the screen of a running workstation."
)


def _actions():
    return services().guest_actions


def _answer(result: ExecResult) -> dict:
    stdout, stdout_encoding = text_or_base64(result.stdout)
    stderr, stderr_encoding = text_or_base64(result.stderr)
    return {
        "exit_code": result.exit_code,
        "stdout": stdout,
        "stdout_encoding": stdout_encoding,
        "stderr": stderr,
        "stderr_encoding": stderr_encoding,
        "duration_ms": result.duration_ms,
        "truncated": result.truncated,
        "timed_out": result.timed_out,
    }


@blp.route("/<string:workstation_id>/exec", methods=["POST"])
@blp.arguments(ExecRequestSchema)
@blp.response(200, ExecResultSchema)
@error_responses(blp, 404, 413, 415, 422, 503)
@blp.doc(operationId="execInWorkstation")
def exec_command(body, workstation_id):
    """Run a command in the running guest through its agent (no SSH, no network); 503 while the agent is not up."""
    result = _actions().run(
        g.principal,
        workstation_id,
        command=body["command"],
        stdin=body["stdin"].encode(),
        env=body["env"],
        working_directory=body.get("working_directory"),
        timeout_seconds=body["timeout_seconds"],
    )
    return _answer(result)


@blp.route("/<string:workstation_id>/input", methods=["POST"])
@blp.arguments(InputSchema)
@blp.response(200, InputResultSchema)
@error_responses(blp, 404, 413, 415, 422, 503)
@blp.doc(operationId="sendWorkstationInput")
def send_input(body, workstation_id):
    """Type and point on the VM's display, in screenshot coordinates: keys, text, move, click, double_click,
    drag, scroll. Every action is checked before any is sent."""
    _actions().send_input(g.principal, workstation_id, body["actions"])
    return {"sent": len(body["actions"])}


@blp.route("/<string:workstation_id>/screenshot")
@blp.doc(
    operationId="getWorkstationScreenshot",
    responses={200: {"description": "The VM's display.", "content": {"image/png": {"schema": {"type": "string"}}}}},
)
@error_responses(blp, 404, 422, 503)
def screenshot(workstation_id):
    """The VM's display as PNG, taken by the hypervisor: it needs nothing inside the guest."""
    png = _actions().screenshot(g.principal, workstation_id)
    return Response(png, content_type="image/png", headers={"Cache-Control": "no-store"})
