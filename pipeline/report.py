"""The weekly HTML report a planner can open: one self-contained static file (inline CSS, figures as PNG data URIs).

No JavaScript and nothing fetched over the network. Every value that comes from data (SKU ids, reasons, class
names, manifest fields) goes through `html.escape`. matplotlib (`pipeline.plots`) is imported where figures are
drawn, not with this module: the flow imports the report's text helpers long before it draws.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from configs.schema import BuffercastConfig
from features.calendar import with_location

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from buffers.calibration import Calibration

TOP_N = 20
PERIOD_NAMES = {"D": "a day", "W": "a week", "M": "a month"}
NUM_ATTR = ' class="num"'
MAX_CHANGE_ROWS = 500  # a planner reads the first ones; the full list is the published `changes` table
TOP_COLUMNS = {
    "sku_id": "SKU",
    "location_id": "location",
    "policy": "policy",
    "safety_stock_units": "safety stock (units)",
    "reorder_point_units": "reorder point (units)",
    "safety_stock_value": "safety-stock value",
    "reasons": "reasons",
}
COUNT_GROUPS = {
    "demand_class": "Demand class (SBC)",
    "volatility_class": "Volatility class (backtest error)",
    "life_cycle": "Life cycle",
    "policy": "Buffer policy",
    "abc_class": "ABC class",
}
INPUT_ROWS = {
    "sales_in": "sales rows read",
    "sales_fetched": "sales rows fetched from the source this run",
    "sales_cached": "sales rows from the local cache (input.cache_folder)",
    "sales_used": "sales rows used",
    "sales_quarantined": "sales rows quarantined",
    "sales_after_as_of": "sales rows after the as-of date (not used)",
    "sku_master_in": "SKU master rows read",
    "sku_master_quarantined": "SKU master rows quarantined",
}
RUN_FACTS = {
    "as_of": "as of",
    "config_name": "config",
    "config_hash": "config hash",
    "run_id": "run id",
    "mlflow_run_id": "MLflow run id",
    "mlflow_tracking_uri": "MLflow tracking URI",
    "prefect_flow_run_id": "Prefect flow run id",
    "created_at": "created at",
    "frequency": "period",
    "last_date_in_data": "last date in the data",
    "schema_version": "output schema version",
}
FIGURE_FILES = {  # report title -> MLflow artifact name, so the report and MLflow show the same plots
    "Demand patterns (SBC quadrants)": "plots/sbc_quadrants.png",
    "Buffer policy mix by ABC class": "plots/policy_mix_by_abc.png",
    "Backtest error per model": "plots/error_distribution.png",
    "Forecast vs actual: the 12 largest buffers": "plots/forecast_vs_actual.png",
    "Service level": "plots/service_level.png",
    "Calibration of the buffers": "plots/calibration.png",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2933;
       max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 3rem; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #e4e7eb; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.02rem; margin: 1.2rem 0 0.4rem; }
.sub { color: #616e7c; margin-top: 0; }
nav a { margin-right: 1rem; color: #2a6f97; text-decoration: none; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.3rem 0 0.8rem; }
th, td { padding: 0.28rem 0.6rem; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reasons { max-width: 46rem; }
table.facts th { background: none; font-weight: normal; color: #616e7c; white-space: nowrap; }
table.facts td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.84rem; }
.grid { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
.kpis { display: flex; flex-wrap: wrap; gap: 1rem; margin: 0.6rem 0 1rem; }
.kpi { background: #f5f7fa; border-radius: 6px; padding: 0.6rem 1rem; min-width: 10rem; }
.kpi .value { font-size: 1.35rem; font-weight: 600; }
.kpi .label { color: #616e7c; font-size: 0.82rem; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
.note { color: #616e7c; font-style: italic; }
.policy-JIT { color: #1d6f66; font-weight: 600; }
.policy-hybrid { color: #9a7b1c; font-weight: 600; }
.policy-JIC { color: #b5452b; font-weight: 600; }
footer { margin-top: 3rem; color: #9aa5b1; font-size: 0.8rem; }
"""


# --- Formatting -------------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as display text (not escaped): thousands separators, em dash for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value.is_integer() or abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3g}"
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(_fmt(value), quote=True)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, cls: str = "", cell_classes: Mapping[int, str] | None = None) -> str:
    """An HTML table; headers and cells escaped, numbers right-aligned."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            classes = [c for c in (("num" if _is_num(v) else ""), (cell_classes or {}).get(i, "")) if c]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(v)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _facts(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{_esc(v)}</td></tr>" for label, v in pairs)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes at its own dpi."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


def render_pngs(figures: Mapping[str, Figure]) -> dict[str, bytes]:
    """Every figure rendered once to PNG bytes (for the report and MLflow alike), then closed."""
    try:
        return {title: figure_png(fig) for title, fig in figures.items()}
    finally:
        _close(figures.values())


def _close(figures: Iterable[Figure | bytes]) -> None:
    """Close the matplotlib figures among `figures` (PNG bytes need nothing)."""
    drawn = [figure for figure in figures if not isinstance(figure, bytes | bytearray)]
    if drawn:
        import matplotlib.pyplot as plt  # a Figure exists, so matplotlib is already imported

        for figure in drawn:
            plt.close(figure)


# --- Sections -----------------------------------------------------------------------------------------------------------


def _run_section(manifest: Mapping[str, Any]) -> str:
    facts = [(label, manifest.get(key)) for key, label in RUN_FACTS.items()]
    inputs = manifest.get("inputs") or {}
    facts += [(f"{name} input", path) for name, path in inputs.items()]
    rows = manifest.get("input_rows") or {}
    known = [(label, rows[key]) for key, label in INPUT_ROWS.items() if key in rows]
    known += [(key.replace("_", " "), v) for key, v in rows.items() if key not in INPUT_ROWS]
    not_planned = manifest.get("series_not_planned") or []
    parts = ['<section id="run"><h2>Run</h2><div class="grid"><div>', _facts(facts), "</div><div>", "<h3>Input rows</h3>"]
    parts.append(_table(["input rows", "count"], known) if known else _note("input row counts not recorded"))
    if not_planned:
        shown = ", ".join(f"{r.get('sku_id')}" + (f" @ {r['location_id']}" if r.get("location_id") else "") for r in not_planned[:20])
        more = f" (and {len(not_planned) - 20} more)" if len(not_planned) > 20 else ""
        parts.append(f"<p>Series not planned (no positive sale): {html.escape(shown)}{html.escape(more)}</p>")
    parts.append("</div></div></section>")
    return "".join(parts)


def _kpi(label: str, value: Any) -> str:
    return f'<div class="kpi"><div class="value">{_esc(value)}</div><div class="label">{html.escape(label)}</div></div>'


def _summary_section(summary: Mapping[str, Any]) -> str:
    kpis = [
        _kpi("SKUs planned", summary.get("skus")),
        _kpi("total safety-stock value (currency of unit_cost)", summary.get("safety_stock_value")),
        _kpi("holding cost per year", summary.get("holding_cost_per_year")),
    ]
    if "median_mase" in summary:
        kpis.append(_kpi("median MASE of the chosen models", summary.get("median_mase")))
    if summary.get("series_not_planned"):
        kpis.append(_kpi("series not planned", summary.get("series_not_planned")))
    shown = {"skus", "safety_stock_value", "holding_cost_per_year", "median_mase", "series_not_planned"}
    groups = [(key, label) for key, label in COUNT_GROUPS.items() if isinstance(summary.get(key), Mapping)]
    groups += [(k, k.replace("_", " ")) for k, v in summary.items() if isinstance(v, Mapping) and k not in COUNT_GROUPS]
    tables = []
    for key, label in groups:
        counts = summary[key]
        total = sum(v for v in counts.values() if _is_num(v)) or 0
        rows = [(name, n, f"{n / total:.0%}" if total and _is_num(n) else "—") for name, n in counts.items()]
        tables.append(
            f"<div><h3>{html.escape(label)}</h3>{_table([key.replace('_', ' '), 'SKUs', 'share'], rows, cell_classes={2: 'num'})}</div>"
        )
    extra = [(k.replace("_", " "), v) for k, v in summary.items() if k not in shown and not isinstance(v, Mapping | list)]
    parts = ['<section id="summary"><h2>Summary</h2><div class="kpis">', "".join(kpis), '</div><div class="grid">']
    parts += tables
    parts.append("</div>")
    if extra:
        parts.append(_facts(extra))
    parts.append("</section>")
    return "".join(parts)


def _figures_section(figures: Mapping[str, Figure | bytes]) -> str:
    parts = ['<section id="figures"><h2>Figures</h2>']
    if not figures:
        parts.append(_note("no figures in this run"))
    for title, figure in figures.items():
        png = figure if isinstance(figure, bytes | bytearray) else figure_png(figure)
        data = base64.b64encode(png).decode("ascii")
        t = html.escape(title)
        parts.append(f'<figure><h3>{t}</h3><img src="data:image/png;base64,{data}" alt="{t}"></figure>')
    parts.append("</section>")
    return "".join(parts)


def _changes_section(changes: pl.DataFrame | None) -> str:
    parts = ['<section id="changes"><h2>Changes since the previous run</h2>']
    if changes is None or changes.is_empty():
        parts.append(_note("first run: nothing to compare" if changes is None else "no SKU changed since the previous run"))
    else:
        # The run dates are the same on every row: said once above the table, not repeated in it.
        frame = changes.drop([c for c in ("as_of", "previous_as_of") if c in changes.columns])
        line = f"{changes.height:,} changes"
        if "previous_as_of" in changes.columns:
            previous = ", ".join(_fmt(d) for d in changes["previous_as_of"].unique().sort().to_list())
            line += f" compared with the run as of {previous}"
        if "change" in changes.columns:
            kinds = changes.group_by("change").len().sort(["len", "change"], descending=[True, False]).iter_rows()
            line += " (" + ", ".join(f"{_fmt(kind)}: {n:,}" for kind, n in kinds) + ")"
        parts.append(f"<p>{html.escape(line)}.</p>")
        parts.append(_table(frame.columns, frame.head(MAX_CHANGE_ROWS).iter_rows()))
        if changes.height > MAX_CHANGE_ROWS:
            parts.append(_note(f"first {MAX_CHANGE_ROWS} of {changes.height:,} shown; every change is in the published changes table"))
    parts.append("</section>")
    return "".join(parts)


#: An evaluation cell is flagged in "Look here first" when it has at least this many windows and misses its target
#: by more than this (the issue's bar: 2 points on 500+ windows; fewer windows are flagged on a wider miss).
ATTENTION_MIN_WINDOWS = 100
ATTENTION_MISS = 0.02
ATTENTION_LIST = 10


def attention_items(recommendations: pl.DataFrame | None, changes: pl.DataFrame | None, evaluation: pl.DataFrame | None) -> list[str]:
    """What a planner should look at first, most decisive first: SKUs whose policy changed since the previous run,
    buffers held down by the cover cap or sized at a capped calibration (the target may be missed), and classes whose
    latest out-of-sample evaluation missed its target (the plan as configured, `ATTENTION_MIN_WINDOWS`+ windows, by
    more than `ATTENTION_MISS`). Empty when nothing needs a look."""
    items: list[str] = []

    def skus(frame: pl.DataFrame) -> str:
        names = frame["sku_id"].head(ATTENTION_LIST).to_list()
        more = f" and {frame.height - ATTENTION_LIST:,} more" if frame.height > ATTENTION_LIST else ""
        return ", ".join(str(n) for n in names) + more

    if changes is not None and "change" in changes.columns:
        moved = changes.filter(pl.col("change") == "policy")
        if moved.height:
            items.append(f"{moved.height:,} SKUs changed policy since the previous run: {skus(moved)} (the changes table says why)")
    if recommendations is not None and not recommendations.is_empty():
        ranked = recommendations.sort("safety_stock_value", descending=True, nulls_last=True)
        if "flag_cover_capped" in ranked.columns:
            capped = ranked.filter(pl.col("flag_cover_capped"))
            if capped.height:
                items.append(
                    f"{capped.height:,} buffers are held down by the cover cap (buffers.max_cover_days) and state a lower expected "
                    f"service: {skus(capped)}"
                )
        if "calibration_status" in ranked.columns:
            short = ranked.filter(pl.col("calibration_status") == "capped")
            if short.height:
                items.append(f"{short.height:,} buffers are sized at a capped calibration (the target may be missed): {skus(short)}")
    if evaluation is not None and not evaluation.is_empty():
        misses = evaluation.filter(
            pl.col("method") == "buffercast",
            pl.col("slice").is_in(["all", "demand_class"]),
            pl.col("windows") >= ATTENTION_MIN_WINDOWS,
            (pl.col("achieved") - pl.col("target")).abs() > ATTENTION_MISS,
        ).sort("slice", "value", "target")
        for r in misses.iter_rows(named=True):
            where = "all SKUs" if r["slice"] == "all" else f"{r['value']} SKUs"
            way = "below the target" if r["achieved"] < r["target"] else "above the target (capital spent for nothing)"
            items.append(
                f"out of sample, {where} at the {r['target']:.1%} target achieved {r['achieved']:.1%} over {r['windows']:,} windows: {way}"
            )
    return items


def _attention_section(items: list[str]) -> str:
    parts = ['<section id="attention"><h2>Look here first</h2>']
    if items:
        parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")
    else:
        parts.append(_note("nothing needs a look: no policy change, no capped buffer, no evaluation miss"))
    parts.append("</section>")
    return "".join(parts)


def top_buffers(recommendations: pl.DataFrame, n: int = TOP_N) -> pl.DataFrame:
    """The `n` SKUs with the largest safety-stock value: what the report and the Prefect artifact list."""
    return recommendations.sort("safety_stock_value", descending=True, nulls_last=True).head(n)


def top_buffers_rows(recommendations: pl.DataFrame) -> list[dict[str, Any]]:
    """The Prefect artifact's rows: the largest buffers by value, with their levels and reasons."""
    columns = ["sku_id", "location_id", "policy", "safety_stock_units", "reorder_point_units", "safety_stock_value", "reasons"]
    return top_buffers(recommendations).select(columns).to_dicts()


def _top_section(recommendations: pl.DataFrame | None) -> str:
    parts = [f'<section id="top"><h2>Top {TOP_N} SKUs by safety-stock value</h2>']
    if recommendations is None or recommendations.is_empty():
        parts.append(_note("no recommendations in this run"))
        return "".join([*parts, "</section>"])
    recs = with_location(recommendations)
    cols = [c for c in TOP_COLUMNS if c in recs.columns]
    top = top_buffers(recs).select(cols)
    policy_col = cols.index("policy") if "policy" in cols else -1
    head = "".join(f"<th{NUM_ATTR if c.endswith(('_units', '_value')) else ''}>{html.escape(TOP_COLUMNS[c])}</th>" for c in cols)
    body = []
    for row in top.iter_rows():
        cells = []
        for i, (col, v) in enumerate(zip(cols, row, strict=True)):
            cls = "num" if _is_num(v) else ""
            if i == policy_col and v is not None:
                cls = f"policy-{html.escape(str(v), quote=True)}"
            elif col == "reasons":
                cls = "reasons"
            text = html.escape(f"{v:,.2f}") if col == "safety_stock_value" and _is_num(v) else _esc(v)
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return "".join([*parts, "</section>"])


def quarantine_counts(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Rejected rows per input and failed check (`check` holds the failed checks `; `-joined: each counts once)."""
    if quarantine.is_empty():
        return pl.DataFrame(schema={"input": pl.String, "check": pl.String, "rows": pl.UInt32})
    frame = quarantine if "input" in quarantine.columns else quarantine.with_columns(input=pl.lit("?"))
    return (
        frame.select(pl.col("input").cast(pl.String), pl.col("check").cast(pl.String).fill_null("?").str.split("; "))
        .explode("check")
        .with_columns(pl.col("check").str.strip_chars())
        .group_by("input", "check")
        .agg(rows=pl.len())
        .sort(["rows", "input", "check"], descending=[True, False, False])
    )


def _quarantine_section(quarantine: pl.DataFrame | None) -> str:
    parts = ['<section id="quarantine"><h2>Quarantined input rows per check</h2>']
    if quarantine is None:
        parts.append(_note("no quarantine table given"))
    elif quarantine.is_empty():
        parts.append(_note("no input row was quarantined"))
    else:
        parts.append(f"<p>{quarantine.height:,} rows quarantined (a row failing several checks counts under each).</p>")
        parts.append(_table(["input", "check", "rows"], quarantine_counts(quarantine).iter_rows()))
    parts.append("</section>")
    return "".join(parts)


# --- Public API ---------------------------------------------------------------------------------------------------------


def _cover_section(recommendations: pl.DataFrame | None) -> str:
    """How many days of mean demand the safety stocks cover, per demand class (median, 90th percentile, largest), and
    how many buffers the cover cap (`buffers.max_cover_days`) held down."""
    parts = ['<section id="cover"><h2>Safety-stock cover (days of mean demand)</h2>']
    needed = {"safety_stock_units", "mean_demand_per_period", "lead_time_days", "lead_time_periods", "demand_class", "flag_cover_capped"}
    if recommendations is None or recommendations.is_empty() or not needed <= set(recommendations.columns):
        parts.append(_note("no recommendations with the columns the cover needs"))
        return "".join(parts) + "</section>"
    days = pl.col("safety_stock_units") / pl.col("mean_demand_per_period") * (pl.col("lead_time_days") / pl.col("lead_time_periods"))
    buffered = recommendations.filter(pl.col("safety_stock_units") > 0, pl.col("mean_demand_per_period") > 0).with_columns(cover=days)
    rows = [
        (
            cls,
            group.height,
            group["cover"].median(),
            group["cover"].quantile(0.9, "nearest"),
            group["cover"].max(),
            int(group["flag_cover_capped"].sum()),
        )
        for (cls,), group in buffered.sort("demand_class").group_by("demand_class", maintain_order=True)
    ]
    headers = ["demand class", "SKUs with a buffer", "median days", "90th percentile", "largest", "held by the cap"]
    parts.append(_table(headers, rows, cell_classes={i: "num" for i in range(1, 6)}) if rows else _note("no SKU holds a buffer"))
    parts.append("</section>")
    return "".join(parts)


#: The evaluation's methods as the report names them.
METHOD_NAMES = {
    "buffercast": "plan as configured",
    "buffercast_sweep": "buffercast at each target",
    "jit": "pure JIT",
    "jic": "pure JIC",
    "textbook": "textbook z·sd·√L",
    "empirical": "empirical quantile",
    "ddmrp": "DDMRP",
    "buffercast_phased": "time-phased, periods ahead",
    "buffercast_held": "held unchanged, periods ahead",
}


def evaluation_section(evaluation: pl.DataFrame | None, tradeoff_png: bytes | None = None, as_of: Any = None) -> str:
    """The latest out-of-sample evaluation (`buffercast evaluate`): achieved against target and expected service per
    method and target over every judged window, the capital each method holds, and the trade-off curves."""
    parts = ['<section id="evaluation"><h2>Out of sample: did the plans deliver their targets?</h2>']
    if evaluation is None or evaluation.is_empty():
        parts.append(_note("No evaluation published yet: `buffercast evaluate` (or `make evaluate`) plans at rolling origins and judges "
                           "each plan only on the demand after its origin."))  # fmt: skip
        return "".join(parts) + "</section>"
    as_of = as_of if as_of is not None else evaluation["as_of"].max() if "as_of" in evaluation.columns else None
    parts.append(
        f"<p>Last evaluation as of {_esc(as_of)}: each plan made with the data up to its origin, judged only on what came "
        "after it (cycle service over the realised lead time; fill rate and on-hand from a replay until the next origin). "
        "The interval is Wilson's 95% interval of the achieved share.</p>"
    )
    rows = []
    order = list(METHOD_NAMES)
    overall = evaluation.filter(pl.col("slice") == "all").with_columns(
        _order=pl.col("method").replace_strict(order, list(range(len(order))), default=len(order))
    )
    for r in overall.sort("_order", "target", nulls_last=True).iter_rows(named=True):
        interval = f"{_fmt(r['achieved_low'])}–{_fmt(r['achieved_high'])}" if r["achieved_low"] is not None else "—"
        rows.append(
            (METHOD_NAMES.get(r["method"], r["method"]), r["target"], r["windows"], r["achieved"], interval, r["expected"],
             r["fill_rate"], r["safety_stock_value"], r["on_hand_value"])
        )  # fmt: skip
    headers = ["method", "target", "windows", "achieved", "95% interval", "expected", "fill rate", "SS value / window", "on hand / window"]
    parts.append(_table(headers, rows, cell_classes={i: "num" for i in range(1, 9)}))
    if tradeoff_png:
        data = base64.b64encode(tradeoff_png).decode("ascii")
        parts.append(f'<figure><h3>Service vs capital</h3><img src="data:image/png;base64,{data}" alt="Service vs capital"></figure>')
    parts.append("</section>")
    return "".join(parts)


def render_evaluation_report(evaluation: pl.DataFrame, tradeoff_png: bytes | None, manifest: Mapping[str, Any]) -> str:
    """The evaluation's own self-contained HTML report (published next to its table)."""
    title = f"buffercast evaluation — {_fmt(manifest.get('config_name'))} — last origin {_fmt(manifest.get('as_of'))}"
    facts = [("origins", ", ".join(manifest.get("origins") or [])), ("judged windows", manifest.get("judged_windows")),
             ("windows not judged (lead time past the data)", manifest.get("unjudged_windows")),
             ("config hash", manifest.get("config_hash")), ("run id", manifest.get("run_id"))]  # fmt: skip
    body = [f"<header><h1>{html.escape(title)}</h1></header>", '<section id="run"><h2>Run</h2>', _facts(facts), "</section>"]
    body.append(evaluation_section(evaluation, tradeoff_png))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def report_title(manifest: Mapping[str, Any]) -> str:
    return f"buffercast weekly report — {_fmt(manifest.get('config_name'))} — as of {_fmt(manifest.get('as_of'))}"


def render_report(
    *,
    summary: dict,
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    figures: dict[str, Figure],
    changes: pl.DataFrame | None,
    manifest: dict,
    evaluation: tuple[dt.date, pl.DataFrame] | None = None,
    evaluation_png: bytes | None = None,
) -> str:
    """The report as one self-contained HTML document.

    - `summary`: the run summary (`manifest["summary"]`: `skus`, counts dicts per `demand_class`, `volatility_class`,
      `life_cycle`, `policy`, `abc_class`, `safety_stock_value`, `holding_cost_per_year`, `median_mase`, ...).
    - `tables`: the published tables by name; used: `recommendations` (top SKUs) and `quarantine` (counts per check).
    - `figures`: title -> matplotlib Figure (or PNG bytes), in display order; every Figure is closed afterwards.
    - `changes`: the run-to-run `changes` table (all its columns shown, `as_of` dropped); None on a first run.
    - `manifest`: the run manifest (`as_of`, `run_id`, `mlflow_run_id`, `prefect_flow_run_id`, `config_hash`,
      `input_rows`, ...).
    - `evaluation`, `evaluation_png`: the latest published `evaluation` (its last origin, the table) and its trade-off
      curves, if any.
    """
    try:
        title = report_title(manifest)
        period = PERIOD_NAMES.get(manifest.get("frequency"), manifest.get("frequency"))
        body = [
            f"<header><h1>{html.escape(title)}</h1>",
            f'<p class="sub">Buffer stock recommendations per SKU: just in time (JIT), hybrid or just in case (JIC). '
            f"Money in the currency of unit_cost; units are the unit of quantity; a period is {_esc(period)}.</p>",
            '<nav><a href="#attention">Look here first</a><a href="#run">Run</a><a href="#summary">Summary</a>'
            '<a href="#figures">Figures</a>'
            '<a href="#changes">Changes</a><a href="#top">Top SKUs</a><a href="#cover">Cover</a>'
            '<a href="#evaluation">Out of sample</a><a href="#quarantine">Quarantine</a></nav></header>',
            _attention_section(attention_items(tables.get("recommendations"), changes, evaluation[1] if evaluation else None)),
            _run_section(manifest),
            _summary_section(summary),
            _figures_section(figures),
            _changes_section(changes),
            _top_section(tables.get("recommendations")),
            _cover_section(tables.get("recommendations")),
            evaluation_section(evaluation[1] if evaluation else None, evaluation_png, evaluation[0] if evaluation else None),
            _quarantine_section(tables.get("quarantine")),
            f"<footer>Generated by buffercast, run {_esc(manifest.get('run_id'))}, created {_esc(manifest.get('created_at'))}.</footer>",
        ]
    finally:
        _close(figures.values())
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def report_figures(
    *,
    recommendations: pl.DataFrame,
    backtest_metrics: pl.DataFrame,
    history: pl.DataFrame | pl.LazyFrame,
    forecasts: pl.DataFrame | pl.LazyFrame,
    adi_cutoff: float,
    cv2_cutoff: float,
    simulated: pl.DataFrame | None = None,
    calibration_curves: pl.DataFrame | None = None,
    calibration_levels: pl.DataFrame | None = None,
) -> dict[str, Figure]:
    """The report's figures, keyed by the titles in `FIGURE_FILES` (whose values name the MLflow artifacts).

    `history` is demand per series and period (`sku_id`, `location_id`, `date`, `quantity`): e.g. the flow's panel
    joined to its series keys, `ds` -> `date`, `y` -> `quantity`.
    """
    from pipeline import plots

    titles = list(FIGURE_FILES)
    return {
        titles[0]: plots.sbc_quadrant_figure(recommendations, adi_cutoff, cv2_cutoff),
        titles[1]: plots.policy_mix_by_abc_figure(recommendations),
        titles[2]: plots.error_distribution_figure(backtest_metrics),
        titles[3]: plots.forecast_vs_actual_figure(history, forecasts, recommendations),
        titles[4]: plots.service_level_figure(recommendations, simulated),
        titles[5]: plots.calibration_figure(
            calibration_curves if calibration_curves is not None else pl.DataFrame(),
            calibration_levels if calibration_levels is not None else pl.DataFrame(),
        ),
    }


def planner_report(
    cfg: BuffercastConfig,
    history: pl.DataFrame | pl.LazyFrame,
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    summary: dict[str, Any],
    changes: pl.DataFrame | None,
    manifest: dict[str, Any],
    calibration: Calibration | None = None,
    evaluation: tuple[dt.date, pl.DataFrame] | None = None,
) -> tuple[dict[str, bytes], str]:
    """The plots (PNG bytes, for the report and MLflow alike) and the HTML report. `history`: the demand as sold per
    series and period (sku_id, location_id, date, quantity), a LazyFrame for a large catalogue (only the plotted
    series are read); `evaluation`: the latest published evaluation (its last origin, the table), shown with its
    trade-off curves."""
    figures = report_figures(
        recommendations=tables["recommendations"],
        backtest_metrics=tables["backtest_metrics"],
        history=history,
        forecasts=tables["forecasts"],
        adi_cutoff=cfg.sbc.adi_cutoff,
        cv2_cutoff=cfg.sbc.cv2_cutoff,
        # Achieved in the measure each target is set in: cycle service level, or fill rate.
        simulated=tables["recommendations"].select(
            "sku_id",
            "location_id",
            simulated_cycle_service_level=pl.when(pl.col("service_level_measure") == "fill_rate")
            .then("simulated_fill_rate")
            .otherwise("simulated_cycle_service_level"),
        ),
        calibration_curves=calibration.curves if calibration is not None else None,
        calibration_levels=calibration.levels if calibration is not None else None,
    )
    from pipeline.plots import tradeoff_figure

    pngs = render_pngs(figures)
    curves = figure_png(tradeoff_figure(evaluation[1])) if evaluation else None
    return pngs, render_report(
        summary=summary, tables=tables, figures=pngs, changes=changes, manifest=manifest, evaluation=evaluation, evaluation_png=curves
    )


def plan_summary_markdown(summary: dict[str, Any], changes: pl.DataFrame, as_of: dt.date) -> str:
    """The run in markdown for the Prefect UI: counts, capital, and the SKUs whose policy changed (at most 50)."""

    def counts(title: str, values: dict[str, int]) -> str:
        return f"| {title} | " + ", ".join(f"{k} {v}" for k, v in values.items()) + " |"

    policy_changes = changes.filter(pl.col("change") == "policy")
    lines = [
        f"# buffercast plan as of {as_of}",
        "",
        "| | |",
        "|---|---|",
        f"| SKUs | {summary['skus']} |",
        counts("demand class", summary["demand_class"]),
        counts("volatility", summary["volatility_class"]),
        counts("life cycle", summary["life_cycle"]),
        counts("policy", summary["policy"]),
        f"| safety stock value | {summary['safety_stock_value']:,.2f} |",
        f"| holding cost per year | {summary['holding_cost_per_year']:,.2f} |",
        counts("service level targets", {f"{k:.0%}": v for k, v in summary["service_level_targets"].items()}),
        counts("changes since the last run", summary["changes"]),
        "",
        f"## SKUs whose policy changed ({policy_changes.height})",
        "",
        *[
            f"- {row['sku_id']}{' @ ' + row['location_id'] if row['location_id'] else ''}: {row['reason']}"
            for row in policy_changes.head(50).iter_rows(named=True)
        ],
    ]
    return "\n".join(lines)
