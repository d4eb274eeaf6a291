"""Backtest windows: the cumulative sums over the exposures a buffer covers, one row per SKU and window.

A buffer covers an exposure: the reorder point's lead time L, the order-up-to level's review period + lead time
L + R. Per backtest window (cutoff), a quantity over an exposure is the sum over the forecast steps t of
w_t x value_t, with `lead_time_weights` w_t (whole periods fully, a fractional last period by its fraction), added
in step order (`in_row_order`: the same bits on every run). The backtest's lead-time RMSE and bias
(`forecasting.backtest`), the calibration's standardised errors (`buffers.calibration`), the buffer coverage
(`evaluation.coverage`) and the replay's out-of-window sigma and forecast levels (`evaluation.replay`) all come
from these sums.

- `exposure_sums`: the sums of any per-step value, per window (wide: one column per exposure).
- `window_errors` / `window_demand`: the cumulative error (actual - forecast) / demand per SKU, exposure and
  window (long), with the window's rank from the latest.
- `window_sums`, `other_windows_sigma`: the sum of squared window errors of a group and the leave-one-out RMSE of
  its other windows.

Pure: polars only, and `evaluation.metrics`; never another buffercast package (forecasting/ and buffers/ import it).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from evaluation.metrics import in_row_order

ID = "unique_id"
#: The exposures a buffer covers: the reorder point's lead time, the order-up-to level's review period + lead time.
LEAD_TIME, REVIEW_LEAD_TIME = "lead_time", "review_lead_time"
EXPOSURES = (LEAD_TIME, REVIEW_LEAD_TIME)


def lead_time_weights(step: pl.Expr, lead_time_periods: pl.Expr) -> pl.Expr:
    """Weight of forecast step t (1-based) in a lead time of L periods: min(max(L - (t - 1), 0), 1).

    Whole periods count fully, a fractional last period by its fraction: sum of weights = L.
    """
    return (lead_time_periods - (step - 1)).clip(0.0, 1.0)


def exposure_sums(
    cv: pl.DataFrame,
    value: pl.Expr,
    by: Sequence[str] = (ID,),
    plan: pl.DataFrame | None = None,
    names: tuple[str, str] = EXPOSURES,
) -> pl.DataFrame:
    """Per `by` and backtest window (`cutoff`), sorted: the sum of w_t x `value` over the lead time and over review
    period + lead time, in step order, as the columns `names` (default `LEAD_TIME`, `REVIEW_LEAD_TIME`).

    `cv`: backtest rows with `by`, cutoff, step and the columns `value` reads; lead_time_periods and review_periods
    from `cv` itself, or from `plan` (unique_id, lead_time_periods, review_periods; joined on unique_id, rows of
    SKUs without a plan row left out). `value` pl.lit(1.0): the weights themselves (L, or less where the backtest's
    horizon stops short of the exposure).
    """
    frame = cv if plan is None else cv.join(plan.select(ID, "lead_time_periods", "review_periods"), on=ID)
    lead, review_lead = pl.col("lead_time_periods"), pl.col("lead_time_periods") + pl.col("review_periods")
    step = pl.col("step")
    return (
        frame.sort(*by, "cutoff", "step")
        .group_by(*by, "cutoff", maintain_order=True)
        .agg(
            in_row_order(lead_time_weights(step, lead) * value).list.sum().alias(names[0]),
            in_row_order(lead_time_weights(step, review_lead) * value).list.sum().alias(names[1]),
        )
    )


def window_errors(cv: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """Per SKU, exposure and backtest window: the cumulative error (actual - forecast, a fractional last period by
    its fraction) over the lead time and over review period + lead time, and the window's rank from the latest
    (0 = latest). unique_id, cutoff, from_latest, exposure, error; sorted by unique_id, exposure, cutoff.

    `cv`: the chosen model's backtest rows (unique_id, cutoff, step, y, forecast); `plan`: unique_id,
    lead_time_periods, review_periods.
    """
    return _per_window(cv, plan, pl.col("y") - pl.col("forecast"), "error")


def window_demand(cv: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """As `window_errors`, the demand itself (`actual`) over each exposure after each backtest cutoff."""
    return _per_window(cv, plan, pl.col("y"), "actual")


def _per_window(cv: pl.DataFrame, plan: pl.DataFrame, value: pl.Expr, name: str) -> pl.DataFrame:
    """`exposure_sums` per SKU, long: one row per SKU, window and exposure, the sum as `name`."""
    return (
        exposure_sums(cv, value, plan=plan)
        .with_columns(from_latest=pl.col("cutoff").rank("ordinal", descending=True).over(ID).cast(pl.Int64) - 1)
        .unpivot(index=[ID, "cutoff", "from_latest"], on=list(EXPOSURES), variable_name="exposure", value_name=name)
        .sort(ID, "exposure", "cutoff")
    )


def window_sums(errors: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Per group `by` of `window_errors` rows: `ss`, the sum of squared errors (added in row order: the same bits
    every run), and `n`, the number of windows."""
    return errors.group_by(by).agg(ss=in_row_order(pl.col("error") ** 2).list.sum(), n=pl.len())


def other_windows_sigma() -> pl.Expr:
    """On `window_errors` rows joined to their group's `window_sums`: the RMSE of the group's OTHER windows (leave
    one out)."""
    return ((pl.col("ss") - pl.col("error") ** 2).clip(0.0, None) / (pl.col("n") - 1)).sqrt()
