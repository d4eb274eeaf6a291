"""evaluation.simulate: the (R, s, S) simulation against theory, against a per-SKU reference loop, and its scenarios."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import polars as pl
import pytest
from scipy import stats

from buffers.streams import standard_normals, stream_keys
from evaluation.simulate import SimulationResult, demand_spike, lead_time_normals, outage_mask, simulate_order_up_to

Z95 = float(stats.norm.ppf(0.95))
FIELDS = [f.name for f in fields(SimulationResult)]


def pooled_csl(result: SimulationResult) -> float:
    return 1.0 - result.stockout_cycles.sum() / result.cycles.sum()


def reference(demand, order_up_to, review, lt_mean, lt_std, *, seed, s=None, init=None, mult=None, blocked=None) -> dict:
    """One SKU, one period at a time, following the module docstring literally (pipeline as a list of orders)."""
    n, horizon = demand.shape
    out: dict[str, list] = {name: [] for name in FIELDS}
    for i in range(n):
        m = 1.0 if mult is None else mult[i]
        mu, sd = lt_mean[i] * m, lt_std[i] * m
        # the row's stream (buffers.streams): keyed by (seed, its position, "lead_time") when no keys are given
        z = standard_normals(stream_keys(seed, [str(i)], "lead_time"), horizon)[0] if sd > 0 else np.zeros(horizon)
        lead = [max(0, math.floor(mu + sd * z[t] + 0.5)) for t in range(horizon)]
        big_s = order_up_to[i]
        small_s = big_s if s is None else s[i]
        on_hand = big_s if init is None else init[i]
        row = demand[i]
        first = next((t for t in range(horizon) if not math.isnan(row[t])), horizon)
        backorders, pipeline = 0.0, []  # [arrival period, quantity]
        cycles = stockout_cycles = stockout_periods = orders = 0
        served_sum = short_sum = on_hand_sum = demand_sum = 0.0
        cycle_short = False
        for t in range(first, horizon):
            arrived = [q for a, q in pipeline if a == t]
            if arrived:
                cycles += 1
                stockout_cycles += cycle_short
                cycle_short = False
                on_hand += sum(arrived)
            take = min(backorders, on_hand)
            backorders, on_hand = backorders - take, on_hand - take
            served = min(row[t], on_hand)
            on_hand -= served
            backorders += row[t] - served
            served_sum, short_sum, demand_sum = served_sum + served, short_sum + row[t] - served, demand_sum + row[t]
            on_hand_sum += on_hand
            if backorders > 0:
                cycle_short = True
                stockout_periods += 1
            position = on_hand - backorders + sum(q for a, q in pipeline if a > t)
            if (t - first) % review[i] == 0 and position <= small_s and big_s - position > 0:
                arrival = t + 1 + lead[t]
                while blocked is not None and arrival < horizon and blocked[i, arrival]:
                    arrival += 1
                pipeline.append([arrival, big_s - position])
                orders += 1
        periods = horizon - first
        values = {
            "periods": periods,
            "cycles": cycles,
            "stockout_cycles": stockout_cycles,
            "cycle_service_level": 1.0 - stockout_cycles / cycles if cycles else math.nan,
            "fill_rate": served_sum / demand_sum if demand_sum > 0 else 1.0,
            "average_on_hand": on_hand_sum / periods if periods else math.nan,
            "stockout_periods": stockout_periods,
            "units_short": short_sum,
            "demand_total": demand_sum,
            "orders": orders,
        }
        for name, value in values.items():
            out[name].append(value)
    return out


def random_case(case: int) -> dict:
    """Small integer-valued panels (so float sums are exact in any order) covering every option."""
    rng = np.random.default_rng(case)
    n, horizon = 8, int(rng.integers(15, 60))
    demand = rng.poisson(rng.choice([0.0, 0.5, 3.0, 8.0], n)[:, None], (n, horizon)).astype(float)
    prefix = rng.integers(0, horizon // 2, n)
    prefix[0], prefix[1] = 0, horizon  # a full row and an all-NaN row
    demand[np.arange(horizon) < prefix[:, None]] = np.nan
    order_up_to = rng.integers(0, 50, n).astype(float)
    full = case % 2 == 0
    blocked = rng.random((n, horizon)) < 0.15
    blocked |= outage_mask(n, horizon, int(rng.integers(0, horizon)), 6, rows=[2, 3])
    return {
        "demand": demand,
        "order_up_to": order_up_to,
        "review": rng.integers(1, 6, n),
        "lt_mean": rng.choice([0.0, 0.4, 1.0, 2.5, 3.7], n),
        "lt_std": rng.choice([0.0, 0.0, 0.6, 1.5], n),
        "seed": case,
        "s": order_up_to - rng.integers(0, 25, n) if full else None,
        "init": rng.integers(0, 60, n).astype(float) if full else None,
        "mult": rng.choice([1.0, 2.0, 0.5], n) if full else None,
        "blocked": blocked if full else None,
    }


@pytest.mark.parametrize("case", range(8))
def test_vectorised_equals_per_sku_reference(case: int) -> None:
    c = random_case(case)
    result = simulate_order_up_to(
        c["demand"],
        c["order_up_to"],
        c["review"],
        c["lt_mean"],
        c["lt_std"],
        seed=c["seed"],
        reorder_point=c["s"],
        initial_on_hand=c["init"],
        lead_time_multiplier=c["mult"],
        delivery_blocked=c["blocked"],
    )
    expected = reference(
        c["demand"],
        c["order_up_to"],
        c["review"],
        c["lt_mean"],
        c["lt_std"],
        seed=c["seed"],
        s=c["s"],
        init=c["init"],
        mult=c["mult"],
        blocked=c["blocked"],
    )
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(result, name), np.asarray(expected[name]), err_msg=name)
    assert result.orders.sum() > 0 and result.stockout_cycles.sum() > 0  # the cases exercise ordering and stock-outs


def test_timing_by_hand() -> None:
    """S = 10 covers R + L = 2 periods of 5 units; demand 6 falls 2 short in every period from period 1."""
    fives = simulate_order_up_to(np.full((1, 4), 5.0), 10.0, 1, 1.0, 0.0, seed=0)
    assert fives.units_short[0] == 0 and fives.orders[0] == 4 and fives.average_on_hand[0] == 1.25
    sixes = simulate_order_up_to(np.full((1, 4), 6.0), 10.0, 1, 1.0, 0.0, seed=0)
    # deliveries in periods 2 and 3 close cycles [0, 1] and [2] (both short); the unfinished [3] is not counted
    assert (sixes.cycles[0], sixes.stockout_cycles[0], sixes.cycle_service_level[0]) == (2, 2, 0.0)
    assert (sixes.units_short[0], sixes.stockout_periods[0], sixes.fill_rate[0]) == (6.0, 3, 0.75)
    # lead time 0: the order placed after period t's demand is on the shelf for period t + 1's
    instant = simulate_order_up_to(np.full((1, 4), 10.0), 10.0, 1, 0.0, 0.0, seed=0)
    assert instant.units_short[0] == 0 and instant.cycles[0] == 3 and instant.average_on_hand[0] == 0.0


@pytest.mark.parametrize("review", [1, 7])
def test_poisson_cycle_service_level_matches_theory(review: int) -> None:
    """Fixed L = 5: CSL = P(D_{R+L} <= S) exactly; bounds 0.93-0.97 at 95% and, Poisson being discrete, 0.45-0.60 at zero SS."""
    mean, lead = 10.0, 5
    mu = mean * (review + lead)
    demand = np.random.default_rng(review).poisson(mean, (200, 2000)).astype(float)
    for order_up_to, low, high in ((mu + Z95 * math.sqrt(mu), 0.93, 0.97), (mu, 0.45, 0.60)):
        csl = pooled_csl(simulate_order_up_to(demand, order_up_to, review, lead, 0.0, seed=1))
        assert low <= csl <= high
        assert csl == pytest.approx(stats.poisson.cdf(math.floor(order_up_to), mu), abs=0.01)


@pytest.mark.parametrize("review", [1, 7])
def test_normal_cycle_service_level_matches_theory(review: int) -> None:
    """Normal(100, 20) clipped at 0 (5 sd away: no effect): 95% within 0.93-0.97, zero safety stock within 0.45-0.55."""
    demand = np.clip(np.random.default_rng(10 + review).normal(100.0, 20.0, (200, 2000)), 0.0, None)
    cover = review + 5
    for z, low, high in ((Z95, 0.93, 0.97), (0.0, 0.45, 0.55)):
        csl = pooled_csl(simulate_order_up_to(demand, 100.0 * cover + z * 20.0 * math.sqrt(cover), review, 5.0, 0.0, seed=1))
        assert low <= csl <= high


@pytest.mark.parametrize("review", [1, 7])
def test_random_lead_times_near_target(review: int) -> None:
    """S = d(R+L) + z sqrt((R+L) sigma_d^2 + d^2 sigma_L^2), sigma_L = 1: CSL within 0.92-0.98.

    Two known departures from the formula: rounding lead times to whole periods adds ~1/12 period^2 of variance
    (slightly under-protected: for R = 7 the rounding-corrected normal approximation predicts 0.946 and the
    simulation must land within 0.01 of it), and with R = 1 orders cross, which averages lead-time noise over
    several orders (over-protected, ~0.955-0.97).
    """
    mean, lead, sigma_l = 10.0, 5.0, 1.0
    demand = np.random.default_rng(20 + review).poisson(mean, (200, 2000)).astype(float)
    variance = mean * (review + lead) + mean**2 * sigma_l**2  # Poisson: sigma_d^2 = mean
    csl = pooled_csl(simulate_order_up_to(demand, mean * (review + lead) + Z95 * math.sqrt(variance), review, lead, sigma_l, seed=2))
    assert 0.92 <= csl <= 0.98
    if review == 7:
        corrected = stats.norm.cdf(Z95 * math.sqrt(variance / (variance + mean**2 / 12)))
        assert csl == pytest.approx(corrected, abs=0.01)


def test_deterministic_and_independent_of_the_batch() -> None:
    rng = np.random.default_rng(3)
    demand = rng.poisson(5.0, (6, 80)).astype(float)
    args = (demand, 40.0, 2, 3.0, 1.5)
    keys = ["a", "b", "c", "d", "e", "f"]
    first = simulate_order_up_to(*args, seed=7, keys=keys)
    again = simulate_order_up_to(*args, seed=7, keys=keys)
    other = simulate_order_up_to(*args, seed=8, keys=keys)
    assert all(np.array_equal(getattr(first, f), getattr(again, f)) for f in FIELDS)
    assert not all(np.array_equal(getattr(first, f), getattr(other, f)) for f in FIELDS)
    # with keys: any subset, in any order, next to any other SKUs gives the same per-SKU result
    order = [4, 1, 5]
    extra = rng.poisson(9.0, (2, 80)).astype(float)
    batch = simulate_order_up_to(np.vstack([extra, demand[order]]), 40.0, 2, 3.0, 1.5, seed=7, keys=["x", "y", *[keys[i] for i in order]])
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(batch, f)[2:], getattr(first, f)[order], err_msg=f)
    # without keys: rows keep their stream while they keep their position
    prefix = simulate_order_up_to(demand[:3], 40.0, 2, 3.0, 1.5, seed=7)
    full = simulate_order_up_to(demand, 40.0, 2, 3.0, 1.5, seed=7)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(prefix, f), getattr(full, f)[:3], err_msg=f)


def test_lead_time_normals_drawn_once_give_the_same_replay_under_any_multiplier() -> None:
    """The stress test draws each SKU's lead-time normals once for every scenario and policy: the same results as
    each simulation drawing its own, with a lead-time multiplier (a scenario's) and a SKU without variability."""
    rng = np.random.default_rng(4)
    demand = rng.poisson(5.0, (4, 60)).astype(float)
    keys, std = ["a", "b", "c", "d"], np.array([1.5, 0.0, 2.0, 0.7])
    normals = lead_time_normals(std, 60, seed=7, keys=keys)
    assert not normals[1].any() and normals[0].any()
    for multiplier in (1.0, np.array([2.0, 1.0, 0.0, 1.5])):
        args = (demand, 40.0, 2, 3.0, std)
        own = simulate_order_up_to(*args, seed=7, keys=keys, lead_time_multiplier=multiplier)
        shared = simulate_order_up_to(*args, seed=7, keys=keys, lead_time_multiplier=multiplier, lead_time_normals=normals)
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(shared, f), getattr(own, f), err_msg=f)
    with pytest.raises(ValueError, match="lead_time_normals: expected shape"):
        simulate_order_up_to(demand, 40.0, 2, 3.0, std, seed=7, keys=keys, lead_time_normals=normals[:, :10])


def test_scenarios_lower_the_service_level() -> None:
    """Same demand and seed throughout (common random numbers): outage, lead time x2 and a +50% spike all hurt."""
    mean, review, lead = 10.0, 7, 5
    demand = np.random.default_rng(4).poisson(mean, (200, 364)).astype(float)
    order_up_to = mean * (review + lead) + Z95 * math.sqrt(mean * (review + lead))
    base = simulate_order_up_to(demand, order_up_to, review, lead, 0.0, seed=5)
    outage = simulate_order_up_to(demand, order_up_to, review, lead, 0.0, seed=5, delivery_blocked=outage_mask(200, 364, 100, 28))
    slower = simulate_order_up_to(demand, order_up_to, review, lead, 0.0, seed=5, lead_time_multiplier=2.0)
    spike = simulate_order_up_to(demand_spike(demand, 100, 28, 1.5), order_up_to, review, lead, 0.0, seed=5)
    assert 0.92 <= pooled_csl(base) <= 0.98
    # a 4-week outage merges ~4 weekly cycles into one failed cycle, so it moves the CSL less than the fill rate
    for scenario in (outage, slower, spike):
        assert pooled_csl(scenario) < pooled_csl(base) - 0.01
        assert scenario.fill_rate.mean() < base.fill_rate.mean() - 0.03
        assert scenario.units_short.sum() > base.units_short.sum()
    # orders follow the inventory position, which delays do not change: delays can only add shortage, SKU by SKU
    np.testing.assert_array_equal(outage.orders, base.orders)
    assert np.all(outage.units_short >= base.units_short) and np.all(slower.units_short >= base.units_short)


def test_scenario_builders() -> None:
    demand = np.array([[np.nan, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    spiked = demand_spike(demand, 1, 2, 1.5, rows=[0])
    np.testing.assert_array_equal(spiked, [[np.nan, 3.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    assert demand[0, 1] == 2.0  # the input is not mutated
    np.testing.assert_array_equal(outage_mask(2, 4, 2, 5), [[False, False, True, True]] * 2)
    np.testing.assert_array_equal(outage_mask(2, 4, 0, 1, rows=[1]), [[False] * 4, [True, False, False, False]])
    with pytest.raises(ValueError, match="demand_spike"):
        demand_spike(demand, 0, 1, -1.0)
    with pytest.raises(ValueError, match="outage_mask"):
        outage_mask(2, 4, -1, 1)


def test_to_polars_columns_and_no_evidence_as_null() -> None:
    demand = np.array([[np.nan, np.nan], [0.0, 0.0]])
    table = simulate_order_up_to(demand, 5.0, 1, 1.0, 0.0, seed=0).to_polars(["gone", "idle"])
    assert table.columns == [
        "unique_id",
        "periods",
        "cycles",
        "stockout_cycles",
        "simulated_cycle_service_level",
        "simulated_fill_rate",
        "average_on_hand",
        "stockout_periods",
        "units_short",
        "demand_total",
        "orders",
    ]
    assert table.row(0, named=True)["simulated_cycle_service_level"] is None and table["average_on_hand"][0] is None
    assert table.filter(pl.col("unique_id") == "idle").row(0, named=True)["simulated_fill_rate"] == 1.0
    with pytest.raises(ValueError, match="3 ids for 2"):
        simulate_order_up_to(demand, 5.0, 1, 1.0, 0.0, seed=0).to_polars(["a", "b", "c"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"demand": np.ones(5)}, "2-D"),
        ({"demand": np.array([[1.0, -1.0], [1.0, 1.0]])}, "negative demand"),
        ({"demand": np.array([[1.0, np.nan], [1.0, 1.0]])}, "NaN after"),
        ({"demand": np.array([[1.0, np.inf], [1.0, 1.0]])}, "infinite"),
        ({"review_periods": 0}, "review_periods: 1 of 2|review_periods: 2 of 2"),
        ({"review_periods": [1, 1.5]}, "review_periods: 1 of 2 .* whole"),
        ({"order_up_to": [1.0, 2.0, 3.0]}, "order_up_to: expected a scalar or an array of length 2"),
        ({"lead_time_std": -1.0}, "lead_time_std"),
        ({"reorder_point": 99.0}, "reorder_point: 2 of 2 SKU rows exceed"),
        ({"delivery_blocked": np.zeros((2, 3), dtype=bool)}, "delivery_blocked"),
        ({"keys": ["a"]}, "keys: got 1"),
        ({"seed": -1}, "seed"),
    ],
)
def test_input_validation(change: dict, message: str) -> None:
    kwargs = {"demand": np.ones((2, 2)), "order_up_to": 10.0, "review_periods": 1, "lead_time_mean": 1.0, "lead_time_std": 0.0, "seed": 0}
    with pytest.raises(ValueError, match=message):
        simulate_order_up_to(**(kwargs | change))


def test_a_time_varying_order_up_to_level_is_used_at_each_review():
    """The replay of a policy whose forecast is updated: S per SKU and period; a constant matrix is the scalar case."""
    rng = np.random.default_rng(4)
    demand = rng.poisson(10.0, (6, 300)).astype(float)
    scalar = simulate_order_up_to(demand, order_up_to=130.0, review_periods=7, lead_time_mean=5.0, lead_time_std=1.0, seed=3)
    matrix = simulate_order_up_to(demand, order_up_to=np.full(demand.shape, 130.0), review_periods=7, lead_time_mean=5.0,
                                  lead_time_std=1.0, seed=3)  # fmt: skip
    for name in ("cycle_service_level", "fill_rate", "average_on_hand", "units_short", "orders"):
        np.testing.assert_array_equal(getattr(matrix, name), getattr(scalar, name))
    # Halving S from period 150 on: fewer units on hand afterwards, more short.
    step = np.full(demand.shape, 130.0)
    step[:, 150:] = 65.0
    lower = simulate_order_up_to(demand, order_up_to=step, review_periods=7, lead_time_mean=5.0, lead_time_std=1.0, seed=3)
    assert (lower.average_on_hand < scalar.average_on_hand).all() and lower.units_short.sum() > scalar.units_short.sum()
    with pytest.raises(ValueError, match="time-varying"):
        simulate_order_up_to(demand, order_up_to=step[:, :10], review_periods=7, lead_time_mean=5.0, lead_time_std=1.0, seed=3)
