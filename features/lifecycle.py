"""Life-cycle stage and FSN (fast / slow / non-moving) class per series.

docs/methods.md: a SKU with no sale in the last N periods is an obsolescence
risk. FSN analysis classes items by how often they move (share of recent periods with a sale); Silver,
Pyke & Thomas (2017), ch. 2 (slow-moving and obsolete items) and ch. 4 (new items without history).
"""

from __future__ import annotations

import polars as pl

from features._checks import require_columns, require_no_nulls, require_non_negative
from features.sbc import active_periods

FSN_CLASSES = ("F", "S", "N")
LIFE_CYCLES = ("dead", "new", "slow_moving", "active")

LIFE_CYCLE_COLUMNS = (
    "periods_since_first_sale",
    "periods_since_last_sale",
    "movement_frequency",
    "fsn_class",
    "life_cycle",
)


def _require_positive_int(value: object, name: str) -> None:
    # bool is an int subclass; `True` periods is a caller's mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"life_cycle: {name}={value!r} must be a positive whole number of periods (>= 1).")


def life_cycle(
    panel: pl.DataFrame,
    *,
    new_periods: int,
    dead_periods: int,
    dead_probability: float,
    window_periods: int,
    beyond_longest_gap: bool = False,
    fast_from: float,
    slow_from: float,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """One row per series of `panel`, sorted by `id_col`: its age, recency, movement and life-cycle stage.

    The panel is what `features.calendar.to_periods` returns (one row per period, explicit zeros, every
    series ending on the same last period); only the panel as given is used. A series' history starts at
    its first non-zero period: leading zeros, if a panel built some other way has them, are ignored
    (docs/methods.md), so they never change the result.

    Columns: `id_col`;
    - `periods_since_first_sale` (Int64): periods from the first non-zero one to the last, both included
      (for a `to_periods` panel, the series' length);
    - `periods_since_last_sale` (Int64): periods after the last non-zero one (0: it sold in the last period);
    - `movement_frequency` (Float64): share of the last `window_periods` periods with y > 0, or of all
      its periods when the series is younger than the window;
    - `fsn_class`: "F" when movement_frequency >= `fast_from`, "S" when >= `slow_from`, else "N";
    - `life_cycle`, the first rule that matches: "dead" when the silence is improbable under the series' own rate
      (obsolescence risk): periods_since_last_sale s >= `dead_periods` (the floor) and (1 - p)^s < `dead_probability`,
      p = the share of its periods with a sale since its first sale (1 / ADI); a part that sells every 4 periods is
      not dead after 3 silent ones ((3/4)^3 = 0.42), one that sold every period is; `dead_probability` 1 makes the
      floor the whole rule. With `beyond_longest_gap` (and a probability below 1), s must also be longer than the
      longest silence the series has come back from: sales that come in bursts have long quiet spells the rate alone
      calls improbable (a part with a 10-period gap behind it is not dead after 9).
      Then "new" when periods_since_first_sale <= `new_periods` (too short to backtest); "slow_moving" when fsn_class
      is not "F"; else "active".

    A series whose values are all zero has no sale: periods_since_first_sale and periods_since_last_sale
    are null, movement_frequency 0.0, fsn_class "N", life_cycle "dead".
    Values must be non-negative and non-null (validated sales); a ValueError names what is wrong.
    """
    _require_positive_int(new_periods, "new_periods")
    _require_positive_int(dead_periods, "dead_periods")
    _require_positive_int(window_periods, "window_periods")
    if isinstance(dead_probability, bool) or not isinstance(dead_probability, int | float) or not 0 < dead_probability <= 1:
        raise ValueError(f"life_cycle: dead_probability={dead_probability!r} must be a probability in (0, 1].")
    for name, value in (("slow_from", slow_from), ("fast_from", fast_from)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"life_cycle: {name}={value!r} must be a number (a share of periods).")
    if not 0 < slow_from < fast_from <= 1:
        raise ValueError(f"life_cycle: slow_from={slow_from!r} and fast_from={fast_from!r} must satisfy 0 < slow_from < fast_from <= 1.")
    require_columns(panel, [id_col, time_col, target_col], where="life_cycle")
    require_no_nulls(panel, target_col, id_col=id_col, where="life_cycle")
    require_no_nulls(panel, time_col, id_col=id_col, where="life_cycle")
    require_non_negative(panel, target_col, id_col=id_col, where="life_cycle")

    sale = pl.col(target_col) > 0
    # Sorted by time so that `tail` is the most recent periods (group_by keeps the row order within a group).
    stats = (
        active_periods(panel, id_col=id_col, time_col=time_col, target_col=target_col)
        .sort(id_col, time_col)
        .group_by(id_col, maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("periods_since_first_sale"),
            sale.sum().cast(pl.Float64).alias("_sales"),
            (pl.col(time_col) > pl.col(time_col).filter(sale).max()).sum().cast(pl.Int64).alias("periods_since_last_sale"),
            sale.tail(window_periods).sum().cast(pl.Float64).alias("_window_sales"),
            # The longest run of zeros between two sales: the gaps between consecutive sale positions, less one.
            (pl.int_range(pl.len()).filter(sale).diff().max() - 1).fill_null(0).cast(pl.Int64).alias("_longest_gap"),
            pl.len().clip(upper_bound=window_periods).cast(pl.Float64).alias("_window_len"),
        )
    )
    since_first, since_last = pl.col("periods_since_first_sale"), pl.col("periods_since_last_sale")
    # Column / column: correctly rounded (a broadcast scalar divisor is not, pola-rs/polars#23741), so
    # 1 sale in 10 periods is exactly 0.1 and lands on the `slow_from` side it should.
    frequency = pl.when(since_first.is_null()).then(0.0).otherwise(pl.col("_window_sales") / pl.col("_window_len"))
    fsn = (
        pl.when(pl.col("movement_frequency") >= fast_from)
        .then(pl.lit("F"))
        .when(pl.col("movement_frequency") >= slow_from)
        .then(pl.lit("S"))
        .otherwise(pl.lit("N"))
    )
    # P(s silent periods | the series' own rate p) = (1 - p)^s, p over its periods since the first sale.
    quiet = (1.0 - pl.col("_sales") / since_first.cast(pl.Float64)).pow(since_last.cast(pl.Float64))
    probable_death = (quiet < dead_probability) & ((since_last > pl.col("_longest_gap")) | (not beyond_longest_gap))
    stage = (
        pl.when(since_first.is_null() | ((since_last >= dead_periods) & (probable_death | (dead_probability == 1))))
        .then(pl.lit("dead"))
        .when(since_first <= new_periods)
        .then(pl.lit("new"))
        .when(pl.col("fsn_class") != "F")
        .then(pl.lit("slow_moving"))
        .otherwise(pl.lit("active"))
    )
    series = panel.select(pl.col(id_col)).unique()
    return (
        series.join(stats, on=id_col, how="left")
        .with_columns(frequency.cast(pl.Float64).alias("movement_frequency"))
        .with_columns(fsn.cast(pl.String).alias("fsn_class"))
        .with_columns(stage.cast(pl.String).alias("life_cycle"))
        .select(id_col, *LIFE_CYCLE_COLUMNS)
        .sort(id_col)
    )
