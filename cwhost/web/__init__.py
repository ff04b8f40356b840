"""The dashboard at /ui/: server-rendered pages over the same services as /v1, for people on the LAN.

It reaches the domain through ``cwhost.api.components`` and validates forms
with the API's own schemas, and never through an API view (an import-linter
contract keeps it so); /v1 never reads its session cookie.
"""

from __future__ import annotations

from flask import Flask, redirect

from cwhost.ids import unix_to_rfc3339
from cwhost.web import account, admin, auth, workspaces, workstations
from cwhost.web.guard import install_session_store, new_blueprint


def init_web(app: Flask) -> None:
    install_session_store(app)
    blp = new_blueprint()
    auth.register(blp)
    workstations.register(blp)
    account.register(blp)
    workspaces.register(blp)
    admin.register(blp)
    blp.add_app_template_filter(unix_to_rfc3339, "rfc3339")
    app.register_blueprint(blp)
    app.add_url_rule("/", "root", lambda: redirect("/ui/"))
