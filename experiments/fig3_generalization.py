"""Figure 3: generalisation of the mixture-trained learners, to shifted inputs and to an unseen task type, and the
in-context model's decision regions.

    icl-meta reproduce fig3 --scale cpu                     # this experiment
    python -m experiments.fig3_generalization --scale cpu   # the same; --learners icl,protonet for a subset

The learners are Figure 2 (bottom)'s (default ICL, MatchNet, ProtoNet, CNP and MAML; any registered classification
learner with --learners), trained on the canonical mixture: fig2_mixture's runs, loaded from `--out` (default
runs/fig2/SCALE), trained there first if missing. They and the closed-form rules are tested on
(a) prototype, pairwise (nc=4) and amortization tasks with the input scale sigma (trained at 1), mean accuracy over all
positions; (b) radius tasks, r ~ U(2, 4), an unseen task type whose best in-context rule (1-NN-like) is none of the
three, mean over positions 2..N-1. (c) The first in-context model's (capability `in_context_model`) predicted class on
a grid around one 2-d task of each of the four families, given its first `--context` examples, against the true rule.
(d) Which rule each learner runs: its argmax agreement with ncm, matching, averaging, 1-NN and 3-NN on the first 256
tasks of the sets of (a) (an in-context model's at every sigma, the others' at the lowest and highest) and (b).
Claims: T7 and T8 (docs/papers.md) and the own-rule checks, each only where its learner learns the unshifted tasks.
Outputs in `--figures`: fig3_generalization_SCALE.json, fig3_shift_SCALE.png, fig3_radius_SCALE.png,
fig3_regions_SCALE.{png,npz} (the npz: the region grids), fig3_agreement_SCALE.png, fig3_agreement_shift_SCALE.png.

Scales, times on a 2-core CPU: smoke (n=12, sigma 1 and 3, 64 tasks per set, a 16 x 16 grid; ~1 min with its tiny
mixture runs); cpu (n=50, sigma 1..5, 2,048 tasks per set, a 120 x 120 grid; ~4 min with Figure 2's runs in place,
evaluation only); paper (10,240 radius tasks, a 200 x 200 grid; a GPU job after fig2_mixture's). Measured results:
docs/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from experiments import common, spec
from experiments.common import FAMILIES, LEARNERS, MIXTURE, MIXTURE_SCALES
from experiments.common import test_families as shift_families
from icl_meta import agreement, evaluate, study
from icl_meta.claims import Claim
from icl_meta.contracts import TaskFamily
from icl_meta.errors import ConfigError
from icl_meta.plotting import Regions, plot_agreement, plot_panels, plot_regions, plot_sweep
from icl_meta.regions import decision_regions
from icl_meta.runs import results_document, run_config

SHIFT, RADIUS = "shift", "radius"  # the `part` label of the curves of (a) and (b)
RADIUS_START = 2  # T8 quotes the radius accuracies over positions 2..N-1
AGREEMENT_TASKS = 256  # per set in (d); with 512, or every learner at every sigma, it is 14-18% of the script's time
RUNS_FIGURE = "fig2"  # the mixture runs are Figure 2's: runs/fig2/SCALE unless --out
ONE_NN = "knn"  # the 1-NN rule's label among the closed-form references
# Claim thresholds, fixed before the results: a learner learns a family when its mean accuracy at sigma 1 is above
# chance by LEARNS_MARGIN (the precondition); T7: an in-context model's accuracy does not rise with sigma and drops by
# SHIFT_TOLERANCE on at least one family, while each family's own closed-form rule stays within it; T8: every learner
# is FAR_BELOW the 1-NN rule on radius tasks, a meta-learner at most NEAR_CHANCE, and an in-context model's radius
# curve rises by at most SHIFT_TOLERANCE from its first WINDOW reporting positions to its last WINDOW.
CHANCE, LEARNS_MARGIN, SHIFT_TOLERANCE, FAR_BELOW, NEAR_CHANCE, WINDOW = 0.5, 0.05, 0.03, 0.1, 0.56, 10


@dataclasses.dataclass(frozen=True)
class Fig3Scale(spec.Scale):
    """Figure 3's test settings at one scale (the learners are fig2_mixture's runs at the same scale)."""

    test_tasks: int  # per shifted test set
    radius_tasks: int
    n: int
    sigmas: tuple[float, ...]
    grid: int  # G: decision regions on a G x G grid
    chunk: int = 4096  # grid sequences per compiled call


SCALES: dict[str, Fig3Scale] = {
    "smoke": Fig3Scale(test_tasks=64, radius_tasks=64, n=12, sigmas=(1.0, 3.0), grid=16),
    "cpu": Fig3Scale(test_tasks=2048, radius_tasks=2048, n=50, sigmas=(1.0, 2.0, 3.0, 4.0, 5.0), grid=120),
    "paper": Fig3Scale(test_tasks=2048, radius_tasks=10_240, n=50, sigmas=(1.0, 2.0, 3.0, 4.0, 5.0), grid=200),
}


def radius_family() -> TaskFamily:
    return tasks.get("radius", r_min=2.0, r_max=4.0)


def region_families() -> dict[str, TaskFamily]:
    """The families of the decision-region panels: the shift test families at sigma=1, and radius."""
    return {**shift_families(), RADIUS: radius_family()}


# ---------------------------------------------------------------------------------------------------------------
# Claims, from the results document's numbers only


def accuracy(doc: dict[str, Any], name: str, test: str, sigma: float | None) -> float:
    """The mixture-trained learner's (or closed-form rule's) mean accuracy on `test` at `sigma` (None: radius)."""
    return study.table_value(doc["summary"], name, test, train=MIXTURE, sigma=sigma)


def learns(doc: dict[str, Any], name: str, test: str | None = None) -> Claim:
    """The precondition of a learner's claims: its mean accuracy on the unshifted `test` tasks (None: the three
    families together) above chance by LEARNS_MARGIN."""
    settings = doc["config"]["settings"]
    sigma, tests = settings["sigmas"][0], FAMILIES if test is None else (test,)
    value = float(np.mean([accuracy(doc, name, t, sigma) for t in tests]))
    what = f"the {MIXTURE}-trained {name} learns {' and '.join(tests)} tasks at sigma {sigma:g}: mean accuracy above "
    what += f"chance ({CHANCE}) + {LEARNS_MARGIN}"
    n, method = settings["test_tasks"] * len(tests), "mean accuracy over all positions"
    return Claim(f"{name}_learns_{test or 'unshifted'}", what, value, ">", CHANCE + LEARNS_MARGIN, n=n, method=method)


def flat_rules(doc: dict[str, Any]) -> list[Claim]:
    """T7: each family's own closed-form rule stays within SHIFT_TOLERANCE of its accuracy at the lowest sigma."""
    sigmas, n, out = doc["config"]["settings"]["sigmas"], doc["config"]["settings"]["test_tasks"], []
    for fam, family in shift_families().items():
        rule = family.optimal_rule
        move = max(abs(accuracy(doc, rule, fam, s) - accuracy(doc, rule, fam, sigmas[0])) for s in sigmas)
        what = f"the closed-form {rule} rule's accuracy on {fam} tasks stays within {SHIFT_TOLERANCE} at every sigma"
        method = f"largest |mean accuracy at sigma - at sigma {sigmas[0]:g}| over sigma = {', '.join(map(str, sigmas))}"
        out.append(Claim(f"T7_{rule}_{fam}_flat", what, move, "<=", SHIFT_TOLERANCE, n=n, method=method))
    return out


def shift_claims(doc: dict[str, Any], name: str) -> list[Claim]:
    """T7: an in-context model's accuracy does not rise with sigma on any family, and drops by SHIFT_TOLERANCE from
    the lowest to the highest sigma on average over the families."""
    sigmas, n, out = doc["config"]["settings"]["sigmas"], doc["config"]["settings"]["test_tasks"], []
    for fam in FAMILIES:
        rises = [accuracy(doc, name, fam, b) - accuracy(doc, name, fam, a) for a, b in pairwise(sigmas)]
        what = f"{name}'s accuracy on {fam} tasks does not rise with sigma"
        method = f"largest rise of the mean accuracy from one sigma to the next, sigma = {', '.join(map(str, sigmas))}"
        pre = (learns(doc, name, fam),)
        rise = max(rises, default=math.nan)
        out.append(Claim(f"T7_{name}_{fam}_no_rise", what, rise, "<=", 0.0, n=n, method=method, preconditions=pre))
    drops = {fam: accuracy(doc, name, fam, sigmas[0]) - accuracy(doc, name, fam, sigmas[-1]) for fam in FAMILIES}
    what = f"{name}'s accuracy drops by at least {SHIFT_TOLERANCE} from sigma {sigmas[0]:g} to {sigmas[-1]:g}, "
    what += "averaged over the families"
    method = "mean over the families of the drop of the mean accuracy: "
    method += ", ".join(f"{f} {d:+.4f}" for f, d in drops.items())
    pre = tuple(learns(doc, name, fam) for fam in FAMILIES)
    drop = float(np.mean(list(drops.values())))  # a fixed aggregate, not the best of three
    return [*out, Claim(f"T7_{name}_drop", what, drop, ">=", SHIFT_TOLERANCE, n=n, method=method, preconditions=pre)]


def radius_claims(doc: dict[str, Any], name: str) -> list[Claim]:
    """T8: no learner selects or builds the unseen task type's algorithm: each is FAR_BELOW the 1-NN rule on radius
    tasks; a meta-learner at most NEAR_CHANCE; an in-context model's curve rises by at most SHIFT_TOLERANCE."""
    n, pre = doc["config"]["settings"]["radius_tasks"], (learns(doc, name),)
    value, ref = accuracy(doc, name, RADIUS, None), accuracy(doc, ONE_NN, RADIUS, None)
    over = f"mean accuracy over positions {RADIUS_START}..N-1"
    what, method = f"on radius tasks {name} is at least {FAR_BELOW} below the 1-NN rule", f"1-NN {ref:.4f} minus "
    method += f"{name} {value:.4f}, {over}"
    out = [Claim(f"T8_{name}_below_1nn", what, ref - value, ">=", FAR_BELOW, n=n, method=method, preconditions=pre)]
    if not common.in_context(name):
        what = f"on radius tasks the meta-learner {name} stays near chance, at most {NEAR_CHANCE}"
        return [*out, Claim(f"T8_{name}_near_chance", what, value, "<=", NEAR_CHANCE, n=n, method=over,
                            preconditions=pre)]  # fmt: skip
    curve = next(c for c in doc["curves"] if c["part"] == RADIUS and c["learner"] == name and c["kind"] == "trained")
    end = len(curve["mean"])
    late = evaluate.mean_over(curve, max(end - WINDOW, RADIUS_START))
    rise = late - evaluate.mean_over(curve, RADIUS_START, min(RADIUS_START + WINDOW, end))
    what = f"{name}'s accuracy on radius tasks rises by at most {SHIFT_TOLERANCE} with more context"
    method = f"mean accuracy over the last {WINDOW} positions minus over the {WINDOW} from {RADIUS_START}"
    return [*out, Claim(f"T8_{name}_no_rise", what, rise, "<=", SHIFT_TOLERANCE, n=n, method=method,
                        preconditions=pre)]  # fmt: skip


def own_rule(doc: dict[str, Any], check: dict[str, Any]) -> Claim:
    """Which rule a learner runs: at this sigma it agrees most with the family's optimal rule."""
    name, fam, sigma, rule = check["learner"], check["test"], check["sigma"], check["own_rule"]
    what = f"on {fam} tasks at sigma {sigma:g} the {check['train']}-trained {name} agrees most with the family's "
    what += f"optimal rule, {rule}"
    method = f"argmax agreement, mean over positions {check['positions']}: with {rule} {check['own_value']:.4f} minus "
    method += f"with the closest other rule ({check['best_other']} {check['best_other_value']:.4f})"
    n, pre = min(AGREEMENT_TASKS, doc["config"]["settings"]["test_tasks"]), (learns(doc, name, fam),)
    return Claim(f"rule_{name}_{fam}_sigma{sigma:g}", what, check["margin"], ">", 0.0, n=n, method=method,
                 preconditions=pre)  # fmt: skip


@spec.register("fig3_generalization")
class Fig3Generalization(spec.Experiment):
    """Figure 3: the mixture-trained learners under input shift and on an unseen task type, and decision regions."""

    figure = "fig3"
    scales = SCALES
    learners = LEARNERS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--context", type=int, default=20, help="context examples of the decision regions (20)")

    def run_root(self, args: argparse.Namespace) -> Path:
        return args.out or Path("runs") / RUNS_FIGURE / args.scale

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        scale, names, k = ctx.scale, ctx.learners, ctx.args.context
        if k < 1:
            raise ConfigError(f"--context must be an integer >= 1, got {k}")
        # The canonical Figure 2 (bottom) runs: start 2, pairwise nc=1, amortization without anchors.
        jobs = common.mixture_jobs(MIXTURE_SCALES[ctx.scale_name], names, ctx.seed)
        _, runs, params = study.run_grid(jobs, ctx.root, {}, {}, progress=ctx.progress)  # trained or loaded; no tests
        curves, analyses = [], []
        for sigma in scale.sigmas:  # (a); the same TEST key at every sigma: the sets rescale the same draws
            families = {name: family.with_sigma(sigma) for name, family in shift_families().items()}
            tests = study.sample_test_sets(families, scale.test_tasks, scale.n, ctx.seed)
            ends = sigma in (scale.sigmas[0], scale.sigmas[-1])
            for job, p in zip(jobs, params, strict=True):
                curves += study.evaluate_job(job, p, tests, families, sigma=sigma, part=SHIFT)
                if ends or common.in_context(job.learner.name):
                    analyses.append(study.agreement_analysis(job.learner, p, tests, families, (0, None),
                                    AGREEMENT_TASKS, train=job.train, sigma=sigma, part=SHIFT))  # fmt: skip
            curves += study.reference_curves(tests, families, sigma=sigma, part=SHIFT)
        families = {RADIUS: radius_family()}  # (b)
        tests = study.sample_test_sets(families, scale.radius_tasks, scale.n, ctx.seed)
        for job, p in zip(jobs, params, strict=True):
            curves += study.evaluate_job(job, p, tests, families, part=RADIUS)
            analyses.append(study.agreement_analysis(job.learner, p, tests, families, (RADIUS_START, None),
                            AGREEMENT_TASKS, train=job.train, part=RADIUS))  # fmt: skip
        curves += study.reference_curves(tests, families, part=RADIUS)
        regions, arrays = [], {}
        icl = next((i for i, job in enumerate(jobs) if common.in_context(job.learner.name)), None)
        if icl is not None:  # (c)
            regions, arrays = decision_regions(
                jobs[icl].learner, params[icl], region_families(), k, scale.grid, ctx.seed, scale.chunk
            )
        else:
            print("(c) skipped: the decision regions are an in-context model's, and --learners has none")
        config = {
            "scale": ctx.scale_name,
            "seed": ctx.seed,
            "learners": list(names),
            "context": k,
            "test_families": {name: {"name": f.name, **f.hparams()} for name, f in region_families().items()},
            "settings": scale.settings(),
            "runs": {job.key: run_config("fig2_mixture", job.learner, job.family, job.cfg) for job in jobs},
        }
        doc = results_document(self.name, config, curves, ctx.seed)
        starts = {**dict.fromkeys(FAMILIES, 0), RADIUS: RADIUS_START}  # T7's positions (all), T8's (2..N-1)
        summary = [{**row, "part": c["part"], **({"sigma": c["sigma"]} if "sigma" in c else {})}
                   for row, c in zip(study.mean_table(curves, starts), curves, strict=True)]  # fmt: skip
        doc.update(summary=summary, regions=regions, run_summaries=runs)
        records = [r for a in analyses for r in a["agreement"]]
        tests_seen = dict.fromkeys(r["test"] for r in records)  # each analysis's summaries, test by test
        summaries = [a["agreement_summary"][t] for t in tests_seen for a in analyses if t in a["agreement_summary"]]
        doc.update(
            agreement=records,
            agreement_summary=[row for s in summaries for row in s["rows"]],
            agreement_s=agreement.seconds(records),
            own_rule=[check for s in summaries for check in s["own_rule"] or []],
        )
        if arrays:  # the region grids the PNG is drawn from
            ctx.figures.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(ctx.figures / f"fig3_regions_{ctx.scale_name}.npz", **arrays)
        return doc

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """T7 per in-context model and per family's own closed-form rule, T8 per learner, and per (learner, family,
        sigma) whether it agrees most with the family's optimal rule; a learner's claims only where it learns the
        unshifted test tasks."""
        names = doc["config"]["learners"]
        out = flat_rules(doc) + [c for name in filter(common.in_context, names) for c in shift_claims(doc, name)]
        out += [c for name in names for c in radius_claims(doc, name)]
        return out + [own_rule(doc, check) for check in doc["own_rule"]]

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        """fig3_shift_SCALE.png, fig3_radius_SCALE.png, the agreement PNGs and (with an in-context model)
        fig3_regions_SCALE.png."""
        table, scale = doc["summary"], doc["scale"]
        order = {name: i for i, name in enumerate(doc["config"]["learners"])}  # trained learners first
        shift = sorted((r for r in table if r["part"] == SHIFT), key=lambda r: order.get(r["learner"], len(order)))
        plot_sweep(
            [(f"{fam}: mean over all positions", [r for r in shift if r["test"] == fam]) for fam in FAMILIES],
            figures / f"fig3_shift_{scale}.png", x="sigma", xlabel="input scale sigma (trained at 1)",
            title=f"Figure 3 (a): mixture-trained learners under distribution shift, scale {scale}", ylim=(0.4, 1.0),
        )  # fmt: skip
        if doc.get("agreement_summary"):
            draw_agreement(doc, figures)
        radius = [c for c in doc["curves"] if c["part"] == RADIUS]
        title = f"mixture-trained learners on radius tasks r ~ U(2, 4)\n(unseen in training), scale {scale}"
        plot_panels([(title, radius)], figures / f"fig3_radius_{scale}.png", ylim=(0.3, 1.0))
        if doc["regions"]:
            draw_regions(doc, figures)

    def report(self, doc: dict[str, Any]) -> None:
        names, table = doc["config"]["learners"], doc["summary"]
        refs = list(dict.fromkeys(r["learner"] for r in table if r["kind"] == "reference"))
        lo, hi = doc["config"]["settings"]["sigmas"][0], doc["config"]["settings"]["sigmas"][-1]
        print(f"\n(a) mixture-trained learners under input shift: mean accuracy over all positions at sigma {lo:g} / "
              f"{hi:g}")  # fmt: skip
        print(f"{'':<12}" + "".join(f"{f'{fam} {lo:g}':>17}{f'{hi:g}':>7}{'drop':>7}" for fam in FAMILIES))
        for name in [*names, *refs]:
            a_b = [(study.table_value(table, name, f, sigma=lo), study.table_value(table, name, f, sigma=hi))
                   for f in FAMILIES]  # fmt: skip
            print(f"{name:<12}" + "".join(f"{a:17.3f}{b:7.3f}{a - b:7.3f}" for a, b in a_b))
        print(f"\n(b) radius tasks r ~ U(2, 4): mean accuracy over positions {RADIUS_START}..N-1")
        for name in [*names, *refs]:
            value = study.table_value(table, name, RADIUS, sigma=None)
            print(f"{name:<12}{'-' if math.isnan(value) else f'{value:.3f}':>8}")
        wall = "" if doc.get("wall_s") is None else f" of the script's {doc['wall_s']:.0f} s"
        print(f"\n(d) argmax agreement with the family's optimal rule (own) and the closest other rule, mean over all "
              f"positions ({doc['agreement_s']:.0f} s{wall})")  # fmt: skip
        for c in doc["own_rule"]:
            print(f"  {c['test']:<14}sigma {c['sigma']:<4g}{c['learner']:<10}{c['own_rule']} {c['own_value']:.3f} vs "
                  f"{c['best_other']} {c['best_other_value']:.3f} ({c['margin']:+.3f})")  # fmt: skip
        for name in filter(common.in_context, names):
            cells = ", ".join(f"{r['rule']} {r['mean']:.3f}" for r in doc["agreement_summary"]
                              if r["part"] == RADIUS and r["learner"] == name)  # fmt: skip
            print(f"  radius (positions {RADIUS_START}..N-1), {name}: {cells}")


# ---------------------------------------------------------------------------------------------------------------


def draw_agreement(doc: dict[str, Any], figures: Path) -> None:
    """fig3_agreement_SCALE.png (learner x rule heat maps: each family at the lowest and highest sigma, and radius)
    and fig3_agreement_shift_SCALE.png (each in-context model's agreement with each rule against sigma)."""
    rows, scale = doc["agreement_summary"], doc["scale"]
    sigmas = sorted({r["sigma"] for r in rows if r["part"] == SHIFT})
    shown, optimal = [], {}
    for fam, family in shift_families().items():
        for sigma in (sigmas[0], sigmas[-1]):
            label = f"{fam}, sigma {sigma:g}"
            shown += [{**r, "test": label} for r in rows if r["test"] == fam and r["sigma"] == sigma]
            optimal[label] = family.optimal_rule
    shown += [{**r, "test": f"{RADIUS} (unseen type)"} for r in rows if r["part"] == RADIUS]
    title = f"Figure 3: agreement with each rule\n(mixture-trained, scale {scale}; red: optimal rule)"
    plot_agreement(shown, figures / f"fig3_agreement_{scale}.png", title, optimal)
    panels = [
        (f"{name} on {fam}", [{**r, "learner": r["rule"]} for r in rows if r["test"] == fam and r["learner"] == name])
        for name in filter(common.in_context, doc["config"]["learners"])
        for fam in FAMILIES
    ]
    if any(records for _, records in panels):
        plot_sweep(
            panels, figures / f"fig3_agreement_shift_{scale}.png", x="sigma", xlabel="input scale sigma (trained at 1)",
            ylabel="argmax agreement with the rule",
            title=f"Figure 3: which rule the mixture-trained in-context model agrees with under shift, scale {scale}",
            ylim=(0, 1),
        )  # fmt: skip


def draw_regions(doc: dict[str, Any], figures: Path) -> None:
    """fig3_regions_SCALE.png from fig3_regions_SCALE.npz: each family's true rule above the learner's regions."""
    scale = doc["scale"]
    with np.load(figures / f"fig3_regions_{scale}.npz") as arrays:
        top, bottom = [], []
        for record in doc["regions"]:
            fam = record["family"]
            c = doc["config"]["test_families"][fam]["num_classes"]
            extent = tuple(arrays[f"{fam}_extent"].tolist())
            context = {"points_ND": arrays[f"{fam}_context_x"], "point_labels_N": arrays[f"{fam}_context_y"]}
            true_GG = arrays[f"{fam}_true"]
            top.append(Regions(true_GG, extent, c, **context, title=f"{fam}: true rule"))
            title = f"{record['learner']}, {record['context']} examples: agrees on {record['agreement']:.0%}"
            bottom.append(Regions(arrays[f"{fam}_pred"], extent, c, **context, boundary_GG=true_GG, title=title))
    learner = doc["regions"][0]["learner"]
    plot_regions(
        [top, bottom], figures / f"fig3_regions_{scale}.png",
        title=f"Decision regions of the mixture-trained {learner} (line: the true boundary; grey: invalid), {scale}",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Fig3Generalization, argv)


if __name__ == "__main__":
    spec.script(Fig3Generalization)
