"""What the usage endpoints answer: a workstation's usage, and an account's, in hours and USD."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from cwhost.api.fields import UnixTime


def _quantity(data_key: str, description: str) -> fields.Float:
    return fields.Float(data_key=data_key, required=True, metadata={"description": description})


class UsageFiguresSchema(ma.Schema):
    cpu_hours = _quantity("cpuHours", "CPU time (user + system) the VM process really used, in hours.")
    gpu_hours = _quantity("gpuHours", "Hours a GPU was attached to the running workstation.")
    gpu_utilized_hours = _quantity(
        "gpuUtilizedHours", "GPU hours weighted by utilisation, where the host's NVML sees the GPU; else 0."
    )
    memory_gb_hours = _quantity("memoryGBHours", "Resident memory of the VM process integrated over time, GB x h.")
    storage_gb_hours = _quantity("storageGBHours", "Provisioned disk times the time the workstation existed, GB x h.")
    cost_usd = fields.Float(data_key="costUSD", required=True)


class UsageBucketSchema(UsageFiguresSchema):
    start = UnixTime(required=True)


class UsageSchema(UsageFiguresSchema):
    last_updated = UnixTime(
        data_key="lastUpdated",
        allow_none=True,
        required=True,
        metadata={"description": "The last sample that saw the workstation; null if none yet."},
    )
    from_ = UnixTime(
        data_key="from",
        required=True,
        metadata={"description": "Start of the window; the workstation's creation when none was asked."},
    )
    to = UnixTime(required=True, metadata={"description": "End of the window; now when none was asked."})
    buckets = fields.List(fields.Nested(UsageBucketSchema), required=True)


class WorkstationUsageSchema(UsageFiguresSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    deleted = fields.Boolean(required=True, metadata={"description": "Deleted since; its usage stays billable."})


class AccountUsageSchema(UsageFiguresSchema):
    from_ = UnixTime(data_key="from", required=True, metadata={"description": "Start of the window."})
    to = UnixTime(required=True, metadata={"description": "End of the window; now when none was asked."})
    workstations = fields.List(fields.Nested(WorkstationUsageSchema), required=True)
    periods = fields.List(
        fields.Nested(UsageBucketSchema), required=True, metadata={"description": "With granularity: per period."}
    )
