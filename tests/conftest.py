"""Shared fixtures: a quiet, project-independent environment, Prefect's test harness, small seeded catalogues."""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before prefect or mlflow is imported anywhere: no state in ~, no analytics or telemetry over the network.
_STATE = Path(tempfile.mkdtemp(prefix="buffercast-tests-"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)  # after the session's servers stopped: no litter in /tmp
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

END = dt.date(2026, 6, 30)


#: Limits that only turn a hang into a failure, never a measure of speed: a server or a run on a machine loaded by
#: other jobs (CI, a second `make test`) may take minutes. Override with BUFFERCAST_TEST_PATIENCE_S.
PATIENCE_S = float(os.environ.get("BUFFERCAST_TEST_PATIENCE_S", "600"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real `prefect server start` on a free port of 127.0.0.1 for the whole session; yields its API URL.

    Every test that needs Prefect shares it: flows run in-process (`prefect_harness`), `buffercast` subprocesses,
    `serve` and `prefect deploy`. Its state lives in the session's temporary PREFECT_HOME; its scheduler looks for
    due runs every 2 s (default 60 s) so a deployment's next runs appear at once. Start-up is waited for up to
    PATIENCE_S: on a loaded machine it has taken minutes.
    """
    from flows.deploy import local_prefect_server

    root = _STATE / "server"
    env = {
        "PREFECT_HOME": str(root / "home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    with local_prefect_server(free_port(), log_path=root / "server.log", env=env, timeout=PATIENCE_S) as url:
        yield url


@pytest.fixture(scope="session")
def prefect_harness(prefect_server: str) -> Iterator[str]:
    """Flows run in this process report to the session's Prefect server (and so do subprocesses, by the environment)."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = prefect_server
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):  # noqa: SIM117 (the second reads the first)
            # As Prefect's own harness does: threads started without a copy of this context see the server too.
            with _temporary_global_settings_context(get_settings_context()):
                yield prefect_server
                _drain_prefect_workers()  # before the server stops: no "Unable to connect" noise at the end
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _drain_prefect_workers() -> None:
    """Send the logs and events this process still holds to the server, as Prefect's own test harness does."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


@pytest.fixture(scope="session")
def small_catalogue(tmp_path_factory) -> dict[str, Path]:
    """30 SKUs x 400 days of the default generator, as Parquet."""
    from flows.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("catalogue"), n_skus=30, seed=11, end_date=END, n_days=400)


@pytest.fixture
def make_config(tmp_path):
    """Config for a run into tmp_path: its own outputs and MLflow store, one process."""
    from configs.schema import load_config

    def make(sales: Path | str, sku_master: Path | str | None = None, **overrides):
        base = {
            "input": {"sales": str(sales), "sku_master": str(sku_master) if sku_master else None},
            "output": {"folder": str(tmp_path / "outputs")},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "mlruns")},
            "backtest": {"n_jobs": 1},
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                base[key] = {**base.get(key, {}), **value}
            else:
                base[key] = value
        return load_config(None, base)

    return make


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """One `mlflow server` for the session: a SQLite backend in a temp folder, on a free loopback port; its whole
    process group ends after. Start-up is waited for up to PATIENCE_S."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: see {root / 'server.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server on port {port} not healthy after {PATIENCE_S:.0f} s") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def table_hashes(out: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every published table file under `out` (not buffercast's own `_`/`.` folders, nor the tables in
    `skip`); reports and manifests carry run ids and times and are checked apart."""
    import hashlib

    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
        if not p.relative_to(out).parts[0].startswith(("_", ".", *skip))
    }


#: PostgreSQL 15's server programs (Debian's postgresql-15); BUFFERCAST_PG_BIN points elsewhere.
PG_BIN = Path(os.environ.get("BUFFERCAST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL 15 for the session: initdb + pg_ctl on a free port of 127.0.0.1 (its socket in a temp
    folder), password login. initdb refuses to run as root: as root, the server runs as the `postgres` user. Yields
    `url` (the password as the reference ${BUFFERCAST_TEST_PGPASSWORD}, set in this process), `password`, `port`."""
    import secrets
    import shutil
    import subprocess

    if not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL's pg_ctl not found in {PG_BIN} (install Debian's postgresql-15, or set BUFFERCAST_PG_BIN)")
    # Not under pytest's temp folder: as root, the server runs as `postgres`, which cannot enter root's 0700 folders.
    root = Path(tempfile.mkdtemp(prefix="buffercast-postgres-"))
    password = secrets.token_urlsafe(16)
    (root / "pw").write_text(password + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL cannot be started")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    user = "buffercast"
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=PATIENCE_S)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")

    data = root / "data"
    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256", f"--pwfile={root / 'pw'}", "-E", "UTF8")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c timezone=UTC -c fsync=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", str(int(PATIENCE_S)), "-o", options, "start")
    os.environ["BUFFERCAST_TEST_PGPASSWORD"] = password
    try:
        url = f"postgresql://{user}:${{BUFFERCAST_TEST_PGPASSWORD}}@127.0.0.1:{port}/postgres"
        yield {"url": url, "password": password, "port": str(port)}
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


#: Debian's Chromium, installed by `make browser` (part of `make test`) where the user may apt-get it.
CHROMIUM = os.environ.get("BUFFERCAST_CHROMIUM", "/usr/bin/chromium")
#: As the machine's own probe starts it: no sandbox (root in a container), no calls to Google's hosts (no network).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def chromium():
    """A headless Chromium driven by Playwright (Debian's binary, never Playwright's own download); the test is
    skipped, saying why, where it is not installed. Per test: Playwright's sync API holds an event loop of its own,
    which must not be open while a flow runs."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"headless Chromium not found at {CHROMIUM}: `make browser` installs Debian's chromium (as root, with apt-get); "
            "elsewhere install it and/or set BUFFERCAST_CHROMIUM to its path"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=PATIENCE_S * 1000)
        try:
            yield browser
        finally:
            browser.close()
