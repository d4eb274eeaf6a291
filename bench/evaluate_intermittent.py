"""Rolling-origin evaluation of the whole plan on a monthly intermittent spare-parts catalogue.

Run: `.venv/bin/python bench/evaluate_intermittent.py` (options: `--help`). Writes
`bench/results/evaluate_intermittent.json` (the catalogue's statistics, target vs achieved, then as
`evaluate_m3.py`: the `evaluation` table's rows over all windows, per demand class, policy and life cycle, timing,
machine) and prints the headline tables (`_evaluation.run_evaluation`).

The data: `intermittent_catalogue.catalogue`, a seeded catalogue of `--skus` spare parts (default 2,500) over 48
months ending 2026-06 whose ADI, CV2 of the non-zero sizes, mean size, longest silences and dead parts match real
monthly spare-part sales (its docstring); one sales row per part and month with a sale (the calendar fills the other
months with zeros). Its master: lead times 1, 2 or 3 months with std 0 to 25% of the mean, log-normal unit costs
(median 20), 5% critical, the default ABC x criticality targets; review period 1 month, a part new only in its first
month (`life_cycle.new_days` 31, as the M3 check). The evaluation plans at `--origins` monthly origins (default 12),
the last one 6 months before the end (`_evaluation.holdout_days`: the longest lead time plus 3 std of its variability
is judged), each with the data up to it only, and judges each plan on the lead time after it.
Nothing here asserts: numbers are for reading, quoted with the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _evaluation import RESULTS, command_line, evaluation_config, holdout_days, run_evaluation
from intermittent_catalogue import SKUS, TARGETS, catalogue, catalogue_statistics, compare, print_comparison

from features.calendar import period_days

DEFAULT_OUT = RESULTS / "evaluate_intermittent.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=SKUS, help=f"Parts in the catalogue (default {SKUS:,}).")
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7, help="Seed of the catalogue and its master.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    sales, master = catalogue(args.skus, args.seed)
    stats = catalogue_statistics(sales)
    print_comparison(stats)
    month = period_days("M")
    cfg = evaluation_config(
        "intermittent-monthly-evaluation", "M", month, origins=args.origins, holdout=holdout_days(month), life_cycle={"new_days": 31.0}
    )
    extra = {
        "catalogue": {
            "seed": args.seed,
            "sales_rows": sales.height,
            "target_vs_achieved": compare(stats),
            **{k: v for k, v in stats.items() if k not in TARGETS},
        }
    }
    run_evaluation(cfg, sales, master, args.out, command_line("evaluate_intermittent.py", argv), extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
