"""Closed-form (hand-crafted) learning algorithms behind the prequential Learner protocol.

One `predict` call yields all N positions: the output at position i uses the context (x_j, y_j), j < i, and the
query x_i, so context sizes run 0..N-1. With `positions` (int [K]) only those query positions are computed.
Classification learners take int class ids and return per-class scores [B, N, C] whose argmax (ties -> lowest
class, as jnp.argmax) is the prediction; regression learners return predictions [B, N]. Everything is masked
[K, N] context matrices (no loops over positions or tasks), jittable with the dataclass fields static.
PAPER.md §2.9 gives their reference accuracies on the paper's task families.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines import register
from baselines.context import context_mask, l2_normalize, query_rows
from icl_meta.episode import TaskSpec
from icl_meta.errors import is_int, require
from tasks.amortization import amortization_labels

Array = jax.Array
_HI = jax.lax.Precision.HIGHEST  # exact float32 sums even where the backend would default to TF32/bf16 matmuls


@dataclasses.dataclass(frozen=True)
class _Classifier:
    """Common base: the number of classes (static) and the task-compatibility check."""

    num_classes: int = 2

    name: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        require(
            is_int(self.num_classes) and self.num_classes >= 2,
            f"{self.name}: num_classes must be an integer >= 2, got {self.num_classes!r}",
        )

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
        rows_K = query_rows(n, positions)
        mask_KN = context_mask(rows_K, n)
        onehot_BNC = self._onehot(y)
        counts_BKC = jnp.einsum("kn,bnc->bkc", mask_KN, onehot_BNC, precision=_HI)
        sums_BKCD = jnp.einsum("kn,bnc,bnd->bkcd", mask_KN, onehot_BNC, x, precision=_HI)
        protos_BKCD = sums_BKCD / jnp.maximum(counts_BKC, 1.0)[..., None]  # absent class -> 0 vector
        xq_BKD = x[:, rows_K]
        return -jnp.sum((xq_BKD[:, :, None, :] - protos_BKCD) ** 2, axis=-1)


@register("matching")
@dataclasses.dataclass(frozen=True)
class CosineMatching(_Classifier):
    """The MatchNet rule without embedding: score_k = sum over context j of class k of cos(x_i, x_j)."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_K = query_rows(n, positions)
        xn_BND = l2_normalize(x)
        cos_BKN = jnp.einsum("bkd,bnd->bkn", xn_BND[:, rows_K], xn_BND, precision=_HI)
        cos_BKN = cos_BKN * context_mask(rows_K, n)[None]
        return jnp.einsum("bkn,bnc->bkc", cos_BKN, self._onehot(y), precision=_HI)


@register("averaging")
@dataclasses.dataclass(frozen=True)
class Averaging(_Classifier):
    """The amortization rule with a plug-in centre: w_hat = context mean of x (0 if empty), then the task's label
    rule `amortization_labels(x_i, w_hat, C)`. Returns the one-hot of that label as scores."""

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_K = query_rows(n, positions)
        mask_KN = context_mask(rows_K, n)
        w_BKD = jnp.einsum("kn,bnd->bkd", mask_KN, x, precision=_HI) / jnp.maximum(mask_KN.sum(-1), 1.0)[:, None]
        labels_BK = amortization_labels(x[:, rows_K], w_BKD, self.num_classes)
        return jax.nn.one_hot(labels_BK, self.num_classes, dtype=jnp.float32)


@register("knn")
@dataclasses.dataclass(frozen=True)
class KNearestNeighbours(_Classifier):
    """Majority vote of the k nearest context examples (Euclidean; all of them when fewer than k).

    Scores are the vote counts, so vote ties go to the lowest class and the empty context to class 0.
    """

    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            is_int(self.k) and self.k >= 1,
            f"{self.name}: k must be an integer >= 1, got {self.k!r}",
        )

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        n = x.shape[1]
        rows_K = query_rows(n, positions)
        k = min(self.k, n)
        # Differences rather than |a|^2 + |b|^2 - 2ab: no cancellation for near neighbours.
        dist_BKN = jnp.sum((x[:, rows_K, None, :] - x[:, None, :, :]) ** 2, axis=-1)
        dist_BKN = jnp.where(context_mask(rows_K, n, bool)[None], dist_BKN, jnp.inf)
        _, idx_BKk = jax.lax.top_k(-dist_BKN, k)
        y_BKk = jnp.take_along_axis(jnp.broadcast_to(y[:, None, :], dist_BKN.shape), idx_BKk, axis=-1)
        # Only the first min(k, i) neighbours are real context examples; the rest are masked padding.
        real_Kk = jnp.arange(k)[None, :] < rows_K[:, None]
        return jnp.einsum("bkjc,kj->bkc", self._onehot(y_BKk), real_Kk.astype(jnp.float32), precision=_HI)


@dataclasses.dataclass(frozen=True)
class _Regressor:
    """Common base of the linear-regression learners: y float targets, predictions [B, N]."""

    name: ClassVar[str] = "?"

    def init(self, key: Array, spec: TaskSpec) -> None:
        require(spec.is_regression, f"{self.name}: needs a regression task, got num_classes={spec.num_classes}")
        return None


def _ridge_predict(x: Array, y: Array, lam: float, positions: Array | None) -> Array:
    """x_i . w_hat_i with w_hat_i = (X^T X + lam I)^{-1} X^T y on the context X = x[:i], y[:i].

    Computed from the SVD of the masked context matrix (better conditioned than the Gram matrix): the filter is
    s / (s^2 + lam), and for lam = 0 it is the pseudo-inverse 1/s above pinv's cutoff, i.e. the minimum-norm fit.
    """
    n, d = x.shape[1], x.shape[2]
    rows_K = query_rows(n, positions)
    mask_KN = context_mask(rows_K, n)
    x_BKND = x[:, None] * mask_KN[None, :, :, None]
    y_BKN = y[:, None].astype(jnp.float32) * mask_KN[None]
    u_BKNR, s_BKR, vt_BKRD = jnp.linalg.svd(x_BKND, full_matrices=False)
    if lam == 0:
        cutoff_BK1 = 10.0 * max(n, d) * jnp.finfo(jnp.float32).eps * s_BKR.max(-1, keepdims=True)
        keep = s_BKR > cutoff_BK1
        filt_BKR = jnp.where(keep, 1.0 / jnp.where(keep, s_BKR, 1.0), 0.0)
    else:
        filt_BKR = s_BKR / (s_BKR**2 + lam)
    uy_BKR = jnp.einsum("bknr,bkn->bkr", u_BKNR, y_BKN, precision=_HI)
    w_BKD = jnp.einsum("bkrd,bkr->bkd", vt_BKRD, filt_BKR * uy_BKR, precision=_HI)
    return jnp.einsum("bkd,bkd->bk", x[:, rows_K], w_BKD, precision=_HI)


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
        require(
            isinstance(self.lam, int | float) and math.isfinite(self.lam) and self.lam >= 0,
            f"{self.name}: lam must be a finite number >= 0, got {self.lam!r}",
        )

    def predict(self, params: None, x: Array, y: Array, positions: Array | None = None) -> Array:
        return _ridge_predict(x, y, float(self.lam), positions)
