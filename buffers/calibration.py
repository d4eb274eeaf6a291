"""Calibrated buffers: learn from the backtest how far nominal service drifts from achieved, and correct it.

Real demand is neither normal nor stationary, so a buffer sized for 95% by z x sigma is right less (or more) often.
The backtest holds the evidence: per SKU and window, the cumulative forecast error over each exposure a buffer
covers: the lead time (the reorder point's safety stock) and review period + lead time (the order-up-to level).
Per exposure and demand class, and per model family within a class where the data suffice:

1. Standardise each window's error by the SKU's sigma estimated WITHOUT that window (leave-one-out over the earlier
   windows): u = (actual - forecast) / sigma_-w, then carry u from the Student-t of the windows that sigma had to the
   Student-t of all the SKU's windows (what the recommendation's sigma uses; `standardised_errors`). The latest
   window of every SKU is held out entirely.
2. Achieved coverage of a nominal level alpha = share of u <= z(alpha), on a grid of alpha; fit
   `sklearn.isotonic.IsotonicRegression` (increasing) from nominal to achieved.
3. Invert it: the smallest nominal level whose fitted achieved coverage reaches the target. That level's z sizes the
   buffer instead of z(target).
4. Check on the held-out latest windows (standardised by the sigma of the earlier windows): coverage before (at the
   target's z) and after (at the calibrated z).

A class with fewer than `min_points` standardised errors keeps the uncorrected level, with the reason. A model
family (`forecasting.models.MODEL_FAMILIES`) gets its own map within its class when it has at least
`family_min_points` errors (and at least `min_points`), is not the whole class, and the class has its own map; its SKUs
use the class's map otherwise (`resolve_levels`).

The bootstrap buffers of intermittent and lumpy SKUs (an empirical alpha-quantile of bootstrapped lead-time demand)
get maps of their own per class, from the same windows: the bootstrap drawn from each window's history up to its
cutoff covers the demand that followed at level alpha exactly when the share of its samples below that demand is
< alpha (`buffers.lead_time_demand.bootstrap_window_coverage`); u = z(share) and "covered" is u < z(alpha) (strict),
so the same isotonic fit and inversion apply (`empirical_errors`). No leave-one-out is needed there: a window's
bootstrap never sees its own demand. No model family either: the bootstrap does not use the model.

The window errors come from `evaluation.windows` (`window_errors`); how often the buffers covered the backtest
windows before and after calibration, and the quantiles' pinball loss, is evaluation (`evaluation.coverage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import polars.selectors as cs
from scipy import special

# The exposures and the window sums are the backtest windows' (`evaluation.windows`).
from evaluation.windows import other_windows_sigma, window_sums
from forecasting.models import MODEL_FAMILIES

ID = "unique_id"
#: `model_family` of a class-wide map.
ALL_FAMILIES = "all"
#: Statuses under which a map's level sizes the buffer.
USABLE = ("calibrated", "capped")
#: Nominal levels the map is fitted on: safety factors z = 0, 0.01, ..., 4.75 (equally fine at every level).
Z_GRID = np.round(np.arange(0.0, 4.7501, 0.01), 2)
GRID = special.ndtr(Z_GRID)  # Phi(z), as scipy.stats.norm.cdf computes it (scipy.stats: imported where used)
#: The calibrated nominal level never exceeds this (z = 4.75): beyond, the class's errors are not worth a normal buffer.
MAX_LEVEL = float(GRID[-1])
LEVEL_SCHEMA = {
    "exposure": pl.String, "demand_class": pl.String, "model_family": pl.String, "service_level_target": pl.Float64,
    "calibrated_level": pl.Float64, "status": pl.String, "n_fit": pl.Int64, "n_check": pl.Int64,
    "heldout_before": pl.Float64, "heldout_after": pl.Float64,
}  # fmt: skip
CURVE_SCHEMA = {
    "exposure": pl.String, "demand_class": pl.String, "model_family": pl.String, "nominal": pl.Float64,
    "achieved_before": pl.Float64, "achieved_fitted": pl.Float64, "achieved_check": pl.Float64,
}  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    levels: pl.DataFrame  # LEVEL_SCHEMA: one row per exposure, class, family ("all": the class) and target
    curves: pl.DataFrame  # CURVE_SCHEMA: the raw and fitted maps on GRID, and the held-out windows' coverage
    #: the bootstrap buffers' windows the maps were fitted on: unique_id, exposure, cutoff, from_latest, share_below
    bootstrap_windows: pl.DataFrame | None = None


def model_family(model: pl.Expr) -> pl.Expr:
    """The family of a chosen model's name (`forecasting.models.MODEL_FAMILIES`; unknown names are their own)."""
    return model.replace_strict(MODEL_FAMILIES, default=model, return_dtype=pl.String)


def standardised_errors(errors: pl.DataFrame) -> pl.DataFrame:
    """unique_id, exposure, set ("fit" or "check"), u: fit windows divided by the leave-one-out RMSE of the other fit
    windows; the latest window divided by the RMSE of all fit windows. SKUs with fewer than 3 windows give none; a
    window whose sigma is zero gives +-inf by the sign of its error (an error the others never showed), none if its
    error is zero too.

    Each u is then put on the footing of deployment, where sigma is the RMSE of ALL the SKU's windows: an error
    standardised by the RMSE of m windows is Student-t with m degrees of freedom when the errors are normal, so u is
    carried from t(m) to t(N) (N = all windows) by its quantile, u' = F_t(N)^-1(F_t(m)(u)). Without it, the map learnt
    from sigmas of one or two windows fewer than the recommendation uses is conservative (heavier tails than deployed).
    """
    keys = [ID, "exposure"]
    fit = errors.filter(pl.col("from_latest") > 0)
    sums = window_sums(fit, keys).filter(pl.col("n") >= 2)
    loo = (
        fit.join(sums, on=keys)
        .with_columns(sigma=other_windows_sigma(), df=pl.col("n") - 1)
        .select(*keys, pl.lit("fit").alias("set"), u=_ratio(pl.col("error"), pl.col("sigma")), df=pl.col("df"), deployed_df=pl.col("n") + 1)
    )
    check = (
        errors.filter(pl.col("from_latest") == 0)
        .join(sums, on=keys)
        .with_columns(sigma=(pl.col("ss") / pl.col("n")).sqrt())
        .select(
            *keys, pl.lit("check").alias("set"), u=_ratio(pl.col("error"), pl.col("sigma")), df=pl.col("n"), deployed_df=pl.col("n") + 1
        )
    )
    from scipy import stats

    out = pl.concat([loo, check]).filter(pl.col("u").is_not_null())
    u, df, deployed = (out[c].to_numpy().astype(float) for c in ("u", "df", "deployed_df"))
    # Through the nearer tail's log-probability (precision in both tails; +-inf stays +-inf); monotone in u per SKU.
    carried = np.where(
        u <= 0,
        stats.t.ppf(np.exp(stats.t.logcdf(u, df)), deployed),
        stats.t.isf(np.exp(stats.t.logsf(u, df)), deployed),
    )
    return out.select(*keys, "set").with_columns(u=pl.Series(carried, dtype=pl.Float64))


def empirical_errors(shares: pl.DataFrame) -> pl.DataFrame:
    """unique_id, exposure, set, u (and demand_class when `shares` has it) for the bootstrap buffers:
    u = z(share_below) per window (-inf where no sample lies below the demand, +inf where all do); the latest window
    is the check set. A buffer at level alpha covered the window exactly when u < z(alpha).

    `shares`: unique_id, exposure, from_latest, share_below (`bootstrap_window_coverage`).
    """
    from scipy import stats

    u = stats.norm.ppf(shares["share_below"].to_numpy().astype(float))
    return shares.select(
        ID,
        cs.by_name("demand_class", require_all=False),
        "exposure",
        set=pl.when(pl.col("from_latest") > 0).then(pl.lit("fit")).otherwise(pl.lit("check")),
    ).with_columns(u=pl.Series(u, dtype=pl.Float64))


def _ratio(error: pl.Expr, sigma: pl.Expr) -> pl.Expr:
    """error / sigma; with a zero sigma, +-inf by the error's sign, null for a zero error."""
    inf = float("inf")
    return pl.when(sigma > 0).then(error / sigma).when(error > 0).then(inf).when(error < 0).then(-inf)


def fit_calibration(
    errors: pl.DataFrame,
    groups: pl.DataFrame,
    targets: Sequence[float],
    *,
    min_points: int,
    family_min_points: int | None,
    empirical: pl.DataFrame | None = None,
) -> Calibration:
    """Per exposure and demand class (and model family within it, where the data suffice), the isotonic map
    nominal -> achieved and the calibrated level of each target.

    `errors`: from `evaluation.windows.window_errors`; `groups`: unique_id, demand_class and optionally model_family (only SKUs of the
    normal method). `family_min_points` None: class maps only. `empirical` (unique_id, demand_class, exposure,
    from_latest, share_below): the bootstrap buffers' windows, one map per exposure and class (their classes must
    not be among `groups`').
    """
    groups = groups if "model_family" in groups.columns else groups.with_columns(model_family=pl.lit(None, pl.String))
    u = standardised_errors(errors).join(groups, on=ID).with_columns(strict=pl.lit(False))
    if empirical is not None and not empirical.is_empty():
        clash = set(empirical["demand_class"]) & set(groups["demand_class"])
        if clash:
            raise ValueError(f"fit_calibration: classes {sorted(clash)} are both normal-method and bootstrap")
        emp = empirical_errors(empirical).with_columns(model_family=pl.lit(None, pl.String), strict=pl.lit(True))
        u = pl.concat([u, emp], how="diagonal_relaxed")
    levels: list[dict] = []
    curves: list[pl.DataFrame] = []
    for (exposure, cls, strict), group in sorted(u.group_by("exposure", "demand_class", "strict"), key=lambda g: g[0]):
        parts = [(ALL_FAMILIES, group, min_points)]
        # Family maps refine a class map: none where the class itself has too few errors.
        if family_min_points is not None and group.filter(pl.col("set") == "fit").height >= min_points:
            families = group.filter(pl.col("model_family").is_not_null())
            if families["model_family"].n_unique() > 1 or families.height < group.height:
                parts += [
                    (fam, part, max(family_min_points, min_points))
                    for (fam,), part in sorted(families.group_by("model_family"), key=lambda g: g[0])
                ]
        for family, part, needed in parts:
            key = {"exposure": exposure, "demand_class": cls, "model_family": family}
            fit = np.sort(part.filter(pl.col("set") == "fit")["u"].to_numpy())
            check = part.filter(pl.col("set") == "check")["u"].to_numpy()
            rows, curve = _fit_map(fit, check, targets, needed, strict)
            levels += [key | row for row in rows]
            if curve is not None:
                curves.append(pl.DataFrame(key | curve))
    return Calibration(
        levels=pl.DataFrame(levels, schema=LEVEL_SCHEMA),
        curves=pl.concat(curves).cast(CURVE_SCHEMA) if curves else pl.DataFrame(schema=CURVE_SCHEMA),
    )


def _fit_map(
    fit: np.ndarray, check: np.ndarray, targets: Sequence[float], needed: int, strict: bool = False
) -> tuple[list[dict], dict | None]:
    """One map: the level rows of each target, and the curve (None when there are too few errors to fit).
    Covered at alpha: u <= z(alpha), or u < z(alpha) when `strict` (the bootstrap's windows)."""
    side = "left" if strict else "right"
    if fit.size < needed:
        status = f"too_few_windows ({fit.size} < {needed})"
        return [_level(t, t, status, fit.size, check, t, strict) for t in targets], None
    from sklearn.isotonic import IsotonicRegression

    achieved = np.searchsorted(fit, Z_GRID, side=side) / fit.size  # share of u <= z(alpha) (u < z when strict)
    # Isotonic in the level is isotonic in its z (same order); z keeps the far-tail levels distinct.
    fitted = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(Z_GRID, achieved).predict(Z_GRID)
    rows = []
    for t in targets:
        reach = np.flatnonzero(fitted >= t)
        level = float(min(GRID[reach[0]], MAX_LEVEL)) if reach.size else MAX_LEVEL
        rows.append(_level(t, level, "calibrated" if reach.size else "capped", fit.size, check, level, strict))
    check_cov = np.searchsorted(np.sort(check), Z_GRID, side=side) / max(check.size, 1)
    return rows, {"nominal": GRID, "achieved_before": achieved, "achieved_fitted": fitted, "achieved_check": check_cov}


def _level(target: float, level: float, status: str, n_fit: int, check: np.ndarray, used: float, strict: bool) -> dict:
    from scipy import stats

    z_before, z_after = stats.norm.ppf(target), stats.norm.ppf(used)
    covered = np.less if strict else np.less_equal
    return {
        "service_level_target": float(target),
        "calibrated_level": float(level),
        "status": status,
        "n_fit": int(n_fit),
        "n_check": int(check.size),
        "heldout_before": float(np.mean(covered(check, z_before))) if check.size else None,
        "heldout_after": float(np.mean(covered(check, z_after))) if check.size else None,
    }


def resolve_levels(skus: pl.DataFrame, levels: pl.DataFrame | None, exposure: str, target: pl.Expr, name: str) -> pl.DataFrame:
    """Per SKU, the nominal level its `target` is sized at for one exposure: its model family's map where that is
    usable, else its class's map, else the target itself. unique_id, `name`, `{name}_status` (calibrated, capped,
    too_few_windows or not_calibrated), `{name}_map` ("class" or "class x family"; null when not calibrated).

    `skus`: unique_id, demand_class, model_family (nullable); `levels`: `Calibration.levels`.
    """
    base = skus.select(ID, "demand_class", "model_family", _target=target)
    if levels is None or levels.is_empty():
        return base.select(
            ID,
            pl.col("_target").alias(name),
            pl.lit("not_calibrated").alias(f"{name}_status"),
            pl.lit(None, pl.String).alias(f"{name}_map"),
        )
    mine = levels.filter(pl.col("exposure") == exposure).select(
        "demand_class",
        "model_family",
        _target="service_level_target",
        _level="calibrated_level",
        _status=pl.col("status").str.extract(r"^(\w+)"),
    )
    usable = mine.filter(pl.col("_status").is_in(USABLE))
    family = usable.filter(pl.col("model_family") != ALL_FAMILIES).rename({"_level": "_fam_level", "_status": "_fam_status"})
    whole = mine.filter(pl.col("model_family") == ALL_FAMILIES).drop("model_family")
    joined = base.join(family, on=["demand_class", "model_family", "_target"], how="left").join(
        whole, on=["demand_class", "_target"], how="left"
    )
    by_family = pl.col("_fam_level").is_not_null()
    by_class = pl.col("_status").is_in(USABLE)
    return joined.select(
        ID,
        pl.when(by_family).then("_fam_level").when(by_class).then("_level").otherwise("_target").alias(name),
        pl.when(by_family).then("_fam_status").otherwise(pl.col("_status").fill_null("not_calibrated")).alias(f"{name}_status"),
        pl.when(by_family)
        .then(pl.format("{} x {}", "demand_class", "model_family"))
        .when(by_class)
        .then(pl.col("demand_class"))
        .alias(f"{name}_map"),
    )
