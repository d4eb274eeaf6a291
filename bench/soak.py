"""Soak: consecutive runs of the served weekly deployment on a real Prefect server, the inputs changing between runs.

`buffercast serve --config` registers `plan-buffers/plan-buffers-weekly` on a `prefect server start` of its own and
runs its flow runs; this script triggers `--runs` of them one after the other (`run_deployment`, as the schedule
would), rewriting the sales and SKU master files before each: one more day of history each time (the as-of date
moves on), and a SKU added every fifth run. After each run it records the flow run's state and time, the open file
descriptors and the memory (RSS) of the serve process and of the Prefect server, and checks the published as-of:
its manifest lists every table with the row count its Parquet files hold, the staging folder is gone.

    .venv/bin/python bench/soak.py                       # 20 runs x 60 SKUs x ~1 year daily (a few minutes)
    .venv/bin/python bench/soak.py --runs 5 --skus 20    # quicker

Writes `bench/results/soak.json` (committed: the figures quoted in bench/README.md). Nothing here asserts: the
result says whether every run completed and whether descriptors or memory grew.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402
from ten_runs import free_port  # noqa: E402

FULL_NAME = "plan-buffers/plan-buffers-weekly"


def tree_stats(pid: int) -> dict[str, float]:
    """Open descriptors and RSS (MB) of a process and its descendants."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"fds": 0, "rss_mb": 0.0}
    fds, rss = 0, 0
    for proc in procs:
        try:
            fds += proc.num_fds()
            rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return {"fds": fds, "rss_mb": round(rss / 1e6, 1)}


def consistent(out: Path, as_of: dt.date) -> bool:
    from flows.publish import STAGING, read_manifest

    manifest = read_manifest(out, as_of)
    for entry in manifest["tables"].values():
        rows = pl.scan_parquet(f"{entry['path']}/*.parquet").select(pl.len()).collect().item()
        if rows != entry["rows"]:
            return False
    return not (out / STAGING).exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skus", type=int, default=60)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import local_prefect_server, stop_process_group
    from flows.sample_data import write_sample_data

    work = Path(tempfile.mkdtemp(prefix="buffercast-soak-"))
    data, out = work / "data", work / "outputs"
    # The last run's history ends yesterday: sales dated after today are quarantined (date_not_in_future).
    first_end = dt.date.today() - dt.timedelta(days=args.runs)

    def write_inputs(k: int) -> dt.date:
        end = first_end + dt.timedelta(days=k)
        write_sample_data(data, n_skus=args.skus + k // 5, seed=3, n_days=args.days + k, end_date=end)
        return end

    write_inputs(0)
    config = work / "soak.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "soak",
                "input": {"sales": str(data / "sales.parquet"), "sku_master": str(data / "sku_master.parquet"), "cache_hours": 0},
                "output": {"folder": str(out)},
                "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}", "artifact_location": str(work / "mlruns")},
                "backtest": {"n_jobs": 1},
            }
        )
    )
    home = work / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO"}
    rows = []
    with local_prefect_server(free_port(), log_path=work / "server.log", env={"PREFECT_HOME": str(home)}) as url:
        server_pid = next((c.pid for c in psutil.Process().children(recursive=True) if "server" in " ".join(c.cmdline())), os.getpid())
        serve_log = (work / "serve.log").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--config", str(config)],
            cwd=ROOT, env=env | {"PREFECT_API_URL": url}, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                deadline = time.monotonic() + 600
                while "being served" not in (work / "serve.log").read_text(errors="replace") and time.monotonic() < deadline:
                    time.sleep(1)
                for k in range(args.runs):
                    as_of = write_inputs(k)
                    t0 = time.perf_counter()
                    flow_run = run_deployment(FULL_NAME, timeout=3600, poll_interval=2)
                    seconds = time.perf_counter() - t0
                    state = flow_run.state.type.value if flow_run.state else None
                    ok = state == "COMPLETED" and consistent(out, as_of)
                    row = {"run": k + 1, "as_of": as_of.isoformat(), "state": state, "seconds": round(seconds, 1), "consistent": ok}
                    row |= {f"serve_{k2}": v for k2, v in tree_stats(serve.pid).items()}
                    row |= {f"server_{k2}": v for k2, v in tree_stats(server_pid).items()}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            stop_process_group(serve, first=signal.SIGINT, grace=30)
            serve_log.close()

    completed = sum(r["state"] == "COMPLETED" for r in rows)
    half = max(1, len(rows) // 2)
    result = {
        "command": f"python bench/soak.py --runs {args.runs} --skus {args.skus} --days {args.days}",
        "machine": machine(),
        "runs": len(rows),
        "completed": completed,
        "consistent": sum(r["consistent"] for r in rows),
        "serve_fds_first_last": [rows[0]["serve_fds"], rows[-1]["serve_fds"]] if rows else None,
        "serve_rss_mb_first_half_max_second_half_max": [
            max(r["serve_rss_mb"] for r in rows[:half]),
            max(r["serve_rss_mb"] for r in rows[half:]) if rows[half:] else None,
        ]
        if rows
        else None,
        "server_fds_first_last": [rows[0]["server_fds"], rows[-1]["server_fds"]] if rows else None,
        "server_rss_mb_first_last": [rows[0]["server_rss_mb"], rows[-1]["server_rss_mb"]] if rows else None,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{completed}/{len(rows)} runs completed, {result['consistent']} consistent; written {args.out}")


if __name__ == "__main__":
    main()
