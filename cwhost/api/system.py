"""Endpoints about the server itself: health, host capacity, and the API docs' assets."""

from __future__ import annotations

import swagger_ui_bundle
from flask import Flask, Response, g, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cwhost.api.common import ApiBlueprint, error_responses
from cwhost.api.components import services
from cwhost.api.schemas import HealthSchema, HostSchema
from cwhost.errors import Forbidden

blp = ApiBlueprint("system", __name__, description="The server: health and host capacity.")


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200, HealthSchema)
@blp.doc(operationId="getHealth")
def healthz():
    """Liveness; needs no token."""
    return {"status": "ok"}


@blp.route("/v1/host")
@blp.response(200, HostSchema)
@error_responses(blp)
@blp.doc(operationId="getHost")
def host():
    """Capacity of this server, the regions it serves, and its GPUs with who holds them."""
    return services().allocation.host_view(g.principal)


@blp.route("/metrics")
@blp.doc(
    summary="Prometheus metrics; needs an admin token.",
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    },
)
@error_responses(blp, 403)
@blp.doc(operationId="getMetrics")
def metrics():
    """Usage counters per workstation and the sampler's tick duration and lag."""
    if not g.principal.admin:
        raise Forbidden("Metrics show every account's workstations; they need an admin token.")
    body = generate_latest(services().metrics_registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def register_swagger_assets(app: Flask) -> None:
    """Serve Swagger UI's files ourselves: the LAN may have no route to a CDN."""

    @app.route("/docs/assets/<path:filename>")
    def swagger_assets(filename):
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)
