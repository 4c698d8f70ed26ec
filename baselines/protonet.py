"""Prototypical network (docs/papers.md section 5.2): class means of embedded support examples, scored by distance.

    g = Linear(d, h) -> LeakyReLU(0.01) -> Linear(h, d)          (the reference's ProtoNet(d, d, d): h = d)
    p_k = mean of g(x_j) over context j < i with y_j = k        (the 0 vector when class k is absent)
    score_k(x_i) = -||p_k - q_i||^2,  q_i = x_i (the reference: the query is NOT embedded) or g(x_i)

The reference supports two classes; here the class masks are one-hot over C. The empty context gives every class the
0 prototype, equal scores and the prediction class 0, as in the reference.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines.context import (
    context_mask,
    padded_log_probs,
    query_rows,
    require_classification,
    require_hidden,
    require_input_dim,
)
from baselines.mlp import init_mlp, mlp
from icl_meta.contracts import Learner, LearnerParams, TaskSpec
from icl_meta.errors import require_bool
from icl_meta.learners import register

Array = jax.Array


@register("protonet")
@dataclasses.dataclass(frozen=True)
class ProtoNet(Learner):
    supports: ClassVar[tuple[str, ...]] = ("classification",)  # a capability (icl_meta.learners)

    embed_query: bool = False  # the reference compares the raw query with embedded prototypes; True: embed it too
    double_softmax: bool = True  # the reference's loss quirk (docs/papers.md section 5.4); False: plain log-softmax
    hidden: int | None = None  # embedding MLP hidden width; None: d, as the reference

    def __post_init__(self) -> None:
        for flag in ("embed_query", "double_softmax"):
            require_bool(getattr(self, flag), f"protonet: {flag}")
        require_hidden(self.name, self.hidden)

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        # The embedding keeps dimension d, so that an unembedded query lives in the same space as the prototypes.
        return LearnerParams({"embed": init_mlp(key, (spec.d, self.hidden or spec.d, spec.d))}, spec)

    def predict(self, params: LearnerParams, x: Array, y: Array, positions: Array | None = None) -> Array:
        """Log-probabilities over the reference's 2C slots [B, P, 2C] (slots C..2C-1 padded, never chosen)."""
        spec = params.spec
        require_input_dim(self.name, spec, x)
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        mask_PN = context_mask(rows_P, n)
        e_BND = mlp(params.weights["embed"], x)
        onehot_BNC = jax.nn.one_hot(y, spec.classes, dtype=jnp.float32)
        counts_BPC = jnp.einsum("pn,bnc->bpc", mask_PN, onehot_BNC)
        sums_BPCD = jnp.einsum("pn,bnc,bnd->bpcd", mask_PN, onehot_BNC, e_BND)
        protos_BPCD = sums_BPCD / jnp.maximum(counts_BPC, 1.0)[..., None]
        q_BPD = (e_BND if self.embed_query else x)[:, rows_P]
        scores_BPC = -jnp.sum((q_BPD[:, :, None, :] - protos_BPCD) ** 2, axis=-1)
        return padded_log_probs(scores_BPC, self.double_softmax)
