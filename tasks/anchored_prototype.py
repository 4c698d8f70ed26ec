"""Prototype tasks around global label anchors: a learner trained on them has a zero-shot prior (docs/papers.md
§9.2, "anchored prototypes"), as a language model has for named labels.

Every task of the family shares C label anchors a_c (fixed by `anchor_seed`, pairwise `anchor_distance` apart). A task
moves them: its prototypes are mu_c = R a_c + shift * delta_c, delta_c ~ N(0, I_d), with R a random rotation near the
identity (`rotation` = 0: none). Inputs are drawn around the prototypes and labelled by the nearest one, as in the
`prototype` family (this class reuses its sampler; only the prototypes differ). Class c therefore "means" the region
near a_c in every task: x alone predicts its label better than chance, and a task's own examples predict it better.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.errors import require_int, require_number
from tasks.base import register
from tasks.prototype import Prototype


@register("anchored_prototype")
@dataclasses.dataclass(frozen=True)
class AnchoredPrototype(Prototype):
    """params: as `prototype` (`prototypes` float32 [B, C, d], `generating_class` int32 [B, N]).

    anchor_seed: the seed of the C global anchors (the family's "label names").
    anchor_distance: the distance between any two anchors (C <= d: exactly; C > d: on average).
    shift: std of each prototype's offset from its (rotated) anchor; the larger, the weaker the zero-shot prior.
    rotation: scale of the random rotation per task: the Cayley transform of (G - G^T) / 2 with G ~ rotation N(0, 1)
        entries (about 2 x rotation / sqrt(2) radians per plane); 0 = none.
    permutation: "per_task" by default (each task its own order of generating classes).
    """

    d: int = 8
    num_classes: int | None = 3
    permutation: str = "per_task"
    anchor_seed: int = 0
    anchor_distance: float = 3.0
    shift: float = 1.0
    rotation: float = 0.0

    # Still the prototype family's rule; the anchors add a zero-shot prior that ncm ignores.
    optimal_rule: ClassVar[str | None] = "ncm"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int(self.anchor_seed, "anchored_prototype: anchor_seed", 0)
        require_number(self.anchor_distance, "anchored_prototype: anchor_distance", above=0)
        require_number(self.shift, "anchored_prototype: shift", at_least=0)
        require_number(self.rotation, "anchored_prototype: rotation", at_least=0)

    def label_anchors(self) -> np.ndarray:
        """The C global anchors, float32 [C, d]: orthonormal directions scaled to `anchor_distance` apart (C <= d),
        else Gaussian directions scaled to that distance on average. Fixed by `anchor_seed` alone."""
        C, d = self.spec.classes, self.d
        g_DC = np.random.default_rng(self.anchor_seed).normal(size=(d, C))
        if C <= d:
            q_DC, r_CC = np.linalg.qr(g_DC)
            directions_CD = (q_DC * np.sign(np.diag(r_CC))).T  # the sign fix makes the QR unique
        else:
            directions_CD = g_DC.T / np.sqrt(d)
        return (self.anchor_distance / np.sqrt(2.0) * directions_CD).astype(np.float32)

    def draw_prototypes(self, key: jax.Array, batch: int) -> jax.Array:
        """mu_c = R a_c + shift * delta_c for each of `batch` tasks, [B, C, d]."""
        C, d = self.spec.classes, self.d
        k_rot, k_shift = jax.random.split(key)
        anchors_CD = jnp.asarray(self.label_anchors())
        # Cayley transform of a random skew-symmetric matrix: an exact rotation, the identity at rotation = 0.
        g_BDD = self.rotation * jax.random.normal(k_rot, (batch, d, d), jnp.float32)
        skew_BDD = (g_BDD - jnp.swapaxes(g_BDD, 1, 2)) / 2.0
        eye_DD = jnp.eye(d, dtype=jnp.float32)
        rot_BDD = jnp.linalg.solve(eye_DD + skew_BDD, eye_DD - skew_BDD)
        rotated_BCD = jnp.einsum("bij,cj->bci", rot_BDD, anchors_CD)
        return rotated_BCD + self.shift * jax.random.normal(k_shift, (batch, C, d), jnp.float32)
