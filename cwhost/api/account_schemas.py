"""An account as the API shows it, and the credits an operator sets."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from cwhost.accounts.credit import MAX_BALANCE_USD
from cwhost.accounts.limits import MAX_LIMIT
from cwhost.api.fields import JsonNumber, StrictSchema, UnixTime


class AccountLimitsSchema(ma.Schema):
    max_workstations = fields.Integer(data_key="maxWorkstations", required=True)
    max_running_cpu_cores = fields.Integer(data_key="maxRunningCpuCores", required=True)
    max_running_memory_gb = fields.Integer(data_key="maxRunningMemoryGB", required=True)
    max_running_gpus = fields.Integer(data_key="maxRunningGpus", required=True)
    max_storage_gb = fields.Integer(
        data_key="maxStorageGB",
        required=True,
        metadata={"description": "Workstations' disks (full storageGB) and workspaces' files together, GB."},
    )


class AccountUseSchema(ma.Schema):
    workstations = fields.Integer(required=True)
    running_cpu_cores = fields.Integer(data_key="runningCpuCores", required=True)
    running_memory_gb = fields.Integer(data_key="runningMemoryGB", required=True)
    running_gpus = fields.Integer(data_key="runningGpus", required=True)
    storage_gb = fields.Float(
        data_key="storageGB",
        required=True,
        metadata={"description": "Workstations' disks (full storageGB) and workspaces' files together, GB."},
    )


class AccountSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    balance_usd = fields.Float(
        data_key="balanceUSD",
        allow_none=True,
        required=True,
        metadata={"description": "Credit left; null when the account has no credit limit."},
    )
    spent_usd = fields.Float(
        data_key="spentUSD",
        required=True,
        metadata={"description": "The cost of all its workstations, as their usage reports it."},
    )
    burn_rate_usd_per_hour = fields.Float(
        data_key="burnRateUSDPerHour",
        required=True,
        metadata={"description": "What its workstations cost per hour now, the running ones fully busy."},
    )
    exhausted_at = UnixTime(
        data_key="exhaustedAt",
        allow_none=True,
        required=True,
        metadata={
            "description": "When the balance runs out at that rate; null if never, or not before the year 10000."
        },
    )
    limits = fields.Nested(AccountLimitsSchema, required=True)
    use = fields.Nested(AccountUseSchema, required=True)


class CreditsSchema(StrictSchema):
    balance_usd = JsonNumber(
        data_key="balanceUSD",
        required=True,
        allow_nan=False,
        validate=validate.Range(min=-MAX_BALANCE_USD, max=MAX_BALANCE_USD),
        metadata={"description": "The balance the account should have from now."},
    )


def _limit_setting(name: str) -> fields.Integer:
    return fields.Integer(
        data_key=name,
        strict=True,
        allow_none=True,
        validate=validate.Range(min=0, max=MAX_LIMIT),
        metadata={"description": "The account's new limit; null gives it back to the configuration's value."},
    )


class LimitsPatchSchema(StrictSchema):
    """The limits to change; those left out stay as they are."""

    max_workstations = _limit_setting("maxWorkstations")
    max_running_cpu_cores = _limit_setting("maxRunningCpuCores")
    max_running_memory_gb = _limit_setting("maxRunningMemoryGB")
    max_running_gpus = _limit_setting("maxRunningGpus")
    max_storage_gb = _limit_setting("maxStorageGB")

    @ma.validates_schema
    def _names_one(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Name at least one limit to set.", "_schema")
