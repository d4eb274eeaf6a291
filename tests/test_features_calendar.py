"""features.calendar: series keys, the demand panel (calendar fill, as-of cut, complete periods)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.calendar import detect_input_grain, last_complete_period, period_days, series_keys, to_periods

D = dt.date


def sales_frame(rows: list[tuple[str, str | None, dt.date, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"sku_id": pl.String, "location_id": pl.String, "date": pl.Date, "quantity": pl.Float64},
        orient="row",
    )


def panel_frame(rows: list[tuple[str, dt.date, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64}, orient="row")


# ---------------------------------------------------------------- series_keys


def test_series_keys_location_in_key_only_when_present():
    sales = sales_frame(
        [
            ("S2", None, D(2024, 1, 1), 1.0),
            ("S1", "L1", D(2024, 1, 1), 1.0),
            ("S1", None, D(2024, 1, 2), 1.0),
            ("S1", "L1", D(2024, 1, 3), 2.0),
        ]
    )
    expected = pl.DataFrame(
        {"unique_id": ["S1", "S1\x1fL1", "S2"], "sku_id": ["S1", "S1", "S2"], "location_id": [None, "L1", None]},
        schema={"unique_id": pl.String, "sku_id": pl.String, "location_id": pl.String},
    )
    assert_frame_equal(series_keys(sales), expected)


def test_series_keys_all_null_location_column_of_null_dtype():
    sales = pl.DataFrame({"sku_id": ["B", "A", "B"], "location_id": [None, None, None], "date": [D(2024, 1, 1)] * 3, "quantity": [1.0] * 3})
    keys = series_keys(sales)
    assert keys["unique_id"].to_list() == ["A", "B"]
    assert keys.schema["location_id"] == pl.String


# ---------------------------------------------------------------- period_days


def test_period_days():
    assert period_days("D") == 1.0
    assert period_days("W") == 7.0
    assert period_days("M") == 365.25 / 12
    with pytest.raises(ValueError, match="freq"):
        period_days("Q")  # type: ignore[arg-type]


# ---------------------------------------------------------------- to_periods: daily


def test_daily_fill_sums_order_lines_drops_leading_keeps_trailing_zeros_and_cuts_at_as_of():
    sales = sales_frame(
        [
            ("A", None, D(2024, 1, 1), 0.0),  # a zero before the first sale: not demand
            ("A", None, D(2024, 1, 3), 2.0),  # two order lines the same day
            ("A", None, D(2024, 1, 3), 3.0),
            ("A", None, D(2024, 1, 5), 4.0),
            ("A", None, D(2024, 1, 9), 7.0),  # after as_of: ignored
        ]
    )
    panel = to_periods(sales, freq="D", as_of=D(2024, 1, 7), week_start="mon", input_grain="auto")
    expected = panel_frame(
        [
            ("A", D(2024, 1, 3), 5.0),
            ("A", D(2024, 1, 4), 0.0),
            ("A", D(2024, 1, 5), 4.0),
            ("A", D(2024, 1, 6), 0.0),
            ("A", D(2024, 1, 7), 0.0),
        ]
    )
    assert_frame_equal(panel, expected)


def test_series_without_nonzero_sale_up_to_as_of_has_no_rows():
    sales = sales_frame(
        [
            ("ZERO", None, D(2024, 1, 2), 0.0),
            ("LATE", None, D(2024, 1, 9), 3.0),  # first sale after as_of
            ("OK", "L1", D(2024, 1, 7), 1.0),  # sale on as_of itself: kept
        ]
    )
    panel = to_periods(sales, freq="D", as_of=D(2024, 1, 7), week_start="mon", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("OK\x1fL1", D(2024, 1, 7), 1.0)]))


def test_location_id_is_part_of_the_key():
    sales = sales_frame(
        [
            ("S", None, D(2024, 1, 1), 1.0),
            ("S", "L1", D(2024, 1, 2), 2.0),
            ("S", "L1", D(2024, 1, 2), 1.0),
        ]
    )
    panel = to_periods(sales, freq="D", as_of=D(2024, 1, 2), week_start="mon", input_grain="auto")
    expected = panel_frame([("S", D(2024, 1, 1), 1.0), ("S", D(2024, 1, 2), 0.0), ("S\x1fL1", D(2024, 1, 2), 3.0)])
    assert_frame_equal(panel, expected)


def test_empty_sales_give_an_empty_panel_with_the_schema():
    panel = to_periods(sales_frame([]), freq="W", as_of=D(2024, 1, 7), week_start="mon", input_grain="auto")
    assert panel.schema == pl.Schema({"unique_id": pl.String, "ds": pl.Date, "y": pl.Float64})
    assert panel.height == 0


def test_input_is_not_mutated_and_missing_column_is_named():
    sales = sales_frame([("A", None, D(2024, 1, 3), 2.0)])
    before = sales.clone()
    to_periods(sales, freq="D", as_of=D(2024, 1, 7), week_start="mon", input_grain="auto")
    series_keys(sales)
    assert_frame_equal(sales, before)
    with pytest.raises(ValueError, match="quantity"):
        to_periods(sales.drop("quantity"), freq="D", as_of=D(2024, 1, 7), week_start="mon", input_grain="auto")
    with pytest.raises(ValueError, match="week_start"):
        to_periods(sales, freq="W", as_of=D(2024, 1, 7), week_start="someday", input_grain="auto")


# ---------------------------------------------------------------- to_periods: weekly

WEEKLY_SALES = [
    ("A", None, D(2024, 1, 6), 1.0),  # Saturday
    ("A", None, D(2024, 1, 7), 2.0),  # Sunday
    ("A", None, D(2024, 1, 8), 4.0),  # Monday
]


def test_weekly_monday_weeks():
    # 2024-01-01 is a Monday; as_of Sunday 21 January closes the week of the 15th.
    panel = to_periods(sales_frame(WEEKLY_SALES), freq="W", as_of=D(2024, 1, 21), week_start="mon", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("A", D(2024, 1, 1), 3.0), ("A", D(2024, 1, 8), 4.0), ("A", D(2024, 1, 15), 0.0)]))


def test_weekly_sunday_weeks_and_incomplete_last_week_dropped():
    # Sunday weeks: 31 Dec-6 Jan, 7-13 Jan, 14-20 Jan; 21-27 Jan is cut short by as_of 21 Jan: dropped.
    panel = to_periods(sales_frame(WEEKLY_SALES), freq="W", as_of=D(2024, 1, 21), week_start="sun", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("A", D(2023, 12, 31), 1.0), ("A", D(2024, 1, 7), 6.0), ("A", D(2024, 1, 14), 0.0)]))


def test_weekly_incomplete_week_dropped_with_its_sales():
    sales = sales_frame([*WEEKLY_SALES, ("A", None, D(2024, 1, 16), 9.0), ("NEW", None, D(2024, 1, 16), 5.0)])
    # as_of Saturday 20 January: the Monday week of the 15th ends on the 21st, so the last week is the 8th.
    panel = to_periods(sales, freq="W", as_of=D(2024, 1, 20), week_start="mon", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("A", D(2024, 1, 1), 3.0), ("A", D(2024, 1, 8), 4.0)]))


@pytest.mark.parametrize(
    ("as_of", "week_start", "expected"),
    [
        (D(2024, 1, 7), "mon", D(2024, 1, 1)),  # Sunday closes a Monday week
        (D(2024, 1, 6), "mon", D(2023, 12, 25)),
        (D(2024, 1, 1), "mon", D(2023, 12, 25)),
        (D(2024, 1, 6), "sun", D(2023, 12, 31)),  # Saturday closes a Sunday week
        (D(2024, 1, 7), "sun", D(2023, 12, 31)),
        (D(2024, 1, 9), "wed", D(2024, 1, 3)),  # Tuesday closes a Wednesday week
        (D(2024, 1, 10), "wed", D(2024, 1, 3)),
    ],
)
def test_last_complete_week(as_of, week_start, expected):
    assert last_complete_period(as_of, "W", week_start=week_start) == expected


# ---------------------------------------------------------------- to_periods: monthly


def test_monthly_first_of_month_and_gaps():
    sales = sales_frame(
        [
            ("A", None, D(2024, 1, 15), 1.0),
            ("A", None, D(2024, 1, 31), 2.0),
            ("A", None, D(2024, 3, 10), 5.0),
        ]
    )
    panel = to_periods(sales, freq="M", as_of=D(2024, 4, 30), week_start="mon", input_grain="auto")
    expected = panel_frame([("A", D(2024, 1, 1), 3.0), ("A", D(2024, 2, 1), 0.0), ("A", D(2024, 3, 1), 5.0), ("A", D(2024, 4, 1), 0.0)])
    assert_frame_equal(panel, expected)
    # One day short of the end of April: April is incomplete and dropped.
    assert_frame_equal(to_periods(sales, freq="M", as_of=D(2024, 4, 29), week_start="mon", input_grain="auto"), expected.head(3))


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (D(2024, 2, 29), D(2024, 2, 1)),  # leap-year February ends on the 29th
        (D(2024, 2, 28), D(2024, 1, 1)),
        (D(2023, 2, 28), D(2023, 2, 1)),
        (D(2024, 1, 15), D(2023, 12, 1)),  # across a year boundary
        (D(2024, 12, 31), D(2024, 12, 1)),
    ],
)
def test_last_complete_month(as_of, expected):
    assert last_complete_period(as_of, "M") == expected


# ---------------------------------------------------------------- against a naive per-series loop


def _naive_start(day: dt.date, freq: str, week_start: str) -> dt.date:
    if freq == "D":
        return day
    if freq == "W":
        wanted = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].index(week_start)
        while day.weekday() != wanted:
            day -= dt.timedelta(days=1)
        return day
    return D(day.year, day.month, 1)


def _naive_next(start: dt.date, freq: str) -> dt.date:
    if freq == "D":
        return start + dt.timedelta(days=1)
    if freq == "W":
        return start + dt.timedelta(days=7)
    return D(start.year + start.month // 12, start.month % 12 + 1, 1)


def _naive_to_periods(rows, freq: str, as_of: dt.date, week_start: str) -> list[tuple[str, dt.date, float]]:
    # The last complete period, found by walking day by day.
    last = None
    start = _naive_start(D(2000, 1, 3), freq, week_start)
    while True:
        nxt = _naive_next(start, freq)
        if nxt - dt.timedelta(days=1) > as_of:
            break
        last, start = start, nxt
    sums: dict[str, dict[dt.date, float]] = defaultdict(lambda: defaultdict(float))
    for sku, loc, day, qty in rows:
        uid = sku if loc is None else f"{sku}\x1f{loc}"
        if day <= as_of and _naive_start(day, freq, week_start) <= last:
            sums[uid][_naive_start(day, freq, week_start)] += qty
    out = []
    for uid in sorted(sums):
        nonzero = sorted(p for p, v in sums[uid].items() if v != 0)
        if not nonzero:
            continue
        period = nonzero[0]
        while period <= last:
            out.append((uid, period, sums[uid].get(period, 0.0)))
            period = _naive_next(period, freq)
    return out


def _random_sales(seed: int, n_series: int = 200) -> list[tuple[str, str | None, dt.date, float]]:
    rng = np.random.default_rng(seed)
    rows = []
    base = D(2023, 10, 1)
    for i in range(n_series):
        sku = f"S{i // 2:03d}"
        loc = None if i % 2 == 0 else f"L{i % 3}"
        first = int(rng.integers(0, 200))
        n_lines = int(rng.integers(0, 30))
        for _ in range(n_lines):
            day = base + dt.timedelta(days=first + int(rng.integers(0, 150)))
            qty = float(rng.integers(0, 20)) if rng.random() < 0.8 else 0.0
            rows.append((sku, loc, day, qty))
    return rows


@pytest.mark.parametrize(
    ("freq", "week_start", "as_of"),
    [
        ("D", "mon", D(2024, 3, 15)),
        ("W", "mon", D(2024, 3, 15)),
        ("W", "sun", D(2024, 3, 16)),
        ("W", "thu", D(2024, 3, 20)),
        ("M", "mon", D(2024, 3, 15)),
        ("M", "mon", D(2024, 3, 31)),
    ],
)
def test_to_periods_matches_naive_loop(freq, week_start, as_of):
    rows = _random_sales(seed=7)
    panel = to_periods(sales_frame(rows), freq=freq, as_of=as_of, week_start=week_start, input_grain="auto")
    expected = panel_frame(_naive_to_periods(rows, freq, as_of, week_start))
    assert panel.height > 100
    assert_frame_equal(panel, expected)


def test_series_keys_never_collide_across_sku_and_location():
    """SKU "A@1" with no location and SKU "A" at location "1" are two series."""
    sales = pl.DataFrame(
        {"sku_id": ["A@1", "A"], "location_id": [None, "1"], "date": [D(2024, 1, 1)] * 2, "quantity": [1.0, 2.0]},
        schema_overrides={"location_id": pl.String},
    )
    keys = series_keys(sales)
    assert keys.height == 2 and keys["unique_id"].n_unique() == 2
    assert to_periods(sales, freq="D", as_of=D(2024, 1, 1), week_start="mon", input_grain="auto")["y"].sort().to_list() == [1.0, 2.0]


# ---------------------------------------------------------------- input already at weekly or monthly grain

MONDAYS = [D(2024, 1, 1), D(2024, 1, 8), D(2024, 1, 15), D(2024, 1, 22)]


def test_weekly_grain_dated_mondays_keeps_the_as_of_week():
    sales = sales_frame([("A", None, day, float(i + 1)) for i, day in enumerate(MONDAYS)] + [("B", "L1", D(2024, 1, 22), 5.0)])
    assert detect_input_grain(sales["date"], "W") == "period"
    panel = to_periods(sales, freq="W", as_of=D(2024, 1, 22), week_start="mon", input_grain="auto")
    expected = panel_frame([*[("A", day, float(i + 1)) for i, day in enumerate(MONDAYS)], ("B\x1fL1", D(2024, 1, 22), 5.0)])
    assert_frame_equal(panel, expected)
    # Read as daily rows, the week of the 22nd has one day of history and is dropped, with series B.
    assert_frame_equal(to_periods(sales, freq="W", as_of=D(2024, 1, 22), input_grain="daily", week_start="mon"), expected.head(3))


def test_weekly_grain_dated_sundays_maps_to_the_monday_week_that_ends_there():
    sundays = [day + dt.timedelta(days=6) for day in MONDAYS]  # week-ending convention: 7, 14, 21, 28 Jan
    sales = sales_frame([("A", None, day, float(i + 1)) for i, day in enumerate(sundays)])
    assert detect_input_grain(sales["date"], "W") == "period"
    panel = to_periods(sales, freq="W", as_of=sundays[-1], week_start="mon", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("A", day, float(i + 1)) for i, day in enumerate(MONDAYS)]))
    # as_of on the Saturday before the last Sunday: that week's row is dated after as_of but stands for the
    # week containing as_of, which is complete at period grain: kept.
    assert_frame_equal(to_periods(sales, freq="W", as_of=D(2024, 1, 27), week_start="mon", input_grain="auto"), panel)
    # as_of a week earlier: the last week is a later period and is left out.
    assert_frame_equal(to_periods(sales, freq="W", as_of=D(2024, 1, 21), week_start="mon", input_grain="auto"), panel.head(3))


def test_monthly_grain_dated_the_first_keeps_the_as_of_month():
    firsts = [D(2024, 1, 1), D(2024, 2, 1), D(2024, 4, 1)]
    sales = sales_frame([("A", None, day, q) for day, q in zip(firsts, [3.0, 4.0, 6.0], strict=True)])
    assert detect_input_grain(sales["date"], "M") == "period"
    panel = to_periods(sales, freq="M", as_of=D(2024, 4, 1), week_start="mon", input_grain="auto")
    expected = panel_frame([("A", D(2024, 1, 1), 3.0), ("A", D(2024, 2, 1), 4.0), ("A", D(2024, 3, 1), 0.0), ("A", D(2024, 4, 1), 6.0)])
    assert_frame_equal(panel, expected)
    assert_frame_equal(to_periods(sales, freq="M", as_of=D(2024, 4, 1), input_grain="daily", week_start="mon"), expected.head(3))


def test_monthly_grain_dated_month_ends():
    month_ends = [D(2023, 12, 31), D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]  # different days of the month
    sales = sales_frame([("A", None, day, float(i + 1)) for i, day in enumerate(month_ends)])
    assert detect_input_grain(sales["date"], "M") == "period"
    expected = panel_frame([("A", day.replace(day=1), float(i + 1)) for i, day in enumerate(month_ends)])
    assert_frame_equal(to_periods(sales, freq="M", as_of=D(2024, 3, 31), week_start="mon", input_grain="auto"), expected)
    # as_of mid-March: the row dated 31 March stands for March, the month containing as_of: kept.
    assert_frame_equal(to_periods(sales, freq="M", as_of=D(2024, 3, 15), week_start="mon", input_grain="auto"), expected)
    # Read as daily rows, mid-March cuts March short and the 31st is after as_of.
    assert_frame_equal(to_periods(sales, freq="M", as_of=D(2024, 3, 15), input_grain="daily", week_start="mon"), expected.head(3))


def test_mixed_weekdays_are_daily():
    sales = sales_frame([("A", None, D(2024, 1, 1), 1.0), ("A", None, D(2024, 1, 9), 2.0), ("A", None, D(2024, 1, 15), 3.0)])
    assert detect_input_grain(sales["date"], "W") == "daily"
    assert detect_input_grain(sales["date"], "M") == "daily"
    # Daily rules: the week of the 15th is cut short by as_of and dropped.
    panel = to_periods(sales, freq="W", as_of=D(2024, 1, 15), week_start="mon", input_grain="auto")
    assert_frame_equal(panel, panel_frame([("A", D(2024, 1, 1), 1.0), ("A", D(2024, 1, 8), 2.0)]))
    assert_frame_equal(panel, to_periods(sales, freq="W", as_of=D(2024, 1, 15), input_grain="daily", week_start="mon"))


@pytest.mark.parametrize(
    ("dates", "freq", "expected"),
    [
        ([D(2024, 1, 1)], "W", "daily"),  # one distinct date: nothing to go by
        ([D(2024, 1, 1), D(2024, 1, 1)], "W", "daily"),
        ([D(2024, 1, 3), D(2024, 1, 17), None], "W", "period"),  # any fixed weekday; nulls ignored
        ([D(2024, 1, 15), D(2024, 2, 15)], "M", "period"),  # any fixed day of the month
        ([D(2024, 1, 30), D(2024, 2, 29)], "M", "daily"),  # 30 January is not a month end
        ([D(2024, 1, 1), D(2024, 1, 8)], "M", "daily"),
        ([D(2024, 1, 1), D(2024, 2, 1)], "D", "daily"),
        ([], "M", "daily"),
    ],
)
def test_detect_input_grain(dates, freq, expected):
    assert detect_input_grain(pl.Series("date", dates, dtype=pl.Date), freq) == expected


def test_detect_input_grain_accepts_datetimes_and_names_a_bad_freq():
    stamps = pl.Series([dt.datetime(2024, 1, 1, 9), dt.datetime(2024, 1, 8, 17)])
    assert detect_input_grain(stamps, "W") == "period"
    with pytest.raises(ValueError, match="freq"):
        detect_input_grain(stamps, "Q")  # type: ignore[arg-type]


def test_explicit_input_grain_overrides_auto():
    mondays = sales_frame([("A", None, day, 1.0) for day in MONDAYS])
    assert to_periods(mondays, freq="W", as_of=MONDAYS[-1], input_grain="daily", week_start="mon")["ds"].max() == MONDAYS[-2]
    # Daily-looking rows forced to period grain: the week containing as_of (Wednesday 17th) is kept.
    mixed = sales_frame([("A", None, D(2024, 1, 2), 1.0), ("A", None, D(2024, 1, 10), 2.0), ("A", None, D(2024, 1, 17), 4.0)])
    panel = to_periods(mixed, freq="W", as_of=D(2024, 1, 17), input_grain="period", week_start="mon")
    assert_frame_equal(panel, panel_frame([("A", D(2024, 1, 1), 1.0), ("A", D(2024, 1, 8), 2.0), ("A", D(2024, 1, 15), 4.0)]))
    with pytest.raises(ValueError, match="input_grain"):
        to_periods(mixed, freq="W", as_of=D(2024, 1, 17), input_grain="weekly", week_start="mon")  # type: ignore[arg-type]


def test_freq_d_ignores_input_grain():
    sales = sales_frame([("A", None, day, 1.0) for day in MONDAYS])
    daily = to_periods(sales, freq="D", as_of=D(2024, 1, 20), week_start="mon", input_grain="auto")
    assert daily["ds"].max() == D(2024, 1, 20)
    for grain in ("auto", "daily", "period"):
        assert_frame_equal(to_periods(sales, freq="D", as_of=D(2024, 1, 20), input_grain=grain, week_start="mon"), daily)


def _period_end(day: dt.date, freq: str, week_start: str) -> dt.date:
    return _naive_next(_naive_start(day, freq, week_start), freq) - dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("freq", "week_start", "as_of"),
    [
        ("W", "mon", D(2024, 3, 13)),
        ("W", "sun", D(2024, 3, 16)),
        ("W", "thu", D(2024, 3, 20)),
        ("M", "mon", D(2024, 3, 1)),
        ("M", "mon", D(2024, 2, 14)),
    ],
)
def test_period_grain_is_daily_rules_with_as_of_at_the_end_of_its_period(freq, week_start, as_of):
    rows = _random_sales(seed=11)
    sales = sales_frame(rows)
    period = to_periods(sales, freq=freq, as_of=as_of, week_start=week_start, input_grain="period")
    expected = to_periods(sales, freq=freq, as_of=_period_end(as_of, freq, week_start), week_start=week_start, input_grain="daily")
    assert period.height > 100
    assert period["ds"].max() == _naive_start(as_of, freq, week_start)
    assert_frame_equal(period, expected)
