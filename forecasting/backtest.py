"""Rolling-origin backtest, error metrics, model selection and the lead-time forecast.

SKUs are grouped (model set, seasonality, trend, horizon bucket, windows, step) and each group goes through
statsforecast in chunks of SKUs (`cross_validation`, then `forecast`; native-interval models and the others apart),
never a call per SKU. The quantity the buffer is sized
from is measured directly (docs/methods.md): the error of the cumulative forecast over the SKU's lead time,
one sample per backtest window.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from evaluation import metrics as em
from evaluation.metrics import in_row_order, quantile_name
from evaluation.windows import exposure_sums, lead_time_weights
from forecasting.models import (
    FALLBACK_ALIAS,
    NATIVE_INTERVALS,
    POLARS_FREQ,
    ModelSpec,
    build_model,
    build_models,
    model_spec,
    without_season,
    without_trend,
)
from forecasting.workers import map_in_order, worker_count, worker_pool

if TYPE_CHECKING:
    from configs.schema import BuffercastConfig

ID, DS, Y = "unique_id", "ds", "y"
NOT_BACKTESTED = "insufficient_history"

#: A group is split into chunks for the workers only while each chunk keeps at least this many SKUs; a stage with
#: fewer than twice this many SKUs runs in-process.
MIN_SKUS_PER_WORKER_CHUNK = 50

#: Future point forecasts below this many units per period are published as 0: an exponential smoother's forecast
#: of a silent SKU decays to 1e-9 and the like, which is arithmetic, not demand (and would lift a reorder point
#: rounded up to whole units from 0 to 1).
NEGLIGIBLE_FORECAST = 1e-6


@dataclass(frozen=True)
class ForecastResult:
    plan: pl.DataFrame  # one row per SKU: horizon, bucket, windows, model set, backtested
    cv: pl.DataFrame  # long: unique_id, cutoff, ds, step, y, model, forecast, q..: the chosen model's backtest (steps <= L + R)
    metrics: pl.DataFrame  # long: unique_id, model, mae, rmse, bias, mase, rmsse, lead_time_rmse, coverage_q.., fell_back
    selection: pl.DataFrame  # one row per SKU: the chosen model, its runner-up, its errors and lead-time sigma
    forecasts: pl.DataFrame  # the chosen model's future: unique_id, ds, step, model, forecast, q..
    # The chosen model's point forecast `extended_periods` further (`buffers.time_phased`): unique_id, ds, step, forecast.
    extended: pl.DataFrame | None = None
    extended_periods: int = 0


#: Name of the mean-of-the-best-k model in metrics and selection.
COMBINATION = "Combination"


def _level(p: float) -> int | float:
    """statsforecast's central-interval level whose upper (p > 0.5) or lower (p < 0.5) bound is the p-quantile."""
    lv = round(abs(200 * p - 100), 6)
    return int(lv) if lv == int(lv) else lv


def interval_levels(quantiles: Sequence[float]) -> list[int | float]:
    return sorted({_level(p) for p in quantiles if p != 0.5})


def _interval_column(model: str, p: float) -> str:
    """statsforecast's column of the p-quantile's interval bound (p != 0.5): "AutoETS-hi-90" for 0.95."""
    return f"{model}-{'hi' if p > 0.5 else 'lo'}-{_level(p)}"


def _quantile_expr(model: str, p: float) -> pl.Expr:
    """The p-quantile of a model's forecast, never negative: from its native interval (symmetric: the median is the
    mean), else the empirical quantile column joined next to it (`_empirical_q..`)."""
    if model not in NATIVE_INTERVALS:
        col = pl.col(f"_empirical_{quantile_name(p)}")
    else:
        col = pl.col(model) if p == 0.5 else pl.col(_interval_column(model, p))
    return col.clip(0.0, None).alias(quantile_name(p))


def empirical_quantiles(panel: pl.DataFrame, quantiles: Sequence[float], window: int) -> pl.DataFrame:
    """Per SKU and period: the quantiles of its demand over the trailing `window` periods up to and including it.

    The per-step quantiles of models without native intervals (Croston family, TSB, ADIDA, IMAPA): for intermittent
    demand the demand of one period is a draw from the SKU's recent per-period distribution, most of it zeros; a
    bootstrap of that distribution is its empirical quantile. Linear interpolation: discrete demand never lands on
    the exact level, and the interpolated quantile covers at least the demand values below it.
    Columns `_empirical_q..`, to join on the forecast origin (the cutoff, or the last period).
    """
    return panel.sort(ID, DS).select(
        ID,
        DS,
        *[
            pl.col(Y)
            .rolling_quantile(p, interpolation="linear", window_size=window, min_samples=1)
            .over(ID)
            .alias(f"_empirical_{quantile_name(p)}")
            for p in quantiles
        ],
    )


def plan_horizons(attrs: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """Per SKU: forecast horizon, its bucket, the backtest step and how many windows its history allows.

    `attrs`: unique_id, demand_class, n_periods, lead_time_periods, review_periods, and optionally
    `skip_backtest` (e.g. new products: default false) and `seasonal` (false: no seasonal models; default true).
    """
    attrs = attrs.with_columns(
        *([] if "skip_backtest" in attrs.columns else [pl.lit(False).alias("skip_backtest")]),
        *([] if "seasonal" in attrs.columns else [pl.lit(True).alias("seasonal")]),
        *([] if "review_periods" in attrs.columns else [pl.lit(0.0).alias("review_periods")]),
        *([] if "trended" in attrs.columns else [pl.lit(True).alias("trended")]),
    )
    buckets = sorted(b for b in cfg.backtest.horizon_buckets if b <= cfg.backtest.max_horizon_periods) or [cfg.backtest.max_horizon_periods]
    if buckets[-1] < cfg.backtest.max_horizon_periods:
        buckets.append(cfg.backtest.max_horizon_periods)
    horizon = (pl.col("lead_time_periods") + pl.col("review_periods")).ceil().cast(pl.Int64).clip(1, cfg.backtest.max_horizon_periods)
    bucket = pl.lit(buckets[-1], pl.Int64)
    for b in reversed(buckets):
        bucket = pl.when(pl.col("horizon") <= b).then(pl.lit(b, pl.Int64)).otherwise(bucket)
    step = pl.lit(cfg.backtest.step_periods, pl.Int64) if cfg.backtest.step_periods else (pl.col("bucket") + 1).floordiv(2).clip(1, None)
    room = pl.col("n_periods").cast(pl.Int64) - cfg.min_train_periods - pl.col("bucket")
    windows = pl.when(room >= 0).then((room.floordiv(pl.col("step")) + 1).clip(0, cfg.backtest.n_windows)).otherwise(0)
    return (
        attrs.with_columns(horizon=horizon)
        .with_columns(bucket=bucket)
        .with_columns(step=step)
        .with_columns(windows=windows.cast(pl.Int64))
        .with_columns(
            backtested=(pl.col("windows") >= cfg.backtest.min_windows)
            & (pl.col("demand_class") != NOT_BACKTESTED)
            & ~pl.col("skip_backtest")
        )
        .with_columns(
            model_set=pl.when(pl.col("backtested")).then(pl.col("demand_class")).otherwise(pl.lit(NOT_BACKTESTED)),
            windows=pl.when(pl.col("backtested")).then(pl.col("windows")).otherwise(0),
        )
        .select(
            ID,
            "demand_class",
            "lead_time_periods",
            "review_periods",
            "horizon",
            "bucket",
            "step",
            "windows",
            "backtested",
            "model_set",
            "seasonal",
            "trended",
        )
        .sort(ID)
    )


def _long(wide: pl.DataFrame, index: list[str], models: Sequence[str], value: str) -> pl.DataFrame:
    return wide.unpivot(index=index, on=list(models), variable_name="model", value_name=value)


def _long_with_quantiles(wide: pl.DataFrame, index: list[str], models: Sequence[str], quantiles: Sequence[float]) -> pl.DataFrame:
    """One row per index and model: the point forecast and its quantiles."""
    frames = [
        wide.select(*index, pl.lit(m).alias("model"), pl.col(m).alias("forecast"), *[_quantile_expr(m, p) for p in quantiles])
        for m in models
    ]
    return pl.concat(frames) if frames else pl.DataFrame()


def _interval_widths(fc: pl.DataFrame, models: Sequence[str], quantiles: Sequence[float]) -> pl.DataFrame:
    """unique_id, model, step and `_width_q..`: how far each native quantile of the final fit lies from its mean."""
    frames = [
        fc.select(
            ID,
            pl.lit(m).alias("model"),
            step=pl.col(DS).rank("ordinal").over(ID).cast(pl.Int64),
            **{f"_width_{quantile_name(p)}": pl.lit(0.0) if p == 0.5 else pl.col(_interval_column(m, p)) - pl.col(m) for p in quantiles},
        )
        for m in models
        if m in NATIVE_INTERVALS
    ]
    return pl.concat(frames) if frames else pl.DataFrame(schema={ID: pl.String, "model": pl.String, "step": pl.Int64})


def _backtest_long(
    wide: pl.DataFrame, index: list[str], models: Sequence[str], quantiles: Sequence[float], widths: pl.DataFrame
) -> pl.DataFrame:
    """The backtest, one row per window, step and model, with quantiles: a native model's point forecast plus the
    interval widths of its final fit at the same step (the residual spread changes little between windows; computing
    intervals in every window would cost more than the fits); the empirical quantiles at each window's cutoff for the
    others (`empirical_quantiles`, from the demand up to and including the cutoff: training data only)."""
    frames = []
    for m in models:
        base = wide.select(*index, pl.lit(m).alias("model"), pl.col(m).alias("forecast"), pl.col("^_empirical_.*$"))
        if m in NATIVE_INTERVALS:
            base = base.join(widths.filter(pl.col("model") == m).drop("model"), on=[ID, "step"], how="left").with_columns(
                (pl.col("forecast") + pl.col(f"_width_{quantile_name(p)}")).clip(0.0, None).alias(quantile_name(p)) for p in quantiles
            )
        else:
            base = base.with_columns(_quantile_expr(m, p) for p in quantiles)
        frames.append(base.select(*index, "model", "forecast", *[quantile_name(p) for p in quantiles]))
    return pl.concat(frames) if frames else pl.DataFrame()


def _window_metrics(cv: pl.DataFrame, train: pl.DataFrame, models: Sequence[str], season_length: int) -> pl.DataFrame:
    """Losses per SKU, window and model, long format: MAE, MSE and bias (`evaluation.metrics.point_errors`:
    utilsforecast on its deterministic pandas path); MASE and MSSE (RMSSE squared) divide them by the in-sample
    seasonal-naive error of each window's own training data (utilsforecast's definition; `evaluation.metrics.
    naive_scales` computes the scales in one pass, utilsforecast would copy the training data per window), or, where
    the training data is shorter than a season, by the naive (lag-1) error (`evaluation.metrics.scaled`).
    """
    key = [ID, "cutoff"]
    errors = em.point_errors(cv, models, ("mae", "mse", "bias"))
    cutoffs = cv.select(ID, "cutoff").unique()
    scales = em.naive_scales(train, cutoffs, season_length).join(em.naive_scales(train, cutoffs, 1), on=key, suffix="_1")
    losses = errors | {
        "mase": em.scaled(errors["mae"], models, scales, ("scale_abs", "scale_abs_1")),
        "msse": em.scaled(errors["mse"], models, scales, ("scale_sq", "scale_sq_1")),
    }
    out = None
    for name, wide in losses.items():
        part = _long(wide, key, models, name)
        out = part if out is None else out.join(part, on=[*key, "model"])
    return out


def _flag_fallbacks(cv: pl.DataFrame, models: Sequence[str], fallback: str) -> pl.DataFrame:
    """unique_id, model, fell_back: the model's whole backtest equals the fallback's (statsforecast's silent fallback).

    Constant-output models that legitimately equal the fallback on a flat series are flagged too: harmless,
    the fallback's forecast is then the same.
    """
    checked = [m for m in models if m != fallback]
    flags = cv.group_by(ID).agg(
        *[(pl.col(m) == pl.col(FALLBACK_ALIAS)).all().alias(m) for m in checked],
        *[pl.lit(False).alias(m) for m in models if m == fallback],
    )
    return _long(flags, [ID], models, "fell_back")


def _statsforecast(models: Sequence[str], fallback: str, cfg: BuffercastConfig, spec: ModelSpec) -> Any:
    """One process: the stage's parallelism is its own worker pool (`forecasting.workers`), never statsforecast's
    forked `multiprocessing.Pool`, which can deadlock under Prefect (see that module)."""
    from statsforecast import StatsForecast  # here: the flow's process need not import it (see forecasting.models)

    sf_models, fallback_model = build_models(models, spec, fallback)
    return StatsForecast(models=sf_models, freq=POLARS_FREQ[cfg.frequency], n_jobs=1, fallback_model=fallback_model)


def _drop_fallback(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(c for c in frame.columns if c.startswith(FALLBACK_ALIAS))


def _calls(
    models: Sequence[str], cfg: BuffercastConfig, spec: ModelSpec, refit: bool, with_levels: bool = True
) -> list[tuple[list[str], str, bool, bool]]:
    """How a model set splits into statsforecast calls: (models, fallback, refit, with intervals).

    statsforecast raises when `level=` reaches a model without native intervals, and with refit=False when a model
    lacks `forward`: models with native intervals go in a call with `level=`, the others in one without; with
    refit=False the models without `forward` (Croston family, averages: cheap) are refit per window in a call of
    their own. A forward call falls back to Naive, which has `forward` and intervals too.
    """
    if with_levels and cfg.models.quantiles:
        parts = [([m for m in models if m in NATIVE_INTERVALS], True), ([m for m in models if m not in NATIVE_INTERVALS], False)]
    else:
        parts = [(list(models), False)]
    calls = []
    for names, with_level in parts:
        if refit:
            calls.append((names, cfg.models.fallback, True, with_level))
            continue
        fwd = [m for m in names if hasattr(build_model(m, spec), "forward")]
        calls += [(fwd, "Naive", False, with_level), ([m for m in names if m not in fwd], cfg.models.fallback, True, with_level)]
    return [c for c in calls if c[0]]


def _backtest(
    panel: pl.DataFrame, row: Mapping, models: Sequence[str], cfg: BuffercastConfig, spec: ModelSpec
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The wide backtest of a chunk (one statsforecast call per `_calls` part) and the fallback flags of its models.

    Point forecasts only: statsforecast's native intervals cost about 1 ms per fit and window (scipy per level), more
    than fitting the cheap models; the backtest's quantiles take the interval widths of the final fit (`_interval_widths`).
    """
    cv, flags = None, []
    for names, fallback, refit, _ in _calls(models, cfg, spec, cfg.backtest.refit, with_levels=False):
        part = _statsforecast(names, fallback, cfg, spec).cross_validation(
            h=int(row["bucket"]),
            df=panel,
            n_windows=int(row["windows"]),
            step_size=int(row["step"]),
            refit=refit,
        )
        flags.append(_flag_fallbacks(part, names, fallback))
        part = _drop_fallback(part)
        cv = part if cv is None else cv.join(part, on=[ID, DS, "cutoff", Y], how="inner")
    return cv, pl.concat(flags)


def _forecast(
    panel: pl.DataFrame, h: int, models: Sequence[str], cfg: BuffercastConfig, spec: ModelSpec, fitted: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The wide future of a chunk (a call with intervals, one without) and, if `fitted`, the in-sample fitted values."""
    levels = interval_levels(cfg.models.quantiles)
    fc, fits = None, None
    for names, _, _, with_level in _calls(models, cfg, spec, refit=True):
        sf = _statsforecast(names, cfg.models.fallback, cfg, spec)
        part = _drop_fallback(sf.forecast(h=h, df=panel, fitted=fitted, **({"level": levels} if with_level else {})))
        fc = part if fc is None else fc.join(part, on=[ID, DS], how="inner")
        if fitted:
            fit = sf.forecast_fitted_values().select(ID, DS, Y, *names)
            fits = fit if fits is None else fits.join(fit.drop(Y), on=[ID, DS], how="inner")
    return fc, fits


@dataclass(frozen=True)
class _Chunk:
    metrics: pl.DataFrame  # per SKU and model (backtested: window means; else one-step RMSE)
    chosen: pl.DataFrame  # per SKU: the chosen model, its runner-up and its metrics
    cv: pl.DataFrame  # the kept backtest rows, long
    forecasts: pl.DataFrame  # the chosen model's future, long


def _run_chunk(*args: object) -> _Chunk:
    """`_chunk_results` (in a worker or in-process) without statsmodels' "invalid value encountered in divide" from
    its autocorrelation of a constant series (statsforecast's seasonality test): every all-zero history raises it,
    and the result (no season) is right."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"statsmodels\.tsa\.stattools")
        return _chunk_results(*args)  # type: ignore[arg-type]


def _chunk_results(
    panel: pl.DataFrame, members: pl.DataFrame, row: Mapping, models: Sequence[str], model_sets: Mapping[str, Sequence[str]],
    cfg: BuffercastConfig, spec: ModelSpec, keep_all_backtests: bool,
) -> _Chunk:  # fmt: skip
    """Backtest, score, select and forecast one chunk of SKUs sharing a model set, horizon bucket and windows.

    The bucket may be longer than the lead time: the models are scored on the lead-time steps only (docs/methods.md:
    the backtest horizon is the lead time); the rows up to L + R are kept for the order-up-to level's sigma.
    """
    h = int(row["bucket"])
    sets = members.select(ID, "model_set")
    periods = members.select(ID, "lead_time_periods", "review_periods")
    empirical = (
        empirical_quantiles(panel, cfg.models.quantiles, cfg.empirical_window_periods)
        if any(m not in NATIVE_INTERVALS for m in models)
        else None
    )
    # The future runs `time_phased_periods` past the horizon (the time-phased parameters); a step's forecast does not
    # depend on how far the call forecasts, so the horizon's own steps are unchanged.
    fc, fitted = _forecast(panel, h + cfg.time_phased_periods, models, cfg, spec, fitted=not row["backtested"])
    if empirical is not None:  # the quantiles at the forecast origin, the last period
        fc = fc.join(empirical.group_by(ID).agg(pl.exclude(DS).last()), on=ID, how="left")
    future = _long_with_quantiles(fc, [ID, DS], models, cfg.models.quantiles).with_columns(
        step=pl.col(DS).rank("ordinal").over(ID, "model").cast(pl.Int64)
    )

    if not row["backtested"]:
        # docs/methods.md: without a backtest, sigma_e is the one-step (in-sample) RMSE; periods a model cannot fit
        # in-sample (Naive's first, SeasonalNaive's first season) are left out.
        metrics = (
            _long(fitted, [ID, DS, Y], models, "fitted")
            .filter(pl.col("fitted").is_not_null() & pl.col("fitted").is_not_nan())
            .sort(ID, "model", DS)
            .group_by(ID, "model", maintain_order=True)
            .agg(one_step_rmse=in_row_order((pl.col("fitted") - pl.col(Y)) ** 2).list.mean().sqrt())
        )
        metrics = _with_missing(metrics.with_columns(fell_back=pl.lit(False)), future.filter(pl.col("step") <= h))
        chosen = select_models(metrics.join(sets, on=ID), model_sets, "one_step_rmse").drop("model_set")
        return _Chunk(metrics, chosen, pl.DataFrame(), _chosen_rows(future, chosen))

    wide, flags = _backtest(panel, row, models, cfg, spec)
    wide = (
        wide.join(periods, on=ID, how="left")
        .with_columns(step=pl.col(DS).rank("ordinal").over(ID, "cutoff").cast(pl.Int64))
        .filter(pl.col("step") <= (pl.col("lead_time_periods") + pl.col("review_periods")).ceil().clip(1, None))
        .sort(ID, "cutoff", DS)
    )
    if empirical is not None:  # the quantiles at each window's origin, from the demand up to and including it
        wide = wide.join(empirical.rename({DS: "cutoff"}), on=[ID, "cutoff"], how="left")
    on_lead_time = pl.col("step") <= pl.col("lead_time_periods").ceil().clip(1, None)
    index = [ID, DS, "cutoff", Y, "step", "lead_time_periods", "review_periods"]
    cv = _backtest_long(wide, index, models, cfg.models.quantiles, _interval_widths(fc, models, cfg.models.quantiles))
    metrics = _aggregate_metrics(_window_metrics(wide.filter(on_lead_time), panel, models, cfg.season_length), cv, cfg.models.quantiles)
    metrics = _with_missing(
        metrics.join(flags, on=[ID, "model"], how="left"),
        pl.concat([cv.select(ID, "model", "forecast"), future.filter(pl.col("step") <= h).select(ID, "model", "forecast")]),
    )
    chosen = select_models(metrics.join(sets, on=ID), model_sets, cfg.backtest.selection_metric)
    if cfg.backtest.combination_k >= 2:
        combo_cv, combo_future, combo_metrics, parts = _combination(metrics.join(sets, on=ID), model_sets, cv, future, panel, cfg)
        if combo_metrics.height:
            cv, future = pl.concat([cv, combo_cv], how="diagonal_relaxed"), pl.concat([future, combo_future], how="diagonal_relaxed")
            metrics = pl.concat([metrics, combo_metrics], how="diagonal_relaxed").sort(ID, "model")
            chosen = select_models(metrics.join(sets, on=ID), model_sets, cfg.backtest.selection_metric).join(
                parts, on=[ID, "model"], how="left"
            )
    kept = cv if keep_all_backtests else _chosen_rows(cv, chosen)
    return _Chunk(
        metrics.sort(ID, "model"), chosen.drop("model_set"), kept.drop("lead_time_periods", "review_periods"), _chosen_rows(future, chosen)
    )


def _chosen_rows(frame: pl.DataFrame, chosen: pl.DataFrame) -> pl.DataFrame:
    return frame.join(chosen.select(ID, "model"), on=[ID, "model"], how="semi")


def _with_missing(metrics: pl.DataFrame, forecasts: pl.DataFrame) -> pl.DataFrame:
    """missing_forecasts: a model left a forecast null or NaN (backtest or future); fell_back null -> false."""
    missing = forecasts.group_by(ID, "model").agg(missing_forecasts=(pl.col("forecast").is_null() | pl.col("forecast").is_nan()).any())
    return metrics.join(missing, on=[ID, "model"], how="left").with_columns(
        pl.col("fell_back", "missing_forecasts").fill_null(False), pl.selectors.float().fill_nan(None)
    )


def _combination(
    metrics: pl.DataFrame, model_sets: Mapping[str, Sequence[str]], cv: pl.DataFrame, future: pl.DataFrame, panel: pl.DataFrame,
    cfg: BuffercastConfig,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """The mean of each SKU's best k eligible models (forecasts and quantiles averaged), backtested like a model.

    Returns its backtest rows, its future, its metrics and the models it combines per SKU (`combined_models`).
    SKUs with fewer than k eligible models get none.
    """
    k = cfg.backtest.combination_k
    ranked = _rank(metrics, model_sets, cfg.backtest.selection_metric).filter(~pl.col("_excluded") & pl.col("_score").is_not_null())
    top = ranked.filter(pl.col("_rank") < k).filter(pl.len().over(ID) == k).select(ID, "model")
    if top.is_empty():
        return pl.DataFrame(), pl.DataFrame(), pl.DataFrame(), pl.DataFrame()
    qs = [quantile_name(p) for p in cfg.models.quantiles]

    def mean_of(frame: pl.DataFrame, keys: list[str], first: list[str]) -> pl.DataFrame:
        return (
            frame.join(top, on=[ID, "model"], how="semi")
            .sort(*keys, "model")
            .group_by(keys, maintain_order=True)
            .agg(*[pl.col(c).first() for c in first], *[in_row_order(pl.col(c)).list.mean().alias(c) for c in ["forecast", *qs]])
            .with_columns(model=pl.lit(COMBINATION))
        )

    combo_cv = mean_of(cv, [ID, "cutoff", DS], [Y, "step", "lead_time_periods", "review_periods"])
    combo_future = mean_of(future, [ID, DS], ["step"])
    wide = combo_cv.filter(pl.col("step") <= pl.col("lead_time_periods").ceil().clip(1, None)).rename({"forecast": COMBINATION})
    combo_metrics = _aggregate_metrics(_window_metrics(wide, panel, [COMBINATION], cfg.season_length), combo_cv, cfg.models.quantiles)
    combo_metrics = combo_metrics.with_columns(fell_back=pl.lit(False), missing_forecasts=pl.lit(False))
    parts = top.sort(ID, "model").group_by(ID, maintain_order=True).agg(combined_models=pl.col("model").str.join("+"))
    return combo_cv, combo_future, combo_metrics, parts.with_columns(model=pl.lit(COMBINATION))


def _aggregate_metrics(window_metrics: pl.DataFrame, cv: pl.DataFrame, quantiles: Sequence[float] = ()) -> pl.DataFrame:
    """Per SKU and model: mean of the window errors, the cumulative error over the lead time L and over L + R,
    and per quantile its coverage (share of backtest actuals at or below it) and mean pinball loss, over the
    lead-time steps (a null quantile counts as a miss, and as a zero loss in the mean).

    Every sum runs in a fixed order (windows by cutoff, steps in step order: `evaluation.metrics`,
    `evaluation.windows`): same input, same output to the last bit.
    """
    keys = [ID, "model"]
    means = em.mean_over_windows(window_metrics, ["mae", "bias", "mase"], id_col=keys, n_windows="n_windows")
    roots = em.mean_over_windows(window_metrics.rename({"mse": "rmse", "msse": "rmsse"}), ["rmse", "rmsse"], id_col=keys, root=True)
    # Per window: the cumulative error sum_t w_t (forecast - y) over L and over L + R, and the weights' sums (L, or
    # less where the horizon is capped below the lead time).
    lead, review_lead = pl.col("lead_time_periods"), pl.col("lead_time_periods") + pl.col("review_periods")
    periods = cv.group_by(keys).agg(lead.first(), review_lead_time_periods=review_lead.first())
    per_window = (
        exposure_sums(cv, pl.col("forecast") - pl.col(Y), keys, names=("lead_error", "review_lead_error"))
        .join(exposure_sums(cv, pl.lit(1.0), keys, names=("weight", "review_weight")), on=[*keys, "cutoff"], maintain_order="left")
        .join(periods, on=keys, maintain_order="left")
    )
    cumulative = per_window.group_by(keys, maintain_order=True).agg(
        # Scaled up when the horizon is capped below the lead time (variance grows with the periods covered).
        lead_time_rmse=in_row_order(pl.col("lead_error") ** 2).list.mean().sqrt()
        * (pl.col("lead_time_periods") / pl.col("weight")).first().sqrt(),
        lead_time_bias=in_row_order(pl.col("lead_error")).list.mean(),
        review_lead_time_rmse=in_row_order(pl.col("review_lead_error") ** 2).list.mean().sqrt()
        * (pl.col("review_lead_time_periods") / pl.col("review_weight")).first().sqrt(),
    )
    out = means.join(roots, on=keys, maintain_order="left").join(cumulative, on=keys, how="left", maintain_order="left")
    if quantiles:
        qs = {quantile_name(p): p for p in quantiles}
        scored = cv.filter(pl.col("step") <= lead.ceil().clip(1, None)).sort(*keys, "cutoff", "step")
        coverage = em.coverage(scored, list(qs), id_col=keys, null_as_miss=True)
        pinball = em.pinball_loss(scored, qs, id_col=keys, cutoff_col="cutoff", null_as_miss=True)
        out = out.join(coverage.rename({q: f"coverage_{q}" for q in qs}), on=keys, how="left", maintain_order="left").join(
            pinball.rename({q: f"pinball_{q}" for q in qs}), on=keys, how="left", maintain_order="left"
        )
    return out.select(list(_empty_metrics(quantiles).drop("fell_back", "missing_forecasts").columns))


def _rank(metrics: pl.DataFrame, model_sets: Mapping[str, Sequence[str]], metric: str) -> pl.DataFrame:
    """Models ranked per SKU (`_rank` 0 = best): eligible first, then by score, the SKU's own set order, name."""
    order = pl.DataFrame(
        [{"model_set": k, "model": m, "_order": i} for k, ms in model_sets.items() for i, m in enumerate(ms)],
        schema={"model_set": pl.String, "model": pl.String, "_order": pl.Int64},
    )
    return (
        metrics.join(order, on=["model_set", "model"], how="left")
        .with_columns(
            _score=pl.col(metric).fill_nan(None),
            _excluded=pl.col("fell_back") | pl.col("missing_forecasts"),
        )
        .sort([ID, "_excluded", "_score", "_order", "model"], nulls_last=True)
        .with_columns(_rank=pl.int_range(pl.len()).over(ID))
    )


def select_models(metrics: pl.DataFrame, model_sets: Mapping[str, Sequence[str]], metric: str) -> pl.DataFrame:
    """Per SKU the model with the lowest `metric`; ties (and nulls) broken by the order of the SKU's own model
    set in the config, then by name (the combination, in no set, loses ties to single models).

    `metrics` needs unique_id, model_set, model, `metric`, fell_back and missing_forecasts. A model that fell
    back or left forecasts missing (e.g. a seasonal model on less than a season of history) is not a candidate
    unless nothing else is left.
    """
    ranked = _rank(metrics, model_sets, metric)
    best = ranked.filter(pl.col("_rank") == 0).drop("_order", "_score", "_excluded", "_rank")
    runner_up = ranked.filter(pl.col("_rank") == 1).select(ID, runner_up_model=pl.col("model"))
    return best.join(runner_up, on=ID, how="left")


def _chunks(members: pl.DataFrame, size: int, workers: int = 1) -> list[pl.DataFrame]:
    """Slices of at most `size` SKUs; with several workers, a group that fits one chunk is still split so that each
    worker gets a share, while each share keeps at least MIN_SKUS_PER_WORKER_CHUNK SKUs. Every SKU is forecast on
    its own, so the split changes which process computes a SKU, not its numbers."""
    size = max(size, 1)
    n_chunks = max(-(-members.height // size), min(workers, members.height // MIN_SKUS_PER_WORKER_CHUNK), 1)
    size = -(-members.height // n_chunks)
    return [members.slice(i, size) for i in range(0, members.height, size)]


def backtest_and_forecast(
    panel: pl.DataFrame,
    attrs: pl.DataFrame,
    model_sets: Mapping[str, Sequence[str]],
    cfg: BuffercastConfig,
    pool: Executor | None = None,
    *,
    keep_all_backtests: bool = False,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> ForecastResult:
    """Backtest every SKU with its class's model set, pick a model per SKU and forecast its horizon.

    `panel`: unique_id, ds, y (calendar filled, explicit zeros). `attrs`: unique_id, demand_class,
    n_periods, lead_time_periods, review_periods. SKUs go through statsforecast in chunks of `cfg.backtest.chunk_size`
    per group (model set, seasonality, trend, horizon bucket, windows, step): each chunk is reduced to its metrics, its
    chosen model and that model's backtest and future before its result comes back, so memory stays bounded.
    The chunks run on `pool` (an Executor: `forecasting.workers.worker_pool`, or a Dask client), else on a pool of
    `cfg.backtest.n_jobs` workers opened for this call (none for one process, or for fewer than 100 SKUs); results are gathered
    in chunk order. `workers`: how many chunks `pool` runs at once (default: `cfg.backtest.n_jobs`'s count; a Dask
    cluster's threads). `progress`, if given, receives a line after each chunk ("forecast 6,000/10,000 SKUs, 42 s").
    Neither the pool nor the number of workers changes a number: every SKU is forecast on its own.
    """
    if pool is None and worker_count(cfg.backtest.n_jobs) > 1 and attrs.height >= 2 * MIN_SKUS_PER_WORKER_CHUNK:
        with worker_pool(cfg.backtest.n_jobs) as own:  # fewer SKUs: starting the workers would cost more than they save
            return backtest_and_forecast(panel, attrs, model_sets, cfg, own, keep_all_backtests=keep_all_backtests, progress=progress)
    plan = plan_horizons(attrs, cfg)
    workers = 1 if pool is None else workers or worker_count(cfg.backtest.n_jobs)
    chunks: list[_Chunk] = []
    start, done = time.perf_counter(), 0
    for chunk in map_in_order(
        _run_chunk, _chunk_jobs(panel, plan, model_sets, cfg, workers, keep_all_backtests), pool, in_flight=2 * workers
    ):
        chunks.append(chunk)
        done += chunk.chosen.height
        if progress is not None:
            progress(f"forecast {done:,}/{plan.height:,} SKUs, {time.perf_counter() - start:.0f} s")

    metrics = _concat([c.metrics for c in chunks if "mae" in c.metrics.columns])
    metrics = metrics if metrics.height else _empty_metrics(cfg.models.quantiles)
    chosen = _concat([c.chosen for c in chunks])
    extended_periods = cfg.time_phased_periods
    every = (
        _concat([c.forecasts for c in chunks])
        .join(plan.select(ID, "horizon", "lead_time_periods", "review_periods"), on=ID)
        .with_columns(pl.when(pl.col("forecast") < NEGLIGIBLE_FORECAST).then(0.0).otherwise(pl.col("forecast")).alias("forecast"))
    )
    future = every.filter(pl.col("step") <= pl.col("horizon"))
    extended = every.filter(pl.col("step") <= pl.col("horizon") + extended_periods).select(ID, DS, "step", "forecast").sort(ID, "step")
    w = lead_time_weights(pl.col("step"), pl.col("lead_time_periods"))
    wr = lead_time_weights(pl.col("step"), pl.col("lead_time_periods") + pl.col("review_periods"))
    demand = (
        future.sort(ID, "step")
        .group_by(ID, maintain_order=True)
        .agg(
            mean_demand_per_period=in_row_order(w * pl.col("forecast")).list.sum() / in_row_order(w).list.sum(),
            review_lead_time_demand=in_row_order(wr * pl.col("forecast")).list.sum(),
            lead_time_periods=pl.col("lead_time_periods").first(),
            review_periods=pl.col("review_periods").first(),
        )
    )
    selection = plan.select(ID, "model_set", "horizon", "windows", "backtested").join(chosen, on=ID, how="left")
    one_step = pl.max_horizontal(pl.col("one_step_rmse"), pl.col("mean_demand_per_period").sqrt())
    backtested = pl.col("backtested")
    selection = (
        selection.join(demand, on=ID, how="left")
        .with_columns(
            *[
                pl.lit(None, pl.Float64).alias(c)
                # Absent when no SKU of the run could be backtested (one day of history, say).
                for c in ("one_step_rmse", "lead_time_rmse", "review_lead_time_rmse", "mase", "rmse", "mae", "bias")
                if c not in selection.columns
            ]
        )
        .with_columns(
            *([] if "combined_models" in selection.columns else [pl.lit(None, pl.String).alias("combined_models")]),
            lead_time_demand=pl.col("mean_demand_per_period") * pl.col("lead_time_periods"),
            # Without a backtest, sigma_e is the one-step in-sample RMSE (docs/methods.md), floored at the Poisson spread
            # sqrt(mean demand): a new SKU with one sale, or a few equal ones, must not look certain (RMSE 0).
            sigma_lead_time_demand=pl.when(backtested)
            .then(pl.col("lead_time_rmse"))
            .otherwise(one_step * pl.col("lead_time_periods").sqrt()),
            sigma_review_lead_time_demand=pl.when(backtested)
            .then(pl.col("review_lead_time_rmse"))
            .otherwise(one_step * (pl.col("lead_time_periods") + pl.col("review_periods")).sqrt()),
            sigma_method=pl.when(backtested).then(pl.lit("backtest_lead_time_rmse")).otherwise(pl.lit("one_step_rmse_x_sqrt_lead_time")),
        )
    )
    cv_schema = {ID: pl.String, DS: pl.Date, "cutoff": pl.Date, Y: pl.Float64, "step": pl.Int64, "model": pl.String, "forecast": pl.Float64}
    cv_schema |= {quantile_name(p): pl.Float64 for p in cfg.models.quantiles}
    cv = _concat([c.cv for c in chunks], cv_schema)
    return ForecastResult(
        plan=plan,
        cv=cv.select(list(cv_schema)).sort(ID, "model", "cutoff", DS),
        metrics=metrics.sort(ID, "model"),
        selection=selection.sort(ID),
        forecasts=future.select(ID, DS, "step", "model", "forecast", *[quantile_name(p) for p in cfg.models.quantiles]).sort(ID, DS),
        extended=extended,
        extended_periods=extended_periods,
    )


def _chunk_jobs(
    panel: pl.DataFrame,
    plan: pl.DataFrame,
    model_sets: Mapping[str, Sequence[str]],
    cfg: BuffercastConfig,
    workers: int,
    keep_all_backtests: bool,
) -> Iterator[tuple]:
    """The arguments of `_run_chunk` for each chunk of each group, built one at a time as the pool asks for them."""
    group_keys = ["model_set", "seasonal", "trended", "bucket", "windows", "step"]
    for key, group in plan.group_by(group_keys, maintain_order=True):
        row = dict(zip(group_keys, key, strict=True)) | {"backtested": bool(group["backtested"][0])}
        models, spec = list(model_sets[row["model_set"]]), model_spec(cfg)
        if not row["seasonal"]:
            models, spec = without_season(models, spec, cfg.models.fallback)
        if not row["trended"]:
            models = without_trend(models, cfg.models.fallback)
        for members in _chunks(group, cfg.backtest.chunk_size, workers):
            chunk_panel = panel.join(members.select(ID), on=ID, how="semi").sort(ID, DS)
            yield chunk_panel, members, row, models, dict(model_sets), cfg, spec, keep_all_backtests


def _concat(frames: Sequence[pl.DataFrame], schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if frames:
        return pl.concat(frames, how="diagonal_relaxed")
    return pl.DataFrame(schema=schema or {})


def _empty_metrics(quantiles: Sequence[float] = ()) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            ID: pl.String, "model": pl.String, "mae": pl.Float64, "rmse": pl.Float64, "bias": pl.Float64, "mase": pl.Float64,
            "rmsse": pl.Float64, "n_windows": pl.Int64, "lead_time_rmse": pl.Float64, "lead_time_bias": pl.Float64,
            "review_lead_time_rmse": pl.Float64, **{f"coverage_{quantile_name(p)}": pl.Float64 for p in quantiles},
            **{f"pinball_{quantile_name(p)}": pl.Float64 for p in quantiles},
            "fell_back": pl.Boolean, "missing_forecasts": pl.Boolean,
        }
    )  # fmt: skip
