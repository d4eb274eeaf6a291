"""What the forecasting stage reads per series, from the profiles and the SKU attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from configs.schema import BuffercastConfig

ID = "unique_id"


def forecast_inputs(profiles: pl.DataFrame, attrs: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """What the forecasting stage needs per series: class, history length, lead time and review period in periods,
    whether to skip the backtest (new products) and whether seasonal models make sense (seasonal strength)."""
    period_days, review_period_days = cfg.period_days, cfg.defaults.review_period_days
    return profiles.select(
        ID,
        "demand_class",
        "n_periods",
        skip_backtest=pl.col("life_cycle") == "new",
        seasonal=pl.col("seasonal_strength").fill_null(0.0) >= cfg.shape.seasonal_from,
        # A SKU too short to measure its trend keeps the trend models (null strength: not known to be flat).
        trended=pl.col("trend_strength").fill_null(1.0) >= cfg.shape.trend_from,
    ).join(
        attrs.select(
            ID,
            lead_time_periods=pl.col("lead_time_days") / period_days,
            # At least one period: orders are placed at most once a period, and the order-up-to level must cover it.
            review_periods=pl.lit(max(review_period_days / period_days, 1.0)),
        ),
        on=ID,
        how="left",
    )
