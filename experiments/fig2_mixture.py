"""Figure 2 (bottom): every learner trained on the equal-thirds mixture of task families.

    icl-meta reproduce fig2 --scale cpu                 # fig2_single and this experiment
    python -m experiments.fig2_mixture --scale cpu      # this one only; --learners icl,protonet for a subset
    python -m experiments.fig2_mixture --ave-anchors flipped --test-set reference   # the reference code's variants

The training mixture is the canonical one (docs/papers.md): prototype (no anchors), pairwise with nc=1 and
amortization, a third of each batch each, the loss over positions 2..49 (the reference's umix.py with start=2).
`--start 0 --sim-nc 0` reproduces that script's committed bug (every pairwise training task labelled class 0),
`--ave-anchors flipped` its amortization tasks with flipped anchors, `--test-set reference` the test sets of the
reference's test.py (prototype with anchors, pairwise nc=2, amortization with flipped anchors, and the mix of
prototype with anchors, amortization with flipped anchors and unit-norm pairwise tasks). Every learner (default: ICL,
MatchNet, ProtoNet, CNP, MAML; any registered learner with --learners) is tested on each family and on the mixture.
Which algorithm each learner runs: its per-position argmax agreement with each closed-form rule (ncm, matching,
averaging, 1-NN, 3-NN) on the first 512 tasks of each family's test set (`icl_meta.agreement`), and whether it agrees
most with the family's optimal rule (prototype: ncm, pairwise: matching, amortization: averaging).
Outputs in `--figures`: fig2_mixture_SCALE.{json,png}, fig2_mixture_table_SCALE.png and fig2_agreement_SCALE.png
(learner x rule heat maps, one panel per test family), SCALE with a variant suffix for the variants; runs in `--out`
(default runs/fig2/SCALE, with the variant suffix).

Scales (`common.MIXTURE_SCALES`), times on a 2-core CPU: smoke (n=12, 6 steps per run, 60 test tasks; ~1 min); cpu
(ICL 800 steps, MAML 500, the other learners 2,000, batch 126; 3,072 test tasks; 3.5-6 min); paper (1M steps per
run, a GPU job). Measured results: docs/results.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tasks
from experiments import common, spec
from experiments.common import FAMILIES, LEARNERS, MIXTURE, MIXTURE_SCALES
from icl_meta import agreement, study
from icl_meta.claims import Claim
from icl_meta.contracts import TaskFamily
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, run_config

TESTS = ("prototype", "pairwise", "amortization", MIXTURE)
VARIANT_DEFAULTS = {"start": 2, "sim_nc": 1, "ave_anchors": "none", "test_set": "canonical"}


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
    changed = [(k, getattr(args, k)) for k, v in VARIANT_DEFAULTS.items() if getattr(args, k) != v]
    return "".join(f"_{k.replace('_', '-')}-{v}" for k, v in changed)


@spec.register("fig2_mixture")
class Fig2Mixture(spec.Experiment):
    """Figure 2 (bottom): every learner trained on the mixture of task families, and which rule each one runs."""

    figure = "fig2"
    order = 1
    scales = MIXTURE_SCALES
    learners = LEARNERS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--start", type=int, default=2, help="first position in the loss (default 2; umix.py: 0)")
        parser.add_argument("--sim-nc", type=int, default=1, help="class vectors of the pairwise tasks (default 1)")
        parser.add_argument("--ave-anchors", choices=("none", "flipped"), default="none", help="amortization anchors")
        parser.add_argument("--test-set", choices=("canonical", "reference"), default="canonical", help="test sets")

    def stem(self, args: argparse.Namespace) -> str:
        return f"{self.name}_{args.scale}{variant_suffix(args)}"

    def run_root(self, args: argparse.Namespace) -> Path:
        return args.out or Path("runs") / self.reproduce_name() / f"{args.scale}{variant_suffix(args)}"

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        args, scale, names = ctx.args, ctx.scale, ctx.learners
        training = common.training_mixture(args.sim_nc, args.ave_anchors)
        families = test_families(args.test_set, training)
        tests = study.sample_test_sets(families, scale.test_tasks, scale.n, ctx.seed)
        grid = common.mixture_jobs(scale, names, ctx.seed, args.start, args.sim_nc, args.ave_anchors)
        curves, runs, params = study.run_grid(grid, ctx.root, tests, families, progress=ctx.progress)
        curves += study.reference_curves(tests, families)
        family_tests = {name: tests[name] for name in FAMILIES}  # the mixture's tasks have no single optimal rule
        agreement_records = []
        for job, p in zip(grid, params, strict=True):
            agreement_records += study.agreement_curves(job.learner, p, family_tests, families, train=job.train)
        starts = {name: fam.reference_loss_start for name, fam in families.items()}
        config = {
            "scale": ctx.scale_name,
            "seed": ctx.seed,
            "learners": list(names),
            "variant": {"start": args.start, "sim_nc": args.sim_nc, "ave_anchors": args.ave_anchors},
            "test_set": args.test_set,
            "test_families": {name: {"name": f.name, **f.hparams()} for name, f in families.items()},
            "settings": scale.settings(),
            "runs": {job.key: run_config(self.name, job.learner, job.family, job.cfg) for job in grid},
        }
        doc = results_document(self.name, config, curves, ctx.seed)
        doc.update(summary=study.mean_table(curves, starts), run_summaries=runs, variant_suffix=variant_suffix(args))
        doc.update(
            agreement=agreement_records,
            agreement_summary=study.agreement_summaries(agreement_records, families, starts),
            agreement_s=agreement.seconds(agreement_records),
        )
        return doc

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """T6: on the mixture test set an in-context model beats every mixture-trained meta-learner. Per test family
        and learner: it agrees most with the family's optimal rule. Each only where its learner learns those tasks
        (`common.learns`)."""
        table, names = doc["summary"], doc["config"]["learners"]
        tasks_ = doc["config"]["settings"]["test_tasks"]
        icls = [n for n in names if common.in_context(n)]
        metas = [n for n in names if not common.in_context(n)]
        value = {n: study.table_value(table, n, MIXTURE, train=MIXTURE) for n in names}
        out = []
        for icl in icls if metas else []:
            best = max(metas, key=lambda n: value[n])
            out.append(
                Claim(
                    f"T6_{icl}_{MIXTURE}",
                    f"on the {MIXTURE} test set the {MIXTURE}-trained {icl} has a higher mean accuracy than every "
                    f"{MIXTURE}-trained meta-learner",
                    value[icl] - value[best],
                    ">",
                    0.0,
                    n=tasks_,
                    method=f"mean accuracy over the reporting positions, {icl} {value[icl]:.4f} minus the best of "
                    f"{', '.join(metas)} ({best} {value[best]:.4f}), on the same test tasks",
                    preconditions=(common.learns(table, icl, MIXTURE, MIXTURE, tasks_),),
                )
            )
        agreement_tasks = min(study.AGREEMENT_TASKS, tasks_)
        for test, summary in doc["agreement_summary"].items():
            for check in summary["own_rule"] or []:
                learner = check["learner"]
                out.append(
                    Claim(
                        f"rule_{learner}_{test}",
                        f"on {test} tasks the {check['train']}-trained {learner} agrees most with the family's "
                        f"optimal rule, {check['own_rule']}",
                        check["margin"],
                        ">",
                        0.0,
                        n=agreement_tasks,
                        method=f"argmax agreement, mean over positions {check['positions']}: with "
                        f"{check['own_rule']} {check['own_value']:.4f} minus with the closest other rule "
                        f"({check['best_other']} {check['best_other_value']:.4f})",
                        preconditions=(common.learns(table, learner, test, check["train"], tasks_),),
                    )
                )
        return out

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        """fig2_mixture_SCALE.png (one panel per test set), fig2_mixture_table_SCALE.png (mean accuracies) and
        fig2_agreement_SCALE.png (agreement with each rule)."""
        curves, table = doc["curves"], doc["summary"]
        scale = f"{doc['scale']}{doc.get('variant_suffix', '')}"
        panels = [(f"trained on the mixture, tested on {t}", [c for c in curves if c["test"] == t]) for t in TESTS]
        title = f"Figure 2 (bottom), scale {scale}"
        plot_panels(panels, figures / f"fig2_mixture_{scale}.png", title=title, ylim=(0, 1))
        rows = list(doc["config"]["learners"])
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

    def report(self, doc: dict[str, Any]) -> None:
        table = doc["summary"]
        refs = list(dict.fromkeys(r["learner"] for r in table if r["kind"] == "reference"))
        print("\nmixture-trained learners (Figure 2 bottom):")
        common.print_table(table, [*doc["config"]["learners"], *refs], TESTS, train=MIXTURE)
        wall_s = doc.get("wall_s")
        common.print_own_rule(doc["agreement_summary"], doc["agreement_s"], float("nan") if wall_s is None else wall_s)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Fig2Mixture, argv)


if __name__ == "__main__":
    spec.script(Fig2Mixture)
