"""features.lifecycle: age, recency, movement frequency, FSN class and life-cycle stage per series."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.calendar import to_periods
from features.lifecycle import FSN_CLASSES, LIFE_CYCLE_COLUMNS, LIFE_CYCLES, life_cycle

START = dt.date(2024, 1, 1)
# dead_probability 1: the floor alone decides (the probability rule has its own tests below).
ARGS = {"new_periods": 4, "dead_periods": 3, "dead_probability": 1.0, "window_periods": 5, "fast_from": 0.5, "slow_from": 0.1}


def panel_of(series: dict[str, list[float]], start: dt.date = START) -> pl.DataFrame:
    """A daily panel: each series' values on consecutive days from `start`."""
    rows = [(uid, start + dt.timedelta(days=i), float(v)) for uid, ys in series.items() for i, v in enumerate(ys)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


def row_of(ys: list[float], **kwargs) -> dict:
    rows = life_cycle(panel_of({"A": ys}), **{**ARGS, **kwargs}).to_dicts()
    assert len(rows) == 1
    return rows[0]


# ---------------------------------------------------------------- hand cases


def test_hand_computed_table():
    panel = panel_of(
        {
            "SLOW": [1, 0, 0, 0, 0, 0, 0, 2, 0, 1],  # last 5: 0, 0, 2, 0, 1 -> 2 / 5
            "ACTIVE": [1, 2, 0, 3, 1, 0, 2, 2, 1, 1],  # last 5: 0, 2, 2, 1, 1 -> 4 / 5
            "DEAD": [3, 0, 2, 0, 0, 0],  # 3 periods without a sale
            "NEW": [2, 1, 0, 1],  # 4 periods old, younger than the window: 3 / 4
            "ONE": [5],
        }
    )
    expected = pl.DataFrame(
        {
            "unique_id": ["ACTIVE", "DEAD", "NEW", "ONE", "SLOW"],
            "periods_since_first_sale": [10, 6, 4, 1, 10],
            "periods_since_last_sale": [0, 3, 0, 0, 0],
            "movement_frequency": [0.8, 0.2, 0.75, 1.0, 0.4],
            "fsn_class": ["F", "S", "F", "F", "S"],
            "life_cycle": ["active", "dead", "new", "new", "slow_moving"],
        },
        schema={
            "unique_id": pl.String,
            "periods_since_first_sale": pl.Int64,
            "periods_since_last_sale": pl.Int64,
            "movement_frequency": pl.Float64,
            "fsn_class": pl.String,
            "life_cycle": pl.String,
        },
    )
    assert_frame_equal(life_cycle(panel, **ARGS), expected, check_exact=True)


def test_dead_boundary_is_inclusive_and_wins_over_new():
    assert row_of([4, 0, 0, 0])["life_cycle"] == "dead"  # 4 periods old (new) but 3 without a sale
    assert row_of([4, 1, 0, 0])["life_cycle"] == "new"  # 2 without a sale: not yet dead
    assert row_of([1] * 8 + [0, 0, 0])["life_cycle"] == "dead"
    assert row_of([1] * 8 + [0, 0])["life_cycle"] == "active"  # last 5: 1, 1, 1, 0, 0 -> 0.6


def test_new_boundary_is_inclusive_and_wins_over_slow():
    assert row_of([1, 0, 0, 1])["life_cycle"] == "new"  # 4 <= 4, movement 0.5
    assert row_of([1, 0, 0, 0, 1], window_periods=10)["life_cycle"] == "slow_moving"  # 5 > 4, movement 0.4
    assert row_of([1, 0, 0, 0, 1], window_periods=10)["movement_frequency"] == 0.4


def test_fsn_boundaries_are_inclusive():
    # window 10: one sale in 10 is exactly 0.1 = slow_from, five in 10 exactly 0.5 = fast_from
    one_in_ten = [1.0] * 5 + [0.0] * 9 + [1.0]
    row = row_of(one_in_ten, window_periods=10, dead_periods=20)
    assert row["movement_frequency"] == 0.1
    assert row["fsn_class"] == "S"
    assert row["life_cycle"] == "slow_moving"
    none_in_ten = [1.0] * 5 + [0.0] * 10
    row = row_of(none_in_ten, window_periods=10, dead_periods=20)
    assert row["movement_frequency"] == 0.0
    assert (row["fsn_class"], row["life_cycle"]) == ("N", "slow_moving")
    half = [1.0] * 5 + [1.0, 0.0] * 5
    row = row_of(half, window_periods=10)
    assert row["movement_frequency"] == 0.5
    assert (row["fsn_class"], row["life_cycle"]) == ("F", "active")
    # Custom cut-offs: 0.5 is only slow when fast starts above it.
    assert row_of(half, window_periods=10, fast_from=0.6, slow_from=0.5)["fsn_class"] == "S"
    assert row_of(half, window_periods=10, fast_from=0.8, slow_from=0.6)["fsn_class"] == "N"


def test_window_longer_than_the_series_uses_all_its_periods():
    row = row_of([2, 0, 3, 0, 0, 1], window_periods=52, new_periods=1)
    assert row["movement_frequency"] == 0.5
    assert row["periods_since_first_sale"] == 6


# ---------------------------------------------------------------- edge cases


def test_all_zero_series_is_dead_with_null_ages():
    out = life_cycle(panel_of({"Z": [0.0, 0.0, 0.0], "A": [1.0] * 8}), **ARGS)
    z = out.filter(pl.col("unique_id") == "Z").to_dicts()[0]
    assert z == {
        "unique_id": "Z",
        "periods_since_first_sale": None,
        "periods_since_last_sale": None,
        "movement_frequency": 0.0,
        "fsn_class": "N",
        "life_cycle": "dead",
    }
    assert out.filter(pl.col("unique_id") == "A")["life_cycle"].item() == "active"
    assert row_of([0.0])["life_cycle"] == "dead"


def test_one_period_series():
    row = row_of([3.0], new_periods=1, dead_periods=1, window_periods=1)
    assert (row["periods_since_first_sale"], row["periods_since_last_sale"], row["movement_frequency"]) == (1, 0, 1.0)
    assert row["life_cycle"] == "new"


def test_single_spike_then_nothing_is_dead_once_old_enough():
    assert row_of([500.0] + [0.0] * 2)["life_cycle"] == "new"  # 2 quiet periods < 3
    assert row_of([500.0] + [0.0] * 3)["life_cycle"] == "dead"


def test_empty_panel():
    out = life_cycle(panel_of({}), **ARGS)
    assert out.height == 0
    assert out.columns == ["unique_id", *LIFE_CYCLE_COLUMNS]


def test_unsorted_panel_leading_zeros_custom_names_and_no_mutation():
    panel = panel_of({"B": [0.0, 0.0, 1.0, 0.0, 2.0, 0.0], "A": [1.0]}).reverse().rename({"unique_id": "sku", "ds": "week", "y": "units"})
    before = panel.clone()
    out = life_cycle(panel, **ARGS, id_col="sku", time_col="week", target_col="units")
    assert_frame_equal(panel, before)
    assert out.columns == ["sku", *LIFE_CYCLE_COLUMNS]
    assert out["sku"].to_list() == ["A", "B"]
    b = out.row(1, named=True)
    assert (b["periods_since_first_sale"], b["periods_since_last_sale"], b["movement_frequency"]) == (4, 1, 0.5)
    assert b["life_cycle"] == "new"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"new_periods": 0}, "new_periods"),
        ({"new_periods": 2.0}, "new_periods"),
        ({"new_periods": True}, "new_periods"),
        ({"dead_periods": -1}, "dead_periods"),
        ({"window_periods": 0}, "window_periods"),
        ({"window_periods": None}, "window_periods"),
        ({"slow_from": 0.0}, "slow_from"),
        ({"slow_from": 0.5, "fast_from": 0.5}, "slow_from"),
        ({"fast_from": 1.5}, "fast_from"),
        ({"fast_from": float("nan")}, "fast_from"),
        ({"slow_from": "0.1"}, "slow_from"),
    ],
)
def test_bad_arguments_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        life_cycle(panel_of({"A": [1.0]}), **{**ARGS, **kwargs})


def test_fast_from_one_is_allowed():
    assert row_of([1.0] * 10, fast_from=1.0)["fsn_class"] == "F"


def test_bad_frames_are_named():
    panel = panel_of({"A": [1.0, 2.0]})
    with pytest.raises(ValueError, match="'y'"):
        life_cycle(panel.drop("y"), **ARGS)
    with pytest.raises(ValueError, match="null"):
        life_cycle(panel.with_columns(y=pl.lit(None, dtype=pl.Float64)), **ARGS)
    with pytest.raises(ValueError, match=r"negative.*\['A'\]"):
        life_cycle(panel.with_columns(y=pl.lit(-1.0)), **ARGS)


# ---------------------------------------------------------------- against a naive per-series loop


def _naive(
    ys: list[float], new_periods: int, dead_periods: int, window_periods: int, fast_from=0.5, slow_from=0.1, dead_probability=1.0,
    beyond_longest_gap=False,
) -> dict:  # fmt: skip
    first = next((i for i, v in enumerate(ys) if v > 0), None)
    if first is None:
        return {
            "periods_since_first_sale": None,
            "periods_since_last_sale": None,
            "movement_frequency": 0.0,
            "fsn_class": "N",
            "life_cycle": "dead",
        }
    active = ys[first:]
    last = max(i for i, v in enumerate(active) if v > 0)
    window = active[-window_periods:]
    frequency = sum(1 for v in window if v > 0) / len(window)
    fsn = "F" if frequency >= fast_from else "S" if frequency >= slow_from else "N"
    since_last = len(active) - 1 - last
    sales = [i for i, v in enumerate(active) if v > 0]
    longest_gap = max((b - a - 1 for a, b in itertools.pairwise(sales)), default=0)
    quiet = (1 - len(sales) / len(active)) ** since_last
    if since_last >= dead_periods and (
        dead_probability == 1.0 or (quiet < dead_probability and (since_last > longest_gap or not beyond_longest_gap))
    ):
        stage = "dead"
    elif len(active) <= new_periods:
        stage = "new"
    elif fsn != "F":
        stage = "slow_moving"
    else:
        stage = "active"
    return {
        "periods_since_first_sale": len(active),
        "periods_since_last_sale": since_last,
        "movement_frequency": frequency,
        "fsn_class": fsn,
        "life_cycle": stage,
    }


def _random_series(seed: int, n_series: int = 200) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    series = {}
    for i in range(n_series):
        n = int(rng.integers(1, 60))
        p_zero = rng.choice([0.0, 0.1, 0.4, 0.7, 0.95, 1.0])
        ys = np.where(rng.random(n) < p_zero, 0, rng.integers(1, 20, n)).astype(float)
        if rng.random() < 0.2:  # a dying item: trailing zeros
            ys = np.concatenate([ys, np.zeros(int(rng.integers(1, 15)))])
        series[f"S{i:03d}"] = [float(v) for v in ys]
    return series


@pytest.mark.parametrize(
    "args",
    [
        ARGS,
        {"new_periods": 12, "dead_periods": 8, "dead_probability": 1.0, "window_periods": 13, "fast_from": 0.6, "slow_from": 0.25},
        {"new_periods": 6, "dead_periods": 3, "dead_probability": 0.05, "window_periods": 13, "fast_from": 0.6, "slow_from": 0.25},
        {**ARGS, "dead_periods": 2, "dead_probability": 0.05, "beyond_longest_gap": True},
    ],
)
def test_matches_naive_loop(args):
    series = _random_series(seed=29)
    out = {r.pop("unique_id"): r for r in life_cycle(panel_of(series), **args).to_dicts()}
    assert list(out) == sorted(series)
    for uid, ys in series.items():
        assert out[uid] == _naive(ys, **args), uid
    assert {r["life_cycle"] for r in out.values()} == set(LIFE_CYCLES)
    assert {r["fsn_class"] for r in out.values()} == set(FSN_CLASSES)


# ---------------------------------------------------------------- properties

values = st.lists(st.one_of(st.just(0.0), st.integers(1, 1000).map(float)), min_size=1, max_size=40)
settings_args = st.fixed_dictionaries(
    {
        "new_periods": st.integers(1, 20),
        "dead_periods": st.integers(1, 20),
        "dead_probability": st.just(1.0),
        "window_periods": st.integers(1, 30),
        "fast_from": st.just(0.5),
        "slow_from": st.just(0.1),
    }
)


@settings(max_examples=60, deadline=None)
@given(ys=values, n_leading=st.integers(1, 15), args=settings_args)
def test_leading_zeros_in_the_panel_never_change_the_result(ys, n_leading, args):
    base = life_cycle(panel_of({"A": ys}), **args)
    padded = life_cycle(panel_of({"A": [0.0] * n_leading + ys}, start=START - dt.timedelta(days=n_leading)), **args)
    assert_frame_equal(padded, base)


@settings(max_examples=40, deadline=None)
@given(ys=values, n_leading=st.integers(1, 15), args=settings_args)
def test_zero_sales_before_the_first_sale_never_change_the_result(ys, n_leading, args):
    # Through the calendar: zero-quantity order lines before the first sale add no periods.
    def sales(rows: list[tuple[dt.date, float]]) -> pl.DataFrame:
        return pl.DataFrame(
            [("A", None, d, q) for d, q in rows],
            schema={"sku_id": pl.String, "location_id": pl.String, "date": pl.Date, "quantity": pl.Float64},
            orient="row",
        )

    rows = [(START + dt.timedelta(days=i), v) for i, v in enumerate(ys)]
    leading = [(START - dt.timedelta(days=i), 0.0) for i in range(1, n_leading + 1)]
    as_of = START + dt.timedelta(days=len(ys) - 1)
    base = life_cycle(to_periods(sales(rows), freq="D", as_of=as_of, week_start="mon", input_grain="auto"), **args)
    padded = life_cycle(to_periods(sales(leading + rows), freq="D", as_of=as_of, week_start="mon", input_grain="auto"), **args)
    assert_frame_equal(padded, base)
    if any(v > 0 for v in ys):
        assert base.row(0, named=True) == {"unique_id": "A", **_naive(ys, **args)}


# ---------------------------------------------------------------- dead only when the silence is improbable


def test_a_part_selling_every_fourth_period_is_not_dead_after_three_silent_ones():
    every_fourth = [5.0, 0.0, 0.0, 0.0] * 10  # 10 sales in 40 periods (p = 0.25), the last 3 silent
    row = row_of(every_fourth, dead_periods=3, dead_probability=0.01)
    # P(3 silent | p 0.25) = 0.75^3 = 0.42: no evidence of death; it moves in 1 of the last 5 periods: slow.
    assert row["periods_since_last_sale"] == 3 and row["life_cycle"] == "slow_moving"


def test_the_silence_turns_improbable_at_the_hand_computed_boundary():
    every_fourth = [5.0, 0.0, 0.0, 0.0] * 10
    # After s silent periods p = 10 / (37 + s): s 27 -> (1 - 10/64)^27 = 0.01018 >= 0.01; s 28 -> (1 - 10/65)^28 = 0.00930.
    assert row_of(every_fourth + [0.0] * 24, dead_periods=3, dead_probability=0.01)["life_cycle"] != "dead"
    assert row_of(every_fourth + [0.0] * 25, dead_periods=3, dead_probability=0.01)["life_cycle"] == "dead"


def test_a_part_that_sells_in_bursts_is_not_dead_within_the_longest_quiet_spell_it_came_back_from():
    """12 months selling, 10 silent, 6 selling, then 9 silent: 18 sales in 37 months (p 0.49), (0.51)^9 = 0.002 < 0.01,
    but it has come back from a 10-month silence before: with `beyond_longest_gap` not dead yet (without, dead by the rate
    alone). After 11 silent months it is dead either way."""
    bursts = [2.0] * 12 + [0.0] * 10 + [1.0] * 6
    assert life_cycle(panel_of({"s": [*bursts, *[0.0] * 9]}), **{**ARGS, "dead_probability": 0.01})["life_cycle"][0] == "dead"
    args = {**ARGS, "dead_periods": 3, "dead_probability": 0.01, "beyond_longest_gap": True}
    quiet = life_cycle(panel_of({"s": [*bursts, *[0.0] * 9]}), **args).row(0, named=True)
    assert (quiet["periods_since_last_sale"], quiet["life_cycle"]) == (9, "slow_moving")
    gone = life_cycle(panel_of({"s": [*bursts, *[0.0] * 11]}), **args).row(0, named=True)
    assert gone["life_cycle"] == "dead"


def test_a_daily_seller_silent_for_91_days_is_dead_and_the_floor_still_holds():
    daily = [2.0] * 600
    assert row_of(daily + [0.0] * 91, dead_periods=91, dead_probability=0.01)["life_cycle"] == "dead"  # (91/691)^91 ~ 0
    assert row_of(daily + [0.0] * 90, dead_periods=91, dead_probability=0.01)["life_cycle"] != "dead"  # under the floor


def test_dead_probability_must_be_a_probability():
    for bad in (0.0, 1.5, True, "x"):
        with pytest.raises(ValueError, match="dead_probability"):
            row_of([1.0, 0.0], dead_probability=bad)
