"""Unsupervised in-context learning by joint inference: the analog of "Large (Vision) Language Models are Unsupervised
In-Context Learners" (Gadetsky et al.) on the suite's own learners.

    icl-meta reproduce unsupervised --scale cpu
    python -m experiments.unsupervised --scale smoke --methods zero_shot,uicl,kmeans --learners protonet

Pre-trains (or reuses, from `--out`, default runs/unsupervised/SCALE) an ICL transformer on each task regime and the
`--learners` (default ProtoNet, MatchNet, CNP) on anchored prototypes, then runs every method on the same held-out
tasks, each split into an unlabeled set U (transductive accuracy) and held-out queries Q (inductive accuracy).
Regimes (`--regimes`): anchored prototypes at several input scales sigma (a zero-shot prior from global label anchors;
the middle sigma is the main one), symmetric prototypes (no prior: accuracy up to a label permutation) and linear
regression (the negative control: unlabeled inputs carry nothing about y). Methods (`--methods`): zero-shot,
supervised ICL, unsupervised ICL (T rounds), unsupervised fine-tuning (low-rank adapter, linear head), exact joint
inference on small subsets, k-means, EM, anchored k-means, the Bayes-optimal learner, and at the main sigma the
ablations (uniform sampling, R=1, gamma, N) and unsupervised ICL with the `--learners`.

Scales: smoke (2 seeds) ~1-2 min on a 2-core CPU; cpu (3 pre-training seeds, trained together; every method on each)
~42 min, estimated (one seed took ~14 min, pre-training ~5 of them); paper: more tasks, larger learners (a
GPU job). Writes figures/unsupervised_SCALE.json (curves per round and fine-tuning step, the table of final metrics,
the per-task values, the claims) and PNGs per round, per step and per method. Measured results: docs/results.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from baselines import clustering
from experiments import common, spec
from icl_meta import evaluate, families, joint, label_metrics, learners, study
from icl_meta.claims import Claim
from icl_meta.contracts import Learner, TaskFamily
from icl_meta.errors import ConfigError
from icl_meta.runs import results_document, run_config
from icl_meta.train import TEST_STREAM, TrainConfig, stream_key

REGIMES = ("anchored", "symmetric", "regression")
METHODS = (
    "zero_shot", "sup_icl", "uicl", "uft_lora", "uft_linear", "exact", "kmeans", "em", "kmeans_anchored", "bayes",
    "ablations", "learners",
)  # fmt: skip
UNSUPERVISED = ("uicl", "uft_lora", "uft_linear")
# The claims' thresholds (the design's), fixed here: never computed from the results.
P_MAX, GAP_MIN, GAP_SHARE = 0.01, 0.15, 0.5  # claim 1: significance; a gap worth recovering; the share recovered
ON_PAR, PLATEAU, COLLAPSE, NEAR_BEST = 0.02, 0.01, 0.1, 0.05  # claims 2, 3, 4 and 6b


@dataclasses.dataclass(frozen=True)
class Scale(spec.Scale):
    d: int
    classes: int
    sigmas: tuple[float, ...]  # anchored test regimes; the middle one is the main regime (ablations, learners)
    train_sigma: float
    regression_d: int
    width: int  # the ICL transformer (gpt2 blocks, interleaved protocol)
    depth: int
    heads: int
    steps: dict[str, int]  # pre-training steps: "icl" per regime, each other learner (default: "icl"'s)
    batch: int
    n: int  # pre-training sequence length
    lr: float
    tasks: int  # held-out tasks per regime
    unlabeled: int  # U
    queries: int  # Q
    icl: joint.ICLConfig
    finetune: joint.FineTuneConfig
    exact_tasks: int
    exact_points: int
    ablation_n: tuple[int, ...] = (1, 4)  # sequence lengths N of the fine-tuning ablation (besides finetune.n)
    ablation_gamma: tuple[float, ...] = (0.0, 1.0)  # entropy weights of the fine-tuning ablation (besides 10)
    seeds: int = 3  # pre-training seeds per learner and regime (trained together); every method runs on each


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        d=4, classes=3, sigmas=(0.8,), train_sigma=0.8, regression_d=2, width=16, depth=1, heads=2,
        steps={"icl": 60, "icl_regression": 60, "protonet": 20, "matchnet": 20, "cnp": 20}, batch=16, n=12, lr=3e-3,
        tasks=4, unlabeled=12, queries=6, icl=joint.ICLConfig(rounds=2, demos=6, votes=2),
        finetune=joint.FineTuneConfig(steps=4, batch=2, n=6, eval_every=2, rank=2, distill_steps=5),
        exact_tasks=2, exact_points=5, ablation_n=(1,), ablation_gamma=(0.0,), seeds=2,
    ),
    "cpu": Scale(
        d=8, classes=3, sigmas=(0.5, 0.8, 1.2), train_sigma=0.8, regression_d=4, width=64, depth=2, heads=4,
        steps={"icl": 2000, "icl_regression": 1000, "protonet": 1000, "matchnet": 1000, "cnp": 1000},
        batch=64, n=32, lr=1e-3,
        tasks=32, unlabeled=64, queries=64, icl=joint.ICLConfig(), finetune=joint.FineTuneConfig(),
        exact_tasks=16, exact_points=8, ablation_gamma=(0.0,),
    ),
    "paper": Scale(
        d=8, classes=3, sigmas=(0.5, 0.8, 1.2), train_sigma=0.8, regression_d=8, width=128, depth=4, heads=4,
        steps={"icl": 20_000, "icl_regression": 20_000, "protonet": 5000, "matchnet": 5000, "cnp": 5000},
        batch=128, n=32, lr=3e-4,
        tasks=128, unlabeled=64, queries=64, icl=joint.ICLConfig(), finetune=joint.FineTuneConfig(steps=3000),
        exact_tasks=64, exact_points=8,
    ),
}  # fmt: skip


def training_family(scale: Scale, regime: str) -> TaskFamily:
    if regime == "anchored":
        return families.get("anchored_prototype", d=scale.d, num_classes=scale.classes, sigma=scale.train_sigma)
    if regime == "symmetric":
        return families.get("prototype", d=scale.d, num_classes=scale.classes, permutation="per_task")
    return families.get("linear_regression", d=scale.regression_d)


def jobs(scale: Scale, seed: int, regimes: Sequence[str], others: Sequence[str]) -> list[study.Job]:
    """The ICL transformer on each regime: gpt2 blocks on interleaved tokens, every position in the loss (position 0
    is the zero-shot predictor; a prediction independent of the sequence length, so demonstration sequences read as
    in training). The other learners on anchored tasks, with a plain log-softmax where they have the reference's
    double softmax (joint inference reads their probabilities)."""

    def cfg(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(steps=steps, batch=scale.batch, n=scale.n, lr=lr, scan_steps=50, eval_every=steps,
                           eval_tasks=256, seed=seed)  # fmt: skip

    out = []
    for regime in (r for r in REGIMES if r in regimes):
        icl = common.gpt2(scale.width, scale.depth, scale.heads, scale.n)
        steps = scale.steps["icl_regression" if regime == "regression" else "icl"]
        out.append(study.Job(regime, icl, training_family(scale, regime), cfg(steps, scale.lr)))
    family = training_family(scale, "anchored")
    for name in others:
        if common.in_context(name):
            raise ConfigError(f"--learners: {name} is an in-context model; the ICL transformer is the one pre-trained")
        quirk = "double_softmax" in getattr(learners.REGISTRY.cls(name), "__dataclass_fields__", {})
        learner = learners.build_for(family.spec, name, **({"double_softmax": False} if quirk else {}))
        out.append(study.Job("anchored", learner, family, cfg(scale.steps.get(name, scale.steps["icl"]), 1e-3)))
    return out


@dataclasses.dataclass
class Split:
    """A regime's held-out tasks: the unlabeled set U and the queries Q, inputs and true labels."""

    family: TaskFamily
    x_U: jax.Array
    y_U: np.ndarray
    x_Q: jax.Array
    y_Q: np.ndarray


def split(family: TaskFamily, scale: Scale, seed: int) -> Split:
    ep, u = family.sample(stream_key(seed, TEST_STREAM), scale.tasks, scale.unlabeled + scale.queries), scale.unlabeled
    return Split(family, ep.x[:, :u], np.asarray(ep.y[:, :u]), ep.x[:, u:], np.asarray(ep.y[:, u:]))


def headline_metric(regime: str, method: str = "") -> str:
    """MSE on regression; accuracy up to permutation on symmetric tasks and for k-means and EM; else raw accuracy."""
    if regime == "regression":
        return "squared_error"
    return "accuracy_perm" if regime == "symmetric" or method in ("kmeans", "em") else "accuracy"


class Results:
    """One regime's methods over every pre-training seed: per-task values keyed (method[:learner], split, metric),
    one [B] array per seed (the same B tasks for every seed), and after `finish` the table rows (final U and Q
    metrics with intervals over seeds and tasks) and tidy curves (per round or step)."""

    def __init__(self, regime: str, sigma: float | None, data: Split, num_classes: int | None):
        self.regime, self.sigma, self.data, self.C = regime, sigma, data, num_classes
        self.seed: int | None = None  # the seed whose learner is being evaluated
        self.rows: list[dict[str, Any]] = []
        self.curves: list[dict[str, Any]] = []
        self.per_task: dict[tuple[str, str, str], list[np.ndarray]] = {}
        self._methods: dict[tuple[str, str], None] = {}  # (method, learner) in the order first added
        self._trajectories: dict[tuple[str, str, str, str], list[np.ndarray]] = {}  # ... per seed [B, T]
        self._ticks: dict[tuple[str, str, str, str], list[int]] = {}

    def add(self, method: str, pred_U: Any, pred_Q: Any, learner: str = "icl") -> None:
        self._methods[method, learner] = None
        for name, pred, true in (("U", pred_U, self.data.y_U), ("Q", pred_Q, self.data.y_Q)):
            for metric, per_task in label_metrics.scores(pred, true, self.C).items():
                self.per_task.setdefault((tag_of(method, learner), name, metric), []).append(per_task)

    def trajectory(self, method: str, out: dict[str, Any], axis: str, ticks: Sequence[int], learner: str = "icl"):
        """Curves of the headline metric over rounds or steps (`ticks`); the last entry is the method's row."""
        metric = headline_metric(self.regime)
        for name, true in (("U", self.data.y_U), ("Q", self.data.y_Q)):
            values_BT = np.stack([label_metrics.scores(p, true, self.C)[metric] for p in list(out[name])], axis=1)
            self._trajectories.setdefault((method, learner, name, axis), []).append(values_BT)
            self._ticks[method, learner, name, axis] = list(ticks)
        self.add(method, out["U"][-1], out["Q"][-1], learner=learner)

    def finish(self) -> None:
        """The table rows and curves over the seeds evaluated (the per-seed rows of `exact` stay as they are)."""
        for method, learner in self._methods:
            for name in ("U", "Q"):
                row: dict[str, Any] = {"regime": self.regime, "sigma": self.sigma, "method": method, "learner": learner}
                row["split"] = name
                for (tag, split, metric), values in self.per_task.items():
                    if (tag, split) == (tag_of(method, learner), name):
                        summary = label_metrics.summary(np.stack(values))
                        row[metric] = round(summary["mean"], 4)
                        row[f"{metric}_ci"] = [round(summary["lo"], 4), round(summary["hi"], 4)]
                        row["seeds"] = len(values)
                self.rows.append(row)
        for (method, learner, name, axis), values in self._trajectories.items():
            labels = {"regime": self.regime, "sigma": self.sigma, "method": method, "learner": learner, "split": name}
            self.curves.append(evaluate.curve(np.concatenate(values), **labels, metric=headline_metric(self.regime),
                                              axis=axis, ticks=self._ticks[method, learner, name, axis],
                                              seeds=len(values)))  # fmt: skip


def tag_of(method: str, learner: str) -> str:
    return method if learner in ("icl", "classical") else f"{method}:{learner}"


def timed(log: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    log[name] = round(log.get(name, 0.0) + time.perf_counter() - t0, 2)
    return out


def run_classification(res: Results, icl: tuple[Learner, Any], scale: Scale, methods: set[str], key: jax.Array,
                       log: dict[str, float], anchors: np.ndarray | None, others: dict[str, tuple[Learner, Any]],
                       main: bool, progress: bool) -> None:  # fmt: skip
    """Every classification method on one regime's tasks (`res.data`), in a fixed order of random keys."""
    (learner, params), d, C = icl, res.data, res.C
    keys = iter(jax.random.split(key, 32))
    zs_U = jnp.argmax(joint.zero_shot(learner, params, d.x_U, C), -1)
    zs_Q = jnp.argmax(joint.zero_shot(learner, params, d.x_Q, C), -1)
    if "zero_shot" in methods:
        res.add("zero_shot", zs_U, zs_Q)
    if "sup_icl" in methods:
        sup = lambda: joint.supervised_icl(learner, params, next(keys), d.x_U, d.y_U, d.x_Q, C, scale.icl)  # noqa: E731
        res.add("sup_icl", *timed(log, "sup_icl", sup))
    start_U, start_Q = zs_U, zs_Q
    if anchors is None:  # no zero-shot knowledge: a random class-balanced labelling (of Q too) breaks the symmetry
        start_U, start_Q = (joint.balanced_random_labels(next(keys), *x.shape[:2], C) for x in (d.x_U, d.x_Q))
    found: dict[str, np.ndarray] = {}  # each method's final labelling of U, for the objective-alignment metrics

    def uicl(name: str, cfg: joint.ICLConfig, who: str = "icl", pair: tuple[Learner, Any] = icl) -> None:
        bar, marks = tqdm(total=cfg.rounds, desc=f"{res.regime} {name} {who}", disable=not progress, leave=False), []

        def on_round(t: int, labels_U: Any, labels_Q: Any) -> None:
            jax.block_until_ready(labels_Q)
            marks.append(time.perf_counter())
            bar.update(1)

        tag = name if who == "icl" else f"{name}:{who}"
        out = timed(log, tag, lambda: joint.unsupervised_icl(*pair, next(keys), d.x_U, d.x_Q, start_U, start_Q, C, cfg,
                                                             on_round))  # fmt: skip
        bar.close()
        if len(marks) >= 2:  # one compiled round over every query of every task (round 1 includes compiling)
            log[f"{tag}_one_round"] = round(marks[1] - marks[0], 3)
        res.trajectory(name, out, "round", range(cfg.rounds + 1), learner=who)
        if who == "icl":
            found[name] = np.asarray(out["U"][-1])

    def uft(name: str, cfg: joint.FineTuneConfig) -> None:
        out = timed(log, name, lambda: joint.unsupervised_finetune(learner, params, next(keys), d.x_U, d.x_Q, C, cfg))
        res.trajectory(name, out, "step", range(0, cfg.steps + 1, cfg.eval_every))
        found[name] = np.asarray(out["U"][-1])

    if "uicl" in methods:
        uicl("uicl", scale.icl)
    ft = scale.finetune
    linear = dataclasses.replace(ft, encoder="linear", distill_steps=ft.distill_steps if anchors is not None else 0)
    if "uft_lora" in methods:
        uft("uft_lora", ft)
    if "uft_linear" in methods:
        uft("uft_linear", linear)
    if main and "ablations" in methods:
        uicl("uicl_uniform", dataclasses.replace(scale.icl, sampling="uniform"))
        uicl("uicl_r1", dataclasses.replace(scale.icl, votes=1))
        for gamma in scale.ablation_gamma:
            uft(f"uft_linear_gamma{gamma:g}", dataclasses.replace(linear, gamma=gamma))
        for n in scale.ablation_n:  # the same clipping as N=16 (its default is N), so only N changes
            uft(f"uft_linear_n{n}", dataclasses.replace(linear, n=n, clip=linear.clip or float(linear.n)))
    if main and "learners" in methods:
        for who, pair in others.items():
            uicl("uicl", scale.icl, who, pair)
            res.add("sup_icl", *joint.supervised_icl(*pair, next(keys), d.x_U, d.y_U, d.x_Q, C, scale.icl), learner=who)
    x_all, u = jnp.concatenate([d.x_U, d.x_Q], axis=1), d.x_U.shape[1]
    fits = {"kmeans": lambda: clustering.kmeans(next(keys), x_all, C)[0],  # on U and Q, as transductive methods see U
            "em": lambda: clustering.gmm_em(next(keys), x_all, C)[0]}  # fmt: skip
    if anchors is not None:
        fits["kmeans_anchored"] = lambda: clustering.kmeans(next(keys), x_all, C, init_CD=jnp.asarray(anchors))[0]
    for name in (m for m in fits if m in methods):
        labels = timed(log, name, fits[name])
        res.add(name, labels[:, :u], labels[:, u:], learner="classical")
    if anchors is not None and "bayes" in methods:  # what the rounds can reach with the Bayes-optimal learner
        bayes = learners.build("gaussian_bayes", num_classes=C, anchors=anchors.tolist(), prior_std=d.family.shift,
                               noise_std=d.family.sigma)  # fmt: skip
        res.add("sup_icl", *joint.supervised_icl(bayes, None, next(keys), d.x_U, d.y_U, d.x_Q, C, scale.icl), "bayes")
        uicl("uicl", scale.icl, "bayes", (bayes, None))
    if main and "exact" in methods:  # is J a good criterion? Exactly, on the first points of U of the first tasks
        b, m, k = min(scale.exact_tasks, d.x_U.shape[0]), scale.exact_points, next(keys)
        found_m = {name: labels[:b, :m] for name, labels in found.items()}
        exact = timed(log, "exact", lambda: joint.exact_alignment(learner, params, k, d.x_U[:b, :m], d.y_U[:b, :m], C,
                                                                  found_m))  # fmt: skip
        row = {"regime": res.regime, "sigma": res.sigma, "method": "exact", "learner": "icl", "split": "U", "tasks": b,
               "seed": res.seed}  # fmt: skip
        res.rows.append({**row, "points": m, **{name: round(value, 4) for name, value in exact.items()}})


def run_regression(res: Results, icl: tuple[Learner, Any], scale: Scale, key: jax.Array, log: dict[str, float]):
    """The negative control: zero-shot, supervised ICL and unsupervised ICL on the learner's own predictions (MSE)."""
    (learner, params), d = icl, res.data
    k_sup, k_uicl = jax.random.split(key)
    zs_U, zs_Q = joint.zero_shot(learner, params, d.x_U, None), joint.zero_shot(learner, params, d.x_Q, None)
    res.add("zero_shot", zs_U, zs_Q)
    res.add("sup_icl", *joint.supervised_icl(learner, params, k_sup, d.x_U, jnp.asarray(d.y_U), d.x_Q, None, scale.icl))
    uicl = lambda: joint.unsupervised_icl(learner, params, k_uicl, d.x_U, d.x_Q, zs_U, zs_Q, None, scale.icl)  # noqa: E731
    out = timed(log, "uicl_regression", uicl)
    res.trajectory("uicl", out, "round", range(scale.icl.rounds + 1))


def regime_name(sigma: float) -> str:
    return f"anchored_sigma{sigma:g}"


@spec.register("unsupervised")
class Unsupervised(spec.Experiment):
    """Unsupervised in-context learning by joint inference (Gadetsky et al.'s analog)."""

    figure = "unsupervised"
    scales = SCALES
    learners = ("protonet", "matchnet", "cnp")  # unsupervised ICL with these as the learner (anchored, main sigma)
    takes_seeds = True  # pre-training seeds per learner and regime

    def add_arguments(self, parser) -> None:
        parser.add_argument("--methods", default=",".join(METHODS), help=f"a subset of {','.join(METHODS)}")
        parser.add_argument("--regimes", default=",".join(REGIMES), help=f"a subset of {','.join(REGIMES)}")

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        methods = set(spec.parse_choices(ctx.args.methods, METHODS, "--methods"))
        regimes = spec.parse_choices(ctx.args.regimes, REGIMES, "--regimes")
        scale, t0 = ctx.scale, time.perf_counter()
        others = ctx.learners if "learners" in methods and "anchored" in regimes else ()
        seeds = list(range(ctx.seed, ctx.seed + (ctx.seeds or scale.seeds)))
        grid = jobs(scale, ctx.seed, regimes, others)
        trained, summaries, runs = {}, [], {}
        for i, job in enumerate(grid):
            keys = [f"{job.key}_seed{seed}" for seed in seeds]
            configs = [run_config("unsupervised", job.learner, job.family, dataclasses.replace(job.cfg, seed=seed))
                       for seed in seeds]  # fmt: skip
            runs.update(zip(keys, configs, strict=True))
            if i >= len(grid) - len(others) and job.learner.init(jax.random.PRNGKey(0), job.family.spec) is None:
                trained.update({(job.key, seed): (job.learner, None) for seed in seeds})  # closed form: no training
                continue
            print(f"[{i + 1}/{len(grid)}] {job.learner.name} on {job.train}, seeds {seeds} (trained together): "
                  f"{job.cfg.steps} steps -> {ctx.root / keys[0]}, ...")  # fmt: skip
            results_S = study.train_seed_runs(job.learner, job.family, job.cfg, seeds, [ctx.root / k for k in keys],
                                              configs, ctx.progress)  # fmt: skip
            for seed, result in zip(seeds, results_S, strict=True):
                trained[job.key, seed] = (job.learner, result.state.params)
                last = result.history[-1]
                metric = next(k for k in last if k.startswith("eval_"))
                summaries.append({"train": job.train, "learner": job.learner.name, "seed": seed,
                                  "steps": int(result.state.step), "train_wall_s": last["wall_s"],
                                  metric: last[metric]})  # fmt: skip
        log: dict[str, float] = {"pretrain": round(time.perf_counter() - t0, 1)}
        results: dict[str, Results] = {}
        main_sigma = scale.sigmas[len(scale.sigmas) // 2]
        base = training_family(scale, "anchored")
        if "anchored" in regimes:
            for sigma in scale.sigmas:
                name = regime_name(sigma)
                results[name] = Results(name, sigma, split(base.with_sigma(sigma), scale, ctx.seed), scale.classes)
        if "symmetric" in regimes:
            family = training_family(scale, "symmetric")
            results["symmetric"] = Results("symmetric", family.sigma, split(family, scale, ctx.seed), scale.classes)
        if "regression" in regimes:
            family = training_family(scale, "regression")
            results["regression"] = Results("regression", family.sigma, split(family, scale, ctx.seed), None)
        for seed in seeds:  # every method on the same held-out tasks with each seed's pre-trained learners
            icl = {job.train: trained[job.key, seed] for job in grid[: len(grid) - len(others)]}
            key = jax.random.PRNGKey(seed)
            for res in results.values():
                res.seed = seed
                key, k = jax.random.split(key)
                if res.regime.startswith("anchored"):
                    compared = {name: trained[f"anchored__{name}", seed] for name in others}
                    run_classification(res, icl["anchored"], scale, methods, k, log, base.label_anchors(), compared,
                                       res.sigma == main_sigma, ctx.progress)  # fmt: skip
                elif res.regime == "symmetric":
                    sym_methods = methods & {"sup_icl", "uicl", "kmeans", "em", "zero_shot"}
                    run_classification(res, icl["symmetric"], scale, sym_methods, k, log, None, {}, False,
                                       ctx.progress)  # fmt: skip
                else:
                    run_regression(res, icl["regression"], scale, k, log)
        for res in results.values():
            res.finish()
        config = {"scale": ctx.scale_name, "seed": ctx.seed, "seeds": seeds, "methods": sorted(methods),
                  "regimes": list(regimes), "settings": scale.settings(), "runs": runs}  # fmt: skip
        doc = results_document("unsupervised", config, [c for r in results.values() for c in r.curves], ctx.seed)
        per_task = {name: {"|".join(k): np.round(np.stack(v), 5).tolist() for k, v in r.per_task.items()}
                    for name, r in results.items()}  # fmt: skip
        table = [row for r in results.values() for row in r.rows]
        return {**doc, "table": table, "run_summaries": summaries, "per_task": per_task, "time_s": log}

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """From the stored per-task values on Q (accuracy; MSE on regression): paired task-bootstrap intervals over
        the held-out tasks. Each claim needs the pre-trained learner to learn in context in its regime."""
        per_task, out, sigmas = doc["per_task"], [], doc["config"]["settings"]["sigmas"]
        main = regime_name(sigmas[len(sigmas) // 2])

        def vals(regime: str, method: str, metric: str = "accuracy") -> Any:
            found = per_task.get(regime, {}).get(f"{method}|Q|{metric}")
            return None if found is None else np.asarray(found, np.float64)

        def has(regime: str, *methods: str, metric: str = "accuracy") -> bool:
            return all(vals(regime, m, metric) is not None for m in methods)

        def paired(cid, text, regime, a, b, compare, threshold=0.0, pre=(), metric="accuracy", use="interval"):
            """On mean(a - b): its interval decides, or only its `upper` end, its `mean` or its sign-flip `p`."""
            d = label_metrics.paired_difference(vals(regime, a, metric), vals(regime, b, metric))
            d = {k: round(float(v), 4) for k, v in d.items()}
            many = vals(regime, a, metric).ndim == 2 and len(vals(regime, a, metric)) > 1  # seeds x tasks
            over, boot = ("seeds and tasks", "crossed seed x task bootstrap") if many else ("tasks", "task-bootstrap")
            how = f"mean over {over} of {a} - {b} ({metric} on Q), paired {boot} 95% interval"
            test = f"sign-flip test of {a} - {b}" + (" over tasks (seed means)" if many else "") + ", 1000 patterns"
            how = {"upper": f"upper end of the {how}", "p": test}.get(use, how)
            estimate = {"upper": d["hi"], "p": d["p"], "mean": d["mean"]}.get(use, d["mean"])
            interval = (d["lo"], d["hi"]) if use == "interval" else None
            return Claim(cid, text, estimate, compare, threshold, interval, vals(regime, a, metric).size, how, pre)

        def learns(regime: str) -> tuple[Claim, ...]:
            mse = regime == "regression"
            metric = "squared_error" if mse else "accuracy"
            text = f"the pre-trained learner learns in context on {regime}: supervised ICL beats its zero-shot"
            if not has(regime, "sup_icl", "zero_shot", metric=metric):  # not measured: its claims are not tested
                missing = "supervised ICL or zero-shot was not run (--methods)"
                return (Claim(f"0_learns_in_context/{regime}", text, None, ">", 0.0, method=missing),)
            return (paired(f"0_learns_in_context/{regime}", text, regime, "sup_icl", "zero_shot", "<" if mse else ">",
                           metric=metric),)  # fmt: skip

        on_par, learning = [], []  # per case: on par; per regime: whether its learner learns in context (if known)
        for regime in (r for r in per_task if r.startswith("anchored") and has(r, "zero_shot", "sup_icl")):
            pre, zs, sup = learns(regime), vals(regime, "zero_shot"), vals(regime, "sup_icl")
            learning.append(all(p.held for p in pre))
            text = f"supervised ICL beats zero-shot by >= {GAP_MIN}: a gap to recover"
            gap = Claim(f"1_gap/{regime}", text, round(float(sup.mean() - zs.mean()), 4), ">=", GAP_MIN, None, zs.size)
            for method in (m for m in UNSUPERVISED if has(regime, m)):
                at, mine = f"{regime}/{method}", vals(regime, method)
                out.append(paired(f"1_beats_zero_shot/{at}", f"{method} beats zero-shot", regime, method,
                                  "zero_shot", ">", pre=pre))  # fmt: skip
                out.append(paired(f"1_beats_zero_shot_p/{at}", f"{method} beats zero-shot at p < {P_MAX}", regime,
                                  method, "zero_shot", "<", P_MAX, pre, use="p"))  # fmt: skip
                share = round(label_metrics.gap_recovered(mine, zs, sup), 4)
                out.append(Claim(f"1_gap_recovered/{at}", f"{method} recovers >= {GAP_SHARE} of the gap to supervised "
                                 "ICL", share, ">=", GAP_SHARE, None, mine.size, "(method - zero-shot) / (supervised "
                                 "ICL - zero-shot), means over tasks", (*pre, gap)))  # fmt: skip
                a, b = label_metrics.summary(mine), label_metrics.summary(sup)
                within = Claim(f"2_within_2_points/{at}", f"{method} within {ON_PAR} of supervised ICL",
                               round(a["mean"] - b["mean"], 4), ">=", -ON_PAR, None, mine.size, "difference of means",
                               pre)  # fmt: skip
                overlap = Claim(f"2_intervals_overlap/{at}", f"{method}'s interval overlaps supervised ICL's",
                                round(a["hi"] - b["lo"], 4), ">=", 0.0, None, mine.size, "upper end of its task-"
                                "bootstrap interval - lower end of supervised ICL's", pre)  # fmt: skip
                out += [within, overlap]
                on_par.append(bool(within.held and overlap.held))
            if has(regime, "kmeans_anchored", "uicl"):
                out.append(paired(f"6a_not_below_kmeans_anchored/{regime}", "unsupervised ICL not below anchored "
                                  "k-means (the paired interval reaches 0)", regime, "uicl", "kmeans_anchored", ">=",
                                  pre=pre, use="upper"))  # fmt: skip
        if on_par:
            out.append(Claim("2_on_par_somewhere", "an unsupervised method on par with supervised ICL (within "
                             f"{ON_PAR}, intervals overlapping) in at least one case", sum(on_par), ">=", 1, None,
                             len(on_par), "count of (regime, method) cases on par", (Claim("0_learns_in_context_"
                             "somewhere", "the pre-trained learner learns in context in at least one anchored regime",
                             sum(learning), ">=", 1, None, len(learning), "count of regimes"),)))  # fmt: skip
        pre = learns(main)
        curve = next((c for c in doc["curves"] if (c["regime"], c["method"], c["learner"], c["split"], c["axis"])
                      == (main, "uicl", "icl", "Q", "round")), None)  # fmt: skip
        if curve is not None and len(curve["mean"]) >= 3 and has(main, "uicl", "zero_shot"):
            out.append(paired(f"3_rises/{main}", "unsupervised ICL rises above its round 0 (zero-shot)", main, "uicl",
                              "zero_shot", ">", pre=pre))  # fmt: skip
            out.append(Claim(f"3_plateaus/{main}", f"unsupervised ICL plateaus: its last round moves < {PLATEAU}",
                             round(abs(curve["mean"][-1] - curve["mean"][-2]), 4), "<", PLATEAU, None,
                             vals(main, "uicl").size, "|last round's mean - the one before's|", pre))  # fmt: skip
        if has(main, "uft_linear_gamma0", "uft_linear"):
            rate = vals(main, "uft_linear_gamma0", "collapsed").mean() - vals(main, "uft_linear", "collapsed").mean()
            out.append(Claim(f"4_collapses_without_entropy/{main}", f"linear fine-tuning collapses on >= {COLLAPSE} "
                             "more of the tasks without the entropy term (gamma 0; one of three signs)",
                             round(float(rate), 4), ">=", COLLAPSE, None, vals(main, "uft_linear").size,
                             "difference of the collapse rates", pre))  # fmt: skip
        for cid, a, b, text in (
            ("4_worse_without_entropy", "uft_linear_gamma0", "uft_linear", "fine-tuning is worse without the "
             "entropy term (one of three signs)"),
            ("4_worse_with_uniform_sampling", "uicl_uniform", "uicl", "unsupervised ICL is worse with uniform than "
             "class-balanced demonstrations (one of three signs)"),
            ("4_n1_gains_less", "uft_linear_n1", "uft_linear", "fine-tuning on single points (N=1) gains less"),
        ):  # fmt: skip
            if has(main, a, b):
                out.append(paired(f"{cid}/{main}", text, main, a, b, "<", pre=pre))
        if has("regression", "uicl", "zero_shot", "sup_icl", metric="squared_error"):
            out.append(paired("5_no_gain_on_regression/regression", "on the regression control unsupervised ICL's "
                              "MSE is not below zero-shot's", "regression", "uicl", "zero_shot", ">=",
                              pre=learns("regression"), metric="squared_error", use="upper"))  # fmt: skip
        if has("symmetric", "uicl", "kmeans", "em", metric="accuracy_perm"):
            best = max(("kmeans", "em"), key=lambda m: vals("symmetric", m, "accuracy_perm").mean())
            out.append(paired("6b_near_best_clustering/symmetric", f"on symmetric tasks unsupervised ICL within "
                              f"{NEAR_BEST} of {best} (up to permutation)", "symmetric", "uicl", best, ">=",
                              -NEAR_BEST, learns("symmetric"), "accuracy_perm", "mean"))  # fmt: skip
        return out

    def report(self, doc: dict[str, Any]) -> None:
        seeds = len(doc["config"].get("seeds", [doc["config"]["seed"]]))
        print(f"\ninductive accuracy on held-out queries Q (MSE for regression), mean [95% interval over "
              f"{f'{seeds} pre-training seeds and ' if seeds > 1 else ''}tasks]:")  # fmt: skip
        for row in (r for r in doc["table"] if r["split"] == "Q" and r["method"] != "exact"):
            metric = headline_metric(row["regime"], row["method"])
            name = f"{row['regime']:<20} {row['method']:<20} {row['learner']:<10} {metric:<14}"
            print(f"  {name} {row[metric]:.3f} [{row[f'{metric}_ci'][0]:.3f}, {row[f'{metric}_ci'][1]:.3f}]")
        for row in (r for r in doc["table"] if r["method"] == "exact"):
            numbers = {k: v for k, v in row.items() if k not in ("regime", "sigma", "method", "learner", "split")}
            print(f"  exact joint inference ({row['regime']}): {numbers}")
        print(f"time (s): {doc['time_s']}")

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        stem = f"unsupervised_{doc['scale']}"
        table = [r for r in doc["table"] if r["split"] == "Q" and r["method"] != "exact"]
        for axis, suffix, title in (("round", "rounds", "unsupervised ICL: accuracy per round"),
                                    ("step", "finetune", "unsupervised fine-tuning: accuracy per step")):  # fmt: skip
            curves = [c for c in doc["curves"] if c["axis"] == axis and c["split"] == "Q"]
            regimes = list(dict.fromkeys(c["regime"] for c in curves))
            if not regimes:
                continue
            fig, axes = plt.subplots(1, len(regimes), figsize=(4.4 * len(regimes), 3.6), dpi=110, squeeze=False)
            for ax, regime in zip(axes[0], regimes, strict=True):
                for c in (c for c in curves if c["regime"] == regime):
                    label = c["method"] + ("" if c["learner"] == "icl" else f" ({c['learner']})")
                    (line,) = ax.plot(c["ticks"], c["mean"], marker="o", ms=3, label=label)
                    ax.fill_between(c["ticks"], c["lo"], c["hi"], color=line.get_color(), alpha=0.15)
                for row in (r for r in table if r["regime"] == regime and r["learner"] == "icl"):
                    if row["method"] in ("zero_shot", "sup_icl"):
                        ls = ":" if row["method"] == "zero_shot" else "--"
                        ax.axhline(row[headline_metric(regime)], color="k", ls=ls, lw=1, label=row["method"])
                ax.set(title=regime, xlabel=axis, ylabel=headline_metric(regime).replace("_", " "))
                ax.title.set_fontsize(9)
                ax.xaxis.get_major_locator().set_params(integer=True)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6)
            fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            fig.savefig(figures / f"{stem}_{suffix}.png")
            plt.close(fig)
        regimes = list(dict.fromkeys(r["regime"] for r in table))
        fig, axes = plt.subplots(len(regimes), 1, figsize=(11, 2.6 * len(regimes)), dpi=110, squeeze=False)
        for ax, regime in zip(axes[:, 0], regimes, strict=True):
            rows = [r for r in table if r["regime"] == regime]
            metrics = [headline_metric(regime, r["method"]) for r in rows]
            names = [r["method"] + ("" if r["learner"] in ("icl", "classical") else f"\n({r['learner']})")
                     for r in rows]  # fmt: skip
            means = np.array([r[m] for r, m in zip(rows, metrics, strict=True)])
            err = np.abs(np.array([r[f"{m}_ci"] for r, m in zip(rows, metrics, strict=True)]).T - means)
            colors = ["tab:orange" if m == "accuracy_perm" and regime != "symmetric" else "tab:blue" for m in metrics]
            ax.bar(range(len(rows)), means, yerr=err, color=colors, alpha=0.8, capsize=2)
            ax.set_xticks(range(len(rows)), names, fontsize=6, rotation=30, ha="right")
            label = headline_metric(regime).replace("_", " ")
            ax.set_ylabel(label + ("\n(orange: up to permutation)" if "tab:orange" in colors else ""), fontsize=7)
            ax.set_title(f"{regime}: methods on held-out queries", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(figures / f"{stem}_methods.png")
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Unsupervised, argv)


if __name__ == "__main__":
    spec.script(Unsupervised)
