"""Figure 6: meta-level meta-learning (M2-ICL) for few-task domain adaptation (PAPER.md sections 2.8, 7.3, 8.6, target
T10).

    icl-meta reproduce fig6 --scale cpu
    python -m experiments.fig6_metameta --scale cpu --seeds 2

Two GPT-2-style in-context learners (the `gpt2` preset) are trained on domain-structured linear regression
(`domain_regression`: a domain is an input map x = z A + b and a weight scale s, y = s x.w; training domains
s ~ 8 N(0, 1)), for the same number of outer Adam steps: `m2icl` by MAML over domains (`MetaObjective`: per step one
domain, `support` tasks for `inner_steps` full-batch SGD steps on all weights, the loss of `query` fresh tasks of the
domain under the adapted weights; second order unless the scale says otherwise) and `icl` by plain pre-training on
batches of support + query tasks of one random domain per step. Both are tested on `test_domains` unseen domains with
s ~ N(0, 1) (PAPER §11 row 14): for each pool size t, each learner is fine-tuned on minibatches (SGD on all
parameters, lr `adapt_lr`, batch `adapt_batch`) from a pool of t tasks of the domain, M2-ICL for 50 steps and ICL for
20 (PAPER §11 row 15), and the squared error per position is measured on `queries` fresh tasks of the domain. Four
curves per t: m2icl_adapted, m2icl, icl_adapted, icl (squared error vs context size, mean over domains of the mean
over each domain's query tasks, with a 95% bootstrap interval over domains). The summary per t gives each learner's
mean over positions, the relative advantage of m2icl_adapted over icl_adapted with a paired bootstrap interval over
domains, and the T10 checks: (a) at the smallest t m2icl_adapted beats both ICL variants; (b) the relative advantage
over icl_adapted shrinks as t grows. Also timed, after compilation, at the scale's sizes: one meta-step second order,
one first order, one plain ICL step. Runs live in `--out` (default runs/fig6/SCALE) and are resumed or reused, as are
their adaptation results (`adaptation_tT.json`) and the step times (`step_times.json`); results and the PNG (one panel
per t) go to `--figures`: fig6_metameta_SCALE.{json,png}.

Scales. cpu: chosen by the preconditions of a meaningful test, before looking at T10's outcome (`--diagnose`, below):
plain ICL learns in context on training domains (error at the last position <= 0.5x position 0's) and M2-ICL's
post-adaptation query loss falls by >= 30% over meta-training. d=3, 7 points, GPT-2 width 64 / 3 layers / 2 heads
(positions 2n), 16 support + 16 query tasks, 3 inner SGD steps at lr 0.01, second order, outer Adam lr 1e-3 with the
global gradient norm clipped at 1 (both arms), training domains with task scale 1 (s ~ N(0, 1), as the test
domains; the reference trains at 8), 12,000 outer steps for both arms (ICL batch 32), pools t = 16, 64, 256, 24 test
domains, 256 query tasks per domain, adaptation 50 (M2-ICL) / 20 (ICL) SGD steps at lr 1e-3 on minibatches of 64
(the whole pool when t = 16), 1 seed. Each run reports both preconditions (`preconditions` in the JSON). smoke: a
tiny model, 4 steps, 3 adaptation steps for both learners (one compiled evaluation per t). paper: the reference's
d=5, 11 points, GPT-2 256/12/8, 64 + 64 tasks, 5 inner steps at 0.01, second order, Adam 1e-4 without clipping,
training task scale 8, 100k steps (ICL batch 128 = support + query; PAPER §11 row 16 suggests 64), t = 64, 256,
1024, 20 test domains, 1280 query tasks per domain (a GPU job).

Why the cpu scale departs from the reference (`--diagnose 2000`, fig6_diagnostics_cpu.{json,png}): with the
reference's training domains (task scale 8: y of scale ~28, losses ~900) the second-order meta-gradient's norm grows
from ~270 to 1e5-1e9 within a few hundred steps, with the inner lr 0.01 or 0.001 and with or without clipping, and the
post-adaptation query loss falls by 2-8% in 2,000 steps; first order keeps the norm at ~80-550 but the loss falls by
14% only; at task scale 1 without clipping the norm still explodes (2.6 -> 5e6). One such gradient inflates Adam's
second-moment estimate by orders of magnitude and with beta2 = 0.999 its later steps stay tiny for thousands of steps
(our reading of the mechanism; the diagnostics show the norms and the frozen loss). Task scale 1 with the clip at 1
keeps the norm at 2.6-28 and the query loss falls 44% in 2,000 steps; plain ICL at task scale 1 needs ~12,000 steps
to learn in context (last / first position 0.81 after 2,000 steps, 0.52 after 8,000, 0.40 after 12,000).

Expected runtime on a 2-core CPU: smoke ~45 s; cpu ~20-26 min (measured 1,541 s while other jobs shared the CPU:
12,000 second-order meta-steps at ~0.08 s, 12,000 ICL steps at ~0.015 s, then the adaptation evaluation);
`--diagnose 2000` ~30 min (9 short runs).
Expected result (cpu, seed 0): both preconditions hold (last / first position on training domains 0.13 ICL, 0.22
M2-ICL; M2-ICL's query loss falls 54%). T10 does NOT hold: mean squared error over positions and 24 test domains,
t = 16 / 64 / 256: m2icl_adapted 2.77 / 2.65 / 2.61, m2icl 2.81, icl_adapted 2.47 / 2.42 / 2.41, icl 2.51; the
adapted ICL is better at every t (paired intervals of icl_adapted - m2icl_adapted all below 0); (c) holds.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import baselines  # noqa: F401  (registers the closed-form rules)
import tasks
from experiments import common
from icl_meta import evaluate, learners
from icl_meta.contracts import Episode
from icl_meta.errors import require
from icl_meta.metameta import MetaObjective, domain_episodes, domain_keys, evaluate_adaptation
from icl_meta.plotting import plot_panels
from icl_meta.runs import RunDir, results_document, run_config
from icl_meta.timing import compile_steps
from icl_meta.train import EVAL_STREAM, PREQUENTIAL, TEST_STREAM, Objective, TrainConfig, stream_key, train
from icl_meta.transformer import ICLTransformer
from tasks.domains import DomainRegression

ARMS = ("m2icl", "icl")
FAMILY = "domain_regression"
LEARNERS = ("m2icl_adapted", "m2icl", "icl_adapted", "icl")  # the reference's legend order


@dataclasses.dataclass(frozen=True)
class Scale:
    d: int
    n: int
    width: int
    depth: int
    heads: int
    support: int  # tasks per meta-step; the ICL arm trains on support + query tasks per step
    query: int
    inner_steps: int
    inner_lr: float
    first_order: bool
    lr: float  # outer Adam, both arms
    steps: int  # outer steps, both arms
    scan_steps: int
    eval_every: int
    eval_tasks: int
    pools: tuple[int, ...]  # adaptation pool sizes t, one panel each
    test_domains: int
    queries: int  # query tasks per test domain
    adapt_lr: float
    adapt_steps_m2icl: int
    adapt_steps_icl: int
    adapt_batch: int
    seeds: int
    task_scale: float = 8.0  # the training domains' weight scale s ~ task_scale N(0, 1) (test domains: 1)
    grad_clip: float | None = None  # the outer update's global-norm clip, both arms (the reference: none)

    @property
    def icl_batch(self) -> int:
        return self.support + self.query

    def adapt_steps(self, arm: str) -> int:
        return self.adapt_steps_m2icl if arm == "m2icl" else self.adapt_steps_icl


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        d=2, n=5, width=8, depth=1, heads=1, support=4, query=4, inner_steps=2, inner_lr=0.01, first_order=False,
        lr=1e-3, steps=4, scan_steps=2, eval_every=2, eval_tasks=32, pools=(4, 8), test_domains=4, queries=8,
        adapt_lr=1e-3, adapt_steps_m2icl=3, adapt_steps_icl=3, adapt_batch=4, seeds=1,
    ),
    "cpu": Scale(
        d=3, n=7, width=64, depth=3, heads=2, support=16, query=16, inner_steps=3, inner_lr=0.01, first_order=False,
        lr=1e-3, steps=12_000, scan_steps=50, eval_every=500, eval_tasks=1024, pools=(16, 64, 256), test_domains=24,
        queries=256, adapt_lr=1e-3, adapt_steps_m2icl=50, adapt_steps_icl=20, adapt_batch=64, seeds=1,
        task_scale=1.0, grad_clip=1.0,
    ),
    "paper": Scale(
        d=5, n=11, width=256, depth=12, heads=8, support=64, query=64, inner_steps=5, inner_lr=0.01, first_order=False,
        lr=1e-4, steps=100_000, scan_steps=50, eval_every=1000, eval_tasks=1280, pools=(64, 256, 1024),
        test_domains=20, queries=1280, adapt_lr=1e-3, adapt_steps_m2icl=50, adapt_steps_icl=20, adapt_batch=64,
        seeds=1,
    ),
}  # fmt: skip


def learner(scale: Scale) -> ICLTransformer:
    return common.gpt2(scale.width, scale.depth, scale.heads, scale.n)


def family(scale: Scale) -> DomainRegression:
    return tasks.get(FAMILY, d=scale.d, task_scale=scale.task_scale)


def objective(scale: Scale, arm: str, first_order: bool | None = None) -> Objective:
    if arm == "icl":
        return PREQUENTIAL
    return MetaObjective(
        support=scale.support,
        query=scale.query,
        inner_steps=scale.inner_steps,
        inner_lr=scale.inner_lr,
        first_order=scale.first_order if first_order is None else first_order,
    )


def train_config(scale: Scale, seed: int) -> TrainConfig:
    """Both arms: the same outer Adam steps (the meta-objective ignores `batch`)."""
    return TrainConfig(
        steps=scale.steps,
        batch=scale.icl_batch,
        n=scale.n,
        lr=scale.lr,
        scan_steps=min(scale.scan_steps, scale.eval_every),
        eval_every=scale.eval_every,
        eval_tasks=scale.eval_tasks,
        seed=seed,
        grad_clip=scale.grad_clip,
    )


OBJECTIVE_COLUMNS = tuple(
    f"objective_{k}"
    for k in ("support_before", "support_after", "query_before", "query_after", "target_variance", "meta_grad_norm",
              "support_after_over_before", "query_after_over_before")
)  # fmt: skip


def train_arm(
    scale: Scale, arm: str, seed: int, root: Path, progress: bool, name: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or load) one run in root/NAME (default ARM_seedSEED); returns its final parameters and
    history (with the meta-training diagnostics of an M2-ICL run)."""
    model, fam, cfg = learner(scale), family(scale), train_config(scale, seed)
    run = RunDir(root / (name or f"{arm}_seed{seed}"))
    config = run_config("fig6_metameta", model, fam, cfg)
    result = train(model, fam, cfg, run, config, resume=run.config_path.exists(), progress=progress,
                   objective=objective(scale, arm))  # fmt: skip
    history = result.history
    diagnostics = {k: k for k in OBJECTIVE_COLUMNS} if arm == "m2icl" else {}
    columns = common.history_columns(  # eval_squared_error: unadapted, on one training-like domain
        history, step="step", train_loss="loss", eval_squared_error="eval_squared_error", **diagnostics
    )
    info = {"arm": arm, "seed": seed, "steps": int(result.state.step), "train_wall_s": history[-1]["wall_s"]}
    return result.state.params, {**info, **columns}


def adaptation(
    scale: Scale, arm: str, seed: int, params: Any, steps_trained: int, t: int, root: Path, test_seed: int
) -> dict[str, np.ndarray]:
    """The [domains, N] errors with and without adaptation on a pool of t tasks, saved in the run directory and reused
    while the evaluation settings and the trained step are unchanged."""
    settings = {
        "pool": t,
        "domains": scale.test_domains,
        "queries": scale.queries,
        "n": scale.n,
        "steps": scale.adapt_steps(arm),
        "lr": scale.adapt_lr,
        "batch": scale.adapt_batch,
        "test_seed": test_seed,
        "trained_step": steps_trained,
    }

    def compute() -> dict[str, list]:
        values = evaluate_adaptation(
            learner(scale), family(scale).test_domains(), params, domains=scale.test_domains, pool=t,
            queries=scale.queries, n=scale.n, steps=scale.adapt_steps(arm), lr=scale.adapt_lr,
            batch=scale.adapt_batch, key=stream_key(test_seed, TEST_STREAM),
        )  # fmt: skip
        return {k: v.tolist() for k, v in values.items()}

    saved = common.cached(root / f"{arm}_seed{seed}" / f"adaptation_t{t}.json", settings, compute)
    return {k: np.asarray(v) for k, v in saved.items()}


def least_squares_curve(scale: Scale, test_seed: int) -> dict[str, Any]:
    """Least squares on the query tasks of the same test domains (`domain_episodes`): the reference for "learns in
    context" (0 from position d on, the tasks being noiseless; y = s x.w has no intercept even though x does)."""
    test_family = family(scale).test_domains()
    keys = domain_keys(stream_key(test_seed, TEST_STREAM), scale.test_domains)
    query = jax.vmap(lambda k: domain_episodes(test_family, k, pool=1, queries=scale.queries, n=scale.n)[1])(keys)
    flat = Episode(query.x.reshape(-1, *query.x.shape[2:]), query.y.reshape(-1, scale.n), {})
    errors = evaluate.per_position(learners.build("least_squares"), None, test_family.spec, flat)
    errors_DN = errors.reshape(scale.test_domains, scale.queries, scale.n).mean(1)
    return evaluate.curve(
        errors_DN, learner="least_squares", kind="reference", train=None, test=f"{FAMILY}_test",
        metric="squared_error", domains=scale.test_domains, adapt_tasks=None,
    )  # fmt: skip


def curves_for(scale: Scale, arm: str, seed: int, t: int, values: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Two tidy records, adapted and not, bootstrapped over domains (rows of the [domains, N] arrays)."""
    labels = {"train": FAMILY, "test": f"{FAMILY}_test", "metric": "squared_error", "kind": "trained"}
    labels["domains"] = scale.test_domains
    return [
        evaluate.curve(values[which], learner=name, adapt_tasks=t, adapt_steps=steps, seed=seed, **labels)
        for name, which, steps in (
            (f"{arm}_adapted", "adapted", scale.adapt_steps(arm)),
            (arm, "unadapted", 0),
        )
    ]


def step_times(scale: Scale, root: Path, retime: bool) -> dict[str, Any]:
    """Seconds per step after compilation: the meta-step second and first order, and the plain ICL step, at the
    scale's sizes, timed over `scan_steps` fused steps (`icl_meta.timing`), with each one's compile time. Saved in
    `root` and reused unless `retime` or the settings changed."""
    settings = {"scale": dataclasses.asdict(scale), "backend": jax.default_backend(), "devices": len(jax.devices())}
    if retime:
        (root / "step_times.json").unlink(missing_ok=True)

    def compute() -> dict[str, Any]:
        model, fam, cfg = learner(scale), family(scale), train_config(scale, 0)
        arms = {
            "m2icl_second_order": objective(scale, "m2icl", first_order=False),
            "m2icl_first_order": objective(scale, "m2icl", first_order=True),
            "icl": PREQUENTIAL,
        }
        times: dict[str, Any] = {"timed_steps": cfg.scan_steps}
        for name, obj in arms.items():
            steps = compile_steps(model, fam, cfg, cfg.scan_steps, objective=obj)
            times[name] = round(1.0 / steps.steps_per_second(), 6)
            times[f"{name}_compile_s"] = round(steps.compile_s, 2)
        times["second_over_first_order"] = round(times["m2icl_second_order"] / times["m2icl_first_order"], 2)
        times["second_order_over_icl"] = round(times["m2icl_second_order"] / times["icl"], 2)
        return times

    return common.cached(root / "step_times.json", settings, compute)


def means(curves: list[dict[str, Any]], seed: int | None, t: int) -> dict[str, float]:
    """Each learner's mean over positions at pool size t (over seeds when seed is None)."""
    out = {}
    for name in LEARNERS:
        picked = [
            c for c in curves if c["learner"] == name and c["adapt_tasks"] == t and (seed is None or c["seed"] == seed)
        ]
        out[name] = float(np.mean([evaluate.mean_over(c) for c in picked]))
    return out


def summarise(
    curves: list[dict[str, Any]], diffs: dict[tuple[int, int], np.ndarray], scale: Scale, seeds: Sequence[int]
) -> dict[str, Any]:
    """Per seed and t: the four means, the relative advantage of m2icl_adapted over icl_adapted and a paired
    bootstrap interval (over domains) of the mean difference icl_adapted - m2icl_adapted; then the T10 checks per
    seed and on the means over seeds."""
    rows = []
    for seed in seeds:
        for t in scale.pools:
            m = means(curves, seed, t)
            diff = evaluate.bootstrap(diffs[seed, t][:, None])
            rows.append(
                {
                    "seed": seed,
                    "adapt_tasks": t,
                    **{k: round(v, 4) for k, v in m.items()},
                    "relative_advantage": round((m["icl_adapted"] - m["m2icl_adapted"]) / m["icl_adapted"], 4),
                    "difference_vs_icl_adapted": [round(diff[k][0], 4) for k in ("mean", "lo", "hi")],
                }
            )
    checks = [t10_checks({t: means(curves, seed, t) for t in scale.pools}, seed) for seed in seeds]
    if len(seeds) > 1:
        checks.append(t10_checks({t: means(curves, None, t) for t in scale.pools}, "mean over seeds"))
    return {"rows": rows, "checks": checks}


def t10_checks(by_t: dict[int, dict[str, float]], seed: int | str) -> dict[str, Any]:
    """T10 (a): at the smallest t, m2icl_adapted < icl_adapted and < icl. (b): the relative advantage over
    icl_adapted is positive at the smallest t and decreases from each t to the next larger one. (c), informational:
    m2icl vs icl without adaptation."""
    ts = sorted(by_t)
    smallest = by_t[ts[0]]
    advantage = [(by_t[t]["icl_adapted"] - by_t[t]["m2icl_adapted"]) / by_t[t]["icl_adapted"] for t in ts]
    a = smallest["m2icl_adapted"] < min(smallest["icl_adapted"], smallest["icl"])
    # An advantage that is negative to begin with does not "shrink" by growing more negative.
    b = advantage[0] > 0 and all(later < earlier for earlier, later in itertools.pairwise(advantage))
    return {
        "seed": seed,
        "a_m2icl_adapted_best_at_smallest_t": bool(a),
        "b_advantage_shrinks_with_t": bool(b),
        "relative_advantage_by_t": {str(t): round(v, 4) for t, v in zip(ts, advantage, strict=True)},
        "advantage_at_largest_t_below_5pct": bool(abs(advantage[-1]) < 0.05),
        "c_m2icl_unadapted_worse_than_icl": bool(smallest["m2icl"] > smallest["icl"]),
    }


# The variants of the diagnosis (`--diagnose STEPS`): which arm each trains and what it sets in the scale, on top of
# the reference's training setting (task scale 8, no clip, inner lr 0.01, second order), whatever the scale's own.
REFERENCE_SETTING: dict[str, Any] = {"task_scale": 8.0, "grad_clip": None, "inner_lr": 0.01, "first_order": False}
DIAGNOSES: dict[str, tuple[str, dict[str, Any]]] = {
    "m2icl": ("m2icl", {}),
    "m2icl_first_order": ("m2icl", {"first_order": True}),
    "m2icl_inner_lr_0.001": ("m2icl", {"inner_lr": 1e-3}),
    "m2icl_task_scale_1": ("m2icl", {"task_scale": 1.0}),
    "m2icl_grad_clip_1": ("m2icl", {"grad_clip": 1.0}),
    "m2icl_task_scale_1_grad_clip_1": ("m2icl", {"task_scale": 1.0, "grad_clip": 1.0}),
    "m2icl_task_scale_1_first_order": ("m2icl", {"task_scale": 1.0, "first_order": True}),
    "icl": ("icl", {}),
    "icl_task_scale_1": ("icl", {"task_scale": 1.0}),
}
TRAINING_DOMAINS = 32  # held-out training-like domains of the "learns in context" precondition


def in_context_errors(scale: Scale, params: Any, seed: int) -> np.ndarray:
    """[domains, N] squared error of the unadapted learner on fresh domains of the TRAINING distribution (the
    precondition that it learns in context there: error at the last position well below position 0's)."""
    values = evaluate_adaptation(
        learner(scale), family(scale), params, domains=TRAINING_DOMAINS, pool=1, queries=scale.queries, n=scale.n,
        steps=0, lr=scale.adapt_lr, batch=1, key=jax.random.fold_in(stream_key(seed, EVAL_STREAM), 2),
    )  # fmt: skip
    return values["unadapted"]


IN_CONTEXT_RATIO = 0.5  # precondition: error at the last position <= this x position 0's, on training domains
QUERY_FALL = 0.3  # precondition: M2-ICL's post-adaptation query loss falls by at least this over meta-training


def preconditions(scale: Scale, arm: str, seed: int, params: Any, history: dict[str, Any]) -> dict[str, Any]:
    """The two preconditions of a meaningful Figure 6, for one trained run: it learns in context on training domains
    (the curve of `in_context_errors`: last position / position 0 <= 0.5) and, for M2-ICL, the post-adaptation
    query loss of the logged diagnostics falls by >= 30% from the first evaluation to the last."""
    errors_DN = in_context_errors(scale, params, seed)
    curve = evaluate.curve(errors_DN, learner=arm, metric="squared_error", domains=TRAINING_DOMAINS)
    ratio = curve["mean"][-1] / curve["mean"][0]
    out: dict[str, Any] = {
        "training_domains_curve": curve,
        "last_over_first_position": round(ratio, 4),
        "learns_in_context": bool(ratio <= IN_CONTEXT_RATIO),
    }
    query = [v for v in history.get("objective_query_after", []) if v is not None]
    if query:
        out["query_after_fall"] = round(1.0 - query[-1] / query[0], 4)
        out["meta_objective_falls"] = bool(out["query_after_fall"] >= QUERY_FALL)
    return out


def diagnose(scale: Scale, steps: int, root: Path, seed: int, progress: bool) -> dict[str, Any]:
    """Short runs of each `DIAGNOSES` variant, logging the meta-training diagnostics (`MetaObjective.diagnostics`,
    on the same 16 domains at every evaluation) and ending with the `preconditions`."""
    rows = {}
    for name, (arm, changes) in DIAGNOSES.items():
        settings = {**REFERENCE_SETTING, **changes}
        variant = dataclasses.replace(scale, steps=steps, eval_every=max(steps // 10, 1), **settings)
        run_name = f"{name}_steps{steps}"  # the evaluation interval depends on STEPS: one run directory per STEPS
        print(f"diagnosis {name}: {steps} steps -> {root / run_name}")
        params, history = train_arm(variant, arm, seed, root, progress, name=run_name)
        rows[name] = {"arm": arm, "changes": changes, "settings": settings, "history": history,
                      **preconditions(variant, arm, seed, params, history)}  # fmt: skip
    return {"steps": steps, "variants": rows}


def print_diagnosis(diagnosis: dict[str, Any]) -> None:
    print(f"\ndiagnosis after {diagnosis['steps']} outer steps (objective_*: means over 16 fixed domains)")
    print(f"{'variant':<32}{'last/first pos.':>16}{'query fall':>12}{'query before':>14}{'query after':>13}"
          f"{'support a/b':>13}{'grad norm':>11}")  # fmt: skip
    for name, row in diagnosis["variants"].items():
        h = row["history"]
        last = {k: (h[k][-1] if h.get(k) else float("nan")) for k in OBJECTIVE_COLUMNS}
        print(
            f"{name:<32}{row['last_over_first_position']:>16.3f}{row.get('query_after_fall', float('nan')):>12.3f}"
            f"{last['objective_query_before']:>14.3f}{last['objective_query_after']:>13.3f}"
            f"{last['objective_support_after_over_before']:>13.3f}{last['objective_meta_grad_norm']:>11.3g}"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.parser(__doc__.splitlines()[0], SCALES, seeds=True)
    parser.add_argument("--retime", action="store_true", help="measure the step times again even if saved")
    parser.add_argument(
        "--diagnose", type=int, default=None, metavar="STEPS",
        help="instead of the figure: STEPS-step runs of each variant in DIAGNOSES (second/first order, inner lr, "
        "training task scale, plain ICL) with the meta-training diagnostics -> fig6_diagnostics_SCALE.{json,png}",
    )  # fmt: skip
    args = common.parse(parser, argv)
    scale = SCALES[args.scale]
    seeds = list(range(args.seed, args.seed + (args.seeds or scale.seeds)))
    root = common.run_root(args, "fig6")
    t0 = time.perf_counter()
    if args.diagnose is not None:
        require(args.diagnose >= 1, f"--diagnose: STEPS must be >= 1, got {args.diagnose}")
        doc = {"experiment": "fig6_diagnostics", "scale": args.scale, "settings": dataclasses.asdict(scale),
               **diagnose(scale, args.diagnose, root / "diagnose", args.seed, not args.no_progress)}  # fmt: skip
        common.finish(doc, args.figures, f"fig6_diagnostics_{args.scale}", draw_diagnosis, t0)
        print_diagnosis(doc)
        return doc
    curves, histories, diffs, checks = [], [], {}, {}
    for seed in seeds:
        adapted = {}
        for arm in ARMS:
            print(f"{arm}, seed {seed}: {scale.steps} steps -> {root / f'{arm}_seed{seed}'}")
            params, history = train_arm(scale, arm, seed, root, not args.no_progress)
            histories.append(history)
            checks[f"{arm}_seed{seed}"] = preconditions(scale, arm, seed, params, history)
            for t in scale.pools:
                values = adaptation(scale, arm, seed, params, history["steps"], t, root, args.seed)
                curves += curves_for(scale, arm, seed, t, values)
                adapted[arm, t] = values["adapted"].mean(1)  # per domain, mean over positions
        for t in scale.pools:
            diffs[seed, t] = adapted["icl", t] - adapted["m2icl", t]
    times = step_times(scale, root, args.retime)
    summary = summarise(curves, diffs, scale, seeds)
    curves.append(least_squares_curve(scale, args.seed))
    fam = family(scale)
    config = {
        "scale": args.scale,
        "seeds": seeds,
        "test_seed": args.seed,
        "settings": dataclasses.asdict(scale),
        "test_family": {"name": FAMILY, **fam.test_domains().hparams()},
        "runs": {
            f"{arm}_seed{s}": {
                **run_config("fig6_metameta", learner(scale), fam, train_config(scale, s)),
                "objective": objective(scale, arm).config(),
            }
            for arm in ARMS
            for s in seeds
        },
    }
    doc = results_document("fig6_metameta", config, curves, args.seed)
    doc.update(histories=histories, summary=summary, step_times=times, preconditions=checks)
    common.finish(doc, args.figures, f"fig6_metameta_{args.scale}", draw, t0)
    print_summary(summary, times)
    print_preconditions(checks)
    return doc


def print_preconditions(checks: dict[str, dict[str, Any]]) -> None:
    for run, check in checks.items():
        line = (
            f"precondition {run}: error at the last position / position 0 on {TRAINING_DOMAINS} training domains "
            f"{check['last_over_first_position']:.3f} (<= {IN_CONTEXT_RATIO}: "
            f"{'holds' if check['learns_in_context'] else 'does NOT hold'})"
        )
        if "query_after_fall" in check:
            line += (
                f"; post-adaptation query loss fell {check['query_after_fall']:.0%} (>= {QUERY_FALL:.0%}: "
                f"{'holds' if check['meta_objective_falls'] else 'does NOT hold'})"
            )
        print(line)


def print_summary(summary: dict[str, Any], times: dict[str, Any]) -> None:
    print("\nmean squared error over positions and test domains (diff: icl_adapted - m2icl_adapted, 95% CI)")
    print(f"{'seed':>4}{'t':>6}" + "".join(f"{name:>15}" for name in LEARNERS) + f"{'rel. adv.':>11}  diff [lo, hi]")
    for row in summary["rows"]:
        mean, lo, hi = row["difference_vs_icl_adapted"]
        print(
            f"{row['seed']:>4}{row['adapt_tasks']:>6}" + "".join(f"{row[name]:>15.4f}" for name in LEARNERS)
            + f"{row['relative_advantage']:>11.3f}  {mean:.4f} [{lo:.4f}, {hi:.4f}]"
        )  # fmt: skip
    for check in summary["checks"]:
        a, b = check["a_m2icl_adapted_best_at_smallest_t"], check["b_advantage_shrinks_with_t"]
        print(f"T10 seed {check['seed']}: (a) m2icl_adapted best at the smallest t: {a}; (b) advantage shrinks: {b}")
    print(
        f"seconds per step after compilation ({times['timed_steps']} fused steps): meta second order "
        f"{times['m2icl_second_order']:.4f}, first order {times['m2icl_first_order']:.4f}, "
        f"plain ICL {times['icl']:.4f} (second/first {times['second_over_first_order']}x, "
        f"second/ICL {times['second_order_over_icl']}x)"
    )


def draw_diagnosis(doc: dict[str, Any], figures: Path) -> None:
    """Four panels: the post-adaptation query loss relative to its first logged value, the support loss after /
    before the inner steps (median over domains), the meta-gradient norm, all vs step for the M2-ICL variants; and
    the in-context error curve on training domains (relative to position 0) of every variant."""
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2), dpi=110)
    for name, row in doc["variants"].items():
        h = row["history"]
        if row["arm"] == "m2icl":
            steps = h["step"]
            query = np.asarray(h["objective_query_after"], float)
            axes[0].plot(steps, query / query[0], marker=".", label=name)
            axes[1].plot(steps, h["objective_support_after_over_before"], marker=".", label=name)
            axes[2].plot(steps, h["objective_meta_grad_norm"], marker=".", label=name)
        curve = row["training_domains_curve"]
        axes[3].plot(curve["positions"], np.asarray(curve["mean"]) / curve["mean"][0], marker=".", label=name)
    titles = (
        "query loss after the inner steps / at step 0",
        "support loss after / before the inner steps (median)",
        "meta-gradient norm",
        "error on training domains / position 0's",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("context size" if ax is axes[3] else "outer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    axes[3].axhline(0.5, color="0.4", ls=":", lw=1)
    fig.suptitle(f"Figure 6 diagnosis: {doc['steps']} outer steps per variant (scale {doc['scale']})")
    fig.tight_layout()
    fig.savefig(figures / f"fig6_diagnostics_{doc['scale']}.png")
    plt.close(fig)


def draw(doc: dict[str, Any], figures: Path) -> None:
    """One panel per pool size t: the four learners' per-position curves (one set per seed)."""
    settings = doc["config"]["settings"]
    many = len(doc["config"]["seeds"]) > 1
    panels = []
    for t in settings["pools"]:
        records = [
            {**c, "learner": c["learner"] + (f" (seed {c['seed']})" if many else "")}
            for name in LEARNERS
            for c in doc["curves"]
            if c["adapt_tasks"] == t and c["learner"] == name
        ] + [c for c in doc["curves"] if c["kind"] == "reference"]
        panels.append((f"t = {t} adaptation tasks per domain", records))
    title = (
        f"Figure 6: M2-ICL vs ICL on {settings['test_domains']} unseen domains (d={settings['d']}, "
        f"{settings['steps']} outer steps, scale {doc['scale']})\nband: 95% bootstrap interval over domains"
    )
    plot_panels(panels, figures / f"fig6_metameta_{doc['scale']}.png", title)


if __name__ == "__main__":
    common.script(main)
