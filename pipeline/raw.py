"""Raw inputs as they were read: lineage columns, the one-line InputError, and the parsing of each configured column
(text, numbers, dates and timestamps, booleans) with the column and type checks that go with it.

No pandera here (it imports pandas, 2 s): the CLI's pre-flight look (`flows.sources.preflight`) checks the columns and
their types with `check_columns` in well under a second; `pipeline.contracts` validates the rows with these same
parsers.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from pydantic import BaseModel

from configs.schema import BuffercastConfig

#: Lineage columns the readers (flows/sources.py) add to every raw row, so that validation can name the exact file and row.
SOURCE_FILE = "_source_file"
ROW_NUMBER = "_row_number"


class InputError(ValueError):
    """Bad input: a one-line message naming the file, column, counts, and what to do."""


#: ISO timestamps read as dates (after `T` -> space and a space before the offset dropped): with an offset or Z, and
#: without one; seconds and fractions optional.
_AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M%#z")
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")

_TRUE = ("true", "1", "yes", "y")
_FALSE = ("false", "0", "no", "n")


@dataclass(frozen=True)
class RawTable:
    """A raw input with its configured column names, parsing expressions and error wording."""

    raw: pl.DataFrame
    names: dict[str, str]  # canonical name -> input column, for the configured columns present
    key: str  # config key of the column names, e.g. input.sales_columns
    label: str  # e.g. "sales file 'a.csv'"
    offset: int = 0  # rows of the whole input before this one (a chunk of it): row numbers count from offset + 1

    @classmethod
    def of(
        cls,
        raw: pl.DataFrame,
        cols: BaseModel,
        *,
        required: tuple[str, ...],
        key: str,
        source: str,
        label: str | None = None,
        offset: int = 0,
    ) -> RawTable:
        """Check the required columns are there; optional configured columns may be absent. `raw` may be a chunk of
        the input: `label` then names the whole input's files (`files_label`), `offset` is the chunk's first row."""
        label = label or files_label(raw, source)
        configured = {name: column for name, column in cols.model_dump().items() if column is not None}
        missing = [name for name in required if configured[name] not in raw.columns]
        if missing:
            found = ", ".join(c for c in raw.columns if c not in (SOURCE_FILE, ROW_NUMBER)) or "none"
            what = ", ".join(f"'{configured[name]}' ({key}.{name})" for name in missing)
            keys = ", ".join(f"{key}.{name}" for name in missing)
            plural = "s" if len(missing) > 1 else ""
            raise InputError(
                f"{label}: missing column{plural} {what}; found columns: {found}. Rename the column{plural} or set {keys} in your config."
            )
        return cls(raw, {name: column for name, column in configured.items() if column in raw.columns}, key, label, offset)

    def _typed_column(self, name: str, kinds: str, accepts: bool) -> pl.Expr:
        """The input column for `name`; InputError if its dtype is not one of `kinds`."""
        column = self.names[name]
        if not accepts:
            raise InputError(
                f"{self.label}: column '{column}' ({self.key}.{name}) holds {self.raw.schema[column]} values, not {kinds}."
                f" Convert the column or point {self.key}.{name} at the right one."
            )
        return pl.col(column)

    def text(self, name: str) -> pl.Expr:
        """Stripped text; empty -> null; null when the column is absent."""
        if name not in self.names:
            return pl.lit(None, dtype=pl.String).alias(name)
        value = pl.col(self.names[name]).cast(pl.String).str.strip_chars()
        return pl.when(value != "").then(value).alias(name)

    def number(self, name: str, *, decimal_comma: bool = False) -> pl.Expr:
        """Float64; text that is not a number -> null. `decimal_comma`: text reads 1,5 as 1.5."""
        if name not in self.names:
            return pl.lit(None, dtype=pl.Float64).alias(name)
        dtype = self.raw.schema[self.names[name]]
        column = self._typed_column(name, "numbers", dtype.is_numeric() or dtype in (pl.String, pl.Null))
        if dtype == pl.String:
            column = column.str.strip_chars()
            if decimal_comma:
                column = column.str.replace(",", ".", literal=True)
        return column.cast(pl.Float64, strict=False).alias(name)

    def date(self, name: str, date_format: str | None, timezone: str = "UTC") -> pl.Expr:
        """pl.Date. Text: `date_format`, else ISO dates (YYYY-MM-DD); then ISO timestamps (`T` or a space, seconds and
        fractions optional): one with an offset or `Z` is converted to `timezone` before its date is taken, one without
        is taken as local time there (its own date). Datetime columns likewise (zone-aware ones converted). Anything
        else -> null (quarantined as date_unparseable)."""
        dtype = self.raw.schema[self.names[name]]
        column = self._typed_column(name, "dates", dtype in (pl.String, pl.Date, pl.Null) or isinstance(dtype, pl.Datetime))
        if isinstance(dtype, pl.Datetime):
            return (column.dt.convert_time_zone(timezone) if dtype.time_zone else column).dt.date().alias(name)
        if dtype != pl.String:
            return column.cast(pl.Date).alias(name)
        text = column.str.strip_chars()
        stamp = text.str.replace("T", " ", literal=True).str.replace(r"\s+([+-]\d\d:?\d\d|Z)$", "$1")
        aware = [stamp.str.to_datetime(f, strict=False, time_zone="UTC").dt.convert_time_zone(timezone) for f in _AWARE_FORMATS]
        naive = [stamp.str.to_datetime(f, strict=False) for f in _NAIVE_FORMATS]
        return pl.coalesce(
            text.str.to_date(date_format or "%Y-%m-%d", strict=False), *[t.dt.date() for t in aware], *[t.dt.date() for t in naive]
        ).alias(name)

    def boolean(self, name: str) -> pl.Expr:
        """Boolean; text true/false/1/0/yes/no/y/n in any case; anything else -> null."""
        if name not in self.names:
            return pl.lit(None, dtype=pl.Boolean).alias(name)
        dtype = self.raw.schema[self.names[name]]
        column = self._typed_column(name, "true/false values", dtype in (pl.Boolean, pl.String, pl.Null) or dtype.is_integer())
        if dtype in (pl.Boolean, pl.Null):
            return column.cast(pl.Boolean).alias(name)
        text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
        mapping = dict.fromkeys(_TRUE, True) | dict.fromkeys(_FALSE, False)
        return text.replace_strict(mapping, default=None, return_dtype=pl.Boolean).alias(name)

    def parsed(
        self, kinds: dict[str, str], *, date_format: str | None = None, timezone: str = "UTC", decimal_comma: bool = False
    ) -> list[pl.Expr]:
        """Every column of `kinds` (canonical name -> text, number, date or boolean) parsed, in that order."""
        parse = {
            "text": self.text,
            "number": lambda name: self.number(name, decimal_comma=decimal_comma),
            "date": lambda name: self.date(name, date_format, timezone),
            "boolean": self.boolean,
        }
        return [parse[kind](name) for name, kind in kinds.items()]

    def provenance(self) -> list[pl.Expr]:
        """`_source_file` and `_row_number` (null and the 1-based position in the whole input for an in-memory frame)."""
        has = set(self.raw.columns)
        source_file = pl.col(SOURCE_FILE).cast(pl.String) if SOURCE_FILE in has else pl.lit(None, dtype=pl.String)
        first = self.offset + 1
        row_number = pl.col(ROW_NUMBER).cast(pl.Int64) if ROW_NUMBER in has else pl.int_range(first, first + pl.len(), dtype=pl.Int64)
        return [source_file.alias(SOURCE_FILE), row_number.alias(ROW_NUMBER)]


def files_label(frame: pl.DataFrame, source: str, column: str = SOURCE_FILE) -> str:
    """`sales file 'a.csv'`, `sales files 'a.csv', 'b.csv' and 3 more`, or just `sales` for an in-memory frame."""
    files = frame[column].drop_nulls().unique(maintain_order=True).to_list() if column in frame.columns else []
    if not files:
        return source
    shown = ", ".join(f"'{f}'" for f in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return f"{source} file{'s' if len(files) > 1 else ''} {shown}{more}"


def check_columns(cfg: BuffercastConfig, raw_sales: pl.DataFrame, raw_master: pl.DataFrame | None) -> None:
    """InputError for a missing configured column or one of an unusable type, in the sales or the SKU master: what the
    rows' validation would say first, without validating them."""
    i = cfg.input
    sales = RawTable.of(raw_sales, i.sales_columns, required=SALES_REQUIRED, key="input.sales_columns", source="sales")
    raw_sales.head(0).select(sales.parsed(SALES_KINDS, date_format=i.date_format, timezone=i.timezone, decimal_comma=i.decimal_comma))
    if raw_master is not None:
        master = RawTable.of(
            raw_master, i.sku_master_columns, required=MASTER_REQUIRED, key="input.sku_master_columns", source="SKU master"
        )
        raw_master.head(0).select(master.parsed(MASTER_KINDS, decimal_comma=i.decimal_comma))


#: What each canonical input column is read as (`RawTable.parsed`), in the order of the validated frame: one list for
#: the validation (`pipeline.contracts`), the pre-flight look (`check_columns`) and the database types allowed
#: (`flows.sources`).
SALES_KINDS = {"sku_id": "text", "location_id": "text", "date": "date", "quantity": "number", "line_id": "text"}
MASTER_KINDS = {
    "sku_id": "text", "unit_cost": "number", "lead_time_days": "number", "lead_time_std_days": "number",
    "critical": "boolean", "pack_size": "number", "supplier_id": "text",
}  # fmt: skip
SALES_REQUIRED = ("sku_id", "date", "quantity")
MASTER_REQUIRED = ("sku_id", "unit_cost", "lead_time_days")
