"""The only writer of buffercast's outputs: Hive-partitioned Parquet tables and the run manifest.

Layout under the output folder:

    <table>/as_of=YYYY-MM-DD/part-0.parquet     one partition per as-of date and table
    reports/as_of=YYYY-MM-DD/report.html         the planner's weekly report
    manifests/as_of=YYYY-MM-DD/manifest.json     what the run read, wrote and where it is tracked

Publishing is all or nothing, even when the process is killed (kill -9, power to the container) at any instant:

1. every partition and the manifest are written to `_staging/<run_id>/new/` (outside every table's dataset root, so
   readers never see them); a kill here leaves only that folder, which the next run removes;
2. a journal (`_staging/<run_id>/journal.json`, fsynced) records that the staging is complete and what it swaps;
3. the as-of's manifest is taken away first, then each staged partition replaces its predecessor (renames, parked in
   `_staging/<run_id>/old/`), and the new manifest is put in place last. A reader who follows the manifest finds
   either the complete old as-of or, once the manifest is back, the complete new one, never a mix;
4. a kill after the journal is rolled forward by the next run into that folder (or `buffercast recover`): the swap
   is finished from the staged copies, the parked ones are removed. `recover` runs under the output folder's lock.

One run at a time publishes into an output folder: `output_lock` (an advisory lock on `<folder>/.buffercast.lock`,
released by the kernel if the holder dies) makes a second run wait `output.lock_wait_seconds`, then fail, naming
the holder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import polars as pl

STAGING = "_staging"
MANIFESTS = "manifests"
REPORTS = "reports"
EVALUATIONS = "evaluations"  # `buffercast evaluate` publishes under <output folder>/evaluations/, its own dataset root
SCHEMAS = "schemas"
JOURNAL = "journal.json"
LATEST = "latest.json"  # manifests/latest.json: the newest complete as-of, for readers who do not list folders
LOCK_FILE = ".buffercast.lock"
#: <output folder>/_pulled/<key>/: the raw inputs as the pull read them, handed to the validation as files (never
#: through Prefect's result store, which would pickle and base64 the whole sales history).
PULLED = "_pulled"
#: <output folder>/_work/<run id>/: each partition's frames between a run's stages (`ParquetStore`), removed when the
#: run ends; what a killed run left there is removed by the next one (`recover`).
WORK = "_work"


class PublishError(RuntimeError):
    """The output folder cannot take the outputs (not writable, full, locked by another run): one line, what to do."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `target` for the block to write; when the block ends it is fsynced, made readable by
    all (0644: mkstemp makes 0600) and renamed over `target` (atomic on one filesystem); if the block fails it is
    removed and `target` is untouched. The one way a single file is written (the report, the sample data); a run's
    tables go through `publish_tables`' staging folder instead, all or nothing."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def partition_dir(root: Path, table: str, as_of: dt.date) -> Path:
    return root / table / f"as_of={as_of.isoformat()}"


def manifest_path(root: Path, as_of: dt.date) -> Path:
    return partition_dir(root, MANIFESTS, as_of) / "manifest.json"


def _mkdir_public(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


#: Rows per Parquet row group of a published table: fixed, so that a table's file is the same, byte for byte, whether it
#: was written from a frame or streamed from the partitions' files (polars' sink otherwise cuts its row groups where
#: its input files end).
ROW_GROUP_ROWS = 262_144


def parquet_rows(path: Path) -> int:
    """The rows of a Parquet file, from its footer."""
    import pyarrow.parquet as pq  # here: not on the CLI's start-up path

    return pq.read_metadata(path).num_rows


def write_table(frame: pl.DataFrame | pl.LazyFrame, path: Path) -> int:
    """A table to one Parquet file (a LazyFrame streamed, never held whole); returns its rows."""
    if isinstance(frame, pl.LazyFrame):
        frame.sink_parquet(path, statistics=True, row_group_size=ROW_GROUP_ROWS)
        return parquet_rows(path)
    frame.write_parquet(path, statistics=True, row_group_size=ROW_GROUP_ROWS)
    return frame.height


def publish_tables(
    root: str | Path,
    as_of: dt.date,
    run_id: str,
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    manifest: Mapping[str, Any],
    documents: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write every table's as-of partition, the documents and the manifest, all or nothing; returns name -> path.
    A table given as a LazyFrame (the long per-SKU tables of a partitioned run) is streamed to its file.

    `documents` (file name -> text, e.g. the HTML report) go to `reports/as_of=YYYY-MM-DD/`; the JSON Schema of each
    contract table (`pipeline.contracts.json_schema`) to `schemas/as_of=YYYY-MM-DD/<table>.schema.json`, so every
    partition comes with the contract it was written under. The manifest gets `tables` (path and row count
    per table), `schemas` (the JSON Schema file per table) and `schema_version` added. A disk that fills up
    raises PublishError naming the file; the previous outputs are untouched.
    """
    from pipeline.contracts import CONTRACTS, SCHEMA_VERSION, json_schema_text  # pandera: not for the CLI's pre-flight look

    root = Path(root).resolve()
    stage = root / STAGING / run_id
    if stage.exists():
        shutil.rmtree(stage)
    written: dict[str, str] = {}
    try:
        rows: dict[str, int] = {}
        with _naming_the_file() as writing:
            for name, frame in tables.items():
                part = stage / "new" / name / f"as_of={as_of.isoformat()}"
                _mkdir_public(part)
                rows[name] = write_table(frame, writing(part / "part-0.parquet"))
                written[name] = str(partition_dir(root, name, as_of))
                pause_point(f"staged:{name}")
            if documents:
                part = stage / "new" / REPORTS / f"as_of={as_of.isoformat()}"
                _mkdir_public(part)
                for file_name, text in documents.items():
                    writing(part / file_name).write_text(text, encoding="utf-8")
                    written[file_name] = str(partition_dir(root, REPORTS, as_of) / file_name)
            contracts = [name for name in tables if name in CONTRACTS]
            schema_files = {name: partition_dir(root, SCHEMAS, as_of) / f"{name}.schema.json" for name in contracts}
            if contracts:
                part = stage / "new" / SCHEMAS / f"as_of={as_of.isoformat()}"
                _mkdir_public(part)
                for name in contracts:
                    writing(part / schema_files[name].name).write_text(json_schema_text(name), encoding="utf-8")
                written[SCHEMAS] = str(partition_dir(root, SCHEMAS, as_of))
            full_manifest = {
                **manifest,
                "schema_version": SCHEMA_VERSION,
                "as_of": as_of.isoformat(),
                "tables": {name: {"path": written[name], "rows": rows[name]} for name in tables},
                "schemas": {name: str(path) for name, path in schema_files.items()},
            }
            writing(stage / "manifest.json").write_text(json.dumps(full_manifest, indent=2, sort_keys=True, default=str))
            names = [*tables, *([REPORTS] if documents else []), *([SCHEMAS] if contracts else [])]
            _write_journal(stage, {"run_id": run_id, "as_of": as_of.isoformat(), "names": names, "state": "swapping"})
        pause_point("journal")
        try:
            _roll_forward(root, stage)
        except BaseException:
            _write_journal(stage, {**_read_journal(stage), "state": "rolling_back"})
            _roll_back(root, stage)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_if_empty(root / STAGING)
    return written


def _write_journal(stage: Path, journal: Mapping[str, Any]) -> None:
    """The journal, atomically and durably: once it exists, the staging is complete and the swap may be finished."""
    tmp = stage / f".{JOURNAL}.tmp"
    with tmp.open("w") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, stage / JOURNAL)
    _fsync_dir(stage)


def _read_journal(stage: Path) -> dict[str, Any]:
    return json.loads((stage / JOURNAL).read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _roll_forward(root: Path, stage: Path) -> None:
    """Finish the swap of the journal in `stage` from wherever it stopped (idempotent: a kill inside it is finished by
    the next call): the as-of's manifest away first, each staged partition into place (its predecessor parked in
    `old/`), the new manifest last."""
    journal = _read_journal(stage)
    as_of = dt.date.fromisoformat(journal["as_of"])
    old = stage / "old"
    old.mkdir(exist_ok=True)
    final_manifest = manifest_path(root, as_of)
    if (stage / "manifest.json").exists() and final_manifest.exists():
        os.replace(final_manifest, old / "manifest.json")  # from here until the end, the as-of has no manifest
    pause_point("swap:manifest-removed")
    for name in journal["names"]:
        target = partition_dir(root, name, as_of)
        staged = stage / "new" / name / target.name
        if not staged.exists():
            continue  # already swapped
        _mkdir_public(target.parent)
        if target.exists():
            parked = old / name
            if parked.exists():
                shutil.rmtree(target)
            else:
                target.rename(parked)
        pause_point(f"swap:{name}:parked")
        staged.rename(target)
        pause_point(f"swap:{name}")
    if (stage / "manifest.json").exists():
        _mkdir_public(final_manifest.parent)
        os.replace(stage / "manifest.json", final_manifest)
    _point_latest(root, as_of)


def _point_latest(root: Path, as_of: dt.date) -> None:
    """`manifests/latest.json` names the newest as-of whose manifest is in place (a rerun of an older as-of leaves it);
    written atomically after that manifest, so what it names is always complete."""
    from pipeline.contracts import SCHEMA_VERSION

    current = latest_as_of(root)
    if current is not None and current > as_of:
        return
    with atomic_path(root / MANIFESTS / LATEST) as tmp:
        pointer = {"as_of": as_of.isoformat(), "manifest": str(manifest_path(root, as_of)), "schema_version": SCHEMA_VERSION}
        tmp.write_text(json.dumps(pointer, indent=2) + "\n")


def latest_as_of(root: str | Path) -> dt.date | None:
    """The newest complete as-of of an output folder, from `manifests/latest.json` (None before the first run)."""
    try:
        return dt.date.fromisoformat(json.loads((Path(root) / MANIFESTS / LATEST).read_text())["as_of"])
    except (OSError, ValueError, KeyError):
        return None


def _roll_back(root: Path, stage: Path) -> None:
    """Undo a swap that failed with an exception (not a kill): each parked partition and the old manifest back."""
    journal = _read_journal(stage)
    as_of = dt.date.fromisoformat(journal["as_of"])
    old = stage / "old"
    for name in reversed(journal["names"]):
        target, parked = partition_dir(root, name, as_of), old / name
        if parked.exists():
            if target.exists():
                shutil.rmtree(target)
            parked.rename(target)
    if (old / "manifest.json").exists():
        _mkdir_public(manifest_path(root, as_of).parent)
        os.replace(old / "manifest.json", manifest_path(root, as_of))


def recover(root: str | Path) -> list[str]:
    """Bring the output folder back to a consistent state after runs that were killed; what was done, one line each.

    A staging folder without a journal was cut short before anything was published: removed. One with a journal
    was killed during its swap: rolled forward to the new outputs (or back, if it was already rolling back), then
    removed. Call with the folder's lock held (`output_lock`), so no live run's staging is touched.
    """
    root = Path(root).resolve()
    staging = root / STAGING
    done: list[str] = []
    work = root / WORK
    if work.is_dir():
        for left in sorted(work.iterdir()):
            shutil.rmtree(left, ignore_errors=True)
            done.append(f"removed the work folder of run {left.name}, which did not finish")
        _remove_if_empty(work)
    if not staging.is_dir():
        return done
    for stage in sorted(p for p in staging.iterdir() if p.is_dir()):
        if not (stage / JOURNAL).exists():
            shutil.rmtree(stage)
            done.append(f"removed the staging of run {stage.name}, interrupted before it published anything")
            continue
        journal = _read_journal(stage)
        if journal.get("state") == "rolling_back":
            _roll_back(root, stage)
            done.append(f"rolled back run {stage.name} (as of {journal['as_of']}): its previous outputs are restored")
        else:
            _roll_forward(root, stage)
            done.append(f"finished publishing run {stage.name} (as of {journal['as_of']}), interrupted during its swap")
        shutil.rmtree(stage)
    _remove_if_empty(staging)
    return done


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


#: errno values that mean the disk (or the user's quota or file-size limit) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def _naming_the_file() -> Iterator[Any]:
    """`writing(path)` marks the file being written; an OSError (a full disk, a quota) becomes a PublishError that
    names it."""
    current: list[Path] = []

    def writing(path: Path) -> Path:
        current[:] = [path]
        return path

    try:
        yield writing
    except (OSError, pl.exceptions.ComputeError) as exc:  # polars reports its own writes' OS errors as a ComputeError
        if isinstance(exc, pl.exceptions.ComputeError) and "os error" not in str(exc):
            raise
        where = current[0] if current else "the staging folder"
        code = getattr(exc, "errno", None)
        full = code in _FULL or any(f"(os error {c})" in str(exc) for c in _FULL)
        what = "no space left on the device" if full else (getattr(exc, "strerror", None) or str(exc).splitlines()[0])
        raise PublishError(
            f"could not write {where}: {what}; nothing was published, the previous outputs are untouched"
            + (". Free some space on that disk (or set output.folder elsewhere) and run again" if full else "")
        ) from None


def write_pulled(root: str | Path, key: str, tables: Mapping[str, pl.DataFrame | pl.LazyFrame | None], keep_hours: float) -> Path:
    """Write the raw inputs a pull read to `<root>/_pulled/<key>/<name>.parquet` (a LazyFrame streamed, never held
    whole), replacing that snapshot whole (a new folder renamed into place: a reader finds the old one or the new
    one); snapshots of other keys untouched for `keep_hours` (at least an hour) are removed. A full disk is a
    PublishError naming the file, and so is any OS error while a LazyFrame streams (its source's too); a source that
    does not parse raises polars' error (the caller words it)."""
    base = Path(root) / PULLED
    base.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
    try:
        with _naming_the_file() as writing:
            for name, frame in tables.items():
                if frame is not None:
                    write_table(frame, writing(fresh / f"{name}.parquet"))
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    target, old = base / key, base / f".{key}-old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    cutoff = time.time() - max(keep_hours, 1.0) * 3600
    for other in base.iterdir():
        if other.name != key and other.stat().st_mtime < cutoff:
            shutil.rmtree(other, ignore_errors=True)
    return target


class ParquetStore:
    """A `pipeline.partitioned.PartitionStore` on disk: partition i's frame `name` in
    `<folder>/part-<i>/<name>.parquet`. A full disk is a PublishError naming the file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, path: Path) -> Path:
        """A hard link to `path` in the store's folder (a copy where links are not possible): the run reads that file
        for as long as it runs, whatever another run does to the original (a pulled snapshot replaced or removed)."""
        kept = self.folder / f"kept-{path.name}"
        kept.unlink(missing_ok=True)
        with _naming_the_file() as writing:
            try:
                os.link(path, writing(kept))
            except OSError:
                shutil.copyfile(path, writing(kept))
        return kept

    def _path(self, part: int, name: str) -> Path:
        return self.folder / f"part-{part:05d}" / f"{name}.parquet"

    def put(self, part: int, name: str, frame: pl.DataFrame) -> None:
        path = self._path(part, name)
        with _naming_the_file() as writing:
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(writing(path), compression="lz4", statistics=False)

    def get(self, part: int, name: str) -> pl.DataFrame:
        return pl.read_parquet(self._path(part, name))

    def scan(self, name: str, parts: int) -> pl.LazyFrame:
        return pl.scan_parquet([self._path(i, name) for i in range(parts)])


@contextlib.contextmanager
def work_store(root: str | Path, run_id: str) -> Iterator[ParquetStore]:
    """The run's `ParquetStore` in `<root>/_work/<run_id>/`, removed when the block ends (a killed run's is removed
    by the next run's `recover`)."""
    folder = Path(root).resolve() / WORK / run_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield ParquetStore(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(folder.parent)


def pause_point(name: str) -> None:
    """Tests only: when BUFFERCAST_PAUSE_AT names this point, write it to BUFFERCAST_PAUSE_FILE and wait to be killed
    (the kill -9 tests of tests/test_faults.py stop a run exactly here). Does nothing otherwise."""
    if os.environ.get("BUFFERCAST_PAUSE_AT") != name:
        return
    Path(os.environ["BUFFERCAST_PAUSE_FILE"]).write_text(f"{os.getpid()} {name}\n")
    while True:
        time.sleep(60)


def check_output_folder(root: str | Path, min_free_mb: float) -> Path:
    """Before any compute: the output folder exists (created if need be), is writable and its disk has `min_free_mb`
    free; else PublishError saying what to do."""
    root = Path(root).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PublishError(
            f"output folder '{root}' is not writable ({exc.strerror or exc}): choose another output.folder (--out) or fix its permissions"
        ) from None
    free_mb = shutil.disk_usage(root).free / 1e6
    if free_mb < min_free_mb:
        raise PublishError(
            f"output folder '{root}' has {free_mb:,.0f} MB free, less than output.min_free_mb ({min_free_mb:,.0f} MB): "
            "free some space or choose another output.folder (--out)"
        )
    return root


@contextlib.contextmanager
def output_lock(root: str | Path, wait_seconds: float = 0.0) -> Iterator[list[str]]:
    """Hold the output folder's lock for the block (one run at a time publishes into a folder); yields what `recover`
    did on entry. Waits up to `wait_seconds` for another holder, then raises PublishError naming it. The lock is a
    kernel advisory lock: a holder killed with -9 releases it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    handle = path.open("a+")
    try:
        if not lock_within(handle, wait_seconds):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PublishError(
                f"output folder '{root}' is in use by another buffercast run ({holder}): wait for it to finish, "
                "or set output.lock_wait_seconds to wait, or use another output.folder (--out)"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now().isoformat(timespec='seconds')}\n")
        handle.flush()
        yield recover(root)
    finally:
        handle.close()  # releases the lock


def lock_within(handle: IO[str], wait_seconds: float) -> bool:
    """Take the kernel's exclusive advisory lock on an open file, waiting up to `wait_seconds`; False if another
    process still holds it then (the kernel releases a lock whose holder died, even by kill -9)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))


def read_table(root: str | Path, table: str, as_of: dt.date | None = None) -> pl.DataFrame:
    """Read a published table (all as-of partitions, or one)."""
    base = Path(root) / table
    path = partition_dir(Path(root), table, as_of) if as_of else base
    return pl.scan_parquet(f"{path}/**/*.parquet", hive_partitioning=as_of is None).collect()


def published_as_of_dates(root: str | Path, table: str = "recommendations") -> list[dt.date]:
    """The as-of dates a table has a partition for, oldest first."""
    base = Path(root) / table
    if not base.is_dir():
        return []
    return sorted(dt.date.fromisoformat(p.name.removeprefix("as_of=")) for p in base.iterdir() if p.name.startswith("as_of="))


def previous_as_of(root: str | Path, as_of: dt.date, table: str = "recommendations") -> dt.date | None:
    """The latest published as-of date before `as_of`, if any: what a run compares itself with."""
    earlier = [d for d in published_as_of_dates(root, table) if d < as_of]
    return earlier[-1] if earlier else None


def read_manifest(root: str | Path, as_of: dt.date) -> dict[str, Any]:
    return json.loads(manifest_path(Path(root), as_of).read_text())


def write_report(path: str | os.PathLike[str], html_text: str) -> Path:
    """Write the HTML report on its own, atomically; the resolved path."""
    with atomic_path(path) as tmp:
        tmp.write_text(html_text, encoding="utf-8", newline="\n")
    return Path(path).resolve()
