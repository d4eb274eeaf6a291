"""Ten consecutive `buffercast run`s on 10,000 sample SKUs: every run must finish (issue "A run never hangs").

Each run is the CLI a scheduler calls (`buffercast run`, default config: the forecasting stage on every core),
into the same output folder and MLflow store, on one local Prefect server (`prefect server start`, as a
deployment would use), in its own process. A run still going after `--limit` seconds (an hour; a run takes
minutes) is killed and recorded as hung; the result records, per run, the wall time, the CPU seconds of the run and everything it started
(its worker processes included), its exit code and the tracebacks it printed.

    .venv/bin/python bench/ten_runs.py                        # 10 runs x 10,000 SKUs x 730 days (about an hour)
    .venv/bin/python bench/ten_runs.py --runs 2 --skus 2000   # quicker

Writes `bench/results/ten_runs.json` (committed: the figures quoted in bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def run_once(cmd: list[str], env: dict[str, str], limit: float, log: Path) -> dict:
    """One run, its output merged into `log`; its process group killed if it runs past `limit` seconds."""
    t0, cpu0 = time.perf_counter(), children_cpu_s()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            rc, hung = proc.wait(timeout=limit), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, hung = proc.wait(), True
    text = log.read_text(errors="replace")
    summary = next((x.strip() for x in text.splitlines() if x.startswith("buffercast:")), None)
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(children_cpu_s() - cpu0, 1),
        "exit_code": rc,
        "hung": hung,
        "tracebacks": text.count("Traceback"),
        "termination_signals": text.count("TerminationSignal"),
        "summary": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--limit", type=float, default=3600.0, help="seconds after which a run counts as hung and is killed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ten_runs.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()

    from flows.cli import quiet_environment
    from flows.deploy import local_prefect_server
    from flows.sample_data import write_sample_data

    work = args.work or Path(tempfile.mkdtemp(prefix="buffercast-ten-runs-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    quiet_environment()
    t0 = time.perf_counter()
    data = write_sample_data(work / "data", n_skus=args.skus, seed=args.seed)
    print(f"sample data: {args.skus} SKUs (seed {args.seed}) in {time.perf_counter() - t0:.0f} s -> {work / 'data'}", flush=True)
    buffercast = str(Path(sys.executable).parent / "buffercast")
    cmd = [
        buffercast, "run", "--sales", str(data["sales"]), "--sku-master", str(data["sku_master"]),
        "--out", str(work / "outputs"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
    ]  # fmt: skip
    runs = []
    with local_prefect_server(free_port(), log_path=work / "prefect-server.log", timeout=300) as url:
        env = {**os.environ, "PREFECT_API_URL": url}
        for i in range(args.runs):
            r = run_once(cmd, env, args.limit, work / f"run-{i + 1}.log")
            runs.append({"run": i + 1, **r})
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "command": " ".join(["bench/ten_runs.py", *sys.argv[1:]]),
        "skus": args.skus,
        "seed": args.seed,
        "days": 730,
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
        "all_finished": all(r["exit_code"] == 0 and not r["hung"] for r in runs),
        "tracebacks": sum(r["tracebacks"] for r in runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    walls = [r["wall_s"] for r in runs]
    print(f"{len(runs)} runs, all finished: {result['all_finished']}, tracebacks: {result['tracebacks']}; wall s: {walls} -> {args.out}")
    return 0 if result["all_finished"] and not result["tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
