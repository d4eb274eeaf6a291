"""Trend and seasonal strength per series (Hyndman & Athanasopoulos, FPP3 §4.3 "STL features").

With an additive decomposition y = T + S + R:

    F_T = max(0, 1 - Var(R) / Var(T + R))        F_S = max(0, 1 - Var(R) / Var(S + R))

The decomposition is the CLASSICAL additive one (FPP3 §3.4), not STL: T is a centred moving average, S the
mean detrended value at each position in the season, R what is left. STL fits loess smoothers series by
series, which would mean a Python loop over thousands of SKUs; the classical decomposition is a weighted
rolling mean and a grouped mean, so polars computes it for every series at once. It is cruder (the
seasonal pattern is fixed over time, the ends of each series are lost) but ranks series the same way for
what it is used for here: is there a trend, is there a season.
"""

from __future__ import annotations

import polars as pl

from features._checks import require_columns, require_no_nulls

SHAPE_COLUMNS = ("trend_strength", "seasonal_strength", "shape_periods")

#: A variance whose standard deviation is at most this fraction of the series' largest deviation from its
#: first value is treated as zero. Rounding in the moving average leaves ~1e-15 relative noise where the
#: exact component is zero (T + R of a pure seasonal series, S + R of a straight line); a ratio of two such
#: noises is meaningless, so the strength is set to 0.0 (no trend / no season) instead.
ZERO_VARIANCE_RTOL = 1e-10

#: Fewest periods with a defined trend for any strength to be computed.
MIN_DECOMPOSED_PERIODS = 3


def trend_weights(season_length: int) -> list[float]:
    """Weights of the centred moving average used as the trend (FPP3 §3.3).

    Odd m: the m-MA (m weights 1/m). Even m: the 2xm-MA (m + 1 weights, 1/(2m) at both ends, 1/m inside),
    so that it is centred on a period. m = 1 (no season): the 3-MA, the shortest centred smoother.
    """
    m = season_length
    if m == 1:
        return [1.0 / 3.0] * 3
    if m % 2:
        return [1.0 / m] * m
    return [0.5 / m, *([1.0 / m] * (m - 1)), 0.5 / m]


def _check_parameters(season_length: int, min_seasons: int) -> None:
    for name, value, least in (("season_length", season_length, 1), ("min_seasons", min_seasons, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"shape_strength: {name}={value!r} must be an integer >= {least}.")


def _series_in_time_order(panel: pl.DataFrame, *, id_col: str, time_col: str, target_col: str) -> pl.DataFrame:
    """`id_col`, `time_col`, the target as Float64 `_x`, sorted by (`id_col`, `time_col`), checked.

    Adds `_series`, an Int64 series number in sort order: windows over an integer key are cheaper than
    over strings. The sort is skipped when the panel is already in order (`to_periods` output is).
    """
    where = "shape_strength"
    require_columns(panel, [id_col, time_col, target_col], where=where)
    for column in (id_col, time_col, target_col):
        require_no_nulls(panel, column, id_col=id_col, where=where)
    frame = panel.select(pl.col(id_col), pl.col(time_col), pl.col(target_col).cast(pl.Float64).alias("_x"))
    not_finite = frame.filter(~pl.col("_x").is_finite())
    if not_finite.height:
        ids = not_finite.get_column(id_col).unique(maintain_order=True).head(5).to_list()
        raise ValueError(
            f"{where}: column {target_col!r} has {not_finite.height} NaN or infinite value(s) (series {ids}...); "
            "fill or drop them before calling."
        )
    series_id, period = pl.col(id_col), pl.col(time_col)
    same_series = series_id == series_id.shift()
    in_order = (series_id > series_id.shift()) | (same_series & (period > period.shift()))
    if not frame.select(in_order.fill_null(True).all()).item():
        # Lazy: polars' streaming sort is about twice as fast as the eager one on large panels.
        frame = frame.lazy().sort(id_col, time_col).collect()
        duplicated = frame.filter(same_series & (period == period.shift()))
        if duplicated.height:
            ids = duplicated.get_column(id_col).unique(maintain_order=True).head(5).to_list()
            raise ValueError(
                f"{where}: {duplicated.height} row(s) repeat a ({id_col!r}, {time_col!r}) pair (series {ids}...); "
                "the panel must have one row per series and period (build it with features.calendar.to_periods)."
            )
    return frame.with_columns((~same_series).fill_null(True).cum_sum().cast(pl.Int64).alias("_series"))


def shape_strength(
    panel: pl.DataFrame,
    *,
    season_length: int,
    min_seasons: int = 2,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """Trend and seasonal strength of every series of `panel`: one row per series, sorted by `id_col`.

    `panel` has one row per series and period with no gaps (as `features.calendar.to_periods` builds it),
    in any order. Columns: `id_col`; `trend_strength` and `seasonal_strength` (Float64 in [0, 1], FPP3
    §4.3, on a classical additive decomposition, see the module docstring); `shape_periods` (Int64, the
    periods the variances are taken over: those where the centred moving average is defined, i.e. the
    series without floor(w / 2) periods at each end, w the number of trend weights; 0 when both strengths
    are null).

    With m = `season_length`:

    - T: centred moving average (`trend_weights`: m-MA, 2xm-MA for even m, 3-MA for m = 1).
    - S: the mean of y - T over the periods at the same position in the season (period index mod m,
      counted from the series' first period). FPP3 centres the m indices to sum to 0; the strengths do
      not depend on it (it moves S and R by opposite constants), so it is skipped.
    - R = y - T - S. Variances (ddof = 1) over the `shape_periods` periods only.
    - Seasonal decomposition when m >= 2 and the trend is defined on at least `min_seasons` x m periods,
      so that every seasonal index averages at least `min_seasons` values. (Counting the raw length
      instead would let a 2m-period series with even m have exactly one detrended value per position: S
      would absorb all the noise and both strengths would be 1.0 whatever the data.)
    - Otherwise (m = 1, or too short for the season) `seasonal_strength` is null and the trend strength
      comes from a trend-only decomposition, S = 0: F_T = 1 - Var(y - T) / Var(y). A short seasonal
      series then has a low trend strength, because its season is in the remainder.
    - Fewer than 3 periods with a defined trend: both strengths null, `shape_periods` 0.
    - A zero denominator (constant series, a straight line's S + R, a pure season's T + R, all up to
      rounding: `ZERO_VARIANCE_RTOL`) gives a strength of 0.0, never NaN.

    Float aggregates are taken over lists of rows sorted by (`id_col`, `time_col`) rather than with
    group_by/over sums, which are not bit-for-bit reproducible (pola-rs/polars#25163): the same panel,
    in any row order, gives the same output.
    """
    _check_parameters(season_length, min_seasons)
    frame = _series_in_time_order(panel, id_col=id_col, time_col=time_col, target_col=target_col)
    m = season_length
    weights = trend_weights(m)
    half = len(weights) // 2  # periods without a trend at each end
    min_trend_periods = max(min_seasons * m, MIN_DECOMPOSED_PERIODS)

    x, trend, season = pl.col("_x"), pl.col("_trend"), pl.col("_season")
    has_trend = trend.is_not_null()
    detrended = x - trend  # S + R
    decomposed = (
        frame.lazy()
        # Each series shifted to start at 0: the strengths are shift-invariant, a constant series becomes
        # exact zeros, and the moving average's rounding is relative to the variation, not the level.
        .with_columns((x - x.first()).over("_series"))
        .with_columns(
            x.rolling_mean(len(weights), weights=weights, center=True).over("_series").alias("_trend"),
            (pl.int_range(pl.len(), dtype=pl.Int64).over("_series") % m).alias("_position"),
            (pl.lit(m >= 2) & (pl.len().over("_series") - 2 * half >= min_trend_periods)).alias("_use_season"),
        )
    )
    if m >= 2:
        # Seasonal index: mean detrended value by position. The trend is defined on >= min_seasons x m
        # consecutive periods, so every position has values. FPP3 then centres the m indices to sum to 0;
        # that moves S and R by opposite constants and changes none of the variances, so it is left out.
        index_by_position = detrended.filter(has_trend).implode().list.mean().over("_series", "_position")
        decomposed = decomposed.with_columns(pl.when(pl.col("_use_season")).then(index_by_position).otherwise(0.0).alias("_season"))
    else:
        decomposed = decomposed.with_columns(pl.lit(0.0, dtype=pl.Float64).alias("_season"))

    def variance(component: pl.Expr, name: str) -> pl.Expr:
        return component.filter(has_trend).implode().list.var(ddof=1).alias(name)

    stats = decomposed.group_by("_series").agg(
        pl.col(id_col).first(),
        has_trend.sum().cast(pl.Int64).alias("shape_periods"),
        pl.col("_use_season").first(),
        x.filter(has_trend).abs().max().alias("_scale"),
        variance(detrended - season, "_var_r"),
        variance(x - season, "_var_tr"),
        variance(detrended, "_var_sr"),
    )

    def strength(denominator: str) -> pl.Expr:
        # Column / column only: polars divides by a broadcast scalar as a multiplication (pola-rs/polars#23741).
        zero = pl.col(denominator) <= (pl.col("_scale") * ZERO_VARIANCE_RTOL) ** 2
        ratio = pl.col("_var_r") / pl.col(denominator)
        return pl.when(zero).then(0.0).otherwise(pl.max_horizontal(1.0 - ratio, pl.lit(0.0)))

    enough = pl.col("shape_periods") >= MIN_DECOMPOSED_PERIODS
    return (
        stats.select(
            pl.col(id_col),
            pl.when(enough).then(strength("_var_tr")).cast(pl.Float64).alias("trend_strength"),
            pl.when(enough & pl.col("_use_season")).then(strength("_var_sr")).cast(pl.Float64).alias("seasonal_strength"),
            pl.when(enough).then(pl.col("shape_periods")).otherwise(0).cast(pl.Int64).alias("shape_periods"),
        )
        .sort(id_col)
        .collect()
    )
