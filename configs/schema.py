"""The one configuration schema of buffercast: every default and its meaning is stated here, once.

`configs/default.yaml` is generated from it (`render_defaults`, `buffercast config --defaults`) and is the base of
`load_config`; a user's YAML file and CLI flags override it.
Every model forbids unknown keys, so a typo is an error naming the key, not a silent default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from configs.secrets import literal_credential, redact
from features.calendar import period_days
from features.sbc import DEMAND_CLASSES

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "default.yaml"

Frequency = Literal["D", "W", "M"]
DemandClass = Literal[DEMAND_CLASSES]  # type: ignore[valid-type]  # one list: features/sbc.py
AbcClass = Literal["A", "B", "C"]


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the key."""


def _every_frequency(value: dict[str, int]) -> dict[str, int]:
    missing = sorted({"D", "W", "M"} - set(value))
    if missing:
        raise ValueError(f"needs a number of periods for D, W and M; missing {missing}")
    return value


#: A number of periods (>= 1) for each frequency.
PeriodsPerFrequency = Annotated[dict[Frequency, Annotated[int, Field(ge=1)]], AfterValidator(_every_frequency)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)") from None
    return value


def _no_literal_credential(value: str | None) -> str | None:
    """A location may reference a credential (`${NAME}`, `${prefect-secret:NAME}`), never hold one (configs/secrets.py)."""
    if literal_credential(value):
        raise ValueError(
            "holds a password or token written out: put it in an environment variable and write ${NAME} in its place "
            "(e.g. https://user:${SALES_PASSWORD}@host/sales.csv), or use a Prefect Secret block: ${prefect-secret:NAME}"
        )
    return value


class SalesColumns(_Strict):
    """Names of the columns in the user's sales files."""

    sku_id: str = Field("sku_id", description="SKU id column.")
    date: str = Field("date", description="Date column: the day sold (or the period, grain 'period').")
    quantity: str = Field("quantity", description="Quantity sold column.")
    location_id: str | None = Field("location_id", description="Location id column; null or absent: no locations.")
    line_id: str | None = Field("line_id", description="Order line id column: a repeated id is a duplicate line; null or absent: none.")


class SkuMasterColumns(_Strict):
    """Names of the columns in the user's SKU master file."""

    sku_id: str = Field("sku_id", description="SKU id column.")
    unit_cost: str = Field("unit_cost", description="Unit cost column.")
    lead_time_days: str = Field("lead_time_days", description="Lead time column, in days.")
    lead_time_std_days: str | None = Field("lead_time_std_days", description="Lead-time standard deviation column, in days; optional.")
    critical: str | None = Field("critical", description="Criticality column (true/false); optional, absent: not critical.")
    pack_size: str | None = Field("pack_size", description="Pack size column (order multiple, at least 1); optional.")
    supplier_id: str | None = Field("supplier_id", description="Supplier id column (the scenarios' suppliers); optional.")


class InputConfig(_Strict):
    """Where the sales history and the SKU master are read from, and how."""

    sales: str = Field("data/sample/sales.parquet", description="File, folder or fsspec URL of sales history (Parquet or CSV).")
    sku_master: str | None = Field(
        "data/sample/sku_master.parquet", description="File, folder or URL of the SKU master; null: run without one (`defaults` apply)."
    )
    sales_columns: SalesColumns = Field(SalesColumns(), description="Column names in the sales files.")
    sku_master_columns: SkuMasterColumns = Field(SkuMasterColumns(), description="Column names in the SKU master.")
    grain: Literal["auto", "daily", "period"] = Field(
        "auto",
        description="'daily' rows, or 'period': one row per week/month (already aggregated); 'auto': detected from the dates.",
    )
    date_format: str | None = Field(None, description="strftime format of dates in CSV files; null tries ISO (YYYY-MM-DD).")
    cache_hours: float = Field(
        12.0, ge=0.0, description="A retried run reuses the read of unchanged files (path, size, mtime) this long; 0: always read."
    )
    max_quarantine_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Fail the run when a larger share of sales (or SKU master) rows is quarantined."
    )
    timezone: str = Field(
        "UTC",
        description="IANA time zone: timestamps with an offset or zone (e.g. 2026-03-01T23:30:00+01:00) are converted to it "
        "before their date is taken; timestamps without one are taken as local time there.",
    )
    earliest_date: dt.date | None = Field(
        dt.date(2000, 1, 1),
        description="Sales dated before this are quarantined (date_too_early): a typo year such as 1900; null: no limit.",
    )
    max_quantity: float = Field(
        1e9, gt=0.0, description="Sales quantities above this are quarantined (quantity_too_large): a unit or export error, not demand."
    )
    csv_separator: str = Field(",", min_length=1, max_length=1, description="Field separator of CSV files, e.g. ';'.")
    sales_table: str = Field(
        "sales", description="With a postgresql:// input.sales: the table (or schema.table) read, unless sales_query is set."
    )
    sales_query: str | None = Field(
        None,
        description="With a postgresql:// input.sales: the SQL that returns the sales rows; $1, if used, is bound to the as-of date "
        "(config as_of, else today); with input.cache_folder it must keep the rows dated on or after $2 (the first date "
        "fetched), e.g. WHERE date >= $2. Null: every row of sales_table.",
    )
    sku_master_table: str = Field(
        "sku_master", description="With a postgresql:// input.sku_master: the table read, unless sku_master_query is set."
    )
    sku_master_query: str | None = Field(
        None, description="With a postgresql:// input.sku_master: the SQL that returns its rows ($1 as above)."
    )
    decimal_comma: bool = Field(False, description="CSV numbers are written with a decimal comma (1,5 for 1.5).")
    cache_folder: str | None = Field(
        None,
        description="With a postgresql:// input.sales: a local folder keeping the sales history pulled so far (Parquet, one "
        "folder per month) and its watermark (the latest date in it); a run then fetches only the rows dated from the "
        "watermark minus correction_days on. Null: every run fetches the whole history.",
    )
    correction_days: int = Field(
        28,
        ge=0,
        description="With input.cache_folder: the rows of this many days before the watermark are fetched again and replace "
        "the cached ones (late-arriving, corrected and deleted rows).",
    )
    full_refresh: bool = Field(
        False, description="With input.cache_folder: fetch the whole history and rebuild the cache (buffercast run --full-refresh)."
    )

    @field_validator("sales", "sku_master")
    @classmethod
    def _no_written_password(cls, value: str | None) -> str | None:
        return _no_literal_credential(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _known_timezone(value)

    @model_validator(mode="after")
    def _cache_of_a_database(self) -> InputConfig:
        if self.cache_folder is None:
            return self
        if not self.sales.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "input.cache_folder keeps what is pulled from a database (input.sales: postgresql://...); "
                f"'{redact(self.sales)}' is read whole each run: remove input.cache_folder"
            )
        if self.sales_query is not None and "$2" not in self.sales_query:
            raise ValueError(
                "with input.cache_folder, input.sales_query must keep the rows dated on or after $2 (the first date to fetch, "
                "bound by the run), e.g. ... WHERE date >= $2"
            )
        return self

    @field_validator("sales_table", "sku_master_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", value):
            raise ValueError(f"'{value}' is not a table name (letters, digits, _; schema.table allowed): write a query instead")
        return value


class SbcConfig(_Strict):
    """Syntetos-Boylan-Croston cut-offs (docs/methods.md)."""

    adi_cutoff: float = Field(1.32, gt=1.0, description="Average inter-demand interval at least this: intermittent or lumpy.")
    cv2_cutoff: float = Field(0.49, gt=0.0, description="Squared CV of the non-zero demand at least this: erratic or lumpy.")
    min_periods: int = Field(8, ge=2, description="Fewer active periods than this: insufficient_history.")


class VolatilityConfig(_Strict):
    """Error-CV cut-offs: X (stable) < variable_from <= Y (variable) < erratic_from <= Z (erratic)."""

    variable_from: float = Field(0.5, gt=0.0, description="Forecast-error CV (backtest RMSE / mean demand) at least this: Y.")
    erratic_from: float = Field(1.0, gt=0.0, description="Forecast-error CV at least this: Z.")
    lead_time_classes: list[DemandClass] = Field(
        ["intermittent", "lumpy"],
        description="Demand classes whose error CV is taken over the lead time (backtest lead-time RMSE / (mean demand x "
        "lead time)): their per-period error is high by construction, so intermittency alone must not make them erratic.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> VolatilityConfig:
        if self.erratic_from <= self.variable_from:
            raise ValueError("volatility.erratic_from must be greater than volatility.variable_from")
        return self


class AbcConfig(_Strict):
    """ABC classes by the cumulative share of annual value, largest series first (docs/methods.md)."""

    a_share: float = Field(0.80, gt=0.0, lt=1.0, description="Cumulative value share (the series included) up to this: A.")
    b_share: float = Field(0.95, gt=0.0, le=1.0, description="Up to this: B; the rest: C.")

    @model_validator(mode="after")
    def _ordered(self) -> AbcConfig:
        if self.b_share <= self.a_share:
            raise ValueError("abc.b_share must be greater than abc.a_share")
        return self


ModelName = Literal[
    "AutoETS",
    "AutoTheta",
    "Theta",
    "AutoARIMA",
    "SeasonalNaive",
    "Naive",
    "HistoricAverage",
    "WindowAverage",
    "CrostonClassic",
    "CrostonSBA",
    "CrostonOptimized",
    "TSB",
    "ADIDA",
    "IMAPA",
]


class ModelsConfig(_Strict):
    """Which statsforecast models compete, per demand class (the first listed wins a tie)."""

    smooth: list[ModelName] = Field(
        ["AutoETS", "Theta", "SeasonalNaive", "Naive", "HistoricAverage"],
        description="Models for smooth demand; AutoARIMA, AutoTheta are also allowed (~5x the cost of Theta).",
    )
    erratic: list[ModelName] = Field(
        ["AutoETS", "Theta", "SeasonalNaive", "Naive", "HistoricAverage"], description="Models for erratic demand."
    )
    intermittent: list[ModelName] = Field(
        ["CrostonSBA", "CrostonOptimized", "TSB", "ADIDA", "IMAPA", "HistoricAverage"], description="Models for intermittent demand."
    )
    lumpy: list[ModelName] = Field(
        ["CrostonSBA", "CrostonOptimized", "TSB", "ADIDA", "IMAPA", "HistoricAverage"], description="Models for lumpy demand."
    )
    insufficient_history: list[ModelName] = Field(
        ["HistoricAverage"],
        description="Too short to backtest, and new products: the mean, sigma from its one-step error.",
    )
    fallback: ModelName = Field("HistoricAverage", description="Used for a SKU a model cannot fit; such SKUs are flagged.")
    ets_model: str = Field(
        "ZNZ",
        pattern=r"^[ZAM][ZNAM][ZNAM]$",
        description="AutoETS model space (error, trend, season): ZNZ has no trend term; full ZZZ costs ~6x more.",
    )
    tsb_alpha_d: float = Field(0.1, gt=0.0, le=1.0, description="TSB smoothing of the demand size.")
    tsb_alpha_p: float = Field(0.1, gt=0.0, le=1.0, description="TSB smoothing of the demand probability.")
    season_length: int | None = Field(None, ge=1, description="Season length in periods; null: 7 (D), 52 (W), 12 (M).")
    quantiles: list[float] = Field(
        [0.5, 0.9, 0.95, 0.99], description="Demand quantiles per forecast step, published as q50, q90, ... next to the mean."
    )
    empirical_window: PeriodsPerFrequency = Field(
        {"D": 365, "W": 104, "M": 36},
        description="Trailing periods of demand per frequency behind the quantiles of models without native intervals "
        "(Croston, TSB, ADIDA, IMAPA); all history when shorter.",
    )

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < p < 1.0 for p in v) or sorted(set(v)) != v:
            raise ValueError("quantiles must be strictly increasing and strictly between 0 and 1")
        return v

    @field_validator(*DEMAND_CLASSES)
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one model is needed")
        if len(set(v)) != len(v):
            raise ValueError("a model is listed twice")
        return v


class BacktestConfig(_Strict):
    """Rolling-origin backtest: it picks each SKU's model and measures the lead-time error behind sigma."""

    n_windows: int = Field(8, ge=1, description="Rolling-origin windows (fewer for SKUs with shorter history).")
    min_windows: int = Field(2, ge=1, description="Fewer possible windows: sigma = one-step in-sample RMSE x sqrt(L) (docs/methods.md).")
    step_periods: int | None = Field(
        None, ge=1, description="Periods between window origins; null: half the horizon (overlapping, more lead-time errors)."
    )
    refit: bool = Field(False, description="Refit the models at every window (slower) or only at the first.")
    min_train_periods: int | None = Field(
        None, ge=4, description="Periods of history needed before the first window; null: 28 (D), 13 (W), 12 (M)."
    )
    max_horizon_periods: int = Field(120, ge=1, description="Cap on the backtest/forecast horizon.")
    horizon_buckets: list[int] = Field(
        [1, 2, 3, 4, 6, 8, 13, 26, 52, 91, 120],
        description="SKUs are grouped by the smallest bucket covering their horizon: one statsforecast call per group.",
    )
    selection_metric: Literal["mae", "rmse", "mase", "rmsse", "lead_time_rmse"] = Field(
        "mase", description="Backtest error that picks each SKU's model."
    )
    n_jobs: int = Field(-1, description="Worker processes of the forecasting stage (-1: all cores); statsforecast runs single in each.")
    chunk_size: int = Field(2000, ge=1, description="SKUs per statsforecast call; bounds the memory of the backtest.")
    dask_scheduler: str | None = Field(
        None,
        description="Address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786): the forecasting stage's chunks run on its "
        "workers (buffercast installed there) instead of local processes, with the same results; null: local (n_jobs).",
    )
    combination_k: int = Field(2, ge=0, description="The mean of each SKU's best k models competes as 'Combination' (0 or 1: off).")

    @field_validator("horizon_buckets")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v) or sorted(set(v)) != v:
            raise ValueError("horizon_buckets must be strictly increasing positive integers")
        return v


class PartitionConfig(_Strict):
    """The run over partitions of SKUs (docs/operations.md, "Large catalogues"): every stage holds one partition's
    demand at a time; what ranks or fits over the whole catalogue (ABC, calibration, the scenario totals) runs once
    between two passes. The outputs do not depend on the partition size, nor on the rows validated at a time."""

    skus: int = Field(
        5_000, ge=1, description="Series (SKU x location) per partition: fewer hold less memory, more make fewer statsforecast calls."
    )
    rows: int = Field(
        2_000_000,
        ge=1,
        description="Sales rows read and validated at a time; their valid rows are filed by partition as they come.",
    )


ServiceMeasure = Literal["cycle", "fill_rate"]


class ServiceMeasureConfig(_Strict):
    """Per cell: a cycle service level (no stock-out in a cycle) or a fill rate (share of demand served)."""

    critical: dict[AbcClass, ServiceMeasure] = Field(
        {"A": "cycle", "B": "cycle", "C": "cycle"}, description="Measure of the critical targets, per ABC class."
    )
    non_critical: dict[AbcClass, ServiceMeasure] = Field(
        {"A": "cycle", "B": "cycle", "C": "cycle"},
        description="fill_rate: see docs/methods.md 4.4 (the loss-function formula over-delivers at low targets).",
    )


class ServiceLevelConfig(_Strict):
    """Service level targets over ABC class x criticality (docs/methods.md), each a cycle service level or a fill rate."""

    critical: dict[AbcClass, float] = Field({"A": 0.99, "B": 0.98, "C": 0.97}, description="Targets of critical SKUs, in [0.5, 1).")
    non_critical: dict[AbcClass, float] = Field({"A": 0.97, "B": 0.95, "C": 0.90}, description="Targets of non-critical SKUs, in [0.5, 1).")
    measure: ServiceMeasureConfig = Field(ServiceMeasureConfig(), description="What each target measures: cycle or fill_rate.")
    jit: float = Field(0.80, description="Cycle service level of the minimal JIT buffer, in [0.5, 1).")

    @model_validator(mode="after")
    def _in_range(self) -> ServiceLevelConfig:
        for name in ("critical", "non_critical"):
            cells = getattr(self, name)
            missing = {"A", "B", "C"} - set(cells)
            if missing:
                raise ValueError(f"service_levels.{name} lacks classes {sorted(missing)}")
            for cls_, v in cells.items():
                if not 0.5 <= v < 1.0:
                    raise ValueError(f"service_levels.{name}.{cls_}={v} must be in [0.5, 1)")
        if not 0.5 <= self.jit < 1.0:
            raise ValueError(f"service_levels.jit={self.jit} must be in [0.5, 1)")
        return self

    def target_levels(self) -> list[float]:
        """Every service level a buffer can be sized for: the matrix cells and the JIT level."""
        return sorted({float(v) for cells in (self.critical, self.non_critical) for v in cells.values()} | {self.jit})


class PolicyConfig(_Strict):
    """JIT / JIC / hybrid thresholds (docs/methods.md: criticality, lead time, volatility)."""

    jit_max_lead_time_days: float = Field(7.0, gt=0.0, description="JIT needs a lead time at most this.")
    jic_min_lead_time_days: float = Field(30.0, gt=0.0, description="A lead time at least this is long: JIC.")
    jit_max_lead_time_cv: float = Field(0.2, ge=0.0, description="JIT needs lead-time std / mean at most this.")
    jic_min_lead_time_cv: float = Field(0.5, ge=0.0, description="Lead-time std / mean at least this is unreliable: JIC.")
    force: Literal["JIT", "hybrid", "JIC"] | None = Field(
        None,
        description="Every SKU gets this policy whatever its flags (a what-if; the evaluation's pure JIT and JIC baselines). "
        "Dead, non-critical SKUs still get no buffer.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.jic_min_lead_time_days <= self.jit_max_lead_time_days:
            raise ValueError("policy.jic_min_lead_time_days must exceed policy.jit_max_lead_time_days")
        if self.jic_min_lead_time_cv <= self.jit_max_lead_time_cv:
            raise ValueError("policy.jic_min_lead_time_cv must exceed policy.jit_max_lead_time_cv")
        return self


class DefaultsConfig(_Strict):
    """Used for SKUs the master lacks (the reasons say so)."""

    lead_time_days: float = Field(14.0, gt=0.0, description="Lead time in days.")
    lead_time_std_days: float = Field(0.0, ge=0.0, description="Lead-time standard deviation in days.")
    unit_cost: float = Field(1.0, gt=0.0, description="Unit cost.")
    review_period_days: float = Field(7.0, ge=0.0, description="Review period R (at least 1 period): S covers R + L.")


class CostConfig(_Strict):
    """What holding stock and placing an order cost."""

    holding_rate_per_year: float = Field(0.25, ge=0.0, le=5.0, description="Holding cost per year, as a share of the unit cost.")
    order_cost: float | None = Field(
        None, gt=0.0, description="Cost of placing one order: EOQ; null: no EOQ (order quantity = review-period demand)."
    )


class BuffersConfig(_Strict):
    """How safety stock is sized: the bootstrap, the obsolescence risk, the calibration."""

    empirical_classes: list[DemandClass] = Field(
        ["intermittent", "lumpy"], description="Buffered by the bootstrap quantile of lead-time demand instead of the normal formula."
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap samples of lead-time demand per SKU.")
    bootstrap_history: PeriodsPerFrequency = Field(
        {"D": 365, "W": 104, "M": 36},
        description="Trailing periods of demand per frequency the bootstrap draws from (all history when shorter): enough "
        "lead-time windows at every frequency for its 95% and 99% quantiles to differ.",
    )
    declining_trend_strength: float = Field(
        0.4, ge=0.0, le=1.0, description="Obsolescence risk, declining: a trend at least this strong ..."
    )
    max_cover_days: float | None = Field(
        365.0,
        gt=0.0,
        description="A safety stock never covers more than this many days of mean demand (null: no cap); when the cap binds, "
        "flag_cover_capped is set and the reasons say so.",
    )
    time_phased: PeriodsPerFrequency = Field(
        {"D": 91, "W": 26, "M": 12},
        description="Periods ahead per frequency of the `plan_parameters` table: reorder point, safety stock and order-up-to "
        "level per future period from the forecast of that period's lead time.",
    )
    declining_ratio: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="... and the forecast below this share of last year's rate; declining (or dead) with a buffer: capital at risk.",
    )
    calibrate: bool = Field(
        True,
        description="Size normal-method buffers at the nominal level an isotonic map of backtest coverage gives "
        "(per class, docs/methods.md 4.6).",
    )
    calibration_min_points: int = Field(100, ge=10, description="Fewer backtest errors in a demand class: its targets stay uncalibrated.")
    calibration_family_min_points: int | None = Field(
        500, ge=10, description="A model family with this many backtest errors in a class gets its own map; null: class maps only."
    )


class ScenarioConfig(_Strict):
    """A disruption replayed over the held-out demand (evaluation/replay.py)."""

    name: str = Field(description="Scenario name in the outputs.")
    kind: Literal["baseline", "lead_time", "outage", "demand_spike"] = Field(description="baseline, lead_time, outage or demand_spike.")
    factor: float = Field(1.0, ge=0.0, description="lead_time: lead time x factor; demand_spike: demand x factor.")
    start_day: int = Field(0, ge=0, description="outage, demand_spike: days after the start of the held-out demand.")
    days: int = Field(0, ge=0, description="outage, demand_spike: how long.")
    suppliers: list[str] | None = Field(None, description="Supplier ids hit, e.g. [S1, S2]; null: every SKU.")


class OutputConfig(_Strict):
    """Where the tables, the report and the manifest are published."""

    folder: str = Field("outputs", description="Folder the outputs are written to.")
    min_free_mb: float = Field(
        100.0, ge=0.0, description="Free space the output folder's disk must have before a run starts computing (MB)."
    )
    lock_wait_seconds: float = Field(
        0.0, ge=0.0, description="A run finding another run publishing into the same folder waits this long for it, then fails."
    )


class TrackingConfig(_Strict):
    """MLflow tracking of every run: parameters, metrics, artifacts."""

    uri: str = Field(
        "sqlite:///mlflow.db", description="MLflow tracking URI: a sqlite file, a folder or an `mlflow server` (http://host:5000)."
    )
    experiment: str | None = Field(None, description="MLflow experiment; null: one per config, 'buffercast-<name>'.")

    @field_validator("uri")
    @classmethod
    def _no_written_password(cls, value: str) -> str:
        return _no_literal_credential(value)

    artifact_location: str | None = Field("mlruns", description="Artifact root for a new experiment on a local store.")
    retries: int = Field(
        2, ge=0, description="Retries of each tracking step (start, log) when MLflow fails; the outputs are published even if all fail."
    )
    retry_delay_seconds: float | list[float] = Field([2.0, 10.0], description="Backoff between those retries (seconds).")
    http_retries: int = Field(2, ge=0, description="MLflow's own HTTP retries per request (its default, 7, takes minutes).")

    def experiment_name(self, config_name: str) -> str:
        return self.experiment or f"buffercast-{config_name}"


class DriftConfig(_Strict):
    """What counts as a change against the previous published run."""

    buffer_change_pct: float = Field(25.0, gt=0.0, description="A buffer moving by more than this % since the last as-of date is a change.")


class EvaluationConfig(_Strict):
    """The rolling-origin evaluation (`buffercast evaluate`): plan at each origin with the data up to it only, judge
    each plan on the demand after it (docs/methods.md, 5)."""

    origins: int = Field(6, ge=1, description="Rolling origins, the last one holdout_days before the end of the data.")
    step_days: int | None = Field(None, ge=1, description="Days between origins; null: the review period (defaults.review_period_days).")
    holdout_days: int = Field(
        90, ge=1, description="Days after the last origin kept for judging it (at least the longest lead time to judge them all)."
    )
    targets: list[float] = Field(
        [0.80, 0.85, 0.90, 0.95, 0.975, 0.99, 0.995],
        description="Cycle-service targets swept for the trade-off curves (buffercast at each target, textbook, empirical).",
    )
    ddmrp_adu_days: int = Field(120, ge=1, description="DDMRP baseline: days of history behind the average daily usage.")

    @field_validator("targets")
    @classmethod
    def _targets_in_range(cls, v: list[float]) -> list[float]:
        bad = [t for t in v if not 0.5 <= t < 1.0]
        if bad or not v:
            raise ValueError(f"evaluation.targets must be non-empty, each in [0.5, 1); got {bad or v}")
        return sorted(set(v))


class TimeoutConfig(_Strict):
    """Seconds each stage may take before the run fails (a hung read or fit must not block next week's run)."""

    pull: float = Field(900, gt=0, description="Reading the sales and the SKU master.")
    validation: float = Field(900, gt=0, description="Validating the input rows.")
    profile: float = Field(900, gt=0, description="Calendar, SKU attributes and demand features per series.")
    forecast: float = Field(7200, gt=0, description="Backtest and forecast.")
    recommend: float = Field(900, gt=0, description="Buffer recommendations and scenarios.")
    publish: float = Field(900, gt=0, description="Writing the outputs.")
    track: float = Field(600, gt=0, description="Logging the run to MLflow.")


class LifeCycleConfig(_Strict):
    """Life cycle and FSN (fast / slow / non-moving), in days so one setting serves every frequency."""

    new_days: float = Field(60.0, gt=0.0, description="First sale within the last N days: new (too short to backtest).")
    dead_days: float = Field(
        91.0, gt=0.0, description="Dead needs at least N days without a sale (the floor), and a silence improbable at the SKU's own rate."
    )
    dead_probability: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="Dead (obsolescence risk; no buffer unless critical) when P(a silence this long | the SKU's share of periods "
        "with a sale) is below this; 1: the floor alone decides.",
    )
    beyond_longest_gap: bool = Field(
        False,
        description="Dead also needs a silence longer than the longest quiet spell the SKU has come back from (sales in bursts); "
        "off: the rate and the floor decide (docs/methods.md 2.4).",
    )
    window_days: float = Field(365.0, gt=0.0, description="Window of the movement frequency behind FSN.")
    fast_from: float = Field(0.5, gt=0.0, le=1.0, description="Movement frequency (share of periods with a sale) at least this: F (fast).")
    slow_from: float = Field(0.1, gt=0.0, le=1.0, description="At least this: S (slow); below: N (non-moving).")

    @model_validator(mode="after")
    def _ordered(self) -> LifeCycleConfig:
        if self.slow_from >= self.fast_from:
            raise ValueError("life_cycle.fast_from must be greater than life_cycle.slow_from")
        return self


class OutlierConfig(_Strict):
    """Demand points above median + k x robust scale of the non-zero demand are flagged (never deleted)."""

    k: float = Field(5.0, gt=0.0, description="The k of that threshold.")
    exclude_from_sigma: bool = Field(False, description="Cap flagged points at the threshold before forecasting and sizing sigma.")


class ShapeConfig(_Strict):
    """Seasonal and trend strength of each SKU: the models it gets."""

    seasonal_from: float = Field(0.3, ge=0.0, le=1.0, description="Seasonal strength below this: seasonal models are skipped for the SKU.")
    trend_from: float = Field(0.3, ge=0.0, le=1.0, description="Trend strength below this: trend models (Theta's drift) are skipped.")


#: One cron field: numbers, names (MON, JAN), `*`, lists, ranges and steps; no Jenkins-style H or R.
_CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")


class ScheduleConfig(_Strict):
    """When the deployed flow runs (prefect.yaml, `buffercast serve`): a cron read in an IANA time zone."""

    cron: str = Field("0 6 * * 1", description="Five fields: minute hour day-of-month month day-of-week; default Monday 06:00.")
    timezone: str = Field(
        "Europe/Berlin", description="IANA time zone the cron is read in, daylight saving included; keep prefect.yaml in step."
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"a cron needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
        bad = [f for f in fields if not _CRON_FIELD.match(f) or f.upper() in {"H", "R"}]
        if bad:
            raise ValueError(f"cron field(s) {bad} are not cron syntax (numbers, names, *, lists, ranges, /steps)")
        return " ".join(fields)

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, v: str) -> str:
        return _known_timezone(v)


class BuffercastConfig(_Strict):
    """Every setting of a buffercast run."""

    name: str = Field("default", description="Config name; also the MLflow run name prefix.")
    frequency: Frequency = Field("D", description="D, W or M: daily, weekly, monthly buckets.")
    week_start: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = Field("mon", description="Weekday weekly buckets start on.")
    as_of: dt.date | None = Field(None, description="Run as if on this date (YYYY-MM-DD); null: the last date in the data.")
    seed: int = Field(20240101, description="Random seed of the bootstrap and the scenarios: same seed, same results.")
    input: InputConfig = Field(InputConfig(), description="The input files.")
    sbc: SbcConfig = Field(SbcConfig(), description="Demand class: smooth, erratic, intermittent, lumpy or insufficient_history.")
    volatility: VolatilityConfig = Field(VolatilityConfig(), description="XYZ volatility class from the backtest error.")
    abc: AbcConfig = Field(AbcConfig(), description="ABC value class.")
    models: ModelsConfig = Field(ModelsConfig(), description="Forecasting models.")
    backtest: BacktestConfig = Field(BacktestConfig(), description="Model selection and forecast error.")
    partitions: PartitionConfig = Field(PartitionConfig(), description="Stages over partitions of SKUs.")
    service_levels: ServiceLevelConfig = Field(ServiceLevelConfig(), description="Target service levels.")
    policy: PolicyConfig = Field(PolicyConfig(), description="Stocking policy per SKU.")
    defaults: DefaultsConfig = Field(DefaultsConfig(), description="SKU master values for SKUs it lacks.")
    cost: CostConfig = Field(CostConfig(), description="Holding and ordering cost.")
    buffers: BuffersConfig = Field(BuffersConfig(), description="Safety stock sizing.")
    scenarios: list[ScenarioConfig] = Field(
        [
            ScenarioConfig(name="baseline", kind="baseline"),
            ScenarioConfig(name="lead_time_x2", kind="lead_time", factor=2.0),
            ScenarioConfig(name="supplier_outage_30d", kind="outage", start_day=14, days=30),
            ScenarioConfig(name="demand_spike_50pct_4w", kind="demand_spike", factor=1.5, start_day=14, days=28),
        ],
        description="Disruption stress test over the held-out demand, under JIT, JIC and the recommended policy.",
    )
    life_cycle: LifeCycleConfig = Field(LifeCycleConfig(), description="New, active, dead; fast, slow, non-moving.")
    outliers: OutlierConfig = Field(OutlierConfig(), description="Outlier flags.")
    shape: ShapeConfig = Field(ShapeConfig(), description="Strength below these: no seasonal models / no trend models (Theta) for the SKU.")
    drift: DriftConfig = Field(DriftConfig(), description="Changes since the last run.")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="Rolling-origin evaluation (buffercast evaluate).")
    timeouts: TimeoutConfig = Field(TimeoutConfig(), description="Seconds per stage.")
    output: OutputConfig = Field(OutputConfig(), description="Published outputs.")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow.")
    schedule: ScheduleConfig = Field(
        ScheduleConfig(), description="The weekly deployment (prefect.yaml, `buffercast serve`, `make serve`)."
    )

    @field_validator("scenarios")
    @classmethod
    def _distinct_scenarios(cls, v: list[ScenarioConfig]) -> list[ScenarioConfig]:
        names = [sc.name for sc in v]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"scenario names must be distinct (they key the scenarios table): {', '.join(repeated)} repeated")
        return v

    @property
    def period_days(self) -> float:
        """Days in one period: the unit lead times are converted with."""
        return period_days(self.frequency)

    @property
    def bootstrap_history_periods(self) -> int:
        """Periods of history behind the bootstrap, at this frequency (`buffers.bootstrap_history`)."""
        return self.buffers.bootstrap_history[self.frequency]

    @property
    def time_phased_periods(self) -> int:
        """Future periods of the time-phased parameters, at this frequency (`buffers.time_phased`)."""
        return self.buffers.time_phased[self.frequency]

    @property
    def empirical_window_periods(self) -> int:
        """Periods of history behind the empirical quantiles, at this frequency (`models.empirical_window`)."""
        return self.models.empirical_window[self.frequency]

    @property
    def periods_per_year(self) -> float:
        return 365.0 / self.period_days

    def periods(self, days: float) -> int:
        """Whole periods covering `days` (at least 1)."""
        return max(1, math.ceil(days / self.period_days - 1e-9))

    @property
    def min_train_periods(self) -> int:
        return self.backtest.min_train_periods or {"D": 28, "W": 13, "M": 12}[self.frequency]

    @property
    def season_length(self) -> int:
        return self.models.season_length or {"D": 7, "W": 52, "M": 12}[self.frequency]

    def updated(self, overrides: dict[str, Any]) -> BuffercastConfig:
        """This config with `overrides` (nested like the YAML) deep-merged over it, validated again."""
        return BuffercastConfig.model_validate(_deep_merge(self.model_dump(), overrides))

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out

    def fingerprint(self) -> str:
        """Stable hash of every setting: same config, same hash."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line: the file, the line and column of the problem (1-based) and PyYAML's own words for it."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    what = f"{problem} ({' '.join(str(context).split())})" if context and getattr(exc, "problem", None) else problem
    return f"config file {path}{where} is not valid YAML: {what}. Fix the YAML there (indentation, a ':' after each key, quotes)."


def format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']} (got {redact(repr(err.get('input')))})")
    return f"invalid config ({source}): " + "; ".join(parts)


#: Config keys holding a local path (or a URL, left alone).
_PATH_KEYS = (("input", "sales"), ("input", "sku_master"), ("output", "folder"), ("tracking", "artifact_location"))


def _anchor_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative local paths (and a relative `sqlite:///` tracking URI) made absolute against `base`.

    So a path means the same whichever folder the command runs from: in configs/default.yaml it is relative
    to the repository root, in a user's config file to that file's folder, on the command line to the
    working directory.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in _PATH_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            out[section][key] = str(base / value)
    uri = out.get("tracking", {}).get("uri") if isinstance(out.get("tracking"), dict) else None
    if isinstance(uri, str) and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        out["tracking"]["uri"] = f"sqlite:///{base / uri.removeprefix('sqlite:///')}"
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> BuffercastConfig:
    """Default YAML <- user YAML <- overrides (nested dicts), validated once.

    Relative paths are anchored where they were written (see `_anchor_paths`). Raises ConfigError with a
    message naming the bad or unknown key.
    """
    data = _anchor_paths(_read_yaml(DEFAULT_CONFIG_PATH), DEFAULT_CONFIG_PATH.parent.parent) if DEFAULT_CONFIG_PATH.exists() else {}
    sources = [str(DEFAULT_CONFIG_PATH)]
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG_PATH:
        data = _deep_merge(data, _anchor_paths(_read_yaml(Path(path)), Path(path).resolve().parent))
        sources.append(str(path))
    if overrides:
        data = _deep_merge(data, _anchor_paths(overrides, Path.cwd()))
        sources.append("command-line flags")
    try:
        return BuffercastConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, " + ".join(sources))) from None


# ---------------------------------------------------------------- configs/default.yaml, from the schema

#: Longest line a description is appended to as `  # ...`; longer ones go on a comment line above the key.
_LINE_WIDTH = 140
#: Inline comments of a block start in one column, unless a key's line is longer than this.
_ALIGN_MAX = 48
#: A string written without quotes (and read back as that string: see `_yaml_value`).
_PLAIN = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./-]*")

DEFAULTS_HEADER = """\
# buffercast default configuration: every key, its default and what it means.
# Generated from the schema in configs/schema.py by `buffercast config --defaults` (a test checks it is current): edit the
# schema, not this file. Every key is validated (an unknown key or a bad value is an error naming the key).
# Override with `buffercast run --config my.yaml` (deep-merged over this file) and CLI flags; relative paths here are
# read from the repository root.
"""


def _yaml_value(value: Any) -> str:
    """`value` as one line of YAML flow style; strings YAML would read as something else are quoted."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml_value(k)}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) is not None and yaml.safe_load(value) == value
        return value if plain else json.dumps(value, ensure_ascii=False)  # a JSON string is a double-quoted YAML scalar
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]  # null, true, 12.0, 2024-01-01


def _docline(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""


def _commented(line: str, description: str, column: int) -> list[str]:
    """`line` with its description as a trailing comment if it fits, else as a comment line above."""
    if not description:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    padded = line.ljust(column) if len(line) + 2 <= column else line + "  "
    if len(padded) + 2 + len(description) <= _LINE_WIDTH:
        return [f"{padded}# {description}"]
    if len(line) + 4 + len(description) <= _LINE_WIDTH:
        return [f"{line}  # {description}"]
    return [f"{indent}# {description}", line]


def _render_block(model: BaseModel, indent: str) -> list[str]:
    fields = type(model).model_fields
    values = {name: getattr(model, name) for name in fields}
    leaves = {
        name: f"{indent}{name}: {_yaml_value(v)}"
        for name, v in values.items()
        if not isinstance(v, BaseModel) and not (isinstance(v, list) and v and all(isinstance(i, BaseModel) for i in v))
    }
    aligned = [len(line) for line in leaves.values() if len(line) <= _ALIGN_MAX]
    column = max(aligned, default=0) + 2
    lines: list[str] = []
    for name, info in fields.items():
        value, description = values[name], info.description or ""
        if name in leaves:
            lines += _commented(leaves[name], description, column)
            continue
        if not indent and lines and lines[-1]:
            lines.append("")
        item_type = type(value) if isinstance(value, BaseModel) else type(value[0])
        lines.append(f"{indent}# {_docline(item_type)}")
        lines += _commented(f"{indent}{name}:", description, 0)
        if isinstance(value, BaseModel):
            lines += _render_block(value, indent + "  ")
            continue
        for key, item in item_type.model_fields.items():  # a list of models: the keys an item takes, then the items
            default = "required" if item.is_required() else f"default {_yaml_value(item.default)}"
            lines.append(f"{indent}  #   {key} ({default}): {item.description or ''}")
        lines += [f"{indent}  - {_yaml_value(item)}" for item in value]
        if not indent:
            lines.append("")
    return lines


def render_config(config: BuffercastConfig, header: str = "") -> str:
    """`config` as commented YAML: top-level keys in schema order, each section preceded by its docstring, each key
    followed by its description; a list of models (`scenarios`) shows only each item's non-default keys.

    `yaml.safe_load` of the text, validated, gives `config` back.
    """
    lines = _render_block(config, "")
    while lines and not lines[-1]:
        lines.pop()
    return header + "\n".join(lines) + "\n"


def render_defaults() -> str:
    """The schema defaults as commented YAML: the text of configs/default.yaml (`buffercast config --defaults`)."""
    return render_config(BuffercastConfig(), DEFAULTS_HEADER)
