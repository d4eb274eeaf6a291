"""Rolling-origin backtest, error metrics, model selection and the lead-time forecast.

SKUs are grouped by (model set, horizon bucket, number of windows): each group is ONE statsforecast
call (`cross_validation`, then `forecast`), never a call per SKU. The quantity the buffer is sized
from is measured directly (DOMAIN.md): the error of the cumulative forecast over the SKU's lead time,
one sample per backtest window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl
from statsforecast import StatsForecast
from utilsforecast.losses import bias, mae, mase, mse, msse

from forecasting.models import FALLBACK_ALIAS, POLARS_FREQ, ModelSpec, build_model, build_models, without_season

ID, DS, Y = "unique_id", "ds", "y"
NOT_BACKTESTED = "insufficient_history"

#: Below this many series a process pool costs more to start than it saves.
MIN_SERIES_FOR_PROCESSES = 100


@dataclass(frozen=True)
class BacktestSettings:
    freq: str
    n_windows: int
    min_windows: int
    step_periods: int | None
    refit: bool
    min_train_periods: int
    max_horizon_periods: int
    horizon_buckets: Sequence[int]
    selection_metric: str
    n_jobs: int
    fallback: str
    spec: ModelSpec
    #: Seasonality of the MASE/RMSSE scale; None: spec.season_length. Fixed per frequency, so errors compare across SKUs.
    mase_season: int | None = None

    @property
    def mase_season_length(self) -> int:
        return self.mase_season or self.spec.season_length


@dataclass(frozen=True)
class ForecastResult:
    plan: pl.DataFrame  # one row per SKU: horizon, bucket, windows, model set, backtested
    cv: pl.DataFrame  # long: unique_id, cutoff, ds, step, y, model, forecast
    metrics: pl.DataFrame  # long: unique_id, model, mae, rmse, bias, mase, rmsse, lead_time_rmse, ... fell_back
    selection: pl.DataFrame  # one row per SKU: the chosen model, its runner-up, its errors and lead-time sigma
    forecasts: pl.DataFrame  # the chosen model's future: unique_id, ds, step, model, forecast


def lead_time_weights(step: pl.Expr, lead_time_periods: pl.Expr) -> pl.Expr:
    """Weight of forecast step t (1-based) in a lead time of L periods: min(max(L - (t - 1), 0), 1).

    Whole periods count fully, a fractional last period by its fraction: sum of weights = L.
    """
    return (lead_time_periods - (step - 1)).clip(0.0, 1.0)


def plan_horizons(attrs: pl.DataFrame, s: BacktestSettings) -> pl.DataFrame:
    """Per SKU: forecast horizon, its bucket, the backtest step and how many windows its history allows.

    `attrs`: unique_id, demand_class, n_periods, lead_time_periods, review_periods, and optionally
    `skip_backtest` (e.g. new products: default false) and `seasonal` (false: no seasonal models; default true).
    """
    attrs = attrs.with_columns(
        *([] if "skip_backtest" in attrs.columns else [pl.lit(False).alias("skip_backtest")]),
        *([] if "seasonal" in attrs.columns else [pl.lit(True).alias("seasonal")]),
    )
    buckets = sorted(b for b in s.horizon_buckets if b <= s.max_horizon_periods) or [s.max_horizon_periods]
    if buckets[-1] < s.max_horizon_periods:
        buckets.append(s.max_horizon_periods)
    horizon = (pl.col("lead_time_periods") + pl.col("review_periods")).ceil().cast(pl.Int64).clip(1, s.max_horizon_periods)
    bucket = pl.lit(buckets[-1], pl.Int64)
    for b in reversed(buckets):
        bucket = pl.when(pl.col("horizon") <= b).then(pl.lit(b, pl.Int64)).otherwise(bucket)
    step = pl.lit(s.step_periods, pl.Int64) if s.step_periods else (pl.col("bucket") + 1).floordiv(2).clip(1, None)
    room = pl.col("n_periods") - s.min_train_periods - pl.col("bucket")
    windows = pl.when(room >= 0).then((room.floordiv(pl.col("step")) + 1).clip(0, s.n_windows)).otherwise(0)
    return (
        attrs.with_columns(horizon=horizon)
        .with_columns(bucket=bucket)
        .with_columns(step=step)
        .with_columns(windows=windows.cast(pl.Int64))
        .with_columns(
            backtested=(pl.col("windows") >= s.min_windows) & (pl.col("demand_class") != NOT_BACKTESTED) & ~pl.col("skip_backtest")
        )
        .with_columns(
            model_set=pl.when(pl.col("backtested")).then(pl.col("demand_class")).otherwise(pl.lit(NOT_BACKTESTED)),
            windows=pl.when(pl.col("backtested")).then(pl.col("windows")).otherwise(0),
        )
        .select(ID, "demand_class", "lead_time_periods", "horizon", "bucket", "step", "windows", "backtested", "model_set", "seasonal")
        .sort(ID)
    )


def _long(wide: pl.DataFrame, index: list[str], models: Sequence[str], value: str) -> pl.DataFrame:
    return wide.unpivot(index=index, on=list(models), variable_name="model", value_name=value)


def in_row_order(expr: pl.Expr) -> pl.Expr:
    """A group's values as one list, so that `.list.sum()` / `.list.mean()` add them in row order.

    polars' float sums in group_by are not reproducible from run to run (partial sums merged in thread
    order, pola-rs/polars#25163); buffercast promises the same outputs for the same inputs.
    """
    return expr.implode()


def _window_metrics(cv: pl.DataFrame, train: pl.DataFrame, models: Sequence[str], season_length: int) -> pl.DataFrame:
    """utilsforecast losses per SKU, window and model, long format.

    Computed on pandas frames: utilsforecast's polars path aggregates with group_by, whose float sums
    change in the last bits between runs (see `in_row_order`); pandas' groupby sums in row order.
    """
    key = [ID, "cutoff"]
    cv_pd, train_pd = cv.to_pandas(), train.to_pandas()

    def loss(fn, name, *args):
        return _long(pl.from_pandas(fn(cv_pd, models, *args)), key, models, name)

    frames = [
        loss(mae, "mae"),
        loss(mse, "mse"),
        loss(bias, "bias"),
        # MASE/RMSSE scaled by the seasonal-naive error on each window's own training data; where the
        # training data is shorter than a season, by the naive (lag-1) error.
        loss(mase, "mase_s", season_length, train_pd),
        loss(mase, "mase_1", 1, train_pd),
        loss(msse, "msse_s", season_length, train_pd),
        loss(msse, "msse_1", 1, train_pd),
    ]
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on=[*key, "model"], how="left")
    finite = lambda c: pl.when(pl.col(c).is_finite()).then(pl.col(c))  # noqa: E731
    return out.with_columns(
        mase=pl.coalesce(finite("mase_s"), finite("mase_1")),
        msse=pl.coalesce(finite("msse_s"), finite("msse_1")),
    ).drop("mase_s", "mase_1", "msse_s", "msse_1")


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


def _cross_validate(
    panel: pl.DataFrame, models: Sequence[str], fallback: str, row: Mapping, refit: bool, s: BacktestSettings, n_jobs: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One statsforecast cross_validation call: the wide backtest and the fallback flags of its models."""
    sf_models, fallback_model = build_models(models, s.spec, fallback)
    sf = StatsForecast(models=sf_models, freq=POLARS_FREQ[s.freq], n_jobs=n_jobs, fallback_model=fallback_model)
    cv = sf.cross_validation(h=int(row["bucket"]), df=panel, n_windows=int(row["windows"]), step_size=int(row["step"]), refit=refit)
    return cv.drop(FALLBACK_ALIAS), _flag_fallbacks(cv, models, fallback)


def _run_group(
    panel: pl.DataFrame, members: pl.DataFrame, row: Mapping, models: Sequence[str], s: BacktestSettings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The backtest (one statsforecast call, two when refit=False) and the forecast (one call) of a group of SKUs.

    Returns the backtest (long, lead-time steps only), the per-window metrics (or, without a backtest, the
    one-step in-sample RMSE per model), the fallback flags and the forecasts (long).
    """
    n_jobs = s.n_jobs if members.height >= MIN_SERIES_FOR_PROCESSES else 1
    empty = pl.DataFrame()
    if row["backtested"]:
        if s.refit:
            cv, flags = _cross_validate(panel, models, s.fallback, row, True, s, n_jobs)
        else:
            # refit=False needs models with `forward` (statsforecast raises otherwise): the others are cheap
            # (Croston family, averages) and are refit per window in a second call. The forward call falls back
            # to Naive, which has `forward` too.
            fwd = [m for m in models if hasattr(build_model(m, s.spec), "forward")]
            rest = [m for m in models if m not in fwd]
            parts = [_cross_validate(panel, fwd, "Naive", row, False, s, n_jobs)] if fwd else []
            parts += [_cross_validate(panel, rest, s.fallback, row, True, s, n_jobs)] if rest else []
            cv = parts[0][0]
            for other, _ in parts[1:]:
                cv = cv.join(other, on=[ID, DS, "cutoff", Y], how="inner")
            flags = pl.concat([f for _, f in parts])
        # The bucket may be longer than the lead time: the models are scored on the lead-time steps only
        # (DOMAIN.md: the backtest horizon is the lead time). Sorted: float means depend on the row order.
        cv = (
            cv.join(members.select(ID, "lead_time_periods"), on=ID, how="left")
            .filter(pl.col(DS).rank("ordinal").over(ID, "cutoff") <= pl.col("lead_time_periods").ceil().clip(1, None))
            .drop("lead_time_periods")
            .sort(ID, "cutoff", DS)
        )
        metrics = _window_metrics(cv, panel, models, s.mase_season_length)
        cv_long = _long(cv, [ID, DS, "cutoff", Y], models, "forecast")
    else:
        cv_long, metrics, flags = empty, empty, empty
    sf_models, fallback_model = build_models(models, s.spec, s.fallback)
    sf = StatsForecast(models=sf_models, freq=POLARS_FREQ[s.freq], n_jobs=n_jobs, fallback_model=fallback_model)
    fc = sf.forecast(h=int(row["bucket"]), df=panel, fitted=not row["backtested"])
    fc_long = _long(fc.drop(FALLBACK_ALIAS), [ID, DS], models, "forecast")
    if not row["backtested"]:
        # DOMAIN.md: without a backtest, sigma_e is the one-step (in-sample) RMSE; periods a model cannot fit
        # in-sample (Naive's first, SeasonalNaive's first season) are left out.
        fitted = sf.forecast_fitted_values().drop(FALLBACK_ALIAS)
        metrics = (
            _long(fitted, [ID, DS, Y], models, "fitted")
            .filter(pl.col("fitted").is_not_null() & pl.col("fitted").is_not_nan())
            .sort(ID, "model", DS)
            .group_by(ID, "model", maintain_order=True)
            .agg(one_step_rmse=in_row_order((pl.col("fitted") - pl.col(Y)) ** 2).list.mean().sqrt())
        )
    return cv_long, metrics, flags, fc_long


def _aggregate_metrics(window_metrics: pl.DataFrame, cv: pl.DataFrame) -> pl.DataFrame:
    """Per SKU and model: mean of the window errors, plus the cumulative lead-time error over the windows."""
    # Sorted and order-kept so the float means sum in the same order on every run (joins and group_by
    # otherwise leave the row order arbitrary): same input, same output to the last bit.
    per_model = window_metrics.sort(ID, "model", "cutoff").group_by(ID, "model", maintain_order=True).agg(
        mae=in_row_order(pl.col("mae")).list.mean(),
        rmse=in_row_order(pl.col("mse")).list.mean().sqrt(),
        bias=in_row_order(pl.col("bias")).list.mean(),
        mase=in_row_order(pl.col("mase")).list.mean(),
        rmsse=in_row_order(pl.col("msse")).list.mean().sqrt(),
        n_windows=pl.len().cast(pl.Int64),
    )
    w = lead_time_weights(pl.col("step"), pl.col("lead_time_periods"))
    lead = (
        cv.sort(ID, "model", "cutoff", "step")
        .group_by(ID, "model", "cutoff", maintain_order=True)
        .agg(
            lead_error=in_row_order(w * (pl.col("forecast") - pl.col(Y))).list.sum(),
            weight=in_row_order(w).list.sum(),
            lead_time_periods=pl.col("lead_time_periods").first(),
        )
        .group_by(ID, "model", maintain_order=True)
        .agg(
            # Scaled up when the horizon is capped below the lead time (variance grows with the periods covered).
            lead_time_rmse=in_row_order(pl.col("lead_error") ** 2).list.mean().sqrt()
            * (pl.col("lead_time_periods") / pl.col("weight")).first().sqrt(),
            lead_time_bias=in_row_order(pl.col("lead_error")).list.mean(),
        )
    )
    return per_model.join(lead, on=[ID, "model"], how="left")


def select_models(metrics: pl.DataFrame, model_sets: Mapping[str, Sequence[str]], metric: str) -> pl.DataFrame:
    """Per SKU the model with the lowest `metric`; ties (and nulls) broken by the order of the SKU's own model
    set in the config, then by name.

    `metrics` needs unique_id, model_set, model, `metric`, fell_back and missing_forecasts. A model that fell
    back or left forecasts missing (e.g. a seasonal model on less than a season of history) is not a candidate
    unless nothing else is left.
    """
    order = pl.DataFrame(
        [{"model_set": k, "model": m, "_order": i} for k, ms in model_sets.items() for i, m in enumerate(ms)],
        schema={"model_set": pl.String, "model": pl.String, "_order": pl.Int64},
    )
    ranked = (
        metrics.join(order, on=["model_set", "model"], how="left")
        .with_columns(
            _score=pl.col(metric).fill_nan(None),
            _excluded=pl.col("fell_back") | pl.col("missing_forecasts"),
        )
        .sort([ID, "_excluded", "_score", "_order", "model"], nulls_last=True)
        .with_columns(_rank=pl.int_range(pl.len()).over(ID))
    )
    best = ranked.filter(pl.col("_rank") == 0).drop("_order", "_score", "_excluded", "_rank")
    runner_up = ranked.filter(pl.col("_rank") == 1).select(ID, runner_up_model=pl.col("model"))
    return best.join(runner_up, on=ID, how="left")


def backtest_and_forecast(
    panel: pl.DataFrame,
    attrs: pl.DataFrame,
    model_sets: Mapping[str, Sequence[str]],
    s: BacktestSettings,
) -> ForecastResult:
    """Backtest every SKU with its class's model set, pick a model per SKU and forecast its horizon.

    `panel`: unique_id, ds, y (calendar filled, explicit zeros). `attrs`: unique_id, demand_class,
    n_periods, lead_time_periods, review_periods.
    """
    s = replace(s, mase_season=s.mase_season_length)  # the error scale keeps the frequency's season for every group
    plan = plan_horizons(attrs, s)
    group_keys = ["model_set", "seasonal", "bucket", "windows", "step"]
    cvs, metric_frames, flag_frames, fcs, one_steps = [], [], [], [], []
    for key, members in plan.group_by(group_keys, maintain_order=True):
        row = dict(zip(group_keys, key, strict=True)) | {"backtested": bool(members["backtested"][0])}
        models, spec = list(model_sets[row["model_set"]]), s.spec
        if not row["seasonal"]:
            models, spec = without_season(models, s.spec, s.fallback)
        group_panel = panel.join(members.select(ID), on=ID, how="semi").sort(ID, DS)
        cv, metrics, flags, fc = _run_group(group_panel, members, row, models, replace(s, spec=spec))
        fcs.append(fc)
        if row["backtested"]:
            cvs.append(cv)
            metric_frames.append(metrics)
            flag_frames.append(flags)
        else:
            one_steps.append(metrics)

    cv_all = _concat(cvs, {ID: pl.String, DS: pl.Date, "cutoff": pl.Date, Y: pl.Float64, "model": pl.String, "forecast": pl.Float64})
    cv_all = cv_all.join(plan.select(ID, "lead_time_periods"), on=ID, how="left").with_columns(
        step=pl.col(DS).rank("ordinal").over(ID, "cutoff", "model").cast(pl.Int64)
    )
    forecasts = _concat(fcs).with_columns(step=pl.col(DS).rank("ordinal").over(ID, "model").cast(pl.Int64))
    missing = (
        pl.concat([cv_all.select(ID, "model", "forecast"), forecasts.select(ID, "model", "forecast")])
        .group_by(ID, "model")
        .agg(missing_forecasts=pl.col("forecast").is_null().any() | pl.col("forecast").is_nan().any())
    )

    def flagged(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.join(missing, on=[ID, "model"], how="left")
            .with_columns(pl.col("fell_back", "missing_forecasts").fill_null(False), pl.selectors.float().fill_nan(None))
            .sort(ID, "model")
        )

    metrics = _aggregate_metrics(_concat(metric_frames), cv_all) if metric_frames else _empty_metrics()
    metrics = flagged(metrics.join(_concat(flag_frames), on=[ID, "model"], how="left") if flag_frames else metrics)
    one_step = flagged(
        _concat(one_steps, {ID: pl.String, "model": pl.String, "one_step_rmse": pl.Float64}).with_columns(fell_back=pl.lit(False))
    )
    sets = plan.select(ID, "model_set")
    chosen = pl.concat(
        [
            select_models(metrics.join(sets, on=ID), model_sets, s.selection_metric).drop("model_set"),
            select_models(one_step.join(sets, on=ID), model_sets, "one_step_rmse").drop("model_set"),
        ],
        how="diagonal_relaxed",
    )
    selected = chosen.select(ID, "model")
    future = (
        forecasts.join(selected, on=[ID, "model"], how="semi")
        .join(plan.select(ID, "horizon", "lead_time_periods"), on=ID)
        .filter(pl.col("step") <= pl.col("horizon"))
        .with_columns(pl.col("forecast").clip(0.0, None))
    )
    w = lead_time_weights(pl.col("step"), pl.col("lead_time_periods"))
    demand = future.sort(ID, "step").group_by(ID, maintain_order=True).agg(
        mean_demand_per_period=in_row_order(w * pl.col("forecast")).list.sum() / in_row_order(w).list.sum(),
        lead_time_periods=pl.col("lead_time_periods").first(),
    )
    selection = plan.select(ID, "model_set", "horizon", "windows", "backtested").join(chosen, on=ID, how="left")
    selection = selection.join(demand, on=ID, how="left").with_columns(
        lead_time_demand=pl.col("mean_demand_per_period") * pl.col("lead_time_periods"),
        # Without a backtest, sigma_e is the one-step in-sample RMSE (DOMAIN.md), floored at the Poisson spread
        # sqrt(mean demand): a new SKU with one sale, or a few equal ones, must not look certain (RMSE 0).
        sigma_lead_time_demand=pl.when(pl.col("backtested"))
        .then(pl.col("lead_time_rmse"))
        .otherwise(
            pl.max_horizontal(pl.col("one_step_rmse"), pl.col("mean_demand_per_period").sqrt()) * pl.col("lead_time_periods").sqrt()
        ),
        sigma_method=pl.when(pl.col("backtested"))
        .then(pl.lit("backtest_lead_time_rmse"))
        .otherwise(pl.lit("one_step_rmse_x_sqrt_lead_time")),
    )
    return ForecastResult(
        plan=plan,
        cv=cv_all.drop("lead_time_periods").sort(ID, "model", "cutoff", DS),
        metrics=metrics,
        selection=selection.sort(ID),
        forecasts=future.select(ID, DS, "step", "model", "forecast").sort(ID, DS),
    )


def _concat(frames: Sequence[pl.DataFrame], schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if frames:
        return pl.concat(frames, how="vertical_relaxed")
    return pl.DataFrame(schema=schema or {})


def _empty_metrics() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            ID: pl.String, "model": pl.String, "mae": pl.Float64, "rmse": pl.Float64, "bias": pl.Float64, "mase": pl.Float64,
            "rmsse": pl.Float64, "n_windows": pl.Int64, "lead_time_rmse": pl.Float64, "lead_time_bias": pl.Float64, "fell_back": pl.Boolean,
        }
    )  # fmt: skip
