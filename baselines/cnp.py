"""Conditional neural process, the reference's "Amortization" learner (docs/papers.md section 5.3).

    r_j = ff1([x_j ; onehot(y_j) padded to 2C])                  for context j < i
    c_i = ff2(mean_j r_j), or 0 for the empty context (ff2 skipped, as the reference)
    logits_i = ff_o([c_i ; x_i])                                  over the 2C slots (raw logits, a proper CE)

ff1, ff2: Linear(w, h) -> LeakyReLU -> Linear(h, w) with w = d + 2C; ff_o: Linear(w + d, h) -> LeakyReLU ->
Linear(h, 2C). The reference's Amortization(6, 6, 6, 8, 6, 4) for d=2, C=2 is h = w = 6 (250 parameters).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines.context import context_mask, query_rows, require_classification, require_hidden, require_input_dim
from baselines.mlp import init_mlp, mlp
from icl_meta.contracts import Learner, LearnerParams, TaskSpec
from icl_meta.learners import register

Array = jax.Array


@register("cnp")
@dataclasses.dataclass(frozen=True)
class CNP(Learner):
    supports: ClassVar[tuple[str, ...]] = ("classification",)  # a capability (icl_meta.learners)

    hidden: int | None = None  # hidden width of the three MLPs; None: d + 2C, as the reference

    def __post_init__(self) -> None:
        require_hidden(self.name, self.hidden)

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        w = spec.d + 2 * spec.classes
        h = self.hidden or w
        k1, k2, ko = jax.random.split(key, 3)
        weights = {
            "encode": init_mlp(k1, (w, h, w)),
            "aggregate": init_mlp(k2, (w, h, w)),
            "decode": init_mlp(ko, (w + spec.d, h, 2 * spec.classes)),
        }
        return LearnerParams(weights, spec)

    def predict(self, params: LearnerParams, x: Array, y: Array, positions: Array | None = None) -> Array:
        """Log-probabilities over the 2C slots [B, P, 2C]; the padded slots are learned logits, as the reference."""
        spec, weights = params.spec, params.weights
        require_input_dim(self.name, spec, x)
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        y_BNO = jax.nn.one_hot(y, 2 * spec.classes, dtype=jnp.float32)  # classes < C: the padded one-hot
        r_BNW = mlp(weights["encode"], jnp.concatenate([x, y_BNO], axis=-1))
        count_P = mask_PN.sum(-1)
        mean_BPW = jnp.einsum("pn,bnw->bpw", mask_PN, r_BNW) / jnp.maximum(count_P, 1.0)[None, :, None]
        c_BPW = jnp.where(count_P[None, :, None] > 0, mlp(weights["aggregate"], mean_BPW), 0.0)
        logits_BPO = mlp(weights["decode"], jnp.concatenate([c_BPW, x[:, rows_P]], axis=-1))
        return jax.nn.log_softmax(logits_BPO, axis=-1)
