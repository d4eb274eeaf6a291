"""Drift between runs (issue 6): the `changes` table from two runs' recommendations, against hand-made runs."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from buffers.drift import CHANGE_KINDS, CHANGES_SCHEMA, REQUIRED, change_counts, compare_runs

PREV = dt.date(2026, 1, 5)
CUR = dt.date(2026, 1, 12)

# A steady JIT SKU: the columns compare_runs reads (REQUIRED), nothing else.
BASE = {
    "location_id": None, "policy": "JIT", "safety_stock_units": 40.0, "demand_class": "smooth", "adi": 1.1, "cv2": 0.2,
    "volatility_class": "stable", "error_cv": 0.4, "life_cycle": "active",
    "reasons": "JIT: stable demand (error CV 0.4), smooth pattern, short reliable lead time (5.0 d), not critical",
}  # fmt: skip


def run(as_of: dt.date, *rows: dict) -> pl.DataFrame:
    """A recommendations table with only the REQUIRED columns, one row per dict (BASE + overrides)."""
    schema = {"as_of": pl.Date, "sku_id": pl.String, "location_id": pl.String, "policy": pl.String, "safety_stock_units": pl.Float64}
    frame = pl.DataFrame([BASE | r | {"as_of": as_of} for r in rows], schema_overrides=schema)
    return frame.select(REQUIRED)


def pairs(changes: pl.DataFrame) -> set[tuple]:
    return set(changes.select("sku_id", "location_id", "change").iter_rows())


def only(changes: pl.DataFrame, sku: str, change: str) -> dict:
    hit = changes.filter(sku_id=sku, change=change)
    assert hit.height == 1, changes
    return hit.row(0, named=True)


def test_three_known_skus_changing_class_give_exactly_those_rows():
    """The issue's drift test at core level: 3 SKUs change class, the others only move their buffer within 25%."""
    erratic_jic = "JIC: erratic demand (error CV 1.3); long lead time (45.0 d >= 30 d)"
    previous = run(
        PREV,
        {"sku_id": "S1"},
        {"sku_id": "S2"},
        {"sku_id": "S3"},
        {"sku_id": "S4"},
        {"sku_id": "S5", "safety_stock_units": 100.0},
        {"sku_id": "S6", "policy": "JIC", "reasons": "JIC: critical item", "safety_stock_units": 12.0},
    )
    current = run(
        CUR,
        {"sku_id": "S1", "demand_class": "intermittent", "adi": 1.6, "cv2": 0.3, "safety_stock_units": 48.0},  # +20%
        {"sku_id": "S2", "volatility_class": "erratic", "error_cv": 1.2},
        {"sku_id": "S3", "demand_class": "lumpy", "adi": 1.9, "cv2": 0.75, "volatility_class": "erratic", "error_cv": 1.3,
         "policy": "JIC", "reasons": erratic_jic, "safety_stock_units": 45.0},  # +12.5%
        {"sku_id": "S4", "adi": 1.2, "cv2": 0.25, "error_cv": 0.45, "safety_stock_units": 30.0},  # -25% exactly
        {"sku_id": "S5", "safety_stock_units": 125.0},  # +25% exactly
        {"sku_id": "S6", "policy": "JIC", "reasons": "JIC: critical item", "safety_stock_units": 12.0},
    )  # fmt: skip
    changes = compare_runs(previous, current)

    assert pairs(changes) == {
        ("S1", None, "demand_class"),
        ("S2", None, "volatility_class"),
        ("S3", None, "demand_class"),
        ("S3", None, "volatility_class"),
        ("S3", None, "policy"),
    }
    assert only(changes, "S1", "demand_class")["reason"] == "demand class smooth -> intermittent (ADI 1.10 -> 1.60, CV2 0.20 -> 0.30)"
    assert only(changes, "S2", "volatility_class")["reason"] == "volatility stable -> erratic (error CV 0.40 -> 1.20)"
    policy = only(changes, "S3", "policy")
    assert policy["reason"] == "policy JIT -> JIC: erratic demand (error CV 1.3); long lead time (45.0 d >= 30 d)"
    assert (policy["before"], policy["after"], policy["buffer_change_pct"]) == ("JIT", "JIC", None)
    assert only(changes, "S3", "demand_class")["reason"] == "demand class smooth -> lumpy (ADI 1.10 -> 1.90, CV2 0.20 -> 0.75)"
    assert changes.select("as_of", "previous_as_of").unique().rows() == [(CUR, PREV)]
    assert change_counts(changes) == {
        "demand_class": 2, "volatility_class": 2, "policy": 1, "life_cycle": 0, "buffer": 0, "new_sku": 0, "dropped_sku": 0,
    }  # fmt: skip


def test_output_columns_types_and_order():
    previous = run(PREV, {"sku_id": "B"}, {"sku_id": "A", "location_id": "L2"}, {"sku_id": "A"})
    current = run(
        CUR,
        {"sku_id": "B", "life_cycle": "dead", "policy": "JIC", "reasons": "JIC: critical item", "safety_stock_units": 0.0},
        {"sku_id": "A", "location_id": "L2", "demand_class": "erratic"},
        {"sku_id": "A", "volatility_class": "variable"},
    )
    changes = compare_runs(previous, current)
    assert changes.schema == pl.Schema(CHANGES_SCHEMA)
    assert changes.select("sku_id", "location_id", "change").rows() == [
        ("A", None, "volatility_class"),
        ("A", "L2", "demand_class"),
        ("B", None, "buffer"),
        ("B", None, "life_cycle"),
        ("B", None, "policy"),
    ]
    assert only(changes, "B", "life_cycle")["reason"] == "life cycle active -> dead"
    assert only(changes, "B", "policy")["reason"] == "policy JIT -> JIC: critical item"


@pytest.mark.parametrize(
    ("before", "after", "row", "pct", "reason"),
    [
        (40.0, 50.0, False, None, None),  # exactly +25%: not "more than"
        (40.0, 30.0, False, None, None),  # exactly -25%
        (1.2, 1.5, False, None, None),  # +25% that float arithmetic makes 25.000000000000007
        (10000.0, 12501.0, True, 25.01, "safety stock 10000 -> 12501 units (+25.0%, more than 25%)"),
        (40.0, 65.0, True, 62.5, "safety stock 40 -> 65 units (+62.5%, more than 25%)"),
        (40.0, 29.0, True, -27.5, "safety stock 40 -> 29 units (-27.5%, more than 25%)"),
        (0.0, 5.0, True, None, "safety stock 0 -> 5 units (from 0)"),
        (5.0, 0.0, True, -100.0, "safety stock 5 -> 0 units (-100.0%, buffer removed)"),
        (0.0, 0.0, False, None, None),
        (12.5, 20.0, True, 60.0, "safety stock 12.5 -> 20 units (+60.0%, more than 25%)"),
        (None, 20.0, False, None, None),  # no buffer computed last time: nothing to compare
    ],
)
def test_buffer_threshold_is_strict_and_zero_is_special(before, after, row, pct, reason):
    changes = compare_runs(run(PREV, {"sku_id": "S", "safety_stock_units": before}), run(CUR, {"sku_id": "S", "safety_stock_units": after}))
    if not row:
        assert changes.is_empty()
        return
    hit = only(changes, "S", "buffer")
    assert changes.height == 1
    assert hit["reason"] == reason
    assert (hit["buffer_change_pct"] is None) == (pct is None)
    if pct is not None:
        assert hit["buffer_change_pct"] == pytest.approx(pct)
    assert float(hit["before"]) == before and float(hit["after"]) == after


def test_buffer_threshold_from_the_argument():
    previous, current = run(PREV, {"sku_id": "S", "safety_stock_units": 100.0}), run(CUR, {"sku_id": "S", "safety_stock_units": 111.0})
    assert compare_runs(previous, current).is_empty()
    changes = compare_runs(previous, current, buffer_change_pct=10.0)
    assert only(changes, "S", "buffer")["reason"] == "safety stock 100 -> 111 units (+11.0%, more than 10%)"
    assert compare_runs(previous, current, buffer_change_pct=11.0).is_empty()


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan])
def test_buffer_change_pct_must_be_positive(bad):
    with pytest.raises(ValueError, match="buffer_change_pct must be > 0"):
        compare_runs(run(PREV, {"sku_id": "S"}), run(CUR, {"sku_id": "S"}), buffer_change_pct=bad)


def test_new_and_dropped_skus():
    previous = run(PREV, {"sku_id": "KEPT"}, {"sku_id": "GONE", "policy": "JIC", "safety_stock_units": 12.0})
    current = run(CUR, {"sku_id": "KEPT"}, {"sku_id": "NEW", "policy": "JIC", "safety_stock_units": 12.0})
    changes = compare_runs(previous, current)
    assert pairs(changes) == {("GONE", None, "dropped_sku"), ("NEW", None, "new_sku")}
    new, gone = only(changes, "NEW", "new_sku"), only(changes, "GONE", "dropped_sku")
    assert (new["before"], new["after"], new["reason"]) == (None, "JIC", "new SKU: JIC, 12 units")
    assert (gone["before"], gone["after"], gone["reason"]) == ("JIC", None, "no longer planned (last seen with JIC, 12 units)")


def test_null_location_matches_null_location_only():
    previous = run(PREV, {"sku_id": "X"}, {"sku_id": "X", "location_id": "L1"}, {"sku_id": "Y"})
    current = run(
        CUR,
        {"sku_id": "X", "demand_class": "erratic"},
        {"sku_id": "X", "location_id": "L1"},
        {"sku_id": "Y", "location_id": "L1"},
    )
    assert pairs(compare_runs(previous, current)) == {
        ("X", None, "demand_class"),
        ("Y", None, "dropped_sku"),
        ("Y", "L1", "new_sku"),
    }


def test_location_column_all_null_with_null_dtype_still_matches():
    # A table built without any location has a Null-typed location_id column; it must still match.
    previous = run(PREV, {"sku_id": "S"}).with_columns(location_id=pl.lit(None))
    current = run(CUR, {"sku_id": "S", "policy": "hybrid", "reasons": None}).with_columns(location_id=pl.lit(None))
    changes = compare_runs(previous, current)
    assert pairs(changes) == {("S", None, "policy")}
    assert only(changes, "S", "policy")["reason"] == "policy JIT -> hybrid"


def test_empty_previous_is_a_first_run_with_no_changes():
    """Choice: no previous run means nothing to compare -> no rows (not every SKU as new_sku)."""
    current = run(CUR, {"sku_id": "A"}, {"sku_id": "B"})
    for previous in (run(PREV, {"sku_id": "A"}).clear(), pl.DataFrame()):
        changes = compare_runs(previous, current)
        assert changes.is_empty()
        assert changes.schema == pl.Schema(CHANGES_SCHEMA)
    assert change_counts(compare_runs(pl.DataFrame(), current)) == dict.fromkeys(CHANGE_KINDS, 0)


def test_empty_current_drops_every_sku():
    changes = compare_runs(run(PREV, {"sku_id": "A"}, {"sku_id": "B"}), run(CUR, {"sku_id": "A"}).clear())
    assert pairs(changes) == {("A", None, "dropped_sku"), ("B", None, "dropped_sku")}
    assert changes.get_column("as_of").null_count() == 2


def test_missing_columns_are_named():
    current = run(CUR, {"sku_id": "A"})
    with pytest.raises(ValueError, match=r"current recommendations table lacks column\(s\) \['adi', 'reasons'\]"):
        compare_runs(run(PREV, {"sku_id": "A"}), current.drop("adi", "reasons"))
    with pytest.raises(ValueError, match=r"previous recommendations table lacks column\(s\) \['error_cv'\]"):
        compare_runs(run(PREV, {"sku_id": "A"}).drop("error_cv"), current)


def test_bad_runs_are_rejected_with_what_failed():
    one = run(CUR, {"sku_id": "A"})
    with pytest.raises(ValueError, match=r"2 rows sharing a \(sku_id, location_id\), e.g. \[\('A', None\)\]"):
        compare_runs(pl.concat([run(PREV, {"sku_id": "A"})] * 2), one)
    with pytest.raises(ValueError, match="must hold one as-of date"):
        compare_runs(pl.concat([run(PREV, {"sku_id": "A"}), run(CUR, {"sku_id": "B"})]), one)
    with pytest.raises(ValueError, match="after the current one"):
        compare_runs(one, run(PREV, {"sku_id": "A"}))


def test_extra_columns_are_ignored_and_inputs_not_modified():
    previous = run(PREV, {"sku_id": "A"}).with_columns(unit_cost=pl.lit(2.0), safety_stock_value=pl.lit(80.0))
    current = run(CUR, {"sku_id": "A", "safety_stock_units": 80.0}).with_columns(unit_cost=pl.lit(2.0), safety_stock_value=pl.lit(160.0))
    before_prev, before_cur = previous.clone(), current.clone()
    changes = compare_runs(previous, current)
    assert pairs(changes) == {("A", None, "buffer")}
    assert previous.equals(before_prev) and current.equals(before_cur)


def test_change_counts_every_kind_and_rejects_unknown():
    assert change_counts(pl.DataFrame(schema=CHANGES_SCHEMA)) == dict.fromkeys(CHANGE_KINDS, 0)
    counts = change_counts(pl.DataFrame({"change": ["buffer", "buffer", "new_sku"]}))
    assert counts == dict.fromkeys(CHANGE_KINDS, 0) | {"buffer": 2, "new_sku": 1}
    assert list(counts) == list(CHANGE_KINDS)
    with pytest.raises(ValueError, match="unknown change kind"):
        change_counts(pl.DataFrame({"change": ["price"]}))
    with pytest.raises(ValueError, match="lacks column 'change'"):
        change_counts(pl.DataFrame({"kind": ["buffer"]}))


def _naive(previous: pl.DataFrame, current: pl.DataFrame, threshold: float) -> dict[tuple, float | None]:
    """Reference: a plain Python loop over SKUs, {(sku, location, change): buffer_change_pct}."""
    prev = {(r["sku_id"], r["location_id"]): r for r in previous.iter_rows(named=True)}
    cur = {(r["sku_id"], r["location_id"]): r for r in current.iter_rows(named=True)}
    out: dict[tuple, float | None] = {}
    for key in prev.keys() - cur.keys():
        out[(*key, "dropped_sku")] = None
    for key in cur.keys() - prev.keys():
        out[(*key, "new_sku")] = None
    for key in prev.keys() & cur.keys():
        p, c = prev[key], cur[key]
        for col in ("demand_class", "volatility_class", "policy", "life_cycle"):
            if p[col] != c[col]:
                out[(*key, col)] = None
        b, a = p["safety_stock_units"], c["safety_stock_units"]
        if b == 0 and a > 0:
            out[(*key, "buffer")] = None
        elif b > 0 and (a == 0 or abs((a - b) / b * 100) > threshold):
            out[(*key, "buffer")] = (a - b) / b * 100
    return out


def test_matches_a_naive_loop_on_a_random_panel():
    rng = np.random.default_rng(7)
    n = 300
    locations = rng.choice(["L1", None], n).tolist()

    def random_run(as_of: dt.date, keep: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "as_of": [as_of] * n,
                "sku_id": [f"S{i:03d}" for i in range(n)],
                "location_id": locations,
                "policy": rng.choice(["JIT", "JIC", "hybrid"], n, p=[0.6, 0.3, 0.1]).tolist(),
                "safety_stock_units": np.where(rng.random(n) < 0.2, 0.0, rng.integers(1, 30, n)).astype(float),
                "demand_class": rng.choice(["smooth", "erratic", "intermittent", "lumpy"], n, p=[0.7, 0.1, 0.1, 0.1]).tolist(),
                "adi": rng.uniform(1, 3, n),
                "cv2": rng.uniform(0, 1, n),
                "volatility_class": rng.choice(["stable", "variable", "erratic"], n, p=[0.7, 0.2, 0.1]).tolist(),
                "error_cv": rng.uniform(0, 2, n),
                "life_cycle": rng.choice(["active", "slow_moving", "dead"], n, p=[0.8, 0.1, 0.1]).tolist(),
                "reasons": ["x"] * n,
            },
            schema_overrides={"location_id": pl.String},
        ).filter(pl.Series(keep))

    previous = random_run(PREV, rng.random(n) < 0.95)
    current = random_run(CUR, rng.random(n) < 0.95)
    changes = compare_runs(previous, current, buffer_change_pct=30.0)
    expected = _naive(previous, current, 30.0)
    got = {(s, loc, ch): pct for s, loc, ch, pct in changes.select("sku_id", "location_id", "change", "buffer_change_pct").iter_rows()}
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)
    assert {k for k, v in change_counts(changes).items() if v} == set(CHANGE_KINDS)
