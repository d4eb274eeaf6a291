"""Per-series attributes from the SKU master (unit cost, lead time and its variability, criticality, pack size,
supplier), config defaults where the master lacks the SKU."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from configs.schema import DefaultsConfig

ID = "unique_id"


def sku_attributes(keys: pl.DataFrame, master: pl.DataFrame | None, d: DefaultsConfig) -> pl.DataFrame:
    """Per series (unique_id): the master's attributes of its sku_id, config defaults where the master lacks the SKU.

    `in_sku_master` records which rows came from the master (the reasons say so when not).
    """
    cols = {
        "unit_cost": pl.Float64,
        "lead_time_days": pl.Float64,
        "lead_time_std_days": pl.Float64,
        "critical": pl.Boolean,
        "pack_size": pl.Float64,
        "supplier_id": pl.String,
    }
    if master is None:
        master = pl.DataFrame(schema={"sku_id": pl.String, **cols})
    joined = keys.join(master.select("sku_id", *cols).with_columns(_in=pl.lit(True)), on="sku_id", how="left")
    in_master = pl.col("_in").fill_null(False)
    return joined.select(
        ID,
        "sku_id",
        "location_id",
        pl.col("unit_cost").fill_null(d.unit_cost),
        pl.col("lead_time_days").fill_null(d.lead_time_days),
        # A master row without a lead-time std means a reliable lead time; only a missing row takes the default.
        pl.when(in_master)
        .then(pl.col("lead_time_std_days").fill_null(0.0))
        .otherwise(pl.lit(d.lead_time_std_days))
        .alias("lead_time_std_days"),
        pl.col("critical").fill_null(False),
        "pack_size",
        "supplier_id",
        in_master.alias("in_sku_master"),
    )
