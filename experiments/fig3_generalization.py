"""Figure 3: generalisation of the mixture-trained learners, to shifted inputs and to an unseen task type, and the ICL
model's decision regions (PAPER.md sections 2.4, 2.5 and 8.4, targets T7 and T8).

    icl-meta reproduce fig3 --scale cpu                     # this script
    python -m experiments.fig3_generalization --scale cpu   # the same; --learners icl,protonet for a subset

The learners are Figure 2 (bottom)'s: ICL, MatchNet, ProtoNet, CNP and MAML trained on the canonical mixture
(fig2_mixture.py's runs, loaded from `--out`, default runs/fig2/SCALE; trained there first if missing).
(a) distribution shift: each learner and each closed-form rule tested on prototype, pairwise (nc=4) and amortization
tasks with the input scale sigma = 1..5 (trained at 1); the summary is the mean accuracy over all positions.
(b) unseen task type: radius tasks, r ~ U(2, 4), whose best in-context algorithm (1-NN-like) is none of the three.
(c) decision regions: ICL's predicted class on a grid around one 2-d task of each of the four families, given the
task's first `--context` examples, against the task's true rule.
(d) which algorithm each learner runs: its argmax agreement with each closed-form rule (ncm, matching, averaging, 1-NN,
3-NN) on the first 256 tasks of the sets of (a) (ICL's at every sigma, the others' at the lowest and highest) and
(b) (`icl_meta.agreement`), and whether it agrees most with the family's optimal rule at each sigma.
Outputs in `--figures`: fig3_generalization_SCALE.json, fig3_shift_SCALE.png, fig3_radius_SCALE.png,
fig3_regions_SCALE.png and fig3_regions_SCALE.npz (the region grids the PNG is drawn from), fig3_agreement_SCALE.png
(heat maps) and fig3_agreement_shift_SCALE.png (ICL's agreement with each rule against sigma).

Expected runtime on a 2-core CPU: smoke ~1 min (it trains tiny mixture runs first); cpu ~5 min with Figure 2's runs
in place (evaluation only: ICL and MAML each take 4-10 s per 2048-task test set, 16 sets; measured 8 min wall and
5 min CPU while another job shared the machine); paper: a GPU job after fig2_mixture.py's.
Expected result (cpu; measured with seed 0, mean accuracy over positions 0..49 at sigma 1 -> 5):
(a) T7 holds for ICL: it falls monotonically with sigma on every family, prototype .926 -> .729, pairwise .912 ->
.734, amortization .944 -> .615, while each family's own closed-form rule stays nearly flat (ncm on prototype
.930 -> .894, a drop of .035, just over T7's .03 tolerance; matching on pairwise .921 at every sigma; averaging on
amortization .918 -> .923). The trained meta-learners lose at most .06 (ProtoNet on prototype); some gain where a
wider spread suits their rule (MatchNet, like the matching rule, on amortization: .730 -> .889). At sigma=5 ICL is
the worst of the five on amortization and above only CNP (at chance off amortization) on the other two.
(b) T8 holds: on radius tasks (mean over positions 2..49) ICL .491, MatchNet .500, ProtoNet .539, CNP .489, all near
chance and far below 1-NN .810; ICL's curve falls with context (.54 at positions 2..9, .48 at 40..49) after a prior-
based .66 at position 0. MAML, the fifth learner, reaches .643: fine-tuning an MLP on the context partly fits a disc.
(c) With 20 context examples ICL's regions agree with the true rule on 98% (prototype), 98% (pairwise) and 97%
(amortization) of the grid, but on 39% for radius, where it splits the plane by a curved line, not a disc.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import tasks
from experiments import common, study
from experiments.common import FAMILIES, LEARNERS, MIXTURE_SCALES
from experiments.common import test_families as shift_families
from icl_meta import agreement
from icl_meta.contracts import Episode, Learner, TaskFamily
from icl_meta.errors import require
from icl_meta.plotting import Regions, plot_agreement, plot_panels, plot_regions, plot_sweep
from icl_meta.runs import results_document, run_config
from icl_meta.train import TEST_STREAM, stream_key

SHIFT, RADIUS = "shift", "radius"  # the `part` label of the curves of (a) and (b)
RADIUS_START = 2  # T8 quotes the radius accuracies over positions 2..N-1
AGREEMENT_TASKS = 256  # per set in (d); with 512, or every learner at every sigma, it is 14-18% of the script's time
AGREEMENT_SWEEP = ("icl",)  # learners whose agreement is measured at every sigma (the others: lowest and highest)
EXTENT_POINTS = 200  # draws of a region task whose bounding square the grid covers (the context is its first k)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Figure 3's test settings at one scale (the learners are fig2_mixture's runs at the same scale)."""

    test_tasks: int  # per shifted test set
    radius_tasks: int
    n: int
    sigmas: tuple[float, ...]
    grid: int  # G: decision regions on a G x G grid
    chunk: int = 4096  # grid sequences per compiled call


SCALES: dict[str, Settings] = {
    "smoke": Settings(test_tasks=64, radius_tasks=64, n=12, sigmas=(1.0, 3.0), grid=16),
    "cpu": Settings(test_tasks=2048, radius_tasks=2048, n=50, sigmas=(1.0, 2.0, 3.0, 4.0, 5.0), grid=120),
    "paper": Settings(test_tasks=2048, radius_tasks=10_240, n=50, sigmas=(1.0, 2.0, 3.0, 4.0, 5.0), grid=200),
}


def radius_family() -> TaskFamily:
    return tasks.get("radius", r_min=2.0, r_max=4.0)


def region_families() -> dict[str, TaskFamily]:
    """The families of the decision-region panels: the shift test families at sigma=1, and radius."""
    return {**shift_families(), RADIUS: radius_family()}


# ---------------------------------------------------------------------------------------------------------------
# (a) and (b): curves


def shift_curves(
    jobs: Sequence[study.Job], params: Sequence[Any], settings: Settings, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every learner and closed-form rule on each shift family at each sigma, and the learners' agreement with each
    rule (`study.agreement_curves`): ICL's at every sigma, the others' at the lowest and highest (what the figures
    draw). The same TEST key at every sigma, so the shifted sets rescale the same noise
    draws (the sigma effect is not confounded with a new sample)."""
    curves, found = [], []
    for sigma in settings.sigmas:
        families = {name: family.with_sigma(sigma) for name, family in shift_families().items()}
        tests = study.sample_test_sets(families, settings.test_tasks, settings.n, seed)
        ends = sigma in (settings.sigmas[0], settings.sigmas[-1])
        for job, p in zip(jobs, params, strict=True):
            curves += study.evaluate_job(job, p, tests, families, sigma=sigma, part=SHIFT)
            if ends or job.learner.name in AGREEMENT_SWEEP:
                found += study.agreement_curves(
                    job.learner, p, tests, families, AGREEMENT_TASKS, train=job.train, sigma=sigma, part=SHIFT
                )
        curves += study.reference_curves(tests, families, sigma=sigma, part=SHIFT)
    return curves, found


def radius_curves(
    jobs: Sequence[study.Job], params: Sequence[Any], settings: Settings, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    families = {RADIUS: radius_family()}
    tests = study.sample_test_sets(families, settings.radius_tasks, settings.n, seed)
    curves, found = [], []
    for job, p in zip(jobs, params, strict=True):
        curves += study.evaluate_job(job, p, tests, families, part=RADIUS)
        found += study.agreement_curves(job.learner, p, tests, families, AGREEMENT_TASKS, train=job.train, part=RADIUS)
    return curves + study.reference_curves(tests, families, part=RADIUS), found


def agreement_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every record's mean over all positions (shift, as T7's accuracies) or over 2..N-1 (radius, as T8's), one row
    per (learner, test, sigma, rule) with `part` and `sigma` kept."""
    starts = {**dict.fromkeys(FAMILIES, 0), RADIUS: RADIUS_START}
    return [row for test in dict.fromkeys(r["test"] for r in records)
            for row in agreement.summary([r for r in records if r["test"] == test], starts[test])]  # fmt: skip


def own_rule_by_sigma(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shift family and sigma: each learner's agreement with the family's optimal rule against the closest other
    rule (`agreement.own_rule_check`)."""
    checks = []
    for test, family in shift_families().items():
        mine = [r for r in rows if r["test"] == test]
        checks += agreement.own_rule_check(mine, family.optimal_rule) if family.optimal_rule and mine else []
    return checks


def summary_table(curves: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean accuracy of every curve: shift curves over all positions (T7), radius curves over 2..N-1 (T8); each row
    keeps its curve's `part` and, for the shift rows, `sigma`."""
    starts = {**dict.fromkeys(FAMILIES, 0), RADIUS: RADIUS_START}
    rows = study.mean_table(curves, starts)
    return [
        {**row, "part": c["part"], **({"sigma": c["sigma"]} if "sigma" in c else {})}
        for row, c in zip(rows, curves, strict=True)
    ]


# ---------------------------------------------------------------------------------------------------------------
# (c): decision regions


def region_grid(x_ND: np.ndarray, g: int, pad: float = 0.1) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """G x G points [G*G, 2], row-major with rows along y, over the square that bounds the points (padded by `pad` of
    its side on each side); and its extent (x0, x1, y0, y1) = the first and last coordinates."""
    x_ND = np.asarray(x_ND, np.float64)
    require(x_ND.shape[-1] == 2, f"decision regions need 2-d inputs, got d={x_ND.shape[-1]}")
    lo, hi = x_ND.min(0), x_ND.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + 2 * pad)
    xs, ys = np.linspace(centre[0] - half, centre[0] + half, g), np.linspace(centre[1] - half, centre[1] + half, g)
    gx_GG, gy_GG = np.meshgrid(xs, ys)  # [i, j] = (xs[j], ys[i])
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    return np.stack([gx_GG.ravel(), gy_GG.ravel()], -1).astype(np.float32), extent


def region_sequences(context_ND: jax.Array, labels_N: jax.Array, grid_QD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One sequence per grid point: the fixed context at positions 0..k-1, the grid point at k (its label a dummy 0,
    never seen by a prequential learner). Returns x [Q, k+1, D] and y [Q, k+1]."""
    p = grid_QD.shape[0]
    context_QND = jnp.broadcast_to(context_ND, (p, *context_ND.shape))
    x_QND = jnp.concatenate([context_QND, grid_QD[:, None, :]], axis=1)
    y_QN = jnp.concatenate([jnp.broadcast_to(labels_N, (p, labels_N.shape[0])), jnp.zeros((p, 1), labels_N.dtype)], 1)
    return x_QND, y_QN


@functools.partial(jax.jit, static_argnums=0)
def _query_classes(
    learner: Learner, params: Any, context_ND: jax.Array, labels_N: jax.Array, grid_QD: jax.Array
) -> jax.Array:
    """argmax class at position k of each grid point's sequence, over all outputs (padded slots included), [B]."""
    x_QND, y_QN = region_sequences(context_ND, labels_N, grid_QD)
    k = context_ND.shape[0]
    return jnp.argmax(learner.predict(params, x_QND, y_QN, positions=jnp.array([k]))[:, 0], axis=-1)


def predict_regions(
    learner: Learner,
    params: Any,
    context_ND: jax.Array,
    labels_N: jax.Array,
    grid_QD: np.ndarray,
    num_classes: int,
    chunk: int = 4096,
) -> np.ndarray:
    """The learner's class for every grid point given the fixed context, int [P]; an argmax into an output >= C (the
    ICL model's padded label slots) is returned as C, "invalid"."""
    p = grid_QD.shape[0]
    chunk = min(chunk, p)
    padded_QD = np.concatenate([grid_QD, np.zeros((-p % chunk, grid_QD.shape[1]), grid_QD.dtype)])  # one shape
    context_ND, labels_N = jnp.asarray(context_ND, jnp.float32), jnp.asarray(labels_N, jnp.int32)
    parts = [
        np.asarray(_query_classes(learner, params, context_ND, labels_N, jnp.asarray(padded_QD[s : s + chunk])))
        for s in range(0, p, chunk)
    ]
    return np.minimum(np.concatenate(parts)[:p], num_classes)


@functools.partial(jax.jit, static_argnums=(0, 2))
def sample_task(family: TaskFamily, key: jax.Array, n: int) -> Episode:
    """One task of n examples as one compiled program per family (op by op, every op would compile anew)."""
    return family.sample(key, 1, n)


@functools.partial(jax.jit, static_argnums=0)
def rule_labels(family: TaskFamily, task: Mapping[str, Any], x_QD: jax.Array) -> jax.Array:
    """The true class of points x [Q, D] under ONE task's rule (`task`: its Episode params without the batch axis)."""
    return family.labels(x_QD, dict(task))


def decision_regions(
    learner: Learner, params: Any, families: Mapping[str, TaskFamily], k: int, g: int, seed: int, chunk: int = 4096
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """For one seeded task per family: the rule's and the learner's classes on a G x G grid given the task's first k
    examples. Returns a compact record per family and the arrays (grids [G, G], context, extent) to draw them."""
    records, arrays = [], {}
    for j, (name, family) in enumerate(families.items()):
        key = jax.random.fold_in(stream_key(seed, TEST_STREAM), 100 + j)
        episode = sample_task(family, key, max(k, EXTENT_POINTS))
        task = {p: v[0] for p, v in episode.params.items()}
        grid_QD, extent = region_grid(np.asarray(episode.x[0]), g)
        context_ND, labels_N = episode.x[0, :k], episode.y[0, :k]
        true_Q = np.asarray(rule_labels(family, task, jnp.asarray(grid_QD)))
        pred_Q = predict_regions(learner, params, context_ND, labels_N, grid_QD, family.num_classes, chunk)
        c = family.num_classes
        records.append(
            {
                "family": name,
                "learner": learner.name,
                "context": k,
                "grid": g,
                "agreement": round(float(np.mean(pred_Q == true_Q)), 4),
                "invalid": round(float(np.mean(pred_Q >= c)), 4),
                "extent": [round(e, 4) for e in extent],
            }
        )
        arrays |= {
            f"{name}_true": true_Q.reshape(g, g).astype(np.int8),
            f"{name}_pred": pred_Q.reshape(g, g).astype(np.int8),
            f"{name}_context_x": np.asarray(context_ND),
            f"{name}_context_y": np.asarray(labels_N),
            f"{name}_extent": np.asarray(extent),
        }
    return records, arrays


# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.parser(__doc__.splitlines()[0], SCALES, learners=LEARNERS)
    parser.add_argument("--context", type=int, default=20, help="context examples of the decision regions (20)")
    args = common.parse(parser, argv)
    require(args.context >= 1, f"--context must be an integer >= 1, got {args.context}")
    settings, names = SCALES[args.scale], common.parse_choices(args.learners, LEARNERS)
    root = common.run_root(args, "fig2")
    t0 = time.perf_counter()
    # The canonical Figure 2 (bottom) runs: start 2, pairwise nc=1, amortization without anchors.
    jobs = common.mixture_jobs(MIXTURE_SCALES[args.scale], names, args.seed)
    params, runs = [], []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.learner.name} trained on {job.train}: {job.cfg.steps} steps -> {root / job.key}")
        p, info = study.train_job(job, root, progress=not args.no_progress)
        params.append(p)
        runs.append(info)
    t_eval = time.perf_counter()
    shift, shift_agreement = shift_curves(jobs, params, settings, args.seed)
    radius, radius_agreement = radius_curves(jobs, params, settings, args.seed)
    curves, agreement_records = shift + radius, shift_agreement + radius_agreement
    agreement_s = agreement.seconds(agreement_records)
    print(f"(a), (b): {len(curves)} curves in {time.perf_counter() - t_eval:.0f} s ({agreement_s:.0f} s agreement)")
    regions, arrays = [], {}
    if "icl" in names:
        icl = names.index("icl")
        regions, arrays = decision_regions(
            jobs[icl].learner, params[icl], region_families(), args.context, settings.grid, args.seed, settings.chunk
        )
    else:
        print("(c) skipped: the decision regions are the ICL model's, and icl is not among --learners")
    config = {
        "scale": args.scale,
        "seed": args.seed,
        "learners": list(names),
        "context": args.context,
        "test_families": {name: {"name": f.name, **f.hparams()} for name, f in region_families().items()},
        "settings": dataclasses.asdict(settings),
        "runs": {job.key: run_config("fig2_mixture", job.learner, job.family, job.cfg) for job in jobs},
    }
    doc = results_document("fig3_generalization", config, curves, args.seed)
    doc.update(summary=summary_table(curves), regions=regions, run_summaries=runs)
    rows = agreement_rows(agreement_records)
    doc.update(agreement=agreement_records, agreement_summary=rows, agreement_s=agreement_s,
               own_rule=own_rule_by_sigma(rows))  # fmt: skip
    if arrays:  # the region grids the PNG is drawn from
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(args.figures) / f"fig3_regions_{args.scale}.npz", **arrays)
    common.finish(doc, args.figures, f"fig3_generalization_{args.scale}", draw, t0)
    print_tables(doc["summary"], settings.sigmas, names)
    print_agreement(doc, names)
    return doc


def print_agreement(doc: dict[str, Any], names: Sequence[str]) -> None:
    print(
        f"\n(d) argmax agreement with the family's optimal rule (own) and the closest other rule, mean over all "
        f"positions ({doc['agreement_s']:.0f} s of the script's {doc['wall_s']:.0f} s)"
    )
    for check in doc["own_rule"]:
        if check["learner"] in names:
            print(
                f"  {check['test']:<14}sigma {check['sigma']:<4g}{check['learner']:<10}{check['own_rule']} "
                f"{check['own_value']:.3f} vs {check['best_other']} {check['best_other_value']:.3f} "
                f"({check['margin']:+.3f})"
            )
    radius = [r for r in doc["agreement_summary"] if r["part"] == RADIUS and r["learner"] == "icl"]
    if radius:
        cells = ", ".join(f"{r['rule']} {r['mean']:.3f}" for r in radius)
        print(f"  radius (positions {RADIUS_START}..N-1), icl: {cells}")


def print_tables(table: Sequence[dict[str, Any]], sigmas: Sequence[float], names: Sequence[str]) -> None:
    refs = list(dict.fromkeys(r["learner"] for r in table if r["kind"] == "reference"))
    lo, hi = sigmas[0], sigmas[-1]
    print(
        f"\n(a) mixture-trained learners under input shift: mean accuracy over all positions at sigma {lo:g} / {hi:g}"
    )
    print(f"{'':<12}" + "".join(f"{f'{fam} {lo:g}':>17}{f'{hi:g}':>7}{'drop':>7}" for fam in FAMILIES))
    for name in [*names, *refs]:
        cells = ""
        for fam in FAMILIES:
            a, b = study.table_value(table, name, fam, sigma=lo), study.table_value(table, name, fam, sigma=hi)
            cells += f"{a:17.3f}{b:7.3f}{a - b:7.3f}"
        print(f"{name:<12}{cells}")
    print(f"\n(b) radius tasks r ~ U(2, 4): mean accuracy over positions {RADIUS_START}..N-1")
    for name in [*names, *refs]:
        value = study.table_value(table, name, RADIUS, sigma=None)
        print(f"{name:<12}{'-' if math.isnan(value) else f'{value:.3f}':>8}")


def draw(doc: dict[str, Any], figures: Path) -> None:
    """fig3_shift_SCALE.png, fig3_radius_SCALE.png and (with the region grids) fig3_regions_SCALE.png."""
    table, curves, scale = doc["summary"], doc["curves"], doc["scale"]
    order = {name: i for i, name in enumerate(LEARNERS)}  # trained learners first, in the usual order
    shift = sorted((r for r in table if r["part"] == SHIFT), key=lambda r: order.get(r["learner"], len(order)))
    panels = [(f"{fam}: mean over all positions", [r for r in shift if r["test"] == fam]) for fam in FAMILIES]
    plot_sweep(
        panels,
        figures / f"fig3_shift_{scale}.png",
        x="sigma",
        xlabel="input scale sigma (trained at 1)",
        title=f"Figure 3 (a): mixture-trained learners under distribution shift, scale {scale}",
        ylim=(0.4, 1.0),
    )
    if doc.get("agreement_summary"):
        draw_agreement(doc, figures)
    radius = [c for c in curves if c["part"] == RADIUS]
    plot_panels(
        [(f"mixture-trained learners on radius tasks r ~ U(2, 4)\n(unseen in training), scale {scale}", radius)],
        figures / f"fig3_radius_{scale}.png",
        ylim=(0.3, 1.0),
    )
    if not doc["regions"]:
        return
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
    plot_regions(
        [top, bottom],
        figures / f"fig3_regions_{scale}.png",
        title=f"Decision regions of the mixture-trained ICL model (line: the true boundary; grey: invalid), {scale}",
    )


def draw_agreement(doc: dict[str, Any], figures: Path) -> None:
    """fig3_agreement_SCALE.png (learner x rule heat maps: each family at the lowest and highest sigma, and radius)
    and fig3_agreement_shift_SCALE.png (ICL's agreement with each rule against sigma, one panel per family)."""
    rows, scale = doc["agreement_summary"], doc["scale"]
    sigmas = sorted({r["sigma"] for r in rows if r["part"] == SHIFT})
    shown, optimal = [], {}
    for fam, family in shift_families().items():
        for sigma in (sigmas[0], sigmas[-1]):
            label = f"{fam}, sigma {sigma:g}"
            shown += [{**r, "test": label} for r in rows if r["test"] == fam and r["sigma"] == sigma]
            optimal[label] = family.optimal_rule
    shown += [{**r, "test": f"{RADIUS} (unseen type)"} for r in rows if r["part"] == RADIUS]
    plot_agreement(
        shown, figures / f"fig3_agreement_{scale}.png",
        f"Figure 3: agreement with each rule\n(mixture-trained, scale {scale}; red: optimal rule)",
        optimal,
    )  # fmt: skip
    panels = [
        (f"icl on {fam}", [{**r, "learner": r["rule"]} for r in rows if r["test"] == fam and r["learner"] == "icl"])
        for fam in FAMILIES
    ]
    if any(records for _, records in panels):
        plot_sweep(
            panels, figures / f"fig3_agreement_shift_{scale}.png", x="sigma", xlabel="input scale sigma (trained at 1)",
            ylabel="argmax agreement with the rule",
            title=f"Figure 3: which rule the mixture-trained ICL agrees with under shift, scale {scale}", ylim=(0, 1),
        )  # fmt: skip


if __name__ == "__main__":
    common.script(main)
