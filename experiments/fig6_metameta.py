"""Figure 6: meta-level meta-learning (M2-ICL) against plain ICL for few-task domain adaptation.

    icl-meta reproduce fig6 --scale cpu
    python -m experiments.fig6_metameta --scale cpu --seeds 2     # fewer seeds per arm than the scale's 4
    python -m experiments.fig6_metameta --scale cpu --diagnose 2000   # the meta-training diagnosis instead

Two GPT-2-style in-context learners (`common.gpt2`) are trained on domain-structured linear regression
(`domain_regression`: a domain is an input map x = z A + b and a weight scale s, y = s x.w) for the same outer Adam
steps. The arms are training objectives: `m2icl` is MAML over domains (`MetaObjective`: per step one domain,
`support` tasks for `inner_steps` SGD steps on all weights, the loss of `query` fresh tasks of the domain under the
adapted weights), `icl` plain pre-training on support + query tasks of one random domain per step. Both are tested on
`test_domains` unseen domains (s ~ N(0, 1)): for each pool size t each is fine-tuned by SGD on minibatches from t
tasks of the domain (M2-ICL for `adapt_steps_m2icl` steps, ICL for `adapt_steps_icl`), and the squared error per
position is measured on `queries` fresh tasks of the domain, adapted and not (95% bootstrap band over domains). The
claims (T10): at the smallest t the adapted M2-ICL beats both ICL variants, its relative advantage over the adapted
ICL shrinks as t grows, and M2-ICL without adaptation is worse than ICL; tested only where each run learns in
context on training domains and M2-ICL's meta-objective falls. Also timed: one meta-step second and first order and
one plain ICL step. Runs (reused, with their adaptation results and step times) live in `--out` (default
runs/fig6/SCALE); fig6_metameta_SCALE.{json,png} go to `--figures`. `--diagnose STEPS` trains short runs of the
`DIAGNOSES` variants with the meta-training diagnostics instead: fig6_diagnostics_SCALE.{json,png}.

Scales: smoke (a tiny model, 4 steps; ~30 s); cpu (d=3, 7 points, GPT-2 64/3/2, 16 + 16 tasks, 3 inner steps,
training task scale 1 and the outer gradient clipped at 1, 12,000 steps, t = 16, 64, 256, 24 test domains, 4 seeds per
arm trained as one program; ~63 min on 2 cores, estimated from the seeds rows of the benchmark: one seed per arm took
~26 min); paper (the reference's d=5, GPT-2 256/12/8, task scale 8, 100k steps; a GPU job). Why the cpu scale departs
from the reference, and the measured results: docs/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, spec
from icl_meta import evaluate, families, learners, study
from icl_meta.claims import Claim
from icl_meta.contracts import Episode
from icl_meta.errors import require
from icl_meta.metameta import MetaObjective, domain_episodes, domain_keys, evaluate_adaptation
from icl_meta.plotting import plot_panels
from icl_meta.runs import results_document, run_config
from icl_meta.timing import compile_steps
from icl_meta.train import EVAL_STREAM, PREQUENTIAL, TEST_STREAM, Objective, TrainConfig, stream_key

ARMS = ("m2icl", "icl")  # the two training objectives of the one learner
FAMILY = "domain_regression"
LEARNERS = ("m2icl_adapted", "m2icl", "icl_adapted", "icl")  # the reference's legend order
OBJECTIVE_COLUMNS = tuple(f"objective_{k}" for k in (
    "support_before", "support_after", "query_before", "query_after", "target_variance", "meta_grad_norm",
    "support_after_over_before", "query_after_over_before"))  # fmt: skip
TRAINING_DOMAINS = 32  # fresh training-like domains of the "learns in context" precondition
IN_CONTEXT_RATIO = 0.5  # precondition: error at the last position <= this x position 0's, on training domains
QUERY_FALL = 0.3  # precondition: M2-ICL's post-adaptation query loss falls by at least this over meta-training
SMALL_ADVANTAGE = 0.05  # the relative advantage at the largest t is within this (it has shrunk to ~nothing)
# `--diagnose STEPS`: each variant's arm and changes on top of the reference's setting, whatever the scale's own.
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


@dataclasses.dataclass(frozen=True)
class Scale(spec.Scale):
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
        adapt_lr=1e-3, adapt_steps_m2icl=3, adapt_steps_icl=3, adapt_batch=4, seeds=2,
    ),
    "cpu": Scale(
        d=3, n=7, width=64, depth=3, heads=2, support=16, query=16, inner_steps=3, inner_lr=0.01, first_order=False,
        lr=1e-3, steps=12_000, scan_steps=50, eval_every=500, eval_tasks=1024, pools=(16, 64, 256), test_domains=24,
        queries=256, adapt_lr=1e-3, adapt_steps_m2icl=50, adapt_steps_icl=20, adapt_batch=64, seeds=4,
        task_scale=1.0, grad_clip=1.0,
    ),
    "paper": Scale(
        d=5, n=11, width=256, depth=12, heads=8, support=64, query=64, inner_steps=5, inner_lr=0.01, first_order=False,
        lr=1e-4, steps=100_000, scan_steps=50, eval_every=1000, eval_tasks=1280, pools=(64, 256, 1024),
        test_domains=20, queries=1280, adapt_lr=1e-3, adapt_steps_m2icl=50, adapt_steps_icl=20, adapt_batch=64,
        seeds=1,
    ),
}  # fmt: skip


def learner(scale: Scale) -> Any:
    return common.gpt2(scale.width, scale.depth, scale.heads, scale.n)


def family(scale: Scale) -> Any:
    return families.get(FAMILY, d=scale.d, task_scale=scale.task_scale)


def objective(scale: Scale, arm: str, first_order: bool | None = None) -> Objective:
    if arm == "icl":
        return PREQUENTIAL
    order = scale.first_order if first_order is None else first_order
    return MetaObjective(scale.support, scale.query, scale.inner_steps, scale.inner_lr, first_order=order)


def train_config(scale: Scale, seed: int) -> TrainConfig:
    """Both arms: the same outer Adam steps (the meta-objective ignores `batch`)."""
    return TrainConfig(
        steps=scale.steps, batch=scale.icl_batch, n=scale.n, lr=scale.lr, eval_every=scale.eval_every,
        scan_steps=min(scale.scan_steps, scale.eval_every), eval_tasks=scale.eval_tasks, seed=seed,
        grad_clip=scale.grad_clip,
    )  # fmt: skip


def train_arm(
    scale: Scale, arm: str, seeds: Sequence[int], root: Path, progress: bool, names: Sequence[str] | None = None
) -> list[tuple[Any, dict[str, Any]]]:
    """Train (or resume, or load) root/NAME (default ARM_seedSEED) for each seed, the seeds together as one program:
    per seed its final parameters and history columns (with the meta-training diagnostics of an M2-ICL run;
    eval_squared_error: unadapted, on one training-like domain)."""
    model, fam, cfg = learner(scale), family(scale), train_config(scale, seeds[0])
    paths = [root / name for name in (names or [f"{arm}_seed{seed}" for seed in seeds])]
    configs = [run_config("fig6_metameta", model, fam, train_config(scale, seed)) for seed in seeds]
    results = study.train_seed_runs(model, fam, cfg, seeds, paths, configs, progress, objective=objective(scale, arm))
    out = []
    for seed, result in zip(seeds, results, strict=True):
        history = result.history
        extra = {k: k for k in OBJECTIVE_COLUMNS} if arm == "m2icl" else {}
        columns = common.history_columns(history, step="step", train_loss="loss",
                                         eval_squared_error="eval_squared_error", **extra)  # fmt: skip
        info = {"arm": arm, "seed": seed, "steps": int(result.state.step), "train_wall_s": history[-1]["wall_s"]}
        out.append((result.state.params, {**info, **columns}))
    return out


def errors(scale: Scale, params: Any, fam: Any, key: Any, **kw: Any) -> dict[str, np.ndarray]:
    """[domains, N] squared errors adapted and unadapted (`evaluate_adaptation` with the scale's sizes)."""
    return evaluate_adaptation(learner(scale), fam, params, queries=scale.queries, n=scale.n, lr=scale.adapt_lr,
                               key=key, **kw)  # fmt: skip


def adaptation(scale: Scale, arm: str, seed: int, params, trained: int, t: int, root: Path, test_seed: int) -> dict:
    """The [domains, N] errors adapted and unadapted on pools of t tasks of each test domain, saved in the run
    directory and reused while the evaluation settings and the trained step are unchanged."""
    kw = {"domains": scale.test_domains, "pool": t, "steps": scale.adapt_steps(arm), "batch": scale.adapt_batch}
    settings = {"pool": t, "domains": scale.test_domains, "queries": scale.queries, "n": scale.n,
                "steps": kw["steps"], "lr": scale.adapt_lr, "batch": scale.adapt_batch, "test_seed": test_seed,
                "trained_step": trained}  # fmt: skip

    def compute() -> dict[str, list]:
        key = stream_key(test_seed, TEST_STREAM)
        return {k: v.tolist() for k, v in errors(scale, params, family(scale).test_domains(), key, **kw).items()}

    saved = common.cached(root / f"{arm}_seed{seed}" / f"adaptation_t{t}.json", settings, compute)
    return {k: np.asarray(v) for k, v in saved.items()}


def least_squares_curve(scale: Scale, test_seed: int) -> dict[str, Any]:
    """Least squares on the query tasks of the same test domains: the reference for "learns in context" (0 from
    position d on, the tasks being noiseless; y = s x.w has no intercept even though x does)."""
    test_family = family(scale).test_domains()
    keys = domain_keys(stream_key(test_seed, TEST_STREAM), scale.test_domains)
    query = jax.vmap(lambda k: domain_episodes(test_family, k, pool=1, queries=scale.queries, n=scale.n)[1])(keys)
    flat = Episode(query.x.reshape(-1, *query.x.shape[2:]), query.y.reshape(-1, scale.n), {})
    errors_DN = evaluate.per_position(learners.build("least_squares"), None, test_family.spec, flat).reshape(
        scale.test_domains, scale.queries, scale.n).mean(1)  # fmt: skip
    return evaluate.curve(errors_DN, learner="least_squares", kind="reference", train=None, test=f"{FAMILY}_test",
                          metric="squared_error", domains=scale.test_domains, adapt_tasks=None)  # fmt: skip


def step_times(scale: Scale, root: Path, retime: bool) -> dict[str, Any]:
    """Seconds per step after compilation (over `scan_steps` fused steps) and compile seconds of the meta-step second
    and first order and the plain ICL step; saved in `root`, reused unless `retime` or the settings changed."""
    settings = {"scale": scale.settings(), "backend": jax.default_backend(), "devices": len(jax.devices())}
    if retime:
        (root / "step_times.json").unlink(missing_ok=True)

    def compute() -> dict[str, Any]:
        model, fam, cfg = learner(scale), family(scale), train_config(scale, 0)
        times: dict[str, Any] = {"timed_steps": cfg.scan_steps}
        meta = {f"m2icl_{o}_order": objective(scale, "m2icl", first_order=o == "first") for o in ("second", "first")}
        for name, obj in {**meta, "icl": PREQUENTIAL}.items():
            steps = compile_steps(model, fam, cfg, cfg.scan_steps, objective=obj)
            times[name] = round(1.0 / steps.steps_per_second(), 6)
            times[f"{name}_compile_s"] = round(steps.compile_s, 2)
        times["second_over_first_order"] = round(times["m2icl_second_order"] / times["m2icl_first_order"], 2)
        times["second_order_over_icl"] = round(times["m2icl_second_order"] / times["icl"], 2)
        return times

    return common.cached(root / "step_times.json", settings, compute)


def means(curves: list[dict[str, Any]], seed: int | None, t: int) -> dict[str, float]:
    """Each learner's mean over positions at pool size t (over seeds when seed is None)."""
    picked = [c for c in curves if c["adapt_tasks"] == t and seed in (None, c["seed"])]
    return {n: float(np.mean([evaluate.mean_over(c) for c in picked if c["learner"] == n])) for n in LEARNERS}


def preconditions(scale: Scale, arm: str, seed: int, params: Any, history: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run's preconditions: its unadapted error curve on fresh TRAINING domains (last position /
    position 0) and, for M2-ICL, the fall of the logged post-adaptation query loss from the first evaluation."""
    key = jax.random.fold_in(stream_key(seed, EVAL_STREAM), 2)
    errors_DN = errors(scale, params, family(scale), key, domains=TRAINING_DOMAINS, pool=1, steps=0, batch=1)
    curve = evaluate.curve(errors_DN["unadapted"], learner=arm, metric="squared_error", domains=TRAINING_DOMAINS)
    out = {"training_domains_curve": curve, "last_over_first_position": round(curve["mean"][-1] / curve["mean"][0], 4)}
    if query := [v for v in history.get("objective_query_after", []) if v is not None]:
        out["query_after_fall"] = round(1.0 - query[-1] / query[0], 4)
    return out


def run_claims(run: str, record: dict[str, Any], history: dict[str, Any]) -> list[Claim]:
    """A run's preconditions as claims, from its saved curve and history (the unrounded numbers)."""
    mean = record["training_domains_curve"]["mean"]
    learns = f"{run} learns in context: error at the last position <= {IN_CONTEXT_RATIO}x position 0's"
    method = f"unadapted squared error, mean over {TRAINING_DOMAINS} fresh training domains"
    out = [Claim(f"{run}_learns_in_context", learns, mean[-1] / mean[0], "<=", IN_CONTEXT_RATIO, method=method)]
    if query := [v for v in history.get("objective_query_after", []) if v is not None]:
        falls = f"{run}'s post-adaptation query loss falls by >= {QUERY_FALL:.0%} over meta-training"
        method = "1 - last / first logged value (mean over the same diagnostic domains)"
        out.append(
            Claim(f"{run}_meta_objective_falls", falls, 1.0 - query[-1] / query[0], ">=", QUERY_FALL, method=method)
        )
    return out


def diagnose(scale: Scale, steps: int, root: Path, seed: int, progress: bool) -> dict[str, Any]:
    """STEPS-step runs of each `DIAGNOSES` variant, logging the meta-training diagnostics (`MetaObjective.diagnostics`,
    on the same 16 domains at every evaluation), with the numbers of their preconditions."""
    require(steps >= 1, f"--diagnose: STEPS must be >= 1, got {steps}")
    rows = {}
    for name, (arm, changes) in DIAGNOSES.items():
        settings = {**REFERENCE_SETTING, **changes}
        variant = dataclasses.replace(scale, steps=steps, eval_every=max(steps // 10, 1), **settings)
        run_name = f"{name}_steps{steps}"  # the evaluation interval depends on STEPS: one run directory per STEPS
        print(f"diagnosis {name}: {steps} steps -> {root / run_name}")
        ((params, history),) = train_arm(variant, arm, [seed], root, progress, names=[run_name])
        pre = preconditions(variant, arm, seed, params, history)
        rows[name] = {"arm": arm, "changes": changes, "settings": settings, "history": history, **pre}
    return {"steps": steps, "variants": rows}


@spec.register("fig6_metameta")
class Fig6MetaMeta(spec.Experiment):
    """Figure 6: M2-ICL (MAML over domains) vs plain ICL, adapted on t tasks of unseen domains."""

    figure = "fig6"
    scales = SCALES
    takes_seeds = True  # no --learners: the one learner is the GPT-2 transformer; the arms are training objectives

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--retime", action="store_true", help="measure the step times again even if saved")
        text = "instead of the figure: STEPS-step runs of each variant in DIAGNOSES with the meta-training diagnostics"
        parser.add_argument("--diagnose", type=int, default=None, metavar="STEPS", help=text)

    def timed_steps(self, scale: spec.Scale) -> dict[str, tuple[Any, Any, Any, Any]]:
        assert isinstance(scale, Scale)
        return {"fig6_m2icl": (learner(scale), family(scale), train_config(scale, 0), objective(scale, "m2icl"))}

    def stem(self, args: argparse.Namespace) -> str:
        return f"fig6_diagnostics_{args.scale}" if args.diagnose is not None else super().stem(args)

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        scale, root, test_seed = ctx.scale, ctx.root, ctx.seed
        if ctx.args.diagnose is not None:
            doc = {"experiment": "fig6_diagnostics", "scale": ctx.scale_name, "settings": scale.settings()}
            return {**doc, **diagnose(scale, ctx.args.diagnose, root / "diagnose", ctx.seed, ctx.progress)}
        seeds = list(range(ctx.seed, ctx.seed + (ctx.seeds or scale.seeds)))
        labels = {"train": FAMILY, "test": f"{FAMILY}_test", "metric": "squared_error", "kind": "trained"}
        curves, histories, pre, rows = [], [], {}, []
        trained = {}
        for arm in ARMS:
            print(
                f"{arm}, seeds {seeds} (trained together): {scale.steps} steps -> {root / f'{arm}_seed{seeds[0]}'}, ..."
            )
            arm_runs = train_arm(scale, arm, seeds, root, ctx.progress)
            trained.update({(arm, seed): out for seed, out in zip(seeds, arm_runs, strict=True)})
        for seed in seeds:
            adapted = {}
            for arm in ARMS:
                params, history = trained[arm, seed]
                histories.append(history)
                pre[f"{arm}_seed{seed}"] = preconditions(scale, arm, seed, params, history)
                for t in scale.pools:
                    values = adaptation(scale, arm, seed, params, history["steps"], t, root, test_seed)
                    for name, which, steps in ((f"{arm}_adapted", "adapted", scale.adapt_steps(arm)),
                                               (arm, "unadapted", 0)):  # fmt: skip
                        curves.append(evaluate.curve(values[which], learner=name, adapt_tasks=t, adapt_steps=steps,
                                                     seed=seed, **labels, domains=scale.test_domains))  # fmt: skip
                    adapted[arm, t] = values["adapted"].mean(1)  # per domain, mean over positions
            for t in scale.pools:  # the paired bootstrap interval over domains of icl_adapted - m2icl_adapted
                m, diff = means(curves, seed, t), evaluate.bootstrap((adapted["icl", t] - adapted["m2icl", t])[:, None])
                row = {"seed": seed, "adapt_tasks": t, **{k: round(v, 4) for k, v in m.items()}}
                row["relative_advantage"] = round((m["icl_adapted"] - m["m2icl_adapted"]) / m["icl_adapted"], 4)
                row["difference_vs_icl_adapted"] = [round(diff[k][0], 4) for k in ("mean", "lo", "hi")]
                rows.append(row)
        times = step_times(scale, root, ctx.args.retime)
        curves.append(least_squares_curve(scale, test_seed))
        fam = family(scale)
        runs = {}
        for arm, s in itertools.product(ARMS, seeds):
            run = run_config(self.name, learner(scale), fam, train_config(scale, s))
            runs[f"{arm}_seed{s}"] = {**run, "objective": objective(scale, arm).config()}
        config = {"scale": ctx.scale_name, "seeds": seeds, "test_seed": test_seed, "settings": scale.settings(),
                  "test_family": {"name": FAMILY, **fam.test_domains().hparams()}, "runs": runs}  # fmt: skip
        doc = results_document(self.name, config, curves, test_seed)
        doc.update(histories=histories, summary={"rows": rows}, step_times=times, preconditions=pre)
        return doc

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """T10 as paired comparisons over seeds (a seed's two arms share its test domains): per seed, each learner's
        mean over positions and test domains; the estimate is the seed mean of the per-seed difference, with a 95% t
        interval over seeds (at least 2 seeds: else not tested). Each claim is tested only where every run learns in
        context and M2-ICL's meta-objective falls. A diagnosis: each variant's preconditions."""
        if "variants" in doc:
            return [c for name, row in doc["variants"].items() for c in run_claims(name, row, row["history"])]
        runs = {f"{h['arm']}_seed{h['seed']}": h for h in doc["histories"]}
        pre = tuple(c for run, record in doc["preconditions"].items() for c in run_claims(run, record, runs[run]))
        seeds, ts = doc["config"]["seeds"], sorted(doc["config"]["settings"]["pools"])
        enough = Claim("T10_seeds_for_an_interval", "at least 2 seeds per arm for a paired t interval over seeds",
                       float(len(seeds)), ">=", 2.0, n=len(seeds), method="seeds per arm")  # fmt: skip
        pre = (enough, *pre)
        m = {(seed, t): means(doc["curves"], seed, t) for seed in seeds for t in ts}
        adv = {(s, t): (m[s, t]["icl_adapted"] - m[s, t]["m2icl_adapted"]) / m[s, t]["icl_adapted"] for s, t in m}
        low, high = ts[0], ts[-1]
        method = (f"per seed: mean squared error over positions and {doc['config']['settings']['test_domains']} test "
                  f"domains; seed mean of the per-seed value, 95% t interval over seeds {seeds}")  # fmt: skip

        def claim(key: str, statement: str, per_seed: Any, compare: str = ">", threshold: float = 0.0, **extra):
            values = evaluate.seed_interval([per_seed(s) for s in seeds])
            kw = {"interval": (values["lo"], values["hi"]), "n": len(seeds), "method": method, "preconditions": pre}
            return Claim(key, statement, values["mean"], compare, threshold, **{**kw, **extra})

        positive = claim("T10b_advantage_positive", f"at t = {low} the relative advantage of m2icl_adapted over "
                         "icl_adapted is positive (an advantage to shrink)", lambda s: adv[s, low])  # fmt: skip
        largest = evaluate.seed_interval([adv[s, high] for s in seeds])
        return [
            claim("T10a_vs_icl_adapted", f"at t = {low} m2icl_adapted has a lower error than icl_adapted",
                  lambda s: m[s, low]["icl_adapted"] - m[s, low]["m2icl_adapted"]),
            claim("T10a_vs_icl", f"at t = {low} m2icl_adapted has a lower error than icl (unadapted)",
                  lambda s: m[s, low]["icl"] - m[s, low]["m2icl_adapted"]),
            positive,
            *(claim(f"T10b_shrinks_t{a}_t{b}", f"the relative advantage over icl_adapted shrinks from t = {a} to {b}",
                    lambda s, a=a, b=b: adv[s, a] - adv[s, b], preconditions=(*pre, positive))
              for a, b in itertools.pairwise(ts)),
            Claim("T10_advantage_small_at_largest_t", f"at t = {high} the relative advantage lies within "
                  f"+-{SMALL_ADVANTAGE}", max(abs(largest["lo"]), abs(largest["hi"])), "<", SMALL_ADVANTAGE,
                  n=len(seeds), method=f"the larger magnitude of the ends of the 95% t interval over seeds of the "
                  f"relative advantage (equivalence: two one-sided tests at 2.5%); {method}", preconditions=pre),
            claim("T10c_m2icl_unadapted_worse", "without adaptation m2icl has a higher error than icl",
                  lambda s: m[s, low]["m2icl"] - m[s, low]["icl"]),
        ]  # fmt: skip

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        if "variants" in doc:
            draw_diagnosis(doc, figures)
            return
        settings, many = doc["config"]["settings"], len(doc["config"]["seeds"]) > 1
        reference, panels = [c for c in doc["curves"] if c["kind"] == "reference"], []
        for t in settings["pools"]:
            picked = [c for name in LEARNERS for c in doc["curves"] if c["adapt_tasks"] == t and c["learner"] == name]
            records = common.seed_means(picked, ("learner", "adapt_tasks")) if many else picked
            panels.append((f"t = {t} adaptation tasks per domain", records + reference))
        band = f"mean over {len(doc['config']['seeds'])} seeds, band: min-max over seeds" if many else (
            "band: 95% bootstrap interval over domains")  # fmt: skip
        title = (
            f"Figure 6: M2-ICL vs ICL on {settings['test_domains']} unseen domains (d={settings['d']}, "
            f"{settings['steps']} outer steps, scale {doc['scale']})\n{band}"
        )
        plot_panels(panels, figures / f"fig6_metameta_{doc['scale']}.png", title)

    def report(self, doc: dict[str, Any]) -> None:
        if "variants" in doc:
            print(f"\ndiagnosis after {doc['steps']} outer steps (objective_*: means over 16 fixed domains)")
            print(f"{'variant':<32}{'last/first pos.':>16}{'query fall':>12}{'query before':>14}{'query after':>13}"
                  f"{'support a/b':>13}{'grad norm':>11}")  # fmt: skip
            for name, row in doc["variants"].items():
                last = {k[10:]: (v[-1] if (v := row["history"].get(k)) else np.nan) for k in OBJECTIVE_COLUMNS}
                losses = f"{last['query_before']:>14.3f}{last['query_after']:>13.3f}"
                print(
                    f"{name:<32}{row['last_over_first_position']:>16.3f}{row.get('query_after_fall', np.nan):>12.3f}"
                    f"{losses}{last['support_after_over_before']:>13.3f}{last['meta_grad_norm']:>11.3g}"
                )
            return
        print("\nmean squared error over positions and test domains (diff: icl_adapted - m2icl_adapted, 95% CI)")
        print(f"{'seed':>4}{'t':>6}" + "".join(f"{n:>15}" for n in LEARNERS) + f"{'rel. adv.':>11}  diff [lo, hi]")
        for row in doc["summary"]["rows"]:
            mean, lo, hi = row["difference_vs_icl_adapted"]
            values = "".join(f"{row[n]:>15.4f}" for n in LEARNERS) + f"{row['relative_advantage']:>11.3f}"
            print(f"{row['seed']:>4}{row['adapt_tasks']:>6}{values}  {mean:.4f} [{lo:.4f}, {hi:.4f}]")
        for run, record in doc["preconditions"].items():
            fall = record.get("query_after_fall")
            fell = "" if fall is None else f"; its post-adaptation query loss fell {fall:.0%} over meta-training"
            print(f"{run}: error at the last position / position 0 on {TRAINING_DOMAINS} training domains "
                  f"{record['last_over_first_position']:.3f}{fell}")  # fmt: skip
        times = doc["step_times"]
        print(f"seconds per step after compilation ({times['timed_steps']} fused steps): meta second order "
              f"{times['m2icl_second_order']:.4f}, first order {times['m2icl_first_order']:.4f}, plain ICL "
              f"{times['icl']:.4f} (second/first {times['second_over_first_order']}x, second/ICL "
              f"{times['second_order_over_icl']}x)")  # fmt: skip


def draw_diagnosis(doc: dict[str, Any], figures: Path) -> None:
    """Vs outer step, for the M2-ICL variants: the post-adaptation query loss relative to its first logged value, the
    support loss after / before the inner steps (median over domains), the meta-gradient norm; and every variant's
    error curve on training domains relative to position 0's."""
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2), dpi=110)
    for name, row in doc["variants"].items():
        h, curve = row["history"], row["training_domains_curve"]
        if row["arm"] == "m2icl":
            query = np.asarray(h["objective_query_after"], float)
            axes[0].plot(h["step"], query / query[0], marker=".", label=name)
            axes[1].plot(h["step"], h["objective_support_after_over_before"], marker=".", label=name)
            axes[2].plot(h["step"], h["objective_meta_grad_norm"], marker=".", label=name)
        axes[3].plot(curve["positions"], np.asarray(curve["mean"]) / curve["mean"][0], marker=".", label=name)
    titles = ("query loss after the inner steps / at step 0", "support loss after / before the inner steps (median)",
              "meta-gradient norm", "error on training domains / position 0's")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("context size" if ax is axes[3] else "outer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    axes[3].axhline(IN_CONTEXT_RATIO, color="0.4", ls=":", lw=1)
    fig.suptitle(f"Figure 6 diagnosis: {doc['steps']} outer steps per variant (scale {doc['scale']})")
    fig.tight_layout()
    fig.savefig(figures / f"fig6_diagnostics_{doc['scale']}.png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Fig6MetaMeta, argv)


if __name__ == "__main__":
    spec.script(Fig6MetaMeta)
