"""Figures for MLflow and reports (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
from matplotlib.figure import Figure

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
