"""Proof by simulation: replay a periodic-review (R, s, S) policy over held-out demand, every SKU at once.

Pure numpy (polars only in `SimulationResult.to_polars`), no I/O. The loop runs over periods only; each
period updates all SKUs' state as arrays. docs/methods.md; Silver, Pyke & Thomas
(2017), ch. 6 (periodic review, order-up-to level).

Timing within a period t (t = 0 is a SKU's first non-NaN period; leading NaN periods do not exist for it):

1. Deliveries due in t arrive (unless the supplier is blocked in t: they then arrive in the first
   unblocked period after it, or never within the horizon). They clear backorders first.
2. Demand of t is served from on-hand; what is not served is backordered (and counted short).
3. At a review epoch (t = 0, R, 2R, ...) with inventory position IP = on hand - backorders + on order
   <= s, an order of S - IP is placed (never a zero order). Orders are accepted during an outage.

An order placed in period t with lead time L (whole periods) arrives at the START of period t + 1 + L:
L full periods of demand happen between order and receipt. L = 0 therefore means "on the shelf before
the very next demand" (in effect immediately, since the order is placed after this period's demand).
With this convention a pure (R, S) policy with a fixed lead time protects exactly R + L periods of
demand: net inventory just before a delivery equals S minus the demand of the R + L periods since the
order before it was placed, so the long-run cycle service level is P(D_{R+L} <= S).

Lead times: for each SKU and each period an order could be placed in, L = max(0, round(mean * m + std *
m * Z)) with Z ~ N(0, 1), m the lead-time multiplier, rounding half up. The Z are drawn up front as an
(n, T) matrix, one stream per SKU row keyed by (seed, the SKU's key, "lead_time") (`buffers.streams`, the scheme
every random draw of buffercast uses), so a SKU's draws depend only on its key and the seed (not on its position or
on the other SKUs in the batch; equal keys share a stream: common random numbers across scenarios). Without `keys`
a row's key is its position (stable while rows keep their position). Same inputs and seed: same outputs, bit for
bit. Rows whose lead-time std is 0 draw nothing.

Cycles: a replenishment cycle runs from one delivery to the next (the first starts at t = 0 as if a
delivery had just arrived; several orders landing in one period are one delivery). A cycle is a stock-out
cycle if net inventory (on hand - backorders) is negative at the end of any of its periods. The last,
unfinished cycle is NOT counted: whether a cycle is finished by the horizon depends on when the next
delivery lands (fixed by the review calendar and lead times under pure (R, S)), not on whether it ran
short, so dropping it is unbiased censoring; counting it only when it ran short would bias the service
level down, counting it always would credit an unproven cycle. With no finished cycle the cycle service
level is NaN (no evidence), not 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from buffers.streams import standard_normals, stream_keys

#: The purpose of the simulation's stream of a SKU (`buffers.streams`).
LEAD_TIME_PURPOSE = "lead_time"


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Per-SKU metrics of one simulation, each an array of length n in the input's row order."""

    periods: np.ndarray  # periods simulated (non-NaN demand periods)
    cycles: np.ndarray  # finished replenishment cycles
    stockout_cycles: np.ndarray  # finished cycles with negative net inventory at the end of some period
    cycle_service_level: np.ndarray  # 1 - stockout_cycles / cycles; NaN with no finished cycle
    fill_rate: np.ndarray  # demand served from on-hand in its own period / demand; 1.0 with no demand
    average_on_hand: np.ndarray  # mean end-of-period on-hand units; NaN with no period
    stockout_periods: np.ndarray  # periods ending with backorders
    units_short: np.ndarray  # demand not served from on-hand in its own period
    demand_total: np.ndarray
    orders: np.ndarray  # orders placed (quantity > 0)

    def to_polars(self, ids: Sequence[str], id_col: str = "unique_id") -> pl.DataFrame:
        """One row per SKU; NaN (no evidence) becomes null. Service columns get the `simulated_` prefix."""
        n = len(self.periods)
        if len(ids) != n:
            raise ValueError(f"to_polars: got {len(ids)} ids for {n} simulated SKUs; pass one id per demand row, in row order")
        renamed = {"cycle_service_level": "simulated_cycle_service_level", "fill_rate": "simulated_fill_rate"}
        columns = [pl.Series(id_col, list(ids), dtype=pl.String)]
        columns += [pl.Series(renamed.get(f.name, f.name), getattr(self, f.name), nan_to_null=True) for f in fields(self)]
        return pl.DataFrame(columns)


def _per_sku(name: str, value: object, n: int, *, minimum: float | None = None, integer: bool = False) -> np.ndarray:
    """Broadcast a scalar or (n,) argument to a float (n,) array, or raise naming the argument and the bad rows."""
    array = np.asarray(value, dtype=float)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != n):
        raise ValueError(f"{name}: expected a scalar or an array of length {n} (one per demand row), got shape {array.shape}")
    array = np.broadcast_to(array, (n,)).astype(float)
    bad = ~np.isfinite(array)
    if minimum is not None:
        bad |= array < minimum
    if integer:
        bad |= array != np.round(array)
    if bad.any():
        rule = "finite" + (f", >= {minimum:g}" if minimum is not None else "") + (", whole" if integer else "")
        raise ValueError(f"{name}: {int(bad.sum())} of {n} SKU rows are not {rule} (first bad row {int(np.argmax(bad))})")
    return array


def lead_time_normals(lead_time_std: np.ndarray, periods: int, *, seed: int, keys: Sequence[str] | None = None) -> np.ndarray:
    """(n, periods) the Z of each row's lead-time draws (module docstring); zeros where the std is 0 (nothing drawn)."""
    std = np.asarray(lead_time_std, dtype=float)
    z = np.zeros((len(std), periods))
    rows = np.flatnonzero(std > 0)
    if rows.size:
        ids = [str(row) for row in rows] if keys is None else [keys[row] for row in rows]
        z[rows] = standard_normals(stream_keys(seed, ids, LEAD_TIME_PURPOSE), periods)
    return z


def lead_time_draws(
    lead_time_mean: np.ndarray,
    lead_time_std: np.ndarray,
    periods: int,
    *,
    seed: int,
    keys: Sequence[str] | None = None,
    normals: np.ndarray | None = None,
) -> np.ndarray:
    """(n, periods) whole lead times: max(0, round-half-up(mean + std * Z)), Z from each row's stream (module docstring):
    `normals`, when `lead_time_normals` of these rows (of a std that is 0 at least where this one is) was drawn already."""
    mean, std = np.asarray(lead_time_mean, dtype=float), np.asarray(lead_time_std, dtype=float)
    z = lead_time_normals(std, periods, seed=seed, keys=keys) if normals is None else normals
    return np.maximum(np.floor(mean[:, None] + std[:, None] * z + 0.5), 0.0).astype(np.int64)


def simulate_order_up_to(
    demand: np.ndarray,
    order_up_to: np.ndarray | float,
    review_periods: np.ndarray | int,
    lead_time_mean: np.ndarray | float,
    lead_time_std: np.ndarray | float,
    *,
    seed: int,
    reorder_point: np.ndarray | float | None = None,
    initial_on_hand: np.ndarray | float | None = None,
    lead_time_multiplier: np.ndarray | float | None = None,
    delivery_blocked: np.ndarray | None = None,
    keys: Sequence[str] | None = None,
    lead_time_normals: np.ndarray | None = None,
) -> SimulationResult:
    """Simulate a periodic-review (R, s, S) policy with backorders over `demand` (n SKUs x T periods).

    demand: actual units per period, >= 0; NaN only as a prefix (a shorter held-out history).
    order_up_to S (per SKU, or (n, T): the level each period's review orders up to, e.g. from the forecast of the
    latest origin), review_periods R (whole, >= 1), lead_time_mean/std (periods, fractional allowed),
    reorder_point s <= S (default S: pure (R, S)), initial_on_hand (default S, nothing on order),
    lead_time_multiplier (default 1, scales mean and std), delivery_blocked (n, T) bool (supplier outage),
    keys (stable per-SKU ids for the lead-time streams): scalars or (n,) arrays; lead_time_normals: the rows'
    `lead_time_normals` for this seed, keys and T when already drawn (a replay of the same SKUs under several
    policies and scenarios draws them once). Timing, lead-time draws and the cycle definition: module docstring.
    """
    demand = np.asarray(demand, dtype=float)
    if demand.ndim != 2:
        raise ValueError(f"demand: expected a 2-D array (SKUs x periods), got shape {demand.shape}")
    n, horizon = demand.shape
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    missing = np.isnan(demand)
    first = np.where(missing.all(axis=1), horizon, np.argmax(~missing, axis=1) if horizon else 0)
    for rows, what in (
        ((missing & (np.arange(horizon) >= first[:, None])).any(axis=1), "have NaN after their first value (only a NaN prefix is allowed)"),
        ((demand < 0).any(axis=1), "have negative demand (returns are not demand: quarantine or net them first)"),
        (np.isinf(demand).any(axis=1), "have infinite demand"),
    ):
        if rows.any():
            raise ValueError(f"demand: {int(rows.sum())} of {n} SKU rows {what}; first bad row {int(np.argmax(rows))}")

    # S may change over time, (n, T): the order-up-to level each review period uses (the forecast is updated).
    levels = np.asarray(order_up_to, dtype=float)
    varying = levels.ndim == 2
    if varying:
        if levels.shape != demand.shape or not np.isfinite(levels).all() or (levels < 0).any():
            raise ValueError(f"order_up_to: a time-varying level needs shape {demand.shape}, finite and >= 0; got {levels.shape}")
        levels_t = np.ascontiguousarray(levels.T)
        s_up = levels_t[np.minimum(first, max(horizon - 1, 0)), np.arange(n)] if horizon else np.zeros(n)
    else:
        s_up = _per_sku("order_up_to", order_up_to, n, minimum=0.0)
    review = _per_sku("review_periods", review_periods, n, minimum=1.0, integer=True).astype(np.int64)
    multiplier = _per_sku("lead_time_multiplier", 1.0 if lead_time_multiplier is None else lead_time_multiplier, n, minimum=0.0)
    lt_mean = _per_sku("lead_time_mean", lead_time_mean, n, minimum=0.0) * multiplier
    lt_std = _per_sku("lead_time_std", lead_time_std, n, minimum=0.0) * multiplier
    if varying and reorder_point is not None:
        raise ValueError("reorder_point: not supported with a time-varying order_up_to (pure (R, S) only)")
    s_low = s_up if reorder_point is None else _per_sku("reorder_point", reorder_point, n)
    if (above := s_low > s_up).any():
        raise ValueError(f"reorder_point: {int(above.sum())} of {n} SKU rows exceed order_up_to; first bad row {int(np.argmax(above))}")
    on_hand = s_up.copy() if initial_on_hand is None else _per_sku("initial_on_hand", initial_on_hand, n, minimum=0.0).copy()
    if keys is not None and len(keys) != n:
        raise ValueError(f"keys: got {len(keys)} keys for {n} demand rows; pass one stable SKU id per row")
    blocked = None
    if delivery_blocked is not None:
        blocked = np.asarray(delivery_blocked)
        if blocked.shape != demand.shape or blocked.dtype != bool:
            raise ValueError(f"delivery_blocked: expected a bool array of shape {demand.shape}, got {blocked.dtype} {blocked.shape}")
        blocked = np.ascontiguousarray(blocked.T)

    # Period-major (T, n) layouts: each step reads one contiguous row.
    if lead_time_normals is not None and lead_time_normals.shape != demand.shape:
        raise ValueError(f"lead_time_normals: expected shape {demand.shape}, got {lead_time_normals.shape}")
    lead_times = np.ascontiguousarray(lead_time_draws(lt_mean, lt_std, horizon, seed=int(seed), keys=keys, normals=lead_time_normals).T)
    demand_t = np.ascontiguousarray(np.nan_to_num(demand, nan=0.0).T)
    due = np.zeros((horizon + 1, n))  # due[t]: units arriving at the start of t; row `horizon` collects later arrivals
    backorders, on_order = np.zeros(n), np.zeros(n)
    served_total, short_total, on_hand_total, demand_total = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    cycles, stockout_cycles, stockout_periods, orders = (np.zeros(n, dtype=np.int64) for _ in range(4))
    cycle_short = np.zeros(n, dtype=bool)

    for t in range(horizon):
        active = t >= first
        arriving = due[t]
        if blocked is not None:
            held = blocked[t]
            due[t + 1] += np.where(held, arriving, 0.0)
            arriving = np.where(held, 0.0, arriving)
        delivered = arriving > 0
        stockout_cycles += delivered & cycle_short  # a delivery closes the running cycle
        cycles += delivered
        cycle_short &= ~delivered
        on_hand += arriving
        on_order -= arriving
        cleared = np.minimum(backorders, on_hand)
        backorders -= cleared
        on_hand -= cleared
        d = demand_t[t]
        served = np.minimum(d, on_hand)
        on_hand -= served
        backorders += d - served
        served_total += served
        short_total += d - served
        demand_total += d
        np.add(on_hand_total, on_hand, out=on_hand_total, where=active)
        short_now = backorders > 0
        cycle_short |= short_now
        stockout_periods += short_now
        position = on_hand - backorders + on_order
        if varying:
            s_up = s_low = levels_t[t]
        place = active & ((t - first) % review == 0) & (position <= s_low) & (s_up > position)
        if place.any():
            rows = np.flatnonzero(place)
            quantity = s_up[rows] - position[rows]
            due[np.minimum(t + 1 + lead_times[t, rows], horizon), rows] += quantity
            on_order[rows] += quantity
            orders += place

    periods = horizon - first
    with np.errstate(invalid="ignore", divide="ignore"):
        return SimulationResult(
            periods=periods.astype(np.int64),
            cycles=cycles,
            stockout_cycles=stockout_cycles,
            cycle_service_level=np.where(cycles > 0, 1.0 - stockout_cycles / cycles, np.nan),
            fill_rate=np.where(demand_total > 0, served_total / demand_total, 1.0),
            average_on_hand=np.where(periods > 0, on_hand_total / periods, np.nan),
            stockout_periods=stockout_periods,
            units_short=short_total,
            demand_total=demand_total,
            orders=orders,
        )


def demand_spike(demand: np.ndarray, start: int, periods: int, factor: float, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """A copy of `demand` with periods [start, start + periods) multiplied by `factor` (1.5: +50%), for `rows` (default all)."""
    demand = np.array(demand, dtype=float)  # a copy: never mutate the caller's array
    if demand.ndim != 2 or start < 0 or periods < 0 or not factor >= 0:
        raise ValueError(
            "demand_spike: need 2-D demand and start >= 0, periods >= 0, factor >= 0; "
            f"got shape {demand.shape}, start={start}, periods={periods}, factor={factor}"
        )
    selected = slice(None) if rows is None else np.asarray(rows)
    demand[selected, start : start + periods] *= factor
    return demand


def outage_mask(n: int, periods_total: int, start: int, periods: int, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """(n, periods_total) bool `delivery_blocked`: the supplier of `rows` (default all) delivers nothing in [start, start + periods)."""
    if n < 0 or periods_total < 0 or start < 0 or periods < 0:
        raise ValueError(
            f"outage_mask: sizes, start and periods must be >= 0; got n={n}, T={periods_total}, start={start}, periods={periods}"
        )
    mask = np.zeros((n, periods_total), dtype=bool)
    mask[slice(None) if rows is None else np.asarray(rows), start : start + periods] = True
    return mask
