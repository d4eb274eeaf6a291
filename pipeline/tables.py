"""The published tables in their contract shape, and the run's summary and metrics: pure functions of the stages'
results (`pipeline.stages`), validated by their contracts (`pipeline.contracts`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from buffers.calibration import ALL_FAMILIES, USABLE, Calibration
from buffers.time_phased import COLUMNS as PHASED_COLUMNS
from buffers.time_phased import time_phased_parameters
from configs.schema import BuffercastConfig
from evaluation import metrics as em
from evaluation.coverage import bootstrap_coverage, window_coverage
from evaluation.windows import window_errors
from forecasting.backtest import ForecastResult
from pipeline.contracts import SCHEMA_VERSION, InputError, Inputs, output_columns, output_dtypes, validate_output
from pipeline.stages import Profiled

if TYPE_CHECKING:
    from pipeline.evaluate import RollingEvaluation


def buffer_coverage(recs: pl.DataFrame, fc: ForecastResult, key_cols: pl.DataFrame, calibration: Calibration | None) -> pl.DataFrame:
    """unique_id, model (the chosen one), buffer_coverage_before/after of the cycle-target SKUs: how often the safety
    stock at the target / at its calibrated level covered the backtest windows. Normal-method SKUs by the sigma of
    their other windows (`evaluation.coverage.window_coverage`); bootstrap SKUs by the bootstrap drawn from the
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


def plan_parameters(recs: pl.DataFrame, fc: ForecastResult, key_cols: pl.DataFrame) -> pl.DataFrame:
    """The time-phased parameters (`buffers.time_phased`) per SKU and future period: sku_id, location_id, then its columns."""
    keys = ["sku_id", "location_id"]
    if fc.extended is None or fc.extended_periods == 0 or recs.is_empty():
        return pl.DataFrame(schema={c: t for c, t in output_dtypes("plan_parameters").items() if c != "as_of"})
    with_ids = recs.join(key_cols, on=keys, how="inner", nulls_equal=True)
    phased = time_phased_parameters(with_ids, fc.extended, fc.extended_periods)
    return phased.join(key_cols, on="unique_id").select(*keys, *PHASED_COLUMNS).sort(*keys, "period")


#: The per-SKU published tables and the columns each is sorted by (unique in it): the concatenation of a run's
#: partitions sorted by them is the table of the run in one piece.
TABLE_ORDER: dict[str, tuple[str, ...]] = {
    "recommendations": ("sku_id", "location_id"),
    "profiles": ("sku_id", "location_id"),
    "outliers": ("sku_id", "location_id", "date"),
    "plan_parameters": ("sku_id", "location_id", "period"),
    "forecasts": ("sku_id", "location_id", "date"),
    "backtest_metrics": ("sku_id", "location_id", "model"),
}


def sku_tables(
    as_of: dt.date, recs: pl.DataFrame, fc: ForecastResult, p: Profiled, calibration: Calibration | None = None
) -> dict[str, pl.DataFrame]:
    """The per-SKU published tables (`TABLE_ORDER`) of the SKUs of `recs` (all, or a partition's) in their contract
    shape, each validated by its pandera schema."""
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
        "plan_parameters": plan_parameters(recs, fc, key_cols).select(stamp, pl.all()),
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
    }
    return {name: validate_output(name, frame) for name, frame in tables.items()}


def quarantine_table(as_of: dt.date, inputs: Inputs) -> pl.DataFrame:
    """The published `quarantine` table: the rejected rows of every input ("sales", "sku_master") and why."""
    quarantine = {"sales": inputs.sales.quarantine} | ({"sku_master": inputs.master.quarantine} if inputs.master else {})
    return validate_output(
        "quarantine",
        pl.concat([rows.with_columns(input=pl.lit(name)) for name, rows in quarantine.items()], how="vertical_relaxed").select(
            pl.lit(as_of).alias("as_of"), "input", pl.exclude("input")
        ),
    )


def sales_as_of(cfg: BuffercastConfig, sales: pl.DataFrame) -> tuple[pl.DataFrame, dt.date, int]:
    """The valid sales up to the as-of date (default: the last date in the data), and how many rows were later."""
    as_of, _, after = as_of_rows(cfg, sales.group_by("date").len("rows"))
    return (sales.filter(pl.col("date") <= as_of) if after else sales), as_of, after  # no copy of the whole sales


def as_of_rows(cfg: BuffercastConfig, dates: pl.DataFrame) -> tuple[dt.date, int, int]:
    """The as-of date (`as_of`, default: the last date of the valid sales), the valid rows on or before it and the
    rows after it, from the valid rows per date (`dates`: date, rows). InputError when no row is on or before it."""
    total = int(dates["rows"].sum())
    if total == 0:
        raise InputError(f"sales input '{cfg.input.sales}': no valid row left after validation; see the quarantine counts in the log")
    as_of = cfg.as_of or dates["date"].max()
    used = int(dates.filter(pl.col("date") <= as_of)["rows"].sum())
    if used == 0:
        raise InputError(
            f"sales input '{cfg.input.sales}': no sale on or before the as-of date {as_of} (first sale {dates['date'].min()}); "
            "choose a later --as-of"
        )
    return as_of, used, total - used


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
        "calibration_status": counts("calibration_status"),
        "safety_stock_value": float(recs["safety_stock_value"].sum()),
        "holding_cost_per_year": float(recs["holding_cost_per_year"].sum()),
        "median_mase": em.finite_median(recs["mase"]),
        "service_level_targets": {
            float(k): int(v) for k, v in recs.group_by("service_level_target").len().sort("service_level_target").iter_rows()
        },
    }


def summary_metrics(summary: dict[str, Any], n_rows: dict[str, int], tables: Mapping[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics: counts per class, policy, life cycle and change kind; capital; accuracy. Reads the
    `recommendations`, `backtest_metrics`, `scenarios` and `calibration` tables (frames, never streamed)."""
    metrics: dict[str, float] = {
        "skus": summary["skus"],
        "series_not_planned": summary["series_not_planned"],
        **{f"rows_{k}": v for k, v in n_rows.items()},
        **{f"changes_{k}": v for k, v in summary["changes"].items()},
    }
    for group in ("demand_class", "volatility_class", "policy", "abc_class", "life_cycle", "calibration_status"):
        metrics |= {f"skus_{group}_{k}": v for k, v in summary[group].items()}
    metrics["safety_stock_value_total"] = summary["safety_stock_value"]
    metrics["holding_cost_per_year_total"] = summary["holding_cost_per_year"]
    # Median, mean and annual-value-weighted MASE (the error where the money is), over the SKUs with a finite one.
    metrics |= em.error_summary(tables["recommendations"], "mase", "annual_value")
    selected = tables["backtest_metrics"].filter("selected")
    if (median_rmsse := em.finite_median(selected["rmsse"])) is not None:
        metrics["median_rmsse"] = median_rmsse
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


def calibration_table(as_of: dt.date, calibration: Calibration | None, pinball: pl.DataFrame) -> pl.DataFrame:
    """The published `calibration` table: per exposure (lead time / review + lead time), demand class, model family
    ("all": the class's map) and target, the nominal level the buffer is sized at and the held-out coverage before
    and after; plus per class and forecast quantile, sklearn's mean pinball loss and the coverage of the per-step
    quantiles (rows with `quantile` set). `pinball`: `evaluation.coverage.pinball_losses` of every SKU's backtest."""
    levels = calibration.levels if calibration is not None else pl.DataFrame()
    table = pl.concat(
        [
            levels.with_columns(quantile=pl.lit(None, pl.String), pinball_loss=pl.lit(None, pl.Float64), coverage=pl.lit(None, pl.Float64)),
            pinball,
        ],
        how="diagonal_relaxed",
    )
    columns = output_dtypes("calibration")
    table = table.with_columns(as_of=pl.lit(as_of)).select(
        [pl.col(c).cast(t) if c in table.columns or c == "as_of" else pl.lit(None, t).alias(c) for c, t in columns.items()]
    )
    return table.sort("exposure", "demand_class", "model_family", "service_level_target", "quantile", nulls_last=True)


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


def published_tables(
    as_of: dt.date,
    sku: dict[str, pl.DataFrame | pl.LazyFrame],
    stress: pl.DataFrame,
    calibration: Calibration | None,
    pinball: pl.DataFrame,
    inputs: Inputs,
) -> dict[str, pl.DataFrame | pl.LazyFrame]:
    """Every published table but `changes` (it needs the previous run), in contract shape and validated: the per-SKU
    tables (`sku_tables`, of the whole catalogue; those a partitioned run streams as LazyFrames), the quarantine, the
    scenarios and the calibration."""
    return sku | {
        "quarantine": quarantine_table(as_of, inputs),
        "scenarios": validate_output("scenarios", stress),
        "calibration": validate_output("calibration", calibration_table(as_of, calibration, pinball)),
    }


def input_rows(inputs: Inputs, sales_used: int, sales_after_as_of: int, pulled: dict[str, int]) -> dict[str, int]:
    """Rows in = rows used + rows quarantined (+ rows after the as-of date), per input, and sales rows in = rows fetched
    + rows cached (`flows.sales_cache`; `pulled`): the manifest's `input_rows`."""
    return {
        "sales_in": inputs.sales.rows_in,
        "sales_fetched": pulled["sales_fetched"],
        "sales_cached": pulled["sales_cached"],
        "sales_used": sales_used,
        "sales_quarantined": inputs.sales.quarantine.height,
        "sales_after_as_of": sales_after_as_of,
        "sku_master_in": inputs.master.rows_in if inputs.master else 0,
        "sku_master_quarantined": inputs.master.quarantine.height if inputs.master else 0,
    }


def run_manifest(
    cfg: BuffercastConfig,
    *,
    run_id: str,
    as_of: dt.date,
    n_rows: dict[str, int],
    left_out: pl.DataFrame,
    last_date: dt.date,
    previous: dt.date | None,
    summary: dict[str, Any],
    tracking: dict[str, str | None],
    prefect_run_id: str,
) -> dict[str, Any]:
    """The run's `manifest.json` (the publisher adds the file list and the schemas). The as-of date and the schema version
    are in it from the start: the report shows them before anything is published."""
    return {
        "run_id": run_id,
        "as_of": as_of.isoformat(),
        "schema_version": SCHEMA_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config_name": cfg.name,
        "config_hash": cfg.fingerprint(),
        "inputs": {"sales": cfg.input.sales, "sku_master": cfg.input.sku_master},
        "input_rows": n_rows,
        "series_not_planned": left_out.select("sku_id", "location_id").head(100).to_dicts(),
        "last_date_in_data": last_date.isoformat(),
        "previous_as_of": previous.isoformat() if previous else None,
        "frequency": cfg.frequency,
        **tracking,
        "prefect_flow_run_id": prefect_run_id,
        "summary": summary,
    }


def reasons_table(recs: pl.DataFrame) -> pl.DataFrame:
    """Why each SKU got its policy and buffer (MLflow's `reasons.json`): the decision, its classes and its reasons."""
    return recs.select(
        "sku_id", "location_id", "policy", "safety_stock_units", "reorder_point_units", "demand_class", "xyz_class", "abc_class",
        "life_cycle", "reasons",
    )  # fmt: skip


def evaluation_table(result: RollingEvaluation, as_of: dt.date) -> pl.DataFrame:
    """The published `evaluation` table: the rolling evaluation's summary stamped with the last origin, validated."""
    return validate_output("evaluation", result.summary.with_columns(as_of=pl.lit(as_of)).select(output_columns("evaluation")))


def evaluation_metrics(table: pl.DataFrame) -> dict[str, float]:
    """Flat MLflow metrics of an evaluation: per method and target over every judged window, achieved service, its
    Wilson interval, the fill rate and the safety-stock value per window; and the windows judged."""
    out: dict[str, float] = {}
    for row in table.filter(pl.col("slice") == "all").iter_rows(named=True):
        key = row["method"] + ("" if row["target"] is None else f"_{round(row['target'] * 100, 1):g}")
        for column in ("achieved", "achieved_low", "achieved_high", "fill_rate", "on_hand_value", "safety_stock_value"):
            if row[column] is not None:
                out[f"{key}_{column}"] = float(row[column])
        out[f"{key}_windows"] = float(row["windows"])
    return out


def evaluation_overview(table: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows `buffercast evaluate` prints: every method and target over all judged windows."""
    return table.filter(pl.col("slice") == "all").sort("method", "target", nulls_last=True).to_dicts()
