"""evaluation.metrics, evaluation.windows, evaluation.coverage: hand-computed cases for every metric, and the same
bits as the code they replaced.

The published numbers must not move with the switch to `evaluation` (byte-identical Parquet), so the equality tests
compare the rewired functions with verbatim copies of the code before (`legacy_*`) by bit patterns (sign of zero and
NaN included), not `==` or `approx`: `forecasting.backtest._window_metrics` / `_aggregate_metrics` (mae, rmse, bias,
mase, rmsse, lead-time RMSE and bias, coverage_q.., pinball_q..), `evaluation.windows.window_errors` /
`window_demand`, `evaluation.coverage.pinball_losses` / `window_coverage` / `bootstrap_coverage`, the replay's
per-origin forecast, and the run summary's median MASE (`pipeline.tables.run_summary`, `summary_metrics`).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_pinball_loss

from evaluation import metrics as M

ID, DS, Y = "unique_id", "ds", "y"
QUANTILES = (0.5, 0.9, 0.95, 0.99)
QS = {M.quantile_name(p): p for p in QUANTILES}
START = dt.date(2025, 1, 1)


def same_bits(a: pl.DataFrame, b: pl.DataFrame, columns) -> None:
    """Column by column: the same nulls and the same float64 bit patterns (-0.0 != 0.0, NaN payloads too)."""
    assert a.height == b.height, (a.height, b.height)
    for c in columns:
        x, y = a[c].cast(pl.Float64), b[c].cast(pl.Float64)
        assert x.is_null().to_list() == y.is_null().to_list(), f"{c}: nulls differ"
        xb = x.drop_nulls().to_numpy().astype(np.float64).view(np.uint64)
        yb = y.drop_nulls().to_numpy().astype(np.float64).view(np.uint64)
        bad = np.flatnonzero(xb != yb)
        assert bad.size == 0, (
            f"{c}: {bad.size} values differ in their bits, e.g. {x.drop_nulls()[int(bad[0])]!r} vs {y.drop_nulls()[int(bad[0])]!r}"
        )


def bits(x: float) -> int:
    return int(np.array([x], dtype=np.float64).view(np.uint64)[0])


# --- hand-computed cases ----------------------------------------------------------------------------------------------


def frame(**cols) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame({ID: ["a"] * n, **cols})


def test_mae_mse_rmse_bias_by_hand():
    df = frame(y=[1.0, 2.0, 4.0], m=[2.0, 2.0, 2.0])  # errors m - y: 1, 0, -2
    assert M.mae(df, ["m"])["m"][0] == pytest.approx(1.0)
    assert M.mse(df, ["m"])["m"][0] == pytest.approx(5 / 3)
    assert M.rmse(df, ["m"])["m"][0] == pytest.approx(math.sqrt(5 / 3))
    assert M.bias(df, ["m"])["m"][0] == pytest.approx(-1 / 3)  # positive: over-forecast


def test_point_errors_are_per_window_when_there_is_a_cutoff_and_keep_its_dtype():
    df = pl.DataFrame(
        {
            ID: ["a"] * 4 + ["b"] * 2,
            "cutoff": [START] * 2 + [START + dt.timedelta(3)] * 2 + [START] * 2,
            Y: [1.0, 3, 2, 2, 5, 5],
            "m": [2.0, 2, 2, 4, 5, 5],
        }
    )
    out = M.mae(df, ["m"])
    assert out.columns == [ID, "cutoff", "m"] and out.schema["cutoff"] == pl.Date
    assert out.rows() == [("a", START, 1.0), ("a", START + dt.timedelta(3), 1.0), ("b", START, 0.0)]
    assert M.mae(df.drop("cutoff"), ["m"]).rows() == [("a", 1.0), ("b", 0.0)]  # no cutoff: per id


def test_point_errors_from_one_copy_are_the_single_metrics():
    df = pl.DataFrame({ID: ["a", "a", "b", "b", "b"], Y: [1.0, 2, 3, 0, 7], "m": [2.0, 2, 1, 0.5, 9], "n": [0.0, 1, 1, 1, 1]})
    both = M.point_errors(df, ["m", "n"], ("mae", "mse", "rmse", "bias"))
    for name, single in (("mae", M.mae), ("mse", M.mse), ("rmse", M.rmse), ("bias", M.bias)):
        same_bits(both[name], single(df, ["m", "n"]), ["m", "n"])
    assert M.mae(df.head(0), ["m"]).schema == pl.Schema({ID: pl.String, "m": pl.Float64})


def test_point_errors_leave_missing_forecasts_out_and_a_group_without_any_is_null():
    df = pl.DataFrame({ID: ["a", "a", "a", "b"], Y: [1.0, 2, 4, 1], "m": [2.0, None, float("nan"), None]})
    out = M.mae(df, ["m"])
    assert out["m"].to_list() == [1.0, None]  # null and NaN are skipped (pandas' skipna), like the backtest's


def test_point_errors_sum_with_compensation_like_pandas_not_left_to_right():
    """Why the point errors go through utilsforecast's pandas path: pandas' groupby mean compensates (Kahan), so a
    plain row-order mean of the same values (polars' list.mean) gives other last bits. The backtest has always
    published the compensated ones."""
    df = frame(y=[0.0] * 11, m=[1.0] + [1e-16] * 10)
    ours = M.bias(df, ["m"])["m"][0]
    assert ours == 0.09090909090909101 == math.fsum([1.0] + [1e-16] * 10) / 11
    assert df.select(pl.col("m").implode().list.mean()).item() == 0.09090909090909091


def test_naive_scales_by_hand():
    train = pl.DataFrame({ID: ["a"] * 4, DS: [START + dt.timedelta(i) for i in range(4)], Y: [1.0, 3.0, 2.0, 5.0]})
    cutoffs = pl.DataFrame({ID: ["a", "a"], "cutoff": [START + dt.timedelta(1), START + dt.timedelta(3)]})
    lag1 = M.naive_scales(train, cutoffs, 1).sort("cutoff")
    assert lag1["scale_abs"].to_list() == [2.0, 2.0]  # |3-1| ; (2 + 1 + 3) / 3
    assert lag1["scale_sq"].to_list() == pytest.approx([4.0, 14 / 3])
    lag2 = M.naive_scales(train, cutoffs, 2).sort("cutoff")
    assert math.isnan(lag2["scale_abs"][0])  # no lag-2 difference yet: 0 / 0
    assert lag2["scale_abs"][1] == 1.5  # (|2-1| + |5-3|) / 2


def test_mase_falls_back_to_the_next_scale_and_a_zero_scale_ends_as_null():
    df = pl.DataFrame({ID: ["a", "b", "c", "d"], Y: [1.0, 1.0, 1.0, 1.0], "m": [3.0, 3.0, 3.0, 1.0]})  # mae 2, 2, 2, 0
    scales = pl.DataFrame({ID: ["a", "b", "c", "d"], "scale_abs": [4.0, 0.0, float("nan"), 0.0], "scale_abs_1": [1.0, 0.5, 0.0, 0.0]})
    out = M.mase(df, ["m"], scales, scale_cols=("scale_abs", "scale_abs_1"))
    # a: 2/4; b: 2/0 = inf -> 2/0.5; c: NaN scale -> 2/0 = inf -> null; d: 0/0 = NaN twice -> null
    assert out["m"].to_list() == [0.5, 4.0, None, None]
    assert M.mase(df, ["m"], scales)["m"].to_list() == [0.5, None, None, None]  # one scale: no fallback


def test_msse_and_rmsse_divide_the_mse():
    df = frame(y=[1.0, 2.0, 4.0], m=[2.0, 2.0, 2.0])
    scales = pl.DataFrame({ID: ["a"], "scale_sq": [2.0]})
    assert M.msse(df, ["m"], scales)["m"][0] == pytest.approx(5 / 6)
    assert M.rmsse(df, ["m"], scales)["m"][0] == pytest.approx(math.sqrt(5 / 6))


def test_mean_over_windows_averages_in_cutoff_order_and_skips_nulls():
    per_window = pl.DataFrame({ID: ["a", "a", "a", "b"], "cutoff": [3, 1, 2, 1], "m": [4.0, 1.0, None, None], "n": [1.0, 2.0, 3.0, 4.0]})
    out = M.mean_over_windows(per_window, ["m", "n"], n_windows="n_windows")
    assert out.rows() == [("a", 2.5, 2.0, 3), ("b", None, 4.0, 1)]
    assert M.mean_over_windows(per_window, ["n"], root=True)["n"].to_list() == [math.sqrt(2.0), 2.0]


def test_coverage_counts_ties_as_covered_unless_strict():
    df = frame(y=[1.0, 2.0, 3.0, 4.0], q=[1.0, 1.0, 3.0, 5.0])  # tie, above, tie, below
    assert M.coverage(df, ["q"])["q"][0] == 0.75
    assert M.coverage(df, ["q"], strict=True)["q"][0] == 0.25


def test_coverage_nulls_are_left_out_or_count_as_misses():
    df = frame(y=[1.0, 1.0, 1.0, None], q=[2.0, 0.0, None, 5.0])
    assert M.coverage(df, ["q"])["q"][0] == 0.5  # 1 of the 2 scorable rows
    assert M.coverage(df, ["q"], null_as_miss=True)["q"][0] == 0.25  # 1 of 4 rows (the backtest's rule)
    assert M.coverage(frame(y=[1.0], q=[None]).cast({"q": pl.Float64}), ["q"])["q"][0] is None


def test_coverage_orders_nan_above_every_number_like_polars():
    """A NaN quantile covers (polars' order), a NaN actual is never covered: what the backtest and the calibration
    table did. utilsforecast's pandas `calibration` would count the NaN quantile as a miss."""
    df = frame(y=[1.0, float("nan")], q=[float("nan"), 1.0])
    assert M.coverage(df, ["q"])["q"][0] == 0.5


def test_pinball_loss_by_hand():
    df = frame(y=[1.0, 2.0, 3.0], q=[1.0, 3.0, 2.0])  # y - q: 0, -1, 1
    assert M.pinball_loss(df, {"q": 0.9})["q"][0] == pytest.approx((0 + 0.1 + 0.9) / 3)
    assert M.pinball_loss(df, {"q": 0.5})["q"][0] == pytest.approx(0.5 * 2 / 3)  # half the MAE
    assert M.pinball_loss(df, {"q": 0.9}, engine="sklearn")["q"][0] == pytest.approx(mean_pinball_loss([1, 2, 3], [1, 3, 2], alpha=0.9))
    named = frame(y=[1.0, 2.0, 3.0], q90=[1.0, 3.0, 2.0])
    assert M.pinball_loss(named, ["q90"])["q90"][0] == M.pinball_loss(named, {"q90": 0.9})["q90"][0]


def test_pinball_loss_of_an_exact_zero_forecast_is_negative_zero_in_polars_and_positive_in_sklearn():
    """An all-zero SKU forecast at zero: the backtest's max_horizontal(p * 0, (p - 1) * 0) is -0.0 (polars keeps the
    second of two equal values), sklearn's loss is +0.0. Parquet stores the sign: the two engines are not
    interchangeable without changing published bytes."""
    df = frame(y=[0.0, 0.0], q50=[0.0, 0.0])
    polars_loss = M.pinball_loss(df, ["q50"])["q50"][0]
    sklearn_loss = M.pinball_loss(df, ["q50"], engine="sklearn")["q50"][0]
    assert polars_loss == sklearn_loss == 0.0
    assert math.copysign(1.0, polars_loss) == -1.0 and math.copysign(1.0, sklearn_loss) == 1.0


def test_pinball_loss_nulls_are_left_out_or_count_as_zero_loss():
    df = frame(y=[1.0, 2.0], q50=[2.0, None])
    assert M.pinball_loss(df, ["q50"])["q50"][0] == 0.5
    assert M.pinball_loss(df, ["q50"], null_as_miss=True)["q50"][0] == 0.25
    assert M.pinball_loss(df, ["q50"], engine="sklearn")["q50"][0] == 0.5
    empty = frame(y=[1.0], q50=[None]).cast({"q50": pl.Float64})
    assert M.pinball_loss(empty, ["q50"])["q50"][0] is None
    assert M.pinball_loss(empty, ["q50"], engine="sklearn")["q50"][0] is None
    with pytest.raises(ValueError, match="sklearn"):
        M.pinball_loss(df, ["q50"], engine="sklearn", null_as_miss=True)


def test_quantile_names_and_levels_round_trip_and_are_the_forecasts_names():
    from forecasting.backtest import quantile_name

    assert quantile_name is M.quantile_name  # one home: the backtest names its columns with this one
    for p in (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 0.05, 0.123456):
        assert M.quantile_level(M.quantile_name(p)) == p
    with pytest.raises(ValueError):
        M.quantile_level("mase")


def test_finite_median_and_the_error_summary():
    s = pl.Series([3.0, None, 1.0, float("inf"), 2.0, float("nan"), 10.0])
    assert M.finite_median(s) == 2.5
    assert M.finite_median(pl.Series([None, float("inf")], dtype=pl.Float64)) is None
    recs = pl.DataFrame({"mase": [1.0, None, 3.0, float("inf")], "annual_value": [1.0, 5.0, 3.0, 7.0]})
    assert M.error_summary(recs) == {"median_mase": 2.0, "mean_mase": 2.0, "weighted_mase": pytest.approx(1 * 0.25 + 3 * 0.75)}
    assert M.error_summary(recs.with_columns(annual_value=pl.lit(0.0)))["weighted_mase"] == 2.0
    assert M.error_summary(recs.head(2).filter(pl.col("mase").is_null())) == {}


# --- the same bits as the code before the rewiring ----------------------------------------------------------------
# The pipeline now computes through evaluation.metrics / evaluation.windows / evaluation.coverage. The `legacy_*`
# functions below are verbatim copies of what it computed before (HEAD 10914e3: forecasting/backtest.py
# `_naive_scales`, `_window_metrics`, `_aggregate_metrics`; buffers/calibration.py `_per_window`, `window_coverage`,
# `bootstrap_coverage`, `pinball_losses`; evaluation/replay.py's per-origin forecast; pipeline/tables.py's median
# MASE and RMSSE), kept as the reference the published bytes were made with.


@pytest.fixture(scope="module")
def backtest_like():
    """A small random panel and a backtest of it in the pipeline's shapes: 7 SKUs x 90 days, 5 windows every 3 days
    after day 55 (one SKU with only 3 days of history before its first cutoff: no season-7 scale, the lag-1 one), 4
    steps; two models, four quantiles; per SKU a lead time (some fractional) and a review period. Edge cases: a flat
    SKU (zero scales), an all-zero SKU forecast at zero (pinball -0.0), exact ties at quantiles, a NaN and a null
    quantile and a NaN forecast of model M2."""
    rng = np.random.default_rng(7)
    ids = [f"s{i}" for i in range(7)]
    days = 90
    ys = {u: rng.poisson(rng.uniform(0.5, 8), days).astype(float) for u in ids}
    ys["s5"] = np.full(days, 3.0)  # flat: zero scales
    ys["s6"] = np.zeros(days)  # never sells
    train = pl.concat([pl.DataFrame({ID: u, DS: [START + dt.timedelta(d) for d in range(days)], Y: y}) for u, y in ys.items()]).filter(
        ~((pl.col(ID) == "s4") & (pl.col(DS) < START + dt.timedelta(52)))
    )  # s4: 3 days before the first cutoff
    lead = {u: (rng.choice([1.0, 2.5, 3.0, 0.4]), rng.choice([0.0, 1.0])) for u in ids}
    rows = []
    for u in ids:
        for w in range(5):
            cutoff = START + dt.timedelta(54 + 3 * w)
            for step in range(1, 5):
                ds = cutoff + dt.timedelta(step)
                y = float(ys[u][(ds - START).days])
                m1 = 0.0 if u == "s6" else float(max(y + rng.normal(0, 2), 0))
                m2 = float(rng.uniform(0, 9))
                rows.append({ID: u, DS: ds, "cutoff": cutoff, Y: y, "step": step, "M1": m1, "M2": m2})
    wide = pl.DataFrame(rows).with_columns(
        lead_time_periods=pl.col(ID).replace_strict({u: v[0] for u, v in lead.items()}),
        review_periods=pl.col(ID).replace_strict({u: v[1] for u, v in lead.items()}),
    )
    wide = wide.filter(pl.col("step") <= (pl.col("lead_time_periods") + pl.col("review_periods")).ceil().clip(1, None))
    wide = wide.with_columns(
        M2=pl.when((pl.col(ID) == "s1") & (pl.col("step") == 2) & (pl.col("cutoff") == START + dt.timedelta(57)))
        .then(float("nan"))
        .otherwise("M2")
    )
    wide = wide.sort(ID, "cutoff", DS)
    index = [ID, DS, "cutoff", Y, "step", "lead_time_periods", "review_periods"]
    frames = []
    for m in ("M1", "M2"):
        spread = rng.uniform(0, 3, wide.height)
        base = wide.select(*index, pl.lit(m).alias("model"), pl.col(m).alias("forecast"))
        frames.append(
            base.with_columns(
                *[
                    (pl.col("forecast") + pl.Series(spread * (p - 0.5) * 4)).round(0 if m == "M1" else 3).clip(0.0, None).alias(q)
                    for q, p in QS.items()
                ]
            )
        )
    cv = pl.concat(frames)
    # Ties: half of M1's q50 equal the actual; one null and one NaN quantile in M2.
    cv = cv.with_columns(
        q50=pl.when((pl.col("model") == "M1") & (pl.int_range(pl.len()) % 2 == 0)).then(pl.col(Y)).otherwise("q50"),
        q95=pl.when((pl.col("model") == "M2") & (pl.col(ID) == "s2") & (pl.col("step") == 1)).then(None).otherwise("q95"),
        q90=pl.when((pl.col("model") == "M2") & (pl.col(ID) == "s3") & (pl.col("step") == 1)).then(float("nan")).otherwise("q90"),
    )
    cv = cv.with_columns(pl.when(pl.col(ID) == "s6").then(0.0).otherwise(pl.col(q)).alias(q) for q in QS)
    on_lead_time = pl.col("step") <= pl.col("lead_time_periods").ceil().clip(1, None)
    plan = wide.select(ID, "lead_time_periods", "review_periods").unique().sort(ID)
    return {"train": train, "wide": wide, "cv": cv, "on_lead_time": on_lead_time, "plan": plan, "models": ["M1", "M2"]}


def legacy_lead_time_weights(step: pl.Expr, lead_time_periods: pl.Expr) -> pl.Expr:
    return (lead_time_periods - (step - 1)).clip(0.0, 1.0)


def legacy_naive_scales(train: pl.DataFrame, cutoffs: pl.DataFrame, lag: int) -> pl.DataFrame:
    diff = pl.col(Y) - pl.col(Y).shift(lag).over(ID)
    running = (
        train.sort(ID, DS)
        .with_columns(_diff=diff)
        .with_columns(
            _abs=pl.col("_diff").abs().fill_null(0.0).cum_sum().over(ID),
            _sq=(pl.col("_diff") ** 2).fill_null(0.0).cum_sum().over(ID),
            _n=pl.col("_diff").is_not_null().cast(pl.Int64).cum_sum().over(ID),
        )
        .select(ID, pl.col(DS).alias("cutoff"), scale_abs=pl.col("_abs") / pl.col("_n"), scale_sq=pl.col("_sq") / pl.col("_n"))
    )
    return cutoffs.join(running, on=[ID, "cutoff"], how="left")


def legacy_window_metrics(cv: pl.DataFrame, train: pl.DataFrame, models, season_length: int) -> pl.DataFrame:
    from utilsforecast.losses import bias, mae, mse

    key = [ID, "cutoff"]
    cv_pd = cv.select(ID, DS, "cutoff", Y, *models).to_pandas()

    def loss(fn, name):
        return pl.from_pandas(fn(cv_pd, models)).unpivot(index=key, on=list(models), variable_name="model", value_name=name)

    out = loss(mae, "mae").join(loss(mse, "mse"), on=[*key, "model"]).join(loss(bias, "bias"), on=[*key, "model"])
    out = out.with_columns(pl.col("cutoff").cast(cv.schema["cutoff"]))
    cutoffs = cv.select(ID, "cutoff").unique()
    seasonal, naive = legacy_naive_scales(train, cutoffs, season_length), legacy_naive_scales(train, cutoffs, 1)
    scales = seasonal.join(naive, on=key, suffix="_1")
    finite = lambda e: pl.when(e.is_finite()).then(e)  # noqa: E731
    return (
        out.join(scales, on=key, how="left")
        .with_columns(
            mase=pl.coalesce(finite(pl.col("mae") / pl.col("scale_abs")), finite(pl.col("mae") / pl.col("scale_abs_1"))),
            msse=pl.coalesce(finite(pl.col("mse") / pl.col("scale_sq")), finite(pl.col("mse") / pl.col("scale_sq_1"))),
        )
        .drop("scale_abs", "scale_sq", "scale_abs_1", "scale_sq_1")
    )


def legacy_aggregate_metrics(window_metrics: pl.DataFrame, cv: pl.DataFrame, quantiles=()) -> pl.DataFrame:
    q = M.quantile_name
    per_model = (
        window_metrics.sort(ID, "model", "cutoff")
        .group_by(ID, "model", maintain_order=True)
        .agg(
            mae=M.in_row_order(pl.col("mae")).list.mean(),
            rmse=M.in_row_order(pl.col("mse")).list.mean().sqrt(),
            bias=M.in_row_order(pl.col("bias")).list.mean(),
            mase=M.in_row_order(pl.col("mase")).list.mean(),
            rmsse=M.in_row_order(pl.col("msse")).list.mean().sqrt(),
            n_windows=pl.len().cast(pl.Int64),
        )
    )
    lead, review_lead = pl.col("lead_time_periods"), pl.col("lead_time_periods") + pl.col("review_periods")
    w, wr = legacy_lead_time_weights(pl.col("step"), lead), legacy_lead_time_weights(pl.col("step"), review_lead)
    error = pl.col("forecast") - pl.col(Y)
    on_lead_time = pl.col("step") <= lead.ceil().clip(1, None)
    per_window = (
        cv.sort(ID, "model", "cutoff", "step")
        .group_by(ID, "model", "cutoff", maintain_order=True)
        .agg(
            lead_error=M.in_row_order(w * error).list.sum(),
            weight=M.in_row_order(w).list.sum(),
            review_lead_error=M.in_row_order(wr * error).list.sum(),
            review_weight=M.in_row_order(wr).list.sum(),
            lead_time_periods=lead.first(),
            review_lead_time_periods=review_lead.first(),
            **{f"covered_{q(p)}": (pl.col(Y) <= pl.col(q(p))).filter(on_lead_time).sum() for p in quantiles},
            **{
                f"_pinball_{q(p)}": M.in_row_order(
                    pl.max_horizontal(p * (pl.col(Y) - pl.col(q(p))), (p - 1) * (pl.col(Y) - pl.col(q(p)))).filter(on_lead_time)
                ).list.sum()
                for p in quantiles
            },
            n_steps=on_lead_time.sum(),
        )
    )
    cumulative = per_window.group_by(ID, "model", maintain_order=True).agg(
        lead_time_rmse=M.in_row_order(pl.col("lead_error") ** 2).list.mean().sqrt()
        * (pl.col("lead_time_periods") / pl.col("weight")).first().sqrt(),
        lead_time_bias=M.in_row_order(pl.col("lead_error")).list.mean(),
        review_lead_time_rmse=M.in_row_order(pl.col("review_lead_error") ** 2).list.mean().sqrt()
        * (pl.col("review_lead_time_periods") / pl.col("review_weight")).first().sqrt(),
        **{f"coverage_{q(p)}": pl.col(f"covered_{q(p)}").sum() / pl.col("n_steps").sum() for p in quantiles},
        **{f"pinball_{q(p)}": M.in_row_order(pl.col(f"_pinball_{q(p)}")).list.sum() / pl.col("n_steps").sum() for p in quantiles},
    )
    return per_model.join(cumulative, on=[ID, "model"], how="left")


def legacy_per_window(cv: pl.DataFrame, plan: pl.DataFrame, value: pl.Expr, name: str) -> pl.DataFrame:
    lead = pl.col("lead_time_periods")
    return (
        cv.join(plan.select(ID, "lead_time_periods", "review_periods"), on=ID)
        .sort(ID, "cutoff", "step")
        .group_by(ID, "cutoff", maintain_order=True)
        .agg(
            M.in_row_order(legacy_lead_time_weights(pl.col("step"), lead) * value).list.sum().alias("lead_time"),
            M.in_row_order(legacy_lead_time_weights(pl.col("step"), lead + pl.col("review_periods")) * value)
            .list.sum()
            .alias("review_lead_time"),
        )
        .with_columns(from_latest=pl.col("cutoff").rank("ordinal", descending=True).over(ID).cast(pl.Int64) - 1)
        .unpivot(index=[ID, "cutoff", "from_latest"], on=["lead_time", "review_lead_time"], variable_name="exposure", value_name=name)
        .sort(ID, "exposure", "cutoff")
    )


def legacy_window_coverage(errors: pl.DataFrame, sizing: pl.DataFrame) -> pl.DataFrame:
    from scipy import stats

    lead = errors.filter(pl.col("exposure") == "lead_time").join(sizing, on=ID)
    sums = lead.group_by([ID]).agg(ss=M.in_row_order(pl.col("error") ** 2).list.sum(), n=pl.len())
    sigma = ((pl.col("ss") - pl.col("error") ** 2).clip(0.0, None) / (pl.col("n") - 1)).sqrt()
    lead = lead.join(sums, on=ID).filter(pl.col("n") >= 3).with_columns(sigma=sigma)
    z = {c: stats.norm.ppf(lead[c].to_numpy()) for c in ("service_level_target", "calibrated_service_level")}
    within = lead.with_columns(
        before=pl.col("error") <= pl.Series(z["service_level_target"]) * pl.col("sigma"),
        after=pl.col("error") <= pl.Series(z["calibrated_service_level"]) * pl.col("sigma"),
    )
    return (
        within.filter(pl.col("ss") > 0)
        .group_by(ID)
        .agg(buffer_coverage_before=pl.col("before").mean(), buffer_coverage_after=pl.col("after").mean())
        .sort(ID)
    )


def legacy_bootstrap_coverage(shares: pl.DataFrame, sizing: pl.DataFrame) -> pl.DataFrame:
    lead = shares.filter(pl.col("exposure") == "lead_time").join(sizing, on=ID)
    return (
        lead.group_by(ID)
        .agg(
            buffer_coverage_before=(pl.col("share_below") < pl.col("service_level_target")).mean(),
            buffer_coverage_after=(pl.col("share_below") < pl.col("calibrated_service_level")).mean(),
        )
        .sort(ID)
    )


def legacy_pinball_losses(cv: pl.DataFrame, classes: pl.DataFrame, quantiles) -> pl.DataFrame:
    rows = []
    data = cv.join(classes, on=ID)
    for (cls,), group in sorted(data.group_by("demand_class"), key=lambda g: g[0]):
        for p in quantiles:
            name = M.quantile_name(p)
            ok = group.filter(pl.col(name).is_not_null())
            if ok.height:
                loss = mean_pinball_loss(ok["y"].to_numpy(), ok[name].to_numpy(), alpha=p)
                rows.append(
                    {"demand_class": cls, "quantile": name, "pinball_loss": float(loss), "coverage": float((ok["y"] <= ok[name]).mean())}
                )
    return pl.DataFrame(rows, schema={"demand_class": pl.String, "quantile": pl.String, "pinball_loss": pl.Float64, "coverage": pl.Float64})


def same_frame(ours: pl.DataFrame, ref: pl.DataFrame) -> None:
    """The same columns in the same order with the same dtypes, the same rows in the same order, every float column
    the same bits."""
    assert ours.schema == ref.schema, (ours.schema, ref.schema)
    floats = [c for c, t in ref.schema.items() if t.is_float()]
    others = [c for c in ref.columns if c not in floats]
    assert ours.select(others).equals(ref.select(others))
    same_bits(ours, ref, floats)


def test_window_metrics_are_the_legacy_ones_bit_for_bit(backtest_like):
    from forecasting.backtest import _window_metrics

    b = backtest_like
    wide = b["wide"].filter(b["on_lead_time"])
    ref = legacy_window_metrics(wide, b["train"], b["models"], 7).sort(ID, "cutoff", "model")
    ours = _window_metrics(wide, b["train"], b["models"], 7).sort(ID, "cutoff", "model")
    same_frame(ours, ref)
    # The edge cases are in there: zero scales (null mase), the lag-1 fallback, a NaN forecast left out.
    assert ours.filter(pl.col(ID) == "s5")["mase"].is_null().all()
    assert ours.filter(pl.col(ID) == "s4")["mase"].is_not_null().all()


@pytest.mark.parametrize("max_step", [4, 2], ids=["full horizon", "horizon capped below the lead time"])
def test_aggregate_metrics_are_the_legacy_ones_bit_for_bit(backtest_like, max_step):
    """The whole per-SKU-and-model row of the backtest metrics: the window means, the lead-time RMSE and bias (with a
    horizon capped below L + R: the factor sqrt(L / sum of weights) is not 1), coverage and pinball; column order and
    dtypes too."""
    from forecasting.backtest import _aggregate_metrics, _window_metrics

    b = backtest_like
    cv, wide = b["cv"].filter(pl.col("step") <= max_step), b["wide"].filter(b["on_lead_time"] & (pl.col("step") <= max_step))
    ref = legacy_aggregate_metrics(legacy_window_metrics(wide, b["train"], b["models"], 7), cv, QUANTILES)
    ours = _aggregate_metrics(_window_metrics(wide, b["train"], b["models"], 7), cv, QUANTILES)
    same_frame(ours, ref)
    no_quantiles = _aggregate_metrics(_window_metrics(wide, b["train"], b["models"], 7), cv)
    same_frame(no_quantiles, legacy_aggregate_metrics(legacy_window_metrics(wide, b["train"], b["models"], 7), cv))
    # The edge cases are in there: the all-zero SKU's pinball is -0.0, a NaN quantile gives a NaN pinball.
    zero = ours.filter(pl.col(ID) == "s6")["pinball_q50"].to_list()
    assert all(x == 0.0 and math.copysign(1.0, x) == -1.0 for x in zero)
    assert ours.filter((pl.col(ID) == "s3") & (pl.col("model") == "M2"))["pinball_q90"].is_nan().all()


def test_pooled_pinball_differs_from_the_per_window_sum_only_in_order(backtest_like):
    """The backtest adds each window's losses, then the windows: `cutoff_col` reproduces that; the flat row-order sum
    is the same number up to the last bits (and equal here or not, never more than rounding)."""
    b = backtest_like
    scored = b["cv"].filter(b["on_lead_time"] & (pl.col("model") == "M1")).sort(ID, "cutoff", "step")
    windows = M.pinball_loss(scored, QS, cutoff_col="cutoff", null_as_miss=True)
    flat = M.pinball_loss(scored, QS, null_as_miss=True)
    for q in QS:
        np.testing.assert_allclose(windows[q].to_numpy(), flat[q].to_numpy(), rtol=1e-13)


def test_calibration_tables_pinball_and_coverage_are_the_legacy_ones_bit_for_bit(backtest_like):
    from evaluation.coverage import pinball_losses

    b = backtest_like
    chosen = b["cv"].filter(pl.col("model") == "M1").sort(ID, "cutoff", DS)
    chosen = chosen.with_columns(q99=pl.when((pl.col(ID) == "s0") & (pl.col("step") == 1)).then(None).otherwise("q99"))
    classes = pl.DataFrame(
        {ID: [f"s{i}" for i in range(7)], "demand_class": ["smooth", "erratic", "smooth", "lumpy", "erratic", "smooth", "lumpy"]}
    )
    quantiles = (0.95, 0.5, 0.99, 0.9)  # not sorted: the rows follow the configured order
    same_frame(pinball_losses(chosen, classes, quantiles), legacy_pinball_losses(chosen, classes, quantiles))
    # A quantile without a scorable row in a class has no row; no quantile or no row at all: an empty table.
    chosen = chosen.with_columns(q99=pl.when(pl.col(ID).is_in(["s1", "s4"])).then(None).otherwise("q99"))
    same_frame(pinball_losses(chosen, classes, quantiles), legacy_pinball_losses(chosen, classes, quantiles))
    same_frame(pinball_losses(chosen, classes, []), legacy_pinball_losses(chosen, classes, []))
    same_frame(pinball_losses(chosen.head(0), classes, quantiles), legacy_pinball_losses(chosen.head(0), classes, quantiles))


def test_sklearn_and_polars_pinball_agree_to_rounding_but_not_to_the_bit(backtest_like):
    """Why the calibration table keeps engine='sklearn' and the backtest engine='polars': numpy sums pairwise, polars
    left to right, and a zero loss has opposite signs. Both are 'sklearn's mean pinball loss' to 1e-12."""
    b = backtest_like
    scored = b["cv"].filter(b["on_lead_time"] & (pl.col("model") == "M1")).sort(ID, "cutoff", "step")
    a = M.pinball_loss(scored, QS)
    s = M.pinball_loss(scored, QS, engine="sklearn")
    for q in QS:
        np.testing.assert_allclose(a[q].to_numpy(), s[q].to_numpy(), rtol=1e-12, atol=0)
    assert any(bits(x) != bits(y) for q in QS for x, y in zip(a[q], s[q], strict=True))  # s6: -0.0 vs +0.0 at least


def test_window_errors_and_demand_are_the_legacy_ones_bit_for_bit(backtest_like):
    from evaluation.windows import window_demand, window_errors

    b = backtest_like
    chosen = b["cv"].filter(pl.col("model") == "M1")
    same_frame(window_errors(chosen, b["plan"]), legacy_per_window(chosen, b["plan"], pl.col(Y) - pl.col("forecast"), "error"))
    same_frame(window_demand(chosen, b["plan"]), legacy_per_window(chosen, b["plan"], pl.col(Y), "actual"))


def test_buffer_coverage_is_the_legacy_one_bit_for_bit(backtest_like):
    from evaluation.coverage import window_coverage
    from evaluation.windows import window_errors

    b = backtest_like
    errors = window_errors(b["cv"].filter(pl.col("model") == "M1"), b["plan"])
    sizing = pl.DataFrame({ID: [f"s{i}" for i in range(7)], "service_level_target": [0.9, 0.95, 0.5, 0.8, 0.99, 0.9, 0.9]}).with_columns(
        calibrated_service_level=(pl.col("service_level_target") + 0.02).clip(None, 0.999)
    )
    ours = window_coverage(errors, sizing)
    same_frame(ours, legacy_window_coverage(errors, sizing))
    assert ours.height >= 5  # s5 (flat) and s6 (never sells) may have no error
    few = errors.filter(pl.col("from_latest") < 2)  # fewer than 3 windows: no row
    same_frame(window_coverage(few, sizing), legacy_window_coverage(few, sizing))


def test_bootstrap_coverage_is_the_legacy_one_bit_for_bit():
    from evaluation.coverage import bootstrap_coverage
    from evaluation.windows import LEAD_TIME, REVIEW_LEAD_TIME

    rng = np.random.default_rng(3)
    n = 60
    shares = pl.DataFrame(
        {
            ID: rng.choice(["a", "b", "c"], n),
            "exposure": rng.choice([LEAD_TIME, REVIEW_LEAD_TIME], n),
            "share_below": np.round(rng.uniform(0, 1, n), 1),  # ties with the levels
        }
    )
    sizing = pl.DataFrame({ID: ["a", "b", "c"], "service_level_target": [0.9, 0.5, 0.7], "calibrated_service_level": [0.95, 0.6, 0.7]})
    same_frame(bootstrap_coverage(shares, sizing), legacy_bootstrap_coverage(shares, sizing))


def test_the_backtests_lead_time_error_is_not_the_negated_window_error(backtest_like):
    """The backtest sums w_t (forecast - y) itself (`exposure_sums`) rather than negating `window_errors` (y - forecast):
    the same numbers, but an exact-zero window sum would turn from +0.0 into -0.0 (the all-zero SKU's lead_time_bias)."""
    from evaluation.windows import LEAD_TIME, window_errors
    from forecasting.backtest import _aggregate_metrics, _window_metrics

    b = backtest_like
    window_metrics = _window_metrics(b["wide"].filter(b["on_lead_time"]), b["train"], b["models"], 7)
    ours = _aggregate_metrics(window_metrics, b["cv"], QUANTILES).filter(pl.col("model") == "M1").sort(ID)
    negated = M.mean_over_windows(
        window_errors(b["cv"].filter(pl.col("model") == "M1"), b["plan"])
        .filter(pl.col("exposure") == LEAD_TIME)
        .with_columns(-pl.col("error")),
        ["error"],
    )
    assert (negated["error"] == ours["lead_time_bias"]).all()
    flipped = [(x, y) for x, y in zip(negated["error"], ours["lead_time_bias"], strict=True) if bits(x) != bits(y)]
    assert flipped and all(x == y == 0.0 and math.copysign(1.0, y) == 1.0 for x, y in flipped)


def test_the_replays_forecast_per_origin_is_the_legacy_sum_bit_for_bit(backtest_like):
    """evaluation.replay.forecast_levels sums each origin's forecast over R + L with `exposure_sums`."""
    from evaluation.windows import REVIEW_LEAD_TIME, exposure_sums

    b = backtest_like
    chosen = b["cv"].filter(pl.col("model") == "M2").drop("lead_time_periods", "review_periods")  # as published
    x = b["plan"].with_columns(other=pl.lit(1.0))
    weight = legacy_lead_time_weights(pl.col("step"), pl.col("lead_time_periods") + pl.col("review_periods"))
    ref = (
        chosen.join(x.select(ID, "lead_time_periods", "review_periods"), on=ID)
        .sort(ID, "cutoff", "step")
        .group_by(ID, "cutoff", maintain_order=True)
        .agg(_forecast=M.in_row_order(weight * pl.col("forecast").clip(0.0, None)).list.sum())
    )
    ours = exposure_sums(chosen, pl.col("forecast").clip(0.0, None), plan=x).select(ID, "cutoff", _forecast=REVIEW_LEAD_TIME)
    same_frame(ours, ref)


def test_median_mase_of_the_run_summary_and_of_the_tracked_metrics(backtest_like):
    """run_summary (manifest, CLI) and summary_metrics (MLflow) take the median of the finite MASEs
    (`finite_median`, `error_summary`): the legacy formulas' bits (run_summary used recs["mase"].median(), the same
    whenever no MASE is infinite; the backtest leaves none: a window's MASE is finite or null)."""
    from pipeline.tables import run_summary, summary_metrics

    rng = np.random.default_rng(5)
    n = 41
    mase = rng.lognormal(0, 0.6, n)
    mase = [None if i % 7 == 0 else float(v) for i, v in enumerate(mase)]
    recs = pl.DataFrame(
        {
            "sku_id": [f"k{i:02d}" for i in range(n)],
            "location_id": ["L1"] * n,
            "demand_class": rng.choice(["smooth", "erratic"], n),
            "volatility_class": "stable",
            "policy": "JIT",
            "abc_class": "A",
            "life_cycle": "mature",
            "safety_stock_value": rng.uniform(0, 100, n),
            "holding_cost_per_year": rng.uniform(0, 10, n),
            "mase": pl.Series(mase, dtype=pl.Float64),
            "annual_value": rng.uniform(0, 1000, n),
            "service_level_target": 0.95,
            "service_level_measure": "cycle",
            "safety_stock_units": 1.0,
            "simulated_cycle_service_level": 0.9,
            "simulated_fill_rate": 0.95,
            "capital_tied_up": 1.0,
            "capital_at_risk": 1.0,
            "textbook_safety_stock_value": 1.0,
            "calibration_status": "calibrated",
        }
    )
    summary = run_summary(recs)
    assert bits(summary["median_mase"]) == bits(recs["mase"].median())
    rmsse = pl.Series([1.5, None, 0.25, 0.75], dtype=pl.Float64)
    tables = {
        "recommendations": recs,
        "backtest_metrics": pl.DataFrame({"sku_id": ["k00"] * 4, "location_id": ["L1"] * 4, "selected": [True] * 4, "rmsse": rmsse}),
    }
    tracked = summary_metrics(summary | {"series_not_planned": 0, "changes": {}}, {}, tables)
    finite = recs.filter(pl.col("mase").is_not_null() & pl.col("mase").is_finite())
    weights = finite["annual_value"] / finite["annual_value"].sum()
    legacy = {
        "median_mase": float(finite["mase"].median()),
        "mean_mase": float(finite["mase"].mean()),
        "weighted_mase": float((finite["mase"] * weights).sum()),
        "median_rmsse": float(rmsse.drop_nulls().median()),
    }
    for k, v in legacy.items():
        assert bits(tracked[k]) == bits(v), k
    # An infinite MASE (the backtest makes none) no longer moves the manifest's median: both summaries leave it out.
    with_inf = recs.with_columns(mase=pl.when(pl.col("sku_id") == "k01").then(float("inf")).otherwise("mase"))
    median = run_summary(with_inf)["median_mase"]
    assert median == M.finite_median(with_inf["mase"]) == recs.filter(pl.col("sku_id") != "k01")["mase"].median()
    assert median != with_inf["mase"].median()  # the legacy median counted the inf
    no_mase = recs.with_columns(mase=pl.lit(None, pl.Float64))
    assert run_summary(no_mase)["median_mase"] is None
    assert "median_mase" not in summary_metrics(
        summary | {"series_not_planned": 0, "changes": {}}, {}, tables | {"recommendations": no_mase}
    )


def test_metrics_and_windows_import_no_other_buffercast_package():
    """forecasting/ and buffers/ import evaluation.metrics and evaluation.windows: those must not import them back
    (nor anything above), and `import evaluation` must not pull in the replay."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, evaluation, evaluation.metrics, evaluation.windows, evaluation.coverage; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'forecasting', 'buffers', 'features', 'pipeline', 'configs', 'flows'}),"
        " sorted(m for m in sys.modules if m.startswith('evaluation.')))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    assert out == "[] ['evaluation.coverage', 'evaluation.metrics', 'evaluation.windows']"
