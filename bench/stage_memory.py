"""Memory of the run's whole-catalogue steps: read, validation and the partitioned profile, in one process.

Run: `.venv/bin/python bench/stage_memory.py --skus 30000` (generates the catalogue: `buffercast sample-data`, seed 7,
730 days). Prints and writes `bench/results/stage_memory_<skus>.json`: the process's resident set (VmRSS) and its peak
(ru_maxrss) after the imports, after `pl.read_parquet` of the sales, after `pipeline.contracts.validate_inputs` (the
peak there is the validation's), and after `pipeline.partitioned.profile_parts` (partitions of `partitions.skus`,
kept in memory). The end-to-end figures are `bench/scale.py`'s; this says which step makes their peak.
Nothing asserts on memory.
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
    """The process's resident set now and its peak so far, MB."""
    with open("/proc/self/status") as status:
        now = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return {"rss_mb": round(now / 1024), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"stage_memory_{args.skus}.json"

    import polars as pl

    from configs.schema import BuffercastConfig
    from pipeline.contracts import validate_inputs
    from pipeline.partitioned import MemoryStore, profile_parts
    from pipeline.tables import sales_as_of

    steps: dict[str, dict] = {"imports": _mb()}
    with tempfile.TemporaryDirectory(prefix="buffercast-stage-memory-") as tmp:
        data = Path(tmp)
        generate = [str(Path(sys.executable).parent / "buffercast"), "sample-data", "--out", tmp, "--skus", str(args.skus), "--seed", "7"]
        subprocess.run(generate, check=True, capture_output=True)
        t0 = time.perf_counter()
        raw = pl.read_parquet(data / "sales.parquet")
        master = pl.read_parquet(data / "sku_master.parquet")
        read_s = round(time.perf_counter() - t0, 1)
        steps["read"] = _mb() | {"rows": raw.height, "frame_mb": round(raw.estimated_size() / 2**20), "s": read_s}
        cfg = BuffercastConfig(input={"sales": str(data / "sales.parquet")})
        t0 = time.perf_counter()
        inputs = validate_inputs(cfg, raw, master, today=dt.date.today())
        steps["validation"] = _mb() | {
            "valid_frame_mb": round(inputs.sales.valid.estimated_size() / 2**20),
            "s": round(time.perf_counter() - t0, 1),
        }
        del raw
        sales, as_of, _ = sales_as_of(cfg, inputs.sales.valid)
        t0 = time.perf_counter()
        pp = profile_parts(cfg, sales, inputs.master.valid, as_of, MemoryStore())
        steps["profile"] = _mb() | {"partitions": pp.parts, "s": round(time.perf_counter() - t0, 1)}
    result = {
        "command": "python bench/stage_memory.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "skus": args.skus,
        "days": 730,
        "partition_skus": cfg.partitions.skus,
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
