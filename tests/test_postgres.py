"""PostgreSQL as a source and as a downstream reader, against a real PostgreSQL 15 started by the tests.

- The small catalogue loaded into PostgreSQL (dates as `timestamp with time zone`, quantities and costs as `numeric`,
  SKU ids as text) gives the same published tables as the same data from Parquet, byte for byte.
- `$1` in a query is bound to the as-of date, never formatted into the SQL.
- A wrong password and a missing table: one line, exit 2, the password never shown; an unreachable host: retried by
  the pull task, then one line naming the source.
- `recommendations` loaded into PostgreSQL (as an ERP staging table receives it) reads back equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import read_table
from tests.conftest import END, free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _connect(url: str):
    from adbc_driver_postgresql import dbapi

    from configs.secrets import resolve

    return dbapi.connect(resolve(url))


def _execute(url: str, *statements: str) -> None:
    with _connect(url) as connection:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        connection.commit()


@pytest.fixture(scope="module")
def loaded(postgres_server, small_catalogue):
    """The small catalogue in PostgreSQL with the types a real schema has."""
    url = postgres_server["url"]
    sales = pl.read_parquet(small_catalogue["sales"])
    master = pl.read_parquet(small_catalogue["sku_master"])
    with _connect(url) as connection:
        with connection.cursor() as cursor:
            cursor.adbc_ingest("sales", sales.to_arrow(), mode="replace")
            cursor.adbc_ingest("sku_master", master.to_arrow(), mode="replace")
        connection.commit()
    _execute(
        url,
        "ALTER TABLE sales ALTER COLUMN date TYPE timestamp with time zone USING date::timestamp AT TIME ZONE 'UTC'",
        "ALTER TABLE sales ALTER COLUMN quantity TYPE numeric(14, 3)",
        "ALTER TABLE sku_master ALTER COLUMN unit_cost TYPE numeric(12, 4)",
    )
    return {"url": url, "password": postgres_server["password"], "sales_rows": sales.height}


def _args(tmp: Path, sales: str, master: str | None, *extra: str) -> list[str]:
    return [
        "run", "--sales", sales, *(["--sku-master", master] if master else ["--no-sku-master"]),
        "--out", str(tmp / "out"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", *extra,
    ]  # fmt: skip


def _tables(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
        if not p.relative_to(out).parts[0].startswith(("_", ".", "quarantine"))
    }


def test_a_run_from_postgresql_publishes_the_same_tables_as_from_parquet(loaded, small_catalogue, tmp_path):
    from_db, from_files = tmp_path / "db", tmp_path / "files"
    for root in (from_db, from_files):
        root.mkdir()
    db = CliRunner().invoke(app, _args(from_db, loaded["url"], loaded["url"]))
    assert db.exit_code == 0, db.output
    files = CliRunner().invoke(app, _args(from_files, str(small_catalogue["sales"]), str(small_catalogue["sku_master"])))
    assert files.exit_code == 0, files.output
    assert _tables(from_db / "out") == _tables(from_files / "out")
    assert f"{loaded['sales_rows']} read, {loaded['sales_rows']} used, 0 quarantined" in db.output
    assert loaded["password"] not in db.output
    assert not any(loaded["password"] in p.read_bytes().decode("latin-1") for p in (from_db / "out").rglob("*") if p.is_file())


def test_the_as_of_date_is_a_bound_parameter(loaded, tmp_path):
    cut = END.replace(day=1)
    config = tmp_path / "db.yaml"
    config.write_text(f'input:\n  sales_query: "SELECT * FROM sales WHERE date < $1"\nas_of: {cut}\n')
    result = CliRunner().invoke(app, _args(tmp_path, loaded["url"], None, "--config", str(config)))
    assert result.exit_code == 0, result.output
    recs = read_table(tmp_path / "out", "recommendations")
    assert recs["as_of"].unique().to_list() == [cut]
    assert "0 after the as-of date" in result.output  # the query returned none: $1 was bound to the as-of


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("wrong password", ("sales database", "authentication failed", "input.sales")),
        ("missing table", ("sales query on", 'relation "no_such_table" does not exist', "input.sales_query / input.sales_table")),
        ("a column of the wrong SQL type", ("column 'date' (input.sales_columns.date) is of SQL type bool", "date::date")),
    ],
)
def test_configuration_errors_are_one_line_exit_2_without_the_password(loaded, tmp_path, monkeypatch, case, expect):
    url, extra = loaded["url"], []
    if case == "wrong password":
        monkeypatch.setenv("BUFFERCAST_TEST_PGPASSWORD", "not-the-password")
    else:
        query = (
            "sales_table: no_such_table" if case == "missing table" else 'sales_query: "SELECT sku_id, true AS date, quantity FROM sales"'
        )
        (tmp_path / "c.yaml").write_text(f"input:\n  {query}\n")
        extra = ["--config", str(tmp_path / "c.yaml")]
    result = CliRunner().invoke(app, _args(tmp_path, url, None, *extra))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("buffercast: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in expect:
        assert fragment in lines[0], lines[0]
    assert loaded["password"] not in result.output and "not-the-password" not in result.output


def test_an_unreachable_database_is_retried_then_named(loaded, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import TaskRunSort

    dead = loaded["url"].replace(loaded["url"].rsplit(":", 1)[1].split("/")[0], str(free_port()))
    result = CliRunner().invoke(app, _args(tmp_path, dead, None))
    assert result.exit_code == 1, result.output
    line = [x for x in result.output.splitlines() if x.startswith("buffercast: error:")][-1]
    assert "sales database" in line and "could not be reached" in line and "Connection refused" in line, line
    assert loaded["password"] not in result.output
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=50) if r.name.startswith("pull")]
    assert runs[0].run_count == 3, runs[0]  # the pull task's two retries, then the failure


def test_recommendations_load_into_postgresql_and_read_back_equal(loaded, small_catalogue, make_config, tmp_path):
    from flows.plan import plan_buffers

    cfg = make_config(small_catalogue["sales"], small_catalogue["sku_master"])
    plan_buffers(cfg)
    recs = read_table(cfg.output.folder, "recommendations", END)
    with _connect(loaded["url"]) as connection:
        with connection.cursor() as cursor:
            cursor.adbc_ingest("erp_staging_recommendations", recs.to_arrow(), mode="replace")
        connection.commit()
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM erp_staging_recommendations ORDER BY sku_id")
            back = pl.from_arrow(cursor.fetch_arrow_table())
    assert back.columns == recs.columns
    assert back.equals(recs.sort("sku_id")), "the table read back from PostgreSQL differs"
