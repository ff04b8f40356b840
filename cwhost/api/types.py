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
    data = []
    for wtype in page:
        missing = wtype.missing_files()
        data.append(
            {
                "id": wtype.id,
                "description": wtype.description,
                "configuration": {
                    "cpu_cores": wtype.cpu_cores,
                    "memory_gb": wtype.memory_gb,
                    "storage_gb": wtype.storage_gb,
                    "gpu": wtype.gpu,
                    "region": wtype.region or config.regions[0],
                },
                "idle_timeout_minutes": wtype.idle_timeout_minutes,
                "running_timeout_minutes": wtype.running_timeout_minutes,
                "image_present": not missing,
                "missing_files": missing,
            }
        )
    return list_body(data, page[-1].id if len(offered) > len(page) else None)
