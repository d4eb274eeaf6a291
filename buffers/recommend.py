"""Per-SKU buffer recommendation: policy, service level, safety stock, reorder point, cost (DOMAIN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from buffers.policy import PolicyThresholds, buffered_components, no_buffer, policy_expr, policy_flags, reasons_expr
from buffers.safety_stock import round_up_units, sigma_total, z_for_cycle_service_level


@dataclass(frozen=True)
class BufferSettings:
    period_days: float
    holding_rate_per_year: float
    jit_service_level: float
    #: cycle service level targets: {"critical": {"A": .99, ...}, "non_critical": {...}}
    service_levels: Mapping[str, Mapping[str, float]]
    thresholds: PolicyThresholds = field(default_factory=PolicyThresholds)


#: Columns `recommend` needs, one row per series, and their types.
REQUIRED: dict[str, pl.DataType] = {
    "unique_id": pl.String(), "demand_class": pl.String(), "adi": pl.Float64(), "cv2": pl.Float64(), "error_cv": pl.Float64(),
    "volatility_class": pl.String(), "abc_class": pl.String(), "critical": pl.Boolean(), "lead_time_days": pl.Float64(),
    "lead_time_std_days": pl.Float64(), "mean_demand_per_period": pl.Float64(), "lead_time_demand": pl.Float64(),
    "sigma_lead_time_demand": pl.Float64(), "unit_cost": pl.Float64(), "pack_size": pl.Float64(), "in_sku_master": pl.Boolean(),
    "model_fell_back": pl.Boolean(), "life_cycle": pl.String(), "periods_since_last_sale": pl.Int64(),
}  # fmt: skip


def _service_level_table(levels: Mapping[str, Mapping[str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"abc_class": abc, "critical": crit == "critical", "_matrix_level": float(v)}
            for crit, cells in levels.items()
            for abc, v in cells.items()
        ],
        schema={"abc_class": pl.String, "critical": pl.Boolean, "_matrix_level": pl.Float64},
    )


def recommend(skus: pl.DataFrame, s: BufferSettings) -> pl.DataFrame:
    """Adds policy, flags, service_level_target, safety_stock_units, reorder_point_units, costs and reasons.

    Safety stock = z(alpha) x sigma of the buffered variance terms, where the full
    sigma_total = sqrt(sigma_LT^2 + d^2 sigma_L^2) (DOMAIN.md) and hybrid buffers cover only
    their variable part; rounded up to whole units and pack sizes, never negative.
    ROP = lead-time demand + safety stock, rounded up to whole units. A dead, non-critical SKU gets neither.
    """
    missing = [c for c in REQUIRED if c not in skus.columns]
    if missing:
        raise ValueError(f"recommend() lacks columns {missing}")
    t = s.thresholds
    out = (
        skus.cast(REQUIRED)
        .with_columns(pl.col("critical").fill_null(False))
        .join(_service_level_table(s.service_levels), on=["abc_class", "critical"], how="left")
        .with_columns(lead_time_std_periods=pl.col("lead_time_std_days").fill_null(0.0) / s.period_days)
        .with_columns(policy_flags(t))
        .with_columns(policy=policy_expr())
        .with_columns(
            service_level_target=pl.when(pl.col("policy") == "JIT").then(pl.lit(s.jit_service_level)).otherwise("_matrix_level")
        )
    )
    if out["service_level_target"].null_count():
        bad = out.filter(pl.col("service_level_target").is_null()).select("abc_class", "critical").unique().rows()
        raise ValueError(f"no service level target for (abc_class, critical) = {bad}")
    demand_part, lead_time_part = buffered_components()
    d = pl.col("mean_demand_per_period")
    out = out.with_columns(
        safety_factor_z=pl.col("service_level_target").map_batches(
            lambda a: pl.Series(z_for_cycle_service_level(a.to_numpy())), return_dtype=pl.Float64
        ),
        sigma_total=sigma_total(pl.col("sigma_lead_time_demand"), d, pl.col("lead_time_std_periods")),
        sigma_buffered=sigma_total(
            pl.when(demand_part).then(pl.col("sigma_lead_time_demand")).otherwise(0.0),
            d,
            pl.when(lead_time_part).then(pl.col("lead_time_std_periods")).otherwise(0.0),
        ),
    )
    buffer = round_up_units(pl.col("safety_factor_z") * pl.col("sigma_buffered"), pl.col("pack_size"))
    reorder_point = round_up_units(pl.col("lead_time_demand") + pl.col("safety_stock_units"))
    return (
        out.with_columns(safety_stock_units=pl.when(no_buffer()).then(0.0).otherwise(buffer))
        .with_columns(reorder_point_units=pl.when(no_buffer()).then(0.0).otherwise(reorder_point))
        .with_columns(
            safety_stock_value=pl.col("safety_stock_units") * pl.col("unit_cost"),
            holding_cost_per_year=pl.col("safety_stock_units") * pl.col("unit_cost") * s.holding_rate_per_year,
            reasons=pl.format("{}: ", pl.col("policy")) + reasons_expr(t, s.period_days),
        )
        .drop("_matrix_level")
    )
