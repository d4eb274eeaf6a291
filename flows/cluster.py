"""The forecasting stage's chunks on a Dask cluster (`backtest.dask_scheduler`), instead of local worker processes.

The stage stays one Prefect task; its chunks of SKUs (`forecasting.backtest`: one statsforecast call each, a few
thousand SKUs) are submitted to the cluster through `distributed`'s `concurrent.futures` executor, so the same
`map_in_order` that feeds the local pool feeds the cluster, results come back in chunk order, and the outputs are
the same as a local run's, byte for byte (`tests/test_dask.py`). A Prefect task per chunk (prefect-dask's
`DaskTaskRunner`) would put an API round trip and a stored state on every chunk for nothing the stage needs.

Leaving the block closes the client: the scheduler cancels what it still runs for this run (a stage time-out, a
failure, Ctrl-C), and a worker lost mid-chunk is replaced by the scheduler, which runs the chunk again elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

#: How long to wait for the scheduler to answer (a generous limit on a busy network; then the stage fails, naming it).
CONNECT_TIMEOUT_S = 120


@contextmanager
def dask_pool(address: str) -> Iterator[tuple[Executor, int]]:
    """An executor on the Dask scheduler at `address` and the number of chunks to keep running (the cluster's threads)."""
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(
            "backtest.dask_scheduler needs Dask's distributed package: install buffercast with its dask extra "
            "(uv sync --extra dask, or pip install 'buffercast[dask]')"
        ) from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as exc:
        raise OSError(f"the Dask scheduler at {address} (backtest.dask_scheduler) did not answer: {exc}") from None
    with client:
        threads = sum(client.nthreads().values())
        yield client.get_executor(pure=False), max(threads, 1)
