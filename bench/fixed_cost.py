"""The fixed cost of a run: what `buffercast run` pays whatever the catalogue's size, and where it goes.

Run: `.venv/bin/python bench/fixed_cost.py` (options: `--help`). Against one long-lived Prefect server the script
starts (`PREFECT_API_URL`, as a scheduled deployment runs):

- **imports**: in a fresh interpreter, the CPU seconds of each library import in the order a run makes them, each
  step counting only what the steps before it had not imported: the plan flow (`flows.plan`: polars, pandera with
  pandas, prefect, the config and the pipeline), statsforecast with statsmodels (the forecast stage: in the flow's
  process under 200 SKUs, in each worker process above), scipy.stats and scikit-learn (the recommend stage), mlflow
  (tracking), matplotlib (the report). The median of `--repeat` interpreters.
- **a small run**: `buffercast run` end to end on a generated catalogue of `--skus` SKUs (10: the run's own work is
  about 2 s of it), each repeat into an empty output folder and a new SQLite MLflow store: wall seconds, CPU seconds
  of the process tree, peak PSS.
- **a refused run**: the same catalogue with every quantity zero, which the validation refuses (exit code 2): the
  seconds until the run fails with its one-line error.

Writes `bench/results/fixed_cost.json` and prints one table. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402
from scale import BIN, RESULTS, catalogue, measured  # noqa: E402
from ten_runs import free_port  # noqa: E402

#: (step, modules), in the order a run imports them.
IMPORT_STEPS = (
    ("polars", ["polars"]),
    ("pandera (with pandas)", ["pandera.polars"]),
    ("prefect", ["prefect"]),
    ("the plan flow's own modules (config, pipeline, core)", ["flows.plan"]),
    ("statsforecast with statsmodels (forecast stage)", ["statsforecast", "statsforecast.models"]),
    ("scipy.stats, scipy.optimize, scikit-learn (recommend)", ["scipy.stats", "scipy.optimize", "sklearn.isotonic", "sklearn.metrics"]),
    ("mlflow (tracking)", ["mlflow.tracking", "mlflow.data"]),
    ("matplotlib (report)", ["pipeline.plots"]),
)

_PROBE = """
import importlib, json, sys, time
steps, out = json.loads(sys.argv[1]), []
for name, modules in steps:
    t = time.process_time()
    for m in modules:
        importlib.import_module(m)
    out.append(time.process_time() - t)
print(json.dumps(out))
"""


def import_seconds(repeat: int) -> list[dict]:
    """CPU seconds per import step, median over `repeat` fresh interpreters (bytecode already compiled)."""
    runs = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(IMPORT_STEPS)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(done.stdout))
    return [{"step": name, "cpu_s": round(statistics.median(r[i] for r in runs), 2)} for i, (name, _) in enumerate(IMPORT_STEPS)]


def _run(data: Path, sales: Path, folder: Path, tag: str, api_url: str, expect: int) -> dict:
    cmd = [
        str(BIN / "buffercast"), "run", "--sales", str(sales), "--sku-master", str(data / "sku_master.parquet"),
        "--out", str(folder / f"out-{tag}"), "--tracking-uri", f"sqlite:///{folder / f'mlflow-{tag}.db'}",
    ]  # fmt: skip
    m = measured(cmd, folder / f"run-{tag}.log", api_url, expect=expect)
    return {"wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1), "peak_pss_mb": round(m.peak_pss_mb)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "fixed_cost.json")
    args = parser.parse_args()

    import polars as pl

    from flows.deploy import local_prefect_server

    imports = import_seconds(args.repeat)
    for row in imports:
        print(f"import {row['step']}: {row['cpu_s']:.2f} CPU s", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="buffercast-fixed-"))
    try:
        data = catalogue(args.skus, folder)
        refused = folder / "every_quantity_zero.parquet"
        pl.read_parquet(data / "sales.parquet").with_columns(quantity=pl.lit(0.0)).write_parquet(refused)
        runs, refusals = [], []
        with local_prefect_server(
            free_port(), log_path=folder / "prefect-server.log", env={"PREFECT_HOME": str(folder / "prefect")}, timeout=600
        ) as api_url:
            for i in range(args.repeat):
                runs.append(_run(data, data / "sales.parquet", folder, f"run-{i}", api_url, expect=0))
                print(f"run {i + 1}: {runs[-1]}", flush=True)
                refusals.append(_run(data, refused, folder, f"refused-{i}", api_url, expect=2))
                print(f"refused run {i + 1}: {refusals[-1]}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "command": "python bench/fixed_cost.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "skus": args.skus,
        "imports_cpu_s": imports,
        "imports_total_cpu_s": round(sum(r["cpu_s"] for r in imports), 2),
        "runs": runs,
        "refused_runs": refusals,
        "median_run_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_refused_wall_s": statistics.median(r["wall_s"] for r in refusals),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    medians = f"run {result['median_run_wall_s']} s, refused run {result['median_refused_wall_s']} s (medians)"
    print(f"imports {result['imports_total_cpu_s']:.1f} CPU s; {medians}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
