"""Pull the inputs: sales history and SKU master, from a file, a folder or an fsspec URL.

All input I/O of buffercast lives here. Every reader tags its rows with where they came
from (`_source_file`, `_row_number`) so that validation can name the exact file and row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from configs.schema import BuffercastConfig, InputConfig
from configs.secrets import SecretError, redact, resolve
from flows import secrets as _secrets  # noqa: F401  (registers ${prefect-secret:NAME})
from flows.publish import check_output_folder
from pipeline.raw import MASTER_KINDS, ROW_NUMBER, SALES_KINDS, SOURCE_FILE, InputError, check_columns

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".csv.gz": "csv", ".txt": "csv"}
_FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV"}
_CONFIG_KEYS = {"sales": "input.sales", "SKU master": "input.sku_master"}


def read_sales(cfg: InputConfig, as_of: dt.date | None = None, n_rows: int | None = None, since: dt.date | None = None) -> pl.DataFrame:
    """The raw sales history named by `input.sales`: a file, folder or URL, or a PostgreSQL database (`as_of` is bound
    to the query's $1). `since` (a database only: the incremental pull of `flows.sales_cache`): only the rows dated on
    or after it, bound to the query's $2 (`sales_table`: a WHERE on the date column is added)."""
    if is_database(cfg.sales):
        query = _query(cfg.sales_query, cfg.sales_table)
        if since is not None and cfg.sales_query is None:
            query += f' WHERE "{cfg.sales_columns.date}" >= $2'
        roles = _roles(cfg.sales_columns.model_dump(), SALES_KINDS, "input.sales_columns")
        return read_database(
            cfg.sales, query, what="sales", as_of=as_of, since=since, n_rows=n_rows, sql_types=roles, timezone=cfg.timezone
        )
    return read_table(cfg.sales, what="sales", separator=cfg.csv_separator, n_rows=n_rows)


def scan_sales(cfg: InputConfig) -> pl.LazyFrame | None:
    """The sales as a lazy scan, with the columns `read_sales` gives, when `input.sales` is one local Parquet or
    uncompressed CSV file: the pull streams it to `_pulled/` without holding it (`flows.publish.write_pulled`). None
    for anything else (a folder, a URL, a database: read whole by `read_sales`).

    The file's first rows are read as `read_sales` reads them first, so a missing, empty, binary or headerless file
    fails here with the same message; a fault further down fails the stream: `unreadable` words it."""
    if is_database(cfg.sales):
        return None
    try:
        fs, root = url_to_fs(resolve(cfg.sales, key="input.sales"))
        local_file = isinstance(fs, LocalFileSystem) and fs.isfile(root)
    except (SecretError, ValueError, ImportError, OSError):
        return None  # `read_sales` raises the precise error
    fmt = _format(root)
    if not local_file or fmt is None or root.lower().endswith(".gz"):
        return None
    read_table(cfg.sales, what="sales", separator=cfg.csv_separator, n_rows=_LOOK_ROWS)
    if fmt == "csv":
        table = pl.scan_csv(
            root, infer_schema=False, separator=cfg.csv_separator, row_index_name=ROW_NUMBER, row_index_offset=1, glob=False
        )
    else:
        table = pl.scan_parquet(root, glob=False).with_row_index(ROW_NUMBER, offset=1)
    return _with_provenance(table, cfg.sales)


#: Rows `scan_sales` reads first, to fail on a bad file as the whole read would.
_LOOK_ROWS = 1_000


def unreadable(cfg: InputConfig, exc: BaseException) -> InputError:
    """The InputError of a sales file whose stream (`scan_sales`) failed past its first rows: as `read_sales` says it."""
    return _unreadable("sales", cfg.sales, _format(cfg.sales) or "parquet", exc)


def _unreadable(what: str, label: str, fmt: str, exc: BaseException) -> InputError:
    if fmt == "csv":
        hint = " Save it as UTF-8." if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower() else ""
    else:
        hint = " Is the file complete? Copy or export it again."
    return InputError(f"{what} file '{label}' could not be read as {_FORMAT_NAMES[fmt]}: {_short(exc)}.{hint}")


def read_sku_master(cfg: InputConfig, as_of: dt.date | None = None, n_rows: int | None = None) -> pl.DataFrame | None:
    """The raw SKU master named by `input.sku_master` (a file, folder, URL or database), or None when there is none."""
    if cfg.sku_master is None:
        return None
    if is_database(cfg.sku_master):
        query = _query(cfg.sku_master_query, cfg.sku_master_table)
        roles = _roles(cfg.sku_master_columns.model_dump(), MASTER_KINDS, "input.sku_master_columns")
        return read_database(cfg.sku_master, query, what="SKU master", as_of=as_of, n_rows=n_rows, sql_types=roles, timezone=cfg.timezone)
    return read_table(cfg.sku_master, what="SKU master", n_rows=n_rows)


#: Locations read from a database (ADBC's PostgreSQL driver) rather than as files.
_DATABASES = ("postgresql://", "postgres://")
_QUERY_KEYS = {"sales": "input.sales_query / input.sales_table", "SKU master": "input.sku_master_query / input.sku_master_table"}


#: Per kind of input column (`pipeline.raw.SALES_KINDS`, `MASTER_KINDS`): what it must be, the PostgreSQL types
#: (pg_type.typname) validation reads without losing meaning, and the cast an error message suggests.
_TEXT = ("text", "varchar", "bpchar", "name")
_SQL_TYPES = {
    "text": ("text or integer", (*_TEXT, "int2", "int4", "int8", "uuid"), "text"),
    "number": ("a number", ("numeric", "int2", "int4", "int8", "float4", "float8", *_TEXT), "numeric"),
    "date": ("a date or timestamp", ("date", "timestamp", "timestamptz", *_TEXT), "date"),
    "boolean": ("a boolean", ("bool", "int2", "int4", "int8", *_TEXT), "boolean"),
}


def _roles(columns: dict[str, str | None], kinds: dict[str, str], key: str) -> dict[str, tuple]:
    """Input column -> (config key, what it must be, the PostgreSQL types that are that, the cast to suggest)."""
    return {column: (f"{key}.{role}", *_SQL_TYPES[kinds[role]]) for role, column in columns.items() if column is not None and role in kinds}


def is_database(location: str | None) -> bool:
    return bool(location) and location.startswith(_DATABASES)


def _query(query: str | None, table: str) -> str:
    """The configured query, or every row of the table (its name quoted, schema.table allowed)."""
    return query if query else "SELECT * FROM " + ".".join(f'"{part}"' for part in table.split("."))


def read_database(
    location: str,
    query: str,
    *,
    what: str,
    as_of: dt.date | None = None,
    since: dt.date | None = None,
    n_rows: int | None = None,
    sql_types: dict[str, tuple] | None = None,
    timezone: str = "UTC",
) -> pl.DataFrame:
    """The rows `query` returns from the PostgreSQL database at `location`, with `_source_file` (the location as written,
    a credential left as its reference) and `_row_number` (1-based, in the query's order).

    ADBC's PostgreSQL driver (libpq, Arrow-native: no row-by-row Python) runs the query in a session whose time zone is
    `timezone` (so `date >= $2` on a `timestamp with time zone` column compares with local midnight there); `$1`, if the
    query uses it, is bound to `as_of` (or today), `$2` to `since` (the first date to fetch; none: 0001-01-01), never
    formatted into the SQL. `n_rows`: the first rows only (a LIMIT around the
    query: the pre-flight look). A connection that fails (host down, refused, timed out) raises OSError, which the
    pull task retries; a refused login, a missing table or bad SQL raise InputError (retrying cannot help).
    `timestamp with time zone` arrives as UTC timestamps (validation converts them to `input.timezone`); `numeric` as
    its decimal text, parsed by validation. `sql_types` (column -> (config key, what, allowed PostgreSQL types, cast)): a
    column of another SQL type is an InputError naming the column and its type."""
    import adbc_driver_manager
    from adbc_driver_postgresql import dbapi

    key = _CONFIG_KEYS[what]
    sql = query if n_rows is None else f"SELECT * FROM ({query}) AS preflight LIMIT {int(n_rows)}"
    as_of = as_of or dt.date.today()
    parameters = (as_of, since or dt.date(1, 1, 1)) if "$2" in query else (as_of,) if "$1" in query else None
    try:
        uri = resolve(location, key=key)
    except SecretError as exc:
        raise InputError(str(exc)) from None
    try:
        with dbapi.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT set_config('TimeZone', $1, false)", parameters=(timezone,))
            cursor.fetchall()
            cursor.execute(sql, parameters=parameters)
            table = cursor.fetch_arrow_table()
    except adbc_driver_manager.OperationalError as exc:
        message = _short(exc).removeprefix("IO: ").removeprefix("[libpq] ")
        if any(s in message for s in ("authentication failed", "does not exist", "no password supplied", "permission denied")):
            raise InputError(f"{what} database '{location}': {message}. Check the user, password and database in {key}") from None
        raise OSError(f"{what} database '{location}' could not be reached: {message}") from None
    except adbc_driver_manager.Error as exc:
        message = _short(exc).removeprefix("NOT_FOUND: ").removeprefix("INVALID_ARGUMENT: ")
        raise InputError(f"{what} query on '{location}' failed: {message}. Fix {_QUERY_KEYS[what]} in your config") from None
    for field in table.schema:
        found = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
        if field.name in (sql_types or {}) and found and found not in sql_types[field.name][2]:
            config_key, meaning, _, cast = sql_types[field.name]
            raise InputError(
                f"{what} query on '{location}': column '{field.name}' ({config_key}) is of SQL type {found}, not {meaning}. "
                f"Cast it in {_QUERY_KEYS[what].split(' / ')[0]} (e.g. {field.name}::{cast}) "
                f"or point {config_key} at the right column"
            )
    frame = pl.from_arrow(_plain_columns(table))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_row_index(ROW_NUMBER, offset=1).select(
        pl.exclude(ROW_NUMBER), pl.lit(location, dtype=pl.String).alias(SOURCE_FILE), pl.col(ROW_NUMBER).cast(pl.Int64)
    )


def _plain_columns(table: Any) -> Any:
    """Arrow extension columns (PostgreSQL `numeric` comes as an opaque extension over its decimal text) as their
    storage, so validation parses them like any text."""
    import pyarrow as pa

    columns = [c.cast(c.type.storage_type) if isinstance(c.type, pa.BaseExtensionType) else c for c in table.columns]
    return pa.table(columns, names=table.column_names)


#: Rows the pre-flight check reads from the first file of each input.
PREFLIGHT_ROWS = 200


def preflight(cfg: BuffercastConfig) -> None:
    """Check the inputs and the output folder before any server or stage starts: each input exists, has a known
    format, and its first rows have the configured columns with usable types (`pipeline.raw.check_columns`: the
    column and type checks the rows' validation starts with, without pandera and its 2 s import); the output folder is writable with
    `output.min_free_mb` free (`flows.publish.check_output_folder`); a credential the tracking URI references is set.
    A bad input fails here in a second or two, with the same one-line InputError the run would give; a store that
    does not answer (OSError) is left to the pull task, which retries it."""
    try:  # in the run's order: both inputs read (pull), then validated
        sales = read_sales(cfg.input, cfg.as_of, n_rows=PREFLIGHT_ROWS)
        master = read_sku_master(cfg.input, cfg.as_of, n_rows=PREFLIGHT_ROWS)
        check_columns(cfg, sales, master)
    except OSError:
        pass
    check_output_folder(cfg.output.folder, cfg.output.min_free_mb)
    resolve(cfg.tracking.uri, key="tracking.uri")  # a credential it references must be there (SecretError)


def read_table(location: str, *, what: str, n_rows: int | None = None, separator: str = ",") -> pl.DataFrame:
    """Read a Parquet or CSV file, or every such file in a folder, from a path or fsspec URL.

    CSV columns are all read as String so that unparseable values reach validation; Parquet
    keeps its types. Adds `_source_file` and `_row_number` (1-based, header excluded).
    Files in a folder are read in name order; hidden files and folders are skipped. `n_rows`: only the first rows of
    the first file (a look at the input, `preflight`). `separator`: of CSV fields (`input.csv_separator`).
    """
    key = _CONFIG_KEYS.get(what, what)
    try:
        fs, root = url_to_fs(resolve(location, key=key))  # `location` may reference a credential: never shown resolved
        is_dir = fs.isdir(root)
        exists = is_dir or fs.exists(root)
    except SecretError as exc:
        raise InputError(str(exc)) from None
    except (ValueError, ImportError) as exc:  # an unknown protocol or a missing fsspec driver; OSError is retried
        raise InputError(f"{what} location '{location}' cannot be opened: {_short(exc)}") from None
    except OSError as exc:  # a store that does not answer: retried by the pull task, its message without secrets
        raise OSError(f"{what} location '{location}': {_short(exc)}") from None
    if not exists:
        raise InputError(f"{what} file '{location}' not found{_config_hint(what)}")
    if not is_dir:
        fmt = _format(root)
        if fmt is None:
            raise InputError(f"{what} file '{location}' has an unknown extension: use {', '.join(_FORMATS)}")
        return _read_file(fs, root, location, fmt, what, n_rows, separator)

    files = _folder_files(fs, root)
    if not files:
        raise InputError(f"{what} folder '{location}' holds no .parquet or .csv file{_config_hint(what)}")
    formats = {_format(path) for path in files}
    if len(formats) > 1:
        raise InputError(f"{what} folder '{location}' mixes Parquet and CSV files: keep one format per folder")
    fmt = formats.pop()
    base = location.rstrip("/")
    labels = {path: f"{base}/{path[len(root) :].lstrip('/')}" for path in files}
    if n_rows is not None:  # a look: every file's header (columns and types must agree), the first file's first rows
        _concat({labels[path]: _read_file(fs, path, labels[path], fmt, what, 0, separator) for path in files}, location, what)
        first = files[0]
        return _read_file(fs, first, labels[first], fmt, what, n_rows, separator)
    tables = {labels[path]: _read_file(fs, path, labels[path], fmt, what, None, separator) for path in files}
    return _concat(tables, location, what)


def input_fingerprint(*locations: str | None) -> str | None:
    """A cheap identity of what `read_table` would read from these locations: every file's path, size and
    modification/change times (or ETag, on object stores), and this module's code, hashed. Same files and code,
    same fingerprint; a file rewritten, added or removed changes it. None when a location cannot be listed
    (then nothing may be cached: the read itself raises the precise error, or reads fresh data).
    """
    described: list = [hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]
    keys = ("size", "mtime", "created", "LastModified", "last_modified", "ETag", "etag")
    for location in locations:
        if location is None:
            described.append(None)
            continue
        if is_database(location):
            return None  # a query's rows can change with no file to look at: read every time
        try:
            fs, root = url_to_fs(resolve(location))
            files = _folder_files(fs, root) if fs.isdir(root) else [root]
            infos = [fs.info(path) for path in files]
        except (OSError, ValueError, ImportError):
            return None
        described.append([location, [[path, *[str(info.get(k)) for k in keys]] for path, info in zip(files, infos, strict=True)]])
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def _read_file(
    fs: AbstractFileSystem, path: str, label: str, fmt: str, what: str, n_rows: int | None = None, separator: str = ","
) -> pl.DataFrame:
    """One file with its provenance columns; `label` is how messages and `_source_file` name it; `n_rows`: its first
    rows only."""
    try:
        with fs.open(path, "rb") as handle:
            if fmt == "csv":
                table = pl.read_csv(
                    handle, infer_schema=False, separator=separator, row_index_name=ROW_NUMBER, row_index_offset=1, n_rows=n_rows
                )
            else:
                table = pl.read_parquet(handle, n_rows=n_rows).with_row_index(ROW_NUMBER, offset=1)
    except pl.exceptions.NoDataError:
        raise InputError(f"{what} file '{label}' is empty: export it again with a header row and the data{_config_hint(what)}") from None
    except (pl.exceptions.PolarsError, ValueError) as exc:
        # Content that does not parse is bad input; an OSError (a flaky mount or store) propagates, to be retried.
        if fmt == "csv":
            _check_first_line(fs, path, label, what, separator)
        raise _unreadable(what, label, fmt, exc) from None
    if fmt == "csv":
        _check_header(table, label, what)
        if len(table.columns) == 2:  # one column besides the row number: maybe another separator
            _check_first_line(fs, path, label, what, separator)
    if table.height == 0 and n_rows != 0:
        raise InputError(f"{what} file '{label}' has a header but no rows: export it again with the data{_config_hint(what)}")
    return _with_provenance(table, label)


_Table = TypeVar("_Table", pl.DataFrame, pl.LazyFrame)


def _with_provenance(table: _Table, label: str) -> _Table:
    """The file's columns, then `_source_file` (`label`) and `_row_number` (1-based, read with the rows)."""
    return table.select(pl.exclude(ROW_NUMBER), pl.lit(label, dtype=pl.String).alias(SOURCE_FILE), pl.col(ROW_NUMBER).cast(pl.Int64))


#: polars' name for the second of two columns with the same header: `<name>_duplicated_<k>`.
_DUPLICATED = re.compile(r"^(?P<name>.*)_duplicated_\d+$")
_OTHER_SEPARATORS = (";", "\t", "|")


def _check_header(table: pl.DataFrame, label: str, what: str) -> None:
    """A header that names a column twice, or that is not text, is an error."""
    columns = [c for c in table.columns if c != ROW_NUMBER]
    if any(ch == "\ufffd" or (ord(ch) < 32 and ch != "\t") for c in columns for ch in c):
        raise InputError(f"{what} file '{label}' is not a CSV text file (its first bytes are binary): point the config at the data file")
    repeated = sorted({m["name"] for c in columns if (m := _DUPLICATED.match(c)) and m["name"] in columns})
    if repeated:
        names = ", ".join(f"'{name}'" for name in repeated)
        raise InputError(f"{what} file '{label}' has the column {names} more than once in its header: remove or rename the copies")


def _check_first_line(fs: AbstractFileSystem, path: str, label: str, what: str, separator: str) -> None:
    """InputError when the header line has no `separator` but another one (`;`, tab, `|`): the config's is wrong."""
    with fs.open(path, "rb") as handle:
        header = handle.readline(65536).decode("utf-8", errors="replace")
    if separator in header:
        return
    used = next((s for s in _OTHER_SEPARATORS if s in header), None)
    if used is not None:
        shown = "\\t" if used == "\t" else used
        raise InputError(
            f"{what} file '{label}' has no '{separator}' in its header line but '{shown}': its fields look separated by "
            f"'{shown}'. Set input.csv_separator: '{shown}' in your config."
        )


def _folder_files(fs: AbstractFileSystem, root: str) -> list[str]:
    """Parquet/CSV files under `root`, recursively, sorted by path, skipping hidden names."""
    return sorted(
        path for path in fs.find(root) if _format(path) and not any(part.startswith(".") for part in path[len(root) :].split("/"))
    )


def _concat(tables: dict[str, pl.DataFrame], location: str, what: str) -> pl.DataFrame:
    """Stack the files of a folder (label -> table); they must have the same columns, in any order."""
    (first_label, first), *rest = tables.items()
    for label, table in rest:
        if set(table.columns) != set(first.columns):
            missing = ", ".join(sorted(set(first.columns) - set(table.columns))) or "none"
            extra = ", ".join(sorted(set(table.columns) - set(first.columns))) or "none"
            raise InputError(
                f"{what} folder '{location}': '{label}' has other columns than '{first_label}'"
                f" (missing: {missing}; extra: {extra}): give every file the same columns"
            )
    try:
        return pl.concat([table.select(first.columns) for table in tables.values()], how="vertical_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{what} folder '{location}': files have clashing column types: {_short(exc)}") from None


def _format(path: str) -> str | None:
    name = path.lower()
    return next((fmt for ext, fmt in _FORMATS.items() if name.endswith(ext)), None)


def _config_hint(what: str) -> str:
    key = _CONFIG_KEYS.get(what)
    return f" ({key} in the config)" if key else ""


def _short(exc: BaseException) -> str:
    """The first line of an exception message, at most 200 characters."""
    lines = [line.strip() for line in redact(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
