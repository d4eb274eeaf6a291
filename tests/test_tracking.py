"""MLflow over HTTP: a real `mlflow server` on 127.0.0.1, and a tracking server that is down."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow.data
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from flows.publish import read_manifest, read_table
from tests.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

AS_OF = dt.date(2026, 6, 30)


def test_flow_tracks_to_a_real_mlflow_server_over_http(mlflow_server, small_catalogue, make_config):
    from flows.plan import plan_buffers

    cfg = make_config(
        small_catalogue["sales"],
        small_catalogue["sku_master"],
        tracking={"uri": mlflow_server, "artifact_location": None},
        partitions={"rows": 2_000},  # the sales validated a chunk at a time: never in one frame
    )
    result = plan_buffers(cfg)
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == cfg.tracking.experiment_name(cfg.name) == "buffercast-default"
    assert run.info.run_name == f"{cfg.name}-{AS_OF}"
    # params, metrics, tags
    assert len(run.data.params) == len(cfg.flat())
    assert run.data.metrics["skus"] == result["skus"]
    assert {"skus_policy_JIC", "median_mase", "weighted_mase", "safety_stock_value_total"} <= set(run.data.metrics)
    for tag in ("git_commit", "prefect_flow_run_id", "prefect_deployment", "schema_version", "as_of", "config_hash"):
        assert tag in run.data.tags, tag
    assert run.data.tags["prefect_flow_run_id"] == result["prefect_flow_run_id"]
    # input lineage: the sales and SKU-master sources with their digests
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"sales", "sku_master"}
    assert inputs["sales"].dataset.digest and small_catalogue["sales"].name in inputs["sales"].dataset.source
    # ... described as MLflow describes the valid sales in one frame: digest, schema, row count
    whole = mlflow.data.from_polars(_valid_sales(cfg), source=cfg.input.sales, name="sales")._to_mlflow_entity()
    assert result["input_rows"]["sales_in"] > 4 * 2_000
    logged = inputs["sales"].dataset
    assert (logged.digest, logged.schema, logged.profile) == (whole.digest, whole.schema, whole.profile)
    assert {t.value for t in inputs["sales"].tags} == {"sales"}
    # artifacts: every published table, the per-SKU reasons, the plots and the report
    paths = {a.path for top in ("tables", "plots", "report") for a in client.list_artifacts(run.info.run_id, top)}
    paths |= {a.path for a in client.list_artifacts(run.info.run_id) if not a.is_dir}
    for table in ("recommendations", "profiles", "outliers", "forecasts", "backtest_metrics", "quarantine", "changes"):
        assert f"tables/{table}.parquet" in paths, table
    assert "reasons.json" in paths
    assert {"plots/sbc_quadrants.png", "report/report.html"} <= paths
    local = Path(client.download_artifacts(run.info.run_id, "tables/recommendations.parquet"))
    assert pl.read_parquet(local).height == result["skus"]


def _valid_sales(cfg) -> pl.DataFrame:
    from flows.sales_cache import pull_sales
    from pipeline.contracts import validate_inputs

    return validate_inputs(cfg, pull_sales(cfg.input, cfg.as_of).raw, None, today=dt.date.today()).sales.valid


def test_tracking_down_publishes_then_fails_saying_where_the_outputs_are(small_catalogue, make_config):
    from flows.plan import plan_buffers
    from flows.tasks import TrackingError

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = make_config(
        small_catalogue["sales"],
        small_catalogue["sku_master"],
        tracking={"uri": dead, "artifact_location": None, "retries": 1, "retry_delay_seconds": 0, "http_retries": 0},
    )
    with pytest.raises(TrackingError) as err:
        plan_buffers(cfg)
    message = str(err.value)
    assert "tracking failed" in message and dead in message and cfg.output.folder in message
    # Nothing lost: every table and the manifest are published, and the manifest says tracking failed.
    assert read_table(cfg.output.folder, "recommendations", AS_OF).height > 0
    manifest = read_manifest(cfg.output.folder, AS_OF)
    assert manifest["mlflow_run_id"] is None and manifest["tracking_error"]
