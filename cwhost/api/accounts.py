"""/v1/account (the caller's) and /v1/accounts/{name}/credits (operators)."""

from __future__ import annotations

from dataclasses import asdict

from flask import current_app, g

from cwhost.accounts import AccountView
from cwhost.api.common import ApiBlueprint, error_responses
from cwhost.api.schemas import AccountSchema, CreditsSchema
from cwhost.errors import Forbidden
from cwhost.ids import unix_to_rfc3339

blp = ApiBlueprint("accounts", __name__, description="Accounts: credit, burn rate, limits and use.")


def _accounts():
    return current_app.extensions["cwhost"].service.accounts


def present(view: AccountView) -> dict:
    return {
        "id": view.id,
        "name": view.name,
        "balance_usd": view.balance_usd,
        "spent_usd": view.spent_usd,
        "burn_rate_usd_per_hour": view.burn_rate_usd_per_hour,
        "exhausted_at": unix_to_rfc3339(view.exhausted_at) if view.exhausted_at else None,
        "limits": asdict(view.limits),
        "use": asdict(view.use),
    }


@blp.route("/v1/account")
@blp.response(200, AccountSchema)
@error_responses(blp)
@blp.doc(operationId="getAccount")
def account():
    """The caller's account: balance, burn rate, when the balance runs out, limits and use."""
    return present(_accounts().view(g.principal.account_id))


@blp.route("/v1/accounts/<string:name>/credits", methods=["PUT"])
@blp.arguments(CreditsSchema)
@blp.response(200, AccountSchema)
@error_responses(blp, 403, 404, 415)
@blp.doc(operationId="setAccountCredits")
def set_credits(body, name):
    """Set an account's balance (admin tokens only)."""
    if not g.principal.admin:
        raise Forbidden("Setting credits needs an admin token.")
    return present(_accounts().set_balance(name, body["balance_usd"]))
