"""The weekly deployment: prefect.yaml as Prefect reads it, and `buffercast serve` against a real Prefect server.

The slow tests start their own `prefect server start` on a free port of 127.0.0.1 with a temporary
PREFECT_HOME: no server needs to be running, and nothing in ~/.prefect is read or written.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from configs.schema import DEFAULT_CONFIG_PATH, BuffercastConfig, ConfigError, ScheduleConfig, load_config
from flows.deploy import (
    DEPLOYMENT_NAME,
    FLOW_NAME,
    PREFECT_YAML,
    PROJECT_ROOT,
    deployment_parameters,
    stop_process_group,
    weekly_schedule,
)
from tests.conftest import PATIENCE_S, free_port

FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"
AS_OF = dt.date(2026, 6, 30)


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _the_deployment(spec: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = [d for d in spec["deployments"] if d["name"] == DEPLOYMENT_NAME]
    return deployment


def _flow_parameter_schema() -> dict[str, Any]:
    """The JSON schema Prefect publishes for plan_buffers' parameters (the server validates runs against it)."""
    from prefect.utilities.callables import parameter_schema

    from flows.plan import plan_buffers

    return parameter_schema(plan_buffers).model_dump_for_openapi()


def _schema_errors(parameters: dict[str, Any]) -> list[str]:
    """What the Prefect server says about these parameters (the same check it runs on every new flow run)."""
    from prefect.utilities.schema_tools import validate

    return [e.message for e in validate(parameters, _flow_parameter_schema(), ignore_required=True)]


# ---------------------------------------------------------------- prefect.yaml, no server


def test_prefect_yaml_declares_the_weekly_deployment_through_its_definitions():
    spec = _prefect_yaml()
    definitions, deployment = spec["definitions"], _the_deployment(spec)
    assert deployment["entrypoint"] == "flows/plan.py:plan_buffers"
    # YAML aliases load as the very object they point at: the deployment uses the anchors, not copies.
    assert deployment["schedules"] == [definitions["schedules"]["weekly"]]
    assert deployment["schedules"][0] is definitions["schedules"]["weekly"]
    assert deployment["work_pool"] is definitions["work_pools"]["buffercast_pool"]
    assert deployment["parameters"] is definitions["parameters"]["default_config"]
    assert deployment["work_pool"]["name"] == "buffercast-pool"
    # The code runs from this checkout: no build or push, one pull step to the folder `prefect deploy` ran in.
    assert not spec.get("build") and not spec.get("push")
    assert spec["pull"] == [{SET_WORKING_DIRECTORY: {"directory": "{{ $PWD }}"}}]
    # The flow file defines the flow the deployment names.
    assert '@flow(name="plan-buffers"' in (PROJECT_ROOT / "flows" / "plan.py").read_text()


def test_prefect_yaml_is_read_by_prefect_as_written():
    """Prefect's own prefect.yaml model (it skips a file it cannot parse with only a warning, so check here)."""
    from prefect.cli.deploy._models import PrefectYamlModel  # private, but it is what `prefect deploy` uses

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    (deployment,) = [d for d in model.deployments if d.name == DEPLOYMENT_NAME]
    assert deployment.entrypoint == "flows/plan.py:plan_buffers"
    assert deployment.work_pool is not None and deployment.work_pool.name == "buffercast-pool"
    (schedule,) = deployment.schedules or []
    assert schedule.cron and schedule.timezone and schedule.active is True


def test_prefect_yaml_schedule_is_the_config_schedule():
    """One weekly schedule, in two places: configs/default.yaml (serve) and prefect.yaml (deploy)."""
    (schedule,) = _the_deployment(_prefect_yaml())["schedules"]
    cfg = load_config()
    assert ScheduleConfig(cron=schedule["cron"], timezone=schedule["timezone"]) == cfg.schedule
    assert (cfg.schedule.cron, cfg.schedule.timezone) == ("0 6 * * 1", "Europe/Berlin")
    # And Prefect takes it: the same cron and zone on the schedule `buffercast serve` registers.
    cron = weekly_schedule(cfg)
    assert (cron.cron, cron.timezone) == (schedule["cron"], schedule["timezone"])


def test_prefect_yaml_parameters_validate_as_the_flow_config():
    parameters = _the_deployment(_prefect_yaml())["parameters"]
    assert set(parameters) == {"config"}
    assert _schema_errors(parameters) == []
    cfg = BuffercastConfig.model_validate(parameters["config"])
    # The deployment runs what `buffercast run` runs: configs/default.yaml, paths read from the repository root.
    ours = cfg.model_dump()
    for section, key in (("input", "sales"), ("input", "sku_master"), ("output", "folder"), ("tracking", "artifact_location")):
        ours[section][key] = str(PROJECT_ROOT / ours[section][key])
    ours["tracking"]["uri"] = f"sqlite:///{PROJECT_ROOT / ours['tracking']['uri'].removeprefix('sqlite:///')}"
    assert ours == load_config().model_dump()


def test_the_server_rejects_parameters_that_break_the_config_schema():
    assert _schema_errors({"config": {"name": "x", "backtest": {"n_windws": 3}}})  # a typo in a key
    assert _schema_errors({"config": {"abc": {"a_share": 1.5}}})  # out of range
    assert _schema_errors({"config": {"frequency": "Q"}})  # not one of D, W, M


def test_serve_parameters_round_trip_through_the_schema():
    cfg = load_config(None, {"name": "site-9", "as_of": "2026-06-30", "schedule": {"timezone": "America/New_York"}})
    parameters = deployment_parameters(cfg)
    assert _schema_errors(parameters) == []
    assert BuffercastConfig.model_validate(parameters["config"]) == cfg


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ({"timezone": "Europe/Berln"}, "schedule.timezone"),
        ({"timezone": "CEST+2"}, "schedule.timezone"),
        ({"cron": "0 6 * * 1 2026"}, "schedule.cron"),
        ({"cron": "0 6 * *"}, "schedule.cron"),
        ({"cron": "H 6 * * 1"}, "schedule.cron"),
        ({"crontab": "0 6 * * 1"}, "schedule.crontab"),
    ],
)
def test_a_bad_schedule_is_an_error_naming_the_key(schedule, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {"schedule": schedule})


def test_default_yaml_spells_out_the_schedule():
    assert yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["schedule"] == ScheduleConfig().model_dump()


# ---------------------------------------------------------------- a real Prefect server


def _quiet_env(prefect_home: Path, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _read_deployment(name: str, timeout: float, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                pass
            if process is not None and process.poll() is not None:
                pytest.fail(f"`buffercast serve` exited with {process.returncode} before registering {name}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not registered within {timeout:.0f} s:\n{_tail(log) if log else ''}")
            time.sleep(0.5)


def _wait_until_serving(serve: subprocess.Popen[bytes], log: Path, timeout: float = PATIENCE_S) -> None:
    """The deployment is registered a moment before the runner polls: a Ctrl-C in between aborts the start."""
    deadline = time.monotonic() + timeout
    while "being served" not in log.read_text(errors="replace"):
        if serve.poll() is not None:
            pytest.fail(f"`buffercast serve` exited with {serve.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"`buffercast serve` did not start serving within {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_served_deployment_runs_on_a_real_server(prefect_server, tmp_path):
    """`buffercast serve --config` registers the weekly deployment with the config's cron and zone; a run of it completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType as StateTypeFilter
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sample_data import write_sample_data

    data = write_sample_data(tmp_path / "data", n_skus=12, seed=3, n_days=200, end_date=AS_OF)
    config = tmp_path / "weekly.yaml"
    # Not the default schedule: the deployment must take it from the config.
    config.write_text(
        yaml.safe_dump(
            {
                "name": "deploy-test",
                "input": {"sales": str(data["sales"]), "sku_master": str(data["sku_master"])},
                "output": {"folder": str(tmp_path / "outputs")},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "mlruns")},
                "backtest": {"n_jobs": 1},
                "schedule": {"cron": "30 5 * * 2", "timezone": "America/New_York"},
            }
        )
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--config", str(config)],
            cwd=tmp_path,  # not the repository: serve must not depend on where it is started
            env=_quiet_env(tmp_path / "serve-home", prefect_server),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            deployment = _read_deployment(FULL_NAME, timeout=PATIENCE_S, process=serve, log=log)
            (schedule,) = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("30 5 * * 2", "America/New_York", True)
            assert deployment.entrypoint == "flows/plan.py:plan_buffers"
            assert deployment.enforce_parameter_schema
            assert BuffercastConfig.model_validate(deployment.parameters["config"]) == load_config(config)

            # Trigger a run with the deployment's own parameters (the config file) and wait for its end.
            flow_run = run_deployment(FULL_NAME, timeout=PATIENCE_S, poll_interval=2)
            assert flow_run.state is not None and flow_run.state.is_completed(), f"{flow_run.state}\n{_tail(log)}"
            assert flow_run.deployment_id == deployment.id
            recommendations = tmp_path / "outputs" / "recommendations" / f"as_of={AS_OF}"
            assert recommendations.is_dir() and any(recommendations.glob("*.parquet"))

            # The server's scheduler has put the next runs on the calendar: Tuesdays 05:30 New York time.
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + PATIENCE_S
                while True:
                    scheduled = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=StateTypeFilter(any_=[StateType.SCHEDULED]))),
                    )
                    if scheduled or time.monotonic() > deadline:
                        break
                    time.sleep(1)
            assert scheduled, "the server scheduled no runs of the deployment"
            for run in scheduled:
                local = run.expected_start_time.astimezone(ZoneInfo("America/New_York"))
                assert (local.isoweekday(), local.hour, local.minute) == (2, 5, 30), local

            # Ctrl-C stops serving cleanly: the schedule is paused, not left firing at nobody.
            _wait_until_serving(serve, log)
            os.kill(serve.pid, signal.SIGINT)
            assert serve.wait(timeout=PATIENCE_S) == 0, _tail(log)
            with get_client(sync_client=True) as client:
                assert client.read_deployment(deployment.id).paused
    finally:
        # SIGINT first (serve ignores SIGTERM once its server is gone), then the whole group.
        stop_process_group(serve, first=signal.SIGINT, grace=30)


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_prefect_deploy_registers_prefect_yaml(prefect_server, tmp_path):
    """`prefect deploy --all` takes prefect.yaml: the weekly cron in its zone, the process pool, the pull step."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefect = [str(Path(sys.executable).with_name("prefect")), "--no-prompt"]
    # Served deployments live in the same server: register the file's deployment under another name.
    spec = tmp_path / "prefect.yaml"
    spec.write_text(PREFECT_YAML.read_text().replace(f"- name: {DEPLOYMENT_NAME}\n", "- name: from-prefect-yaml\n"))
    # `prefect deploy` fills {{ $PWD }} from the environment, as a shell sets it: the repository root.
    env = _quiet_env(tmp_path / "deploy-home", prefect_server) | {"PWD": str(PROJECT_ROOT)}
    for command in (
        [*prefect, "work-pool", "create", "buffercast-pool", "--type", "process", "--overwrite"],
        [*prefect, "deploy", "--all", "--prefect-file", str(spec)],
    ):
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=PATIENCE_S)
        assert done.returncode == 0, f"{' '.join(command[1:])}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Skipping" not in done.stdout, done.stdout  # Prefect skips a prefect.yaml it cannot parse

    expected = _the_deployment(_prefect_yaml())
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"{FLOW_NAME}/from-prefect-yaml")
    (schedule,) = deployment.schedules
    cfg_schedule = load_config().schedule
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (cfg_schedule.cron, cfg_schedule.timezone, True)
    assert deployment.work_pool_name == "buffercast-pool"
    assert deployment.entrypoint == "flows/plan.py:plan_buffers"
    assert deployment.pull_steps == [{SET_WORKING_DIRECTORY: {"directory": str(PROJECT_ROOT)}}]
    assert deployment.parameters == expected["parameters"]
    assert deployment.enforce_parameter_schema


@pytest.mark.slow
@pytest.mark.timeout(3 * PATIENCE_S)
def test_serve_without_an_api_url_brings_its_own_server(tmp_path):
    """`make serve` on a machine with no Prefect server: one is started on 127.0.0.1 and stopped with the serve, by a
    SIGINT even when the serve was started with SIGINT ignored (as `cmd &` in a script does)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import _is_healthy

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "serve.log"
    env = _quiet_env(tmp_path / "home", api_url=None)
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # As a background job of a script starts it: SIGINT ignored (the serve must still stop on it).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.monotonic() + PATIENCE_S
        while not _is_healthy(url):
            assert serve.poll() is None, f"`buffercast serve` exited with {serve.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"no Prefect server on {url}:\n{_tail(log)}"
            time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            deployment = _read_deployment(FULL_NAME, timeout=PATIENCE_S, process=serve, log=log)
        (schedule,) = deployment.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 6 * * 1", "Europe/Berlin")  # configs/default.yaml
        assert (tmp_path / "home" / "server.log").exists()  # the server's log sits in PREFECT_HOME

        _wait_until_serving(serve, log)
        os.kill(serve.pid, signal.SIGINT)  # what Ctrl-C sends
        assert serve.wait(timeout=PATIENCE_S) == 0, _tail(log)
        assert not _is_healthy(url), "the Prefect server outlived `buffercast serve`"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger in TIME_WAIT
            s.bind(("127.0.0.1", port))  # nothing listens on the port any more
    finally:
        stop_process_group(serve, first=signal.SIGINT, grace=30)
