"""Backtest, metrics, selection and the lead-time sigma against hand computations."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from configs.schema import BuffercastConfig
from evaluation.windows import lead_time_weights
from features.xyz import volatility_classes
from forecasting.backtest import _flag_fallbacks, backtest_and_forecast, plan_horizons, select_models
from forecasting.models import FALLBACK_ALIAS

SETTINGS = BuffercastConfig.model_validate(
    {
        "frequency": "D",
        "models": {"season_length": 7, "fallback": "HistoricAverage"},
        "backtest": {
            "n_windows": 4, "min_windows": 2, "step_periods": None, "refit": True, "min_train_periods": 28, "max_horizon_periods": 120,
            "horizon_buckets": [1, 2, 4, 8, 16, 32, 64], "selection_metric": "mase", "n_jobs": 1, "combination_k": 0,
        },
    }
)  # fmt: skip
MODEL_SETS = {
    "smooth": ["AutoETS", "SeasonalNaive", "HistoricAverage"],
    "erratic": ["AutoETS", "SeasonalNaive", "HistoricAverage"],
    "intermittent": ["CrostonSBA", "TSB", "ADIDA", "HistoricAverage"],
    "lumpy": ["CrostonSBA", "TSB", "ADIDA", "HistoricAverage"],
    "insufficient_history": ["HistoricAverage"],
}
END = dt.date(2026, 6, 30)


def series(uid: str, y: np.ndarray) -> pl.DataFrame:
    ds = pl.date_range(END - dt.timedelta(days=len(y) - 1), END, eager=True)
    return pl.DataFrame({"unique_id": uid, "ds": ds, "y": np.asarray(y, dtype=float)})


def attrs_for(panel: pl.DataFrame, classes: dict[str, str], lead: dict[str, float], review: float = 0.0) -> pl.DataFrame:
    return (
        panel.group_by("unique_id")
        .agg(n_periods=pl.len())
        .with_columns(
            demand_class=pl.col("unique_id").replace_strict(classes),
            lead_time_periods=pl.col("unique_id").replace_strict(lead, return_dtype=pl.Float64),
            review_periods=pl.lit(review),
        )
    )


def test_lead_time_weights_sum_to_the_lead_time():
    frame = pl.DataFrame({"step": [1, 2, 3, 4, 5]})
    w = frame.select(lead_time_weights(pl.col("step"), pl.lit(2.5))).to_series().to_list()
    assert w == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert frame.select(lead_time_weights(pl.col("step"), pl.lit(4.0)).sum()).item() == 4.0


def test_plan_horizons_buckets_and_windows():
    attrs = pl.DataFrame(
        {
            "unique_id": ["a", "b", "c", "d"],
            "demand_class": ["smooth", "smooth", "intermittent", "insufficient_history"],
            "n_periods": [400, 40, 400, 400],
            "lead_time_periods": [5.0, 5.0, 30.5, 1.0],
            "review_periods": [0.0, 0.0, 7.0, 0.0],
        }
    )
    plan = plan_horizons(attrs, SETTINGS).rows_by_key("unique_id", named=True, unique=True)
    assert (plan["a"]["horizon"], plan["a"]["bucket"], plan["a"]["step"], plan["a"]["windows"]) == (5, 8, 4, 4)
    assert plan["a"]["backtested"] and plan["a"]["model_set"] == "smooth"
    # 40 periods: 40 - 28 - 8 = 4 -> 4 // 4 + 1 = 2 windows
    assert plan["b"]["windows"] == 2 and plan["b"]["backtested"]
    assert (plan["c"]["horizon"], plan["c"]["bucket"], plan["c"]["step"]) == (38, 64, 32)
    assert not plan["d"]["backtested"] and plan["d"]["model_set"] == "insufficient_history" and plan["d"]["windows"] == 0


def test_backtest_errors_and_lead_time_sigma_match_a_manual_computation():
    rng = np.random.default_rng(3)
    panel = pl.concat(
        [
            series("smooth", rng.poisson(20, 200) + 5 * np.tile([0, 1, 2, 3, 2, 1, 0], 200)[:200]),
            series("sparse", rng.poisson(0.3, 200) * rng.integers(1, 6, 200)),
            series("short", rng.poisson(4, 20)),
        ]
    )
    attrs = attrs_for(
        panel, {"smooth": "smooth", "sparse": "intermittent", "short": "insufficient_history"}, {"smooth": 3.0, "sparse": 6.5, "short": 4.0}
    )
    lines: list[str] = []
    r = backtest_and_forecast(panel, attrs, MODEL_SETS, SETTINGS, keep_all_backtests=True, progress=lines.append)
    # Progress: a line per chunk (here one per demand class), counting up to every SKU.
    assert len(lines) == 3 and lines[-1].startswith("forecast 3/3 SKUs, ") and lines[-1].endswith(" s")

    # Metrics: MAE and RMSE per model recomputed from the published backtest rows.
    cv = r.cv.filter(pl.col("unique_id") == "smooth")
    for model in MODEL_SETS["smooth"]:
        rows = cv.filter(pl.col("model") == model)
        err = (rows["forecast"] - rows["y"]).to_numpy()
        m = r.metrics.filter((pl.col("unique_id") == "smooth") & (pl.col("model") == model)).row(0, named=True)
        assert m["mae"] == pytest.approx(np.abs(err).mean())
        assert m["rmse"] == pytest.approx(math.sqrt((err**2).mean()))  # equal windows: RMSE over all points
        assert m["bias"] == pytest.approx(err.mean())
        # Cumulative lead-time error: per window, the sum of the first L=3 errors.
        per_window = rows.filter(pl.col("step") <= 3).group_by("cutoff").agg((pl.col("forecast") - pl.col("y")).sum())
        lt = per_window.to_series(1).to_numpy()
        assert m["lead_time_rmse"] == pytest.approx(math.sqrt((lt**2).mean()))
        assert m["n_windows"] == 4

    sel = r.selection.rows_by_key("unique_id", named=True, unique=True)
    best = r.metrics.filter(pl.col("unique_id") == "smooth").sort("mase").row(0, named=True)
    assert sel["smooth"]["model"] == best["model"]
    assert sel["smooth"]["sigma_lead_time_demand"] == pytest.approx(best["lead_time_rmse"])
    assert sel["smooth"]["runner_up_model"] not in (None, best["model"])
    assert sel["sparse"]["model"] in MODEL_SETS["intermittent"]

    # Not backtested: sigma = one-step in-sample RMSE x sqrt(L), HistoricAverage's one-step error being the std
    # (ddof 0), floored at the Poisson spread sqrt(mean).
    short_y = panel.filter(pl.col("unique_id") == "short")["y"].to_numpy()
    assert not sel["short"]["backtested"]
    assert sel["short"]["sigma_method"] == "one_step_rmse_x_sqrt_lead_time"
    assert sel["short"]["sigma_lead_time_demand"] == pytest.approx(max(short_y.std(), math.sqrt(short_y.mean())) * 2.0)
    assert sel["short"]["lead_time_demand"] == pytest.approx(short_y.mean() * 4.0)

    # The future: one row per period of the horizon (L + R, whole periods), the chosen model only, never negative.
    fut = r.forecasts.group_by("unique_id").agg(pl.len(), pl.col("model").n_unique(), pl.col("forecast").min())
    assert dict(zip(fut["unique_id"], fut["len"], strict=True)) == {"smooth": 3, "sparse": 7, "short": 4}
    assert fut["model"].max() == 1 and fut["forecast"].min() >= 0
    assert r.forecasts["ds"].min() == END + dt.timedelta(days=1)


@pytest.mark.parametrize("refit", [True, False])
def test_refit_switch_runs_every_model_set(refit):
    rng = np.random.default_rng(5)
    panel = pl.concat([series("a", rng.poisson(10, 120)), series("b", rng.poisson(0.2, 120) * 3)])
    attrs = attrs_for(panel, {"a": "smooth", "b": "lumpy"}, {"a": 2.0, "b": 2.0})
    s = SETTINGS.updated({"backtest": {"refit": refit}})
    r = backtest_and_forecast(panel, attrs, MODEL_SETS, s, keep_all_backtests=True)
    assert r.selection["model"].null_count() == 0
    assert set(r.metrics.filter(pl.col("unique_id") == "a")["model"]) == set(MODEL_SETS["smooth"])
    assert set(r.metrics.filter(pl.col("unique_id") == "b")["model"]) == set(MODEL_SETS["lumpy"])


@pytest.mark.parametrize(
    "y",
    [
        np.r_[5.0, np.zeros(199)],  # one sale then nothing: all zeros after it
        np.r_[np.ones(150), 500.0, np.ones(49)],  # a single huge spike
        np.full(200, 7.0),  # constant
        np.random.default_rng(1).poisson(3, 3650).astype(float),  # 10 years
    ],
    ids=["one-sale-then-zeros", "single-spike", "constant", "ten-years"],
)
@pytest.mark.parametrize("demand_class", ["smooth", "erratic", "intermittent", "lumpy", "insufficient_history"])
def test_every_model_set_survives_awkward_series(y, demand_class):
    panel = series("x", y)
    r = backtest_and_forecast(panel, attrs_for(panel, {"x": demand_class}, {"x": 5.0}), MODEL_SETS, SETTINGS, keep_all_backtests=True)
    row = r.selection.row(0, named=True)
    assert row["model"] is not None
    assert row["sigma_lead_time_demand"] is not None and row["sigma_lead_time_demand"] >= 0
    assert row["lead_time_demand"] is not None and row["lead_time_demand"] >= 0


def test_selection_ties_break_by_the_sku_own_model_set_order_and_skip_fallbacks():
    metrics = pl.DataFrame(
        {
            "unique_id": ["a", "a", "a", "b", "b", "c", "c"],
            "model_set": ["smooth"] * 5 + ["intermittent"] * 2,
            "model": ["SeasonalNaive", "AutoETS", "HistoricAverage", "AutoETS", "HistoricAverage", "HistoricAverage", "TSB"],
            "mase": [0.5, 0.5, 0.9, 0.1, 0.4, 0.7, 0.7],
            "fell_back": [False, False, False, True, False, False, False],
            "missing_forecasts": [False] * 7,
        }
    )
    sets = {"smooth": ["AutoETS", "SeasonalNaive", "HistoricAverage"], "intermittent": ["TSB", "HistoricAverage"],
            "insufficient_history": ["HistoricAverage"]}  # fmt: skip
    sel = select_models(metrics, sets, "mase").rows_by_key("unique_id", named=True, unique=True)
    assert sel["a"]["model"] == "AutoETS" and sel["a"]["runner_up_model"] == "SeasonalNaive"
    assert sel["b"]["model"] == "HistoricAverage"  # AutoETS fell back: its score is the fallback's
    # A tie is broken by the SKU's own set (TSB first), not by another set's order (HistoricAverage first there).
    assert sel["c"]["model"] == "TSB"
    # A model with missing forecasts is not chosen however good its score.
    missing = metrics.with_columns(missing_forecasts=pl.col("model") == "AutoETS")
    assert select_models(missing, sets, "mase").filter(pl.col("unique_id") == "a")["model"].item() == "SeasonalNaive"


def test_fallback_flags_find_outputs_equal_to_the_fallback():
    cv = pl.DataFrame(
        {
            "unique_id": ["a", "a", "b", "b"],
            "AutoETS": [1.0, 2.0, 3.0, 3.0],
            "HistoricAverage": [1.5, 1.5, 3.0, 3.0],
            FALLBACK_ALIAS: [1.5, 1.5, 3.0, 3.0],
        }
    )
    flags = _flag_fallbacks(cv, ["AutoETS", "HistoricAverage"], "HistoricAverage").sort("unique_id", "model")
    assert flags.rows() == [
        ("a", "AutoETS", False), ("a", "HistoricAverage", False), ("b", "AutoETS", True), ("b", "HistoricAverage", False)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("rmse", "mean", "cv", "cls", "xyz"),
    [(0.49, 1.0, 0.49, "stable", "X"), (0.5, 1.0, 0.5, "variable", "Y"), (0.99, 1.0, 0.99, "variable", "Y"),
     (1.0, 1.0, 1.0, "erratic", "Z"), (2.0, 0.0, math.inf, "erratic", "Z"), (0.0, 0.0, 0.0, "stable", "X"),
     (None, 1.0, None, "not_backtested", None)],
)  # fmt: skip
def test_volatility_class_boundaries(rmse, mean, cv, cls, xyz):
    frame = pl.DataFrame({"rmse": [rmse], "mean": [mean]}, schema={"rmse": pl.Float64, "mean": pl.Float64})
    e, c, x = volatility_classes(pl.col("rmse"), pl.col("mean"), 0.5, 1.0)
    assert frame.select(e.alias("e"), c.alias("c"), x.alias("x")).row(0) == (cv, cls, xyz)


def test_same_input_same_output_to_the_last_bit():
    """polars' float group_by sums vary between runs (pola-rs/polars#25163): the backtest must not."""
    rng = np.random.default_rng(8)
    panel = pl.concat([series(f"s{i:02d}", rng.poisson(rng.uniform(0.3, 30), 300)) for i in range(24)])
    classes = {f"s{i:02d}": ("smooth" if i % 2 else "intermittent") for i in range(24)}
    attrs = attrs_for(panel, classes, {u: 1.0 + i % 9 for i, u in enumerate(classes)}, review=2.0)
    s = SETTINGS.updated({"backtest": {"refit": False}})
    first = backtest_and_forecast(panel, attrs, MODEL_SETS, s, keep_all_backtests=True)
    for _ in range(3):
        again = backtest_and_forecast(panel, attrs, MODEL_SETS, s, keep_all_backtests=True)
        for name in ("cv", "metrics", "selection", "forecasts"):
            assert getattr(again, name).equals(getattr(first, name)), name


def test_not_backtested_skus_pick_the_best_one_step_model_every_time():
    """Short series, a set of models with undefined in-sample fits (Naive's first period, SeasonalNaive's first week)."""
    sets = {**MODEL_SETS, "insufficient_history": ["HistoricAverage", "Naive", "WindowAverage", "SeasonalNaive"]}
    rng = np.random.default_rng(2)
    panel = pl.concat([series(f"n{i}", rng.poisson(3 + i, 20)) for i in range(6)] + [series("trend", np.arange(1.0, 21.0))])
    uids = panel["unique_id"].unique().to_list()
    attrs = attrs_for(panel, dict.fromkeys(uids, "insufficient_history"), dict.fromkeys(uids, 3.0))
    first = backtest_and_forecast(panel, attrs, sets, SETTINGS, keep_all_backtests=True)
    sel = first.selection
    assert sel["sigma_lead_time_demand"].is_finite().all() and sel["sigma_lead_time_demand"].null_count() == 0
    assert (sel["sigma_method"] == "one_step_rmse_x_sqrt_lead_time").all()
    # A steady trend is followed best by Naive (one-step error 1), not by the mean.
    trend = sel.filter(pl.col("unique_id") == "trend").row(0, named=True)
    assert trend["model"] == "Naive" and trend["one_step_rmse"] == pytest.approx(1.0)
    for _ in range(3):
        assert backtest_and_forecast(panel, attrs, sets, SETTINGS, keep_all_backtests=True).selection.equals(sel)


def test_profile_switches_skip_seasonal_models_and_the_backtest():
    rng = np.random.default_rng(6)
    panel = pl.concat([series("flat", rng.poisson(8, 200)), series("weekly", rng.poisson(8, 200) + 10 * (np.arange(200) % 7 == 5))])
    attrs = attrs_for(panel, {"flat": "smooth", "weekly": "smooth"}, {"flat": 3.0, "weekly": 3.0}).with_columns(
        seasonal=pl.col("unique_id") == "weekly"
    )
    r = backtest_and_forecast(panel, attrs, MODEL_SETS, SETTINGS, keep_all_backtests=True)
    models = {u: m for u, m in r.metrics.group_by("unique_id").agg(pl.col("model").sort()).iter_rows()}
    assert models["flat"] == ["AutoETS", "HistoricAverage"]  # no SeasonalNaive where there is no season
    assert models["weekly"] == ["AutoETS", "HistoricAverage", "SeasonalNaive"]
    # New products skip the backtest whatever their history allows.
    skipped = backtest_and_forecast(panel, attrs.with_columns(skip_backtest=pl.col("unique_id") == "flat"), MODEL_SETS, SETTINGS)
    sel = skipped.selection.rows_by_key("unique_id", named=True, unique=True)
    assert not sel["flat"]["backtested"] and sel["flat"]["sigma_method"] == "one_step_rmse_x_sqrt_lead_time"
    assert sel["weekly"]["backtested"]


@pytest.mark.parametrize("y", [[7.0], [5.0, 5.0, 5.0]], ids=["one-sale", "equal-sales"])
def test_a_sku_with_almost_no_history_never_looks_certain(y):
    """One-step RMSE is 0 on one sale or equal sales; the buffer's sigma falls back to sqrt(mean demand)."""
    panel = series("new", np.array(y))
    r = backtest_and_forecast(
        panel, attrs_for(panel, {"new": "insufficient_history"}, {"new": 4.0}), MODEL_SETS, SETTINGS, keep_all_backtests=True
    )
    row = r.selection.row(0, named=True)
    assert row["sigma_lead_time_demand"] == pytest.approx(math.sqrt(row["mean_demand_per_period"]) * 2.0)
    assert row["sigma_lead_time_demand"] > 0


def test_mase_and_rmsse_scales_equal_utilsforecasts_definition():
    """The scales come from running sums (one pass); utilsforecast's mase/msse copy the training data per window."""
    from utilsforecast.losses import mase, msse

    from forecasting.backtest import _window_metrics

    rng = np.random.default_rng(0)
    train = pl.concat([series(u, rng.poisson(5, 100)) for u in "abc"])
    days = train["ds"].unique().sort()
    rows = [
        {"unique_id": u, "ds": c + dt.timedelta(days=h), "cutoff": c, "M": float(rng.normal(5, 2))}
        for u in "abc"
        for c in (days[60], days[75], days[20])
        for h in range(1, 6)
    ]
    cv = pl.DataFrame(rows).join(train, on=["unique_id", "ds"])
    ours = _window_metrics(cv, train, ["M"], 7).sort("unique_id", "cutoff")
    ref_mase = pl.from_pandas(mase(cv.to_pandas(), ["M"], 7, train.to_pandas())).sort("unique_id", "cutoff")
    ref_msse = pl.from_pandas(msse(cv.to_pandas(), ["M"], 7, train.to_pandas())).sort("unique_id", "cutoff")
    np.testing.assert_allclose(ours["mase"].to_numpy(), ref_mase["M"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours["msse"].to_numpy(), ref_msse["M"].to_numpy(), rtol=1e-12)


def test_a_silent_skus_decayed_forecast_is_published_as_zero_not_arithmetic_dust():
    """AutoETS's forecast of a SKU silent for 150 days decays to ~1e-9 units a day: published as 0, so the SKU's
    mean demand reads 0 and a reorder point rounded up to whole units stays 0 (the issue saw 3.9e-10)."""
    rng = np.random.default_rng(3)
    panel = series("quiet", np.r_[rng.poisson(4, 400).astype(float), np.zeros(150)])
    attrs = attrs_for(panel, {"quiet": "smooth"}, {"quiet": 5.0})
    r = backtest_and_forecast(panel, attrs, {**MODEL_SETS, "smooth": ["AutoETS"]}, SETTINGS, keep_all_backtests=True)
    forecasts = r.forecasts["forecast"]
    assert ((forecasts == 0.0) | (forecasts >= 1e-6)).all(), forecasts.to_list()
    assert r.selection.row(0, named=True)["lead_time_demand"] == 0.0
