"""Input checks shared by the feature functions: a bad frame fails with a message naming what is wrong."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl


def require_columns(df: pl.DataFrame, columns: Iterable[str], *, where: str) -> None:
    """Raise a ValueError naming every missing column, the function and the columns that are there."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; the frame has {df.columns}. "
            "Rename the columns or pass their names as keyword arguments."
        )


def require_no_nulls(df: pl.DataFrame, column: str, *, id_col: str, where: str) -> None:
    """Raise a ValueError naming the column, how many rows are null and a few of the series they belong to."""
    nulls = df.filter(pl.col(column).is_null())
    if nulls.height:
        ids = nulls.get_column(id_col).unique(maintain_order=True).head(5).to_list() if id_col in df.columns else []
        raise ValueError(
            f"{where}: column {column!r} has {nulls.height} null value(s) (series {ids}...); "
            "fill or drop them before calling (e.g. validate the input with pipeline/contracts.py)."
        )


def require_non_negative(panel: pl.DataFrame, target_col: str, *, id_col: str, where: str) -> None:
    """Raise a ValueError naming the column and a few series with negative values (returns are not demand)."""
    negative = panel.filter(pl.col(target_col) < 0)
    if negative.height:
        ids = negative.get_column(id_col).unique(maintain_order=True).head(5).to_list()
        raise ValueError(
            f"{where}: column {target_col!r} has {negative.height} negative value(s) (series {ids}...); "
            "negative quantities are returns, not demand: quarantine or net them first (docs/methods.md)."
        )
