"""Report figures (pipeline/plots.py) and the static HTML weekly report (pipeline/report.py)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from flows import publish as publish_mod
from flows.publish import write_report
from pipeline.plots import (
    error_distribution_figure,
    forecast_vs_actual_figure,
    policy_mix_by_abc_figure,
    sbc_quadrant_figure,
    service_level_figure,
    tradeoff_figure,
)
from pipeline.report import (
    FIGURE_FILES,
    attention_items,
    evaluation_section,
    figure_png,
    quarantine_counts,
    render_evaluation_report,
    render_report,
    report_figures,
)

AS_OF = dt.date(2026, 6, 30)
ROOT = Path(__file__).resolve().parents[1]
MODELS = ["AutoETS", "CrostonSBA", "TSB", "HistoricAverage"]


def make_recs(
    n: int = 30, *, seed: int = 0, policies: tuple[str, ...] = ("JIT", "hybrid", "JIC"), location: str | None = None
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    abc = ["A" if i < n * 0.2 else "B" if i < n * 0.5 else "C" for i in range(n)]
    critical = [i % 7 == 0 for i in range(n)]
    target = [{"A": 0.97, "B": 0.95, "C": 0.9}[a] + (0.02 if c else 0.0) for a, c in zip(abc, critical, strict=True)]
    ss_units = np.round(rng.uniform(0, 400, n))
    cost = rng.uniform(1, 50, n)
    return pl.DataFrame(
        {
            "as_of": [AS_OF] * n,
            "sku_id": [f"SKU-{i:03d}" for i in range(n)],
            "location_id": pl.Series([location] * n, dtype=pl.String),
            "policy": [policies[i % len(policies)] for i in range(n)],
            "safety_stock_units": ss_units,
            "reorder_point_units": ss_units + np.round(rng.uniform(10, 500, n)),
            "service_level_target": target,
            "abc_class": abc,
            "critical": critical,
            "adi": rng.uniform(1, 5, n),
            "cv2": rng.uniform(0, 1.5, n),
            "model": [MODELS[i % len(MODELS)] for i in range(n)],
            "lead_time_periods": rng.uniform(2, 40, n),
            "safety_stock_value": ss_units * cost,
            "reasons": [f"JIC: reason {i}; another reason" for i in range(n)],
        }
    )


def make_history(recs: pl.DataFrame, periods: int = 120, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = [AS_OF - dt.timedelta(days=periods - 1 - d) for d in range(periods)]
    frames = [
        pl.DataFrame(
            {
                "sku_id": sku,
                "location_id": pl.Series([loc] * periods, dtype=pl.String),
                "date": dates,
                "quantity": rng.poisson(20, periods).astype(float),
            }
        )
        for sku, loc in recs.select("sku_id", "location_id").iter_rows()
    ]
    return pl.concat(frames)


def make_forecasts(recs: pl.DataFrame, horizon: int = 14, *, quantiles: bool = False) -> pl.DataFrame:
    rows = [
        {
            "as_of": AS_OF,
            "sku_id": sku,
            "location_id": loc,
            "date": AS_OF + dt.timedelta(days=h),
            "step": h,
            "model": model,
            "forecast": 20.0 + h % 3,
        }
        for sku, loc, model in recs.select("sku_id", "location_id", "model").iter_rows()
        for h in range(1, horizon + 1)
    ]
    fc = pl.DataFrame(rows, schema_overrides={"location_id": pl.String})
    if quantiles:
        fc = fc.with_columns(q50=pl.col("forecast"), q90=pl.col("forecast") * 1.3, q95=pl.col("forecast") * 1.5, q99=pl.col("forecast") * 2)
    return fc


def make_metrics(recs: pl.DataFrame, seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"as_of": AS_OF, "sku_id": sku, "location_id": None, "model": model, "selected": model == chosen}
        for sku, chosen in recs.select("sku_id", "model").iter_rows()
        for model in MODELS
    ]
    m = pl.DataFrame(rows, schema_overrides={"location_id": pl.String})
    mase = rng.lognormal(-0.2, 0.4, m.height)
    mase[::11] = np.nan  # missing forecasts: null metrics
    return m.with_columns(mase=pl.Series(mase).fill_nan(None))


@pytest.fixture(autouse=True)
def _no_figure_leak():
    yield
    plt.close("all")


# --- Figures ---------------------------------------------------------------------------------------------------------


def test_policy_mix_by_abc():
    recs = make_recs()
    fig = policy_mix_by_abc_figure(recs)
    assert isinstance(fig, Figure)
    ax_n, ax_v = fig.axes
    assert "ABC" in fig._suptitle.get_text() and "30 SKUs" in fig._suptitle.get_text()
    assert [t.get_text() for t in ax_n.get_xticklabels()] == ["A", "B", "C"]
    assert len(ax_n.patches) == 9 and len(ax_v.patches) == 9  # 3 classes x 3 policies, both panels
    assert sum(p.get_height() for p in ax_n.patches) == pytest.approx(30)
    assert sum(p.get_height() for p in ax_v.patches) == pytest.approx(recs["safety_stock_value"].sum())
    assert [t.get_text() for t in ax_n.get_legend().get_texts()] == ["JIT", "hybrid", "JIC"]
    assert "SKUs" in ax_n.get_ylabel() and "money" in ax_v.get_ylabel()


def test_policy_mix_all_one_policy_and_empty():
    fig = policy_mix_by_abc_figure(make_recs(policies=("JIC",)))
    ax_n, _ = fig.axes
    assert len(ax_n.patches) == 3
    assert [t.get_text() for t in ax_n.get_legend().get_texts()] == ["JIC"]
    empty = policy_mix_by_abc_figure(make_recs().clear())
    assert "no SKUs" in " ".join(t.get_text() for t in empty.axes[0].texts)


def test_error_distribution():
    recs = make_recs()
    metrics = make_metrics(recs)
    fig = error_distribution_figure(metrics)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(MODELS)
    assert all(any(model in label for label in labels) for model in MODELS)
    n_valid = metrics.filter(pl.col("mase").is_not_null()).height
    assert f"{n_valid} SKU-model backtests" in ax.get_title()
    assert "MASE" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["all SKUs backtested", "SKUs where selected"]


def test_error_distribution_log_scale_and_edge_cases():
    recs = make_recs()
    wide = make_metrics(recs).with_columns(mase=pl.col("mase") * pl.Series(np.geomspace(1e-3, 10, 120)))
    assert error_distribution_figure(wide).axes[0].get_xscale() == "log"
    empty = error_distribution_figure(make_metrics(recs).clear())
    assert "no backtest metrics" in " ".join(t.get_text() for t in empty.axes[0].texts)
    all_null = error_distribution_figure(make_metrics(recs).with_columns(mase=pl.lit(None, dtype=pl.Float64)))
    assert "no finite MASE" in " ".join(t.get_text() for t in all_null.axes[0].texts)
    none_selected = error_distribution_figure(make_metrics(recs).with_columns(selected=pl.lit(False)))
    assert len(none_selected.axes) == 1


def test_forecast_vs_actual_top_12():
    recs = make_recs()
    fig = forecast_vs_actual_figure(make_history(recs), make_forecasts(recs), recs)
    assert len(fig.axes) == 12
    top = recs.sort("safety_stock_value", descending=True).head(12)
    titles = [ax.get_title() for ax in fig.axes]
    for title, (sku, policy, model) in zip(titles, top.select("sku_id", "policy", "model").iter_rows(), strict=True):
        assert title == f"{sku} · {policy} · {model}"
    first = fig.axes[0]
    assert len(first.lines[0].get_xdata()) == 90  # last 90 of 120 periods of actuals
    assert "units per period" in first.get_ylabel()
    assert any("ROP" in t.get_text() and "SS" in t.get_text() for t in first.texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "actual" in legend and "forecast" in legend
    assert not any(label.startswith("forecast q") for label in legend)  # no quantile columns: no quantile band


def test_forecast_vs_actual_quantiles_locations_and_few_skus():
    recs = make_recs(5, location="WH-1")
    fig = forecast_vs_actual_figure(make_history(recs), make_forecasts(recs, quantiles=True), recs)
    assert len(fig.axes) == 5
    assert all("@ WH-1" in ax.get_title() for ax in fig.axes)
    bands = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # q50-q90, q90-q95, q95-q99
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "forecast q95–q99" in legend
    # A SKU with no history nor forecast still gets its panel; no SKUs at all: a message.
    lonely = forecast_vs_actual_figure(make_history(recs).clear(), make_forecasts(recs).clear(), recs.head(1))
    assert len(lonely.axes) == 1 and "no history" in " ".join(t.get_text() for t in lonely.axes[0].texts)
    empty = forecast_vs_actual_figure(make_history(recs), make_forecasts(recs), recs.clear())
    assert "no SKUs" in " ".join(t.get_text() for t in empty.axes[0].texts)


def test_forecast_vs_actual_without_location_column():
    recs = make_recs(3).drop("location_id")
    hist = make_history(make_recs(3)).drop("location_id")
    fig = forecast_vs_actual_figure(hist, make_forecasts(make_recs(3)).drop("location_id"), recs)
    assert len(fig.axes) == 3 and all(len(ax.lines) >= 2 for ax in fig.axes)


def test_service_level_targets_without_simulation():
    recs = make_recs()
    fig = service_level_figure(recs)
    (ax,) = fig.axes
    assert "not available yet" in ax.get_title()
    groups = recs.select("abc_class", "critical").unique().height
    assert len(ax.get_xticklabels()) == groups
    assert sum(int(t.get_text()) for t in ax.texts) == 30  # count labels add up to every SKU
    assert "%" in ax.get_ylabel()


def test_service_level_simulated_vs_target():
    recs = make_recs()
    sim = recs.select(
        "sku_id", "location_id", simulated_cycle_service_level=pl.col("service_level_target") - 0.01 + (pl.int_range(30) % 2) * 0.02
    )
    fig = service_level_figure(recs, sim)
    (ax,) = fig.axes
    assert "15 of 30 SKUs at or above target" in ax.get_title()
    assert any(line.get_label() == "simulated = target" for line in ax.lines)
    assert "simulated" in ax.get_ylabel()
    assert service_level_figure(recs.clear()).axes[0].texts  # nothing to draw: a message


def test_sbc_quadrant_still_works():
    fig = sbc_quadrant_figure(make_recs(), 1.32, 0.49)
    assert "SBC" in fig.axes[0].get_title()


def test_figures_are_fast_on_500_skus():
    recs = make_recs(500, seed=5)
    hist, fc, metrics = make_history(recs, periods=90), make_forecasts(recs), make_metrics(recs)
    for build in (
        lambda: policy_mix_by_abc_figure(recs),
        lambda: error_distribution_figure(metrics),
        lambda: forecast_vs_actual_figure(hist, fc, recs),
        lambda: service_level_figure(recs),
    ):
        start = time.perf_counter()
        fig = build()
        assert time.perf_counter() - start < 2.0  # about 0.1-0.2 s each; generous for a loaded CI machine
        plt.close(fig)


# --- Report ----------------------------------------------------------------------------------------------------------


def _manifest(summary: dict) -> dict:
    return {
        "run_id": "run-123",
        "as_of": AS_OF.isoformat(),
        "created_at": "2026-07-01T06:00:00+00:00",
        "config_name": "demo & <co>",
        "config_hash": "abcdef0123456789",
        "schema_version": 1,
        "inputs": {"sales": "/data/sales.csv", "sku_master": None},
        "input_rows": {"sales_in": 1000, "sales_used": 990, "sales_quarantined": 10, "sales_after_as_of": 0, "sku_master_in": 0},
        "series_not_planned": [],
        "last_date_in_data": AS_OF.isoformat(),
        "frequency": "D",
        "mlflow_run_id": "mlflow-run-456",
        "mlflow_tracking_uri": "sqlite:///mlflow.db",
        "prefect_flow_run_id": "prefect-789",
        "summary": summary,
    }


def _summary(recs: pl.DataFrame) -> dict:
    def counts(col: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in recs.group_by(col).len().sort(col).iter_rows()}

    return {
        "skus": recs.height,
        "demand_class": {"smooth": 20, "lumpy": 10},
        "volatility_class": {"stable": 25, "erratic": 5},
        "policy": counts("policy"),
        "abc_class": counts("abc_class"),
        "life_cycle": {"active": 28, "new": 2},
        "safety_stock_value": float(recs["safety_stock_value"].sum()),
        "holding_cost_per_year": 1234.75,
        "median_mase": 0.8,
        "series_not_planned": 0,
    }


def _quarantine() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "as_of": [AS_OF] * 3,
            "input": ["sales", "sales", "sku_master"],
            "source_file": ["s.csv", "s.csv", "m.csv"],
            "row_number": [3, 9, 2],
            "check": ["negative quantity; unparseable date", "unparseable date", "missing lead time"],
            "column": ["qty; day", "day", "lt"],
            "sku_id": ["A", "B", "C"],
            "raw_values": ["{}", "{}", "{}"],
        }
    )


def _render(recs: pl.DataFrame, changes: pl.DataFrame | None, figures: dict | None = None) -> str:
    summary = _summary(recs)
    if figures is None:
        figures = {"Policy mix": policy_mix_by_abc_figure(recs), "Service level": service_level_figure(recs)}
    return render_report(
        summary=summary,
        tables={"recommendations": recs, "quarantine": _quarantine()},
        figures=figures,
        changes=changes,
        manifest=_manifest(summary),
    )


def test_render_report_content_and_escaping():
    recs = make_recs().with_columns(
        sku_id=pl.when(pl.int_range(30) == 0).then(pl.lit("<script>alert('x')</script>")).otherwise(pl.col("sku_id")),
        safety_stock_value=pl.when(pl.int_range(30) == 0).then(1e9).otherwise(pl.col("safety_stock_value")),
        reasons=pl.when(pl.int_range(30) == 0).then(pl.lit("JIC: lead time > 30 d & <b>bold</b>")).otherwise(pl.col("reasons")),
    )
    changes = pl.DataFrame(  # the published `changes` table's columns (buffers/drift.py CHANGES_SCHEMA)
        {
            "as_of": [AS_OF] * 2,
            "previous_as_of": [AS_OF - dt.timedelta(days=7)] * 2,
            "sku_id": ["SKU-001", "<script>alert('x')</script>"],
            "location_id": pl.Series([None, None], dtype=pl.String),
            "change": ["policy", "demand_class"],
            "before": ["hybrid", "smooth"],
            "after": ["JIC", "lumpy"],
            "buffer_change_pct": pl.Series([None, None], dtype=pl.Float64),
            "reason": ["lead time grew to 35 d", "ADI 1.5 > 1.32"],
        }
    )
    figures = {"Policy mix": policy_mix_by_abc_figure(recs), "Service level": service_level_figure(recs)}
    text = _render(recs, changes, figures)

    assert text.startswith("<!DOCTYPE html>")
    assert "buffercast weekly report — demo &amp; &lt;co&gt; — as of 2026-06-30" in text
    for heading in ("Run", "Summary", "Figures", "Changes since the previous run", "Top 20 SKUs by safety-stock value"):
        assert f"<h2>{heading}</h2>" in text
    assert "<h2>Quarantined input rows per check</h2>" in text
    for fact in ("run-123", "mlflow-run-456", "prefect-789", "abcdef0123456789", "1,000", "990"):
        assert fact in text
    # One embedded PNG per figure, titled; no external resources, no script.
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="', text)) == 2
    assert "<h3>Policy mix</h3>" in text and "<h3>Service level</h3>" in text
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "lead time &gt; 30 d &amp;" in text
    # Summary counts and totals.
    assert "<h3>Demand class (SBC)</h3>" in text and "<h3>Buffer policy</h3>" in text and "1,235" in text
    # Changes rows.
    assert (
        "lead time grew to 35 d" in text
        and "ADI 1.5 &gt; 1.32" in text
        and "2 changes compared with the run as of 2026-06-23 (demand_class: 1, policy: 1)." in text
    )
    section = text.split('<section id="changes">')[1].split("</section>")[0]
    assert section.count("<tr>") == 3 and "previous_as_of" not in section and "<th>before</th>" in section
    # Top 20: exactly 20 rows, the largest first.
    top = text.split('<section id="top">')[1].split("</section>")[0]
    assert top.count("<tr>") == 21
    assert top.index("&lt;script&gt;") < top.index("SKU-")
    assert "1,000,000,000.00" in top
    # Quarantine per check: a row with two failed checks counts under each.
    q = text.split('<section id="quarantine">')[1]
    assert 'unparseable date</td><td class="num">2</td>' in q and "missing lead time" in q
    # The figures were closed.
    assert not set(plt.get_fignums()) & {f.number for f in figures.values()}


@pytest.mark.parametrize("changes", [None, pl.DataFrame(schema={"sku_id": pl.String, "reason": pl.String})])
def test_render_report_without_changes(changes):
    text = _render(make_recs(), changes)
    section = text.split('<section id="changes">')[1].split("</section>")[0]
    expected = "first run: nothing to compare" if changes is None else "no SKU changed"
    assert expected in section and "<table" not in section


def test_render_report_empty_run():
    recs = make_recs().clear()
    summary = {"skus": 0, "policy": {}, "safety_stock_value": 0.0, "holding_cost_per_year": 0.0}
    text = render_report(
        summary=summary,
        tables={"recommendations": recs, "quarantine": _quarantine().clear()},
        figures={},
        changes=None,
        manifest={"as_of": "2026-06-30"},
    )
    assert "no recommendations in this run" in text and "no input row was quarantined" in text
    assert "no figures in this run" in text and "as of 2026-06-30" in text


def _evaluation() -> pl.DataFrame:
    rows = [
        ("buffercast_sweep", 0.9, 100, 91, 0.84, 0.95, 0.9, 3, 0.97, 5.0, 12.0, 40.0),
        ("buffercast_sweep", 0.95, 100, 96, 0.90, 0.98, 0.95, 3, 0.99, 2.0, 15.0, 52.0),
        ("textbook", 0.9, 100, 80, 0.71, 0.86, 0.9, 3, 0.93, 9.0, 10.0, 35.0),
        ("ddmrp", None, 100, 93, 0.86, 0.97, None, 3, 0.98, 3.0, 20.0, 60.0),
    ]
    columns = ["method", "target", "windows", "covered", "achieved_low", "achieved_high", "expected", "replayed", "fill_rate",
               "units_short", "safety_stock_value", "on_hand_value"]  # fmt: skip
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    return frame.with_columns(slice=pl.lit("all"), value=pl.lit("all"), achieved=pl.col("covered") / pl.col("windows"))


def test_the_report_shows_the_latest_evaluation_and_the_cover_of_the_buffers():
    recs = make_recs().with_columns(
        mean_demand_per_period=pl.lit(2.0),
        lead_time_days=pl.lit(14.0),
        lead_time_periods=pl.lit(2.0),
        flag_cover_capped=pl.int_range(30) == 0,
        safety_stock_units=pl.int_range(30).cast(pl.Float64),
        demand_class=pl.lit("smooth"),
    )
    summary = _summary(recs)
    evaluation = _evaluation()
    text = render_report(
        summary=summary,
        tables={"recommendations": recs, "quarantine": _quarantine()},
        figures={},
        changes=None,
        manifest=_manifest(summary),
        evaluation=(AS_OF, evaluation),
        evaluation_png=figure_png(tradeoff_figure(evaluation)),
    )
    section = text.split('<section id="evaluation">')[1].split("</section>")[0]
    assert f"Last evaluation as of {AS_OF}" in section
    assert "buffercast at each target" in section and "textbook z·sd·√L" in section and "DDMRP" in section
    assert "0.84–0.95" in section and section.count("<tr>") == 5
    assert section.index("buffercast at each target") < section.index("textbook")  # the order of METHOD_NAMES
    assert '<img src="data:image/png;base64,' in section
    # Cover: SS / (2 units per period) x 7 days per period = 3.5 days per unit of SS; SS 1..29 (SS 0 holds no buffer),
    # the largest 29 x 3.5 = 101.5 days.
    cover = text.split('<section id="cover">')[1].split("</section>")[0]
    assert "held by the cap" in cover and cover.count("<tr>") >= 2 and "101.5" in cover
    without = evaluation_section(None)
    assert "No evaluation published yet" in without and "<table" not in without
    own = render_evaluation_report(evaluation, None, {"config_name": "demo", "as_of": "2026-06-30", "origins": ["2026-06-01"]})
    assert own.startswith("<!DOCTYPE html>") and "buffercast evaluation — demo — last origin 2026-06-30" in own


def test_look_here_first_lists_policy_changes_capped_buffers_and_evaluation_misses():
    recs = make_recs().with_columns(
        flag_cover_capped=pl.int_range(30) < 3,
        calibration_status=pl.when(pl.int_range(30) == 5).then(pl.lit("capped")).otherwise(pl.lit("calibrated")),
    )
    changes = pl.DataFrame({"sku_id": ["SKU-001", "SKU-002", "SKU-003"], "change": ["policy", "policy", "demand_class"]})
    evaluation = pl.DataFrame(
        {
            "method": ["buffercast", "buffercast", "buffercast", "buffercast_sweep", "buffercast"],
            "slice": ["all", "demand_class", "demand_class", "all", "demand_class"],
            "value": ["all", "lumpy", "smooth", "all", "erratic"],
            "target": [0.95, 0.9, 0.8, 0.9, 0.9],
            "windows": [1000, 400, 300, 1000, 40],
            "achieved": [0.945, 0.84, 0.93, 0.5, 0.5],  # all within 2 points; lumpy below; smooth above; sweep and 40 windows ignored
        }
    )
    items = attention_items(recs, changes, evaluation)
    assert items[0] == "2 SKUs changed policy since the previous run: SKU-001, SKU-002 (the changes table says why)"
    assert items[1].startswith("3 buffers are held down by the cover cap") and items[2].startswith("1 buffers are sized at a capped")
    assert items[3:] == [
        "out of sample, lumpy SKUs at the 90.0% target achieved 84.0% over 400 windows: below the target",
        "out of sample, smooth SKUs at the 80.0% target achieved 93.0% over 300 windows: above the target (capital spent for nothing)",
    ]
    assert attention_items(make_recs(), None, None) == []
    text = _render(recs, changes.with_columns(as_of=pl.lit(AS_OF)))
    section = text.split('<section id="attention">')[1].split("</section>")[0]
    assert section.count("<li>") == 3 and text.index('id="attention"') < text.index('id="run"')


def test_render_report_closes_figures_on_error():
    fig = policy_mix_by_abc_figure(make_recs())
    with pytest.raises(AttributeError):
        render_report(summary=None, tables={}, figures={"x": fig}, changes=None, manifest={})  # type: ignore[arg-type]
    assert fig.number not in plt.get_fignums()


def test_quarantine_counts():
    counts = quarantine_counts(_quarantine())
    assert counts.rows() == [("sales", "unparseable date", 2), ("sales", "negative quantity", 1), ("sku_master", "missing lead time", 1)]


def test_write_report_atomic(tmp_path, monkeypatch):
    target = tmp_path / "reports" / "as_of=2026-06-30" / "report.html"
    written = write_report(target, "<html>first</html>")
    assert written == target.resolve() and target.read_text(encoding="utf-8") == "<html>first</html>"
    write_report(target, "<html>second — ü</html>")
    assert target.read_text(encoding="utf-8") == "<html>second — ü</html>"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(publish_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(target, "<html>third</html>")
    assert target.read_text(encoding="utf-8") == "<html>second — ü</html>"  # the old report is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temp file left behind


def test_real_report_from_outputs():
    """Render the report of the sample run in outputs/ (skipped when there is none) to /tmp/report.html."""
    manifests = sorted((ROOT / "outputs" / "manifests").glob("as_of=*/manifest.json"))
    if not manifests:
        pytest.skip("no published run in outputs/")
    manifest = json.loads(manifests[-1].read_text())
    partition = manifests[-1].parent.name
    tables = {}
    for name in ("recommendations", "forecasts", "backtest_metrics", "quarantine"):
        path = ROOT / "outputs" / name / partition / "part-0.parquet"
        if not path.exists():
            pytest.skip(f"{path} missing")
        tables[name] = pl.read_parquet(path)
    sales_path = Path(manifest.get("inputs", {}).get("sales") or "")
    history = pl.DataFrame(schema={"sku_id": pl.String, "location_id": pl.String, "date": pl.Date, "quantity": pl.Float64})
    if sales_path.suffix == ".parquet" and sales_path.exists():
        sales = pl.scan_parquet(sales_path)
        keys = ["sku_id", "location_id"] if "location_id" in sales.collect_schema() else ["sku_id"]
        history = (
            sales.filter(pl.col("date") <= dt.date.fromisoformat(manifest["as_of"]))
            .group_by(*keys, "date")
            .agg(pl.col("quantity").sum())
            .collect()
        )
    figures = report_figures(
        recommendations=tables["recommendations"],
        backtest_metrics=tables["backtest_metrics"],
        history=history,
        forecasts=tables["forecasts"],
        adi_cutoff=1.32,
        cv2_cutoff=0.49,
    )
    assert list(figures) == list(FIGURE_FILES)
    text = render_report(summary=manifest["summary"], tables=tables, figures=figures, changes=None, manifest=manifest)
    path = write_report("/tmp/report.html", text)
    assert path.stat().st_size > 50_000
    assert text.count("data:image/png;base64,") == len(FIGURE_FILES)
    assert manifest["run_id"] in text and "first run: nothing to compare" in text


def test_forecast_vs_actual_fills_missing_dates_with_zero():
    """Raw sales carry no zero days: inside the window, after a series' first sale, a missing date is zero demand."""
    recs = make_recs(2)
    dates = [AS_OF - dt.timedelta(days=d) for d in range(100)]
    busy = pl.DataFrame(
        {"sku_id": "SKU-000", "location_id": None, "date": dates, "quantity": 5.0}, schema_overrides={"location_id": pl.String}
    )
    sparse = pl.DataFrame(
        {
            "sku_id": "SKU-001",
            "location_id": None,
            "date": [AS_OF - dt.timedelta(days=40), AS_OF - dt.timedelta(days=3)],
            "quantity": [7.0, 9.0],
        },
        schema_overrides={"location_id": pl.String},
    )
    fig = forecast_vs_actual_figure(pl.concat([busy, sparse]), make_forecasts(recs), recs)
    lines = {ax.get_title().split(" · ")[0]: ax.lines[0].get_ydata() for ax in fig.axes}
    assert len(lines["SKU-000"]) == 90
    assert len(lines["SKU-001"]) == 41 and sorted(lines["SKU-001"])[-2:] == [7.0, 9.0] and sum(lines["SKU-001"]) == 16.0
