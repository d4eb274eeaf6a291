"""Empirical lead-time demand for intermittent and lumpy SKUs: a seeded circular block bootstrap (docs/methods.md).

Intermittent and lumpy demand is not normal (docs/methods.md, 4.5): the buffer is the alpha-quantile of lead-time demand,
bootstrapped over the SKU's own history with lead times drawn from its lead-time distribution, minus its mean.

Per SKU and sample: a lead time L ~ Normal(mean, std) clipped at 0, then the demand over a random contiguous window
of L periods of the SKU's own recent history. Contiguous windows (a block bootstrap) keep the clustering of
intermittent demand that resampling single periods would destroy (Willemain, Smart & Schwarz 2004; Politis &
Romano 1992 for the circular version). Pure numpy on arrays; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import special

from buffers.streams import stream_keys, uniform_bits

#: numpy's quantile method. "inverted_cdf" is the empirical alpha-quantile by definition: the smallest sampled value
#: x with share(samples <= x) >= alpha, so stocking x meets a cycle service level alpha on the bootstrap distribution;
#: it is always an attained sample (a whole number for integer demand and whole lead times). "linear" would
#: interpolate to unattainable values (14.6 units) and sit below the target when it rounds down.
QUANTILE_METHOD = "inverted_cdf"


def quantile_column(q: float) -> str:
    """Output column of a quantile: 0.95 -> "ltd_q95", 0.975 -> "ltd_q97_5"."""
    return f"ltd_q{q * 100:.10g}".replace(".", "_")


def bootstrap_lead_time_demand(
    panel: pl.DataFrame,
    lead_times: pl.DataFrame,
    quantiles: Sequence[float] = (0.95,),
    *,
    seed: int,
    n_samples: int,
    history_periods: int | None = None,
    chunk_size: int = 500,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
    lead_time_col: str = "lead_time_periods",
    lead_time_std_col: str = "lead_time_std_periods",
) -> pl.DataFrame:
    """Bootstrap quantiles of demand over a random lead time, per SKU.

    `panel`: unique_id, ds, y, one row per SKU and period with explicit zeros (sorted here by unique_id, ds; not
    mutated). A SKU's history starts at its first non-zero period (leading zeros are not demand, docs/methods.md; an
    all-zero SKU keeps its zeros and gets 0) and y is used as given (returns are handled upstream).
    `lead_times`: unique_id, lead_time_periods, lead_time_std_periods, in periods (a null std is a reliable lead
    time: 0). Every SKU of the panel needs a lead time; rows for other SKUs are ignored.

    Per sample: L = max(Normal(mean, std), 0), fractional: the demand is the sum over floor(L) whole periods plus
    the fraction L - floor(L) of the next one. The window starts at a uniform period of the SKU's last
    `history_periods` periods (None: all) and wraps circularly: every period is equally likely to be covered, so
    the most recent periods are not under-sampled as in a plain moving-block bootstrap, and E[sample] = E[L] x mean y.
    A history shorter than L is covered whole as many times as it fits, plus a wrapped partial window, i.e. the
    SKU's history repeated: never NaN for a SKU with at least one period.

    Returns one row per SKU of the panel, in unique_id order: unique_id, bootstrap_mean (mean of the sampled
    lead-time demand, the "mean" of SS = quantile - mean), one `quantile_column(q)` per quantile (QUANTILE_METHOD),
    bootstrap_samples (n_samples) and bootstrap_history_periods (periods sampled from). quantile - mean can be negative for
    lumpy SKUs (a q50 of 0): the caller floors the safety stock at 0.

    Deterministic: a SKU's draws come from a counter-based generator keyed by blake2b(seed, unique_id), so its
    numbers do not depend on the other SKUs in the batch, their order or `chunk_size`, and raising n_samples only
    appends samples. Memory: `chunk_size` SKUs x n_samples at a time, about 100 bytes each at peak (500 x 2000:
    ~100 MB), whatever the number of SKUs.
    """
    qs = [float(q) for q in quantiles]
    if not qs or any(not 0.0 < q < 1.0 for q in qs) or len({quantile_column(q) for q in qs}) != len(qs):
        raise ValueError(f"quantiles must be distinct and strictly between 0 and 1, got {list(quantiles)}")
    if n_samples < 1 or chunk_size < 1 or (history_periods is not None and history_periods < 1):
        raise ValueError(f"n_samples, chunk_size and history_periods must be >= 1, got {n_samples}, {chunk_size}, {history_periods}")
    missing = [c for c in (id_col, time_col, target_col) if c not in panel.columns]
    missing += [c for c in (id_col, lead_time_col, lead_time_std_col) if c not in lead_times.columns]
    if missing:
        raise ValueError(
            f"bootstrap_lead_time_demand: missing columns {missing} (panel has {panel.columns}, lead_times {lead_times.columns})"
        )

    panel, y, ids, start, end = _histories(panel, id_col, time_col, target_col)
    first, used = _sampled_rows(y, start, end, history_periods)
    lt = pl.DataFrame({id_col: ids}).join(
        lead_times.select(id_col, lead_time_col, lead_time_std_col), on=id_col, how="left", maintain_order="left"
    )
    if lt.height != ids.len():
        raise ValueError(f"lead_times has more than one row for some {id_col}")
    mean, std = _lead_times(lt, ids, lead_time_col, lead_time_std_col)
    keys = stream_keys(seed, [str(u) for u in ids])

    means = np.empty(ids.len())
    quants = np.empty((len(qs), ids.len()))
    for lo in range(0, ids.len(), chunk_size):
        sl = slice(lo, lo + chunk_size)
        samples = _sample_chunk(y, first[sl], used[sl], mean[sl], std[sl], keys[sl], n_samples)
        means[sl] = samples.mean(axis=1)
        quants[:, sl] = np.quantile(samples, qs, axis=1, method=QUANTILE_METHOD)
    return pl.DataFrame(
        {
            id_col: ids,
            "bootstrap_mean": means,
            **{quantile_column(q): quants[i] for i, q in enumerate(qs)},
            "bootstrap_samples": pl.Series([n_samples] * ids.len(), dtype=pl.Int64),
            "bootstrap_history_periods": used,
        }
    )


def bootstrap_window_coverage(
    panel: pl.DataFrame,
    windows: pl.DataFrame,
    *,
    seed: int,
    n_samples: int,
    history_periods: int | None = None,
    chunk_size: int = 500,
) -> pl.DataFrame:
    """The bootstrap of `bootstrap_lead_time_demand` judged on backtest windows: per SKU and window, the share of
    lead-time demand samples drawn from the SKU's history UP TO AND INCLUDING the window's cutoff (never after) that
    lie strictly below the demand that followed (`share_below`).

    The empirical alpha-quantile (QUANTILE_METHOD) of those samples covers the actual demand exactly when
    share_below < alpha: the coverage a bootstrap buffer sized at alpha achieved on that window (the isotonic
    calibration of `buffers.calibration` maps it per demand class).

    `panel`: unique_id, ds, y (as for `bootstrap_lead_time_demand`). `windows`: unique_id, cutoff (a ds of the
    SKU's panel), lead_time_periods, lead_time_std_periods, actual (demand over the lead time after the cutoff).
    Returns `windows` with `share_below` added, rows in their order. Deterministic: each window's draws are keyed by
    (seed, unique_id, cutoff).
    """
    need = ["unique_id", "cutoff", "lead_time_periods", "lead_time_std_periods", "actual"]
    missing = [c for c in need if c not in windows.columns]
    if missing:
        raise ValueError(f"bootstrap_window_coverage: windows lacks columns {missing} (has {windows.columns})")
    if n_samples < 1 or chunk_size < 1 or (history_periods is not None and history_periods < 1):
        raise ValueError(f"n_samples, chunk_size and history_periods must be >= 1, got {n_samples}, {chunk_size}, {history_periods}")
    panel, y, ids, start, _ = _histories(panel, "unique_id", "ds", "y")
    rows = panel.with_row_index("_row").select("unique_id", cutoff="ds", _end=pl.col("_row").cast(pl.Int64) + 1)
    sku_start = pl.DataFrame({"unique_id": ids, "_start": start})
    located = windows.select(need).join(rows, on=["unique_id", "cutoff"], how="left", maintain_order="left")
    located = located.join(sku_start, on="unique_id", how="left", maintain_order="left")
    lost = located.filter(pl.col("_end").is_null())
    if lost.height:
        raise ValueError(
            f"bootstrap_window_coverage: {lost.height} windows have no (unique_id, cutoff) row in the panel, "
            f"e.g. {lost.select('unique_id', 'cutoff').head(3).rows()}"
        )
    first, used = _sampled_rows(y, located["_start"].to_numpy(), located["_end"].to_numpy(), history_periods)
    mean, std = _lead_times(located, located["unique_id"], "lead_time_periods", "lead_time_std_periods")
    ids_and_cutoffs = located.select("unique_id", "cutoff").rows()
    keys = stream_keys(seed, [u for u, _ in ids_and_cutoffs], [str(c) for _, c in ids_and_cutoffs])
    actual = located["actual"].cast(pl.Float64).to_numpy()
    below = np.empty(located.height)
    for lo in range(0, located.height, chunk_size):
        sl = slice(lo, lo + chunk_size)
        samples = _sample_chunk(y, first[sl], used[sl], mean[sl], std[sl], keys[sl], n_samples)
        # Sums of the same periods in another order may differ in the last bit: a tie is a tie.
        edge = actual[sl, None] - 1e-9 * np.maximum(np.abs(actual[sl, None]), 1.0)
        below[sl] = (samples < edge).mean(axis=1)
    return windows.with_columns(share_below=pl.Series(below))


def _histories(
    panel: pl.DataFrame, id_col: str, time_col: str, target_col: str
) -> tuple[pl.DataFrame, np.ndarray, pl.Series, np.ndarray, np.ndarray]:
    """The panel sorted by SKU and period, its demand as float (no NaN), the SKU ids and each SKU's first and
    one-past-last row."""
    panel = panel.select(id_col, time_col, target_col)
    in_order = (pl.col(time_col).diff() > 0) | (pl.col(id_col) != pl.col(id_col).shift())
    if not (panel[id_col].is_sorted() and panel.select(in_order.all()).item()):  # sorting 36M rows costs seconds, checking 0.3 s
        panel = panel.sort(id_col, time_col)
    y = panel[target_col].cast(pl.Float64).to_numpy()
    if np.isnan(y).any():
        bad = panel.filter(pl.col(target_col).cast(pl.Float64).fill_null(np.nan).is_nan())[id_col].unique()
        raise ValueError(
            f"panel.{target_col} is null or NaN in {np.isnan(y).sum()} rows of {bad.len()} SKUs (e.g. {bad.head(3).to_list()}): "
            "fill missing periods with zeros first"
        )
    runs = panel[id_col].rle()  # sorted: one run per SKU
    ids, length = runs.struct.field("value"), runs.struct.field("len").to_numpy().astype(np.int64)
    end = np.cumsum(length)
    return panel, y, ids, end - length, end


def _sampled_rows(y: np.ndarray, start: np.ndarray, end: np.ndarray, history_periods: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows a history start..end - 1 is sampled from: from its first non-zero period (leading zeros are not
    demand; an all-zero history keeps its zeros), at most the last `history_periods`. Returns (first row, count)."""
    nonzero = np.append(np.flatnonzero(y), y.size)
    first_sale = nonzero[np.searchsorted(nonzero, start)]  # first non-zero row at or after each start
    first = np.where(first_sale < end, first_sale, start)
    if history_periods is not None:
        first = np.maximum(first, end - history_periods)
    return first, end - first


def _lead_times(lt: pl.DataFrame, ids: pl.Series, mean_col: str, std_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Lead-time mean and std per row (a null std: 0), checked >= 0."""
    mean = lt[mean_col].cast(pl.Float64).to_numpy()
    std = lt[std_col].cast(pl.Float64).fill_null(0.0).to_numpy()
    bad = ~(mean >= 0) | ~(std >= 0)  # catches NaN
    if bad.any():
        raise ValueError(
            f"{bad.sum()} SKUs lack a lead time >= 0 (or have a negative/NaN std) in lead_times.{mean_col}/{std_col}, "
            f"e.g. {ids.filter(pl.Series(bad)).head(3).to_list()}: give every SKU of the panel a lead time"
        )
    return mean, std


def _sample_chunk(
    y: np.ndarray, first: np.ndarray, n: np.ndarray, mean: np.ndarray, std: np.ndarray, keys: np.ndarray, n_samples: int
) -> np.ndarray:
    """(SKUs, n_samples) lead-time demand samples for one chunk of SKUs (see `bootstrap_lead_time_demand`)."""
    # The chunk's histories back to back with cumulative sums: SKU i's periods are cs[base_i : base_i + n_i + 1].
    base = np.concatenate([[0], np.cumsum(n)[:-1]])
    rows = np.repeat(first - base, n) + np.arange(n.sum())
    cs = np.concatenate([[0.0], np.cumsum(y[rows])])
    base, n, total = base[:, None], n[:, None], (cs[base + n] - cs[base])[:, None]

    # One 64-bit draw per sample: the high 32 bits pick the window start (Lemire's multiply-shift, unbiased to
    # n / 2^32), the low 32 bits the lead time through the normal inverse CDF.
    bits = uniform_bits(keys, n_samples)
    start = (((bits >> np.uint64(32)) * n.astype(np.uint64)) >> np.uint64(32)).astype(np.int64)
    if not std.any():  # fixed lead times (the calibration's windows): the same numbers without the normal draws
        return _window_sums(cs, base, n, total, start, mean[:, None])
    z = special.ndtri(((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * 2.0**-32)
    return _window_sums(cs, base, n, total, start, np.maximum(mean[:, None] + std[:, None] * z, 0.0))


def _window_sums(cs: np.ndarray, base: np.ndarray, n: np.ndarray, total: np.ndarray, start: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """Circular window sums: demand over `lead` periods (fractional) from period `start` (0 <= start < n) of a history
    of n periods repeated end to end, whose cumulative sums are cs[base : base + n + 1] and sum is `total`.

    With C(t) = (t // n) * total + cs[t % n] the cumulative demand of the repeated history, the window sum of
    w = floor(lead) whole periods is C(start + w) - C(start), plus lead - w times the next period's demand.
    """
    whole = np.floor(lead).astype(np.int64)
    laps, end = np.divmod(start + whole, n)
    at_end = cs[base + end]
    return laps * total + at_end - cs[base + start] + (lead - whole) * (cs[base + end + 1] - at_end)
