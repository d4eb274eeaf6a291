"""How often the buffers and the forecast quantiles covered the backtest's demand: the published diagnostics
`backtest_metrics.buffer_coverage_before/after` and the calibration table's per-class `pinball_loss` and `coverage`.

Every share and loss is `evaluation.metrics.coverage` / `pinball_loss` on frames shaped here:

- `window_coverage`: normal-method buffers, each backtest window judged by a buffer sized from the SKU's other
  windows (`evaluation.windows.other_windows_sigma`);
- `bootstrap_coverage`: bootstrap buffers, from the share of each window's bootstrap below its demand
  (`buffers.lead_time_demand.bootstrap_window_coverage`; covered: share_below < level, strict);
- `pinball_losses`: the chosen models' per-step forecast quantiles per demand class (sklearn's mean pinball loss).

The calibration that moves the levels (`buffers.calibration`) is a buffer-sizing decision and stays in buffers/.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from evaluation import metrics as em
from evaluation.windows import LEAD_TIME, other_windows_sigma, window_sums

ID = "unique_id"
BEFORE, AFTER = "buffer_coverage_before", "buffer_coverage_after"
#: The sizing columns judged: the target, and the level the buffer is sized at after calibration.
LEVELS = ("service_level_target", "calibrated_service_level")


def window_coverage(errors: pl.DataFrame, sizing: pl.DataFrame) -> pl.DataFrame:
    """Per SKU: the share of its backtest windows whose cumulative lead-time error stays within the safety stock
    sized at the target (`buffer_coverage_before`) and at the level it is sized at (`buffer_coverage_after`), each
    window's sigma from the SKU's other windows (so no window is judged by a buffer that has seen it).

    `errors`: from `evaluation.windows.window_errors`; `sizing`: unique_id, service_level_target,
    calibrated_service_level (the normal-method SKUs). SKUs with fewer than 3 windows or no error are left out.
    """
    from scipy import stats  # here, not with the module: docs/architecture.md

    lead = errors.filter(pl.col("exposure") == LEAD_TIME).join(sizing, on=ID)
    lead = lead.join(window_sums(lead, [ID]), on=ID).filter(pl.col("n") >= 3).with_columns(sigma=other_windows_sigma())
    z = {c: stats.norm.ppf(lead[c].to_numpy()) for c in LEVELS}
    # The buffer of each window: z(level) x the sigma of the SKU's other windows.
    bounds = lead.with_columns(**{name: pl.Series(z[level]) * pl.col("sigma") for name, level in zip((BEFORE, AFTER), LEVELS, strict=True)})
    bounds = bounds.filter(pl.col("ss") > 0)
    return em.coverage(bounds, [BEFORE, AFTER], target_col="error")


def bootstrap_coverage(shares: pl.DataFrame, sizing: pl.DataFrame) -> pl.DataFrame:
    """Per bootstrap SKU: the share of its backtest windows whose lead-time demand the bootstrap's quantile, drawn
    from the history up to each window's cutoff, covered at the target (`buffer_coverage_before`) and at the level it
    is sized at (`buffer_coverage_after`): share_below < level (`buffers.calibration.empirical_errors`).

    `shares`: `Calibration.bootstrap_windows`; `sizing`: unique_id, service_level_target, calibrated_service_level.
    """
    lead = shares.filter(pl.col("exposure") == LEAD_TIME).join(sizing, on=ID)
    covered = em.coverage(lead, list(LEVELS), target_col="share_below", strict=True)
    return covered.rename(dict(zip(LEVELS, (BEFORE, AFTER), strict=True)))


def pinball_losses(cv: pl.DataFrame | pl.LazyFrame, classes: pl.DataFrame, quantiles: Sequence[float]) -> pl.DataFrame:
    """Per demand class and forecast quantile: `sklearn.metrics.mean_pinball_loss` of the per-step quantile (units per
    period) and its coverage (share of actuals at or below it), over the backtest rows where it is not null. Classes
    in order, quantiles in the order of `quantiles`; a class without a scorable row for a quantile has no row.

    `cv`: the chosen models' backtest rows with the quantile columns (q50, q90, ...), or a scan of them (every
    partition's, in order): read one quantile at a time, holding that quantile's scorable rows and nothing else;
    each class's rows meet sklearn in the backtest's order, so the numbers are the same, bit for bit. `classes`:
    unique_id, demand_class.
    """
    schema = {"demand_class": pl.String, "quantile": pl.String, "pinball_loss": pl.Float64, "coverage": pl.Float64}
    by_class = classes.select(ID, pl.col("demand_class").cast(pl.Categorical)).lazy()  # a small code per row, not a string
    tables = []
    for p in quantiles:
        name = em.quantile_name(p)
        scored = (
            cv.lazy()
            .select(ID, "y", name)
            .join(by_class, on=ID, maintain_order="left")
            .filter(pl.col(name).is_not_null())
            .select("demand_class", "y", name)
            .collect()
        )
        loss = em.pinball_loss(scored, {name: p}, id_col="demand_class", engine="sklearn")
        covered = em.coverage(scored, [name], id_col="demand_class")
        tables.append(
            loss.select("demand_class", quantile=pl.lit(name), pinball_loss=name).join(
                covered.select("demand_class", coverage=name), on="demand_class", maintain_order="left"
            )
        )
    table = pl.concat(tables).cast(schema) if tables else pl.DataFrame(schema=schema)
    return table.sort("demand_class", maintain_order=True)  # quantiles stay in the order of `quantiles`
