"""Proof by simulation on the generated catalogue: per service-level target, the recommended buffers, replayed over
each SKU's held-out backtest demand with the forecast updated at each backtest origin, achieve their target within
3 points (issue 5). Hybrid buffers cover only the variable part by design: they are held to their
`expected_service_level` instead.

The replay is out of sample: each window's forecast comes from its own origin, and a normal-method buffer is scaled
by the sigma of the SKU's other windows over the sigma of all of them (`evaluation.replay.out_of_window_sigma_ratios`),
so no window is replayed against a buffer that has seen it. The default (calibrated) buffers are asserted; the
engine alone (`buffers.calibrate: false`) is printed next to them for the closing note.
"""

from __future__ import annotations

import polars as pl
import pytest

from configs.schema import load_config
from flows.sample_data import generate_catalogue
from pipeline.stages import plan_core, recommend_stage

MIN_SKUS = 15  # a target class with fewer SKUs is reported, not asserted (a handful of cycles each is noise)


@pytest.fixture(scope="module")
def planned():
    sales, master = generate_catalogue(n_skus=300, seed=7)
    cfg = load_config(None, {"backtest": {"n_jobs": 2}})
    return cfg, plan_core(cfg, sales, master)


def achieved_by_target(recs: pl.DataFrame) -> pl.DataFrame:
    achieved = (
        pl.when(pl.col("service_level_measure") == "fill_rate").then("simulated_fill_rate").otherwise("simulated_cycle_service_level")
    )
    return (
        recs.filter(pl.col("safety_stock_units") > 0)
        .with_columns(_achieved=achieved, hybrid=pl.col("policy") == "hybrid")
        .filter(pl.col("_achieved").is_not_null())
        .group_by("service_level_measure", "service_level_target", "hybrid")
        .agg(skus=pl.len(), achieved=pl.col("_achieved").mean(), expected=pl.col("expected_service_level").mean())
        .sort("service_level_measure", "service_level_target", "hybrid")
    )


def test_each_target_class_achieves_its_service_level_within_3_points(planned):
    cfg, result = planned
    uncalibrated = cfg.model_copy(update={"buffers": cfg.buffers.model_copy(update={"calibrate": False})})
    as_of = result.profiled.panel["ds"].max()
    recs, _, calibration = recommend_stage(uncalibrated, as_of, result.profiled, result.forecast)
    assert calibration is None and set(recs["calibration_status"]) <= {"not_calibrated", "fill_rate_target"}
    print("\nuncalibrated (buffers.calibrate: false)\n", achieved_by_target(recs))
    table = achieved_by_target(result.recommendations)
    print("\ncalibrated (default)\n", table)
    asserted = table.filter(pl.col("skus") >= MIN_SKUS)
    assert asserted.height >= 4
    for row in asserted.iter_rows(named=True):
        goal = row["expected"] if row["hybrid"] else row["service_level_target"]
        assert abs(row["achieved"] - goal) <= 0.03, row


def test_the_textbook_buffer_and_the_scenarios_are_reported(planned):
    recs, stress = planned[1].recommendations, planned[1].scenarios
    assert recs["textbook_safety_stock_value"].sum() > 0 and recs["safety_stock_value"].sum() > 0
    fill = {(r["scenario"], r["policy"]): r["simulated_fill_rate"] for r in stress.iter_rows(named=True)}
    # Doubling every lead time hurts every policy; the full JIC buffer keeps more demand served than JIT.
    for policy in ("JIT", "JIC", "recommended"):
        assert fill[("lead_time_x2", policy)] < fill[("baseline", policy)]
    assert fill[("baseline", "JIT")] < fill[("baseline", "JIC")]
