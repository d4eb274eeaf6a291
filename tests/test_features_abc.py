"""features.abc: annual value over the last 12 months and ABC classes by cumulative share."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.abc import abc_classes, annual_value, one_year_before

D = dt.date


def values_frame(values: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame({"unique_id": list(values), "annual_value": [float(v) for v in values.values()]})


def classes_of(values: dict[str, float], **kwargs) -> dict[str, str]:
    out = abc_classes(values_frame(values), **{"a_share": 0.80, "b_share": 0.95, **kwargs})
    return dict(zip(out["unique_id"], out["abc_class"], strict=True))


# ---------------------------------------------------------------- abc_classes


def test_five_skus_known_shares_and_a_boundary_exactly_at_080():
    out = abc_classes(values_frame({"c": 10, "a": 50, "e": 4, "b": 30, "d": 6}), a_share=0.80, b_share=0.95)
    expected = pl.DataFrame(
        {
            "unique_id": ["a", "b", "c", "d", "e"],
            "annual_value": [50.0, 30.0, 10.0, 6.0, 4.0],
            "cumulative_share": [0.5, 0.8, 0.9, 0.96, 1.0],
            "abc_class": ["A", "A", "B", "C", "C"],
        }
    )
    assert_frame_equal(out, expected, check_exact=True)  # 0.8 exactly, so A: not lost to float rounding


def test_b_boundary_exactly_at_095():
    # 95 / 100 is 0.95 in Python, but 0.9500000000000001 if computed as 95 * (1 / 100).
    assert classes_of({"a": 50, "b": 30, "c": 15, "d": 3, "e": 2}) == {"a": "A", "b": "A", "c": "B", "d": "C", "e": "C"}


def test_all_zero_total_is_all_c():
    out = abc_classes(values_frame({"a": 0, "b": 0, "c": 0}), a_share=0.80, b_share=0.95)
    assert out["abc_class"].to_list() == ["C", "C", "C"]
    assert out["cumulative_share"].null_count() == 3


def test_ties_are_broken_by_unique_id_whatever_the_input_order():
    values = {"d": 10, "b": 10, "a": 10, "c": 10}
    out = abc_classes(values_frame(values), a_share=0.80, b_share=0.95)
    assert out["unique_id"].to_list() == ["a", "b", "c", "d"]
    assert out["abc_class"].to_list() == ["A", "A", "A", "C"]  # shares 0.25, 0.5, 0.75, 1.0
    shuffled = values_frame(values).sample(fraction=1.0, shuffle=True, seed=3)
    assert_frame_equal(abc_classes(shuffled, a_share=0.80, b_share=0.95), out)


def test_a_dominant_item_is_not_a_under_the_literal_rule():
    # docs/methods.md: cumulative share INCLUDING the item <= 80% -> A. One item with 90% of the value is B.
    assert classes_of({"big": 90, "x": 5, "y": 5}) == {"big": "B", "x": "B", "y": "C"}


def test_custom_shares_column_names_and_no_mutation():
    frame = pl.DataFrame({"sku": ["a", "b", "c"], "value": [60.0, 30.0, 10.0]})
    before = frame.clone()
    out = abc_classes(frame, a_share=0.6, b_share=0.9, id_col="sku", value_col="value")
    assert out.columns == ["sku", "value", "cumulative_share", "abc_class"]
    assert out["abc_class"].to_list() == ["A", "B", "C"]
    assert_frame_equal(frame, before)


def test_empty_null_and_negative_values():
    empty = abc_classes(values_frame({}), a_share=0.80, b_share=0.95)
    assert empty.height == 0
    assert empty.columns == ["unique_id", "annual_value", "cumulative_share", "abc_class"]
    with pytest.raises(ValueError, match="null"):
        abc_classes(
            pl.DataFrame({"unique_id": ["a"], "annual_value": [None]}, schema_overrides={"annual_value": pl.Float64}),
            a_share=0.80,
            b_share=0.95,
        )
    with pytest.raises(ValueError, match="negative"):
        abc_classes(values_frame({"a": -1.0}), a_share=0.80, b_share=0.95)


def _naive_abc(values: dict[str, float], a_share=0.80, b_share=0.95) -> dict[str, tuple[float | None, str]]:
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    running, cumulative = 0.0, []
    for _, value in ranked:
        running += value
        cumulative.append(running)
    total = cumulative[-1]
    out = {}
    for (uid, _), cum in zip(ranked, cumulative, strict=True):
        if total == 0:
            out[uid] = (None, "C")
        else:
            share = cum / total
            out[uid] = (share, "A" if share <= a_share else "B" if share <= b_share else "C")
    return out


def test_abc_matches_naive_loop():
    rng = np.random.default_rng(17)
    values = {f"S{i:03d}": float(v) for i, v in enumerate(rng.choice([0, 1, 2, 5, 10, 50, 100, 1000], size=200))}
    out = abc_classes(values_frame(values), a_share=0.80, b_share=0.95)
    expected = _naive_abc(values)
    assert out["unique_id"].to_list() == list(expected)
    for uid, share, abc in out.select("unique_id", "cumulative_share", "abc_class").iter_rows():
        assert share == pytest.approx(expected[uid][0], rel=1e-12)
        assert abc == expected[uid][1], uid
    assert set(out["abc_class"]) == {"A", "B", "C"}


# ---------------------------------------------------------------- annual_value


def test_one_year_before():
    assert one_year_before(D(2024, 12, 31)) == D(2023, 12, 31)
    assert one_year_before(D(2024, 2, 29)) == D(2023, 2, 28)


def test_annual_value_window_is_after_one_year_before_up_to_as_of():
    panel = pl.DataFrame(
        {
            "unique_id": ["a", "a", "a", "a", "a", "b", "c"],
            "ds": [D(2023, 12, 31), D(2024, 1, 1), D(2024, 6, 1), D(2024, 12, 31), D(2025, 1, 1), D(2023, 6, 1), D(2024, 3, 1)],
            "y": [100.0, 1.0, 2.0, 3.0, 100.0, 5.0, 4.0],
        }
    )
    cost = pl.DataFrame({"unique_id": ["a", "b", "z"], "unit_cost": [2.5, 1.0, 9.0]})
    before = panel.clone()
    out = annual_value(panel, cost, as_of=D(2024, 12, 31))
    expected = pl.DataFrame(
        {"unique_id": ["a", "b", "c"], "annual_units": [6.0, 0.0, 4.0], "annual_value": [15.0, 0.0, None]},
        schema_overrides={"annual_value": pl.Float64},
    )
    assert_frame_equal(out, expected)  # c has no unit cost: null, not a guess
    assert_frame_equal(panel, before)


def test_annual_value_rejects_duplicate_unit_costs():
    panel = pl.DataFrame({"unique_id": ["a"], "ds": [D(2024, 1, 1)], "y": [1.0]})
    cost = pl.DataFrame({"unique_id": ["a", "a"], "unit_cost": [1.0, 2.0]})
    with pytest.raises(ValueError, match="more than one unit cost"):
        annual_value(panel, cost, as_of=D(2024, 1, 1))
    with pytest.raises(ValueError, match="unit_cost"):
        annual_value(panel, cost.drop("unit_cost"), as_of=D(2024, 1, 1))


def test_annual_value_matches_naive_loop():
    rnd = random.Random(23)
    as_of = D(2024, 9, 30)
    rows, costs = [], {}
    for i in range(200):
        uid = f"S{i:03d}"
        costs[uid] = round(rnd.uniform(0.5, 20.0), 2)
        start = D(2022, 1, 1) + dt.timedelta(days=rnd.randint(0, 900))
        rows.extend((uid, start + dt.timedelta(days=7 * k), float(rnd.randint(0, 9))) for k in range(rnd.randint(1, 30)))
    panel = pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")
    out = annual_value(panel, pl.DataFrame({"unique_id": list(costs), "unit_cost": list(costs.values())}), as_of=as_of)

    units: dict[str, float] = {}
    for uid, ds, y in rows:
        units.setdefault(uid, 0.0)
        if D(2023, 9, 30) < ds <= as_of:
            units[uid] += y
    assert out["unique_id"].to_list() == sorted(units)
    for uid, annual_units, value in out.iter_rows():
        assert annual_units == units[uid]
        assert value == pytest.approx(units[uid] * costs[uid], rel=1e-12)
