"""Figures drawn from tidy curve records (the `curves` of a results.json), never from in-memory model state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

Panel = tuple[str, Sequence[dict[str, Any]]]  # (title, curves)


def draw_curves(
    ax: Any, curves: Sequence[dict[str, Any]], title: str = "", trained: tuple[int, int] | None = None
) -> None:
    """Per-position curves on one axis: trained learners solid with their interval band, closed-form references
    dashed. `trained` = (start, stop): the positions in the training loss; the others are shaded."""
    if trained is not None and curves:
        last = curves[0]["positions"][-1]
        for lo, hi in ((-0.5, trained[0] - 0.5), (trained[1] - 0.5, last + 0.5)):
            if hi > lo:
                ax.axvspan(lo, hi, color="0.85", alpha=0.6, lw=0)
        ax.text(0.01, 0.01, "shaded: positions outside the training loss", transform=ax.transAxes, fontsize=7)
    for record in curves:
        positions = record["positions"]
        reference = record.get("kind") == "reference"
        label = record["learner"] + (" (closed form)" if reference else "")
        (line,) = ax.plot(
            positions, record["mean"], ls="--" if reference else "-", lw=1.1 if reference else 1.8, label=label
        )
        if not reference:
            ax.fill_between(positions, record["lo"], record["hi"], color=line.get_color(), alpha=0.2)
    metric = curves[0]["metric"] if curves else ""
    ax.set_xlabel("context size (examples before the query)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_curves(
    curves: Sequence[dict[str, Any]], path: Path, title: str = "", trained: tuple[int, int] | None = None
) -> Path:
    """One panel of per-position curves (see `draw_curves`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    draw_curves(ax, curves, title, trained)
    return _save(fig, path)


def plot_panels(panels: Sequence[Panel], path: Path, title: str = "", ylim: tuple[float, float] | None = None) -> Path:
    """Side-by-side panels of per-position curves, one (title, curves) pair each, sharing the y range."""
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), dpi=110, squeeze=False, sharey=True)
    for ax, (panel_title, curves) in zip(axes.flat, panels, strict=False):
        draw_curves(ax, curves, panel_title)
        if ylim is not None:
            ax.set_ylim(*ylim)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_table(
    values_RC: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: Path, title: str = "", fmt: str = "{:.3f}"
) -> Path:
    """A heat map of a table with its numbers printed in the cells (NaN cells left blank)."""
    values_RC = np.asarray(values_RC, float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * len(cols), 0.9 + 0.45 * len(rows)), dpi=120)
    image = ax.imshow(values_RC, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    mid = np.nanmean(values_RC)
    for (r, c), value in np.ndenumerate(values_RC):
        if np.isfinite(value):
            ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=8, color="k" if value > mid else "w")
    fig.colorbar(image, ax=ax, fraction=0.05)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
