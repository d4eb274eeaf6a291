"""A deterministic, realistic retail catalogue: the embedded default data of buffercast.

`generate_catalogue` returns an order-line sales extract and a SKU master; `write_sample_data` writes both
atomically. Each SKU follows one demand archetype (smooth seasonal, trending, erratic, intermittent, lumpy,
new, discontinued), assigned in fixed shares; the archetype is deliberately not recorded, so the profiling
code has to recover the demand class from the demand itself (Syntetos, Boylan & Croston 2005).

Everything is vectorised with numpy over a SKU x day matrix (one loop over archetypes only), and the same
(n_skus, seed, end_date, n_days) always gives bit-for-bit identical frames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from flows.publish import atomic_path

DEFAULT_END_DATE = dt.date(2026, 10, 31)

# Shares of SKUs per archetype; order fixes the order of random draws, so it is part of determinism.
ARCHETYPE_SHARES: dict[str, float] = {
    "smooth_seasonal": 0.30,
    "trending": 0.10,
    "erratic": 0.15,
    "intermittent": 0.20,
    "lumpy": 0.12,
    "new": 0.08,
    "discontinued": 0.05,
}
SPLIT_SKU_SHARE = 0.20  # SKUs whose busy days arrive as several order lines
CRITICAL_SHARE = 0.10
MISSING_FROM_MASTER_SHARE = 0.02
N_SUPPLIERS = 25

# Retail day-of-week shape, Monday..Sunday (weekend peak); scaled per SKU.
_BASE_WEEKDAY_PROFILE = np.array([0.90, 0.88, 0.92, 0.98, 1.12, 1.30, 0.90])

_Array = np.ndarray
_ArchetypeGenerator = Callable[[np.random.Generator, int, "_Calendar"], tuple[_Array, _Array, _Array]]


class _Calendar:
    """The day axis shared by every SKU: index 0 is the first day, n_days - 1 is end_date."""

    def __init__(self, end_date: dt.date, n_days: int) -> None:
        end = np.datetime64(end_date, "D")
        self.dates = end - np.arange(n_days - 1, -1, -1, dtype="timedelta64[D]")
        self.n_days = n_days
        self.epoch_days = self.dates.astype(np.int64)
        self.weekday = (self.epoch_days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        self.day_of_year = (self.dates - self.dates.astype("datetime64[Y]")).astype(np.int64)
        self.t = np.arange(n_days, dtype=np.float64)


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> _Array:
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _weekday_factor(rng: np.random.Generator, n: int, cal: _Calendar) -> _Array:
    strength = rng.uniform(0.3, 1.2, (n, 1))
    jitter = rng.normal(0.0, 0.03, (n, 7))
    profile = 1.0 + strength * (_BASE_WEEKDAY_PROFILE - 1.0) + jitter
    profile /= profile.mean(axis=1, keepdims=True)
    return profile[:, cal.weekday]


def _day_noise(rng: np.random.Generator, n: int, cal: _Calendar, shape_low: float, shape_high: float) -> _Array:
    # Gamma-mixed Poisson = negative binomial: mild over-dispersion for otherwise smooth items.
    shape = rng.uniform(shape_low, shape_high, (n, 1))
    return rng.gamma(shape, 1.0 / shape, (n, cal.n_days))


def _full_window(n: int, cal: _Calendar) -> tuple[_Array, _Array]:
    return np.zeros(n, dtype=np.int64), np.full(n, cal.n_days - 1, dtype=np.int64)


def _smooth_seasonal(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    level = _log_uniform(rng, 3.0, 200.0, n)[:, None]
    amplitude = rng.uniform(0.05, 0.35, (n, 1))
    peak_day = rng.uniform(0.0, 365.25, (n, 1))
    yearly = 1.0 + amplitude * np.cos(2.0 * np.pi * (cal.day_of_year - peak_day) / 365.25)
    rate = level * _weekday_factor(rng, n, cal) * yearly * _day_noise(rng, n, cal, 15.0, 60.0)
    return rng.poisson(rate), *_full_window(n, cal)


def _trending(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    level = _log_uniform(rng, 5.0, 150.0, n)[:, None]
    up = rng.random(n) < 0.5
    end_multiplier = np.where(up, rng.uniform(1.5, 3.0, n), rng.uniform(0.25, 0.6, n))[:, None]
    trend = np.exp(np.log(end_multiplier) * cal.t / max(cal.n_days - 1, 1))
    rate = level * trend * _weekday_factor(rng, n, cal) * _day_noise(rng, n, cal, 15.0, 60.0)
    return rng.poisson(rate), *_full_window(n, cal)


def _sparse_sizes(rng: np.random.Generator, n: int, cal: _Calendar, mean: _Array, dispersion: _Array | None) -> _Array:
    """Order sizes >= 1 with the given mean; `dispersion` is the gamma shape (None: Poisson, low variance)."""
    extra = np.broadcast_to(mean - 1.0, (n, cal.n_days))
    if dispersion is not None:
        extra = extra * rng.gamma(dispersion, 1.0 / dispersion, (n, cal.n_days))
    return 1 + rng.poisson(extra)


def _erratic(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    occurrence = rng.uniform(0.82, 0.97, (n, 1))
    mean_size = _log_uniform(rng, 5.0, 80.0, n)[:, None]
    dispersion = rng.uniform(0.5, 1.1, (n, 1))
    sells = rng.random((n, cal.n_days)) < occurrence
    return sells * _sparse_sizes(rng, n, cal, mean_size, dispersion), *_full_window(n, cal)


def _intermittent(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    occurrence = rng.uniform(0.10, 0.40, (n, 1))
    mean_size = rng.uniform(1.0, 6.0, (n, 1))
    sells = rng.random((n, cal.n_days)) < occurrence
    return sells * _sparse_sizes(rng, n, cal, mean_size, None), *_full_window(n, cal)


def _lumpy(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    occurrence = rng.uniform(0.03, 0.20, (n, 1))
    mean_size = _log_uniform(rng, 5.0, 80.0, n)[:, None]
    dispersion = rng.uniform(0.25, 0.6, (n, 1))
    sells = rng.random((n, cal.n_days)) < occurrence
    return sells * _sparse_sizes(rng, n, cal, mean_size, dispersion), *_full_window(n, cal)


def _new_products(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    # First sale 19..59 days before end_date, i.e. within the last 20..60 days counting end_date.
    days_before_end = np.minimum(rng.integers(19, 60, n), cal.n_days - 1)
    launch = cal.n_days - 1 - days_before_end
    level = _log_uniform(rng, 2.0, 60.0, n)[:, None]
    ramp_days = rng.uniform(3.0, 15.0, (n, 1))
    age = cal.t[None, :] - launch[:, None]
    ramp = np.where(age >= 0, 1.0 - np.exp(-(age + 1.0) / ramp_days), 0.0)
    rate = level * ramp * _weekday_factor(rng, n, cal) * _day_noise(rng, n, cal, 10.0, 40.0)
    quantity = rng.poisson(rate)
    rows = np.arange(n)
    quantity[rows, launch] = np.maximum(quantity[rows, launch], 1)  # the launch day is the first sale
    return quantity, launch, np.full(n, cal.n_days - 1, dtype=np.int64)


def _discontinued(rng: np.random.Generator, n: int, cal: _Calendar) -> tuple[_Array, _Array, _Array]:
    # Last sale 60..200 days before end_date, after a phase-out decline.
    days_before_end = np.minimum(rng.integers(60, 201, n), cal.n_days - 1)
    last_day = cal.n_days - 1 - days_before_end
    level = _log_uniform(rng, 1.0, 40.0, n)[:, None]
    phase_out_days = rng.uniform(60.0, 180.0, (n, 1))
    to_end = last_day[:, None] - cal.t[None, :]
    phase_out = np.clip(0.3 + 0.7 * to_end / phase_out_days, 0.3, 1.0)
    rate = np.where(to_end >= 0, level * phase_out, 0.0) * _weekday_factor(rng, n, cal) * _day_noise(rng, n, cal, 10.0, 40.0)
    quantity = rng.poisson(rate)
    rows = np.arange(n)
    quantity[rows, last_day] = np.maximum(quantity[rows, last_day], 1)  # pins the last sale date
    return quantity, np.zeros(n, dtype=np.int64), last_day


_GENERATORS: dict[str, _ArchetypeGenerator] = {
    "smooth_seasonal": _smooth_seasonal,
    "trending": _trending,
    "erratic": _erratic,
    "intermittent": _intermittent,
    "lumpy": _lumpy,
    "new": _new_products,
    "discontinued": _discontinued,
}


def _allocate(n: int, shares: list[float]) -> _Array:
    """Whole counts summing to n in the given shares (largest remainder)."""
    exact = np.asarray(shares) * n / sum(shares)
    counts = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: n - counts.sum()]] += 1
    return counts


def _daily_demand(rng: np.random.Generator, archetype: _Array, cal: _Calendar) -> _Array:
    """SKU x day matrix of whole units; every SKU sells at least once in its active window."""
    quantity = np.zeros((archetype.size, cal.n_days), dtype=np.int64)
    first_active = np.zeros(archetype.size, dtype=np.int64)
    last_active = np.zeros(archetype.size, dtype=np.int64)
    for code, generate in enumerate(_GENERATORS.values()):
        rows = np.flatnonzero(archetype == code)
        if rows.size:
            quantity[rows], first_active[rows], last_active[rows] = generate(rng, rows.size, cal)
    # A very short history can leave a sparse SKU without any sale; give it one so every SKU is in the extract.
    silent = np.flatnonzero(quantity.sum(axis=1) == 0)
    days = rng.integers(first_active[silent], last_active[silent] + 1)
    quantity[silent, days] = 1
    return quantity


def _order_lines(rng: np.random.Generator, quantity: _Array, splits: _Array) -> tuple[_Array, _Array, _Array, _Array]:
    """Explode SKU-days into order lines: on split SKUs some days become 2-3 lines summing to the day's units."""
    sku, day = np.nonzero(quantity)
    units = quantity[sku, day]
    split_day_prob = rng.uniform(0.2, 0.6, quantity.shape[0])
    is_split = splits[sku] & (rng.random(units.size) < split_day_prob[sku])
    n_lines = np.where(is_split, rng.choice(np.array([2, 3]), size=units.size, p=[0.6, 0.4]), 1)
    n_lines = np.minimum(n_lines, units)
    # Cut the day's units at up to two distinct points in 1..units-1 (unused cuts are placed at `units`).
    cut_a = rng.integers(1, np.maximum(units, 2))
    cut_b = rng.integers(1, np.maximum(units - 1, 2))
    cut_b = cut_b + (cut_b >= cut_a)
    first_cut = np.where(n_lines == 3, np.minimum(cut_a, cut_b), np.where(n_lines == 2, cut_a, units))
    second_cut = np.where(n_lines == 3, np.maximum(cut_a, cut_b), units)
    parts = np.stack([first_cut, second_cut - first_cut, units - second_cut], axis=1)
    line_no = np.broadcast_to(np.arange(1, 4), parts.shape)
    keep = line_no <= n_lines[:, None]
    return np.repeat(sku, n_lines), np.repeat(day, n_lines), parts[keep], line_no[keep]


def _sku_master(rng: np.random.Generator, sku_ids: pl.Series, archetype: _Array) -> pl.DataFrame:
    n = archetype.size
    slow_mover = np.isin(archetype, [list(_GENERATORS).index("intermittent"), list(_GENERATORS).index("lumpy")])
    # Suppliers in fixed shares: local (2-7 d), regional (7-21 d), overseas (25-55 d); reliable, middling or unreliable.
    supplier_kind = rng.permutation(np.repeat(np.arange(3), _allocate(N_SUPPLIERS, [0.40, 0.35, 0.25])))
    supplier_lead = np.choose(
        supplier_kind,
        [_log_uniform(rng, 2.0, 7.0, N_SUPPLIERS), _log_uniform(rng, 7.0, 21.0, N_SUPPLIERS), _log_uniform(rng, 25.0, 55.0, N_SUPPLIERS)],
    )
    reliability = rng.permutation(np.repeat(np.arange(3), _allocate(N_SUPPLIERS, [0.55, 0.20, 0.25])))
    supplier_cv = np.choose(
        reliability,
        [rng.uniform(0.05, 0.10, N_SUPPLIERS), rng.uniform(0.15, 0.30, N_SUPPLIERS), rng.uniform(0.40, 0.70, N_SUPPLIERS)],
    )
    supplier = rng.integers(0, N_SUPPLIERS, n)
    lead_time = np.clip(supplier_lead[supplier] * rng.uniform(0.85, 1.15, n), 1.0, 60.0).round(1)
    lead_time_std = (lead_time * supplier_cv[supplier] * rng.uniform(0.9, 1.1, n)).round(2)

    # Spare-part-like slow movers cost more; lognormal, median ~ 12, clipped to 0.5..500.
    unit_cost = np.clip(np.exp(rng.normal(np.log(12.0) + 1.0 * slow_mover, 1.2)), 0.5, 500.0).round(2)

    n_critical = round(CRITICAL_SHARE * n)
    weight = np.where(slow_mover, 2.0, 1.0)
    critical = np.zeros(n, dtype=bool)
    critical[rng.choice(n, size=n_critical, replace=False, p=weight / weight.sum())] = True

    pack_size = np.where(rng.random(n) < 0.25, rng.choice(np.array([6, 12, 24]), size=n), 1)

    n_missing = round(MISSING_FROM_MASTER_SHARE * n)
    if n >= 10:
        n_missing = max(n_missing, 1)
    in_master = np.ones(n, dtype=bool)
    in_master[rng.choice(n, size=n_missing, replace=False)] = False

    supplier_width = len(str(N_SUPPLIERS))
    master = pl.DataFrame(
        {
            "sku_id": sku_ids,
            "unit_cost": pl.Series(unit_cost, dtype=pl.Float64),
            "lead_time_days": pl.Series(lead_time, dtype=pl.Float64),
            "lead_time_std_days": pl.Series(lead_time_std, dtype=pl.Float64),
            "critical": pl.Series(critical, dtype=pl.Boolean),
            "pack_size": pl.Series(pack_size, dtype=pl.Int64),
            "supplier_id": [f"SUP-{s + 1:0{supplier_width}d}" for s in supplier],
        }
    )
    return master.filter(pl.Series(in_master))


def generate_catalogue(
    n_skus: int = 500,
    seed: int = 7,
    end_date: dt.date = DEFAULT_END_DATE,
    n_days: int = 730,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (sales, sku_master).

    sales: sku_id (str), date (Date), quantity (Float64, whole units > 0), line_id (str, unique); one row per
    order line, days without sales have no row, sorted by date, sku_id, line_id.
    sku_master: sku_id, unit_cost, lead_time_days, lead_time_std_days, critical, pack_size, supplier_id; about 2%
    of the SKUs are left out on purpose, so the config defaults get exercised.
    """
    if n_skus < 1:
        raise ValueError(f"n_skus must be >= 1, got {n_skus}")
    if n_days < 1:
        raise ValueError(f"n_days must be >= 1, got {n_days}")
    # Independent streams: changing how one part draws does not shift the others.
    rng_assign, rng_demand, rng_lines, rng_master = np.random.default_rng(seed).spawn(4)
    cal = _Calendar(end_date, n_days)

    counts = _allocate(n_skus, list(ARCHETYPE_SHARES.values()))
    archetype = rng_assign.permutation(np.repeat(np.arange(len(counts)), counts))  # SKU numbers say nothing of the archetype
    splits = np.zeros(n_skus, dtype=bool)
    splits[rng_assign.choice(n_skus, size=round(SPLIT_SKU_SHARE * n_skus), replace=False)] = True

    quantity = _daily_demand(rng_demand, archetype, cal)
    sku, day, units, line_no = _order_lines(rng_lines, quantity, splits)

    width = max(5, len(str(n_skus)))
    sku_ids = pl.select(pl.lit("SKU-") + pl.Series(np.arange(1, n_skus + 1)).cast(pl.String).str.zfill(width)).to_series().alias("sku_id")
    sales = (
        pl.DataFrame(
            {
                "sku_id": sku_ids.gather(sku),
                "date": pl.Series(cal.epoch_days[day], dtype=pl.Int32).cast(pl.Date),
                "quantity": pl.Series(units, dtype=pl.Float64),
                "line_no": pl.Series(line_no, dtype=pl.Int64),
            }
        )
        .with_columns(
            line_id=pl.concat_str(pl.col("sku_id"), pl.col("date").dt.strftime("%Y%m%d"), pl.col("line_no").cast(pl.String), separator="-")
        )
        .drop("line_no")
        .sort("date", "sku_id", "line_id")
    )
    return sales, _sku_master(rng_master, sku_ids, archetype)


def _write_atomic(frame: pl.DataFrame, path: Path, fmt: Literal["parquet", "csv"]) -> None:
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)


def write_sample_data(
    out_dir: str | Path,
    n_skus: int = 500,
    seed: int = 7,
    end_date: dt.date = DEFAULT_END_DATE,
    n_days: int = 730,
    fmt: Literal["parquet", "csv"] = "parquet",
) -> dict[str, Path]:
    """Writes sales.<fmt> and sku_master.<fmt> into out_dir (created); returns {"sales": path, "sku_master": path}.

    Each file is written to a temporary name in out_dir and then renamed, so a crash never leaves a half file.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sales, sku_master = generate_catalogue(n_skus=n_skus, seed=seed, end_date=end_date, n_days=n_days)
    paths = {"sales": out / f"sales.{fmt}", "sku_master": out / f"sku_master.{fmt}"}
    _write_atomic(sales, paths["sales"], fmt)
    _write_atomic(sku_master, paths["sku_master"], fmt)
    return paths
