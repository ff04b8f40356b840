"""/v1/workstation-types: the ready-made workstations this server offers."""

from __future__ import annotations

from cwhost.api.common import ApiBlueprint, error_responses, list_body
from cwhost.api.components import components
from cwhost.api.query_args import TypeListArgsSchema
from cwhost.api.type_schemas import WorkstationTypeListSchema
from cwhost.images.catalog import ImageCatalog
from cwhost.images.types import WorkstationType

blp = ApiBlueprint("types", __name__, description="Workstation types: defaults and boot images.")


@blp.route("/v1/workstation-types")
@blp.arguments(TypeListArgsSchema, location="query")
@blp.response(200, WorkstationTypeListSchema)
@error_responses(blp, 400)
@blp.doc(operationId="listWorkstationTypes")
def workstation_types(args):
    """The types this server offers, their default configuration, and whether their images are present."""
    parts = components()
    catalog = parts.services.images.catalog
    after = args.get("after", "")
    offered = [t for t in parts.config.types if t.id > after]
    page = offered[: args["limit"]]
    return list_body([_shown(t, catalog) for t in page], page[-1].id if len(offered) > len(page) else None)


def _shown(wtype: WorkstationType, catalog: ImageCatalog) -> dict:
    built, missing = catalog.status(wtype)
    image = None
    if built is not None:
        versions = built.packages
        image = {
            "built_at": built.built_at,
            "size_bytes": built.size_bytes,
            "sha256": built.sha256,
            "packages": [{"name": name, "version": versions.get(name, "")} for name in built.manifest["requested"]],
        }
    return {
        "id": wtype.id,
        "description": wtype.description,
        "configuration": wtype.configuration,
        "idle_timeout_minutes": wtype.idle_timeout_minutes,
        "running_timeout_minutes": wtype.running_timeout_minutes,
        "packages": list(wtype.packages),
        "hardware": wtype.hardware,
        "software": wtype.software,
        "capabilities": wtype.capabilities,
        "image_present": not missing,
        "missing_files": missing,
        "image": image,
    }
