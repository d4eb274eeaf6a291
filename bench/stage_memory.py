"""Memory and time of the run's steps, as the flow runs them, in one process: the pull, the validation, the partitioned
profile and, with `--through`, the forecasting and recommend stages.

Run: `.venv/bin/python bench/stage_memory.py --skus 30000` (generates the catalogue: `buffercast sample-data`, seed 7,
730 days; `--data FOLDER` takes one already generated). Prints and writes `bench/results/stage_memory_<skus>.json`:
per step, the process's resident set (VmRSS) after it and its peak during it (VmHWM, reset before it through
/proc/self/clear_refs), its wall seconds and CPU seconds (the process and its worker processes): the imports; the pull
(`flows.sources.scan_sales` streamed to the pulled snapshot by `flows.publish.write_pulled`);
`pipeline.partitioned.validate_inputs_parts` of a scan of that snapshot (`partitions.rows` rows at a time, the valid
rows filed by partition in a `flows.publish.ParquetStore`); `pipeline.partitioned.profile_parts` (each partition's
panel to the store); `--through forecast` adds `forecast_parts` (the workers' memory is theirs, not in the peak),
`--through recommend` also `recommend_parts`. The end-to-end figures are `bench/scale.py`'s; this says which step
makes their peak and where the CPU goes outside the statsforecast calls. Nothing asserts on memory or time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402


def _mb() -> dict[str, int]:
    """The process's resident set now and its peak since the last `_reset_peak`, MB."""
    with open("/proc/self/status") as status:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mb": round(kb["VmRSS"] / 1024), "peak_rss_mb": round(kb["VmHWM"] / 1024)}


def _reset_peak() -> None:
    """Start VmHWM again from the resident set now (Linux: `5` to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (the forecasting stage's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Step:
    """Times one step (wall and CPU seconds) from a fresh VmHWM; `.done(**extra)` records it in `steps`."""

    def __init__(self, steps: dict[str, dict], name: str) -> None:
        self.steps, self.name = steps, name
        _reset_peak()
        self.t0, self.cpu0 = time.perf_counter(), _cpu_s()

    def done(self, **extra: object) -> None:
        seconds = {"s": round(time.perf_counter() - self.t0, 1), "cpu_s": round(_cpu_s() - self.cpu0, 1)}
        self.steps[self.name] = _mb() | extra | seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=None, help="a folder already holding that catalogue (sample-data, seed 7)")
    parser.add_argument(
        "--through", choices=("profile", "forecast", "recommend"), default="profile", help="the last stage measured (default profile)"
    )
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"stage_memory_{args.skus}.json"

    import polars as pl

    from configs.schema import BuffercastConfig
    from flows.publish import ParquetStore, write_pulled
    from flows.sources import read_sku_master, scan_sales
    from pipeline.partitioned import forecast_parts, profile_parts, recommend_parts, validate_inputs_parts
    from pipeline.tables import as_of_rows

    steps: dict[str, dict] = {"imports": _mb()}
    with tempfile.TemporaryDirectory(prefix="buffercast-stage-memory-") as tmp:
        data = Path(tmp)
        if args.data is None:
            sample = [str(Path(sys.executable).parent / "buffercast"), "sample-data", "--out", tmp, "--skus", str(args.skus)]
            subprocess.run([*sample, "--seed", "7"], check=True, capture_output=True)
        else:
            for name in ("sales.parquet", "sku_master.parquet"):
                (data / name).symlink_to(args.data.resolve() / name)
        cfg = BuffercastConfig(input={"sales": str(data / "sales.parquet"), "sku_master": str(data / "sku_master.parquet")})
        step = _Step(steps, "pull")
        stream = scan_sales(cfg.input)
        pulled = write_pulled(data / "out", "latest", {"sales": stream, "sku_master": read_sku_master(cfg.input)}, 1.0)
        step.done()
        store = ParquetStore(data / "work")
        master = pl.read_parquet(pulled / "sku_master.parquet")
        step = _Step(steps, "validation")
        inputs = validate_inputs_parts(cfg, pl.scan_parquet(pulled / "sales.parquet"), master, today=dt.date.today(), store=store)
        parts = inputs.sales.parts
        step.done(rows=inputs.sales.rows_in, chunks=parts.chunks)
        as_of, _, _ = as_of_rows(cfg, parts.dates)
        step = _Step(steps, "profile")
        pp = profile_parts(cfg, parts, inputs.master.valid, as_of, store)
        step.done(partitions=pp.parts)
        if args.through in ("forecast", "recommend"):
            step = _Step(steps, "forecast")
            fp = forecast_parts(cfg, pp)
            step.done()
        if args.through == "recommend":
            step = _Step(steps, "recommend")
            recommend_parts(cfg, as_of, pp, fp)
            step.done()
    result = {
        "command": "python bench/stage_memory.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "skus": args.skus,
        "days": 730,
        "partition_skus": cfg.partitions.skus,
        "partition_rows": cfg.partitions.rows,
        "steps": steps,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, values in steps.items():
        print(f"{name:>12}: {values}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
