"""The operators' page (admin tokens only; anyone else gets 404, as the API's admin calls answer):
the host's capacity in use and free, its GPUs and who holds each, the accounts with their credits (set
here) and limits, and each type with whether its image is built."""

from __future__ import annotations

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from cwhost.api.account_schemas import CreditsSchema
from cwhost.api.components import components, services
from cwhost.errors import NotFound, ServiceError
from cwhost.web.forms import field_errors
from cwhost.web.guard import signed_in
from drivers.base import GIB


def _require_admin() -> None:
    if not g.principal.admin:
        abort(404)


def _page(errors=None, status=200):
    domain, config = services(), components().config
    host = domain.allocation.host_view(g.principal)
    types = [(wtype, domain.images.catalog.status(wtype)[0]) for wtype in config.types]
    page = render_template(
        "admin.html",
        host=host,
        storage_used_gb=domain.storage.used_bytes(None) / GIB,
        accounts=domain.accounts.views(),
        types=types,
        errors=errors or {},
    )
    return page, status


@signed_in
def admin():
    _require_admin()
    return _page()


@signed_in
def set_credits(name: str):
    _require_admin()
    raw = request.form.get("balanceUSD", "").strip()
    number: float | str = raw
    try:
        number = float(raw)
    except ValueError:
        pass  # the schema says what is wrong with it
    try:
        body = CreditsSchema().load({"balanceUSD": number})
        services().accounts.set_balance(name, body["balance_usd"])
    except ValidationError as exc:
        return _page(errors={name: field_errors(exc.messages).get("balanceUSD", "")}, status=422)
    except NotFound:
        raise  # no such account: 404, not a form
    except ServiceError as exc:
        return _page(errors={name: exc.message}, status=exc.status)
    return redirect(url_for("web.admin"))


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/admin", "admin", admin)
    blp.add_url_rule("/admin/accounts/<name>/credits", "set_credits", set_credits, methods=["POST"])
