"""The only writer of buffercast's outputs: Hive-partitioned Parquet tables and the run manifest.

Layout under the output folder:

    <table>/as_of=YYYY-MM-DD/part-0.parquet     one partition per as-of date and table
    reports/as_of=YYYY-MM-DD/report.html         the planner's weekly report
    manifests/as_of=YYYY-MM-DD/manifest.json     what the run read, wrote and where it is tracked

A run stages every partition in `_staging/<run_id>/` (outside every table's dataset root, so readers
never see it), then swaps each into place with a rename and writes the manifest last. A crash before the
swap leaves the previous outputs untouched; a rerun for the same as-of date replaces its partitions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.contracts import CONTRACTS, SCHEMA_VERSION, json_schema

STAGING = "_staging"
MANIFESTS = "manifests"
REPORTS = "reports"
EVALUATIONS = "evaluations"  # `buffercast evaluate` publishes under <output folder>/evaluations/, its own dataset root
SCHEMAS = "schemas"


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


def publish_tables(
    root: str | Path,
    as_of: dt.date,
    run_id: str,
    tables: Mapping[str, pl.DataFrame],
    manifest: Mapping[str, Any],
    documents: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write every table's as-of partition, the documents and the manifest, all or nothing; returns name -> path.

    `documents` (file name -> text, e.g. the HTML report) go to `reports/as_of=YYYY-MM-DD/`; the JSON Schema of each
    contract table (`pipeline.contracts.json_schema`) to `schemas/as_of=YYYY-MM-DD/<table>.schema.json`, so every
    partition comes with the contract it was written under. The manifest gets `tables` (path and row count
    per table), `schemas` (the JSON Schema file per table) and `schema_version` added.
    """
    root = Path(root).resolve()
    stage = root / STAGING / run_id
    if stage.exists():
        shutil.rmtree(stage)
    written: dict[str, str] = {}
    try:
        for name, frame in tables.items():
            part = stage / "new" / name / f"as_of={as_of.isoformat()}"
            _mkdir_public(part)
            frame.write_parquet(part / "part-0.parquet", statistics=True)
            written[name] = str(partition_dir(root, name, as_of))
        if documents:
            part = stage / "new" / REPORTS / f"as_of={as_of.isoformat()}"
            _mkdir_public(part)
            for file_name, text in documents.items():
                (part / file_name).write_text(text, encoding="utf-8")
                written[file_name] = str(partition_dir(root, REPORTS, as_of) / file_name)
        contracts = [name for name in tables if name in CONTRACTS]
        schema_files = {name: partition_dir(root, SCHEMAS, as_of) / f"{name}.schema.json" for name in contracts}
        if contracts:
            part = stage / "new" / SCHEMAS / f"as_of={as_of.isoformat()}"
            _mkdir_public(part)
            for name in contracts:
                (part / schema_files[name].name).write_text(json.dumps(json_schema(name), indent=2) + "\n", encoding="utf-8")
            written[SCHEMAS] = str(partition_dir(root, SCHEMAS, as_of))
        full_manifest = {
            **manifest,
            "schema_version": SCHEMA_VERSION,
            "as_of": as_of.isoformat(),
            "tables": {name: {"path": written[name], "rows": tables[name].height} for name in tables},
            "schemas": {name: str(path) for name, path in schema_files.items()},
        }
        (stage / "manifest.json").write_text(json.dumps(full_manifest, indent=2, sort_keys=True, default=str))
        # Swap: every staged partition replaces its predecessor with a rename (atomic on one filesystem).
        _swap_into_place(root, as_of, [*tables, *([REPORTS] if documents else []), *([SCHEMAS] if contracts else [])], stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        staging_root = root / STAGING
        if staging_root.exists() and not any(staging_root.iterdir()):
            staging_root.rmdir()
    return written


def _swap_into_place(root: Path, as_of: dt.date, names: list[str], stage: Path) -> None:
    """Rename every staged partition into place, then the manifest; on any failure, put the old ones back."""
    (stage / "old").mkdir()
    swapped: list[tuple[Path, Path | None]] = []  # (target, where its predecessor was parked)
    try:
        for name in names:
            target = partition_dir(root, name, as_of)
            _mkdir_public(target.parent)
            parked = None
            if target.exists():
                parked = stage / "old" / name
                target.rename(parked)
            swapped.append((target, parked))
            (stage / "new" / name / target.name).rename(target)
        final_manifest = manifest_path(root, as_of)
        _mkdir_public(final_manifest.parent)
        os.replace(stage / "manifest.json", final_manifest)
    except BaseException:
        for target, parked in reversed(swapped):
            if target.exists():
                shutil.rmtree(target)
            if parked is not None:
                parked.rename(target)
        raise


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
