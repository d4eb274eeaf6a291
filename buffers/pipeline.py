"""Pure assembly of the per-SKU tables the flow publishes: the joins and defaults between the stages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import polars as pl

from buffers.calibration import LEAD_TIME, Calibration, fit_calibration, model_family, window_demand, window_errors
from buffers.evaluate import Scenario, simulate_recommendations, stress_test
from buffers.lead_time_demand import bootstrap_window_coverage
from buffers.recommend import BufferSettings, recommend
from features.xyz import volatility_classes
from forecasting.backtest import ForecastResult

ID = "unique_id"


@dataclass(frozen=True)
class SkuDefaults:
    """Config defaults for SKUs the master lacks."""

    lead_time_days: float
    lead_time_std_days: float
    unit_cost: float
    review_period_days: float


def sku_attributes(keys: pl.DataFrame, master: pl.DataFrame | None, d: SkuDefaults) -> pl.DataFrame:
    """Per series (unique_id): the master's attributes of its sku_id, config defaults where the master lacks the SKU.

    `in_sku_master` records which rows came from the master (the reasons say so when not).
    """
    cols = {
        "unit_cost": pl.Float64,
        "lead_time_days": pl.Float64,
        "lead_time_std_days": pl.Float64,
        "critical": pl.Boolean,
        "pack_size": pl.Float64,
        "supplier_id": pl.String,
    }
    if master is None:
        master = pl.DataFrame(schema={"sku_id": pl.String, **cols})
    joined = keys.join(master.select("sku_id", *cols).with_columns(_in=pl.lit(True)), on="sku_id", how="left")
    in_master = pl.col("_in").fill_null(False)
    return joined.select(
        ID,
        "sku_id",
        "location_id",
        pl.col("unit_cost").fill_null(d.unit_cost),
        pl.col("lead_time_days").fill_null(d.lead_time_days),
        # A master row without a lead-time std means a reliable lead time; only a missing row takes the default.
        pl.when(in_master)
        .then(pl.col("lead_time_std_days").fill_null(0.0))
        .otherwise(pl.lit(d.lead_time_std_days))
        .alias("lead_time_std_days"),
        pl.col("critical").fill_null(False),
        "pack_size",
        "supplier_id",
        in_master.alias("in_sku_master"),
    )


def forecast_inputs(
    profiles: pl.DataFrame,
    attrs: pl.DataFrame,
    period_days: float,
    review_period_days: float,
    seasonal_from: float,
    trend_from: float = 0.0,
) -> pl.DataFrame:
    """What the forecasting stage needs per series: class, history length, lead time and review period in periods,
    whether to skip the backtest (new products) and whether seasonal models make sense (seasonal strength)."""
    return profiles.select(
        ID,
        "demand_class",
        "n_periods",
        skip_backtest=pl.col("life_cycle") == "new",
        seasonal=pl.col("seasonal_strength").fill_null(0.0) >= seasonal_from,
        # A SKU too short to measure its trend keeps the trend models (null strength: not known to be flat).
        trended=pl.col("trend_strength").fill_null(1.0) >= trend_from,
    ).join(
        attrs.select(
            ID,
            lead_time_periods=pl.col("lead_time_days") / period_days,
            # At least one period: orders are placed at most once a period, and the order-up-to level must cover it.
            review_periods=pl.lit(max(review_period_days / period_days, 1.0)),
        ),
        on=ID,
        how="left",
    )


#: The published `recommendations` table, schema version 1, in order (README documents each column).
RECOMMENDATION_COLUMNS = (
    "as_of", "sku_id", "location_id", "policy", "safety_stock_units", "reorder_point_units", "order_up_to_units",
    "min_units", "max_units", "order_quantity_units", "service_level_target", "service_level_measure", "expected_service_level",
    "safety_stock_method", "calibrated_service_level", "calibrated_review_service_level", "calibration_status", "calibration_map",
    "uncalibrated_safety_stock_units",
    "demand_class", "adi", "cv2", "volatility_class", "xyz_class", "error_cv", "abc_class", "annual_value", "critical",
    "life_cycle", "fsn_class", "movement_frequency", "periods_since_last_sale", "trend_strength", "seasonal_strength",
    "n_outliers", "outlier_threshold",
    "model", "runner_up_model", "combined_models", "mase", "rmse", "mae", "bias", "backtest_windows", "sigma_method",
    "lead_time_days", "lead_time_std_days", "lead_time_periods", "review_periods", "mean_demand_per_period", "lead_time_demand",
    "review_lead_time_demand", "sigma_lead_time_demand", "sigma_review_lead_time_demand", "sigma_total", "safety_factor_z",
    "economic_order_quantity", "unit_cost", "pack_size", "supplier_id", "in_sku_master",
    "safety_stock_value", "holding_cost_per_year", "capital_tied_up", "expected_turns", "capital_at_risk",
    "textbook_safety_stock_units", "textbook_safety_stock_value", "order_up_to_jit_units", "order_up_to_jic_units",
    "simulated_cycle_service_level", "simulated_fill_rate", "simulated_average_on_hand", "simulated_stockout_periods",
    "reasons",
    "flag_critical", "flag_long_lead_time", "flag_unreliable_lead_time", "flag_erratic_error", "flag_lumpy_demand",
    "flag_moderate_lead_time", "flag_variable_lead_time", "flag_variable_error", "flag_irregular_demand", "flag_no_backtest",
    "flag_dead", "flag_new", "flag_declining", "flag_obsolescence_risk", "model_fell_back", "n_periods", "n_nonzero",
)  # fmt: skip


def build_recommendations(
    *,
    as_of: dt.date,
    profiles: pl.DataFrame,
    attrs: pl.DataFrame,
    fc: ForecastResult,
    settings: BufferSettings,
    variable_from: float,
    erratic_from: float,
    panel: pl.DataFrame | None = None,
    calibration: Calibration | None = None,
) -> pl.DataFrame:
    """One row per series: profile (SBC, ABC, life cycle, shape, outliers) + chosen model and its errors + master
    attributes -> buffer decision, replayed over the SKU's held-out backtest demand (`buffers.evaluate`).

    `panel` (unique_id, ds, y): the demand behind the bootstrap buffers of intermittent and lumpy SKUs and the
    simulation; without it every SKU gets the normal formula and the simulated columns are null. `calibration`
    (`calibrate_buffers`): the nominal level each normal-method target is sized at.
    """
    error_cv, volatility, xyz = volatility_classes(pl.col("rmse"), pl.col("mean_demand"), variable_from, erratic_from)
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
                backtest_windows=pl.col("windows"),
                model_fell_back=pl.col("fell_back").fill_null(False),
            ),
            on=ID,
            how="left",
        )
        .with_columns(error_cv=error_cv, volatility_class=volatility, xyz_class=xyz)
    )
    recs = recommend(skus, settings, panel, calibration.levels if calibration is not None else None)
    simulated = ["simulated_cycle_service_level", "simulated_fill_rate", "simulated_average_on_hand", "simulated_stockout_periods"]
    if panel is not None:
        sim = simulate_recommendations(recs, panel, fc.plan, seed=settings.seed, cv=fc.cv).select(
            ID,
            "simulated_cycle_service_level",
            "simulated_fill_rate",
            simulated_average_on_hand="average_on_hand",
            simulated_stockout_periods=pl.col("stockout_periods").cast(pl.Int64),
        )
        recs = recs.join(sim, on=ID, how="left")
    else:
        recs = recs.with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in simulated[:3]], pl.lit(None, pl.Int64).alias(simulated[3]))
    return recs.with_columns(as_of=pl.lit(as_of)).select(RECOMMENDATION_COLUMNS).sort("sku_id", "location_id")


def build_scenarios(
    *, as_of: dt.date, recs: pl.DataFrame, keys: pl.DataFrame, panel: pl.DataFrame, fc: ForecastResult, scenarios: Sequence[Scenario],
    seed: int, holding_rate: float,
) -> pl.DataFrame:  # fmt: skip
    """The published `scenarios` table: each disruption under JIT, JIC and the recommended policy (`buffers.evaluate`)."""
    with_ids = recs.join(keys, on=["sku_id", "location_id"], how="inner", nulls_equal=True)
    table = stress_test(with_ids, panel, fc.plan, scenarios, seed=seed, holding_rate=holding_rate, cv=fc.cv)
    return table.select(pl.lit(as_of).alias("as_of"), pl.all())


def calibrate_buffers(
    profiles: pl.DataFrame, fc: ForecastResult, settings: BufferSettings, panel: pl.DataFrame | None
) -> Calibration | None:
    """The backtest's calibration maps per exposure, demand class and model family (`buffers.calibration`); None when
    off or without a backtest. `panel` (the demand the bootstrap buffers are drawn from): the intermittent and lumpy
    classes get maps of their bootstrap's coverage of each window (drawn from the history up to its cutoff); without
    it every class is sized by the normal formula and calibrated as such."""
    if not settings.calibrate or fc.cv.is_empty():
        return None
    empirical = list(settings.empirical_classes) if panel is not None else []
    normal = (
        profiles.filter(~pl.col("demand_class").is_in(empirical))
        .join(fc.selection.select(ID, "model"), on=ID, how="left")
        .select(ID, "demand_class", model_family=model_family(pl.col("model")))
    )
    bootstrap = profiles.filter(pl.col("demand_class").is_in(empirical)).select(ID, "demand_class")
    shares = None
    if panel is not None and not bootstrap.is_empty():
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
                panel, windows, seed=settings.seed, n_samples=settings.bootstrap_samples, history_periods=settings.bootstrap_history_periods
            )
            .join(bootstrap, on=ID, maintain_order="left")
            .select(ID, "demand_class", "exposure", "cutoff", "from_latest", "share_below")
        )
    calibration = fit_calibration(
        window_errors(fc.cv, fc.plan),
        normal,
        settings.target_levels,
        min_points=settings.calibration_min_points,
        family_min_points=settings.calibration_family_min_points,
        empirical=shares,
    )
    return replace(calibration, bootstrap_windows=shares)
