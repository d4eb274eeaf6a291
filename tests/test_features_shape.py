"""features.shape: trend and seasonal strength; a hand-worked case, edge rules, a naive loop, an STL check."""

from __future__ import annotations

import datetime as dt
import statistics
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.shape import SHAPE_COLUMNS, shape_strength

START = dt.date(2024, 1, 1)


def panel_of(series: dict[str, list[float] | np.ndarray], start: dt.date = START) -> pl.DataFrame:
    """A daily panel: each series' values on consecutive days from `start`."""
    rows = [(uid, start + dt.timedelta(days=i), float(v)) for uid, ys in series.items() for i, v in enumerate(ys)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


def shape_row(ys: list[float] | np.ndarray, **kwargs) -> dict:
    rows = shape_strength(panel_of({"A": ys}), **kwargs).to_dicts()
    assert len(rows) == 1
    return rows[0]


def random_panel(n_series: int, *, seed: int, min_len: int = 1, max_len: int = 120) -> pl.DataFrame:
    """Series of random length with a random level, slope, weekly/monthly-ish season and gamma noise."""
    rng = np.random.default_rng(seed)
    series = {}
    for i in range(n_series):
        n = int(rng.integers(min_len, max_len + 1))
        t = np.arange(n)
        period = int(rng.choice([4, 7, 12]))
        ys = (
            rng.uniform(0, 100)
            + rng.normal(0, 0.5) * t
            + rng.uniform(0, 10) * np.sin(2 * np.pi * t / period)
            + rng.gamma(2.0, rng.uniform(0.1, 5), n)
        )
        if i % 25 == 0:
            ys = np.full(n, round(rng.uniform(0, 50), 1))  # some constant series
        series[f"S{i:04d}"] = ys
    return panel_of(series)


# ---------------------------------------------------------------- the naive reference


def naive_shape(ys: np.ndarray, m: int, min_seasons: int = 2) -> tuple[float | None, float | None, int]:
    """The same classical decomposition, one series at a time in numpy (the documented rules, written again)."""
    x = np.asarray(ys, dtype=float)
    x = x - x[0]
    n = x.size
    if m == 1:
        w = np.full(3, 1 / 3)
    elif m % 2:
        w = np.full(m, 1 / m)
    else:
        w = np.r_[0.5, np.ones(m - 1), 0.5] / m
    half = w.size // 2
    if n < w.size or n - 2 * half < 3:
        return None, None, 0
    trend = np.convolve(x, w, mode="valid")  # symmetric weights: convolution = correlation
    used = x[half : n - half]
    detrended = used - trend
    use_season = m >= 2 and used.size >= min_seasons * m
    if use_season:
        position = np.arange(half, n - half) % m
        raw = np.array([detrended[position == p].mean() for p in range(m)])
        season = (raw - raw.mean())[position]
    else:
        season = np.zeros(used.size)
    remainder = detrended - season
    tol = (np.abs(used).max() * 1e-10) ** 2

    def strength(denominator: np.ndarray) -> float:
        var_den = np.var(denominator, ddof=1)
        return 0.0 if var_den <= tol else max(0.0, 1.0 - np.var(remainder, ddof=1) / var_den)

    return strength(trend + remainder), (strength(season + remainder) if use_season else None), used.size


# ---------------------------------------------------------------- hand-worked cases


def test_hand_computed_classical_decomposition():
    # m = 3, 8 periods. T is the 3-MA, defined on periods 1..6 (one lost at each end).
    ys = [2, 7, 1, 5, 9, 5, 8, 12]
    F = Fraction
    trend = [F(10, 3), F(13, 3), F(5), F(19, 3), F(22, 3), F(25, 3)]  # (2+7+1)/3, (7+1+5)/3, ...
    assert trend == [F(sum(ys[t - 1 : t + 2]), 3) for t in range(1, 7)]
    detrended = [F(11, 3), F(-10, 3), F(0), F(8, 3), F(-7, 3), F(-1, 3)]  # y - T on periods 1..6
    assert detrended == [ys[t] - trend[t - 1] for t in range(1, 7)]
    # Position = period mod 3: position 1 <- periods 1, 4; position 2 <- 2, 5; position 0 <- 3, 6.
    raw = {0: (F(0) + F(-1, 3)) / 2, 1: (F(11, 3) + F(8, 3)) / 2, 2: (F(-10, 3) + F(-7, 3)) / 2}
    assert raw == {0: F(-1, 6), 1: F(19, 6), 2: F(-17, 6)}
    # Centred (FPP3): their mean is 1/18, so S = {0: -2/9, 1: 28/9, 2: -26/9}, summing to 0. (The strengths
    # are the same uncentred: S and R move by opposite constants, no variance changes.)
    season = {0: F(-2, 9), 1: F(28, 9), 2: F(-26, 9)}
    assert all(season[p] == raw[p] - F(1, 18) for p in range(3))
    assert sum(season.values()) == 0
    remainder = [F(5, 9), F(-4, 9), F(2, 9), F(-4, 9), F(5, 9), F(-1, 9)]
    assert remainder == [detrended[t - 1] - season[t % 3] for t in range(1, 7)]
    var_r = statistics.variance(remainder)  # 19/90
    var_tr = statistics.variance([t + r for t, r in zip(trend, remainder, strict=True)])  # 193/54
    var_sr = statistics.variance(detrended)  # 2009/270
    assert (var_r, var_tr, var_sr) == (F(19, 90), F(193, 54), F(2009, 270))
    f_t, f_s = 1 - var_r / var_tr, 1 - var_r / var_sr
    assert (f_t, f_s) == (F(908, 965), F(1952, 2009))  # 0.9409..., 0.9716...

    row = shape_row(ys, season_length=3)
    assert row["trend_strength"] == pytest.approx(float(f_t), abs=1e-12)
    assert row["seasonal_strength"] == pytest.approx(float(f_s), abs=1e-12)
    assert row["shape_periods"] == 6


def test_hand_computed_season_length_one_uses_a_3ma_trend_only():
    # T = 3-MA on periods 1..3: (0+3+3)/3 = 2, (3+3+6)/3 = 4, (3+6+9)/3 = 6; R = y - T = 1, -1, 0.
    # F_T = 1 - Var(R) / Var(y) = 1 - 1 / Var(3, 3, 6) = 1 - 1/3.
    row = shape_row([0.0, 3.0, 3.0, 6.0, 9.0], season_length=1)
    assert row["trend_strength"] == pytest.approx(2 / 3, abs=1e-12)
    assert row["seasonal_strength"] is None
    assert row["shape_periods"] == 3


def test_even_season_uses_the_2xm_moving_average():
    # 2x4-MA weights 1/8, 1/4, 1/4, 1/4, 1/8: it follows a straight line exactly and flattens a period-4 season.
    t = np.arange(24, dtype=float)
    pattern = np.array([3.0, -1.0, -4.0, 2.0])
    row = shape_row(5 + 2 * t + pattern[t.astype(int) % 4], season_length=4)
    assert row["shape_periods"] == 20  # 2 periods lost at each end
    assert row["trend_strength"] == pytest.approx(1.0, abs=1e-12)
    assert row["seasonal_strength"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- shapes


def test_trend_plus_season_plus_tiny_noise_is_strong_on_both():
    rng = np.random.default_rng(3)
    t = np.arange(48)
    pattern = np.array([6.0, -2.0, -8.0, 4.0])
    row = shape_row(20 + 1.5 * t + pattern[t % 4] + rng.normal(0, 0.05, t.size), season_length=4)
    assert row["trend_strength"] > 0.99
    assert row["seasonal_strength"] > 0.99


def test_pure_season_has_no_trend():
    t = np.arange(48)
    pattern = np.array([6.0, -2.0, -8.0, 4.0])
    exact = shape_row(20 + pattern[t % 4], season_length=4)
    # T + R is constant up to rounding: a zero denominator, so no trend (not a ratio of rounding noise).
    assert exact["trend_strength"] == 0.0
    assert exact["seasonal_strength"] == pytest.approx(1.0, abs=1e-12)
    noisy = shape_row(20 + pattern[t % 4] + np.random.default_rng(4).normal(0, 0.5, t.size), season_length=4)
    assert noisy["trend_strength"] < 0.3
    assert noisy["seasonal_strength"] > 0.9


def test_straight_line_has_no_season():
    row = shape_row(7.0 + 0.3 * np.arange(60), season_length=12)
    assert row["trend_strength"] == pytest.approx(1.0, abs=1e-12)
    assert row["seasonal_strength"] == 0.0


def test_white_noise_is_weak_on_both():
    rng = np.random.default_rng(5)
    out = shape_strength(panel_of({f"N{i}": 50 + rng.normal(0, 5, 365) for i in range(20)}), season_length=7)
    assert out["trend_strength"].max() < 0.3
    assert out["seasonal_strength"].max() < 0.3


@pytest.mark.parametrize("value", [0.0, 7.3, 0.1, 1e9 + 0.1])
@pytest.mark.parametrize("season_length", [1, 4, 7])
def test_constant_series_is_zero_zero_never_nan(value, season_length):
    row = shape_row([value] * 40, season_length=season_length)
    assert row["trend_strength"] == 0.0
    assert row["seasonal_strength"] == (None if season_length == 1 else 0.0)


def test_strengths_are_in_the_unit_interval():
    out = shape_strength(random_panel(300, seed=8), season_length=7)
    for column in ("trend_strength", "seasonal_strength"):
        values = out[column].drop_nulls()
        assert values.len() > 0
        assert values.is_nan().sum() == 0
        assert values.min() >= 0.0
        assert values.max() <= 1.0


# ---------------------------------------------------------------- short series and parameters


def test_too_short_for_the_season_falls_back_to_trend_only():
    # m = 4 (2x4-MA, 2 periods lost at each end): a season needs 2 x 4 = 8 periods with a trend, 12 in all.
    rng = np.random.default_rng(6)
    ys = 10 + 0.5 * np.arange(12) + np.array([3.0, -1.0, -4.0, 2.0] * 3) + rng.normal(0, 0.1, 12)
    full = shape_row(ys, season_length=4)
    assert full["seasonal_strength"] is not None
    assert full["shape_periods"] == 8
    short = shape_row(ys[:11], season_length=4)
    assert short["seasonal_strength"] is None
    assert short["shape_periods"] == 7
    # Trend-only: S = 0, so F_T = 1 - Var(y - T) / Var(y) over the periods with a trend.
    x = ys[:11]
    trend = np.convolve(x, np.array([1, 2, 2, 2, 1]) / 8, mode="valid")
    expected = 1 - np.var(x[2:-2] - trend, ddof=1) / np.var(x[2:-2], ddof=1)
    assert short["trend_strength"] == pytest.approx(max(0.0, expected), abs=1e-12)


def test_two_seasons_of_raw_length_are_not_enough():
    # 2m periods with even m leave one detrended value per position: S would absorb everything and both
    # strengths would be exactly 1 for white noise. The rule counts periods WITH a trend instead.
    noise = np.random.default_rng(7).normal(0, 1, 24)
    assert shape_row(noise, season_length=12)["seasonal_strength"] is None
    assert shape_row(noise[:8], season_length=4)["seasonal_strength"] is None
    assert shape_row(noise[:8], season_length=4, min_seasons=3)["seasonal_strength"] is None
    assert shape_row(noise[:16], season_length=4, min_seasons=3)["seasonal_strength"] is not None


def test_too_short_for_any_trend_is_null_with_zero_periods():
    # m = 4: the 2x4-MA needs 5 periods for one value; 3 values (7 periods) for a strength.
    for n in (1, 4, 5, 6):
        row = shape_row([1.0, 5.0, 2.0, 8.0, 3.0, 9.0][:n], season_length=4)
        assert (row["trend_strength"], row["seasonal_strength"], row["shape_periods"]) == (None, None, 0)
    row = shape_row([1.0, 5.0, 2.0, 8.0, 3.0, 9.0, 4.0], season_length=4)
    assert row["trend_strength"] is not None
    assert row["shape_periods"] == 3
    # m = 1: the 3-MA needs 5 periods for 3 values.
    assert shape_row([1.0, 2.0, 4.0, 3.0], season_length=1)["trend_strength"] is None
    assert shape_row([1.0, 2.0, 4.0, 3.0, 5.0], season_length=1)["shape_periods"] == 3


def test_season_length_one_never_has_a_seasonal_strength():
    out = shape_strength(random_panel(50, seed=9), season_length=1)
    assert out["seasonal_strength"].null_count() == out.height
    assert out.schema["seasonal_strength"] == pl.Float64
    assert out["trend_strength"].drop_nulls().len() > 40


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"season_length": 0}, "season_length"),
        ({"season_length": 1.5}, "season_length"),
        ({"season_length": True}, "season_length"),
        ({"season_length": 4, "min_seasons": 1}, "min_seasons"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        shape_strength(panel_of({"A": [1.0] * 20}), **kwargs)


# ---------------------------------------------------------------- frame contract


def test_output_schema_order_and_input_not_mutated():
    panel = panel_of({"B": np.arange(30.0), "A": np.arange(30.0) % 5, "C": [1.0]})
    shuffled = panel.sample(fraction=1.0, shuffle=True, seed=1)
    before = shuffled.clone()
    out = shape_strength(shuffled, season_length=5)
    assert_frame_equal(shuffled, before)
    assert out.columns == ["unique_id", *SHAPE_COLUMNS]
    assert out.schema == pl.Schema(
        {"unique_id": pl.String, "trend_strength": pl.Float64, "seasonal_strength": pl.Float64, "shape_periods": pl.Int64}
    )
    assert out["unique_id"].to_list() == ["A", "B", "C"]
    assert_frame_equal(out, shape_strength(panel, season_length=5))


def test_empty_panel():
    out = shape_strength(panel_of({}), season_length=7)
    assert out.height == 0
    assert out.columns == ["unique_id", *SHAPE_COLUMNS]


def test_custom_column_names_and_integer_target():
    panel = panel_of({"A": [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]}).rename({"unique_id": "sku", "ds": "week", "y": "units"})
    out = shape_strength(
        panel.with_columns(pl.col("units").cast(pl.Int64)), season_length=1, id_col="sku", time_col="week", target_col="units"
    )
    assert out.columns == ["sku", *SHAPE_COLUMNS]
    assert_frame_equal(out, shape_strength(panel, season_length=1, id_col="sku", time_col="week", target_col="units"))


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="'y'"):
        shape_strength(panel_of({"A": [1.0] * 10}).drop("y"), season_length=2)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_bad_target_value_names_the_column_and_series(bad):
    panel = panel_of({"A": [1.0] * 10, "B": [1.0] * 10}).with_columns(
        pl.when((pl.col("unique_id") == "B") & (pl.col("ds") == START)).then(bad).otherwise(pl.col("y")).alias("y")
    )
    with pytest.raises(ValueError, match=r"'y'.*\['B'\]"):
        shape_strength(panel, season_length=2)


def test_duplicate_periods_are_an_error_naming_the_series():
    panel = panel_of({"A": [1.0] * 10, "B": [2.0] * 10})
    with pytest.raises(ValueError, match=r"'ds'.*\['B'\]"):
        shape_strength(pl.concat([panel, panel.filter(pl.col("unique_id") == "B").head(1)]), season_length=2)


# ---------------------------------------------------------------- against a naive loop, STL, determinism


@pytest.mark.parametrize("season_length", [1, 2, 4, 7, 12])
def test_matches_a_naive_per_series_loop(season_length):
    panel = random_panel(200, seed=season_length)
    out = shape_strength(panel, season_length=season_length)
    assert out.height == 200
    by_series = {uid: group.sort("ds")["y"].to_numpy() for (uid,), group in panel.group_by("unique_id")}
    for row in out.iter_rows(named=True):
        f_t, f_s, periods = naive_shape(by_series[row["unique_id"]], season_length)
        assert row["shape_periods"] == periods, row
        for got, want in ((row["trend_strength"], f_t), (row["seasonal_strength"], f_s)):
            if want is None:
                assert got is None, row
            else:
                assert got == pytest.approx(want, abs=1e-9), row
    # Not vacuous: most series get strengths (the rest are too short or constant).
    assert out["trend_strength"].drop_nulls().len() > 150
    assert out["seasonal_strength"].drop_nulls().len() > (100 if season_length > 1 else -1)


def test_agrees_with_stl_on_which_series_are_seasonal_or_trending():
    """Sanity, not equality: statsforecast's STL-based strengths and ours fall on the same side of 0.3 / 0.6."""
    from statsforecast.mstl import mstl

    rng = np.random.default_rng(7)
    n, m = 96, 12
    t = np.arange(n)
    season = 10 * np.sin(2 * np.pi * t / m)
    cases = {
        "seasonal": 50 + season + rng.normal(0, 1, n),
        "trending": 10 + 0.8 * t + rng.normal(0, 1, n),
        "both": 10 + 0.8 * t + season + rng.normal(0, 1, n),
        "noise": 50 + rng.normal(0, 5, n),
        "random_walk": 50 + np.cumsum(rng.normal(0, 3, n)),
    }
    ours = {row["unique_id"]: row for row in shape_strength(panel_of(cases), season_length=m).iter_rows(named=True)}

    def side(value: float) -> str:
        return "strong" if value > 0.6 else "weak" if value < 0.3 else "unclear"

    for uid, ys in cases.items():
        stl = mstl(ys, m)
        remainder = stl["remainder"]
        stl_trend = max(0.0, 1 - np.var(remainder) / np.var(stl["trend"] + remainder))
        stl_season = max(0.0, 1 - np.var(remainder) / np.var(stl["seasonal"] + remainder))
        assert side(ours[uid]["trend_strength"]) == side(stl_trend) != "unclear", uid
        assert side(ours[uid]["seasonal_strength"]) == side(stl_season) != "unclear", uid
    assert side(ours["seasonal"]["seasonal_strength"]) == "strong"
    assert side(ours["trending"]["seasonal_strength"]) == "weak"


def test_deterministic_and_independent_of_row_order():
    panel = random_panel(2000, seed=11, min_len=20, max_len=80)
    first = shape_strength(panel, season_length=7)
    for _ in range(3):
        assert shape_strength(panel, season_length=7).equals(first)
    assert shape_strength(panel.sample(fraction=1.0, shuffle=True, seed=12), season_length=7).equals(first)


def test_level_does_not_change_the_strengths():
    # The strengths are shift-invariant. Each series is moved to start at 0 first, so a large level does not
    # drown the variation in the moving average's rounding. Values on a 1/1024 grid: adding 2^30 is exact.
    panel = random_panel(100, seed=13, min_len=30).with_columns((pl.col("y") * 1024).round() / 1024)
    lifted = panel.with_columns(pl.col("y") + 2.0**30)
    assert_frame_equal(shape_strength(lifted, season_length=7), shape_strength(panel, season_length=7), abs_tol=1e-12, rel_tol=0)
