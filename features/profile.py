"""Every demand feature of every series in one table: what the later stages (model set, buffer, policy) read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from features.abc import abc_classes, annual_value
from features.lifecycle import life_cycle
from features.outliers import flag_outliers, outlier_summary
from features.sbc import demand_profile
from features.shape import shape_strength

ID = "unique_id"


@dataclass(frozen=True)
class ProfileSettings:
    adi_cutoff: float
    cv2_cutoff: float
    min_periods: int
    new_periods: int
    dead_periods: int
    window_periods: int
    fast_from: float
    slow_from: float
    a_share: float
    b_share: float
    season_length: int
    outlier_k: float


def build_profiles(
    panel: pl.DataFrame, unit_cost: pl.DataFrame, *, as_of: dt.date, s: ProfileSettings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(profiles, flagged panel): one row per series with SBC, life cycle / FSN, ABC, shape and outlier features,
    and the panel with `is_outlier` and `outlier_threshold` per point.

    `panel`: unique_id, ds, y from `to_periods`; `unit_cost`: unique_id, unit_cost (defaults already filled).
    """
    flagged = flag_outliers(panel, k=s.outlier_k)
    units_and_value = annual_value(panel, unit_cost, as_of=as_of)
    values = abc_classes(units_and_value, a_share=s.a_share, b_share=s.b_share).join(
        units_and_value.select(ID, "annual_units"), on=ID, how="left"
    )
    profiles = (
        demand_profile(panel, adi_cutoff=s.adi_cutoff, cv2_cutoff=s.cv2_cutoff, min_periods=s.min_periods)
        .join(
            life_cycle(
                panel,
                new_periods=s.new_periods,
                dead_periods=s.dead_periods,
                window_periods=s.window_periods,
                fast_from=s.fast_from,
                slow_from=s.slow_from,
            ).drop("periods_since_last_sale"),
            on=ID,
            how="left",
        )
        .join(values.select(ID, "annual_units", "annual_value", "cumulative_share", "abc_class"), on=ID, how="left")
        .join(shape_strength(panel, season_length=s.season_length), on=ID, how="left")
        .join(outlier_summary(flagged), on=ID, how="left")
        .sort(ID)
    )
    return profiles, flagged
