"""Figure 2 (top): learnability on single task families, and the cross table (PAPER.md section 8.2, targets T2-T5).

    icl-meta reproduce fig2 --scale cpu                 # this script and fig2_mixture.py
    python -m experiments.fig2_single --scale cpu       # this script only; --learners icl,protonet for a subset

Each of the ICL transformer (the paper preset, prefix protocol), MatchNet, ProtoNet, CNP and MAML is trained on each of
prototype, pairwise and amortization tasks with that family's hyper-parameters (PAPER.md sections 4.2 and 5.5), then
tested on every family: the diagonal gives the three panels of Figure 2 (top), all nine the cross table (T5).
Runs live in `--out` (default runs/fig2/SCALE) and are resumed or reused when the script is run again; the results
(tidy curves, mean table) and the PNGs go to `--figures` (default figures/): fig2_single_SCALE.{json,png} and
fig2_cross_SCALE.png.

Expected runtime on a 2-core CPU: smoke ~1.5 min; cpu ~8 min (ICL and MAML train on 8 random positions per step);
paper: the reference's 100k-1M steps per run, a GPU job.
Expected result (cpu): on each family ICL is within 0.01 of the best meta-learner or better, and the meta-learner with
the family's inductive bias is the best of the three: ProtoNet on prototype, MatchNet on pairwise, CNP on
amortization. Measured (seed 0): ICL .942 / .919 / .958 against ProtoNet .931, MatchNet .919, CNP .947 (the
closed-form rules: ncm .937, matching .921, averaging .918).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from icl_meta import learners, study
from icl_meta.cli import guarded
from icl_meta.errors import ConfigError
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, write_json
from icl_meta.train import TrainConfig
from tasks.base import TaskFamily

FAMILIES = ("prototype", "pairwise", "amortization")
META_LEARNERS = ("matchnet", "protonet", "cnp")  # the paper's three; MAML is the gradient-based fourth
LEARNERS = (learners.ICL, *META_LEARNERS, "maml")
SAMPLED = ("icl", "maml")  # learners whose step cost grows with the positions in the loss


@dataclasses.dataclass(frozen=True)
class Budget:
    """A family's training settings at one scale (the reference's per-family lr, batch and steps)."""

    lr: float
    batch: int
    steps: dict[str, int]  # learner name -> steps ("*": any other learner)

    def steps_for(self, learner: str) -> int:
        return self.steps.get(learner, self.steps["*"])


@dataclasses.dataclass(frozen=True)
class Scale:
    budgets: dict[str, Budget]  # training family -> budget
    positions_per_step: int | None  # ICL and MAML train on this many random positions per step; None: all
    test_tasks: int
    eval_tasks: int  # the runs' own held-out monitoring set
    evals: int  # evaluations (and checkpoints) per run
    n: int = 50


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        budgets={f: Budget(3e-3, 16, {"*": 6}) for f in FAMILIES},
        positions_per_step=4,
        test_tasks=64,
        eval_tasks=64,  # = test_tasks: one compiled evaluation per learner
        evals=1,
        n=12,
    ),
    "cpu": Scale(
        budgets={
            "prototype": Budget(3e-3, 64, {"icl": 600, "maml": 500, "*": 2000}),
            "pairwise": Budget(3e-3, 128, {"icl": 300, "maml": 300, "*": 1000}),
            "amortization": Budget(1e-3, 64, {"icl": 600, "maml": 500, "*": 2000}),
        },
        positions_per_step=8,
        test_tasks=2048,
        eval_tasks=512,
        evals=4,
    ),
    "paper": Scale(
        budgets={
            "prototype": Budget(3e-3, 128, {"*": 1_000_000}),
            "pairwise": Budget(3e-3, 512, {"*": 500_000}),
            "amortization": Budget(1e-3, 128, {"*": 100_000}),
        },
        positions_per_step=None,
        test_tasks=2048,
        eval_tasks=2048,
        evals=100,
    ),
}


def train_family(name: str, learner: str) -> TaskFamily:
    """The training distribution: pairwise uses nc=1 for ICL and nc=4 for the meta-learners, as the reference's
    scripts (PAPER.md section 11, row 8; statistically the same task for C=2)."""
    if name == "pairwise":
        return tasks.get(name, nc=1 if learner == learners.ICL else 4)
    return tasks.get(name)


def test_families() -> dict[str, TaskFamily]:
    """The cross-table test sets (test_cross of the reference, without its eval-only anchors)."""
    return {
        "prototype": tasks.get("prototype"),
        "pairwise": tasks.get("pairwise", nc=4),
        "amortization": tasks.get("amortization"),
    }


def loss_start(family: TaskFamily, learner: str) -> int:
    """ICL trains on the reference's positions (prototype from 2); the reference's meta-learners on all."""
    return family.reference_loss_start if learner == learners.ICL else 0


def train_config(scale: Scale, budget: Budget, learner: str, start: int, seed: int) -> TrainConfig:
    steps = budget.steps_for(learner)
    return TrainConfig(
        steps=steps,
        batch=budget.batch,
        n=scale.n,
        lr=budget.lr,
        loss_start=start,
        positions_per_step=scale.positions_per_step if learner in SAMPLED else None,
        scan_steps=min(50, steps),
        eval_every=max(1, steps // scale.evals),
        eval_tasks=scale.eval_tasks,
        seed=seed,
    )


def jobs(scale: Scale, names: Sequence[str], seed: int) -> list[study.Job]:
    out = []
    for fam in FAMILIES:
        for name in names:
            family = train_family(fam, name)
            cfg = train_config(scale, scale.budgets[fam], name, loss_start(family, name), seed)
            out.append(study.Job(train=fam, learner=learners.build(name), family=family, cfg=cfg))
    return out


def parse_learners(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in LEARNERS]
    if unknown or not names:
        raise ConfigError(
            f"--learners: unknown {', '.join(unknown) or '(none given)'}; accepted: {', '.join(LEARNERS)}"
        )
    return names


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options every figure script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=tuple(SCALES), default="cpu", help="problem size (default cpu)")
    parser.add_argument("--learners", default=",".join(LEARNERS), help=f"subset of {','.join(LEARNERS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training runs and test sets (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="run directories (default runs/fig2/SCALE)")
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="results and PNGs (default figures/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def print_table(table: list[dict[str, Any]], rows: Sequence[str], cols: Sequence[str], train: str | None) -> None:
    """Rows: learners (trained on `train`, or on each column's family when None), columns: test families."""
    print(f"{'mean accuracy':<16}" + "".join(f"{c:>14}" for c in cols))
    for row in rows:
        cells = []
        for col in cols:
            value = study.table_value(table, row, col, train=col if train is None else train)
            cells.append(f"{'-':>14}" if math.isnan(value) else f"{value:14.3f}")
        print(f"{row:<16}" + "".join(cells))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    scale, names = SCALES[args.scale], parse_learners(args.learners)
    root = args.out or Path("runs") / "fig2" / args.scale
    t0 = time.perf_counter()
    families = test_families()
    tests = study.test_sets(families, scale.test_tasks, scale.n, args.seed)
    grid = jobs(scale, names, args.seed)
    curves, runs = study.run_grid(grid, root, tests, families, progress=not args.no_progress)
    curves += study.reference_curves(tests, families)
    starts = {name: fam.reference_loss_start for name, fam in families.items()}
    table = study.mean_table(curves, starts)
    config = {
        "scale": args.scale,
        "seed": args.seed,
        "learners": list(names),
        "settings": dataclasses.asdict(scale),
        "runs": {job.key: study.run_config("fig2_single", job.learner, job.family, job.cfg) for job in grid},
    }
    doc = results_document("fig2_single", config, curves, args.seed)
    doc.update(summary=table, run_summaries=runs, wall_s=round(time.perf_counter() - t0, 1))
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    write_json(figures / f"fig2_single_{args.scale}.json", doc)
    draw(doc, figures, args.scale)
    refs = [r.name for r in learners.references(families["prototype"].spec)]
    print("\nsame-family training (Figure 2 top):")
    print_table(table, [*names, *refs], FAMILIES, train=None)
    print(f"\nwall time {doc['wall_s']:.0f} s; wrote {figures}/fig2_single_{args.scale}.json and PNGs")
    return doc


def draw(doc: dict[str, Any], figures: Path, scale: str) -> None:
    """fig2_single_SCALE.png (one panel per family, learners trained on it) and fig2_cross_SCALE.png."""
    curves, table = doc["curves"], doc["summary"]
    panels = [
        (f"{fam}: trained and tested on it", [c for c in curves if c["test"] == fam and c["train"] in (fam, None)])
        for fam in FAMILIES
    ]
    plot_panels(panels, figures / f"fig2_single_{scale}.png", title=f"Figure 2 (top), scale {scale}", ylim=(0, 1))
    names = [n for n in LEARNERS if any(r["learner"] == n for r in table)]
    rows = [f"{n} <- {fam}" for n in names for fam in FAMILIES]
    values = np.full((len(rows), len(FAMILIES)), np.nan)
    for r, (name, fam) in enumerate((n, f) for n in names for f in FAMILIES):
        for c, test in enumerate(FAMILIES):
            values[r, c] = study.table_value(table, name, test, train=fam)
    plot_table(
        values,
        rows,
        [f"test {f}" for f in FAMILIES],
        figures / f"fig2_cross_{scale}.png",
        title=f"mean accuracy, learner <- training family (scale {scale})",
    )


if __name__ == "__main__":
    sys.exit(guarded(main))
