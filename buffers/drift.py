"""Drift between runs: what changed in `recommendations` since the previous as-of date, and why (issue 6).

`compare_runs(previous, current)` matches the two runs' rows on (sku_id, location_id), a null location matching a
null location, and returns the `changes` table: one row per SKU, location and change kind:

- `demand_class`, `volatility_class`, `policy`, `life_cycle`: the class moved (before/after are the classes);
- `buffer`: `safety_stock_units` moved by strictly more than `buffer_change_pct` percent, or from 0 to > 0, or
  from > 0 to 0 (before/after are the units);
- `new_sku`: planned now, not in the previous run (after is the policy);
- `dropped_sku`: planned in the previous run, not now (before is the policy).

An empty `previous` means there is no previous run (first run): nothing to compare, so no rows at all; it is not
read as "every SKU is new". A change whose value is null on either side (e.g. a safety stock that could not be
computed) is not reported as a buffer change.
"""

from __future__ import annotations

import polars as pl

KEYS = ("sku_id", "location_id")

_TYPES = {
    "as_of": pl.Date,
    "sku_id": pl.String,
    "location_id": pl.String,
    "policy": pl.String,
    "safety_stock_units": pl.Float64,
    "demand_class": pl.String,
    "adi": pl.Float64,
    "cv2": pl.Float64,
    "volatility_class": pl.String,
    "error_cv": pl.Float64,
    "life_cycle": pl.String,
    "reasons": pl.String,
}
#: Columns of `recommendations` that `compare_runs` reads; other columns are ignored.
REQUIRED = tuple(_TYPES)

#: Every value of `changes.change`, in the order summaries list them.
CHANGE_KINDS = ("demand_class", "volatility_class", "policy", "life_cycle", "buffer", "new_sku", "dropped_sku")

#: The published `changes` table, in order.
CHANGES_SCHEMA = {
    "as_of": pl.Date,
    "previous_as_of": pl.Date,
    "sku_id": pl.String,
    "location_id": pl.String,
    "change": pl.String,
    "before": pl.String,
    "after": pl.String,
    "buffer_change_pct": pl.Float64,
    "reason": pl.String,
}

# A relative change equal to the threshold up to float noise (e.g. 25.000000000000004) is not "more than" it.
_PCT_DIGITS = 9


def _fixed(expr: pl.Expr, digits: int) -> pl.Expr:
    """Number as text with exactly `digits` decimals (1.1 -> "1.10"); null -> "n/a"; inf/NaN as polars prints them."""
    scale = 10**digits
    scaled = (expr.abs() * scale).round(0).cast(pl.Int64, strict=False)
    sign = pl.when((expr < 0) & (scaled > 0)).then(pl.lit("-")).otherwise(pl.lit(""))
    text = sign + (scaled // scale).cast(pl.String)
    if digits > 0:
        text = text + pl.lit(".") + (scaled % scale).cast(pl.String).str.zfill(digits)
    return pl.when(expr.is_null()).then(pl.lit("n/a")).when(expr.is_finite()).then(text).otherwise(expr.cast(pl.String))


def _units(expr: pl.Expr) -> pl.Expr:
    """Units as text: whole numbers without decimals (40.0 -> "40"), others to two decimals (12.5 -> "12.5"); null -> "n/a"."""
    return (
        pl.when(expr.is_finite() & (expr == expr.round(0))).then(_fixed(expr, 0)).otherwise(expr.round(2).cast(pl.String).fill_null("n/a"))
    )


def _check(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Required columns, typed; one as-of date; one row per (sku_id, location_id). Errors say what failed."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"compare_runs: the {name} recommendations table lacks column(s) {missing}; "
            f"pass the published recommendations table (it needs {list(REQUIRED)})"
        )
    out = df.select(pl.col(c).cast(t) for c, t in _TYPES.items())
    as_ofs = out.get_column("as_of").unique().drop_nulls()
    if as_ofs.len() > 1 or (out.height and as_ofs.len() == 0):
        raise ValueError(
            f"compare_runs: the {name} recommendations table must hold one as-of date, it holds {as_ofs.sort().to_list()} "
            f"(and {out.get_column('as_of').null_count()} null); pass one run's partition"
        )
    dup = out.filter(pl.struct(*KEYS).is_duplicated())
    if dup.height:
        examples = dup.select(KEYS).unique(maintain_order=True).head(5).rows()
        raise ValueError(
            f"compare_runs: the {name} recommendations table has {dup.height} rows sharing a (sku_id, location_id), "
            f"e.g. {examples}; it must hold one row per SKU and location"
        )
    return out


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=CHANGES_SCHEMA)


def compare_runs(previous: pl.DataFrame, current: pl.DataFrame, *, buffer_change_pct: float = 25.0) -> pl.DataFrame:
    """The `changes` table between two runs' `recommendations` (see the module docstring), sorted by sku_id,
    location_id, change. Inputs are not modified; only the REQUIRED columns are read."""
    if not buffer_change_pct > 0:  # also rejects NaN
        raise ValueError(f"compare_runs: buffer_change_pct must be > 0 (a percentage, e.g. 25.0), got {buffer_change_pct!r}")
    cur = _check(current, "current")
    if previous.is_empty():
        return _empty()
    prev = _check(previous, "previous")
    as_of = cur.get_column("as_of").max()
    previous_as_of = prev.get_column("as_of").max()
    if as_of is not None and previous_as_of > as_of:
        raise ValueError(f"compare_runs: the previous run's as-of date {previous_as_of} is after the current one {as_of}; swap them")

    values = [c for c in REQUIRED if c not in (*KEYS, "as_of")]
    both = prev.select(*KEYS, *(pl.col(c).alias(f"{c}_before") for c in values), _in_before=pl.lit(True)).join(
        cur.select(*KEYS, *(pl.col(c).alias(f"{c}_after") for c in values), _in_after=pl.lit(True)),
        on=list(KEYS),
        how="full",
        coalesce=True,
        nulls_equal=True,
    )
    in_before = pl.col("_in_before").fill_null(False)
    in_after = pl.col("_in_after").fill_null(False)
    matched = in_before & in_after

    def b(c: str) -> pl.Expr:
        return pl.col(f"{c}_before")

    def a(c: str) -> pl.Expr:
        return pl.col(f"{c}_after")

    def moved(c: str) -> pl.Expr:
        return matched & b(c).ne_missing(a(c))

    def arrow(c: str) -> pl.Expr:
        return pl.format("{} -> {}", b(c).fill_null("n/a"), a(c).fill_null("n/a"))

    def rows(kind: str, when: pl.Expr, before: pl.Expr, after: pl.Expr, reason: pl.Expr, pct: pl.Expr | None = None) -> pl.DataFrame:
        return both.filter(when).select(
            *KEYS,
            change=pl.lit(kind),
            before=before.cast(pl.String),
            after=after.cast(pl.String),
            buffer_change_pct=pl.lit(None, pl.Float64) if pct is None else pct,
            reason=reason,
        )

    # The current reasons without their "POLICY: " prefix (recommend.py writes "{policy}: reason; reason").
    why = a("reasons").str.strip_prefix(pl.format("{}: ", a("policy")))
    ss_before, ss_after = b("safety_stock_units"), a("safety_stock_units")
    pct = pl.when(ss_before != 0).then((ss_after - ss_before) / ss_before * 100.0)
    buffer_moved = (
        matched
        & ss_before.is_not_null()
        & ss_after.is_not_null()
        & (
            ((ss_before == 0) & (ss_after > 0))
            | ((ss_before > 0) & (ss_after == 0))
            | ((ss_before != 0) & (pct.abs().round(_PCT_DIGITS) > buffer_change_pct))
        )
    )
    threshold = f"{buffer_change_pct:g}%"
    pct_text = pl.when(pct > 0).then(pl.lit("+")).otherwise(pl.lit("")) + _fixed(pct, 1) + pl.lit("%")
    buffer_note = (
        pl.when(ss_before == 0)
        .then(pl.lit("from 0"))
        .when(ss_after == 0)
        .then(pct_text + pl.lit(", buffer removed"))
        .otherwise(pct_text + pl.lit(f", more than {threshold}"))
    )
    last_seen = pl.format("{}, {} units", b("policy").fill_null("n/a"), _units(ss_before))

    frames = [
        rows(
            "demand_class",
            moved("demand_class"),
            b("demand_class"),
            a("demand_class"),
            pl.format(
                "demand class {} (ADI {} -> {}, CV2 {} -> {})",
                arrow("demand_class"),
                _fixed(b("adi"), 2),
                _fixed(a("adi"), 2),
                _fixed(b("cv2"), 2),
                _fixed(a("cv2"), 2),
            ),
        ),
        rows(
            "volatility_class",
            moved("volatility_class"),
            b("volatility_class"),
            a("volatility_class"),
            pl.format("volatility {} (error CV {} -> {})", arrow("volatility_class"), _fixed(b("error_cv"), 2), _fixed(a("error_cv"), 2)),
        ),
        rows(
            "policy",
            moved("policy"),
            b("policy"),
            a("policy"),
            pl.when(why.fill_null("") == "")
            .then(pl.format("policy {}", arrow("policy")))
            .otherwise(pl.format("policy {}: {}", arrow("policy"), why)),
        ),
        rows("life_cycle", moved("life_cycle"), b("life_cycle"), a("life_cycle"), pl.format("life cycle {}", arrow("life_cycle"))),
        rows(
            "buffer",
            buffer_moved,
            _units(ss_before),
            _units(ss_after),
            pl.format("safety stock {} -> {} units ({})", _units(ss_before), _units(ss_after), buffer_note),
            pct,
        ),
        rows(
            "new_sku",
            ~in_before,
            pl.lit(None, pl.String),
            a("policy"),
            pl.format("new SKU: {}, {} units", a("policy").fill_null("n/a"), _units(ss_after)),
        ),
        rows(
            "dropped_sku",
            ~in_after,
            b("policy"),
            pl.lit(None, pl.String),
            pl.format("no longer planned (last seen with {})", last_seen),
        ),
    ]
    return (
        pl.concat(frames, how="vertical")
        .with_columns(as_of=pl.lit(as_of, pl.Date), previous_as_of=pl.lit(previous_as_of, pl.Date))
        .select(list(CHANGES_SCHEMA))
        .cast(CHANGES_SCHEMA)
        .sort("sku_id", "location_id", "change")
    )


def change_counts(changes: pl.DataFrame) -> dict[str, int]:
    """Rows per change kind, every kind present (0 when none), in CHANGE_KINDS order: for MLflow metrics and summaries."""
    if "change" not in changes.columns:
        raise ValueError(f"change_counts: the changes table lacks column 'change' (it has {changes.columns}); pass compare_runs' output")
    counts = dict.fromkeys(CHANGE_KINDS, 0)
    if changes.is_empty():
        return counts
    found = dict(changes.group_by("change").len().iter_rows())
    unknown = sorted(str(k) for k in found if k not in counts)
    if unknown:
        raise ValueError(f"change_counts: unknown change kind(s) {unknown}; expected one of {list(CHANGE_KINDS)}")
    return counts | {k: int(v) for k, v in found.items()}
