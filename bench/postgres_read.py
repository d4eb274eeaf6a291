"""Rows per second: sales pulled from PostgreSQL by buffercast's source (ADBC) against the same rows read from Parquet.

Starts a throwaway PostgreSQL 15 (initdb + pg_ctl on a free port of 127.0.0.1; as the `postgres` user when run as
root), loads `--rows` generated sales rows with the types a real schema has (`sku_id text`, `date timestamp with time
zone`, `quantity numeric(14,3)`), writes the same rows to one Parquet file, then times, `--repeat` times each and
keeps the best:
- `flows.sources.read_database` (what `buffercast run` does for a `postgresql://` input.sales: the query, the Arrow
  result, the numeric columns as their text),
- `flows.sources.read_table` on the Parquet file (what it does for a file);
- `flows.sales_cache.pull_sales` through `input.cache_folder` (an index on the date column, as a real sales table has):
  the first pull (everything fetched, the monthly cache written), then a weekly pull (a week of new rows plus the
  28-day correction window fetched, the rest read from the cache).
All give raw rows for validation; none includes it.

    .venv/bin/python bench/postgres_read.py                  # 10,000,000 rows (a few minutes, ~3 GB of RAM)
    .venv/bin/python bench/postgres_read.py --rows 1000000   # quicker

Writes `bench/results/postgres_read.json` (committed: the figures quoted in bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_m5 import machine  # noqa: E402
from ten_runs import free_port  # noqa: E402

PG_BIN = Path(os.environ.get("BUFFERCAST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def sales(rows: int, seed: int = 0) -> pl.DataFrame:
    """`rows` sales rows: ~730 per SKU over two years, gamma quantities with 3 decimals."""
    rng = np.random.default_rng(seed)
    days = np.datetime64("2024-01-01") + rng.integers(0, 730, rows).astype("timedelta64[D]")
    return pl.DataFrame(
        {
            "sku_id": pl.Series(rng.integers(0, max(1, rows // 730), rows)).cast(pl.String).str.zfill(6),
            "date": pl.Series(days).cast(pl.Date),
            "quantity": np.round(rng.gamma(2.0, 3.0, rows), 3),
        }
    )


def best(seconds: list[float]) -> float:
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "postgres_read.json")
    args = parser.parse_args()

    from adbc_driver_postgresql import dbapi

    from configs.schema import load_config
    from flows.sales_cache import pull_sales
    from flows.sources import read_database, read_table

    root = Path(tempfile.mkdtemp(prefix="buffercast-pgbench-"))
    password = secrets.token_urlsafe(12)
    (root / "pw").write_text(password + "\n")
    as_user = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "bench", "--auth=scram-sha-256", f"--pwfile={root / 'pw'}"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root} -c timezone=UTC -c fsync=off -c shared_buffers=256MB"
    subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"],
                   check=True, capture_output=True)  # fmt: skip
    os.environ["BENCH_PGPASSWORD"] = password
    url = f"postgresql://bench:${{BENCH_PGPASSWORD}}@127.0.0.1:{port}/postgres"
    try:
        frame = sales(args.rows)
        parquet = root / "sales.parquet"
        frame.write_parquet(parquet)
        t0 = time.perf_counter()
        with dbapi.connect(url.replace("${BENCH_PGPASSWORD}", password)) as connection:
            with connection.cursor() as cursor:
                cursor.adbc_ingest("sales", frame.to_arrow(), mode="replace")
                cursor.execute("ALTER TABLE sales ALTER COLUMN date TYPE timestamp with time zone USING date::timestamp AT TIME ZONE 'UTC'")
                cursor.execute("ALTER TABLE sales ALTER COLUMN quantity TYPE numeric(14, 3)")
                cursor.execute("ANALYZE sales")
            connection.commit()
        load_s = time.perf_counter() - t0
        db_s, file_s = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            got = read_database(url, 'SELECT * FROM "sales"', what="sales")
            db_s.append(time.perf_counter() - t0)
            assert got.height == args.rows
            t0 = time.perf_counter()
            got = read_table(str(parquet), what="sales")
            file_s.append(time.perf_counter() - t0)
            assert got.height == args.rows
            del got
        with dbapi.connect(url.replace("${BENCH_PGPASSWORD}", password)) as connection:
            with connection.cursor() as cursor:
                cursor.execute("CREATE INDEX ON sales (date)")
                cursor.execute("ANALYZE sales")
            connection.commit()
        last = frame["date"].max()
        week_ago = last - dt.timedelta(days=7)
        cache = root / "cache"
        with_cache = load_config(None, {"input": {"sales": url, "sku_master": None, "cache_folder": str(cache)}}).input
        t0 = time.perf_counter()
        first = pull_sales(with_cache, week_ago)  # all rows, watermark a week before the last date
        first_s = time.perf_counter() - t0
        weekly_s = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            weekly = pull_sales(with_cache, last)
            weekly_s.append(time.perf_counter() - t0)
            assert weekly.raw.height == args.rows, weekly.note
            state = json.loads((cache / "state.json").read_text())
            state["watermark"] = week_ago.isoformat()  # back to a week ago: each repeat is the same weekly pull
            (cache / "state.json").write_text(json.dumps(state))
        incremental = {
            "first_pull_s": round(first_s, 2),
            "first_pull_rows": first.fetched,
            "weekly_pull_s": [round(x, 2) for x in weekly_s],
            "weekly_rows_fetched": weekly.fetched,
            "weekly_rows_cached": weekly.cached,
            "full_read_over_weekly_pull": round(best(db_s) / best(weekly_s), 1),
        }
    finally:
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "command": f"python bench/postgres_read.py --rows {args.rows} --repeat {args.repeat}",
        "machine": machine(),
        "rows": args.rows,
        "load_into_postgresql_s": round(load_s, 1),
        "postgresql_adbc_s": [round(x, 2) for x in db_s],
        "parquet_s": [round(x, 2) for x in file_s],
        "postgresql_rows_per_s": round(args.rows / best(db_s)),
        "parquet_rows_per_s": round(args.rows / best(file_s)),
        "parquet_over_postgresql": round(best(db_s) / best(file_s), 1),
        "incremental": incremental,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
