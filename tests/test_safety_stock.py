"""Safety-stock formulas and the lead-time demand bootstrap against hand-worked numbers (docs/methods.md)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import optimize, stats

from buffers.lead_time_demand import QUANTILE_METHOD, _window_sums, bootstrap_lead_time_demand, bootstrap_window_coverage, quantile_column
from buffers.safety_stock import (
    economic_order_quantity,
    normal_loss,
    order_up_to_level,
    reorder_point,
    round_up_units,
    safety_factor,
    safety_stock_cycle,
    sigma_total,
    textbook_safety_stock,
    z_for_cycle_service_level,
)

Z95 = 1.6448536269514722  # Phi^-1(0.95)


def test_cycle_service_level_hand_worked_and_rounded_to_packs():
    # CSL 95%, sigma_LT 10, L 4, d 20, sigma_L 1: SS = 1.6449 x sqrt(10^2 + 20^2 x 1^2) = 1.6449 x 22.361 = 36.78
    sigma = pl.DataFrame({"s": [10.0], "d": [20.0], "sl": [1.0]}).select(sigma_total(pl.col("s"), pl.col("d"), pl.col("sl"))).item()
    ss = safety_stock_cycle(z_for_cycle_service_level(0.95), sigma)
    assert float(ss) == pytest.approx(36.78, abs=0.005)
    # Up to whole units (37), then to packs of 12: 36.78 -> 48; a negative buffer -> 0.
    units = pl.DataFrame({"u": [float(ss), float(ss), -3.0], "p": [None, 12.0, 12.0]}, schema={"u": pl.Float64, "p": pl.Float64})
    assert units.select(round_up_units(pl.col("u"), pl.col("p"))).to_series().to_list() == [37.0, 48.0, 0.0]
    # Never negative (z < 0 below a 50% service level), NaN stays missing.
    np.testing.assert_array_equal(safety_stock_cycle([-0.5, 2.0, np.nan], [10.0, 3.0, 1.0]), [0.0, 6.0, np.nan])


def test_fill_rate_safety_factor_hand_worked():
    # beta 98%, Q 100, sigma 20: G(k) = (1 - 0.98) x 100 / 20 = 0.1.
    # Tables: phi(0.90) = 0.2661, Phi(0.90) = 0.8159 -> G(0.90) = 0.2661 - 0.90 x 0.1841 = 0.1004, just above 0.1;
    # one Newton step with G'(k) = -(1 - Phi(k)) = -0.1841: k = 0.90 + 0.0004 / 0.1841 = 0.902.
    def g(k: float) -> float:  # independent of buffers.safety_stock: scipy's pdf/sf and brentq
        return stats.norm.pdf(k) - k * stats.norm.sf(k) - 0.1

    k_ref = optimize.brentq(g, 0.0, 3.0, xtol=1e-12)
    k = safety_factor([0.95, 0.98], ["cycle", "fill_rate"], [None, 100.0], [10.0, 20.0])
    assert k[0] == pytest.approx(Z95)
    assert round(k[1], 3) == round(k_ref, 3) == 0.902
    assert float(safety_stock_cycle(k[1], 20.0)) == pytest.approx(18.05, abs=0.005)  # SS = k sigma


def test_fill_rate_k_can_be_negative_and_edge_cases():
    # Q 5000 against sigma 20: G(k) = 5, G(k) ~ -k for k << 0 -> k = -5; the order cycle alone meets 98%: SS = 0.
    k = safety_factor(0.98, "fill_rate", 5000.0, 20.0)
    assert float(k) == pytest.approx(-5.0, abs=1e-5)
    assert float(normal_loss(k)) == pytest.approx(5.0)
    assert float(safety_stock_cycle(k, 20.0)) == 0.0
    # No order quantity -> no k (NaN); sigma 0 -> k 0.
    k = safety_factor([0.98] * 3, ["fill_rate"] * 3, [None, 0.0, 100.0], [20.0, 20.0, 0.0])
    np.testing.assert_array_equal(k, [np.nan, np.nan, 0.0])
    with pytest.raises(ValueError, match="'cycle' or 'fill_rate'"):
        safety_factor([0.95], ["service"], [1.0], [1.0])
    with pytest.raises(ValueError, match="fill rate"):
        safety_factor([1.0], ["fill_rate"], [1.0], [1.0])


def test_economic_order_quantity():
    # D 1200/yr, S 50/order, H 3/unit/yr: sqrt(2 x 1200 x 50 / 3) = sqrt(40000) = 200.
    assert float(economic_order_quantity(1200.0, 50.0, 3.0)) == 200.0
    # Missing or non-positive costs, or no demand: undefined -> NaN, a null back in polars.
    costs = pl.DataFrame({"d": [1200.0, 1200.0, 1200.0, 0.0, 1200.0], "s": [50.0, None, -1.0, 50.0, 50.0], "h": [3.0, 3.0, 3.0, 3.0, None]})
    eoq = economic_order_quantity(*(costs[c].to_numpy() for c in "dsh"))
    assert pl.Series(eoq, nan_to_null=True).to_list() == [200.0, None, None, None, None]


def test_order_up_to_level_and_textbook_baseline():
    # R 2 + L 4 periods of 20/period = 120; sigma over R + L 15; z 1.6449: S = 120 + 24.67 = 144.67.
    review_ss = safety_stock_cycle([Z95, -5.0], [15.0, 15.0])  # a negative fill-rate k buffers nothing
    np.testing.assert_allclose(order_up_to_level([120.0, 120.0], review_ss), [144.6728, 120.0], atol=1e-4)
    assert float(order_up_to_level(-10.0, safety_stock_cycle(1.0, 1.0))) == 0.0  # never negative
    # L 4 periods of 20/period = 80 plus SS 16.45: ROP 96.45; never negative either.
    np.testing.assert_allclose(reorder_point([80.0, 80.0], [16.449, 0.0]), [96.449, 80.0])
    assert float(reorder_point(-10.0, 2.0)) == 0.0 and np.isnan(reorder_point(np.nan, 2.0))
    # Textbook z sigma_d sqrt(L): 1.6449 x 5 x sqrt(4) = 16.449.
    assert float(textbook_safety_stock(Z95, 5.0, 4.0)) == pytest.approx(16.449, abs=1e-3)
    assert np.isnan(textbook_safety_stock(Z95, 5.0, -1.0))


# --- lead-time demand bootstrap ------------------------------------------------------------------------------


def panel_of(series: dict[str, list[float] | np.ndarray]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            pl.Series("unique_id", [k for k, v in series.items() for _ in range(len(v))]),
            pl.Series("ds", [i for v in series.values() for i in range(len(v))]),
            pl.Series("y", np.concatenate([np.asarray(v, dtype=float) for v in series.values()])),
        ]
    )


def lead_times_of(table: dict[str, tuple[float, float | None]]) -> pl.DataFrame:
    means, stds = zip(*table.values(), strict=True)
    return pl.DataFrame(
        {"unique_id": list(table), "lead_time_periods": means, "lead_time_std_periods": stds},
        schema_overrides={"lead_time_std_periods": pl.Float64},
    )


def bootstrap(series: dict, table: dict, quantiles=(0.95,), **kw) -> dict[str, dict]:
    kw.setdefault("seed", 42)
    kw.setdefault("n_samples", 2000)
    out = bootstrap_lead_time_demand(panel_of(series), lead_times_of(table), quantiles, **kw)
    return {r["unique_id"]: r for r in out.iter_rows(named=True)}


POISSON = np.random.default_rng(2024).poisson(2.0, 20_000)


def test_poisson_quantile_matches_the_poisson_distribution():
    # iid Poisson(2) per period, L = 5 fixed: lead-time demand ~ Poisson(10), whose 95% quantile is 15.
    # F(14) = 0.9165, F(15) = 0.9513: 15 is only 0.0013 above the target while the Monte Carlo error of the
    # empirical CDF is sqrt(0.95 x 0.05 / 2000) = 0.0049, so the bootstrap may land on 16 but never on 14.
    r = bootstrap({"p": POISSON}, {"p": (5.0, 0.0)}, (0.5, 0.95))["p"]
    assert stats.poisson.ppf(0.95, 10) == 15
    assert r["ltd_q95"] in (15.0, 16.0)
    assert r["ltd_q50"] == stats.poisson.ppf(0.5, 10) == 10
    assert r["bootstrap_mean"] == pytest.approx(10.0, abs=0.3)  # Monte Carlo sd sqrt(10 / 2000) = 0.07
    assert (r["bootstrap_samples"], r["bootstrap_history_periods"]) == (2000, POISSON.size - int(np.argmax(POISSON > 0)))


def test_lead_times_are_drawn_from_their_normal_distribution():
    # Demand 1 per period: the lead-time demand is L itself. L ~ N(10, 2): q95 = 10 + 1.6449 x 2 = 13.29.
    r = bootstrap({"c": [1.0] * 100, "z": [1.0] * 100}, {"c": (10.0, 2.0), "z": (0.5, 2.0)}, (0.3, 0.95), n_samples=20_000)
    assert r["c"]["ltd_q95"] == pytest.approx(10 + Z95 * 2, abs=0.1)  # Monte Carlo sd ~0.03
    assert r["c"]["bootstrap_mean"] == pytest.approx(10.0, abs=0.05)
    # Clipped at 0: P(N(0.5, 2) <= 0) = Phi(-0.25) = 0.40, so the 30% quantile is a zero lead time.
    assert r["z"]["ltd_q30"] == 0.0


def test_lead_time_variability_widens_the_quantile():
    # Same Poisson history, sigma_L 2: var = L lambda + lambda^2 sigma_L^2 = 10 + 16 -> normal q95 ~ 10 + 1.645 x 5.1 = 18.4.
    fixed = bootstrap({"p": POISSON}, {"p": (5.0, 0.0)})["p"]
    varying = bootstrap({"p": POISSON}, {"p": (5.0, 2.0)})["p"]
    assert varying["ltd_q95"] >= fixed["ltd_q95"] + 2
    assert varying["ltd_q95"] == pytest.approx(18.4, abs=1.5)
    assert varying["bootstrap_mean"] == pytest.approx(fixed["bootstrap_mean"], abs=0.4)


def test_lumpy_demand_quantile_far_above_the_normal_approximation():
    # An order of 200 every 50 periods, L = 5: a circular 5-period window holds the order with probability 5/50 = 0.1,
    # so the 95% quantile is a whole order (200) and the mean 200 x 0.1 = 20.
    y = np.zeros(1000)
    y[::50] = 200.0
    r = bootstrap({"lumpy": y}, {"lumpy": (5.0, 0.0)}, (0.5, 0.95))["lumpy"]
    assert (r["ltd_q95"], r["ltd_q50"]) == (200.0, 0.0)
    assert r["bootstrap_mean"] == pytest.approx(20.0, abs=3.0)
    # Normal approximation: sigma_d = 200 x sqrt(0.02 x 0.98) = 28, SS = 1.6449 x 28 x sqrt(5) = 103 vs 180 bootstrapped.
    normal_ss = float(textbook_safety_stock(Z95, y.std(), 5.0))
    assert normal_ss == pytest.approx(103.0, abs=0.5)
    assert r["ltd_q95"] - r["bootstrap_mean"] > 1.5 * normal_ss


def test_short_leading_zero_and_truncated_histories():
    r = bootstrap(
        {"short": [1.0, 0.0, 2.0], "one": [4.0], "zeros": [0.0] * 5, "late": [0.0, 0.0, 0.0, 5.0], "old": [100.0] * 50 + [0.0] * 100},
        {"short": (10.0, 0.0), "one": (2.5, None), "zeros": (3.0, 1.0), "late": (1.0, 0.0), "old": (5.0, 0.0)},
        (0.05, 0.95),
    )
    # 10 periods of a 3-period history: 3 whole laps (3 x 3 = 9 units) plus the start period again: 9, 10 or 11.
    assert (r["short"]["ltd_q5"], r["short"]["ltd_q95"]) == (9.0, 11.0)
    assert r["short"]["bootstrap_mean"] == pytest.approx(10.0, abs=0.1)
    # One period of 4, L 2.5: 2 whole periods + half of the next = 10, every time.
    assert (r["one"]["ltd_q5"], r["one"]["ltd_q95"], r["one"]["bootstrap_mean"]) == (10.0, 10.0, 10.0)
    assert (r["zeros"]["ltd_q95"], r["zeros"]["bootstrap_mean"]) == (0.0, 0.0)
    # Leading zeros are not demand: the history is [5].
    assert (r["late"]["ltd_q5"], r["late"]["bootstrap_history_periods"]) == (5.0, 1)
    assert r["old"]["bootstrap_mean"] == pytest.approx(5 * 100 * 50 / 150, rel=0.1)
    recent = bootstrap({"old": [100.0] * 50 + [0.0] * 100}, {"old": (5.0, 0.0)}, history_periods=100)["old"]
    assert (recent["ltd_q95"], recent["bootstrap_mean"], recent["bootstrap_history_periods"]) == (0.0, 0.0, 100)


def test_window_sums_match_a_naive_loop():
    rng = np.random.default_rng(5)
    histories = [rng.poisson(3.0, 7).astype(float), rng.poisson(1.0, 3).astype(float)]
    n = np.array([[7], [3]])
    base = np.array([[0], [8]])
    cs = np.concatenate([np.concatenate([[0.0], np.cumsum(histories[0])]), np.concatenate([[0.0], np.cumsum(histories[1])])])
    total = np.array([[histories[0].sum()], [histories[1].sum()]])
    start = np.column_stack([rng.integers(0, 3, 50), rng.integers(0, 3, 50)]).T  # < both lengths
    lead = rng.uniform(0, 20, (2, 50))  # longer than both histories at times
    got = _window_sums(cs, base, n, total, start, lead)
    for i, h in enumerate(histories):
        for j in range(50):
            w, a = int(lead[i, j]), start[i, j]
            expected = sum(h[(a + t) % len(h)] for t in range(w)) + (lead[i, j] - w) * h[(a + w) % len(h)]
            assert got[i, j] == pytest.approx(expected, abs=1e-9)


def test_bootstrap_is_deterministic_and_batch_independent():
    series = {"a": POISSON[:300], "b": np.tile([0.0, 0.0, 7.0, 0.0, 1.0], 60), "c": POISSON[300:400]}
    table = {"a": (4.0, 1.0), "b": (6.5, 2.0), "c": (2.0, 0.5)}
    full = bootstrap_lead_time_demand(panel_of(series), lead_times_of(table), (0.9, 0.99), seed=7, n_samples=2000)
    assert full.equals(bootstrap_lead_time_demand(panel_of(series), lead_times_of(table), (0.9, 0.99), seed=7, n_samples=2000))
    # b alone, or shuffled among other SKUs in chunks of one: the same numbers.
    alone = bootstrap_lead_time_demand(panel_of({"b": series["b"]}), lead_times_of(table), (0.9, 0.99), seed=7, n_samples=2000)
    shuffled = panel_of({"z": POISSON[:50], **series}).sample(fraction=1.0, shuffle=True, seed=1)
    before = shuffled.clone()
    mixed = bootstrap_lead_time_demand(
        shuffled, lead_times_of(table | {"z": (3.0, 1.0)}), (0.9, 0.99), seed=7, chunk_size=1, n_samples=2000
    )
    assert shuffled.equals(before)  # input not mutated
    assert mixed["unique_id"].to_list() == ["a", "b", "c", "z"]
    assert mixed.filter(pl.col("unique_id") != "z").equals(full)
    assert alone.row(0) == full.row(1)
    other_seed = bootstrap_lead_time_demand(panel_of(series), lead_times_of(table), (0.9, 0.99), seed=8, n_samples=2000)
    assert not other_seed["bootstrap_mean"].equals(full["bootstrap_mean"])


def test_bootstrap_bad_inputs_name_what_is_wrong():
    assert [quantile_column(q) for q in (0.95, 0.975, 0.5, 0.05)] == ["ltd_q95", "ltd_q97_5", "ltd_q50", "ltd_q5"]
    with pytest.raises(ValueError, match=r"lead time.*'b'"):
        bootstrap({"a": [1.0], "b": [2.0]}, {"a": (1.0, 0.0)})
    with pytest.raises(ValueError, match="between 0 and 1"):
        bootstrap({"a": [1.0]}, {"a": (1.0, 0.0)}, (0.95, 1.0))
    panel = panel_of({"a": [1.0, 2.0]}).with_columns(y=pl.Series([1.0, None]))
    with pytest.raises(ValueError, match=r"panel.y is null or NaN in 1 rows of 1 SKUs \(e.g. \['a'\]\)"):
        bootstrap_lead_time_demand(panel, lead_times_of({"a": (1.0, 0.0)}), seed=1, n_samples=2000)


def windows_of(rows: list[tuple[str, int, float, float]]) -> pl.DataFrame:
    """(unique_id, cutoff, lead time, actual) -> the `windows` of `bootstrap_window_coverage` (fixed lead times)."""
    return pl.DataFrame(rows, schema=["unique_id", "cutoff", "lead_time_periods", "actual"], orient="row").with_columns(
        lead_time_std_periods=pl.lit(0.0)
    )


def test_share_below_is_exactly_the_coverage_of_the_empirical_quantile():
    # What calibrating the bootstrap rests on: the inverted-CDF alpha-quantile of the samples covers an actual demand
    # exactly when the share of samples strictly below it is < alpha (ties and discrete demand included).
    rng = np.random.default_rng(5)
    for _ in range(300):
        samples = rng.integers(0, 6, int(rng.integers(1, 40))).astype(float)
        actual, alpha = float(rng.integers(0, 7)), float(rng.choice([0.1, 0.5, 0.8, 0.9, 0.95, rng.random()]))
        covered = actual <= np.quantile(samples, alpha, method=QUANTILE_METHOD)
        assert covered == ((samples < actual).mean() < alpha), (samples, actual, alpha)


def test_window_coverage_of_a_lumpy_history_by_hand():
    # An order of 200 every 50 periods, L = 5: about 10% of the windows hold the order (share below 200: ~0.9).
    y = np.zeros(1000)
    y[::50] = 200.0
    cov = bootstrap_window_coverage(
        panel_of({"lumpy": y}),
        # Histories of whole 50-period cycles (to 899, to 499), so the circular windows never join two orders.
        windows_of([("lumpy", 899, 5.0, 0.0), ("lumpy", 899, 5.0, 200.0), ("lumpy", 899, 5.0, 201.0), ("lumpy", 499, 5.0, 100.0)]),
        seed=1,
        n_samples=2000,
    )
    share = cov["share_below"].to_list()
    assert share[0] == 0.0 and share[2] == 1.0
    assert share[1] == pytest.approx(0.9, abs=0.03)  # Monte Carlo sd sqrt(0.09 / 2000) = 0.007
    assert share[3] == pytest.approx(0.9, abs=0.03)  # only the empty windows lie below 100
    assert cov.select("unique_id", "cutoff").rows() == [("lumpy", 899)] * 3 + [("lumpy", 499)]


def test_window_coverage_never_reads_the_demand_after_its_cutoff():
    rng = np.random.default_rng(8)
    y = rng.poisson(1.5, 400).astype(float)
    windows = windows_of([("s", 200, 4.0, 7.0), ("s", 300, 4.0, 7.0)])
    before = bootstrap_window_coverage(panel_of({"s": y}), windows, seed=3, n_samples=2000)["share_below"].to_list()
    later = y.copy()
    later[301:] = 50.0  # after both cutoffs (a cutoff's own period is history)
    assert bootstrap_window_coverage(panel_of({"s": later}), windows, seed=3, n_samples=2000)["share_below"].to_list() == before
    between = y.copy()
    between[201:301] = 50.0  # after the first cutoff, before the second
    moved = bootstrap_window_coverage(panel_of({"s": between}), windows, seed=3, n_samples=2000)["share_below"].to_list()
    assert moved[0] == before[0] and moved[1] < before[1]  # bigger samples: fewer below the same actual


def test_window_coverage_names_windows_missing_from_the_panel():
    with pytest.raises(ValueError, match=r"1 windows have no \(unique_id, cutoff\) row in the panel.*'s', 999"):
        bootstrap_window_coverage(
            panel_of({"s": [1.0] * 10}), windows_of([("s", 5, 2.0, 1.0), ("s", 999, 2.0, 1.0)]), seed=0, n_samples=2000
        )


def test_a_monthly_intermittent_sku_gets_different_95_and_99_buffers_from_its_36_months():
    """48 months of intermittent demand, 1-month lead time: each bootstrap sample is one month of the window. Over the
    config's monthly window (buffers.bootstrap_history M = 36 periods, 12 distinct sales) the largest month has
    probability 1/36 < 5%: the 95% buffer sits below it (the 2nd or 3rd largest), the 99% on it (1/36 >= 1%). Over 12
    months (365 days, the old window) the largest has probability 1/12 > 5%: both quantiles were the same month."""
    from configs.schema import load_config

    prefix = [0, 2, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]
    last_36 = [0, 0, 4, 0, 11, 0, 0, 2, 0, 6, 0, 0, 0, 9, 0, 0, 3, 0, 0, 13, 0, 1, 0, 0, 0, 0, 8, 0, 0, 5, 0, 10, 0, 0, 7, 0]
    cfg = load_config(None, {"frequency": "M"})
    assert cfg.bootstrap_history_periods == 36
    out = bootstrap({"p": prefix + last_36}, {"p": (1.0, 0.0)}, quantiles=(0.95, 0.99), history_periods=36)["p"]
    assert out["ltd_q95"] in (10.0, 11.0) and out["ltd_q99"] == 13.0
    old = bootstrap({"p": prefix + last_36}, {"p": (1.0, 0.0)}, quantiles=(0.95, 0.99), history_periods=12)["p"]
    assert old["ltd_q95"] == old["ltd_q99"] == 10.0
