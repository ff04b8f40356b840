"""HTTP wiring only: the flask-smorest Api, its blueprints, error handlers and hooks.

What the views share is in ``cwhost.api.common``; the request hooks are in
``cwhost.api.hooks``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from cwhost.api import (
    accounts,
    audio,
    console,
    guest,
    guest_fs,
    hooks,
    logs,
    processes,
    recordings,
    ssh_keys,
    system,
    terminals,
    types,
    workspaces,
    workstations,
)
from cwhost.api.common import (
    AnyPathConverter,
    CwhostApi,
    FileIdConverter,
    StrictJsonProvider,
    handle_service_error,
    handle_unexpected,
)
from cwhost.errors import ServiceError
from cwhost.workspaces.paths import FILE_ID_PATTERN

# In the order the OpenAPI document lists them.
VIEWS = (
    workstations, system, accounts, types, logs, workspaces, ssh_keys, console, guest, processes, guest_fs,
    terminals, recordings, audio,
)  # fmt: skip


def init_api(app: Flask) -> Api:
    app.config.update(
        API_TITLE="cwhost",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Private cloud workstations on one GPU server. "
                "Every /v1/ call needs `Authorization: Bearer <token>`."
            },
            "security": [{"bearerAuth": []}],
            "components": {
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A token made with `cwhost keys create`. One revoked with "
                        "`cwhost keys revoke` is refused within one second.",
                    }
                }
            },
        },
    )
    app.json = StrictJsonProvider(app)
    api = CwhostApi(app)
    app.url_map.converters["anypath"] = AnyPathConverter
    app.url_map.converters["fileid"] = FileIdConverter
    api.register_converter(AnyPathConverter, lambda converter: {"type": "string"})
    api.register_converter(FileIdConverter, lambda converter: {"type": "string", "pattern": f"^{FILE_ID_PATTERN}$"})
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(Exception, handle_unexpected)
    hooks.install(app)
    for views in VIEWS:
        api.register_blueprint(views.blp)
    system.register_swagger_assets(app)
    console.register_novnc_assets(app)
    return api
