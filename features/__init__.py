"""Pure demand features: calendar fill, SBC demand profile, ABC value classes (polars in, polars out)."""

from features.abc import abc_classes, annual_value
from features.calendar import period_days, series_keys, to_periods
from features.sbc import demand_profile

__all__ = ["abc_classes", "annual_value", "demand_profile", "period_days", "series_keys", "to_periods"]
