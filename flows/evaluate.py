"""`evaluate_plans`: the Prefect flow of `buffercast evaluate`, the rolling-origin evaluation of the whole plan.

pull -> validate -> evaluate (`pipeline.evaluate.rolling_evaluation`: plan at each origin with the data up to it,
judge on what came after) -> publish the `evaluation` table under <output folder>/evaluations/ -> MLflow run (metrics,
the table, the trade-off curves). No `from __future__ import annotations`: Prefect resolves the flow's parameter types.
"""

import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from configs.schema import BuffercastConfig
from configs.secrets import PREFECT_LOGGERS, redact_logs
from flows import publish as publisher
from flows.publish import EVALUATIONS
from flows.sources import input_fingerprint
from flows.tasks import REPORT_FILE, pull, timed, tracking_retries, validate
from flows.tracking import Tracker
from pipeline.evaluate import RollingEvaluation, rolling_evaluation
from pipeline.plots import tradeoff_figure
from pipeline.report import figure_png, render_evaluation_report
from pipeline.tables import evaluation_metrics, evaluation_overview, evaluation_table

TRADEOFF_FILE = "tradeoff_curves.png"


@task(cache_policy=NO_CACHE)
def evaluate(cfg: BuffercastConfig, sales: Any, master: Any) -> RollingEvaluation:
    """Plan at every origin with the data up to it, judge each plan and the baselines on what came after."""
    logger = get_run_logger()
    result = rolling_evaluation(cfg, sales, master, progress=logger.info)
    logger.info(
        "%d origins (%s), %d judged windows, %d SKU windows not judged (lead time past the end of the data)",
        len(result.origins),
        ", ".join(str(o) for o in result.origins),
        result.windows.height,
        result.unjudged,
    )
    return result


@flow(name="evaluate-plans", log_prints=True)
def evaluate_plans(config: BuffercastConfig) -> dict[str, Any]:
    """Sales history -> validated -> a plan per rolling origin -> judged out of sample -> published + tracked (under
    <output folder>/evaluations/, checked and locked as `plan_buffers` does with its folder)."""
    cfg = config
    redact_logs(*PREFECT_LOGGERS)
    root = publisher.check_output_folder(Path(cfg.output.folder) / EVALUATIONS, cfg.output.min_free_mb)
    with publisher.output_lock(root, cfg.output.lock_wait_seconds) as recovered:
        for line in recovered:
            get_run_logger().warning("output folder %s: %s", root, line)
        return _evaluate(cfg, root)


def _evaluate(cfg: BuffercastConfig, root: Path) -> dict[str, Any]:
    t = cfg.timeouts
    pulled = timed("pull", t.pull, pull)(cfg, input_fingerprint(cfg.input.sales, cfg.input.sku_master))
    inputs = timed("validation", t.validation, validate)(cfg, pulled)
    master = inputs.master.valid if inputs.master else None
    # Each origin is a whole plan (profile, forecast, recommend), the sweep re-sizes it per target.
    budget = (t.profile + t.forecast + t.recommend) * cfg.evaluation.origins
    result = timed("evaluation", budget, evaluate)(cfg, inputs.sales.valid, master)
    if not result.origins:
        raise ValueError(
            f"no rolling origin fits the data: evaluation.holdout_days={cfg.evaluation.holdout_days} leaves no earlier period; "
            "lower it or give more history"
        )
    as_of = result.origins[-1]
    table = evaluation_table(result, as_of)
    png = figure_png(tradeoff_figure(result.summary))
    run_id = uuid.uuid4().hex
    manifest = {
        "run_id": run_id,
        "config_name": cfg.name,
        "config_hash": cfg.fingerprint(),
        "origins": [o.isoformat() for o in result.origins],
        "judged_windows": result.windows.height,
        "unjudged_windows": result.unjudged,
    }
    report = render_evaluation_report(table, png, manifest | {"config_name": cfg.name, "as_of": as_of.isoformat()})
    paths = timed("publish", t.publish, publisher_task)(root, as_of, run_id, table, manifest, report)
    tracker = Tracker(cfg.tracking.uri, f"{cfg.tracking.experiment_name(cfg.name)}-evaluation", cfg.tracking.artifact_location)
    tracker.start(f"{cfg.name}-evaluation-{as_of.isoformat()}", tags={"as_of": as_of.isoformat(), "config_hash": cfg.fingerprint()})
    try:
        log_evaluation.with_options(**tracking_retries(cfg))(tracker, cfg, table, png, report)
        tracker.finish(ok=True)
    except Exception:
        tracker.finish_quietly(ok=False)
        raise
    return {
        "as_of": as_of.isoformat(),
        "outputs": paths,
        "summary": table,
        "overview": evaluation_overview(table),
        "mlflow_run_id": tracker.run_id,
        **manifest,
    }


@task(cache_policy=NO_CACHE)
def publisher_task(root: Path, as_of: Any, run_id: str, table: Any, manifest: dict[str, Any], report: str) -> dict[str, str]:
    return publisher.publish_tables(root, as_of, run_id, {"evaluation": table}, manifest, {REPORT_FILE: report})


@task(cache_policy=NO_CACHE)
def log_evaluation(tracker: Tracker, cfg: BuffercastConfig, table: Any, png: bytes, report: str) -> None:
    tracker.log_params(cfg.flat())
    tracker.log_metrics(evaluation_metrics(table))
    tracker.log_table("evaluation", table)
    tracker.log_bytes(png, TRADEOFF_FILE)
    tracker.log_text(report, REPORT_FILE)
