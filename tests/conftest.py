"""Shared fixtures: a quiet, project-independent environment, Prefect's test harness, small seeded catalogues."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest

# Before prefect or mlflow is imported anywhere: no state in ~, no analytics or telemetry over the network.
_STATE = Path(tempfile.mkdtemp(prefix="buffercast-tests-"))
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

END = dt.date(2026, 6, 30)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
