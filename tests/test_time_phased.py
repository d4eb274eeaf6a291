"""Time-phased parameters (buffers/time_phased.py): each future period's reorder point from its own lead time."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from buffers.time_phased import COLUMNS, _window_sums, time_phased_parameters

START = dt.date(2026, 1, 1)


def extended(series: dict[str, list[float]]) -> pl.DataFrame:
    rows = [(u, START + dt.timedelta(days=i), i + 1, float(f)) for u, fs in series.items() for i, f in enumerate(fs)]
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "step": pl.Int64, "forecast": pl.Float64}, orient="row")


def recs(**overrides) -> pl.DataFrame:
    row = {
        "unique_id": "a", "lead_time_periods": 2.0, "review_periods": 1.0, "safety_stock_units": 3.0, "order_up_to_units": 10.0,
        "review_lead_time_demand": 6.0, "flag_dead": False, "flag_critical": False,
    } | overrides  # fmt: skip
    return pl.DataFrame([row])


def test_each_period_covers_its_own_lead_time_by_hand():
    """Forecast 1, 2, 3, ... per period; L = 2, R = 1; SS 3; the plan's S = 10 over R + L demand 1 + 2 + 3 = 6 (buffer 4).
    p = 1: LTD 1 + 2 = 3, ROP 6, RLTD 6, S 10 (the plan). p = 2: LTD 2 + 3 = 5, ROP 8, RLTD 9, S 13. p = 3: LTD 7,
    ROP 10, RLTD 12, S 16."""
    out = time_phased_parameters(recs(), extended({"a": [1, 2, 3, 4, 5, 6]}), periods=3)
    assert out.columns == ["unique_id", *COLUMNS]
    assert out["period"].to_list() == [1, 2, 3] and out["period_start"][1] == START + dt.timedelta(days=1)
    assert out["lead_time_demand"].to_list() == [3.0, 5.0, 7.0]
    assert out["review_lead_time_demand"].to_list() == [6.0, 9.0, 12.0]
    assert out["reorder_point_units"].to_list() == [6.0, 8.0, 10.0]
    assert out["order_up_to_units"].to_list() == [10.0, 13.0, 16.0]
    assert out["safety_stock_units"].to_list() == [3.0] * 3


def test_a_fractional_lead_time_weighs_its_last_period_and_levels_round_up():
    """L = 1.5: p = 1 sums 1 + 0.5 x 2 = 2, ROP ceil(2 + 3) = 5; p = 2 sums 2 + 0.5 x 3 = 3.5, ROP ceil(6.5) = 7."""
    out = time_phased_parameters(recs(lead_time_periods=1.5), extended({"a": [1, 2, 3, 4, 5]}), periods=2)
    assert out["lead_time_demand"].to_list() == pytest.approx([2.0, 3.5])
    assert out["reorder_point_units"].to_list() == [5.0, 7.0]


def test_a_sku_with_nothing_to_reorder_gets_zeros_but_a_critical_one_keeps_its_levels():
    dead = time_phased_parameters(recs(flag_dead=True), extended({"a": [1, 2, 3, 4]}), periods=2)
    assert dead["reorder_point_units"].to_list() == [0.0, 0.0] and dead["order_up_to_units"].to_list() == [0.0, 0.0]
    critical = time_phased_parameters(recs(flag_dead=True, flag_critical=True), extended({"a": [1, 2, 3, 4]}), periods=2)
    assert critical["reorder_point_units"].to_list() == [6.0, 8.0]


def test_steps_found_by_position_or_by_join_give_the_same_sums():
    """Gapless steps (the forecast's own) are read by row position, steps with a gap by a join: a SKU with a gap
    elsewhere in the forecast (which switches to the join) changes no other SKU's numbers. Rows in any order."""
    rng = random.Random(3)
    series = {f"s{i:02d}": [rng.uniform(0, 9) for _ in range(40)] for i in range(30)}
    plan = pl.concat([recs(unique_id=u, lead_time_periods=rng.uniform(0.5, 9.0)) for u in series])
    gapless = extended(series).sample(fraction=1.0, shuffle=True, seed=1)
    by_position = time_phased_parameters(plan, gapless, periods=12)
    gap = extended({"zz": [1.0] * 20}).filter(pl.col("step") != 5)
    by_join = time_phased_parameters(plan, pl.concat([gapless, gap]), periods=12)
    assert by_position.height == 30 * 12
    assert by_position.equals(by_join)
    # A null step is no step: it sends the lookup to the join, which never pairs it with a window.
    nulled = extended({"c": [100.0, 2.0, 3.0]}).with_columns(step=pl.Series([None, 2, 3], dtype=pl.Int64))
    plan = recs(unique_id="c", lead_time_periods=2.0).select("unique_id", "lead_time_periods")
    sums = _window_sums(nulled, plan, 2, {"lead_time_demand": pl.col("lead_time_periods")})["lead_time_demand"]
    assert sums.rows() == [("c", 1, 2.0), ("c", 2, 5.0)]  # period 1: steps 1 (none) and 2; never the null step's 100
