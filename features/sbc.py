"""Demand profile and Syntetos-Boylan-Croston demand class per series (docs/methods.md).

Syntetos, Boylan & Croston (2005), JORS 56: ADI = active periods / non-zero periods, CV2 = squared
coefficient of variation of the non-zero demand sizes; cut-offs 1.32 and 0.49.
"""

from __future__ import annotations

import polars as pl

from features._checks import require_columns, require_no_nulls

DEMAND_CLASSES = ("smooth", "erratic", "intermittent", "lumpy", "insufficient_history")

PROFILE_COLUMNS = (
    "n_periods",
    "n_nonzero",
    "adi",
    "cv2",
    "mean_demand",
    "std_demand",
    "first_sale",
    "last_sale",
    "periods_since_last_sale",
    "demand_class",
)


def active_periods(panel: pl.DataFrame, *, id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y") -> pl.DataFrame:
    """The panel without each series' leading zeros (rows before its first non-zero value).

    `to_periods` already drops them; this makes the profile right for panels built any other way too
    (e.g. utilsforecast `fill_gaps` with a global start).
    """
    started = (pl.col(target_col) != 0).cum_sum().over(id_col, order_by=time_col) > 0
    return panel.filter(started)


def demand_profile(
    panel: pl.DataFrame,
    *,
    adi_cutoff: float,
    cv2_cutoff: float,
    min_periods: int,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """One row per series of `panel`, sorted by `id_col`.

    Columns: `id_col`; `n_periods` (active periods: first non-zero to the end of the panel); `n_nonzero`;
    `adi` (n_periods / n_nonzero; null with no non-zero period); `cv2` ((std / mean)^2 of the non-zero
    sizes, ddof=1, correctly rounded for whole units; 0.0 with one non-zero period, null with none);
    `mean_demand` and `std_demand` (over all active periods, zeros included; std ddof=1, 0.0 with one
    period); `first_sale`, `last_sale` (dates of the first and last non-zero period);
    `periods_since_last_sale` (active periods after `last_sale`); `demand_class`.

    `demand_class` is `insufficient_history` when n_periods < `min_periods` or n_nonzero < 2, else
    smooth / erratic / intermittent / lumpy. A value exactly at a cut-off is on the higher side
    (ADI >= `adi_cutoff` is intermittent or lumpy, CV2 >= `cv2_cutoff` is erratic or lumpy).

    A series whose values are all zero gets a row with n_periods = n_nonzero = 0, nulls elsewhere and
    class `insufficient_history`. Values are expected non-negative (validated sales).
    """
    require_columns(panel, [id_col, time_col, target_col], where="demand_profile")
    require_no_nulls(panel, target_col, id_col=id_col, where="demand_profile")
    y = pl.col(target_col).cast(pl.Float64)
    nonzero = y != 0
    sizes = y.filter(nonzero)

    stats = (
        active_periods(panel, id_col=id_col, time_col=time_col, target_col=target_col)
        .group_by(id_col)
        .agg(
            pl.len().cast(pl.Int64).alias("n_periods"),
            nonzero.sum().cast(pl.Int64).alias("n_nonzero"),
            sizes.sum().alias("_size_sum"),
            (sizes * sizes).sum().alias("_size_sum_sq"),
            (sizes.min() == sizes.max()).alias("_size_constant"),
            y.mean().alias("mean_demand"),
            y.std(ddof=1).alias("std_demand"),
            pl.col(time_col).filter(nonzero).min().alias("first_sale"),
            pl.col(time_col).filter(nonzero).max().alias("last_sale"),
            (pl.col(time_col) > pl.col(time_col).filter(nonzero).max()).sum().cast(pl.Int64).alias("periods_since_last_sale"),
        )
    )
    n_periods, n_nonzero = pl.col("n_periods"), pl.col("n_nonzero")
    # CV2 = var / mean^2 = n (n Q - S^2) / ((n - 1) S^2), S and Q the sum and sum of squares of the n
    # non-zero sizes. For whole-unit sizes S, Q and n Q - S^2 are exact integers, so CV2 is the true
    # ratio rounded once: sizes whose CV2 is exactly 0.49 (e.g. 2, 4, 7, 22, 25, 28, 33, 39) give 0.49,
    # where (std / mean)^2 gives 0.48999999999999994 and polars' group var / mean^2 0.49000000000000005,
    # either putting the series on the wrong side of the cut-off. The cancellation in n Q - S^2 only
    # matters for CV2 near 0 (far from any cut-off); constant sizes are set to exactly 0.
    # Every division is column / column: polars turns division by a broadcast scalar into a
    # multiplication by its reciprocal (pola-rs/polars#23741), which is not correctly rounded.
    n = n_nonzero.cast(pl.Float64)
    total, total_sq = pl.col("_size_sum"), pl.col("_size_sum_sq")
    ratio = (n * (n * total_sq - total * total)) / ((n - 1.0) * (total * total))
    cv2 = (
        pl.when(n_nonzero == 0)
        .then(None)
        .when((n_nonzero == 1) | pl.col("_size_constant"))
        .then(0.0)
        .otherwise(pl.max_horizontal(ratio, pl.lit(0.0)))
    )
    adi = pl.when(n_nonzero > 0).then(n_periods.cast(pl.Float64) / n_nonzero.cast(pl.Float64))

    series = panel.select(pl.col(id_col)).unique()
    profile = (
        series.join(stats, on=id_col, how="left")
        .with_columns(n_periods.fill_null(0), n_nonzero.fill_null(0))
        .with_columns(
            adi.cast(pl.Float64).alias("adi"),
            cv2.cast(pl.Float64).alias("cv2"),
            pl.when(n_periods == 1).then(0.0).otherwise(pl.col("std_demand")).alias("std_demand"),
        )
    )
    high_adi = pl.col("adi") >= adi_cutoff
    high_cv2 = pl.col("cv2") >= cv2_cutoff
    demand_class = (
        pl.when((n_periods < min_periods) | (n_nonzero < 2))
        .then(pl.lit("insufficient_history"))
        .when(high_adi & high_cv2)
        .then(pl.lit("lumpy"))
        .when(high_adi)
        .then(pl.lit("intermittent"))
        .when(high_cv2)
        .then(pl.lit("erratic"))
        .otherwise(pl.lit("smooth"))
    )
    return profile.with_columns(demand_class.cast(pl.String).alias("demand_class")).select(id_col, *PROFILE_COLUMNS).sort(id_col)
