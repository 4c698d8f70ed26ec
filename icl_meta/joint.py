"""Joint inference over the labellings of an unlabeled set, for any prequential learner: the synthetic analog of
"Large (Vision) Language Models are Unsupervised In-Context Learners" (Gadetsky et al.; docs/papers.md §9.1 and 9.3).

A prequential learner's one `predict` call on a labelled sequence returns log p(y_i | (x_j, y_j)_{j<i}, x_i) at
every position i, so the joint log-likelihood of a labelling,

    J(y_1..y_N) = sum_i log p(y_i | (x_j, y_j)_{j<i}, x_i)    (each term a log-softmax over the C labels),

costs one call, for the ICL transformer in every protocol and for every meta-learner alike. Position 0 (an empty
context) is the zero-shot predictor. What this module builds on J:

- `exact_joint_inference`: the best labelling of a small set by enumeration (the oracle for the objective), and
  `exact_alignment`: how well J ranks labellings by accuracy (the J of the best, true, zero-shot and any labelling);
- `unsupervised_icl`: the multi-round approach (Alg. B2): pseudo-labelled, class-balanced demonstrations, majority
  votes, every query of every task in one jitted call per round, from zero-shot labels or, with no zero-shot
  knowledge, `balanced_random_labels`;
- `unsupervised_finetune`: the amortized approach (Alg. B1): a task encoder (a zero-initialised low-rank adapter of
  the learner, run zero-shot, or a linear head) trained against the frozen learner's J with the entropy regulariser
  and the Rao-marginalised gradient estimator, `lax.scan`ned and vmapped over tasks.

Shapes: B tasks, U points of a task's unlabeled set, Q held-out query points, C classes, D input dim, K example orders,
L labellings, R votes, S steps.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from icl_meta import label_metrics
from icl_meta.adapters import lora_apply, lora_init
from icl_meta.contracts import Learner
from icl_meta.errors import ConfigError, require, require_bool, require_choice, require_int, require_number

Array = jax.Array

MAX_LABELINGS = 6561  # 3^8 (C=2: m <= 12; C=3: m <= 8): beyond, exact enumeration is left to the approximations
SAMPLING = ("balanced", "uniform")
VOTES = ("majority", "soft")
ENCODERS = ("lora", "linear")
ESTIMATORS = ("rao", "reinforce")


# ---------------------------------------------------------------------------------------------------------------------
# The learner as a model of labels


def label_log_probs(
    learner: Learner, params: Any, x_BND: Array, y_BN: Array, num_classes: int, positions: Array | None = None
) -> Array:
    """log p(y_i = c | (x_j, y_j)_{j<i}, x_i) for c < C, [B, N|P, C]: the learner's outputs restricted to the label
    set and renormalised (the paper's label-restricted log-softmax; the ICL model's padded slots drop out)."""
    out = learner.predict(params, x_BND, y_BN, positions)
    if out.ndim != 3:
        raise ConfigError(
            f"learner {learner.name!r} predicts regression targets; joint inference over labellings needs a "
            "classifier (a learner built for a task with num_classes)"
        )
    return jax.nn.log_softmax(out[..., :num_classes], axis=-1)


def zero_shot(learner: Learner, params: Any, x_BND: Array, num_classes: int | None) -> Array:
    """The learner with an empty context on every point: log-probabilities [B, N, C] (regression: predictions
    [B, N])."""
    b, n, d = x_BND.shape
    x_S1D = x_BND.reshape(b * n, 1, d)
    dummy_S1 = jnp.zeros((b * n, 1), jnp.int32 if num_classes else jnp.float32)
    if num_classes is None:
        return learner.predict(params, x_S1D, dummy_S1)[:, 0].reshape(b, n)
    return label_log_probs(learner, params, x_S1D, dummy_S1, num_classes)[:, 0].reshape(b, n, num_classes)


def random_orders(key: Array, orders: int, n: int) -> Array:
    """K example orders of N points, [K, N]: the identity first, then random permutations."""
    require_int(orders, "orders")
    perms_KN = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, orders))
    return perms_KN.at[0].set(jnp.arange(n))


def joint_log_likelihood(
    learner: Learner, params: Any, x_BND: Array, y_BN: Array, num_classes: int, orders_KN: Array | None = None
) -> Array:
    """J(y) of each task's labelling, [B]: the sum over positions of log p(y_i | prefix, x_i), averaged over the
    example orders `orders_KN` (J depends on the order; None: the given order only)."""
    n = x_BND.shape[1]
    orders_KN = jnp.arange(n)[None] if orders_KN is None else orders_KN

    def one_order(order_N: Array) -> Array:
        x, y = x_BND[:, order_N], y_BN[:, order_N]
        lp_BNC = label_log_probs(learner, params, x, y, num_classes)
        return jnp.take_along_axis(lp_BNC, y[..., None], axis=-1)[..., 0].sum(-1)

    return jnp.mean(jax.lax.map(one_order, orders_KN), axis=0)


def labelling_entropy(y_BN: Array, num_classes: int) -> Array:
    """Entropy (nats) of each labelling's class histogram, [B]."""
    freq_BC = jax.nn.one_hot(y_BN, num_classes).mean(-2)
    return -jnp.sum(jnp.where(freq_BC > 0, freq_BC * jnp.log(jnp.where(freq_BC > 0, freq_BC, 1.0)), 0.0), -1)


# ---------------------------------------------------------------------------------------------------------------------
# Exact joint inference (small sets)


def all_labelings(num_classes: int, m: int) -> np.ndarray:
    """Every labelling of m points with C classes, int32 [C^m, m]; a ConfigError beyond MAX_LABELINGS."""
    require_int(num_classes, "exact joint inference: num_classes", 2)
    require_int(m, "exact joint inference: points")
    if num_classes**m > MAX_LABELINGS:
        raise ConfigError(
            f"exact joint inference enumerates C^m = {num_classes}^{m} = {num_classes**m} labellings; at most "
            f"{MAX_LABELINGS} are allowed (C=2: m <= 12, C=3: m <= 8, C=4: m <= 6, C=5: m <= 5)"
        )
    return np.array(list(itertools.product(range(num_classes), repeat=m)), np.int32)


@functools.partial(jax.jit, static_argnames=("learner", "num_classes", "chunk"))
def exact_scores(
    learner: Learner, params: Any, x_BmD: Array, num_classes: int, orders_KN: Array, chunk: int = 2187
) -> tuple[Array, Array]:
    """J [B, L] and the histogram entropy [L] of every labelling of each task's m points (`all_labelings` order),
    computed in chunks of labellings per task to bound memory."""
    m = x_BmD.shape[1]
    labelings_Lm = jnp.asarray(all_labelings(num_classes, m))
    total = labelings_Lm.shape[0]
    chunk = min(chunk, total)
    pad = -total % chunk
    padded_Lm = jnp.concatenate([labelings_Lm, jnp.zeros((pad, m), jnp.int32)])
    chunks_GlM = padded_Lm.reshape(-1, chunk, m)

    def per_task(x_mD: Array) -> Array:
        def per_chunk(y_lm: Array) -> Array:
            x_lmD = jnp.broadcast_to(x_mD, (y_lm.shape[0], *x_mD.shape))
            return joint_log_likelihood(learner, params, x_lmD, y_lm, num_classes, orders_KN)

        return jax.lax.map(per_chunk, chunks_GlM).reshape(-1)[:total]

    return jax.lax.map(per_task, x_BmD), labelling_entropy(labelings_Lm, num_classes)


def exact_joint_inference(
    learner: Learner,
    params: Any,
    x_BmD: Array,
    num_classes: int,
    *,
    gamma: float = 0.0,
    orders_KN: Array | None = None,
) -> dict[str, Array]:
    """The labelling maximising S(y) = J(y) + gamma * m * H(hist(y)) for each task, by enumeration.

    Returns `labels` [B, m], its `score` and `J` [B], and every labelling's `J_all` [B, L] (for alignment metrics).
    """
    require_number(gamma, "exact joint inference: gamma", at_least=0)
    m = x_BmD.shape[1]
    labelings_Lm = jnp.asarray(all_labelings(num_classes, m))
    orders_KN = jnp.arange(m)[None] if orders_KN is None else orders_KN
    j_BL, h_L = exact_scores(learner, params, x_BmD, num_classes, orders_KN)
    score_BL = j_BL + gamma * m * h_L[None]
    best_B = jnp.argmax(score_BL, axis=-1)
    return {
        "labels": labelings_Lm[best_B],
        "score": jnp.take_along_axis(score_BL, best_B[:, None], -1)[:, 0],
        "J": jnp.take_along_axis(j_BL, best_B[:, None], -1)[:, 0],
        "J_all": j_BL,
    }


def exact_alignment(
    learner: Learner,
    params: Any,
    key: Array,
    x_BmD: Array,
    true_Bm: Any,
    num_classes: int,
    found: Mapping[str, Any] | None = None,
    *,
    orders: int = 2,
    gammas: Sequence[float] = (0.0, 10.0),
) -> dict[str, float]:
    """Is the learner's joint likelihood a good unsupervised criterion on these small sets (m points of B tasks, true
    labels `true_Bm`)? Enumerates every labelling's J, averaged over `orders` example orders (`random_orders(key)`).

    Returns, unrounded: for each gamma in `gammas`, the `accuracy_gamma{g}`, `accuracy_perm_gamma{g}` and
    `collapsed_gamma{g}` (rate) of the labelling maximising J + gamma * m * H; the mean J per point of the best
    labelling (`J_best`), the true one (`J_true`), the zero-shot one (`J_zero_shot`) and each labelling of `found`
    (name -> [B, m] labels: `J_{name}`); the share of tasks whose true labelling is within 1 nat per point of the best
    (`true_within_1nat_per_point`); and the mean over tasks of the Spearman correlation between J and accuracy across
    the labellings (`spearman_J_accuracy`, average ranks: accuracy has many ties)."""
    b, m = x_BmD.shape[:2]
    true = np.asarray(true_Bm)
    check_labels(true, (b, m), num_classes, "true_Bm")
    j_all = np.asarray(exact_scores(learner, params, x_BmD, num_classes, random_orders(key, orders, m))[0])
    labelings = all_labelings(num_classes, m)
    h_all = np.asarray(labelling_entropy(jnp.asarray(labelings), num_classes))
    rows, place = np.arange(b), num_classes ** np.arange(m - 1, -1, -1)

    def j_of(labels_Bm: np.ndarray) -> float:  # mean J per point of these labellings (their rows in `labelings`)
        return float(j_all[rows, (labels_Bm * place).sum(-1)].mean() / m)

    out: dict[str, float] = {}
    for gamma in gammas:
        best = labelings[(j_all + gamma * m * h_all[None]).argmax(-1)]
        out[f"accuracy_gamma{gamma:g}"] = float((best == true).mean())
        out[f"accuracy_perm_gamma{gamma:g}"] = float(label_metrics.accuracy_perm(best, true, num_classes).mean())
        out[f"collapsed_gamma{gamma:g}"] = float(label_metrics.collapsed(best, num_classes).mean())
    best_j = j_all.max(-1)
    out["J_best"], out["J_true"] = float(best_j.mean() / m), j_of(true)
    out["J_zero_shot"] = j_of(np.asarray(jnp.argmax(zero_shot(learner, params, x_BmD, num_classes), -1)))
    out.update({f"J_{name}": j_of(np.asarray(labels)) for name, labels in (found or {}).items()})
    out["true_within_1nat_per_point"] = float(((best_j - j_all[rows, (true * place).sum(-1)]) <= m).mean())
    acc_BL = (labelings[None] == true[:, None]).mean(-1)
    spearman = [scipy.stats.spearmanr(j_all[i], acc_BL[i]).statistic for i in rows]
    out["spearman_J_accuracy"] = float(np.mean(spearman))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# In-context prediction with sampled demonstrations, and unsupervised ICL


@dataclasses.dataclass(frozen=True)
class ICLConfig:
    """Unsupervised ICL (Alg. B2) with the paper's defaults: `rounds` T, `demos` N per prediction, `votes` R.

    sampling: "balanced" (each demonstration drawn with weight 1/count of its current label, the paper's sampler)
        or "uniform" (the ablation). Demonstrations are distinct points, drawn without replacement.
    include_self: a point of the unlabeled set may be among its own demonstrations (the paper's LLM script allows it;
        the default excludes it).
    vote: "majority" over the R predictions (ties to the higher mean probability) or "soft" (the higher mean
        probability). Regression averages the R predictions.
    """

    rounds: int = 8
    demos: int = 16
    votes: int = 5
    sampling: str = "balanced"
    include_self: bool = False
    vote: str = "majority"

    def __post_init__(self) -> None:
        require_int(self.rounds, "unsupervised ICL: rounds", 0)
        require_int(self.demos, "unsupervised ICL: demos")
        require_int(self.votes, "unsupervised ICL: votes")
        require_choice(self.sampling, "unsupervised ICL: sampling", SAMPLING)
        require_bool(self.include_self, "unsupervised ICL: include_self")
        require_choice(self.vote, "unsupervised ICL: vote", VOTES)


def sample_demos(
    key: Array, labels_U: Array, num_demos: int, weighted: Array | bool, exclude: Array, num_classes: int
) -> Array:
    """`num_demos` distinct indices into the unlabeled set [N], drawn with weight 1/count(label) (`weighted`, may be
    traced) or uniformly, never the index `exclude` (-1: none). Gumbel top-k: sampling without replacement by weight."""
    u = labels_U.shape[0]
    counts_C = jnp.bincount(labels_U, length=num_classes)
    log_w_U = jnp.where(weighted, -jnp.log(counts_C[labels_U].astype(jnp.float32)), jnp.zeros((u,), jnp.float32))
    log_w_U = jnp.where(jnp.arange(u) == exclude, -jnp.inf, log_w_U)
    return jax.lax.top_k(log_w_U + jax.random.gumbel(key, (u,)), num_demos)[1]


def icl_predict(
    learner: Learner,
    params: Any,
    key: Array,
    pool_x_BUD: Array,
    pool_y_BU: Array,
    query_x_BQD: Array,
    self_index_BQ: Array,
    num_classes: int | None,
    cfg: ICLConfig,
) -> tuple[Array, Array]:
    """Each query predicted in context of `cfg.demos` labelled points of its task's pool, `cfg.votes` times with fresh
    demonstrations, aggregated: (labels [B, Q] int32, mean probabilities [B, Q, C]) for a classifier, (mean
    predictions [B, Q], their std [B, Q]) for regression. `self_index_BQ` is each query's index in the pool (-1 if
    not in it), excluded from its demonstrations unless `cfg.include_self`."""
    balanced = jnp.asarray(num_classes is not None and cfg.sampling == "balanced")
    return _icl_predict(
        learner, params, key, pool_x_BUD, pool_y_BU, query_x_BQD, self_index_BQ, balanced, num_classes,
        dataclasses.replace(cfg, sampling="balanced"),  # the sampler is a traced switch: one program for both
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("learner", "num_classes", "cfg"))
def _icl_predict(
    learner: Learner,
    params: Any,
    key: Array,
    pool_x_BUD: Array,
    pool_y_BU: Array,
    query_x_BQD: Array,
    self_index_BQ: Array,
    balanced: Array,
    num_classes: int | None,
    cfg: ICLConfig,
) -> tuple[Array, Array]:
    b, q, _ = query_x_BQD.shape
    exclude_BQ = jnp.full_like(self_index_BQ, -1) if cfg.include_self else self_index_BQ
    keys_BQR = jax.random.split(key, (b, q, cfg.votes))

    def per_task(args: tuple[Array, ...]) -> tuple[Array, Array]:
        pool_x_UD, pool_y_U, query_x_QD, exclude_Q, keys_QR = args

        def demos_for(k: Array, excl: Array) -> Array:
            labels = pool_y_U.astype(jnp.int32) if num_classes is not None else jnp.zeros(pool_y_U.shape, jnp.int32)
            return sample_demos(k, labels, cfg.demos, balanced, excl, num_classes or 1)

        idx_QRN = jax.vmap(lambda ks, e: jax.vmap(lambda k: demos_for(k, e))(ks))(keys_QR, exclude_Q)
        s = q * cfg.votes
        x_SND = pool_x_UD[idx_QRN].reshape(s, cfg.demos, -1)
        y_SN = pool_y_U[idx_QRN].reshape(s, cfg.demos)
        query_SD = jnp.repeat(query_x_QD, cfg.votes, axis=0)
        x_SLD = jnp.concatenate([x_SND, query_SD[:, None]], axis=1)
        y_SL = jnp.concatenate([y_SN, jnp.zeros((s, 1), y_SN.dtype)], axis=1)
        last = jnp.array([cfg.demos])
        if num_classes is None:
            pred_QR = learner.predict(params, x_SLD, y_SL, last)[:, 0].reshape(q, cfg.votes)
            return pred_QR.mean(-1), pred_QR.std(-1)
        lp_QRC = label_log_probs(learner, params, x_SLD, y_SL, num_classes, last)[:, 0].reshape(q, cfg.votes, -1)
        probs_QC = jnp.exp(lp_QRC).mean(1)
        if cfg.vote == "soft":
            return jnp.argmax(probs_QC, -1).astype(jnp.int32), probs_QC
        votes_QC = jax.nn.one_hot(jnp.argmax(lp_QRC, -1), num_classes).sum(1)
        return jnp.argmax(votes_QC + probs_QC, -1).astype(jnp.int32), probs_QC  # probs < 1 only break ties

    return jax.lax.map(per_task, (pool_x_BUD, pool_y_BU, query_x_BQD, exclude_BQ, keys_BQR))


def balanced_random_labels(key: Array, batch: int, n: int, num_classes: int) -> Array:
    """A random class-balanced labelling of B tasks of N points, int32 [B, N]: each task's labels are a random
    permutation (its own key, `jax.random.split(key, batch)`) of 0, 1, .., C-1, 0, 1, .. (class counts differ by at
    most one). Breaks the label symmetry where there is no zero-shot knowledge."""
    require_int(batch, "balanced_random_labels: batch")
    require_int(n, "balanced_random_labels: n")
    require_int(num_classes, "balanced_random_labels: num_classes")
    labels_N = jnp.arange(n) % num_classes
    return jax.vmap(lambda k: jax.random.permutation(k, labels_N))(jax.random.split(key, batch))


def check_pool(cfg: ICLConfig, pool_size: int) -> None:
    """The demonstrations must fit in the unlabeled set (less the query itself when it is excluded)."""
    available = pool_size if cfg.include_self else pool_size - 1
    if cfg.demos > available:
        raise ConfigError(
            f"unsupervised ICL: demos N={cfg.demos} is larger than the unlabeled set allows ({pool_size} points"
            f"{'' if cfg.include_self else ', less the query'}: N <= {available})"
        )


def unsupervised_icl(
    learner: Learner,
    params: Any,
    key: Array,
    x_BUD: Array,
    x_BQD: Array,
    initial_U: Array,
    initial_Q: Array,
    num_classes: int | None,
    cfg: ICLConfig = ICLConfig(),
    on_round: Any = None,
) -> dict[str, Array]:
    """Alg. B2: starting from `initial_U`/`initial_Q` labels (zero-shot, or any symmetry-breaking labelling), each
    round relabels every point of U (demonstrations from U \\ {x} with the previous round's labels) and of Q
    (demonstrations from U). Returns the labels of every round, `U` [T+1, B, U] and `Q` [T+1, B, Q] (round 0 = the
    initial labels); regression works the same with the learner's own predictions as pseudo-labels.
    `on_round(t, labels_U, labels_Q)` is called after each round (progress, timing)."""
    u = x_BUD.shape[1]
    check_pool(cfg, u)
    check_labels(initial_U, x_BUD.shape[:2], num_classes, "initial_U")
    check_labels(initial_Q, x_BQD.shape[:2], num_classes, "initial_Q")
    queries_BTD, self_BT = _queries(x_BUD, x_BQD)
    labels_U, labels_Q = [jnp.asarray(initial_U)], [jnp.asarray(initial_Q)]
    for t, k in enumerate(jax.random.split(key, cfg.rounds)):
        labels = icl_predict(learner, params, k, x_BUD, labels_U[-1], queries_BTD, self_BT, num_classes, cfg)[0]
        labels_U.append(labels[:, :u])
        labels_Q.append(labels[:, u:])
        if on_round is not None:
            on_round(t + 1, labels_U[-1], labels_Q[-1])
    return {"U": jnp.stack(labels_U), "Q": jnp.stack(labels_Q)}


def check_labels(labels: Any, shape: tuple[int, ...], num_classes: int | None, name: str) -> None:
    """A labelling must have one label per point, each a class id below C (a wrong one would silently clamp)."""
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ConfigError(
            f"unsupervised ICL: {name} must have shape {tuple(shape)} (tasks, points), not {labels.shape}"
        )
    if num_classes is not None and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"unsupervised ICL: {name} must hold integer class ids in 0..{num_classes - 1}")


def _queries(x_BUD: Array, x_BQD: Array) -> tuple[Array, Array]:
    """U and Q as one set of queries (one program, one call), with each query's index in the pool U (-1 for Q)."""
    b, u, _ = x_BUD.shape
    self_BT = jnp.concatenate(
        [jnp.broadcast_to(jnp.arange(u), (b, u)), jnp.full(x_BQD.shape[:2], -1, jnp.int32)], axis=1
    ).astype(jnp.int32)
    return jnp.concatenate([x_BUD, x_BQD], axis=1), self_BT


def supervised_icl(
    learner: Learner,
    params: Any,
    key: Array,
    x_BUD: Array,
    y_BU: Array,
    x_BQD: Array,
    num_classes: int | None,
    cfg: ICLConfig = ICLConfig(),
) -> tuple[Array, Array]:
    """The reference: each point of U and Q predicted from `cfg.demos` demonstrations with their TRUE labels (the same
    sampler and votes as unsupervised ICL). Returns (predictions on U [B, U], on Q [B, Q])."""
    u = x_BUD.shape[1]
    check_pool(cfg, u)
    check_labels(y_BU, x_BUD.shape[:2], num_classes, "y_BU")
    queries_BTD, self_BT = _queries(x_BUD, x_BQD)
    labels = icl_predict(learner, params, key, x_BUD, jnp.asarray(y_BU), queries_BTD, self_BT, num_classes, cfg)[0]
    return labels[:, :u], labels[:, u:]


# ---------------------------------------------------------------------------------------------------------------------
# Unsupervised fine-tuning


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """Unsupervised fine-tuning (Alg. B1) of a task encoder tau(y | x), one per task.

    encoder: "lora" (a rank-`rank` adapter on the learner's weight matrices, run with an empty context; B = 0 at
        step 0, so it starts exactly at zero-shot) or "linear" (softmax(W x + b), distilled from zero-shot for
        `distill_steps` first; 0: a random start).
    steps, batch B, n (points per sequence N), lr (None: 1e-4 for lora, 1e-3 for linear), gamma (entropy weight),
    estimator ("rao": Rao-marginalised with the argmax baseline; "reinforce": plain score function with the argmax
    baseline), clip (max gradient norm; None: n), eval_every (steps between the recorded predictions).
    """

    encoder: str = "lora"
    steps: int = 500
    batch: int = 8
    n: int = 16
    lr: float | None = None
    gamma: float = 10.0
    rank: int = 4
    estimator: str = "rao"
    clip: float | None = None
    eval_every: int = 50
    distill_steps: int = 100

    def __post_init__(self) -> None:
        require_choice(self.encoder, "unsupervised fine-tuning: encoder", ENCODERS)
        for name in ("steps", "batch", "n", "rank", "eval_every"):
            require_int(getattr(self, name), f"unsupervised fine-tuning: {name}")
        require_int(self.distill_steps, "unsupervised fine-tuning: distill_steps", 0)
        require_number(self.lr, "unsupervised fine-tuning: lr", above=0, none_ok=True)
        require_number(self.gamma, "unsupervised fine-tuning: gamma", at_least=0)
        require_number(self.clip, "unsupervised fine-tuning: clip", above=0, none_ok=True)
        require_choice(self.estimator, "unsupervised fine-tuning: estimator", ESTIMATORS)
        require(
            self.steps % self.eval_every == 0,
            f"unsupervised fine-tuning: steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})",
        )

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.encoder == "lora" else 1e-3)


def surrogate_loss(
    log_pi_BNC: Array,
    reward_BNC: Array,
    reward_argmax_BNC: Array,
    sampled_BN: Array,
    gamma: float | Array,
    estimator: str,
) -> Array:
    """The negated objective whose gradient estimates that of E_{y ~ tau}[sum_n R_n(y_1..y_n)] + gamma H(mean tau).

    rao: -[sum_n sum_y sg(pi_n(y) R_n(y)) log pi_n(y) + sum_{n>=2} sg(sum_y pi_n(y) (R_n(y) - R^argmax_n(y)))
    sum_{i<n} log pi_i(yhat_i)]: each position's own label marginalised exactly, earlier labels credited by score
    function against the argmax labelling's reward. reinforce: -sg(R(yhat) - R(ybar)) sum_n log pi_n(yhat_n).
    Averaged over the B sequences; R_n(y) are per-example rewards (log-probabilities / N)."""
    require_choice(estimator, "unsupervised fine-tuning: estimator", ESTIMATORS)
    pi_BNC = jnp.exp(log_pi_BNC)
    log_pi_sampled_BN = jnp.take_along_axis(log_pi_BNC, sampled_BN[..., None], -1)[..., 0]
    reward_BNC, reward_argmax_BNC = jax.lax.stop_gradient(reward_BNC), jax.lax.stop_gradient(reward_argmax_BNC)
    if estimator == "rao":
        own_B = jnp.sum(jax.lax.stop_gradient(pi_BNC * reward_BNC) * log_pi_BNC, axis=(1, 2))
        advantage_BN = jax.lax.stop_gradient(jnp.sum(pi_BNC * (reward_BNC - reward_argmax_BNC), -1))
        earlier_BN = jnp.cumsum(log_pi_sampled_BN, -1) - log_pi_sampled_BN  # sum_{i<n} log pi_i(yhat_i)
        objective_B = own_B + jnp.sum(advantage_BN * earlier_BN, -1)
    else:
        sampled_reward_B = jnp.take_along_axis(reward_BNC, sampled_BN[..., None], -1)[..., 0].sum(-1)
        argmax_BN = jnp.argmax(log_pi_BNC, -1)
        baseline_B = jnp.take_along_axis(reward_argmax_BNC, argmax_BN[..., None], -1)[..., 0].sum(-1)
        objective_B = jax.lax.stop_gradient(sampled_reward_B - baseline_B) * log_pi_sampled_BN.sum(-1)
    mean_pi_C = pi_BNC.reshape(-1, pi_BNC.shape[-1]).mean(0)
    entropy = -jnp.sum(mean_pi_C * jnp.log(jnp.maximum(mean_pi_C, 1e-30)))
    return -jnp.mean(objective_B) - gamma * entropy


def _encoder(
    learner: Learner, params: Any, cfg: FineTuneConfig, num_classes: int
) -> tuple[Any, Any]:  # (init(key, x_UD), log_probs(enc, x_ND) -> [N, C])
    if cfg.encoder == "lora":

        def init(key: Array, x_UD: Array) -> Any:
            return lora_init(key, params, cfg.rank)

        def log_probs(enc: Any, x_ND: Array) -> Array:
            adapted = lora_apply(params, enc)
            return zero_shot(learner, adapted, x_ND[None], num_classes)[0]

        return init, log_probs

    def log_probs_linear(enc: Any, x_ND: Array) -> Array:
        return jax.nn.log_softmax(x_ND @ enc["w"] + enc["b"], -1)

    def init_linear(key: Array, x_UD: Array) -> Any:
        d = x_UD.shape[-1]
        enc = {"w": 0.01 * jax.random.normal(key, (d, num_classes)), "b": jnp.zeros((num_classes,))}
        if cfg.distill_steps == 0:
            return enc
        target_UC = jnp.exp(zero_shot(learner, params, x_UD[None], num_classes)[0])
        opt = optax.adam(1e-2)

        def distill(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
            e, s = carry
            g = jax.grad(lambda e: -jnp.mean(jnp.sum(target_UC * log_probs_linear(e, x_UD), -1)))(e)
            updates, s = opt.update(g, s, e)
            return (optax.apply_updates(e, updates), s), None

        (enc, _), _ = jax.lax.scan(distill, (enc, opt.init(enc)), None, length=cfg.distill_steps)
        return enc

    return init_linear, log_probs_linear


def unsupervised_finetune(
    learner: Learner, params: Any, key: Array, x_BUD: Array, x_BQD: Array, num_classes: int, cfg: FineTuneConfig
) -> dict[str, Array]:
    """Alg. B1, one encoder per task (vmapped over tasks, steps `lax.scan`ned). Each step draws `cfg.batch`
    sequences of `cfg.n` points of the task's U, samples labels from the encoder, and scores every candidate label at
    every position with two frozen `predict` calls (sampled and argmax prefixes). Returns the encoder's argmax labels
    on U and Q at step 0 and after every `eval_every` steps, `U` [E+1, B, U] and `Q` [E+1, B, Q], and the mean
    `loss` per step [S]."""
    check_finetune(cfg, x_BUD.shape[1], num_classes)
    gamma = jnp.float32(cfg.gamma)  # traced: the gamma ablations share one program
    return _finetune(learner, params, key, x_BUD, x_BQD, gamma, num_classes, dataclasses.replace(cfg, gamma=0.0))


@functools.partial(jax.jit, static_argnames=("learner", "num_classes", "cfg"))
def _finetune(
    learner: Learner,
    params: Any,
    key: Array,
    x_BUD: Array,
    x_BQD: Array,
    gamma: Array,
    num_classes: int,
    cfg: FineTuneConfig,
) -> dict[str, Array]:
    init, log_probs = _encoder(learner, params, cfg, num_classes)
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip or float(cfg.n)), optax.adam(cfg.learning_rate))
    u = x_BUD.shape[1]

    def per_task(key: Array, x_UD: Array, x_QD: Array) -> tuple[Array, Array, Array]:
        k_init, k_steps = jax.random.split(key)
        enc = init(k_init, x_UD)

        def loss_fn(enc: Any, k: Array) -> Array:
            k_idx, k_label = jax.random.split(k)
            idx_BN = jax.vmap(lambda kk: jax.random.permutation(kk, u)[: cfg.n])(jax.random.split(k_idx, cfg.batch))
            x_BND = x_UD[idx_BN]
            if cfg.batch * cfg.n > u:  # fewer encoder passes: every point of U once, then gathered
                log_pi_BNC = log_probs(enc, x_UD)[idx_BN]
            else:
                log_pi_BNC = log_probs(enc, x_BND.reshape(-1, x_UD.shape[-1])).reshape(cfg.batch, cfg.n, num_classes)
            sampled_BN = jax.random.categorical(k_label, jax.lax.stop_gradient(log_pi_BNC))
            argmax_BN = jnp.argmax(log_pi_BNC, -1)
            reward_BNC = label_log_probs(learner, params, x_BND, sampled_BN, num_classes) / cfg.n
            reward_argmax_BNC = label_log_probs(learner, params, x_BND, argmax_BN, num_classes) / cfg.n
            return surrogate_loss(log_pi_BNC, reward_BNC, reward_argmax_BNC, sampled_BN, gamma, cfg.estimator)

        def step(carry: tuple[Any, Any], k: Array) -> tuple[tuple[Any, Any], Array]:
            enc, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(enc, k)
            updates, state = opt.update(grads, state, enc)
            return (optax.apply_updates(enc, updates), state), loss

        def predict(enc: Any) -> tuple[Array, Array]:
            return jnp.argmax(log_probs(enc, x_UD), -1), jnp.argmax(log_probs(enc, x_QD), -1)

        def chunk(carry: tuple[Any, Any], keys_S: Array) -> tuple[tuple[Any, Any], tuple[Array, Array, Array]]:
            carry, losses_S = jax.lax.scan(step, carry, keys_S)
            return carry, (*predict(carry[0]), losses_S)

        keys_ES = jax.random.split(k_steps, (cfg.steps // cfg.eval_every, cfg.eval_every))
        _, (on_u, on_q, losses) = jax.lax.scan(chunk, (enc, opt.init(enc)), keys_ES)
        first_u, first_q = predict(enc)
        return (
            jnp.concatenate([first_u[None], on_u]),
            jnp.concatenate([first_q[None], on_q]),
            losses.reshape(-1),
        )

    on_u, on_q, losses = jax.vmap(per_task)(jax.random.split(key, x_BUD.shape[0]), x_BUD, x_BQD)
    return {"U": jnp.swapaxes(on_u, 0, 1), "Q": jnp.swapaxes(on_q, 0, 1), "loss": losses.mean(0)}


def check_finetune(cfg: FineTuneConfig, pool_size: int, num_classes: int | None) -> None:
    """One-line errors before compiling: a classification method needs C; a sequence must fit in the pool."""
    if num_classes is None:
        raise ConfigError("unsupervised fine-tuning is a classification method; the learner was built for regression")
    if cfg.n > pool_size:
        raise ConfigError(f"unsupervised fine-tuning: n={cfg.n} points per sequence > the unlabeled set ({pool_size})")
