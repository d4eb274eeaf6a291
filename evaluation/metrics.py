"""Error metrics, coverage and pinball loss: one signature for all of them, in the style of `utilsforecast.losses`.

    metric(df, models, id_col="unique_id", target_col="y", ...) -> one row per id, one column per model

`df` holds the actuals (`target_col`) and one column per model (or per quantile); the result keeps the id column(s)
and one column per model. Like utilsforecast, the point errors (`mae`, `mse`, `rmse`, `bias`, `mase`, `msse`,
`rmsse`) are per id AND per backtest window when `df` has a `cutoff_col`; `mean_over_windows` then averages the
windows per id (the backtest's `mae`, `rmse` = sqrt(mean_w MSE_w), `mase`, ...). `coverage` and `pinball_loss` pool
all rows of an id (the backtest's `coverage_q..`, `pinball_q..`; with `id_col="demand_class"` the calibration
table's per-class scores).

Every function reproduces, bit for bit, what the pipeline computed before the metrics had this home (tests/
test_evaluation_metrics.py holds them side by side):

- `mae`, `mse`, `rmse`, `bias` (`point_errors`: several from one copy): `utilsforecast.losses` on a pandas copy of
  `df`. utilsforecast's pandas path averages each group in row order (pandas' groupby mean, compensated summation):
  the same bits on every run. Its polars path aggregates with polars' group_by, whose float sums may change in the
  last bits between runs (pola-rs/polars#25163), so polars frames are never handed to it.
- `mase`, `msse`, `rmsse`: hand-written. utilsforecast's `mase`/`msse` recompute each window's scale from a copy of
  its training data (a pandas mean, not the running sums of `naive_scales`) and leave a zero scale as inf/NaN; here
  the scale comes from a frame (`naive_scales`), and a non-finite ratio falls back to the next scale column, then to
  null (the seasonal scale, then the lag-1 scale).
- `coverage`: hand-written polars (integer counts: exact in any order). utilsforecast's `calibration` is the same
  share on clean data, but on pandas a NaN quantile is "not covered", while polars orders NaN above every number
  (covered), which is what the pipeline did.
- `pinball_loss`: hand-written; `engine="polars"` sums max(p (y - q), (p - 1)(y - q)) in row order (per window,
  then over the windows) like the backtest; `engine="sklearn"` is `sklearn.metrics.mean_pinball_loss` per id (numpy's
  pairwise sum: other last bits, and +0.0 where the polars sum gives -0.0) like the calibration table.
  utilsforecast's `quantile_loss` averages with pandas' compensated mean: neither.

Pure: polars, numpy, pandas (through utilsforecast), scikit-learn. Never imports another buffercast package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import polars as pl
from utilsforecast import losses as ufl

ID, DS, Y, CUTOFF = "unique_id", "ds", "y", "cutoff"

IdCols = str | Sequence[str]


def in_row_order(expr: pl.Expr) -> pl.Expr:
    """A group's values as one list, so that `.list.sum()` / `.list.mean()` add them in row order (a plain
    left-to-right sum, the same bits on every run).

    polars' float sums in group_by are not reproducible from run to run (partial sums merged in thread order,
    pola-rs/polars#25163); buffercast promises the same outputs for the same inputs.
    """
    return expr.implode()


def quantile_name(p: float) -> str:
    """Column of the p-quantile: 0.95 -> "q95", 0.975 -> "q97.5" (the forecasts' and the backtest's naming)."""
    return f"q{round(p * 100, 6):g}"


def quantile_level(name: str) -> float:
    """The level of a quantile column: "q95" -> 0.95, "q97.5" -> 0.975 (the float literal, for levels with at
    most 6 decimals in percent). Pass {column: level} to `pinball_loss` when the levels are at hand."""
    if not name.startswith("q"):
        raise ValueError(f"quantile_level: {name!r} is not a quantile column (q50, q95, q97.5, ...)")
    return float(Decimal(name[1:]).scaleb(-2))  # exact in decimal, then rounded once: float("99.9") / 100 is not 0.999


def _ids(id_col: IdCols) -> list[str]:
    return [id_col] if isinstance(id_col, str) else list(id_col)


def _keys(df: pl.DataFrame, id_col: str, cutoff_col: str | None) -> list[str]:
    """The group of a point error: the id, and the window when `df` has one (utilsforecast's rule)."""
    return [id_col, cutoff_col] if cutoff_col is not None and cutoff_col in df.columns else [id_col]


# --- point errors: utilsforecast on its deterministic (pandas) path ------------------------------------------------


#: The point errors of `utilsforecast.losses` this module serves (pandas path).
POINT_ERRORS: dict[str, Callable[..., Any]] = {"mae": ufl.mae, "mse": ufl.mse, "rmse": ufl.rmse, "bias": ufl.bias}


def point_errors(
    df: pl.DataFrame,
    models: Sequence[str],
    names: Sequence[str] = ("mae", "mse", "bias"),
    id_col: str = ID,
    target_col: str = Y,
    cutoff_col: str | None = CUTOFF,
) -> dict[str, pl.DataFrame]:
    """Several point errors of `POINT_ERRORS` from ONE pandas copy of `df` (what the backtest needs per chunk):
    {name: frame per id (and window)}, each as `mae`, `mse`, ... would return it."""
    models = list(models)
    keys = _keys(df, id_col, cutoff_col)
    schema = {k: df.schema[k] for k in keys} | {m: pl.Float64 for m in models}
    if df.is_empty():
        return {name: pl.DataFrame(schema=schema) for name in names}
    frame = df.select(*keys, target_col, *models).to_pandas()

    def run(name: str) -> pl.DataFrame:
        out = pl.from_pandas(POINT_ERRORS[name](frame, models, id_col=id_col, target_col=target_col, cutoff_col=cutoff_col or CUTOFF))
        # Back from pandas: the window's dtype (datetime64 -> Date), nulls where a group had no value (NaN -> null).
        return out.select(*[pl.col(k).cast(t) for k, t in schema.items()]).sort(keys)

    return {name: run(name) for name in names}


def mae(df: pl.DataFrame, models: Sequence[str], id_col: str = ID, target_col: str = Y, cutoff_col: str | None = CUTOFF) -> pl.DataFrame:
    """Mean absolute error |y - model| per id (and window): `utilsforecast.losses.mae`, pandas path."""
    return point_errors(df, models, ("mae",), id_col, target_col, cutoff_col)["mae"]


def mse(df: pl.DataFrame, models: Sequence[str], id_col: str = ID, target_col: str = Y, cutoff_col: str | None = CUTOFF) -> pl.DataFrame:
    """Mean squared error (y - model)^2 per id (and window): `utilsforecast.losses.mse`, pandas path."""
    return point_errors(df, models, ("mse",), id_col, target_col, cutoff_col)["mse"]


def rmse(df: pl.DataFrame, models: Sequence[str], id_col: str = ID, target_col: str = Y, cutoff_col: str | None = CUTOFF) -> pl.DataFrame:
    """sqrt(MSE) per id (and window): `utilsforecast.losses.rmse`, pandas path. The backtest's `rmse` is
    sqrt(mean_w MSE_w): `mean_over_windows(mse(...), root=True)`, not the mean of this per window."""
    return point_errors(df, models, ("rmse",), id_col, target_col, cutoff_col)["rmse"]


def bias(df: pl.DataFrame, models: Sequence[str], id_col: str = ID, target_col: str = Y, cutoff_col: str | None = CUTOFF) -> pl.DataFrame:
    """Mean of model - y per id (and window), positive for an over-forecast: `utilsforecast.losses.bias`, pandas path."""
    return point_errors(df, models, ("bias",), id_col, target_col, cutoff_col)["bias"]


# --- scaled errors ----------------------------------------------------------------------------------------------------


def naive_scales(
    train: pl.DataFrame,
    cutoffs: pl.DataFrame,
    lag: int,
    id_col: str = ID,
    time_col: str = DS,
    target_col: str = Y,
    cutoff_col: str = CUTOFF,
) -> pl.DataFrame:
    """Per id and cutoff (the rows of `cutoffs`): `scale_abs` and `scale_sq`, the mean absolute and mean squared
    lag-`lag` difference of the training data up to and including the cutoff: the in-sample naive errors MASE and
    MSSE divide by (utilsforecast's `mase`/`msse` definition), from running sums in one pass over `train` instead of
    a copy of the training data per window. No difference yet (history up to the cutoff shorter than the lag):
    NaN; a constant history: 0.
    """
    diff = pl.col(target_col) - pl.col(target_col).shift(lag).over(id_col)
    running = (
        train.sort(id_col, time_col)
        .with_columns(_diff=diff)
        .with_columns(
            _abs=pl.col("_diff").abs().fill_null(0.0).cum_sum().over(id_col),
            _sq=(pl.col("_diff") ** 2).fill_null(0.0).cum_sum().over(id_col),
            _n=pl.col("_diff").is_not_null().cast(pl.Int64).cum_sum().over(id_col),
        )
        .select(id_col, pl.col(time_col).alias(cutoff_col), scale_abs=pl.col("_abs") / pl.col("_n"), scale_sq=pl.col("_sq") / pl.col("_n"))
    )
    return cutoffs.join(running, on=[id_col, cutoff_col], how="left")


def scaled(
    errors: pl.DataFrame,
    models: Sequence[str],
    scales: pl.DataFrame,
    scale_cols: Sequence[str],
    id_col: str = ID,
    cutoff_col: str | None = CUTOFF,
) -> pl.DataFrame:
    """`errors` (a `mae`/`mse` frame) divided by their id's (and window's) scale: the first of `scale_cols` whose
    ratio is finite, else the next, else null. A zero or NaN scale therefore never gives inf or NaN: it falls back
    (the backtest: the seasonal scale, then the lag-1 scale) and ends as null."""
    keys = _keys(errors, id_col, cutoff_col)

    def finite(e: pl.Expr) -> pl.Expr:
        return pl.when(e.is_finite()).then(e)

    joined = errors.join(scales.select(*keys, *scale_cols), on=keys, how="left", maintain_order="left")
    return joined.select(*keys, *[pl.coalesce(*[finite(pl.col(m) / pl.col(c)) for c in scale_cols]).alias(m) for m in models]).sort(keys)


def mase(
    df: pl.DataFrame,
    models: Sequence[str],
    scales: pl.DataFrame,
    id_col: str = ID,
    target_col: str = Y,
    cutoff_col: str | None = CUTOFF,
    scale_cols: Sequence[str] = ("scale_abs",),
) -> pl.DataFrame:
    """Mean absolute scaled error per id (and window): `mae` / the id's (window's) scale (`scaled`; `scales` from
    `naive_scales`, e.g. the seasonal scale joined to the lag-1 one with scale_cols=("scale_abs", "scale_abs_1"))."""
    return scaled(mae(df, models, id_col, target_col, cutoff_col), models, scales, scale_cols, id_col, cutoff_col)


def msse(
    df: pl.DataFrame,
    models: Sequence[str],
    scales: pl.DataFrame,
    id_col: str = ID,
    target_col: str = Y,
    cutoff_col: str | None = CUTOFF,
    scale_cols: Sequence[str] = ("scale_sq",),
) -> pl.DataFrame:
    """Mean squared scaled error per id (and window): `mse` / the squared-difference scale (`scaled`)."""
    return scaled(mse(df, models, id_col, target_col, cutoff_col), models, scales, scale_cols, id_col, cutoff_col)


def rmsse(
    df: pl.DataFrame,
    models: Sequence[str],
    scales: pl.DataFrame,
    id_col: str = ID,
    target_col: str = Y,
    cutoff_col: str | None = CUTOFF,
    scale_cols: Sequence[str] = ("scale_sq",),
) -> pl.DataFrame:
    """sqrt(MSSE) per id (and window). The backtest's `rmsse` is sqrt(mean_w MSSE_w): `mean_over_windows(msse(...),
    root=True)`."""
    out = msse(df, models, scales, id_col, target_col, cutoff_col, scale_cols)
    return out.with_columns(pl.col(m).sqrt() for m in models)


def mean_over_windows(
    per_window: pl.DataFrame,
    models: Sequence[str],
    id_col: IdCols = ID,
    cutoff_col: str = CUTOFF,
    *,
    root: bool = False,
    n_windows: str | None = None,
) -> pl.DataFrame:
    """Per id: the mean of each model's per-window values over its windows, added in cutoff order (nulls left out;
    null when all are); `root`: its square root (the backtest's rmse from MSE_w, rmsse from MSSE_w). `n_windows`:
    also a column of that name with the number of windows (Int64)."""
    ids = _ids(id_col)

    def mean(m: str) -> pl.Expr:
        e = in_row_order(pl.col(m)).list.mean()
        return (e.sqrt() if root else e).alias(m)

    extra = [pl.len().cast(pl.Int64).alias(n_windows)] if n_windows else []
    return per_window.sort(*ids, cutoff_col).group_by(ids, maintain_order=True).agg(*[mean(m) for m in models], *extra)


# --- quantiles: coverage and pinball loss -----------------------------------------------------------------------------


def coverage(
    df: pl.DataFrame,
    models: Sequence[str],
    id_col: IdCols = ID,
    target_col: str = Y,
    *,
    strict: bool = False,
    null_as_miss: bool = False,
) -> pl.DataFrame:
    """Per id, for each column of `models` (a quantile, a buffer, a level): the share of rows whose target is at or
    below it (`strict`: strictly below). A tie counts as covered unless `strict`.

    Nulls (target or column): left out of the share by default (the calibration table's coverage, the buffer
    coverage); `null_as_miss`: counted as not covered (the backtest's `coverage_q..`, over all lead-time steps).
    NaN compares as polars orders it, above every number: a NaN column covers, a NaN target is never covered.
    Integer counts divided once: the same bits in any row order.
    """
    ids = _ids(id_col)

    def share(m: str) -> pl.Expr:
        hit = pl.col(target_col) < pl.col(m) if strict else pl.col(target_col) <= pl.col(m)
        return (hit.sum() / pl.len() if null_as_miss else hit.mean()).alias(m)

    return df.group_by(ids).agg(*[share(m) for m in models]).sort(ids)


def pinball_loss(
    df: pl.DataFrame,
    models: Mapping[str, float] | Sequence[str],
    id_col: IdCols = ID,
    target_col: str = Y,
    *,
    cutoff_col: str | None = None,
    null_as_miss: bool = False,
    engine: Literal["polars", "sklearn"] = "polars",
) -> pl.DataFrame:
    """Per id, for each quantile column: the mean pinball (quantile) loss max(p (y - q), (p - 1)(y - q)), units of
    the target. `models`: {column: level p}, or the columns alone when named by `quantile_name` (q50, q97.5).

    engine "polars" (the backtest's `pinball_q..`): the losses added in row order; with `cutoff_col`, per window
    first (windows in cutoff order, rows in the frame's order: sort by step or date), then the window sums, then
    divided by the number of rows. `null_as_miss`: a null loss counts in that number (as a zero loss, the backtest);
    else it is left out. engine "sklearn" (the calibration table's `pinball_loss`): `sklearn.metrics.mean_pinball_loss`
    per id over the rows whose quantile is not null (no `cutoff_col`, no `null_as_miss`; a NaN raises, as sklearn
    does). An id without a row to score: null.
    """
    levels = dict(models) if isinstance(models, Mapping) else {m: quantile_level(m) for m in models}
    ids = _ids(id_col)
    if engine == "sklearn":
        if cutoff_col is not None or null_as_miss:
            raise ValueError("pinball_loss: engine='sklearn' scores all rows of an id at once, without cutoff_col or null_as_miss")
        return _sklearn_pinball(df, levels, ids, target_col)
    if engine != "polars":
        raise ValueError(f"pinball_loss: engine must be 'polars' or 'sklearn', got {engine!r}")

    def loss(q: str, p: float) -> pl.Expr:
        diff = pl.col(target_col) - pl.col(q)
        return pl.max_horizontal(p * diff, (p - 1) * diff)

    def count(q: str, p: float) -> pl.Expr:
        return pl.len() if null_as_miss else loss(q, p).is_not_null().sum()

    def mean(total: pl.Expr, n: pl.Expr) -> pl.Expr:
        return pl.when(n > 0).then(total / n)

    if cutoff_col is None:
        return (
            df.sort(ids, maintain_order=True)
            .group_by(ids, maintain_order=True)
            .agg(*[mean(in_row_order(loss(q, p)).list.sum(), count(q, p)).alias(q) for q, p in levels.items()])
        )
    per_window = (
        df.sort(*ids, cutoff_col, maintain_order=True)
        .group_by([*ids, cutoff_col], maintain_order=True)
        .agg(
            *[in_row_order(loss(q, p)).list.sum().alias(q) for q, p in levels.items()],
            *[count(q, p).alias(f"_n_{q}") for q, p in levels.items()],
        )
    )
    return per_window.group_by(ids, maintain_order=True).agg(
        *[mean(in_row_order(pl.col(q)).list.sum(), pl.col(f"_n_{q}").sum()).alias(q) for q in levels]
    )


def _sklearn_pinball(df: pl.DataFrame, levels: Mapping[str, float], ids: list[str], target_col: str) -> pl.DataFrame:
    from sklearn.metrics import mean_pinball_loss  # here: the forecasting workers import this module, never this path

    rows = []
    for key, group in df.group_by(ids, maintain_order=True):
        row: dict[str, Any] = dict(zip(ids, key, strict=True))
        for q, p in levels.items():
            ok = group.filter(pl.col(q).is_not_null())
            row[q] = float(mean_pinball_loss(ok[target_col].to_numpy(), ok[q].to_numpy(), alpha=p)) if ok.height else None
        rows.append(row)
    schema = {c: df.schema[c] for c in ids} | {q: pl.Float64 for q in levels}
    return pl.DataFrame(rows, schema=schema).sort(ids)


# --- run summaries ----------------------------------------------------------------------------------------------------


def finite_median(values: pl.Series) -> float | None:
    """The median of the finite values (nulls, NaN and +-inf left out); None when there is none."""
    finite = values.filter(values.is_finite())
    return float(finite.median()) if finite.len() else None


def error_summary(frame: pl.DataFrame, metric: str = "mase", weight_col: str | None = "annual_value") -> dict[str, float]:
    """The run's summary of a per-SKU error over the SKUs where it is finite: `median_{metric}`, `mean_{metric}`
    and, with `weight_col`, `weighted_{metric}` (weighted by that column's share of its total, the plain mean when
    the total is not positive). Empty when no SKU has a finite value. Sums run in the frame's row order."""
    rows = frame.filter(pl.col(metric).is_not_null() & pl.col(metric).is_finite())
    if not rows.height:
        return {}
    values = rows[metric]
    out = {f"median_{metric}": float(values.median()), f"mean_{metric}": float(values.mean())}
    if weight_col is not None:
        weights = rows[weight_col] / rows[weight_col].sum() if rows[weight_col].sum() > 0 else None
        out[f"weighted_{metric}"] = float((values * weights).sum()) if weights is not None else float(values.mean())
    return out
