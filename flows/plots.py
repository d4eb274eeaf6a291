"""Figures for MLflow and reports (matplotlib, headless)."""

from __future__ import annotations

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
    for policy, colour in POLICY_COLOURS.items():
        sub = points.filter(pl.col("policy") == policy)
        if sub.height:
            ax.scatter(sub["adi"], sub["cv2"], s=14, alpha=0.7, c=colour, label=f"{policy} ({sub.height})", edgecolors="none")
    ax.axvline(adi_cutoff, color="grey", linestyle="--", linewidth=1)
    ax.axhline(cv2_cutoff, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"ADI (average demand interval, periods; cut-off {adi_cutoff})")
    ax.set_ylabel(f"CV² of non-zero demand sizes (cut-off {cv2_cutoff})")
    x_max = max(float(points["adi"].max() or adi_cutoff) * 1.3, adi_cutoff * 2)
    y_max = max(float(points["cv2"].max() or cv2_cutoff) * 1.1, cv2_cutoff * 2)
    ax.set_xlim(0.9, x_max)
    ax.set_ylim(0, y_max)
    for (x, y), label in {
        (0.95, cv2_cutoff * 0.5): "smooth",
        (0.95, cv2_cutoff + (y_max - cv2_cutoff) * 0.9): "erratic",
        (adi_cutoff * 1.05, cv2_cutoff * 0.5): "intermittent",
        (adi_cutoff * 1.05, cv2_cutoff + (y_max - cv2_cutoff) * 0.9): "lumpy",
    }.items():
        ax.text(x, y, label, fontsize=11, color="dimgrey", fontweight="bold")
    ax.set_title(f"Demand patterns (SBC) of {points.height} SKUs, coloured by buffer policy")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    return fig
