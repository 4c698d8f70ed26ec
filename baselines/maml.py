"""Model-agnostic meta-learning (Finn et al., 2017) behind the prequential Learner protocol.

The learned quantity is the initialisation theta of a small MLP classifier. For the query at position i the
classifier is adapted to the context (x_j, y_j), j < i, by `inner_steps` plain SGD steps on the mean cross-entropy
over the context, then applied to x_i:

    theta_i = SGD^k(theta; context j < i),     out_i = log_softmax(f(theta_i, x_i))

The empty context leaves theta unchanged. Adaptation is vmapped over positions and tasks, so one `predict` call
gives the whole curve, and differentiating `predict` gives the second-order meta-gradient (first-order: the inner
gradients are constants). `adapt` is the inner-loop core, written for any loss and parameter pytree, so that
meta-level meta-learning (M2-ICL, `icl_meta.metameta`) reuses it for the ICL transformer, both as its inner loop and,
with one minibatch per step, as the fine-tuning of the adaptation evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from baselines import register
from baselines.context import context_mask, query_rows, require_classification, require_input_dim
from baselines.mlp import init_mlp, mlp
from icl_meta.episode import LearnerParams, TaskSpec
from icl_meta.errors import is_int, require

Array = jax.Array


def adapt(
    loss: Callable[[Any, Any], Array],
    params: Any,
    batch: Any,
    *,
    steps: int,
    lr: float,
    first_order: bool = False,
    per_step: bool = False,
) -> tuple[Any, Array]:
    """`steps` SGD steps `params <- params - lr * grad loss(params, batch)` under lax.scan.

    With `per_step`, every leaf of `batch` has a leading [steps] axis and step k uses `batch[k]` (minibatch SGD;
    the batches are the scan's xs); otherwise every step uses the whole `batch` (full-batch SGD, MAML's inner loop).
    The result is differentiable in `params` through every step (second-order MAML); with `first_order` each inner
    gradient is a constant (first-order MAML: d adapted / d params = identity). Returns the adapted parameters and
    the loss before each step, [steps].
    """
    if per_step:
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(batch)}
        require(sizes == {steps}, f"adapt: per_step batches need a leading axis of steps={steps}, got {sizes}")

    def sgd_step(p: Any, step_batch: Any) -> tuple[Any, Array]:
        value, grads = jax.value_and_grad(loss)(p, step_batch if per_step else batch)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda w, g: w - lr * g, p, grads), value

    return jax.lax.scan(sgd_step, params, batch if per_step else None, length=steps)


def context_cross_entropy(layers: Any, batch: tuple[Array, Array, Array]) -> Array:
    """Mean cross-entropy of the MLP over the context examples (mask_N = 1), 0 for an empty context."""
    x_ND, y_N, mask_N = batch
    logp_NC = jax.nn.log_softmax(mlp(layers, x_ND, jax.nn.relu), axis=-1)
    nll_N = -jnp.take_along_axis(logp_NC, y_N[:, None], axis=-1)[:, 0]
    return jnp.sum(mask_N * nll_N) / jnp.maximum(mask_N.sum(), 1.0)


@register("maml")
@dataclasses.dataclass(frozen=True)
class MAML:
    hidden: int = 32  # width of each hidden layer (ReLU)
    hidden_layers: int = 1
    inner_steps: int = 5
    inner_lr: float = 0.5
    first_order: bool = False  # True: first-order MAML (no second derivatives)

    name: ClassVar[str] = "maml"

    def __post_init__(self) -> None:
        for field in ("hidden", "hidden_layers", "inner_steps"):
            value = getattr(self, field)
            require(is_int(value) and value >= 1, f"maml: {field} must be an integer >= 1, got {value!r}")
        require(
            isinstance(self.inner_lr, int | float) and math.isfinite(self.inner_lr) and self.inner_lr > 0,
            f"maml: inner_lr must be a finite number > 0, got {self.inner_lr!r}",
        )
        require(isinstance(self.first_order, bool), "maml: first_order must be True or False")

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        sizes = (spec.d, *[self.hidden] * self.hidden_layers, spec.num_classes)
        return LearnerParams({"mlp": init_mlp(key, sizes)}, spec)

    def adapted(self, params: LearnerParams, x_ND: Array, y_N: Array, mask_N: Array) -> Any:
        """The MLP layers after adaptation to the examples of one task where mask_N = 1."""
        layers, _ = adapt(
            context_cross_entropy,
            params.weights["mlp"],
            (x_ND, y_N, mask_N),
            steps=self.inner_steps,
            lr=self.inner_lr,
            first_order=self.first_order,
        )
        return layers

    def predict(self, params: LearnerParams, x: Array, y: Array, positions: Array | None = None) -> Array:
        """Log-probabilities over the C classes [B, K, C]."""
        require_input_dim(self.name, params.spec, x)
        n = x.shape[1]
        rows_K = query_rows(n, positions)

        def one(x_ND: Array, y_N: Array, mask_N: Array, xq_D: Array) -> Array:
            layers = self.adapted(params, x_ND, y_N, mask_N)
            return jax.nn.log_softmax(mlp(layers, xq_D, jax.nn.relu), axis=-1)

        over_positions = jax.vmap(one, in_axes=(None, None, 0, 0))
        over_tasks = jax.vmap(over_positions, in_axes=(0, 0, None, 0))
        return over_tasks(x, y, context_mask(rows_K, n), x[:, rows_K])
