"""Pure demand features: calendar, SBC profile, ABC value, life cycle and FSN, shape, outliers, XYZ (polars in, polars out)."""

from features.abc import abc_classes, annual_value
from features.calendar import detect_input_grain, period_days, series_keys, to_periods
from features.lifecycle import life_cycle
from features.outliers import cap_outliers, flag_outliers, outlier_summary
from features.profile import build_profiles
from features.sbc import demand_profile
from features.shape import shape_strength
from features.xyz import volatility_classes

__all__ = [
    "abc_classes", "annual_value", "build_profiles", "cap_outliers", "demand_profile", "detect_input_grain",
    "flag_outliers", "life_cycle", "outlier_summary", "period_days", "series_keys", "shape_strength", "to_periods",
    "volatility_classes",
]  # fmt: skip
