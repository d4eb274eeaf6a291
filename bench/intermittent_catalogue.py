"""A seeded MONTHLY intermittent spare-parts catalogue whose statistics match real monthly spare-part sales.

Run: `.venv/bin/python bench/intermittent_catalogue.py --check` (options: `--help`) prints the statistics of the
catalogue next to their targets. `evaluate_intermittent.py` evaluates the plan on it.

The targets (`TARGETS`, percentiles 10/25/50/75/90 over the series of a real monthly spare-parts catalogue), each
computed by `catalogue_statistics` over the whole window (48 months ending 2026-06 by default) of every SKU:
- ADI, the average demand interval: months in the window / months with a sale (not from the first sale, as the SBC
  class of `features.sbc` counts: a part is listed for the whole window), 1.7 / 2.2 / 3.6 / 7.2 / 11.8 months;
- CV2 of the non-zero monthly sizes (ddof 1 as `features.sbc`; 0 with a single sale), 0.00 / 0.14 / 0.24 / 0.41 / 0.60;
- the median over the series of the mean non-zero size, 1.6 units;
- the longest run of months without a sale: median 9 months, 98% of the series have one of 3+ months, 78% of 6+.

The construction (`demand_matrix`), per SKU, from one `numpy.random.default_rng(seed)`:
- occurrence: a latent ADI drawn by interpolating `Params.adi_knots` (latent ADI at percentiles 0/10/25/50/75/90/100)
  in log space, p = 1 / ADI the long-run share of months with a sale; the months follow a two-state on/off Markov
  chain with that stationary share and a lag-1 autocorrelation rho = `rho_fast` p^`rho_power` x uniform(0.5, 1.5):
  fast movers cluster (real ones too have silent quarters: 98% of the parts have a 3-month silence, independent
  months at ADI 1.5 give one to only 60%), slow ones barely;
- sizes: a share `Params.unit_share` of the parts sell exactly 1 unit whenever they sell (CV2 0), the others
  1 + a gamma-Poisson (negative binomial) count with a log-normal mean and a log-uniform shape (overdispersion);
- death: a share `Params.dead_share` of the parts stop selling for good 6 to 18 months before the end (never
  before their first sale: every part sells at least once).
The constants were tuned by a differential-evolution search against `catalogue_statistics` (2,500 SKUs, seed 7:
every statistic within 5% of its target, `--check` prints them; seeds 1 to 3 within 6%). ADI moves in steps
(48 / 4 = 12, 48 / 5 = 9.6 months): its upper percentiles can only land on those.

Sales come as one row per SKU and month WITH a sale only (sku_id, location_id null, date the 1st of the month,
quantity): `features.calendar.to_periods` fills every month from a series' first non-zero month to the last period of
the data with explicit zeros (its grid joined to the sums, `fill_null(0.0)`), at input grain "period" too (the last
period is the one containing the as-of date, the last date of the sales). Every month of the catalogue has some sale
(checked), so the panel runs to 2026-06.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _evaluation import seeded_master
from m3_service_levels import months_back

from features.calendar import period_days

END = dt.date(2026, 6, 1)  # the first day of the last month
MONTHS = 48
SKUS = 2500
PERCENTILES = (10, 25, 50, 75, 90)
#: Real monthly spare-part sales: percentiles (PERCENTILES) over the series, or one number.
TARGETS: dict[str, tuple[float, ...] | float] = {
    "adi": (1.7, 2.2, 3.6, 7.2, 11.8),
    "cv2": (0.00, 0.14, 0.24, 0.41, 0.60),
    "median_nonzero_size": 1.6,
    "longest_zero_run_median": 9.0,
    "share_zero_run_3plus": 0.98,
    "share_zero_run_6plus": 0.78,
}


@dataclass(frozen=True)
class Params:
    """The generator's constants (tuned against `catalogue_statistics`: module docstring)."""

    adi_knots: tuple[float, ...] = (1.05, 1.84, 2.10, 3.33, 6.85, 8.41, 21.0)  # latent ADI at percentiles 0/10/25/50/75/90/100
    rho_fast: float = 0.81  # lag-1 autocorrelation of the on/off months: rho_fast p^rho_power x uniform(0.5, 1.5) ...
    rho_power: float = 2.5  # ... (fast movers cluster: they too have silent quarters; slow ones barely)
    unit_share: float = 0.05  # parts that always sell exactly 1 unit
    size_mean_median: float = 0.65  # sizes 1 + NB: the median over parts of the NB mean ...
    size_mean_sigma: float = 0.67  # ... and the sigma of its log (log-normal)
    shape_range: tuple[float, float] = (0.38, 6.6)  # NB shape k, log-uniform (smaller: more overdispersed)
    dead_share: float = 0.05  # parts that stop selling for good ...
    dead_months: tuple[int, int] = (6, 18)  # ... this many months before the end (uniform)


KNOT_PERCENTILES = (0, 10, 25, 50, 75, 90, 100)


def demand_matrix(n: int, months: int, rng: np.random.Generator, params: Params = Params()) -> tuple[np.ndarray, np.ndarray]:
    """(n, months) monthly demand of n parts and whether each part died (module docstring)."""
    adi = np.exp(np.interp(rng.uniform(size=n) * 100, KNOT_PERCENTILES, np.log(params.adi_knots)))
    p = 1.0 / adi
    rho = np.clip(params.rho_fast * p**params.rho_power * rng.uniform(0.5, 1.5, n), 0.0, 0.95)
    on_after_on, on_after_off = p + rho * (1 - p), p * (1 - rho)
    on = np.empty((n, months), dtype=bool)
    on[:, 0] = rng.uniform(size=n) < p
    for t in range(1, months):
        on[:, t] = rng.uniform(size=n) < np.where(on[:, t - 1], on_after_on, on_after_off)
    dead = rng.uniform(size=n) < params.dead_share
    stop = np.where(dead, months - rng.integers(params.dead_months[0], params.dead_months[1] + 1, n), months)
    first = np.where(on.any(axis=1), on.argmax(axis=1), months)
    stop = np.where(first < stop, stop, months)  # a part dies only after its first sale
    on &= np.arange(months)[None, :] < stop[:, None]
    never = ~on.any(axis=1)  # every part sells at least once: in one month before it stops
    on[never, (rng.uniform(size=never.sum()) * stop[never]).astype(int)] = True

    unit = rng.uniform(size=n) < params.unit_share
    mean = params.size_mean_median * np.exp(params.size_mean_sigma * rng.standard_normal(n))
    shape = np.exp(rng.uniform(*np.log(params.shape_range), n))
    rate = rng.gamma(shape[:, None], (mean / shape)[:, None], (n, months))
    sizes = np.where(unit[:, None], 1.0, 1.0 + rng.poisson(rate))
    return np.where(on, sizes, 0.0), dead & (stop < months)


def catalogue(n_skus: int = SKUS, seed: int = 7, months: int = MONTHS, params: Params = Params()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sales (one row per SKU and month with a sale, months ending 2026-06) and the seeded SKU master: lead times 1, 2
    or 3 months with std 0 .. 25% of the mean, log-normal unit costs (median 20), 5% critical."""
    rng = np.random.default_rng(seed)
    demand, _ = demand_matrix(n_skus, months, rng, params)
    ids = [f"P{i:05d}" for i in range(n_skus)]
    sku, month = np.nonzero(demand)
    dates = months_back(END, months)
    sales = pl.DataFrame(
        {
            "sku_id": pl.Series(ids, dtype=pl.String).gather(sku),
            "location_id": pl.Series([None] * sku.size, dtype=pl.String),
            "date": pl.Series(dates, dtype=pl.Date).gather(month),
            "quantity": demand[sku, month],
        }
    )
    if sales["date"].max() != END or sales["date"].min() != dates[0]:
        raise ValueError("intermittent catalogue: the first or the last month has no sale; the panel would not span the window")
    return sales, seeded_master(ids, rng, period_days("M"), critical_share=0.05, unit_cost_median=20.0)


def dense(sales: pl.DataFrame) -> np.ndarray:
    """The (series, months) demand of `sales` over the months from its first to its last date, absent months 0."""
    index = pl.col("date").dt.year() * 12 + pl.col("date").dt.month()
    monthly = (
        sales.select(pl.col("sku_id"), month=index, quantity=pl.col("quantity")).group_by("sku_id", "month").agg(pl.col("quantity").sum())
    )
    first = int(monthly["month"].min())
    months = int(monthly["month"].max()) - first + 1
    row = monthly["sku_id"].rank("dense").cast(pl.Int64).to_numpy() - 1
    out = np.zeros((int(row.max()) + 1, months))
    out[row, monthly["month"].to_numpy() - first] = monthly["quantity"].to_numpy()
    return out


def longest_zero_run(demand: np.ndarray) -> np.ndarray:
    """The longest run of zero months of each row."""
    run = np.zeros(demand.shape[0], dtype=int)
    best = np.zeros_like(run)
    for column in (demand == 0).T:
        run = np.where(column, run + 1, 0)
        best = np.maximum(best, run)
    return best


def catalogue_statistics(sales: pl.DataFrame) -> dict[str, float | list[float]]:
    """The statistics of `TARGETS` for a monthly sales frame (sku_id, date, quantity; absent months are zeros), over
    the window from its first to its last month; and, for reading, the share of series whose last sale is 6+ and
    12+ months before the end (the dead and the merely slow), the window and the number of series."""
    demand = dense(sales)
    nonzero = demand > 0
    n_nonzero = nonzero.sum(axis=1)
    sizes = np.where(nonzero, demand, np.nan)
    mean = np.nanmean(sizes, axis=1)
    var = np.where(n_nonzero > 1, _var(sizes, n_nonzero), 0.0)
    runs = longest_zero_run(demand)
    months = demand.shape[1]
    since_last = np.argmax(nonzero[:, ::-1], axis=1)  # months after the last sale
    return {
        "series": int(demand.shape[0]),
        "months": int(months),
        "adi": _percentiles(months / n_nonzero),
        "cv2": _percentiles(var / mean**2),
        "median_nonzero_size": round(float(np.median(mean)), 3),
        "longest_zero_run_median": float(np.median(runs)),
        "share_zero_run_3plus": round(float((runs >= 3).mean()), 3),
        "share_zero_run_6plus": round(float((runs >= 6).mean()), 3),
        "share_last_sale_6plus_months_ago": round(float((since_last >= 6).mean()), 3),
        "share_last_sale_12plus_months_ago": round(float((since_last >= 12).mean()), 3),
    }


def _var(sizes: np.ndarray, n_nonzero: np.ndarray) -> np.ndarray:
    """Per row, the ddof-1 variance of the non-NaN values (NaN where fewer than 2)."""
    out = np.full(sizes.shape[0], np.nan)
    many = n_nonzero > 1
    out[many] = np.nanvar(sizes[many], axis=1, ddof=1)
    return out


def _percentiles(values: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(values, PERCENTILES)]


def compare(achieved: dict) -> dict[str, dict]:
    """Per target statistic: target, achieved and achieved / target - 1 (null where the target is 0)."""

    def rel(a: float, t: float) -> float | None:
        return round(a / t - 1, 3) if t else None

    out = {}
    for name, target in TARGETS.items():
        got = achieved[name]
        error = [rel(a, t) for a, t in zip(got, target, strict=True)] if isinstance(target, tuple) else rel(got, target)
        out[name] = {"target": list(target) if isinstance(target, tuple) else target, "achieved": got, "relative_error": error}
    return out


def print_comparison(stats: dict) -> None:
    """One line per target statistic: target, achieved, relative error; then the other statistics."""
    for name, row in compare(stats).items():
        print(f"{name:24} target {row['target']!s:30} achieved {row['achieved']!s:36} relative error {row['relative_error']}")
    print({k: v for k, v in stats.items() if k not in TARGETS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=SKUS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="Print the catalogue's statistics next to their targets.")
    args = parser.parse_args(argv)
    sales, master = catalogue(args.skus, args.seed)
    print(f"{master.height} SKUs, {sales.height} sales rows ({sales['date'].min()} .. {sales['date'].max()})")
    if args.check:
        print_comparison(catalogue_statistics(sales))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
