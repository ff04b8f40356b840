"""/v1/workstation-types: the ready-made workstations this server offers."""

from __future__ import annotations

from flask import current_app

from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.query_args import TypeListArgsSchema
from cwhost.api.schemas import (
    WorkstationTypeListSchema,
)

blp = ApiBlueprint("types", __name__, description="Workstation types: defaults and boot images.")


@blp.route("/v1/workstation-types")
@blp.arguments(TypeListArgsSchema, location="query")
@blp.response(200, WorkstationTypeListSchema)
@error_responses(blp, 400)
@blp.doc(operationId="listWorkstationTypes")
def workstation_types(args):
    """The types this server offers, their default configuration, and whether their images are present."""
    config = current_app.extensions["cwhost"].config
    after = args.get("after", "")
    offered = [t for t in config.types if t.id > after]
    page = offered[: args["limit"]]
    return list_body(page, page[-1].id if len(offered) > len(page) else None)
