"""Forecasting speed: buffercast's forecasting stage against raw statsforecast and two common baselines.

Run: `.venv/bin/python bench/forecast_speed.py` (options: `--help`). One generated panel (`generate_catalogue`:
default 10,000 SKUs x 730 daily periods with the catalogue's class mix), five parts, each in its own
subprocess of this script (`--part`), so one part's peak memory and process pool never mix with another's:

- profile: validation as in the flow (untimed), then what the flow's `profile` task runs (`profile_sales`:
  `to_periods`, `sku_attributes`, `build_profiles`) and `forecast_inputs`, timed. Reported, not part of (a).
- a: `backtest_and_forecast` with the default config (configs/default.yaml): what buffercast costs.
- b: the same statsforecast work called directly: `plan_horizons` groups the SKUs exactly as the stage does
  (model set per class, seasonal or not, trended or not, horizon bucket, windows, step), the models come from
  `build_model` / `without_season` / `without_trend`; statsforecast's own n_jobs on groups of 100+ SKUs, same fallback model, and the calls
  statsforecast itself forces: point forecasts in the backtest and `level=` (the stage's
  `interval_levels(quantiles)`) in the final forecast, only on models with native intervals, over the horizon
  plus `time_phased_periods` as the stage forecasts; with refit=False
  the models without `forward` refit in a call of their own. One set of calls per group (the stage chunks
  groups by `chunk_size`); no metrics, selection, combination, empirical quantiles or fallback flag column.
  a/b is buffercast's overhead over the statsforecast calls it cannot avoid.
- c: the full-search baseline: AutoETS(model="ZZZ", season_length=7) for every SKU of a seeded random subset,
  cross-validated (point forecasts, as (a)) over the same windows and horizons as (a), then forecast with the
  same `level=`; seconds extrapolated linearly. It runs with the config's n_jobs on every group (at full size they would all be large).
- d: what a data scientist writes without buffercast: a pandas groupby loop with statsmodels
  `ExponentialSmoothing` (additive weekly season when the training data has two seasons), refit at every
  cutoff of (a)'s windows, one process, on a seeded subset (a prefix of c's); extrapolated linearly.

Accuracy: every part's held-out forecasts are scored by the same code on the same cutoffs and lead-time
steps, MASE as the stage scores it (utilsforecast `mase`, season 7, scaled on each window's own training
data; lag-1 scale where the seasonal one is not finite), averaged over windows per SKU, then over SKUs.
(a) is the model buffercast SELECTED per SKU; c and d are compared with (a) on their own subset's SKUs.

Time: wall seconds, and CPU seconds of the part's process plus its pool workers (steadier than wall time on a
shared machine), with the 1-minute load average before and after each part: above the CPU count, other work
competed. Each part records a hash of the stage's files (`STAGE_FILES`): a run that straddles an edit says so.
A part that dies before it starts (no result: an import failing mid-way through someone's edit) is retried.

Memory: `ru_maxrss` of the part's main process and of its largest process-pool worker (RUSAGE_CHILDREN);
workers are forked, so a worker's peak includes the pages it shares with the main process. A `uname` that
`platform` forks during the imports already sets the children's peak (~350 MB): "<=350" means no worker passed it.

Writes `bench/results/latest.json` and a timestamped copy; prints one table. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from configs.schema import BuffercastConfig, load_config
from flows.sample_data import generate_catalogue
from forecasting.backtest import backtest_and_forecast, interval_levels, plan_horizons
from forecasting.inputs import forecast_inputs
from forecasting.models import NATIVE_INTERVALS, POLARS_FREQ, build_model, model_spec, without_season, without_trend
from pipeline.contracts import validate_sales, validate_sku_master
from pipeline.stages import model_sets, profile_sales
from pipeline.tables import sales_as_of

ID, DS, Y = "unique_id", "ds", "y"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_OUT = RESULTS / "latest.json"
#: (b) calls statsforecast bare, with its own process pool on groups this large (outside Prefect, so no SIGTERM
#: handler in its forked workers); the stage (a) runs every chunk on its own worker pool (forecasting/workers.py).
MIN_SERIES_FOR_PROCESSES = 100
GROUP_KEYS = ["model_set", "seasonal", "trended", "bucket", "windows", "step"]  # backtest_and_forecast's grouping
SEASON = 7  # daily data: the weekly season of c, d and the MASE scale
#: The files behind (a): each part records their hash, so a run that straddles an edit shows it.
STAGE_FILES = ("forecasting/backtest.py", "forecasting/models.py", "configs/default.yaml", "configs/schema.py")
START_ATTEMPTS, START_RETRY_SECONDS = 4, 60
MASE_CHUNK = 1_000  # SKUs scored per utilsforecast call (its per-window training frames grow with windows x history)


@dataclass(frozen=True)
class Opts:
    skus: int
    periods: int
    seed: int
    subset_zzz: int
    subset_loop: int
    workdir: Path


# ---------------------------------------------------------------- shared helpers


def _load(o: Opts) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The forecast panel and the forecast inputs the profile part wrote."""
    return pl.read_parquet(o.workdir / "panel.parquet"), pl.read_parquet(o.workdir / "inputs.parquet")


def subset_ids(inputs: pl.DataFrame, n: int, seed: int) -> list[str]:
    """The first n SKUs of a seeded permutation: the loop's subset is a prefix of the ZZZ subset."""
    ids = np.array(sorted(inputs[ID].to_list()))
    return sorted(ids[np.random.default_rng(seed).permutation(ids.size)[:n]].tolist())


def lead_time_steps(cv: pl.DataFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """The first ceil(lead time) steps after each cutoff: what the stage scores (it forecasts the whole bucket)."""
    return (
        cv.join(plan.select(ID, "lead_time_periods"), on=ID, how="left")
        .filter(pl.col(DS).rank("ordinal").over(ID, "cutoff") <= pl.col("lead_time_periods").ceil().clip(1, None))
        .select(ID, "cutoff", DS, Y, "forecast")
    )


def sf_calls(
    names: list[str], spec: Any, s: BuffercastConfig, refit: bool, with_levels: bool = True
) -> list[tuple[list[str], str, bool, dict[str, Any]]]:
    """(models, fallback, refit, level kwarg) per statsforecast call, split as statsforecast requires: `level=` raises
    on a model without native intervals, refit=False on a model without `forward` (Naive, the fallback of a forward
    call, has both). The stage asks for intervals in the forecast call only (`with_levels`), as here."""
    level = {"level": interval_levels(s.models.quantiles)} if s.models.quantiles and with_levels else {}
    parts = (
        (([n for n in names if n in NATIVE_INTERVALS], level), ([n for n in names if n not in NATIVE_INTERVALS], {}))
        if level
        else ((list(names), {}),)
    )
    calls: list[tuple[list[str], str, bool, dict[str, Any]]] = []
    for group, kw in parts:
        if refit:
            calls.append((group, s.models.fallback, True, kw))
            continue
        fwd = [n for n in group if hasattr(build_model(n, spec), "forward")]
        calls += [(fwd, "Naive", False, kw), ([n for n in group if n not in fwd], s.models.fallback, True, kw)]
    return [c for c in calls if c[0]]


def _sf(names: list[str], spec: Any, fallback: str, s: BuffercastConfig, n_jobs: int) -> Any:
    from statsforecast import StatsForecast

    models = [build_model(n, spec) for n in names]
    return StatsForecast(models=models, freq=POLARS_FREQ[s.frequency], n_jobs=n_jobs, fallback_model=build_model(fallback, spec))


class Stopwatch:
    """Wall and CPU seconds of a timed section. CPU counts this process and its pool workers (once they are
    joined): on a shared machine it moves less than the wall time when other work competes for the cores."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": self._cpu() - self.cpu}


def stage_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in STAGE_FILES:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def _peak_mb(children_before: int) -> dict[str, float | None]:
    """ru_maxrss (KiB on Linux) of this process and of its largest waited-for child (a pool worker).

    A forked child's peak counts the parent's pages from before its exec, so the `uname` that `platform` runs
    while the imports load already sets a children's peak: None when the part's workers did not pass it.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "peak_mb_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_mb_worker": children / 1024 if children > children_before else None,
        "peak_mb_children_before_part": children_before / 1024,
    }


# ---------------------------------------------------------------- the parts (each runs in its own subprocess)


def part_profile(o: Opts, cfg: BuffercastConfig) -> dict[str, Any]:
    """Generate, validate (untimed), then profile as the flow's `profile` task does (timed)."""
    start = time.perf_counter()
    raw_sales, raw_master = generate_catalogue(n_skus=o.skus, seed=o.seed, n_days=o.periods)
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    today = max(dt.date.today(), raw_sales["date"].max())  # generated dates may lie after today
    sales = validate_sales(raw_sales, cfg.input.sales_columns, today=today, date_format=cfg.input.date_format)
    master = validate_sku_master(raw_master, cfg.input.sku_master_columns)
    used, as_of, _ = sales_as_of(cfg, sales.valid)
    validate_s = time.perf_counter() - start
    clock = Stopwatch()
    p = profile_sales(cfg, used, master.valid, as_of)  # the flow's `profile` task minus its log line
    inputs = forecast_inputs(p.profiles, p.attrs, cfg)
    timing = clock.stop()
    p.panel.write_parquet(o.workdir / "panel.parquet")
    inputs.write_parquet(o.workdir / "inputs.parquet")
    plan = plan_horizons(inputs, cfg)
    return timing | {
        "skus": inputs.height,
        "generate_seconds": generate_s,
        "validate_seconds": validate_s,
        "sales_rows": raw_sales.height,
        "panel_rows": p.panel.height,
        "as_of": as_of.isoformat(),
        "demand_class": dict(inputs.group_by("demand_class").len().sort("demand_class").iter_rows()),
        "seasonal": int(inputs["seasonal"].sum()),
        "new_skip_backtest": int(inputs["skip_backtest"].sum()),
        "backtested": int(plan["backtested"].sum()),
        "groups": plan.select(GROUP_KEYS).n_unique(),
    }


def part_a(o: Opts, cfg: BuffercastConfig) -> dict[str, Any]:
    """buffercast's forecasting stage, default config."""
    panel, inputs = _load(o)
    clock = Stopwatch()
    fc = backtest_and_forecast(panel, inputs, model_sets(cfg), cfg)
    timing = clock.stop()
    sel = fc.selection.select(ID, "model", "mase", "backtested")
    sel.write_parquet(o.workdir / "a_selection.parquet")
    # The chosen model's backtest (the stage keeps its steps up to lead time + review), cut to the scored lead-time steps.
    chosen = fc.cv.join(sel.select(ID, "model"), on=[ID, "model"], how="semi").sort(ID, "cutoff", DS)
    lead_time_steps(chosen, fc.plan).write_parquet(o.workdir / "a_heldout.parquet")
    return timing | {
        "skus": inputs.height,
        "selected_models": dict(sel.group_by("model").len().sort("len", descending=True).iter_rows()),
    }


def part_b(o: Opts, cfg: BuffercastConfig) -> dict[str, Any]:
    """The stage's statsforecast calls made directly: same groups, models, windows, n_jobs; nothing else."""
    panel, inputs = _load(o)
    s, sets = cfg, model_sets(cfg)
    groups = []
    clock = Stopwatch()
    plan = plan_horizons(inputs, s)
    for key, members in plan.group_by(GROUP_KEYS, maintain_order=True):
        row = dict(zip(GROUP_KEYS, key, strict=True))
        backtested = bool(members["backtested"][0])
        names, spec = list(sets[row["model_set"]]), model_spec(s)
        if not row["seasonal"]:
            names, spec = without_season(names, model_spec(s), s.models.fallback)
        if not row["trended"]:
            names = without_trend(names, s.models.fallback)
        df = panel.join(members.select(ID), on=ID, how="semi").sort(ID, DS)
        n_jobs = s.backtest.n_jobs if members.height >= MIN_SERIES_FOR_PROCESSES else 1
        t0 = time.perf_counter()
        if backtested:
            for call_names, fallback, refit, level in sf_calls(names, spec, s, s.backtest.refit, with_levels=False):
                _sf(call_names, spec, fallback, s, n_jobs).cross_validation(
                    h=row["bucket"], df=df, n_windows=row["windows"], step_size=row["step"], refit=refit, **level
                )
        t1 = time.perf_counter()
        for call_names, fallback, _, level in sf_calls(names, spec, s, refit=True):
            # The stage forecasts `time_phased_periods` past the horizon (the time-phased parameters read them).
            _sf(call_names, spec, fallback, s, n_jobs).forecast(
                h=row["bucket"] + s.time_phased_periods, df=df, fitted=not backtested, **level
            )
        groups.append(
            row | {"skus": members.height, "models": names, "n_jobs": n_jobs, "cv_s": t1 - t0, "forecast_s": time.perf_counter() - t1}
        )
    return clock.stop() | {"skus": inputs.height, "groups": sorted(groups, key=lambda g: -(g["cv_s"] + g["forecast_s"]))}


def part_c(o: Opts, cfg: BuffercastConfig) -> dict[str, Any]:
    """AutoETS ZZZ, season 7, for every SKU of the subset, over (a)'s windows and horizons."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    panel, inputs = _load(o)
    s = cfg
    ids = subset_ids(inputs, o.subset_zzz, o.seed)
    level = {"level": interval_levels(s.models.quantiles)} if s.models.quantiles else {}
    held = []
    clock = Stopwatch()
    plan = plan_horizons(inputs.filter(pl.col(ID).is_in(ids)), s)
    for (bucket, windows, step, backtested), members in plan.group_by("bucket", "windows", "step", "backtested", maintain_order=True):
        df = panel.join(members.select(ID), on=ID, how="semi").sort(ID, DS)
        sf = StatsForecast(
            models=[AutoETS(model="ZZZ", season_length=SEASON, alias="forecast")],
            freq=POLARS_FREQ[s.frequency],
            n_jobs=s.backtest.n_jobs,
            # refit=False needs a fallback with `forward`: Naive, as the stage's forward call
            fallback_model=build_model(s.models.fallback if s.backtest.refit else "Naive", model_spec(s), alias="forecast"),
        )
        if backtested:
            cv = sf.cross_validation(h=bucket, df=df, n_windows=windows, step_size=step, refit=s.backtest.refit)  # point forecasts, as (a)
            held.append(lead_time_steps(cv, members))
        sf.forecast(h=bucket, df=df, **level)
    timing = clock.stop()
    pl.concat(held).write_parquet(o.workdir / "c_heldout.parquet")
    return timing | {"skus": len(ids), "refit": s.backtest.refit}


def _exponential_smoothing(train: np.ndarray, h: int) -> np.ndarray:
    """The usual statsmodels call: additive weekly season with two seasons of data, else none; mean if it fails."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = "add" if train.size >= 2 * SEASON else None
    try:
        fit = ExponentialSmoothing(
            train, trend=None, seasonal=seasonal, seasonal_periods=SEASON if seasonal else None, initialization_method="estimated"
        ).fit()
        return np.asarray(fit.forecast(h))
    except (ValueError, np.linalg.LinAlgError):
        return np.full(h, train.mean())


def part_d(o: Opts, cfg: BuffercastConfig) -> dict[str, Any]:
    """A pandas groupby loop over the subset, statsmodels refit at every cutoff of (a)'s windows, one process."""
    panel, inputs = _load(o)
    ids = subset_ids(inputs, o.subset_loop, o.seed)
    plan = plan_horizons(inputs.filter(pl.col(ID).is_in(ids)), cfg)
    rows: list[tuple[str, Any, np.ndarray, np.ndarray, np.ndarray]] = []
    fits = 0
    clock = Stopwatch()
    data = panel.filter(pl.col(ID).is_in(ids)).with_columns(pl.col(DS).cast(pl.Datetime("ms"))).to_pandas()
    by_sku = {r[ID]: r for r in plan.iter_rows(named=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence warnings, as a notebook would silence them
        for uid, g in data.groupby(ID, sort=True):
            p = by_sku[uid]
            y, ds = g[Y].to_numpy(), g[DS].to_numpy()
            keep = max(1, math.ceil(p["lead_time_periods"]))  # scored steps, as the stage
            for i in range(p["windows"]):  # statsforecast's cutoffs: the last window ends on the last period
                end = y.size - p["bucket"] - p["step"] * (p["windows"] - 1 - i)
                fc = _exponential_smoothing(y[:end], p["bucket"])
                rows.append((uid, ds[end - 1], ds[end : end + keep], y[end : end + keep], fc[:keep]))
                fits += 1
            _exponential_smoothing(y, p["horizon"])
            fits += 1
    timing = clock.stop()
    pl.DataFrame(
        {
            ID: [r[0] for r in rows for _ in r[2]],
            "cutoff": np.array([r[1] for r in rows for _ in r[2]]),
            DS: np.concatenate([r[2] for r in rows]),
            Y: np.concatenate([r[3] for r in rows]),
            "forecast": np.concatenate([r[4] for r in rows]),
        }
    ).with_columns(pl.col("cutoff", DS).cast(pl.Date)).write_parquet(o.workdir / "d_heldout.parquet")
    return timing | {"skus": len(ids), "fits": fits}


PARTS: dict[str, Callable[[Opts, BuffercastConfig], dict[str, Any]]] = {
    "profile": part_profile,
    "a": part_a,
    "b": part_b,
    "c": part_c,
    "d": part_d,
}
LABELS = {
    "profile": "profile (flow's profile task, not in a)",
    "a": "a buffercast backtest_and_forecast",
    "b": "b raw statsforecast, same choices",
    "c": "c AutoETS ZZZ for every SKU",
    "d": "d pandas loop + statsmodels ETS",
}


def run_part(part: str, o: Opts) -> None:
    """Child process: run one part, write its JSON (or the error) into the work folder."""
    out = o.workdir / f"{part}.json"
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    load_before = os.getloadavg()[0]
    try:
        result = PARTS[part](o, load_config()) | _peak_mb(children_before) | {"stage_files_sha256": stage_fingerprint()}
        # 1-minute load average before and after: above the CPU count, other work competed for the cores.
        result["load_average_1min"] = [load_before, os.getloadavg()[0]]
    except Exception as exc:
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, indent=2))
        raise
    out.write_text(json.dumps(result, indent=2, default=str))


# ---------------------------------------------------------------- scoring and report (parent process)


def mase_per_sku(held: pl.DataFrame, panel: pl.DataFrame) -> pl.DataFrame:
    """unique_id, mase: the stage's MASE (season 7 scale on each window's training data, lag 1 where that is not
    finite), mean over the SKU's windows."""
    from utilsforecast.losses import mase

    ids = held[ID].unique().sort().to_list()
    frames = []
    for i in range(0, len(ids), MASE_CHUNK):
        chunk = held.filter(pl.col(ID).is_in(ids[i : i + MASE_CHUNK])).sort(ID, "cutoff", DS)
        cv_pd = chunk.to_pandas()
        train_pd = panel.join(chunk.select(ID).unique(), on=ID, how="semi").sort(ID, DS).to_pandas()
        seasonal, lag1 = (pl.from_pandas(mase(cv_pd, ["forecast"], m, train_pd)) for m in (SEASON, 1))
        finite = lambda c: pl.when(pl.col(c).is_finite()).then(pl.col(c))  # noqa: E731
        frames.append(
            seasonal.join(lag1, on=[ID, "cutoff"], suffix="_1").select(
                ID, "cutoff", mase=pl.coalesce(finite("forecast"), finite("forecast_1"))
            )
        )
    return pl.concat(frames).sort(ID, "cutoff").group_by(ID, maintain_order=True).agg(pl.col("mase").mean())


def _mean(frame: pl.DataFrame, col: str = "mase") -> float | None:
    values = frame.filter(pl.col(col).is_finite())[col]
    return float(values.mean()) if values.len() else None


def accuracy(workdir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean MASE of a, c and d on the same SKUs, cutoffs and lead-time steps; a's recomputed MASE checked against the stage's."""
    panel = pl.read_parquet(workdir / "panel.parquet")
    out: dict[str, Any] = {}
    if "error" in results.get("a", {"error": ""}):
        return out
    a_held = pl.read_parquet(workdir / "a_heldout.parquet")
    a = mase_per_sku(a_held, panel)
    stage = pl.read_parquet(workdir / "a_selection.parquet").filter("backtested").select(ID, stage_mase="mase")
    diff = a.join(stage, on=ID, how="inner").select((pl.col("mase") - pl.col("stage_mase")).abs().max()).item()
    out["a"] = {"mean_mase": _mean(a), "median_mase": a["mase"].median(), "skus_scored": a.height, "max_abs_diff_vs_stage_mase": diff}
    for part in ("c", "d"):
        if "error" in results.get(part, {"error": ""}):
            continue
        held = pl.read_parquet(workdir / f"{part}_heldout.parquet")
        keys = [ID, "cutoff", DS]
        mine = mase_per_sku(held, panel).filter(pl.col("mase").is_finite())
        both = mine.join(a.filter(pl.col("mase").is_finite()), on=ID, suffix="_a")
        out[part] = {
            "mean_mase": _mean(both),
            "a_mean_mase_same_skus": _mean(both, "mase_a"),
            "median_mase": both["mase"].median(),
            "a_median_mase_same_skus": both["mase_a"].median(),
            "skus_scored": both.height,
            # Same held-out points as a: every (SKU, cutoff, date) of the part is one of a's, and all of a's for those SKUs.
            "points_not_in_a": held.join(a_held, on=keys, how="anti").height,
            "a_points_missing": a_held.join(held.select(ID).unique(), on=ID, how="semi").join(held, on=keys, how="anti").height,
        }
    return out


def machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    mem = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next((int(line.split()[1]) for line in mem.splitlines() if line.startswith("MemTotal")), None)
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": models[0] if models else platform.processor() or None,
        "ram_gb": round(total_kb / 1024**2, 1) if total_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{pkg: importlib.metadata.version(pkg) for pkg in ("polars", "statsforecast", "utilsforecast", "statsmodels", "pandas")},
    }


def summarise(o: Opts, parts: dict[str, dict[str, Any]], acc: dict[str, Any], wall: float) -> dict[str, Any]:
    n_full = parts.get("profile", {}).get("skus", o.skus)
    for name, r in parts.items():
        if "seconds" in r:
            r["skus_per_second"] = r["skus"] / r["seconds"] if r["seconds"] else None
            r["seconds_full_panel"] = r["seconds"] * n_full / r["skus"]
            r["skus_extrapolated_to"] = n_full if r["skus"] != n_full else None
        if name in acc:
            r["accuracy"] = acc[name]
    sec = {k: r.get("seconds_full_panel") for k, r in parts.items()}
    targets: dict[str, Any] = {}
    fingerprints = {r["stage_files_sha256"] for r in parts.values() if "stage_files_sha256" in r}
    if sec.get("a") and sec.get("b"):
        targets["a_over_b"] = {"value": sec["a"] / sec["b"], "target": "<= 1.2", "met": sec["a"] / sec["b"] <= 1.2}
        cpu = parts["a"]["cpu_seconds"] / parts["b"]["cpu_seconds"]
        targets["a_over_b_cpu"] = {"value": cpu, "target": "<= 1.2 (CPU seconds: less sensitive to other load)", "met": cpu <= 1.2}
    if sec.get("a") and sec.get("d") and "d" in acc:
        speedup, d_acc = sec["d"] / sec["a"], acc["d"]
        better = d_acc["a_mean_mase_same_skus"] <= d_acc["mean_mase"]
        targets["d_over_a"] = {
            "value": speedup,
            "a_mase_le_d_mase": better,
            "target": ">= 10 at equal or better MASE",
            "met": speedup >= 10 and better,
        }
    if "c" in acc:
        rel = acc["c"]["a_mean_mase_same_skus"] / acc["c"]["mean_mase"] - 1
        targets["a_mase_vs_c"] = {"value": rel, "target": "a's mean MASE at most 2% above c's (same SKUs)", "met": rel <= 0.02}
    return {
        "bench": "forecast_speed",
        "run_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "panel": {
            "skus": n_full,
            "periods": o.periods,
            "freq": "D",
            "seed": o.seed,
            "generator": "flows.sample_data.generate_catalogue",
            "subset_zzz": o.subset_zzz,
            "subset_loop": o.subset_loop,
        },
        "config": "configs/default.yaml (load_config())",
        "machine": machine(),
        "wall_seconds": wall,
        "stage_files": {"files": list(STAGE_FILES), "changed_during_run": len(fingerprints) > 1},
        "parts": parts,
        "targets": targets,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict[str, Any]) -> None:
    m, p = result["machine"], result["panel"]
    print(
        f"\npanel {p['skus']:,} SKUs x {p['periods']} daily periods (seed {p['seed']}); {m['cpu_count']} CPUs ({m['cpu_model']}), ", end=""
    )
    print(f"{m['ram_gb']} GB; python {m['python']}, polars {m['polars']}, statsforecast {m['statsforecast']}")
    head = f"{'part':<40} {'SKUs':>6} {'seconds':>9} {'CPU s':>8} {'SKU/s':>8} {'s full panel':>12} {'MASE':>7} {'a MASE':>7}"
    head += f" {'main MB':>8} {'worker MB':>9} {'load':>9}"
    print(head + "\n" + "-" * len(head))
    for name, r in result["parts"].items():
        if "error" in r:
            print(f"{LABELS[name]:<40} FAILED: {r['error']}")
            continue
        acc = r.get("accuracy", {})
        mase_own = acc.get("mean_mase")
        mase_a = acc.get("a_mean_mase_same_skus", mase_own if name == "a" else None)
        load = "{:.1f}-{:.1f}".format(*r["load_average_1min"])
        worker = _fmt(r["peak_mb_worker"], ".0f") if r["peak_mb_worker"] else f"<={r['peak_mb_children_before_part']:.0f}"
        print(
            f"{LABELS[name]:<40} {r['skus']:>6} {r['seconds']:>9.1f} {r['cpu_seconds']:>8.1f} {_fmt(r.get('skus_per_second'), '.1f'):>8} "
            f"{_fmt(r.get('seconds_full_panel'), '.0f'):>12} {_fmt(mase_own, '.3f'):>7} {_fmt(mase_a, '.3f'):>7} "
            f"{r['peak_mb_main']:>8.0f} {worker:>9} {load:>9}"
        )
    if result["stage_files"]["changed_during_run"]:
        print("WARNING: the stage's files changed between parts (stage_files_sha256 per part): parts measured different code")
    for name, t in result["targets"].items():
        print(f"target {name}: {t['value']:.3f} ({t['target']}): {'met' if t['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=10_000, help="SKUs in the generated panel (default 10000)")
    parser.add_argument("--periods", type=int, default=730, help="daily periods (default 730)")
    parser.add_argument("--seed", type=int, default=7, help="catalogue and subset seed (default 7)")
    parser.add_argument("--subset-zzz", type=int, default=500, help="SKUs of part c, extrapolated (default 500)")
    parser.add_argument("--subset-loop", type=int, default=300, help="SKUs of part d, extrapolated (default 300)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT}; a timestamped copy beside it)")
    parser.add_argument("--parts", default="a,b,c,d", help="comma-separated parts to run after profiling (default a,b,c,d)")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # internal: run one part in this process
    parser.add_argument("--workdir", type=Path, help="keep the intermediate files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.part:
        run_part(args.part, Opts(args.skus, args.periods, args.seed, args.subset_zzz, args.subset_loop, args.workdir))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="forecast_speed_"))
    workdir.mkdir(parents=True, exist_ok=True)
    o = Opts(args.skus, args.periods, args.seed, min(args.subset_zzz, args.skus), min(args.subset_loop, args.skus), workdir)
    start = time.perf_counter()
    parts: dict[str, dict[str, Any]] = {}
    for part in ["profile", *[p for p in args.parts.split(",") if p]]:
        print(f"--- part {part}", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--part", part, "--workdir", str(workdir), "--skus", str(o.skus), "--periods", str(o.periods)]
        cmd += ["--seed", str(o.seed), "--subset-zzz", str(o.subset_zzz), "--subset-loop", str(o.subset_loop)]
        out = workdir / f"{part}.json"
        for attempt in range(1, START_ATTEMPTS + 1):
            code = subprocess.run(cmd, check=False).returncode
            if out.exists() or attempt == START_ATTEMPTS:
                break
            # No result at all: the part failed before it started (an import, e.g. mid-way through someone's edit).
            print(f"    {part} did not start (exit code {code}): retry {attempt} in {START_RETRY_SECONDS} s", flush=True)
            time.sleep(START_RETRY_SECONDS)
        parts[part] = json.loads(out.read_text()) if out.exists() else {"error": f"exit code {code}, no result written"}
        parts[part] |= {"process_seconds": time.perf_counter() - t0, "start_attempts": attempt}
        print(f"    {part}: {parts[part].get('seconds', parts[part].get('error'))} s", flush=True)
        if part == "profile" and "error" in parts[part]:
            break
    acc = accuracy(workdir, parts) if "error" not in parts["profile"] else {}
    result = summarise(o, parts, acc, time.perf_counter() - start)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    args.out.write_text(text)
    stamped = args.out.with_name(f"forecast_speed_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json")
    stamped.write_text(text)
    print(f"wrote {args.out} and {stamped}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
