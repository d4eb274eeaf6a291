"""The forecasting stage on a real Dask cluster (`distributed.LocalCluster`, 2 worker processes on 127.0.0.1):
`backtest.dask_scheduler` sends the chunks there, and the published tables are those of a local run, byte for byte,
whatever the chunk size and the partition size (`pipeline.partitioned`: 30 series in 4 partitions against 1)."""

from __future__ import annotations

import pytest

from tests.conftest import PATIENCE_S, table_hashes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, timeout=PATIENCE_S
    ) as local_cluster:
        yield local_cluster


def _chunks_run_on(cluster) -> int:
    """Chunks the cluster computed (tasks of `forecasting.backtest._run_chunk`, prefix `run_chunk`, that reached memory)."""
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        return client.run_on_scheduler(
            lambda dask_scheduler: (
                dask_scheduler.task_prefixes["run_chunk"].state_counts["memory"] if "run_chunk" in dask_scheduler.task_prefixes else 0
            )
        )


def test_a_run_on_a_dask_cluster_publishes_what_a_local_run_does(cluster, small_catalogue, make_config, tmp_path):
    from flows.plan import plan_buffers

    sales, master = small_catalogue["sales"], small_catalogue["sku_master"]
    local = make_config(sales, master, output={"folder": str(tmp_path / "local")})
    on_dask = make_config(
        sales,
        master,
        output={"folder": str(tmp_path / "dask")},
        backtest={"dask_scheduler": cluster.scheduler_address, "chunk_size": 7},
        partitions={"skus": 8},
    )
    plan_buffers(local)
    result = plan_buffers(on_dask)
    assert result["skus"] == 30
    assert _chunks_run_on(cluster) >= 30 // 7  # the chunks ran there (each group in chunks of 7 SKUs at most)
    assert table_hashes(tmp_path / "local") == table_hashes(tmp_path / "dask")


def test_an_unreachable_scheduler_fails_the_run_naming_it(small_catalogue, make_config, monkeypatch):
    import flows.cluster
    from flows.plan import plan_buffers
    from tests.conftest import free_port

    monkeypatch.setattr(flows.cluster, "CONNECT_TIMEOUT_S", 3)  # nothing listens there: no wait makes it answer

    address = f"tcp://127.0.0.1:{free_port()}"
    cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"], backtest={"dask_scheduler": address})
    with pytest.raises(OSError, match=rf"the Dask scheduler at {address} \(backtest.dask_scheduler\) did not answer"):
        plan_buffers(cfg)
