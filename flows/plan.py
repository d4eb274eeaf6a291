"""`plan_buffers`: the Prefect flow from sales history to published buffer recommendations.

This file is the flow diagram and nothing else:

    pull -> validate -> profile -> forecast -> recommend -> tables -> changes -> report -> publish -> track

Every decision lives in the pure core (features/, forecasting/, buffers/) and the pure pipeline (pipeline/: the
stages, the table shaping, the contracts, the report); the tasks, their time-outs and retries in flows/tasks.py;
reading in flows/sources.py, writing in flows/publish.py, MLflow in flows/tracking.py.
No `from __future__ import annotations` here: Prefect resolves the flow's parameter types at run time (a served
flow run fails on a string annotation).
"""

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from buffers.drift import change_counts
from configs.schema import BuffercastConfig
from configs.secrets import PREFECT_LOGGERS, redact, redact_logs
from flows import publish as publisher
from flows.sources import input_fingerprint
from flows.tasks import (
    REPORT_FAILED_FILE,
    REPORT_FILE,
    Pulled,
    TrackingError,
    forecast,
    latest_evaluation,
    log_run,
    previous_changes,
    profile,
    publish,
    publish_prefect_artifacts,
    pull,
    recommend_buffers,
    start_tracking,
    timed,
    tracking_retries,
    validate,
)
from flows.tracking import resolve_tracking_uri
from pipeline.contracts import Inputs, validate_output
from pipeline.report import FIGURE_FILES, planner_report
from pipeline.tables import as_of_rows, input_rows, published_tables, run_manifest, run_summary


@flow(name="plan-buffers", log_prints=True)
def plan_buffers(config: BuffercastConfig) -> dict[str, Any]:
    """Sales history -> validated -> profiled -> backtested and forecast -> buffer recommendations -> published + tracked.

    The output folder is checked (writable, `output.min_free_mb` free) before anything is computed, and held under its
    lock for the whole run: a second run into it waits or fails (`flows.publish.output_lock`); what a killed run left
    there is recovered first."""
    cfg = config
    redact_logs(*PREFECT_LOGGERS)  # a library's error may quote a URL with its credential: never logged as is
    logger = get_run_logger()
    publisher.check_output_folder(cfg.output.folder, cfg.output.min_free_mb)
    with publisher.output_lock(cfg.output.folder, cfg.output.lock_wait_seconds) as recovered:
        for line in recovered:
            logger.warning("output folder %s: %s", cfg.output.folder, line)
        return _plan(cfg, logger)


def _plan(cfg: BuffercastConfig, logger: Any) -> dict[str, Any]:
    t = cfg.timeouts
    fingerprint = input_fingerprint(cfg.input.sales, cfg.input.sku_master)
    pulled = timed("pull", t.pull, pull, cache_expiration=dt.timedelta(hours=cfg.input.cache_hours))(cfg, fingerprint)
    run_id = uuid.uuid4().hex
    with publisher.work_store(cfg.output.folder, run_id) as store:  # the run's partitions wait here between stages
        inputs = timed("validation", t.validation, validate)(cfg, pulled, store)
        return _plan_partitions(cfg, logger, pulled, inputs, run_id, store)


def _plan_partitions(
    cfg: BuffercastConfig, logger: Any, pulled: Pulled, inputs: Inputs, run_id: str, store: publisher.ParquetStore
) -> dict[str, Any]:
    t = cfg.timeouts
    sales = inputs.sales.parts  # the valid sales, filed by partition of SKUs in `store`
    as_of, sales_used, rows_after_as_of = as_of_rows(cfg, sales.dates)
    master = inputs.master.valid if inputs.master else None
    pp = timed("profile", t.profile, profile)(cfg, sales, master, as_of, store)
    fp = timed("forecast", t.forecast, forecast)(cfg, pp)
    rec = timed("recommend", t.recommend, recommend_buffers)(cfg, as_of, pp, fp)
    recs = rec.recommendations
    tables = published_tables(as_of, rec.tables, rec.scenarios, rec.calibration, rec.pinball, inputs)
    previous, changes = previous_changes(cfg, as_of, recs)
    tables["changes"] = validate_output("changes", changes)

    prefect_run_id = str(flow_run.get_id() or "")
    n_rows = input_rows(inputs, sales_used, rows_after_as_of, pulled.counts)
    summary = run_summary(recs) | {"series_not_planned": pp.left_out.height, "changes": change_counts(changes)}

    # Tracking starts before publishing (its run id goes into the manifest); if the server is down, the outputs
    # are still published and the run fails afterwards, saying where they are.
    tracker, tracking_error = None, None
    try:
        tracker = start_tracking.with_options(**tracking_retries(cfg))(cfg, as_of, run_id, prefect_run_id)
    except Exception as exc:
        tracking_error = redact(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    tracking = {
        "mlflow_run_id": tracker.run_id if tracker else None,
        "mlflow_tracking_uri": resolve_tracking_uri(cfg.tracking.uri),
        "tracking_error": tracking_error,
    }
    manifest = run_manifest(
        cfg,
        run_id=run_id,
        as_of=as_of,
        n_rows=n_rows,
        left_out=pp.left_out,
        last_date=sales.dates["date"].max(),
        previous=previous,
        summary=summary,
        tracking=tracking,
        prefect_run_id=prefect_run_id,
    )
    try:
        # The report is for people: if it cannot be drawn, the tables are still published and the run says so.
        try:
            evaluation = latest_evaluation(cfg, as_of)
            pngs, report = planner_report(
                cfg, pp.history(), tables, summary, changes if previous else None, manifest, rec.calibration, evaluation
            )
        except Exception as exc:
            logger.warning("the report could not be rendered (%s: %s); publishing the tables without it", type(exc).__name__, exc)
            pngs, report = {}, None
            manifest["report_error"] = f"{type(exc).__name__}: {exc}"
        # A report that failed still replaces the as-of's reports folder: no stale report.html next to new tables.
        documents = {REPORT_FILE: report} if report is not None else {REPORT_FAILED_FILE: f"{manifest['report_error']}\n"}
        paths = timed("publish", t.publish, publish)(cfg, as_of, run_id, tables, manifest, documents)
        logger.info("published %s", ", ".join(f"{k} -> {v}" for k, v in paths.items()))
        publish_prefect_artifacts(recs, summary, changes, as_of)
    except BaseException:
        if tracker is not None:
            tracker.finish_quietly(ok=False)  # never leave the MLflow run RUNNING
        raise

    out = Path(cfg.output.folder).resolve()
    where = f"the outputs are published in {out} (manifest {publisher.manifest_path(out, as_of)}); nothing is lost"
    if tracker is None:
        raise TrackingError(f"MLflow tracking failed at {cfg.tracking.uri} ({tracking_error}); {where}")
    try:
        artifacts = {FIGURE_FILES[title]: png for title, png in pngs.items()}
        log_run.with_options(**tracking_retries(cfg))(tracker, cfg, summary, n_rows, tables, inputs, artifacts, report)
        tracker.finish(ok=True)
    except Exception as exc:
        tracker.finish_quietly(ok=False)
        raise TrackingError(redact(f"MLflow tracking failed at {cfg.tracking.uri} ({type(exc).__name__}: {exc}); {where}")) from exc

    return {
        **summary,
        "as_of": as_of.isoformat(),
        "input_rows": n_rows,
        "outputs": paths,
        "manifest": str(publisher.manifest_path(out, as_of)),
        "mlflow_run_id": tracker.run_id,
        "mlflow_tracking_uri": tracker.uri,
        "prefect_flow_run_id": prefect_run_id,
        "report_error": manifest.get("report_error"),
    }
