"""From validated sales rows to the demand panel: one row per series and period, gaps as explicit zeros.

docs/methods.md: a series starts at its first non-zero sale (leading zeros are not demand)
and ends at the as-of date (trailing zeros ARE demand). A weekly or monthly bucket that the as-of date cuts
short is dropped, so every period in the panel covers the same number of days of history.

Sales already at weekly or monthly grain (one row per series and period, dated e.g. every Monday, every
Sunday or the 1st of each month) are different: each date stands for its whole period, so the period that
contains the as-of date is complete and kept (`input_grain="period"`, detected by `detect_input_grain`).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, TypeVar

import polars as pl

from features._checks import require_columns, require_no_nulls

Frequency = Literal["D", "W", "M"]
InputGrain = Literal["auto", "daily", "period"]

WEEKDAYS: dict[str, int] = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
"""ISO weekday numbers (polars `dt.weekday()`: Monday 1 .. Sunday 7)."""

_INTERVAL: dict[str, str] = {"D": "1d", "W": "1w", "M": "1mo"}
_SALES_COLUMNS = ("sku_id", "date", "quantity")


def period_days(freq: Frequency) -> float:
    """Days in one period: 1 (D), 7 (W), 365.25 / 12 (M, the mean Gregorian month)."""
    days = {"D": 1.0, "W": 7.0, "M": 365.25 / 12}
    if freq not in days:
        raise ValueError(f"period_days: freq={freq!r} is not one of {sorted(days)}")
    return days[freq]


#: Joins sku_id and location_id into the internal series key. The ASCII unit separator, not a printable
#: character: with "@", SKU "A@1" without a location and SKU "A" at location "1" would be one series.
KEY_SEPARATOR = "\x1f"


def _unique_id(sku_col: str = "sku_id", location_col: str = "location_id") -> pl.Expr:
    """`sku_id` when the location is null, else `sku_id`, KEY_SEPARATOR, `location_id`."""
    return (
        pl.when(pl.col(location_col).is_null())
        .then(pl.col(sku_col))
        .otherwise(pl.concat_str([pl.col(sku_col), pl.lit(KEY_SEPARATOR), pl.col(location_col)]))
        .cast(pl.String)
    )


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


def with_location(sales: _Frame) -> _Frame:
    """The frame (eager or lazy) with a `location_id` column (all null when the input has none)."""
    if "location_id" in sales.collect_schema().names():
        return sales
    return sales.with_columns(location_id=pl.lit(None, dtype=pl.String))


def series_keys(sales: pl.DataFrame) -> pl.DataFrame:
    """The distinct series of a sales frame: `unique_id`, `sku_id`, `location_id`, sorted by `unique_id`.

    `unique_id` is `sku_id` where `location_id` is null, else `sku_id@location_id`. A frame without a
    `location_id` column is treated as all-null locations.
    """
    require_columns(sales, ["sku_id"], where="series_keys")
    return (
        with_location(sales)
        .select(
            _unique_id().alias("unique_id"),
            pl.col("sku_id").cast(pl.String),
            pl.col("location_id").cast(pl.String),
        )
        .unique()
        .sort("unique_id")
    )


def _week_start_number(week_start: str) -> int:
    key = week_start.strip().lower()
    if key not in WEEKDAYS:
        raise ValueError(f"to_periods: week_start={week_start!r} is not one of {list(WEEKDAYS)}")
    return WEEKDAYS[key]


def _period_start(date: pl.Expr, freq: Frequency, start_weekday: int) -> pl.Expr:
    """The first day of the period containing `date`."""
    if freq == "D":
        return date
    if freq == "W":
        # Days back to the most recent `week_start`; polars `%` is a floored modulo, so this is in 0..6.
        return date - pl.duration(days=(date.dt.weekday().cast(pl.Int32) - start_weekday) % 7)
    return date.dt.month_start()


def _period_start_date(day: dt.date, freq: Frequency, week_start: str) -> dt.date:
    """The first day of the period containing `day` (the Python-date twin of `_period_start`)."""
    if freq == "D":
        return day
    if freq == "W":
        return day - dt.timedelta(days=(day.isoweekday() - _week_start_number(week_start)) % 7)
    return day.replace(day=1)


def detect_input_grain(dates: pl.Series, freq: Frequency) -> Literal["daily", "period"]:
    """Whether sales `dates` look like one row per period ("period") or like daily records ("daily").

    "period" when there are at least 2 distinct dates and, for W, they all fall on one weekday (week
    starts, week ends or any other fixed weekday), or, for M, they all fall on one day of the month or
    all on the last day of their month. Anything else, and freq D, is "daily". Nulls are ignored.
    A weekly or monthly reading of genuinely daily data needs many days on one weekday or day of the
    month and none elsewhere, which a real daily history of more than one series practically never has;
    pass `input_grain` to `to_periods` explicitly when it does.
    """
    if freq not in _INTERVAL:
        raise ValueError(f"detect_input_grain: freq={freq!r} is not one of {list(_INTERVAL)}")
    if freq == "D":
        return "daily"
    days = dates.cast(pl.Date).drop_nulls().unique()
    if days.len() < 2:
        return "daily"
    if freq == "W":
        one_position = days.dt.weekday().n_unique() == 1
    else:
        one_position = days.dt.day().n_unique() == 1 or bool((days == days.dt.month_end()).all())
    return "period" if one_position else "daily"


def last_complete_period(as_of: dt.date, freq: Frequency, *, week_start: str = "mon") -> dt.date:
    """Start of the last period whose last day is on or before `as_of`.

    D: `as_of` itself. W: the week containing `as_of` if `as_of` is its last day, else the week before.
    M: the month containing `as_of` if `as_of` is its last day, else the month before.
    """
    if freq not in _INTERVAL:
        raise ValueError(f"last_complete_period: freq={freq!r} is not one of {list(_INTERVAL)}")
    if freq == "D":
        return as_of
    if freq == "W":
        start = as_of - dt.timedelta(days=(as_of.isoweekday() - _week_start_number(week_start)) % 7)
        last_day = start + dt.timedelta(days=6)
        return start if last_day <= as_of else start - dt.timedelta(days=7)
    start = as_of.replace(day=1)
    next_month = (start + dt.timedelta(days=32)).replace(day=1)
    if next_month - dt.timedelta(days=1) <= as_of:
        return start
    return (start - dt.timedelta(days=1)).replace(day=1)


def to_periods(
    sales: pl.DataFrame,
    *,
    freq: Frequency,
    as_of: dt.date,
    week_start: str,
    input_grain: InputGrain,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """The demand panel `unique_id`, `ds` (period start, Date), `y` (Float64), sorted by `unique_id`, `ds`.

    - Rows (order lines) are summed per series and period; dates after `as_of` are ignored.
    - D: days; W: weeks starting on `week_start` (mon..sun); M: calendar months, `ds` the first of the month.
    - The last period is the last COMPLETE one (`last_complete_period`): a week or month that `as_of`
      cuts short is dropped, sales in it included, so it cannot look like a drop in demand.
    - Every period from the series' first non-zero period to the last period is present, gaps as 0.0
      (leading zeros dropped, trailing zeros kept: docs/methods.md). "Non-zero" is judged on the period sum.
    - A series with no non-zero period up to the last complete period has no rows.
    - Quantities are expected non-negative (returns quarantined or netted upstream, docs/methods.md).

    `input_grain` says what one input row stands for (W and M only; D is always daily):
    - "daily": a day's sales (the rules above).
    - "period": the whole W or M period its date falls in (weekly or monthly data, dated on any fixed
      weekday or day of the month: a Sunday-dated week-ending row counts for the `week_start` week that
      contains that Sunday). The period containing `as_of` is then complete and kept, and rows are cut
      by period, not by day: a row in that period counts even if dated after `as_of`; later periods do not.
    - "auto" (default): `detect_input_grain` on the `date` column.

    The input is validated sales (`sku_id`, `location_id`, `date`, `quantity`); a missing `location_id`
    column means all-null locations.
    """
    require_columns(sales, _SALES_COLUMNS, where="to_periods")
    if freq not in _INTERVAL:
        raise ValueError(f"to_periods: freq={freq!r} is not one of {list(_INTERVAL)}")
    if input_grain not in ("auto", "daily", "period"):
        raise ValueError(f"to_periods: input_grain={input_grain!r} is not one of ['auto', 'daily', 'period']")
    start_weekday = _week_start_number(week_start)
    if isinstance(as_of, dt.datetime):
        as_of = as_of.date()

    rows = with_location(sales).select(
        _unique_id().alias(id_col),
        pl.col("date").cast(pl.Date).alias("_date"),
        pl.col("quantity").cast(pl.Float64).alias(target_col),
    )
    require_no_nulls(rows, "_date", id_col=id_col, where="to_periods (column 'date')")
    require_no_nulls(rows, target_col, id_col=id_col, where="to_periods (column 'quantity')")

    grain = detect_input_grain(rows.get_column("_date"), freq) if input_grain == "auto" else input_grain
    if freq != "D" and grain == "period":
        # Each row is a whole period: the one containing as_of is complete, and the cut is by period.
        last_ds = _period_start_date(as_of, freq, week_start)
        in_history = pl.lit(True)
    else:
        last_ds = last_complete_period(as_of, freq, week_start=week_start)
        in_history = pl.col("_date") <= as_of

    # Lazy: the grid join is most of the cost on big panels and the optimiser plans it better.
    sums = (
        rows.lazy()
        .filter(in_history)
        .with_columns(_period_start(pl.col("_date"), freq, start_weekday).alias(time_col))
        .filter(pl.col(time_col) <= last_ds)
        .group_by(id_col, time_col)
        .agg(pl.col(target_col).sum())
    )
    grid = (
        sums.filter(pl.col(target_col) != 0)
        .group_by(id_col)
        .agg(pl.col(time_col).min())
        .with_columns(pl.date_ranges(pl.col(time_col), pl.lit(last_ds), _INTERVAL[freq]).alias(time_col))
        .explode(time_col)
    )
    return (
        grid.join(sums, on=[id_col, time_col], how="left")
        .select(
            pl.col(id_col).cast(pl.String),
            pl.col(time_col).cast(pl.Date),
            pl.col(target_col).fill_null(0.0).cast(pl.Float64),
        )
        .sort(id_col, time_col)
        .collect()
    )
