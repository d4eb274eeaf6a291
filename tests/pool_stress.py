"""Run the flow's forecasting stage many times in one Prefect flow run, with small SKU chunks and two processes.

Many process pools (or many submissions to one, partition after partition) open and close: a run that deadlocks
hangs here, and a worker that dies with a traceback (e.g. Prefect's TerminationSignal in a forked pool worker) prints
it to stderr.
`tests/test_no_hang.py` runs this as a subprocess under a hard time limit and reads its output.

    python tests/pool_stress.py SALES_PARQUET OUT_DIR --loops 12 --chunk-size 100 [--config extra.yaml]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("sales")
    parser.add_argument("out")
    parser.add_argument("--loops", type=int, default=12)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--config", default=None, help="YAML deep-merged over configs/default.yaml")
    args = parser.parse_args()

    from prefect import flow

    from configs.schema import load_config
    from flows.tasks import forecast
    from pipeline.partitioned import MemoryStore, profile_parts, split_sales

    out = Path(args.out)
    cfg = load_config(
        Path(args.config) if args.config else None,
        {
            "input": {"sales": args.sales, "sku_master": None},
            "output": {"folder": str(out / "outputs")},
            "tracking": {"uri": f"sqlite:///{out / 'mlflow.db'}", "artifact_location": str(out / "mlruns")},
            "backtest": {"n_jobs": args.n_jobs, "chunk_size": args.chunk_size},
        },
    )
    sales = pl.read_parquet(args.sales)
    as_of = sales["date"].max()

    @flow(name="pool-stress")
    def stress() -> list[int]:
        store = MemoryStore()
        p = profile_parts(cfg, split_sales(sales, cfg.partitions.skus, store), None, as_of, store)
        sizes = []
        for i in range(args.loops):
            t0 = time.perf_counter()
            fc = forecast.with_options(timeout_seconds=cfg.timeouts.forecast)(cfg, p)
            sizes.append(fc.selection.height)
            print(f"loop {i + 1}/{args.loops}: {fc.selection.height} SKUs in {time.perf_counter() - t0:.1f} s", flush=True)
        return sizes

    sizes = stress()
    print(f"pool-stress finished: {len(sizes)} loops, {sum(sizes)} SKU forecasts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
