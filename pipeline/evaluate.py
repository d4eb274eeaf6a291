"""The rolling-origin evaluation of the whole plan, as the schedule would run it (`buffercast evaluate`).

For K origins (config `evaluation`: the last one `holdout_days` before the end of the data, `step_days` apart, on
the period calendar) the stages of a run (`pipeline.stages`: profile, forecast, calibration, recommendation) plan with
the sales up to the origin only, as `buffercast run --as-of <origin>` would; each plan is judged only on the demand
after its origin (`evaluation.rolling`), next to the baselines computed from the same history. Nothing judged feeds
the plan: model choice, calibration maps, bootstrap and quantiles all come from data up to the origin.

Methods judged on the same windows:
- `buffercast`: the plan as configured (each SKU at its own target, its own policy);
- `buffercast_sweep`: every SKU at each target of `evaluation.targets` (cycle service, the JIT level too), for the
  trade-off curve; the profile and the forecast of an origin are computed once and reused across targets;
- `jit`, `jic`: buffercast's plan with every SKU forced to pure JIT (the JIT level) or pure JIC (the full buffer at
  its matrix target) by `policy.force`;
- `textbook`, `empirical` at each target, and `ddmrp` (`evaluation.rolling.baselines`);
- `buffercast_phased` and `buffercast_held`: the plan used for the periods ahead without re-planning, judged at
  p = 1, 1 + step, ... up to `buffers.time_phased` periods after the origin, on the lead time that starts at period p:
  the time-phased reorder point of period p (`plan_parameters`) against the origin's reorder point held unchanged
  (what an ERP that loads parameters monthly or quarterly would do). Cycle service only (not replayed).

Each window is judged on cycle service over the realised lead time, and by a replay of the plan's order-up-to policy
until the next origin for fill rate, units short and on-hand stock (`evaluation.rolling.replay_windows`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from buffers.time_phased import time_phased_parameters
from configs.schema import BuffercastConfig
from evaluation.rolling import PLAN_COLUMNS, baselines, future_demand, judge, realised_lead_times, replay_windows, summarise
from features.calendar import to_periods
from forecasting.models import POLARS_FREQ
from pipeline.contracts import output_columns
from pipeline.stages import calibrated_recommendations, forecast_stage, profile_sales

ID = "unique_id"


@dataclass(frozen=True)
class RollingEvaluation:
    origins: list[dt.date]  # each origin's as-of date (the last day of its period)
    windows: pl.DataFrame  # one row per origin, SKU, method and target: the plan's reorder point and what followed
    summary: pl.DataFrame  # the published `evaluation` table (without as_of)
    unjudged: int  # SKU windows whose lead time ran past the end of the data


def _period_end(start: dt.date, frequency: str) -> dt.date:
    """The last day of the period starting on `start`: the next period's start, a day before."""
    return pl.Series([start]).dt.offset_by(POLARS_FREQ[frequency]).dt.offset_by("-1d")[0]


def step_periods(cfg: BuffercastConfig) -> int:
    """Periods between two origins: `evaluation.step_days`, else the review period (at least one period)."""
    e = cfg.evaluation
    return cfg.periods(e.step_days if e.step_days else max(cfg.defaults.review_period_days, cfg.period_days))


def evaluation_origins(periods: pl.Series, cfg: BuffercastConfig) -> list[dt.date]:
    """The origins' period starts: K = `evaluation.origins` periods `step_periods` apart, the last `holdout_days` (in
    whole periods) before the last period of the data; fewer when the data is too short (never the first period)."""
    e = cfg.evaluation
    starts = periods.unique().sort().to_list()
    step = step_periods(cfg)
    last = len(starts) - 1 - cfg.periods(e.holdout_days)
    picked = [starts[i] for i in range(last, 0, -step)][: e.origins] if last > 0 else []
    return sorted(picked)


def _at_target(cfg: BuffercastConfig, target: float) -> BuffercastConfig:
    """The config with every target (matrix cells and the JIT level) at `target`, every one a cycle service level."""
    cells = dict.fromkeys(("A", "B", "C"), target)
    cycle = dict.fromkeys(("A", "B", "C"), "cycle")
    return cfg.updated(
        {
            "service_levels": {
                "critical": cells,
                "non_critical": cells,
                "jit": target,
                "measure": {"critical": cycle, "non_critical": cycle},
            }
        }
    )


def plan_at_origin(
    cfg: BuffercastConfig,
    sales: pl.DataFrame,
    master: pl.DataFrame | None,
    as_of: dt.date,
    targets: list[float],
    seconds: dict[str, float] | None = None,
) -> dict[tuple[str, float | None], pl.DataFrame]:
    """The plans an origin publishes from `sales` up to `as_of` only: ("buffercast", None) as configured,
    ("buffercast_sweep", target) per target, ("jit", None) and ("jic", None) with every SKU forced to that policy;
    each the `recommendations` table plus unique_id; and ("plan_parameters", None): the time-phased parameters of the
    plan as configured (`buffers.time_phased`). `seconds`, if given, receives the time spent profiling and forecasting
    (`profile_forecast`) and in the recommendation passes (`recommendations`)."""
    start = time.perf_counter()
    cfg = cfg.updated({"as_of": as_of})
    p = profile_sales(cfg, sales.filter(pl.col("date") <= as_of), master, as_of)
    fc = forecast_stage(cfg, p)
    planned = time.perf_counter()
    keys = p.keys.select(ID, "sku_id", "location_id")
    plans = {}
    variants = [(("buffercast", None), cfg), *[(("buffercast_sweep", t), _at_target(cfg, t)) for t in targets]]
    variants += [((policy.lower(), None), cfg.updated({"policy": {"force": policy}})) for policy in ("JIT", "JIC")]
    shares = None  # the bootstrap's coverage of the backtest windows: drawn once, the same for every variant
    for key, c in variants:
        recs, calibration = calibrated_recommendations(c, as_of, p, fc, replay=False, shares=shares)
        shares = calibration.bootstrap_windows if calibration is not None else None
        plans[key] = recs.join(keys, on=["sku_id", "location_id"], how="left", nulls_equal=True)
    plans[("plan_parameters", None)] = time_phased_parameters(plans[("buffercast", None)], fc.extended, fc.extended_periods)
    if seconds is not None:
        seconds.update(profile_forecast=planned - start, recommendations=time.perf_counter() - planned)
    return plans


def _plan_windows(plan: pl.DataFrame, method: str, target: pl.Expr) -> pl.DataFrame:
    """One judged row per SKU of a plan: its reorder point, safety stock and the service level it states."""
    return plan.select(
        ID,
        method=pl.lit(method),
        target=target.cast(pl.Float64),
        expected_service_level=pl.col("expected_service_level"),
        reorder_point=pl.col("reorder_point_units"),
        safety_stock_units=pl.col("safety_stock_units"),
        order_up_to=pl.col("order_up_to_units"),
    )


def _ahead_windows(
    panel: pl.DataFrame, start: dt.date, as_of: dt.date, plan: pl.DataFrame, phased: pl.DataFrame, lead_times: pl.DataFrame,
    seed: int, step: int,
) -> pl.DataFrame:  # fmt: skip
    """The windows of `buffercast_phased` and `buffercast_held` at p = 1, 1 + step, ... (module docstring): one row per
    SKU, method and p whose lead time from period p lies in the data, with `lead_time_demand_actual`. Period p's lead
    time is drawn on its own key (as_of, p); p = 1 is the origin's draw."""
    starts = dict(phased.select("period", "period_start").unique().iter_rows())
    frames = []
    for p in range(1, max(starts, default=0) + 1, step):
        after = start if p == 1 else starts.get(p - 1)
        if after is None:
            continue
        realised = realised_lead_times(lead_times, seed=seed, origin=as_of if p == 1 else f"{as_of}+{p}")
        actual = future_demand(panel, after, realised).filter("judged").drop("judged")
        at_p = phased.filter(pl.col("period") == p).select(ID, phased_rop="reorder_point_units")
        rows = plan.select(ID, "service_level_target", "expected_service_level", "reorder_point_units", "safety_stock_units").join(
            at_p, on=ID, how="inner"
        )
        for method, rop in (("buffercast_phased", "phased_rop"), ("buffercast_held", "reorder_point_units")):
            frames.append(
                rows.select(
                    ID,
                    method=pl.lit(method),
                    target=pl.col("service_level_target"),
                    expected_service_level="expected_service_level",
                    reorder_point=pl.col(rop),
                    safety_stock_units="safety_stock_units",
                    order_up_to=pl.lit(None, pl.Float64),
                ).join(actual, on=ID, how="inner")
            )
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def rolling_evaluation(
    cfg: BuffercastConfig,
    sales: pl.DataFrame,
    master: pl.DataFrame | None = None,
    progress: Callable[[str], None] | None = None,
) -> RollingEvaluation:
    """Plan at every origin with the data up to it, judge every plan and baseline on what came after it. `progress`
    receives two lines per origin, the second with where its time went (the flow logs them)."""
    e = cfg.evaluation
    last_date = sales["date"].max()
    panel = to_periods(sales, freq=cfg.frequency, as_of=last_date, week_start=cfg.week_start, input_grain=cfg.input.grain)
    starts = evaluation_origins(panel["ds"], cfg)
    history_periods = cfg.bootstrap_history_periods
    step = step_periods(cfg)
    parts, unjudged, as_ofs = [], 0, []
    for number, start in enumerate(starts, 1):
        as_of = _period_end(start, cfg.frequency)
        if progress is not None:
            progress(f"origin {number} of {len(starts)}: planning as of {as_of} with the data up to it")
        as_ofs.append(as_of)
        seconds: dict[str, float] = {}
        plans = plan_at_origin(cfg, sales, master, as_of, e.targets, seconds)
        judging = time.perf_counter()
        plan = plans[("buffercast", None)]
        plan_parameters = plans.pop(("plan_parameters", None))
        attrs = plan.select(PLAN_COLUMNS)
        lead_times = attrs.select(ID, "lead_time_periods", lead_time_std_periods=pl.col("lead_time_std_days") / cfg.period_days)
        realised = realised_lead_times(lead_times, seed=cfg.seed, origin=as_of)
        actual = future_demand(panel, start, realised)
        unjudged += actual.filter(~pl.col("judged")).height
        slices = attrs.select(ID, "policy", "demand_class", "life_cycle", "abc_class", "unit_cost", "review_periods")
        frames = [_plan_windows(p, method, pl.col("service_level_target")) for (method, t), p in plans.items() if t is None]
        frames += [_plan_windows(swept, "buffercast_sweep", pl.lit(t)) for (_, t), swept in plans.items() if t is not None]
        base = baselines(
            panel.filter(pl.col("ds") <= start),
            attrs,
            e.targets,
            history_periods=history_periods,
            adu_periods=cfg.periods(e.ddmrp_adu_days),
            period_days=cfg.period_days,
            short_lead_time_days=cfg.policy.jit_max_lead_time_days,
            long_lead_time_days=cfg.policy.jic_min_lead_time_days,
        )
        frames.append(base.with_columns(expected_service_level=pl.col("target")).select(frames[0].columns))
        windows = (
            pl.concat(frames, how="vertical_relaxed")
            .join(slices, on=ID, how="left")
            .join(actual.filter("judged").drop("judged"), on=ID, how="inner")
        )
        windows = replay_windows(panel, start, windows, realised, step)
        ahead = _ahead_windows(panel, start, as_of, plan, plan_parameters, lead_times, cfg.seed, step)
        if ahead.height:
            not_replayed = {
                "replayed": pl.lit(False),
                **{c: pl.lit(None, pl.Float64) for c in ("replay_demand", "replay_short", "replay_on_hand")},
            }
            windows = pl.concat([windows, ahead.join(slices, on=ID, how="left").with_columns(**not_replayed)], how="diagonal_relaxed")
        parts.append(judge(windows.with_columns(origin=pl.lit(as_of))))
        if progress is not None:
            progress(
                f"origin {number} of {len(starts)}: profile and forecast {seconds['profile_forecast']:.0f} s, "
                f"{len(plans)} recommendation passes {seconds['recommendations']:.0f} s, "
                f"baselines and judging {time.perf_counter() - judging:.0f} s"
            )
    windows = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()
    summary = summarise(windows).select(c for c in output_columns("evaluation") if c != "as_of") if parts else pl.DataFrame()
    return RollingEvaluation(as_ofs, windows, summary, unjudged)
