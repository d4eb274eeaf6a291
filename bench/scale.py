"""Scale: buffercast end to end at growing catalogues, against the statsforecast calls it makes and a statsmodels loop.

Run: `.venv/bin/python bench/scale.py` (default 1,000 and 10,000 SKUs x 730 days; `--skus 1000 10000 30000 100000`
for the whole ladder, hours). For each size, in this one run:

- **end to end**: `buffercast run` on the generated catalogue (`buffercast sample-data`: seed 7, 730 days), against
  a long-lived Prefect server the script starts once (`PREFECT_API_URL`, as a scheduled deployment runs), MLflow in a
  SQLite file. Wall seconds; CPU seconds of the run's whole process tree (RUSAGE_CHILDREN: the run, its worker
  processes; not the Prefect server, which is shared); peak PSS of the run's process tree, sampled every second
  (psutil: shared pages counted once across the tree), and per step (`peak_pss_mb_by_step`: each sample goes to the
  first task of the run's Prefect log that ended after it, so the flow's own work between two tasks counts with the
  next one); SKUs per second.
- **bare statsforecast** (`bench/forecast_speed.py` part b): the same statsforecast calls the stage makes (same groups,
  models, windows, step, levels) called directly, on the same panel: the floor of the forecasting work.
- **statsmodels loop** (`bench/forecast_speed.py` part d): a pandas groupby loop with statsmodels
  `ExponentialSmoothing` refit at every backtest cutoff, on a seeded subset of `--subset-loop` SKUs, CPU seconds
  extrapolated linearly to the catalogue.
- **rolling evaluation** (`--evaluate-skus`, default off): `buffercast evaluate` (the config's rolling origins and
  baselines) on the same generated catalogue: wall and CPU seconds, peak PSS, measured as the end-to-end run is.
- **Dask scaling** (`--dask-skus`, default 2,000): the forecasting stage alone (`forecasting.backtest
  .backtest_and_forecast`) on a `distributed.LocalCluster` of 1 and then 2 single-threaded worker processes on
  127.0.0.1, wall seconds, on the profiled panel of that size.

Writes `bench/results/scale.json` (and prints one table). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402
from ten_runs import children_cpu_s, free_port  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"


class PssSampler:
    """Samples the PSS summed over a process and its descendants every `every` seconds, as (time.time(), MB)."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                total = 0
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += proc.memory_full_info().pss
                self.samples.append((time.time(), total / 2**20))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.every)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def catalogue(skus: int, folder: Path) -> Path:
    """The generated catalogue of `skus` SKUs (seed 7, 730 days) in `folder`, generated once."""
    data = folder / f"data-{skus}"
    if not data.exists():
        generate = [str(BIN / "buffercast"), "sample-data", "--out", str(data), "--skus", str(skus), "--seed", "7"]
        subprocess.run(generate, check=True, capture_output=True)
    return data


#: A Prefect log line of a task run's end: its local clock time and the task's name.
_TASK_END = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| Task run '([A-Za-z_]+)-[0-9a-f]+' - Finished in state")


def peak_by_step(samples: list[tuple[float, float]], log: str) -> dict[str, int]:
    """The peak PSS (MB) of each step of a run, from its PSS samples and its Prefect log: a sample belongs to the first
    task that ended at or after it (so the flow's own work between two tasks, e.g. drawing the report before
    `publish`, counts with the next task), to "after the last task" past the last one. The log's clock times are
    placed on the day of the first sample (the run's start), a day later each time they go back (past midnight)."""
    if not samples:
        return {}
    day = dt.datetime.fromtimestamp(samples[0][0]).replace(hour=0, minute=0, second=0, microsecond=0)
    ends, last = [], samples[0][0]
    for match in filter(None, map(_TASK_END.match, log.splitlines())):
        h, m, sec, task = match.groups()
        at = (day + dt.timedelta(hours=int(h), minutes=int(m), seconds=float(sec))).timestamp()
        while at < last:
            at += 86400
        ends.append((at, task))
        last = at
    peaks: dict[str, int] = {}
    for at, mb in samples:
        step = next((task for end, task in ends if end >= at), "after the last task")
        peaks[step] = max(peaks.get(step, 0), round(mb))
    return peaks


class Measure(NamedTuple):
    wall_s: float
    cpu_s: float
    peak_pss_mb: float
    peak_pss_mb_by_step: dict[str, int]


def measured(cmd: list[str], log: Path, api_url: str, expect: int = 0) -> Measure:
    """`cmd` against the Prefect server, its output in `log`: wall and CPU seconds (the whole process tree), the peak
    PSS (MB) and the peak per step of the run (`peak_by_step`); raises unless it exits with `expect`."""
    env = os.environ | {"PREFECT_API_URL": api_url}
    t0, cpu0 = time.perf_counter(), children_cpu_s()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = PssSampler(proc.pid)
        code = proc.wait()
        samples = sampler.stop()
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    text = log.read_text(errors="replace")
    if code != expect:
        raise RuntimeError(f"{' '.join(cmd[:2])} exited with {code}, not {expect}: {text[-2000:]}")
    return Measure(wall, cpu, max((mb for _, mb in samples), default=0.0), peak_by_step(samples, text))


def _rounded(m: Measure) -> dict[str, Any]:
    return {"wall_s": round(m.wall_s, 1), "cpu_s": round(m.cpu_s, 1), "peak_pss_mb": round(m.peak_pss_mb)}


def end_to_end(skus: int, folder: Path, api_url: str, partition_skus: int | None = None) -> dict[str, Any]:
    data = catalogue(skus, folder)
    cmd = [
        str(BIN / "buffercast"), "run", "--sales", str(data / "sales.parquet"), "--sku-master", str(data / "sku_master.parquet"),
        "--out", str(folder / f"out-{skus}"), "--tracking-uri", f"sqlite:///{folder / f'mlflow-{skus}.db'}",
    ]  # fmt: skip
    if partition_skus is not None:  # else the config's default (partitions.skus)
        config = folder / f"partitions-{partition_skus}.yaml"
        config.write_text(f"partitions:\n  skus: {partition_skus}\n")
        cmd += ["--config", str(config)]
    m = measured(cmd, folder / f"run-{skus}.log", api_url)
    manifest = next((folder / f"out-{skus}").rglob("manifest.json"))
    planned = json.loads(manifest.read_text())["tables"]["recommendations"]["rows"]
    shutil.rmtree(folder / f"out-{skus}", ignore_errors=True)  # the next measure at this size starts from an empty folder
    return _rounded(m) | {"skus_planned": planned, "skus_per_s": round(skus / m.wall_s, 1), "partition_skus": partition_skus,
                          "peak_pss_mb_by_step": m.peak_pss_mb_by_step}  # fmt: skip


def rolling_evaluation(skus: int, folder: Path, api_url: str) -> dict[str, Any]:
    """`buffercast evaluate` (the config's rolling origins, its baselines) on the same generated catalogue."""
    data = catalogue(skus, folder)
    cmd = [
        str(BIN / "buffercast"), "evaluate", "--sales", str(data / "sales.parquet"), "--sku-master", str(data / "sku_master.parquet"),
        "--out", str(folder / f"evaluate-{skus}"), "--tracking-uri", f"sqlite:///{folder / f'mlflow-evaluate-{skus}.db'}",
    ]  # fmt: skip
    m = measured(cmd, folder / f"evaluate-{skus}.log", api_url)
    shutil.rmtree(folder / f"evaluate-{skus}", ignore_errors=True)
    return {"skus": skus} | _rounded(m) | {"peak_pss_mb_by_step": m.peak_pss_mb_by_step}


def statsforecast_parts(skus: int, folder: Path, subset_loop: int) -> dict[str, Any]:
    """forecast_speed.py parts b (bare statsforecast calls) and d (statsmodels loop) on the same generated panel."""
    out = folder / f"forecast_speed-{skus}.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "forecast_speed.py"), "--skus", str(skus), "--periods", "730", "--seed", "7",
        "--parts", "b,d", "--subset-loop", str(min(subset_loop, skus)), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(out.read_text())


def dask_scaling(skus: int, folder: Path) -> dict[str, Any]:
    """The forecasting stage on a LocalCluster of 1, then 2 worker processes (one thread each): wall seconds, on the
    panel `bench/forecast_speed.py`'s profile part builds (the same generated catalogue, validated and profiled)."""
    from distributed import Client, LocalCluster
    from forecast_speed import Opts, _load, part_profile

    from configs.schema import load_config
    from forecasting.backtest import backtest_and_forecast
    from pipeline.stages import model_sets

    cfg = load_config()
    o = Opts(skus, 730, 7, 0, 0, folder / f"dask-{skus}")
    o.workdir.mkdir(parents=True, exist_ok=True)
    part_profile(o, cfg)
    panel, inputs = _load(o)
    result: dict[str, Any] = {"skus": skus}
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            t0 = time.perf_counter()
            backtest_and_forecast(panel, inputs, model_sets(cfg), cfg, client.get_executor(pure=False), workers=workers)
            result[f"workers_{workers}_s"] = round(time.perf_counter() - t0, 1)
    result["speed_up_1_to_2"] = round(result["workers_1_s"] / result["workers_2_s"], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--subset-loop", type=int, default=100, help="SKUs of the statsmodels loop, extrapolated (default 100)")
    parser.add_argument("--dask-skus", type=int, default=2_000, help="SKUs of the Dask 1-vs-2-workers measure (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument(
        "--partition-skus", type=int, nargs="*", default=[], help="also run end to end at these partition sizes (memory against size)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="end to end only: no bare statsforecast, no statsmodels loop")
    parser.add_argument("--partitions", type=int, default=None, help="partition size of the main end-to-end run (default: the config's)")
    parser.add_argument("--evaluate-skus", type=int, default=0, help="also time `buffercast evaluate` at this size (0: skip)")
    parser.add_argument("--logs", type=Path, default=None, help="copy the runs' logs (Prefect's, with each stage's times) here")
    args = parser.parse_args()

    from flows.deploy import local_prefect_server

    folder = Path(tempfile.mkdtemp(prefix="buffercast-scale-"))
    rows = []
    try:
        with local_prefect_server(
            free_port(), log_path=folder / "prefect-server.log", env={"PREFECT_HOME": str(folder / "prefect")}, timeout=600
        ) as api_url:
            for skus in args.skus:
                print(f"--- {skus:,} SKUs: end to end", flush=True)
                e2e = end_to_end(skus, folder, api_url, args.partitions)
                print(f"    {e2e}", flush=True)
                row = {"skus": skus, "end_to_end": e2e}
                for size in args.partition_skus:
                    print(f"--- {skus:,} SKUs: end to end in partitions of {size:,}", flush=True)
                    row.setdefault("end_to_end_by_partition_size", []).append(end_to_end(skus, folder, api_url, size))
                    print(f"    {row['end_to_end_by_partition_size'][-1]}", flush=True)
                if args.no_baselines:
                    rows.append(row)
                    continue
                print(f"--- {skus:,} SKUs: bare statsforecast calls and the statsmodels loop", flush=True)
                parts = statsforecast_parts(skus, folder, args.subset_loop)
                bare, loop = parts["parts"]["b"], parts["parts"]["d"]
                row |= {
                    "bare_statsforecast": {"wall_s": round(bare["seconds"], 1), "cpu_s": round(bare["cpu_seconds"], 1)},
                    "statsmodels_loop": {
                        "subset_skus": loop["skus"],
                        "cpu_s_subset": round(loop["cpu_seconds"], 1),
                        "cpu_s_extrapolated": round(loop["cpu_seconds"] * skus / loop["skus"], 1),
                    },
                }
                row["cpu_over_bare_statsforecast"] = round(e2e["cpu_s"] / row["bare_statsforecast"]["cpu_s"], 2)
                row["statsmodels_loop_cpu_over_end_to_end"] = round(row["statsmodels_loop"]["cpu_s_extrapolated"] / e2e["cpu_s"], 1)
                rows.append(row)
                print(f"    {row}", flush=True)
            evaluation = rolling_evaluation(args.evaluate_skus, folder, api_url) if args.evaluate_skus else None
            print(f"--- rolling evaluation: {evaluation}", flush=True)
        dask = dask_scaling(args.dask_skus, folder) if args.dask_skus else None
        print(f"--- Dask: {dask}", flush=True)
    finally:
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in folder.glob("*.log"):
                shutil.copy2(log, args.logs / log.name)
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "days": 730,
        "sizes": rows,
        "dask_forecast_stage": dask,
        "rolling_evaluation": evaluation,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'SKUs':>8} {'wall s':>8} {'CPU s':>8} {'peak PSS MB':>12} {'SKUs/s':>8} {'CPU/bare sf':>12} {'loop/ours':>10}")
    for r in rows:
        e = r["end_to_end"]
        print(
            f"{r['skus']:>8,} {e['wall_s']:>8} {e['cpu_s']:>8} {e['peak_pss_mb']:>12} {e['skus_per_s']:>8} "
            f"{r.get('cpu_over_bare_statsforecast', '-'):>12} {r.get('statsmodels_loop_cpu_over_end_to_end', '-'):>10}"
        )
        for e in r.get("end_to_end_by_partition_size", []):
            size = f"partitions of {e['partition_skus']:,}"
            print(f"{'':>8} {e['wall_s']:>8} {e['cpu_s']:>8} {e['peak_pss_mb']:>12} {e['skus_per_s']:>8}  {size}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
