"""Calibrated buffers (issue 7): an isotonic map from nominal to achieved coverage of the cumulative forecast error,
fitted on the earlier backtest windows and checked on the latest."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_pinball_loss

from buffers.calibration import fit_calibration, pinball_losses, window_errors
from buffers.recommend import recommend
from flows.config import load_config
from flows.core import backtest_settings
from forecasting.backtest import backtest_and_forecast
from tests.test_buffers import JIT_SKU, SETTINGS

TARGETS = [0.8, 0.9, 0.95, 0.97]


@pytest.fixture(scope="module")
def heavy_tailed():
    """400 SKUs of negative-binomial demand (mean 6, dispersion 0.4: heavy right tail), 2-period lead time, forecast
    by their mean over 12 backtest windows: the normal buffer z x sigma covers too little at high targets."""
    rng = np.random.default_rng(0)
    n, periods, r, mean = 400, 300, 0.4, 6.0
    y = rng.negative_binomial(r, r / (r + mean), (n, periods)).astype(float)
    y[:, 0] += 1
    ds = pl.date_range(dt.date(2025, 1, 1), dt.date(2025, 1, 1) + dt.timedelta(days=periods - 1), eager=True)
    ids = [f"s{i:04d}" for i in range(n)]
    panel = pl.DataFrame({"unique_id": np.repeat(ids, periods), "ds": pl.concat([ds] * n), "y": y.ravel()})
    attrs = (
        panel.group_by("unique_id")
        .agg(n_periods=pl.len().cast(pl.Int64))
        .with_columns(demand_class=pl.lit("erratic"), lead_time_periods=pl.lit(2.0), review_periods=pl.lit(0.0), seasonal=pl.lit(False))
    )
    s = replace(backtest_settings(load_config(None, {"backtest": {"n_jobs": 2}})), n_windows=12, step_periods=2, combination_k=0)
    fc = backtest_and_forecast(panel, attrs, {"erratic": ["HistoricAverage"], "insufficient_history": ["HistoricAverage"]}, s)
    return fc, attrs.select("unique_id", "demand_class")


def test_calibration_brings_held_out_coverage_within_2_points_where_the_normal_buffer_misses(heavy_tailed):
    fc, classes = heavy_tailed
    levels = fit_calibration(window_errors(fc.cv, fc.plan), classes, TARGETS).levels.rows_by_key(
        "service_level_target", named=True, unique=True
    )
    print("\n", pl.DataFrame(list(levels.values())))
    before = {t: levels[t]["heldout_before"] for t in TARGETS}
    after = {t: levels[t]["heldout_after"] for t in TARGETS}
    assert max(abs(before[t] - t) for t in TARGETS) > 0.02, before  # the normal buffer misses somewhere
    for t in TARGETS:
        assert levels[t]["status"] == "calibrated" and levels[t]["n_check"] == 400
        assert abs(after[t] - t) <= 0.02, (t, after[t])


def test_the_map_never_reads_the_held_out_windows(heavy_tailed):
    fc, classes = heavy_tailed
    errors = window_errors(fc.cv, fc.plan)
    first = fit_calibration(errors, classes, TARGETS)
    # Shuffle the latest window's errors across SKUs and scale them: only the held-out check may change.
    rng = np.random.default_rng(1)
    latest = errors.filter(pl.col("from_latest") == 0)
    shuffled = latest.with_columns(error=pl.Series(rng.permutation(latest["error"].to_numpy()) * 3.0))
    second = fit_calibration(pl.concat([errors.filter(pl.col("from_latest") > 0), shuffled]), classes, TARGETS)
    assert first.levels["calibrated_level"].to_list() == second.levels["calibrated_level"].to_list()
    assert first.curves.select("nominal", "achieved_before", "achieved_fitted").equals(
        second.curves.select("nominal", "achieved_before", "achieved_fitted")
    )
    assert first.levels["heldout_after"].to_list() != second.levels["heldout_after"].to_list()


def test_too_few_windows_keep_the_target_with_a_reason(heavy_tailed):
    fc, classes = heavy_tailed
    few = fit_calibration(window_errors(fc.cv, fc.plan), classes.head(3), TARGETS, min_points=100)
    assert set(few.levels["status"].str.head(15)) == {"too_few_windows"}
    assert few.levels["calibrated_level"].to_list() == TARGETS


def test_calibration_never_makes_a_buffer_negative_and_says_what_it_moved():
    sku = pl.DataFrame([JIT_SKU], schema_overrides={"pack_size": pl.Float64})
    calibration = pl.DataFrame(
        {"demand_class": ["smooth"], "service_level_target": [0.8], "calibrated_level": [0.3], "status": ["calibrated"]}
    )
    low = recommend(sku, SETTINGS, calibration=calibration).row(0, named=True)
    assert low["calibrated_service_level"] == 0.3 and low["safety_stock_units"] == 0 and low["reorder_point_units"] >= 0
    high = recommend(sku, SETTINGS, calibration=calibration.with_columns(calibrated_level=pl.lit(0.95))).row(0, named=True)
    assert high["calibration_status"] == "calibrated" and high["safety_stock_units"] > high["uncalibrated_safety_stock_units"]
    assert f"buffer {int(high['safety_stock_units'])} units instead of {int(high['uncalibrated_safety_stock_units'])}" in high["reasons"]
    assert recommend(sku, replace(SETTINGS, calibrate=False)).row(0, named=True)["calibration_status"] == "not_calibrated"


def test_pinball_loss_is_sklearns_per_class_and_quantile(heavy_tailed):
    fc, classes = heavy_tailed
    table = pinball_losses(fc.cv, classes, [0.5, 0.95]).rows_by_key("quantile", named=True, unique=True)
    assert table["q95"]["pinball_loss"] == pytest.approx(mean_pinball_loss(fc.cv["y"], fc.cv["q95"], alpha=0.95))
    assert table["q95"]["coverage"] == pytest.approx((fc.cv["y"] <= fc.cv["q95"]).mean())


def test_per_sku_pinball_loss_in_backtest_metrics_is_sklearns(heavy_tailed):
    fc, _ = heavy_tailed
    row = fc.metrics.filter(pl.col("unique_id") == "s0007").row(0, named=True)
    rows = fc.cv.filter((pl.col("unique_id") == "s0007") & (pl.col("step") <= 2))
    assert row["pinball_q95"] == pytest.approx(mean_pinball_loss(rows["y"], rows["q95"], alpha=0.95))
    assert row["pinball_q50"] == pytest.approx(mean_pinball_loss(rows["y"], rows["q50"], alpha=0.5))


def test_the_stress_tests_jit_and_jic_levels_are_calibrated_like_the_recommendation():
    sku = pl.DataFrame([JIT_SKU], schema_overrides={"pack_size": pl.Float64})  # B non-critical: matrix 95%, policy JIT (80%)
    plain = recommend(sku, SETTINGS).row(0, named=True)
    calibration = pl.DataFrame(
        {
            "demand_class": ["smooth", "smooth"],
            "service_level_target": [0.8, 0.95],
            "calibrated_level": [0.9, 0.99],
            "status": ["calibrated"] * 2,
        }
    )
    cal = recommend(sku, SETTINGS, calibration=calibration).row(0, named=True)
    assert cal["order_up_to_jit_units"] > plain["order_up_to_jit_units"]
    assert cal["order_up_to_jic_units"] > plain["order_up_to_jic_units"]
    assert cal["order_up_to_units"] == cal["order_up_to_jit_units"]  # the recommendation is JIT: the same level
