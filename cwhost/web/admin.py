"""The operators' page (admin tokens only; anyone else gets 404, as the API's admin calls answer):
the host's capacity in use and free, its GPUs and who holds each, the accounts with their credits (set
and limits, both set here), and each type with whether its image is built."""

from __future__ import annotations

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from cwhost.accounts.limits import LIMIT_NAMES
from cwhost.api.account_schemas import CreditsSchema, LimitsPatchSchema
from cwhost.api.components import components, services
from cwhost.errors import NotFound, ServiceError
from cwhost.web.forms import field_errors, form_number
from cwhost.web.guard import signed_in
from drivers.base import GIB


def _require_admin() -> None:
    if not g.principal.admin:
        abort(404)


# The limits form's fields, as the API names them.
LIMIT_FIELDS = tuple(LimitsPatchSchema().fields[name].data_key or name for name in LIMIT_NAMES)
LIMIT_LABELS = ("Workstations", "Running cores", "Running memory (GB)", "Running GPUs", "Storage (GB)")
# Each limit's form field, label and attribute of AccountLimits, as the page lists them.
LIMIT_FORM = tuple(zip(LIMIT_FIELDS, LIMIT_LABELS, LIMIT_NAMES, strict=True))


def _page(errors=None, status=200, limits_refused=None):
    domain, config = services(), components().config
    host = domain.allocation.host_view(g.principal)
    types = [(wtype, domain.images.catalog.status(wtype)[0]) for wtype in config.types]
    page = render_template(
        "admin.html",
        host=host,
        storage_used_gb=domain.storage.used_bytes(None) / GIB,
        accounts=domain.accounts.views(),
        types=types,
        limit_fields=LIMIT_FORM,
        errors=errors or {},
        limits_refused=limits_refused,
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


@signed_in
def set_limits(name: str):
    """Every field is sent: a value sets the limit, an empty field gives it back to the configuration."""
    _require_admin()
    fields = {key: request.form.get(key, "").strip() for key in LIMIT_FIELDS}
    try:
        body = LimitsPatchSchema().load({key: form_number(raw) if raw else None for key, raw in fields.items()})
        services().accounts.set_limits(name, body)
    except ValidationError as exc:
        errors = {f"{name}/{key or 'limits'}": text for key, text in field_errors(exc.messages).items()}
        return _page(errors=errors, status=422, limits_refused=name)
    except NotFound:
        raise
    except ServiceError as exc:
        return _page(errors={f"{name}/limits": exc.message}, status=exc.status, limits_refused=name)
    return redirect(url_for("web.admin"))


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/admin", "admin", admin)
    blp.add_url_rule("/admin/accounts/<name>/credits", "set_credits", set_credits, methods=["POST"])
    blp.add_url_rule("/admin/accounts/<name>/limits", "set_limits", set_limits, methods=["POST"])
