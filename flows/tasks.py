"""The Prefect tasks of `plan_buffers` (flows/plan.py): the pull, the validation, the pure stages
(`pipeline.stages`), the publisher and the MLflow steps, each with its time-out and retries.

Only the pull and the MLflow steps are retried (they talk to things that can flake), never on bad input. Every
stage runs under a time-out from config (`timed`): a stage that passes it, or whose worker process dies, fails the
run with one line naming the stage.
"""

import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment
from prefect.task_engine import TaskRunTimeoutError

from buffers.drift import REQUIRED as DRIFT_COLUMNS
from buffers.drift import compare_runs
from configs.schema import BuffercastConfig
from flows import publish as publisher
from flows.cluster import dask_pool
from flows.sales_cache import pull_sales
from flows.sources import read_sku_master, scan_sales, unreadable
from flows.tracking import Tracker
from forecasting.workers import WorkerDied
from pipeline.contracts import CONTRACTS, SCHEMA_VERSION, InputError, Inputs, json_schema_text, quarantine_summary, validate_inputs
from pipeline.partitioned import (
    ForecastParts,
    PartitionStore,
    ProfiledParts,
    Recommended,
    SalesParts,
    forecast_parts,
    profile_parts,
    recommend_parts,
    validate_inputs_parts,
)
from pipeline.report import plan_summary_markdown, top_buffers_rows
from pipeline.tables import reasons_table, summary_metrics

REPORT_FILE = "report.html"
REPORT_FAILED_FILE = "report_failed.txt"  # in place of the report when it could not be rendered: why


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O faults (a flaky mount or object store), not bad input: an InputError fails the same way again."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


@dataclass(frozen=True)
class Pulled:
    """What the pull task returns: where the raw inputs were written, and the sales rows fetched and cached."""

    folder: str
    has_master: bool
    counts: dict[str, int]

    def tables(self, cfg: BuffercastConfig, store: publisher.ParquetStore | None = None) -> tuple[pl.LazyFrame, pl.DataFrame | None]:
        """The raw sales (a scan of the pulled file: read a chunk at a time by the validation; with `store`, of the
        run's own link to it, `ParquetStore.keep`, since the validation reads it several times and another run may
        replace the snapshot meanwhile) and SKU master. A snapshot removed since Prefect cached this result (within
        `input.cache_hours`) is read again from the inputs."""
        folder = Path(self.folder)
        if not (folder / "sales.parquet").exists() or (self.has_master and not (folder / "sku_master.parquet").exists()):
            get_run_logger().warning("the pulled inputs in %s are gone; reading the inputs again", folder)
            return pull_sales(cfg.input, cfg.as_of).raw.lazy(), read_sku_master(cfg.input, cfg.as_of)
        master = pl.read_parquet(folder / "sku_master.parquet") if self.has_master else None
        sales = folder / "sales.parquet"
        return pl.scan_parquet(store.keep(sales) if store is not None else sales), master


def _pull_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The inputs' fingerprint (files, sizes, modification times): a retried or repeated run whose files did not
    change takes the cached read instead of reading again. None (no caching) when config turns it off."""
    cfg: BuffercastConfig = parameters["cfg"]
    if cfg.input.cache_hours <= 0 or parameters["fingerprint"] is None:
        return None
    return f"buffercast-pull-v3-{parameters['fingerprint']}"


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_worth_retrying,
    cache_key_fn=_pull_cache_key,
    persist_result=True,
)
def pull(cfg: BuffercastConfig, fingerprint: str | None) -> Pulled:
    """Read the sales history (one local file streamed, `flows.sources.scan_sales`; else whole, or incrementally
    through `input.cache_folder`: `flows.sales_cache`) and the SKU master (retried: files may sit on a flaky mount or
    object store, a database may be unreachable for a moment), and hand them on as Parquet files
    (`flows.publish.write_pulled`): the task's result, which Prefect stores, is their folder and the sales rows
    fetched and taken from the cache, never the tables.

    `fingerprint` (of both inputs) is the cache key: see `_pull_cache_key`.
    """
    key = fingerprint if fingerprint is not None and cfg.input.cache_hours > 0 else "latest"
    stream = scan_sales(cfg.input) if cfg.input.cache_folder is None else None  # one local file: never held whole
    read = pull_sales(cfg.input, cfg.as_of) if stream is None else None
    master = read_sku_master(cfg.input, cfg.as_of)
    try:
        sales = stream if read is None else read.raw
        folder = publisher.write_pulled(cfg.output.folder, key, {"sales": sales, "sku_master": master}, cfg.input.cache_hours)
    except pl.exceptions.PolarsError as exc:  # the stream's source does not parse past its first rows
        raise unreadable(cfg.input, exc) from None
    fetched, cached = (read.fetched, read.cached) if read is not None else (publisher.parquet_rows(folder / "sales.parquet"), 0)
    get_run_logger().info(read.note if read is not None else f"sales: {fetched:,} rows read")
    return Pulled(str(folder), master is not None, {"sales_fetched": fetched, "sales_cached": cached})


@task(cache_policy=NO_CACHE)
def validate(cfg: BuffercastConfig, pulled: Pulled, store: publisher.ParquetStore | None = None) -> Inputs:
    """The raw inputs the pull wrote, validated `partitions.rows` sales rows at a time, the valid rows filed by
    partition of SKUs in `store` (`pipeline.partitioned.validate_inputs_parts`); without a store, the valid sales in
    one frame (`pipeline.contracts.validate_inputs`: the rolling evaluation's)."""
    raw_sales, raw_master = pulled.tables(cfg, store)
    today = dt.date.today()
    if store is None:
        inputs = validate_inputs(cfg, raw_sales.collect(), raw_master, today=today)
    else:
        inputs = validate_inputs_parts(cfg, raw_sales, raw_master, today=today, store=store)
    del raw_sales, raw_master
    logger = get_run_logger()
    logger.info("sales: %d rows read, %s", inputs.sales.rows_in, quarantine_summary(inputs.sales.quarantine))
    if inputs.master is not None:
        logger.info("SKU master: %d rows read, %s", inputs.master.rows_in, quarantine_summary(inputs.master.quarantine))
    return inputs


@task(cache_policy=NO_CACHE)
def profile(cfg: BuffercastConfig, sales: SalesParts, master: pl.DataFrame | None, as_of: dt.date, store: PartitionStore) -> ProfiledParts:
    """Calendar, SKU attributes and every demand feature per series, per partition of SKUs
    (`pipeline.partitioned.profile_parts`; the partitions' panels go to `store`)."""
    logger = get_run_logger()
    pp = profile_parts(cfg, sales, master, as_of, store, progress=logger.info)
    if pp.left_out.height:
        logger.warning(
            "%d series have no positive sale up to the last complete period and are not planned, e.g. %s",
            pp.left_out.height,
            ", ".join(pp.left_out["sku_id"].head(5)),
        )
    return pp


@task(cache_policy=NO_CACHE)
def forecast(cfg: BuffercastConfig, pp: ProfiledParts) -> ForecastParts:
    """Backtest, select and forecast every series, partition by partition (`pipeline.partitioned.forecast_parts`), on
    local worker processes or the Dask cluster of `backtest.dask_scheduler`."""
    logger = get_run_logger()
    if cfg.backtest.dask_scheduler is None:
        return forecast_parts(cfg, pp, progress=logger.info)
    with dask_pool(cfg.backtest.dask_scheduler) as (pool, workers):
        logger.info("forecasting on the Dask cluster at %s (%d worker threads)", cfg.backtest.dask_scheduler, workers)
        return forecast_parts(cfg, pp, progress=logger.info, pool=pool, workers=workers)


@task(cache_policy=NO_CACHE)
def recommend_buffers(cfg: BuffercastConfig, as_of: dt.date, pp: ProfiledParts, fp: ForecastParts) -> Recommended:
    """The recommendations (calibrated, simulated over the held-out demand), the stress test, the calibration and the
    per-SKU tables (`pipeline.partitioned.recommend_parts`)."""
    return recommend_parts(cfg, as_of, pp, fp, progress=get_run_logger().info)


class StageTimeout(TimeoutError):
    """A stage ran past its time-out (config `timeouts.<stage>`); Prefect stopped it and its workers were killed."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(
            f"the {stage} stage did not finish within its time-out of {seconds:g} s (timeouts.{stage}) and was stopped, "
            "its worker processes too; nothing of this run was published, the previous outputs are untouched. "
            f"If the catalogue has grown, raise timeouts.{stage}; otherwise the log above shows where the stage was."
        )


class StageWorkerDied(RuntimeError):
    """A worker process of a stage died (killed or crashed); the stage was stopped with its other workers."""

    def __init__(self, stage: str, cause: WorkerDied) -> None:
        super().__init__(f"the {stage} stage stopped: {cause}; nothing of this run was published, the previous outputs are untouched")


def timed(stage: str, seconds: float, stage_task: Task, **options: Any) -> Callable[..., Any]:
    """`stage_task` with its time-out. When it passes, Prefect raises its TaskRunTimeoutError into the running task (an
    alarm in the flow's main thread), the task's worker pool kills its workers on the way out (`forecasting.workers`)
    and the run fails with one line naming the stage; so does a worker process that dies. Any other TimeoutError
    (e.g. of a network read) is not the stage's time-out and propagates as it is."""
    bounded = stage_task.with_options(timeout_seconds=seconds, **options)

    def call(*args: Any) -> Any:
        try:
            result = bounded(*args)
        except TaskRunTimeoutError:
            raise StageTimeout(stage, seconds) from None
        except WorkerDied as exc:
            raise StageWorkerDied(stage, exc) from None
        publisher.pause_point(f"after:{stage}")  # tests only: a kill -9 at this stage boundary
        return result

    return call


class TrackingError(RuntimeError):
    """MLflow could not be reached or written to; the outputs were published all the same."""


def tracking_retries(cfg: BuffercastConfig) -> dict[str, Any]:
    return {
        "retries": cfg.tracking.retries,
        "retry_delay_seconds": cfg.tracking.retry_delay_seconds,
        "timeout_seconds": cfg.timeouts.track,
    }


@task(cache_policy=NO_CACHE)
def start_tracking(cfg: BuffercastConfig, as_of: dt.date, run_id: str, prefect_run_id: str) -> Tracker:
    """Open the run's MLflow run (retried by the caller's options: the tracking server may be restarting)."""
    tracker = Tracker(
        cfg.tracking.uri,
        cfg.tracking.experiment_name(cfg.name),
        cfg.tracking.artifact_location,
        http_retries=cfg.tracking.http_retries,
    )
    tracker.start(
        f"{cfg.name}-{as_of.isoformat()}",
        tags={
            "as_of": as_of.isoformat(),
            "config_name": cfg.name,
            "config_hash": cfg.fingerprint(),
            "schema_version": str(SCHEMA_VERSION),
            "git_commit": _git_commit(),
            "prefect_flow_run_id": prefect_run_id,
            "prefect_deployment": deployment.name or "none (local run)",
            "buffercast_run_id": run_id,
        },
    )
    return tracker


@task(cache_policy=NO_CACHE)
def log_run(
    tracker: Tracker,
    cfg: BuffercastConfig,
    summary: dict[str, Any],
    n_rows: dict[str, int],
    tables: dict[str, pl.DataFrame | pl.LazyFrame],
    inputs: Inputs,
    pngs: dict[str, bytes],
    report: str | None,
) -> None:
    """Everything a data scientist compares runs by: params, metrics, input lineage, tables, reasons, plots, report."""
    tracker.log_params(cfg.flat())
    tracker.log_metrics(summary_metrics(summary, n_rows, tables))
    sales = inputs.sales.parts  # filed by partition: described by its first values, row count and digest
    tracker.log_dataset(sales.witness, source=cfg.input.sales, name="sales", context="sales", rows=sales.rows, digest=sales.digest)
    if inputs.master is not None and cfg.input.sku_master:
        tracker.log_dataset(inputs.master.valid, source=cfg.input.sku_master, name="sku_master", context="sku_master")
    for name, frame in tables.items():
        tracker.log_table(name, frame)
        if name in CONTRACTS:  # the contract each table was written under, as downstream systems get it
            tracker.log_text(json_schema_text(name), f"schemas/{name}.schema.json")
    tracker.log_viewable_table(reasons_table(tables["recommendations"]), "reasons.json")
    for file_name, png in pngs.items():
        tracker.log_bytes(png, file_name)
    if report is not None:  # None: the report could not be rendered (the manifest's report_error says why)
        tracker.log_text(report, f"report/{REPORT_FILE}")


@task(cache_policy=NO_CACHE)
def publish(
    cfg: BuffercastConfig,
    as_of: dt.date,
    run_id: str,
    tables: dict[str, pl.DataFrame | pl.LazyFrame],
    manifest: dict[str, Any],
    documents: dict[str, str],
) -> dict[str, str]:
    return publisher.publish_tables(cfg.output.folder, as_of, run_id, tables, manifest, documents)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def latest_evaluation(cfg: BuffercastConfig, as_of: dt.date) -> tuple[dt.date, pl.DataFrame] | None:
    """The latest `evaluation` table published under the output folder with a last origin on or before `as_of` (that
    origin, the table), for the report; None when there is none (or it cannot be read: then a warning)."""
    root = Path(cfg.output.folder) / publisher.EVALUATIONS
    dates = [d for d in publisher.published_as_of_dates(root, "evaluation") if d <= as_of]
    if not dates:
        return None
    try:
        return dates[-1], publisher.read_table(root, "evaluation", dates[-1])
    except Exception as exc:
        get_run_logger().warning("the report leaves out the evaluation of %s: %s: %s", dates[-1], type(exc).__name__, exc)
        return None


def previous_changes(cfg: BuffercastConfig, as_of: dt.date, recs: pl.DataFrame) -> tuple[dt.date | None, pl.DataFrame]:
    """The latest earlier published as-of date and what changed since; nothing to compare on a first run, or when
    the previous table lacks columns the comparison needs (published by an older buffercast): then a warning."""
    previous = publisher.previous_as_of(cfg.output.folder, as_of)
    before = publisher.read_table(cfg.output.folder, "recommendations", previous) if previous else pl.DataFrame()
    missing = [c for c in DRIFT_COLUMNS if c not in before.columns]
    if previous and missing:
        get_run_logger().warning("no drift against %s: its recommendations lack %s (an older schema)", previous, missing)
        before = pl.DataFrame()
    return previous, compare_runs(before, recs, buffer_change_pct=cfg.drift.buffer_change_pct)


def publish_prefect_artifacts(recs: pl.DataFrame, summary: dict[str, Any], changes: pl.DataFrame, as_of: dt.date) -> None:
    """What an operator sees in the Prefect UI: a markdown summary and the 20 largest buffers."""
    create_markdown_artifact(
        plan_summary_markdown(summary, changes, as_of), key="plan-summary", description=f"buffercast plan as of {as_of}"
    )
    create_table_artifact(
        top_buffers_rows(recs),
        key="top-buffers",
        description=f"the 20 largest buffers by value, as of {as_of}",
    )
