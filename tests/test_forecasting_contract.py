"""The forecasting stage's contract under the default config: every model set survives awkward series, every SKU
gets a forecast, quantiles and a reason; quantiles are calibrated where the truth is known; the combination
competes fairly."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import polars as pl
import pytest

from configs.schema import load_config
from evaluation.metrics import quantile_name
from forecasting.backtest import COMBINATION, backtest_and_forecast
from pipeline.stages import model_sets, plan_core

END = dt.date(2026, 6, 30)
CFG = load_config(None, {"backtest": {"n_jobs": 1}})
SETTINGS = CFG
SETS = model_sets(CFG)
QS = [quantile_name(p) for p in CFG.models.quantiles]

AWKWARD = {
    "all-zero": np.zeros(200),
    "single-spike": np.r_[np.zeros(120), 40.0, np.zeros(79)],
    "one-sale": np.r_[3.0, np.zeros(199)],
    "shorter-than-season": np.array([2.0, 0.0, 5.0, 1.0, 3.0]),
    "ten-years": np.random.default_rng(1).poisson(3, 3650).astype(float),
    "huge-spike": np.r_[np.ones(150), 500.0, np.ones(49)],
}


def series(uid: str, y: np.ndarray, end: dt.date = END) -> pl.DataFrame:
    ds = pl.date_range(end - dt.timedelta(days=len(y) - 1), end, eager=True)
    return pl.DataFrame({"unique_id": uid, "ds": ds, "y": np.asarray(y, dtype=float)})


def attrs(panel: pl.DataFrame, demand_class: str, lead: float = 14.0, review: float = 7.0) -> pl.DataFrame:
    return (
        panel.group_by("unique_id")
        .agg(n_periods=pl.len())
        .with_columns(demand_class=pl.lit(demand_class), lead_time_periods=pl.lit(lead), review_periods=pl.lit(review))
    )


@pytest.mark.parametrize("demand_class", ["smooth", "erratic", "intermittent", "lumpy", "insufficient_history"])
def test_every_model_set_gives_every_awkward_series_a_forecast_and_quantiles(demand_class):
    """As statsforecast's test_fitted_sparse does for its intermittent models, over every set of the default config."""
    panel = pl.concat([series(name, y) for name, y in AWKWARD.items()])
    r = backtest_and_forecast(panel, attrs(panel, demand_class), SETS, SETTINGS)
    sel = r.selection.rows_by_key("unique_id", named=True, unique=True)
    assert set(sel) == set(AWKWARD)
    for name, row in sel.items():
        assert row["model"] is not None, name
        assert row["sigma_lead_time_demand"] is not None and row["sigma_lead_time_demand"] >= 0, name
        assert row["lead_time_demand"] is not None and row["lead_time_demand"] >= 0, name
    # Horizon = lead time + review period = 21 days, for every series, with finite, ordered, non-negative quantiles.
    per_sku = r.forecasts.group_by("unique_id").agg(pl.len(), pl.col("model").n_unique())
    assert per_sku["len"].to_list() == [21] * len(AWKWARD) and per_sku["model"].max() == 1
    q = r.forecasts.select("forecast", *QS)
    assert q.null_count().sum_horizontal().item() == 0
    assert (q.min_horizontal() >= 0).all()
    for lo, hi in itertools.pairwise(QS):
        assert (r.forecasts[hi] >= r.forecasts[lo] - 1e-9).all(), (lo, hi)
    # The all-zero series forecasts zero.
    assert r.forecasts.filter(pl.col("unique_id") == "all-zero")["forecast"].max() == pytest.approx(0.0, abs=1e-9)


def test_every_sku_gets_a_forecast_and_a_reason_through_profiling_and_buffers():
    """The pure pipeline the flow runs (calendar, profile, forecast, recommend) on the awkward catalogue."""
    sales = pl.concat(
        [
            series(name, y).select(sku_id=pl.col("unique_id"), date=pl.col("ds"), quantity=pl.col("y"))
            for name, y in AWKWARD.items()
            if name != "all-zero"  # no sale at all: left out before planning, as the flow logs
        ]
    ).with_columns(location_id=pl.lit(None, pl.String))
    planned = plan_core(CFG, sales, None, END)
    recs, fc = planned.recommendations, planned.forecast
    assert recs.height == len(AWKWARD) - 1
    assert recs["model"].null_count() == 0 and (recs["reasons"].str.len_chars() > 10).all()
    assert set(fc.forecasts["unique_id"]) == set(recs["sku_id"])


@pytest.mark.parametrize(("mean", "demand_class"), [(6.0, "smooth"), (25.0, "smooth"), (0.4, "intermittent")])
def test_q95_backtest_coverage_is_calibrated_on_poisson_demand(mean, demand_class):
    """Known truth: stationary Poisson demand. The chosen models' 95% quantile covers 90-99% of backtest actuals."""
    rng = np.random.default_rng(int(mean * 10))
    panel = pl.concat([series(f"s{i:02d}", rng.poisson(mean, 400)) for i in range(30)])
    r = backtest_and_forecast(panel, attrs(panel, demand_class), SETS, SETTINGS)
    chosen = r.metrics.join(r.selection.select("unique_id", "model"), on=["unique_id", "model"], how="semi")
    coverage = chosen["coverage_q95"].mean()
    assert 0.90 <= coverage <= 0.99, coverage
    # Coverage grows with the quantile level (nested quantiles).
    means = [chosen[f"coverage_{q}"].mean() for q in QS]
    assert means == sorted(means)
    # The published backtest rows recompute the published coverage.
    steps = r.cv.join(r.plan.select("unique_id", "lead_time_periods"), on="unique_id").filter(
        pl.col("step") <= pl.col("lead_time_periods").ceil()
    )
    recomputed = steps.group_by("unique_id").agg((pl.col("y") <= pl.col("q95")).mean())["y"].mean()
    assert steps.height and recomputed == pytest.approx(coverage, rel=1e-9)


def test_the_combination_is_the_mean_of_the_best_two_and_chosen_only_when_it_backtests_better():
    rng = np.random.default_rng(4)
    t = np.arange(300)
    panel = pl.concat(
        [series(f"w{i}", rng.poisson(20 + 6 * np.sin(2 * np.pi * t / 7) + 0.02 * i * t)) for i in range(8)]
        + [series(f"p{i}", rng.poisson(12, 300)) for i in range(8)]
    )
    r = backtest_and_forecast(panel, attrs(panel, "smooth", lead=5.0, review=2.0), SETS, SETTINGS, keep_all_backtests=True)
    combo = r.metrics.filter(pl.col("model") == COMBINATION)
    assert combo.height == panel["unique_id"].n_unique()
    # Its backtest is the row-wise mean of the two best single models.
    sel = r.selection.rows_by_key("unique_id", named=True, unique=True)
    for uid in ("w3", "p5"):
        singles = r.metrics.filter((pl.col("unique_id") == uid) & (pl.col("model") != COMBINATION)).sort("mase", "model")
        best_two = singles["model"].head(2).to_list()
        cv = r.cv.filter(pl.col("unique_id") == uid)
        mean = cv.filter(pl.col("model").is_in(best_two)).group_by("cutoff", "ds").agg(pl.col("forecast").mean())
        got = cv.filter(pl.col("model") == COMBINATION).join(mean, on=["cutoff", "ds"], suffix="_mean")
        assert got.height and np.allclose(got["forecast"], got["forecast_mean"])
        best_single = singles["mase"][0]
        combo_mase = combo.filter(pl.col("unique_id") == uid)["mase"].item()
        assert (sel[uid]["model"] == COMBINATION) == (combo_mase < best_single)
        if sel[uid]["model"] == COMBINATION:
            assert sel[uid]["combined_models"] == "+".join(sorted(best_two))
    # Off switch: no combination rows at all.
    off = backtest_and_forecast(
        panel, attrs(panel, "smooth", lead=5.0, review=2.0), SETS, SETTINGS.updated({"backtest": {"combination_k": 0}})
    )
    assert COMBINATION not in set(off.metrics["model"]) and COMBINATION not in set(off.selection["model"])


def test_chunking_does_not_change_the_results():
    rng = np.random.default_rng(9)
    panel = pl.concat([series(f"s{i:02d}", rng.poisson(rng.uniform(0.2, 15), 250)) for i in range(12)])
    classes = pl.DataFrame({"unique_id": [f"s{i:02d}" for i in range(12)], "demand_class": ["smooth", "intermittent"] * 6})
    a = attrs(panel, "smooth").drop("demand_class").join(classes, on="unique_id")
    whole = backtest_and_forecast(panel, a, SETS, SETTINGS)
    chunked = backtest_and_forecast(panel, a, SETS, SETTINGS.updated({"backtest": {"chunk_size": 5}}))
    for name in ("cv", "metrics", "selection", "forecasts"):
        assert getattr(chunked, name).equals(getattr(whole, name)), name


def test_skus_without_a_trend_skip_the_trend_models():
    """Theta is exponential smoothing plus a drift: where the profile shows no trend it is not fitted (10x an ETS fit)."""
    rng = np.random.default_rng(2)
    panel = pl.concat([series("flat", rng.poisson(12, 300)), series("rising", rng.poisson(np.linspace(5, 40, 300)))])
    a = attrs(panel, "smooth").with_columns(trended=pl.col("unique_id") == "rising")
    r = backtest_and_forecast(panel, a, SETS, SETTINGS.updated({"backtest": {"combination_k": 0}}))
    fitted = {u: set(m) for u, m in r.metrics.group_by("unique_id").agg("model").iter_rows()}
    assert "Theta" not in fitted["flat"] and "AutoETS" in fitted["flat"]
    assert "Theta" in fitted["rising"]
