"""The one configuration schema of buffercast.

`configs/default.yaml` is the base; a user's YAML file and CLI flags override it.
Every model forbids unknown keys, so a typo is an error naming the key, not a silent default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.calendar import period_days

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

Frequency = Literal["D", "W", "M"]
DemandClass = Literal["smooth", "erratic", "intermittent", "lumpy", "insufficient_history"]
AbcClass = Literal["A", "B", "C"]


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SalesColumns(_Strict):
    """Names of the columns in the user's sales files."""

    sku_id: str = "sku_id"
    date: str = "date"
    quantity: str = "quantity"
    location_id: str | None = "location_id"
    line_id: str | None = "line_id"


class SkuMasterColumns(_Strict):
    """Names of the columns in the user's SKU master file."""

    sku_id: str = "sku_id"
    unit_cost: str = "unit_cost"
    lead_time_days: str = "lead_time_days"
    lead_time_std_days: str | None = "lead_time_std_days"
    critical: str | None = "critical"
    pack_size: str | None = "pack_size"
    supplier_id: str | None = "supplier_id"


class InputConfig(_Strict):
    sales: str = Field("data/sample/sales.parquet", description="File, folder or fsspec URL of sales history (Parquet or CSV).")
    sku_master: str | None = Field("data/sample/sku_master.parquet", description="File, folder or URL of the SKU master; null for none.")
    sales_columns: SalesColumns = SalesColumns()
    sku_master_columns: SkuMasterColumns = SkuMasterColumns()
    grain: Literal["auto", "daily", "period"] = Field(
        "auto",
        description="'period': each date stands for its whole week/month (already aggregated); 'auto': detected from the dates.",
    )
    date_format: str | None = Field(None, description="strftime format of dates in CSV files; null tries ISO (YYYY-MM-DD).")
    cache_hours: float = Field(
        12.0, ge=0.0, description="Reuse the last read of unchanged input files for this long (a retried run); 0: always read."
    )
    max_quarantine_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Fail the run when a larger share of sales (or SKU master) rows is quarantined."
    )


class SbcConfig(_Strict):
    """Syntetos-Boylan-Croston cut-offs (DOMAIN.md)."""

    adi_cutoff: float = Field(1.32, gt=1.0)
    cv2_cutoff: float = Field(0.49, gt=0.0)
    min_periods: int = Field(8, ge=2, description="Fewer active periods than this: insufficient_history.")


class VolatilityConfig(_Strict):
    """Error-CV cut-offs: X (stable) < variable_from <= Y (variable) < erratic_from <= Z (erratic)."""

    variable_from: float = Field(0.5, gt=0.0)
    erratic_from: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> VolatilityConfig:
        if self.erratic_from <= self.variable_from:
            raise ValueError("volatility.erratic_from must be greater than volatility.variable_from")
        return self


class AbcConfig(_Strict):
    a_share: float = Field(0.80, gt=0.0, lt=1.0)
    b_share: float = Field(0.95, gt=0.0, le=1.0)

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
    """Which statsforecast models compete, per demand class."""

    smooth: list[ModelName] = ["AutoETS", "Theta", "SeasonalNaive", "Naive", "HistoricAverage"]
    erratic: list[ModelName] = ["AutoETS", "Theta", "SeasonalNaive", "Naive", "HistoricAverage"]
    intermittent: list[ModelName] = ["CrostonSBA", "CrostonOptimized", "TSB", "ADIDA", "IMAPA", "HistoricAverage"]
    lumpy: list[ModelName] = ["CrostonSBA", "CrostonOptimized", "TSB", "ADIDA", "IMAPA", "HistoricAverage"]
    insufficient_history: list[ModelName] = ["HistoricAverage"]
    fallback: ModelName = Field("HistoricAverage", description="Used for a SKU a model cannot fit; such SKUs are flagged.")
    ets_model: str = Field("ZNZ", pattern=r"^[ZAM][ZNAM][ZNAM]$", description="AutoETS model space (error, trend, season).")
    tsb_alpha_d: float = Field(0.1, gt=0.0, le=1.0)
    tsb_alpha_p: float = Field(0.1, gt=0.0, le=1.0)
    season_length: int | None = Field(None, ge=1, description="Null: 7 for D, 52 for W, 12 for M.")
    quantiles: list[float] = Field(
        [0.5, 0.9, 0.95, 0.99], description="Demand quantiles per forecast step, published as q50, q90, ... next to the mean."
    )
    empirical_window_days: int = Field(365, ge=7, description="Trailing demand behind the quantiles of models without native intervals.")

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < p < 1.0 for p in v) or sorted(set(v)) != v:
            raise ValueError("quantiles must be strictly increasing and strictly between 0 and 1")
        return v

    @field_validator("smooth", "erratic", "intermittent", "lumpy", "insufficient_history")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one model is needed")
        if len(set(v)) != len(v):
            raise ValueError("a model is listed twice")
        return v


class BacktestConfig(_Strict):
    n_windows: int = Field(8, ge=1, description="Rolling-origin windows (fewer for SKUs with shorter history).")
    min_windows: int = Field(2, ge=1, description="Fewer possible windows than this: sigma from one-step in-sample error x sqrt(L).")
    step_periods: int | None = Field(None, ge=1, description="Periods between window origins; null: half the horizon (overlapping).")
    refit: bool = Field(False, description="Refit the models at every window (slower) or only at the first.")
    min_train_periods: int | None = Field(
        None, ge=4, description="Periods of history needed before the first window; null: 28 (D), 13 (W), 12 (M)."
    )
    max_horizon_periods: int = Field(120, ge=1, description="Cap on the backtest/forecast horizon.")
    horizon_buckets: list[int] = Field(
        [1, 2, 3, 4, 6, 8, 13, 26, 52, 91, 120],
        description="SKUs are grouped by the smallest bucket covering their horizon: one statsforecast call per group.",
    )
    selection_metric: Literal["mae", "rmse", "mase", "rmsse", "lead_time_rmse"] = "mase"
    n_jobs: int = Field(1, description="Worker processes of the forecasting stage (-1: all cores); statsforecast runs single in each.")
    chunk_size: int = Field(2000, ge=1, description="SKUs per statsforecast call; bounds the memory of the backtest.")
    combination_k: int = Field(2, ge=0, description="The mean of each SKU's best k models competes as 'Combination' (0 or 1: off).")

    @field_validator("horizon_buckets")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v) or sorted(set(v)) != v:
            raise ValueError("horizon_buckets must be strictly increasing positive integers")
        return v


ServiceMeasure = Literal["cycle", "fill_rate"]


class ServiceMeasureConfig(_Strict):
    critical: dict[AbcClass, ServiceMeasure] = {"A": "cycle", "B": "cycle", "C": "cycle"}
    non_critical: dict[AbcClass, ServiceMeasure] = {"A": "cycle", "B": "cycle", "C": "cycle"}


class ServiceLevelConfig(_Strict):
    """Service level targets over ABC class x criticality (DOMAIN.md), each a cycle service level or a fill rate."""

    critical: dict[AbcClass, float] = {"A": 0.99, "B": 0.98, "C": 0.97}
    non_critical: dict[AbcClass, float] = {"A": 0.97, "B": 0.95, "C": 0.90}
    measure: ServiceMeasureConfig = ServiceMeasureConfig()
    jit: float = Field(0.80, description="Cycle service level of the minimal JIT buffer.")

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


class PolicyConfig(_Strict):
    """JIT / JIC / hybrid thresholds (DOMAIN.md: criticality, lead time, volatility)."""

    jit_max_lead_time_days: float = Field(7.0, gt=0.0, description="JIT needs a lead time at most this.")
    jic_min_lead_time_days: float = Field(30.0, gt=0.0, description="A lead time at least this is long: JIC.")
    jit_max_lead_time_cv: float = Field(0.2, ge=0.0, description="JIT needs lead-time std / mean at most this.")
    jic_min_lead_time_cv: float = Field(0.5, ge=0.0, description="Lead-time std / mean at least this is unreliable: JIC.")

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.jic_min_lead_time_days <= self.jit_max_lead_time_days:
            raise ValueError("policy.jic_min_lead_time_days must exceed policy.jit_max_lead_time_days")
        if self.jic_min_lead_time_cv <= self.jit_max_lead_time_cv:
            raise ValueError("policy.jic_min_lead_time_cv must exceed policy.jit_max_lead_time_cv")
        return self


class DefaultsConfig(_Strict):
    """Used for SKUs the master lacks (the reasons say so)."""

    lead_time_days: float = Field(14.0, gt=0.0)
    lead_time_std_days: float = Field(0.0, ge=0.0)
    unit_cost: float = Field(1.0, gt=0.0)
    review_period_days: float = Field(7.0, ge=0.0, description="Review period R (at least 1 period): S covers R + L.")


class CostConfig(_Strict):
    holding_rate_per_year: float = Field(0.25, ge=0.0, le=5.0)
    order_cost: float | None = Field(
        None, gt=0.0, description="Cost of placing one order; null: no EOQ (order quantity = review-period demand)."
    )


class BuffersConfig(_Strict):
    empirical_classes: list[DemandClass] = Field(
        ["intermittent", "lumpy"], description="Buffered by the bootstrap quantile of lead-time demand instead of the normal formula."
    )
    bootstrap_samples: int = Field(2000, ge=100)
    bootstrap_history_days: int = Field(365, ge=7, description="Trailing demand the bootstrap draws from.")
    declining_trend_strength: float = Field(0.4, ge=0.0, le=1.0, description="Declining: trend at least this strong ...")
    declining_ratio: float = Field(0.75, gt=0.0, le=1.0, description="... and the forecast below this share of last year's rate.")
    calibrate: bool = Field(
        True, description="Size normal-method buffers at the nominal level the backtest calibration maps each target to."
    )
    calibration_min_points: int = Field(100, ge=10, description="Fewer backtest errors in a demand class: its targets stay uncalibrated.")
    calibration_family_min_points: int | None = Field(
        500, ge=10, description="A model family with this many backtest errors in a class gets its own map; null: class maps only."
    )


class ScenarioConfig(_Strict):
    """A disruption replayed over the held-out demand (buffers/evaluate.py)."""

    name: str
    kind: Literal["baseline", "lead_time", "outage", "demand_spike"]
    factor: float = Field(1.0, ge=0.0, description="lead_time: lead time x factor; demand_spike: demand x factor.")
    start_day: int = Field(0, ge=0, description="outage, demand_spike: days after the start of the held-out demand.")
    days: int = Field(0, ge=0, description="outage, demand_spike: how long.")
    suppliers: list[str] | None = Field(None, description="Supplier ids hit; null: every SKU.")


class OutputConfig(_Strict):
    folder: str = "outputs"


class TrackingConfig(_Strict):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI: a sqlite file, a folder or an http(s) server.")
    experiment: str | None = Field(None, description="MLflow experiment; null: one per config, 'buffercast-<name>'.")
    artifact_location: str | None = Field("mlruns", description="Artifact root for a new experiment on a local store.")
    retries: int = Field(2, ge=0, description="Retries of each tracking step (start, log) when MLflow fails.")
    retry_delay_seconds: float | list[float] = Field([2.0, 10.0], description="Backoff between those retries (seconds).")
    http_retries: int = Field(2, ge=0, description="MLflow's own HTTP retries per request (its default, 7, takes minutes).")

    def experiment_name(self, config_name: str) -> str:
        return self.experiment or f"buffercast-{config_name}"


class DriftConfig(_Strict):
    buffer_change_pct: float = Field(25.0, gt=0.0, description="A buffer moving by more than this % since the last run is a change.")


class TimeoutConfig(_Strict):
    """Seconds each stage may take before the run fails (a hung read or fit must not block next week's run)."""

    pull: float = Field(900, gt=0)
    validation: float = Field(900, gt=0)
    profile: float = Field(900, gt=0)
    forecast: float = Field(7200, gt=0)
    recommend: float = Field(900, gt=0)
    publish: float = Field(900, gt=0)
    track: float = Field(600, gt=0)


class LifeCycleConfig(_Strict):
    """Life cycle and FSN (fast / slow / non-moving), in days so one setting serves every frequency."""

    new_days: float = Field(60.0, gt=0.0, description="First sale within the last N days: new (no backtest).")
    dead_days: float = Field(91.0, gt=0.0, description="No sale in the last N days: dead (obsolescence risk; no buffer unless critical).")
    window_days: float = Field(365.0, gt=0.0, description="Window of the movement frequency behind FSN.")
    fast_from: float = Field(0.5, gt=0.0, le=1.0, description="Movement frequency at least this: F (fast).")
    slow_from: float = Field(0.1, gt=0.0, le=1.0, description="At least this: S (slow); below: N (non-moving).")

    @model_validator(mode="after")
    def _ordered(self) -> LifeCycleConfig:
        if self.slow_from >= self.fast_from:
            raise ValueError("life_cycle.fast_from must be greater than life_cycle.slow_from")
        return self


class OutlierConfig(_Strict):
    """Demand points above median + k x robust scale of the non-zero demand are flagged (never deleted)."""

    k: float = Field(5.0, gt=0.0)
    exclude_from_sigma: bool = Field(False, description="Cap flagged points at the threshold before forecasting and sizing sigma.")


class ShapeConfig(_Strict):
    seasonal_from: float = Field(0.3, ge=0.0, le=1.0, description="Seasonal strength below this: seasonal models are skipped for the SKU.")
    trend_from: float = Field(0.3, ge=0.0, le=1.0, description="Trend strength below this: trend models (Theta's drift) are skipped.")


#: One cron field: numbers, names (MON, JAN), `*`, lists, ranges and steps; no Jenkins-style H or R.
_CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")


class ScheduleConfig(_Strict):
    """When the deployed flow runs (prefect.yaml, `buffercast serve`): a cron read in an IANA time zone."""

    cron: str = Field("0 6 * * 1", description="Five fields: minute hour day-of-month month day-of-week; default Monday 06:00.")
    timezone: str = Field("Europe/Berlin", description="IANA time zone the cron is read in, daylight saving included.")

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
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{v}' is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)") from None
        return v


class BuffercastConfig(_Strict):
    name: str = Field("default", description="Config name; also the MLflow run name prefix.")
    frequency: Frequency = "D"
    week_start: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    as_of: dt.date | None = Field(None, description="Run as if on this date; null: the last date in the data.")
    seed: int = 20240101
    input: InputConfig = InputConfig()
    sbc: SbcConfig = SbcConfig()
    volatility: VolatilityConfig = VolatilityConfig()
    abc: AbcConfig = AbcConfig()
    models: ModelsConfig = ModelsConfig()
    backtest: BacktestConfig = BacktestConfig()
    service_levels: ServiceLevelConfig = ServiceLevelConfig()
    policy: PolicyConfig = PolicyConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    cost: CostConfig = CostConfig()
    buffers: BuffersConfig = BuffersConfig()
    scenarios: list[ScenarioConfig] = [
        ScenarioConfig(name="baseline", kind="baseline"),
        ScenarioConfig(name="lead_time_x2", kind="lead_time", factor=2.0),
        ScenarioConfig(name="supplier_outage_30d", kind="outage", start_day=14, days=30),
        ScenarioConfig(name="demand_spike_50pct_4w", kind="demand_spike", factor=1.5, start_day=14, days=28),
    ]
    life_cycle: LifeCycleConfig = LifeCycleConfig()
    outliers: OutlierConfig = OutlierConfig()
    shape: ShapeConfig = ShapeConfig()
    drift: DriftConfig = DriftConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    output: OutputConfig = OutputConfig()
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @property
    def period_days(self) -> float:
        """Days in one period: the unit lead times are converted with."""
        return period_days(self.frequency)

    def periods(self, days: float) -> int:
        """Whole periods covering `days` (at least 1)."""
        return max(1, math.ceil(days / self.period_days - 1e-9))

    @property
    def min_train_periods(self) -> int:
        return self.backtest.min_train_periods or {"D": 28, "W": 13, "M": 12}[self.frequency]

    @property
    def season_length(self) -> int:
        return self.models.season_length or {"D": 7, "W": 52, "M": 12}[self.frequency]

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
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
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
