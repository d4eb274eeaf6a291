"""The pure pipeline (no Prefect, no MLflow, no I/O): from validated sales to recommendations and scenarios.

The flow (`flows/plan.py`) runs each stage as a task; tests and bench/ call the same functions in-process
(`plan_core`). Every stage takes the validated config (`configs.schema.BuffercastConfig`) as it is: each
setting and its default is stated once, in that schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import polars as pl

from buffers.calibration import Calibration, fit_calibration, model_family
from buffers.lead_time_demand import bootstrap_window_coverage
from buffers.recommend import recommend
from configs.schema import BuffercastConfig
from evaluation.replay import HeldOutCalendar, Scenario, simulate_recommendations, stress_outcomes, stress_summary
from evaluation.windows import LEAD_TIME, window_demand, window_errors
from features.attributes import sku_attributes
from features.calendar import detect_input_grain, series_keys, to_periods
from features.outliers import cap_outliers
from features.profile import sku_profiles, with_abc_classes
from features.sbc import DEMAND_CLASSES
from features.xyz import sku_volatility
from forecasting.backtest import ForecastResult, backtest_and_forecast
from forecasting.inputs import forecast_inputs
from pipeline.contracts import InputError, output_columns

ID = "unique_id"


@dataclass(frozen=True)
class Profiled:
    panel: pl.DataFrame  # what is forecast: demand per series and period, explicit zeros (outliers capped if config says so)
    demand: pl.DataFrame  # the demand as sold (never capped): what planners see in the report
    keys: pl.DataFrame  # unique_id -> sku_id, location_id of the planned series
    left_out: pl.DataFrame  # series in the sales that cannot be planned (no positive sale)
    attrs: pl.DataFrame  # SKU-master attributes per series, defaults filled
    profiles: pl.DataFrame  # every demand feature per series
    outlier_points: pl.DataFrame  # the flagged demand points


def profile_sales(cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame | None, as_of: dt.date) -> Profiled:
    """Calendar, SKU attributes and every demand feature per series: `profile_partition` of every series, then the
    whole-catalogue ABC classes (`features.profile.with_abc_classes`).

    A series is left out when it has no positive sale up to the last complete period (only zero quantities,
    or a first sale inside a week or month the as-of date cuts short): there is no demand to plan from.
    """
    p = profile_partition(cfg, sales, master, as_of, input_grain(cfg, sales))
    require_planned(p.keys.height, p.left_out.height, as_of)
    return replace(p, profiles=with_abc_classes(p.profiles, cfg))


def input_grain(cfg: BuffercastConfig, sales: pl.DataFrame) -> str:
    """The sales' grain (`input.grain`, or detected from every date of the sales when "auto"): decided once for
    the whole catalogue, never per partition of it."""
    if cfg.input.grain != "auto":
        return cfg.input.grain
    return detect_input_grain(sales.get_column("date").cast(pl.Date), cfg.frequency)


def require_planned(planned: int, left_out: int, as_of: dt.date) -> None:
    """An InputError when no series of the sales can be planned."""
    if planned == 0:
        raise InputError(
            f"sales: none of the {left_out:,} series (SKU x location) has a positive sale up to the last complete period before"
            f" the as-of date {as_of}, so there is nothing to plan. Check that input.sales_columns.quantity names the"
            " quantity column, and the as-of date (--as-of)."
        )


def profile_partition(cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame | None, as_of: dt.date, grain: str) -> Profiled:
    """`profile_sales` of the series in `sales` (all, or a partition of the catalogue), without the ABC class, which
    ranks each series against every other; `grain`: the whole catalogue's (`input_grain`)."""
    panel = to_periods(sales, freq=cfg.frequency, as_of=as_of, week_start=cfg.week_start, input_grain=grain)
    all_keys = series_keys(sales)
    keys = all_keys.join(panel.select("unique_id").unique(), on="unique_id", how="semi")
    left_out = all_keys.join(keys, on="unique_id", how="anti")
    attrs = sku_attributes(keys, master, cfg.defaults)
    profiles, flagged = sku_profiles(panel, attrs.select("unique_id", "unit_cost"), as_of=as_of, cfg=cfg)
    outlier_points = flagged.filter("is_outlier").select("unique_id", "ds", "y", "outlier_threshold")
    forecast_panel = cap_outliers(flagged) if cfg.outliers.exclude_from_sigma else panel
    return Profiled(forecast_panel, panel, keys, left_out, attrs, profiles, outlier_points)


def model_sets(cfg: BuffercastConfig) -> dict[str, list[str]]:
    """The competing models per demand class, from the config."""
    return {c: list(getattr(cfg.models, c)) for c in DEMAND_CLASSES}


def forecast_stage(
    cfg: BuffercastConfig,
    p: Profiled,
    progress: Callable[[str], None] | None = None,
    pool: Executor | None = None,
    workers: int | None = None,
) -> ForecastResult:
    """Backtest, select and forecast every planned series; `progress` gets a line per chunk of SKUs. `pool`, `workers`:
    where the chunks run (`forecasting.backtest.backtest_and_forecast`; by default local worker processes)."""
    attrs = forecast_inputs(p.profiles, p.attrs, cfg)
    return backtest_and_forecast(p.panel, attrs, model_sets(cfg), cfg, pool, progress=progress, workers=workers)


def scenarios(cfg: BuffercastConfig) -> list[Scenario]:
    """The disruption scenarios of the config, in periods."""

    def periods(days: int) -> int:
        return cfg.periods(days) if days > 0 else 0

    return [
        Scenario(sc.name, sc.kind, sc.factor, periods(sc.start_day), periods(sc.days), tuple(sc.suppliers) if sc.suppliers else None)
        for sc in cfg.scenarios
    ]


def calibrated_recommendations(
    cfg: BuffercastConfig, as_of: dt.date, p: Profiled, fc: ForecastResult, replay: bool = True, shares: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, Calibration | None]:
    """The calibration maps (`calibrate_buffers`) and the recommendations sized with them (`build_recommendations`).
    `shares`: the bootstrap's coverage of the backtest windows from an earlier call on the same profile and forecast
    (`Calibration.bootstrap_windows`; it does not depend on the targets or the policy), reused instead of redrawn."""
    calibration = calibrate_buffers(p.profiles, fc, cfg, p.panel, shares)
    recs = build_recommendations(
        as_of=as_of, profiles=p.profiles, attrs=p.attrs, fc=fc, cfg=cfg, panel=p.panel, calibration=calibration, replay=replay
    )
    return recs, calibration


def recommend_stage(
    cfg: BuffercastConfig, as_of: dt.date, p: Profiled, fc: ForecastResult
) -> tuple[pl.DataFrame, pl.DataFrame, Calibration | None]:
    """The recommendations (calibrated on the backtest, replayed over the held-out demand), the disruption stress
    test and the calibration (None when off)."""
    recs, calibration = calibrated_recommendations(cfg, as_of, p, fc)
    stress = build_scenarios(
        as_of=as_of,
        recs=recs,
        keys=p.keys,
        panel=p.panel,
        fc=fc,
        scenarios=scenarios(cfg),
        seed=cfg.seed,
        holding_rate=cfg.cost.holding_rate_per_year,
    )
    return recs, stress, calibration


@dataclass(frozen=True)
class Planned:
    profiled: Profiled
    forecast: ForecastResult
    recommendations: pl.DataFrame
    scenarios: pl.DataFrame
    calibration: Calibration | None


def plan_core(cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame | None = None, as_of: dt.date | None = None) -> Planned:
    """The whole pure pipeline in-process on validated sales (sku_id, date, quantity[, location_id]) up to `as_of`
    (default: the last date)."""
    as_of = as_of or sales["date"].max()
    p = profile_sales(cfg, sales.filter(pl.col("date") <= as_of), master, as_of)
    fc = forecast_stage(cfg, p)
    recs, stress, calibration = recommend_stage(cfg, as_of, p, fc)
    return Planned(p, fc, recs, stress, calibration)


def build_recommendations(
    *,
    as_of: dt.date,
    profiles: pl.DataFrame,
    attrs: pl.DataFrame,
    fc: ForecastResult,
    cfg: BuffercastConfig,
    panel: pl.DataFrame | None = None,
    calibration: Calibration | None = None,
    replay: bool = True,
    calendar: HeldOutCalendar | None = None,
) -> pl.DataFrame:
    """One row per series: profile (SBC, ABC, life cycle, shape, outliers) + chosen model and its errors + master
    attributes -> buffer decision, replayed over the SKU's held-out backtest demand (`evaluation.replay`).

    `panel` (unique_id, ds, y): the demand behind the bootstrap buffers of intermittent and lumpy SKUs and the
    simulation; without it every SKU gets the normal formula and the simulated columns are null. `calibration`
    (`calibrate_buffers`): the nominal level each normal-method target is sized at. `replay=False` leaves the
    simulated columns null (the rolling evaluation judges the plan on later demand instead). `calendar`: the whole
    catalogue's held-out calendar when these are a partition of its SKUs (`evaluation.replay.held_out_demand`).
    """
    v = cfg.volatility
    error_cv, volatility, xyz = sku_volatility(v.lead_time_classes, v.variable_from, v.erratic_from)
    skus = (
        profiles.join(attrs, on=ID, how="left")
        .join(
            fc.selection.select(
                ID,
                "model",
                "runner_up_model",
                "combined_models",
                "mase",
                "rmse",
                "mae",
                "bias",
                "sigma_method",
                "lead_time_periods",
                "review_periods",
                "mean_demand_per_period",
                "lead_time_demand",
                "review_lead_time_demand",
                "sigma_lead_time_demand",
                "sigma_review_lead_time_demand",
                "lead_time_rmse",
                backtest_windows=pl.col("windows"),
                model_fell_back=pl.col("fell_back").fill_null(False),
            ),
            on=ID,
            how="left",
        )
        .with_columns(error_cv=error_cv, volatility_class=volatility, xyz_class=xyz)
    )
    recs = recommend(skus, cfg, panel, calibration.levels if calibration is not None else None)
    simulated = ["simulated_cycle_service_level", "simulated_fill_rate", "simulated_average_on_hand", "simulated_stockout_periods"]
    if panel is not None and replay:
        sim = simulate_recommendations(recs, panel, fc.plan, seed=cfg.seed, cv=fc.cv, calendar=calendar).select(
            ID,
            "simulated_cycle_service_level",
            "simulated_fill_rate",
            simulated_average_on_hand="average_on_hand",
            simulated_stockout_periods=pl.col("stockout_periods").cast(pl.Int64),
        )
        recs = recs.join(sim, on=ID, how="left")
    else:
        recs = recs.with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in simulated[:3]], pl.lit(None, pl.Int64).alias(simulated[3]))
    return recs.with_columns(as_of=pl.lit(as_of)).select(output_columns("recommendations")).sort("sku_id", "location_id")


def build_scenarios(
    *, as_of: dt.date, recs: pl.DataFrame, keys: pl.DataFrame, panel: pl.DataFrame, fc: ForecastResult, scenarios: Sequence[Scenario],
    seed: int, holding_rate: float,
) -> pl.DataFrame:  # fmt: skip
    """The published `scenarios` table: each disruption under JIT, JIC and the recommended policy (`evaluation.replay`)."""
    outcomes = scenario_outcomes(recs=recs, keys=keys, panel=panel, fc=fc, scenarios=scenarios, seed=seed)
    return scenarios_table(as_of, outcomes, scenarios, holding_rate)


def scenario_outcomes(
    *, recs: pl.DataFrame, keys: pl.DataFrame, panel: pl.DataFrame, fc: ForecastResult, scenarios: Sequence[Scenario], seed: int,
    calendar: HeldOutCalendar | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Each SKU's replay under each disruption and policy (`evaluation.replay.stress_outcomes`): the per-partition
    part of `build_scenarios`; `calendar`: the whole catalogue's held-out calendar."""
    with_ids = recs.join(keys, on=["sku_id", "location_id"], how="inner", nulls_equal=True)
    return stress_outcomes(with_ids, panel, fc.plan, scenarios, seed=seed, cv=fc.cv, calendar=calendar)


def scenarios_table(as_of: dt.date, outcomes: pl.DataFrame, scenarios: Sequence[Scenario], holding_rate: float) -> pl.DataFrame:
    """The whole-catalogue part of `build_scenarios`: `outcomes` of every SKU, in SKU order, summed per scenario and policy."""
    table = stress_summary(outcomes, scenarios, holding_rate=holding_rate)
    return table.select(pl.lit(as_of).alias("as_of"), pl.all())


def calibrate_buffers(
    profiles: pl.DataFrame, fc: ForecastResult, cfg: BuffercastConfig, panel: pl.DataFrame | None, shares: pl.DataFrame | None = None
) -> Calibration | None:
    """The backtest's calibration maps per exposure, demand class and model family (`buffers.calibration`); None when
    off or without a backtest. `panel` (the demand the bootstrap buffers are drawn from): the intermittent and lumpy
    classes get maps of their bootstrap's coverage of each window (drawn from the history up to its cutoff); without
    it every class is sized by the normal formula and calibrated as such. `shares`: the bootstrap's window coverage
    of an earlier call on the same profiles, forecast, panel and bootstrap settings (the targets may differ), reused.

    Two steps, for a run over partitions of SKUs: `calibration_evidence` per partition, `fit_buffer_calibration` once."""
    if not calibrates(cfg, fc):
        return None
    return fit_buffer_calibration(cfg, calibration_evidence(profiles, fc, cfg, panel, shares))


def calibrates(cfg: BuffercastConfig, fc: ForecastResult) -> bool:
    """Whether calibration runs: on in config, and some SKU backtested."""
    return cfg.buffers.calibrate and not fc.cv.is_empty()


@dataclass(frozen=True)
class CalibrationEvidence:
    """What the calibration maps are fitted to, per SKU (a partition's, or the concatenation of every partition's
    in SKU order: `concat_evidence`)."""

    errors: pl.DataFrame  # each backtest window's lead-time errors (`evaluation.windows.window_errors`)
    normal: pl.DataFrame  # unique_id, demand_class, model_family of the normal-method SKUs
    shares: pl.DataFrame | None  # the bootstrap SKUs' coverage of each window; None without any


def calibration_evidence(
    profiles: pl.DataFrame, fc: ForecastResult, cfg: BuffercastConfig, panel: pl.DataFrame | None, shares: pl.DataFrame | None = None
) -> CalibrationEvidence:
    """The per-SKU part of `calibrate_buffers` (see there)."""
    b = cfg.buffers
    empirical = list(b.empirical_classes) if panel is not None else []
    normal = (
        profiles.filter(~pl.col("demand_class").is_in(empirical))
        .join(fc.selection.select(ID, "model"), on=ID, how="left")
        .select(ID, "demand_class", model_family=model_family(pl.col("model")))
    )
    bootstrap = profiles.filter(pl.col("demand_class").is_in(empirical)).select(ID, "demand_class")
    if panel is None or bootstrap.is_empty():
        shares = None
    elif shares is None:
        lead, review = pl.col("lead_time_periods"), pl.col("review_periods")
        windows = (
            window_demand(fc.cv.join(bootstrap, on=ID, how="semi"), fc.plan)
            .join(fc.plan.select(ID, "lead_time_periods", "review_periods"), on=ID)
            # The map is learnt at the planned lead time (like the normal maps' errors); the deployed bootstrap adds
            # the lead time's variability on top.
            .with_columns(
                lead_time_periods=pl.when(pl.col("exposure") == LEAD_TIME).then(lead).otherwise(lead + review),
                lead_time_std_periods=pl.lit(0.0),
            )
        )
        shares = (
            bootstrap_window_coverage(
                panel, windows, seed=cfg.seed, n_samples=b.bootstrap_samples, history_periods=cfg.bootstrap_history_periods
            )
            .join(bootstrap, on=ID, maintain_order="left")
            .select(ID, "demand_class", "exposure", "cutoff", "from_latest", "share_below")
        )
    return CalibrationEvidence(window_errors(fc.cv, fc.plan), normal, shares)


def concat_evidence(parts: Sequence[CalibrationEvidence]) -> CalibrationEvidence:
    """Every partition's evidence, in partition (SKU) order."""
    shares = [e.shares for e in parts if e.shares is not None]
    return CalibrationEvidence(
        pl.concat([e.errors for e in parts], how="vertical_relaxed"),
        pl.concat([e.normal for e in parts], how="vertical_relaxed"),
        pl.concat(shares, how="vertical_relaxed") if shares else None,
    )


def fit_buffer_calibration(cfg: BuffercastConfig, evidence: CalibrationEvidence) -> Calibration:
    """The whole-catalogue part of `calibrate_buffers`: the maps fitted to every SKU's evidence."""
    b = cfg.buffers
    calibration = fit_calibration(
        evidence.errors,
        evidence.normal,
        cfg.service_levels.target_levels(),
        min_points=b.calibration_min_points,
        family_min_points=b.calibration_family_min_points,
        empirical=evidence.shares,
    )
    return replace(calibration, bootstrap_windows=evidence.shares)
