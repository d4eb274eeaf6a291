"""A run never hangs: the forecasting stage's worker processes under Prefect, and the stage time-out.

- The stress test runs the flow's forecasting task many times in one flow run (`tests/pool_stress.py`, a
  subprocess on the session's Prefect test server) with small SKU chunks on two workers, and fails if a loop
  makes no progress for QUIET_LIMIT_S (a hang: on the code before `forecasting/workers.py` it hung, or printed
  `TerminationSignal` tracebacks from forked pool workers) or if anything prints a traceback.
- The time-out test runs `buffercast run` with a forecast time-out far shorter than the stage: the run must fail
  with one line naming the stage, leave no worker process behind and leave the previous outputs untouched.

No assertion depends on how fast anything runs: QUIET_LIMIT_S only turns a hang into a failure, with a margin of
about 30x over a loop's time on an idle machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import psutil
import pytest

from flows.publish import LOCK_FILE, PULLED
from forecasting.workers import WorkerDied, map_in_order, worker_count, worker_pool

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parent.parent
QUIET_LIMIT_S = 300.0
LOOPS = 3  # each loop opens, feeds and closes the stage's pool many times (chunks of 100 SKUs); 5 cost 50 s more of make test
#: Cheap models: the stress is on opening, feeding and closing worker pools, not on fitting.
CHEAP_MODELS = {
    "smooth": ["SeasonalNaive", "Naive", "HistoricAverage"],
    "erratic": ["SeasonalNaive", "Naive", "HistoricAverage"],
    "intermittent": ["CrostonSBA", "TSB", "HistoricAverage"],
    "lumpy": ["CrostonSBA", "TSB", "HistoricAverage"],
}


@pytest.fixture(scope="module")
def stress_catalogue(tmp_path_factory) -> dict[str, Path]:
    """1,000 SKUs x 250 days: groups of 100+ SKUs, so chunks of 100 made the old code open a pool per call."""
    from flows.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("stress"), n_skus=1000, seed=5, end_date=dt.date(2026, 6, 30), n_days=250)


def _api_env() -> dict[str, str]:
    """The environment of a subprocess that talks to this session's Prefect test server (no server of its own)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_LOGGING_LEVEL": "WARNING"}


def _run_watched(cmd: list[str], env: dict[str, str], progress: str) -> tuple[int, list[str]]:
    """Run `cmd`, its stdout and stderr merged; kill its process group and fail if no line starting with `progress`
    (or the end) comes for QUIET_LIMIT_S."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    out: list[str] = []
    last = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            if time.monotonic() - last > QUIET_LIMIT_S:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                tail = "\n".join(out[-30:])
                pytest.fail(f"hung: no progress for {QUIET_LIMIT_S:.0f} s after {sum(x.startswith(progress) for x in out)} loops:\n{tail}")
            continue
        if line is None:
            break
        out.append(line)
        if line.startswith(progress):
            last = time.monotonic()
    return proc.wait(), out


def test_forecasting_stage_in_a_loop_never_hangs_and_prints_no_traceback(stress_catalogue, tmp_path):
    config = tmp_path / "cheap.yaml"
    models = "".join(f"  {c}: [{', '.join(m)}]\n" for c, m in CHEAP_MODELS.items())
    config.write_text(f"models:\n{models}partitions:\n  skus: 400\n")  # 3 partitions per loop, on one pool
    cmd = [
        sys.executable, str(ROOT / "tests" / "pool_stress.py"), str(stress_catalogue["sales"]), str(tmp_path),
        "--loops", str(LOOPS), "--chunk-size", "100", "--n-jobs", "2", "--config", str(config),
    ]  # fmt: skip
    rc, out = _run_watched(cmd, _api_env(), progress="loop ")
    text = "\n".join(out)
    assert rc == 0, text[-3000:]
    assert sum(line.startswith("loop ") for line in out) == LOOPS, text[-3000:]
    assert "Traceback" not in text and "TerminationSignal" not in text, text[-3000:]
    assert f"pool-stress finished: {LOOPS} loops" in text


def _pool_workers(parent: int) -> set[int]:
    """Live loky worker processes started by `parent` (not its resource tracker)."""
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if _is_worker(c)}


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return "loky.backend.popen_loky_posix" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tagged(tag: str) -> set[int]:
    """Live processes, anywhere (orphans included), whose environment carries BUFFERCAST_TEST_RUN=tag."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("BUFFERCAST_TEST_RUN") == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def _until_empty(find, limit: float = 60.0) -> set[int]:
    """`find()` until it comes back empty (the kernel reaps killed processes a moment later) or `limit` s pass."""
    deadline = time.monotonic() + limit
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every published file's hash and modification time (the lock file each run takes and the raw inputs its pull
    hands on in `_pulled/` are not outputs: docs/outputs.md)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE and p.relative_to(root).parts[0] != PULLED
    }


def test_stage_time_out_stops_the_stage_and_its_workers_and_publishes_nothing(small_catalogue, stress_catalogue, make_config, tmp_path):
    from flows.plan import plan_buffers

    cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"])
    plan_buffers(cfg)  # the previous outputs
    out = Path(cfg.output.folder)
    before = _snapshot(out)
    assert any(k.startswith("recommendations/") for k in before)

    config = tmp_path / "short.yaml"
    config.write_text("backtest:\n  n_jobs: 2\n  chunk_size: 100\ntimeouts:\n  forecast: 3\n")
    tag = uuid.uuid4().hex
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--sales", str(stress_catalogue["sales"]),
        "--no-sku-master", "--out", str(out), "--tracking-uri", cfg.tracking.uri,
    ]  # fmt: skip
    rc, lines = _run_watched(cmd, _api_env() | {"BUFFERCAST_TEST_RUN": tag}, progress="")
    text = "\n".join(lines)
    assert rc == 1, text[-3000:]
    assert lines[-1].startswith("buffercast: error: the forecast stage did not finish within its time-out of 3 s (timeouts.forecast)"), text
    assert "the previous outputs are untouched" in lines[-1]
    assert "Traceback" not in text, text[-3000:]
    # No process of the run left, workers included, orphans too (a grace period for the kernel to reap them).
    assert not _until_empty(lambda: _tagged(tag))
    assert _snapshot(out) == before, "the timed-out run changed the previous outputs"


def test_a_worker_killed_mid_run_fails_the_run_with_one_line(stress_catalogue, tmp_path):
    """The out-of-memory killer ends a forecasting worker during a real run: the run fails at once, naming the stage."""
    config = tmp_path / "cheap.yaml"
    config.write_text(
        "backtest:\n  n_jobs: 2\n  chunk_size: 100\nmodels:\n" + "".join(f"  {c}: [{', '.join(m)}]\n" for c, m in CHEAP_MODELS.items())
    )
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--sales", str(stress_catalogue["sales"]),
        "--no-sku-master", "--out", str(tmp_path / "outputs"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_api_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    victim = None
    deadline = time.monotonic() + QUIET_LIMIT_S
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        workers = sorted(_pool_workers(proc.pid))
        victim = psutil.Process(workers[0]) if workers else None
        time.sleep(0.1)
    assert victim is not None, "the run ended before its forecasting workers could be seen"
    victim.kill()
    out, _ = proc.communicate(timeout=QUIET_LIMIT_S)
    lines = out.strip().splitlines()
    assert proc.returncode == 1, out[-3000:]
    assert lines[-1].startswith("buffercast: error: the forecast stage stopped: a worker process ended without returning its work"), out
    assert "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "outputs" / "recommendations").exists()


def _square(x: int) -> int:
    return x * x


def _fail_on(x: int) -> int:
    if x == 3:
        raise ValueError("chunk 3 is bad")
    return x


def test_map_in_order_keeps_job_order_in_and_out_of_process():
    jobs = [(i,) for i in range(20)]
    assert list(map_in_order(_square, jobs, None)) == [i * i for i in range(20)]
    with worker_pool(2) as pool:
        assert pool is not None
        assert list(map_in_order(_square, iter(jobs), pool, in_flight=3)) == [i * i for i in range(20)]


def test_a_failed_job_raises_in_the_parent_and_the_pool_kills_its_workers():
    with pytest.raises(ValueError, match="chunk 3 is bad"), worker_pool(2) as pool:
        list(map_in_order(_fail_on, [(i,) for i in range(6)], pool))
    assert not _until_empty(lambda: _pool_workers(os.getpid()))


def _die_on(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    time.sleep(0.2)
    return x


def test_a_killed_worker_fails_the_stage_instead_of_hanging_it():
    """multiprocessing.Pool waits for ever for the result of a worker the kernel killed; the project's pool raises."""
    with pytest.raises(WorkerDied, match="worker process ended without returning its work"), worker_pool(2) as pool:
        list(map_in_order(_die_on, [(i,) for i in range(8)], pool))
    assert not _until_empty(lambda: _pool_workers(os.getpid()))


def test_worker_count():
    assert worker_count(1) == 1
    assert worker_count(3) == 3
    assert worker_count(-1) == len(os.sched_getaffinity(0))
    with worker_pool(1) as pool:
        assert pool is None


def test_worker_chunks_give_the_numbers_of_one_process(small_catalogue):
    """Two workers and split chunks: the same forecasts, metrics and selection as one process, bit for bit."""
    from configs.schema import load_config
    from forecasting.backtest import backtest_and_forecast
    from forecasting.inputs import forecast_inputs
    from pipeline.stages import model_sets, profile_sales

    cfg = load_config(None, {"input": {"sales": str(small_catalogue["sales"]), "sku_master": None}})
    sales = pl.read_parquet(small_catalogue["sales"])
    p = profile_sales(cfg, sales, None, sales["date"].max())
    inputs = forecast_inputs(p.profiles, p.attrs, cfg)
    one = backtest_and_forecast(p.panel, inputs, model_sets(cfg), cfg.updated({"backtest": {"n_jobs": 1}}))
    with worker_pool(2) as pool:  # 30 SKUs would run in-process on their own
        two = backtest_and_forecast(p.panel, inputs, model_sets(cfg), cfg.updated({"backtest": {"n_jobs": 2, "chunk_size": 7}}), pool=pool)
    for name in ("plan", "cv", "metrics", "selection", "forecasts"):
        assert getattr(one, name).equals(getattr(two, name)), name
