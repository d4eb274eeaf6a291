"""The embedded sample catalogue: deterministic, well-typed, and really covering every SBC demand class."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from flows import sample_data
from flows.sample_data import generate_catalogue, write_sample_data

END_DATE = dt.date(2026, 10, 31)
N_DAYS = 730
N_SKUS = 500
# SBC cut-offs (Syntetos, Boylan & Croston 2005; docs/methods.md).
ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49


@pytest.fixture(scope="module")
def catalogue() -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate_catalogue(n_skus=N_SKUS, seed=7, end_date=END_DATE, n_days=N_DAYS)


@pytest.fixture(scope="module")
def profile(catalogue: tuple[pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
    """ADI and CV2 per SKU from the daily series, zero days filled from the first sale to END_DATE."""
    sales, _ = catalogue
    daily = sales.group_by("sku_id", "date").agg(pl.col("quantity").sum())
    return (
        daily.group_by("sku_id")
        .agg(
            first_sale=pl.col("date").min(),
            last_sale=pl.col("date").max(),
            n_nonzero=pl.len(),
            units=pl.col("quantity").sum(),
            cv2=pl.when(pl.len() > 1).then((pl.col("quantity").std(ddof=1) / pl.col("quantity").mean()) ** 2).otherwise(0.0),
        )
        .with_columns(n_active=(pl.lit(END_DATE) - pl.col("first_sale")).dt.total_days() + 1)
        .with_columns(adi=pl.col("n_active") / pl.col("n_nonzero"), units_per_day=pl.col("units") / pl.col("n_active"))
        .with_columns(
            demand_class=pl.when(pl.col("adi") < ADI_CUTOFF)
            .then(pl.when(pl.col("cv2") < CV2_CUTOFF).then(pl.lit("smooth")).otherwise(pl.lit("erratic")))
            .otherwise(pl.when(pl.col("cv2") < CV2_CUTOFF).then(pl.lit("intermittent")).otherwise(pl.lit("lumpy")))
        )
    )


def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    sales_a, master_a = generate_catalogue(n_skus=120, seed=11)
    sales_b, master_b = generate_catalogue(n_skus=120, seed=11)
    sales_c, master_c = generate_catalogue(n_skus=120, seed=12)
    assert sales_a.equals(sales_b)
    assert master_a.equals(master_b)
    assert not sales_a.equals(sales_c)
    assert not master_a.equals(master_c)


def test_sales_schema_and_values(catalogue: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    sales, _ = catalogue
    assert sales.schema == pl.Schema({"sku_id": pl.String, "date": pl.Date, "quantity": pl.Float64, "line_id": pl.String})
    assert sales.null_count().sum_horizontal().item() == 0
    quantity = sales["quantity"]
    assert (quantity > 0).all()
    assert (quantity == quantity.round(0)).all()
    assert sales["date"].min() >= END_DATE - dt.timedelta(days=N_DAYS - 1)
    assert sales["date"].max() <= END_DATE
    assert sales["line_id"].is_unique().all()
    assert sales["sku_id"].n_unique() == N_SKUS
    assert sales["sku_id"].str.contains(r"^SKU-\d{5}$").all()
    assert sales.equals(sales.sort("date", "sku_id", "line_id"))


def test_some_days_arrive_as_several_order_lines(catalogue: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    sales, _ = catalogue
    lines_per_day = sales.group_by("sku_id", "date").len()
    assert lines_per_day["len"].max() in (2, 3)
    split_skus = lines_per_day.filter(pl.col("len") > 1)["sku_id"].n_unique()
    assert 0.15 * N_SKUS <= split_skus <= 0.25 * N_SKUS


def test_order_lines_sum_to_the_days_demand() -> None:
    rng = np.random.default_rng(0)
    quantity = rng.poisson(rng.uniform(0.0, 8.0, (40, 1)), (40, 60))
    splits = np.zeros(40, dtype=bool)
    splits[::2] = True
    sku, day, units, line_no = sample_data._order_lines(np.random.default_rng(1), quantity, splits)
    assert (units > 0).all()
    assert set(np.unique(line_no)) <= {1, 2, 3}
    rebuilt = np.zeros_like(quantity)
    np.add.at(rebuilt, (sku, day), units)
    np.testing.assert_array_equal(rebuilt, quantity)
    assert (line_no[~splits[sku]] == 1).all()
    assert (line_no > 1).any()


def test_sku_master(catalogue: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    sales, master = catalogue
    assert master.schema == pl.Schema(
        {
            "sku_id": pl.String,
            "unit_cost": pl.Float64,
            "lead_time_days": pl.Float64,
            "lead_time_std_days": pl.Float64,
            "critical": pl.Boolean,
            "pack_size": pl.Int64,
            "supplier_id": pl.String,
        }
    )
    assert master.null_count().sum_horizontal().item() == 0
    assert master["sku_id"].is_unique().all()
    assert 0.05 <= master["critical"].mean() <= 0.15
    assert master["lead_time_days"].is_between(1.0, 60.0).all()
    assert (master["lead_time_std_days"] >= 0).all()
    assert (master["unit_cost"] > 0).all()
    assert master["unit_cost"].is_between(0.5, 500.0).all()
    assert set(master["pack_size"].unique()) <= {1, 6, 12, 24}
    assert (master["pack_size"] == 1).mean() > 0.5
    assert 15 <= master["supplier_id"].n_unique() <= 25

    lead_time_cv = master["lead_time_std_days"] / master["lead_time_days"]
    assert (lead_time_cv <= 0.11).mean() > 0.3  # reliable suppliers
    assert (lead_time_cv >= 0.40).mean() > 0.1  # unreliable suppliers

    missing = set(sales["sku_id"].unique()) - set(master["sku_id"])
    assert 1 <= len(missing) <= 0.04 * N_SKUS
    assert set(master["sku_id"]) <= set(sales["sku_id"].unique())


def test_every_sbc_class_is_well_represented(profile: pl.DataFrame) -> None:
    assert profile.height == N_SKUS
    shares = dict(profile["demand_class"].value_counts(normalize=True).iter_rows())
    for demand_class in ("smooth", "erratic", "intermittent", "lumpy"):
        assert shares.get(demand_class, 0.0) >= 0.08, (demand_class, shares)


def test_levels_span_slow_and_fast_movers(profile: pl.DataFrame) -> None:
    assert profile["units_per_day"].min() < 0.5
    assert profile["units_per_day"].max() > 100.0


def test_new_and_discontinued_products_exist(profile: pl.DataFrame) -> None:
    recent = END_DATE - dt.timedelta(days=59)  # the last 60 days, END_DATE included
    new = profile.filter(pl.col("first_sale") >= recent)
    gone_quiet = profile.filter(pl.col("last_sale") < recent)
    assert 0.04 * N_SKUS <= new.height <= 0.12 * N_SKUS
    assert new["first_sale"].min() >= recent
    assert new["first_sale"].max() <= END_DATE - dt.timedelta(days=19)
    assert 0.03 * N_SKUS <= gone_quiet.height <= 0.10 * N_SKUS


def test_a_short_history_still_gives_every_sku_a_sale() -> None:
    sales, master = generate_catalogue(n_skus=12, seed=3, n_days=30)
    assert sales["sku_id"].n_unique() == 12
    assert sales["date"].min() >= dt.date(2026, 10, 2)
    assert master.height == 11


@pytest.mark.parametrize("bad", [{"n_skus": 0}, {"n_days": 0}])
def test_bad_sizes_are_rejected_by_name(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate_catalogue(**bad)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_sample_data_round_trip(tmp_path, fmt: str) -> None:
    out_dir = tmp_path / "nested" / "sample"
    paths = write_sample_data(out_dir, n_skus=60, seed=5, n_days=200, fmt=fmt)
    assert paths == {"sales": out_dir / f"sales.{fmt}", "sku_master": out_dir / f"sku_master.{fmt}"}
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([f"sales.{fmt}", f"sku_master.{fmt}"])  # no temp files left
    sales, master = generate_catalogue(n_skus=60, seed=5, n_days=200)
    if fmt == "parquet":
        sales_back, master_back = pl.read_parquet(paths["sales"]), pl.read_parquet(paths["sku_master"])
    else:
        sales_back = pl.read_csv(paths["sales"], try_parse_dates=True)
        master_back = pl.read_csv(paths["sku_master"])
    assert sales_back.equals(sales)
    assert master_back.equals(master)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: pl.DataFrame, file: str, *args: object, **kwargs: object) -> None:
        with open(file, "w") as half_written:
            half_written.write("sku_id,da")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_csv", crash)
    with pytest.raises(OSError, match="disk full"):
        write_sample_data(tmp_path, n_skus=10, n_days=30, fmt="csv")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="fmt"):
        write_sample_data(tmp_path, fmt="xlsx")  # type: ignore[arg-type]
