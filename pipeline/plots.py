"""Figures for MLflow and reports (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from buffers.policy import POLICIES
from features.calendar import with_location

POLICY_COLOURS = {"JIT": "#2a9d8f", "hybrid": "#e9c46a", "JIC": "#e76f51"}


def sbc_quadrant_figure(recommendations: pl.DataFrame, adi_cutoff: float, cv2_cutoff: float) -> Figure:
    """ADI vs CV2 per SKU with the four SBC quadrants and the cut-off lines, coloured by policy."""
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    points = recommendations.filter(pl.col("adi").is_not_null() & pl.col("cv2").is_not_null())
    for policy in ("JIC", "hybrid", "JIT"):  # the rarer, leaner policies drawn last, on top
        sub = points.filter(pl.col("policy") == policy)
        if sub.height:
            ax.scatter(sub["adi"], sub["cv2"], s=16, alpha=0.75, c=POLICY_COLOURS[policy], label=f"{policy} ({sub.height})")
    ax.set_xscale("log")
    x_min, x_max = 0.95, max(float(points["adi"].max() or adi_cutoff) * 1.3, adi_cutoff * 3)
    y_max = max(float(points["cv2"].max() or cv2_cutoff) * 1.1, cv2_cutoff * 3)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(0, y_max)
    ax.axvline(adi_cutoff, color="grey", linestyle="--", linewidth=1)
    ax.axhline(cv2_cutoff, color="grey", linestyle="--", linewidth=1)
    # Quadrant names in axes coordinates, beside the cut-off lines (the left quadrants are narrow on a log axis).
    x_cut = (math.log(adi_cutoff) - math.log(x_min)) / (math.log(x_max) - math.log(x_min))
    y_cut = cv2_cutoff / y_max
    for x, y, ha, va, label in (
        (x_cut - 0.01, y_cut - 0.02, "right", "top", "smooth"),
        (x_cut - 0.01, y_cut + 0.02, "right", "bottom", "erratic"),
        (x_cut + 0.01, y_cut - 0.02, "left", "top", "intermittent"),
        (x_cut + 0.01, y_cut + 0.02, "left", "bottom", "lumpy"),
    ):
        ax.text(x, y, label, transform=ax.transAxes, ha=ha, va=va, fontsize=9, color="dimgrey", fontweight="bold")
    ax.set_xlabel(f"ADI: average demand interval in periods (log scale; cut-off {adi_cutoff})")
    ax.set_ylabel(f"CV² of non-zero demand sizes (cut-off {cv2_cutoff})")
    ax.set_title(f"Demand patterns (SBC) of {points.height} SKUs, coloured by buffer policy")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    return fig


# --- Shared helpers --------------------------------------------------------------------------------------------------

ABC_ORDER = ("A", "B", "C")
KEY = ("sku_id", "location_id")
QUANTILE_COLUMNS = ("q50", "q90", "q95", "q99")


def _ordered(values: list, preferred: tuple[str, ...]) -> list:
    """`preferred` first (those present), then any other value, sorted, nulls last."""
    present = [v for v in preferred if v in values]
    rest = sorted(v for v in values if v not in preferred and v is not None)
    return present + rest + ([None] if None in values else [])


def _series_label(sku: str, location: str | None) -> str:
    return sku if location is None else f"{sku} @ {location}"


def _empty_figure(title: str, message: str, figsize: tuple[float, float] = (8, 4)) -> Figure:
    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="dimgrey")
    return fig


def _money(value: float) -> str:
    """Compact money: 1.2M, 34.5k, 980."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return f"{value:.0f}"


# --- Policy mix by ABC class -----------------------------------------------------------------------------------------


def policy_mix_by_abc_figure(recommendations: pl.DataFrame) -> Figure:
    """SKU count (left) and safety-stock value (right) per ABC class, stacked by buffer policy.

    Input: the `recommendations` table; columns used: `abc_class` (A/B/C), `policy` (JIT/hybrid/JIC) and
    `safety_stock_value` (money). Nulls count as their own class/policy ("?") and as zero value.
    """
    if recommendations.is_empty():
        return _empty_figure("Buffer policy mix by ABC class", "no SKUs in this run")
    recs = recommendations.select(
        pl.col("abc_class").cast(pl.String).fill_null("?"),
        pl.col("policy").cast(pl.String).fill_null("?"),
        pl.col("safety_stock_value").cast(pl.Float64).fill_null(0.0).fill_nan(0.0),
    )
    classes = _ordered(recs["abc_class"].unique().to_list(), ABC_ORDER)
    policies = _ordered(recs["policy"].unique().to_list(), POLICIES)
    agg = recs.group_by("abc_class", "policy").agg(n=pl.len(), value=pl.col("safety_stock_value").sum())
    cell = {(c, p): (n, v) for c, p, n, v in agg.iter_rows()}
    totals_n = {c: sum(cell.get((c, p), (0, 0.0))[0] for p in policies) for c in classes}
    totals_v = {c: sum(cell.get((c, p), (0, 0.0))[1] for p in policies) for c in classes}
    grand_v = sum(totals_v.values())

    fig, (ax_n, ax_v) = plt.subplots(1, 2, figsize=(11, 5), dpi=110)
    x = list(range(len(classes)))
    for ax, idx, total in ((ax_n, 0, totals_n), (ax_v, 1, totals_v)):
        bottom = [0.0] * len(classes)
        top = max(total.values()) or 1.0
        for policy in policies:
            heights = [float(cell.get((c, policy), (0, 0.0))[idx]) for c in classes]
            if not any(heights):
                continue
            bars = ax.bar(x, heights, bottom=bottom, color=POLICY_COLOURS.get(policy, "#999999"), label=policy, width=0.6)
            for rect, h, b in zip(bars, heights, bottom, strict=True):
                if h >= 0.06 * top:  # label segments tall enough to hold text
                    text = f"{int(h)}" if idx == 0 else _money(h)
                    ax.text(rect.get_x() + rect.get_width() / 2, b + h / 2, text, ha="center", va="center", fontsize=8)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(x, [str(c) for c in classes])
        ax.set_xlabel("ABC class (by annual value)")
        ax.set_ylim(0, top * 1.12)
        ax.spines[["top", "right"]].set_visible(False)
    for i, c in enumerate(classes):
        ax_n.text(i, totals_n[c], f"{totals_n[c]} SKUs", ha="center", va="bottom", fontsize=9)
        share = totals_v[c] / grand_v if grand_v else 0.0
        ax_v.text(i, totals_v[c], f"{_money(totals_v[c])} ({share:.0%})", ha="center", va="bottom", fontsize=9)
    ax_n.set_ylabel("SKUs (count)")
    ax_n.set_title("SKUs per ABC class by policy")
    ax_v.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _money(v)))
    ax_v.set_ylabel("safety-stock value (money, currency of unit_cost)")
    ax_v.set_title(f"Safety-stock value per ABC class (total {_money(grand_v)})")
    ax_n.legend(title="policy", frameon=False, loc="upper left")
    fig.suptitle(f"Buffer policy mix by ABC class ({recs.height} SKUs)")
    fig.tight_layout()
    return fig


# --- Backtest error distribution ------------------------------------------------------------------------------------

MASE_FLOOR = 0.01  # on a log axis MASE 0 (a perfect fit, e.g. all-zero demand) is drawn at this floor


def error_distribution_figure(backtest_metrics: pl.DataFrame) -> Figure:
    """MASE per competing model over all backtested SKUs (grey), and where the model was selected (coloured).

    Input: the `backtest_metrics` table; columns used: `model`, `selected` (bool) and `mase`. Null and
    non-finite MASE (missing forecasts) are dropped. Models are sorted by median MASE; the axis is log-scaled
    when the errors span more than a factor of 10 (values below 0.01 then drawn at 0.01). The line at 1 is the
    in-sample naive forecast: left of it the model beats naive.
    """
    title = "Backtest error (MASE) per model"
    if backtest_metrics.is_empty():
        return _empty_figure(title, "no backtest metrics in this run")
    m = backtest_metrics.select(
        pl.col("model").cast(pl.String), pl.col("selected").fill_null(False).cast(pl.Boolean), pl.col("mase").cast(pl.Float64)
    ).filter(pl.col("mase").is_not_null() & pl.col("mase").is_finite() & pl.col("model").is_not_null())
    if m.is_empty():
        return _empty_figure(title, "no finite MASE in the backtest metrics")
    order = m.group_by("model").agg(med=pl.col("mase").median()).sort("med", "model", descending=[True, False])["model"].to_list()
    q05, q95 = m["mase"].quantile(0.05) or 0.0, m["mase"].quantile(0.95) or 0.0
    log = q95 > 0 and (q05 <= 0 or q95 / q05 > 10)
    values = m.with_columns(pl.col("mase").clip(lower_bound=MASE_FLOOR)) if log else m

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.55 * len(order)), dpi=110)
    all_data, sel_data, all_pos, sel_pos, labels = [], [], [], [], []
    for i, model in enumerate(order):
        sub = values.filter(pl.col("model") == model)
        sel = sub.filter("selected")
        all_data.append(sub["mase"].to_numpy())
        all_pos.append(i + 0.18)
        if sel.height:
            sel_data.append(sel["mase"].to_numpy())
            sel_pos.append(i - 0.18)
        labels.append(f"{model}\n{sel.height} selected / {sub.height}")
    style = {"vert": False, "widths": 0.32, "patch_artist": True, "showfliers": True}
    flier = {"marker": ".", "markersize": 3, "alpha": 0.5}
    b_all = ax.boxplot(all_data, positions=all_pos, flierprops=flier, medianprops={"color": "black"}, **style)
    for patch in b_all["boxes"]:
        patch.set(facecolor="#d9d9d9", edgecolor="#7f7f7f")
    handles = [b_all["boxes"][0]]
    names = ["all SKUs backtested"]
    if sel_data:
        b_sel = ax.boxplot(sel_data, positions=sel_pos, flierprops=flier, medianprops={"color": "black"}, **style)
        for patch in b_sel["boxes"]:
            patch.set(facecolor=POLICY_COLOURS["JIT"], edgecolor="#1d6f66")
        handles.append(b_sel["boxes"][0])
        names.append("SKUs where selected")
    ax.set_yticks(range(len(order)), labels, fontsize=8)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    handles.append(ax.lines[-1])
    names.append("MASE 1 = naive forecast")
    if log:
        ax.set_xscale("log")
        ax.set_xlabel(f"MASE (scale-free, log scale; values below {MASE_FLOOR} drawn at {MASE_FLOOR})")
    else:
        ax.set_xlabel("MASE (scale-free; lower is better)")
    n_sel = m.filter("selected").height
    ax.set_title(f"{title}: {m.height} SKU-model backtests, {n_sel} selected (sorted by median)")
    ax.legend(handles, names, loc="lower right", frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


# --- Forecast vs actual for the largest buffers -----------------------------------------------------------------------


def forecast_vs_actual_figure(
    history: pl.DataFrame | pl.LazyFrame,
    forecasts: pl.DataFrame | pl.LazyFrame,
    recommendations: pl.DataFrame,
    n: int = 12,
    *,
    last_periods: int = 90,
) -> Figure:
    """Small multiples (4 per row) for the `n` SKUs with the largest `safety_stock_value`.

    Inputs:
    - `history`: demand per series and period: `sku_id`, `location_id` (optional, null = no location), `date`,
      `quantity` (units per period, e.g. the flow's demand panel; rows with the same key and date are summed). The last
      `last_periods` dates of the whole frame are drawn; a date of that window missing from a series after its first
      row counts as zero demand (so raw daily sales work too; coarser raw data should be bucketed into periods first).
      A LazyFrame is read for the plotted series and the dates only.
    - `forecasts`: the `forecasts` table: `sku_id`, `location_id`, `date`, `forecast` (units per period); optional
      quantile columns `q50`, `q90`, `q95`, `q99` are drawn as nested bands when present. A LazyFrame is read for the
      plotted series only.
    - `recommendations`: `sku_id`, `location_id`, `policy`, `model`, `safety_stock_value`, `safety_stock_units`,
      `reorder_point_units`, `lead_time_periods`.

    The reorder point and safety stock are amounts over the lead time, not per period, so they are written in
    each panel rather than drawn on the per-period axis; the band is the buffer spread per period, forecast up to
    forecast + safety stock / sqrt(lead time in periods) (the per-period error the buffer covers at its z).
    """
    title = f"Recent demand and forecast for the {n} SKUs with the largest safety-stock value"
    recs = with_location(recommendations)
    if recs.is_empty() or n <= 0:
        return _empty_figure(title, "no SKUs in this run")
    top = (
        recs.with_columns(pl.col("location_id").cast(pl.String))
        .sort(["safety_stock_value", "sku_id", "location_id"], descending=[True, False, False], nulls_last=True)
        .head(n)
    )
    keys = top.select(KEY)
    # The window is the last `last_periods` dates of the whole history (not of each series), and a date of that window
    # missing from a series after its first sale is zero demand: raw sales without explicit zeros draw like the panel.
    history = with_location(history.lazy())
    selected = (
        history.with_columns(pl.col("location_id").cast(pl.String))
        .join(keys.lazy(), on=list(KEY), how="semi", nulls_equal=True)
        .group_by(*KEY, "date")
        .agg(pl.col("quantity").sum())
        .collect(engine="streaming")  # a scan of every partition's demand: read, never held whole
    )
    window = history.select(pl.col("date").unique().sort().tail(last_periods)).collect(engine="streaming")
    grid = (
        selected.group_by(KEY)
        .agg(first=pl.col("date").min())
        .join(window, how="cross")
        .filter(pl.col("date") >= pl.col("first"))
        .drop("first")
    )
    hist = (
        grid.join(selected, on=[*KEY, "date"], how="left", nulls_equal=True)
        .with_columns(pl.col("quantity").fill_null(0.0))
        .sort(*KEY, "date")
    )
    forecasts = with_location(forecasts.lazy())
    quantiles = [q for q in QUANTILE_COLUMNS if q in forecasts.collect_schema().names()]
    fc = (
        forecasts.with_columns(pl.col("location_id").cast(pl.String))
        .join(keys.lazy(), on=list(KEY), how="semi", nulls_equal=True)
        .sort(*KEY, "date")
        .collect(engine="streaming")  # a scan of every partition's file: read, never held whole
    )
    hist_by = {k: g for k, g in hist.group_by(KEY)}
    fc_by = {k: g for k, g in fc.group_by(KEY)}

    k = top.height
    ncols = min(4, k)
    nrows = math.ceil(k / 4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.6, 2.7 * nrows + 1.0), dpi=110, squeeze=False)
    for extra in axes.flat[k:]:
        fig.delaxes(extra)
    legend: dict[str, object] = {}
    for ax, row in zip(axes.flat, top.iter_rows(named=True), strict=False):
        key = (row["sku_id"], row["location_id"])
        colour = POLICY_COLOURS.get(row["policy"], "#555555")
        h = hist_by.get(key)
        f = fc_by.get(key)
        if h is not None and h.height:
            legend["actual"] = ax.plot(h["date"].to_numpy(), h["quantity"].to_numpy(), color="#333333", linewidth=0.9)[0]
        if f is not None and f.height:
            dates, mean = f["date"].to_numpy(), f["forecast"].to_numpy()
            if quantiles:
                shades = ("#9ecae1", "#c6dbef", "#deebf7")
                for lower, upper, shade in zip(quantiles, quantiles[1:], shades, strict=False):
                    legend[f"forecast {lower}–{upper}"] = ax.fill_between(
                        dates, f[lower].to_numpy(), f[upper].to_numpy(), color=shade, alpha=0.9, linewidth=0
                    )
            else:
                lt = max(float(row.get("lead_time_periods") or 1.0), 1.0)
                per_period = float(row.get("safety_stock_units") or 0.0) / math.sqrt(lt)
                if per_period > 0:
                    legend["buffer per period (SS / √LT)"] = ax.fill_between(
                        dates, mean, mean + per_period, color=colour, alpha=0.25, linewidth=0
                    )
            legend["forecast"] = ax.plot(dates, mean, color=colour, linewidth=1.6)[0]
            legend["as-of"] = ax.axvline(dates[0], color="grey", linestyle=":", linewidth=1)
        ss, rop = row.get("safety_stock_units"), row.get("reorder_point_units")
        facts = [
            f"SS {ss:,.0f} u" if ss is not None else "SS –",
            f"ROP {rop:,.0f} u" if rop is not None else "ROP –",
            f"LT {row['lead_time_periods']:.1f} periods" if row.get("lead_time_periods") is not None else "LT –",
            f"value {_money(float(row['safety_stock_value'] or 0.0))}",
        ]
        ax.text(
            0.02,
            0.97,
            "\n".join(facts),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        if h is None and f is None:
            ax.text(0.5, 0.5, "no history or forecast", transform=ax.transAxes, ha="center", va="center", color="dimgrey")
        ax.set_title(f"{_series_label(*key)} · {row['policy']} · {row.get('model') or '?'}", fontsize=9)
        ax.set_ylim(bottom=0)
        locator = mdates.AutoDateLocator(minticks=3, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[:, 0]:
        if ax in fig.axes:
            ax.set_ylabel("units per period", fontsize=8)
    for ax in axes[-1, :]:
        if ax in fig.axes:
            ax.set_xlabel("period start date", fontsize=8)
    fig.suptitle(f"{title} (last {last_periods} periods; SS safety stock, ROP reorder point, LT lead time)", fontsize=10)
    if legend:
        fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=len(legend), frameon=False, fontsize=8)
    # Fixed margins in inches rather than tight_layout: measuring 12 panels' tick labels costs most of a second.
    height, width = fig.get_figheight(), fig.get_figwidth()
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.15 / width,
        top=1 - 0.55 / height,
        bottom=(0.85 if legend else 0.55) / height,
        hspace=0.55,
        wspace=0.25,
    )
    return fig


# --- Service level ------------------------------------------------------------------------------------------------------

ABC_COLOURS = {"A": "#264653", "B": "#2a9d8f", "C": "#e9c46a"}


def service_level_figure(recommendations: pl.DataFrame, simulated: pl.DataFrame | None = None) -> Figure:
    """Cycle service-level targets per ABC class x critical; simulated vs target when a simulation is given.

    Inputs:
    - `recommendations`: `sku_id`, `location_id`, `abc_class`, `critical` (bool), `service_level_target`.
    - `simulated` (optional): `sku_id`, `location_id`, `simulated_cycle_service_level` (share of replenishment
      cycles without a stock-out in the inventory simulation). With it: a scatter of simulated vs target with the
      diagonal, coloured by ABC class (triangles: critical). Without it: how many SKUs have each target, per
      ABC class x critical, as sized and labelled dots.
    """
    recs = with_location(recommendations).with_columns(
        pl.col("location_id").cast(pl.String),
        pl.col("abc_class").cast(pl.String).fill_null("?"),
        pl.col("critical").fill_null(False),
    )
    if simulated is None:
        return _service_level_targets(recs)
    title = "Simulated service level vs target"
    sim = with_location(simulated).with_columns(pl.col("location_id").cast(pl.String)).select(*KEY, "simulated_cycle_service_level")
    both = recs.join(sim, on=list(KEY), how="inner", nulls_equal=True).filter(
        pl.col("simulated_cycle_service_level").is_not_null() & pl.col("service_level_target").is_not_null()
    )
    if both.is_empty():
        return _empty_figure(title, "no SKU with both a target and a simulated service level")
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    classes = _ordered(both["abc_class"].unique().to_list(), ABC_ORDER)
    for c_index, abc in enumerate(classes):
        dodge = (c_index - (len(classes) - 1) / 2) * 0.3  # targets are few discrete values: classes side by side
        for critical, marker in ((False, "o"), (True, "^")):
            sub = both.filter((pl.col("abc_class") == abc) & (pl.col("critical") == critical))
            if sub.height:
                ax.scatter(
                    sub["service_level_target"] * 100 + dodge,
                    sub["simulated_cycle_service_level"] * 100,
                    s=22 if critical else 14,
                    marker=marker,
                    alpha=0.6,
                    c=ABC_COLOURS.get(abc, "#999999"),
                    label=f"{abc}{' critical' if critical else ''} ({sub.height})",
                )
    low = min(float(both["service_level_target"].min()), float(both["simulated_cycle_service_level"].min())) * 100
    low = max(0.0, math.floor(low / 5) * 5)
    ax.plot([low, 100], [low, 100], color="grey", linestyle="--", linewidth=1, label="simulated = target")
    ax.set_xlim(low, 100.5)
    ax.set_ylim(low, 100.5)
    met = both.filter(pl.col("simulated_cycle_service_level") >= pl.col("service_level_target")).height
    ax.set_xlabel("service-level target (% of cycles without stock-out, or fill rate; classes dodged ±0.3 points)")
    ax.set_ylabel("simulated over the held-out demand (%)")
    ax.set_title(f"{title}: {met} of {both.height} SKUs at or above target")
    ax.legend(title="ABC class", frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _service_level_targets(recs: pl.DataFrame) -> Figure:
    title = "Service-level targets per ABC class × critical (simulated service level not available yet)"
    data = recs.filter(pl.col("service_level_target").is_not_null())
    if data.is_empty():
        return _empty_figure(title, "no service-level target in this run", figsize=(9, 4))
    counts = data.group_by("abc_class", "critical", "service_level_target").len()
    groups = [
        (abc, critical)
        for abc in _ordered(counts["abc_class"].unique().to_list(), ABC_ORDER)
        for critical in (True, False)
        if counts.filter((pl.col("abc_class") == abc) & (pl.col("critical") == critical)).height
    ]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(groups) + 2), 5), dpi=110)
    biggest = int(counts["len"].max())
    labels = []
    for i, (abc, critical) in enumerate(groups):
        sub = counts.filter((pl.col("abc_class") == abc) & (pl.col("critical") == critical))
        sizes = [40 + 900 * c / biggest for c in sub["len"]]
        ax.scatter(
            [i] * sub.height,
            sub["service_level_target"] * 100,
            s=sizes,
            c=ABC_COLOURS.get(abc, "#999999"),
            alpha=0.55,
            edgecolors="black" if critical else "none",
            linewidths=0.8,
        )
        for target, count in zip(sub["service_level_target"], sub["len"], strict=True):
            ax.annotate(f"{count}", (i, target * 100), xytext=(12, 0), textcoords="offset points", va="center", fontsize=8)
        labels.append(f"{abc}\n{'critical' if critical else 'not critical'}\n({int(sub['len'].sum())} SKUs)")
    ax.set_xticks(range(len(groups)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    lo = float(data["service_level_target"].min()) * 100
    ax.set_ylim(max(0.0, lo - 3), 100.5)
    ax.set_xlabel("ABC class × critical (dot size and label: SKUs with that target; black edge: critical)")
    ax.set_ylabel("cycle service-level target (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", color="#eeeeee")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def calibration_figure(curves: pl.DataFrame, levels: pl.DataFrame) -> Figure:
    """Nominal vs achieved coverage of the cumulative forecast error, per exposure (rows: lead time, review + lead
    time) and demand class (columns) (buffers/calibration.py).

    - `curves`: exposure, demand_class, model_family, nominal, achieved_before (share of earlier-window errors within
      z(nominal) sigma), achieved_fitted (the isotonic map); model_family "all" is the class's map, the others are
      drawn thin.
    - `levels`: exposure, demand_class, model_family, service_level_target, heldout_before, heldout_after (the latest
      windows, sized at the target's z before and at the calibrated level's z after; the class maps' are drawn).
    """
    title = "Calibration: nominal vs achieved coverage per demand class"
    if curves.is_empty():
        return _empty_figure(title, "no class with enough backtest windows to calibrate (or calibration is off)")
    classes = sorted(curves["demand_class"].unique().to_list())
    exposures = [e for e in ("lead_time", "review_lead_time") if e in set(curves["exposure"])]
    fig, axes = plt.subplots(len(exposures), len(classes), figsize=(5.2 * len(classes), 4.6 * len(exposures)), dpi=110, squeeze=False)
    for row, exposure in enumerate(exposures):
        for ax, cls in zip(axes[row], classes, strict=True):
            mine = curves.filter((pl.col("exposure") == exposure) & (pl.col("demand_class") == cls))
            c = mine.filter(pl.col("model_family") == "all")
            lv = levels.filter(
                (pl.col("exposure") == exposure)
                & (pl.col("demand_class") == cls)
                & (pl.col("model_family") == "all")
                & pl.col("heldout_before").is_not_null()
            )
            ax.plot([50, 100], [50, 100], color="grey", linestyle="--", linewidth=1, label="achieved = nominal")
            ax.plot(c["nominal"] * 100, c["achieved_before"] * 100, color="#9aa5b1", linewidth=1, label="earlier windows (raw)")
            ax.plot(c["nominal"] * 100, c["achieved_fitted"] * 100, color="#2a6f97", linewidth=2, label="isotonic map (class)")
            for (family,), f in sorted(mine.filter(pl.col("model_family") != "all").group_by("model_family"), key=lambda g: g[0]):
                ax.plot(f["nominal"] * 100, f["achieved_fitted"] * 100, linewidth=0.9, alpha=0.8, label=f"map: {family}")
            ax.scatter(
                lv["service_level_target"] * 100, lv["heldout_before"] * 100, color="#e76f51", marker="x", label="latest window, before"
            )
            ax.scatter(
                lv["service_level_target"] * 100, lv["heldout_after"] * 100, color="#2a9d8f", marker="o", label="latest window, after"
            )
            ax.set_xlim(50, 100.5)
            ax.set_ylim(50, 100.5)
            ax.set_title(f"{cls}, over the {exposure.replace('_', ' ').replace('review lead', 'review + lead')}")
            ax.set_xlabel("nominal level / target (%)")
            ax.set_ylabel("achieved coverage (%)")
            ax.spines[["top", "right"]].set_visible(False)
            ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


TRADEOFF_STYLES = {
    "buffercast_sweep": ("buffercast", "#264653", "o-"),
    "empirical": ("empirical quantile", "#e9c46a", "s--"),
    "textbook": ("textbook z·sd·√L", "#e76f51", "^:"),
}


def tradeoff_figure(summary: pl.DataFrame) -> Figure:
    """Achieved cycle service against safety-stock value per window, one panel per demand class (and all): the curve
    of each swept method as its target moves, DDMRP, pure JIT, pure JIC and the plan as configured as points (the rolling evaluation's
    `evaluation` table; every point judged on the same out-of-sample windows)."""
    if summary.is_empty():
        return _empty_figure("Service vs capital, out of sample", "no judged windows")
    rows = summary.filter(pl.col("slice").is_in(["all", "demand_class"]))
    panels = ["all", *sorted(v for v in rows.filter(slice="demand_class")["value"].unique().to_list() if v)]
    cols = min(len(panels), 3)
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 4 * math.ceil(len(panels) / cols)), dpi=100)
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax, panel in zip(flat, panels, strict=False):
        sub = rows.filter(pl.col("value") == panel)
        for method, (label, colour, style) in TRADEOFF_STYLES.items():
            curve = sub.filter(method=method).sort("target")
            if curve.height:
                ax.plot(curve["safety_stock_value"], curve["achieved"], style, color=colour, label=label, markersize=4)
                for t, x, y in curve.select("target", "safety_stock_value", "achieved").iter_rows():
                    ax.annotate(f"{t:.3g}", (x, y), fontsize=6, color=colour, xytext=(2, -7), textcoords="offset points")
        ddmrp = sub.filter(method="ddmrp")
        if ddmrp.height:
            ax.plot(ddmrp["safety_stock_value"], ddmrp["achieved"], "D", color="#2a9d8f", label="DDMRP")
        for method, marker, colour, label in (("jit", "v", "#8ab17d", "pure JIT"), ("jic", "^", "#6d597a", "pure JIC")):
            pure = sub.filter(method=method)
            if pure.height:
                ax.plot(pure["safety_stock_value"], pure["achieved"], marker, color=colour, label=label, markersize=6)
        plan = sub.filter(method="buffercast").sort("target")
        if plan.height:
            ax.plot(plan["safety_stock_value"], plan["achieved"], "*", color="black", markersize=9, label="plan as configured")
        ax.set_title(f"{panel} ({int(sub.filter(method='ddmrp')['windows'].sum())} windows)", fontsize=10)
        ax.set_xlabel("safety-stock value per window")
        ax.set_ylabel("achieved cycle service")
        ax.grid(alpha=0.3)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Service vs capital, judged out of sample at rolling origins")
    fig.tight_layout()
    return fig
