"""The report of one run or evaluation: results.json (the tidy schema), its PNG and a summary table on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icl_meta import evaluate
from icl_meta.plotting import plot_curves
from icl_meta.runs import results_document, write_json

SUMMARY_POSITIONS = (0, 1, 2, 5, 10, 20)


def write_report(
    path: Path,
    experiment: str,
    config: dict[str, Any],
    curves: list[dict[str, Any]],
    seed: int,
    loss: tuple[int, int],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write `curves` as a results document to `path` (with the top-level keys of `extra`, e.g. an agreement analysis)
    and a PNG beside it, and print each curve's metric at a few positions and its mean over the training loss's
    positions `loss` = (start, stop)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**results_document(experiment, config, curves, seed), **(extra or {})})
    title = f"{curves[0]['learner']} trained on {curves[0]['train']}, tested on {curves[0]['test']}"
    png = plot_curves(curves, path.with_suffix(".png"), title=title, trained=loss)
    n = len(curves[0]["mean"])
    start, stop = min(loss[0], n - 1), min(loss[1], n)
    shown = sorted({p for p in SUMMARY_POSITIONS if p < n} | {n - 1})
    header = f"{'learner':<16}" + "".join(f"{'@' + str(p):>8}" for p in shown) + f"{f'mean {start}-{stop - 1}':>12}"
    print(header)
    for record in curves:
        row = "".join(f"{record['mean'][p]:8.3f}" for p in shown)
        print(f"{record['learner']:<16}{row}{evaluate.mean_over(record, start, stop):12.3f}")
    print(f"wrote {path} and {png}")
