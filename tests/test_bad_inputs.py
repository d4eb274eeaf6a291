"""The catalogue of bad inputs and config errors, one row per case, each with the outcome the README promises.

- REFUSED: `buffercast run` exits 2 with one line naming the file, column, key or SKU and what to do, prints no
  traceback, and leaves the previous outputs byte for byte as they were. These fail in the CLI's pre-flight look
  (`flows.sources.preflight`), before any Prefect server: they run in-process, in a fraction of a second each.
- REFUSED_IN_RUN: the same promise for what only the run itself can see (all rows zero, too many bad rows, a locked
  output folder): the CLI on the session's Prefect server.
- QUARANTINED: the rows go to the quarantine with the named check and count; rows in = rows used + rows quarantined.
- PARSED: what a real export looks like (a BOM, timestamps with a time and a zone, a semicolon CSV with decimal
  commas when the config says so, odd SKU ids) is read, not quarantined.
- SPARSE: one row, one SKU, one day: a plan with its reasons, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from configs.schema import load_config
from flows.cli import app
from flows.publish import output_lock, read_table
from flows.sources import read_table as read_input
from pipeline.contracts import validate_inputs

TODAY = dt.date(2026, 6, 30)
GOOD = "sku_id,date,quantity\na,2026-01-01,1\na,2026-01-02,2\nb,2026-01-01,3\n"
MASTER = "sku_id,unit_cost,lead_time_days\na,2.5,7\nb,1.0,14\n"


def _parquet(frame: pl.DataFrame) -> Callable[[Path], None]:
    return lambda path: frame.write_parquet(path)


def _truncated_parquet(path: Path) -> None:
    pl.DataFrame({"sku_id": ["a"] * 50, "date": [dt.date(2026, 1, 1)] * 50, "quantity": [1.0] * 50}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:-40])


def _folder(files: dict[str, Callable[[Path], None] | str]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        for name, content in files.items():
            if isinstance(content, str):
                (path / name).write_text(content)
            else:
                content(path / name)

    return make


@dataclass(frozen=True)
class Refused:
    """`buffercast run` on `files` (name -> text, bytes or a writer; `sales.*` is --sales, `master.*` --sku-master)
    with `args` and an optional config; the one error line must contain every `expect` fragment."""

    files: dict[str, str | bytes | Callable[[Path], None]]
    expect: tuple[str, ...]
    config: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret: str | None = None  # must not appear anywhere in the output


REFUSED = {
    "missing sales file": Refused({}, ("sales file", "nowhere.csv", "not found", "input.sales"), args=("--sales", "{tmp}/nowhere.csv")),
    "missing SKU master file": Refused(
        {"sales.csv": GOOD}, ("SKU master file", "nowhere.parquet", "not found"), args=("--sku-master", "{tmp}/nowhere.parquet")
    ),
    "unknown extension": Refused({"sales.xlsx": "x"}, ("sales.xlsx", "unknown extension", ".parquet")),
    "empty file": Refused({"sales.csv": ""}, ("sales.csv", "is empty")),
    "header only": Refused({"sales.csv": "sku_id,date,quantity\n"}, ("sales.csv", "has a header but no rows")),
    "missing column": Refused(
        {"sales.csv": "sku_id,day,quantity\na,2026-01-01,1\n"}, ("sales.csv", "missing column 'date'", "input.sales_columns.date")
    ),
    "column renamed in config only": Refused(
        {"sales.csv": GOOD},
        ("missing column 'qty'", "found columns: sku_id, date, quantity"),
        config="input:\n  sales_columns: {quantity: qty}\n",
    ),
    "repeated column name": Refused(
        {"sales.csv": "sku_id,date,quantity,quantity\na,2026-01-01,1,2\n"}, ("sales.csv", "'quantity' more than once", "rename")
    ),
    "semicolon CSV, comma configured": Refused(
        {"sales.csv": "sku_id;date;quantity\na;2026-01-01;1,5\n"}, ("sales.csv", "separated by ';'", "input.csv_separator: ';'")
    ),
    "tab-separated CSV": Refused(
        {"sales.csv": "sku_id\tdate\tquantity\na\t2026-01-01\t1\n"}, ("separated by '\\t'", "input.csv_separator")
    ),
    "Latin-1 bytes": Refused(
        {"sales.csv": b"sku_id,date,quantity\ncaf\xe9,2026-01-01,1\n"}, ("sales.csv", "could not be read as CSV", "UTF-8")
    ),
    "binary file named .csv": Refused({"sales.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"}, ("sales.csv", "not a CSV text file")),
    "truncated Parquet": Refused(
        {"sales.parquet": _truncated_parquet}, ("sales.parquet", "could not be read as Parquet", "export it again")
    ),
    "random bytes named .parquet": Refused({"sales.parquet": os.urandom(300)}, ("sales.parquet", "could not be read as Parquet")),
    "Parquet folder with differing columns": Refused(
        {
            "sales": _folder(
                {
                    "a.parquet": _parquet(pl.DataFrame({"sku_id": ["a"], "date": [dt.date(2026, 1, 1)], "quantity": [1.0]})),
                    "b.parquet": _parquet(pl.DataFrame({"sku_id": ["b"], "date": [dt.date(2026, 1, 1)], "qty": [1.0]})),
                }
            )
        },
        ("b.parquet", "has other columns than", "missing: quantity", "extra: qty"),
    ),
    "Parquet folder with clashing types": Refused(
        {
            "sales": _folder(
                {
                    "a.parquet": _parquet(pl.DataFrame({"sku_id": ["a"], "date": [dt.date(2026, 1, 1)], "quantity": [1.0]})),
                    "b.parquet": _parquet(pl.DataFrame({"sku_id": ["b"], "date": [True], "quantity": [1.0]})),
                }
            )
        },
        ("sales folder", "clashing column types"),
    ),
    "folder mixing CSV and Parquet": Refused(
        {"sales": _folder({"a.csv": GOOD, "b.parquet": _parquet(pl.DataFrame({"sku_id": ["a"]}))})}, ("mixes Parquet and CSV",)
    ),
    "empty folder": Refused({"sales": _folder({})}, ("sales folder", "holds no .parquet or .csv file")),
    "dates as booleans": Refused(
        {"sales.parquet": _parquet(pl.DataFrame({"sku_id": ["a"], "date": [True], "quantity": [1.0]}))},
        ("column 'date'", "Boolean", "not dates", "input.sales_columns.date"),
    ),
    "quantities as dates": Refused(
        {"sales.parquet": _parquet(pl.DataFrame({"sku_id": ["a"], "date": [dt.date(2026, 1, 1)], "quantity": [dt.date(2026, 1, 1)]}))},
        ("column 'quantity'", "not numbers"),
    ),
    "SKU master without unit_cost": Refused(
        {"sales.csv": GOOD, "master.csv": "sku_id,lead_time_days\na,7\n"}, ("SKU master file", "missing column 'unit_cost'")
    ),
    "YAML syntax error": Refused(
        {"sales.csv": GOOD}, ("cfg.yaml, line 3, column 2", "not valid YAML"), config="backtest:\n  n_jobs: 1\n chunk_size: 9\n"
    ),
    "YAML not a mapping": Refused({"sales.csv": GOOD}, ("cfg.yaml", "must hold a mapping"), config="- a\n- b\n"),
    "unknown config key": Refused({"sales.csv": GOOD}, ("unknown key 'input.sale'",), config="input:\n  sale: x.csv\n"),
    "bad config value": Refused({"sales.csv": GOOD}, ("'frequency'",), args=("--freq", "X")),
    "unknown time zone": Refused(
        {"sales.csv": GOOD}, ("input.timezone", "not an IANA time zone"), config="input:\n  timezone: Mars/Olympus\n"
    ),
    "inverted cut-offs": Refused(
        {"sales.csv": GOOD}, ("erratic_from must be greater than volatility.variable_from",), config="volatility: {variable_from: 1.2}\n"
    ),
    "config file missing": Refused({"sales.csv": GOOD}, ("config file", "not found"), args=("--config", "{tmp}/nope.yaml")),
    "password written into the config": Refused(
        {"sales.csv": GOOD},
        ("input.sales", "password or token written out", "${NAME}"),
        config="input:\n  sales: https://planner:hunter2@erp.example.com/sales.csv\n",
        secret="hunter2",
    ),
    "token in a query string": Refused(
        {"sales.csv": GOOD},
        ("tracking.uri", "password or token written out"),
        config="tracking:\n  uri: https://mlflow.example.com/?token=abc123XYZ\n",
        secret="abc123XYZ",
    ),
    "referenced variable not set": Refused(
        {"sales.csv": GOOD},
        ("input.sales", "BUFFERCAST_TEST_UNSET", "not set"),
        config="input:\n  sales: https://planner:${BUFFERCAST_TEST_UNSET}@127.0.0.1:9/sales.csv\n",
    ),
    "output folder is a file": Refused(
        {"sales.csv": GOOD, "taken": "x"}, ("output folder", "not writable", "--out"), args=("--out", "{tmp}/taken/out")
    ),
    "not enough free space": Refused({"sales.csv": GOOD}, ("MB free", "output.min_free_mb"), config="output:\n  min_free_mb: 1e12\n"),
}


def _materialise(tmp: Path, case: Refused) -> list[str]:
    """Write the case's files; the CLI arguments for them (outputs into tmp/out unless the case names another)."""
    args: list[str] = []
    for name, content in case.files.items():
        path = tmp / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        if name.startswith("sales") and "sales:" not in (case.config or ""):  # a config naming its own sales keeps them
            args += ["--sales", str(path)]
        elif name.startswith("master"):
            args += ["--sku-master", str(path)]
    if not any(name.startswith("master") for name in case.files) and "--sku-master" not in case.args:
        args.append("--no-sku-master")
    if case.config is not None:
        (tmp / "cfg.yaml").write_text(case.config)
        args += ["--config", str(tmp / "cfg.yaml")]
    extra = [a.replace("{tmp}", str(tmp)) for a in case.args]
    if "--out" not in extra:
        args += ["--out", str(tmp / "out")]
    tracking = [] if "uri:" in (case.config or "") else ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    return args + extra + tracking


def _snapshot(root: Path) -> dict[str, str]:
    """Every published file's hash (the lock file a run takes and the raw inputs its pull hands on in `_pulled/` are
    not outputs: docs/outputs.md)."""
    files = (
        p for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".buffercast.lock" and p.relative_to(root).parts[0] != "_pulled"
    )
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _previous_outputs(out: Path) -> dict[str, str]:
    """A stand-in for a published run: files a failed run must leave exactly as they are."""
    part = out / "recommendations" / "as_of=2026-01-01"
    part.mkdir(parents=True)
    pl.DataFrame({"sku_id": ["a"], "safety_stock_units": [3.0]}).write_parquet(part / "part-0.parquet")
    (out / "manifests" / "as_of=2026-01-01").mkdir(parents=True)
    (out / "manifests" / "as_of=2026-01-01" / "manifest.json").write_text("{}")
    return _snapshot(out)


def _run_csv(tmp: Path, out: Path) -> list[str]:
    """`buffercast run` on tmp/sales.csv without a SKU master, into `out`."""
    return ["run", "--sales", str(tmp / "sales.csv"), "--no-sku-master", "--out", str(out), "--tracking-uri", f"sqlite:///{tmp}/m.db"]


def _error_line(result) -> str:
    output = result.output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("buffercast: error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_the_catalogue_has_at_least_40_cases():
    assert len(REFUSED) + len(REFUSED_IN_RUN) + len(QUARANTINED) + len(PARSED) + len(SPARSE) >= 40


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_before_any_server_with_one_line_and_outputs_untouched(name, tmp_path, monkeypatch):
    case = REFUSED[name]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    args = _materialise(tmp_path, case)
    out = Path(args[args.index("--out") + 1])
    before = _previous_outputs(out) if out.parent.is_dir() and not out.parent.is_file() and out.parent == tmp_path else None
    result = CliRunner().invoke(app, ["run", *args])
    line = _error_line(result)
    assert result.exit_code == 2, result.output
    for fragment in case.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    if case.secret:
        assert case.secret not in result.output
    if before is not None:
        assert _snapshot(out) == before


# ------------------------------------------------------------------------------------------------ refused in the run


def _zeros(tmp: Path) -> list[str]:
    path = tmp / "sales.csv"
    path.write_text("sku_id,date,quantity\n" + "".join(f"{s},2026-01-{d:02d},0\n" for s in "ab" for d in range(1, 29)))
    return ["--sales", str(path), "--no-sku-master"]


def _mostly_bad(tmp: Path) -> list[str]:
    path = tmp / "sales.csv"
    path.write_text("sku_id,date,quantity\n" + "".join(f"a,2026-01-{d:02d},{'x' if d % 3 else 1}\n" for d in range(1, 29)))
    return ["--sales", str(path), "--no-sku-master"]


def _bad_master(tmp: Path) -> list[str]:
    (tmp / "sales.csv").write_text(GOOD)
    (tmp / "master.csv").write_text("sku_id,unit_cost,lead_time_days\na,-1,7\nb,0,0\n")
    return ["--sales", str(tmp / "sales.csv"), "--sku-master", str(tmp / "master.csv")]


REFUSED_IN_RUN: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "every quantity zero": (_zeros, ("none of the 2 series", "positive sale", "nothing to plan", "input.sales_columns.quantity")),
    "two thirds of the rows unparseable": (_mostly_bad, ("sales.csv", "quantity_unparseable", "input.max_quarantine_share")),
    "every SKU-master row invalid": (_bad_master, ("master.csv", "unit_cost_positive")),
}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("name", list(REFUSED_IN_RUN))
def test_refused_by_the_run_with_one_line_and_outputs_untouched(name, tmp_path):
    make, expect = REFUSED_IN_RUN[name]
    out = tmp_path / "out"
    before = _previous_outputs(out)
    args = [*make(tmp_path), "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    result = CliRunner().invoke(app, ["run", *args])
    line = _error_line(result)
    assert result.exit_code == 2, result.output
    for fragment in expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert _snapshot(out) == before


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_second_run_into_a_locked_folder_fails_naming_the_holder(tmp_path):
    (tmp_path / "sales.csv").write_text(GOOD)
    out = tmp_path / "out"
    before = _previous_outputs(out)
    args = _run_csv(tmp_path, out)
    with output_lock(out):  # another run holds the folder
        result = CliRunner().invoke(app, args)
    line = _error_line(result)
    assert result.exit_code == 2 and "in use by another buffercast run" in line and f"pid {os.getpid()}" in line, line
    assert "output.lock_wait_seconds" in line
    assert _snapshot(out) == before


# --------------------------------------------------------------------------------------------------------- quarantined


@dataclass(frozen=True)
class Quarantined:
    sales: str  # CSV text
    checks: dict[str, int]  # check -> rows quarantined
    config: dict = field(default_factory=dict)
    master: str | None = None
    master_checks: dict[str, int] = field(default_factory=dict)


def _rows(*rows: str) -> str:
    return "sku_id,date,quantity\n" + "".join(f"{r}\n" for r in rows)


QUARANTINED = {
    "unparseable date": Quarantined(_rows("a,2026-01-01,1", "a,01.02.2026x,1"), {"date_unparseable": 1}),
    "impossible date": Quarantined(_rows("a,2026-01-01,1", "a,2026-02-30,1"), {"date_unparseable": 1}),
    "unparseable quantity": Quarantined(_rows("a,2026-01-01,1", "a,2026-01-02,abc"), {"quantity_unparseable": 1}),
    "decimal comma not configured": Quarantined(_rows("a,2026-01-01,1", 'a,2026-01-02,"1,5"'), {"quantity_unparseable": 1}),
    "negative quantity": Quarantined(_rows("a,2026-01-01,1", "a,2026-01-02,-3"), {"quantity_non_negative": 1}),
    "NaN and infinite quantities": Quarantined(
        _rows("a,2026-01-01,1", "a,2026-01-02,NaN", "a,2026-01-03,inf", "a,2026-01-04,-inf"), {"quantity_finite": 3}
    ),
    "huge quantity": Quarantined(_rows("a,2026-01-01,1", "a,2026-01-02,1e300", "a,2026-01-03,5000000000"), {"quantity_too_large": 2}),
    "quantity above a configured limit": Quarantined(
        _rows("a,2026-01-01,1", "a,2026-01-02,500"), {"quantity_too_large": 1}, {"max_quantity": 100}
    ),
    "missing quantity": Quarantined(_rows("a,2026-01-01,1", "a,2026-01-02,"), {"quantity_not_null": 1}),
    "date in 1900": Quarantined(_rows("a,2026-01-01,1", "a,1900-01-01,1"), {"date_too_early": 1}),
    "date before a configured earliest date": Quarantined(
        _rows("a,2026-01-01,1", "a,2019-12-31,1"), {"date_too_early": 1}, {"earliest_date": dt.date(2020, 1, 1)}
    ),
    "date in the future": Quarantined(_rows("a,2026-01-01,1", "a,2099-01-01,1"), {"date_not_in_future": 1}),
    "blank SKU id": Quarantined(_rows("a,2026-01-01,1", " ,2026-01-02,1"), {"sku_id_not_null": 1}),
    "SKU master: duplicate and inconsistent rows": Quarantined(
        GOOD,
        {},
        master="sku_id,unit_cost,lead_time_days\na,2.5,7\na,2.5,7\nb,1.0,14\nb,9.0,3\n",
        master_checks={"duplicate_sku_id": 2},
    ),
    "SKU master: impossible values": Quarantined(
        GOOD,
        {},
        master="sku_id,unit_cost,lead_time_days,critical\na,-1,7,yes\nb,1.0,0,no\nc,1.0,5,maybe\nd,abc,5,no\n",
        master_checks={"unit_cost_positive": 1, "lead_time_days_positive": 1, "critical_unparseable": 1, "unit_cost_unparseable": 1},
    ),
}


def _validated(tmp: Path, sales: str, config: dict, master: str | None = None):
    (tmp / "sales.csv").write_text(sales)
    cfg = load_config(None, {"input": config})
    raw = read_input(str(tmp / "sales.csv"), what="sales", separator=cfg.input.csv_separator)
    raw_master = None
    if master is not None:
        (tmp / "master.csv").write_text(master)
        raw_master = read_input(str(tmp / "master.csv"), what="SKU master")
    return validate_inputs(cfg, raw, raw_master, today=TODAY, limit_quarantine=False)


def _counts(q: pl.DataFrame) -> dict[str, int]:
    return dict(q.group_by("check").len().iter_rows())


@pytest.mark.parametrize("name", list(QUARANTINED))
def test_bad_rows_are_quarantined_with_their_check_and_nothing_is_lost(name, tmp_path):
    case = QUARANTINED[name]
    inputs = _validated(tmp_path, case.sales, case.config, case.master)
    assert _counts(inputs.sales.quarantine) == case.checks
    assert inputs.sales.rows_in == case.sales.count("\n") - 1 == inputs.sales.valid.height + inputs.sales.quarantine.height
    if case.master is not None:
        assert inputs.master is not None and _counts(inputs.master.quarantine) == case.master_checks
        assert inputs.master.rows_in == inputs.master.valid.height + inputs.master.quarantine.height
    for row in inputs.sales.quarantine.iter_rows(named=True):
        assert row["source_file"].endswith("sales.csv") and row["row_number"] >= 1 and row["raw_values"]


# --------------------------------------------------------------------------------------------------------------- parsed


@dataclass(frozen=True)
class Parsed:
    sales: str | bytes
    expect: list[tuple[str, dt.date, float]]  # (sku_id, date, quantity), in file order
    config: dict = field(default_factory=dict)


PARSED = {
    "UTF-8 byte-order mark": Parsed(b"\xef\xbb\xbfsku_id,date,quantity\na,2026-01-01,1\n", [("a", dt.date(2026, 1, 1), 1.0)]),
    "timestamps with a time of day": Parsed(
        _rows("a,2026-01-01 23:59:59,1", "a,2026-01-02T08:00,2", "a,2026-01-03 10:00:00.250,3"),
        [("a", dt.date(2026, 1, 1), 1.0), ("a", dt.date(2026, 1, 2), 2.0), ("a", dt.date(2026, 1, 3), 3.0)],
    ),
    "timestamps with offsets, dates in the configured zone": Parsed(
        _rows("a,2026-03-01T23:30:00-05:00,1", "a,2026-03-01T23:30:00Z,2", "a,2026-03-01 10:00:00+0900,3", "a,2026-03-01 23:30 +01:00,4"),
        [
            ("a", dt.date(2026, 3, 2), 1.0),
            ("a", dt.date(2026, 3, 2), 2.0),
            ("a", dt.date(2026, 3, 1), 3.0),
            ("a", dt.date(2026, 3, 1), 4.0),
        ],
        {"timezone": "Europe/Berlin"},
    ),
    "the same offsets read in UTC": Parsed(
        _rows("a,2026-03-01T23:30:00-05:00,1", "a,2026-03-01T23:30:00Z,2"),
        [("a", dt.date(2026, 3, 2), 1.0), ("a", dt.date(2026, 3, 1), 2.0)],
    ),
    "semicolons and decimal commas, configured": Parsed(
        "sku_id;date;quantity\na;2026-01-01;1,5\nb;2026-01-02;2\n",
        [("a", dt.date(2026, 1, 1), 1.5), ("b", dt.date(2026, 1, 2), 2.0)],
        {"csv_separator": ";", "decimal_comma": True},
    ),
    "odd SKU ids kept exactly": Parsed(
        _rows(
            "007,2026-01-01,1", "A/B,2026-01-01,1", "../../etc/passwd,2026-01-01,1", f"{'x' * 10_000},2026-01-01,1", '"a,b",2026-01-01,1'
        ),
        [(s, dt.date(2026, 1, 1), 1.0) for s in ("007", "A/B", "../../etc/passwd", "x" * 10_000, "a,b")],
    ),
    "order lines of one SKU and day kept for summing": Parsed(
        _rows("a,2026-01-01,1", "a,2026-01-01,2"), [("a", dt.date(2026, 1, 1), 1.0), ("a", dt.date(2026, 1, 1), 2.0)]
    ),
}


@pytest.mark.parametrize("name", list(PARSED))
def test_real_exports_are_read_not_quarantined(name, tmp_path):
    case = PARSED[name]
    path = tmp_path / "sales.csv"
    path.write_bytes(case.sales) if isinstance(case.sales, bytes) else path.write_text(case.sales)
    cfg = load_config(None, {"input": case.config})
    raw = read_input(str(path), what="sales", separator=cfg.input.csv_separator)
    inputs = validate_inputs(cfg, raw, None, today=TODAY)
    assert inputs.sales.quarantine.height == 0, inputs.sales.quarantine
    assert list(inputs.sales.valid.sort("_row_number").select("sku_id", "date", "quantity").iter_rows()) == case.expect


def test_a_timestamp_column_of_a_parquet_file_is_read_in_the_configured_zone(tmp_path):
    stamps = pl.Series([dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)])
    pl.DataFrame({"sku_id": ["a", "a"], "date": stamps, "quantity": [1.0, 2.0]}).write_parquet(tmp_path / "s.parquet")
    cfg = load_config(None, {"input": {"timezone": "Asia/Tokyo"}})
    inputs = validate_inputs(cfg, read_input(str(tmp_path / "s.parquet"), what="sales"), None, today=TODAY)
    assert inputs.sales.valid["date"].to_list() == [dt.date(2026, 3, 2), dt.date(2026, 3, 1)]


# --------------------------------------------------------------------------------------------------------------- sparse


def _sparse(rows: list[str]) -> str:
    return "sku_id,date,quantity\n" + "".join(f"{r}\n" for r in rows)


SPARSE = {
    "one row": _sparse(["a,2026-03-01,5"]),
    "one day, five SKUs": _sparse([f"s{i},2026-03-01,{i + 1}" for i in range(5)]),
    "one SKU, 200 days": _sparse([f"a,{dt.date(2026, 1, 1) + dt.timedelta(days=i)},{i % 3}" for i in range(200)]),
}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("name", list(SPARSE))
def test_sparse_histories_get_a_plan_with_reasons(name, tmp_path):
    (tmp_path / "sales.csv").write_text(SPARSE[name])
    out = tmp_path / "out"
    args = _run_csv(tmp_path, out)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    recs = read_table(out, "recommendations")
    skus = {line.split(",")[0] for line in SPARSE[name].splitlines()[1:]}
    assert set(recs["sku_id"]) == skus
    assert recs["reasons"].str.len_chars().min() > 20
    assert (recs["order_up_to_units"] >= recs["reorder_point_units"]).all()
