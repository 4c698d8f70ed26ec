"""Figure 2 (top): learnability on single task families, and the cross table (PAPER.md section 8.2, targets T2-T5).

    icl-meta reproduce fig2 --scale cpu                 # this script and fig2_mixture.py
    python -m experiments.fig2_single --scale cpu       # this script only; --learners icl,protonet for a subset

Each of the ICL transformer (the paper preset, prefix protocol), MatchNet, ProtoNet, CNP and MAML is trained on each of
prototype, pairwise and amortization tasks with that family's hyper-parameters (PAPER.md sections 4.2 and 5.5), then
tested on every family: the diagonal gives the three panels of Figure 2 (top), all nine the cross table (T5).
Runs live in `--out` (default runs/fig2/SCALE) and are resumed or reused when the script is run again; the results
(tidy curves, mean table) and the PNGs go to `--figures` (default figures/): fig2_single_SCALE.{json,png} and
fig2_cross_SCALE.png.

Expected runtime on a 2-core CPU: smoke ~1.5 min; cpu 5.5-8.5 min (ICL and MAML train on 8 positions per step, one per
stratum, in 4 truncated passes);
paper: the reference's 100k-1M steps per run, a GPU job.
Expected result (cpu): on each family ICL is within 0.01 of the best meta-learner or better, and the meta-learner with
the family's inductive bias is the best of the three: ProtoNet on prototype, MatchNet on pairwise, CNP on
amortization. Measured (seed 0): ICL .943 / .920 / .957 against ProtoNet .931, MatchNet .920, CNP .947 (the
closed-form rules: ncm .937, matching .921, averaging .918).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import baselines
from experiments import common, study
from experiments.common import FAMILIES, LEARNERS, SINGLE_SCALES
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, run_config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common.parse(common.parser(__doc__.splitlines()[0], SINGLE_SCALES, learners=LEARNERS), argv)
    scale, names = SINGLE_SCALES[args.scale], common.parse_choices(args.learners, LEARNERS)
    t0 = time.perf_counter()
    families = common.test_families()
    tests = study.sample_test_sets(families, scale.test_tasks, scale.n, args.seed)
    grid = common.single_jobs(scale, names, args.seed)
    root = common.run_root(args, "fig2")
    curves, runs, _ = study.run_grid(grid, root, tests, families, progress=not args.no_progress)
    curves += study.reference_curves(tests, families)
    table = study.mean_table(curves, {name: fam.reference_loss_start for name, fam in families.items()})
    config = {
        "scale": args.scale,
        "seed": args.seed,
        "learners": list(names),
        "settings": dataclasses.asdict(scale),
        "runs": {job.key: run_config("fig2_single", job.learner, job.family, job.cfg) for job in grid},
    }
    doc = results_document("fig2_single", config, curves, args.seed)
    doc.update(summary=table, run_summaries=runs)
    common.finish(doc, args.figures, f"fig2_single_{args.scale}", draw, t0)
    refs = [r.name for r in baselines.references(families["prototype"].spec)]
    print("\nsame-family training (Figure 2 top):")
    common.print_table(table, [*names, *refs], FAMILIES, train=None)
    return doc


def draw(doc: dict[str, Any], figures: Path) -> None:
    """fig2_single_SCALE.png (one panel per family, learners trained on it) and fig2_cross_SCALE.png."""
    curves, table, scale = doc["curves"], doc["summary"], doc["scale"]
    panels = [
        (f"{fam}: trained and tested on it", [c for c in curves if c["test"] == fam and c["train"] in (fam, None)])
        for fam in FAMILIES
    ]
    plot_panels(panels, figures / f"fig2_single_{scale}.png", title=f"Figure 2 (top), scale {scale}", ylim=(0, 1))
    names = [n for n in LEARNERS if any(r["learner"] == n for r in table)]
    rows = [(n, fam) for n in names for fam in FAMILIES]
    plot_table(
        study.table_matrix(table, rows, FAMILIES),
        [f"{n} <- {fam}" for n, fam in rows],
        [f"test {f}" for f in FAMILIES],
        figures / f"fig2_cross_{scale}.png",
        title=f"mean accuracy, learner <- training family (scale {scale})",
    )


if __name__ == "__main__":
    common.script(main)
