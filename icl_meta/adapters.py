"""Low-rank adapters (LoRA) on any learner's weight matrices: W + A B on every leaf with two or more axes (the last
two are the matrix; leading axes, e.g. stacked layers, get their own factors). B starts at 0, so the adapted learner
is exactly the original one until the adapter is trained (Gadetsky et al.'s task encoder starts at the zero-shot
model). Works on any pytree of weights, so on every trainable learner of the suite.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from icl_meta.errors import ConfigError, require_int

Factors = list[dict[str, jax.Array] | None]  # one entry per weight leaf, in tree order; None: not adapted


def _weights(params: Any) -> Any:
    return params.weights if hasattr(params, "weights") else params


def lora_init(key: jax.Array, params: Any, rank: int) -> Factors:
    """Factors for every matrix of `params` (a LearnerParams or a pytree): A ~ N(0, 1/fan_in) [..., m, rank],
    B = 0 [..., rank, n]."""
    require_int(rank, "lora: rank")
    leaves = jax.tree_util.tree_leaves(_weights(params))
    if not any(leaf.ndim >= 2 for leaf in leaves):
        raise ConfigError("lora: the learner has no weight matrices to adapt (a closed-form learner has no weights)")
    keys = jax.random.split(key, len(leaves))
    factors: Factors = []
    for k, leaf in zip(keys, leaves, strict=True):
        if leaf.ndim < 2:
            factors.append(None)
            continue
        *lead, m, n = leaf.shape
        a = jax.random.normal(k, (*lead, m, rank), leaf.dtype) / jnp.sqrt(m).astype(leaf.dtype)
        factors.append({"a": a, "b": jnp.zeros((*lead, rank, n), leaf.dtype)})
    return factors


def lora_apply(params: Any, factors: Factors) -> Any:
    """`params` with W + A B on every adapted matrix (the same type: a LearnerParams stays one)."""
    weights = _weights(params)
    leaves, treedef = jax.tree_util.tree_flatten(weights)
    if len(leaves) != len(factors):
        raise ConfigError(f"lora: {len(factors)} factors for {len(leaves)} weight leaves (built for other weights)")
    adapted = [leaf if f is None else leaf + f["a"] @ f["b"] for leaf, f in zip(leaves, factors, strict=True)]
    new = jax.tree_util.tree_unflatten(treedef, adapted)
    return params.replace(weights=new) if hasattr(params, "weights") else new
