"""XYZ: volatility from the forecasting stage's error, not from raw demand (docs/methods.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

VOLATILITY_CLASSES = ("stable", "variable", "erratic", "not_backtested")
XYZ = {"stable": "X", "variable": "Y", "erratic": "Z"}


def volatility_classes(rmse: pl.Expr, mean_demand: pl.Expr, variable_from: float, erratic_from: float) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(error_cv, volatility_class, xyz_class) expressions.

    error CV = backtest RMSE / mean demand per period; X (stable) < variable_from <= Y (variable) < erratic_from <= Z
    (erratic). A SKU with no backtest (null RMSE) is `not_backtested` with a null XYZ class; zero mean demand with a
    non-zero error is erratic (error CV = inf), with no error stable.
    """
    error_cv = pl.when(mean_demand > 0).then(rmse / mean_demand).when(rmse > 0).then(pl.lit(math.inf)).otherwise(pl.lit(0.0))
    error_cv = pl.when(rmse.is_null()).then(None).otherwise(error_cv)
    volatility = (
        pl.when(error_cv.is_null())
        .then(pl.lit("not_backtested"))
        .when(error_cv < variable_from)
        .then(pl.lit("stable"))
        .when(error_cv < erratic_from)
        .then(pl.lit("variable"))
        .otherwise(pl.lit("erratic"))
    )
    return error_cv, volatility, volatility.replace_strict(XYZ, default=None, return_dtype=pl.String)


def sku_volatility(lead_time_classes: Sequence[str], variable_from: float, erratic_from: float) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(error_cv, volatility_class, xyz_class) per SKU from its columns `demand_class`, `rmse`, `mean_demand` and, for
    the `lead_time_classes` (intermittent and lumpy by default), `lead_time_rmse` and `lead_time_periods`: their
    per-period error is high by construction (most periods are zero), so they are judged on the error of the demand
    summed over the lead time, lead-time RMSE / (mean demand x lead time) (docs/methods.md, 2.3)."""
    over_lead_time = pl.col("demand_class").is_in(list(lead_time_classes))
    return volatility_classes(
        pl.when(over_lead_time).then(pl.col("lead_time_rmse")).otherwise(pl.col("rmse")),
        pl.when(over_lead_time).then(pl.col("mean_demand") * pl.col("lead_time_periods")).otherwise(pl.col("mean_demand")),
        variable_from,
        erratic_from,
    )
