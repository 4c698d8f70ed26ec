"""Figure 2 (bottom): every learner trained on the equal-thirds mixture of task families (PAPER.md section 8.3, T6).

    icl-meta reproduce fig2 --scale cpu                 # fig2_single.py and this script
    python -m experiments.fig2_mixture --scale cpu      # this script only
    python -m experiments.fig2_mixture --ave-anchors flipped --test-set reference   # the reference code's variants

The training mixture is the canonical one of PAPER.md section 11: prototype (no anchors), pairwise with nc=1 and
amortization, a third of each batch each, the loss over positions 2..49 (umix.py with start=2). `--start 0 --sim-nc 0`
reproduces the committed umix.py bug (every pairwise training task labelled class 0), `--ave-anchors flipped` its
amortization tasks with flipped anchors, `--test-set reference` the test sets of its test.py (prototype with anchors,
pairwise nc=2, amortization with flipped anchors, and the mix of prototype with anchors, amortization with flipped
anchors and unit-norm pairwise tasks). Every learner is tested on each family and on the mixture.
Outputs: fig2_mixture_SCALE.{json,png} and fig2_mixture_table_SCALE.png in `--figures`; runs in `--out`.

Expected runtime on a 2-core CPU: smoke ~1 min; cpu ~5 min; paper: 1M steps per run, a GPU job.
Expected result (cpu): on the mixture test set ICL beats every meta-learner (each is good on its own family only;
the best single closed-form rule, ncm, scores about .906 and the per-family oracle .935). Measured (seed 0): ICL .942,
ProtoNet .903, MAML .895, MatchNet .839, CNP .638 on the mixture test set.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from experiments.fig2_single import LEARNERS, Budget, Scale, common_parser, parse_learners, print_table, train_config
from experiments.fig2_single import test_families as single_test_families
from icl_meta import learners, study
from icl_meta.cli import guarded
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, write_json
from tasks.base import TaskFamily

MIXTURE = "mixture"
TESTS = ("prototype", "pairwise", "amortization", MIXTURE)

SCALES: dict[str, Scale] = {
    "smoke": Scale(
        budgets={MIXTURE: Budget(3e-3, 15, {"*": 6})}, positions_per_step=4, test_tasks=60, eval_tasks=60, evals=1, n=12
    ),
    "cpu": Scale(
        budgets={MIXTURE: Budget(3e-3, 126, {"icl": 800, "maml": 500, "*": 2000})},
        positions_per_step=8,
        test_tasks=3072,
        eval_tasks=510,
        evals=4,
    ),
    "paper": Scale(
        budgets={MIXTURE: Budget(3e-3, 126, {"*": 1_000_000})},
        positions_per_step=None,
        test_tasks=3072,
        eval_tasks=3072,
        evals=100,
    ),
}


def training_mixture(sim_nc: int, ave_anchors: str) -> TaskFamily:
    components = ("prototype", {"name": "pairwise", "nc": sim_nc}, {"name": "amortization", "anchors": ave_anchors})
    return tasks.get(MIXTURE, components=components)


def mixture_jobs(
    scale: Scale, names: Sequence[str], start: int, sim_nc: int, ave_anchors: str, seed: int
) -> list[study.Job]:
    """One run per learner trained on the mixture (Figure 3 reuses the same runs: same config, same directory)."""
    training, budget = training_mixture(sim_nc, ave_anchors), scale.budgets[MIXTURE]
    return [study.Job(MIXTURE, learners.build(n), training, train_config(scale, budget, n, start, seed)) for n in names]


def test_families(test_set: str, training: TaskFamily) -> dict[str, TaskFamily]:
    if test_set == "canonical":
        return {**single_test_families(), MIXTURE: training}
    proto = tasks.get("prototype", anchors=True)
    ave = tasks.get("amortization", anchors="flipped")
    sim0 = tasks.get("pairwise", nc=1, unit_inputs=True)
    mix = tasks.get(MIXTURE, components=(proto, sim0, ave))
    return {"prototype": proto, "pairwise": tasks.get("pairwise", nc=2), "amortization": ave, MIXTURE: mix}


def variant_suffix(args: Any) -> str:
    """'' for the canonical setting, else e.g. '_ave-flipped_test-reference' (run and figure names keep apart)."""
    defaults = {"start": 2, "sim_nc": 1, "ave_anchors": "none", "test_set": "canonical"}
    changed = [(k, getattr(args, k)) for k, v in defaults.items() if getattr(args, k) != v]
    return "".join(f"_{k.replace('_', '-')}-{v}" for k, v in changed)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=2, help="first position in the loss (default 2; umix.py: 0)")
    parser.add_argument("--sim-nc", type=int, default=1, help="class vectors of the pairwise tasks (default 1)")
    parser.add_argument("--ave-anchors", choices=("none", "flipped"), default="none", help="amortization anchors")
    parser.add_argument("--test-set", choices=("canonical", "reference"), default="canonical", help="test sets")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    names = parse_learners(args.learners)
    variant = variant_suffix(args)
    root = args.out or Path("runs") / "fig2" / f"{args.scale}{variant}"
    t0 = time.perf_counter()
    training = training_mixture(args.sim_nc, args.ave_anchors)
    families = test_families(args.test_set, training)
    tests = study.test_sets(families, scale.test_tasks, scale.n, args.seed)
    grid = mixture_jobs(scale, names, args.start, args.sim_nc, args.ave_anchors, args.seed)
    curves, runs = study.run_grid(grid, root, tests, families, progress=not args.no_progress)
    curves += study.reference_curves(tests, families)
    starts = {name: fam.reference_loss_start for name, fam in families.items()}
    table = study.mean_table(curves, starts)
    config = {
        "scale": args.scale,
        "seed": args.seed,
        "learners": list(names),
        "variant": {"start": args.start, "sim_nc": args.sim_nc, "ave_anchors": args.ave_anchors},
        "test_set": args.test_set,
        "test_families": {name: {"name": f.name, **f.hparams()} for name, f in families.items()},
        "settings": dataclasses.asdict(scale),
        "runs": {job.key: study.run_config("fig2_mixture", job.learner, job.family, job.cfg) for job in grid},
    }
    doc = results_document("fig2_mixture", config, curves, args.seed)
    doc.update(summary=table, run_summaries=runs, wall_s=round(time.perf_counter() - t0, 1))
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    stem = f"fig2_mixture_{args.scale}{variant}"
    write_json(figures / f"{stem}.json", doc)
    draw(doc, figures, f"{args.scale}{variant}")
    refs = [r.name for r in learners.references(training.spec)]
    print("\nmixture-trained learners (Figure 2 bottom):")
    print_table(table, [*names, *refs], TESTS, train=MIXTURE)
    print(f"\nwall time {doc['wall_s']:.0f} s; wrote {figures}/{stem}.json and PNGs")
    return doc


def draw(doc: dict[str, Any], figures: Path, scale: str) -> None:
    """fig2_mixture_SCALE.png (one panel per test set) and fig2_mixture_table_SCALE.png (mean accuracies)."""
    curves, table = doc["curves"], doc["summary"]
    panels = [(f"trained on the mixture, tested on {test}", [c for c in curves if c["test"] == test]) for test in TESTS]
    plot_panels(panels, figures / f"fig2_mixture_{scale}.png", title=f"Figure 2 (bottom), scale {scale}", ylim=(0, 1))
    rows = [n for n in LEARNERS if any(r["learner"] == n for r in table)]
    rows += [r["learner"] for r in table if r["kind"] == "reference" and r["test"] == MIXTURE]
    values = np.full((len(rows), len(TESTS)), np.nan)
    for r, name in enumerate(rows):
        for c, test in enumerate(TESTS):
            values[r, c] = study.table_value(table, name, test)
    plot_table(
        values,
        rows,
        [f"test {t}" for t in TESTS],
        figures / f"fig2_mixture_table_{scale}.png",
        title=f"mean accuracy of mixture-trained learners (scale {scale})",
    )


if __name__ == "__main__":
    sys.exit(guarded(main))
