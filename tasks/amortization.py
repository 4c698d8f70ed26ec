"""Amortization-based tasks ("ave", docs/papers.md §2.3; optimal meta-learner: CNP).

Each task draws a centre w ~ N(0, I_d) and inputs x = w + sigma * eps. The label depends on
s = sum_j (x_j - w_j) / sqrt(d), a projection on the FIXED normal (1,...,1)/sqrt(d) through the task's centre, so
the best in-context algorithm estimates w by averaging the context inputs. For C=2 this is the reference exactly
(class 0 iff sum(x - w) > 0); for C > 2 the real line is cut at standard-normal quantiles, which makes the classes
balanced at sigma=1. The thresholds do not depend on sigma: a sigma shift moves the inputs, not the rule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from statistics import NormalDist
from typing import ClassVar

import jax
import jax.numpy as jnp

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_choice
from tasks.base import register

ANCHORS = ("none", "flipped", "consistent")
ANCHOR_OFFSET = 0.1  # the reference's anchors: x ~ N(w -+ 0.1, 0.1^2 I)


@functools.cache
def amortization_thresholds(num_classes: int) -> tuple[float, ...]:
    """t_1 > ... > t_{C-1} with t_k = Phi^-1(1 - k/C); class k iff s in (t_{k+1}, t_k] (t_0 = inf, t_C = -inf)."""
    return tuple(NormalDist().inv_cdf(1.0 - k / num_classes) for k in range(1, num_classes))


def amortization_labels(x_ND: jax.Array, center_D: jax.Array, num_classes: int) -> jax.Array:
    """The label rule. x [..., d] and center [..., d] broadcast against each other (so x [N, d] with a centre [d],
    x [B, N, d] with a centre [B, 1, d], or one centre estimate per query [B, N, d]); returns int32 [...]."""
    s = jnp.sum(x_ND - center_D, axis=-1) / math.sqrt(x_ND.shape[-1])
    thresholds = jnp.asarray(amortization_thresholds(num_classes), jnp.float32)
    # The class is the number of thresholds at or above s (t is decreasing); for C=2, t_1 = 0 and s = 0 is class 1.
    return jnp.sum(s[..., None] <= thresholds, axis=-1).astype(jnp.int32)


@register("amortization")
@dataclasses.dataclass(frozen=True)
class Amortization(TaskFamily):
    """params: `center` float32 [B, d].

    anchors (C=2 only): positions 0 and 1 hold x0 ~ N(w - 0.1, 0.1^2 I) and x1 ~ N(w + 0.1, 0.1^2 I), swapped by
        one coin per batch. "flipped" labels x0 class 0 and x1 class 1, which contradicts the rule (the reference's
        umix.py / test.py `sample_ave`, docs/papers.md §8 item 3); "consistent" labels them by the rule; "none" =
        `sample_bin`.
    """

    anchors: str = "none"

    optimal_rule: ClassVar[str | None] = "averaging"  # estimate the centre by the context mean, then the task's rule

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes is not None, "amortization: num_classes must be an integer >= 2, got None")
        require_choice(self.anchors, "amortization: anchors", ANCHORS)
        require(
            self.anchors == "none" or self.num_classes == 2,
            f"amortization: anchors={self.anchors!r} needs num_classes=2 (got {self.num_classes}); use anchors='none'",
        )

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        """The side of the task's centre along (1, ..., 1) (flipped anchors, when on, contradict it)."""
        return amortization_labels(x, params["center"][..., None, :], self.spec.classes)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        d = self.d
        k_w, k_eps, k_anchor, k_coin = jax.random.split(key, 4)
        w_BD = jax.random.normal(k_w, (batch, d), jnp.float32)
        x_BND = w_BD[:, None, :] + self.sigma * jax.random.normal(k_eps, (batch, n, d), jnp.float32)

        m = min(2, n)  # anchor positions (a 1-point sequence keeps the first anchor only)
        if self.anchors != "none":
            shift_2 = jnp.array([-ANCHOR_OFFSET, ANCHOR_OFFSET], jnp.float32)
            label_2 = jnp.array([0, 1], jnp.int32)
            swap = jax.random.bernoulli(k_coin)  # one coin for the whole batch, as the reference
            shift_2, label_2 = jnp.where(swap, shift_2[::-1], shift_2), jnp.where(swap, label_2[::-1], label_2)
            noise_B2D = ANCHOR_OFFSET * jax.random.normal(k_anchor, (batch, 2, d), jnp.float32)
            anchor_B2D = w_BD[:, None, :] + shift_2[None, :, None] + noise_B2D
            x_BND = x_BND.at[:, :m].set(anchor_B2D[:, :m])

        y_BN = self.labels(x_BND, {"center": w_BD})
        if self.anchors == "flipped":
            y_BN = y_BN.at[:, :m].set(label_2[:m])
        return Episode(x=x_BND, y=y_BN, params={"center": w_BD})
