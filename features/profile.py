"""Every demand feature of every series in one table: what the later stages (model set, buffer, policy) read."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl

from features.abc import abc_classes, annual_value
from features.lifecycle import life_cycle
from features.outliers import flag_outliers, outlier_summary
from features.sbc import demand_profile
from features.shape import shape_strength

if TYPE_CHECKING:
    from configs.schema import BuffercastConfig

ID = "unique_id"


def build_profiles(
    panel: pl.DataFrame, unit_cost: pl.DataFrame, *, as_of: dt.date, cfg: BuffercastConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(profiles, flagged panel): one row per series with SBC, life cycle / FSN, ABC, shape and outlier features,
    and the panel with `is_outlier` and `outlier_threshold` per point.

    `panel`: unique_id, ds, y from `to_periods`; `unit_cost`: unique_id, unit_cost (defaults already filled). The
    life-cycle windows of the config (`life_cycle.*_days`) are taken in whole periods of its frequency.
    Two steps: `sku_profiles` (each series from its own history: runs per partition of SKUs) and `with_abc_classes`
    (the ABC class ranks every series against the whole catalogue: runs once, over all partitions).
    """
    profiles, flagged = sku_profiles(panel, unit_cost, as_of=as_of, cfg=cfg)
    return with_abc_classes(profiles, cfg), flagged


def sku_profiles(
    panel: pl.DataFrame, unit_cost: pl.DataFrame, *, as_of: dt.date, cfg: BuffercastConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The per-series part of `build_profiles`: every feature but the ABC class, each from the series' own history."""
    sbc, lc = cfg.sbc, cfg.life_cycle
    flagged = flag_outliers(panel, k=cfg.outliers.k)
    profiles = (
        demand_profile(panel, adi_cutoff=sbc.adi_cutoff, cv2_cutoff=sbc.cv2_cutoff, min_periods=sbc.min_periods)
        .join(
            life_cycle(
                panel,
                new_periods=cfg.periods(lc.new_days),
                dead_periods=cfg.periods(lc.dead_days),
                dead_probability=lc.dead_probability,
                beyond_longest_gap=lc.beyond_longest_gap,
                window_periods=cfg.periods(lc.window_days),
                fast_from=lc.fast_from,
                slow_from=lc.slow_from,
            ).drop("periods_since_last_sale"),
            on=ID,
            how="left",
        )
        .join(annual_value(panel, unit_cost, as_of=as_of), on=ID, how="left")
        .join(shape_strength(panel, season_length=cfg.season_length), on=ID, how="left")
        .join(outlier_summary(flagged), on=ID, how="left")
        .sort(ID)
    )
    return profiles, flagged


def with_abc_classes(profiles: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """The whole-catalogue step of profiling: each series' cumulative share of the annual value of every series and its
    ABC class (`features.abc.abc_classes`), placed after `annual_value`."""
    ranked = abc_classes(profiles.select(ID, "annual_value"), a_share=cfg.abc.a_share, b_share=cfg.abc.b_share)
    columns = profiles.columns
    after = columns.index("annual_value") + 1
    return profiles.join(ranked.select(ID, "cumulative_share", "abc_class"), on=ID, how="left").select(
        *columns[:after], "cumulative_share", "abc_class", *columns[after:]
    )
