"""Figures drawn from tidy curve records (the `curves` of a results.json), never from in-memory model state."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from icl_meta.errors import require

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


def plot_panels(
    panels: Sequence[Panel],
    path: Path,
    title: str = "",
    ylim: tuple[float, float] | None = None,
    yscale: str = "linear",
) -> Path:
    """Side-by-side panels of per-position curves, one (title, curves) pair each, sharing the y range (and `yscale`,
    a matplotlib scale name such as "log")."""
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), dpi=110, squeeze=False, sharey=True)
    for ax, (panel_title, curves) in zip(axes.flat, panels, strict=False):
        draw_curves(ax, curves, panel_title)
        ax.set_yscale(yscale)
        if ylim is not None:
            ax.set_ylim(*ylim)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_table(
    table: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: Path, title: str = "", fmt: str = "{:.3f}"
) -> Path:
    """A heat map of a table with its numbers printed in the cells (NaN cells left blank)."""
    table = np.asarray(table, float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * len(cols), 0.9 + 0.45 * len(rows)), dpi=120)
    image = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    mid = np.nanmean(table)
    for (r, c), value in np.ndenumerate(table):
        if np.isfinite(value):
            ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=8, color="k" if value > mid else "w")
    fig.colorbar(image, ax=ax, fraction=0.05)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _row_label(row: dict[str, Any]) -> str:
    """A learner's name, with its training family when the row has one (`train`)."""
    return row["learner"] + (f" ({row['train']})" if row.get("train") else "")


def plot_agreement(
    rows: Sequence[dict[str, Any]],
    path: Path,
    title: str = "",
    optimal: dict[str, str | None] | None = None,
) -> Path:
    """Heat maps of an agreement summary (`icl_meta.agreement.summary` rows): one panel per test family, learners as
    rows, rules as columns, each cell's mean written in it. Classification: argmax agreement on 0..1, bright = closer;
    regression: the normalised squared difference on a reversed map, bright = closer (lower). `optimal` maps a test
    family to its optimal rule, whose column is boxed in red with a bold tick label."""
    tests = list(dict.fromkeys(r["test"] for r in rows))
    require(len(tests) > 0, "plot_agreement: no rows to draw")
    panels = []
    for test in tests:
        mine = [r for r in rows if r["test"] == test]
        learners = list(dict.fromkeys(_row_label(r) for r in mine))
        rules = list(dict.fromkeys(r["rule"] for r in mine))
        table = np.full((len(learners), len(rules)), np.nan)  # [learners, rules]
        for r in mine:
            table[learners.index(_row_label(r)), rules.index(r["rule"])] = r["mean"]
        panels.append((test, mine[0]["metric"], learners, rules, table))
    # One panel per row: the panels' rule columns differ (classification / regression), their widths too.
    width = 3.6 + 0.85 * max(len(p[3]) for p in panels)
    heights = [1.7 + 0.38 * len(p[2]) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights)), dpi=120, squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, (test, metric, learners, rules, table) in zip(axes[:, 0], panels, strict=True):
        regression = metric != "argmax_agreement"
        cmap = plt.get_cmap("viridis_r" if regression else "viridis")
        top = float(np.nanmax(table)) if regression and np.isfinite(table).any() else 1.0
        norm = matplotlib.colors.Normalize(0.0, max(top, 1e-12))
        image = ax.imshow(table, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(rules)), rules, fontsize=8, rotation=45, ha="right")
        ax.set_yticks(range(len(learners)), learners, fontsize=8)
        for (r, c), value in np.ndenumerate(table):
            if np.isfinite(value):
                red, green, blue, _ = cmap(norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, f"{value:.3g}" if regression else f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if dark else "k")  # fmt: skip
        best = (optimal or {}).get(test)
        if best in rules:
            c = rules.index(best)
            ax.add_patch(matplotlib.patches.Rectangle((c - 0.5, -0.5), 1, len(learners), fill=False, ec="red", lw=2.0))
            ax.get_xticklabels()[c].set_fontweight("bold")
        label = "normalised squared difference (lower = closer)" if regression else "argmax agreement (higher = closer)"
        fig.colorbar(image, ax=ax, fraction=0.05).set_label(label, fontsize=7)
        ax.set_title(test + (f" (box: optimal rule {best})" if best in rules else ""), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_agreement_curves(
    records: Sequence[dict[str, Any]], path: Path, title: str = "", yscale: str = "linear"
) -> Path:
    """An agreement metric against context position (`icl_meta.agreement.curves_on` records): one panel per (learner,
    test), one line per rule with its interval band. `yscale="log"` suits the regression squared difference; its
    axis then starts at 1e-4 of the largest value, so exact zeros (both predict 0 on the empty context) stay off it."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((_row_label(record), record["test"]), []).append({**record, "learner": record["rule"]})
    panels = [(f"{learner} vs rules on {test}", curves) for (learner, test), curves in groups.items()]
    top = max((max(r["hi"]) for r in records), default=1.0)
    ylim = (1e-4 * top, 2.0 * top) if yscale == "log" and top > 0 else None
    return plot_panels(panels, path, title, ylim=ylim, yscale=yscale)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sweep(
    panels: Sequence[Panel],
    path: Path,
    x: str,
    xlabel: str,
    ylabel: str = "mean accuracy",
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Side-by-side panels of a summary against a swept label (e.g. `sigma`): each (title, rows) panel draws one line
    per learner through its rows' (row[x], row["mean"]) points; trained learners solid with markers, closed-form
    references dashed. The legend (of the last panel) stands right of the panels."""
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), dpi=110, squeeze=False, sharey=True)
    for ax, (panel_title, records) in zip(axes.flat, panels, strict=False):
        for learner in dict.fromkeys(r["learner"] for r in records):  # first-seen order, so colours are stable
            mine = sorted((r for r in records if r["learner"] == learner), key=lambda r: r[x])
            reference = mine[0].get("kind") == "reference"
            ax.plot(
                [r[x] for r in mine],
                [r["mean"] for r in mine],
                ls="--" if reference else "-",
                marker=None if reference else "o",
                lw=1.1 if reference else 1.8,
                label=learner + (" (closed form)" if reference else ""),
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if panels:  # one legend, right of the last panel: the panels share their learners, and no line is hidden
        axes.flat[len(panels) - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


@dataclasses.dataclass(frozen=True, eq=False)
class Regions:
    """One decision-region panel: a class id per point of a G x G grid (row i = the i-th y, column j = the j-th x,
    over `extent` = (x0, x1, y0, y1), the first and last grid coordinates). Ids >= num_classes are drawn in grey as
    one "invalid" colour (the ICL model's padded label slots)."""

    labels_GG: np.ndarray
    extent: tuple[float, float, float, float]
    num_classes: int
    points_ND: np.ndarray | None = None  # examples drawn on top (the context), coloured by `point_labels_N`
    point_labels_N: np.ndarray | None = None
    boundary_GG: np.ndarray | None = None  # another labelling of the grid whose class boundaries are drawn as lines
    title: str = ""


def draw_regions(ax: Any, panel: Regions) -> None:
    """A labelled grid as a light image, the boundary of `panel.boundary_GG` as black lines, the points on top."""
    c = panel.num_classes
    colors = [plt.get_cmap("tab10")(k % 10) for k in range(c)]
    cmap = matplotlib.colors.ListedColormap([*colors, (0.6, 0.6, 0.6, 1.0)])
    norm = matplotlib.colors.BoundaryNorm(np.arange(c + 2) - 0.5, c + 1)
    labels_GG = np.minimum(np.asarray(panel.labels_GG), c)
    g_y, g_x = labels_GG.shape
    x0, x1, y0, y1 = panel.extent
    dx, dy = (x1 - x0) / max(g_x - 1, 1), (y1 - y0) / max(g_y - 1, 1)  # the image's cells are centred on the grid
    edges = (x0 - dx / 2, x1 + dx / 2, y0 - dy / 2, y1 + dy / 2)
    ax.imshow(labels_GG, origin="lower", extent=edges, cmap=cmap, norm=norm, alpha=0.4, interpolation="nearest")
    if panel.boundary_GG is not None:
        xs, ys = np.linspace(x0, x1, g_x), np.linspace(y0, y1, g_y)
        ax.contour(xs, ys, np.asarray(panel.boundary_GG), levels=np.arange(c - 1) + 0.5, colors="k", linewidths=1.0)
    if panel.points_ND is not None:
        points_ND = np.asarray(panel.points_ND)
        point_colors = cmap(norm(np.minimum(np.asarray(panel.point_labels_N), c)))
        ax.scatter(points_ND[:, 0], points_ND[:, 1], c=point_colors, s=22, edgecolors="k", linewidths=0.6, zorder=3)
    ax.set_xlim(edges[0], edges[1])
    ax.set_ylim(edges[2], edges[3])
    ax.set_aspect("equal")
    ax.set_title(panel.title, fontsize=9)


def plot_regions(panels: Sequence[Sequence[Regions]], path: Path, title: str = "") -> Path:
    """A grid of decision-region panels, one row per inner sequence (see `draw_regions`)."""
    rows, cols = len(panels), max(len(row) for row in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for r, row in enumerate(panels):
        for c in range(cols):
            if c < len(row):
                draw_regions(axes[r, c], row[c])
            else:
                axes[r, c].set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def error_bars(stats: Sequence[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's yerr [2, len(stats)] from seed intervals {mean, lo, hi} (`icl_meta.evaluate.seed_interval`): zero
    where one seed gives no interval (a NaN bound)."""
    return [[s["mean"] - s["lo"] if np.isfinite(s["lo"]) else 0.0 for s in stats],
            [s["hi"] - s["mean"] if np.isfinite(s["hi"]) else 0.0 for s in stats]]  # fmt: skip
