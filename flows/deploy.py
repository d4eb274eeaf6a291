"""The weekly deployment of `plan_buffers`, served from this process, and the local Prefect server it needs.

Two ways to run buffercast on a schedule:

- `prefect deploy --all` registers the deployment declared in prefect.yaml; a process worker on the
  `buffercast-pool` work pool runs it.
- `buffercast serve` (`make serve`) registers the same deployment from `configs/default.yaml` (or
  `--config`) and runs its flow runs in this process: no work pool needed.

Schedules only fire on a real Prefect server, never on the temporary one a bare flow call starts. So
`serve` uses the configured API (PREFECT_API_URL, or the Prefect profile) when there is one, and
otherwise runs `prefect server start` on 127.0.0.1 for as long as it serves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configs.schema import BuffercastConfig, load_config

if TYPE_CHECKING:
    from prefect.schedules import Schedule

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"

FLOW_NAME = "plan-buffers"  # @flow(name=...) in flows/plan.py
DEPLOYMENT_NAME = "plan-buffers-weekly"
DEPLOYMENT_TAGS = ["buffercast", "weekly"]
LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 4200  # Prefect's own default: its UI and docs point there


class ServerError(RuntimeError):
    """The local Prefect server did not start (the message says why and where its log is)."""


def weekly_schedule(cfg: BuffercastConfig) -> Schedule:
    """The deployment's schedule: `schedule.cron` read in `schedule.timezone` (daylight saving included)."""
    from prefect.schedules import Cron

    return Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)


def deployment_parameters(cfg: BuffercastConfig) -> dict[str, Any]:
    """Default parameters of the deployment: the whole validated config, as JSON (paths already absolute)."""
    return {"config": cfg.model_dump(mode="json")}


def api_url() -> str | None:
    """The Prefect API this process talks to (PREFECT_API_URL or the active profile); None: none configured."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def health_url(url: str) -> str:
    """`http://host:port/api` -> `http://host:port/api/health`."""
    return url.rstrip("/") + "/health"


def startup_timeout() -> float:
    """Seconds to wait for a Prefect server to start: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, else 300 (a
    fresh clone's first start on a loaded machine can take minutes). The same limit for the temporary server of
    `buffercast run` and for the server `buffercast serve` starts."""
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 300)


def wait_for_server(url: str, timeout: float = 90.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the Prefect API at `url` answers its health check; raise if it does not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if _is_healthy(url):
            return
        if process is not None and process.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {process.returncode} before answering on {url}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Prefect server on {url} did not answer {health_url(url)} within {timeout:.0f} s")
        time.sleep(0.25)


#: Straight to the server: an http_proxy set for the outside world must not take 127.0.0.1 with it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _is_healthy(url: str) -> bool:
    try:
        with _NO_PROXY.open(health_url(url), timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_process_group(process: subprocess.Popen[Any], first: signal.Signals = signal.SIGTERM, grace: float = 20.0) -> None:
    """Send `first` to the process group `process` leads (started with start_new_session), then SIGKILL after `grace` s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # The leader may be gone while children it started are not: clear the whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def local_prefect_server(
    port: int = LOCAL_PORT,
    *,
    host: str = LOCAL_HOST,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Iterator[str]:
    """`prefect server start` on host:port while the block runs; yields its API URL once /api/health answers.

    The server runs in its own process group, so a Ctrl-C in the terminal reaches the serving runner first
    (which pauses the schedule through the API) and the server is stopped after it, never before. Its state
    (SQLite) lives in PREFECT_HOME, so the deployment and its run history survive a restart. A healthy
    Prefect server already on the port is reused, and left running.
    """
    url = f"http://{host}:{port}/api"
    if _is_healthy(url):
        yield url
        return
    server_env = {**os.environ, **(env or {}), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL", None)
    log_path = log_path or Path(server_env.get("PREFECT_HOME", PROJECT_ROOT / ".prefect")) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env,
            start_new_session=True,
        )
    try:
        try:
            wait_for_server(url, timeout=startup_timeout() if timeout is None else timeout, process=process)
        except (ServerError, TimeoutError) as exc:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise ServerError(f"{exc}; its log ({log_path}) ends with:\n{tail}") from None
        yield url
    finally:
        stop_process_group(process)


def serve(config_path: str | None = None, *, port: int = LOCAL_PORT) -> None:
    """Register the weekly deployment and run its flow runs here until interrupted (Ctrl-C / SIGINT).

    Uses the configured Prefect API if there is one; otherwise a `prefect server start` on 127.0.0.1:`port`
    for as long as this runs (schedules never fire on Prefect's temporary server).
    """
    cfg = load_config(config_path)
    if api_url():
        _serve(cfg)
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with local_prefect_server(port) as url:
        print(f"Prefect server on {url.removesuffix('/api')} (state in {os.environ.get('PREFECT_HOME', '~/.prefect')})", flush=True)
        # The runner passes its settings on to every flow-run process it starts.
        with temporary_settings(updates={PREFECT_API_URL: url}):
            _serve(cfg)


def _serve(cfg: BuffercastConfig) -> None:
    from prefect import serve as serve_deployments

    from flows.plan import plan_buffers

    # From the repository root the entrypoint reads `flows/plan.py:plan_buffers`, as in prefect.yaml;
    # the config's paths were made absolute by load_config, so they do not depend on it.
    with contextlib.chdir(PROJECT_ROOT):
        deployment = plan_buffers.to_deployment(
            name=DEPLOYMENT_NAME,
            schedules=[weekly_schedule(cfg)],
            parameters=deployment_parameters(cfg),
            description=(
                f"buffercast weekly plan ('{cfg.name}' config): cron '{cfg.schedule.cron}' in {cfg.schedule.timezone}. "
                "Served by `buffercast serve`."
            ),
            tags=DEPLOYMENT_TAGS,
        )
        # `prefect.serve(deployment)`, not `plan_buffers.serve(...)`: prefect.serve starts each run with `python -m
        # prefect.engine` from the entrypoint, as a worker does, so a served run is exactly a deployed run (Flow.serve
        # runs a cloudpickle of the in-memory flow instead). Ctrl-C pauses the schedule and returns.
        serve_deployments(deployment)
