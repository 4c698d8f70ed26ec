"""Closed-form (hand-crafted) learning algorithms behind the prequential Learner protocol.

One `predict` call yields all N positions: the output at position i uses the context (x_j, y_j), j < i, and the
query x_i, so context sizes run 0..N-1. With `positions` (int [P]) only those query positions are computed.
Classification learners take int class ids and return per-class scores [B, N, C] whose argmax (ties -> lowest
class, as jnp.argmax) is the prediction; regression learners return predictions [B, N]. Everything is masked
[P, N] context matrices (no loops over positions or tasks), jittable with the dataclass fields static.
A classifier must be told C (`num_classes`, no default): the labels are traced values, so C cannot be read off them,
and a guessed C would silently drop classes. docs/papers.md §2.9 gives their reference accuracies on the paper's task
families.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines.context import context_mask, l2_normalize, query_rows
from icl_meta.contracts import Learner, TaskSpec
from icl_meta.errors import require, require_int, require_number
from icl_meta.learners import build, register, register_rules
from tasks.amortization import amortization_labels

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST  # exact float32 sums even where the backend would default to TF32/bf16 matmuls


@dataclasses.dataclass(frozen=True)
class _Classifier(Learner):
    """Common base: the number of classes (static, required) and the task-compatibility check."""

    supports: ClassVar[tuple[str, ...]] = ("classification",)  # a capability (icl_meta.learners)
    num_classes: int

    def __post_init__(self) -> None:
        require_int(self.num_classes, f"{self.name}: num_classes", 2)

    def init(self, key: Array, spec: TaskSpec) -> None:
        require(
            spec.num_classes == self.num_classes,
            f"{self.name}: the task has num_classes={spec.num_classes}, the learner num_classes={self.num_classes}",
        )
        return None

    def _onehot(self, y_BN: Array) -> Array:
        return jax.nn.one_hot(y_BN, self.num_classes, dtype=jnp.float32)


@register("ncm")
@dataclasses.dataclass(frozen=True)
class NearestClassMean(_Classifier):
    """The ProtoNet rule on raw x: score_k = -||x_i - p_k||^2, p_k the context mean of class k (0 if absent)."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        onehot_BNC = self._onehot(y)
        counts_BPC = jnp.einsum("pn,bnc->bpc", mask_PN, onehot_BNC, precision=_HI)
        sums_BPCD = jnp.einsum("pn,bnc,bnd->bpcd", mask_PN, onehot_BNC, x, precision=_HI)
        protos_BPCD = sums_BPCD / jnp.maximum(counts_BPC, 1.0)[..., None]  # absent class -> 0 vector
        xq_BPD = x[:, rows_P]
        return -jnp.sum((xq_BPD[:, :, None, :] - protos_BPCD) ** 2, axis=-1)


@register("matching")
@dataclasses.dataclass(frozen=True)
class CosineMatching(_Classifier):
    """The MatchNet rule without embedding: score_k = sum over context j of class k of cos(x_i, x_j)."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        xn_BND = l2_normalize(x)
        cos_BPN = jnp.einsum("bpd,bnd->bpn", xn_BND[:, rows_P], xn_BND, precision=_HI)
        cos_BPN = cos_BPN * context_mask(rows_P, n)[None]
        return jnp.einsum("bpn,bnc->bpc", cos_BPN, self._onehot(y), precision=_HI)


@register("averaging")
@dataclasses.dataclass(frozen=True)
class Averaging(_Classifier):
    """The amortization rule with a plug-in centre: w_hat = context mean of x (0 if empty), then the task's label
    rule `amortization_labels(x_i, w_hat, C)`. Returns the one-hot of that label as scores."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        w_BPD = jnp.einsum("pn,bnd->bpd", mask_PN, x, precision=_HI) / jnp.maximum(mask_PN.sum(-1), 1.0)[:, None]
        labels_BP = amortization_labels(x[:, rows_P], w_BPD, self.num_classes)
        return jax.nn.one_hot(labels_BP, self.num_classes, dtype=jnp.float32)


@register("knn")
@dataclasses.dataclass(frozen=True)
class KNearestNeighbours(_Classifier):
    """Majority vote of the k nearest context examples (Euclidean; all of them when fewer than k).

    Scores are the vote counts, so vote ties go to the lowest class and the empty context to class 0.
    """

    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int(self.k, f"{self.name}: k")

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        k = min(self.k, n)
        # Differences rather than |a|^2 + |b|^2 - 2ab: no cancellation for near neighbours.
        dist_BPN = jnp.sum((x[:, rows_P, None, :] - x[:, None, :, :]) ** 2, axis=-1)
        dist_BPN = jnp.where(context_mask(rows_P, n, bool)[None], dist_BPN, jnp.inf)
        _, idx_BPK = jax.lax.top_k(-dist_BPN, k)
        y_BPK = jnp.take_along_axis(jnp.broadcast_to(y[:, None, :], dist_BPN.shape), idx_BPK, axis=-1)
        # Only the first min(k, i) neighbours are real context examples; the rest are masked padding.
        real_PK = jnp.arange(k)[None, :] < rows_P[:, None]
        return jnp.einsum("bpkc,pk->bpc", self._onehot(y_BPK), real_PK.astype(jnp.float32), precision=_HI)


@dataclasses.dataclass(frozen=True)
class _Regressor(Learner):
    """Common base of the linear-regression learners: y float targets, predictions [B, N]."""

    supports: ClassVar[tuple[str, ...]] = ("regression",)  # a capability (icl_meta.learners)

    def init(self, key: Array, spec: TaskSpec) -> None:
        require(spec.is_regression, f"{self.name}: needs a regression task, got num_classes={spec.num_classes}")
        return None


def _ridge_predict(x: Array, y: Array, lam: float, positions: Array | None) -> Array:
    """x_i . w_hat_i with w_hat_i = (X^T X + lam I)^{-1} X^T y on the context X = x[:i], y[:i].

    Computed from the SVD of the masked context matrix (better conditioned than the Gram matrix): the filter is
    s / (s^2 + lam), and for lam = 0 it is the pseudo-inverse 1/s above pinv's cutoff, i.e. the minimum-norm fit.
    """
    n, d = x.shape[1], x.shape[2]
    rows_P = query_rows(n, positions)
    mask_PN = context_mask(rows_P, n)
    x_BPND = x[:, None] * mask_PN[None, :, :, None]
    y_BPN = y[:, None].astype(jnp.float32) * mask_PN[None]
    u_BPNI, s_BPI, vt_BPID = jnp.linalg.svd(x_BPND, full_matrices=False)
    if lam == 0:
        cutoff_BP1 = 10.0 * max(n, d) * jnp.finfo(jnp.float32).eps * s_BPI.max(-1, keepdims=True)
        keep = s_BPI > cutoff_BP1
        filt_BPI = jnp.where(keep, 1.0 / jnp.where(keep, s_BPI, 1.0), 0.0)
    else:
        filt_BPI = s_BPI / (s_BPI**2 + lam)
    uy_BPI = jnp.einsum("bpni,bpn->bpi", u_BPNI, y_BPN, precision=_HI)
    w_BPD = jnp.einsum("bpid,bpi->bpd", vt_BPID, filt_BPI * uy_BPI, precision=_HI)
    return jnp.einsum("bpd,bpd->bp", x[:, rows_P], w_BPD, precision=_HI)


@register("least_squares")
@dataclasses.dataclass(frozen=True)
class LeastSquares(_Regressor):
    """Minimum-norm least-squares fit of the context (pinv); the empty context predicts 0."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        return _ridge_predict(x, y, 0.0, positions)


@register("ridge")
@dataclasses.dataclass(frozen=True)
class Ridge(_Regressor):
    """Ridge regression (X^T X + lam I)^{-1} X^T y on the context; lam = 0 is the minimum-norm fit (its limit)."""

    lam: float = 1e-3

    def __post_init__(self) -> None:
        require_number(self.lam, f"{self.name}: lam", at_least=0)

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        return _ridge_predict(x, y, float(self.lam), positions)


@register("gradient_descent")
@dataclasses.dataclass(frozen=True)
class GradientDescent(_Regressor):
    """`steps` full-batch gradient steps from w = 0 on the context's loss L(w) = 1/(2i) sum_{j<i} (x_j.w - y_j)^2,
    then x_i . w; the empty context predicts 0. The algorithm linear-attention layers can implement in context (one step
    per layer, von Oswald et al. 2023).

    The step size is lr / mean_j ||x_j||^2 = lr / trace(H), H = X^T X / i the loss's Hessian: its top eigenvalue is at
    most its trace, so every lr < 2 converges (to the minimum-norm least-squares fit, from w = 0) in any d and at any
    input scale, and the rule has no scale to tune.
    """

    steps: int = 1
    lr: float = 1.0

    def __post_init__(self) -> None:
        require_int(self.steps, f"{self.name}: steps")
        require_number(self.lr, f"{self.name}: lr", above=0)

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        y_BN = y.astype(jnp.float32)
        sumsq_BP = jnp.einsum("pn,bn->bp", mask_PN, jnp.sum(x * x, axis=-1), precision=_HI)
        # lr / mean ||x_j||^2 times the 1/i of the gradient: lr / sum ||x_j||^2 (0 for an empty or all-zero context).
        rate_BP = jnp.where(sumsq_BP > 0, self.lr / jnp.where(sumsq_BP > 0, sumsq_BP, 1.0), 0.0)

        def step(_: int, w_BPD: Array) -> Array:
            resid_BPN = (jnp.einsum("bnd,bpd->bpn", x, w_BPD, precision=_HI) - y_BN[:, None]) * mask_PN[None]
            grad_BPD = jnp.einsum("bpn,bnd->bpd", resid_BPN, x, precision=_HI)  # i times the gradient
            return w_BPD - rate_BP[..., None] * grad_BPD

        w_BPD = jax.lax.fori_loop(0, self.steps, step, jnp.zeros((x.shape[0], rows_P.shape[0], x.shape[2]), x.dtype))
        return jnp.einsum("bpd,bpd->bp", x[:, rows_P], w_BPD, precision=_HI)


@register("mean_estimator")
@dataclasses.dataclass(frozen=True)
class MeanEstimator(_Regressor):
    """w_hat = (1/i) sum_{j<i} y_j x_j, then x_i . w_hat; the empty context predicts 0. One gradient step of size 1 (in
    absolute terms, unlike `gradient_descent`'s normalised step) from w = 0; unbiased for w when x ~ N(0, I)."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        mean_PN = mask_PN / jnp.maximum(mask_PN.sum(-1, keepdims=True), 1.0)
        w_BPD = jnp.einsum("pn,bn,bnd->bpd", mean_PN, y.astype(jnp.float32), x, precision=_HI)
        return jnp.einsum("bpd,bpd->bp", x[:, rows_P], w_BPD, precision=_HI)


@register_rules("references")
def references(spec: TaskSpec) -> dict[str, Learner]:
    """The closed-form algorithms drawn beside a trained learner, by name: ncm, matching, averaging and 1-NN for
    classification, least squares for regression."""
    if spec.is_regression:
        return {"least_squares": build("least_squares")}
    refs = [build(name, num_classes=spec.classes) for name in ("ncm", "matching", "averaging")]
    return {ref.name: ref for ref in [*refs, build("knn", k=1, num_classes=spec.classes)]}


@register_rules("agreement")
def agreement_rules(spec: TaskSpec) -> dict[str, Learner]:
    """The closed-form rules a learner's predictions are compared with (`icl_meta.agreement`), by label.

    Classification: ncm, matching, averaging, knn(1), knn(3). Regression: least_squares, ridge(lam) for lam in 0.1, 1,
    10, gd(k) (`gradient_descent`, lr 1) for k in 1, 3, 10, mean_estimator. A rule without hyper-parameters is
    labelled by its registered name, so a family's `optimal_rule` is one of the labels.
    """
    if spec.is_regression:
        rules: dict[str, Learner] = {"least_squares": build("least_squares")}
        rules |= {f"ridge({lam:g})": build("ridge", lam=lam) for lam in (0.1, 1.0, 10.0)}
        rules |= {f"gd({k})": build("gradient_descent", steps=k, lr=1.0) for k in (1, 3, 10)}
        return rules | {"mean_estimator": build("mean_estimator")}
    c = spec.classes
    rules = {name: build(name, num_classes=c) for name in ("ncm", "matching", "averaging")}
    return rules | {f"knn({k})": build("knn", k=k, num_classes=c) for k in (1, 3)}
