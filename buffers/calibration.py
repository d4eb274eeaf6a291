"""Calibrated buffers: learn from the backtest how far nominal service drifts from achieved, and correct it.

Real demand is neither normal nor stationary, so a buffer sized for 95% by z x sigma is right less (or more) often.
The backtest holds the evidence: per SKU and window, the cumulative forecast error over review period + lead time
(the exposure of the order-up-to level). Per demand class:

1. Standardise each window's error by the SKU's sigma estimated WITHOUT that window (leave-one-out over the earlier
   windows): u = (actual - forecast) / sigma_-w. The latest window of every SKU is held out entirely.
2. Achieved coverage of a nominal level alpha = share of u <= z(alpha), on a grid of alpha; fit
   `sklearn.isotonic.IsotonicRegression` (increasing) from nominal to achieved.
3. Invert it: the smallest nominal level whose fitted achieved coverage reaches the target. That level's z sizes the
   buffer instead of z(target).
4. Check on the held-out latest windows (standardised by the sigma of the earlier windows): coverage before (at the
   target's z) and after (at the calibrated z). A class with fewer than `min_points` standardised errors keeps the
   uncorrected level, with the reason.

Only the normal method is calibrated (its quantile is z x sigma); the bootstrap buffers of intermittent and lumpy
SKUs are empirical quantiles already and keep their level (status `not_normal_method`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import mean_pinball_loss

from forecasting.backtest import lead_time_weights, quantile_name

ID = "unique_id"
#: Nominal levels the map is fitted on.
GRID = np.round(
    np.concatenate([np.arange(0.50, 0.95, 0.01), np.arange(0.95, 0.999, 0.001), [0.999, 0.9995, 0.9999, 0.99995, 0.99999, 0.999999]]), 6
)
#: The calibrated nominal level never exceeds this (z = 4.75): beyond, the class's errors are not worth a normal buffer.
MAX_LEVEL = 0.999999


@dataclass(frozen=True)
class Calibration:
    levels: pl.DataFrame  # demand_class, service_level_target, calibrated_level, status, n_fit, n_check, heldout_before/after
    curves: pl.DataFrame  # demand_class, nominal, achieved_before (raw), achieved_fitted (isotonic), achieved_after_check


def window_errors(cv: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """Per SKU and backtest window: the cumulative error over review period + lead time (actual - forecast, a
    fractional last period by its fraction), and the window's rank from the latest (0 = latest).

    `cv`: the chosen model's backtest rows (unique_id, cutoff, step, y, forecast); `plan`: unique_id,
    lead_time_periods, review_periods.
    """
    weight = lead_time_weights(pl.col("step"), pl.col("lead_time_periods") + pl.col("review_periods"))
    return (
        cv.join(plan.select(ID, "lead_time_periods", "review_periods"), on=ID)
        .sort(ID, "cutoff", "step")
        .group_by(ID, "cutoff", maintain_order=True)
        .agg(error=(weight * (pl.col("y") - pl.col("forecast"))).implode().list.sum())
        .with_columns(from_latest=pl.col("cutoff").rank("ordinal", descending=True).over(ID).cast(pl.Int64) - 1)
    )


def standardised_errors(errors: pl.DataFrame) -> pl.DataFrame:
    """unique_id, set ("fit" or "check"), u: fit windows divided by the leave-one-out RMSE of the other fit windows;
    the latest window divided by the RMSE of all fit windows. SKUs with fewer than 3 windows, or a zero sigma, give none."""
    fit = errors.filter(pl.col("from_latest") > 0)
    sums = fit.group_by(ID).agg(ss=(pl.col("error") ** 2).sum(), n=pl.len())
    loo = (
        fit.join(sums, on=ID)
        .filter(pl.col("n") >= 2)
        .with_columns(sigma=((pl.col("ss") - pl.col("error") ** 2).clip(0.0, None) / (pl.col("n") - 1)).sqrt())
        .filter(pl.col("sigma") > 0)
        .select(ID, pl.lit("fit").alias("set"), u=pl.col("error") / pl.col("sigma"))
    )
    check = (
        errors.filter(pl.col("from_latest") == 0)
        .join(sums.filter(pl.col("n") >= 2), on=ID)
        .with_columns(sigma=(pl.col("ss") / pl.col("n")).sqrt())
        .filter(pl.col("sigma") > 0)
        .select(ID, pl.lit("check").alias("set"), u=pl.col("error") / pl.col("sigma"))
    )
    return pl.concat([loo, check])


def fit_calibration(errors: pl.DataFrame, classes: pl.DataFrame, targets: Sequence[float], *, min_points: int = 100) -> Calibration:
    """Per demand class, the isotonic map nominal -> achieved and the calibrated level of each target.

    `errors`: from `window_errors`; `classes`: unique_id, demand_class (only SKUs of the normal method).
    """
    u = standardised_errors(errors).join(classes, on=ID)
    z_grid = stats.norm.ppf(GRID)
    levels, curves = [], []
    for (cls,), group in sorted(u.group_by("demand_class"), key=lambda g: g[0]):
        fit = np.sort(group.filter(pl.col("set") == "fit")["u"].to_numpy())
        check = group.filter(pl.col("set") == "check")["u"].to_numpy()
        if fit.size < min_points:
            levels += [_level(cls, t, t, f"too_few_windows ({fit.size} < {min_points})", fit.size, check.size, check, t) for t in targets]
            continue
        achieved = np.searchsorted(fit, z_grid, side="right") / fit.size  # share of u <= z(alpha)
        iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(GRID, achieved)
        fitted = iso.predict(GRID)
        for t in targets:
            reach = np.flatnonzero(fitted >= t)
            level = float(min(GRID[reach[0]], MAX_LEVEL)) if reach.size else MAX_LEVEL
            levels.append(_level(cls, t, level, "calibrated" if reach.size else "capped", fit.size, check.size, check, level))
        check_cov = np.searchsorted(np.sort(check), z_grid, side="right") / max(check.size, 1)
        curves.append(
            pl.DataFrame(
                {
                    "demand_class": cls,
                    "nominal": GRID,
                    "achieved_before": achieved,
                    "achieved_fitted": fitted,
                    "achieved_check": check_cov,
                }
            )
        )
    schema = {
        "demand_class": pl.String, "service_level_target": pl.Float64, "calibrated_level": pl.Float64, "status": pl.String,
        "n_fit": pl.Int64, "n_check": pl.Int64, "heldout_before": pl.Float64, "heldout_after": pl.Float64,
    }  # fmt: skip
    curve_schema = {c: pl.Float64 for c in ("nominal", "achieved_before", "achieved_fitted", "achieved_check")}
    return Calibration(
        levels=pl.DataFrame(levels, schema=schema),
        curves=pl.concat(curves) if curves else pl.DataFrame(schema={"demand_class": pl.String, **curve_schema}),
    )


def _level(cls: str, target: float, level: float, status: str, n_fit: int, n_check: int, check: np.ndarray, used: float) -> dict:
    z_before, z_after = stats.norm.ppf(target), stats.norm.ppf(used)
    return {
        "demand_class": cls,
        "service_level_target": float(target),
        "calibrated_level": float(level),
        "status": status,
        "n_fit": int(n_fit),
        "n_check": int(n_check),
        "heldout_before": float(np.mean(check <= z_before)) if check.size else None,
        "heldout_after": float(np.mean(check <= z_after)) if check.size else None,
    }


def pinball_losses(cv: pl.DataFrame, classes: pl.DataFrame, quantiles: Sequence[float]) -> pl.DataFrame:
    """`sklearn.metrics.mean_pinball_loss` of each per-step forecast quantile, per demand class (units per period).

    `cv`: the chosen models' backtest rows with the quantile columns (q50, q90, ...).
    """
    rows = []
    data = cv.join(classes, on=ID)
    for (cls,), group in sorted(data.group_by("demand_class"), key=lambda g: g[0]):
        for p in quantiles:
            name = quantile_name(p)
            ok = group.filter(pl.col(name).is_not_null())
            if ok.height:
                loss = mean_pinball_loss(ok["y"].to_numpy(), ok[name].to_numpy(), alpha=p)
                rows.append(
                    {"demand_class": cls, "quantile": name, "pinball_loss": float(loss), "coverage": float((ok["y"] <= ok[name]).mean())}
                )
    return pl.DataFrame(rows, schema={"demand_class": pl.String, "quantile": pl.String, "pinball_loss": pl.Float64, "coverage": pl.Float64})
