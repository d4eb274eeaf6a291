"""PostgreSQL as a source and as a downstream reader, against a real PostgreSQL 15 started by the tests.

- The small catalogue loaded into PostgreSQL (dates as `timestamp with time zone`, quantities and costs as `numeric`,
  SKU ids as text) gives the same published tables as the same data from Parquet, byte for byte.
- `$1` in a query is bound to the as-of date, never formatted into the SQL.
- A wrong password and a missing table: one line, exit 2, the password never shown; an unreachable host: retried by
  the pull task, then one line naming the source.
- `recommendations` loaded into PostgreSQL (as an ERP staging table receives it) reads back equal.
- Incremental pulls through `input.cache_folder` (flows/sales_cache.py), the history arriving a week at a time with
  late, corrected and deleted rows: each pull fetches the new rows plus the correction window only, and the pulled
  table, the cache files and the published tables equal a full refresh's; a pull cut short is repeated, a changed
  column type or time zone rebuilds the cache, a query that ignores the window is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.publish import read_table
from tests.conftest import END, free_port, table_hashes

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


def test_a_run_from_postgresql_publishes_the_same_tables_as_from_parquet(loaded, small_catalogue, tmp_path):
    from_db, from_files = tmp_path / "db", tmp_path / "files"
    for root in (from_db, from_files):
        root.mkdir()
    db = CliRunner().invoke(app, _args(from_db, loaded["url"], loaded["url"]))
    assert db.exit_code == 0, db.output
    files = CliRunner().invoke(app, _args(from_files, str(small_catalogue["sales"]), str(small_catalogue["sku_master"])))
    assert files.exit_code == 0, files.output
    assert table_hashes(from_db / "out", skip=("quarantine",)) == table_hashes(from_files / "out", skip=("quarantine",))
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


# Incremental pulls (flows/sales_cache.py): the catalogue arrives a week at a time, with late, corrected and deleted rows.

WEEK_ENDS = [END - dt.timedelta(days=14), END - dt.timedelta(days=7), END]


def _arrive(url: str, table: str, week: int) -> None:
    """The database as it is at the end of week `week` (0, 1, 2): week 0 creates the table with the history up to
    WEEK_ENDS[0]; each later week adds its own days and late, corrected and deleted rows within the correction window."""
    end = WEEK_ENDS[week]
    if week == 0:
        _execute(
            url, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} AS SELECT * FROM sales WHERE date < '{end + dt.timedelta(days=1)}'"
        )
        return
    start, back = WEEK_ENDS[week - 1] + dt.timedelta(days=1), WEEK_ENDS[week - 1] - dt.timedelta(days=4)
    _execute(
        url,
        f"INSERT INTO {table} SELECT * FROM sales WHERE date >= '{start}' AND date < '{end + dt.timedelta(days=1)}'",
        # a late order line, dated in the last week, arriving only now
        f"INSERT INTO {table} SELECT sku_id, date, 7.5 FROM sales WHERE date = '{back}' ORDER BY sku_id LIMIT 2",
        # a corrected quantity and a deleted row, both within the window
        f"UPDATE {table} SET quantity = quantity + 3 WHERE date = '{back - dt.timedelta(days=1)}' AND sku_id IN "
        f"(SELECT sku_id FROM {table} ORDER BY sku_id LIMIT 1)",
        f"DELETE FROM {table} WHERE date = '{back - dt.timedelta(days=2)}' AND sku_id IN "
        f"(SELECT sku_id FROM {table} ORDER BY sku_id DESC LIMIT 1)",
    )


def _count(url: str, sql: str) -> int:
    with _connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


def _cache_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def _input_config(url: str, table: str, cache: Path, **extra):
    from configs.schema import load_config

    given = {"sales": url, "sku_master": None, "sales_table": table, "cache_folder": str(cache), "correction_days": 7, **extra}
    return load_config(None, {"input": given}).input


def test_incremental_pulls_fetch_the_window_only_and_equal_a_full_refresh(loaded, tmp_path):
    from flows.sales_cache import pull_sales, read_state

    url, table, cache = loaded["url"], "sales_pulled", tmp_path / "cache"
    _arrive(url, table, 0)
    first = pull_sales(_input_config(url, table, cache), WEEK_ENDS[0])
    assert (first.fetched, first.cached) == (_count(url, f"SELECT count(*) FROM {table}"), 0)
    assert "rebuilt (no cache yet)" in first.note
    assert read_state(cache)["watermark"] == WEEK_ENDS[0].isoformat()
    assert sorted(p.name for p in cache.iterdir() if p.is_dir())[-1] == f"month={WEEK_ENDS[0]:%Y-%m}"
    for week in (1, 2):
        _arrive(url, table, week)
        since = WEEK_ENDS[week - 1] - dt.timedelta(days=7)
        pulled = pull_sales(_input_config(url, table, cache), WEEK_ENDS[week])
        total = _count(url, f"SELECT count(*) FROM {table}")
        assert pulled.fetched == _count(url, f"SELECT count(*) FROM {table} WHERE date >= '{since}'")  # new + the window
        assert pulled.fetched + pulled.cached == total == pulled.raw.height
        assert f"dated {since} or later" in pulled.note
        full = pull_sales(_input_config(url, table, tmp_path / f"full{week}", full_refresh=True), WEEK_ENDS[week])
        assert (full.fetched, full.cached) == (total, 0)
        assert pulled.raw.equals(full.raw), f"week {week}: the incremental pull differs from a full refresh"
        assert _cache_files(cache) == _cache_files(tmp_path / f"full{week}")


def test_a_pull_cut_short_is_repeated_and_a_changed_column_type_rebuilds_the_cache(loaded, tmp_path, monkeypatch):
    import flows.sales_cache as sales_cache

    url, table, cache = loaded["url"], "sales_cut_short", tmp_path / "cache"
    _arrive(url, table, 0)
    sales_cache.pull_sales(_input_config(url, table, cache), WEEK_ENDS[0])
    _arrive(url, table, 1)
    with monkeypatch.context() as patch:  # killed after the months were written, before the state: the old watermark stays
        patch.setattr(sales_cache, "_write_state", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            sales_cache.pull_sales(_input_config(url, table, cache), WEEK_ENDS[1])
    assert sales_cache.read_state(cache)["watermark"] == WEEK_ENDS[0].isoformat()
    again = sales_cache.pull_sales(_input_config(url, table, cache), WEEK_ENDS[1])
    full = sales_cache.pull_sales(_input_config(url, table, tmp_path / "full", full_refresh=True), WEEK_ENDS[1])
    assert again.raw.equals(full.raw) and again.cached > 0

    _execute(url, f"ALTER TABLE {table} ALTER COLUMN quantity TYPE double precision")
    changed = sales_cache.pull_sales(_input_config(url, table, cache), WEEK_ENDS[1])
    assert "rebuilt (the columns' SQL types changed)" in changed.note and changed.cached == 0
    assert changed.fetched == _count(url, f"SELECT count(*) FROM {table}")
    moved = sales_cache.pull_sales(_input_config(url, table, cache, timezone="Asia/Tokyo"), WEEK_ENDS[1])
    assert "rebuilt (pulled with another timezone)" in moved.note


def test_a_query_that_ignores_the_window_is_refused(loaded, tmp_path):
    from configs.schema import ConfigError, load_config
    from flows.sales_cache import pull_sales
    from pipeline.raw import InputError

    url, cache = loaded["url"], tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"must keep the rows dated on or after \$2"):
        load_config(None, {"input": {"sales": url, "sku_master": None, "cache_folder": str(cache), "sales_query": "SELECT * FROM sales"}})
    with pytest.raises(ConfigError, match=r"input\.cache_folder keeps what is pulled from a database"):
        load_config(None, {"input": {"cache_folder": str(cache)}})
    sloppy = "SELECT * FROM sales WHERE $2::date IS NOT NULL"  # binds $2 but returns the whole history
    pull_sales(_input_config(url, "sales", cache, sales_query=sloppy), END)  # the first pull fetches everything anyway
    with pytest.raises(InputError, match=r"rows dated before .* or undated, when asked for the rows dated on or after \$2"):
        pull_sales(_input_config(url, "sales", cache, sales_query=sloppy), END)


def test_three_weekly_runs_from_a_cache_publish_what_full_refreshes_do(loaded, tmp_path):
    """`buffercast run` a week apart against a database that grows, with late, corrected and deleted rows: the
    manifests count the rows fetched (new + the correction window) and cached; after the third week the tables and the
    cache equal those of a run that fetched everything (--full-refresh). (Each week's pull against a full refresh:
    the test above.)"""
    import json

    url, table = loaded["url"], "sales_weekly"
    config = tmp_path / "weekly.yaml"
    config.write_text(f"input:\n  sales_table: {table}\n  cache_folder: {tmp_path / 'cache'}\n  correction_days: 7\n")
    for week, end in enumerate(WEEK_ENDS):
        _arrive(url, table, week)
        runs = {}
        kinds = (("incremental", []), ("full", ["--full-refresh"])) if week == 2 else (("incremental", []),)
        for kind, extra in kinds:
            folder = tmp_path / f"{kind}{week}"
            folder.mkdir()
            cfg = config if kind == "incremental" else folder / "full.yaml"
            if kind == "full":
                cfg.write_text(f"input:\n  sales_table: {table}\n  cache_folder: {folder / 'cache'}\n")
            result = CliRunner().invoke(app, [*_args(folder, url, None, "--config", str(cfg), "--as-of", str(end)), *extra])
            assert result.exit_code == 0, result.output
            runs[kind] = json.loads(next((folder / "out").rglob("manifest.json")).read_text())["input_rows"]
            assert loaded["password"] not in result.output
            assert not any(loaded["password"] in f.read_bytes().decode("latin-1") for f in folder.rglob("*") if f.is_file())
        total = _count(url, f"SELECT count(*) FROM {table}")
        since = WEEK_ENDS[week - 1] - dt.timedelta(days=7)
        fetched = total if week == 0 else _count(url, f"SELECT count(*) FROM {table} WHERE date >= '{since}'")
        assert runs["incremental"]["sales_fetched"] == fetched < (total if week else total + 1)
        assert runs["incremental"]["sales_cached"] == total - fetched == runs["incremental"]["sales_in"] - fetched
    incremental, full = (table_hashes(tmp_path / run / "out", skip=("quarantine",)) for run in ("incremental2", "full2"))
    assert incremental == full
    assert _cache_files(tmp_path / "cache") == _cache_files(tmp_path / "full2" / "cache")
    assert runs["full"]["sales_fetched"] == runs["full"]["sales_in"] == runs["incremental"]["sales_in"]
    assert runs["full"]["sales_cached"] == 0
