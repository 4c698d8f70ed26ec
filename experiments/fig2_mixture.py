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
Which algorithm each learner runs: its per-position argmax agreement with each closed-form rule (ncm, matching,
averaging, 1-NN, 3-NN) on the first 512 tasks of each family's test set (`icl_meta.agreement`), with the check that it
agrees most with the family's optimal rule (prototype: ncm, pairwise: matching, amortization: averaging).
Outputs: fig2_mixture_SCALE.{json,png}, fig2_mixture_table_SCALE.png and fig2_agreement_SCALE.png (learner x rule heat
maps, one panel per test family) in `--figures`; runs in `--out`.

Expected runtime on a 2-core CPU: smoke ~1 min; cpu 3.5-6 min; paper: 1M steps per run, a GPU job.
Expected result (cpu): on the mixture test set ICL beats every meta-learner (each is good on its own family only;
the best single closed-form rule, ncm, scores about .906 and the per-family oracle .935). Measured (seed 0): ICL .941,
MAML .906, ProtoNet .903, MatchNet .840, CNP .638 on the mixture test set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import baselines
import tasks
from experiments import common, study
from experiments.common import FAMILIES, LEARNERS, MIXTURE, MIXTURE_SCALES
from icl_meta import agreement
from icl_meta.contracts import TaskFamily
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, run_config

TESTS = ("prototype", "pairwise", "amortization", MIXTURE)


def test_families(test_set: str, training: TaskFamily) -> dict[str, TaskFamily]:
    if test_set == "canonical":
        return {**common.test_families(), MIXTURE: training}
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
    parser = common.parser(__doc__.splitlines()[0], MIXTURE_SCALES, learners=LEARNERS)
    parser.add_argument("--start", type=int, default=2, help="first position in the loss (default 2; umix.py: 0)")
    parser.add_argument("--sim-nc", type=int, default=1, help="class vectors of the pairwise tasks (default 1)")
    parser.add_argument("--ave-anchors", choices=("none", "flipped"), default="none", help="amortization anchors")
    parser.add_argument("--test-set", choices=("canonical", "reference"), default="canonical", help="test sets")
    args = common.parse(parser, argv)
    scale, names = MIXTURE_SCALES[args.scale], common.parse_choices(args.learners, LEARNERS)
    variant = variant_suffix(args)
    root = args.out or Path("runs") / "fig2" / f"{args.scale}{variant}"
    t0 = time.perf_counter()
    training = common.training_mixture(args.sim_nc, args.ave_anchors)
    families = test_families(args.test_set, training)
    tests = study.sample_test_sets(families, scale.test_tasks, scale.n, args.seed)
    grid = common.mixture_jobs(scale, names, args.seed, args.start, args.sim_nc, args.ave_anchors)
    curves, runs, params = study.run_grid(grid, root, tests, families, progress=not args.no_progress)
    curves += study.reference_curves(tests, families)
    family_tests = {name: tests[name] for name in FAMILIES}  # the mixture's tasks have no single optimal rule
    agreement_records = []
    for job, p in zip(grid, params, strict=True):
        agreement_records += study.agreement_curves(job.learner, p, family_tests, families, train=job.train)
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
        "runs": {job.key: run_config("fig2_mixture", job.learner, job.family, job.cfg) for job in grid},
    }
    doc = results_document("fig2_mixture", config, curves, args.seed)
    doc.update(summary=table, run_summaries=runs, variant_suffix=variant)
    doc.update(
        agreement=agreement_records,
        agreement_summary=study.agreement_summaries(agreement_records, families, starts),
        agreement_s=agreement.seconds(agreement_records),
    )
    common.finish(doc, args.figures, f"fig2_mixture_{args.scale}{variant}", draw, t0)
    refs = [r.name for r in baselines.references(training.spec)]
    print("\nmixture-trained learners (Figure 2 bottom):")
    common.print_table(table, [*names, *refs], TESTS, train=MIXTURE)
    common.print_own_rule(doc["agreement_summary"], doc["agreement_s"], doc["wall_s"])
    return doc


def draw(doc: dict[str, Any], figures: Path) -> None:
    """fig2_mixture_SCALE.png (one panel per test set) and fig2_mixture_table_SCALE.png (mean accuracies)."""
    curves, table = doc["curves"], doc["summary"]
    scale = f"{doc['scale']}{doc.get('variant_suffix', '')}"
    panels = [(f"trained on the mixture, tested on {test}", [c for c in curves if c["test"] == test]) for test in TESTS]
    plot_panels(panels, figures / f"fig2_mixture_{scale}.png", title=f"Figure 2 (bottom), scale {scale}", ylim=(0, 1))
    rows = [n for n in LEARNERS if any(r["learner"] == n for r in table)]
    rows += [r["learner"] for r in table if r["kind"] == "reference" and r["test"] == MIXTURE]
    plot_table(
        study.table_matrix(table, [(name, None) for name in rows], TESTS),
        rows,
        [f"test {t}" for t in TESTS],
        figures / f"fig2_mixture_table_{scale}.png",
        title=f"mean accuracy of mixture-trained learners (scale {scale})",
    )
    if doc.get("agreement_summary"):
        common.draw_agreement(
            doc["agreement_summary"], figures / f"fig2_agreement_{scale}.png",
            f"Figure 2: agreement with each rule\n(mixture-trained, scale {scale}; red: optimal rule)",
        )  # fmt: skip


if __name__ == "__main__":
    common.script(main)
