"""Time-phased parameters: the reorder point and order-up-to level of each future period, from its own forecast.

A plan's reorder point covers the lead time that starts now; for a seasonal or trending item the same number is wrong a
few periods later (docs/methods.md §4.9). An ERP that loads parameters monthly or quarterly gets one row per SKU and
future period p = 1..P instead (the `plan_parameters` table), for a review at the start of period p:

- lead-time demand LTD_p = sum_k w_k f_{p-1+k}, the forecast over the L periods starting at p (whole periods fully, a
  fractional last period by its fraction: `evaluation.windows.lead_time_weights`); over R + L likewise (RLTD_p);
- safety stock SS: the plan's, the same every period (the forecast error's spread is measured over the whole backtest,
  not per season);
- reorder point ROP_p = LTD_p + SS; order-up-to level S_p = RLTD_p + (S - RLTD), the plan's buffer over R + L; both
  rounded up to whole units as the plan's are (`buffers.safety_stock.round_up_units`), S_p never below ROP_p.

Period 1 is the plan itself: ROP_1 and S_1 equal the `recommendations` table's reorder point and order-up-to level
(up to float rounding of the sums). A SKU without a buffer and nothing to reorder (dead, not critical) gets zeros.
Pure polars; no I/O.
"""

from __future__ import annotations

import polars as pl

from buffers.safety_stock import round_up_units
from evaluation.windows import lead_time_weights

ID = "unique_id"
#: The columns of the published table after as_of, sku_id, location_id (pipeline/contracts.py).
COLUMNS = (
    "period", "period_start", "forecast", "lead_time_demand", "review_lead_time_demand", "safety_stock_units",
    "reorder_point_units", "order_up_to_units",
)  # fmt: skip


#: SKUs whose window sums are computed together: bounds the frame of `_window_sums` (periods x window rows per SKU).
SKUS_PER_CHUNK = 1_000


def _window_sums(extended: pl.DataFrame, plan: pl.DataFrame, periods: int, lengths: dict[str, pl.Expr]) -> dict[str, pl.DataFrame]:
    """Per name of `lengths`, a frame unique_id, period, name: per SKU and p = 1..periods, sum_k w_k f_{p-1+k} with w
    the weights of that length.

    Only the steps inside each window are paired with its period (k = 1 .. ceil(length), step = p - 1 + k),
    SKUS_PER_CHUNK SKUs at a time: the frame is at most chunk x periods x ceil(length) rows, where pairing every step
    with every period of the whole catalogue made 100 million rows and 8 GB at 10,000 SKUs. A step's forecast is
    taken by its row position when every SKU's steps run 1, 2, ..., n (the forecast's own `extended`; a join on the
    string key cost 2.5 times more at 10,000 SKUs), else by a join. The steps are sorted and located, and each chunk's
    SKUs matched to them, once for every length. Each sum adds the same terms in the same order."""
    starts = pl.DataFrame({"period": list(range(1, periods + 1))}, schema={"period": pl.Int64})
    steps = extended.select(ID, "step", "forecast").sort(ID, "step")
    spans = (
        steps.with_row_index("_at")
        .group_by(ID, maintain_order=True)
        .agg(_at=pl.col("_at").first(), _n=pl.len(), _gapless=(pl.col("step") == pl.int_range(1, pl.len() + 1)).fill_null(False).all())
    )
    by_position = bool(spans.get_column("_gapless").all())
    forecast = steps.get_column("forecast")
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in lengths}
    for first in range(0, max(plan.height, 1), SKUS_PER_CHUNK):  # one row per SKU in `plan`
        skus = (
            plan.slice(first, SKUS_PER_CHUNK)
            .sort(ID, maintain_order=True)
            .join(spans.select(ID, "_at", "_n"), on=ID, how="inner", maintain_order="left")
            .with_row_index("_sku")
        )
        for name, length in lengths.items():
            windows = (
                skus.select("_sku", ID, "_at", "_n", _length=length)
                .join(starts, how="cross")
                .with_columns(k=pl.int_ranges(1, pl.col("_length").ceil().clip(1, None).cast(pl.Int64) + 1))
                .explode("k")
                .with_columns(step=pl.col("period") + pl.col("k") - 1)
            )  # in (SKU, period, k) order
            if by_position:
                windows = windows.filter(pl.col("step") <= pl.col("_n"))
                windows = windows.with_columns(forecast=forecast.gather(windows.get_column("_at") + windows.get_column("step") - 1))
            else:
                windows = windows.join(steps, on=[ID, "step"], how="inner", maintain_order="left")
            parts[name].append(
                windows.group_by("_sku", "period", maintain_order=True)
                .agg(pl.col(ID).first(), (lead_time_weights(pl.col("k"), pl.col("_length")) * pl.col("forecast")).sum().alias(name))
                .select(ID, "period", name)
            )
    return {name: pl.concat(frames, how="vertical") for name, frames in parts.items()}


def time_phased_parameters(recs: pl.DataFrame, extended: pl.DataFrame, periods: int) -> pl.DataFrame:
    """One row per SKU of `recs` and future period 1..`periods` (`COLUMNS` plus unique_id, sorted by both).

    `recs`: unique_id, lead_time_periods, review_periods, safety_stock_units, order_up_to_units,
    review_lead_time_demand, flag_dead, flag_critical. `extended`: unique_id, ds, step, forecast (steps 1.. at least
    periods - 1 + ceil(R + L), e.g. `ForecastResult.extended`)."""
    plan = recs.select(ID, "lead_time_periods", "review_periods")
    lead_time = pl.col("lead_time_periods")
    lengths = {"lead_time_demand": lead_time, "review_lead_time_demand": lead_time + pl.col("review_periods")}
    sums = _window_sums(extended, plan, periods, lengths)
    lead, review_lead = sums["lead_time_demand"], sums["review_lead_time_demand"]
    nothing = pl.col("flag_dead") & ~pl.col("flag_critical").fill_null(False)
    buffers = recs.select(
        ID,
        "safety_stock_units",
        _review_buffer=(pl.col("order_up_to_units") - pl.col("review_lead_time_demand")).clip(0.0, None),
        _nothing=nothing,
    )
    dated = extended.filter(pl.col("step") <= periods).select(ID, period=pl.col("step"), period_start=pl.col("ds"), forecast="forecast")
    return (
        dated.join(lead, on=[ID, "period"], how="left")
        .join(review_lead, on=[ID, "period"], how="left")
        .join(buffers, on=ID, how="inner")
        .with_columns(
            reorder_point_units=pl.when("_nothing")
            .then(0.0)
            .otherwise(round_up_units(pl.col("lead_time_demand") + pl.col("safety_stock_units"))),
            order_up_to_units=pl.when("_nothing")
            .then(0.0)
            .otherwise(round_up_units(pl.col("review_lead_time_demand") + pl.col("_review_buffer"))),
        )
        .with_columns(
            order_up_to_units=pl.max_horizontal("order_up_to_units", "reorder_point_units"),
        )
        .select(ID, *COLUMNS)
        .sort(ID, "period")
    )
