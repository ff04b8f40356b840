"""The account's page: balance, burn rate and when it runs out; SSH keys; usage by workstation per day, as a
chart and as CSV with the same figures."""

from __future__ import annotations

import csv
import io
import time

from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from cwhost.api.components import components, services
from cwhost.api.ssh_key_schemas import SshKeyCreateSchema
from cwhost.errors import ServiceError
from cwhost.ids import unix_to_rfc3339
from cwhost.web.figures import DAY, daily_by_workstation
from cwhost.web.forms import field_errors
from cwhost.web.guard import signed_in

# Keys shown on one page; the API pages further.
KEYS_SHOWN = 100
# The usage chart's spans: a month, or a year of days (uPlot draws 365 points a series at once).
USAGE_DAYS = {"month": 30, "year": 365}


def _span() -> str:
    span = request.args.get("span", "month")
    if span not in USAGE_DAYS:
        abort(404)
    return span


def _usage(now: float) -> dict:
    """The span's days, to the current whole second (so that a row's window can be asked of the API)."""
    end = float(int(now))
    start = end // DAY * DAY - (USAGE_DAYS[_span()] - 1) * DAY
    return daily_by_workstation(services(), components().config, g.principal.account_id, start, end)


def _page(key_errors=None, message=None, status=200):
    domain, now = services(), time.time()
    view = domain.accounts.view(g.principal.account_id)
    keys, _ = domain.ssh_keys.page(g.principal, KEYS_SHOWN, None)
    page = render_template(
        "account.html",
        view=view,
        exhausted_at=unix_to_rfc3339(view.exhausted_at) if view.exhausted_at else None,
        keys=keys,
        usage=_usage(now),
        span=_span(),
        form=request.form,
        key_errors=key_errors or {},
        message=message,
    )
    return page, status


@signed_in
def account():
    return _page()


@signed_in
def add_key():
    try:
        body = SshKeyCreateSchema().load(
            {"name": request.form.get("name", ""), "publicKey": request.form.get("publicKey", "")}
        )
        services().ssh_keys.add(g.principal, body["name"], body["public_key"])
    except ValidationError as exc:
        return _page(key_errors=field_errors(exc.messages), message="The key was not added.", status=422)
    except ServiceError as exc:
        return _page(key_errors={"publicKey": exc.message}, message="The key was not added.", status=exc.status)
    return redirect(url_for("web.account"))


@signed_in
def delete_key(key_id: str):
    services().ssh_keys.delete(g.principal, key_id)
    return redirect(url_for("web.account"))


@signed_in
def usage_csv():
    usage = _usage(time.time())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["from", "to", "workstationId", "name", "cpuHours", "memoryGBHours", "gpuHours", "costUSD"])
    for series in usage["workstations"]:
        for index, day in enumerate(usage["days"]):
            writer.writerow(
                [
                    unix_to_rfc3339(day),
                    unix_to_rfc3339(min(day + DAY, usage["end"])),
                    series["id"],
                    series["name"],
                    repr(series["cpuHours"][index]),
                    repr(series["memoryGBHours"][index]),
                    repr(series["gpuHours"][index]),
                    repr(series["costUSD"][index]),
                ]
            )
    headers = {"Content-Disposition": 'attachment; filename="cwhost-usage-by-day.csv"'}
    return Response(out.getvalue(), mimetype="text/csv", headers=headers)


def register(blp: Blueprint) -> None:
    blp.add_url_rule("/account", "account", account)
    blp.add_url_rule("/account/keys", "add_key", add_key, methods=["POST"])
    blp.add_url_rule("/account/keys/<key_id>/delete", "delete_key", delete_key, methods=["POST"])
    blp.add_url_rule("/account/usage.csv", "usage_csv", usage_csv)
