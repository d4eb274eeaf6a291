"""The pure pipeline (no Prefect, no MLflow, no I/O): from validated sales to recommendations and scenarios.

The flow (`flows/plan.py`) runs each stage as a task; tests and bench/ call the same functions in-process
(`plan_core`). Settings are built from the config here, in one place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from buffers.calibration import Calibration
from buffers.evaluate import Scenario
from buffers.pipeline import SkuDefaults, build_recommendations, build_scenarios, calibrate_buffers, forecast_inputs, sku_attributes
from buffers.policy import PolicyThresholds
from buffers.recommend import BufferSettings
from features.calendar import series_keys, to_periods
from features.outliers import cap_outliers
from features.profile import ProfileSettings, build_profiles
from features.sbc import DEMAND_CLASSES
from flows.config import BuffercastConfig
from forecasting.backtest import BacktestSettings, ForecastResult, backtest_and_forecast
from forecasting.models import ModelSpec


@dataclass(frozen=True)
class Profiled:
    panel: pl.DataFrame  # what is forecast: demand per series and period, explicit zeros (outliers capped if config says so)
    demand: pl.DataFrame  # the demand as sold (never capped): what planners see in the report
    keys: pl.DataFrame  # unique_id -> sku_id, location_id of the planned series
    left_out: pl.DataFrame  # series in the sales that cannot be planned (no positive sale)
    attrs: pl.DataFrame  # SKU-master attributes per series, defaults filled
    profiles: pl.DataFrame  # every demand feature per series
    outlier_points: pl.DataFrame  # the flagged demand points


def profile_settings(cfg: BuffercastConfig) -> ProfileSettings:
    """The profiling stage's settings from the config, life-cycle days converted to whole periods."""
    lc = cfg.life_cycle
    return ProfileSettings(
        adi_cutoff=cfg.sbc.adi_cutoff,
        cv2_cutoff=cfg.sbc.cv2_cutoff,
        min_periods=cfg.sbc.min_periods,
        new_periods=cfg.periods(lc.new_days),
        dead_periods=cfg.periods(lc.dead_days),
        window_periods=cfg.periods(lc.window_days),
        fast_from=lc.fast_from,
        slow_from=lc.slow_from,
        a_share=cfg.abc.a_share,
        b_share=cfg.abc.b_share,
        season_length=cfg.season_length,
        outlier_k=cfg.outliers.k,
    )


def profile_sales(cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame | None, as_of: dt.date) -> Profiled:
    """Calendar, SKU attributes and every demand feature per series.

    A series is left out when it has no positive sale up to the last complete period (only zero quantities,
    or a first sale inside a week or month the as-of date cuts short): there is no demand to plan from.
    """
    panel = to_periods(sales, freq=cfg.frequency, as_of=as_of, week_start=cfg.week_start, input_grain=cfg.input.grain)
    all_keys = series_keys(sales)
    keys = all_keys.join(panel.select("unique_id").unique(), on="unique_id", how="semi")
    left_out = all_keys.join(keys, on="unique_id", how="anti")
    attrs = sku_attributes(keys, master, SkuDefaults(**cfg.defaults.model_dump()))
    profiles, flagged = build_profiles(panel, attrs.select("unique_id", "unit_cost"), as_of=as_of, s=profile_settings(cfg))
    outlier_points = flagged.filter("is_outlier").select("unique_id", "ds", "y", "outlier_threshold")
    forecast_panel = cap_outliers(flagged) if cfg.outliers.exclude_from_sigma else panel
    return Profiled(forecast_panel, panel, keys, left_out, attrs, profiles, outlier_points)


def backtest_settings(cfg: BuffercastConfig) -> BacktestSettings:
    """The forecasting stage's settings from the config (the flow and bench/ use the same)."""
    return BacktestSettings(
        freq=cfg.frequency,
        n_windows=cfg.backtest.n_windows,
        min_windows=cfg.backtest.min_windows,
        step_periods=cfg.backtest.step_periods,
        refit=cfg.backtest.refit,
        min_train_periods=cfg.min_train_periods,
        max_horizon_periods=cfg.backtest.max_horizon_periods,
        horizon_buckets=cfg.backtest.horizon_buckets,
        selection_metric=cfg.backtest.selection_metric,
        n_jobs=cfg.backtest.n_jobs,
        fallback=cfg.models.fallback,
        spec=ModelSpec(
            season_length=cfg.season_length,
            ets_model=cfg.models.ets_model,
            tsb_alpha_d=cfg.models.tsb_alpha_d,
            tsb_alpha_p=cfg.models.tsb_alpha_p,
        ),
        quantiles=tuple(cfg.models.quantiles),
        empirical_window=cfg.periods(cfg.models.empirical_window_days),
        chunk_size=cfg.backtest.chunk_size,
        combination_k=cfg.backtest.combination_k,
    )


def model_sets(cfg: BuffercastConfig) -> dict[str, list[str]]:
    """The competing models per demand class, from the config."""
    return {c: list(getattr(cfg.models, c)) for c in DEMAND_CLASSES}


def forecast_stage(cfg: BuffercastConfig, p: Profiled) -> ForecastResult:
    """Backtest, select and forecast every planned series."""
    inputs = forecast_inputs(
        p.profiles, p.attrs, cfg.period_days, cfg.defaults.review_period_days, cfg.shape.seasonal_from, cfg.shape.trend_from
    )
    return backtest_and_forecast(p.panel, inputs, model_sets(cfg), backtest_settings(cfg))


def buffer_settings(cfg: BuffercastConfig) -> BufferSettings:
    """The buffer engine's settings from the config (the flow, tests and bench/ use the same)."""
    sl, b = cfg.service_levels, cfg.buffers
    return BufferSettings(
        period_days=cfg.period_days,
        holding_rate_per_year=cfg.cost.holding_rate_per_year,
        jit_service_level=sl.jit,
        service_levels={"critical": sl.critical, "non_critical": sl.non_critical},
        service_measures={"critical": sl.measure.critical, "non_critical": sl.measure.non_critical},
        thresholds=PolicyThresholds(**cfg.policy.model_dump()),
        order_cost=cfg.cost.order_cost,
        empirical_classes=tuple(b.empirical_classes),
        bootstrap_samples=b.bootstrap_samples,
        bootstrap_history_periods=cfg.periods(b.bootstrap_history_days),
        seed=cfg.seed,
        declining_trend_strength=b.declining_trend_strength,
        declining_ratio=b.declining_ratio,
        calibrate=b.calibrate,
        calibration_min_points=b.calibration_min_points,
        calibration_family_min_points=b.calibration_family_min_points,
    )


def scenarios(cfg: BuffercastConfig) -> list[Scenario]:
    """The disruption scenarios of the config, in periods."""

    def periods(days: int) -> int:
        return cfg.periods(days) if days > 0 else 0

    return [
        Scenario(sc.name, sc.kind, sc.factor, periods(sc.start_day), periods(sc.days), tuple(sc.suppliers) if sc.suppliers else None)
        for sc in cfg.scenarios
    ]


def recommend_stage(
    cfg: BuffercastConfig, as_of: dt.date, p: Profiled, fc: ForecastResult
) -> tuple[pl.DataFrame, pl.DataFrame, Calibration | None]:
    """The recommendations (calibrated on the backtest, replayed over the held-out demand), the disruption stress
    test and the calibration (None when off)."""
    settings = buffer_settings(cfg)
    calibration = calibrate_buffers(p.profiles, fc, settings, p.panel)
    recs = build_recommendations(
        as_of=as_of,
        profiles=p.profiles,
        attrs=p.attrs,
        fc=fc,
        settings=settings,
        variable_from=cfg.volatility.variable_from,
        erratic_from=cfg.volatility.erratic_from,
        panel=p.panel,
        calibration=calibration,
    )
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
