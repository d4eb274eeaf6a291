"""Pure demand features: calendar fill, SBC demand profile, ABC value classes (polars in, polars out)."""

from features.abc import abc_classes, annual_value, one_year_before
from features.calendar import last_complete_period, period_days, series_keys, to_periods
from features.sbc import DEMAND_CLASSES, PROFILE_COLUMNS, active_periods, demand_profile

__all__ = [
    "DEMAND_CLASSES",
    "PROFILE_COLUMNS",
    "abc_classes",
    "active_periods",
    "annual_value",
    "demand_profile",
    "last_complete_period",
    "one_year_before",
    "period_days",
    "series_keys",
    "to_periods",
]
