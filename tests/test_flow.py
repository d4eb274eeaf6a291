"""End to end: the Prefect flow under Prefect's test harness, with real Parquet outputs and a real MLflow store."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from evaluation.metrics import quantile_name
from flows.cli import app
from flows.publish import read_manifest, read_table
from pipeline.contracts import OUTPUT_SCHEMAS, SCHEMA_VERSION, InputError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

AS_OF = dt.date(2026, 6, 30)


@pytest.fixture(scope="module")
def default_run(small_catalogue, tmp_path_factory):
    """One run of the flow on the small catalogue, shared by the contract tests."""
    from configs.schema import load_config
    from flows.plan import plan_buffers

    root = tmp_path_factory.mktemp("run")
    cfg = load_config(
        None,
        {
            "input": {"sales": str(small_catalogue["sales"]), "sku_master": str(small_catalogue["sku_master"])},
            "output": {"folder": str(root / "outputs")},
            "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "mlruns")},
            "backtest": {"n_jobs": 1},
        },
    )
    return cfg, plan_buffers(cfg)


def test_the_published_report_in_headless_chromium(default_run, chromium):
    """The planner opens report.html in a browser: the title and the run facts carry the config name, the as-of date
    and the schema version, every figure decodes to an image, the nav links land on sections, no console error."""
    from pipeline.report import FIGURE_FILES

    cfg, _ = default_run
    report = Path(cfg.output.folder) / "reports" / f"as_of={AS_OF}" / "report.html"
    page = chromium.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(report.as_uri(), wait_until="load")
    assert page.title() == f"buffercast weekly report — {cfg.name} — as of {AS_OF}"
    facts = page.eval_on_selector_all(
        "#run table.facts tr",
        "rows => Object.fromEntries(rows.map(r => [r.querySelector('th').innerText, r.querySelector('td').innerText]))",
    )
    assert facts["as of"] == str(AS_OF) and facts["output schema version"] == str(SCHEMA_VERSION), facts
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))"
    )
    assert [i["alt"] for i in images] == list(FIGURE_FILES), images
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in images), images
    targets = page.eval_on_selector_all("nav a", "links => links.map(a => a.getAttribute('href').slice(1))")
    assert targets[0] == "attention" and all(page.locator(f"section#{t}").count() == 1 for t in targets), targets
    assert page.locator("#attention h2").inner_text() == "Look here first"
    assert not errors, errors
    page.close()


def test_flow_publishes_the_contract(default_run, small_catalogue):
    cfg, result = default_run
    out = Path(cfg.output.folder)
    sales = pl.read_parquet(small_catalogue["sales"])
    for name, schema in OUTPUT_SCHEMAS.items():
        table = pl.read_parquet(out / name / f"as_of={AS_OF}")
        schema.validate(table, lazy=True)
        expected = [
            m for c, col in schema.columns.items() for m in ([t for t in table.columns if re.fullmatch(c, t)] if col.regex else [c])
        ]
        assert table.columns == expected, name
    quantiles = [quantile_name(p) for p in cfg.models.quantiles]
    assert set(quantiles) <= set(pl.read_parquet(out / "forecasts" / f"as_of={AS_OF}").columns)
    assert {f"coverage_{q}" for q in quantiles} <= set(pl.read_parquet(out / "backtest_metrics" / f"as_of={AS_OF}").columns)
    recs = read_table(out, "recommendations", AS_OF)
    # One row per SKU that sold, non-negative buffers, reorder point covers the lead-time demand.
    assert recs.height == sales["sku_id"].n_unique() == result["skus"]
    assert recs["sku_id"].is_unique().all()
    assert (recs["safety_stock_units"] >= 0).all()
    buffered = recs.filter(~(pl.col("flag_dead") & ~pl.col("critical")))
    assert (buffered["reorder_point_units"] >= buffered["lead_time_demand"]).all()
    # Dead, non-critical SKUs: no buffer, nothing to reorder, and the reasons say why.
    dead = recs.filter(pl.col("flag_dead") & ~pl.col("critical"))
    assert dead.height >= 1 and (dead["safety_stock_units"] == 0).all() and (dead["reorder_point_units"] == 0).all()
    assert dead["reasons"].str.contains("obsolescence risk").all()
    assert set(recs["life_cycle"]) <= {"new", "active", "slow_moving", "dead"}
    # Sane levels over the whole catalogue: no negative zero anywhere, the order-up-to level never below the reorder
    # point, and no plan promising more than its target.
    floats = [c for c, t in recs.schema.items() if t == pl.Float64]
    values = {c: recs[c].drop_nulls().to_numpy() for c in floats}
    negative_zero = {c: int((np.signbit(v) & (v == 0)).sum()) for c, v in values.items()}
    assert not {c: n for c, n in negative_zero.items() if n}, negative_zero
    assert (recs["order_up_to_units"] >= recs["reorder_point_units"]).all()
    assert (recs["expected_service_level"] <= recs["service_level_target"] + 1e-12).all()
    # The time-phased parameters: every SKU over the configured periods ahead; period 1 is the plan itself.
    phased = read_table(out, "plan_parameters", AS_OF)
    assert phased.height == recs.height * cfg.time_phased_periods
    first = phased.filter(period=1).join(recs, on=["sku_id", "location_id"], nulls_equal=True, suffix="_plan")
    assert first.height == recs.height
    assert (first["reorder_point_units"] == first["reorder_point_units_plan"]).all()
    assert (first["order_up_to_units"] == first["order_up_to_units_plan"]).all()
    assert (phased["order_up_to_units"] >= phased["reorder_point_units"]).all()
    assert recs["reasons"].str.starts_with(recs["policy"]).all()
    assert set(recs["policy"]) <= {"JIT", "JIC", "hybrid"}
    # SKUs missing from the master are planned with the config defaults, and the reasons say so.
    master = pl.read_parquet(small_catalogue["sku_master"])
    missing = recs.join(master.select("sku_id"), on="sku_id", how="anti")
    assert missing.height >= 1
    assert (~missing["in_sku_master"]).all() and missing["reasons"].str.contains("not in the SKU master").all()
    assert (missing["lead_time_days"] == cfg.defaults.lead_time_days).all()
    # Forecasts cover each SKU's lead time plus review period.
    fc = read_table(out, "forecasts", AS_OF)
    assert fc["sku_id"].n_unique() == recs.height
    assert fc["date"].min() == AS_OF + dt.timedelta(days=1)
    horizon = fc.group_by("sku_id").agg(pl.len()).join(recs.select("sku_id", "lead_time_days"), on="sku_id")
    assert (horizon["len"] == (horizon["lead_time_days"] + cfg.defaults.review_period_days).ceil()).all()
    # The chosen model per SKU is the one flagged in backtest_metrics.
    metrics = read_table(out, "backtest_metrics", AS_OF)
    chosen = metrics.filter("selected").select("sku_id", "model")
    assert recs.filter(pl.col("backtest_windows") > 0).select("sku_id", "model").sort("sku_id").equals(chosen.sort("sku_id"))
    # Buffer coverage before/after calibration: on the chosen model's rows of cycle-target SKUs only, normal-method
    # and bootstrap alike.
    covered = metrics.filter(pl.col("buffer_coverage_after").is_not_null())
    assert covered.height >= 1 and covered["selected"].all()
    method = covered.join(recs.select("sku_id", "safety_stock_method", "service_level_measure"), on="sku_id")
    assert set(method["safety_stock_method"]) == {"normal_cycle", "bootstrap_quantile"}
    assert set(method["service_level_measure"]) == {"cycle"}
    calibration = read_table(out, "calibration", AS_OF).filter(pl.col("service_level_target").is_not_null())
    assert set(calibration["exposure"]) == {"lead_time", "review_lead_time"} and "all" in set(calibration["model_family"])


def _json_rows(frame: pl.DataFrame) -> list[dict]:
    """Rows as a JSON reader gets them (dates as ISO strings)."""
    return json.loads(frame.write_json())


def test_every_table_reads_as_the_readme_shows_with_polars_pandas_and_duckdb(default_run):
    """The README's one-liners: polars with hive partitioning, pandas with `partitioning=None` (the files carry `as_of`;
    pandas' default partition discovery clashes with it), DuckDB's read_parquet over the partitions."""
    import duckdb
    import pandas as pd

    cfg, _ = default_run
    for name in OUTPUT_SCHEMAS:
        folder = Path(cfg.output.folder) / name
        frame = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect()
        pandas_frame = pd.read_parquet(folder, partitioning=None)
        assert frame.height == len(pandas_frame), name
        assert list(pandas_frame.columns) == frame.columns, name
        relation = duckdb.sql(f"select * from read_parquet('{folder}/*/*.parquet')")
        assert relation.columns == frame.columns and len(relation.fetchall()) == frame.height, name
        assert frame["as_of"].null_count() == 0, name


def test_every_published_table_comes_with_its_json_schema_and_meets_it(default_run):
    """Downstream readers get a machine-readable contract next to the data: each table's JSON Schema (derived from the
    pandera contract), and every published row validates against it; rows that break the contract do not."""
    from jsonschema import Draft202012Validator

    from pipeline.contracts import SCHEMA_VERSION, json_schema

    cfg, _ = default_run
    out = Path(cfg.output.folder)
    manifest = read_manifest(out, AS_OF)
    assert set(manifest["schemas"]) == set(OUTPUT_SCHEMAS)
    for name in OUTPUT_SCHEMAS:
        path = Path(manifest["schemas"][name])
        assert path == out / "schemas" / f"as_of={AS_OF}" / f"{name}.schema.json"
        schema = json.loads(path.read_text())
        assert schema == json_schema(name) and schema["x-schema-version"] == SCHEMA_VERSION == manifest["schema_version"]
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        table = read_table(out, name, AS_OF)
        named = [c for c in table.columns if c in schema["properties"]]
        assert named == [c for c in schema["x-column-order"] if c in schema["properties"]], name
        for row in _json_rows(table.head(200)):
            errors = [e.message for e in validator.iter_errors(row)]
            assert not errors, (name, errors[:3], row)
    recs = _json_rows(read_table(out, "recommendations", AS_OF).head(1))[0]
    validator = Draft202012Validator(json_schema("recommendations"), format_checker=Draft202012Validator.FORMAT_CHECKER)
    for broken in (
        recs | {"policy": "JUST_IN_TIME"},
        recs | {"safety_stock_units": -1.0},
        recs | {"as_of": "30/06/2026"},
        recs | {"unexpected_column": 1},
        {k: v for k, v in recs.items() if k != "reorder_point_units"},
    ):
        assert list(validator.iter_errors(broken)), broken


def test_cli_prints_the_json_schema_of_a_table():
    from pipeline.contracts import json_schema

    result = CliRunner().invoke(app, ["schema", "--table", "recommendations"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json_schema("recommendations")
    every = json.loads(CliRunner().invoke(app, ["schema"]).output)
    assert set(every) == set(OUTPUT_SCHEMAS)
    bad = CliRunner().invoke(app, ["schema", "--table", "nope"])
    assert bad.exit_code == 2


def test_profiles_and_outlier_points_are_published(default_run):
    cfg, result = default_run
    recs = read_table(cfg.output.folder, "recommendations", AS_OF)
    profiles = read_table(cfg.output.folder, "profiles", AS_OF)
    outliers = read_table(cfg.output.folder, "outliers", AS_OF)
    assert profiles.select("sku_id", "location_id").equals(recs.select("sku_id", "location_id"))
    assert outliers.height == recs["n_outliers"].sum() > 0
    assert (outliers["quantity"] > outliers["outlier_threshold"]).all()
    both = profiles.join(recs, on=["sku_id", "location_id"], suffix="_rec")
    for col in ("demand_class", "life_cycle", "abc_class", "xyz_class", "seasonal_strength"):
        assert both[col].equals(both[f"{col}_rec"], check_names=False), col
    assert set(result["life_cycle"]) <= {"new", "active", "slow_moving", "dead"}


def test_excluding_outliers_from_sigma_shrinks_a_spiky_buffer(tmp_path, make_config):
    """A one-off bulk order inside the backtest: flagged either way; capped for sigma only when config says so."""
    from flows.plan import plan_buffers

    rng = np.random.default_rng(9)
    days = pl.date_range(AS_OF - dt.timedelta(days=299), AS_OF, eager=True)
    qty = rng.poisson(5, 300).astype(float)
    qty[-20] = 400.0  # the bulk order, 20 days before the as-of date
    path = tmp_path / "sales.parquet"
    pl.DataFrame({"sku_id": "BULK", "date": days, "quantity": qty}).filter(pl.col("quantity") > 0).write_parquet(path)
    sigma = {}
    for exclude in (False, True):
        cfg = make_config(path, None, outliers={"exclude_from_sigma": exclude}, output={"folder": str(tmp_path / f"out-{exclude}")})
        plan_buffers(cfg)
        rec = read_table(cfg.output.folder, "recommendations", AS_OF).row(0, named=True)
        assert rec["n_outliers"] == 1
        assert read_table(cfg.output.folder, "outliers", AS_OF)["quantity"].to_list() == [400.0]
        sigma[exclude] = rec["sigma_lead_time_demand"]
    assert sigma[True] < 0.5 * sigma[False]


def test_manifest_counts_rows_in_as_used_plus_quarantined(default_run, small_catalogue):
    cfg, result = default_run
    manifest = read_manifest(cfg.output.folder, AS_OF)
    rows = manifest["input_rows"]
    assert rows["sales_in"] == pl.read_parquet(small_catalogue["sales"]).height
    assert rows["sales_in"] == rows["sales_used"] + rows["sales_quarantined"] + rows["sales_after_as_of"]
    assert manifest["schema_version"] == 3
    assert manifest["config_hash"] == cfg.fingerprint()
    assert manifest["mlflow_run_id"] == result["mlflow_run_id"]
    assert manifest["prefect_flow_run_id"] == result["prefect_flow_run_id"] != ""
    assert manifest["tables"]["recommendations"]["rows"] == result["skus"]


def test_mlflow_run_has_params_metrics_and_artifacts(default_run):
    cfg, result = default_run
    client = MlflowClient(tracking_uri=result["mlflow_tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"default-{AS_OF}"
    assert client.get_experiment(run.info.experiment_id).name == "buffercast-default"
    assert run.data.params["sbc.adi_cutoff"] == "1.32"
    assert run.data.params["frequency"] == "D"
    assert len(run.data.params) == len(cfg.flat())
    metrics = run.data.metrics
    assert metrics["skus"] == result["skus"]
    assert sum(v for k, v in metrics.items() if k.startswith("skus_policy_")) == result["skus"]
    assert sum(v for k, v in metrics.items() if k.startswith("skus_demand_class_")) == result["skus"]
    assert metrics["safety_stock_value_total"] == pytest.approx(result["safety_stock_value"])
    assert "median_mase" in metrics
    # Interval coverage, simulated service levels per target and class, the disruption scenarios (issue 6's metrics).
    assert {"coverage_q95", "coverage_q95_smooth", "simulated_cycle_target_95", "textbook_safety_stock_value_total"} <= set(metrics)
    assert "scenario_lead_time_x2_recommended_fill_rate" in metrics
    assert run.data.tags["as_of"] == AS_OF.isoformat() and run.data.tags["schema_version"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "tables")} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")
    }
    tables = {
        "recommendations",
        "profiles",
        "outliers",
        "forecasts",
        "plan_parameters",
        "backtest_metrics",
        "quarantine",
        "changes",
        "scenarios",
        "calibration",
    }
    plots = {"sbc_quadrants", "policy_mix_by_abc", "error_distribution", "forecast_vs_actual", "service_level", "calibration"}
    assert artifacts == {f"tables/{t}.parquet" for t in tables} | {f"plots/{p}.png" for p in plots}
    local = Path(client.download_artifacts(run.info.run_id, "tables/recommendations.parquet"))
    assert pl.read_parquet(local).height == result["skus"]
    # The JSON Schema of every table, as written next to the outputs.
    schemas = {a.path for a in client.list_artifacts(run.info.run_id, "schemas")}
    assert schemas == {f"schemas/{t}.schema.json" for t in tables}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "schemas/recommendations.schema.json")).read_text())
    assert logged == json.loads((Path(cfg.output.folder) / "schemas" / f"as_of={AS_OF}" / "recommendations.schema.json").read_text())


def test_rerun_is_deterministic_and_replaces_its_partition(default_run):
    from flows.plan import plan_buffers

    cfg, first = default_run
    before = {name: read_table(cfg.output.folder, name, AS_OF) for name in OUTPUT_SCHEMAS}
    second = plan_buffers(cfg)
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
    for name, frame in before.items():
        after = read_table(cfg.output.folder, name, AS_OF)
        diff = [c for c in frame.columns if not after[c].equals(frame[c])]
        assert not diff, (name, diff, after.filter(pl.any_horizontal(pl.col(c) != frame[c] for c in diff)).head(3).to_dicts())
    # The inputs did not change: the second run took the pull from the cache (keyed by the files' fingerprint).
    assert _task_states(second["prefect_flow_run_id"])["pull"] == "Cached"
    assert _task_states(first["prefect_flow_run_id"])["pull"] == "Completed"
    # Still exactly one partition per table, one file in it, and no staging left behind.
    out = Path(cfg.output.folder)
    assert [p.name for p in (out / "recommendations").iterdir()] == [f"as_of={AS_OF}"]
    assert len(list((out / "recommendations" / f"as_of={AS_OF}").iterdir())) == 1
    assert not (out / "_staging").exists()


def test_no_table_goes_through_prefects_result_store(default_run, small_catalogue):
    """The pull hands the raw inputs on as Parquet files (`_pulled/`), its stored result is their folder: nothing in
    Prefect's result store comes near the size of the sales history (it held the pickled tables before)."""
    from prefect.settings import get_current_settings

    cfg, _ = default_run
    stored = [p for p in Path(get_current_settings().results.local_storage_path).rglob("*") if p.is_file()]
    assert stored, "the pull's result was not persisted (its cache needs it)"
    biggest = max(p.stat().st_size for p in stored)
    assert biggest < min(64_000, small_catalogue["sales"].stat().st_size / 4), biggest
    pulled = sorted((Path(cfg.output.folder) / "_pulled").glob("*/*.parquet"))
    assert [p.name for p in pulled] == ["sales.parquet", "sku_master.parquet"]
    assert pl.read_parquet(pulled[0]).height == pl.read_parquet(small_catalogue["sales"]).height


def _task_states(flow_run_id: str) -> dict[str, str]:
    """Task name (without its run suffix) -> state name, for one flow run, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def test_as_of_leaves_later_history_out(small_catalogue, make_config):
    from flows.plan import plan_buffers

    as_of = AS_OF - dt.timedelta(days=30)
    cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"], as_of=as_of.isoformat())
    result = plan_buffers(cfg)
    sales = pl.read_parquet(small_catalogue["sales"])
    assert result["as_of"] == as_of.isoformat()
    assert result["input_rows"]["sales_after_as_of"] == sales.filter(pl.col("date") > as_of).height > 0
    fc = read_table(cfg.output.folder, "forecasts", as_of)
    assert fc["date"].min() == as_of + dt.timedelta(days=1)


def _bad_sales_csv(path: Path) -> Path:
    """Two SKUs at two locations, 120 clean days, plus one row per fault the validation must quarantine."""
    rng = np.random.default_rng(4)
    start = AS_OF - dt.timedelta(days=119)
    rows = []
    for sku in ("A-1", "B-2"):
        for loc in ("north", "south"):
            for i in range(120):
                day = start + dt.timedelta(days=i)
                rows.append({"sku": sku, "store": loc, "day": day.isoformat(), "qty": str(int(rng.poisson(6))), "line": f"{sku}-{loc}-{i}"})
    bad = [
        {"sku": "A-1", "store": "north", "day": "2026-06-01", "qty": "-3", "line": "bad-negative"},
        {"sku": "A-1", "store": "north", "day": "2026-06-02", "qty": "2", "line": "A-1-north-0"},  # repeated line_id
        {"sku": "", "store": "north", "day": "2026-06-03", "qty": "2", "line": "bad-null-sku"},
        {"sku": "B-2", "store": "south", "day": "2024-13-45", "qty": "2", "line": "bad-date"},
        {"sku": "B-2", "store": "south", "day": "2100-01-01", "qty": "2", "line": "bad-future"},
        {"sku": "Z-9", "store": "north", "day": "2026-06-01", "qty": "0", "line": "zero-only"},  # valid, but no demand
    ]
    pl.DataFrame(rows + bad).write_csv(path)
    return path


def test_bad_input_rows_are_quarantined_and_the_run_completes(tmp_path, make_config):
    from flows.plan import plan_buffers

    sales = _bad_sales_csv(tmp_path / "sales.csv")
    cfg = make_config(
        sales,
        None,
        input={"sales_columns": {"sku_id": "sku", "date": "day", "quantity": "qty", "location_id": "store", "line_id": "line"}},
    )
    result = plan_buffers(cfg)
    q = read_table(cfg.output.folder, "quarantine", AS_OF)
    assert sorted(q["check"].to_list()) == sorted(
        ["quantity_non_negative", "duplicate_line_id", "sku_id_not_null", "date_unparseable", "date_not_in_future"]
    )
    assert json.loads(q.filter(pl.col("check") == "duplicate_line_id")["raw_values"][0])["line"] == "A-1-north-0"
    rows = result["input_rows"]
    assert rows["sales_in"] == 4 * 120 + 6 == rows["sales_used"] + rows["sales_quarantined"]
    assert rows["sales_quarantined"] == 5
    # A SKU whose only rows are zeros has no demand to plan from: counted and named, not silently dropped.
    assert result["series_not_planned"] == 1
    assert read_manifest(cfg.output.folder, AS_OF)["series_not_planned"] == [{"sku_id": "Z-9", "location_id": "north"}]
    # The location is part of the series key: one recommendation per SKU and location, master defaults used.
    recs = read_table(cfg.output.folder, "recommendations", AS_OF)
    assert recs.select("sku_id", "location_id").sort("sku_id", "location_id").rows() == [
        ("A-1", "north"), ("A-1", "south"), ("B-2", "north"), ("B-2", "south")
    ]  # fmt: skip
    assert (~recs["in_sku_master"]).all()


def test_missing_column_fails_with_a_message_naming_it(tmp_path, make_config):
    from flows.plan import plan_buffers

    path = tmp_path / "sales.csv"
    pl.DataFrame({"sku_id": ["a"], "date": ["2026-01-01"], "qty": ["1"]}).write_csv(path)
    with pytest.raises(InputError, match="missing column 'quantity'") as err:
        plan_buffers(make_config(path))
    assert "\n" not in str(err.value)
    assert not (Path(make_config(path).output.folder) / "recommendations").exists()


def test_cli_exit_codes_and_one_line_errors(tmp_path, small_catalogue):
    runner = CliRunner()
    path = tmp_path / "sales.csv"
    pl.DataFrame({"sku_id": ["a"], "date": ["2026-01-01"], "qty": ["1"]}).write_csv(path)
    args = ["run", "--sales", str(path), "--no-sku-master", "--out", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert "missing column 'quantity'" in res.output
    # A missing file is bad input too: no retries, exit 2, the config key to fix.
    res = runner.invoke(app, [*args[:3], "--sku-master", str(tmp_path / "nope.csv"), *args[4:]])
    assert res.exit_code == 2 and "nope.csv' not found (input.sku_master" in res.output
    res = runner.invoke(app, ["run", "--freq", "X"])
    assert res.exit_code == 2 and "'frequency'" in res.output
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sbc:\n  adi_cut: 1.2\n")
    res = runner.invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2 and "unknown key 'sbc.adi_cut'" in res.output


def test_cli_run_prints_the_summary(tmp_path, small_catalogue):
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--sales", str(small_catalogue["sales"]),
            "--sku-master", str(small_catalogue["sku_master"]),
            "--out", str(tmp_path / "out"),
            "--freq", "W",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for words in ("SKUs planned as of", "demand class", "volatility class", "policy", "safety stock value", "make ui"):
        assert words in res.output
    manifest_line = next(line for line in res.output.splitlines() if "manifest" in line)
    manifest = json.loads(Path(manifest_line.split()[-1]).read_text())
    assert manifest["frequency"] == "W"
    # Weekly buckets: Monday weeks; the as-of date (a Tuesday) cuts its week short, so the plan starts with that week.
    out = tmp_path / "out"
    fc = read_table(out, "forecasts", AS_OF)
    assert fc["date"].dt.weekday().unique().to_list() == [1]
    assert fc["date"].min() == AS_OF - dt.timedelta(days=AS_OF.weekday())
    recs = read_table(out, "recommendations", AS_OF)
    # Lead times are converted to weeks, and the horizon covers lead time + one week of review, in whole weeks.
    assert (recs["lead_time_periods"] - recs["lead_time_days"] / 7.0).abs().max() < 1e-12
    steps = fc.group_by("sku_id").agg(pl.len()).join(recs.select("sku_id", "lead_time_days"), on="sku_id")
    assert (steps["len"] == ((steps["lead_time_days"] + 7.0) / 7.0).ceil()).all()
    assert recs.filter(pl.col("backtest_windows") > 0).height >= 0.8 * recs.height


def test_cli_as_a_user_runs_it_bad_input_is_one_line_without_traceback(tmp_path):
    """The real console script in a subprocess (its own temporary Prefect server): exit 2, no traceback."""
    path = tmp_path / "sales.csv"
    pl.DataFrame({"sku_id": ["a"], "date": ["2026-01-01"], "qty": ["1"]}).write_csv(path)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--sales", str(path), "--no-sku-master",
         "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    last = [line for line in proc.stderr.splitlines() if line.startswith("buffercast: error:")]
    assert len(last) == 1 and "missing column 'quantity'" in last[0] and "input.sales_columns.quantity" in last[0]
    assert not (tmp_path / "out" / "recommendations").exists()


@pytest.mark.parametrize("case", ["missing file", "missing column", "bad config value"])
def test_bad_input_fails_before_prefect_is_even_imported(tmp_path, case):
    """The CLI looks at the config and the inputs' first rows (`flows.sources.preflight`) before it imports the flow:
    no Prefect server, no Prefect import, for a bad input the files show (it took two minutes behind a server)."""
    good = tmp_path / "sales.csv"
    pl.DataFrame({"sku_id": ["a"], "date": ["2026-01-01"], "quantity": ["1"]}).write_csv(good)
    bad = tmp_path / "bad.csv"
    pl.DataFrame({"sku_id": ["a"], "day": ["2026-01-01"], "quantity": ["1"]}).write_csv(bad)
    args = {
        "missing file": ["--sales", str(tmp_path / "nowhere.csv")],
        "missing column": ["--sales", str(bad)],
        "bad config value": ["--sales", str(good), "--freq", "X"],
    }[case] + ["--out", str(tmp_path / "out")]
    expected = {"missing file": "not found", "missing column": "missing column 'date'", "bad config value": "'frequency'"}[case]
    code = (
        "import sys\nfrom flows.cli import app\n"
        f"try:\n    app({['run', *args]!r})\nexcept SystemExit as exc:\n    print('exit', exc.code, 'prefect' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent
    )
    assert proc.stdout.strip().splitlines()[-1] == "exit 2 False", proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("buffercast: error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_second_run_publishes_what_changed_since_the_previous_as_of(small_catalogue, make_config):
    from buffers.drift import compare_runs
    from flows.plan import plan_buffers

    earlier = AS_OF - dt.timedelta(days=28)
    first_cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"], as_of=earlier.isoformat())
    first = plan_buffers(first_cfg)
    assert read_table(first_cfg.output.folder, "changes", earlier).height == 0  # nothing to compare with yet
    assert read_manifest(first_cfg.output.folder, earlier)["previous_as_of"] is None

    second_cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"])
    second = plan_buffers(second_cfg)
    out = second_cfg.output.folder
    changes = read_table(out, "changes", AS_OF)
    expected = compare_runs(read_table(out, "recommendations", earlier), read_table(out, "recommendations", AS_OF))
    assert changes.equals(expected) and changes.height > 0
    assert set(changes["previous_as_of"]) == {earlier}
    assert read_manifest(out, AS_OF)["previous_as_of"] == earlier.isoformat()
    assert second["changes"] == {k: changes.filter(pl.col("change") == k).height for k in second["changes"]}
    metrics = MlflowClient(tracking_uri=second["mlflow_tracking_uri"]).get_run(second["mlflow_run_id"]).data.metrics
    assert sum(v for k, v in metrics.items() if k.startswith("changes_")) == changes.height
    # The planner's report, next to the outputs, shows the changes.
    report = (Path(out) / "reports" / f"as_of={AS_OF}" / "report.html").read_text()
    assert "buffercast weekly report" in report and changes["sku_id"][0] in report
    # Its title and run facts carry the as-of date and the schema version (they were "—" before publishing added them).
    assert f"<title>buffercast weekly report — {second_cfg.name} — as of {AS_OF}</title>" in report
    assert f"<th>as of</th><td>{AS_OF}</td>" in report and f"<th>output schema version</th><td>{SCHEMA_VERSION}</td>" in report
    assert first["mlflow_run_id"] != second["mlflow_run_id"]


def test_a_report_that_fails_replaces_the_stale_one_and_the_run_says_so(small_catalogue, make_config, monkeypatch):
    """A rerun for the same as-of whose report cannot be drawn: the tables are published, the old report.html of that
    as-of is gone (a report_failed.txt says why), and the manifest, the result and the CLI summary say so."""
    import flows.plan
    from flows.cli import format_summary

    cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"])
    flows.plan.plan_buffers(cfg)
    reports = Path(cfg.output.folder) / "reports" / f"as_of={AS_OF}"
    assert (reports / "report.html").is_file()

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts on this machine")

    monkeypatch.setattr(flows.plan, "planner_report", broken)
    result = flows.plan.plan_buffers(cfg)
    assert not (reports / "report.html").exists()
    assert "no fonts on this machine" in (reports / "report_failed.txt").read_text()
    assert read_manifest(cfg.output.folder, AS_OF)["report_error"] == "RuntimeError: no fonts on this machine"
    assert result["report_error"] == "RuntimeError: no fonts on this machine"
    assert "REPORT NOT RENDERED: RuntimeError: no fonts on this machine" in format_summary(result)
    assert read_table(cfg.output.folder, "recommendations", AS_OF).height > 0
