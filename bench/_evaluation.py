"""What the rolling-origin evaluation benches share: the seeded SKU master, the config, the run, the JSON and the tables.

`evaluate_m3.py` (M3 monthly), `evaluate_intermittent.py` (a synthetic monthly spare-parts catalogue) and
`evaluate_walmart.py` (weekly Walmart store-department sales) each build a sales frame (sku_id, location_id, date,
quantity) and call `run_evaluation`, which times `pipeline.evaluate.rolling_evaluation` (the code path of
`buffercast evaluate`), writes the JSON (command, series, origins, windows, timing, machine, the script's extras and
the `evaluation` summary rows of the slices in `SLICES`, with whatever columns the summary has) and prints the
headline tables. Nothing here asserts: numbers are for reading, quoted with the machine.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_m5 import machine

from configs.schema import BuffercastConfig, load_config
from evaluation.rolling import capital_at_equal_service
from pipeline.evaluate import rolling_evaluation
from pipeline.plots import tradeoff_figure
from pipeline.report import figure_png

RESULTS = Path(__file__).resolve().parent / "results"
#: The summary slices written to the JSON, each under its own key.
SLICES = ("all", "demand_class", "policy", "life_cycle")
#: Lead times of the seeded masters: 1 .. MAX_LEAD_PERIODS periods, std up to LEAD_TIME_STD_SHARE of the mean.
MAX_LEAD_PERIODS = 3
LEAD_TIME_STD_SHARE = 0.25


def seeded_master(
    sku_ids: Sequence[str],
    rng: np.random.Generator,
    period_days: float,
    *,
    critical_share: float = 0.02,
    unit_cost_median: float | None = None,
) -> pl.DataFrame:
    """The SKU master of a bench catalogue: a lead time of 1, 2 or 3 periods (`period_days` each) with std uniform in
    0 .. 25% of it, `critical_share` critical, unit cost 1 or, with `unit_cost_median`, log-normal (sigma 1) around it;
    no pack size, no supplier. Draws lead, std, critical, then cost from `rng` (so evaluate_m3's master is unchanged)."""
    n = len(sku_ids)
    lead = rng.integers(1, MAX_LEAD_PERIODS + 1, n) * period_days
    std = lead * rng.uniform(0.0, LEAD_TIME_STD_SHARE, n)
    critical = rng.uniform(size=n) < critical_share
    cost = np.ones(n) if unit_cost_median is None else np.round(unit_cost_median * rng.lognormal(0.0, 1.0, n), 2)
    return pl.DataFrame(
        {
            "sku_id": pl.Series(list(sku_ids), dtype=pl.String),
            "unit_cost": cost,
            "lead_time_days": lead,
            "lead_time_std_days": std,
            "critical": critical,
            "pack_size": pl.Series([None] * n, dtype=pl.Float64),
            "supplier_id": pl.Series([None] * n, dtype=pl.String),
        }
    )


def holdout_days(period_days: float) -> int:
    """Days after the last origin that judge every lead time of `seeded_master` up to 3 std of its variability: the
    longest lead time (3 periods) x (1 + 3 x 25%) = 5.25, so 6 whole periods (`cfg.periods` rounds the days up)."""
    periods = math.ceil(MAX_LEAD_PERIODS * (1 + 3 * LEAD_TIME_STD_SHARE))
    return math.floor(periods * period_days)


def evaluation_config(name: str, frequency: str, period_days: float, *, origins: int, holdout: int, **overrides: Any) -> BuffercastConfig:
    """The validated config of a bench evaluation: `frequency`, sales at period grain, review period one period,
    `origins` origins one period apart, the last `holdout` days before the end; `overrides` on top (e.g. week_start)."""
    return load_config(
        None,
        {
            "name": name,
            "frequency": frequency,
            "input": {"grain": "period"},
            "defaults": {"review_period_days": period_days},
            "evaluation": {"origins": origins, "holdout_days": holdout, "step_days": math.floor(period_days)},
            **overrides,
        },
    )


def command_line(script: str, argv: list[str] | None) -> str:
    """The command as run, for the JSON: `python bench/<script>` and its arguments."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"bench/{script}", *args])


def run_evaluation(
    cfg: BuffercastConfig, sales: pl.DataFrame, master: pl.DataFrame, out_path: Path, command: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the rolling-origin evaluation on `sales` and `master`, write its JSON to `out_path`, print the headline
    tables; returns what was written. `extra` (e.g. the data's statistics) goes between the machine and the slices."""
    start = time.perf_counter()
    result = rolling_evaluation(
        cfg, sales, master, progress=lambda line: print(f"[{time.perf_counter() - start:6.0f} s] {line}", flush=True)
    )
    seconds = time.perf_counter() - start
    summary = result.summary
    out: dict[str, Any] = {
        "command": command,
        "series": sales["sku_id"].n_unique(),
        "origins": [o.isoformat() for o in result.origins],
        "judged_windows_all_methods": result.windows.height,
        "unjudged_sku_windows": result.unjudged,
        "seconds": round(seconds, 1),
        "machine": machine(),
        **(extra or {}),
    }
    for name in SLICES:
        out[name] = summary.filter(pl.col("slice") == name).to_dicts() if summary.height else []
    # What buffercast's trade-off curve spends at the service each baseline achieved (below 1: less capital).
    out["capital_at_equal_service"] = capital_at_equal_service(summary).to_dicts() if summary.height else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1, default=str))
    write_tradeoff(out_path)
    if summary.height:
        print_headline(summary)
    print(f"{seconds:.0f} s; written {out_path}")
    return out


def write_tradeoff(json_path: Path) -> Path:
    """The trade-off curves (`pipeline.plots.tradeoff_figure`) of a result file, next to it as <name>.png."""
    result = json.loads(json_path.read_text())
    rows = [row | {"slice": row.get("slice")} for name in ("all", "demand_class") for row in result.get(name, [])]
    png = json_path.with_suffix(".png")
    if rows:
        png.write_bytes(figure_png(tradeoff_figure(pl.DataFrame(rows, infer_schema_length=None))))
    return png


def achieved_by_class(summary: pl.DataFrame) -> pl.DataFrame:
    """Per demand class (and all) and target, one column per method with a target (DDMRP has none): the achieved
    cycle service and, in brackets, the windows it is over."""
    rows = summary.filter(pl.col("slice").is_in(["all", "demand_class"]), pl.col("target").is_not_null())
    cell = pl.format("{} ({})", pl.col("achieved").round(3), pl.col("windows"))
    table = rows.with_columns(cell=cell).pivot("method", index=["value", "target"], values="cell", sort_columns=True)
    return table.rename({"value": "demand_class"}).sort("demand_class", "target")


def print_headline(summary: pl.DataFrame) -> None:
    """Every method and target over all windows, then the achieved service per demand class and target."""
    with pl.Config(tbl_rows=200, tbl_cols=20, tbl_width_chars=220, float_precision=3):
        print(summary.filter(pl.col("slice") == "all").drop("slice", "value"))
        print(achieved_by_class(summary))
