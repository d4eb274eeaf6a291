"""The pipeline over partitions of SKUs (`pipeline.partitioned`): the outputs are those of the run in one piece,
whatever the partition size, and a partition holds only its own series between stages.

The catalogue has what makes a partition differ from the whole: two locations of some SKUs (unique_id order is not
sku_id, location_id order), a series with no sale (left out), new SKUs without a backtest (they replay the longest
backtest span of the whole catalogue), intermittent and lumpy SKUs (bootstrap buffers and calibration), supplier
scenarios (sums over every SKU). The flow over partitions on a Dask cluster is in tests/test_dask.py.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.conftest import END

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue():
    from configs.schema import BuffercastConfig
    from flows.sample_data import generate_catalogue
    from pipeline.contracts import validate_inputs
    from pipeline.tables import sales_as_of

    sales, master = generate_catalogue(n_skus=34, seed=23, end_date=END, n_days=400)
    second = sales.filter(pl.col("sku_id") <= "SKU-00010").with_columns(
        location_id=pl.lit("DC-2"), quantity=pl.col("quantity") * 2, line_id=pl.col("line_id") + "-DC-2"
    )
    never_sold = pl.DataFrame({"sku_id": ["SKU-00003"], "date": [END], "quantity": [0.0], "line_id": ["never"], "location_id": ["DC-3"]})
    # Rows the validation quarantines, at the end of the input: a line id of its 6th row (so a repeat across chunks),
    # a negative quantity, no SKU, and four series whose every row fails (in partitions of 4, the last has no valid row).
    bad = pl.DataFrame(
        {
            "sku_id": ["SKU-00005", "SKU-00006", None, "SKU-99996", "SKU-99997", "SKU-99998", "SKU-99999"],
            "date": [END] * 7,
            "quantity": [1.0, -2.0, 1.0, float("nan"), float("inf"), -1.0, float("nan")],
            "line_id": [sales["line_id"][5], *(f"bad-{i}" for i in range(6))],
            "location_id": ["DC-1"] * 7,
        }
    )
    raw = pl.concat([sales.with_columns(location_id=pl.lit("DC-1")), second, never_sold, bad], how="diagonal_relaxed")
    cfg = BuffercastConfig(frequency="W")  # weekly: the same code paths as daily, a fifth of the forecasting time
    inputs = validate_inputs(cfg, raw, master, today=dt.date.today())
    assert inputs.sales.quarantine.height == 7
    valid, as_of, _ = sales_as_of(cfg, inputs.sales.valid)
    return cfg, inputs, valid, as_of, raw


def _run(catalogue, size: int, store, rows: int | None = None):
    """The run over partitions of `size` series: of the sales validated in one piece, or `rows` rows at a time."""
    from pipeline.partitioned import forecast_parts, profile_parts, recommend_parts, split_sales, validate_inputs_parts
    from pipeline.tables import as_of_rows, published_tables

    cfg, inputs, sales, as_of, raw = catalogue
    cfg = cfg.model_copy(update={"partitions": cfg.partitions.model_copy(update={"skus": size, "rows": rows or 1})})
    if rows is None:
        parts = split_sales(sales, size, store)
    else:
        inputs = validate_inputs_parts(cfg, raw.lazy(), inputs.master.valid, today=dt.date.today(), store=store)
        parts = inputs.sales.parts
        assert parts.chunks == -(-raw.height // rows) > 10
        assert as_of_rows(cfg, parts.dates)[:2] == (as_of, sales.height)
    pp = profile_parts(cfg, parts, inputs.master.valid, as_of, store)
    fp = forecast_parts(cfg, pp)
    rec = recommend_parts(cfg, as_of, pp, fp)
    return pp, rec, published_tables(as_of, rec.tables, rec.scenarios, rec.calibration, rec.pinball, inputs)


def _assert_same(one: dict, other: dict) -> None:
    """The same tables, equal in values and schema (the streamed ones, LazyFrames over the partitions, read)."""
    from pipeline.partitioned import STREAMED_TABLES

    assert one.keys() == other.keys()
    for name, frame in one.items():
        assert isinstance(frame, pl.LazyFrame) == isinstance(other[name], pl.LazyFrame) == (name in STREAMED_TABLES), name
        frame, theirs = frame.lazy().collect(), other[name].lazy().collect()
        assert frame.schema == theirs.schema, name
        assert frame.equals(theirs), name


def test_the_outputs_do_not_depend_on_the_partition_size(catalogue, tmp_path):
    from flows.publish import ParquetStore
    from pipeline.partitioned import MemoryStore
    from pipeline.stages import plan_core

    whole_pp, whole, tables = _run(catalogue, 10_000, MemoryStore())
    assert whole_pp.parts == 1
    assert whole_pp.keys.height == 44  # 34 SKUs at DC-1, 10 at DC-2
    assert whole_pp.left_out.select("sku_id", "location_id").rows() == [("SKU-00003", "DC-3")]
    classes = set(whole.recommendations["demand_class"])
    assert {"intermittent", "lumpy"} & classes and "new" in set(whole.recommendations["life_cycle"])
    assert whole.calibration is not None and whole.calibration.bootstrap_windows is not None
    assert tables["scenarios"]["skus"].max() == 44

    # In one piece, the partitioned run is the pure pipeline's (pipeline.stages.plan_core).
    cfg, inputs, sales, as_of, _ = catalogue
    core = plan_core(cfg, sales, inputs.master.valid, as_of)
    assert core.recommendations.equals(whole.recommendations)
    assert core.scenarios.equals(whole.scenarios)

    # Validated 1,000 rows at a time into 13 partitions of 4 series; the 13th (SKU-99999) has no valid row.
    for size, store, rows in ((4, ParquetStore(tmp_path / "work"), 1_000),):
        pp, rec, parted = _run(catalogue, size, store, rows)
        assert store.get(12, "sales.00000").is_empty() and not (tmp_path / "work" / "part-00012" / "panel.parquet").exists()
        assert pp.parts == -(-45 // size)  # 45 series with valid rows, the left-out one included
        assert all(len(ids) <= size for ids in pp.ids)
        assert [u for ids in pp.ids for u in ids] == whole_pp.keys["unique_id"].to_list()
        # Between stages a partition holds its own series only.
        assert set(store.get(1, "panel")["unique_id"]) == set(pp.ids[1])
        _assert_same(tables, parted)
        assert rec.calendar == whole.calendar
