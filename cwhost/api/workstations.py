"""/v1/workstations: thin views over WorkstationService."""

from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from cwhost.api.common import ApiBlueprint, error_responses, links
from cwhost.api.components import components, services
from cwhost.api.hooks import release_admission
from cwhost.api.idempotency import document as document_idempotency
from cwhost.api.idempotency import idempotent
from cwhost.api.query_args import (
    DeleteArgsSchema,
    StopArgsSchema,
    UsageArgsSchema,
    WorkstationGetArgsSchema,
    WorkstationListArgsSchema,
)
from cwhost.api.schemas import (
    WorkstationCreateSchema,
    WorkstationListSchema,
    WorkstationPatchSchema,
    WorkstationSchema,
    create_arguments,
    patch_arguments,
)
from cwhost.api.usage_schemas import UsageSchema
from cwhost.api.workstation_json import Presenter, json_response
from cwhost.ids import rfc3339_to_unix
from cwhost.model import Workstation
from cwhost.usage.ledger import PricedReport

blp = ApiBlueprint(
    "workstations", __name__, url_prefix="/v1/workstations", description="Workstations and their life cycle."
)


_ONE = "/v1/workstations/{workstation_id}"
# Where a workstation can go from an answer that shows it.
_NEXT = {
    "get": ("get", _ONE),
    "patch": ("patch", _ONE),
    "delete": ("delete", _ONE),
    "launch": ("post", _ONE + "/launch"),
    "stop": ("post", _ONE + "/stop"),
    "usage": ("get", _ONE + "/usage"),
    "logs": ("get", _ONE + "/logs"),
}


def _next(blp_status: int, *names: str):
    return links(blp, blp_status, "workstation_id", {name: _NEXT[name] for name in names})


def _shown(ws: Workstation):
    return json_response(Presenter().one(ws))


@blp.route("")
class Workstations(MethodView):
    @blp.arguments(WorkstationListArgsSchema, location="query")
    @blp.response(200, WorkstationListSchema)
    @error_responses(blp)
    @blp.doc(operationId="listWorkstations")
    def get(self, args):
        """List the caller's workstations, oldest first."""
        page = services().store.page(
            g.principal,
            limit=args["limit"],
            after=int(args["after"]) if "after" in args else None,
            status=args.get("status"),
            type_id=args.get("type"),
        )
        return json_response(Presenter().page(page.items, page.next_cursor))

    @idempotent
    @blp.arguments(WorkstationCreateSchema)
    @blp.response(201, WorkstationSchema, headers={"Location": {"schema": {"type": "string"}}})
    @error_responses(blp, 413, 415, 422)
    @document_idempotency(blp)
    @_next(201, *_NEXT)
    @blp.doc(operationId="createWorkstation")
    def post(self, body):
        """Create a workstation; it answers at once as `provisioning`, then becomes `stopped`."""
        ws = services().lifecycle.create(g.principal, **create_arguments(body))
        location = url_for("workstations.WorkstationById", workstation_id=ws.id)
        return _shown(ws), 201, {"Location": location}


@blp.route("/<string:workstation_id>")
class WorkstationById(MethodView):
    @blp.arguments(WorkstationGetArgsSchema, location="query")
    @blp.response(200, WorkstationSchema)
    @error_responses(blp, 400, 404, 429)
    @blp.doc(operationId="getWorkstation")
    def get(self, args, workstation_id):
        """One workstation; with `?wait=ready`, once it is ready or the wait is over.

        A wait holds none of the server's request slots: an account may have
        a few at once (more are 429), and the server a bounded number (more are
        503 with Retry-After).
        """
        domain = services()
        ws = domain.store.load(g.principal, workstation_id)
        if args.get("wait") == "ready":
            seconds = min(args["timeout_seconds"], components().config.readiness.max_wait_seconds)
            with domain.readiness.waits.held(g.principal.account_id):
                release_admission()
                domain.readiness.wait(ws.id, seconds)
            ws = domain.store.load(g.principal, workstation_id)
        return _shown(ws)

    @blp.arguments(WorkstationPatchSchema)
    @blp.response(200, WorkstationSchema)
    @error_responses(blp, 404, 413, 415, 422)
    @_next(200, "get", "launch", "delete", "usage")
    @blp.doc(operationId="updateWorkstation")
    def patch(self, body, workstation_id):
        """Rename or reconfigure a stopped workstation; storage may grow, never shrink."""
        return _shown(services().lifecycle.patch(g.principal, workstation_id, **patch_arguments(body)))

    @blp.arguments(DeleteArgsSchema, location="query")
    @blp.response(204)
    @error_responses(blp, 400, 404)
    @blp.doc(operationId="deleteWorkstation")
    def delete(self, args, workstation_id):
        """Delete a stopped or failed workstation with its disk (a running one too, with `force`); its usage
        stays readable."""
        services().lifecycle.delete(g.principal, workstation_id, force=args["force"])


@blp.route("/<string:workstation_id>/launch", methods=["POST"])
@idempotent
@blp.response(200, WorkstationSchema)
@error_responses(blp, 400, 404, 422)
@document_idempotency(blp)
@_next(200, "get", "stop", "usage", "logs")
@blp.doc(operationId="launchWorkstation")
def launch(workstation_id):
    """Boot a stopped workstation; 503 when the host lacks the GPU, cores or memory now."""
    return _shown(services().lifecycle.launch(g.principal, workstation_id))


@blp.route("/<string:workstation_id>/stop", methods=["POST"])
@idempotent
@blp.arguments(StopArgsSchema, location="query")
@blp.response(200, WorkstationSchema)
@error_responses(blp, 400, 404, 422)
@document_idempotency(blp)
@_next(200, "get", "patch", "launch", "delete", "usage")
@blp.doc(operationId="stopWorkstation")
def stop(args, workstation_id):
    """Stop a running workstation: ACPI power-off, forced after the configured timeout."""
    return _shown(services().lifecycle.stop(g.principal, workstation_id, force=args["force"]))


@blp.route("/<string:workstation_id>/usage")
@blp.arguments(UsageArgsSchema, location="query")
@blp.response(200, UsageSchema)
@error_responses(blp, 404)
@blp.doc(operationId="getWorkstationUsage")
def usage(args, workstation_id):
    """What the workstation used and what it cost, in total or in a window, optionally bucketed.

    Answers for deleted workstations too, so that their usage can still be billed.
    """
    domain = services()
    ws = domain.store.load(g.principal, workstation_id, include_deleted=True)
    report = domain.ledger.report(
        ws.id,
        args["from_"].timestamp() if "from_" in args else None,
        args["to"].timestamp() if "to" in args else None,
        args.get("granularity"),
    )
    pricing = components().config.pricing
    return PricedReport.of(report, pricing, created_at=rfc3339_to_unix(ws.created_at))
