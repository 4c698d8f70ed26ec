"""The inner loop of gradient-based meta-learning, for any loss and parameter pytree: MAML's adaptation to a context
(`baselines.maml`), M2-ICL's adaptation to a domain (`icl_meta.metameta`) and the fine-tuning of its evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from icl_meta.errors import require


def adapt(
    loss: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    *,
    steps: int,
    lr: float,
    first_order: bool = False,
    per_step: bool = False,
) -> tuple[Any, jax.Array]:
    """`steps` SGD steps `params <- params - lr * grad loss(params, batch)` under lax.scan.

    With `per_step`, every leaf of `batch` has a leading [steps] axis and step k uses `batch[k]` (minibatch SGD;
    the batches are the scan's xs); otherwise every step uses the whole `batch` (full-batch SGD, MAML's inner loop).
    The result is differentiable in `params` through every step (second-order MAML); with `first_order` each inner
    gradient is a constant (first-order MAML: d adapted / d params = identity). Returns the adapted parameters and
    the loss before each step, [S].
    """
    if per_step:
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(batch)}
        require(sizes == {steps}, f"adapt: per_step batches need a leading axis of steps={steps}, got {sizes}")

    def sgd_step(p: Any, step_batch: Any) -> tuple[Any, jax.Array]:
        value, grads = jax.value_and_grad(loss)(p, step_batch if per_step else batch)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda w, g: w - lr * g, p, grads), value

    return jax.lax.scan(sgd_step, params, batch if per_step else None, length=steps)
