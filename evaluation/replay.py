"""Proof of the recommendations: replay them over each SKU's held-out backtest demand, and stress-test them.

Pure: polars frames in, polars frames out; the simulation itself is `evaluation.simulate` (vectorised over SKUs).

- `held_out_demand`: per SKU, the demand of the periods its backtest windows covered (the last
  (windows - 1) x step + bucket periods; a SKU without a backtest: its last periods, at most the longest span),
  right-aligned on the as-of date in one (n, T) matrix with a NaN prefix for shorter spans.
- `simulate_recommendations`: the recommended periodic-review (R, S) policy replayed over that demand with
  lead times drawn from each SKU's lead-time distribution (seeded by SKU): achieved cycle service level, fill
  rate, average on hand, stock-out periods, per SKU.
- `stress_test`: disruption scenarios (a longer lead time, a supplier outage, a demand spike) replayed under
  three policies (JIT: every SKU at the JIT service level; JIC: every SKU with the full buffer at its class's
  target; the recommended mix): service level and cost per scenario and policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import polars.selectors as cs

from buffers.policy import buffered_components
from evaluation.simulate import demand_spike, outage_mask, simulate_order_up_to
from evaluation.windows import REVIEW_LEAD_TIME, exposure_sums, other_windows_sigma, window_errors, window_sums

ID = "unique_id"

#: The order-up-to level behind each policy of the stress test (columns `recommend` adds).
POLICY_LEVELS = {"JIT": "order_up_to_jit_units", "JIC": "order_up_to_jic_units", "recommended": "order_up_to_units"}


@dataclass(frozen=True)
class Scenario:
    """A disruption. kind: "baseline", "lead_time" (lead time x factor), "outage" (no delivery for `periods`
    periods from `start`), "demand_spike" (demand x factor for `periods` periods from `start`). `suppliers`:
    the supplier ids hit (None: every SKU)."""

    name: str
    kind: str
    factor: float = 1.0
    start: int = 0
    periods: int = 0
    suppliers: Sequence[str] | None = None


@dataclass(frozen=True)
class HeldOut:
    ids: list[str]  # row order of `demand`
    demand: np.ndarray  # (n, T), right-aligned on the as-of date, NaN before a SKU's span
    dates: list  # the period of each column (the same calendar for every SKU)


def held_out_demand(panel: pl.DataFrame, plan: pl.DataFrame) -> HeldOut:
    """Each SKU's backtest span of demand, right-aligned, NaN before it.

    `plan`: unique_id, backtested, windows, step, bucket (forecasting's plan).
    """
    spans = plan.select(
        ID,
        span=pl.when(pl.col("backtested")).then((pl.col("windows") - 1) * pl.col("step") + pl.col("bucket")).otherwise(None),
    )
    # Every row ends on the as-of date: column j is the same calendar period for all SKUs, so a scenario's window
    # hits them all at once. A SKU without a backtest replays its last periods, at most the longest backtest span.
    longest = spans["span"].max()
    rows = (
        panel.join(spans, on=ID, how="inner")
        .sort(ID, "ds")
        .with_columns(_from_end=pl.int_range(pl.len(), 0, -1).over(ID))  # n .. 1: 1 is the last period
        .with_columns(
            span=pl.min_horizontal(pl.col("span").fill_null(longest if longest is not None else pl.len().over(ID)), pl.len().over(ID))
        )
        .filter(pl.col("_from_end") <= pl.col("span"))
    )
    ids = rows[ID].unique(maintain_order=True).to_list()
    width = int(rows["span"].max() or 0)
    demand = np.full((len(ids), width), np.nan)
    row_index = rows.select(pl.col(ID).rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    col_index = width - rows["_from_end"].to_numpy()
    demand[row_index, col_index] = rows["y"].to_numpy()
    calendar = rows.group_by("_from_end").agg(pl.col("ds").first()).sort("_from_end", descending=True)
    return HeldOut(ids, demand, calendar["ds"].to_list())


def out_of_window_sigma_ratios(cv: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """unique_id, cutoff, ratio: per backtest window, the RMSE of the SKU's cumulative review + lead-time errors over
    its OTHER windows divided by the RMSE over all of them (1 where a SKU has fewer than 3 windows or no error).

    A normal-method buffer is k x sqrt(sigma_e^2 + d^2 sigma_L^2), and the forecast-error sigma_e is estimated from
    the very windows the replay replays: with sigma_e scaled by this ratio (`error_share_factor`), each window's
    buffer is the one the policy would have set without having seen that window.
    """
    errors = window_errors(cv, plan).filter(pl.col("exposure") == REVIEW_LEAD_TIME)
    return errors.join(window_sums(errors, [ID]), on=ID).select(
        ID,
        "cutoff",
        ratio=pl.when((pl.col("n") >= 3) & (pl.col("ss") > 0))
        .then(other_windows_sigma() / (pl.col("ss") / pl.col("n")).sqrt())
        .otherwise(1.0),
    )


def error_share_factor(ratio: pl.Expr, column: str, x_columns: Sequence[str]) -> pl.Expr:
    """The factor a normal buffer k x sqrt(E + V) takes when its forecast-error sigma is scaled by `ratio`:
    sqrt(ratio^2 E + V) / sqrt(E + V), with E = sigma_e^2 over R + L and V = (d sigma_L)^2, each only where the
    policy behind `column` buffers that term (a hybrid recommendation may cover one term only; JIT and JIC cover both).
    Without `sigma_review_lead_time_demand` in the recommendations the whole buffer is error: the factor is `ratio`."""
    if "sigma_review_lead_time_demand" not in x_columns:
        return ratio
    demand, lead = (pl.lit(True), pl.lit(True))
    if column == POLICY_LEVELS["recommended"] and {"policy", "flag_variable_error", "flag_variable_lead_time"} <= set(x_columns):
        demand, lead = buffered_components()
    e = pl.when(demand).then(pl.col("sigma_review_lead_time_demand").fill_null(0.0) ** 2).otherwise(0.0)
    v = pl.when(lead).then((pl.col("mean_demand_per_period").fill_null(0.0) * pl.col("lead_time_std_periods")) ** 2).otherwise(0.0)
    return pl.when(e + v > 0).then(((ratio**2 * e + v) / (e + v)).sqrt()).otherwise(1.0)


def forecast_levels(held: HeldOut, recs: pl.DataFrame, cv: pl.DataFrame, column: str) -> np.ndarray:
    """(n, T) order-up-to levels as the policy would have set them at each review: the forecast over R + L from the
    latest backtest origin (cutoff) on or before the period, plus the SKU's buffer over R + L (`column` minus the
    current forecast over R + L, i.e. the published level's buffer). In a normal-method buffer (every SKU whose
    `safety_stock_method` is not `bootstrap_quantile`) the forecast-error term is scaled by its window's
    `out_of_window_sigma_ratios` (`error_share_factor`), so no window is replayed against a sigma that has seen it
    (the replay is out of sample, like the forecast; a fill-rate buffer is scaled like a cycle one, an approximation
    as its k depends on sigma too). That sigma has one window fewer than the published one, so the replay leans a
    little conservative (Student-t of N - 1 against N windows). Periods before a SKU's first origin, and SKUs without
    a backtest, keep the published level.

    `cv`: the chosen model's backtest rows (unique_id, cutoff, step, y, forecast); `recs`: unique_id, `column`,
    review_lead_time_demand, lead_time_periods, review_periods, optionally safety_stock_method.
    """
    x = _inputs(recs, held.ids)
    static = x[column].to_numpy()
    levels = np.repeat(static[:, None], held.demand.shape[1], axis=1)
    if cv.is_empty() or not held.dates:
        return levels
    normal = pl.col("safety_stock_method") != "bootstrap_quantile" if "safety_stock_method" in x.columns else pl.lit(True)
    ratios = out_of_window_sigma_ratios(cv, x.select(ID, "lead_time_periods", "review_periods"))
    # One level per SKU and origin, then spread over the periods each origin serves.
    buffer = pl.col(column) - pl.col("review_lead_time_demand")
    factor = error_share_factor(pl.col("ratio").fill_null(1.0), column, x.columns).fill_null(1.0)
    per_origin = (
        exposure_sums(cv, pl.col("forecast").clip(0.0, None), plan=x, names=("_lead_forecast", "_forecast"))
        .join(ratios, on=[ID, "cutoff"], how="left")
        .join(x.drop(cs.by_name("cutoff", "ratio", require_all=False)), on=ID)
        .select(
            ID,
            "cutoff",
            _level=pl.col("_forecast") + pl.when(normal.fill_null(True)).then(buffer * factor).otherwise(buffer),
        )
    )
    grid = pl.DataFrame({ID: np.repeat(held.ids, len(held.dates)), "ds": held.dates * len(held.ids)}).with_columns(
        _row=pl.int_range(pl.len()).floordiv(len(held.dates)), _col=pl.int_range(pl.len()).mod(len(held.dates))
    )
    matched = (
        grid.sort("ds")
        .join_asof(per_origin.sort("cutoff"), left_on="ds", right_on="cutoff", by=ID, strategy="backward", check_sortedness=False)
        .filter(pl.col("_level").is_not_null())
    )
    levels[matched["_row"].to_numpy(), matched["_col"].to_numpy()] = np.ceil(np.maximum(matched["_level"].to_numpy(), 0.0) - 1e-9)
    return levels


def _inputs(recs: pl.DataFrame, ids: list[str]) -> pl.DataFrame:
    """`recs` in the row order of `ids`, with the lead-time std in periods (from days where only those are given)."""
    if "lead_time_std_periods" not in recs.columns:
        recs = recs.with_columns(
            lead_time_std_periods=pl.col("lead_time_std_days") * pl.col("lead_time_periods") / pl.col("lead_time_days")
        )
    recs = recs.with_columns(pl.col("lead_time_std_periods").fill_null(0.0))
    return pl.DataFrame({ID: ids}).join(recs, on=ID, how="left", maintain_order="left")


def simulate_recommendations(
    recs: pl.DataFrame, panel: pl.DataFrame, plan: pl.DataFrame, *, seed: int, cv: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per SKU: the recommended (R, S) policy replayed over its held-out demand (`evaluation.simulate`).

    With `cv` (the chosen model's backtest) each review orders up to the forecast of its latest backtest origin plus
    the buffer (`forecast_levels`): the policy as it would have run. Without, the published level throughout.
    `recs`: unique_id, order_up_to_units, review_lead_time_demand, review_periods, lead_time_periods and the
    lead-time std (lead_time_std_periods, or lead_time_std_days with lead_time_days).
    Returns unique_id and the simulation's columns (simulated_cycle_service_level, simulated_fill_rate, ...).
    """
    held = held_out_demand(panel, plan)
    x = _inputs(recs, held.ids)
    levels = x["order_up_to_units"].to_numpy() if cv is None else forecast_levels(held, recs, cv, "order_up_to_units")
    result = simulate_order_up_to(
        held.demand,
        order_up_to=levels,
        review_periods=x["review_periods"].round(0).clip(1, None).cast(pl.Int64).to_numpy(),
        lead_time_mean=x["lead_time_periods"].to_numpy(),
        lead_time_std=x["lead_time_std_periods"].to_numpy(),
        seed=seed,
        keys=held.ids,
    )
    return result.to_polars(held.ids)


def stress_test(
    recs: pl.DataFrame,
    panel: pl.DataFrame,
    plan: pl.DataFrame,
    scenarios: Sequence[Scenario],
    *,
    seed: int,
    holding_rate: float,
    cv: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per scenario and policy: SKUs, cycle service level (mean over SKUs), fill rate (units served from
    stock / demand, over all SKUs), stock-out periods, units short, average inventory value and its holding cost
    per year. Common random numbers: every scenario and policy sees the same lead-time draws per SKU.

    `recs`: the columns of `simulate_recommendations` plus unit_cost, supplier_id and the three POLICY_LEVELS.
    """
    held = held_out_demand(panel, plan)
    ids, demand = held.ids, held.demand
    x = _inputs(recs, ids)
    n, width = demand.shape
    # A scenario's start counts from the first period every SKU has held-out demand for (rows are right-aligned).
    valid = np.isfinite(demand).sum(axis=1)
    offset = width - int(valid[valid > 0].min()) if (valid > 0).any() else 0
    common = {
        "review_periods": x["review_periods"].round(0).clip(1, None).cast(pl.Int64).to_numpy(),
        "lead_time_mean": x["lead_time_periods"].to_numpy(),
        "lead_time_std": x["lead_time_std_periods"].to_numpy(),
        "seed": seed,
        "keys": ids,
    }
    unit_cost = x["unit_cost"].to_numpy()
    # The levels each policy sets at each review do not depend on the scenario: once per policy.
    levels = {column: x[column].to_numpy() for column in POLICY_LEVELS.values()}
    varying = {column: level if cv is None else forecast_levels(held, recs, cv, column) for column, level in levels.items()}
    supplier = x["supplier_id"].cast(pl.String).to_numpy() if "supplier_id" in x.columns else np.full(n, None, dtype=object)
    out = []
    for sc in scenarios:
        hit = np.arange(n) if sc.suppliers is None else np.flatnonzero(np.isin(supplier, list(sc.suppliers)))
        kwargs, scenario_demand = {}, demand
        if sc.kind == "lead_time":
            multiplier = np.ones(n)
            multiplier[hit] = sc.factor
            kwargs["lead_time_multiplier"] = multiplier
        elif sc.kind == "outage":
            kwargs["delivery_blocked"] = outage_mask(n, width, min(offset + sc.start, width), sc.periods, rows=hit)
        elif sc.kind == "demand_spike":
            scenario_demand = demand_spike(demand, min(offset + sc.start, width), sc.periods, sc.factor, rows=hit)
        elif sc.kind != "baseline":
            raise ValueError(f"scenario {sc.name!r}: unknown kind {sc.kind!r} (baseline, lead_time, outage, demand_spike)")
        for policy, column in POLICY_LEVELS.items():
            r = simulate_order_up_to(scenario_demand, order_up_to=varying[column], **common, **kwargs)
            total = float(np.nansum(r.demand_total))
            on_hand_value = float(np.nansum(r.average_on_hand * unit_cost))
            out.append(
                {
                    "scenario": sc.name,
                    "kind": sc.kind,
                    "policy": policy,
                    "skus": n,
                    "skus_hit": len(hit),
                    "simulated_cycle_service_level": float(np.nanmean(r.cycle_service_level))
                    if np.isfinite(r.cycle_service_level).any()
                    else None,
                    "simulated_fill_rate": 1.0 - float(np.nansum(r.units_short)) / total if total > 0 else None,
                    "stockout_periods": int(np.nansum(r.stockout_periods)),
                    "units_short": float(np.nansum(r.units_short)),
                    "average_inventory_value": on_hand_value,
                    "holding_cost_per_year": on_hand_value * holding_rate,
                    "order_up_to_value": float(np.nansum(levels[column] * unit_cost)),
                }
            )
    # Typed even when every value is null (no SKU had held-out demand: one day of history, say).
    return pl.DataFrame(out, schema_overrides={"simulated_cycle_service_level": pl.Float64, "simulated_fill_rate": pl.Float64})
