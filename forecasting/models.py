"""statsforecast model sets, built from their names in the config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configs.schema import BuffercastConfig

#: Alias of the extra fallback column added to every statsforecast call, to detect fallbacks.
FALLBACK_ALIAS = "_fallback"

#: statsforecast's polars frequency strings ("D" raises with polars input).
POLARS_FREQ = {"D": "1d", "W": "1w", "M": "1mo"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to instantiate a model set; hashable, so groups can share it. Built from the config by
    `model_spec` (its values and defaults are the config's, `models.*`); `without_season` derives a group's variant."""

    season_length: int
    ets_model: str
    tsb_alpha_d: float
    tsb_alpha_p: float
    window_size: int | None = None  # WindowAverage's window; None: season_length (a non-seasonal group keeps the season's)


def model_spec(cfg: BuffercastConfig) -> ModelSpec:
    """The run's model parameters: `models.*` of the config, the season length of its frequency."""
    m = cfg.models
    return ModelSpec(season_length=cfg.season_length, ets_model=m.ets_model, tsb_alpha_d=m.tsb_alpha_d, tsb_alpha_p=m.tsb_alpha_p)


#: Models whose statsforecast `forecast(level=...)` computes intervals natively (from the model's own error
#: distribution). The others (Croston family, TSB, ADIDA, IMAPA, WindowAverage) have none: their quantiles are the
#: empirical quantiles of the SKU's recent demand per period (forecasting/backtest.py, `empirical_quantiles`).
NATIVE_INTERVALS = frozenset({"AutoETS", "AutoTheta", "Theta", "AutoARIMA", "SeasonalNaive", "Naive", "HistoricAverage"})


def build_model(name: str, spec: ModelSpec, alias: str | None = None) -> Any:
    """One statsforecast model by its class name; `alias` names its output column."""
    # statsforecast is imported here, not at the top: the flow's process only needs it when it forecasts in-process
    # (the worker processes do the forecasting otherwise), and importing it costs seconds.
    import statsforecast.models as sf

    alias = alias or name
    s = spec.season_length
    factories = {
        "AutoETS": lambda: sf.AutoETS(season_length=s, model=spec.ets_model, alias=alias),
        "AutoTheta": lambda: sf.AutoTheta(season_length=s, alias=alias),
        "Theta": lambda: sf.Theta(season_length=s, alias=alias),
        "AutoARIMA": lambda: sf.AutoARIMA(season_length=s, alias=alias),
        "SeasonalNaive": lambda: sf.SeasonalNaive(season_length=s, alias=alias),
        "Naive": lambda: sf.Naive(alias=alias),
        "HistoricAverage": lambda: sf.HistoricAverage(alias=alias),
        "WindowAverage": lambda: sf.WindowAverage(window_size=spec.window_size or s, alias=alias),
        "CrostonClassic": lambda: sf.CrostonClassic(alias=alias),
        "CrostonSBA": lambda: sf.CrostonSBA(alias=alias),
        "CrostonOptimized": lambda: sf.CrostonOptimized(alias=alias),
        "TSB": lambda: sf.TSB(alpha_d=spec.tsb_alpha_d, alpha_p=spec.tsb_alpha_p, alias=alias),
        "ADIDA": lambda: sf.ADIDA(alias=alias),
        "IMAPA": lambda: sf.IMAPA(alias=alias),
    }
    try:
        return factories[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(factories))}") from None


#: Models that only make sense with a season: skipped for SKUs whose profile shows none.
SEASONAL_ONLY = frozenset({"SeasonalNaive"})
#: Models whose difference from a level model is a trend (Theta = simple exponential smoothing plus half the linear
#: drift): skipped for SKUs whose profile shows no trend, where they cost 10x an ETS fit for nothing.
TREND_ONLY = frozenset({"Theta", "AutoTheta"})


def without_trend(names: Sequence[str], fallback: str) -> list[str]:
    """The model set for a SKU with no trend: trend-only models dropped (the fallback if nothing is left)."""
    return [n for n in names if n not in TREND_ONLY] or [fallback]


def without_season(names: Sequence[str], spec: ModelSpec, fallback: str) -> tuple[list[str], ModelSpec]:
    """The model set and spec for a SKU with no seasonality: seasonal-only models dropped, the rest fitted
    with season_length 1 (AutoETS then searches no seasonal component, which is also much faster)."""
    kept = [n for n in names if n not in SEASONAL_ONLY] or [fallback]
    return kept, replace(spec, season_length=1, window_size=spec.window_size or spec.season_length)


def build_models(names: Sequence[str], spec: ModelSpec, fallback: str) -> tuple[list[Any], Any]:
    """The competing models plus a copy of the fallback under FALLBACK_ALIAS, and the fallback itself.

    statsforecast writes a fallback's output under the failed model's name with no flag; the extra
    column lets `flag_fallbacks` find SKUs where a model's output is exactly the fallback's.
    """
    models = [build_model(n, spec) for n in names]
    models.append(build_model(fallback, spec, alias=FALLBACK_ALIAS))
    return models, build_model(fallback, spec)


#: The family of each model a SKU can be forecast by: models whose errors behave alike (the calibration of buffers
#: learns one map per demand class and family where the data suffice, buffers/calibration.py).
MODEL_FAMILIES = {
    "AutoETS": "exponential_smoothing",
    "Theta": "theta",
    "AutoTheta": "theta",
    "AutoARIMA": "arima",
    "Naive": "naive",
    "SeasonalNaive": "naive",
    "HistoricAverage": "mean",
    "WindowAverage": "mean",
    "CrostonClassic": "croston",
    "CrostonSBA": "croston",
    "CrostonOptimized": "croston",
    "TSB": "croston",
    "ADIDA": "temporal_aggregation",
    "IMAPA": "temporal_aggregation",
    "Combination": "combination",  # forecasting.backtest.COMBINATION: the mean of the best `combination_k`
}
