"""features.outliers: robust outlier flags on non-zero demand, their summary and capping."""

from __future__ import annotations

import datetime as dt
import statistics

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.outliers import SUMMARY_COLUMNS, cap_outliers, flag_outliers, outlier_summary

START = dt.date(2024, 1, 1)


def panel_of(series: dict[str, list[float]], start: dt.date = START) -> pl.DataFrame:
    """A daily panel: each series' values on consecutive days from `start`."""
    rows = [(uid, start + dt.timedelta(days=i), float(v)) for uid, ys in series.items() for i, v in enumerate(ys)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


def flags_of(ys: list[float], **kwargs) -> tuple[float | None, list[bool]]:
    out = flag_outliers(panel_of({"A": ys}), **{"k": 5.0, **kwargs})
    thresholds = out["outlier_threshold"].unique().to_list()
    assert len(thresholds) == 1
    return thresholds[0], out["is_outlier"].to_list()


# ---------------------------------------------------------------- hand cases


def test_hand_computed_mad_case():
    ys = [0, 2, 3, 0, 4, 2, 3, 40, 0, 3]
    # sizes 2, 3, 4, 2, 3, 40, 3: median 3; |deviations| 1, 0, 1, 1, 0, 37, 0: MAD 1
    # threshold = 3 + 5 x 1.4826 x 1 = 10.413
    out = flag_outliers(panel_of({"A": ys}), k=5.0)
    assert out.columns == ["unique_id", "ds", "y", "outlier_threshold", "is_outlier"]
    assert out.schema["outlier_threshold"] == pl.Float64
    assert out.schema["is_outlier"] == pl.Boolean
    assert out["outlier_threshold"].to_list() == pytest.approx([10.413] * 10, rel=1e-15)
    assert out["is_outlier"].to_list() == [False] * 7 + [True, False, False]
    # k = 30: 3 + 44.478 = 47.478 > 40
    assert flags_of(ys, k=30.0)[0] == pytest.approx(47.478, rel=1e-15)
    assert not any(flags_of(ys, k=30.0)[1])


def test_hand_computed_mad_zero_falls_back_to_mean_absolute_deviation():
    ys = [1, 1, 0, 1, 1, 60, 1, 0, 1, 2]
    # sizes 1, 1, 1, 1, 60, 1, 1, 2: median 1, |deviations| six 0s, 59, 1: MAD 0
    # MeanAD = 60 / 8 = 7.5; scale = 1.2533 x 7.5 = 9.39975; threshold = 1 + 5 x 9.39975 = 47.99875
    threshold, flags = flags_of(ys)
    assert threshold == pytest.approx(47.99875, rel=1e-15)
    assert flags == [False] * 5 + [True] + [False] * 4  # 60 flagged, the 2 is not


def test_mad_zero_does_not_flag_every_size_above_the_median():
    # Mostly 1s with a few 2s and a 3: MAD 0. MeanAD = (1 + 1 + 2) / 10 = 0.4, threshold = 1 + 5 x 0.50132 = 3.5066
    ys = [1, 2, 1, 1, 3, 1, 1, 2, 1, 1]
    threshold, flags = flags_of(ys)
    assert threshold == pytest.approx(3.5066, rel=1e-14)
    assert not any(flags)


def test_constant_sizes_have_no_outliers():
    threshold, flags = flags_of([4, 0, 4, 4, 0, 0, 4, 4])
    assert threshold == 4.0  # MAD and MeanAD both 0: the threshold is the common size
    assert not any(flags)


def test_a_single_huge_spike_is_flagged():
    ys = [1, 2, 3, 4, 5, 0, 3, 2, 500, 4, 1, 0, 5]
    # sizes 1..5 and 500 (11): median 3, |deviations| 2 1 0 1 2 0 1 497 1 2 2: MAD 1, threshold 10.413
    threshold, flags = flags_of(ys)
    assert threshold == pytest.approx(10.413, rel=1e-15)
    assert [y for y, f in zip(ys, flags, strict=True) if f] == [500]


def test_a_spike_among_constant_sizes_is_flagged():
    # nine 1s and 500: MAD 0, MeanAD 49.9, threshold 1 + 5 x 1.2533 x 49.9 = 313.69835
    threshold, flags = flags_of([1.0] * 9 + [500.0])
    assert threshold == pytest.approx(313.69835, rel=1e-14)
    assert flags == [False] * 9 + [True]


def test_fewer_than_three_nonzero_periods_give_no_threshold_and_no_flags():
    for ys in ([0.0, 7.0, 0.0, 0.0], [1.0, 0.0, 900.0], [5.0], [0.0, 0.0]):
        threshold, flags = flags_of(ys)
        assert threshold is None, ys
        assert not any(flags), ys
    threshold, _ = flags_of([1.0, 0.0, 900.0, 1.0])  # three sizes: a threshold (1 + 5 x 1.2533 x 899 / 3)
    assert threshold == pytest.approx(1 + 5 * 1.2533 * 899 / 3, rel=1e-14)


def test_zeros_are_never_outliers_and_rows_keep_their_order():
    panel = panel_of({"B": [0.0] + [1.0] * 8 + [100.0], "A": [3.0, 0.0, 3.0, 3.0]}).sample(fraction=1.0, shuffle=True, seed=1)
    before = panel.clone()
    out = flag_outliers(panel, k=5.0)
    assert_frame_equal(panel, before)
    assert_frame_equal(out.select("unique_id", "ds", "y"), panel)
    # B: eight 1s and 100, MAD 0, MeanAD 11: threshold 1 + 5 x 1.2533 x 11 = 69.93
    flagged = out.filter("is_outlier")
    assert flagged.select("unique_id", "y").rows() == [("B", 100.0)]
    assert out.filter(pl.col("y") == 0)["is_outlier"].sum() == 0


def test_summary_and_cap_hand_computed():
    panel = panel_of({"A": [0, 2, 3, 0, 4, 2, 3, 40, 0, 3], "B": [1, 0, 5], "C": [4, 4, 4], "D": [1, 1, 1, 90, 1, 80, 1, 1, 1, 1, 1]})
    flagged = flag_outliers(panel, k=5.0)
    summary = outlier_summary(flagged)
    # D: sizes nine 1s, 90 and 80: MAD 0, MeanAD = 168 / 11, threshold = 1 + 5 x 1.2533 x 168 / 11 ~ 96.7 -> nothing
    # flagged; with k = 2: 1 + 2 x 1.2533 x 168 / 11 ~ 39.3 -> both.
    expected = pl.DataFrame(
        {
            "unique_id": ["A", "B", "C", "D"],
            "n_outliers": [1, 0, 0, 0],
            "outlier_threshold": [10.413, None, 4.0, 1 + 5 * 1.2533 * 168 / 11],
            "largest_outlier": [40.0, None, None, None],
        },
        schema={"unique_id": pl.String, "n_outliers": pl.Int64, "outlier_threshold": pl.Float64, "largest_outlier": pl.Float64},
    )
    assert_frame_equal(summary, expected, rtol=1e-14)
    low_k = outlier_summary(flag_outliers(panel, k=2.0)).filter(pl.col("unique_id") == "D").row(0, named=True)
    assert (low_k["n_outliers"], low_k["largest_outlier"]) == (2, 90.0)

    capped = cap_outliers(flagged)
    assert capped.schema == panel.schema
    expected_y = panel.with_columns(pl.when(pl.col("y") == 40.0).then(flagged["outlier_threshold"]).otherwise(pl.col("y")).alias("y"))
    assert_frame_equal(capped, expected_y)
    assert capped.filter(pl.col("unique_id") == "A")["y"].to_list()[7] == pytest.approx(10.413)


def test_cap_keeps_extra_columns_and_an_integer_target():
    panel = panel_of({"A": [1, 1, 1, 1, 500]}).with_columns(pl.col("y").cast(pl.Int64), note=pl.lit("x"))
    capped = cap_outliers(flag_outliers(panel, k=5.0))
    assert capped.schema == panel.schema
    # threshold 1 + 5 x 1.2533 x 499 / 5 = 626.... > 500: not an outlier with five sizes; with k = 1 it is
    assert capped["y"].to_list() == [1, 1, 1, 1, 500]
    capped = cap_outliers(flag_outliers(panel, k=1.0))
    assert capped["y"].to_list() == [1, 1, 1, 1, int(1 + 1.2533 * 499 / 5)]  # 126.07 truncated to 126


def test_empty_panel():
    flagged = flag_outliers(panel_of({}), k=5.0)
    assert flagged.columns == ["unique_id", "ds", "y", "outlier_threshold", "is_outlier"]
    assert flagged.height == 0
    assert outlier_summary(flagged).columns == ["unique_id", *SUMMARY_COLUMNS]
    assert cap_outliers(flagged).schema == panel_of({}).schema


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("k", [0.0, -1.0, float("nan"), float("inf"), "5", True, None])
def test_bad_k_is_named(k):
    with pytest.raises(ValueError, match="k="):
        flag_outliers(panel_of({"A": [1.0, 2.0, 3.0]}), k=k)


def test_bad_frames_are_named():
    panel = panel_of({"A": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="'y'"):
        flag_outliers(panel.drop("y"), k=5.0)
    with pytest.raises(ValueError, match="null"):
        flag_outliers(panel.with_columns(y=pl.lit(None, dtype=pl.Float64)), k=5.0)
    with pytest.raises(ValueError, match="negative"):
        flag_outliers(panel.with_columns(y=-pl.col("y")), k=5.0)
    flagged = flag_outliers(panel, k=5.0)
    with pytest.raises(ValueError, match="already has"):
        flag_outliers(flagged, k=5.0)
    with pytest.raises(ValueError, match="is_outlier"):
        outlier_summary(flagged.drop("is_outlier"))
    with pytest.raises(ValueError, match="outlier_threshold"):
        cap_outliers(flagged.drop("outlier_threshold"))


def test_custom_column_names():
    panel = panel_of({"A": [1.0] * 9 + [500.0]}).rename({"unique_id": "sku", "ds": "week", "y": "units"})
    flagged = flag_outliers(panel, id_col="sku", time_col="week", target_col="units", k=5.0)
    assert flagged["is_outlier"].to_list() == [False] * 9 + [True]
    summary = outlier_summary(flagged, id_col="sku", target_col="units")
    assert summary.columns == ["sku", *SUMMARY_COLUMNS]
    assert summary["largest_outlier"].item() == 500.0
    assert cap_outliers(flagged, target_col="units").columns == ["sku", "week", "units"]


# ---------------------------------------------------------------- against a naive per-series loop


def _naive_threshold(ys: list[float], k: float = 5.0) -> float | None:
    sizes = [v for v in ys if v > 0]
    if len(sizes) < 3:
        return None
    median = statistics.median(sizes)
    deviations = [abs(v - median) for v in sizes]
    mad = statistics.median(deviations)
    scale = 1.4826 * mad if mad > 0 else 1.2533 * (sum(deviations) / len(deviations))
    return median + k * scale


def _random_series(seed: int, n_series: int = 200) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    series = {}
    for i in range(n_series):
        n = int(rng.integers(1, 60))
        p_zero = rng.choice([0.0, 0.1, 0.4, 0.7, 1.0])
        kind = int(rng.integers(0, 4))
        if kind == 0:
            sizes = rng.integers(1, 10, n).astype(float)
        elif kind == 1:
            sizes = (rng.poisson(0.3, n) + 1).astype(float)  # mostly 1s: MAD 0
        elif kind == 2:
            sizes = np.round(rng.lognormal(1.0, 0.6, n), 3)  # non-integer sizes
        else:
            sizes = np.full(n, float(rng.integers(1, 6)))  # constant
        spikes = rng.random(n) < 0.05
        sizes = np.where(spikes, sizes * rng.integers(20, 200, n), sizes)
        ys = np.where(rng.random(n) < p_zero, 0.0, sizes)
        series[f"S{i:03d}"] = [float(v) for v in ys]
    return series


@pytest.mark.parametrize("k", [5.0, 3.0])
def test_matches_naive_loop(k):
    series = _random_series(seed=41)
    panel = panel_of(series)
    flagged = flag_outliers(panel, k=k)
    assert_frame_equal(flagged.select("unique_id", "ds", "y"), panel)
    by_series = flagged.partition_by("unique_id", as_dict=True, maintain_order=True)
    summary = {r.pop("unique_id"): r for r in outlier_summary(flagged).to_dicts()}
    capped = cap_outliers(flagged)
    assert capped.schema == panel.schema
    capped_by_series = capped.partition_by("unique_id", as_dict=True, maintain_order=True)
    n_flagged = 0
    for uid, ys in series.items():
        expected = _naive_threshold(ys, k)
        got = by_series[(uid,)]
        if expected is None:
            assert got["outlier_threshold"].null_count() == len(ys), uid
        else:
            assert got["outlier_threshold"].to_list() == pytest.approx([expected] * len(ys), rel=1e-12), uid
        flags = [expected is not None and v > 0 and v > expected for v in ys]
        assert got["is_outlier"].to_list() == flags, uid
        n_flagged += sum(flags)
        outliers = [v for v, f in zip(ys, flags, strict=True) if f]
        assert summary[uid]["n_outliers"] == len(outliers), uid
        assert summary[uid]["largest_outlier"] == (max(outliers) if outliers else None), uid
        assert summary[uid]["outlier_threshold"] == (pytest.approx(expected, rel=1e-12) if expected is not None else None), uid
        capped_ys = [expected if f else v for v, f in zip(ys, flags, strict=True)]
        assert capped_by_series[(uid,)]["y"].to_list() == pytest.approx(capped_ys, rel=1e-12), uid
    assert n_flagged > 10  # the panel does exercise the flags


def test_same_input_same_output_to_the_last_bit():
    panel = panel_of(_random_series(seed=43))
    first = flag_outliers(panel, k=5.0)
    for _ in range(3):
        assert_frame_equal(flag_outliers(panel, k=5.0), first, check_exact=True)


# ---------------------------------------------------------------- properties

values = st.lists(st.one_of(st.just(0.0), st.integers(1, 1000).map(float), st.floats(0.01, 1000.0)), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(ys=values, power=st.integers(-10, 10))
def test_scaling_by_a_power_of_two_leaves_the_flags_unchanged(ys, power):
    assume(power != 0)
    base = flag_outliers(panel_of({"A": ys}), k=5.0)
    scaled = flag_outliers(panel_of({"A": [v * 2.0**power for v in ys]}), k=5.0)
    assert scaled["is_outlier"].to_list() == base["is_outlier"].to_list()
    # Exactly: the threshold scales with the data (no absolute floor in units).
    expected = base["outlier_threshold"] * 2.0**power
    assert scaled["outlier_threshold"].to_list() == expected.to_list()


@settings(max_examples=60, deadline=None)
@given(ys=values)
def test_zeros_never_flag_and_at_most_half_the_sizes_do(ys):
    out = flag_outliers(panel_of({"A": ys}), k=5.0)
    assert not out.filter(pl.col("y") == 0)["is_outlier"].any()
    # A flagged value is above every size at or below the median: at most half the sizes are flagged.
    sizes = [v for v in ys if v > 0]
    assert out["is_outlier"].sum() <= len(sizes) // 2
