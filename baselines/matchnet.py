"""Matching network (PAPER.md section 5.1): a learned embedding g, and per-class sums of query-support similarities.

    g = Linear(d, h) -> LeakyReLU(0.01) -> Linear(h, d)          (the reference's MatchNet(d, d, d): h = d)
    score_k(x_i) = sum over context j < i with y_j = k of sim(g(x_i), g(x_j))

No softmax over the support (a sum, not attention). sim is the cosine (umix.py and test.py, the canonical choice of
PAPER.md section 11) or the plain dot product (the *_meta.py training scripts). The empty context scores 0 for every
class, so the prediction is class 0, as in the reference.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from baselines import register
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
from icl_meta.episode import LearnerParams, TaskSpec
from icl_meta.errors import require

Array = jax.Array
SIMILARITIES = ("cosine", "dot")


@register("matchnet")
@dataclasses.dataclass(frozen=True)
class MatchNet:
    similarity: str = "cosine"  # "dot": the *_meta.py scripts' version
    double_softmax: bool = True  # the reference's loss quirk (PAPER.md section 5.4); False: plain log-softmax
    hidden: int | None = None  # embedding MLP hidden width; None: d, as the reference

    name: ClassVar[str] = "matchnet"

    def __post_init__(self) -> None:
        require(
            self.similarity in SIMILARITIES,
            f"matchnet: similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}",
        )
        require(isinstance(self.double_softmax, bool), "matchnet: double_softmax must be True or False")
        require_hidden(self.name, self.hidden)

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        return LearnerParams({"embed": init_mlp(key, (spec.d, self.hidden or spec.d, spec.d))}, spec)

    def predict(self, params: LearnerParams, x: Array, y: Array, positions: Array | None = None) -> Array:
        """Log-probabilities over the reference's 2C slots [B, K, 2C] (slots C..2C-1 padded, never chosen)."""
        spec = params.spec
        require_input_dim(self.name, spec, x)
        n = x.shape[1]
        rows_K = query_rows(n, positions)
        e_BND = mlp(params.weights["embed"], x)
        if self.similarity == "cosine":
            e_BND = l2_normalize(e_BND)
        sim_BKN = jnp.einsum("bkd,bnd->bkn", e_BND[:, rows_K], e_BND) * context_mask(rows_K, n)[None]
        scores_BKC = jnp.einsum("bkn,bnc->bkc", sim_BKN, jax.nn.one_hot(y, spec.num_classes, dtype=jnp.float32))
        return padded_log_probs(scores_BKC, self.double_softmax)
