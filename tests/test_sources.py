"""flows/sources.py: reading files, folders and fsspec URLs, and one-line errors."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import fsspec
import polars as pl
import pytest

from configs.schema import InputConfig
from flows.sources import read_sales, read_sku_master, read_table
from pipeline.contracts import ROW_NUMBER, SOURCE_FILE, InputError

SALES_CSV = "sku_id,date,quantity\nA,2024-01-01,5\nA,2024-01-02,abc\nB,2024-01-02,007\n"


def _error(location: str, what: str = "sales") -> str:
    with pytest.raises(InputError) as info:
        read_table(location, what=what)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_csv_file_reads_every_column_as_text_with_provenance(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text(SALES_CSV)
    table = read_table(str(path), what="sales")
    assert table.columns == ["sku_id", "date", "quantity", SOURCE_FILE, ROW_NUMBER]
    assert table.schema["date"] == pl.String
    assert table["quantity"].to_list() == ["5", "abc", "007"]  # unparseable and leading zeros survive
    assert table[SOURCE_FILE].unique().to_list() == [str(path)]
    assert table[ROW_NUMBER].to_list() == [1, 2, 3]


def test_gzipped_csv_and_txt_are_csv(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "sales.csv.gz").write_bytes(gzip.compress(SALES_CSV.encode()))
    (tmp_path / "sales.txt").write_text(SALES_CSV)
    assert read_table(str(tmp_path / "sales.csv.gz"), what="sales").height == 3
    assert read_table(str(tmp_path / "sales.txt"), what="sales").height == 3


def test_parquet_file_keeps_its_types(tmp_path: Path) -> None:
    path = tmp_path / "sales.pq"
    pl.DataFrame({"sku_id": ["A", "B"], "date": [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], "quantity": [1.5, 2.0]}).write_parquet(path)
    table = read_table(str(path), what="sales")
    assert table.schema["date"] == pl.Date
    assert table.schema["quantity"] == pl.Float64
    assert table[ROW_NUMBER].to_list() == [1, 2]
    assert table[SOURCE_FILE].to_list() == [str(path)] * 2


def test_folder_reads_every_file_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "sales"
    (folder / "2024").mkdir(parents=True)
    (folder / "b.csv").write_text("sku_id,date,quantity\nB,2024-02-01,1\n")
    (folder / "a.csv").write_text("date,sku_id,quantity\n2024-01-01,A,1\n2024-01-02,A,2\n")  # other column order
    (folder / "2024" / "c.csv").write_text("sku_id,date,quantity\nC,2024-03-01,3\n")
    (folder / ".hidden.csv").write_text("garbage")
    (folder / "notes.md").write_text("not data")
    table = read_table(str(folder), what="sales")
    assert table.columns == ["sku_id", "date", "quantity", SOURCE_FILE, ROW_NUMBER]  # the first file's order
    assert table.select(SOURCE_FILE, ROW_NUMBER, "sku_id").rows() == [
        (f"{folder}/2024/c.csv", 1, "C"),
        (f"{folder}/a.csv", 1, "A"),
        (f"{folder}/a.csv", 2, "A"),
        (f"{folder}/b.csv", 1, "B"),
    ]


def test_folder_of_parquet_files(tmp_path: Path) -> None:
    for i in range(3):
        pl.DataFrame({"sku_id": [f"S{i}"] * 2, "quantity": [1, 2]}).write_parquet(tmp_path / f"part-{i}.parquet")
    table = read_table(str(tmp_path), what="sales")
    assert table.height == 6
    assert table[ROW_NUMBER].to_list() == [1, 2] * 3


@pytest.fixture
def memory_root() -> str:
    root = f"memory://buffercast-tests/{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_memory_url_file_and_folder(memory_root: str) -> None:
    with fsspec.open(f"{memory_root}/sales/one.csv", "w") as f:
        f.write(SALES_CSV)
    with fsspec.open(f"{memory_root}/sales/two.csv", "w") as f:
        f.write("sku_id,date,quantity\nC,2024-01-03,1\n")
    single = read_table(f"{memory_root}/sales/one.csv", what="sales")
    assert single.height == 3
    assert single[SOURCE_FILE][0] == f"{memory_root}/sales/one.csv"
    folder = read_table(f"{memory_root}/sales/", what="sales")
    assert folder.group_by(SOURCE_FILE, maintain_order=True).len().rows() == [
        (f"{memory_root}/sales/one.csv", 3),
        (f"{memory_root}/sales/two.csv", 1),
    ]


def test_read_sales_and_sku_master_follow_the_config(tmp_path: Path) -> None:
    (tmp_path / "sales.csv").write_text(SALES_CSV)
    (tmp_path / "master.csv").write_text("sku_id,unit_cost,lead_time_days\nA,1,7\n")
    cfg = InputConfig(sales=str(tmp_path / "sales.csv"), sku_master=str(tmp_path / "master.csv"))
    assert read_sales(cfg).height == 3
    master = read_sku_master(cfg)
    assert master is not None
    assert master.height == 1
    assert read_sku_master(cfg.model_copy(update={"sku_master": None})) is None


def test_missing_path_names_file_and_config_key(tmp_path: Path) -> None:
    message = _error(str(tmp_path / "nope.csv"))
    assert message == f"sales file '{tmp_path / 'nope.csv'}' not found (input.sales in the config)"
    assert "input.sku_master" in _error("memory://buffercast-tests/none.parquet", what="SKU master")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("no data here")
    assert _error(str(tmp_path)).startswith(f"sales folder '{tmp_path}' holds no .parquet or .csv file")


def test_folder_mixing_formats_or_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("sku_id,date,quantity\nA,2024-01-01,1\n")
    (tmp_path / "b.csv").write_text("sku_id,date\nA,2024-01-01\n")
    message = _error(str(tmp_path))
    assert f"'{tmp_path}/b.csv'" in message
    assert "missing: quantity" in message
    pl.DataFrame({"sku_id": ["A"]}).write_parquet(tmp_path / "c.parquet")
    assert "mixes Parquet and CSV" in _error(str(tmp_path))


def test_garbage_parquet_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "sales.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    message = _error(str(path))
    assert message.startswith(f"sales file '{path}' could not be read as Parquet: ")


def test_unreadable_csv_and_unknown_extension(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("sku_id,date\nA,2024-01-01,5,extra\n")
    assert _error(str(ragged)).startswith(f"sales file '{ragged}' could not be read as CSV: ")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty: export it again" in _error(str(empty))
    sheet = tmp_path / "sales.xlsx"
    sheet.write_bytes(b"PK")
    assert "unknown extension" in _error(str(sheet))


def test_one_local_file_is_scanned_as_read_sales_reads_it(tmp_path: Path) -> None:
    """The pull streams one local Parquet or CSV file (`scan_sales`): the same rows, columns and provenance as the
    whole read; anything else (a folder, a gzipped CSV, a URL) is read whole."""
    from flows.sources import scan_sales

    frame = pl.DataFrame({"sku_id": ["A", "B", "A"], "date": [dt.date(2024, 1, d) for d in (1, 2, 3)], "quantity": [1.0, 2.5, None]})
    frame.write_parquet(tmp_path / "s.parquet")
    (tmp_path / "s.csv").write_text("sku_id;date;quantity\nA;2024-01-01;1\nB;2024-01-02; 2,5 \n")
    for name, sep in (("s.parquet", ","), ("s.csv", ";")):
        cfg = InputConfig(sales=str(tmp_path / name), csv_separator=sep)
        scanned = scan_sales(cfg)
        assert scanned is not None and scanned.collect().equals(read_sales(cfg)), name
    folder = tmp_path / "folder"
    folder.mkdir()
    frame.write_parquet(folder / "a.parquet")
    (tmp_path / "s.csv.gz").write_bytes(b"")
    for location in (str(folder), str(tmp_path / "s.csv.gz"), "memory://x/s.parquet", "postgresql://u@127.0.0.1/db"):
        assert scan_sales(InputConfig(sales=location)) is None, location


def test_a_scanned_file_that_breaks_past_its_first_rows_is_one_line_error(tmp_path: Path) -> None:
    """The first rows are read as the whole read reads them (the same errors); a fault further down fails the stream,
    and the pull says which file could not be read."""
    from flows.sources import scan_sales, unreadable

    missing = InputConfig(sales=str(tmp_path / "none.csv"))
    assert scan_sales(missing) is None  # not there: read_sales names it
    empty = tmp_path / "empty.csv"
    empty.write_text("sku_id,date,quantity\n")
    with pytest.raises(InputError, match="has a header but no rows"):
        scan_sales(InputConfig(sales=str(empty)))
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"sku_id,date,quantity\n" + b"A,2024-01-01,1\n" * 5_000 + b"B,2024-01-02,\xff\xfe\n")
    cfg = InputConfig(sales=str(broken))
    scanned = scan_sales(cfg)
    assert scanned is not None
    with pytest.raises(pl.exceptions.PolarsError) as info:
        scanned.sink_parquet(tmp_path / "out.parquet")
    message = str(unreadable(cfg, info.value))
    assert message.startswith(f"sales file '{broken}' could not be read as CSV: ") and "\n" not in message
