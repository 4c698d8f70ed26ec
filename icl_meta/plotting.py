"""Figures drawn from tidy curve records (the `curves` of a results.json), never from in-memory model state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


def plot_curves(
    curves: Sequence[dict[str, Any]], path: Path, title: str = "", trained: tuple[int, int] | None = None
) -> Path:
    """Per-position curves: trained learners solid with their interval band, closed-form references dashed.

    `trained` = (start, stop): the positions in the training loss; the others are shaded.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if trained is not None and curves:
        last = curves[0]["positions"][-1]
        for lo, hi in ((-0.5, trained[0] - 0.5), (trained[1] - 0.5, last + 0.5)):
            if hi > lo:
                ax.axvspan(lo, hi, color="0.85", alpha=0.6, lw=0)
        ax.text(0.01, 0.01, "shaded: positions outside the training loss", transform=ax.transAxes, fontsize=7)
    for record in curves:
        positions = record["positions"]
        mean = record["mean"]
        reference = record.get("kind") == "reference"
        label = record["learner"] + (" (closed form)" if reference else "")
        (line,) = ax.plot(positions, mean, ls="--" if reference else "-", lw=1.2 if reference else 2.0, label=label)
        if not reference:
            ax.fill_between(positions, record["lo"], record["hi"], color=line.get_color(), alpha=0.2)
    metric = curves[0]["metric"] if curves else ""
    ax.set_xlabel("context size (examples before the query)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
