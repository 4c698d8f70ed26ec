"""Pair-wise metric-based tasks ("sim", docs/papers.md §2.2; optimal meta-learner: MatchNet).

Each task draws nc reference vectors per class, W[k, m] ~ N(0, I_d). An input x ~ N(0, sigma^2 I) gets the class
whose normalised reference vectors have the largest summed cosine-like similarity with x/||x||_2. The reference
normalises W by its L3 norm (`class_norm=3`, kept for faithfulness, docs/papers.md §8 item 2); `class_norm=2` is
the usual cosine. The label ignores ||x||, so sigma only rescales the inputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_bool, require_int
from tasks.base import register


def pairwise_labels(x_ND: jax.Array, class_vectors_CMD: jax.Array, class_norm: float = 3.0) -> jax.Array:
    """argmax_k sum_m <x/||x||_2, W_km/||W_km||_p>: x [..., N, d], W [..., C, nc, d] -> int32 [..., N]."""
    xhat_ND = x_ND / jnp.linalg.norm(x_ND, axis=-1, keepdims=True)
    what_CMD = class_vectors_CMD / jnp.linalg.norm(class_vectors_CMD, ord=class_norm, axis=-1, keepdims=True)
    score_NC = jnp.einsum("...nd,...cmd->...nc", xhat_ND, what_CMD)
    return jnp.argmax(score_NC, axis=-1).astype(jnp.int32)


@register("pairwise")
@dataclasses.dataclass(frozen=True)
class Pairwise(TaskFamily):
    """params: `class_vectors` float32 [B, C, nc, d].

    nc: reference vectors per class (the reference uses 1, 2 or 4 depending on the script, docs/papers.md §2.2).
        nc=0 reproduces umix.py's start=0 bug: every score is 0 and every label is class 0 (docs/papers.md §8 item 1).
    class_norm: the p of the norm that normalises W (3 = the reference, 2 = cosine).
    unit_inputs: return x/||x||_2 instead of x (the reference's "sim0" variant is
        pairwise(nc=1, class_norm=2, unit_inputs=True)).
    """

    nc: int = 1
    class_norm: float = 3.0
    unit_inputs: bool = False

    optimal_rule: ClassVar[str | None] = "matching"  # the MatchNet rule: summed cosines with each class's examples

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes is not None, "pairwise: num_classes must be an integer >= 2, got None")
        require_int(self.nc, "pairwise: nc", 0)  # 0 = umix.py's all-class-0 bug
        require(
            isinstance(self.class_norm, int | float) and not math.isnan(self.class_norm) and self.class_norm >= 1,
            f"pairwise: class_norm must be a number >= 1 (3 = reference, 2 = cosine), got {self.class_norm!r}",
        )
        require_bool(self.unit_inputs, "pairwise: unit_inputs")

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        return pairwise_labels(x, params["class_vectors"], self.class_norm)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        k_w, k_x = jax.random.split(key)
        w_BCMD = jax.random.normal(k_w, (batch, self.spec.classes, self.nc, self.d), jnp.float32)
        x_BND = self.sigma * jax.random.normal(k_x, (batch, n, self.d), jnp.float32)
        y_BN = self.labels(x_BND, {"class_vectors": w_BCMD})
        if self.unit_inputs:
            x_BND = x_BND / jnp.linalg.norm(x_BND, axis=-1, keepdims=True)
        return Episode(x=x_BND, y=y_BN, params={"class_vectors": w_BCMD})
