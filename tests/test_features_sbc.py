"""features.sbc: demand profile and SBC class; boundaries pinned, a naive loop, properties."""

from __future__ import annotations

import datetime as dt
import statistics
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.sbc import PROFILE_COLUMNS, demand_profile

START = dt.date(2024, 1, 1)


def panel_of(series: dict[str, list[float]], start: dt.date = START) -> pl.DataFrame:
    """A daily panel: each series' values on consecutive days from `start`."""
    rows = [(uid, start + dt.timedelta(days=i), float(v)) for uid, ys in series.items() for i, v in enumerate(ys)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


def profile_row(ys: list[float], **kwargs) -> dict:
    # Syntetos-Boylan cut-offs 1.32 / 0.49 and 8 periods at least (the config's defaults) unless a test says otherwise.
    rows = demand_profile(panel_of({"A": ys}), **{"adi_cutoff": 1.32, "cv2_cutoff": 0.49, "min_periods": 8, **kwargs}).to_dicts()
    assert len(rows) == 1
    return rows[0]


# Eight sizes whose CV2 is exactly 49/100 (mean 20, sample variance 196 = 14^2, std / mean = 0.7).
# (std / mean)^2 in floats gives 0.48999999999999994; var / mean^2 gives 0.49.
CV2_EXACTLY_049 = [2.0, 4.0, 7.0, 22.0, 25.0, 28.0, 33.0, 39.0]
CV2_JUST_BELOW = [2.0, 4.0, 7.0, 22.0, 25.0, 28.0, 33.0, 38.0]  # 0.48276...


# ---------------------------------------------------------------- hand cases and boundaries


def test_hand_computed_profile():
    ys = [0.0, 0.0, 4.0, 0.0, 6.0, 0.0, 0.0]  # two leading zeros, then 5 active periods
    row = profile_row(ys, min_periods=3)
    assert row["n_periods"] == 5
    assert row["n_nonzero"] == 2
    assert row["adi"] == 2.5
    assert row["cv2"] == pytest.approx(statistics.variance([4, 6]) / 25)  # 2 / 25 = 0.08
    assert row["mean_demand"] == 2.0
    assert row["std_demand"] == pytest.approx(statistics.stdev([4, 0, 6, 0, 0]))
    assert row["first_sale"] == dt.date(2024, 1, 3)
    assert row["last_sale"] == dt.date(2024, 1, 5)
    assert row["periods_since_last_sale"] == 2
    assert row["demand_class"] == "intermittent"


def test_output_schema_and_order():
    out = demand_profile(panel_of({"B": [1.0, 2.0], "A": [3.0]}), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)
    assert out.columns == ["unique_id", *PROFILE_COLUMNS]
    assert out["unique_id"].to_list() == ["A", "B"]
    assert out.schema["n_periods"] == pl.Int64
    assert out.schema["adi"] == pl.Float64
    assert out.schema["first_sale"] == pl.Date
    assert out.schema["demand_class"] == pl.String


def test_adi_exactly_at_cutoff_is_intermittent_side():
    assert 33 / 25 == 1.32  # the float division of the integers equals the literal
    at_cut = [5.0] * 25 + [0.0] * 8  # 33 active periods, 25 non-zero, constant sizes: CV2 = 0
    row = profile_row(at_cut)
    assert row["adi"] == 1.32
    assert row["cv2"] == 0.0
    assert row["demand_class"] == "intermittent"
    below = [5.0] * 25 + [0.0] * 7  # ADI 32 / 25 = 1.28
    assert profile_row(below)["demand_class"] == "smooth"
    # the same with 132 periods and 100 non-zero
    assert profile_row([1.0] * 100 + [0.0] * 32)["adi"] == 1.32


def test_cv2_exactly_at_cutoff_is_erratic_side():
    row = profile_row(CV2_EXACTLY_049)
    assert row["adi"] == 1.0
    assert row["cv2"] == 0.49
    assert row["demand_class"] == "erratic"
    below = profile_row(CV2_JUST_BELOW)
    assert below["cv2"] < 0.49
    assert below["demand_class"] == "smooth"


def test_both_at_cutoff_is_lumpy():
    # 8 non-zero sizes with CV2 0.49 and 3 zeros: ADI 11 / 8 = 1.375
    ys = [*CV2_EXACTLY_049[:4], 0.0, *CV2_EXACTLY_049[4:], 0.0, 0.0]
    row = profile_row(ys)
    assert row["cv2"] == 0.49
    assert row["demand_class"] == "lumpy"


def test_single_huge_spike_among_small_values():
    smooth_then_spike = [2.0] * 9 + [200.0]
    assert profile_row(smooth_then_spike)["demand_class"] == "erratic"
    sparse_spike = [2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 2.0, 0.0, 200.0, 0.0]
    assert profile_row(sparse_spike)["demand_class"] == "lumpy"


def test_one_nonzero_period_cv2_zero_but_insufficient():
    row = profile_row([7.0] + [0.0] * 20)
    assert row["n_nonzero"] == 1
    assert row["cv2"] == 0.0
    assert row["adi"] == 21.0
    assert row["demand_class"] == "insufficient_history"


def test_single_period_series():
    row = profile_row([3.0])
    assert row["n_periods"] == 1
    assert row["std_demand"] == 0.0
    assert row["mean_demand"] == 3.0
    assert row["periods_since_last_sale"] == 0
    assert row["demand_class"] == "insufficient_history"


def test_all_zero_series_gets_an_insufficient_row_with_nulls():
    out = demand_profile(panel_of({"Z": [0.0, 0.0, 0.0], "A": [1.0] * 8}), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)
    z = out.filter(pl.col("unique_id") == "Z").to_dicts()[0]
    assert z["n_periods"] == 0
    assert z["n_nonzero"] == 0
    assert z["adi"] is None
    assert z["cv2"] is None
    assert z["first_sale"] is None
    assert z["demand_class"] == "insufficient_history"
    assert out.filter(pl.col("unique_id") == "A")["demand_class"].item() == "smooth"


def test_empty_panel():
    out = demand_profile(panel_of({}), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)
    assert out.height == 0
    assert out.columns == ["unique_id", *PROFILE_COLUMNS]


def test_min_periods():
    ys = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]  # 7 periods
    assert profile_row(ys)["demand_class"] == "insufficient_history"
    assert profile_row([*ys, 1.0])["demand_class"] == "smooth"
    assert profile_row(ys, min_periods=7)["demand_class"] == "smooth"


def test_custom_cutoffs_and_column_names():
    panel = panel_of({"A": CV2_JUST_BELOW}).rename({"unique_id": "sku", "ds": "week", "y": "units"})
    out = demand_profile(panel, cv2_cutoff=0.4, adi_cutoff=1.0, id_col="sku", time_col="week", target_col="units", min_periods=8)
    assert out["sku"].to_list() == ["A"]
    assert out["demand_class"].item() == "lumpy"  # ADI 1.0 >= 1.0, CV2 0.48 >= 0.4


def test_input_not_mutated_and_missing_column_named():
    panel = panel_of({"A": [0.0, 1.0, 2.0]})
    before = panel.clone()
    demand_profile(panel, adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)
    assert_frame_equal(panel, before)
    with pytest.raises(ValueError, match="'y'"):
        demand_profile(panel.drop("y"), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)


def test_unsorted_panel_with_leading_zeros():
    panel = panel_of({"A": [0.0, 0.0, 3.0, 0.0, 3.0]}).reverse()
    row = demand_profile(panel, min_periods=2, adi_cutoff=1.32, cv2_cutoff=0.49).to_dicts()[0]
    assert row["n_periods"] == 3
    assert row["adi"] == 1.5


# ---------------------------------------------------------------- against a naive per-series loop


def _naive_profile(ys: list[float], adi_cut=1.32, cv2_cut=0.49, min_periods=8) -> dict:
    first = next((i for i, v in enumerate(ys) if v != 0), None)
    if first is None:
        return {"n_periods": 0, "n_nonzero": 0, "adi": None, "cv2": None, "demand_class": "insufficient_history"}
    active = ys[first:]
    sizes = [v for v in active if v != 0]
    last = max(i for i, v in enumerate(active) if v != 0)
    adi = len(active) / len(sizes)
    cv2 = 0.0 if len(sizes) == 1 else statistics.variance(sizes) / statistics.mean(sizes) ** 2
    if len(active) < min_periods or len(sizes) < 2:
        cls = "insufficient_history"
    elif adi >= adi_cut:
        cls = "lumpy" if cv2 >= cv2_cut else "intermittent"
    else:
        cls = "erratic" if cv2 >= cv2_cut else "smooth"
    return {
        "n_periods": len(active),
        "n_nonzero": len(sizes),
        "adi": adi,
        "cv2": cv2,
        "mean_demand": statistics.mean(active),
        "std_demand": statistics.stdev(active) if len(active) > 1 else 0.0,
        "first_sale": START + dt.timedelta(days=first),
        "last_sale": START + dt.timedelta(days=first + last),
        "periods_since_last_sale": len(active) - 1 - last,
        "demand_class": cls,
    }


def _random_series(seed: int, n_series: int = 200) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    series = {}
    for i in range(n_series):
        n = int(rng.integers(1, 60))
        p_zero = rng.choice([0.0, 0.1, 0.4, 0.7, 1.0])
        sizes = rng.choice([rng.integers(1, 10, n), rng.integers(1, 200, n), rng.poisson(3, n) + 1])
        ys = np.where(rng.random(n) < p_zero, 0, sizes).astype(float)
        series[f"S{i:03d}"] = [float(v) for v in ys]
    return series


def test_profile_matches_naive_loop():
    series = _random_series(seed=11)
    out = {r["unique_id"]: r for r in demand_profile(panel_of(series), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8).to_dicts()}
    assert sorted(out) == sorted(series)
    classes = set()
    for uid, ys in series.items():
        expected = _naive_profile(ys)
        got = out[uid]
        classes.add(got["demand_class"])
        for key, value in expected.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (uid, key)
            else:
                assert got[key] == value, (uid, key)
    assert classes == {"smooth", "erratic", "intermittent", "lumpy", "insufficient_history"}


def test_cv2_is_correctly_rounded_for_whole_units():
    rng = np.random.default_rng(5)
    series = {
        f"S{i:03d}": [float(v) for v in rng.integers(1, int(rng.choice([5, 100, 100_000])), int(rng.integers(2, 40)))] for i in range(300)
    }
    out = {r["unique_id"]: r["cv2"] for r in demand_profile(panel_of(series), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8).to_dicts()}
    for uid, ys in series.items():
        sizes = [Fraction(int(v)) for v in ys]
        mean = sum(sizes) / len(sizes)
        exact = sum((x - mean) ** 2 for x in sizes) / (len(sizes) - 1) / mean**2
        assert out[uid] == float(exact), uid


def test_constant_non_integer_sizes_have_cv2_exactly_zero():
    assert profile_row([0.1] * 9)["cv2"] == 0.0
    assert profile_row([0.1, 0.0] * 9)["cv2"] == 0.0


# ---------------------------------------------------------------- properties

values = st.lists(st.one_of(st.just(0.0), st.integers(1, 1000).map(float)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ys=values, n_leading=st.integers(1, 15))
def test_leading_zeros_never_change_the_profile(ys, n_leading):
    base = demand_profile(panel_of({"A": ys}), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8)
    padded = demand_profile(
        panel_of({"A": [0.0] * n_leading + ys}, start=START - dt.timedelta(days=n_leading)), adi_cutoff=1.32, cv2_cutoff=0.49, min_periods=8
    )
    assert_frame_equal(padded, base)


@settings(max_examples=60, deadline=None)
@given(ys=values, scale=st.floats(0.01, 1000.0, allow_nan=False, allow_infinity=False))
def test_scaling_keeps_adi_cv2_and_class(ys, scale):
    assume(any(v != 0 for v in ys))
    base = profile_row(ys)
    scaled = profile_row([v * scale for v in ys])
    assert scaled["adi"] == base["adi"]
    assert scaled["cv2"] == pytest.approx(base["cv2"], rel=1e-9, abs=1e-12)
    # The class is scale-free except within float rounding of the CV2 cut-off.
    if abs(base["cv2"] - 0.49) > 1e-9:
        assert scaled["demand_class"] == base["demand_class"]


@settings(max_examples=30, deadline=None)
@given(ys=values, power=st.integers(-6, 6))
def test_scaling_by_a_power_of_two_is_exact(ys, power):
    assume(any(v != 0 for v in ys))
    base = profile_row(ys)
    scaled = profile_row([v * 2.0**power for v in ys])
    for key in ("adi", "cv2", "demand_class", "n_periods", "n_nonzero"):
        assert scaled[key] == base[key]


@settings(max_examples=60, deadline=None)
@given(ys=values, data=st.data())
def test_inserting_a_zero_after_the_first_sale_raises_adi(ys, data):
    nonzero_at = [i for i, v in enumerate(ys) if v != 0]
    assume(nonzero_at)
    where = data.draw(st.integers(nonzero_at[0] + 1, len(ys)))
    base = profile_row(ys)
    widened = profile_row([*ys[:where], 0.0, *ys[where:]])
    assert widened["adi"] > base["adi"]
    assert widened["n_nonzero"] == base["n_nonzero"]
    assert widened["cv2"] == base["cv2"]
