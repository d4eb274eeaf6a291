"""What calibrating the bootstrap buffers costs: the deployed bootstrap against its backtest windows.

The recommendation draws one bootstrap per intermittent or lumpy SKU and exposure (lead time, review + lead time:
`buffers.recommend._bootstrap`). Calibration (`pipeline.stages.calibrate_buffers`) draws one per SKU, backtest
window and exposure, from the history up to each window's cutoff (`bootstrap_window_coverage`). Both on the same
generated intermittent panel, the same samples per draw (2,000) and history (365 periods); medians of `--repeat`
runs after one warm-up, and the ratio of the two.

    .venv/bin/python bench/bootstrap_speed.py                 # 10,000 SKUs x 730 days, 8 windows
    .venv/bin/python bench/bootstrap_speed.py --skus 2000     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profile_m5 import machine

from buffers.lead_time_demand import bootstrap_lead_time_demand, bootstrap_window_coverage

SAMPLES, HISTORY, REVIEW = 2000, 365, 7.0


def panel_and_plans(n: int, periods: int, windows: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """An intermittent panel (20% of days sell 1..8 units), lead times 5..40 days, and the calibration's windows:
    `windows` cutoffs a week apart, each with the lead time and review + lead time."""
    rng = np.random.default_rng(seed)
    y = ((rng.random((n, periods)) < 0.2) * rng.integers(1, 9, (n, periods))).astype(float)
    ids = [f"s{i:06d}" for i in range(n)]
    panel = pl.DataFrame({"unique_id": np.repeat(ids, periods), "ds": np.tile(np.arange(periods), n), "y": y.ravel()})
    lead = rng.uniform(5, 40, n)
    deployed = pl.DataFrame({"unique_id": ids, "lead_time_periods": lead, "lead_time_std_periods": 0.2 * lead})
    cutoffs = np.array([periods - 1 - 60 - 7 * k for k in range(windows)])
    cal = pl.DataFrame(
        {
            "unique_id": np.repeat(ids, windows * 2),
            "cutoff": np.tile(np.repeat(cutoffs, 2), n),
            "lead_time_periods": np.repeat(lead, windows * 2) + np.tile([0.0, REVIEW], n * windows),
            "lead_time_std_periods": 0.0,
            "actual": rng.poisson(5, n * windows * 2).astype(float),
        }
    )
    return panel, deployed, cal


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=10_000)
    ap.add_argument("--periods", type=int, default=730)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bootstrap_speed.json")
    args = ap.parse_args()
    panel, deployed, cal = panel_and_plans(args.skus, args.periods, args.windows, seed=0)

    def recommendation() -> None:  # as `_bootstrap`: lead time, then review + lead time
        for extra in (0.0, REVIEW):
            lt = deployed.with_columns(pl.col("lead_time_periods") + extra)
            bootstrap_lead_time_demand(panel, lt, [0.9, 0.95, 0.97], seed=1, n_samples=SAMPLES, history_periods=HISTORY)

    def calibration() -> None:
        bootstrap_window_coverage(panel, cal, seed=1, n_samples=SAMPLES, history_periods=HISTORY)

    times = {"recommendation_bootstrap_s": timed(recommendation, args.repeat), "calibration_windows_s": timed(calibration, args.repeat)}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "skus": args.skus,
        "periods": args.periods,
        "windows": args.windows,
        "draws": {"recommendation": args.skus * 2, "calibration": cal.height},
        "samples_per_draw": SAMPLES,
        "history_periods": HISTORY,
        "times_s": times,
        "median_s": med,
        "ratio_calibration_to_recommendation": med["calibration_windows_s"] / med["recommendation_bootstrap_s"],
        "machine": machine(),
    }
    print(
        f"{args.skus:,} SKUs x {args.periods} periods, {args.windows} windows x 2 exposures, {SAMPLES} samples per draw, "
        f"{os.cpu_count()} CPUs: recommendation bootstrap {med['recommendation_bootstrap_s']:.2f} s ({args.skus * 2:,} draws), "
        f"calibration windows {med['calibration_windows_s']:.2f} s ({cal.height:,} draws), "
        f"ratio {result['ratio_calibration_to_recommendation']:.1f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
