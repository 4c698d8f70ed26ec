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

Scales. cpu (PAPER T10 "CPU reduced"): d=3, 7 points, GPT-2 width 64 / 3 layers / 2 heads (positions 2n), 16 support
+ 16 query tasks, 3 inner SGD steps at lr 0.01, second order, outer Adam lr 1e-3 (the paper's 1e-4 goes with 100k
steps; with 8x fewer steps we take 1e-3, as Figure 4's cpu scale does), 12,000 steps for both arms (ICL batch 32;
PAPER.md suggests 3-5k, after which neither learner had learned anything in context),
pools t = 16, 64, 256, 24 test domains, 256 query tasks per domain, adaptation 50 (M2-ICL) / 20 (ICL) SGD steps at
lr 1e-3 on minibatches of 64 (the whole pool when t = 16), 1 seed. smoke: a tiny model, 4 steps, 3 adaptation steps
for both learners (one compiled evaluation per t). paper: d=5, 11 points, GPT-2 256/12/8, 64 + 64
tasks, 5 inner steps at 0.01, second order, Adam 1e-4, 100k steps (ICL batch 128 = support + query; PAPER §11 row 16
suggests 64), t = 64, 256, 1024, 20 test domains, 1280 query tasks per domain (a GPU job).

Expected runtime on a 2-core CPU: smoke ~45 s; cpu ~20 min (measured 1,180 s while another job shared the CPU:
12,000 second-order meta-steps at ~0.1 s, 12,000 ICL steps at ~0.012 s, then the adaptation evaluation).
Expected result (cpu, seed 0): T10 does NOT hold at this scale. Mean squared error over positions and 24 test
domains, t = 16 / 64 / 256: m2icl_adapted 7.98 / 7.85 / 7.78, m2icl 18.13, icl_adapted 6.83 / 6.01 / 5.96, icl 17.12;
relative advantage of m2icl_adapted over icl_adapted -17% / -31% / -31% (paired interval of the difference includes 0
at t = 16 only). (c) holds (m2icl unadapted worse than icl unadapted). Step times: second-order meta-step 0.075 s,
first-order 0.028 s, plain ICL 0.012 s. Neither learner does much in-context regression at this budget (flat curves);
the claim needs the paper scale.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import tasks
from experiments import common
from icl_meta import evaluate
from icl_meta.metameta import MetaObjective, evaluate_adaptation
from icl_meta.plotting import plot_panels
from icl_meta.runs import RunDir, results_document, run_config
from icl_meta.timing import compile_steps
from icl_meta.train import PREQUENTIAL, TEST_STREAM, Objective, TrainConfig, stream_key, train
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
    return tasks.get(FAMILY, d=scale.d)


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
    )


def train_arm(scale: Scale, arm: str, seed: int, root: Path, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or load) one run; returns its final parameters and history."""
    model, fam, cfg = learner(scale), family(scale), train_config(scale, seed)
    run = RunDir(root / f"{arm}_seed{seed}")
    config = run_config("fig6_metameta", model, fam, cfg)
    result = train(model, fam, cfg, run, config, resume=run.config_path.exists(), progress=progress,
                   objective=objective(scale, arm))  # fmt: skip
    history = result.history
    columns = common.history_columns(  # eval_squared_error: unadapted, on one training-like domain
        history, step="step", train_loss="loss", eval_squared_error="eval_squared_error"
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.parser(__doc__.splitlines()[0], SCALES, seeds=True)
    parser.add_argument("--retime", action="store_true", help="measure the step times again even if saved")
    args = common.parse(parser, argv)
    scale = SCALES[args.scale]
    seeds = list(range(args.seed, args.seed + (args.seeds or scale.seeds)))
    root = common.run_root(args, "fig6")
    t0 = time.perf_counter()
    curves, histories, diffs = [], [], {}
    for seed in seeds:
        adapted = {}
        for arm in ARMS:
            print(f"{arm}, seed {seed}: {scale.steps} steps -> {root / f'{arm}_seed{seed}'}")
            params, history = train_arm(scale, arm, seed, root, not args.no_progress)
            histories.append(history)
            for t in scale.pools:
                values = adaptation(scale, arm, seed, params, history["steps"], t, root, args.seed)
                curves += curves_for(scale, arm, seed, t, values)
                adapted[arm, t] = values["adapted"].mean(1)  # per domain, mean over positions
        for t in scale.pools:
            diffs[seed, t] = adapted["icl", t] - adapted["m2icl", t]
    times = step_times(scale, root, args.retime)
    summary = summarise(curves, diffs, scale, seeds)
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
    doc.update(histories=histories, summary=summary, step_times=times)
    common.finish(doc, args.figures, f"fig6_metameta_{args.scale}", draw, t0)
    print_summary(summary, times)
    return doc


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
        ]
        panels.append((f"t = {t} adaptation tasks per domain", records))
    title = (
        f"Figure 6: M2-ICL vs ICL on {settings['test_domains']} unseen domains (d={settings['d']}, "
        f"{settings['steps']} outer steps, scale {doc['scale']})\nband: 95% bootstrap interval over domains"
    )
    plot_panels(panels, figures / f"fig6_metameta_{doc['scale']}.png", title)


if __name__ == "__main__":
    common.script(main)
