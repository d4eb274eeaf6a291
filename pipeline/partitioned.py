"""The pipeline over partitions of SKUs, in two passes (docs/operations.md, "Large catalogues").

A partition is a contiguous range of the input's series, in `unique_id` order (`partitions.skus` of them, as the
validation finds them: a series whose rows were all quarantined, never sold or dated after the as-of date counts
too, so a partition plans at most `partitions.skus` series). Every stage of `pipeline.stages` runs on one partition
at a time; what ranks or fits across the whole catalogue runs once, between the passes, on small per-SKU frames:

    pass one, per partition    profile (every feature but ABC)                 -> `profile_parts`
                               backtest, select, forecast                      -> `forecast_parts`
    once, over all             ABC classes; calibration maps from every SKU's backtest errors and bootstrap
                               coverage; the held-out calendar; the pinball losses per class
    pass two, per partition    recommendations, replay, stress outcomes, the per-SKU tables
    once, over all             the scenario totals; the per-SKU tables over every partition  -> `recommend_parts`

The sales come in partitions too: the validation reads the input `partitions.rows` rows at a time and hands each
chunk's valid rows to `SalesPartitioner`, which files them by partition (`validate_inputs_parts`); the profile reads
one partition's rows at a time (`SalesParts.read`). Nothing holds the whole sales.

Each partition's frames wait between stages in a `PartitionStore` (Parquet files in the run's work folder: the
flow's `flows.workdir.ParquetStore`; or memory), so a stage holds one partition's demand at a time. A SKU's numbers
depend only on its own history and on the whole-catalogue steps (every random draw is keyed by its id:
`buffers.streams`), and every whole-catalogue sum runs over the SKUs in `unique_id` order: the outputs are the same,
byte for byte, whatever the partition size (tests/test_partitions.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import polars as pl

from buffers.calibration import Calibration
from configs.schema import BuffercastConfig
from evaluation.coverage import pinball_losses
from evaluation.replay import HeldOutCalendar, held_out_calendar
from features.calendar import series_keys, with_location
from features.profile import with_abc_classes
from forecasting.backtest import MIN_SKUS_PER_WORKER_CHUNK, ForecastResult
from forecasting.workers import worker_count, worker_pool
from pipeline.contracts import Inputs, SalesRules, ValidatedInParts, input_series, validate_master_input, validate_sales_chunks
from pipeline.stages import (
    CalibrationEvidence,
    Profiled,
    build_recommendations,
    calibration_evidence,
    concat_evidence,
    fit_buffer_calibration,
    forecast_stage,
    input_grain,
    profile_partition,
    require_planned,
    scenario_outcomes,
    scenarios,
    scenarios_table,
)
from pipeline.tables import TABLE_ORDER, sku_tables

ID = "unique_id"
KEYS = ["sku_id", "location_id"]

Progress = Callable[[str], None]


class PartitionStore(Protocol):
    """Where a partition's frames wait between stages."""

    def put(self, part: int, name: str, frame: pl.DataFrame) -> None: ...

    def get(self, part: int, name: str) -> pl.DataFrame:
        """Frame `name` of partition `part`."""
        ...

    def scan(self, name: str, parts: int) -> pl.LazyFrame:
        """Frame `name` of every partition, in partition order, lazily."""
        ...


class MemoryStore:
    """A `PartitionStore` in memory: for a catalogue that fits, and for tests."""

    def __init__(self) -> None:
        self._frames: dict[tuple[int, str], pl.DataFrame] = {}

    def put(self, part: int, name: str, frame: pl.DataFrame) -> None:
        self._frames[part, name] = frame

    def get(self, part: int, name: str) -> pl.DataFrame:
        return self._frames[part, name]

    def scan(self, name: str, parts: int) -> pl.LazyFrame:
        return pl.concat([self._frames[i, name].lazy() for i in range(parts)], how="vertical")


def _log(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)


@dataclass(frozen=True)
class SalesParts:
    """The valid sales filed by partition of series (contiguous ranges of `unique_id`, `partitions.skus` per
    partition): partition i's rows are the frames `sales.<chunk>` of partition i in `store`, in input order; and
    what the whole-catalogue steps need of all of them: the rows per date, the row count, MLflow's digest."""

    store: PartitionStore
    parts: int
    chunks: int
    dates: pl.DataFrame  # date, rows: the valid rows per date
    digest: str  # MLflow's digest of the valid sales in one frame (its `hash_polars_df`): the sum of every row's hash
    witness: pl.DataFrame  # one row: each column's first non-null value (null when it has none); the sales' schema

    @property
    def rows(self) -> int:
        return int(self.dates["rows"].sum())

    def read(self, i: int, as_of: dt.date) -> pl.DataFrame:
        """Partition i's valid rows dated on or before `as_of`, in input order."""
        frames = [self.store.get(i, _chunk_name(j)) for j in range(self.chunks)]
        sales = frames[0] if len(frames) == 1 else pl.concat(frames)
        return sales.filter(pl.col("date") <= as_of)


def _chunk_name(chunk: int) -> str:
    return f"sales.{chunk:05d}"


class SalesPartitioner:
    """Files valid sales rows, a chunk at a time (`__call__`), by partition of series: the series of the whole input
    (`series`, called once, at the first chunk: every distinct sku_id, location_id), sorted by `unique_id`, `skus`
    per partition. `parts()` is the result."""

    def __init__(self, series: Callable[[], pl.DataFrame], skus: int, store: PartitionStore) -> None:
        self._series, self._skus, self._store = series, skus, store
        self._map: pl.DataFrame | None = None
        self._parts, self._chunks, self._hash = 1, 0, 0
        self._dates: list[pl.DataFrame] = []
        self._witness: list[pl.DataFrame] = []

    def __call__(self, valid: pl.DataFrame) -> None:
        valid = with_location(valid)
        if self._map is None:
            keys = series_keys(with_location(self._series()))
            self._map = keys.select(*KEYS, _part=pl.int_range(pl.len(), dtype=pl.UInt32) // self._skus)
            self._parts = max(1, math.ceil(keys.height / self._skus))
        name = _chunk_name(self._chunks)
        if self._parts == 1:
            self._store.put(0, name, valid)
        else:
            tagged = valid.join(self._map, on=KEYS, how="left", nulls_equal=True, maintain_order="left")
            if missing := tagged["_part"].null_count():  # the series come from the same parsing as the rows: a bug
                raise RuntimeError(f"{missing} valid sales rows belong to no partition of series")
            own = tagged.partition_by("_part", as_dict=True, maintain_order=True, include_key=False)
            for i in range(self._parts):
                self._store.put(i, name, own.get((i,), valid.clear()))
        self._chunks += 1
        self._dates.append(valid.group_by("date").len("rows"))
        self._hash = (self._hash + int(valid.hash_rows().sum() or 0)) % 2**64
        self._witness.append(valid.select(pl.all().drop_nulls().first()))

    def parts(self) -> SalesParts:
        dates = pl.concat(self._dates).group_by("date").agg(pl.col("rows").sum()).sort("date")
        witness = pl.concat(self._witness).select(pl.all().drop_nulls().first())
        return SalesParts(self._store, self._parts, self._chunks, dates, str(self._hash), witness)


def split_sales(sales: pl.DataFrame, skus: int, store: PartitionStore) -> SalesParts:
    """Valid sales already in one frame, filed by partition of `skus` series (as `validate_inputs_parts` files them)."""
    partitioner = SalesPartitioner(lambda: sales.select(pl.col("^(sku_id|location_id)$")), skus, store)
    partitioner(sales)
    return partitioner.parts()


def validate_inputs_parts(
    cfg: BuffercastConfig, raw_sales: pl.LazyFrame, raw_master: pl.DataFrame | None, *, today: dt.date, store: PartitionStore
) -> Inputs:
    """`pipeline.contracts.validate_inputs` of a sales input of any size: validated `partitions.rows` rows at a time
    (`validate_sales_chunks`), the valid rows filed by partition of `partitions.skus` series in `store`."""
    i = cfg.input
    partitioner = SalesPartitioner(lambda: input_series(raw_sales, i.sales_columns), cfg.partitions.skus, store)
    rules = SalesRules.of(cfg, today)
    quarantine, rows_in = validate_sales_chunks(raw_sales, i.sales_columns, partitioner, chunk_rows=cfg.partitions.rows, rules=rules)
    master = validate_master_input(cfg, raw_master, rules.max_quarantine_share)
    return Inputs(ValidatedInParts(partitioner.parts(), quarantine, rows_in), master)


@dataclass(frozen=True)
class ProfiledParts:
    """Pass one's profile of every partition: the per-SKU frames of the whole catalogue (one row per series) and, in
    `store`, each partition's demand panels and flagged outliers."""

    store: PartitionStore
    ids: list[list[str]]  # the planned series of each partition, in unique_id order
    keys: pl.DataFrame  # unique_id, sku_id, location_id of every planned series
    left_out: pl.DataFrame  # series that cannot be planned (no positive sale)
    attrs: pl.DataFrame
    profiles: pl.DataFrame  # every feature, ABC classes over the whole catalogue included
    dates: list[dt.date]  # every period of the panels
    separate_demand: bool  # the demand as sold differs from the panel forecast (outliers capped)

    @property
    def parts(self) -> int:
        return len(self.ids)

    def partition(self, i: int) -> Profiled:
        """Partition `i` as `pipeline.stages.Profiled` (its left-out series are in `left_out` of the whole)."""
        ids = pl.Series(ID, self.ids[i], dtype=pl.String)

        def own(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col(ID).is_in(ids.implode()))

        panel = self.store.get(i, "panel")
        demand = self.store.get(i, "demand") if self.separate_demand else panel
        return Profiled(
            panel, demand, own(self.keys), self.left_out.clear(), own(self.attrs), own(self.profiles), self.store.get(i, "outliers")
        )

    def history(self) -> pl.LazyFrame:
        """The demand as sold of every series (sku_id, location_id, date, quantity), lazily: what the report draws."""
        demand = self.store.scan("demand" if self.separate_demand else "panel", self.parts)
        return demand.join(self.keys.lazy(), on=ID).select("sku_id", "location_id", date="ds", quantity="y")


def profile_parts(
    cfg: BuffercastConfig,
    sales: SalesParts,
    master: pl.DataFrame | None,
    as_of: dt.date,
    store: PartitionStore,
    progress: Progress | None = None,
) -> ProfiledParts:
    """Pass one's profile: `pipeline.stages.profile_partition` of each partition of the sales (the grain decided once
    for all; a partition with no sale on or before `as_of` has no series to plan and is skipped), then the ABC
    classes over the whole catalogue. Raises InputError when no series can be planned."""
    grain = input_grain(cfg, sales.dates.filter(pl.col("date") <= as_of))
    ids, keys, left_out, attrs, profiles, dates = [], [], [], [], [], set()
    separate = cfg.outliers.exclude_from_sigma
    start = time.perf_counter()
    for i in range(sales.parts):
        part = sales.read(i, as_of)
        if part.is_empty():
            continue  # every series of the partition failed validation, or starts after the as-of date
        p = profile_partition(cfg, part, master, as_of, grain)
        del part
        left_out.append(p.left_out)
        if p.keys.is_empty():
            continue  # none of its series has a positive sale: nothing to forecast
        j = len(ids)
        store.put(j, "panel", p.panel)
        if separate:
            store.put(j, "demand", p.demand)
        store.put(j, "outliers", p.outlier_points)
        ids.append(p.keys[ID].to_list())
        keys.append(p.keys)
        attrs.append(p.attrs)
        profiles.append(p.profiles)
        dates.update(p.panel["ds"].unique().to_list())
        _log(progress, f"profile: partition {i + 1}/{sales.parts}, {len(ids[-1]):,} series, {time.perf_counter() - start:.0f} s")
    require_planned(sum(k.height for k in keys), sum(f.height for f in left_out), as_of)
    return ProfiledParts(
        store,
        ids,
        pl.concat(keys),
        pl.concat(left_out),
        pl.concat(attrs, how="vertical_relaxed"),
        with_abc_classes(pl.concat(profiles, how="vertical_relaxed"), cfg),
        sorted(dates),
        separate,
    )


#: The per-SKU tables with a row per SKU and period or date: passed on as LazyFrames over the partitions' files, never
#: read whole (at 100,000 SKUs daily, `plan_parameters` alone is millions of rows).
STREAMED_TABLES = ("outliers", "plan_parameters", "forecasts")

#: The forecasting frames kept per partition in the store (the others, one row per SKU, are kept whole).
_FORECAST_FRAMES = ("cv", "metrics", "forecasts", "extended")


@dataclass(frozen=True)
class ForecastParts:
    """Pass one's forecast: the per-SKU frames of the whole catalogue, and each partition's backtest and future in
    `store`."""

    store: PartitionStore
    ids: list[list[str]]
    plan: pl.DataFrame
    selection: pl.DataFrame
    extended_periods: int
    has_extended: bool
    backtested: bool  # some SKU of the catalogue was backtested

    def partition(self, i: int) -> ForecastResult:
        ids = pl.Series(ID, self.ids[i], dtype=pl.String).implode()
        return ForecastResult(
            plan=self.plan.filter(pl.col(ID).is_in(ids)),
            cv=self.store.get(i, "cv"),
            metrics=self.store.get(i, "metrics"),
            selection=self.selection.filter(pl.col(ID).is_in(ids)),
            forecasts=self.store.get(i, "forecasts"),
            extended=self.store.get(i, "extended") if self.has_extended else None,
            extended_periods=self.extended_periods,
        )


@contextlib.contextmanager
def _pool_for(cfg: BuffercastConfig, skus: int, pool: object | None) -> Iterator[object | None]:
    """The given pool; else local workers for the whole pass (started once, not per partition) when the catalogue
    is worth them (`forecasting.backtest.backtest_and_forecast`'s own rule)."""
    if pool is not None or worker_count(cfg.backtest.n_jobs) <= 1 or skus < 2 * MIN_SKUS_PER_WORKER_CHUNK:
        yield pool
        return
    with worker_pool(cfg.backtest.n_jobs) as own:
        yield own


def forecast_parts(
    cfg: BuffercastConfig,
    pp: ProfiledParts,
    progress: Progress | None = None,
    pool: object | None = None,
    workers: int | None = None,
) -> ForecastParts:
    """Pass one's forecast: `pipeline.stages.forecast_stage` per partition, on one pool for all of them."""
    plans, selections, extended_periods, has_extended, backtested = [], [], 0, False, False
    with _pool_for(cfg, pp.keys.height, pool) as running:
        for i in range(pp.parts):
            prefix = f"partition {i + 1}/{pp.parts}: " if pp.parts > 1 else ""
            told = (lambda line: progress(prefix + line)) if progress else None  # noqa: B023 (used inside the iteration)
            fc = forecast_stage(cfg, pp.partition(i), progress=told, pool=running, workers=workers)
            for name in _FORECAST_FRAMES:
                frame = getattr(fc, name)
                if frame is not None:
                    pp.store.put(i, name, frame)
            plans.append(fc.plan)
            selections.append(fc.selection)
            extended_periods, has_extended = fc.extended_periods, fc.extended is not None
            backtested = backtested or not fc.cv.is_empty()
    return ForecastParts(
        pp.store,
        pp.ids,
        pl.concat(plans, how="diagonal_relaxed"),
        pl.concat(selections, how="diagonal_relaxed"),
        extended_periods,
        has_extended,
        backtested,
    )


@dataclass(frozen=True)
class Recommended:
    """Pass two's results: the recommendations, the scenarios, the calibration, the per-class pinball losses and the
    per-SKU tables of the whole catalogue (`pipeline.tables.sku_tables`; those of `STREAMED_TABLES` as LazyFrames over
    the partitions' files in the store)."""

    recommendations: pl.DataFrame
    scenarios: pl.DataFrame
    calibration: Calibration | None
    pinball: pl.DataFrame
    tables: dict[str, pl.DataFrame | pl.LazyFrame]
    calendar: HeldOutCalendar


def recommend_parts(
    cfg: BuffercastConfig, as_of: dt.date, pp: ProfiledParts, fp: ForecastParts, progress: Progress | None = None
) -> Recommended:
    """The whole-catalogue step (calibration maps, held-out calendar, pinball losses), then pass two per partition
    (recommendations, replay, stress outcomes, per-SKU tables), then the scenario totals and the tables."""
    calibrate = cfg.buffers.calibrate and fp.backtested
    evidence: list[CalibrationEvidence] = []
    for i in range(pp.parts if calibrate else 0):
        p = pp.partition(i)
        evidence.append(calibration_evidence(p.profiles, fp.partition(i), cfg, p.panel))
    calibration = fit_buffer_calibration(cfg, concat_evidence(evidence)) if calibrate else None
    del evidence
    classes = pp.profiles.select(ID, "demand_class")
    pinball = pinball_losses(pp.store.scan("cv", pp.parts), classes, cfg.models.quantiles)
    # A series' panel runs from its first sale to the last period: its length is the profile's n_periods.
    calendar = held_out_calendar(fp.plan, pp.profiles.select(ID, periods=pl.col("n_periods").cast(pl.Int64)), pp.dates)
    _log(progress, "recommend: calibration and held-out calendar of the whole catalogue done")

    recs, outcomes, start = [], [], time.perf_counter()
    disruptions = scenarios(cfg)
    for i in range(pp.parts):
        p, fc = pp.partition(i), fp.partition(i)
        part_recs = build_recommendations(
            as_of=as_of, profiles=p.profiles, attrs=p.attrs, fc=fc, cfg=cfg, panel=p.panel, calibration=calibration, calendar=calendar
        )  # fmt: skip
        outcomes.append(
            scenario_outcomes(recs=part_recs, keys=p.keys, panel=p.panel, fc=fc, scenarios=disruptions, seed=cfg.seed, calendar=calendar)
        )
        for name, frame in sku_tables(as_of, part_recs, fc, p, calibration).items():
            pp.store.put(i, f"table_{name}", frame)
        recs.append(part_recs)
        _log(progress, f"recommend: partition {i + 1}/{pp.parts}, {part_recs.height:,} SKUs, {time.perf_counter() - start:.0f} s")
    recommendations = pl.concat(recs, how="vertical_relaxed").sort(*TABLE_ORDER["recommendations"])
    stress = scenarios_table(as_of, pl.concat(outcomes, how="vertical_relaxed"), disruptions, cfg.cost.holding_rate_per_year)
    # Each partition's tables are sorted and the partitions follow unique_id: the tables' (sku_id, location_id) order
    # too, unless a SKU id holds a character that sorts before the key separator.
    in_order = pp.keys["unique_id"].equals(pp.keys.sort("sku_id", "location_id", maintain_order=True)["unique_id"])
    tables = {name: _whole_table(pp, name, None if in_order else order) for name, order in TABLE_ORDER.items()}
    return Recommended(recommendations, stress, calibration, pinball, tables, calendar)


def _whole_table(pp: ProfiledParts, name: str, order: tuple[str, ...] | None) -> pl.DataFrame | pl.LazyFrame:
    """Per-SKU table `name` of every partition, in partition order, sorted by `order` if given: the table of the run
    in one piece. A table of `STREAMED_TABLES` stays a LazyFrame over the partitions' files (the publisher streams it
    to its file); the others are read."""
    table = pp.store.scan(f"table_{name}", pp.parts)
    if order is not None:
        table = table.sort(*order, maintain_order=True)
    return table if name in STREAMED_TABLES else table.collect()
