"""`plan_buffers`: the Prefect flow from sales history to published buffer recommendations.

Wiring only: every decision lives in features/, forecasting/ and buffers/; reading in flows/sources.py,
validation in flows/schemas.py, writing in flows/publish.py, MLflow in flows/tracking.py.
Only the pull and the MLflow steps are retried (they talk to things that can flake); every stage has a
timeout from config. No `from __future__ import annotations` here: Prefect resolves the flow's parameter
types at run time (a served flow run fails on a string annotation).
"""

import datetime as dt
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.task_engine import TaskRunTimeoutError

from buffers.calibration import (
    ALL_FAMILIES,
    LEVEL_SCHEMA,
    USABLE,
    Calibration,
    bootstrap_coverage,
    pinball_losses,
    window_coverage,
    window_errors,
)
from buffers.drift import REQUIRED as DRIFT_COLUMNS
from buffers.drift import change_counts, compare_runs
from flows import publish as publisher
from flows.config import BuffercastConfig
from flows.core import (  # noqa: F401  (settings builders re-exported: bench/ and tests import them from here too)
    Profiled,
    backtest_settings,
    buffer_settings,
    forecast_stage,
    model_sets,
    profile_sales,
    profile_settings,
    recommend_stage,
)
from flows.report import FIGURE_FILES, render_pngs, render_report, report_figures, top_buffers
from flows.schemas import SCHEMA_VERSION, Validated, quarantine_summary, validate_output, validate_sales, validate_sku_master
from flows.sources import InputError, input_fingerprint, read_sales, read_sku_master
from flows.tracking import Tracker, resolve_tracking_uri
from forecasting.backtest import ForecastResult
from forecasting.workers import WorkerDied


@dataclass(frozen=True)
class Inputs:
    sales: Validated
    master: Validated | None


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O faults (a flaky mount or object store), not bad input: an InputError fails the same way again."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


def _pull_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The inputs' fingerprint (files, sizes, modification times): a retried or repeated run whose files did not
    change takes the cached read instead of reading again. None (no caching) when config turns it off."""
    cfg: BuffercastConfig = parameters["cfg"]
    if cfg.input.cache_hours <= 0 or parameters["fingerprint"] is None:
        return None
    return f"buffercast-pull-{parameters['fingerprint']}"


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_worth_retrying,
    cache_key_fn=_pull_cache_key,
    persist_result=True,
)
def pull(cfg: BuffercastConfig, fingerprint: str | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Read the sales history and the SKU master (retried: files may sit on a flaky mount or object store).

    `fingerprint` (of both inputs) is the cache key: see `_pull_cache_key`.
    """
    return read_sales(cfg.input), read_sku_master(cfg.input)


@task(cache_policy=NO_CACHE)
def validate(cfg: BuffercastConfig, raw_sales: pl.DataFrame, raw_master: pl.DataFrame | None) -> Inputs:
    sales = validate_sales(
        raw_sales,
        cfg.input.sales_columns,
        today=dt.date.today(),
        date_format=cfg.input.date_format,
        max_quarantine_share=cfg.input.max_quarantine_share,
    )
    master = (
        validate_sku_master(raw_master, cfg.input.sku_master_columns, max_quarantine_share=cfg.input.max_quarantine_share)
        if raw_master is not None
        else None
    )
    logger = get_run_logger()
    logger.info("sales: %d rows read, %s", sales.rows_in, quarantine_summary(sales.quarantine))
    if master is not None:
        logger.info("SKU master: %d rows read, %s", master.rows_in, quarantine_summary(master.quarantine))
    return Inputs(sales, master)


@task(cache_policy=NO_CACHE)
def profile(cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame | None, as_of: dt.date) -> Profiled:
    """Calendar, SKU attributes and every demand feature per series (`flows.core.profile_sales`)."""
    p = profile_sales(cfg, sales, master, as_of)
    if p.left_out.height:
        get_run_logger().warning(
            "%d series have no positive sale up to the last complete period and are not planned, e.g. %s",
            p.left_out.height,
            ", ".join(p.left_out["sku_id"].head(5)),
        )
    return p


@task(cache_policy=NO_CACHE)
def forecast(cfg: BuffercastConfig, p: Profiled) -> ForecastResult:
    return forecast_stage(cfg, p)


@task(cache_policy=NO_CACHE)
def recommend_buffers(
    cfg: BuffercastConfig, as_of: dt.date, p: Profiled, fc: ForecastResult
) -> tuple[pl.DataFrame, pl.DataFrame, Calibration | None]:
    """The recommendations (calibrated, simulated over the held-out demand), the stress test and the calibration."""
    return recommend_stage(cfg, as_of, p, fc)


def buffer_coverage(recs: pl.DataFrame, fc: ForecastResult, key_cols: pl.DataFrame, calibration: Calibration | None) -> pl.DataFrame:
    """unique_id, model (the chosen one), buffer_coverage_before/after of the cycle-target SKUs: how often the safety
    stock at the target / at its calibrated level covered the backtest windows. Normal-method SKUs by the sigma of
    their other windows (`buffers.calibration.window_coverage`); bootstrap SKUs by the bootstrap drawn from the
    history up to each cutoff (`bootstrap_coverage`, when calibration ran)."""
    sizing = recs.join(key_cols, on=["sku_id", "location_id"], nulls_equal=True).select(
        "unique_id", "model", "safety_stock_method", "service_level_measure", "service_level_target", "calibrated_service_level"
    )
    columns = ["unique_id", "service_level_target", "calibrated_service_level"]
    normal = sizing.filter(pl.col("safety_stock_method") == "normal_cycle")
    boot = sizing.filter(pl.col("safety_stock_method") == "bootstrap_quantile", pl.col("service_level_measure") == "cycle")
    parts = [pl.DataFrame(schema={"unique_id": pl.String, "buffer_coverage_before": pl.Float64, "buffer_coverage_after": pl.Float64})]
    if not fc.cv.is_empty() and not normal.is_empty():
        parts.append(window_coverage(window_errors(fc.cv, fc.plan), normal.select(columns)))
    windows = calibration.bootstrap_windows if calibration is not None else None
    if windows is not None and not boot.is_empty():
        parts.append(bootstrap_coverage(windows, boot.select(columns)))
    return pl.concat(parts, how="vertical_relaxed").join(sizing.select("unique_id", "model"), on="unique_id")


def output_tables(
    as_of: dt.date, recs: pl.DataFrame, fc: ForecastResult, p: Profiled, inputs: Inputs, calibration: Calibration | None = None
) -> dict[str, pl.DataFrame]:
    """The published tables in their contract shape, each validated by its pandera schema."""
    key_cols = p.keys.select("unique_id", "sku_id", "location_id")
    selected = fc.selection.select("unique_id", "model", selected=pl.lit(True))
    stamp = pl.lit(as_of).alias("as_of")
    volatility = recs.select("sku_id", "location_id", "error_cv", "volatility_class", "xyz_class")
    tables = {
        "recommendations": recs,
        "profiles": p.profiles.join(key_cols, on="unique_id")
        .join(volatility, on=["sku_id", "location_id"], nulls_equal=True)
        .select(stamp, "sku_id", "location_id", pl.exclude("unique_id", "sku_id", "location_id"))
        .sort("sku_id", "location_id"),
        "outliers": p.outlier_points.join(key_cols, on="unique_id")
        .select(stamp, "sku_id", "location_id", pl.col("ds").alias("date"), pl.col("y").alias("quantity"), "outlier_threshold")
        .sort("sku_id", "location_id", "date"),
        "forecasts": fc.forecasts.join(key_cols, on="unique_id")
        .select(stamp, "sku_id", "location_id", pl.col("ds").alias("date"), "step", "model", "forecast", pl.col("^q\\d.*$"))
        .sort("sku_id", "location_id", "date"),
        "backtest_metrics": fc.metrics.join(key_cols, on="unique_id")
        .join(selected, on=["unique_id", "model"], how="left")
        .join(buffer_coverage(recs, fc, key_cols, calibration), on=["unique_id", "model"], how="left")
        .select(
            stamp,
            "sku_id",
            "location_id",
            "model",
            pl.col("selected").fill_null(False),
            "mae",
            "rmse",
            "bias",
            "mase",
            "rmsse",
            "lead_time_rmse",
            "lead_time_bias",
            "review_lead_time_rmse",
            pl.col("^coverage_q.*$"),
            pl.col("^pinball_q.*$"),
            "buffer_coverage_before",
            "buffer_coverage_after",
            "n_windows",
            "fell_back",
            "missing_forecasts",
        )
        .sort("sku_id", "location_id", "model"),
        "quarantine": pl.concat(
            [inputs.sales.quarantine.with_columns(input=pl.lit("sales"))]
            + ([inputs.master.quarantine.with_columns(input=pl.lit("sku_master"))] if inputs.master else []),
            how="vertical_relaxed",
        ).select(stamp, "input", pl.exclude("input")),
    }
    return {name: validate_output(name, frame) for name, frame in tables.items()}


def sales_as_of(cfg: BuffercastConfig, sales: pl.DataFrame) -> tuple[pl.DataFrame, dt.date, int]:
    """The valid sales up to the as-of date (default: the last date in the data), and how many rows were later."""
    if sales.is_empty():
        raise InputError(f"sales input '{cfg.input.sales}': no valid row left after validation; see the quarantine counts in the log")
    as_of = cfg.as_of or sales["date"].max()
    used = sales.filter(pl.col("date") <= as_of)
    if used.is_empty():
        raise InputError(
            f"sales input '{cfg.input.sales}': no sale on or before the as-of date {as_of} (first sale {sales['date'].min()}); "
            "choose a later --as-of"
        )
    return used, as_of, sales.height - used.height


def run_summary(recs: pl.DataFrame) -> dict[str, Any]:
    """Counts per class and policy, capital: what the CLI prints and MLflow records."""

    def counts(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in recs.group_by(col).len().sort(col).iter_rows()}

    return {
        "skus": recs.height,
        "demand_class": counts("demand_class"),
        "volatility_class": counts("volatility_class"),
        "policy": counts("policy"),
        "abc_class": counts("abc_class"),
        "life_cycle": counts("life_cycle"),
        "safety_stock_value": float(recs["safety_stock_value"].sum()),
        "holding_cost_per_year": float(recs["holding_cost_per_year"].sum()),
        "median_mase": recs["mase"].median(),
        "service_level_targets": {
            float(k): int(v) for k, v in recs.group_by("service_level_target").len().sort("service_level_target").iter_rows()
        },
    }


def summary_metrics(summary: dict[str, Any], n_rows: dict[str, int], tables: dict[str, pl.DataFrame]) -> dict[str, float]:
    """Flat MLflow metrics: counts per class, policy, life cycle and change kind; capital; accuracy."""
    metrics: dict[str, float] = {
        "skus": summary["skus"],
        "series_not_planned": summary["series_not_planned"],
        **{f"rows_{k}": v for k, v in n_rows.items()},
        **{f"changes_{k}": v for k, v in summary["changes"].items()},
    }
    for group in ("demand_class", "volatility_class", "policy", "abc_class", "life_cycle"):
        metrics |= {f"skus_{group}_{k}": v for k, v in summary[group].items()}
    metrics["safety_stock_value_total"] = summary["safety_stock_value"]
    metrics["holding_cost_per_year_total"] = summary["holding_cost_per_year"]
    recs = tables["recommendations"].filter(pl.col("mase").is_not_null() & pl.col("mase").is_finite())
    if recs.height:
        # Weighted by annual value: the error where the money is.
        weights = recs["annual_value"] / recs["annual_value"].sum() if recs["annual_value"].sum() > 0 else None
        metrics["median_mase"] = float(recs["mase"].median())
        metrics["mean_mase"] = float(recs["mase"].mean())
        metrics["weighted_mase"] = float((recs["mase"] * weights).sum()) if weights is not None else float(recs["mase"].mean())
    selected = tables["backtest_metrics"].filter("selected")
    rmsse = selected["rmsse"].drop_nulls()
    if rmsse.len():
        metrics["median_rmsse"] = float(rmsse.median())
    metrics |= simulation_metrics(tables["recommendations"], tables.get("scenarios"))
    for row in tables.get("calibration", pl.DataFrame()).iter_rows(named=True):
        if row["quantile"] is None and row["heldout_after"] is not None:
            # Class maps: level and held-out coverage before/after; a model family's own map: its level.
            family = "" if row["model_family"] == ALL_FAMILIES else f"_{row['model_family']}"
            key = f"calibration_{row['exposure']}_{row['demand_class']}{family}_{round(row['service_level_target'] * 100, 1):g}"
            if not family or row["status"] in USABLE:
                metrics[f"{key}_level"] = row["calibrated_level"]
            if not family:
                metrics |= {f"{key}_heldout_before": row["heldout_before"], f"{key}_heldout_after": row["heldout_after"]}
        elif row["quantile"] is not None and row["pinball_loss"] is not None:
            metrics[f"pinball_{row['quantile']}_{row['demand_class']}"] = row["pinball_loss"]
    # Calibration of the chosen models' quantiles: share of backtest actuals at or below each (q95 -> ~0.95).
    coverage = [c for c in selected.columns if c.startswith(("coverage_", "buffer_coverage_"))]
    classes = tables["recommendations"].select("sku_id", "location_id", "demand_class")
    with_class = selected.join(classes, on=["sku_id", "location_id"], nulls_equal=True)
    for c in coverage:
        if selected[c].drop_nulls().len():
            metrics[c] = float(selected[c].mean())
        for (cls,), group in with_class.group_by("demand_class"):
            if group[c].drop_nulls().len():
                metrics[f"{c}_{cls}"] = float(group[c].mean())
    return metrics


def calibration_table(
    as_of: dt.date, calibration: Calibration | None, fc: ForecastResult, p: Profiled, cfg: BuffercastConfig
) -> pl.DataFrame:
    """The published `calibration` table: per exposure (lead time / review + lead time), demand class, model family
    ("all": the class's map) and target, the nominal level the buffer is sized at and the held-out coverage before
    and after; plus per class and forecast quantile, sklearn's mean pinball loss and the coverage of the per-step
    quantiles (rows with `quantile` set)."""
    levels = calibration.levels if calibration is not None else pl.DataFrame()
    pinball = pinball_losses(fc.cv, p.profiles.select("unique_id", "demand_class"), cfg.models.quantiles)
    table = pl.concat(
        [
            levels.with_columns(quantile=pl.lit(None, pl.String), pinball_loss=pl.lit(None, pl.Float64), coverage=pl.lit(None, pl.Float64)),
            pinball,
        ],
        how="diagonal_relaxed",
    )
    columns = LEVEL_SCHEMA | {"quantile": pl.String, "pinball_loss": pl.Float64, "coverage": pl.Float64}
    table = table.select([pl.col(c).cast(t) if c in table.columns else pl.lit(None, t).alias(c) for c, t in columns.items()])
    return table.select(pl.lit(as_of).alias("as_of"), pl.all()).sort(
        "exposure", "demand_class", "model_family", "service_level_target", "quantile", nulls_last=True
    )


def simulation_metrics(recs: pl.DataFrame, scenarios: pl.DataFrame | None) -> dict[str, float]:
    """Proof by simulation in MLflow: achieved vs target per target (the measure the target is set in), per demand
    class, the capital against the textbook buffer, and each disruption scenario under each policy."""
    out: dict[str, float] = {
        "capital_tied_up_total": float(recs["capital_tied_up"].sum()),
        "capital_at_risk_total": float(recs["capital_at_risk"].sum()),
        "textbook_safety_stock_value_total": float(recs["textbook_safety_stock_value"].sum()),
    }
    achieved = (
        pl.when(pl.col("service_level_measure") == "fill_rate").then("simulated_fill_rate").otherwise("simulated_cycle_service_level")
    )
    buffered = recs.filter(pl.col("safety_stock_units") > 0).with_columns(_achieved=achieved)
    for (measure, target), group in buffered.group_by("service_level_measure", "service_level_target"):
        values = group["_achieved"].drop_nulls()
        if values.len():
            name = f"simulated_{measure}_target_{round(target * 100, 1):g}"
            out[name] = float(values.mean())
            out[f"{name}_gap"] = float(values.mean()) - float(target)
    for (cls,), group in buffered.group_by("demand_class"):
        for column in ("simulated_cycle_service_level", "simulated_fill_rate"):
            if group[column].drop_nulls().len():
                out[f"{column}_{cls}"] = float(group[column].mean())
    for row in (scenarios if scenarios is not None else pl.DataFrame()).iter_rows(named=True):
        for column in ("simulated_cycle_service_level", "simulated_fill_rate", "holding_cost_per_year"):
            if row[column] is not None:
                out[f"scenario_{row['scenario']}_{row['policy']}_{column.removeprefix('simulated_')}"] = float(row[column])
    return out


REPORT_FILE = "report.html"


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


def planner_report(
    cfg: BuffercastConfig,
    p: Profiled,
    tables: dict[str, pl.DataFrame],
    summary: dict[str, Any],
    changes: pl.DataFrame | None,
    manifest: dict[str, Any],
    calibration: Calibration | None = None,
) -> tuple[dict[str, bytes], str]:
    """The plots (PNG bytes, for the report and MLflow alike) and the HTML report."""
    history = p.demand.join(p.keys, on="unique_id").select("sku_id", "location_id", date="ds", quantity="y")
    figures = report_figures(
        recommendations=tables["recommendations"],
        backtest_metrics=tables["backtest_metrics"],
        history=history,
        forecasts=tables["forecasts"],
        adi_cutoff=cfg.sbc.adi_cutoff,
        cv2_cutoff=cfg.sbc.cv2_cutoff,
        # Achieved in the measure each target is set in: cycle service level, or fill rate.
        simulated=tables["recommendations"].select(
            "sku_id",
            "location_id",
            simulated_cycle_service_level=pl.when(pl.col("service_level_measure") == "fill_rate")
            .then("simulated_fill_rate")
            .otherwise("simulated_cycle_service_level"),
        ),
        calibration_curves=calibration.curves if calibration is not None else None,
        calibration_levels=calibration.levels if calibration is not None else None,
    )
    pngs = render_pngs(figures)
    return pngs, render_report(summary=summary, tables=tables, figures=pngs, changes=changes, manifest=manifest)


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
            return bounded(*args)
        except TaskRunTimeoutError:
            raise StageTimeout(stage, seconds) from None
        except WorkerDied as exc:
            raise StageWorkerDied(stage, exc) from None

    return call


class TrackingError(RuntimeError):
    """MLflow could not be reached or written to; the outputs were published all the same."""


def _tracking_retries(cfg: BuffercastConfig) -> dict[str, Any]:
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
    tables: dict[str, pl.DataFrame],
    inputs: Inputs,
    pngs: dict[str, bytes],
    report: str,
) -> None:
    """Everything a data scientist compares runs by: params, metrics, input lineage, tables, reasons, plots, report."""
    tracker.log_params(cfg.flat())
    tracker.log_metrics(summary_metrics(summary, n_rows, tables))
    tracker.log_dataset(inputs.sales.valid, source=cfg.input.sales, name="sales", context="sales")
    if inputs.master is not None and cfg.input.sku_master:
        tracker.log_dataset(inputs.master.valid, source=cfg.input.sku_master, name="sku_master", context="sku_master")
    for name, frame in tables.items():
        tracker.log_table(name, frame)
    reasons = tables["recommendations"].select(
        "sku_id", "location_id", "policy", "safety_stock_units", "reorder_point_units", "demand_class", "xyz_class", "abc_class",
        "life_cycle", "reasons",
    )  # fmt: skip
    tracker.log_viewable_table(reasons, "reasons.json")
    for file_name, png in pngs.items():
        tracker.log_bytes(png, file_name)
    tracker.log_text(report, f"report/{REPORT_FILE}")


@task(cache_policy=NO_CACHE)
def publish(
    cfg: BuffercastConfig,
    as_of: dt.date,
    run_id: str,
    tables: dict[str, pl.DataFrame],
    manifest: dict[str, Any],
    documents: dict[str, str],
) -> dict[str, str]:
    return publisher.publish_tables(cfg.output.folder, as_of, run_id, tables, manifest, documents)


def publish_prefect_artifacts(recs: pl.DataFrame, summary: dict[str, Any], changes: pl.DataFrame, as_of: dt.date) -> None:
    """What an operator sees in the Prefect UI: a markdown summary and the 20 largest buffers."""

    def counts(title: str, values: dict[str, int]) -> str:
        return f"| {title} | " + ", ".join(f"{k} {v}" for k, v in values.items()) + " |"

    policy_changes = changes.filter(pl.col("change") == "policy")
    lines = [
        f"# buffercast plan as of {as_of}",
        "",
        "| | |",
        "|---|---|",
        f"| SKUs | {summary['skus']} |",
        counts("demand class", summary["demand_class"]),
        counts("volatility", summary["volatility_class"]),
        counts("life cycle", summary["life_cycle"]),
        counts("policy", summary["policy"]),
        f"| safety stock value | {summary['safety_stock_value']:,.2f} |",
        f"| holding cost per year | {summary['holding_cost_per_year']:,.2f} |",
        counts("service level targets", {f"{k:.0%}": v for k, v in summary["service_level_targets"].items()}),
        counts("changes since the last run", summary["changes"]),
        "",
        f"## SKUs whose policy changed ({policy_changes.height})",
        "",
        *[
            f"- {row['sku_id']}{' @ ' + row['location_id'] if row['location_id'] else ''}: {row['reason']}"
            for row in policy_changes.head(50).iter_rows(named=True)
        ],
    ]
    create_markdown_artifact("\n".join(lines), key="plan-summary", description=f"buffercast plan as of {as_of}")
    top = top_buffers(recs)
    create_table_artifact(
        top.select(
            "sku_id", "location_id", "policy", "safety_stock_units", "reorder_point_units", "safety_stock_value", "reasons"
        ).to_dicts(),
        key="top-buffers",
        description=f"the 20 largest buffers by value, as of {as_of}",
    )


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@flow(name="plan-buffers", log_prints=True)
def plan_buffers(config: BuffercastConfig) -> dict[str, Any]:
    """Sales history -> validated -> profiled -> backtested and forecast -> buffer recommendations -> published + tracked."""
    cfg = config
    logger = get_run_logger()
    t = cfg.timeouts
    fingerprint = input_fingerprint(cfg.input.sales, cfg.input.sku_master)
    raw_sales, raw_master = timed("pull", t.pull, pull, cache_expiration=dt.timedelta(hours=cfg.input.cache_hours))(cfg, fingerprint)
    inputs = timed("validation", t.validation, validate)(cfg, raw_sales, raw_master)
    sales, as_of, rows_after_as_of = sales_as_of(cfg, inputs.sales.valid)
    last_date = inputs.sales.valid["date"].max()

    master = inputs.master.valid if inputs.master else None
    p = timed("profile", t.profile, profile)(cfg, sales, master, as_of)
    fc = timed("forecast", t.forecast, forecast)(cfg, p)
    recs, stress, calibration = timed("recommend", t.recommend, recommend_buffers)(cfg, as_of, p, fc)
    tables = output_tables(as_of, recs, fc, p, inputs, calibration) | {
        "scenarios": validate_output("scenarios", stress),
        "calibration": validate_output("calibration", calibration_table(as_of, calibration, fc, p, cfg)),
    }

    run_id = uuid.uuid4().hex
    prefect_run_id = str(flow_run.get_id() or "")
    n_rows = {
        "sales_in": inputs.sales.rows_in,
        "sales_used": sales.height,
        "sales_quarantined": inputs.sales.quarantine.height,
        "sales_after_as_of": rows_after_as_of,
        "sku_master_in": inputs.master.rows_in if inputs.master else 0,
        "sku_master_quarantined": inputs.master.quarantine.height if inputs.master else 0,
    }
    previous, changes = previous_changes(cfg, as_of, recs)
    tables["changes"] = validate_output("changes", changes)
    summary = run_summary(recs) | {"series_not_planned": p.left_out.height, "changes": change_counts(changes)}

    # Tracking starts before publishing (its run id goes into the manifest); if the server is down, the outputs
    # are still published and the run fails afterwards, saying where they are.
    tracker, tracking_error = None, None
    try:
        tracker = start_tracking.with_options(**_tracking_retries(cfg))(cfg, as_of, run_id, prefect_run_id)
    except Exception as exc:
        tracking_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    manifest = {
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config_name": cfg.name,
        "config_hash": cfg.fingerprint(),
        "inputs": {"sales": cfg.input.sales, "sku_master": cfg.input.sku_master},
        "input_rows": n_rows,
        "series_not_planned": p.left_out.select("sku_id", "location_id").head(100).to_dicts(),
        "last_date_in_data": last_date.isoformat(),
        "previous_as_of": previous.isoformat() if previous else None,
        "frequency": cfg.frequency,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "mlflow_tracking_uri": resolve_tracking_uri(cfg.tracking.uri),
        "tracking_error": tracking_error,
        "prefect_flow_run_id": prefect_run_id,
        "summary": summary,
    }
    try:
        # The report is for people: if it cannot be drawn, the tables are still published and the run says so.
        try:
            pngs, report = planner_report(cfg, p, tables, summary, changes if previous else None, manifest, calibration)
        except Exception as exc:
            logger.warning("the report could not be rendered (%s: %s); publishing the tables without it", type(exc).__name__, exc)
            pngs, report = {}, None
            manifest["report_error"] = f"{type(exc).__name__}: {exc}"
        documents = {REPORT_FILE: report} if report is not None else {}
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
        log_run.with_options(**_tracking_retries(cfg))(tracker, cfg, summary, n_rows, tables, inputs, artifacts, report)
        tracker.finish(ok=True)
    except Exception as exc:
        tracker.finish_quietly(ok=False)
        raise TrackingError(f"MLflow tracking failed at {cfg.tracking.uri} ({type(exc).__name__}: {exc}); {where}") from exc

    return {
        **summary,
        "as_of": as_of.isoformat(),
        "input_rows": n_rows,
        "outputs": paths,
        "manifest": str(publisher.manifest_path(Path(cfg.output.folder).resolve(), as_of)),
        "mlflow_run_id": tracker.run_id,
        "mlflow_tracking_uri": tracker.uri,
        "prefect_flow_run_id": prefect_run_id,
    }
