"""Metrics of a predicted labelling of a task's points (docs/papers.md §9.4), for unsupervised in-context learning
and the clustering baselines: raw and best-permutation accuracy, NMI and ARI, label-marginal entropy and collapse,
gap recovered (`scores`: the per-task set of them an evaluation reports, or the squared error of a regression), and
task-bootstrap summaries and paired comparisons of methods on the same tasks.

Host-side numpy (and scipy's Hungarian solver): these run once per evaluation on [B, N] integer labellings, so
clarity wins over jit. Labels are class ids 0..C-1 where `num_classes` is given; `nmi`/`ari` accept any integer ids
(partitions are compared, not names), of one task [N] or of a batch [B, N].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from icl_meta.errors import require, require_choice, require_int, require_number
from icl_meta.evaluate import bootstrap

NMI_AVERAGES = ("arithmetic", "geometric", "min", "max")


def _labelling(value: Any, name: str, ndim: int, num_classes: int | None = None) -> np.ndarray:
    """An integer array of `ndim` axes (ids in 0..num_classes-1 when given), as int64."""
    arr = np.asarray(value)
    axes = "[N]" if ndim == 1 else "[B, N]"
    require(arr.ndim == ndim and arr.shape[-1] >= 1, f"{name} must be an array {axes} with N >= 1, got {arr.shape}")
    require(np.issubdtype(arr.dtype, np.integer), f"{name} must hold integer class ids, got dtype {arr.dtype}")
    if num_classes is not None:
        require_int(num_classes, "num_classes")
        require(
            bool(np.all((arr >= 0) & (arr < num_classes))),
            f"{name} must hold class ids in 0..{num_classes - 1}, got values in {arr.min()}..{arr.max()}",
        )
    return arr.astype(np.int64)


def _pair(pred: Any, true: Any, ndim: int, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred_arr = _labelling(pred, "pred", ndim, num_classes)
    true_arr = _labelling(true, "true", ndim, num_classes)
    require(
        pred_arr.shape == true_arr.shape,
        f"pred and true must have one shape, got {pred_arr.shape} and {true_arr.shape}",
    )
    return pred_arr, true_arr


def _confusions(pred_BN: np.ndarray, true_BN: np.ndarray, num_classes: int) -> np.ndarray:
    """[B, C, C] counts, [b, t, p] = #{n : true = t, pred = p}, by one bincount."""
    b = pred_BN.shape[0]
    flat_BN = (np.arange(b)[:, None] * num_classes + true_BN) * num_classes + pred_BN
    return np.bincount(flat_BN.ravel(), minlength=b * num_classes**2).reshape(b, num_classes, num_classes)


def confusion(pred_N: Any, true_N: Any, num_classes: int) -> np.ndarray:
    """[C, C] counts of one task: rows are the true class, columns the predicted one."""
    pred_arr, true_arr = _pair(pred_N, true_N, 1, num_classes)
    return _confusions(pred_arr[None], true_arr[None], num_classes)[0]


def accuracy_raw(pred_BN: Any, true_BN: Any) -> np.ndarray:
    """[B] fraction of points whose predicted id is the true one (the labels' names matter: anchored methods)."""
    pred_arr, true_arr = _pair(pred_BN, true_BN, 2)
    return np.mean(pred_arr == true_arr, axis=1)


def best_permutation(pred_BN: Any, true_BN: Any, num_classes: int) -> np.ndarray:
    """[B, C] the one-to-one renaming of predicted ids that maximises accuracy, per task (Hungarian algorithm on the
    confusion matrix): predicted id k becomes perm_BC[b, k]."""
    pred_arr, true_arr = _pair(pred_BN, true_BN, 2, num_classes)
    conf_BCC = _confusions(pred_arr, true_arr, num_classes)
    perm_BC = np.empty((pred_arr.shape[0], num_classes), np.int64)
    for b, conf_CC in enumerate(conf_BCC):  # one tiny C x C assignment per task; scipy has no batched solver
        true_ids, pred_ids = linear_sum_assignment(conf_CC, maximize=True)
        perm_BC[b, pred_ids] = true_ids
    return perm_BC


def accuracy_perm(pred_BN: Any, true_BN: Any, num_classes: int) -> np.ndarray:
    """[B] accuracy after the best one-to-one renaming of predicted ids per task (`best_permutation`): whether the
    clusters were found, whatever they were called. accuracy_perm - accuracy_raw is the naming error."""
    pred_arr, true_arr = _pair(pred_BN, true_BN, 2, num_classes)
    renamed_BN = np.take_along_axis(best_permutation(pred_arr, true_arr, num_classes), pred_arr, axis=1)
    return np.mean(renamed_BN == true_arr, axis=1)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Natural-log entropy over the last axis of probabilities (0 log 0 = 0)."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _nmi_from(conf_BCC: np.ndarray, average: str) -> np.ndarray:
    """NMI of contingency tables, sklearn's conventions: 1 when both partitions are a single cluster, 0 when the
    mutual information is 0 (otherwise), else I(T; P) / average(H(T), H(P))."""
    n_B = conf_BCC.sum((1, 2)).astype(np.float64)
    joint_BCC = conf_BCC / n_B[:, None, None]
    true_BC, pred_BC = joint_BCC.sum(2), joint_BCC.sum(1)
    outer_BCC = true_BC[:, :, None] * pred_BC[:, None, :]
    ratio_BCC = np.where(joint_BCC > 0, joint_BCC / np.where(outer_BCC > 0, outer_BCC, 1.0), 1.0)
    mi_B = np.maximum(np.sum(joint_BCC * np.log(ratio_BCC), axis=(1, 2)), 0.0)
    h_true_B, h_pred_B = _entropy(true_BC), _entropy(pred_BC)
    norm_B = {
        "arithmetic": (h_true_B + h_pred_B) / 2,
        "geometric": np.sqrt(h_true_B * h_pred_B),
        "min": np.minimum(h_true_B, h_pred_B),
        "max": np.maximum(h_true_B, h_pred_B),
    }[average]
    single_B = ((true_BC > 0).sum(1) == 1) & ((pred_BC > 0).sum(1) == 1)
    value_B = np.divide(mi_B, norm_B, out=np.zeros_like(mi_B), where=(mi_B > 0) & (norm_B > 0))
    return np.where(single_B, 1.0, value_B)


def _ari_from(conf_BCC: np.ndarray) -> np.ndarray:
    """ARI (Hubert and Arabie) of contingency tables from the pair counts: 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) +
    (tp + fp)(fp + tn)) over unordered pairs of points, and 1 when no pair is split differently (sklearn's value)."""
    conf = conf_BCC.astype(np.float64)
    n_B = conf.sum((1, 2))
    same_both_B = np.sum(conf * (conf - 1), axis=(1, 2)) / 2
    rows_BC, cols_BC = conf.sum(2), conf.sum(1)
    same_true_B = np.sum(rows_BC * (rows_BC - 1), axis=1) / 2
    same_pred_B = np.sum(cols_BC * (cols_BC - 1), axis=1) / 2
    tp, fn, fp = same_both_B, same_true_B - same_both_B, same_pred_B - same_both_B
    tn = n_B * (n_B - 1) / 2 - tp - fn - fp
    denom_B = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    agree_B = (fn == 0) & (fp == 0)
    value_B = np.divide(2 * (tp * tn - fn * fp), denom_B, out=np.ones_like(tp), where=~agree_B & (denom_B != 0))
    return np.where(agree_B, 1.0, value_B)


def _partitions(pred: Any, true: Any) -> tuple[np.ndarray, bool]:
    """Contingency tables [B, K, K] of labellings [N] or [B, N] with any integer ids (renamed 0..K-1 by np.unique,
    one renaming for the whole batch, which keeps every task's partition), and whether the input was one task."""
    pred_arr, true_arr = np.asarray(pred), np.asarray(true)
    single = pred_arr.ndim == 1
    pred_arr, true_arr = _pair(pred_arr[None] if single else pred_arr, true_arr[None] if single else true_arr, 2)
    pred_ids = np.unique(pred_arr, return_inverse=True)[1].reshape(pred_arr.shape)
    true_ids = np.unique(true_arr, return_inverse=True)[1].reshape(true_arr.shape)
    return _confusions(pred_ids, true_ids, int(max(pred_ids.max(), true_ids.max())) + 1), single


def nmi(pred: Any, true: Any, *, average: str = "arithmetic") -> float | np.ndarray:
    """Normalised mutual information of two partitions of a task's points (any integer ids): I(T; P) divided by the
    `average` of H(T) and H(P), by default the arithmetic mean (sklearn's default); natural logs. One task [N] ->
    float; a batch [B, N] -> [B]."""
    require_choice(average, "nmi: average", NMI_AVERAGES)
    conf_BKK, single = _partitions(pred, true)
    value_B = _nmi_from(conf_BKK, average)
    return float(value_B[0]) if single else value_B


def ari(pred: Any, true: Any) -> float | np.ndarray:
    """Adjusted Rand index of two partitions of a task's points (any integer ids): 1 identical, ~0 independent.
    One task [N] -> float; a batch [B, N] -> [B]."""
    conf_BKK, single = _partitions(pred, true)
    value_B = _ari_from(conf_BKK)
    return float(value_B[0]) if single else value_B


def nmi_per_task(pred_BN: Any, true_BN: Any, num_classes: int, *, average: str = "arithmetic") -> np.ndarray:
    """[B] `nmi` of every task with class ids 0..C-1 checked, vectorised through the confusion matrices."""
    require_choice(average, "nmi_per_task: average", NMI_AVERAGES)
    pred_arr, true_arr = _pair(pred_BN, true_BN, 2, num_classes)
    return _nmi_from(_confusions(pred_arr, true_arr, num_classes), average)


def ari_per_task(pred_BN: Any, true_BN: Any, num_classes: int) -> np.ndarray:
    """[B] `ari` of every task with class ids 0..C-1 checked, vectorised through the confusion matrices."""
    pred_arr, true_arr = _pair(pred_BN, true_BN, 2, num_classes)
    return _ari_from(_confusions(pred_arr, true_arr, num_classes))


def marginal_entropy(pred_BN: Any, num_classes: int) -> np.ndarray:
    """[B] natural-log entropy of each task's predicted-label histogram: 0 all one class, log C balanced."""
    pred_arr = _labelling(pred_BN, "pred", 2, num_classes)
    b = pred_arr.shape[0]
    counts_BC = np.bincount((np.arange(b)[:, None] * num_classes + pred_arr).ravel(), minlength=b * num_classes)
    return _entropy(counts_BC.reshape(b, num_classes) / pred_arr.shape[1])


def collapsed(pred_BN: Any, num_classes: int) -> np.ndarray:
    """[B] bool: the labelling collapsed, its marginal entropy < 0.5 log C (the collapse rate is the mean)."""
    return marginal_entropy(pred_BN, num_classes) < 0.5 * math.log(num_classes)


def scores(pred_BN: Any, true_BN: Any, num_classes: int | None) -> dict[str, np.ndarray]:
    """Per-task metrics [B] of a predicted labelling of B tasks: `accuracy` (raw), `accuracy_perm`, `nmi` and
    `collapsed` (as 0/1 floats) with class ids 0..C-1; or, for regression (`num_classes` None), the `squared_error`
    of predicted targets, averaged over each task's points."""
    pred_BN = np.asarray(pred_BN)
    if num_classes is None:
        return {"squared_error": ((pred_BN - true_BN) ** 2).mean(-1)}
    return {
        "accuracy": accuracy_raw(pred_BN, true_BN),
        "accuracy_perm": accuracy_perm(pred_BN, true_BN, num_classes),
        "nmi": np.asarray(nmi(pred_BN, true_BN)),
        "collapsed": collapsed(pred_BN, num_classes).astype(float),
    }


def gap_recovered(method: Any, zero_shot: Any, supervised: Any, *, min_gap: float = 1e-9) -> float:
    """(A_method - A_ZS) / (A_SUP - A_ZS) on the means of the given accuracies (scalars or per-task arrays): 0 no gain
    over zero-shot, 1 on par with the supervised reference. NaN when |A_SUP - A_ZS| <= min_gap: no gap to recover
    (and NaN if any mean is NaN)."""
    require_number(min_gap, "gap_recovered: min_gap", at_least=0)
    a_method, a_zs, a_sup = (float(np.mean(np.asarray(v, np.float64))) for v in (method, zero_shot, supervised))
    gap = a_sup - a_zs
    return (a_method - a_zs) / gap if abs(gap) > min_gap else math.nan


def _check_bootstrap(resamples: int, level: float, name: str) -> None:
    require_int(resamples, f"{name}: resamples")
    require_number(level, f"{name}: level", above=0)
    require(level < 1, f"{name}: level must be a number in (0, 1), got {level!r}")


def _values(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    require(
        arr.ndim in (1, 2) and arr.size >= 1,
        f"{name} must be an array [B] (tasks) or [S, B] (seeds x the same tasks), got shape {arr.shape}",
    )
    return arr


def summary(values_B: Any, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean over tasks with a percentile task-bootstrap interval, {"mean", "lo", "hi"} (`icl_meta.evaluate.bootstrap`
    on the values as one position). Values [S, B] (S trained seeds, each on the same B tasks) get a crossed bootstrap:
    each resample draws seeds and tasks with replacement, so the interval covers both sources of variation (one
    seed: the task bootstrap itself)."""
    _check_bootstrap(resamples, level, "summary")
    values = _values(values_B, "summary: values_B")
    if values.ndim == 2 and values.shape[0] > 1:
        return crossed_bootstrap(values, resamples, level, seed)
    record = bootstrap(values.reshape(-1)[:, None], resamples, level, seed)
    return {key: float(record[key][0]) for key in ("mean", "lo", "hi")}


def crossed_bootstrap(values_SB: np.ndarray, resamples: int, level: float, seed: int) -> dict[str, float]:
    """Mean of [S, B] values (seeds crossed with tasks) with a percentile interval from resampling the seeds and the
    tasks independently with replacement (the mean of each resampled S x B sub-table)."""
    s, b = values_SB.shape
    rng = np.random.default_rng((seed, 2))
    weights_RS = rng.multinomial(s, np.full(s, 1.0 / s), size=resamples)
    weights_RB = rng.multinomial(b, np.full(b, 1.0 / b), size=resamples)
    means_R = np.einsum("rs,sb,rb->r", weights_RS, values_SB, weights_RB) / (s * b)
    alpha = (1.0 - level) / 2.0
    return {
        "mean": float(values_SB.mean()),
        "lo": float(np.quantile(means_R, alpha)),
        "hi": float(np.quantile(means_R, 1.0 - alpha)),
    }


def paired_difference(
    a_B: Any, b_B: Any, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Two methods on the same B tasks: mean(a - b) with a percentile task-bootstrap interval (`summary` of the
    differences) and a two-sided p-value from a sign-flip randomisation test, {"mean", "lo", "hi", "p"}. Values
    [S, B] (seeds x the same tasks): the crossed bootstrap of `summary`, and the test on the seed means per task
    (the tasks are the exchangeable units).

    The test: under H0 (a and b exchangeable within a task) each difference's sign is a coin flip, so p is the
    fraction of `resamples` random sign patterns whose |mean| is at least the observed one, counting the observed
    pattern itself: p = (1 + #{|mean(s d)| >= |mean(d)|}) / (1 + resamples), never 0. Identical inputs give p = 1;
    NaN differences give NaN throughout.
    """
    a_arr, b_arr = _values(a_B, "paired_difference: a_B"), _values(b_B, "paired_difference: b_B")
    require(
        a_arr.shape == b_arr.shape,
        f"paired_difference: a_B and b_B must have one shape, got {a_arr.shape} and {b_arr.shape}",
    )
    _check_bootstrap(resamples, level, "paired_difference")
    d = a_arr - b_arr
    d_B = d.mean(0) if d.ndim == 2 else d
    signs_RB = np.random.default_rng((seed, 1)).choice(np.array([-1.0, 1.0]), size=(resamples, d_B.size))
    observed = abs(d_B.mean())
    null_R = np.abs(signs_RB @ d_B) / d_B.size
    # Ties (e.g. all differences 0) count as extreme; the tolerance absorbs the matmul's rounding.
    extreme = int(np.sum(null_R >= observed - 1e-12 * np.abs(d_B).max()))
    p = (1 + extreme) / (1 + resamples) if math.isfinite(observed) else math.nan
    return {**summary(d, resamples, level, seed), "p": p}


__all__ = [
    "NMI_AVERAGES",
    "accuracy_perm",
    "accuracy_raw",
    "ari",
    "ari_per_task",
    "best_permutation",
    "collapsed",
    "confusion",
    "gap_recovered",
    "marginal_entropy",
    "nmi",
    "nmi_per_task",
    "paired_difference",
    "scores",
    "summary",
]
