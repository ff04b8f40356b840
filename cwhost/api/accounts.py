"""/v1/account (the caller's) and /v1/accounts/{name}/credits (operators)."""

from __future__ import annotations

from flask import g

from cwhost.api.account_schemas import AccountSchema, CreditsSchema, LimitsPatchSchema
from cwhost.api.common import ApiBlueprint, error_responses
from cwhost.api.components import components, services
from cwhost.api.query_args import AccountUsageArgsSchema
from cwhost.api.usage_schemas import AccountUsageSchema
from cwhost.errors import Forbidden
from cwhost.usage.account_report import PricedAccountUsage

blp = ApiBlueprint("accounts", __name__, description="Accounts: credit, burn rate, limits and use.")


def _accounts():
    return services().accounts


@blp.route("/v1/account")
@blp.response(200, AccountSchema)
@error_responses(blp)
@blp.doc(operationId="getAccount")
def account():
    """The caller's account: balance, burn rate, when the balance runs out, limits and use."""
    return _accounts().view(g.principal.account_id)


@blp.route("/v1/accounts/<string:name>/credits", methods=["PUT"])
@blp.arguments(CreditsSchema)
@blp.response(200, AccountSchema)
@error_responses(blp, 403, 404, 415)
@blp.doc(operationId="setAccountCredits")
def set_credits(body, name):
    """Set an account's balance (admin tokens only)."""
    if not g.principal.admin:
        raise Forbidden("Setting credits needs an admin token.")
    return _accounts().set_balance(name, body["balance_usd"])


@blp.route("/v1/accounts/<string:name>/limits", methods=["PATCH"])
@blp.arguments(LimitsPatchSchema)
@blp.response(200, AccountSchema)
@error_responses(blp, 403, 404, 415)
@blp.doc(operationId="setAccountLimits")
def set_limits(body, name):
    """Set some of an account's limits (admin tokens only); null gives one back to the configuration."""
    if not g.principal.admin:
        raise Forbidden("Setting limits needs an admin token.")
    return _accounts().set_limits(name, body)


@blp.route("/v1/account/usage")
@blp.arguments(AccountUsageArgsSchema, location="query")
@blp.response(200, AccountUsageSchema)
@error_responses(blp, 400)
@blp.doc(operationId="getAccountUsage")
def account_usage(args):
    """The account's usage and cost over a window, per workstation (deleted ones too) and per day or month."""
    parts = components()
    usage = parts.services.account_usage.report(
        g.principal.account_id,
        args["from_"].timestamp() if "from_" in args else None,
        args["to"].timestamp() if "to" in args else None,
        args.get("granularity"),
    )
    return PricedAccountUsage.of(usage, parts.config.pricing)
