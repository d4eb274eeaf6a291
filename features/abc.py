"""Annual value and ABC class per series (docs/methods.md).

Silver, Pyke & Thomas (2017), ch. 2-3: rank items by annual value, cumulative share of the total.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from features._checks import require_columns, require_no_nulls


def one_year_before(as_of: dt.date) -> dt.date:
    """The same calendar day a year earlier; 29 February maps to 28 February."""
    try:
        return as_of.replace(year=as_of.year - 1)
    except ValueError:
        return as_of.replace(year=as_of.year - 1, day=28)


def annual_value(
    panel: pl.DataFrame,
    unit_cost: pl.DataFrame,
    *,
    as_of: dt.date,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """Units over the last 12 months x unit cost, one row per series of `panel`, sorted by `id_col`.

    The window is `one_year_before(as_of) < ds <= as_of`, on the period start `ds` (a weekly or monthly
    period is in the window when it starts in it). `unit_cost` has `id_col` and `unit_cost`, at most one
    row per series. Columns: `id_col`, `annual_units` (0.0 for a series with no sales in the window),
    `annual_value` (null where `unit_cost` has no row for the series: fill config defaults first).
    """
    require_columns(panel, [id_col, time_col, target_col], where="annual_value (panel)")
    require_columns(unit_cost, [id_col, "unit_cost"], where="annual_value (unit_cost)")
    duplicated = unit_cost.filter(pl.col(id_col).is_duplicated()).get_column(id_col).unique().sort()
    if duplicated.len():
        raise ValueError(
            f"annual_value (unit_cost): {duplicated.len()} series have more than one unit cost "
            f"(e.g. {duplicated.head(5).to_list()}); keep one row per {id_col!r}."
        )
    if isinstance(as_of, dt.datetime):
        as_of = as_of.date()
    start = one_year_before(as_of)

    in_window = (pl.col(time_col) > start) & (pl.col(time_col) <= as_of)
    units = panel.group_by(id_col).agg(pl.col(target_col).cast(pl.Float64).filter(in_window).sum().alias("annual_units"))
    return (
        units.join(unit_cost.select(id_col, pl.col("unit_cost").cast(pl.Float64)), on=id_col, how="left")
        .select(id_col, "annual_units", (pl.col("annual_units") * pl.col("unit_cost")).alias("annual_value"))
        .sort(id_col)
    )


def abc_classes(
    values: pl.DataFrame,
    *,
    a_share: float,
    b_share: float,
    id_col: str = "unique_id",
    value_col: str = "annual_value",
) -> pl.DataFrame:
    """ABC class per series: `id_col`, `value_col`, `cumulative_share`, `abc_class`, in rank order.

    Rank: `value_col` descending, ties by `id_col` ascending (deterministic). `cumulative_share` is the
    running total up to and including the series, over the grand total. `cumulative_share <= a_share`
    is A, `<= b_share` B, the rest C (docs/methods.md, 2.2: a series holding more than `a_share` of the
    value on its own is therefore not A). When the total is zero every series is C (share null).
    Null or negative values are an error.
    """
    require_columns(values, [id_col, value_col], where="abc_classes")
    require_no_nulls(values, value_col, id_col=id_col, where="abc_classes")
    negative = values.filter(pl.col(value_col) < 0)
    if negative.height:
        raise ValueError(
            f"abc_classes: {negative.height} series have a negative {value_col!r} "
            f"(e.g. {negative.get_column(id_col).head(5).to_list()}); annual value must be >= 0."
        )
    ranked = values.select(pl.col(id_col), pl.col(value_col).cast(pl.Float64)).sort([value_col, id_col], descending=[True, False])
    running = ranked.get_column(value_col).cum_sum().to_numpy()
    # The total is the last running sum, not a separate sum(): the last share is then exactly 1.0.
    total = float(running[-1]) if running.size else 0.0
    # numpy, not a polars expression: polars divides a float column by a scalar as a multiplication by
    # the reciprocal (pola-rs/polars#23741), so 95 / 100 gives 0.9500000000000001 and a series exactly
    # at a cut-off would fall on the wrong side. numpy's true division is correctly rounded.
    share = running / total if total > 0 else np.full(running.size, np.nan)
    ranked = ranked.with_columns(pl.Series("cumulative_share", share, dtype=pl.Float64).fill_nan(None))
    abc = (
        pl.when(pl.col("cumulative_share").is_null())
        .then(pl.lit("C"))
        .when(pl.col("cumulative_share") <= a_share)
        .then(pl.lit("A"))
        .when(pl.col("cumulative_share") <= b_share)
        .then(pl.lit("B"))
        .otherwise(pl.lit("C"))
    )
    return ranked.with_columns(abc.cast(pl.String).alias("abc_class"))
