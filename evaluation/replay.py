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
from evaluation.simulate import demand_spike, lead_time_normals, outage_mask, simulate_order_up_to
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


@dataclass(frozen=True)
class HeldOutCalendar:
    """What the held-out matrix of every SKU shares, whichever SKUs are in it: the longest backtest span (what a SKU
    without a backtest replays, at most its history), the periods of the columns (oldest first; the width is their
    number) and the periods every SKU has held-out demand for (a scenario's start counts from the first of them).

    Computed once over the whole catalogue (`held_out_calendar`), it makes a SKU's replay (its lead-time draws are
    indexed by column) the same in a partition of SKUs as in the whole run."""

    longest: int | None
    dates: list
    common: int


def held_out_spans(plan: pl.DataFrame) -> pl.DataFrame:
    """unique_id, span: the periods each SKU's backtest windows cover ((windows - 1) x step + bucket); null without
    a backtest. `plan`: unique_id, backtested, windows, step, bucket (forecasting's plan)."""
    return plan.select(
        ID,
        span=pl.when(pl.col("backtested")).then((pl.col("windows") - 1) * pl.col("step") + pl.col("bucket")).otherwise(None),
    )


def held_out_calendar(plan: pl.DataFrame, lengths: pl.DataFrame, dates: Sequence) -> HeldOutCalendar:
    """The calendar of the whole catalogue. `plan`: forecasting's plan of every SKU; `lengths`: unique_id, periods
    (the periods of each SKU's demand panel); `dates`: every period of the panel (any order, repeats allowed).

    Every row of the matrix ends on the as-of date, so column j is the same calendar period for every SKU: the
    columns are the last `width` periods, width the longest replayed span."""
    spans = held_out_spans(plan)
    longest = spans["span"].max()
    replayed = spans.join(lengths, on=ID, how="inner").select(
        pl.min_horizontal(pl.col("span").fill_null(longest if longest is not None else pl.col("periods")), pl.col("periods"))
    )
    replayed = replayed.to_series().filter(replayed.to_series() > 0)
    width = int(replayed.max() or 0)
    periods = sorted(set(dates))
    return HeldOutCalendar(
        int(longest) if longest is not None else None,
        periods[len(periods) - width :] if width else [],
        int(replayed.min() or 0),
    )


def panel_calendar(panel: pl.DataFrame, plan: pl.DataFrame) -> HeldOutCalendar:
    """`held_out_calendar` of one panel holding every SKU of `plan` (a run in one piece)."""
    lengths = panel.group_by(ID).agg(periods=pl.len().cast(pl.Int64))
    return held_out_calendar(plan, lengths, panel["ds"].unique().to_list())


def held_out_demand(panel: pl.DataFrame, plan: pl.DataFrame, calendar: HeldOutCalendar | None = None) -> HeldOut:
    """Each SKU's backtest span of demand, right-aligned, NaN before it.

    `plan`: unique_id, backtested, windows, step, bucket (forecasting's plan). `calendar`: the whole catalogue's
    (`held_out_calendar`) when `panel` and `plan` hold a partition of its SKUs; by default `panel`'s own.
    """
    calendar = calendar if calendar is not None else panel_calendar(panel, plan)
    width = len(calendar.dates)
    # Every row ends on the as-of date: column j is the same calendar period for all SKUs, so a scenario's window
    # hits them all at once. A SKU without a backtest replays its last periods, at most the longest backtest span.
    rows = (
        panel.join(held_out_spans(plan), on=ID, how="inner")
        .sort(ID, "ds")
        .with_columns(_from_end=pl.int_range(pl.len(), 0, -1).over(ID))  # n .. 1: 1 is the last period
        .with_columns(
            span=pl.min_horizontal(
                pl.col("span").fill_null(calendar.longest if calendar.longest is not None else pl.len().over(ID)), pl.len().over(ID)
            )
        )
        .filter(pl.col("_from_end") <= pl.col("span"))
    )
    ids = rows[ID].unique(maintain_order=True).to_list()
    demand = np.full((len(ids), width), np.nan)
    row_index = rows.select(pl.col(ID).rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    col_index = width - rows["_from_end"].to_numpy()
    demand[row_index, col_index] = rows["y"].to_numpy()
    return HeldOut(ids, demand, list(calendar.dates))


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
    return forecast_levels_of(held, recs, cv, (column,))[column]


def forecast_levels_of(held: HeldOut, recs: pl.DataFrame, cv: pl.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """`forecast_levels` of each of `columns`: the origins' forecasts, the sigma ratios and which origin serves each
    period are the same for every column, and computed once."""
    x = _inputs(recs, held.ids)
    levels = {column: np.repeat(x[column].to_numpy()[:, None], held.demand.shape[1], axis=1) for column in columns}
    if cv.is_empty() or not held.dates:
        return levels
    normal = pl.col("safety_stock_method") != "bootstrap_quantile" if "safety_stock_method" in x.columns else pl.lit(True)
    ratios = out_of_window_sigma_ratios(cv, x.select(ID, "lead_time_periods", "review_periods"))
    # One level per SKU and origin, then spread over the periods each origin serves.
    ratio = pl.col("ratio").fill_null(1.0)
    names = {column: f"_level_{i}" for i, column in enumerate(columns)}
    buffer = {column: pl.col(column) - pl.col("review_lead_time_demand") for column in columns}
    per_origin = (
        exposure_sums(cv, pl.col("forecast").clip(0.0, None), plan=x, names=("_lead_forecast", "_forecast"))
        .join(ratios, on=[ID, "cutoff"], how="left")
        .join(x.drop(cs.by_name("cutoff", "ratio", require_all=False)), on=ID)
        .select(
            ID,
            "cutoff",
            *(
                (
                    pl.col("_forecast")
                    + pl.when(normal.fill_null(True))
                    .then(buffer[column] * error_share_factor(ratio, column, x.columns).fill_null(1.0))
                    .otherwise(buffer[column])
                ).alias(name)
                for column, name in names.items()
            ),
        )
    )
    # Every (SKU, period) cell: built in polars (a Python list of n x T dates took seconds at 10,000 SKUs).
    rows = pl.DataFrame({ID: held.ids}).with_row_index("_row")
    grid = rows.join(pl.DataFrame({"ds": held.dates}).with_row_index("_col"), how="cross")
    matched = (
        grid.sort("ds")
        .join_asof(per_origin.sort("cutoff"), left_on="ds", right_on="cutoff", by=ID, strategy="backward", check_sortedness=False)
        .filter(pl.col("cutoff").is_not_null())
    )
    for column, name in names.items():
        cells = matched.filter(pl.col(name).is_not_null())  # a null level (a null input) keeps the published one
        levels[column][cells["_row"].to_numpy(), cells["_col"].to_numpy()] = np.ceil(np.maximum(cells[name].to_numpy(), 0.0) - 1e-9)
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
    recs: pl.DataFrame,
    panel: pl.DataFrame,
    plan: pl.DataFrame,
    *,
    seed: int,
    cv: pl.DataFrame | None = None,
    calendar: HeldOutCalendar | None = None,
) -> pl.DataFrame:
    """Per SKU: the recommended (R, S) policy replayed over its held-out demand (`evaluation.simulate`).

    With `cv` (the chosen model's backtest) each review orders up to the forecast of its latest backtest origin plus
    the buffer (`forecast_levels`): the policy as it would have run. Without, the published level throughout.
    `recs`: unique_id, order_up_to_units, review_lead_time_demand, review_periods, lead_time_periods and the
    lead-time std (lead_time_std_periods, or lead_time_std_days with lead_time_days).
    `calendar`: the whole catalogue's when `panel` holds a partition of it (`held_out_demand`).
    Returns unique_id and the simulation's columns (simulated_cycle_service_level, simulated_fill_rate, ...).
    """
    held = held_out_demand(panel, plan, calendar)
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
    The two steps of a run over partitions of SKUs: `stress_outcomes` (per SKU) and `stress_summary` (over all).
    """
    return stress_summary(stress_outcomes(recs, panel, plan, scenarios, seed=seed, cv=cv), scenarios, holding_rate=holding_rate)


#: The per-SKU outcome columns of `stress_outcomes`, in its row order within each scenario and policy.
OUTCOMES = ("hit", "cycle_service_level", "units_short", "demand_total", "stockout_periods", "on_hand_value", "order_up_to_value")


def stress_outcomes(
    recs: pl.DataFrame,
    panel: pl.DataFrame,
    plan: pl.DataFrame,
    scenarios: Sequence[Scenario],
    *,
    seed: int,
    cv: pl.DataFrame | None = None,
    calendar: HeldOutCalendar | None = None,
) -> pl.DataFrame:
    """Each SKU's replay under each scenario and policy: scenario, kind, policy, unique_id and `OUTCOMES` (the
    average on-hand and the order-up-to level in value, at the SKU's unit cost), in scenario, policy and SKU order.
    `calendar`: the whole catalogue's when `panel` holds a partition of it (`held_out_demand`): a SKU's outcomes are
    then the same whichever partition it is in."""
    calendar = calendar if calendar is not None else panel_calendar(panel, plan)
    held = held_out_demand(panel, plan, calendar)
    ids, demand = held.ids, held.demand
    x = _inputs(recs, ids)
    n, width = demand.shape
    # A scenario's start counts from the first period every SKU has held-out demand for (rows are right-aligned).
    offset = width - calendar.common
    lead_time_std = x["lead_time_std_periods"].to_numpy()
    common = {
        "review_periods": x["review_periods"].round(0).clip(1, None).cast(pl.Int64).to_numpy(),
        "lead_time_mean": x["lead_time_periods"].to_numpy(),
        "lead_time_std": lead_time_std,
        "seed": seed,
        "keys": ids,
        # The same SKUs' lead-time streams in every scenario and policy (common random numbers): drawn once.
        "lead_time_normals": lead_time_normals(lead_time_std, width, seed=seed, keys=ids),
    }
    unit_cost = x["unit_cost"].to_numpy()
    # The levels each policy sets at each review do not depend on the scenario: once per policy.
    levels = {column: x[column].to_numpy() for column in POLICY_LEVELS.values()}
    varying = levels if cv is None else forecast_levels_of(held, recs, cv, tuple(levels))
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
        hit_mask = np.zeros(n, dtype=bool)
        hit_mask[hit] = True
        for policy, column in POLICY_LEVELS.items():
            r = simulate_order_up_to(scenario_demand, order_up_to=varying[column], **common, **kwargs)
            out.append(
                pl.DataFrame(
                    {
                        "scenario": [sc.name] * n,
                        "kind": [sc.kind] * n,
                        "policy": [policy] * n,
                        ID: ids,
                        "hit": hit_mask,
                        "cycle_service_level": r.cycle_service_level,
                        "units_short": r.units_short,
                        "demand_total": r.demand_total,
                        "stockout_periods": r.stockout_periods,
                        "on_hand_value": r.average_on_hand * unit_cost,
                        "order_up_to_value": levels[column] * unit_cost,
                    },
                    schema_overrides={"scenario": pl.String, "kind": pl.String, "policy": pl.String, ID: pl.String},
                    nan_to_null=False,
                )
            )
    schema = {"scenario": pl.String, "kind": pl.String, "policy": pl.String, ID: pl.String}
    return pl.concat(out, how="vertical_relaxed") if out else pl.DataFrame(schema=schema)


def stress_summary(outcomes: pl.DataFrame, scenarios: Sequence[Scenario], *, holding_rate: float) -> pl.DataFrame:
    """The `stress_test` table from the per-SKU `stress_outcomes` of every SKU (the parts of a run over partitions of
    SKUs concatenated in SKU order: each sum is then over the same numbers in the same order as in one piece)."""
    out = []
    for sc in scenarios:
        for policy in POLICY_LEVELS:
            group = outcomes.filter(pl.col("scenario") == sc.name, pl.col("policy") == policy) if outcomes.height else outcomes
            v = {c: group[c].to_numpy() if c in group.columns else np.array([]) for c in OUTCOMES}
            total = float(np.nansum(v["demand_total"]))
            on_hand_value = float(np.nansum(v["on_hand_value"]))
            out.append(
                {
                    "scenario": sc.name,
                    "kind": sc.kind,
                    "policy": policy,
                    "skus": group.height,
                    "skus_hit": int(v["hit"].sum()),
                    "simulated_cycle_service_level": float(np.nanmean(v["cycle_service_level"]))
                    if np.isfinite(v["cycle_service_level"]).any()
                    else None,
                    "simulated_fill_rate": 1.0 - float(np.nansum(v["units_short"])) / total if total > 0 else None,
                    "stockout_periods": int(np.nansum(v["stockout_periods"])),
                    "units_short": float(np.nansum(v["units_short"])),
                    "average_inventory_value": on_hand_value,
                    "holding_cost_per_year": on_hand_value * holding_rate,
                    "order_up_to_value": float(np.nansum(v["order_up_to_value"])),
                }
            )
    # Typed even when every value is null (no SKU had held-out demand: one day of history, say).
    return pl.DataFrame(out, schema_overrides={"simulated_cycle_service_level": pl.Float64, "simulated_fill_rate": pl.Float64})
