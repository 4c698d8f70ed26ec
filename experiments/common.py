"""What the figure scripts share beyond the experiment spec (`experiments.spec`: options, the skeleton, claims):
results cached in a run directory by their settings, the GPT-2 learner builder, history columns, and Figure 2's
settings (budgets, families, jobs, tables and the learns-above-chance precondition), which Figure 3 reuses.

No figure script imports another one; what two of them need lives here or in `icl_meta.study`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from experiments import spec
from icl_meta import learners, study
from icl_meta.claims import Claim
from icl_meta.contracts import TaskFamily
from icl_meta.plotting import plot_agreement
from icl_meta.runs import read_json, write_json
from icl_meta.train import TrainConfig
from icl_meta.transformer import ICLTransformer, preset

# ---------------------------------------------------------------------------------------------------------------------
# Helpers of every figure


def is_cached(path: Path, settings: dict[str, Any]) -> bool:
    """Whether `path` holds a value computed with these `settings` (`cached` would read it back)."""
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples as lists)
    return path.exists() and read_json(path).get("settings") == settings


def cached(path: Path, settings: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The JSON value saved at `path` if it was computed with these `settings`, else `compute()`, saved with them."""
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples as lists)
    if is_cached(path, settings):
        return read_json(path)["value"]
    return store(path, settings, compute())


def store(path: Path, settings: dict[str, Any], value: Any) -> Any:
    """Save `value` at `path` with the `settings` it was computed with (what `cached` reads back); returns it as it
    reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"settings": json.loads(json.dumps(settings)), "value": value})
    return json.loads(json.dumps(value))


def gpt2(width: int, depth: int, heads: int, n: int, positions: int | None = None) -> ICLTransformer:
    """The `gpt2` preset at a size, with learned positions for 2n interleaved tokens (or `positions`)."""
    return ICLTransformer(preset("gpt2", width=width, depth=depth, heads=heads, positions=positions or 2 * n))


def seed_means(records: Sequence[dict[str, Any]], by: Sequence[str]) -> list[dict[str, Any]]:
    """Curve records (per-position errors or agreements) averaged over seeds per value of the `by` labels: the mean of
    the seeds' means, with the min-max band over seeds as lo / hi."""
    out = []
    for key in dict.fromkeys(tuple(r[k] for k in by) for r in records):
        runs = [r for r in records if tuple(r[k] for k in by) == key]
        means = np.asarray([r["mean"] for r in runs])
        labels = {k: v for k, v in runs[0].items() if k not in ("seed", "mean", "lo", "hi", "agreement_s")}
        out.append({**labels, "seeds": len(runs), "mean": means.mean(0).tolist(), "lo": means.min(0).tolist(),
                    "hi": means.max(0).tolist()})  # fmt: skip
    return out


def history_columns(history: Sequence[dict[str, Any]], **columns: str) -> dict[str, list]:
    """A run's metrics.jsonl rows as columns: `history_columns(rows, step="step", train_loss="loss")`; a key a row
    lacks reads None."""
    return {name: [row.get(key) for row in history] for name, key in columns.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Figure 2: the four learners and ICL on the paper's three families and their mixture (Figure 3 reuses the mixture
# runs)

FAMILIES = ("prototype", "pairwise", "amortization")
MIXTURE = "mixture"
LEARNERS = ("icl", "matchnet", "protonet", "cnp", "maml")  # the paper's three meta-learners; MAML the gradient one


def in_context(name: str) -> bool:
    """Whether the learner registered as `name` is an in-context model (a capability, `icl_meta.learners`)."""
    return bool(learners.capability(learners.REGISTRY.cls(name), "in_context_model"))


def sampled(name: str) -> bool:
    """Whether the learner's step cost grows with the positions in the loss (trained on a sample of them)."""
    return bool(learners.capability(learners.REGISTRY.cls(name), "samples_loss_positions"))


@dataclasses.dataclass(frozen=True)
class Budget:
    """A family's training settings at one scale (the reference's per-family lr, batch and steps)."""

    lr: float
    batch: int
    steps: dict[str, int]  # learner name -> steps ("*": any other learner)

    def steps_for(self, learner: str) -> int:
        return self.steps.get(learner, self.steps["*"])


@dataclasses.dataclass(frozen=True)
class Scale(spec.Scale):
    """Figure 2's settings at one scale (Figure 3 reuses the mixture's)."""

    budgets: dict[str, Budget]  # training family -> budget
    positions_per_step: int | None  # ICL and MAML train on this many random positions per step; None: all
    test_tasks: int
    eval_tasks: int  # the runs' own held-out monitoring set
    evals: int  # evaluations (and checkpoints) per run
    n: int = 50
    # ICL and MAML draw their positions one per stratum and compute the loss in this many truncated passes
    # (TrainConfig.position_groups: the same loss, ~35% less work for 4 groups at 8 positions of 50)
    position_groups: int = 1


SINGLE_SCALES: dict[str, Scale] = {
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
        position_groups=4,
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

MIXTURE_SCALES: dict[str, Scale] = {
    "smoke": Scale(
        budgets={MIXTURE: Budget(3e-3, 15, {"*": 6})}, positions_per_step=4, test_tasks=60, eval_tasks=60, evals=1, n=12
    ),
    "cpu": Scale(
        budgets={MIXTURE: Budget(3e-3, 126, {"icl": 800, "maml": 500, "*": 2000})},
        positions_per_step=8,
        test_tasks=3072,
        eval_tasks=510,
        evals=4,
        position_groups=4,
    ),
    "paper": Scale(
        budgets={MIXTURE: Budget(3e-3, 126, {"*": 1_000_000})},
        positions_per_step=None,
        test_tasks=3072,
        eval_tasks=3072,
        evals=100,
    ),
}


def train_family(name: str, learner: str) -> TaskFamily:
    """The training distribution: pairwise uses nc=1 for an in-context model and nc=4 for the meta-learners, as the
    reference's scripts do (statistically the same task for C=2; docs/papers.md)."""
    if name == "pairwise":
        return tasks.get(name, nc=1 if in_context(learner) else 4)
    return tasks.get(name)


def test_families() -> dict[str, TaskFamily]:
    """The cross-table test sets (test_cross of the reference, without its eval-only anchors); Figure 3 shifts
    them."""
    return {
        "prototype": tasks.get("prototype"),
        "pairwise": tasks.get("pairwise", nc=4),
        "amortization": tasks.get("amortization"),
    }


def loss_start(family: TaskFamily, learner: str) -> int:
    """An in-context model trains on the reference's positions (prototype from 2); the meta-learners on all."""
    return family.reference_loss_start if in_context(learner) else 0


def train_config(scale: Scale, budget: Budget, learner: str, start: int, seed: int) -> TrainConfig:
    steps = budget.steps_for(learner)
    return TrainConfig(
        steps=steps,
        batch=budget.batch,
        n=scale.n,
        lr=budget.lr,
        loss_start=start,
        positions_per_step=scale.positions_per_step if sampled(learner) else None,
        position_sampling="stratified" if sampled(learner) and scale.positions_per_step else "uniform",
        position_groups=scale.position_groups if sampled(learner) else 1,
        scan_steps=min(50, steps),
        eval_every=max(1, steps // scale.evals),
        eval_tasks=scale.eval_tasks,
        seed=seed,
    )


def single_jobs(scale: Scale, names: Sequence[str], seed: int) -> list[study.Job]:
    """Every learner on every one of the three families (Figure 2 top and the cross table)."""
    out = []
    for fam in FAMILIES:
        for name in names:
            family = train_family(fam, name)
            cfg = train_config(scale, scale.budgets[fam], name, loss_start(family, name), seed)
            out.append(study.Job(train=fam, learner=learners.build_for(family.spec, name), family=family, cfg=cfg))
    return out


def training_mixture(sim_nc: int = 1, ave_anchors: str = "none") -> TaskFamily:
    """The canonical training mixture (equal thirds; pairwise nc=1, amortization without anchors; docs/papers.md),
    or the reference code's variants."""
    components = ("prototype", {"name": "pairwise", "nc": sim_nc}, {"name": "amortization", "anchors": ave_anchors})
    return tasks.get(MIXTURE, components=components)


def mixture_jobs(
    scale: Scale, names: Sequence[str], seed: int, start: int = 2, sim_nc: int = 1, ave_anchors: str = "none"
) -> list[study.Job]:
    """One run per learner trained on the mixture (Figure 2 bottom; Figure 3 reuses the same runs)."""
    training, budget = training_mixture(sim_nc, ave_anchors), scale.budgets[MIXTURE]
    return [
        study.Job(MIXTURE, learners.build_for(training.spec, n), training, train_config(scale, budget, n, start, seed))
        for n in names
    ]


def draw_agreement(summaries: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """The learner x rule heat map of `study.agreement_summaries` (one panel per test), optimal rules boxed."""
    rows = [row for summary in summaries.values() for row in summary["rows"]]
    optimal = {test: (s["own_rule"][0]["own_rule"] if s["own_rule"] else None) for test, s in summaries.items()}
    plot_agreement(rows, path, title, optimal)


def print_own_rule(summaries: dict[str, dict[str, Any]], seconds: float, wall_s: float) -> None:
    """Per test and learner: agreement with the family's optimal rule against the closest other rule."""
    print(f"\nwhich rule each learner runs (agreement analysis: {seconds:.0f} s of the script's {wall_s:.0f} s)")
    for test, summary in summaries.items():
        for check in summary["own_rule"] or []:
            print(
                f"  {test:<14}{check['learner']:<10} {check['own_rule']} {check['own_value']:.3f} vs "
                f"{check['best_other']} {check['best_other_value']:.3f} (margin {check['margin']:+.3f}): "
                + ("agrees most with the optimal rule" if check["held"] else "NOT closest to the optimal rule")
            )


CHANCE = 0.5  # the accuracy of a guess on Figure 2's two-class tasks
LEARNS_MARGIN = 0.05  # a learner learns a test family when its mean accuracy there is above CHANCE by this much


def learns(table: list[dict[str, Any]], learner: str, test: str, train: str, tasks: int | None) -> Claim:
    """The precondition of Figure 2's claims about `learner` (trained on `train`): it learns `test` tasks, its mean
    accuracy over the reporting positions in the `study.mean_table` above chance by a fixed margin."""
    row = next((r for r in table if r["learner"] == learner and r["test"] == test and r["train"] == train), None)
    return Claim(
        f"{learner}_learns_{test}" + ("" if train == test else f"_from_{train}"),
        f"{learner} trained on {train} learns {test} tasks: mean accuracy above chance ({CHANCE}) + {LEARNS_MARGIN}",
        None if row is None else row["mean"],
        ">",
        CHANCE + LEARNS_MARGIN,
        n=tasks,
        method=f"mean accuracy over positions {row['positions'] if row else '?'} of the held-out test tasks",
    )


def print_table(table: list[dict[str, Any]], rows: Sequence[str], cols: Sequence[str], train: str | None) -> None:
    """Rows: learners (trained on `train`, or on each column's family when None), columns: test families."""
    print(f"{'mean accuracy':<16}" + "".join(f"{c:>14}" for c in cols))
    for row in rows:
        cells = []
        for col in cols:
            value = study.table_value(table, row, col, train=col if train is None else train)
            cells.append(f"{'-':>14}" if math.isnan(value) else f"{value:14.3f}")
        print(f"{row:<16}" + "".join(cells))
