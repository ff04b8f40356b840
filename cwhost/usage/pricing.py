"""What an hour of each metered resource costs: the [pricing] section of the configuration.

It lives with usage, which prices every figure it reports; the configuration
reads it from the file like any other section.
"""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import fields
from marshmallow.validate import Length, Range

from cwhost.settings import setting


@dataclass(frozen=True)
class Pricing:
    """Rates in USD; a GPU model without its own rate costs ``default_gpu_hour_usd``."""

    cpu_hour_usd: float = setting(0.02, validate=Range(0))
    memory_gb_hour_usd: float = setting(0.005, validate=Range(0))
    storage_gb_hour_usd: float = setting(0.0002, validate=Range(0))
    default_gpu_hour_usd: float = setting(1.0, validate=Range(0))
    gpu_hour_usd: tuple[tuple[str, float], ...] = setting(
        (),
        field=fields.Dict(keys=fields.String(validate=Length(1, 128)), values=fields.Float(validate=Range(0))),
        convert=lambda rates: tuple(sorted(rates.items())),
    )

    def gpu_rate(self, model: str) -> float:
        return dict(self.gpu_hour_usd).get(model, self.default_gpu_hour_usd)
