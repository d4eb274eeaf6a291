"""Safety stock, reorder point and their rounding (docs/methods.md; Silver, Pyke & Thomas 2017, ch. 6).

Pure numpy/scipy maths on arrays plus polars expressions over columns; no I/O. scipy.stats and scipy.optimize are
imported where used, not with the module (docs/architecture.md).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import ArrayLike


def z_for_cycle_service_level(alpha: np.ndarray | float) -> np.ndarray:
    """z = Phi^-1(alpha): the safety factor for a cycle service level alpha in (0, 1)."""
    alpha = np.asarray(alpha, dtype=float)
    if np.any((alpha <= 0) | (alpha >= 1)):
        raise ValueError("a cycle service level must be strictly between 0 and 1")
    from scipy import stats

    return stats.norm.ppf(alpha)


def normal_loss(k: np.ndarray | float) -> np.ndarray:
    """Standard normal loss function G(k) = phi(k) - k * (1 - Phi(k)): expected units short per unit sigma."""
    from scipy import stats

    k = np.asarray(k, dtype=float)
    return stats.norm.pdf(k) - k * stats.norm.sf(k)


def k_for_fill_rate(beta: np.ndarray | float, order_quantity: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    """Safety factor k with G(k) = (1 - beta) * Q / sigma (docs/methods.md, fill rate beta), solved numerically.

    G is convex and strictly decreasing (G' = -(1 - Phi)), so Newton's method started left of the root
    (G(k) ~ -k there) converges monotonically; vectorised over all SKUs at once. sigma = 0: k = 0.
    """
    beta, q, sigma = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (beta, order_quantity, sigma)))
    if np.any((beta <= 0) | (beta >= 1)):
        raise ValueError("a fill rate must be strictly between 0 and 1")
    from scipy import optimize, stats

    positive = sigma > 0
    target = np.where(positive, (1.0 - beta) * q / np.where(positive, sigma, 1.0), 1.0)
    k = optimize.newton(lambda k: normal_loss(k) - target, x0=-target - 1.0, fprime=lambda k: -stats.norm.sf(k), tol=1e-12, maxiter=200)
    return np.where(positive, k, 0.0)


def sigma_total(sigma_lead_time_demand: pl.Expr, demand_per_period: pl.Expr, lead_time_std_periods: pl.Expr) -> pl.Expr:
    """sqrt(sigma_LT^2 + d^2 * sigma_L^2): demand uncertainty over the lead time plus lead-time variability."""
    return (sigma_lead_time_demand.pow(2) + demand_per_period.pow(2) * lead_time_std_periods.pow(2)).sqrt()


def round_up_units(units: pl.Expr, pack_size: pl.Expr | None = None) -> pl.Expr:
    """Never negative, up to whole units, then up to a multiple of the pack size (null pack size: 1).

    A tolerance of 1e-9 keeps 36.000000000001 from becoming 37 through float noise. Zero is +0.0, never -0.0.
    """
    # `abs` turns the -0.0 that ceil(-1e-9) gives into 0.0 (polars folds `+ 0.0` away): a reader must never see a
    # negative zero.
    whole = (units.clip(0.0, None) - 1e-9).ceil().clip(0.0, None).abs()
    if pack_size is None:
        return whole
    pack = pack_size.fill_null(1.0).clip(1.0, None)
    return ((whole / pack - 1e-9).ceil().clip(0.0, None) * pack).abs()


def _floats(*arrays: ArrayLike) -> list[np.ndarray]:
    """Broadcast float arrays; None and polars nulls (NaN after to_numpy) become NaN."""
    return np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in arrays))


def safety_stock_cycle(z: ArrayLike, sigma_total: ArrayLike) -> np.ndarray:
    """SS = z * sigma_total (docs/methods.md), floored at 0: a safety stock is never negative.

    Works for any safety factor: z = Phi^-1(alpha) for a cycle service level, or k from `safety_factor` for a fill
    rate, which may be negative (SS is then 0). NaN in, NaN out (np.maximum propagates it). Not rounded.
    """
    z, sigma = _floats(z, sigma_total)
    return np.maximum(z * sigma, 0.0)


def safety_factor(target: ArrayLike, measure: ArrayLike, order_quantity: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """The safety factor per SKU for its service measure (docs/methods.md; Silver, Pyke & Thomas 2017, ch. 6):
    "cycle" -> z = Phi^-1(alpha); "fill_rate" -> k with G(k) = (1 - beta) * Q / sigma (`k_for_fill_rate`).

    Returns the raw factor, which may be negative: when Q is large relative to sigma the order cycle alone meets a
    fill-rate target (beta 0.98, Q 5000, sigma 20 -> G(k) = 5 -> k = -5.0). The caller floors the safety stock
    k * sigma at 0 (`safety_stock_cycle` and `order_up_to_level` do). sigma = 0 gives k = 0. A fill-rate row without
    a positive order quantity (None, NaN, <= 0) or without sigma has no k: NaN. `order_quantity` is ignored on
    "cycle" rows. Any other measure, or a target outside (0, 1), raises ValueError.
    """
    target, q, sigma = _floats(target, order_quantity, sigma)
    measure = np.broadcast_to(np.asarray(measure, dtype=object), target.shape)
    cycle, fill = measure == "cycle", measure == "fill_rate"
    if not np.all(cycle | fill):
        raise ValueError(f"service measure must be 'cycle' or 'fill_rate', got {sorted({str(m) for m in measure[~(cycle | fill)]})}")
    out = np.full(target.shape, np.nan)
    out[cycle] = z_for_cycle_service_level(target[cycle])
    if np.any(fill & ~((target > 0) & (target < 1))):
        raise ValueError("a fill rate must be strictly between 0 and 1")
    solvable = fill & (q > 0) & (sigma >= 0)  # False for NaN
    if solvable.any():  # scipy's vectorised newton fails on an empty array
        out[solvable] = k_for_fill_rate(target[solvable], q[solvable], sigma[solvable])
    return out


def economic_order_quantity(annual_demand_units: ArrayLike, order_cost: ArrayLike, holding_cost_per_unit_year: ArrayLike) -> np.ndarray:
    """EOQ = sqrt(2 D S / H) (Harris 1913; Silver, Pyke & Thomas 2017, sec. 4.2), units per order.

    NaN (null back in polars) where undefined: order cost S or holding cost H missing or <= 0, or annual demand D
    missing or <= 0 (nothing to order). The caller then needs another Q, e.g. the demand over a review period.
    """
    d, s, h = _floats(annual_demand_units, order_cost, holding_cost_per_unit_year)
    ok = (d > 0) & (s > 0) & (h > 0)  # False for NaN
    return np.where(ok, np.sqrt(2.0 * np.where(ok, d * s / np.where(ok, h, 1.0), 0.0)), np.nan)


def reorder_point(lead_time_demand: ArrayLike, safety_stock: ArrayLike) -> np.ndarray:
    """Continuous review (s, Q): ROP = forecast over L + SS over L (docs/methods.md; Silver, Pyke & Thomas 2017, ch. 6),
    never negative. NaN in, NaN out. Not rounded: `round_up_units` does that."""
    forecast, ss = _floats(lead_time_demand, safety_stock)
    return np.maximum(forecast + ss, 0.0)


def order_up_to_level(review_lead_time_demand: ArrayLike, review_safety_stock: ArrayLike) -> np.ndarray:
    """Periodic review (R, S): S = forecast over R + L + the safety stock over R + L (docs/methods.md; Silver, Pyke &
    Thomas 2017, ch. 6), e.g. `safety_stock_cycle(z, sigma over R + L)` or a bootstrap buffer.

    Safety stocks are floored at 0, so a negative fill-rate k never pulls S below the forecast; S itself is never
    negative. NaN in, NaN out. Not rounded: `round_up_units` does that.
    """
    forecast, ss = _floats(review_lead_time_demand, review_safety_stock)
    return np.maximum(forecast + ss, 0.0)


def textbook_safety_stock(z: ArrayLike, sigma_demand_per_period: ArrayLike, lead_time_periods: ArrayLike) -> np.ndarray:
    """The textbook baseline z * sigma_d * sqrt(L) (Chopra & Meindl, ch. 12): the demand std per period, no forecast
    error, no lead-time variance. For comparison only; buffercast's SS is `safety_stock_cycle(z, sigma_total)`.

    Floored at 0; NaN for a negative or missing lead time.
    """
    sigma_d, lead = _floats(sigma_demand_per_period, lead_time_periods)
    return safety_stock_cycle(z, sigma_d * np.sqrt(np.where(lead >= 0, lead, np.nan)))
