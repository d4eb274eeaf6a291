"""JIT / JIC / hybrid per SKU from the seed's three factors, with reasons (docs/methods.md).

- JIC when any factor calls for a full buffer: critical item, long or unreliable lead time,
  erratic forecast error (Z), lumpy demand.
- JIT when every factor is benign: not critical, short and reliable lead time, stable forecast error (X),
  smooth demand, and a backtest to prove it.
- hybrid otherwise: a buffer for the variable part only (see `buffered_components`).
- The policy uses what the forecast cannot explain: sizes that vary a lot (SBC class `erratic`) count as irregular
  only when the forecast error is not stable; a seasonal or trending series that is well forecast is not.
- `policy.force` (a what-if, and the evaluation's pure JIT / JIC baselines) gives every SKU one policy.

Every rule is a boolean flag column (machine-readable) and a sentence in `reasons` (planner-readable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from configs.schema import PolicyConfig


#: Flag columns, each one rule; the policy follows from them.
#: The policies, lean to buffered (plots stack them in this order).
POLICIES = ("JIT", "hybrid", "JIC")
JIC_FLAGS = ("flag_critical", "flag_long_lead_time", "flag_unreliable_lead_time", "flag_erratic_error", "flag_lumpy_demand")
HYBRID_FLAGS = (
    "flag_moderate_lead_time",
    "flag_variable_lead_time",
    "flag_variable_error",
    "flag_irregular_demand",
    "flag_no_backtest",
)
#: Life-cycle flags: a dead, non-critical SKU gets no buffer (JIT, nothing to reorder); a new one is not backtested.
LIFE_CYCLE_FLAGS = ("flag_dead", "flag_new")
FLAG_COLUMNS = (*JIC_FLAGS, *HYBRID_FLAGS, *LIFE_CYCLE_FLAGS)
#: The risk flags `buffers.recommend.costs_and_risks` adds after the policy flags.
RISK_FLAGS = ("flag_declining", "flag_obsolescence_risk")
#: How `buffers.recommend` sizes a buffer (`safety_stock_method`); here, with the other published vocabularies, so
#: that the contracts (and the CLI's look at the inputs) do not import the buffer engine.
SAFETY_STOCK_METHODS = ("normal_cycle", "normal_fill_rate", "bootstrap_quantile")


def _fmt(expr: pl.Expr, digits: int = 2) -> pl.Expr:
    return expr.round(digits).cast(pl.String)


def _lead_time_cv() -> pl.Expr:
    """Lead-time std / mean: how unreliable the supplier is (a missing std is a reliable lead time)."""
    return pl.col("lead_time_std_days").fill_null(0.0) / pl.col("lead_time_days")


def policy_flags(t: PolicyConfig) -> list[pl.Expr]:
    """Boolean rule columns from critical, lead_time_days, lead_time_std_days, volatility_class, demand_class."""
    lt = pl.col("lead_time_days")
    lt_cv = _lead_time_cv()
    vol = pl.col("volatility_class")
    cls = pl.col("demand_class")
    return [
        pl.col("critical").fill_null(False).alias("flag_critical"),
        (lt >= t.jic_min_lead_time_days).alias("flag_long_lead_time"),
        (lt_cv >= t.jic_min_lead_time_cv).alias("flag_unreliable_lead_time"),
        (vol == "erratic").alias("flag_erratic_error"),
        (cls == "lumpy").alias("flag_lumpy_demand"),
        ((lt > t.jit_max_lead_time_days) & (lt < t.jic_min_lead_time_days)).alias("flag_moderate_lead_time"),
        ((lt_cv > t.jit_max_lead_time_cv) & (lt_cv < t.jic_min_lead_time_cv)).alias("flag_variable_lead_time"),
        (vol == "variable").alias("flag_variable_error"),
        ((cls == "intermittent") | ((cls == "erratic") & (vol != "stable"))).alias("flag_irregular_demand"),
        ((vol == "not_backtested") | (cls == "insufficient_history")).alias("flag_no_backtest"),
        (pl.col("life_cycle") == "dead").alias("flag_dead"),
        (pl.col("life_cycle") == "new").alias("flag_new"),
    ]


def no_buffer() -> pl.Expr:
    """Dead and not critical: no buffer and nothing to reorder (a critical item keeps its buffer, flagged)."""
    return pl.col("flag_dead") & ~pl.col("flag_critical")


def policy_expr(t: PolicyConfig) -> pl.Expr:
    """JIT (no buffer) if dead and not critical, else `t.force` if set, else JIC if any JIC flag, else hybrid if any
    hybrid flag, else JIT."""
    out = pl.when(no_buffer()).then(pl.lit("JIT"))
    if t.force is not None:
        return out.otherwise(pl.lit(t.force))
    return (
        out.when(pl.any_horizontal(*JIC_FLAGS))
        .then(pl.lit("JIC"))
        .when(pl.any_horizontal(*HYBRID_FLAGS))
        .then(pl.lit("hybrid"))
        .otherwise(pl.lit("JIT"))
    )


def buffered_components() -> tuple[pl.Expr, pl.Expr]:
    """Which variance terms the buffer covers: (demand uncertainty over the lead time, lead-time variability).

    JIC and JIT cover both (JIT at its lower service level). Hybrid covers only the variable part:
    the demand term when demand is the problem (variable error, irregular pattern, no backtest) or the
    lead time is long enough for demand noise to add up; the lead-time term when the supplier is variable.
    """
    hybrid = pl.col("policy") == "hybrid"
    demand = ~hybrid | pl.any_horizontal("flag_variable_error", "flag_irregular_demand", "flag_no_backtest", "flag_moderate_lead_time")
    lead_time = ~hybrid | pl.col("flag_variable_lead_time")
    return demand, lead_time


def reasons_expr(t: PolicyConfig, period_days: float) -> pl.Expr:
    """Planner-readable reasons, most decisive first, joined by '; '."""
    since_last_sale = (pl.col("periods_since_last_sale") * period_days).round(0).cast(pl.Int64).cast(pl.String)
    lt = pl.col("lead_time_days")
    lt_cv = _lead_time_cv()
    err = _fmt(pl.col("error_cv"))
    dead = pl.when(no_buffer()).then(
        pl.format("dead: no sale in the last {} days (obsolescence risk): no buffer, no reorder; review for phase-out", since_last_sale)
    )
    parts = [
        pl.when(pl.lit(t.force is not None) & ~no_buffer()).then(pl.lit(f"policy forced to {t.force} by the config (policy.force)")),
        dead,
        pl.when("flag_critical").then(pl.lit("critical item")),
        pl.when(pl.col("flag_dead") & pl.col("flag_critical")).then(
            pl.format("no sale in the last {} days: buffer kept as the item is critical; review the obsolescence risk", since_last_sale)
        ),
        pl.when("flag_long_lead_time").then(
            pl.format("long lead time ({} d >= {} d)", _fmt(lt, 1), pl.lit(f"{t.jic_min_lead_time_days:g}"))
        ),
        pl.when("flag_unreliable_lead_time").then(
            pl.format("unreliable lead time (std/mean {} >= {})", _fmt(lt_cv), pl.lit(f"{t.jic_min_lead_time_cv:g}"))
        ),
        pl.when("flag_erratic_error").then(pl.format("erratic demand (error CV {})", err)),
        pl.when("flag_lumpy_demand").then(pl.format("lumpy demand (ADI {}, CV2 {})", _fmt(pl.col("adi")), _fmt(pl.col("cv2")))),
        pl.when("flag_moderate_lead_time").then(
            pl.format("lead time {} d > {} d (too long for pure JIT)", _fmt(lt, 1), pl.lit(f"{t.jit_max_lead_time_days:g}"))
        ),
        pl.when("flag_variable_lead_time").then(pl.format("variable lead time (std/mean {})", _fmt(lt_cv))),
        pl.when("flag_variable_error").then(pl.format("variable demand (error CV {})", err)),
        pl.when("flag_irregular_demand").then(
            pl.format("{} demand pattern (ADI {}, CV2 {})", pl.col("demand_class"), _fmt(pl.col("adi")), _fmt(pl.col("cv2")))
        ),
        pl.when((pl.col("demand_class") == "erratic") & (pl.col("volatility_class") == "stable")).then(
            pl.format(
                "sizes vary (CV2 {}) but the forecast explains it (error CV {}, stable): seasonality or trend, not noise",
                _fmt(pl.col("cv2")),
                err,
            )
        ),
        pl.when("flag_new").then(pl.lit("new product: first sale too recent to backtest")),
        pl.when("flag_no_backtest").then(pl.lit("too little history to backtest: sigma from one-step error x sqrt(lead time)")),
        pl.when((pl.col("policy") == "JIT") & ~no_buffer() & pl.lit(t.force is None)).then(
            pl.format(
                "stable demand (error CV {}), {} pattern, short reliable lead time ({} d), not critical",
                err,
                pl.col("demand_class"),
                _fmt(lt, 1),
            )
        ),
        pl.when(~pl.col("in_sku_master")).then(pl.lit("not in the SKU master: lead time, its std and unit cost from config defaults")),
        pl.when(pl.col("model_fell_back")).then(pl.lit("the chosen model could not be fitted: fallback model used")),
    ]
    joined = pl.concat_list(parts).list.drop_nulls().list.join("; ")
    # A dead SKU without a buffer needs one reason: the others (lead time, volatility) no longer decide anything.
    return pl.when(no_buffer()).then(dead).otherwise(joined)
