"""Unsupervised in-context learning by joint inference: the analog of "Large (Vision) Language Models are Unsupervised
In-Context Learners" (Gadetsky et al.) on the suite's own learners (SEEDS_EXTENSIONS sections 1, 3 and 5).

    icl-meta reproduce unsupervised --scale cpu
    python -m experiments.unsupervised --scale smoke --methods zero_shot,uicl,kmeans

Pre-trains (or reuses, from `--out`, default runs/unsupervised/SCALE) an ICL transformer on each task regime, and
ProtoNet, MatchNet and CNP on anchored prototypes, then runs every method on the same held-out tasks, each split into
an unlabeled set U (transductive accuracy) and held-out queries Q (inductive accuracy):

- anchored prototypes (the main regime: a zero-shot prior from global label anchors), at several input scales sigma;
- symmetric prototypes (the core `prototype` family: no zero-shot knowledge, accuracy up to a label permutation);
- linear regression (the negative control: unlabeled inputs carry no information about y).

Methods: zero-shot, supervised ICL (true labels, N demonstrations, R votes), unsupervised ICL (T rounds), unsupervised
fine-tuning (low-rank adapter and linear head), exact joint inference on small subsets (the objective's oracle),
k-means, EM and anchored k-means; the ablations (uniform sampling, R=1, gamma 0/1/10, N 1/4/16) and unsupervised ICL
with ProtoNet, MatchNet and CNP as the learner, at the main sigma. Results: figures/unsupervised_SCALE.json (tidy
curves per round and per fine-tuning step, the table of final accuracies, the claims of SEEDS_EXTENSIONS 3.5 stated
as held or not) and PNGs: accuracy per round, accuracy per fine-tuning step, one bar chart of methods per regime.

Expected runtime on a 2-core CPU: smoke ~1-2 min; cpu ~14 min (pre-training 5 of them); paper: more tasks, seeds
and larger learners, a GPU job.
Expected result (cpu, seed 0; docs/results.md): on anchored prototypes unsupervised ICL and both fine-tuned encoders
beat zero-shot by 0.09-0.14 and recover 0.71-1.02 of the gap to supervised ICL; no gain on the regression control;
no collapse without the entropy term; on symmetric prototypes k-means (0.97) beats unsupervised ICL (0.71).
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
import scipy.stats
from tqdm.auto import tqdm

import baselines
import tasks
from baselines import clustering
from experiments import common, study
from icl_meta import evaluate, joint, label_metrics
from icl_meta.contracts import Learner, TaskFamily
from icl_meta.runs import results_document, run_config
from icl_meta.train import TEST_STREAM, TrainConfig, stream_key
from icl_meta.transformer import ICLTransformer, preset

REGIMES = ("anchored", "symmetric", "regression")
META_LEARNERS = ("protonet", "matchnet", "cnp")  # unsupervised ICL with these as the learner (anchored, main sigma)
METHODS = (
    "zero_shot", "sup_icl", "uicl", "uft_lora", "uft_linear", "exact", "kmeans", "em", "kmeans_anchored", "bayes",
    "ablations", "learners",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scale:
    d: int
    classes: int
    sigmas: tuple[float, ...]  # anchored test regimes; the middle one is the main regime (ablations, learners)
    train_sigma: float
    regression_d: int
    width: int  # the ICL transformer (gpt2 blocks, interleaved protocol)
    depth: int
    heads: int
    steps: dict[str, int]  # pre-training steps: "icl" per regime, and each meta-learner
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


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        d=4, classes=3, sigmas=(0.8,), train_sigma=0.8, regression_d=2, width=16, depth=1, heads=2,
        steps={"icl": 60, "icl_regression": 60, "protonet": 20, "matchnet": 20, "cnp": 20}, batch=16, n=12, lr=3e-3,
        tasks=4, unlabeled=12, queries=6, icl=joint.ICLConfig(rounds=2, demos=6, votes=2),
        finetune=joint.FineTuneConfig(steps=4, batch=2, n=6, eval_every=2, rank=2, distill_steps=5),
        exact_tasks=2, exact_points=5, ablation_n=(1,), ablation_gamma=(0.0,),
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


# ---------------------------------------------------------------------------------------------------------------------
# Pre-training


def training_family(scale: Scale, regime: str) -> TaskFamily:
    if regime == "anchored":
        return tasks.get("anchored_prototype", d=scale.d, num_classes=scale.classes, sigma=scale.train_sigma)
    if regime == "symmetric":
        return tasks.get("prototype", d=scale.d, num_classes=scale.classes, permutation="per_task")
    return tasks.get("linear_regression", d=scale.regression_d)


def icl_learner(scale: Scale) -> ICLTransformer:
    """The gpt2 blocks on interleaved tokens (x_1, y_1, x_2, ...; Garg et al.'s format): every position in one pass,
    position 0 the zero-shot predictor, and a prediction that does not depend on the sequence's length (the `causal`
    protocol's learned positions put query i at N + i), so 17-token demonstration sequences read as in training."""
    return ICLTransformer(
        preset("gpt2", width=scale.width, depth=scale.depth, heads=scale.heads, positions=2 * scale.n)
    )


def jobs(scale: Scale, seed: int, learners: Sequence[str]) -> list[study.Job]:
    """ICL on each regime (every position in the loss: the zero-shot one too); the meta-learners on anchored tasks
    (canonical log-softmax, without the reference's double softmax: joint inference reads their probabilities)."""
    out = []
    for regime in REGIMES:
        steps = scale.steps["icl_regression" if regime == "regression" else "icl"]
        cfg = TrainConfig(steps=steps, batch=scale.batch, n=scale.n, lr=scale.lr, scan_steps=50, eval_every=steps,
                          eval_tasks=256, seed=seed)  # fmt: skip
        out.append(study.Job(regime, icl_learner(scale), training_family(scale, regime), cfg))
    for name in learners:
        learner = baselines.get(name) if name == "cnp" else baselines.get(name, double_softmax=False)
        cfg = TrainConfig(steps=scale.steps[name], batch=scale.batch, n=scale.n, lr=1e-3, scan_steps=50,
                          eval_every=scale.steps[name], eval_tasks=256, seed=seed)  # fmt: skip
        out.append(study.Job("anchored", learner, training_family(scale, "anchored"), cfg))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Held-out tasks and scoring


@dataclasses.dataclass
class Split:
    """A regime's held-out tasks: the unlabeled set U and the queries Q, inputs and true labels."""

    family: TaskFamily
    x_U: jax.Array
    y_U: np.ndarray
    x_Q: jax.Array
    y_Q: np.ndarray


def split(family: TaskFamily, scale: Scale, seed: int) -> Split:
    ep = family.sample(stream_key(seed, TEST_STREAM), scale.tasks, scale.unlabeled + scale.queries)
    u = scale.unlabeled
    return Split(family, ep.x[:, :u], np.asarray(ep.y[:, :u]), ep.x[:, u:], np.asarray(ep.y[:, u:]))


def scores(pred_BN: np.ndarray, true_BN: np.ndarray, num_classes: int | None) -> dict[str, np.ndarray]:
    """Per-task metrics of a predicted labelling: raw and permutation accuracy, NMI and collapse (classification), or
    the squared error (regression)."""
    pred_BN = np.asarray(pred_BN)
    if num_classes is None:
        return {"squared_error": ((pred_BN - true_BN) ** 2).mean(-1)}
    return {
        "accuracy": label_metrics.accuracy_raw(pred_BN, true_BN),
        "accuracy_perm": label_metrics.accuracy_perm(pred_BN, true_BN, num_classes),
        "nmi": label_metrics.nmi(pred_BN, true_BN),
        "collapsed": label_metrics.collapsed(pred_BN, num_classes).astype(float),
    }


class Results:
    """Collects every method's predictions on one regime as table rows (final U and Q metrics with task-bootstrap
    intervals) and tidy curves (metric per round or per fine-tuning step), and keeps per-task values for paired
    comparisons."""

    def __init__(self, regime: str, sigma: float | None, data: Split, num_classes: int | None):
        self.regime, self.sigma, self.data, self.C = regime, sigma, data, num_classes
        self.rows: list[dict[str, Any]] = []
        self.curves: list[dict[str, Any]] = []
        self.per_task: dict[tuple[str, str, str], np.ndarray] = {}  # (method, split, metric) -> [B]

    def add(self, method: str, pred_U: Any, pred_Q: Any, learner: str = "icl", **extra: Any) -> None:
        tag = method if learner in ("icl", "classical") else f"{method}:{learner}"
        for name, pred, true in (("U", pred_U, self.data.y_U), ("Q", pred_Q, self.data.y_Q)):
            values = scores(np.asarray(pred), true, self.C)
            row: dict[str, Any] = {"regime": self.regime, "sigma": self.sigma, "method": method, "learner": learner}
            row.update(split=name, **extra)
            for metric, per_task in values.items():
                self.per_task[(tag, name, metric)] = per_task
                summary = label_metrics.summary(per_task)
                row[metric] = round(summary["mean"], 4)
                row[f"{metric}_ci"] = [round(summary["lo"], 4), round(summary["hi"], 4)]
            self.rows.append(row)

    def trajectory(
        self, method: str, preds_U: Any, preds_Q: Any, axis: str, ticks: Sequence[int], learner: str = "icl"
    ) -> None:
        """Curves of the metric over rounds or steps (`ticks`), and the last entry as the method's row."""
        metric = headline_metric(self.regime)
        for name, preds, true in (("U", preds_U, self.data.y_U), ("Q", preds_Q, self.data.y_Q)):
            values_BT = np.stack([scores(np.asarray(p), true, self.C)[metric] for p in preds], axis=1)
            self.curves.append(evaluate.curve(
                values_BT, regime=self.regime, sigma=self.sigma, method=method, learner=learner, split=name,
                metric=metric, axis=axis, ticks=list(ticks),
            ))  # fmt: skip
        self.add(method, preds_U[-1], preds_Q[-1], learner=learner)

    def value(self, method: str, metric: str = "accuracy", split_name: str = "Q") -> np.ndarray:
        return self.per_task[(method, split_name, metric)]


# ---------------------------------------------------------------------------------------------------------------------
# The methods


def timed(log: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    log[name] = round(log.get(name, 0.0) + time.perf_counter() - t0, 2)
    return out


def run_classification(
    res: Results, icl: tuple[Learner, Any], scale: Scale, methods: set[str], key: jax.Array, log: dict[str, float],
    anchors: np.ndarray | None, others: dict[str, tuple[Learner, Any]], main: bool, progress: bool,
) -> None:  # fmt: skip
    """Every classification method on one regime's tasks (`res.data`)."""
    learner, params = icl
    d, C = res.data, res.C
    assert C is not None
    keys = iter(jax.random.split(key, 32))
    zs_U = jnp.argmax(joint.zero_shot(learner, params, d.x_U, C), -1)
    zs_Q = jnp.argmax(joint.zero_shot(learner, params, d.x_Q, C), -1)
    if "zero_shot" in methods:
        res.add("zero_shot", zs_U, zs_Q)
    if "sup_icl" in methods:
        sup = timed(
            log, "sup_icl", lambda: joint.supervised_icl(learner, params, next(keys), d.x_U, d.y_U, d.x_Q, C, scale.icl)
        )
        res.add("sup_icl", *sup)
    if anchors is None:  # no zero-shot knowledge: a random class-balanced labelling breaks the symmetry
        start_U = jax.vmap(lambda k: jax.random.permutation(k, jnp.arange(d.x_U.shape[1]) % C))(
            jax.random.split(next(keys), d.x_U.shape[0])
        )
        start_Q = jax.vmap(lambda k: jax.random.permutation(k, jnp.arange(d.x_Q.shape[1]) % C))(
            jax.random.split(next(keys), d.x_Q.shape[0])
        )  # Q is labelled from round 1 on; its round 0 is a random labelling too
    else:
        start_U, start_Q = zs_U, zs_Q

    found: dict[str, np.ndarray] = {}  # each method's final labelling of U, for the objective-alignment metrics

    def uicl(name: str, cfg: joint.ICLConfig, who: str = "icl", pair: tuple[Learner, Any] = icl) -> None:
        bar = tqdm(total=cfg.rounds, desc=f"{res.regime} {name} {who}", disable=not progress, leave=False)
        marks: list[float] = []

        def on_round(t: int, labels_U: Any, labels_Q: Any) -> None:
            jax.block_until_ready(labels_Q)
            marks.append(time.perf_counter())
            bar.update(1)

        tag = name if who == "icl" else f"{name}:{who}"
        out = timed(
            log,
            tag,
            lambda: joint.unsupervised_icl(*pair, next(keys), d.x_U, d.x_Q, start_U, start_Q, C, cfg, on_round),
        )
        bar.close()
        if len(marks) >= 2:  # one round over every query of every task, compiled (round 1 includes compiling)
            log[f"{tag}_one_round"] = round(marks[1] - marks[0], 3)
        res.trajectory(name, list(out["U"]), list(out["Q"]), "round", range(cfg.rounds + 1), learner=who)
        if who == "icl":
            found[name] = np.asarray(out["U"][-1])

    if "uicl" in methods:
        uicl("uicl", scale.icl)
    ft = scale.finetune
    ticks = range(0, ft.steps + 1, ft.eval_every)

    def uft(name: str, cfg: joint.FineTuneConfig) -> None:
        out = timed(log, name, lambda: joint.unsupervised_finetune(learner, params, next(keys), d.x_U, d.x_Q, C, cfg))
        res.trajectory(name, list(out["U"]), list(out["Q"]), "step", ticks)
        found[name] = np.asarray(out["U"][-1])

    if "uft_lora" in methods:
        uft("uft_lora", ft)
    linear = dataclasses.replace(ft, encoder="linear", distill_steps=ft.distill_steps if anchors is not None else 0)
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
    x_all = jnp.concatenate([d.x_U, d.x_Q], axis=1)
    u = d.x_U.shape[1]

    def clusters(name: str, fit: Callable[[], Any]) -> None:
        labels = timed(log, name, fit)
        res.add(name, labels[:, :u], labels[:, u:], learner="classical")

    if "kmeans" in methods:  # fitted on U and Q together, as the other transductive methods see U
        clusters("kmeans", lambda: clustering.kmeans(next(keys), x_all, C)[0])
    if "em" in methods:
        clusters("em", lambda: clustering.gmm_em(next(keys), x_all, C)[0])
    if anchors is not None and "kmeans_anchored" in methods:
        clusters("kmeans_anchored", lambda: clustering.kmeans(next(keys), x_all, C, init_CD=jnp.asarray(anchors))[0])
    if anchors is not None and "bayes" in methods:
        fam = d.family
        bayes = baselines.get("gaussian_bayes", num_classes=C, anchors=anchors.tolist(), prior_std=fam.shift,
                              noise_std=fam.sigma)  # fmt: skip
        res.add(
            "sup_icl",
            *joint.supervised_icl(bayes, None, next(keys), d.x_U, d.y_U, d.x_Q, C, scale.icl),
            learner="bayes",
        )
        uicl("uicl", scale.icl, "bayes", (bayes, None))  # what the rounds can reach with the Bayes-optimal learner
    if main and "exact" in methods:
        res_exact = exact_alignment(learner, params, d, scale, C, next(keys), log, found)
        res.rows.append({"regime": res.regime, "sigma": res.sigma, "method": "exact", "learner": "icl", **res_exact})


def exact_alignment(
    learner: Learner,
    params: Any,
    d: Split,
    scale: Scale,
    C: int,
    key: jax.Array,
    log: dict[str, float],
    found: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Exact joint inference on the first `exact_points` points of U of `exact_tasks` tasks (2 example orders), with
    gamma 0 and 10: its accuracy, and the learner's own J (per point) of the best, the true, the zero-shot labelling
    and each method's labelling of those points (`found`): is the joint likelihood a good unsupervised criterion?"""
    b, m = min(scale.exact_tasks, d.x_U.shape[0]), scale.exact_points
    x, true = d.x_U[:b, :m], d.y_U[:b, :m]
    orders = joint.random_orders(key, 2, m)
    j_all = np.asarray(timed(log, "exact", lambda: joint.exact_scores(learner, params, x, C, orders)[0]))
    labelings = joint.all_labelings(C, m)
    h_all = np.asarray(joint.labelling_entropy(jnp.asarray(labelings), C))
    rows, place = np.arange(b), C ** np.arange(m - 1, -1, -1)

    def j_of(labels_Bm: np.ndarray) -> float:  # mean J per point of these labellings (their rows in `labelings`)
        return round(float(j_all[rows, (labels_Bm * place).sum(-1)].mean() / m), 4)

    out: dict[str, Any] = {"split": "U", "tasks": b, "points": m}
    for gamma in (0.0, 10.0):
        best = labelings[(j_all + gamma * m * h_all[None]).argmax(-1)]
        out[f"accuracy_gamma{gamma:g}"] = round(float((best == true).mean()), 4)
        out[f"accuracy_perm_gamma{gamma:g}"] = round(float(label_metrics.accuracy_perm(best, true, C).mean()), 4)
        out[f"collapsed_gamma{gamma:g}"] = round(float(label_metrics.collapsed(best, C).mean()), 4)
    best_j = j_all.max(-1)
    out["J_best"] = round(float(best_j.mean() / m), 4)
    out["J_true"] = j_of(true)
    out["J_zero_shot"] = j_of(np.asarray(jnp.argmax(joint.zero_shot(learner, params, x, C), -1)))
    for method, labels in found.items():
        out[f"J_{method}"] = j_of(labels[:b, :m])
    out["true_within_1nat_per_point"] = round(float(((best_j - j_all[rows, (true * place).sum(-1)]) <= m).mean()), 4)
    acc_all = (labelings[None] == true[:, None]).mean(-1)  # [B, L]
    out["spearman_J_accuracy"] = round(float(np.mean([_spearman(j_all[i], acc_all[i]) for i in rows])), 4)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(scipy.stats.spearmanr(a, b).statistic)  # average ranks: accuracy over labellings has many ties


def run_regression(res: Results, icl: tuple[Learner, Any], scale: Scale, key: jax.Array, log: dict[str, float]):
    """The negative control: zero-shot, unsupervised ICL on the learner's own predictions, supervised ICL (MSE)."""
    learner, params = icl
    d = res.data
    k_sup, k_uicl = jax.random.split(key)
    zs_U, zs_Q = joint.zero_shot(learner, params, d.x_U, None), joint.zero_shot(learner, params, d.x_Q, None)
    res.add("zero_shot", zs_U, zs_Q)
    res.add("sup_icl", *joint.supervised_icl(learner, params, k_sup, d.x_U, jnp.asarray(d.y_U), d.x_Q, None, scale.icl))
    out = timed(
        log,
        "uicl_regression",
        lambda: joint.unsupervised_icl(learner, params, k_uicl, d.x_U, d.x_Q, zs_U, zs_Q, None, scale.icl),
    )
    res.trajectory("uicl", list(out["U"]), list(out["Q"]), "round", range(scale.icl.rounds + 1))


# ---------------------------------------------------------------------------------------------------------------------
# Claims (SEEDS_EXTENSIONS 3.5)


def stated(claim: str, held: bool, **numbers: Any) -> dict[str, Any]:
    return {"claim": claim, **numbers, "held": bool(held)}


def claims(results: dict[str, Results], main: str) -> list[dict[str, Any]]:
    """Each claim with its numbers (inductive accuracy on Q, paired task-bootstrap intervals) and held or not."""
    out: list[dict[str, Any]] = []

    def diff(res: Results, a: str, b: str, metric: str = "accuracy") -> dict[str, Any]:
        compared = label_metrics.paired_difference(res.value(a, metric), res.value(b, metric))
        return {k: round(float(v), 4) for k, v in compared.items()}

    def has(res: Results, *methods: str, metric: str = "accuracy") -> bool:
        return all((m, "Q", metric) in res.per_task for m in methods)

    unsupervised = ("uicl", "uft_lora", "uft_linear")
    anchored = {k: r for k, r in results.items() if k.startswith("anchored")}
    on_par = []
    for name, res in anchored.items():
        if not has(res, "zero_shot", "sup_icl"):
            continue
        zs, sup = res.value("zero_shot").mean(), res.value("sup_icl").mean()
        for method in (m for m in unsupervised if has(res, m)):
            gain, gr = diff(res, method, "zero_shot"), label_metrics.gap_recovered(res.value(method).mean(), zs, sup)
            eligible = sup - zs >= 0.15  # the gap-recovered part applies where supervised ICL gains >= 15 points
            held = gain["lo"] > 0 and gain["p"] < 0.01 and (gr >= 0.5 or not eligible)
            out.append(stated("1: beats zero-shot, recovers >= half the gap", held, regime=name, method=method,
                              gain_over_zero_shot=gain, gap_recovered=round(float(gr), 4),
                              sup_minus_zs=round(float(sup - zs), 4)))  # fmt: skip
            # SEEDS_EXTENSIONS 3.4: within 2 points of supervised ICL, the two task-bootstrap intervals overlapping
            mine, theirs = label_metrics.summary(res.value(method)), label_metrics.summary(res.value("sup_icl"))
            close = mine["mean"] >= theirs["mean"] - 0.02 and mine["hi"] >= theirs["lo"]
            on_par.append({"regime": name, "method": method, "minus_sup_icl": diff(res, method, "sup_icl"),
                           "on_par": bool(close)})  # fmt: skip
    if on_par:
        held = any(c["on_par"] for c in on_par)
        where = sorted({f"{c['regime']} {c['method']}" for c in on_par if c["on_par"]})
        out.append(stated("2: on par with supervised ICL (within 2 points, intervals overlapping) in at least one "
                          "regime", held, on_par_rate=round(float(np.mean([c["on_par"] for c in on_par])), 4),
                          on_par_cases=where, cases=on_par))  # fmt: skip
    res = results.get(main)
    if res is not None:
        curve = next((c for c in res.curves if (c["method"], c["split"], c["learner"]) == ("uicl", "Q", "icl")), None)
        if curve is not None and len(curve["mean"]) >= 3 and has(res, "uicl", "zero_shot"):
            means = curve["mean"]  # round 0 is the zero-shot labelling: the rise is a paired difference with it
            rise = diff(res, "uicl", "zero_shot")
            held = rise["lo"] > 0 and abs(means[-1] - means[-2]) < 0.01
            per_round = [round(m, 4) for m in means]
            out.append(stated("3: UICL rises from round 0 (paired) and plateaus (last round moves < 0.01)", held,
                              regime=main, per_round=per_round, last_minus_round0=rise))  # fmt: skip
        mech: dict[str, Any] = {}
        if has(res, "uft_linear_gamma0", "uft_linear"):
            mech["uft_collapse_gamma0"] = float(res.value("uft_linear_gamma0", "collapsed").mean())
            mech["uft_collapse_gamma10"] = float(res.value("uft_linear", "collapsed").mean())
            mech["uft_gamma0_minus_gamma10"] = diff(res, "uft_linear_gamma0", "uft_linear")
        if has(res, "uicl_uniform", "uicl"):
            mech["uicl_uniform_minus_balanced"] = diff(res, "uicl_uniform", "uicl")
            mech["uicl_collapse_uniform"] = float(res.value("uicl_uniform", "collapsed").mean())
        if has(res, "uft_linear_n1", "uft_linear"):
            mech["uft_n1_minus_n16"] = diff(res, "uft_linear_n1", "uft_linear")
        if mech:
            degrade = [v["hi"] < 0 for k, v in mech.items() if k.endswith(("_minus_gamma10", "_minus_balanced"))]
            # collapse: at least a tenth of the tasks more collapsed without the entropy term than with it
            collapse = mech.get("uft_collapse_gamma0", 0) >= mech.get("uft_collapse_gamma10", 0) + 0.1
            n1 = mech.get("uft_n1_minus_n16", {"hi": 0})["hi"] < 0
            claim = "4: collapse or degradation without the entropy term or balanced sampling; N=1 gains less"
            out.append(stated(claim, (collapse or any(degrade)) and n1, **mech))

    for name, res in anchored.items():
        if has(res, "kmeans_anchored", "uicl"):
            delta = diff(res, "uicl", "kmeans_anchored")
            claim = "6a: on anchored tasks ICL-UICL not below anchored k-means (paired interval reaches 0)"
            out.append(stated(claim, delta["hi"] >= 0, regime=name, uicl_minus_kmeans_anchored=delta))
    reg = results.get("regression")
    if reg is not None and has(reg, "uicl", "zero_shot", "sup_icl", metric="squared_error"):
        delta = diff(reg, "uicl", "zero_shot", "squared_error")
        mse = {m: round(float(reg.value(m, "squared_error").mean()), 4) for m in ("zero_shot", "sup_icl", "uicl")}
        claim = "5: no gain on the regression control (UICL's MSE - zero-shot's: 0 within its interval, or worse)"
        out.append(stated(claim, delta["lo"] <= 0 <= delta["hi"] or delta["lo"] > 0, mse=mse,
                          uicl_minus_zero_shot=delta))  # fmt: skip
    sym = results.get("symmetric")
    if sym is not None and has(sym, "uicl", "kmeans", "em", metric="accuracy_perm"):
        best = max(("kmeans", "em"), key=lambda m: sym.value(m, "accuracy_perm").mean())
        delta = diff(sym, "uicl", best, "accuracy_perm")
        claim = f"6b: on symmetric tasks ICL-UICL within 0.05 of {best} (accuracy up to permutation)"
        out.append(stated(claim, delta["mean"] >= -0.05, uicl_minus_best_classical=delta))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The script


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0], SCALES)
    p.add_argument("--methods", default=",".join(METHODS), help=f"a subset of {','.join(METHODS)}")
    p.add_argument("--regimes", default=",".join(REGIMES), help=f"a subset of {','.join(REGIMES)}")
    args = common.parse(p, argv)
    methods = set(common.parse_choices(args.methods, METHODS, "--methods"))
    regimes = common.parse_choices(args.regimes, REGIMES, "--regimes")
    scale = SCALES[args.scale]
    t0 = time.perf_counter()
    progress = not args.no_progress
    root = common.run_root(args, "unsupervised")
    others_wanted = META_LEARNERS if "learners" in methods and "anchored" in regimes else ()
    grid = [job for job in jobs(scale, args.seed, others_wanted) if job.train in regimes]
    trained: dict[str, tuple[Learner, Any]] = {}
    summaries = []
    for job in grid:
        params, info = study.train_job(job, root, progress)
        trained[f"{job.train}__{job.learner.name}"] = (job.learner, params)
        summaries.append(info)
    pretrain_s = round(time.perf_counter() - t0, 1)
    log: dict[str, float] = {"pretrain": pretrain_s}
    results: dict[str, Results] = {}
    key = jax.random.PRNGKey(args.seed)
    main_sigma = scale.sigmas[len(scale.sigmas) // 2]
    if "anchored" in regimes:
        base = training_family(scale, "anchored")
        others = {name: trained[f"anchored__{name}"] for name in others_wanted}
        for sigma in scale.sigmas:
            family = base.with_sigma(sigma)
            res = Results(f"anchored_sigma{sigma:g}", sigma, split(family, scale, args.seed), scale.classes)
            key, k = jax.random.split(key)
            run_classification(res, trained["anchored__icl"], scale, methods, k, log, base.label_anchors(), others,
                               sigma == main_sigma, progress)  # fmt: skip
            results[res.regime] = res
    if "symmetric" in regimes:
        family = training_family(scale, "symmetric")
        res = Results("symmetric", family.sigma, split(family, scale, args.seed), scale.classes)
        key, k = jax.random.split(key)
        sym_methods = methods & {"sup_icl", "uicl", "kmeans", "em", "zero_shot"}
        run_classification(res, trained["symmetric__icl"], scale, sym_methods, k, log, None, {}, False, progress)
        results["symmetric"] = res
    if "regression" in regimes:
        family = training_family(scale, "regression")
        res = Results("regression", family.sigma, split(family, scale, args.seed), None)
        key, k = jax.random.split(key)
        run_regression(res, trained["regression__icl"], scale, k, log)
        results["regression"] = res
    main_name = f"anchored_sigma{main_sigma:g}"
    stated = claims(results, main_name)
    if main_name in results:  # which learner is the best unsupervised in-context learner (same start, same tasks)
        stated.append({"claim": "which learner: unsupervised ICL accuracy on Q per learner (not a paper claim)",
                       "regime": main_name, "held": True, "accuracy": {
                           r["learner"]: [r["accuracy"], *r["accuracy_ci"]] for r in results[main_name].rows
                           if r["method"] == "uicl" and r["split"] == "Q"}})  # fmt: skip
    curves = [c for r in results.values() for c in r.curves]
    config = {
        "scale": args.scale,
        "seed": args.seed,
        "methods": sorted(methods),
        "regimes": list(regimes),
        "settings": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)  # type: ignore[arg-type]
                     for k, v in dataclasses.asdict(scale).items()},
        "runs": {job.key: run_config("unsupervised", job.learner, job.family, job.cfg) for job in grid},
    }  # fmt: skip
    doc = results_document("unsupervised", config, curves, args.seed)
    per_task = {  # every per-task value behind the table, for paired comparisons after the fact
        name: {"|".join(k): np.round(v, 5).tolist() for k, v in r.per_task.items()} for name, r in results.items()
    }
    doc.update(table=[row for r in results.values() for row in r.rows], claims=stated, run_summaries=summaries,
               per_task=per_task,
               time_s=log)  # fmt: skip
    common.finish(doc, args.figures, f"unsupervised_{args.scale}", draw, t0)
    print_summary(doc)
    return doc


def headline_metric(regime: str, method: str = "") -> str:
    """MSE on the regression control; accuracy up to permutation on symmetric tasks and for the clusterings whose
    cluster indices are not labels (k-means, EM); raw accuracy otherwise."""
    if regime == "regression":
        return "squared_error"
    return "accuracy_perm" if regime == "symmetric" or method in ("kmeans", "em") else "accuracy"


def print_summary(doc: dict[str, Any]) -> None:
    print("\ninductive accuracy on held-out queries Q (MSE for regression), mean [95% interval over tasks]:")
    for row in doc["table"]:
        if row.get("split") != "Q" or row["method"] == "exact":
            continue
        metric = headline_metric(row["regime"], row["method"])
        lo, hi = row[f"{metric}_ci"]
        name = f"{row['regime']:<20} {row['method']:<20} {row['learner']:<10} {metric:<14}"
        print(f"  {name} {row[metric]:.3f} [{lo:.3f}, {hi:.3f}]")
    for row in doc["table"]:
        if row["method"] == "exact":
            numbers = {k: v for k, v in row.items() if k not in ("regime", "sigma", "method", "learner", "split")}
            print(f"  exact joint inference ({row['regime']}): {numbers}")
    print("\nclaims (SEEDS_EXTENSIONS 3.5):")
    for claim in doc["claims"]:
        where = claim.get("regime", "")
        print(f"  {'holds' if claim['held'] else 'does not hold'}: {claim['claim']} {where} {claim.get('method', '')}")
    print(f"time (s): {doc['time_s']}")


# ---------------------------------------------------------------------------------------------------------------------
# Figures


def draw(doc: dict[str, Any], figures: Path) -> None:
    stem = f"unsupervised_{doc['scale']}"
    table = [r for r in doc["table"] if r.get("split") == "Q" and r["method"] != "exact"]
    for axis, suffix, title in (("round", "rounds", "unsupervised ICL: accuracy per round"),
                                ("step", "finetune", "unsupervised fine-tuning: accuracy per step")):  # fmt: skip
        curves = [c for c in doc["curves"] if c["axis"] == axis and c["split"] == "Q"]
        regimes = list(dict.fromkeys(c["regime"] for c in curves))
        if not regimes:
            continue
        fig, axes = plt.subplots(1, len(regimes), figsize=(4.4 * len(regimes), 3.6), dpi=110, squeeze=False)
        for ax, regime in zip(axes[0], regimes, strict=True):
            for c in (c for c in curves if c["regime"] == regime):
                label = c["method"] + ("" if c.get("learner", "icl") == "icl" else f" ({c['learner']})")
                (line,) = ax.plot(c["ticks"], c["mean"], marker="o", ms=3, label=label)
                ax.fill_between(c["ticks"], c["lo"], c["hi"], color=line.get_color(), alpha=0.15)
            for method, ls in (("zero_shot", ":"), ("sup_icl", "--")):
                row = next(
                    (r for r in table if r["regime"] == regime and r["method"] == method and r["learner"] == "icl"),
                    None,
                )
                metric = headline_metric(regime)
                if row is not None:
                    ax.axhline(row[metric], color="k", ls=ls, lw=1, label=method)
            ax.set_title(regime, fontsize=9)
            ax.set_xlabel(axis)
            ax.set_ylabel(headline_metric(regime).replace("_", " "))
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
        names = [r["method"] + ("" if r["learner"] in ("icl", "classical") else f"\n({r['learner']})") for r in rows]
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


if __name__ == "__main__":
    common.script(main)
