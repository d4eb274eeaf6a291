"""Robust outlier flags on the non-zero demand sizes of each series: flag, never delete.

A one-off bulk order inflates the sigma a buffer is sized from; these flags let config decide whether to
cap it (`cap_outliers`) before the backtest. The rule is a modified z-score (Iglewicz & Hoaglin 1993,
"How to Detect and Handle Outliers", ASQC) on the non-zero sizes: zeros say how often an item sells, not
how much, and would drag the median to 0 for intermittent items.
"""

from __future__ import annotations

import polars as pl

from features._checks import require_columns, require_no_nulls, require_non_negative

#: 1 / Phi^-1(3/4): 1.4826 x MAD estimates the standard deviation of normal data.
MAD_TO_SIGMA = 1.4826
#: sqrt(pi / 2): 1.2533 x the mean absolute deviation estimates the standard deviation of normal data.
MEAN_AD_TO_SIGMA = 1.2533
#: Fewer non-zero periods than this: no threshold, no flags (a median of two sizes says nothing robust).
MIN_NONZERO = 3

FLAG_COLUMNS = ("outlier_threshold", "is_outlier")
SUMMARY_COLUMNS = ("n_outliers", "outlier_threshold", "largest_outlier")


def flag_outliers(
    panel: pl.DataFrame,
    *,
    k: float,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
) -> pl.DataFrame:
    """The panel (same rows, same order) plus `outlier_threshold` (Float64) and `is_outlier` (Boolean).

    Per series, over its non-zero values (sizes) only:
    threshold = median(sizes) + `k` x scale, and a period is an outlier when y > threshold (and y > 0).
    scale = 1.4826 x MAD, MAD = median(|size - median(sizes)|).

    MAD is 0 whenever more than half the sizes equal the median, which integer demand does all the time
    (sizes mostly 1): the threshold would then be the median itself and every size above it an outlier.
    In that case scale = 1.2533 x MeanAD, MeanAD = mean(|size - median(sizes)|), the fallback of IBM's
    modified z-score (IBM Cognos Analytics docs, "Modified z score": "if MAD does equal 0, ... divide by
    1.253314*MeanAD"); sqrt(pi/2) x MeanAD estimates sigma for normal data, and unlike the MAD it is only
    0 when all sizes are equal, when nothing is flagged (threshold = the common size). No absolute floor
    (e.g. "at least 1 unit"): the flags are then unit-free, the same whether a SKU is counted in pieces
    or in packs (scaling a series by 2^n leaves them unchanged, exactly).

    Series with fewer than 3 non-zero periods get a null threshold and no flags (is_outlier False).
    Values must be non-negative and non-null. `k` must be a positive number. MeanAD is summed in
    (id, time) order: polars' group_by float sums are not reproducible run to run (pola-rs/polars#25163).
    """
    if isinstance(k, bool) or not isinstance(k, int | float) or not k > 0 or k == float("inf"):
        raise ValueError(f"flag_outliers: k={k!r} must be a positive, finite number of standard deviations.")
    require_columns(panel, [id_col, time_col, target_col], where="flag_outliers")
    present = [c for c in FLAG_COLUMNS if c in panel.columns]
    if present:
        raise ValueError(f"flag_outliers: the panel already has column(s) {present}; pass the panel, not a flagged frame.")
    require_no_nulls(panel, target_col, id_col=id_col, where="flag_outliers")
    require_non_negative(panel, target_col, id_col=id_col, where="flag_outliers")

    size = pl.col(target_col).cast(pl.Float64)
    deviation = (size - size.median()).abs()
    stats = (
        panel.select(id_col, time_col, target_col)
        .filter(pl.col(target_col) > 0)
        .sort(id_col, time_col)
        .group_by(id_col, maintain_order=True)
        .agg(
            pl.len().alias("_n"),
            size.median().alias("_median"),
            deviation.median().alias("_mad"),
            # implode + list.mean adds in row order: reproducible, unlike a group_by float mean.
            deviation.implode().list.mean().alias("_mean_ad"),
        )
    )
    scale = pl.when(pl.col("_mad") > 0).then(MAD_TO_SIGMA * pl.col("_mad")).otherwise(MEAN_AD_TO_SIGMA * pl.col("_mean_ad"))
    thresholds = stats.select(
        pl.col(id_col),
        pl.when(pl.col("_n") >= MIN_NONZERO).then(pl.col("_median") + k * scale).cast(pl.Float64).alias("outlier_threshold"),
    )
    y = pl.col(target_col)
    return panel.join(thresholds, on=id_col, how="left", maintain_order="left").with_columns(
        ((y > 0) & (y > pl.col("outlier_threshold"))).fill_null(False).alias("is_outlier")
    )


def outlier_summary(flagged: pl.DataFrame, *, id_col: str = "unique_id", target_col: str = "y") -> pl.DataFrame:
    """One row per series of a `flag_outliers` result, sorted by `id_col`.

    Columns: `id_col`, `n_outliers` (Int64), `outlier_threshold` (Float64; null with fewer than 3 non-zero
    periods), `largest_outlier` (Float64, the largest flagged value; null when none is flagged).
    """
    require_columns(flagged, [id_col, target_col, *FLAG_COLUMNS], where="outlier_summary")
    flag = pl.col("is_outlier").fill_null(False)
    return (
        flagged.group_by(id_col)
        .agg(
            flag.sum().cast(pl.Int64).alias("n_outliers"),
            pl.col("outlier_threshold").max().cast(pl.Float64),
            pl.col(target_col).filter(flag).max().cast(pl.Float64).alias("largest_outlier"),
        )
        .sort(id_col)
    )


def cap_outliers(flagged: pl.DataFrame, *, target_col: str = "y") -> pl.DataFrame:
    """The panel with each outlier replaced by its series' `outlier_threshold`, without the flag columns.

    Same rows, order, columns and dtypes as the panel given to `flag_outliers`: for when config excludes
    one-off bulk orders from the buffer's sigma. The value is capped, not dropped, so the period still
    counts as a sale (ADI and movement are unchanged). An integer `target_col` gets the threshold
    truncated to a whole number, still above the series' typical sizes and at or below the threshold.
    """
    require_columns(flagged, [target_col, *FLAG_COLUMNS], where="cap_outliers")
    dtype = flagged.schema[target_col]
    capped = pl.when(pl.col("is_outlier").fill_null(False)).then(pl.col("outlier_threshold")).otherwise(pl.col(target_col))
    return flagged.with_columns(capped.cast(dtype).alias(target_col)).drop(*FLAG_COLUMNS)
