"""Per-SKU buffer recommendation: policy, service level, safety stock, reorder point, order-up-to level, cost, risk (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import polars.selectors as cs

from buffers.calibration import USABLE, model_family, resolve_levels
from buffers.lead_time_demand import bootstrap_lead_time_demand, quantile_column
from buffers.policy import buffered_components, no_buffer, policy_expr, policy_flags, reasons_expr
from buffers.safety_stock import (
    economic_order_quantity,
    order_up_to_level,
    reorder_point,
    round_up_units,
    safety_factor,
    safety_stock_cycle,
    sigma_total,
    textbook_safety_stock,
    z_for_cycle_service_level,
)
from evaluation.windows import LEAD_TIME, REVIEW_LEAD_TIME

if TYPE_CHECKING:
    from configs.schema import BuffercastConfig, ServiceLevelConfig


#: Columns `recommend` needs, one row per series, and their types.
REQUIRED: dict[str, pl.DataType] = {
    "unique_id": pl.String(), "demand_class": pl.String(), "adi": pl.Float64(), "cv2": pl.Float64(), "error_cv": pl.Float64(),
    "volatility_class": pl.String(), "abc_class": pl.String(), "critical": pl.Boolean(), "lead_time_days": pl.Float64(),
    "lead_time_std_days": pl.Float64(), "mean_demand_per_period": pl.Float64(), "lead_time_demand": pl.Float64(),
    "sigma_lead_time_demand": pl.Float64(), "unit_cost": pl.Float64(), "pack_size": pl.Float64(), "in_sku_master": pl.Boolean(),
    "model_fell_back": pl.Boolean(), "life_cycle": pl.String(), "periods_since_last_sale": pl.Int64(),
    "lead_time_periods": pl.Float64(), "review_periods": pl.Float64(), "review_lead_time_demand": pl.Float64(),
    "sigma_review_lead_time_demand": pl.Float64(),
    "std_demand": pl.Float64(), "annual_units": pl.Float64(), "trend_strength": pl.Float64(),
}  # fmt: skip


def _cells(sl: ServiceLevelConfig) -> pl.DataFrame:
    """The ABC x criticality matrix of targets and what each measures, one row per cell."""
    return pl.DataFrame(
        [
            {"abc_class": abc, "critical": crit == "critical", "_matrix_level": float(v), "_matrix_measure": getattr(sl.measure, crit)[abc]}
            for crit in ("critical", "non_critical")
            for abc, v in getattr(sl, crit).items()
        ],
        schema={"abc_class": pl.String, "critical": pl.Boolean, "_matrix_level": pl.Float64, "_matrix_measure": pl.String},
    )


def _numpy(fn: Callable[..., np.ndarray], *columns: str) -> pl.Expr:
    """A vectorised numpy function of several columns as a polars expression (NaN results become null)."""
    return pl.struct(*columns).map_batches(
        lambda s: pl.Series(fn(*(s.struct.field(c).to_numpy() for c in columns)), nan_to_null=True), return_dtype=pl.Float64
    )


def _bootstrap(skus: pl.DataFrame, panel: pl.DataFrame, cfg: BuffercastConfig, levels: list[float]) -> pl.DataFrame:
    """Quantiles of lead-time (L) and review + lead-time (R + L) demand for the empirical SKUs, at every target level.

    Lead-time variability enters only where the policy buffers it (hybrid without a variable supplier: std 0).
    """
    emp = skus.filter(pl.col("_empirical"))
    if emp.is_empty():
        return pl.DataFrame(schema={"unique_id": pl.String})
    sub = panel.join(emp.select("unique_id"), on="unique_id", how="semi")
    std = pl.when(pl.col("_lead_time_part")).then(pl.col("lead_time_std_periods")).otherwise(0.0)
    out = None
    for name, lead in (("lt", pl.col("lead_time_periods")), ("rlt", pl.col("lead_time_periods") + pl.col("review_periods"))):
        lt = emp.select("unique_id", lead_time_periods=lead, lead_time_std_periods=std)
        b = bootstrap_lead_time_demand(
            sub,
            lt,
            levels,
            seed=cfg.seed,
            n_samples=cfg.buffers.bootstrap_samples,
            history_periods=cfg.bootstrap_history_periods,
        )
        b = b.select(
            "unique_id",
            pl.col("bootstrap_mean").alias(f"_{name}_mean"),
            *[pl.col(quantile_column(q)).alias(f"_{name}_{q}") for q in levels],
        )
        out = b if out is None else out.join(b, on="unique_id")
    return out


def _bootstrap_at(prefix: str, q: float) -> pl.Expr:
    """The bootstrap buffer at level `q`: its quantile minus the bootstrap mean, never negative."""
    return (pl.col(f"_{prefix}_{q}") - pl.col(f"_{prefix}_mean")).clip(0.0, None)


def _bootstrap_buffer(prefix: str, levels: list[float], level: str = "service_level_target") -> pl.Expr:
    """The bootstrap buffer at each SKU's `level`: its quantile column `_{prefix}_{level}` minus the bootstrap mean
    `_{prefix}_mean`, never negative."""
    quantile = pl.lit(None, pl.Float64)
    for q in levels:
        quantile = pl.when(pl.col(level) == q).then(pl.col(f"_{prefix}_{q}")).otherwise(quantile)
    return (quantile - pl.col(f"_{prefix}_mean")).clip(0.0, None)


def _pct(expr: pl.Expr) -> pl.Expr:
    """A share as a percentage, one decimal; four above 99.9% (a level of 0.999999 is not "100.0%")."""
    return pl.when(expr > 0.999).then((expr * 100).round(4)).otherwise((expr * 100).round(1)).cast(pl.String) + "%"


def _method_reasons(cfg: BuffercastConfig) -> list[pl.Expr]:
    """How the buffer was sized, when it is not the plain normal formula, and what it risks."""
    return [
        # A model can forecast nothing for a SKU that still sells (e.g. a naive forecast after a silent period): the
        # reorder point is then the buffer alone; say so, it is the planner's to check.
        pl.when((pl.col("life_cycle") == "active") & (pl.col("lead_time_demand") <= 0)).then(
            pl.lit("the forecast is zero over the lead time although the SKU sells: the reorder point is the buffer alone; check the model")
        ),
        pl.when(pl.col("safety_stock_method") == "bootstrap_quantile").then(
            pl.format(
                "{} demand is not normal: buffer = the {} quantile of bootstrapped lead-time demand minus its mean",
                pl.col("demand_class"),
                _pct(pl.col("sizing_level")),
            )
        ),
        pl.when(pl.col("safety_stock_method") == "normal_fill_rate").then(
            pl.format("target is a {} fill rate (safety factor from the normal loss function)", _pct(pl.col("service_level_target")))
        ),
        pl.when(
            (pl.col("policy") == "hybrid")
            & (pl.col("expected_service_level") < pl.col("service_level_target") - 1e-9)
            & (pl.col("safety_stock_units") > 0)
        ).then(
            pl.format(
                "hybrid buffer covers the variable part only: about {} of cycles without stock-out (full target {})",
                _pct(pl.col("expected_service_level")),
                _pct(pl.col("service_level_target")),
            )
        ),
        pl.when(
            (pl.col("calibration_status") == "calibrated") & (pl.col("safety_stock_units") != pl.col("uncalibrated_safety_stock_units"))
        ).then(
            pl.format(
                "calibrated on the backtest: sized at {} nominal for the {} target (map: {} {} over the lead time), "
                "buffer {} units instead of {}",
                _pct(pl.col("sizing_level")),
                _pct(pl.col("service_level_target")),
                pl.col("calibration_map"),
                pl.when(pl.col("safety_stock_method") == "bootstrap_quantile")
                .then(pl.lit("bootstrap quantiles against the demand"))
                .otherwise(pl.lit("forecast errors")),
                pl.col("safety_stock_units").cast(pl.Int64),
                pl.col("uncalibrated_safety_stock_units").cast(pl.Int64),
            )
        ),
        pl.when("flag_cover_capped").then(
            pl.format(
                "safety stock capped at {} days of mean demand ({} units instead of {}; buffers.max_cover_days): expected "
                "service {}, the target may be missed",
                pl.lit(f"{cfg.buffers.max_cover_days or 0:g}"),
                pl.col("_cap").round(1),
                pl.col("_uncapped_ss").round(1),
                _pct(pl.col("expected_service_level")),
            )
        ),
        pl.when(pl.col("calibration_status") == "capped").then(
            pl.format(
                "calibration capped: on the backtest no buffer up to the highest nominal level ({}) reached the {} target "
                "(map: {}); sized at the cap, the target may be missed",
                _pct(pl.col("sizing_level")),
                _pct(pl.col("service_level_target")),
                pl.col("calibration_map"),
            )
        ),
        pl.when(pl.col("flag_declining") & pl.col("flag_obsolescence_risk")).then(
            pl.format(
                "declining demand (trend strength {}): buffer value {} at risk",
                pl.col("trend_strength").round(2),
                pl.col("capital_at_risk").round(2),
            )
        ),
    ]


def recommend(
    skus: pl.DataFrame, cfg: BuffercastConfig, panel: pl.DataFrame | None = None, calibration: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Adds policy, flags, service level, safety stock, reorder point, order-up-to level, min/max, order quantity,
    costs, risks and reasons (docs/methods.md, "What a buffer costs and risks").

    - Normal method: SS = k x sigma of the buffered variance terms, sigma_total = sqrt(sigma_LT^2 + d^2 sigma_L^2);
      k = z(alpha) for a cycle-service target, k with G(k) = (1 - beta) Q / sigma for a fill-rate target (Q: EOQ
      where an order cost is given, else the demand over a review period). Hybrid buffers only the variable part.
    - Intermittent and lumpy SKUs (`empirical_classes`, needs `panel`): SS = the target quantile of bootstrapped
      lead-time demand (own history, lead times drawn from the SKU's distribution, seeded) minus its mean. A
      fill-rate target takes the same quantile (conservative: a cycle service level alpha serves at least alpha).
    - ROP = lead-time demand + SS (continuous review); S = demand over R + L + SS over R + L (periodic review);
      min = ROP, max = ROP + Q. Never negative; SS rounded up to whole units and pack sizes.
    - A dead, non-critical SKU gets no buffer and nothing to reorder.
    - `calibration` (`buffers.calibration.Calibration.levels`, fitted with the same `panel` or none): a cycle target
      is sized at the calibrated nominal level of its model family's map, else its demand class's (`resolve_levels`;
      a bootstrap SKU's class map is of the bootstrap's coverage): the safety stock by the lead-time map
      (`calibrated_service_level`), the order-up-to level by the review + lead-time map
      (`calibrated_review_service_level`). `calibration_map` says which map. Fill-rate targets keep their level.
    - Internal columns for the stress test: `order_up_to_jit_units`, `order_up_to_jic_units` (every SKU at the JIT
      level / with the full buffer at its matrix target).
    """
    missing = [c for c in REQUIRED if c not in skus.columns]
    if missing:
        raise ValueError(f"recommend() lacks columns {missing}")
    out = service_level_targets(skus, cfg)
    out = calibrated_levels(out, cfg, calibration)
    out = buffered_sigmas(out, cfg)
    out = safety_factors(out)
    out, boot = bootstrap_buffers(out, cfg, panel)
    out = safety_stocks(out, boot, cfg)
    out = stock_levels(out, boot)
    out = costs_and_risks(out, cfg)
    return with_reasons(out, cfg)


def service_level_targets(skus: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """Policy flags and policy (`buffers.policy`), the ABC x criticality cell (`_matrix_level`, `_matrix_measure`), and
    `service_level_target` / `service_level_measure`: the JIT level (cycle) for JIT SKUs, the cell's otherwise."""
    out = (
        skus.cast(REQUIRED)
        .with_columns(pl.col("critical").fill_null(False))
        .join(_cells(cfg.service_levels), on=["abc_class", "critical"], how="left")
        .with_columns(lead_time_std_periods=pl.col("lead_time_std_days").fill_null(0.0) / cfg.period_days)
        .with_columns(policy_flags(cfg.policy))
        .with_columns(policy=policy_expr(cfg.policy))
        .with_columns(
            service_level_target=pl.when(pl.col("policy") == "JIT").then(pl.lit(cfg.service_levels.jit)).otherwise("_matrix_level"),
            service_level_measure=pl.when(pl.col("policy") == "JIT").then(pl.lit("cycle")).otherwise("_matrix_measure"),
        )
    )
    if out["service_level_target"].null_count():
        bad = out.filter(pl.col("service_level_target").is_null()).select("abc_class", "critical").unique().rows()
        raise ValueError(f"no service level target for (abc_class, critical) = {bad}")
    return out


def calibrated_levels(out: pl.DataFrame, cfg: BuffercastConfig, calibration: pl.DataFrame | None) -> pl.DataFrame:
    """The nominal levels each buffer is sized at (buffers/calibration.py): the reorder point's safety stock by the
    lead-time map (`sizing_level`), the order-up-to level by the review + lead-time map
    (`calibrated_review_service_level`), and the stress test's pure JIT and JIC levels (`_jit_level`, `_jic_level`),
    calibrated like the recommended one so the three compare fairly. Only cycle targets are calibrated."""
    cycle = pl.col("service_level_measure") == "cycle"
    out = out.with_columns(model_family=model_family(pl.col("model")) if "model" in out.columns else pl.lit(None, pl.String))
    for exposure, level, name in (
        (LEAD_TIME, pl.col("service_level_target"), "_lt"),
        (REVIEW_LEAD_TIME, pl.col("service_level_target"), "_rlt"),
        (REVIEW_LEAD_TIME, pl.col("_matrix_level"), "_jic"),
        (REVIEW_LEAD_TIME, pl.lit(cfg.service_levels.jit), "_jit"),
    ):
        out = out.join(resolve_levels(out, calibration, exposure, level, name), on="unique_id", how="left")
    usable = pl.col("_lt_status").is_in(USABLE)
    return out.with_columns(
        calibration_status=pl.when(cycle).then("_lt_status").otherwise(pl.lit("fill_rate_target")),
        calibration_map=pl.when(cycle & usable).then("_lt_map"),
        sizing_level=pl.when(cycle & usable).then("_lt").otherwise("service_level_target"),
        calibrated_review_service_level=pl.when(cycle & pl.col("_rlt_status").is_in(USABLE)).then("_rlt").otherwise("service_level_target"),
        _jic_level=pl.when(pl.col("_matrix_measure") == "cycle").then("_jic").otherwise("_matrix_level"),
        _jit_level=pl.when(cycle).then("_jit").otherwise(pl.lit(cfg.service_levels.jit)),
    ).drop("model_family")


def buffered_sigmas(out: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """`sigma_total` = sqrt(sigma_LT^2 + d^2 sigma_L^2) over the lead time and over review + lead time, the part of it
    the policy buffers (`sigma_buffered`: hybrid drops the stable term), the annual demand, the EOQ and the order
    quantity (EOQ, else the demand over a review period)."""
    demand_part, lead_time_part = buffered_components()
    d, r = pl.col("mean_demand_per_period"), pl.col("review_periods")
    out = out.with_columns(
        _demand_part=demand_part,
        _lead_time_part=lead_time_part,
        sigma_total=sigma_total(pl.col("sigma_lead_time_demand"), d, pl.col("lead_time_std_periods")),
        _sigma_review_total=sigma_total(pl.col("sigma_review_lead_time_demand"), d, pl.col("lead_time_std_periods")),
        annual_demand_units=d * cfg.periods_per_year,
        _review_quantity=(d * r).clip(1e-9, None),
    ).with_columns(
        sigma_buffered=sigma_total(
            pl.when("_demand_part").then(pl.col("sigma_lead_time_demand")).otherwise(0.0),
            d,
            pl.when("_lead_time_part").then(pl.col("lead_time_std_periods")).otherwise(0.0),
        ),
        _sigma_review_buffered=sigma_total(
            pl.when("_demand_part").then(pl.col("sigma_review_lead_time_demand")).otherwise(0.0),
            d,
            pl.when("_lead_time_part").then(pl.col("lead_time_std_periods")).otherwise(0.0),
        ),
        economic_order_quantity=_numpy(
            lambda demand, cost: economic_order_quantity(
                demand, np.nan if cfg.cost.order_cost is None else cfg.cost.order_cost, cost * cfg.cost.holding_rate_per_year
            ),
            "annual_demand_units",
            "unit_cost",
        ),
    )
    return out.with_columns(order_quantity=pl.coalesce("economic_order_quantity", "_review_quantity"))


def safety_factors(out: pl.DataFrame) -> pl.DataFrame:
    """The normal method's safety factors (`buffers.safety_stock.safety_factor`: z for a cycle target, k from the
    normal loss for a fill rate): at the sizing level (`safety_factor_z`), for the order-up-to level, at the target
    uncalibrated, and for the pure JIC and JIT levels."""
    return out.with_columns(
        safety_factor_z=_numpy(safety_factor, "sizing_level", "service_level_measure", "order_quantity", "sigma_buffered"),
        _factor_review=_numpy(
            safety_factor, "calibrated_review_service_level", "service_level_measure", "_review_quantity", "_sigma_review_buffered"
        ),
        _z_uncalibrated=_numpy(safety_factor, "service_level_target", "service_level_measure", "order_quantity", "sigma_buffered"),
        _factor_jic=_numpy(safety_factor, "_jic_level", "_matrix_measure", "_review_quantity", "_sigma_review_total"),
        _z_jit=_numpy(z_for_cycle_service_level, "_jit_level"),
    )


#: Levels the bootstrap is always evaluated at besides the targets: a buffer held down by the cover cap states the
#: largest of them it still covers (`_BootstrapBuffers.level_within`), to this resolution.
CAPPED_LEVEL_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 0.999)


@dataclass(frozen=True)
class _BootstrapBuffers:
    """Per SKU, the bootstrap buffers (quantile minus mean) at each level a bootstrap SKU is sized at; `sized` is
    true where the SKU is sized by the bootstrap."""

    sized: pl.Expr
    lead_time: pl.Expr
    uncalibrated: pl.Expr
    review: pl.Expr
    jit: pl.Expr
    jic: pl.Expr
    # The largest level whose lead-time buffer fits under a given safety stock (what a capped buffer still covers).
    levels: tuple[float, ...] = ()

    def level_within(self, ss: pl.Expr) -> pl.Expr:
        """The largest bootstrapped level whose lead-time buffer is at most `ss` (null when none fits)."""
        fits = [pl.when(_bootstrap_at("lt", q) <= ss + 1e-9).then(pl.lit(q)) for q in self.levels]
        return pl.max_horizontal(fits) if fits else pl.lit(None, pl.Float64)


def bootstrap_buffers(out: pl.DataFrame, cfg: BuffercastConfig, panel: pl.DataFrame | None) -> tuple[pl.DataFrame, _BootstrapBuffers]:
    """The bootstrap's quantiles of lead-time and review + lead-time demand (`buffers.lead_time_demand`) at every
    level an intermittent or lumpy SKU is sized at (the targets and their calibrated levels), joined to `out`;
    `_empirical`: the SKU's class is sized by the bootstrap (`empirical_classes`) and there is a panel to draw from."""
    out = out.with_columns(_empirical=pl.col("demand_class").is_in(list(cfg.buffers.empirical_classes)) & pl.lit(panel is not None))
    sized_at = out.filter(pl.col("_empirical")).select(
        pl.concat_list("sizing_level", "calibrated_review_service_level", "_jic_level", "_jit_level").explode().unique()
    )
    levels = sorted(set(CAPPED_LEVEL_GRID) | set(cfg.service_levels.target_levels()) | set(sized_at.to_series().drop_nulls().to_list()))
    boot = _bootstrap(out, panel, cfg, levels) if panel is not None else pl.DataFrame(schema={"unique_id": pl.String})
    out = out.join(boot, on="unique_id", how="left")
    if "_lt_mean" not in out.columns:
        none = pl.lit(None, pl.Float64)
        return out, _BootstrapBuffers(pl.lit(False), none, none, none, none, none)
    return out, _BootstrapBuffers(
        sized=pl.col("_empirical") & pl.col("_lt_mean").is_not_null(),
        lead_time=_bootstrap_buffer("lt", levels, "sizing_level"),
        uncalibrated=_bootstrap_buffer("lt", levels),
        review=_bootstrap_buffer("rlt", levels, "calibrated_review_service_level"),
        jit=_bootstrap_buffer("rlt", levels, "_jit_level"),
        jic=_bootstrap_buffer("rlt", levels, "_jic_level"),
        levels=tuple(levels),
    )


def safety_stocks(out: pl.DataFrame, boot: _BootstrapBuffers, cfg: BuffercastConfig) -> pl.DataFrame:
    """Unrounded safety stocks: SS = k x sigma_buffered (normal method, floored at 0) or the bootstrap buffer, for the
    reorder point (`_ss`), the order-up-to level (`_review_ss`) and the pure JIT and JIC policies, each at most
    `buffers.max_cover_days` of mean demand (`flag_cover_capped` when the reorder point's buffer hits the cap); the
    method used; and the expected cycle service level: the hybrid's (it buffers the variable part only), a capped
    normal buffer's, Phi(SS / sigma), and a capped bootstrap buffer's, the largest bootstrapped level it still covers."""
    from scipy import stats  # here, not with the module: docs/architecture.md

    empirical = boot.sized
    normal_ss = _numpy(safety_stock_cycle, "safety_factor_z", "sigma_buffered")
    normal_review_ss = _numpy(safety_stock_cycle, "_factor_review", "_sigma_review_buffered")
    # Hybrid buffers only the variable part: with the other terms still there, it delivers less than the target.
    covered = pl.when(pl.col("sigma_total") > 0).then(pl.col("safety_factor_z") * pl.col("sigma_buffered") / pl.col("sigma_total"))
    out = out.with_columns(_covered=covered).with_columns(
        # Never above the target: the calibrated z can exceed z(target), but the plan promises the target, or less.
        expected_service_level=pl.when((pl.col("policy") == "hybrid") & ~empirical & (pl.col("service_level_measure") == "cycle"))
        .then(pl.min_horizontal(_numpy(stats.norm.cdf, "_covered").fill_null(pl.col("service_level_target")), "service_level_target"))
        .otherwise(pl.col("service_level_target"))
    )
    days = cfg.buffers.max_cover_days
    cap = pl.lit(None, pl.Float64) if days is None else pl.col("mean_demand_per_period") * (days / cfg.period_days)
    out = out.with_columns(
        safety_stock_method=pl.when(empirical)
        .then(pl.lit("bootstrap_quantile"))
        .when(pl.col("service_level_measure") == "fill_rate")
        .then(pl.lit("normal_fill_rate"))
        .otherwise(pl.lit("normal_cycle")),
        _cap=cap,
        _uncapped_ss=pl.when(empirical).then(boot.lead_time).otherwise(normal_ss),
        _review_ss=pl.when(empirical).then(boot.review).otherwise(normal_review_ss),
        _jit_ss=pl.when(empirical).then(boot.jit).otherwise(_numpy(safety_stock_cycle, "_z_jit", "_sigma_review_total")),
        _jic_ss=pl.when(empirical).then(boot.jic).otherwise(_numpy(safety_stock_cycle, "_factor_jic", "_sigma_review_total")),
    )
    capped = pl.col("_uncapped_ss") > pl.col("_cap")
    return (
        out.with_columns(
            flag_cover_capped=capped.fill_null(False),
            _ss=pl.min_horizontal("_uncapped_ss", "_cap"),
            _review_ss=pl.min_horizontal("_review_ss", "_cap"),
            _jit_ss=pl.min_horizontal("_jit_ss", "_cap"),
            _jic_ss=pl.min_horizontal("_jic_ss", "_cap"),
        )
        .with_columns(
            # A capped normal cycle buffer states what it can deliver: Phi(capped SS / the sigma of the demand it covers).
            _capped_z=pl.when(pl.col("sigma_total") > 0).then(pl.col("_ss") / pl.col("sigma_total"))
        )
        .with_columns(
            expected_service_level=pl.when(pl.col("flag_cover_capped") & ~empirical & (pl.col("service_level_measure") == "cycle"))
            .then(
                pl.min_horizontal("expected_service_level", _numpy(stats.norm.cdf, "_capped_z").fill_null(pl.col("expected_service_level")))
            )
            # A capped bootstrap buffer: the largest bootstrapped level (nominal) it still covers.
            .when(pl.col("flag_cover_capped") & empirical)
            .then(pl.min_horizontal("expected_service_level", boot.level_within(pl.col("_ss")).fill_null(0.5)))
            .otherwise("expected_service_level")
        )
    )


def stock_levels(out: pl.DataFrame, boot: _BootstrapBuffers) -> pl.DataFrame:
    """Rounded levels (`round_up_units`: whole units, pack sizes): safety stock (and what it would be uncalibrated),
    reorder point = lead-time demand + SS, order-up-to level = demand over R + L + SS over R + L, min = ROP,
    max = ROP + Q, the order quantity, the pure JIT/JIC order-up-to levels and the textbook baseline
    z x sigma_d x sqrt(L). A dead, non-critical SKU (`no_buffer`) gets 0 everywhere it would order."""
    pack = pl.col("pack_size")
    uncalibrated = pl.when(boot.sized).then(boot.uncalibrated).otherwise(_numpy(safety_stock_cycle, "_z_uncalibrated", "sigma_buffered"))
    nothing = no_buffer()
    return (
        out.with_columns(
            safety_stock_units=pl.when(nothing).then(0.0).otherwise(round_up_units(pl.col("_ss"), pack)),
            uncalibrated_safety_stock_units=pl.when(nothing).then(0.0).otherwise(round_up_units(uncalibrated, pack)),
            _review_ss_units=round_up_units(pl.col("_review_ss"), pack),
        )
        .with_columns(
            reorder_point_units=pl.when(nothing)
            .then(0.0)
            .otherwise(round_up_units(_numpy(reorder_point, "lead_time_demand", "safety_stock_units"))),
            # Never below the reorder point: an order-up-to level under it would order nothing when stock hits the ROP
            # (the R + L buffer can be smaller than the L one when the review-period map is calibrated lower).
            order_up_to_units=pl.when(nothing)
            .then(0.0)
            .otherwise(
                pl.max_horizontal(
                    round_up_units(_numpy(order_up_to_level, "review_lead_time_demand", "_review_ss_units")),
                    round_up_units(_numpy(reorder_point, "lead_time_demand", "safety_stock_units")),
                )
            ),
            order_up_to_jit_units=round_up_units(_numpy(order_up_to_level, "review_lead_time_demand", "_jit_ss")),
            order_up_to_jic_units=round_up_units(_numpy(order_up_to_level, "review_lead_time_demand", "_jic_ss")),
            order_quantity_units=pl.when(nothing).then(0.0).otherwise(round_up_units(pl.col("order_quantity"), pack)),
        )
        .with_columns(
            min_units=pl.col("reorder_point_units"),
            max_units=pl.col("reorder_point_units") + pl.col("order_quantity_units"),
            textbook_safety_stock_units=round_up_units(
                _numpy(textbook_safety_stock, "safety_factor_z", "std_demand", "lead_time_periods").fill_null(0.0)
            ),
        )
    )


def costs_and_risks(out: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """Safety-stock value, its holding cost per year, the capital tied up on average (SS + Q/2), expected turns,
    the textbook buffer's value, and the obsolescence risk: dead, or declining (trend strength >= the setting and the
    forecast below `declining_ratio` x last year's rate), with a buffer; its value is the capital at risk."""
    d = pl.col("mean_demand_per_period")
    average_stock = pl.col("safety_stock_units") + pl.col("order_quantity_units") / 2
    recent_rate = pl.col("annual_units") / cfg.periods_per_year
    declining = (pl.col("trend_strength").fill_null(0.0) >= cfg.buffers.declining_trend_strength) & (
        d < cfg.buffers.declining_ratio * recent_rate
    )
    return (
        out.with_columns(
            safety_stock_value=pl.col("safety_stock_units") * pl.col("unit_cost"),
            holding_cost_per_year=pl.col("safety_stock_units") * (pl.col("unit_cost") * cfg.cost.holding_rate_per_year),
            capital_tied_up=average_stock * pl.col("unit_cost"),
            expected_turns=pl.when(average_stock > 0).then(pl.col("annual_demand_units") / average_stock),
            textbook_safety_stock_value=pl.col("textbook_safety_stock_units") * pl.col("unit_cost"),
            flag_declining=declining,
        )
        .with_columns(
            flag_obsolescence_risk=(pl.col("flag_dead") | pl.col("flag_declining")) & (pl.col("safety_stock_units") > 0),
        )
        .with_columns(
            capital_at_risk=pl.when("flag_obsolescence_risk").then(pl.col("safety_stock_value")).otherwise(0.0),
        )
    )


def with_reasons(out: pl.DataFrame, cfg: BuffercastConfig) -> pl.DataFrame:
    """`reasons`: the policy, why (`buffers.policy.reasons_expr`) and how the buffer was sized (`_method_reasons`); a dead
    SKU without a buffer keeps its one reason. Internal columns (`_...`) dropped, `sizing_level` published as
    `calibrated_service_level`."""
    t = cfg.policy
    return (
        out.with_columns(
            reasons=pl.format("{}: ", pl.col("policy"))
            + pl.when(no_buffer())
            .then(reasons_expr(t, cfg.period_days))
            .otherwise(pl.concat_list(reasons_expr(t, cfg.period_days), *_method_reasons(cfg)).list.drop_nulls().list.join("; ")),
        )
        .rename({"sizing_level": "calibrated_service_level"})
        .drop(cs.starts_with("_"))
    )
