"""HTTP wiring only: the flask-smorest Api, its blueprints, error handlers and hooks.

What the views share is in ``cwhost.api.common``; the request hooks are in
``cwhost.api.hooks``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from cwhost.api import (
    accounts,
    console,
    guest,
    guest_fs,
    hooks,
    logs,
    processes,
    ssh_keys,
    system,
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
    api.register_blueprint(workstations.blp)
    api.register_blueprint(system.blp)
    api.register_blueprint(accounts.blp)
    api.register_blueprint(types.blp)
    api.register_blueprint(logs.blp)
    api.register_blueprint(workspaces.blp)
    api.register_blueprint(ssh_keys.blp)
    api.register_blueprint(console.blp)
    api.register_blueprint(guest.blp)
    api.register_blueprint(processes.blp)
    api.register_blueprint(guest_fs.blp)
    system.register_swagger_assets(app)
    console.register_novnc_assets(app)
    return api
