"""Safety stock, reorder point and their rounding (DOMAIN.md; Silver, Pyke & Thomas 2017, ch. 6).

Pure numpy/scipy maths on arrays plus polars expressions over columns; no I/O.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import optimize, stats


def z_for_cycle_service_level(alpha: np.ndarray | float) -> np.ndarray:
    """z = Phi^-1(alpha): the safety factor for a cycle service level alpha in (0, 1)."""
    alpha = np.asarray(alpha, dtype=float)
    if np.any((alpha <= 0) | (alpha >= 1)):
        raise ValueError("a cycle service level must be strictly between 0 and 1")
    return stats.norm.ppf(alpha)


def normal_loss(k: np.ndarray | float) -> np.ndarray:
    """Standard normal loss function G(k) = phi(k) - k * (1 - Phi(k)): expected units short per unit sigma."""
    k = np.asarray(k, dtype=float)
    return stats.norm.pdf(k) - k * stats.norm.sf(k)


def k_for_fill_rate(beta: np.ndarray | float, order_quantity: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    """Safety factor k with G(k) = (1 - beta) * Q / sigma (DOMAIN.md, fill rate beta), solved numerically.

    G is convex and strictly decreasing (G' = -(1 - Phi)), so Newton's method started left of the root
    (G(k) ~ -k there) converges monotonically; vectorised over all SKUs at once. sigma = 0: k = 0.
    """
    beta, q, sigma = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (beta, order_quantity, sigma)))
    if np.any((beta <= 0) | (beta >= 1)):
        raise ValueError("a fill rate must be strictly between 0 and 1")
    positive = sigma > 0
    target = np.where(positive, (1.0 - beta) * q / np.where(positive, sigma, 1.0), 1.0)
    k = optimize.newton(
        lambda k: normal_loss(k) - target, x0=-target - 1.0, fprime=lambda k: -stats.norm.sf(k), tol=1e-12, maxiter=200
    )
    return np.where(positive, k, 0.0)


def sigma_total(sigma_lead_time_demand: pl.Expr, demand_per_period: pl.Expr, lead_time_std_periods: pl.Expr) -> pl.Expr:
    """sqrt(sigma_LT^2 + d^2 * sigma_L^2): demand uncertainty over the lead time plus lead-time variability."""
    return (sigma_lead_time_demand.pow(2) + demand_per_period.pow(2) * lead_time_std_periods.pow(2)).sqrt()


def round_up_units(units: pl.Expr, pack_size: pl.Expr | None = None) -> pl.Expr:
    """Never negative, up to whole units, then up to a multiple of the pack size (null pack size: 1).

    A tolerance of 1e-9 keeps 36.000000000001 from becoming 37 through float noise.
    """
    whole = (units.clip(0.0, None) - 1e-9).ceil().clip(0.0, None)
    if pack_size is None:
        return whole
    pack = pack_size.fill_null(1.0).clip(1.0, None)
    return (whole / pack - 1e-9).ceil().clip(0.0, None) * pack
