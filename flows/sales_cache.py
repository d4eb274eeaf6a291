"""The pull of the sales history, incremental from a database: a local Parquet cache with a watermark.

Without `input.cache_folder`, the pull reads the whole history each run (`flows.sources.read_sales`). With it (a
`postgresql://` source only), the folder holds what was pulled so far:

    state.json                      the watermark (the latest date cached), what it was pulled from; written last
    month=2026-05/part-0.parquet    the rows as the query returned them, dated in that month (in `input.timezone`)
    month=none/part-0.parquet       the rows whose date is missing or unreadable (validation quarantines them)

A run fetches the rows dated on or after `watermark - input.correction_days` (`$2` of the query, bound, never
formatted into the SQL) and every cached row dated in that window is replaced by them: late rows arrive, corrected
rows replace the old ones, deleted rows go. Within the window the database is the truth; before it the cache is.

Everything is fetched again and the cache rebuilt on the first run, on `input.full_refresh` (`buffercast run
--full-refresh`), and when what the cache was pulled with changed (the location, table or query, the column names,
the time zone or date format, the columns' SQL types). The state file is removed before a rebuild and written after
every month is in place, each month file replaced atomically: a run cut short leaves either the old state, which the
next run repeats from, or none, and the next run fetches everything.

The pulled table is the same whichever way it was made: one row order (date, then every column), numbered in it.
Rows in = rows fetched + rows cached (the manifest's `input_rows`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from configs.schema import InputConfig
from flows.publish import lock_within
from flows.sources import read_sales
from pipeline.raw import ROW_NUMBER, SALES_REQUIRED, SOURCE_FILE, InputError, RawTable

#: Bumped when the cache's layout changes: an older cache is then rebuilt.
CACHE_FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = ".buffercast-cache.lock"
PART_FILE = "part-0.parquet"
NO_DATE = "none"
#: How long a run waits for another one pulling into the same cache folder.
LOCK_WAIT_SECONDS = 600.0

_KEY = "_cache_date"
_MONTH = "_cache_month"


@dataclass(frozen=True)
class PulledSales:
    """The raw sales history (with `_source_file`, `_row_number`) and where its rows came from."""

    raw: pl.DataFrame
    fetched: int  # rows the source returned this run
    cached: int  # rows taken from the cache (dated before the window); fetched + cached == raw.height
    note: str  # one line for the run's log


def pull_sales(cfg: InputConfig, as_of: dt.date | None) -> PulledSales:
    """The sales history as of `as_of`: read whole, or through `input.cache_folder` (see the module)."""
    if cfg.cache_folder is None:
        raw = read_sales(cfg, as_of)
        return PulledSales(raw, raw.height, 0, f"sales: {raw.height:,} rows read")
    folder = Path(cfg.cache_folder)
    folder.mkdir(parents=True, exist_ok=True)
    as_of = as_of or dt.date.today()
    with _locked(folder):
        return _pull_through(cfg, folder, as_of)


def _pull_through(cfg: InputConfig, folder: Path, as_of: dt.date) -> PulledSales:
    state = read_state(folder)
    identity = _identity(cfg)
    rebuild = _why_rebuild(cfg, state, identity)
    since: dt.date | None = None
    if rebuild is None:
        since = dt.date.fromisoformat(state["watermark"]) - dt.timedelta(days=cfg.correction_days)
        fetched = _without_lineage(read_sales(cfg, as_of, since=since))
        if _schema(fetched) != state["schema"]:
            rebuild, since = "the columns' SQL types changed", None
        else:
            _check_window(cfg, fetched, since)
    if rebuild is not None:
        (folder / STATE_FILE).unlink(missing_ok=True)  # a rebuild cut short leaves no watermark: the next run fetches all
        fetched = _without_lineage(read_sales(cfg, as_of))
        settled, touched, undated = fetched.head(0), _in_order(cfg, fetched), fetched.head(0)
        reopened = 0
    else:
        # The months before the window's are kept as they are: written in order, they need no sorting again. The
        # window's months are read, their rows before the window kept, and sorted again with the rows fetched.
        settled, reopened_rows, undated = _read_months(folder, fetched, since)
        reopened_rows = reopened_rows.filter(_date_key(cfg, reopened_rows) < since)
        touched = _in_order(cfg, pl.concat([reopened_rows, fetched], how="vertical"))
        reopened = reopened_rows.height
    _write_months(folder, touched, since)
    kept = settled.height + reopened + undated.height
    combined = pl.concat([settled, touched.drop(_KEY, _MONTH), undated], how="vertical")
    dated = touched[_KEY].drop_nulls()
    if not dated.len() and settled.height:
        dated = settled.select(_date_key(cfg, settled))[_KEY].drop_nulls()
    watermark = min(dated.max(), as_of) if dated.len() else None  # type: ignore[type-var]
    if watermark is not None:  # none: no dated row yet, the next run fetches everything again
        _write_state(
            folder,
            {
                "identity": identity,
                "watermark": watermark.isoformat(),
                "schema": _schema(fetched),
                "rows": combined.height,
                "last_pull": {
                    "as_of": as_of.isoformat(),
                    "fetched_from": since.isoformat() if since else None,
                    "rows_fetched": fetched.height,
                    "rows_cached": kept,
                    "rebuilt_because": rebuild,
                    "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
            },
        )
    if rebuild is not None:
        note = f"sales: {fetched.height:,} rows fetched, cache {folder} rebuilt ({rebuild})"
    else:
        note = (
            f"sales: {fetched.height:,} rows fetched dated {since} or later (watermark {state['watermark']} minus "
            f"{cfg.correction_days} correction days), {kept:,} rows from the cache {folder}"
        )
    raw = combined.with_columns(
        pl.lit(cfg.sales, dtype=pl.String).alias(SOURCE_FILE), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_NUMBER)
    )
    return PulledSales(raw, fetched.height, kept, note)


def _check_window(cfg: InputConfig, fetched: pl.DataFrame, since: dt.date) -> None:
    """The incremental fetch must hold only rows dated on or after `since`: a row before it (or undated) would be
    counted twice, once from the cache and once fetched."""
    key = _date_key(cfg, fetched)
    outside = fetched.filter(key.is_null() | (key < since))
    if outside.height:
        raise InputError(
            f"sales query on '{cfg.sales}' returned {outside.height} of {fetched.height} rows dated before {since} or undated, "
            f"when asked for the rows dated on or after $2 = {since}: with input.cache_folder, input.sales_query must keep "
            "only those (e.g. WHERE date >= $2)"
        )


def read_state(folder: str | Path) -> dict[str, Any] | None:
    """The cache's state file, or None when there is none (or it cannot be read: the cache is then rebuilt)."""
    try:
        return json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _identity(cfg: InputConfig) -> dict[str, Any]:
    """What the cached rows were pulled with: when any of it changes, the cache no longer holds what a fetch would."""
    return {
        "format": CACHE_FORMAT,
        "source": cfg.sales,  # as written: a credential stays its ${REFERENCE}
        "table": None if cfg.sales_query else cfg.sales_table,
        "query": cfg.sales_query,
        "columns": cfg.sales_columns.model_dump(),
        "timezone": cfg.timezone,
        "date_format": cfg.date_format,
    }


def _why_rebuild(cfg: InputConfig, state: dict[str, Any] | None, identity: dict[str, Any]) -> str | None:
    if cfg.full_refresh:
        return "full refresh asked for"
    if state is None:
        return "no cache yet"
    if state.get("identity") != identity:
        changed = sorted(k for k in identity if (state.get("identity") or {}).get(k) != identity[k])
        return f"pulled with another {', '.join(changed)}"
    return None


def _without_lineage(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop(SOURCE_FILE, ROW_NUMBER)


def _schema(frame: pl.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.schema.items()}


def _date_key(cfg: InputConfig, frame: pl.DataFrame) -> pl.Expr:
    """Each row's date as validation reads it (`RawTable.date`: time zones, formats); null when it has none."""
    table = RawTable.of(frame, cfg.sales_columns, required=SALES_REQUIRED, key="input.sales_columns", source="sales")
    return table.date("date", cfg.date_format, cfg.timezone).alias(_KEY)


def _in_order(cfg: InputConfig, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows with their date key and month, in one order that depends on the rows only: date, then every column."""
    sortable = [c for c, dtype in frame.schema.items() if not dtype.is_nested() and dtype != pl.Object]
    key = _date_key(cfg, frame)
    return (
        frame.with_columns(key)
        .with_columns(pl.col(_KEY).dt.strftime("%Y-%m").fill_null(NO_DATE).alias(_MONTH))
        .sort([_KEY, *sortable], nulls_last=True, maintain_order=True)
    )


def _month_files(folder: Path) -> dict[str, Path]:
    return {p.parent.name.removeprefix("month="): p for p in sorted(folder.glob(f"month=*/{PART_FILE}"))}


def _read_months(folder: Path, like: pl.DataFrame, since: dt.date) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The cached rows (columns as in `like`, the fetch that matched the cached schema): of the months before `since`'s
    (in order), of `since`'s month and later, and the undated ones."""
    first = since.strftime("%Y-%m")
    files = _month_files(folder)

    def read(months: list[str]) -> pl.DataFrame:
        frames = [pl.read_parquet(files[m]).select(like.columns) for m in months]
        return pl.concat(frames, how="vertical") if frames else like.head(0)

    dated = sorted(m for m in files if m != NO_DATE)
    return read([m for m in dated if m < first]), read([m for m in dated if m >= first]), read([NO_DATE] if NO_DATE in files else [])


def _write_months(folder: Path, combined: pl.DataFrame, since: dt.date | None) -> None:
    """Rewrite the months of `combined` (on a rebuild, `since` None: every month and the undated rows' file; else
    the months from `since`'s on), each replaced atomically; a month (from `since`'s on) left without rows is removed."""
    first = since.strftime("%Y-%m") if since else None
    touched = {m for m in combined[_MONTH].unique().to_list() if first is None or (m != NO_DATE and m >= first)}
    stale = {m for m in _month_files(folder) if first is None or (m != NO_DATE and m >= first)} - touched
    for month, part in combined.filter(pl.col(_MONTH).is_in(sorted(touched))).group_by(_MONTH, maintain_order=True):
        target = folder / f"month={month[0]}" / PART_FILE
        target.parent.mkdir(exist_ok=True)
        temporary = target.with_name(f".{PART_FILE}.tmp")
        part.drop(_KEY, _MONTH).write_parquet(temporary)
        os.replace(temporary, target)
    for month in stale:
        (folder / f"month={month}" / PART_FILE).unlink()
        (folder / f"month={month}").rmdir()


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    temporary = folder / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(temporary, folder / STATE_FILE)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One pull at a time into a cache folder (two configs may share one); a kernel lock, released if the holder dies."""
    with (folder / LOCK_FILE).open("a+") as handle:
        if not lock_within(handle, LOCK_WAIT_SECONDS):
            raise TimeoutError(f"the sales cache {folder} was held by another buffercast pull for {LOCK_WAIT_SECONDS:.0f} s")
        yield
