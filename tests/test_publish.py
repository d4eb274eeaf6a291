"""Atomic, partitioned publishing: all tables or none, reruns replace their partition."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import polars as pl
import pytest

from flows.publish import LATEST, MANIFESTS, latest_as_of, manifest_path, publish_tables, read_manifest, read_table

D1, D2 = dt.date(2026, 1, 4), dt.date(2026, 1, 11)


def tables(as_of: dt.date, value: int) -> dict[str, pl.DataFrame]:
    return {
        "recommendations": pl.DataFrame({"as_of": [as_of] * 2, "sku_id": ["a", "b"], "safety_stock_units": [float(value), 2.0]}),
        "forecasts": pl.DataFrame({"as_of": [as_of], "sku_id": ["a"], "forecast": [float(value)]}),
    }


def test_publish_writes_partitions_and_manifest(tmp_path):
    paths = publish_tables(tmp_path, D1, "r1", tables(D1, 1), {"run_id": "r1"})
    assert paths["recommendations"] == str(tmp_path / "recommendations" / f"as_of={D1}")
    part = tmp_path / "recommendations" / f"as_of={D1}"
    assert [p.name for p in part.iterdir()] == ["part-0.parquet"]
    assert stat.S_IMODE(part.stat().st_mode) == 0o755
    manifest = read_manifest(tmp_path, D1)
    assert manifest["run_id"] == "r1" and manifest["schema_version"] == 3 and manifest["as_of"] == D1.isoformat()
    assert manifest["tables"]["recommendations"] == {"path": paths["recommendations"], "rows": 2}
    assert not (tmp_path / "_staging").exists()


def test_rerun_replaces_and_other_dates_accumulate(tmp_path):
    publish_tables(tmp_path, D1, "r1", tables(D1, 1), {"run_id": "r1"})
    publish_tables(tmp_path, D1, "r2", tables(D1, 5), {"run_id": "r2"})
    publish_tables(tmp_path, D2, "r3", tables(D2, 9), {"run_id": "r3"})
    everything = read_table(tmp_path, "recommendations").sort("as_of", "sku_id")
    assert everything.select("as_of", "safety_stock_units").rows() == [(D1, 5.0), (D1, 2.0), (D2, 9.0), (D2, 2.0)]
    assert read_manifest(tmp_path, D1)["run_id"] == "r2"
    hive = pl.scan_parquet(f"{tmp_path}/recommendations/**/*.parquet", hive_partitioning=True).filter(pl.col("as_of") == D2)
    assert hive.collect().height == 2


def test_a_failed_publish_leaves_the_previous_outputs_untouched(tmp_path):
    publish_tables(tmp_path, D1, "r1", tables(D1, 1), {"run_id": "r1"})
    before = {name: read_table(tmp_path, name, D1) for name in ("recommendations", "forecasts")}
    manifest_before = manifest_path(tmp_path, D1).read_text()
    broken = tables(D1, 7)
    # An Object column cannot be written to Parquet: the second table fails after the first was staged.
    broken["forecasts"] = broken["forecasts"].with_columns(pl.Series("bad", [object()], dtype=pl.Object))
    with pytest.raises(Exception):  # noqa: B017 - whatever polars raises, nothing may be half-published
        publish_tables(tmp_path, D1, "r2", broken, {"run_id": "r2"})
    for name, frame in before.items():
        assert read_table(tmp_path, name, D1).equals(frame)
    assert manifest_path(tmp_path, D1).read_text() == manifest_before
    assert not (tmp_path / "_staging").exists()
    # and a fresh date that failed leaves no trace at all
    with pytest.raises(Exception):  # noqa: B017
        publish_tables(tmp_path, D2, "r3", broken, {"run_id": "r3"})
    assert not (tmp_path / "recommendations" / f"as_of={D2}").exists()
    assert not manifest_path(tmp_path, D2).exists()


@pytest.mark.parametrize("blocked", ["forecasts", "manifests"])
def test_a_fault_during_the_swap_rolls_every_table_back(tmp_path, blocked):
    """A real fault half-way through the renames: a file squats where a table's (or the manifest's) folder goes."""
    first = {"recommendations": tables(D1, 1)["recommendations"]}
    publish_tables(tmp_path, D1, "r1", first, {"run_id": "r1"})
    before = read_table(tmp_path, "recommendations", D1)
    manifest_before = manifest_path(tmp_path, D1).read_text()
    if blocked == "manifests":
        manifest_path(tmp_path, D1).parent.parent.rename(tmp_path / "manifests-saved")
    (tmp_path / blocked).write_text("in the way")
    with pytest.raises(OSError):
        publish_tables(tmp_path, D1, "r2", tables(D1, 7), {"run_id": "r2"})
    assert read_table(tmp_path, "recommendations", D1).equals(before)  # the first table's swap was undone
    assert not (tmp_path / "_staging").exists()
    if blocked == "manifests":
        (tmp_path / "manifests").unlink()
        (tmp_path / "manifests-saved").rename(tmp_path / "manifests")
    assert manifest_path(tmp_path, D1).read_text() == manifest_before


def test_latest_names_the_newest_complete_as_of(tmp_path):
    assert latest_as_of(tmp_path) is None
    publish_tables(tmp_path, D2, "r1", tables(D2, 1), {"run_id": "r1"})
    assert latest_as_of(tmp_path) == D2
    publish_tables(tmp_path, D1, "r2", tables(D1, 1), {"run_id": "r2"})  # a rerun of an older as-of
    assert latest_as_of(tmp_path) == D2
    pointer = json.loads((tmp_path / MANIFESTS / LATEST).read_text())
    assert pointer["manifest"] == str(manifest_path(tmp_path, D2)) and read_manifest(tmp_path, D2)["run_id"] == "r1"


def test_the_run_keeps_its_own_link_to_the_pulled_sales(tmp_path: Path) -> None:
    """The validation reads the pulled snapshot several times: through the run's own link, which outlives another
    run replacing or removing the snapshot."""
    from flows.publish import ParquetStore

    snapshot = tmp_path / "_pulled" / "latest" / "sales.parquet"
    snapshot.parent.mkdir(parents=True)
    pl.DataFrame({"x": [1, 2]}).write_parquet(snapshot)
    store = ParquetStore(tmp_path / "_work" / "run")
    store.folder.mkdir(parents=True)
    kept = store.keep(snapshot)
    pl.DataFrame({"x": [9]}).write_parquet(snapshot.with_suffix(".new"))
    snapshot.with_suffix(".new").replace(snapshot)  # another run's snapshot in its place
    assert pl.read_parquet(kept)["x"].to_list() == [1, 2]
    snapshot.unlink()
    assert pl.read_parquet(kept)["x"].to_list() == [1, 2] and kept.parent == store.folder
