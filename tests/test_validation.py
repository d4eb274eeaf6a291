"""pipeline/contracts.py: input contracts, quarantine of bad rows, one-line errors for bad tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from configs.schema import SalesColumns, SkuMasterColumns
from flows.sources import read_table
from pipeline.contracts import QUARANTINE_COLUMNS, InputError, quarantine_summary, validate_sales, validate_sku_master

TODAY = dt.date(2024, 6, 30)
SALES_COLUMNS = ["sku_id", "location_id", "date", "quantity", "_source_file", "_row_number"]

BAD_SALES = """\
sku_id,date,quantity,line_id,location_id
A,2024-01-01,5,L1,S1
A,2024-01-01,3,L2,S1
B,2024-01-02,-2,L3,S1
A,2024-01-03,1,L1,S1
,2024-01-03,4,L4,S1
C,2024-13-45,2,L5,S1
C,2100-01-01,2,L6,S1
C,2024-01-05,abc,L7,S1
C,2024-01-06, 7 ,L8,
 D ,2024-01-07,0,L9,S2
"""


def _csv(tmp_path: Path, text: str, name: str = "sales.csv") -> pl.DataFrame:
    path = tmp_path / name
    path.write_text(text)
    return read_table(str(path), what="sales")


def _checks(q: pl.DataFrame) -> dict[int, str]:
    return dict(q.select("row_number", "check").iter_rows())


def _input_error(call, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_sales_rows_are_quarantined_with_their_check(tmp_path: Path) -> None:
    raw = _csv(tmp_path, BAD_SALES)
    result = validate_sales(raw, SalesColumns(), today=TODAY)
    assert _checks(result.quarantine) == {
        3: "quantity_non_negative",
        4: "duplicate_line_id",
        5: "sku_id_not_null",
        6: "date_unparseable",
        7: "date_not_in_future",
        8: "quantity_unparseable",
    }
    assert result.rows_in == raw.height == result.valid.height + result.quarantine.height == 10
    assert result.valid.columns == SALES_COLUMNS
    assert dict(result.valid.schema) == {
        "sku_id": pl.String,
        "location_id": pl.String,
        "date": pl.Date,
        "quantity": pl.Float64,
        "_source_file": pl.String,
        "_row_number": pl.Int64,
    }
    assert result.valid.select("_row_number", "sku_id", "location_id", "quantity").rows() == [
        (1, "A", "S1", 5.0),
        (2, "A", "S1", 3.0),  # an order line of the same SKU and day: kept
        (9, "C", None, 7.0),
        (10, "D", "S2", 0.0),  # stripped
    ]
    assert dict(result.quarantine.schema) == QUARANTINE_COLUMNS
    first = result.quarantine.row(0, named=True)
    assert first["source_file"] == str(tmp_path / "sales.csv")
    assert first["column"] == "quantity"
    assert first["sku_id"] == "B"
    assert json.loads(first["raw_values"]) == {"sku_id": "B", "date": "2024-01-02", "quantity": "-2", "line_id": "L3", "location_id": "S1"}
    assert quarantine_summary(result.quarantine) == (
        "6 rows quarantined: quantity_non_negative 1, duplicate_line_id 1, sku_id_not_null 1,"
        " date_unparseable 1, date_not_in_future 1, quantity_unparseable 1"
    )


def test_row_with_several_faults_appears_once_with_every_check(tmp_path: Path) -> None:
    raw = _csv(tmp_path, "sku_id,date,quantity\nA,2024-01-01,1\n ,2100-01-01,-4\nB,,nan\nC,2024-01-02,\nD,2024-01-02,-inf\n")
    q = validate_sales(raw, SalesColumns(), today=TODAY).quarantine
    assert q.height == 4
    assert q.select("row_number", "check", "column").rows() == [
        (2, "sku_id_not_null; date_not_in_future; quantity_non_negative", "sku_id; date; quantity"),
        (3, "date_not_null; quantity_finite", "date; quantity"),  # NaN is not finite, not "null"
        (4, "quantity_not_null", "quantity"),
        (5, "quantity_finite", "quantity"),  # -inf is not finite; that it is also negative adds nothing
    ]
    assert quarantine_summary(q.head(1)).startswith("1 row quarantined: ")


def test_missing_required_column_is_one_line_error_naming_it(tmp_path: Path) -> None:
    raw = _csv(tmp_path, "sku_id,date,qty\nA,2024-01-01,1\n", name="a.csv")
    message = _input_error(validate_sales, raw, SalesColumns(), today=TODAY)
    assert message == (
        f"sales file '{tmp_path / 'a.csv'}': missing column 'quantity' (input.sales_columns.quantity);"
        " found columns: sku_id, date, qty. Rename the column or set input.sales_columns.quantity in your config."
    )


def test_renamed_columns_and_date_format(tmp_path: Path) -> None:
    raw = _csv(tmp_path, "Item;Day;Units;Store\nA;31/01/2024;2;S1\nB;2024-01-31;3;S2\n".replace(";", ","))
    cols = SalesColumns(sku_id="Item", date="Day", quantity="Units", location_id="Store", line_id=None)
    result = validate_sales(raw, cols, today=TODAY, date_format="%d/%m/%Y")
    assert result.valid.columns == SALES_COLUMNS
    assert result.valid.select("sku_id", "location_id", "date", "quantity").rows() == [("A", "S1", dt.date(2024, 1, 31), 2.0)]
    assert result.quarantine.select("check", "column", "sku_id").rows() == [("date_unparseable", "Day", "B")]


def test_too_many_quarantined_rows_fail_the_run(tmp_path: Path) -> None:
    raw = _csv(tmp_path, BAD_SALES)
    message = _input_error(validate_sales, raw, SalesColumns(), today=TODAY, max_quarantine_share=0.5)
    assert message.startswith(f"sales file '{tmp_path / 'sales.csv'}': 6 of 10 rows (60.0%) failed validation")
    assert "quantity_non_negative 1, duplicate_line_id 1, sku_id_not_null 1, date_unparseable 1" in message
    assert "row 3 (quantity='-2'); row 4 (line_id='L1'); row 5 (sku_id=null)" in message
    assert message.endswith("Fix the file or raise input.max_quarantine_share in your config.")
    assert validate_sales(raw, SalesColumns(), today=TODAY, max_quarantine_share=0.6).quarantine.height == 6


def test_parquet_with_datetime_dates_and_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "sales.parquet"
    pl.DataFrame(
        {
            "sku_id": [101, 102, 103],
            "date": [dt.datetime(2024, 1, 1, 13, 5), dt.datetime(2024, 1, 2), dt.datetime(2099, 1, 1)],
            "quantity": [1, 2, 3],
        }
    ).write_parquet(path)
    result = validate_sales(read_table(str(path), what="sales"), SalesColumns(), today=TODAY)
    assert result.valid.select("sku_id", "date", "quantity").rows() == [
        ("101", dt.date(2024, 1, 1), 1.0),
        ("102", dt.date(2024, 1, 2), 2.0),
    ]
    assert result.valid["location_id"].null_count() == 2  # no such column: all null
    assert _checks(result.quarantine) == {3: "date_not_in_future"}
    assert json.loads(result.quarantine["raw_values"][0]) == {"sku_id": "103", "date": "2099-01-01 00:00:00.000000", "quantity": "3"}


def test_a_date_column_of_numbers_is_a_table_error() -> None:
    raw = pl.DataFrame({"sku_id": ["A"], "date": [20240101], "quantity": [1.0]})
    message = _input_error(validate_sales, raw, SalesColumns(), today=TODAY)
    assert message.startswith("sales: column 'date' (input.sales_columns.date) holds Int64 values, not dates.")


def test_order_lines_are_kept_and_only_repeated_line_ids_dropped(tmp_path: Path) -> None:
    lines = [
        "sku_id,date,quantity,line_id",
        "A,2024-01-01,1,1",
        "A,2024-01-01,2,2",
        "A,2024-01-01,3,3",
        "A,2024-01-01,4,",
        "A,2024-01-01,5,",
    ]
    raw = _csv(tmp_path, "\n".join(lines) + "\n")
    result = validate_sales(raw, SalesColumns(), today=TODAY)
    assert result.quarantine.is_empty()
    assert result.valid["quantity"].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]  # rows without a line_id are never duplicates
    again = validate_sales(pl.concat([raw, raw]), SalesColumns(), today=TODAY)
    assert again.valid.height == 7
    assert again.quarantine["check"].to_list() == ["duplicate_line_id"] * 3


def test_empty_sales_input(tmp_path: Path) -> None:
    # (reading a header-only file is refused before validation: tests/test_bad_inputs.py)
    empty = pl.DataFrame(schema={"sku_id": pl.String, "date": pl.String, "quantity": pl.String})
    result = validate_sales(empty, SalesColumns(), today=TODAY, max_quarantine_share=0.0)
    assert (result.rows_in, result.valid.height, result.quarantine.height) == (0, 0, 0)
    assert quarantine_summary(result.quarantine) == "0 rows quarantined"


MASTER = """\
sku_id,unit_cost,lead_time_days,lead_time_std_days,critical,pack_size,supplier_id
A,2.5,7,1,yes,12,S1
B,0,7,,No,,S1
C,3,-1,0,TRUE,1,S2
A,9,9,0,n,,S9
D,1,5,,Y,,
E,1,5,-0.5,0,0.5,S3
F,1,5,1,maybe,1,S3
G,1,5,1,false,1,
"""


def test_sku_master_checks_and_parsing(tmp_path: Path) -> None:
    raw = _csv(tmp_path, MASTER, name="master.csv")
    result = validate_sku_master(raw, SkuMasterColumns())
    assert _checks(result.quarantine) == {
        2: "unit_cost_positive",
        3: "lead_time_days_positive",
        4: "duplicate_sku_id",
        6: "lead_time_std_days_non_negative; pack_size_at_least_one",
        7: "critical_unparseable",
    }
    assert result.rows_in == result.valid.height + result.quarantine.height
    assert result.valid.drop("_source_file").rows() == [
        ("A", 2.5, 7.0, 1.0, True, 12.0, "S1", 1),
        ("D", 1.0, 5.0, None, True, None, None, 5),
        ("G", 1.0, 5.0, 1.0, False, 1.0, None, 8),
    ]
    assert dict(result.valid.schema) == {
        "sku_id": pl.String,
        "unit_cost": pl.Float64,
        "lead_time_days": pl.Float64,
        "lead_time_std_days": pl.Float64,
        "critical": pl.Boolean,
        "pack_size": pl.Float64,
        "supplier_id": pl.String,
        "_source_file": pl.String,
        "_row_number": pl.Int64,
    }
    assert dict(result.quarantine.schema) == QUARANTINE_COLUMNS


def test_sku_master_without_optional_columns(tmp_path: Path) -> None:
    raw = _csv(tmp_path, "code,cost,lt\nA,1.5,3\nB,x,4\n", name="master.csv")
    cols = SkuMasterColumns(sku_id="code", unit_cost="cost", lead_time_days="lt")
    result = validate_sku_master(raw, cols)
    assert result.valid.drop("_source_file").rows() == [("A", 1.5, 3.0, None, False, None, None, 1)]
    assert result.quarantine.select("check", "column").rows() == [("unit_cost_unparseable", "cost")]


def test_sku_master_missing_lead_time_is_a_table_error(tmp_path: Path) -> None:
    raw = _csv(tmp_path, "sku_id,unit_cost\nA,1\n", name="master.csv")
    message = _input_error(validate_sku_master, raw, SkuMasterColumns())
    assert message.startswith(f"SKU master file '{tmp_path / 'master.csv'}': missing column 'lead_time_days'")
    assert "input.sku_master_columns.lead_time_days" in message


def test_sku_master_with_too_many_bad_rows_fails_the_run(tmp_path: Path) -> None:
    raw = _csv(tmp_path, MASTER, name="master.csv")  # 5 of 8 rows are bad
    message = _input_error(validate_sku_master, raw, SkuMasterColumns(), max_quarantine_share=0.5)
    assert "master.csv" in message and "unit_cost_positive 1" in message and "input.max_quarantine_share" in message
    assert validate_sku_master(raw, SkuMasterColumns(), max_quarantine_share=0.7).quarantine.height == 5


@pytest.mark.parametrize("chunk_rows", [1, 3, 4, 9])
def test_in_chunks_the_sales_validate_as_in_one_piece(tmp_path: Path, chunk_rows: int) -> None:
    """A chunk's valid rows and quarantine are the whole input's rows there: a line id repeated in a later chunk is a
    duplicate there, row numbers of an in-memory frame count from the input's first row, messages name the file."""
    from pipeline.contracts import SalesRules, repeated_lines, validate_sales_chunks

    raw = _csv(tmp_path, BAD_SALES)
    whole = validate_sales(raw, SalesColumns(), today=TODAY)
    for frame in (raw, raw.drop("_source_file", "_row_number")):  # a file's rows, and an in-memory frame's
        valid: list[pl.DataFrame] = []
        rules = SalesRules(TODAY)
        quarantine, rows_in = validate_sales_chunks(frame.lazy(), SalesColumns(), valid.append, chunk_rows=chunk_rows, rules=rules)
        one = validate_sales(frame, SalesColumns(), today=TODAY)
        assert len(valid) == -(-raw.height // chunk_rows)
        assert pl.concat(valid).equals(one.valid) and quarantine.equals(one.quarantine) and rows_in == 10
    assert one.quarantine["row_number"].to_list() == whole.quarantine["row_number"].to_list()  # 3, 4, ... either way
    rules = SalesRules(TODAY, max_quarantine_share=0.5)
    message = _input_error(validate_sales_chunks, raw.lazy(), SalesColumns(), [].append, chunk_rows=chunk_rows, rules=rules)
    assert message.startswith(f"sales file '{tmp_path / 'sales.csv'}': 6 of 10 rows (60.0%) failed validation")
    # The repeats are found bucket by bucket of hashed ids, whatever the number of buckets.
    lines = pl.DataFrame({"line": ["a", "b", None, "a", "c", "b", "a", None, "d", "c"]}).lazy()
    for per_bucket in (1, 3, 100):
        assert repeated_lines(lines, pl.col("line"), 10, lines_per_bucket=per_bucket).to_list() == [3, 5, 6, 9]


def test_an_empty_input_in_chunks_is_one_empty_chunk() -> None:
    from pipeline.contracts import SalesRules, validate_sales_chunks

    raw = pl.DataFrame(schema={"sku_id": pl.String, "date": pl.String, "quantity": pl.String})
    valid: list[pl.DataFrame] = []
    quarantine, rows_in = validate_sales_chunks(raw.lazy(), SalesColumns(), valid.append, chunk_rows=5, rules=SalesRules(TODAY))
    assert rows_in == 0 and quarantine.is_empty() and [v.height for v in valid] == [0]
    assert valid[0].columns == SALES_COLUMNS
