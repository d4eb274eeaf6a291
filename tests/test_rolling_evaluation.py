"""The rolling-origin evaluation: hand-worked judging, baselines, Wilson intervals, and no look-ahead."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from configs.schema import load_config
from evaluation.rolling import _lead_time_sums, baselines, future_demand, judge, summarise, wilson_interval
from flows.sample_data import generate_catalogue
from pipeline.contracts import validate_sales, validate_sku_master
from pipeline.evaluate import _period_end, evaluation_origins, plan_at_origin, rolling_evaluation
from pipeline.tables import evaluation_table

START = dt.date(2026, 1, 1)


def daily(series: dict[str, list[float]], start: dt.date = START) -> pl.DataFrame:
    rows = [(u, start + dt.timedelta(days=i), float(v)) for u, ys in series.items() for i, v in enumerate(ys)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


def test_wilson_interval_by_hand():
    # 8 of 10: p 0.8, z 1.96: centre (0.8 + 0.19207) / 1.38415 = 0.71683, half 1.95996 x 0.160011 / 1.38415 = 0.22657.
    low, high = wilson_interval(8, 10)
    assert float(low) == pytest.approx(0.4902, abs=1e-4) and float(high) == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(np.array([10, 0]), np.array([10, 0]))
    assert low[0] == pytest.approx(0.7225, abs=1e-4) and high[0] == 1.0 and np.isnan(low[1])
    assert wilson_interval(0, 7)[0] == 0.0


def test_future_demand_sums_the_lead_time_from_the_origin_with_a_fractional_last_period():
    panel = daily({"a": [9, 9, 3, 4, 10, 6], "b": [1, 1, 1, 1, 1, 1]})
    origin = START + dt.timedelta(days=1)  # the plan saw the first two days
    lead = pl.DataFrame({"unique_id": ["a", "b"], "lead_time_periods": [2.5, 5.0]})
    out = {r["unique_id"]: r for r in future_demand(panel, origin, lead).iter_rows(named=True)}
    assert out["a"]["lead_time_demand_actual"] == pytest.approx(3 + 4 + 0.5 * 10) and out["a"]["judged"]
    assert not out["b"]["judged"]  # 4 days left after the origin, the lead time needs 5


def test_lead_time_sums_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(_lead_time_sums(y, 2.0), [3.0, 5.0, 7.0])
    np.testing.assert_allclose(_lead_time_sums(y, 1.5), [1 + 1.0, 2 + 1.5, 3 + 2.0])
    np.testing.assert_array_equal(_lead_time_sums(y, 6.0), [10.0])  # shorter than the lead time: the whole history


def test_baselines_textbook_empirical_and_ddmrp_by_hand():
    y = [2.0, 4.0] * 10  # mean 3, sd (ddof 1) = sqrt(20/19)
    history = daily({"s": y})
    plan = pl.DataFrame({"unique_id": ["s"], "lead_time_periods": [2.0], "lead_time_days": [2.0], "demand_class": ["smooth"]})
    out = baselines(
        history, plan, [0.9], history_periods=365, adu_periods=20, period_days=1.0, short_lead_time_days=7, long_lead_time_days=30
    )
    rows = {r["method"]: r for r in out.iter_rows(named=True)}
    sd = math.sqrt(20 / 19)
    assert rows["textbook"]["reorder_point"] == pytest.approx(6 + 1.2815516 * sd * math.sqrt(2), abs=1e-6)
    assert rows["empirical"]["reorder_point"] == 6.0  # every 2-day sum is 6
    # ADU 3, DLT 2, short lead time LTF 0.75, smooth VF 0.25: red 3 x 2 x 0.75 x 1.25 = 5.625, yellow 6.
    assert rows["ddmrp"]["reorder_point"] == pytest.approx(11.625) and rows["ddmrp"]["safety_stock_units"] == pytest.approx(5.625)
    assert rows["ddmrp"]["target"] is None


def test_judge_and_summarise_count_windows_fill_rate_and_capital():
    windows = pl.DataFrame(
        {
            "unique_id": ["a", "b", "c", "d"],
            "method": ["buffercast"] * 4,
            "target": [0.9] * 4,
            "expected_service_level": [0.9] * 4,
            "reorder_point": [10.0, 10.0, 10.0, 10.0],
            "safety_stock_units": [2.0, 2.0, 4.0, 4.0],
            "unit_cost": [1.0, 1.0, 2.0, 2.0],
            "lead_time_demand_actual": [8.0, 10.0, 14.0, 0.0],
            "demand_class": ["smooth", "smooth", "lumpy", "lumpy"],
            "policy": ["JIT", "JIT", "JIC", "JIC"],
            "life_cycle": ["active"] * 4,
            "abc_class": ["A"] * 4,
        }
    )
    judged = judge(windows)
    assert judged["covered"].to_list() == [True, True, False, True]  # demand equal to the reorder point is covered
    assert judged["units_short"].to_list() == [0.0, 0.0, 4.0, 0.0]
    summary = summarise(judged)
    row = summary.filter(slice="all").row(0, named=True)
    assert (row["windows"], row["covered"], row["achieved"]) == (4, 3, 0.75)
    assert row["fill_rate"] == pytest.approx(1 - 4 / 32) and row["safety_stock_value"] == pytest.approx((2 + 2 + 8 + 8) / 4)
    lumpy = summary.filter(slice="demand_class", value="lumpy").row(0, named=True)
    assert (lumpy["windows"], lumpy["covered"]) == (2, 1)


def test_origins_are_step_periods_apart_and_leave_the_holdout():
    cfg = load_config(None, {"evaluation": {"origins": 3, "step_days": 7, "holdout_days": 30}})
    periods = pl.Series(pl.date_range(START, START + dt.timedelta(days=99), eager=True))
    origins = evaluation_origins(periods, cfg)
    last = START + dt.timedelta(days=99 - 30)
    assert origins == [last - dt.timedelta(days=14), last - dt.timedelta(days=7), last]
    assert _period_end(dt.date(2026, 2, 2), "W") == dt.date(2026, 2, 8)
    assert _period_end(dt.date(2026, 12, 1), "M") == dt.date(2026, 12, 31)


@pytest.fixture(scope="module")
def catalogue():
    cfg = load_config(None, {"backtest": {"n_jobs": 1}, "evaluation": {"origins": 2, "targets": [0.9, 0.99]}})
    raw, master = generate_catalogue(n_skus=30, seed=5, n_days=400)
    sales = validate_sales(raw, cfg.input.sales_columns, today=dt.date(2030, 1, 1)).valid
    return cfg, sales, validate_sku_master(master, cfg.input.sku_master_columns).valid


def test_a_plan_never_sees_the_data_after_its_origin(catalogue):
    cfg, sales, master = catalogue
    as_of = sales["date"].max() - dt.timedelta(days=60)
    later = pl.col("date") > as_of
    # Every value after the origin changed: ten times the quantity, and new sales on days that had none.
    changed = pl.concat(
        [sales.with_columns(quantity=pl.when(later).then(pl.col("quantity") * 10 + 3).otherwise("quantity")), sales.filter(later)],
        how="vertical_relaxed",
    ).with_columns(line_id=pl.int_range(pl.len()).cast(pl.String))
    first = plan_at_origin(cfg, sales, master, as_of, [0.95])
    second = plan_at_origin(cfg, changed, master, as_of, [0.95])
    assert first.keys() == second.keys()
    for key, plan in first.items():
        assert plan.equals(second[key]), key  # the recommendations, calibration and bootstrap included


def test_rolling_evaluation_publishes_a_valid_table(catalogue):
    cfg, sales, master = catalogue
    result = rolling_evaluation(cfg, sales, master)
    assert len(result.origins) == 2 and result.windows.height > 0
    table = evaluation_table(result, result.origins[-1])  # validated against its contract
    methods = set(table["method"])
    assert methods == {"buffercast", "buffercast_sweep", "textbook", "empirical", "ddmrp"}
    # Every method is judged on the same windows.
    per_method = table.filter(slice="all").group_by("method", "target").agg(pl.col("windows").sum())
    swept = per_method.filter(pl.col("method") != "buffercast")["windows"].unique().to_list()
    assert len(swept) == 1 and per_method.filter(method="buffercast")["windows"].sum() == swept[0]
    # A higher target holds more safety stock and covers at least as often, for buffercast and each baseline.
    for method in ("buffercast_sweep", "textbook", "empirical"):
        rows = table.filter(slice="all", method=method).sort("target")
        assert rows["safety_stock_value"].is_sorted() and rows["achieved"].is_sorted(), method


@pytest.mark.slow
def test_buffercast_evaluate_prints_achieved_service_per_target(prefect_harness, tmp_path, small_catalogue):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.evaluate import EVALUATIONS, TRADEOFF_FILE
    from flows.publish import read_table

    runner = CliRunner()
    config = tmp_path / "eval.yaml"
    config.write_text("backtest:\n  n_jobs: 1\nevaluation:\n  targets: [0.9, 0.95]\n")
    args = [
        "evaluate",
        "--config",
        str(config),
        "--sales",
        str(small_catalogue["sales"]),
        "--sku-master",
        str(small_catalogue["sku_master"]),
    ]
    args += ["--out", str(tmp_path / "out"), "--origins", "2", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "buffercast evaluation: 2 origins" in res.output
    for method in ("buffercast_sweep", "textbook", "empirical", "ddmrp"):
        assert method in res.output
    # The table is published under its own root, with its contract; the MLflow run holds the metrics and the curves.
    published = read_table(str(tmp_path / "out" / EVALUATIONS), "evaluation")
    assert published.height > 0 and set(published["method"]) == {"buffercast", "buffercast_sweep", "textbook", "empirical", "ddmrp"}
    run_id = next(line for line in res.output.splitlines() if "MLflow run" in line).split()[2]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "buffercast_sweep_95_achieved" in run.data.metrics and "ddmrp_achieved" in run.data.metrics
    assert TRADEOFF_FILE in {a.path for a in client.list_artifacts(run_id)}
    bad = runner.invoke(app, ["evaluate", "--freq", "X"])
    assert bad.exit_code == 2 and "'frequency'" in bad.output


def test_the_judge_draws_each_skus_lead_time_from_its_distribution():
    from evaluation.rolling import realised_lead_times

    lead = pl.DataFrame({"unique_id": ["fixed", "varies"], "lead_time_periods": [5.0, 5.0], "lead_time_std_periods": [0.0, 2.0]})
    first = realised_lead_times(lead, seed=1, origin=dt.date(2026, 3, 1))
    again = realised_lead_times(lead.reverse(), seed=1, origin=dt.date(2026, 3, 1)).sort("unique_id")
    assert first.equals(again)  # keyed by SKU, not by position
    assert first["lead_time_periods"][0] == 5.0 and first["lead_time_periods"][1] != 5.0
    origins = [dt.date(2026, 3, 1) + dt.timedelta(days=d) for d in range(400)]
    draws = [realised_lead_times(lead, seed=1, origin=o)["lead_time_periods"][1] for o in origins]
    assert np.mean(draws) == pytest.approx(5.0, abs=0.3) and np.std(draws) == pytest.approx(2.0, abs=0.3)
