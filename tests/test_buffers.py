"""Safety stock, rounding and policy rules against hand-worked numbers (docs/methods.md)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from buffers.policy import FLAG_COLUMNS
from buffers.recommend import recommend
from buffers.safety_stock import k_for_fill_rate, normal_loss, round_up_units, sigma_total, z_for_cycle_service_level
from configs.schema import BuffercastConfig

# Daily periods, the default targets (A/B/C: 99/98/97% critical, 97/95/90% otherwise; JIT 80%), holding 25% a year,
# JIT at most 7 days and lead-time CV 0.2, JIC from 30 days or CV 0.5: the config's defaults, stated in configs/schema.py.
SETTINGS = BuffercastConfig(seed=0)

# A SKU every factor calls JIT: smooth, stable error, 5-day reliable lead time, not critical.
JIT_SKU = {
    "unique_id": "S1", "demand_class": "smooth", "adi": 1.0, "cv2": 0.1, "error_cv": 0.3, "volatility_class": "stable",
    "abc_class": "B", "critical": False, "lead_time_days": 5.0, "lead_time_std_days": 0.5, "mean_demand_per_period": 20.0,
    "lead_time_demand": 100.0, "sigma_lead_time_demand": 10.0, "unit_cost": 2.0, "pack_size": None, "in_sku_master": True,
    "model_fell_back": False, "life_cycle": "active", "periods_since_last_sale": 0, "lead_time_periods": 5.0, "review_periods": 7.0,
    "review_lead_time_demand": 240.0, "sigma_review_lead_time_demand": 16.0, "std_demand": 6.0, "annual_units": 7300.0,
    "trend_strength": 0.1,
}  # fmt: skip


def sku(**changes) -> pl.DataFrame:
    return pl.DataFrame([JIT_SKU | changes], schema_overrides={"pack_size": pl.Float64})


def one(df: pl.DataFrame) -> dict:
    assert df.height == 1
    return df.row(0, named=True)


def test_z_is_the_normal_quantile():
    assert z_for_cycle_service_level(0.95) == pytest.approx(1.6448536, abs=1e-7)
    assert z_for_cycle_service_level(0.5) == 0.0
    np.testing.assert_allclose(z_for_cycle_service_level([0.9, 0.99]), stats.norm.ppf([0.9, 0.99]))
    with pytest.raises(ValueError):
        z_for_cycle_service_level(1.0)


def test_safety_stock_hand_worked_with_lead_time_variability():
    # CSL 95%, sigma_LT 10, L 4, d 20, sigma_L 1: SS = 1.6449 x sqrt(10^2 + 20^2 x 1^2) = 1.6449 x sqrt(500) = 36.78
    frame = pl.DataFrame({"s": [10.0], "d": [20.0], "sl": [1.0]})
    sig = frame.select(sigma_total(pl.col("s"), pl.col("d"), pl.col("sl"))).item()
    assert sig == pytest.approx(math.sqrt(500))
    assert stats.norm.ppf(0.95) * sig == pytest.approx(36.78, abs=0.005)
    # The power is a power (not XOR) and sigma_L multiplies d, not sqrt(L).
    assert frame.select(sigma_total(pl.col("s"), pl.col("d"), pl.lit(0.0))).item() == 10.0


def test_recommendation_uses_the_formula_and_rounds_up():
    # JIC (critical) at A-critical 99%: z = 2.3263, sigma = sqrt(10^2 + 20^2 x 1^2), SS = 52.02 -> 53 units.
    rec = one(recommend(sku(critical=True, abc_class="A", lead_time_std_days=1.0), SETTINGS))
    assert rec["policy"] == "JIC"
    assert rec["service_level_target"] == 0.99
    expected = stats.norm.ppf(0.99) * math.sqrt(100 + 400)
    assert expected == pytest.approx(52.02, abs=0.01)
    assert rec["safety_stock_units"] == 53.0
    assert rec["reorder_point_units"] == 153.0  # 100 + 53
    assert rec["safety_stock_value"] == 106.0
    assert rec["holding_cost_per_year"] == pytest.approx(26.5)


def test_fill_rate_safety_factor_solves_the_loss_function():
    # beta 98%, Q 100, sigma 20: G(k) = 0.02 x 100 / 20 = 0.1 -> k = 0.9024 (tables: G(0.90) = 0.1004)
    k = k_for_fill_rate(0.98, 100.0, 20.0)
    assert normal_loss(k) == pytest.approx(0.1, abs=1e-10)
    assert float(k) == pytest.approx(0.9024, abs=1e-4)
    ks = k_for_fill_rate(np.array([0.95, 0.999]), np.array([50.0, 1000.0]), np.array([10.0, 5.0]))
    np.testing.assert_allclose(normal_loss(ks), [0.25, 0.2], atol=1e-10)
    assert float(k_for_fill_rate(0.98, 100.0, 0.0)) == 0.0
    # G(0) = phi(0) = 0.3989
    assert float(normal_loss(0.0)) == pytest.approx(1 / math.sqrt(2 * math.pi))


@pytest.mark.parametrize(
    ("units", "pack", "expected"),
    [(36.78, None, 37.0), (36.0, None, 36.0), (36.0 + 1e-12, None, 36.0), (-4.2, None, 0.0), (0.0, None, 0.0),
     (37.0, 12.0, 48.0), (36.0, 12.0, 36.0), (0.2, 6.0, 6.0), (5.0, 1.0, 5.0)],
)  # fmt: skip
def test_round_up_units(units, pack, expected):
    frame = pl.DataFrame({"u": [units], "p": [pack]}, schema={"u": pl.Float64, "p": pl.Float64})
    got = frame.select(round_up_units(pl.col("u"), pl.col("p"))).item()
    assert got == expected


def test_round_up_units_never_gives_a_negative_zero():
    """ceil(0 - 1e-9) is -0.0; polars folds `x + 0.0` away, so the sign must be cleared another way."""
    frame = pl.DataFrame(
        {"u": [0.0, -1e-12, 1e-10, -4.2, 0.5], "p": [None, 6.0, None, 12.0, None]}, schema={"u": pl.Float64, "p": pl.Float64}
    )
    out = frame.select(whole=round_up_units(pl.col("u")), packed=round_up_units(pl.col("u"), pl.col("p")))
    for column in out.columns:
        values = out[column].to_numpy()
        assert not (np.signbit(values) & (values == 0)).any(), (column, values)
    assert out["whole"].to_list() == [0.0, 0.0, 0.0, 0.0, 1.0]


RULES = [
    # (change, policy, flag, words in the reasons)
    ({}, "JIT", None, "stable demand"),
    ({"critical": True}, "JIC", "flag_critical", "critical item"),
    ({"lead_time_days": 45.0, "lead_time_std_days": 2.0}, "JIC", "flag_long_lead_time", "long lead time (45.0 d >= 30 d)"),
    ({"lead_time_std_days": 3.0}, "JIC", "flag_unreliable_lead_time", "unreliable lead time (std/mean 0.6 >= 0.5)"),
    ({"volatility_class": "erratic", "error_cv": 1.3}, "JIC", "flag_erratic_error", "erratic demand (error CV 1.3)"),
    ({"demand_class": "lumpy", "adi": 2.0, "cv2": 0.8}, "JIC", "flag_lumpy_demand", "lumpy demand (ADI 2.0, CV2 0.8)"),
    ({"lead_time_days": 14.0, "lead_time_std_days": 1.0}, "hybrid", "flag_moderate_lead_time", "lead time 14.0 d > 7 d"),
    ({"lead_time_std_days": 1.5}, "hybrid", "flag_variable_lead_time", "variable lead time (std/mean 0.3)"),
    ({"volatility_class": "variable", "error_cv": 0.7}, "hybrid", "flag_variable_error", "variable demand (error CV 0.7)"),
    ({"demand_class": "intermittent", "adi": 1.5, "cv2": 0.2}, "hybrid", "flag_irregular_demand", "intermittent demand pattern"),
    # Sizes that vary (SBC erratic) but a stable forecast error: the forecast explains them (season, trend): no flag.
    ({"demand_class": "erratic", "cv2": 0.6}, "JIT", None, "sizes vary (CV2 0.6) but the forecast explains it (error CV 0.3, stable)"),
    ({"volatility_class": "not_backtested", "error_cv": None}, "hybrid", "flag_no_backtest", "too little history"),
]


@pytest.mark.parametrize(("change", "policy", "flag", "reason"), RULES)
def test_policy_rules_one_sku_per_rule(change, policy, flag, reason):
    rec = one(recommend(sku(**change), SETTINGS))
    assert rec["policy"] == policy
    assert rec["reasons"].startswith(f"{policy}: ")
    assert reason in rec["reasons"]
    raised = [f for f in FLAG_COLUMNS if rec[f]]
    assert raised == ([flag] if flag else [])


def test_erratic_sizes_count_as_irregular_only_when_the_forecast_cannot_explain_them():
    """SBC erratic (CV2 0.6 >= 0.49) with a variable error (CV 0.7): irregular and variable, a hybrid; the same sizes
    with a stable error (a seasonal series the model follows) leave no flag: JIT, and the reasons say why."""
    unexplained = one(recommend(sku(demand_class="erratic", cv2=0.6, volatility_class="variable", error_cv=0.7), SETTINGS))
    assert unexplained["policy"] == "hybrid"
    assert [f for f in FLAG_COLUMNS if unexplained[f]] == ["flag_variable_error", "flag_irregular_demand"]
    assert "erratic demand pattern (ADI" in unexplained["reasons"]
    explained = one(recommend(sku(demand_class="erratic", cv2=0.6), SETTINGS))
    assert explained["policy"] == "JIT" and not explained["flag_irregular_demand"]
    assert "stable demand (error CV 0.3), erratic pattern" in explained["reasons"]


@pytest.mark.parametrize("forced", ["JIT", "hybrid", "JIC"])
def test_policy_force_gives_every_sku_one_policy_but_dead_skus_no_buffer(forced):
    cfg = SETTINGS.updated({"policy": {"force": forced}})
    critical = one(recommend(sku(critical=True), cfg))
    benign = one(recommend(sku(), cfg))
    dead = one(recommend(sku(life_cycle="dead", periods_since_last_sale=120), cfg))
    assert (critical["policy"], benign["policy"], dead["policy"]) == (forced, forced, "JIT")
    assert f"policy forced to {forced} by the config (policy.force)" in benign["reasons"]
    assert "stable demand" not in benign["reasons"] and dead["safety_stock_units"] == 0.0
    # The flags still say what the SKU is: the critical one keeps its flag.
    assert critical["flag_critical"] and not benign["flag_critical"]


def test_jit_buffer_is_minimal_and_hybrid_buffers_only_the_variable_part():
    jit = one(recommend(sku(), SETTINGS))
    assert jit["service_level_target"] == 0.80
    sigma = math.sqrt(10.0**2 + 20.0**2 * 0.5**2)
    assert jit["safety_stock_units"] == math.ceil(stats.norm.ppf(0.80) * sigma)

    # Variable lead time only: the buffer covers d x sigma_L, not the (stable) demand error.
    lt_only = one(recommend(sku(lead_time_std_days=1.5), SETTINGS))
    assert lt_only["policy"] == "hybrid"
    assert lt_only["safety_stock_units"] == math.ceil(stats.norm.ppf(0.95) * 20.0 * 1.5)
    # Variable demand only (reliable supplier): the buffer covers the demand error, not the lead-time term.
    demand_only = one(recommend(sku(volatility_class="variable", error_cv=0.7), SETTINGS))
    assert demand_only["safety_stock_units"] == math.ceil(stats.norm.ppf(0.95) * 10.0)
    # JIC covers both terms at the matrix level.
    jic = one(recommend(sku(critical=True), SETTINGS))
    assert jic["safety_stock_units"] == math.ceil(stats.norm.ppf(0.98) * sigma)


def test_buffers_never_negative_and_missing_master_is_a_reason():
    rec = one(recommend(sku(sigma_lead_time_demand=0.0, lead_time_std_days=0.0, in_sku_master=False), SETTINGS))
    assert rec["safety_stock_units"] == 0.0
    assert rec["reorder_point_units"] == 100.0
    assert "not in the SKU master" in rec["reasons"]


def test_pack_size_rounds_the_buffer_up():
    rec = one(recommend(sku(critical=True, pack_size=24.0), SETTINGS))
    assert rec["safety_stock_units"] % 24 == 0
    assert rec["safety_stock_units"] >= stats.norm.ppf(0.98) * math.sqrt(10.0**2 + 20.0**2 * 0.5**2)


def test_dead_skus_get_no_buffer_unless_critical():
    dead = one(recommend(sku(life_cycle="dead", periods_since_last_sale=120, lead_time_days=45.0), SETTINGS))
    assert (dead["policy"], dead["safety_stock_units"], dead["reorder_point_units"]) == ("JIT", 0.0, 0.0)
    assert dead["flag_dead"] and dead["reasons"].startswith("JIT: dead: no sale in the last 120 days (obsolescence risk)")
    assert "stable demand" not in dead["reasons"] and "long lead time" not in dead["reasons"]
    # A critical spare part that has not moved keeps its buffer, with the risk stated.
    spare = one(recommend(sku(life_cycle="dead", periods_since_last_sale=120, critical=True), SETTINGS))
    assert spare["policy"] == "JIC" and spare["safety_stock_units"] > 0 and spare["flag_dead"]
    assert "buffer kept as the item is critical" in spare["reasons"]


def test_new_skus_say_why_they_are_not_backtested():
    new = one(recommend(sku(life_cycle="new", volatility_class="not_backtested", error_cv=None), SETTINGS))
    assert new["policy"] == "hybrid" and new["flag_new"] and new["flag_no_backtest"]
    assert "new product: first sale too recent to backtest" in new["reasons"]


def test_an_intermittent_sku_with_a_stable_lead_time_error_is_not_jic_on_volatility_alone():
    """Mean demand 0.5 a day, per-period RMSE 2.0 (CV 4: erratic per period, as any intermittent series is), lead-time
    RMSE 3.0 over 10 days of mean demand 5 (CV 0.6): judged over the lead time it is variable, not erratic."""
    from features.xyz import sku_volatility

    frame = pl.DataFrame(
        {
            "demand_class": ["intermittent", "smooth"],
            "rmse": [2.0, 2.0],
            "mean_demand": [0.5, 0.5],
            "lead_time_rmse": [3.0, 3.0],
            "lead_time_periods": [10.0, 10.0],
        }
    )
    cv, volatility, xyz = sku_volatility(SETTINGS.volatility.lead_time_classes, 0.5, 1.0)
    out = frame.select(error_cv=cv, volatility_class=volatility, xyz_class=xyz)
    assert out.rows() == [(pytest.approx(0.6), "variable", "Y"), (pytest.approx(4.0), "erratic", "Z")]
    intermittent = dict(demand_class="intermittent", adi=2.5, cv2=0.3, error_cv=0.6, volatility_class="variable", lead_time_days=10.0)
    rec = one(recommend(sku(**intermittent, lead_time_periods=10.0), SETTINGS))
    assert rec["policy"] == "hybrid" and not rec["flag_erratic_error"]  # irregular demand: a partial buffer, not JIC
    erratic = one(recommend(sku(**{**intermittent, "error_cv": 4.0, "volatility_class": "erratic"}, lead_time_periods=10.0), SETTINGS))
    assert erratic["policy"] == "JIC" and erratic["flag_erratic_error"]  # what the per-period CV used to say


def test_a_buffer_never_covers_more_than_max_cover_days_of_demand():
    """Demand 2 a day, sigma over the lead time 400 (a wild error): the 99% critical buffer z 2.326 x 400 = 931 units
    would cover 465 days of demand; the cap of 365 days holds it at 730 units, flags it, states Phi(730 / 400) = 96.6%
    as the service it can deliver and says why."""
    wild = dict(critical=True, abc_class="A", mean_demand_per_period=2.0, lead_time_demand=10.0, sigma_lead_time_demand=400.0)
    wild |= dict(lead_time_std_days=0.0, sigma_review_lead_time_demand=400.0)
    capped = one(recommend(sku(**wild), SETTINGS))
    assert capped["flag_cover_capped"] and capped["safety_stock_units"] == 730.0
    assert capped["expected_service_level"] == pytest.approx(stats.norm.cdf(730 / 400), abs=1e-9)
    assert "capped at 365 days of mean demand (730.0 units instead of 930.5" in capped["reasons"]
    free = one(recommend(sku(**wild), SETTINGS.updated({"buffers": {"max_cover_days": None}})))
    assert not free["flag_cover_capped"] and free["safety_stock_units"] == math.ceil(stats.norm.ppf(0.99) * 400)


@pytest.mark.parametrize(("share", "text"), [(0.95, "95.0%"), (0.999, "99.9%"), (0.999999, "99.9999%"), (1.0, "100.0%"), (0.8, "80.0%")])
def test_reasons_never_round_a_level_below_one_up_to_100_percent(share, text):
    """A calibrated level of 0.999999 used to read "sized at 100.0% nominal for the 99.0% target"."""
    from buffers.recommend import _pct

    assert pl.select(_pct(pl.lit(share))).item() == text


def test_an_active_sku_with_a_zero_forecast_says_so():
    """The seed's sku() is active; a model that forecasts nothing over the lead time leaves the buffer alone as the
    reorder point, which the planner must hear about."""
    rec = one(recommend(sku(lead_time_demand=0.0, mean_demand_per_period=0.0, review_lead_time_demand=0.0), SETTINGS))
    assert "the forecast is zero over the lead time although the SKU sells" in rec["reasons"]
    assert "forecast is zero" not in one(recommend(sku(), SETTINGS))["reasons"]
