"""Mixed setting ("umix", docs/papers.md §2.6): a batch of tasks drawn from several families.

The batch is split deterministically into contiguous blocks, one per component, of sizes given by the largest
remainder of B * w_j / sum(w) (equal thirds when B is a multiple of 3, as the reference), and is NOT shuffled (as the
reference). Block j is sampled with fold_in(key, j).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import ConfigError, require
from tasks.base import get, register


def block_sizes(batch: int, weights: tuple[float, ...]) -> tuple[int, ...]:
    """Largest-remainder apportionment of `batch` by `weights` (sums to exactly `batch`; ties go to the first)."""
    quota = [batch * w / sum(weights) for w in weights]
    sizes = [math.floor(q) for q in quota]
    by_remainder = sorted(range(len(weights)), key=lambda j: -(quota[j] - sizes[j]))  # stable: first wins ties
    for j in by_remainder[: batch - sum(sizes)]:
        sizes[j] += 1
    return tuple(sizes)


@register("mixture")
@dataclasses.dataclass(frozen=True)
class Mixture(TaskFamily):
    """params: `component` int32 [B] (the component of each task); `parts`: tuple of each component's params,
    part j covering the rows where component == j, in order.

    components: family names (built with the mixture's d, num_classes and sigma), TaskFamily instances (kept; they
        must match d and num_classes), or {"name": ..., **hparams} dicts (what `hparams()` writes to config.json).
        The mixture's sigma is authoritative: every component takes it, so a sigma shift reaches all of them.
        The default is the paper's canonical training mix (docs/papers.md §8): proto without anchors, pairwise
        nc=1, amortization without anchors; use instances for the reference's variants (e.g. flipped anchors).
    weights: positive relative sizes of the blocks, one per component.
    """

    components: tuple = ("prototype", "pairwise", "amortization")
    weights: tuple = (1.0, 1.0, 1.0)

    reference_loss_start: ClassVar[int] = 2  # umix.py with the canonical start=2 (docs/papers.md section 8)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.components, tuple | list) and len(self.components) >= 1,
            f"mixture: components must be a non-empty list of family names or instances, got {self.components!r}",
        )
        object.__setattr__(self, "components", tuple(self._build(c) for c in self.components))
        require(
            isinstance(self.weights, tuple | list)
            and len(self.weights) == len(self.components)
            and all(isinstance(w, int | float) and 0 < w < math.inf for w in self.weights),
            f"mixture: weights must be {len(self.components)} finite numbers > 0 (one per component), "
            f"got {self.weights!r}",
        )
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def _build(self, component: Any) -> TaskFamily:
        if isinstance(component, str):
            return get(component, d=self.d, num_classes=self.num_classes, sigma=self.sigma)
        if isinstance(component, dict) and isinstance(component.get("name"), str):
            hparams = {k: v for k, v in component.items() if k != "name"}
            defaults = {"d": self.d, "num_classes": self.num_classes, "sigma": self.sigma}
            component = get(component["name"], **{**defaults, **hparams})
        require(
            isinstance(component, TaskFamily),
            f"mixture: each component must be a family name, a TaskFamily or a {{'name': ...}} dict, got {component!r}",
        )
        require(
            component.d == self.d and component.num_classes == self.num_classes,
            f"mixture: component {component.name} has d={component.d}, num_classes={component.num_classes}; "
            f"the mixture needs d={self.d}, num_classes={self.num_classes}",
        )
        return component if component.sigma == self.sigma else component.with_sigma(self.sigma)

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        raise ConfigError("mixture: its tasks follow their components' rules; ask a component for `labels`")

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        sizes = block_sizes(batch, self.weights)
        xs, ys, parts = [], [], []
        for j, (family, size) in enumerate(zip(self.components, sizes, strict=True)):  # over components, not tasks
            # An empty block is sampled with one task and cut to zero rows, so every part has the same structure.
            ep = family.sample(jax.random.fold_in(key, j), max(size, 1), n)
            xs.append(ep.x[:size])
            ys.append(ep.y[:size])
            parts.append(jax.tree.map(lambda a, size=size: a[:size], ep.params))
        component_B = jnp.asarray(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))
        params = {"component": component_B, "parts": tuple(parts)}
        return Episode(x=jnp.concatenate(xs), y=jnp.concatenate(ys), params=params)
