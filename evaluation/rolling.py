"""Judging plans out of sample, as the schedule lives them: each origin's published parameters against what came after.

A rolling-origin evaluation plans at origins t_1 < ... < t_K with the data up to each origin only
(`pipeline/evaluate.py` runs the same stages as a run) and judges each plan here, only on demand after its origin:

- **cycle service**: the reorder point covered the demand over the lead time that starts at the origin,
  D_L = sum_t w_t y_{t0 + t}, the lead time drawn from the SKU's lead-time distribution (`realised_lead_times`: a
  buffer that covers lead-time variability is judged against it), with the lead-time weights w_t (whole periods
  fully, a fractional last period by its fraction: `evaluation.windows.lead_time_weights`); covered when D_L <= ROP.
  A window is judged only when all of its periods lie in the data (the latest origins may leave long lead times
  unjudged: counted, never guessed);
- **fill rate, units short and on-hand stock** from a replay of the plan's order-up-to policy until the next origin
  (`replay_windows`, with `evaluation.simulate.simulate_order_up_to`): the replay starts at the origin at the moment
  an order is due, on hand = the reorder point and an order of S - ROP placed (the cycle the cycle-service check
  judges), then reviews every R periods with the plan's ROP and S for `step` periods (until the next origin), every
  order taking the realised lead time, and follows the stock until the last order placed under the plan has arrived
  (step + L periods); unmet demand is backordered and counted short. A window whose replay runs past the end of the
  data is not replayed (counted in `replayed`);
- **safety-stock value**: the capital the plan holds for it, SS x unit cost, and the average on-hand value of the
  replay.

The same windows judge the baselines, each computed from the SKU's history up to the origin only (`baselines`):
- `textbook`: ROP = mu L + z(alpha) sd sqrt(L) with mu, sd the mean and standard deviation of demand per period;
- `empirical`: ROP = the alpha-quantile (inverted CDF, as the bootstrap) of the SKU's own L-period demand sums;
- `ddmrp`: top of yellow = red + yellow, red = ADU x DLT x LTF x (1 + VF), yellow = ADU x DLT (Ptak & Smith 2016;
  `ddmrp_rop`), one point: DDMRP has no service target.
Their safety stock is ROP - mu L, floored at 0; their order-up-to level ROP + mu R (DDMRP: top of green, green =
max(ADU x DLT x LTF, ADU x R)). `jit` and `jic` (pure JIT, pure JIC) are buffercast's own plans with every SKU forced
to one policy (`policy.force`), planned by `pipeline.evaluate`.

`summarise` aggregates per method, target and slice (all, demand class, policy, life cycle, ABC class): windows,
covered, achieved with its Wilson 95% interval (`wilson_interval`; the windows of one SKU are correlated, so the
interval is narrower than the truth when a SKU has several), the expected service the plan stated, the replay's fill
rate, units short and on-hand value, and the safety-stock value per window. `capital_at_equal_service` reads the
trade-off curves: what buffercast's curve spends at the service a baseline achieved. Pure polars and numpy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from buffers.streams import standard_normals, stream_keys
from evaluation.simulate import simulate_order_up_to
from evaluation.windows import lead_time_weights

ID = "unique_id"
#: The plan's columns the judge reads (from the published `recommendations`, plus unique_id).
PLAN_COLUMNS = (
    ID, "policy", "demand_class", "life_cycle", "abc_class", "service_level_target", "expected_service_level",
    "lead_time_periods", "lead_time_days", "lead_time_std_days", "review_periods", "reorder_point_units", "safety_stock_units",
    "order_up_to_units", "unit_cost",
)  # fmt: skip
#: The slices `summarise` aggregates over (None: every window of the method and target).
SLICES = (None, "demand_class", "policy", "life_cycle", "abc_class")
#: DDMRP lead-time factors by lead-time category and variability factors by demand class (OCA ddmrp defaults).
DDMRP_LTF = {"short": 0.75, "medium": 0.5, "long": 0.25}
DDMRP_VF = {"smooth": 0.25, "erratic": 0.5, "intermittent": 0.5, "lumpy": 0.75, "insufficient_history": 0.75}


def wilson_interval(covered: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of each proportion covered / n (Wilson 1927; scipy's `binomtest(...).proportion_ci`);
    NaN where n = 0."""
    k, m = np.atleast_1d(covered).astype(int), np.atleast_1d(n).astype(int)
    bounds = [stats.binomtest(a, b).proportion_ci(confidence, method="wilson") if b > 0 else None for a, b in zip(k, m, strict=True)]
    low = np.array([np.nan if ci is None else ci.low for ci in bounds])
    high = np.array([np.nan if ci is None else ci.high for ci in bounds])
    return (low, high) if np.ndim(covered) or np.ndim(n) else (low[0], high[0])


def realised_lead_times(lead_times: pl.DataFrame, *, seed: int, origin: object) -> pl.DataFrame:
    """unique_id, lead_time_periods: the lead time each SKU's order placed at `origin` takes, max(L + sigma_L Z, 0)
    with Z from the SKU's stream keyed by (seed, SKU, "judge@<origin>") (`buffers.streams`): the buffer covers the
    lead time's variability, so the judge must meet it too. `lead_times`: unique_id, lead_time_periods,
    lead_time_std_periods (every method is judged on the same draw)."""
    z = standard_normals(stream_keys(seed, lead_times[ID].to_list(), f"judge@{origin}"), 1)[:, 0]
    drawn = lead_times["lead_time_periods"].to_numpy() + lead_times["lead_time_std_periods"].fill_null(0.0).to_numpy() * z
    return lead_times.select(ID, lead_time_periods=pl.Series(np.maximum(drawn, 0.0)))


def future_demand(panel: pl.DataFrame, after: object, lead_time_periods: pl.DataFrame) -> pl.DataFrame:
    """unique_id, lead_time_demand_actual, judged: the demand over each SKU's lead time from the first period after
    `after` (the origin's last period), weighted by `lead_time_weights`; judged only when every period of the lead
    time is in `panel`. `lead_time_periods`: unique_id, lead_time_periods (e.g. `realised_lead_times`)."""
    steps = (
        panel.filter(pl.col("ds") > after)
        .join(lead_time_periods, on=ID, how="inner")
        .sort(ID, "ds")
        .with_columns(step=pl.col("ds").rank("ordinal").over(ID).cast(pl.Int64))
    )
    w = lead_time_weights(pl.col("step"), pl.col("lead_time_periods"))
    needed = pl.col("lead_time_periods").ceil().clip(1, None)
    return (
        steps.group_by(ID, maintain_order=True)
        .agg(
            lead_time_demand_actual=(w * pl.col("y")).filter(pl.col("step") <= needed).sum(),
            judged=pl.col("step").max() >= needed.first(),
        )
        .join(lead_time_periods.select(ID), on=ID, how="right")
        .with_columns(pl.col("judged").fill_null(False))
        .select(ID, "lead_time_demand_actual", "judged")
    )


def _lead_time_sums(y: np.ndarray, lead: float) -> np.ndarray:
    """Every contiguous L-period demand sum of a history (whole periods fully, the fractional last one by its part);
    the whole history's sum when it is shorter than the lead time."""
    whole = math.floor(lead)
    part = lead - whole
    n = y.size - whole - (1 if part > 0 else 0) + 1
    if n <= 0:
        return np.array([float(y.sum())])
    cs = np.concatenate([[0.0], np.cumsum(y)])
    starts = np.arange(n)
    sums = cs[starts + whole] - cs[starts]
    return sums + part * y[starts + whole] if part > 0 else sums


def baselines(
    history: pl.DataFrame, plan: pl.DataFrame, targets: Sequence[float], *, history_periods: int, adu_periods: int,
    period_days: float, short_lead_time_days: float, long_lead_time_days: float,
) -> pl.DataFrame:  # fmt: skip
    """unique_id, method, target, reorder_point, safety_stock_units, order_up_to per SKU of `plan` for the textbook and empirical
    baselines at each target, and DDMRP (target null), from `history` (unique_id, ds, y: the data up to the origin
    only; its last `history_periods` periods, `adu_periods` for DDMRP's ADU)."""
    lead = dict(zip(plan[ID], plan["lead_time_periods"], strict=True))
    lead_days = dict(zip(plan[ID], plan["lead_time_days"], strict=True))
    review = dict(zip(plan[ID], plan["review_periods"], strict=True))
    classes = dict(zip(plan[ID], plan["demand_class"], strict=True))
    z = {a: float(stats.norm.ppf(a)) for a in targets}
    rows: list[tuple] = []
    for (uid,), group in history.filter(pl.col(ID).is_in(plan[ID].implode())).sort("ds").group_by(ID, maintain_order=True):
        y_all = group["y"].to_numpy().astype(float)
        y = y_all[-history_periods:]
        L, R = float(lead[uid]), float(review[uid])
        mu, sd = float(y.mean()), float(y.std(ddof=1)) if y.size > 1 else 0.0
        sums = _lead_time_sums(y, L)
        for a in targets:
            textbook = mu * L + z[a] * sd * math.sqrt(L)
            empirical = float(np.quantile(sums, a, method="inverted_cdf"))
            rows.append((uid, "textbook", a, textbook, max(textbook - mu * L, 0.0), textbook + mu * R))
            rows.append((uid, "empirical", a, empirical, max(empirical - mu * L, 0.0), empirical + mu * R))
        adu = float(y_all[-adu_periods:].mean())
        days = float(lead_days[uid])
        category = "short" if days <= short_lead_time_days else "long" if days >= long_lead_time_days else "medium"
        red = adu * L * DDMRP_LTF[category] * (1 + DDMRP_VF.get(classes[uid], 0.75))
        green = max(adu * L * DDMRP_LTF[category], adu * R)
        rows.append((uid, "ddmrp", None, red + adu * L, red, red + adu * L + green))
    return pl.DataFrame(
        rows,
        schema={
            ID: pl.String,
            "method": pl.String,
            "target": pl.Float64,
            "reorder_point": pl.Float64,
            "safety_stock_units": pl.Float64,
            "order_up_to": pl.Float64,
        },
        orient="row",
    )


def replay_windows(
    panel: pl.DataFrame, after: object, windows: pl.DataFrame, lead_time_periods: pl.DataFrame, step_periods: int
) -> pl.DataFrame:
    """`windows` (one row per SKU, method and target: unique_id, reorder_point, order_up_to, review_periods) with the
    replay of each plan from the origin (module docstring): replayed (the data holds the replay's step + L periods),
    replay_demand, replay_short (units not served from stock in their period) and replay_on_hand (mean end-of-period
    on-hand units over the step + L periods); null when not replayed. `after`: the origin's last period;
    `lead_time_periods`: unique_id, lead_time_periods (the realised lead time, rounded half up to whole periods here)."""
    whole = lead_time_periods.select(ID, lead=(pl.col("lead_time_periods") + 0.5).floor().cast(pl.Int64))
    future = panel.filter(pl.col("ds") > after).sort(ID, "ds").group_by(ID, maintain_order=True).agg(y=pl.col("y"))
    rows = (
        windows.with_row_index("_row")
        .join(whole, on=ID, how="left")
        .join(future, on=ID, how="left")
        .with_columns(horizon=pl.col("lead") + step_periods)
        .with_columns(replayed=pl.col("y").list.len().fill_null(0) >= pl.col("horizon"))
        .sort("_row")
    )
    n = rows.height
    out = rows.select(pl.exclude("_row", "lead", "y", "horizon"))
    if n == 0 or not rows["replayed"].any():
        return out.with_columns(
            replay_demand=pl.lit(None, pl.Float64), replay_short=pl.lit(None, pl.Float64), replay_on_hand=pl.lit(None, pl.Float64)
        )
    replayed = rows["replayed"].to_numpy()
    horizon = rows["horizon"].to_numpy()
    width = int(horizon[replayed].max()) + 1
    # Right-aligned rows: a NaN prefix, the origin (no demand: the order is placed before the first period after it),
    # then the step + L periods of demand.
    demand = np.full((n, width), np.nan)
    cells = (
        rows.select(i=pl.int_range(pl.len()), h="horizon", y=pl.col("y").list.head(pl.col("horizon")), keep="replayed")
        .filter("keep")
        .explode("y")
        .with_columns(column=width - pl.col("h") + pl.int_range(pl.len()).over("i"))
    )
    demand[cells["i"].to_numpy(), cells["column"].to_numpy()] = cells["y"].to_numpy()
    starts = np.flatnonzero(replayed)
    demand[starts, width - horizon[starts] - 1] = 0.0
    rop = rows["reorder_point"].fill_null(0.0).clip(0.0, None).to_numpy()
    result = simulate_order_up_to(
        demand,
        order_up_to=np.maximum(rows["order_up_to"].fill_null(0.0).to_numpy(), rop),
        review_periods=rows["review_periods"].round(0).clip(1, None).to_numpy(),
        lead_time_mean=rows["lead"].fill_null(0).to_numpy().astype(float),
        lead_time_std=0.0,
        seed=0,
        reorder_point=rop,
        initial_on_hand=rop,
    )
    # The replay's mean on hand includes the origin's column (on hand = ROP): take it out.
    with np.errstate(invalid="ignore", divide="ignore"):
        on_hand = (result.average_on_hand * (horizon + 1) - rop) / horizon
    keep = pl.Series(replayed)
    return out.with_columns(
        replay_demand=pl.when(keep).then(pl.Series(result.demand_total)),
        replay_short=pl.when(keep).then(pl.Series(result.units_short)),
        replay_on_hand=pl.when(keep).then(pl.Series(on_hand)),
    )


def judge(windows: pl.DataFrame) -> pl.DataFrame:
    """Per window (one row per origin, SKU, method and target, with `reorder_point`, `lead_time_demand_actual`):
    covered (the reorder point covered the demand over the realised lead time)."""
    return windows.with_columns(covered=pl.col("lead_time_demand_actual") <= pl.col("reorder_point") + 1e-9)


def summarise(judged: pl.DataFrame) -> pl.DataFrame:
    """Per method, target and slice (`SLICES`): windows, covered, achieved and its Wilson 95% interval, the mean
    expected service the plan stated; over the replayed windows (`replayed`) the pooled fill rate (1 - units short /
    demand), units short and the mean on-hand value; the mean safety-stock value per window."""
    parts = []
    replayed = pl.col("replayed")
    for dim in SLICES:
        keys = ["method", "target"] + ([dim] if dim else [])
        agg = (
            judged.group_by(keys)
            .agg(
                windows=pl.len().cast(pl.Int64),
                covered=pl.col("covered").sum().cast(pl.Int64),
                expected=pl.col("expected_service_level").mean(),
                replayed=replayed.sum().cast(pl.Int64),
                demand=pl.col("replay_demand").filter(replayed).sum(),
                units_short=pl.col("replay_short").filter(replayed).sum(),
                on_hand_value=(pl.col("replay_on_hand") * pl.col("unit_cost")).filter(replayed).mean(),
                safety_stock_value=(pl.col("safety_stock_units") * pl.col("unit_cost")).mean(),
            )
            .with_columns(
                slice=pl.lit(dim or "all"),
                value=pl.col(dim).cast(pl.String) if dim else pl.lit("all"),
            )
        )
        parts.append(agg.drop(dim) if dim else agg)
    out = pl.concat(parts, how="diagonal_relaxed")
    low, high = wilson_interval(out["covered"].to_numpy(), out["windows"].to_numpy())
    return (
        out.with_columns(
            achieved=pl.col("covered") / pl.col("windows"),
            achieved_low=pl.Series(low),
            achieved_high=pl.Series(high),
            fill_rate=pl.when(pl.col("demand") > 0).then(1 - pl.col("units_short") / pl.col("demand")),
        )
        .drop("demand")
        .sort("method", "target", "slice", "value", nulls_last=True)
    )


def capital_at_equal_service(summary: pl.DataFrame, reference: str = "buffercast_sweep") -> pl.DataFrame:
    """Per slice, value, baseline method and target: the service the baseline achieved, its safety-stock value per
    window, and what the `reference` trade-off curve (achieved vs safety-stock value over its targets, linear between
    its points) spends at that same achieved service; ratio = reference / baseline (below 1: the reference needs less
    capital for the same service). Null where the baseline's service lies outside the reference curve's range. Only
    rows with the reference's window count (the same windows) are compared."""
    rows = []
    curves = summary.filter(pl.col("method") == reference).sort("target")
    for (slice_, value), curve in curves.group_by("slice", "value", maintain_order=True):
        ordered = curve.sort("achieved")
        x, v = ordered["achieved"].to_numpy(), ordered["safety_stock_value"].to_numpy()
        # Only rows judged on the reference's windows (every SKU of the slice at one target): the plan as configured
        # or pure JIC at one of several targets covers a subset of the SKUs, the periods-ahead methods other windows.
        same = pl.col("windows") == int(curve["windows"].max())
        others = summary.filter(pl.col("method") != reference, pl.col("slice") == slice_, pl.col("value") == value, same)
        for row in others.iter_rows(named=True):
            a = row["achieved"]
            at = float(np.interp(a, x, v)) if x.size and x[0] <= a <= x[-1] else None
            base = row["safety_stock_value"]
            rows.append((slice_, value, row["method"], row["target"], a, base, at, at / base if at is not None and base else None))
    return pl.DataFrame(
        rows,
        schema={
            "slice": pl.String,
            "value": pl.String,
            "method": pl.String,
            "target": pl.Float64,
            "achieved": pl.Float64,
            "safety_stock_value": pl.Float64,
            "reference_safety_stock_value": pl.Float64,
            "ratio": pl.Float64,
        },
        orient="row",
    )
