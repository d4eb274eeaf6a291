"""The newcomer's path, timed: a fresh clone, `make run`, a bad input, the outputs read by polars, pandas and DuckDB.

Run: `.venv/bin/python bench/newcomer.py` (options: `--help`). Clones this repository (its committed HEAD) into a
temporary folder and runs there, as a new user would, each step with its wall time; writes
`bench/results/newcomer.json` and prints the steps. The clone's `.venv` is built by its own `make` (uv, from the
package cache when warm). Nothing here asserts: the tests check each behaviour; this says what it costs, on this
machine, idle or beside another job (`--note` records which).

Steps:
1. `git clone` of the repository;
2. `make run`: the environment, the default data and the whole pipeline (its own temporary Prefect server);
3. `buffercast run --sales bad.csv` with a missing column: exit 2, one line, before any Prefect import;
4. `buffercast run --sales nowhere.csv`: a missing file, likewise;
5. every published table read as the README shows, with polars, pandas and DuckDB (rows must agree);
6. the report: a headless Chromium screenshot when `chromium` is installed, else recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_m5 import machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "newcomer.json"
READ_TABLES = """
import json, sys
from pathlib import Path
import duckdb, pandas as pd, polars as pl
rows = {}
for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir() and any(p.glob("as_of=*/*.parquet"))):
    a = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect().height
    b = len(pd.read_parquet(folder, partitioning=None))
    c = len(duckdb.sql(f"select * from read_parquet('{folder}/*/*.parquet')").fetchall())
    rows[folder.name] = [a, b, c]
print(json.dumps(rows))
"""


def step(name: str, cmd: list[str], cwd: Path, steps: list[dict], expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run one step, time it, record its exit code and its last lines."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    steps.append({"step": name, "command": " ".join(cmd), "seconds": round(seconds, 1), "exit": proc.returncode, "expected_exit": expect,
                  "last_lines": tail})  # fmt: skip
    print(f"{seconds:7.1f} s  exit {proc.returncode} (expected {expect})  {name}", flush=True)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--note", default="idle", help="What else the machine was doing (recorded with the timings).")
    args = parser.parse_args(argv)

    steps: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="buffercast-newcomer-") as tmp:
        clone = Path(tmp) / "buffercast"
        step("git clone", ["git", "clone", "--quiet", str(ROOT), str(clone)], Path(tmp), steps)
        step("make run", ["make", "run"], clone, steps)
        bad = clone / "bad.csv"
        bad.write_text("sku_id,day,quantity\nA,2026-01-01,3\n")
        cli = [str(clone / ".venv" / "bin" / "buffercast"), "run", "--out", str(clone / "bad-out")]
        step("bad input: a missing column", [*cli, "--sales", str(bad)], clone, steps, expect=2)
        step("bad input: a missing file", [*cli, "--sales", str(clone / "nowhere.csv")], clone, steps, expect=2)
        read = step("read every table: polars, pandas, DuckDB", [str(clone / ".venv" / "bin" / "python"), "-c", READ_TABLES,
                                                                 str(clone / "outputs")], clone, steps)  # fmt: skip
        tables = json.loads(read.stdout) if read.returncode == 0 else {}
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        reports = sorted((clone / "outputs" / "reports").glob("as_of=*/report.html"))
        if chromium and reports:
            shot = Path(tmp) / "report.png"
            step("report in headless Chromium", [chromium, "--headless", "--no-sandbox", f"--screenshot={shot}", reports[-1].as_uri()],
                 clone, steps)  # fmt: skip
        else:
            steps.append({"step": "report in headless Chromium", "skipped": "chromium is not installed" if not chromium else "no report"})
    out = {
        "command": "python bench/newcomer.py" + (" " + " ".join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ""),
        "note": args.note,
        "machine": machine(),
        "steps": steps,
        "rows_per_table_polars_pandas_duckdb": tables,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
