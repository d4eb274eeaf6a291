"""pandera.polars contracts of buffercast's tables, and validation of the inputs with quarantine.

Inputs are parsed with polars first (a value that is given but does not parse is a row
fault, never a crash), then the parsed frame is validated by a pandera schema with
`lazy=True`. Every failing row goes to a quarantine table, once, with all its failed checks;
the kept rows are validated again and must pass. Problems with the table itself (a missing
column, a column of the wrong kind) are raised as one-line `InputError`s.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.errors import SchemaErrors

from buffers.drift import CHANGE_KINDS
from buffers.policy import FLAG_COLUMNS, POLICIES, RISK_FLAGS, SAFETY_STOCK_METHODS
from configs.schema import BuffercastConfig, SalesColumns, SkuMasterColumns
from features.lifecycle import LIFE_CYCLES
from features.sbc import DEMAND_CLASSES
from features.xyz import VOLATILITY_CLASSES
from pipeline.raw import (
    MASTER_KINDS,
    MASTER_REQUIRED,
    ROW_NUMBER,
    SALES_KINDS,
    SALES_REQUIRED,
    SOURCE_FILE,
    InputError,
    RawTable,
    files_label,
)

if TYPE_CHECKING:
    from pipeline.partitioned import SalesParts

_POSITION = "_position"  # row position in the raw frame: pandera's failure_cases `index`
QUARANTINE_COLUMNS = {
    "source_file": pl.String,
    "row_number": pl.Int64,
    "check": pl.String,
    "column": pl.String,
    "sku_id": pl.String,
    "raw_values": pl.String,
}


@dataclass(frozen=True)
class Validated:
    """An input split into canonical valid rows and quarantined rows."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int  # == valid.height + quarantine.height


# ---- checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidatedInParts:
    """An input validated a chunk at a time (`validate_sales_chunks`): its valid rows were filed by partition of
    series as they came (`parts`), its quarantined rows are here."""

    parts: SalesParts
    quarantine: pl.DataFrame
    rows_in: int  # == parts.rows + quarantine.height


@dataclass(frozen=True)
class Inputs:
    """The validated inputs of a run: the sales (in one frame, or filed by partition) and the SKU master (None when
    the run has none)."""

    sales: Validated | ValidatedInParts
    master: Validated | None


def _finite(name: str) -> pa.Check:
    """No inf or NaN (pandera's not-null check would call NaN a null: this names it)."""
    return pa.Check(lambda data: data.lazyframe.select(pl.col(data.key).is_finite()), error=name)


def _bounded(name: str, *, ge: float | None = None, le: float | None = None) -> pa.Check:
    """ge <= value <= le for finite values; inf and NaN are left to `_finite`, so a row gets one reason, not two."""

    def check(data: PolarsData) -> pl.LazyFrame:
        x = pl.col(data.key)
        ok = pl.lit(True)
        if ge is not None:
            ok = ok & (x >= ge)
        if le is not None:
            ok = ok & (x <= le)
        return data.lazyframe.select(ok | ~x.is_finite())

    return pa.Check(check, error=name)


def _first_occurrence(name: str) -> pa.Check:
    """Repeats of a value fail, its first occurrence passes (pandera's `unique` flags all of them on polars)."""

    def first(data: PolarsData) -> pl.LazyFrame:
        column = pl.col(data.key)
        return data.lazyframe.select(column.is_first_distinct() | column.is_null())

    return pa.Check(first, error=name)


def _not_at(name: str, positions: pl.Series, offset: int) -> pa.Check:
    """Rows at `positions` of the whole input fail (this frame's first row is at `offset`)."""
    failing = positions.filter(positions >= offset).implode()

    def check(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.int_range(pl.len(), dtype=pl.Int64) + offset).is_in(failing).not_().alias(data.key))

    return pa.Check(check, error=name)


def _provenance() -> dict[str, pa.Column]:
    return {SOURCE_FILE: pa.Column(pl.String, nullable=True), ROW_NUMBER: pa.Column(pl.Int64, nullable=False)}


def sales_schema(
    today: dt.date,
    earliest: dt.date | None = None,
    max_quantity: float = math.inf,
    repeated: tuple[pl.Series, int] | None = None,
) -> pa.DataFrameSchema:
    """Parsed sales rows; `line_id` is only used to find duplicate lines and is dropped afterwards. `repeated`: the
    duplicate lines of the whole input (`repeated_lines`) and the position of this frame's first row in it; without
    it, a line id repeated within the frame."""
    dates = [pa.Check.le(today, error="date_not_in_future")]
    if earliest is not None:
        dates.append(pa.Check.ge(earliest, error="date_too_early"))
    quantities = [_finite("quantity_finite"), _bounded("quantity_non_negative", ge=0.0)]
    if math.isfinite(max_quantity):
        quantities.append(_bounded("quantity_too_large", le=max_quantity))
    return pa.DataFrameSchema(
        {
            "sku_id": pa.Column(pl.String, nullable=False),
            "location_id": pa.Column(pl.String, nullable=True),
            "date": pa.Column(pl.Date, nullable=False, checks=dates),
            "quantity": pa.Column(pl.Float64, nullable=False, checks=quantities),
            "line_id": pa.Column(
                pl.String,
                nullable=True,
                checks=_first_occurrence("duplicate_line_id") if repeated is None else _not_at("duplicate_line_id", *repeated),
            ),
            **_provenance(),
        },
        name="sales",
        strict=True,
        ordered=True,
    )


SKU_MASTER_SCHEMA = pa.DataFrameSchema(
    {
        "sku_id": pa.Column(pl.String, nullable=False, checks=_first_occurrence("duplicate_sku_id")),
        "unit_cost": pa.Column(
            pl.Float64, nullable=False, checks=[_finite("unit_cost_finite"), pa.Check.gt(0.0, error="unit_cost_positive")]
        ),
        "lead_time_days": pa.Column(
            pl.Float64, nullable=False, checks=[_finite("lead_time_days_finite"), pa.Check.gt(0.0, error="lead_time_days_positive")]
        ),
        "lead_time_std_days": pa.Column(
            pl.Float64,
            nullable=True,
            checks=[_finite("lead_time_std_days_finite"), pa.Check.ge(0.0, error="lead_time_std_days_non_negative")],
        ),
        "critical": pa.Column(pl.Boolean, nullable=False),
        "pack_size": pa.Column(
            pl.Float64, nullable=True, checks=[_finite("pack_size_finite"), pa.Check.ge(1.0, error="pack_size_at_least_one")]
        ),
        "supplier_id": pa.Column(pl.String, nullable=True),
        **_provenance(),
    },
    name="sku_master",
    strict=True,
    ordered=True,
)


# ---- validation ------------------------------------------------------------------------


@dataclass(frozen=True)
class SalesRules:
    """How sales rows are read and checked (`validate_sales`): dates in `timezone` (`date_format` first, if set),
    quarantined before `earliest`, after `today` or above `max_quantity`; text numbers with a decimal comma if
    `decimal_comma`; more than `max_quarantine_share` of the rows quarantined fails the input."""

    today: dt.date
    date_format: str | None = None
    timezone: str = "UTC"
    earliest: dt.date | None = None
    max_quantity: float = math.inf
    decimal_comma: bool = False
    max_quarantine_share: float = 1.0
    source: str = "sales"

    @classmethod
    def of(cls, cfg: BuffercastConfig, today: dt.date, limit_quarantine: bool = True) -> SalesRules:
        """The config's input rules; `limit_quarantine=False` lifts `input.max_quarantine_share`."""
        i = cfg.input
        share = i.max_quarantine_share if limit_quarantine else 1.0
        return cls(today, i.date_format, i.timezone, i.earliest_date, i.max_quantity, i.decimal_comma, share)


def validate_sales(
    raw: pl.DataFrame,
    cols: SalesColumns,
    *,
    today: dt.date,
    date_format: str | None = None,
    timezone: str = "UTC",
    earliest: dt.date | None = None,
    max_quantity: float = math.inf,
    decimal_comma: bool = False,
    max_quarantine_share: float = 1.0,
    source: str = "sales",
) -> Validated:
    """Canonical sales rows (sku_id, location_id, date, quantity, _source_file, _row_number) and quarantine.

    Several rows for one SKU and date are order lines and are all kept; a repeated `line_id`
    is a duplicate. Timestamps are read as the date they fall on in `timezone` (`RawTable.date`). Rows dated before
    `earliest` (date_too_early) or with a quantity above `max_quantity` (quantity_too_large) are quarantined.
    Raises InputError for a missing column, or when the quarantined share of rows exceeds `max_quarantine_share`.
    """
    rules = SalesRules(today, date_format, timezone, earliest, max_quantity, decimal_comma, max_quarantine_share, source)
    return _sales_in_one_piece(raw, cols, rules)


def _sales_in_one_piece(raw: pl.DataFrame, cols: SalesColumns, rules: SalesRules) -> Validated:
    """The whole frame in one chunk of `validate_sales_chunks`."""
    valid: list[pl.DataFrame] = []
    quarantine, rows_in = validate_sales_chunks(raw.lazy(), cols, valid.append, chunk_rows=max(raw.height, 1), rules=rules)
    return Validated(valid[0], quarantine, rows_in)


def validate_sales_chunks(
    raw: pl.LazyFrame, cols: SalesColumns, take: Callable[[pl.DataFrame], None], *, chunk_rows: int, rules: SalesRules
) -> tuple[pl.DataFrame, int]:
    """`validate_sales` of an input of any size, `chunk_rows` rows at a time: each chunk's valid rows go to `take`, in
    input order, and the quarantine of every chunk is returned with the rows read (quarantine, rows_in).

    The one check across rows, a repeated line id, is decided over the whole input first (`repeated_lines`), so
    the chunks give the same valid rows and quarantine as one piece, whatever their size. Raises InputError as
    `validate_sales` does; the quarantine share is checked once every chunk has been read."""
    r = rules
    rows = raw.select(pl.len()).collect().item()
    head = raw.head(0).collect()
    files = raw.select(pl.col(SOURCE_FILE).unique(maintain_order=True)).collect() if SOURCE_FILE in head.columns else head
    label = files_label(files, r.source)
    header = RawTable.of(head, cols, required=SALES_REQUIRED, key="input.sales_columns", source=r.source, label=label)
    header.raw.select(*header.parsed(SALES_KINDS, date_format=r.date_format, timezone=r.timezone, decimal_comma=r.decimal_comma))
    repeated = repeated_lines(raw, header.text("line_id"), rows) if "line_id" in header.names else pl.Series([], dtype=pl.Int64)
    # A chunk's repeated lines are those of the whole input; once they are out, its rows pass the check within it.
    recheck = sales_schema(r.today, r.earliest, r.max_quantity)
    quarantines = []
    for offset in range(0, max(rows, 1), chunk_rows):
        chunk = raw.slice(offset, chunk_rows).collect()
        table = RawTable.of(chunk, cols, required=SALES_REQUIRED, key="input.sales_columns", source=r.source, label=label, offset=offset)
        parsed = chunk.select(
            *table.parsed(SALES_KINDS, date_format=r.date_format, timezone=r.timezone, decimal_comma=r.decimal_comma),
            *table.provenance(),
        )
        del chunk
        schema = sales_schema(r.today, r.earliest, r.max_quantity, repeated=(repeated, offset))
        unparseable = _unparseable(table, parsed, _parsed_columns(SALES_KINDS))
        result = _split(table, parsed, schema, unparseable, recheck=recheck)
        del table, parsed
        quarantines.append(result.quarantine)
        take(result.valid.drop("line_id"))
        del result
    quarantine = pl.concat(quarantines)
    _within_share(quarantine, rows, r.max_quarantine_share, r.source)
    return quarantine, rows


def input_series(raw: pl.LazyFrame, cols: SalesColumns) -> pl.DataFrame:
    """The distinct sku_id, location_id of a sales input as its validation reads them (rows that fail it included;
    a row without a SKU left out), read without holding the input."""
    table = RawTable.of(raw.head(0).collect(), cols, required=SALES_REQUIRED, key="input.sales_columns", source="sales")
    keys = raw.select(table.text("sku_id"), table.text("location_id")).drop_nulls("sku_id").unique()
    return keys.collect(engine="streaming")


#: Line-id hashes held at a time to find repeats: an input with more rows is read once per bucket of hashes.
LINES_PER_BUCKET = 16_000_000


def repeated_lines(raw: pl.LazyFrame, line_id: pl.Expr, rows: int, lines_per_bucket: int = LINES_PER_BUCKET) -> pl.Series:
    """The positions (0-based, sorted) of the rows whose line id (`line_id`, an expression on `raw`; null: none) is
    on an earlier row: the `duplicate_line_id` rows. Every id is hashed (64 bits) and only the rows whose hash repeats
    are read as text, to tell a repeat from a collision; a repeat has the same hash, so the hashes are read in buckets
    of their value, about `lines_per_bucket` at a time: 12 bytes a row, never the ids themselves."""
    given = raw.with_row_index(_POSITION).filter(line_id.is_not_null())
    hashes = given.select(_POSITION, _hash=line_id.hash(seed=0))
    buckets = max(1, math.ceil(rows / lines_per_bucket))
    candidates = []  # one per bucket: there is at least one
    for bucket in range(buckets):
        part = hashes if buckets == 1 else hashes.filter(pl.col("_hash") % buckets == bucket)
        found = part.collect(engine="streaming")
        candidates.append(found.filter(pl.col("_hash").is_duplicated()).get_column(_POSITION))
        del found
    positions = pl.concat(candidates).implode()
    ids = given.filter(pl.col(_POSITION).is_in(positions)).select(_POSITION, _line=line_id).collect(engine="streaming")
    repeats = ids.sort(_POSITION).filter(~pl.col("_line").is_first_distinct())
    return repeats.get_column(_POSITION).cast(pl.Int64)


def validate_inputs(
    cfg: BuffercastConfig, raw_sales: pl.DataFrame, raw_master: pl.DataFrame | None, *, today: dt.date, limit_quarantine: bool = True
) -> Inputs:
    """The raw inputs checked against their contracts with the config's column names and input rules (dates in
    `input.timezone`, `input.earliest_date`, `input.max_quantity`, `input.decimal_comma`). `limit_quarantine=False`
    lifts `input.max_quarantine_share` (the pre-flight look at a few rows)."""
    rules = SalesRules.of(cfg, today, limit_quarantine)
    sales = _sales_in_one_piece(raw_sales, cfg.input.sales_columns, rules)
    return Inputs(sales, validate_master_input(cfg, raw_master, rules.max_quarantine_share))


def validate_master_input(cfg: BuffercastConfig, raw: pl.DataFrame | None, max_quarantine_share: float) -> Validated | None:
    """`validate_sku_master` with the config's column names and decimal comma; None without a SKU master."""
    if raw is None:
        return None
    i = cfg.input
    return validate_sku_master(raw, i.sku_master_columns, decimal_comma=i.decimal_comma, max_quarantine_share=max_quarantine_share)


def _within_share(quarantine: pl.DataFrame, rows_in: int, max_share: float, source: str) -> None:
    """Raise InputError when more than `max_share` of the rows were quarantined."""
    if rows_in and quarantine.height / rows_in > max_share:
        raise InputError(_too_many_message(quarantine, rows_in, max_share, source))


def validate_sku_master(
    raw: pl.DataFrame, cols: SkuMasterColumns, *, decimal_comma: bool = False, max_quarantine_share: float = 1.0, source: str = "SKU master"
) -> Validated:
    """Canonical SKU master rows and quarantine; absent optional columns become nulls (`critical`: False).
    `decimal_comma`: text numbers read 1,5 as 1.5 (`input.decimal_comma`, as for the sales).

    Raises InputError for a missing column, or when the quarantined share passes `max_quarantine_share`.
    """
    table = RawTable.of(raw, cols, required=MASTER_REQUIRED, key="input.sku_master_columns", source=source)
    parsed = raw.select(*table.parsed(MASTER_KINDS, decimal_comma=decimal_comma), *table.provenance())
    unparseable = _unparseable(table, parsed, _parsed_columns(MASTER_KINDS))
    result = _split(table, parsed.with_columns(pl.col("critical").fill_null(False)), SKU_MASTER_SCHEMA, unparseable)
    _within_share(result.quarantine, result.rows_in, max_quarantine_share, source)
    return result


def quarantine_summary(q: pl.DataFrame) -> str:
    """E.g. `3 rows quarantined: quantity_non_negative 1, duplicate_line_id 1, date_unparseable 1`."""
    rows = "row" if q.height == 1 else "rows"
    return f"{q.height} {rows} quarantined" + (f": {_check_counts(q)}" if q.height else "")


def _parsed_columns(kinds: dict[str, str]) -> tuple[str, ...]:
    """The columns whose text is parsed (not taken as it is): a value given that does not parse is `<column>_unparseable`."""
    return tuple(name for name, kind in kinds.items() if kind != "text")


def _unparseable(table: RawTable, parsed: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """(position, column, check) for values that were given (not blank) but did not parse."""
    present = [name for name in columns if name in table.names]
    given = table.raw.select(
        (pl.col(table.names[name]).cast(pl.String).str.strip_chars().fill_null("") != "").alias(name) for name in present
    )
    return (
        pl.DataFrame([given[name] & parsed[name].is_null() for name in present])
        .with_row_index(_POSITION)
        .unpivot(index=_POSITION, variable_name="column", value_name="failed")
        .filter("failed")
        .select(pl.col(_POSITION).cast(pl.Int64), "column", check=pl.col("column") + "_unparseable")
    )


def _split(
    table: RawTable,
    parsed: pl.DataFrame,
    schema: pa.DataFrameSchema,
    unparseable: pl.DataFrame,
    recheck: pa.DataFrameSchema | None = None,
) -> Validated:
    """Validate `parsed` lazily, quarantine failing rows (by position) with the parse failures, re-validate the rest
    (by `recheck`, when the rows' positions matter to `schema`)."""
    try:
        schema.validate(parsed, lazy=True)
        found = unparseable.clear()
    except SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].null_count():  # parsing fixes every dtype: a schema-level failure is a bug here
            raise
        found = cases.select(
            pl.col("index").cast(pl.Int64).alias(_POSITION),
            "column",
            check=pl.when(pl.col("check") == "not_nullable").then(pl.col("column") + "_not_null").otherwise("check"),
        )
    order = {name: rank for rank, name in enumerate(schema.columns)}
    failures = (
        pl.concat([unparseable, found])
        # "not null" only when nothing more precise (unparseable, not finite) explains the null
        .filter(~pl.col("check").str.ends_with("_not_null") | (pl.len().over(_POSITION, "column") == 1))
        .sort(_POSITION, pl.col("column").replace_strict(order, return_dtype=pl.Int64), "check")
        .group_by(_POSITION, maintain_order=True)
        .agg(
            _check=pl.col("check").str.join("; "),
            _column=pl.col("column").replace(table.names).unique(maintain_order=True).str.join("; "),
        )
    )
    raw_columns = [c for c in table.raw.columns if c not in (SOURCE_FILE, ROW_NUMBER)]
    quarantine = (
        table.raw.select(*raw_columns, *table.provenance())
        .with_row_index(_POSITION)
        .with_columns(pl.col(_POSITION).cast(pl.Int64))
        .join(failures, on=_POSITION, how="inner", maintain_order="right")
        .select(
            source_file=pl.col(SOURCE_FILE),
            row_number=pl.col(ROW_NUMBER),
            check="_check",
            column="_column",
            sku_id=pl.col(table.names["sku_id"]).cast(pl.String),
            raw_values=pl.struct(pl.col(raw_columns).cast(pl.String)).struct.json_encode(),
        )
        .cast(QUARANTINE_COLUMNS)
    )
    valid = (
        parsed.with_row_index(_POSITION)
        .with_columns(pl.col(_POSITION).cast(pl.Int64))
        .join(failures, on=_POSITION, how="anti", maintain_order="left")
        .drop(_POSITION)
    )
    return Validated((recheck or schema).validate(valid), quarantine, table.raw.height)


# ---- messages --------------------------------------------------------------------------


def _check_counts(q: pl.DataFrame) -> str:
    """`quantity_non_negative 2, date_unparseable 1`: most frequent first, then in order of appearance."""
    counts = (
        q.select(pl.col("check").str.split("; ").explode())
        .group_by("check", maintain_order=True)
        .len()
        .sort("len", descending=True, maintain_order=True)
    )
    return ", ".join(f"{check} {n}" for check, n in counts.iter_rows())


def _too_many_message(q: pl.DataFrame, rows_in: int, max_share: float, source: str) -> str:
    several_files = q["source_file"].n_unique() > 1
    examples = []
    for row in q.head(3).iter_rows(named=True):
        values = json.loads(row["raw_values"])
        shown = ", ".join(f"{c}={_quoted(values.get(c))}" for c in row["column"].split("; "))
        where = f"'{row['source_file']}' row" if several_files else "row"
        examples.append(f"{where} {row['row_number']} ({shown})")
    return (
        f"{files_label(q, source, 'source_file')}: {q.height} of {rows_in} rows ({q.height / rows_in:.1%})"
        f" failed validation, more than input.max_quarantine_share={max_share:g} allows ({_check_counts(q)});"
        f" e.g. {'; '.join(examples)}. Fix the file or raise input.max_quarantine_share in your config."
    )


def _quoted(value: str | None) -> str:
    return "null" if value is None else repr(value)


# ---- output tables ---------------------------------------------------------------------
# Contracts of buffercast's output tables (demand profile, backtest, forecast, buffers,
# simulation, run manifest) go below this line: one pandera.polars schema per table.

# The vocabularies (demand classes, volatility classes, policies, flags, life cycles, methods) come from the module
# that produces each column: one list each.


def _col(
    dtype: pl.DataType | type, nullable: bool = False, checks: pa.Check | list[pa.Check] | None = None, regex: bool = False
) -> pa.Column:
    return pa.Column(dtype, nullable=nullable, checks=checks, regex=regex)


_NON_NEGATIVE = pa.Check.ge(0.0)
_KEYS = {"as_of": _col(pl.Date), "sku_id": _col(pl.String), "location_id": _col(pl.String, nullable=True)}
_FLAGS = (*FLAG_COLUMNS, *RISK_FLAGS)
_UNIT_INTERVAL = [pa.Check.ge(0.0), pa.Check.le(1.0)]
_LIFE_CYCLE_AND_SHAPE = {
    "life_cycle": _col(pl.String, checks=pa.Check.isin(LIFE_CYCLES)),
    "fsn_class": _col(pl.String, checks=pa.Check.isin(["F", "S", "N"])),
    "movement_frequency": _col(pl.Float64, checks=_UNIT_INTERVAL),
    "periods_since_last_sale": _col(pl.Int64, checks=_NON_NEGATIVE),
    "trend_strength": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
    "seasonal_strength": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
}

#: Version of the published tables' contract (docs/outputs.md): bumped when a column is removed or renamed, or its
#: type, meaning or allowed values change; a column added at the end does not bump it. History: docs/outputs.md.
SCHEMA_VERSION = 3

#: The published tables' contracts, version SCHEMA_VERSION (docs/outputs.md). Column order is part of the contract.
OUTPUT_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "recommendations": pa.DataFrameSchema(
        {
            **_KEYS,
            "policy": _col(pl.String, checks=pa.Check.isin(POLICIES)),
            "safety_stock_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "reorder_point_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_up_to_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "min_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "max_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_quantity_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "service_level_target": _col(pl.Float64, checks=[pa.Check.ge(0.5), pa.Check.lt(1.0)]),
            "service_level_measure": _col(pl.String, checks=pa.Check.isin(["cycle", "fill_rate"])),
            "expected_service_level": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "safety_stock_method": _col(pl.String, checks=pa.Check.isin(SAFETY_STOCK_METHODS)),
            "calibrated_service_level": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "calibrated_review_service_level": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "calibration_status": _col(
                pl.String, checks=pa.Check.isin(["calibrated", "capped", "too_few_windows", "not_calibrated", "fill_rate_target"])
            ),
            "calibration_map": _col(pl.String, nullable=True),
            "uncalibrated_safety_stock_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "demand_class": _col(pl.String, checks=pa.Check.isin(DEMAND_CLASSES)),
            "adi": _col(pl.Float64, nullable=True, checks=pa.Check.ge(1.0)),
            "cv2": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "volatility_class": _col(pl.String, checks=pa.Check.isin(VOLATILITY_CLASSES)),
            "xyz_class": _col(pl.String, nullable=True, checks=pa.Check.isin(["X", "Y", "Z"])),
            "error_cv": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "abc_class": _col(pl.String, checks=pa.Check.isin(["A", "B", "C"])),
            "annual_value": _col(pl.Float64, checks=_NON_NEGATIVE),
            "critical": _col(pl.Boolean),
            **_LIFE_CYCLE_AND_SHAPE,
            "n_outliers": _col(pl.Int64, checks=_NON_NEGATIVE),
            "outlier_threshold": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "model": _col(pl.String),
            "runner_up_model": _col(pl.String, nullable=True),
            "combined_models": _col(pl.String, nullable=True),
            "mase": _col(pl.Float64, nullable=True),
            "rmse": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "mae": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "bias": _col(pl.Float64, nullable=True),
            "backtest_windows": _col(pl.Int64, checks=_NON_NEGATIVE),
            "sigma_method": _col(pl.String),
            "lead_time_days": _col(pl.Float64, checks=pa.Check.gt(0.0)),
            "lead_time_std_days": _col(pl.Float64, checks=_NON_NEGATIVE),
            "lead_time_periods": _col(pl.Float64, checks=pa.Check.gt(0.0)),
            "review_periods": _col(pl.Float64, checks=_NON_NEGATIVE),
            "mean_demand_per_period": _col(pl.Float64, checks=_NON_NEGATIVE),
            "lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "review_lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "sigma_lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "sigma_review_lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "sigma_total": _col(pl.Float64, checks=_NON_NEGATIVE),
            "safety_factor_z": _col(pl.Float64, nullable=True),
            "economic_order_quantity": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "unit_cost": _col(pl.Float64, checks=pa.Check.gt(0.0)),
            "pack_size": _col(pl.Float64, nullable=True, checks=pa.Check.ge(1.0)),
            "supplier_id": _col(pl.String, nullable=True),
            "in_sku_master": _col(pl.Boolean),
            "safety_stock_value": _col(pl.Float64, checks=_NON_NEGATIVE),
            "holding_cost_per_year": _col(pl.Float64, checks=_NON_NEGATIVE),
            "capital_tied_up": _col(pl.Float64, checks=_NON_NEGATIVE),
            "expected_turns": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "capital_at_risk": _col(pl.Float64, checks=_NON_NEGATIVE),
            "textbook_safety_stock_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "textbook_safety_stock_value": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_up_to_jit_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_up_to_jic_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            # Null where the held-out demand had no finished replenishment cycle (or no simulation ran).
            "simulated_cycle_service_level": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "simulated_fill_rate": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "simulated_average_on_hand": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "simulated_stockout_periods": _col(pl.Int64, nullable=True, checks=_NON_NEGATIVE),
            "reasons": _col(pl.String, checks=pa.Check.str_length(min_value=5)),
            **{flag: _col(pl.Boolean) for flag in _FLAGS},
            "model_fell_back": _col(pl.Boolean),
            "n_periods": _col(pl.Int64, checks=pa.Check.ge(1)),
            "n_nonzero": _col(pl.Int64, checks=_NON_NEGATIVE),
            "flag_cover_capped": _col(pl.Boolean),
        },
        name="recommendations",
        unique=["sku_id", "location_id"],
        strict=True,
        ordered=True,
    ),
    "profiles": pa.DataFrameSchema(
        {
            **_KEYS,
            "n_periods": _col(pl.Int64, checks=pa.Check.ge(1)),
            "n_nonzero": _col(pl.Int64, checks=_NON_NEGATIVE),
            "adi": _col(pl.Float64, nullable=True, checks=pa.Check.ge(1.0)),
            "cv2": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "mean_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "std_demand": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "first_sale": _col(pl.Date),
            "last_sale": _col(pl.Date),
            "periods_since_last_sale": _col(pl.Int64, checks=_NON_NEGATIVE),
            "demand_class": _col(pl.String, checks=pa.Check.isin(DEMAND_CLASSES)),
            "periods_since_first_sale": _col(pl.Int64, checks=pa.Check.ge(1)),
            "movement_frequency": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "fsn_class": _col(pl.String, checks=pa.Check.isin(["F", "S", "N"])),
            "life_cycle": _col(pl.String, checks=pa.Check.isin(LIFE_CYCLES)),
            "annual_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "annual_value": _col(pl.Float64, checks=_NON_NEGATIVE),
            "cumulative_share": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "abc_class": _col(pl.String, checks=pa.Check.isin(["A", "B", "C"])),
            "trend_strength": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "seasonal_strength": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "shape_periods": _col(pl.Int64, checks=_NON_NEGATIVE),
            "n_outliers": _col(pl.Int64, checks=_NON_NEGATIVE),
            "outlier_threshold": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "largest_outlier": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "error_cv": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "volatility_class": _col(pl.String, checks=pa.Check.isin(VOLATILITY_CLASSES)),
            "xyz_class": _col(pl.String, nullable=True, checks=pa.Check.isin(["X", "Y", "Z"])),
        },
        name="profiles",
        unique=["sku_id", "location_id"],
        strict=True,
        ordered=True,
    ),
    "outliers": pa.DataFrameSchema(
        {
            **_KEYS,
            "date": _col(pl.Date),
            "quantity": _col(pl.Float64, checks=pa.Check.gt(0.0)),
            "outlier_threshold": _col(pl.Float64, checks=_NON_NEGATIVE),
        },
        name="outliers",
        unique=["sku_id", "location_id", "date"],
        strict=True,
        ordered=True,
    ),
    "changes": pa.DataFrameSchema(
        {
            "as_of": _col(pl.Date),
            "previous_as_of": _col(pl.Date),
            "sku_id": _col(pl.String),
            "location_id": _col(pl.String, nullable=True),
            "change": _col(pl.String, checks=pa.Check.isin(list(CHANGE_KINDS))),
            "before": _col(pl.String, nullable=True),
            "after": _col(pl.String, nullable=True),
            "buffer_change_pct": _col(pl.Float64, nullable=True),
            "reason": _col(pl.String),
        },
        name="changes",
        unique=["sku_id", "location_id", "change"],
        strict=True,
        ordered=True,
    ),
    "forecasts": pa.DataFrameSchema(
        {
            **_KEYS,
            "date": _col(pl.Date),
            "step": _col(pl.Int64, checks=pa.Check.ge(1)),
            "model": _col(pl.String),
            "forecast": _col(pl.Float64, checks=_NON_NEGATIVE),
            # One column per quantile in config (models.quantiles): q50, q90, q95, q99 by default; null where the
            # model gave no interval.
            r"^q\d+(\.\d+)?$": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE, regex=True),
        },
        name="forecasts",
        unique=["sku_id", "location_id", "date"],
        strict=True,
        ordered=True,
    ),
    # Time-phased parameters (buffers/time_phased.py): one row per SKU and future period; period 1 is the plan.
    "plan_parameters": pa.DataFrameSchema(
        {
            **_KEYS,
            "period": _col(pl.Int64, checks=pa.Check.ge(1)),
            "period_start": _col(pl.Date),
            "forecast": _col(pl.Float64, checks=_NON_NEGATIVE),
            "lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "review_lead_time_demand": _col(pl.Float64, checks=_NON_NEGATIVE),
            "safety_stock_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "reorder_point_units": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_up_to_units": _col(pl.Float64, checks=_NON_NEGATIVE),
        },
        name="plan_parameters",
        unique=["sku_id", "location_id", "period"],
        strict=True,
        ordered=True,
    ),
    "backtest_metrics": pa.DataFrameSchema(
        {
            **_KEYS,
            "model": _col(pl.String),
            "selected": _col(pl.Boolean),
            # Null where the model left forecasts missing (`missing_forecasts`), e.g. a seasonal model on < 1 season.
            "mae": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "rmse": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "bias": _col(pl.Float64, nullable=True),
            "mase": _col(pl.Float64, nullable=True),
            "rmsse": _col(pl.Float64, nullable=True),
            "lead_time_rmse": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "lead_time_bias": _col(pl.Float64, nullable=True),
            "review_lead_time_rmse": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            # Share of backtest actuals at or below each forecast quantile (lead-time steps): q95 well calibrated -> ~0.95.
            r"^coverage_q\d+(\.\d+)?$": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL, regex=True),
            # Mean pinball loss of each quantile over the lead-time steps (sklearn's mean_pinball_loss), units per period.
            r"^pinball_q\d+(\.\d+)?$": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE, regex=True),
            # The chosen model's rows, normal-method SKUs: share of backtest windows whose lead-time error the safety stock
            # covers, sized at the target (before) and at its calibrated level (after); each window's sigma from the others.
            "buffer_coverage_before": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "buffer_coverage_after": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "n_windows": _col(pl.Int64, checks=pa.Check.ge(1)),
            "fell_back": _col(pl.Boolean),
            "missing_forecasts": _col(pl.Boolean),
        },
        name="backtest_metrics",
        unique=["sku_id", "location_id", "model"],
        strict=True,
        ordered=True,
    ),
    "scenarios": pa.DataFrameSchema(
        {
            "as_of": _col(pl.Date),
            "scenario": _col(pl.String),
            "kind": _col(pl.String, checks=pa.Check.isin(["baseline", "lead_time", "outage", "demand_spike"])),
            "policy": _col(pl.String, checks=pa.Check.isin(["JIT", "JIC", "recommended"])),
            "skus": _col(pl.Int64, checks=_NON_NEGATIVE),
            "skus_hit": _col(pl.Int64, checks=_NON_NEGATIVE),
            "simulated_cycle_service_level": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "simulated_fill_rate": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "stockout_periods": _col(pl.Int64, checks=_NON_NEGATIVE),
            "units_short": _col(pl.Float64, checks=_NON_NEGATIVE),
            "average_inventory_value": _col(pl.Float64, checks=_NON_NEGATIVE),
            "holding_cost_per_year": _col(pl.Float64, checks=_NON_NEGATIVE),
            "order_up_to_value": _col(pl.Float64, checks=_NON_NEGATIVE),
        },
        name="scenarios",
        unique=["scenario", "policy"],
        strict=True,
        ordered=True,
    ),
    "calibration": pa.DataFrameSchema(
        {
            "as_of": _col(pl.Date),
            "exposure": _col(pl.String, nullable=True, checks=pa.Check.isin(["lead_time", "review_lead_time"])),
            "demand_class": _col(pl.String, checks=pa.Check.isin(DEMAND_CLASSES)),
            "model_family": _col(pl.String, nullable=True),
            "service_level_target": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "calibrated_level": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "status": _col(pl.String, nullable=True),
            "n_fit": _col(pl.Int64, nullable=True, checks=_NON_NEGATIVE),
            "n_check": _col(pl.Int64, nullable=True, checks=_NON_NEGATIVE),
            "heldout_before": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "heldout_after": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "quantile": _col(pl.String, nullable=True),
            "pinball_loss": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "coverage": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
        },
        name="calibration",
        strict=True,
        ordered=True,
    ),
    "quarantine": pa.DataFrameSchema(
        {
            "as_of": _col(pl.Date),
            "input": _col(pl.String, checks=pa.Check.isin(["sales", "sku_master"])),
            **{name: _col(dtype, nullable=name in ("source_file", "sku_id")) for name, dtype in QUARANTINE_COLUMNS.items()},
        },
        name="quarantine",
        strict=True,
        ordered=True,
    ),
}


#: The methods an evaluation judges (pipeline/evaluate.py, evaluation/rolling.py).
EVALUATION_METHODS = (
    "buffercast", "buffercast_sweep", "jit", "jic", "textbook", "empirical", "ddmrp", "buffercast_phased", "buffercast_held",
)  # fmt: skip
#: The table `buffercast evaluate` publishes (under <output folder>/evaluations/): a plan run does not write it.
EVALUATION_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "evaluation": pa.DataFrameSchema(
        {
            "as_of": _col(pl.Date),
            "method": _col(pl.String, checks=pa.Check.isin(EVALUATION_METHODS)),
            "target": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "slice": _col(pl.String, checks=pa.Check.isin(["all", "demand_class", "policy", "life_cycle", "abc_class"])),
            "value": _col(pl.String, nullable=True),
            "windows": _col(pl.Int64, checks=pa.Check.ge(1)),
            "covered": _col(pl.Int64, checks=_NON_NEGATIVE),
            "achieved": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "achieved_low": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "achieved_high": _col(pl.Float64, checks=_UNIT_INTERVAL),
            "expected": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "replayed": _col(pl.Int64, checks=_NON_NEGATIVE),
            "fill_rate": _col(pl.Float64, nullable=True, checks=_UNIT_INTERVAL),
            "units_short": _col(pl.Float64, checks=_NON_NEGATIVE),
            "on_hand_value": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
            "safety_stock_value": _col(pl.Float64, nullable=True, checks=_NON_NEGATIVE),
        },
        name="evaluation",
        unique=["method", "target", "slice", "value"],
        strict=True,
        ordered=True,
    ),
}
#: Every contract by table name.
CONTRACTS: dict[str, pa.DataFrameSchema] = {**OUTPUT_SCHEMAS, **EVALUATION_SCHEMAS}


def output_columns(name: str) -> list[str]:
    """The published table's columns in their contract order."""
    return list(CONTRACTS[name].columns)


def output_dtypes(name: str) -> dict[str, pl.DataType]:
    """The published table's polars types by column, in contract order (regex columns left out)."""
    return {c: col.dtype.type for c, col in CONTRACTS[name].columns.items() if not col.regex}


class OutputContractError(RuntimeError):
    """A table about to be published breaks its contract: a bug in buffercast, never the user's input."""


def validate_output(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a table against its published contract (all failures at once) before it is written."""
    try:
        return CONTRACTS[name].validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases.select("column", "check", "failure_case").unique().head(5).rows()
        raise OutputContractError(
            f"output table '{name}' breaks its schema-v{SCHEMA_VERSION} contract ({exc.failure_cases.height} failures, e.g. {cases}); "
            "nothing was published. Please report this with the run's log."
        ) from None


_JSON_TYPES = {"String": "string", "Float64": "number", "Int64": "integer", "Boolean": "boolean", "Date": "string"}
_JSON_BOUNDS = {
    "greater_than_or_equal_to": ("minimum", "min_value"),
    "greater_than": ("exclusiveMinimum", "min_value"),
    "less_than_or_equal_to": ("maximum", "max_value"),
    "less_than": ("exclusiveMaximum", "max_value"),
}


def _json_column(column: pa.Column) -> dict[str, Any]:
    """One column's pandera contract as a JSON Schema property: type (null allowed where nullable), bounds, enum."""
    dtype = str(column.dtype)
    prop: dict[str, Any] = {"type": [_JSON_TYPES[dtype], "null"] if column.nullable else _JSON_TYPES[dtype], "x-polars-dtype": dtype}
    if dtype == "Date":
        prop["format"] = "date"
    for check in column.checks:
        stats = check.statistics or {}
        if check.name == "isin":
            prop["enum"] = [*stats["allowed_values"], *([None] if column.nullable else [])]
        elif check.name in _JSON_BOUNDS:
            keyword, stat = _JSON_BOUNDS[check.name]
            prop[keyword] = stats[stat]
        elif check.name == "str_length":
            prop |= {k: v for k, v in (("minLength", stats.get("min_value")), ("maxLength", stats.get("max_value"))) if v is not None}
        else:
            raise ValueError(f"no JSON Schema for check {check.name!r}: teach pipeline/contracts.py:_json_column")
    return prop


def json_schema_text(name: str) -> str:
    """`json_schema(name)` as the file published next to the outputs (`schemas/`) and logged to MLflow."""
    return json.dumps(json_schema(name), indent=2) + "\n"


def json_schema(name: str) -> dict[str, Any]:
    """The published table `name` as a JSON Schema (draft 2020-12) of one row, derived from its pandera contract:
    every column with its type, nullability, bounds and allowed values; `x-column-order` the column order and
    `x-schema-version` the contract's version. Written next to every published partition (`schemas/as_of=.../`)."""
    schema = CONTRACTS[name]
    properties = {c: _json_column(col) for c, col in schema.columns.items() if not col.regex}
    patterns = {c: _json_column(col) for c, col in schema.columns.items() if col.regex}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"buffercast:{name}:v{SCHEMA_VERSION}",
        "title": f"buffercast table {name}, one row (schema version {SCHEMA_VERSION})",
        "type": "object",
        "properties": properties,
        **({"patternProperties": patterns} if patterns else {}),
        "required": list(properties),
        "additionalProperties": False,
        "x-schema-version": SCHEMA_VERSION,
        "x-column-order": list(schema.columns),
    }
