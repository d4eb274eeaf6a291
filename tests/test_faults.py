"""Faults: kill -9 at every stage boundary and inside the publishing swap, two runs at once, a full disk, and
passwords that must never be stored.

The kill tests stop a real `buffercast run` (a subprocess on the session's Prefect server) at a pause point that only
tests enable (`flows.publish.pause_point`: BUFFERCAST_PAUSE_AT), kill its process group with SIGKILL, then run
`buffercast recover`, and compare every published table with the outputs of the previous run ("old") and of the same
run completed ("new"): killed before its journal, the folder must hold exactly the old tables; from the journal on,
exactly the new ones; never a mix, and no staging litter.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import JOURNAL, STAGING, WORK, PublishError, manifest_path, publish_tables, read_manifest
from tests.conftest import END, PATIENCE_S, table_hashes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parent.parent
CHEAP = "backtest:\n  n_jobs: 1\nmodels:\n" + "".join(
    f"  {c}: [{m}]\n" for c, m in {"smooth": "Naive", "erratic": "Naive", "intermittent": "CrostonSBA", "lumpy": "CrostonSBA"}.items()
)
#: Stage boundaries of a run (a real `buffercast run`), then the publishing steps (`flows.publish.publish_tables` in a
#: process of its own, publishing the new run's tables), in the order a run passes them.
STAGE_POINTS = ["after:pull", "after:validation", "after:profile", "after:forecast", "after:recommend"]
BEFORE_JOURNAL = [*STAGE_POINTS, "staged:recommendations"]
FROM_JOURNAL = ["journal", "swap:manifest-removed", "swap:recommendations:parked", "swap:recommendations", "swap:schemas"]
PUBLISH = """
import datetime as dt, json, os, sys
from pathlib import Path
import polars as pl
from flows.publish import publish_tables, read_manifest
new, out, as_of = Path(sys.argv[1]), Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
manifest = read_manifest(new, as_of)
tables = {name: pl.read_parquet(Path(entry["path"]) / "part-0.parquet") for name, entry in manifest["tables"].items()}
report = (new / "reports" / f"as_of={as_of}" / "report.html").read_text()
run_id = "killed-at-" + os.environ["BUFFERCAST_PAUSE_AT"].replace(":", "-")
publish_tables(out, as_of, run_id, tables, {"run_id": run_id}, {"report.html": report})
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Old outputs (a run on catalogue A), the same as-of completed on catalogue B (new), and B's inputs."""
    from flows.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("faults")
    a = write_sample_data(root / "a", n_skus=8, seed=21, end_date=END, n_days=150)
    b = write_sample_data(root / "b", n_skus=8, seed=22, end_date=END, n_days=150)
    (root / "cheap.yaml").write_text(CHEAP)
    old, new = root / "old", root / "new"
    result = CliRunner().invoke(app, _run_args(root, a, old))
    assert result.exit_code == 0, result.output
    shutil.copytree(old, new)
    result = CliRunner().invoke(app, _run_args(root, b, new))
    assert result.exit_code == 0, result.output
    return {"root": root, "b": b, "old": old, "new": new}


def _run_args(root: Path, data: dict[str, Path], out: Path) -> list[str]:
    return [
        "run", "--config", str(root / "cheap.yaml"), "--sales", str(data["sales"]), "--sku-master", str(data["sku_master"]),
        "--out", str(out), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
    ]  # fmt: skip


def _start_paused(world, out: Path, point: str, tmp_path: Path) -> subprocess.Popen:
    """A run (or, for the publishing steps, a publish of the new run's tables) into `out`, paused at `point`."""
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "BUFFERCAST_PAUSE_AT": point, "BUFFERCAST_PAUSE_FILE": str(marker), "PREFECT_LOGGING_LEVEL": "WARNING"}
    if point in STAGE_POINTS:
        cmd = [sys.executable, "-m", "flows.cli", *_run_args(world["root"], world["b"], out)]
    else:
        cmd = [sys.executable, "-c", PUBLISH, str(world["new"]), str(out), END.isoformat()]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + PATIENCE_S
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"ended (exit {proc.returncode}) before reaching {point}:\n{proc.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, f"{point} not reached within {PATIENCE_S:.0f} s"
        time.sleep(0.1)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("point", BEFORE_JOURNAL + FROM_JOURNAL)
def test_kill_9_anywhere_then_recover_leaves_all_old_or_all_new(world, point, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(world["old"], out)
    old_tables, new_tables = table_hashes(world["old"]), table_hashes(world["new"])
    assert old_tables.keys() == new_tables.keys() and old_tables != new_tables
    proc = _start_paused(world, out, point, tmp_path)
    if point == "after:forecast":
        # Two runs at once: the second fails at once with one line naming the first, and changes nothing.
        second = CliRunner().invoke(app, _run_args(world["root"], world["b"], out))
        assert second.exit_code == 2 and f"in use by another buffercast run (pid {proc.pid}" in second.output, second.output
    if point in ("swap:recommendations:parked", "swap:recommendations"):
        # Mid-swap, a reader who follows the manifest finds none for the as-of (never a mix of old and new tables).
        assert not manifest_path(out, END).exists()
    _kill(proc)
    if point in ("after:profile", "after:forecast", "after:recommend"):
        assert any((out / WORK).iterdir()), "the run's partitions were not in its work folder"

    recovered = CliRunner().invoke(app, ["recover", "--out", str(out)])
    assert recovered.exit_code == 0, recovered.output
    expected = old_tables if point in BEFORE_JOURNAL else new_tables
    assert table_hashes(out) == expected, f"killed at {point}: the tables are neither all old nor all new"
    assert not (out / STAGING).exists(), "staging litter left behind"
    assert not (out / WORK).exists(), "work folder litter left behind"
    manifest = read_manifest(out, END)
    for name, entry in manifest["tables"].items():
        assert pl.scan_parquet(f"{entry['path']}/*.parquet").select(pl.len()).collect().item() == entry["rows"], name


def test_a_run_recovers_what_a_killed_run_left_before_it_computes(world, tmp_path):
    """No `buffercast recover` needed: the next run clears the litter of a run killed between stages and rolls an
    interrupted swap forward, before it computes; then publishes as usual."""
    out = tmp_path / "out"
    shutil.copytree(world["old"], out)
    proc = _start_paused(world, out, "staged:recommendations", tmp_path)
    _kill(proc)
    proc = _start_paused(world, out, "swap:recommendations", tmp_path)
    _kill(proc)
    stages = sorted(p.name for p in (out / STAGING).iterdir())
    assert stages == ["killed-at-staged-recommendations", "killed-at-swap-recommendations"]
    assert (out / STAGING / stages[1] / JOURNAL).exists() and not (out / STAGING / stages[0] / JOURNAL).exists()
    result = CliRunner().invoke(app, _run_args(world["root"], world["b"], out))
    assert result.exit_code == 0, result.output
    assert table_hashes(out) == table_hashes(world["new"]) and not (out / STAGING).exists()


# ----------------------------------------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only; skipped, saying so, where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'}): the full-disk test needs one")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_names_the_file_and_leaves_the_previous_outputs(small_disk):
    import numpy as np

    small = {"recommendations": pl.DataFrame({"sku_id": ["a", "b"], "safety_stock_units": [1.0, 2.0]})}
    publish_tables(small_disk, END, "r1", small, {"run_id": "r1"})
    before = table_hashes(small_disk)
    rng = np.random.default_rng(0)
    big = {
        "recommendations": pl.DataFrame({"sku_id": ["c"], "safety_stock_units": [3.0]}),
        "forecasts": pl.DataFrame({"noise": rng.random(600_000)}),  # ~5 MB of incompressible doubles: more than the disk
    }
    with pytest.raises(PublishError) as info:
        publish_tables(small_disk, END, "r2", big, {"run_id": "r2"})
    message = str(info.value)
    assert "no space left on the device" in message and "forecasts/as_of=" in message and "part-0.parquet" in message, message
    assert "previous outputs are untouched" in message
    assert table_hashes(small_disk) == before
    assert json.loads(manifest_path(small_disk, END).read_text())["run_id"] == "r1"
    assert not (small_disk / STAGING).exists()


# ------------------------------------------------------------------------------------------------------------ secrets


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def file_server(tmp_path):
    """Files of tmp_path/served over HTTP on 127.0.0.1 (any user and password accepted)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_passwords_in_urls_are_used_but_never_stored_or_shown(small_catalogue, file_server, mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    served, host = file_server
    shutil.copy(small_catalogue["sales"], served / "sales.parquet")
    shutil.copy(small_catalogue["sku_master"], served / "sku_master.parquet")
    sales_secret, tracking_secret = "S4les-Pa55word-91", "Tr4cking-Pa55word-17"
    for variable in ("BUFFERCAST_SALES_PASSWORD", "BUFFERCAST_SKU_MASTER_PASSWORD", "BUFFERCAST_TRACKING_PASSWORD"):
        monkeypatch.setenv(variable, "unset-by-the-test")  # the CLI sets them in this process; undone after the test
    tracking = mlflow_server.replace("http://", f"http://tracker:{tracking_secret}@")
    out = tmp_path / "out"
    args = [
        "run", "--sales", f"http://planner:{sales_secret}@{host}/sales.parquet",
        "--sku-master", f"http://planner:{sales_secret}@{host}/sku_master.parquet",
        "--out", str(out), "--tracking-uri", tracking,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    haystack = [("the CLI output", result.output)]
    haystack += [(str(p), p.read_bytes().decode("latin-1")) for p in out.rglob("*") if p.is_file()]
    manifest = read_manifest(out, END)
    assert manifest["inputs"]["sales"] == f"http://planner:${{BUFFERCAST_SALES_PASSWORD}}@{host}/sales.parquet"

    # MLflow: params, tags, dataset sources and the report artifact.
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(manifest["mlflow_run_id"])
    haystack.append(("MLflow params and tags", json.dumps([run.data.params, run.data.tags])))
    haystack.append(("MLflow datasets", json.dumps([d.dataset.source for d in run.inputs.dataset_inputs])))
    report = client.download_artifacts(run.info.run_id, "report/report.html", str(tmp_path / "artifacts"))
    haystack.append(("MLflow report.html", Path(report).read_text()))

    # Prefect: the flow run's parameters (the config) and every log line it stored.
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(manifest["prefect_flow_run_id"])
        logs = prefect.read_logs()
    haystack.append(("Prefect parameters", json.dumps(flow_run.parameters, default=str)))
    haystack.append(("Prefect logs", "\n".join(log.message for log in logs)))
    for secret in (sales_secret, tracking_secret):
        leaks = [where for where, text in haystack if secret in text]
        lines = [line for where, text in haystack if where in leaks for line in text.splitlines() if secret in line]
        assert not leaks, f"{secret} stored in {leaks}: {lines[:5]}"


def test_an_error_quoting_the_url_is_redacted(file_server, tmp_path, monkeypatch):
    """A source that answers 404: the one-line error names the URL with its password masked."""
    _, host = file_server
    monkeypatch.setenv("BUFFERCAST_SALES_PASSWORD", "unset-by-the-test")
    result = CliRunner().invoke(
        app, ["run", "--sales", f"http://planner:Hidden-42@{host}/missing.csv", "--no-sku-master", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert "Hidden-42" not in result.output and "not found" in result.output and "planner:${BUFFERCAST_SALES_PASSWORD}@" in result.output


def test_a_prefect_secret_block_is_resolved_at_use_and_redacted():
    from prefect.blocks.system import Secret

    from configs.secrets import SecretError, redact, resolve
    from flows import secrets  # noqa: F401  (registers ${prefect-secret:NAME})

    Secret(value="Bl0ck-Secret-33").save("buffercast-test-sales", overwrite=True)
    location = "https://planner:${prefect-secret:buffercast-test-sales}@erp.example.com/sales.csv"
    assert resolve(location, key="input.sales") == "https://planner:Bl0ck-Secret-33@erp.example.com/sales.csv"
    assert redact("GET https://planner:Bl0ck-Secret-33@erp.example.com failed; token Bl0ck-Secret-33") == (
        "GET https://planner:***@erp.example.com failed; token ***"
    )
    assert redact(location) == location  # a reference is not a secret: messages keep it
    with pytest.raises(SecretError, match="Prefect Secret block 'no-such-block'"):
        resolve("https://u:${prefect-secret:no-such-block}@h/x", key="input.sales")
