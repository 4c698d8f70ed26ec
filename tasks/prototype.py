"""Class-prototype metric-based tasks ("proto", docs/papers.md §2.1; optimal meta-learner: ProtoNet).

Each task draws C prototypes W_k ~ N(0, I_d). Inputs are generated in a balanced way around them
(x = W_k + sigma * eps, ceil(N/C) points per prototype), and labelled by the NEAREST prototype, which is not
always the generating one (about 79% agreement for d=2, C=2, sigma=1).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_bool, require_choice
from tasks.base import register

PERMUTATIONS = ("shared", "per_task")


def prototype_labels(x_ND: jax.Array, prototypes_CD: jax.Array) -> jax.Array:
    """Index of the nearest prototype: x [..., N, d], prototypes [..., C, d] -> int32 [..., N]."""
    dist_NC = jnp.sum((x_ND[..., :, None, :] - prototypes_CD[..., None, :, :]) ** 2, axis=-1)
    return jnp.argmin(dist_NC, axis=-1).astype(jnp.int32)


@register("prototype")
@dataclasses.dataclass(frozen=True)
class Prototype(TaskFamily):
    """params: `prototypes` float32 [B, C, d]; `generating_class` int32 [B, N] (the prototype each x was drawn from).

    anchors: positions 0..C-1 hold one fresh sample per prototype, labelled by its generating class, in an order
        given by one random permutation of the classes per batch (test.py's `sample_proto`; for C=2 its coin).
    permutation: "shared" = one permutation of the N positions for the whole batch (the reference), so a position
        has the same generating class in every task; "per_task" = each task its own permutation.
    """

    anchors: bool = False
    permutation: str = "shared"

    reference_loss_start: ClassVar[int] = 2  # uproto.py trains on positions 2..49
    optimal_rule: ClassVar[str | None] = "ncm"  # the ProtoNet rule: class means of the context, nearest wins

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes is not None, "prototype: num_classes must be an integer >= 2, got None")
        require_bool(self.anchors, "prototype: anchors")
        require_choice(self.permutation, "prototype: permutation", PERMUTATIONS)

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        """The nearest prototype (anchors, when on, are labelled by their generating class instead)."""
        return prototype_labels(x, params["prototypes"])

    def draw_prototypes(self, key: jax.Array, batch: int) -> jax.Array:
        """The C prototypes of each of `batch` tasks, [B, C, d]: W_k ~ N(0, I_d)."""
        return jax.random.normal(key, (batch, self.spec.classes, self.d), jnp.float32)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        C, d = self.spec.classes, self.d
        k_w, k_perm, k_eps, k_anchor_eps, k_anchor_order = jax.random.split(key, 5)
        w_BCD = self.draw_prototypes(k_w, batch)

        # Class-interleaved order (rep, class) truncated to N puts class j % C at position j; permuting the positions
        # gives position i the class perm[i] % C.
        if self.permutation == "shared":
            perm_BN = jnp.broadcast_to(jax.random.permutation(k_perm, n), (batch, n))
        else:
            perm_BN = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_perm, batch))
        gen_BN = (perm_BN % C).astype(jnp.int32)

        center_BND = jnp.take_along_axis(w_BCD, gen_BN[..., None], axis=1)
        x_BND = center_BND + self.sigma * jax.random.normal(k_eps, (batch, n, d), jnp.float32)
        y_BN = self.labels(x_BND, {"prototypes": w_BCD})

        if self.anchors:
            m = min(C, n)  # a sequence shorter than C keeps the first anchors only
            order_A = jax.random.permutation(k_anchor_order, C)[:m].astype(jnp.int32)
            anchor_BAD = w_BCD[:, order_A] + self.sigma * jax.random.normal(k_anchor_eps, (batch, m, d), jnp.float32)
            x_BND = x_BND.at[:, :m].set(anchor_BAD)
            gen_BN = gen_BN.at[:, :m].set(order_A)
            y_BN = y_BN.at[:, :m].set(order_A)  # anchors carry their generating class, not the nearest prototype

        return Episode(x=x_BND, y=y_BN, params={"prototypes": w_BCD, "generating_class": gen_BN})
