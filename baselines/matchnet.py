"""Matching network (docs/papers.md §5.1): a learned embedding g, and per-class sums of query-support similarities.

    g = Linear(d, h) -> LeakyReLU(0.01) -> Linear(h, d)          (the reference's MatchNet(d, d, d): h = d)
    score_k(x_i) = sum over context j < i with y_j = k of sim(g(x_i), g(x_j))

No softmax over the support (a sum, not attention). sim is the cosine (umix.py and test.py, the canonical choice of
docs/papers.md §8) or the plain dot product (the *_meta.py training scripts). The empty context scores 0 for every
class, so the prediction is class 0, as in the reference.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines.context import (
    context_mask,
    l2_normalize,
    padded_log_probs,
    query_rows,
    require_classification,
    require_hidden,
    require_input_dim,
)
from baselines.mlp import init_mlp, mlp
from icl_meta.contracts import Learner, LearnerParams, TaskSpec
from icl_meta.errors import require_bool, require_choice
from icl_meta.learners import register

Array = jax.Array
SIMILARITIES = ("cosine", "dot")


@register("matchnet")
@dataclasses.dataclass(frozen=True)
class MatchNet(Learner):
    supports: ClassVar[tuple[str, ...]] = ("classification",)  # a capability (icl_meta.learners)

    similarity: str = "cosine"  # "dot": the *_meta.py scripts' version
    double_softmax: bool = True  # the reference's loss quirk (docs/papers.md section 5.4); False: plain log-softmax
    hidden: int | None = None  # embedding MLP hidden width; None: d, as the reference

    def __post_init__(self) -> None:
        require_choice(self.similarity, "matchnet: similarity", SIMILARITIES)
        require_bool(self.double_softmax, "matchnet: double_softmax")
        require_hidden(self.name, self.hidden)

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        return LearnerParams({"embed": init_mlp(key, (spec.d, self.hidden or spec.d, spec.d))}, spec)

    def predict(self, params: LearnerParams, x: Array, y: Array, positions: Array | None = None) -> Array:
        """Log-probabilities over the reference's 2C slots [B, P, 2C] (slots C..2C-1 padded, never chosen)."""
        spec = params.spec
        require_input_dim(self.name, spec, x)
        n = x.shape[1]
        rows_P = query_rows(n, positions)
        e_BND = mlp(params.weights["embed"], x)
        if self.similarity == "cosine":
            e_BND = l2_normalize(e_BND)
        sim_BPN = jnp.einsum("bpd,bnd->bpn", e_BND[:, rows_P], e_BND) * context_mask(rows_P, n)[None]
        scores_BPC = jnp.einsum("bpn,bnc->bpc", sim_BPN, jax.nn.one_hot(y, spec.classes, dtype=jnp.float32))
        return padded_log_probs(scores_BPC, self.double_softmax)
