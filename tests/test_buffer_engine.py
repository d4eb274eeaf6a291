"""The buffer engine end to end on one SKU per branch: fill rate, order quantities, order-up-to level, bootstrap
buffers for intermittent demand, hybrid's expected service level, costs, risks and the textbook baseline."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from scipy import optimize, stats

from buffers.lead_time_demand import bootstrap_lead_time_demand, quantile_column
from buffers.recommend import CAPPED_LEVEL_GRID, recommend
from buffers.safety_stock import normal_loss
from evaluation.replay import (
    Scenario,
    error_share_factor,
    forecast_levels,
    held_out_demand,
    out_of_window_sigma_ratios,
    simulate_recommendations,
    stress_test,
)
from tests.test_buffers import SETTINGS, one, sku


def test_order_up_to_level_covers_review_plus_lead_time():
    # JIT SKU: z(0.80) x sqrt(sigma_{R+L}^2 + d^2 sigma_L^2) = 0.8416 x sqrt(16^2 + 20^2 x 0.5^2) = 0.8416 x 18.87 = 15.88
    row = one(recommend(sku(), SETTINGS))
    buffer = stats.norm.ppf(0.80) * math.sqrt(16**2 + 20**2 * 0.5**2)
    assert buffer == pytest.approx(15.88, abs=0.01)
    assert row["order_up_to_units"] == math.ceil(240 + math.ceil(buffer))
    # No order cost: the order quantity is the demand over the review period, R x d = 7 x 20; min/max around the ROP.
    assert row["economic_order_quantity"] is None and row["order_quantity_units"] == 140
    assert (row["min_units"], row["max_units"]) == (row["reorder_point_units"], row["reorder_point_units"] + 140)
    assert row["safety_stock_method"] == "normal_cycle" and row["service_level_measure"] == "cycle"


def test_economic_order_quantity_with_an_order_cost():
    # D = 20 x 365 = 7300 units/yr, S = 50 per order, H = 2.0 x 0.25 = 0.5 per unit-year: sqrt(2 D S / H) = 1208.3
    row = one(recommend(sku(), SETTINGS.updated({"cost": {"order_cost": 50.0}})))
    assert row["economic_order_quantity"] == pytest.approx(math.sqrt(2 * 7300 * 50 / 0.5))
    assert row["order_quantity_units"] == 1209
    # Capital tied up = (SS + Q/2) x unit cost; turns = annual demand / average stock.
    assert row["capital_tied_up"] == pytest.approx((row["safety_stock_units"] + 1209 / 2) * 2.0)
    assert row["expected_turns"] == pytest.approx(7300 / (row["safety_stock_units"] + 1209 / 2))


def test_fill_rate_target_solves_the_normal_loss_function():
    """B non-critical at a 99% fill rate, JIC through a long lead time: G(k) = (1 - beta) Q / sigma (docs/methods.md)."""
    measures = {"critical": {"A": "cycle", "B": "cycle", "C": "cycle"}, "non_critical": {"A": "cycle", "B": "fill_rate", "C": "cycle"}}
    levels = {"critical": {"A": 0.99, "B": 0.98, "C": 0.97}, "non_critical": {"A": 0.97, "B": 0.99, "C": 0.90}}
    s = SETTINGS.updated({"service_levels": {**levels, "measure": measures}})
    row = one(recommend(sku(lead_time_days=40.0, lead_time_std_days=0.0), s))
    assert row["policy"] == "JIC" and row["service_level_measure"] == "fill_rate"
    # sigma = 10 (no lead-time variance), Q = R x d = 140: G(k) = 0.01 x 140 / 10 = 0.14, solved independently.
    k = optimize.brentq(lambda k: stats.norm.pdf(k) - k * stats.norm.sf(k) - 0.14, -5, 5)
    assert normal_loss(k) == pytest.approx(0.14)
    assert row["safety_factor_z"] == pytest.approx(k, abs=1e-6)
    assert row["safety_stock_units"] == math.ceil(k * 10)
    assert row["safety_stock_method"] == "normal_fill_rate" and "99.0% fill rate" in row["reasons"]
    # A large order quantity meets the fill rate from cycle stock alone: k < 0, never a negative buffer.
    big = one(recommend(sku(lead_time_days=40.0, lead_time_std_days=0.0), s.updated({"cost": {"order_cost": 1e6}})))
    assert big["safety_factor_z"] < 0 and big["safety_stock_units"] == 0


def _sparse_panel(uid: str = "S1", n: int = 400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2) * rng.integers(1, 9, n)
    y[0] = 4
    ds = pl.date_range(dt.date(2025, 1, 1), dt.date(2025, 1, 1) + dt.timedelta(days=n - 1), eager=True)
    return pl.DataFrame({"unique_id": uid, "ds": ds, "y": y.astype(float)})


def test_intermittent_demand_is_buffered_by_the_bootstrap_quantile():
    panel = _sparse_panel()
    skus = sku(demand_class="intermittent", lead_time_days=40.0, lead_time_periods=40.0, lead_time_std_days=4.0, abc_class="A")
    row = one(recommend(skus, SETTINGS, panel))
    assert row["policy"] == "JIC" and row["safety_stock_method"] == "bootstrap_quantile"
    boot = bootstrap_lead_time_demand(
        panel,
        pl.DataFrame({"unique_id": ["S1"], "lead_time_periods": [40.0], "lead_time_std_periods": [4.0]}),
        [0.97],
        seed=SETTINGS.seed,
        n_samples=SETTINGS.buffers.bootstrap_samples,
        history_periods=SETTINGS.bootstrap_history_periods,
    ).row(0, named=True)
    assert row["safety_stock_units"] == math.ceil(boot[quantile_column(0.97)] - boot["bootstrap_mean"] - 1e-9)
    assert "bootstrap" in row["reasons"]
    # Without the demand history the engine falls back to the normal formula, never to nothing.
    assert one(recommend(skus, SETTINGS))["safety_stock_method"] == "normal_cycle"


def test_a_capped_bootstrap_buffer_states_the_level_it_still_covers():
    """The same intermittent SKU (97% target) with mean demand 0.1 a day and the cover capped at 30 days: SS <= 3 units.
    Its expected service is the largest bootstrapped level (the targets and a grid) whose buffer fits in 3 units, below
    the target."""
    panel = _sparse_panel()
    skus = sku(demand_class="intermittent", lead_time_days=40.0, lead_time_periods=40.0, lead_time_std_days=4.0, abc_class="A")
    capped_cfg = SETTINGS.updated({"buffers": {"max_cover_days": 30.0}})
    row = one(recommend(skus.with_columns(mean_demand_per_period=pl.lit(0.1)), capped_cfg, panel))
    assert row["flag_cover_capped"] and row["safety_stock_units"] == 3.0
    levels = sorted({*CAPPED_LEVEL_GRID, *capped_cfg.service_levels.target_levels()})
    boot = bootstrap_lead_time_demand(
        panel,
        pl.DataFrame({"unique_id": ["S1"], "lead_time_periods": [40.0], "lead_time_std_periods": [4.0]}),
        levels,
        seed=SETTINGS.seed,
        n_samples=SETTINGS.buffers.bootstrap_samples,
        history_periods=SETTINGS.bootstrap_history_periods,
    ).row(0, named=True)
    fits = [q for q in levels if max(boot[quantile_column(q)] - boot["bootstrap_mean"], 0.0) <= 3.0]
    assert row["expected_service_level"] == max(fits) < row["service_level_target"] == 0.97
    assert f"expected service {max(fits):.1%}" in row["reasons"]


def test_hybrid_says_how_much_less_than_its_target_it_delivers():
    # Variable error only (Y), everything else benign: hybrid buffers the demand term, not the lead-time term.
    row = one(recommend(sku(volatility_class="variable", error_cv=0.7), SETTINGS))
    assert row["policy"] == "hybrid"
    covered = row["safety_factor_z"] * 10.0 / math.sqrt(10**2 + 20**2 * 0.5**2)
    assert row["expected_service_level"] == pytest.approx(stats.norm.cdf(covered))
    assert row["expected_service_level"] < row["service_level_target"]
    assert "variable part only" in row["reasons"]


def test_obsolescence_risk_and_the_textbook_baseline():
    # A critical SKU with no sale for 120 days keeps its buffer: all of it is capital at risk.
    dead = one(recommend(sku(critical=True, life_cycle="dead", periods_since_last_sale=120), SETTINGS))
    assert dead["flag_obsolescence_risk"] and dead["capital_at_risk"] == dead["safety_stock_value"] > 0
    # Declining: strong trend and a forecast well below last year's rate (7300 / 365 = 20 per day -> 12 now).
    declining = one(recommend(sku(trend_strength=0.8, mean_demand_per_period=12.0), SETTINGS))
    assert declining["flag_declining"] and declining["capital_at_risk"] == declining["safety_stock_value"]
    assert "declining demand" in declining["reasons"]
    steady = one(recommend(sku(trend_strength=0.8), SETTINGS))
    assert not steady["flag_declining"] and steady["capital_at_risk"] == 0
    # Textbook: z x sigma_d x sqrt(L) = 0.8416 x 6 x sqrt(5) = 11.29 -> 12 units.
    assert steady["textbook_safety_stock_units"] == math.ceil(stats.norm.ppf(0.8) * 6 * math.sqrt(5))


def test_held_out_demand_is_right_aligned_on_the_as_of_date():
    panel = pl.concat([_sparse_panel("a", 200), _sparse_panel("b", 50)])
    plan = pl.DataFrame({"unique_id": ["a", "b"], "backtested": [True, False], "windows": [3, 0], "step": [5, 0], "bucket": [10, 0]})
    held = held_out_demand(panel, plan)
    ids, demand = held.ids, held.demand
    # a: (3 - 1) x 5 + 10 = 20 periods; b: at most the longest span
    assert ids == ["a", "b"] and demand.shape == (2, 20)
    assert held.dates == panel.filter(pl.col("unique_id") == "a")["ds"].tail(20).to_list()
    np.testing.assert_array_equal(demand[0], panel.filter(pl.col("unique_id") == "a")["y"].to_numpy()[-20:])
    np.testing.assert_array_equal(demand[1], panel.filter(pl.col("unique_id") == "b")["y"].to_numpy()[-20:])


def _poisson_recs(n: int, mean: float, periods: int, lead: float, review: int, alpha: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(11)
    ds = pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 1, 1) + dt.timedelta(days=periods - 1), eager=True)
    panel = pl.concat([pl.DataFrame({"unique_id": f"s{i:03d}", "ds": ds, "y": rng.poisson(mean, periods).astype(float)}) for i in range(n)])
    exposure = mean * (lead + review)
    recs = pl.DataFrame(
        {
            "unique_id": [f"s{i:03d}" for i in range(n)],
            "order_up_to_units": math.ceil(exposure + stats.norm.ppf(alpha) * math.sqrt(exposure)),
            "order_up_to_jit_units": math.ceil(exposure + stats.norm.ppf(0.8) * math.sqrt(exposure)),
            "order_up_to_jic_units": math.ceil(exposure + stats.norm.ppf(0.99) * math.sqrt(exposure)),
            "review_periods": float(review),
            "lead_time_periods": lead,
            "lead_time_days": lead,
            "lead_time_std_days": 0.0,
            "unit_cost": 2.0,
            "supplier_id": ["s1" if i % 2 else "s2" for i in range(n)],
        }
    )
    return panel, recs


def test_recommendations_replayed_over_poisson_demand_hit_their_cycle_service_level():
    panel, recs = _poisson_recs(n=60, mean=10.0, periods=1500, lead=5.0, review=7, alpha=0.95)
    plan = recs.select("unique_id", backtested=pl.lit(True), windows=pl.lit(1), step=pl.lit(1), bucket=pl.lit(1400))
    sim = simulate_recommendations(recs, panel, plan, seed=5)
    assert 0.93 <= sim["simulated_cycle_service_level"].mean() <= 0.97


def test_stress_test_orders_policies_and_scenarios():
    panel, recs = _poisson_recs(n=40, mean=10.0, periods=400, lead=5.0, review=7, alpha=0.95)
    plan = recs.select("unique_id", backtested=pl.lit(True), windows=pl.lit(1), step=pl.lit(1), bucket=pl.lit(300))
    scenarios = [
        Scenario("baseline", "baseline"),
        Scenario("lead_time_x2", "lead_time", factor=2.0),
        Scenario("outage", "outage", start=50, periods=30, suppliers=("s1",)),
        Scenario("spike", "demand_spike", factor=1.5, start=50, periods=28),
    ]
    table = stress_test(recs, panel, plan, scenarios, seed=5, holding_rate=0.25)
    assert table.height == 12
    fill = {(r["scenario"], r["policy"]): r["simulated_fill_rate"] for r in table.iter_rows(named=True)}
    for scenario in ("baseline", "lead_time_x2", "outage", "spike"):
        assert fill[(scenario, "JIT")] < fill[(scenario, "recommended")] < fill[(scenario, "JIC")]
    for scenario in ("lead_time_x2", "outage", "spike"):
        assert fill[(scenario, "recommended")] < fill[("baseline", "recommended")]
    assert table.filter(pl.col("scenario") == "outage")["skus_hit"].unique().to_list() == [20]
    with pytest.raises(ValueError, match="unknown kind"):
        stress_test(recs, panel, plan, [Scenario("x", "flood")], seed=5, holding_rate=0.25)


def test_the_replay_sizes_each_window_without_having_seen_it():
    """Three windows of one period (L 1, R 0: R + L = 1 step), errors 3, -4
    and 12: sigma over all = sqrt((9 + 16 + 144) / 3) = 7.506; the window with error 12 is replayed with the buffer
    scaled by sigma of the other two, sqrt((9 + 16) / 2) = 3.536, over 7.506 = 0.471. A bootstrap buffer is not scaled."""
    ds = [dt.date(2024, 1, d) for d in range(1, 7)]
    cv = pl.DataFrame(
        {
            "unique_id": ["a"] * 3,
            "cutoff": ds[2:5],
            "step": [1, 1, 1],
            "y": [13.0, 6.0, 22.0],
            "forecast": [10.0, 10.0, 10.0],
        }
    )
    plan = pl.DataFrame({"unique_id": ["a"], "lead_time_periods": [1.0], "review_periods": [0.0]})
    ratios = out_of_window_sigma_ratios(cv, plan).sort("cutoff")["ratio"].to_list()
    full = math.sqrt((9 + 16 + 144) / 3)
    assert ratios == pytest.approx([math.sqrt((16 + 144) / 2) / full, math.sqrt((9 + 144) / 2) / full, math.sqrt(25 / 2) / full])
    panel = pl.DataFrame({"unique_id": "a", "ds": ds, "y": [10.0] * 6})
    held = held_out_demand(panel, pl.DataFrame({"unique_id": ["a"], "backtested": [True], "windows": [3], "step": [1], "bucket": [1]}))
    recs = pl.DataFrame(
        {
            "unique_id": ["a"], "order_up_to_units": [30.0], "review_lead_time_demand": [10.0], "lead_time_periods": [1.0],
            "review_periods": [0.0], "lead_time_days": [1.0], "lead_time_std_days": [0.0], "safety_stock_method": ["normal_cycle"],
        }
    )  # fmt: skip
    levels = forecast_levels(held, recs, cv, "order_up_to_units")[0]
    # Held-out span: the last 3 periods (Jan 4-6), each ordering up to the forecast of the latest origin on or before
    # it (Jan 4: the window cut at Jan 4; Jan 5 and 6: the one cut at Jan 5) + the buffer (30 - 10) x that window's ratio.
    assert held.dates == ds[3:]
    level = [math.ceil(10 + 20 * r - 1e-9) for r in ratios]
    assert levels.tolist() == [level[1], level[2], level[2]] == [34, 20, 20]
    boot = forecast_levels(held, recs.with_columns(safety_stock_method=pl.lit("bootstrap_quantile")), cv, "order_up_to_units")[0]
    assert set(boot.tolist()) == {30.0}


def test_only_the_forecast_error_term_of_a_buffer_is_rescaled_in_the_replay():
    """sigma_e 30, d 10, sigma_L 4 (V = 40^2): a ratio of 0.5 turns sqrt(30^2 + 40^2) = 50 into sqrt(15^2 + 40^2) =
    42.72, factor 0.8544. A hybrid buffering only the lead-time term (stable demand, variable supplier) keeps 1; JIT
    and JIC levels buffer both terms whatever the policy."""
    x = pl.DataFrame(
        {
            "sigma_review_lead_time_demand": [30.0, 30.0],
            "mean_demand_per_period": [10.0, 10.0],
            "lead_time_std_periods": [4.0, 4.0],
            "policy": ["JIC", "hybrid"],
            "flag_variable_error": [False, False],
            "flag_irregular_demand": [False, False],
            "flag_no_backtest": [False, False],
            "flag_moderate_lead_time": [False, False],
            "flag_variable_lead_time": [True, True],
        }
    )
    both = math.sqrt(15**2 + 40**2) / 50
    recommended = x.select(error_share_factor(pl.lit(0.5), "order_up_to_units", x.columns))
    assert recommended.to_series().to_list() == pytest.approx([both, 1.0])
    jic = x.select(error_share_factor(pl.lit(0.5), "order_up_to_jic_units", x.columns))
    assert jic.to_series().to_list() == pytest.approx([both, both])
    assert x.select(error_share_factor(pl.lit(0.5), "order_up_to_units", ["policy"])).item() == 0.5  # no sigma: all error
