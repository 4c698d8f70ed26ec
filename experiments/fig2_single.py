"""Figure 2 (top): learnability on single task families, and the cross table.

    icl-meta reproduce fig2 --scale cpu                 # this experiment and fig2_mixture
    python -m experiments.fig2_single --scale cpu       # this one only; --learners icl,protonet for a subset

Each learner (default: the ICL transformer with the paper preset and prefix protocol, MatchNet, ProtoNet, CNP and MAML;
any registered learner with --learners) is trained on each of prototype, pairwise and amortization tasks with that
family's learning rate, batch and steps (the reference's; docs/papers.md), then tested on every family: the diagonal
gives the three panels of Figure 2 (top), all nine the cross table. Runs live in `--out` (default runs/fig2/SCALE)
and are resumed or reused when it is run again; the results (tidy curves, mean table, claims) and the PNGs go to
`--figures` (default figures/): fig2_single_SCALE.{json,png} and fig2_cross_SCALE.png.

Scales (`common.SINGLE_SCALES`), times on a 2-core CPU: smoke (n=12, 6 steps per run, 64 test tasks; ~1.5 min); cpu
(ICL 300-600 steps, MAML 300-500, the other learners 1,000-2,000; ICL and MAML on 8 positions per step, one per stratum,
in 4 truncated passes; 2,048 test tasks; 5.5-8.5 min); paper (the reference's 100k-1M steps per run, a GPU job).
Measured results: docs/results.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common, spec
from experiments.common import FAMILIES, LEARNERS, SINGLE_SCALES
from icl_meta import study
from icl_meta.claims import Claim
from icl_meta.plotting import plot_panels, plot_table
from icl_meta.runs import results_document, run_config

WITHIN = 0.01  # T2-T4: an in-context model matches the best trained meta-learner to within this, or beats it
TARGETS = {"prototype": "T2", "pairwise": "T3", "amortization": "T4"}
# T5: the paper's three meta-learners, each with the inductive bias of one family (the claim is about these learners).
INDUCTIVE_BIAS = {"prototype": "protonet", "pairwise": "matchnet", "amortization": "cnp"}


@spec.register("fig2_single")
class Fig2Single(spec.Experiment):
    """Figure 2 (top): every learner trained and tested on each task family, and the cross table."""

    figure = "fig2"
    order = 0
    scales = SINGLE_SCALES
    learners = LEARNERS

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        scale, names = ctx.scale, ctx.learners
        families = common.test_families()
        tests = study.sample_test_sets(families, scale.test_tasks, scale.n, ctx.seed)
        grid = common.single_jobs(scale, names, ctx.seed)
        curves, runs, _ = study.run_grid(grid, ctx.root, tests, families, progress=ctx.progress)
        curves += study.reference_curves(tests, families)
        table = study.mean_table(curves, {name: fam.reference_loss_start for name, fam in families.items()})
        config = {
            "scale": ctx.scale_name,
            "seed": ctx.seed,
            "learners": list(names),
            "settings": scale.settings(),
            "runs": {job.key: run_config(self.name, job.learner, job.family, job.cfg) for job in grid},
        }
        doc = results_document(self.name, config, curves, ctx.seed)
        doc.update(summary=table, run_summaries=runs)
        return doc

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """T2-T4: on each family an in-context model is within WITHIN of the best trained meta-learner or better.
        T5: on each family the paper's meta-learner with that family's inductive bias beats the other two. Each
        only where the learners it rests on learn (`common.learns`)."""
        table, names = doc["summary"], doc["config"]["learners"]
        tasks = doc["config"]["settings"]["test_tasks"]
        icls = [n for n in names if common.in_context(n)]
        metas = [n for n in names if not common.in_context(n)]
        out = []
        for fam, target in TARGETS.items():
            value = {n: study.table_value(table, n, fam, train=fam) for n in names}
            if metas:
                best = max(metas, key=lambda n: value[n])
                for icl in icls:
                    out.append(
                        Claim(
                            f"{target}_{icl}_{fam}",
                            f"on {fam} tasks {icl} is within {WITHIN} of the best trained meta-learner or better",
                            value[icl] - value[best],
                            ">=",
                            -WITHIN,
                            n=tasks,
                            method=f"mean accuracy over the reporting positions, {icl} {value[icl]:.4f} minus the "
                            f"best of {', '.join(metas)} ({best} {value[best]:.4f}), on the same test tasks",
                            preconditions=tuple(common.learns(table, n, fam, fam, tasks) for n in (icl, best)),
                        )
                    )
        for fam, bias in INDUCTIVE_BIAS.items():
            others = [m for m in INDUCTIVE_BIAS.values() if m != bias]
            if all(m in names for m in (bias, *others)):
                value = {m: study.table_value(table, m, fam, train=fam) for m in (bias, *others)}
                best = max(others, key=lambda m: value[m])
                out.append(
                    Claim(
                        f"T5_{bias}_{fam}",
                        f"on {fam} tasks {bias}, the meta-learner with the family's inductive bias, has the highest "
                        f"mean accuracy of the three ({', '.join((bias, *others))})",
                        value[bias] - value[best],
                        ">",
                        0.0,
                        n=tasks,
                        method=f"mean accuracy over the reporting positions, {bias} {value[bias]:.4f} minus the "
                        f"better of the other two ({best} {value[best]:.4f}), on the same test tasks",
                        preconditions=(common.learns(table, bias, fam, fam, tasks),),
                    )
                )
        return out

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        """fig2_single_SCALE.png (one panel per family, learners trained on it) and fig2_cross_SCALE.png."""
        curves, table, scale = doc["curves"], doc["summary"], doc["scale"]
        panels = [
            (f"{fam}: trained and tested on it", [c for c in curves if c["test"] == fam and c["train"] in (fam, None)])
            for fam in FAMILIES
        ]
        plot_panels(panels, figures / f"fig2_single_{scale}.png", title=f"Figure 2 (top), scale {scale}", ylim=(0, 1))
        rows = [(n, fam) for n in doc["config"]["learners"] for fam in FAMILIES]
        plot_table(
            study.table_matrix(table, rows, FAMILIES),
            [f"{n} <- {fam}" for n, fam in rows],
            [f"test {f}" for f in FAMILIES],
            figures / f"fig2_cross_{scale}.png",
            title=f"mean accuracy, learner <- training family (scale {scale})",
        )

    def report(self, doc: dict[str, Any]) -> None:
        table = doc["summary"]
        refs = list(dict.fromkeys(r["learner"] for r in table if r["kind"] == "reference"))
        print("\nsame-family training (Figure 2 top):")
        common.print_table(table, [*doc["config"]["learners"], *refs], FAMILIES, train=None)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Fig2Single, argv)


if __name__ == "__main__":
    spec.script(Fig2Single)
