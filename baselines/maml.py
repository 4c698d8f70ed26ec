"""Model-agnostic meta-learning (Finn et al., 2017) behind the prequential Learner protocol.

The learned quantity is the initialisation theta of a small MLP classifier. For the query at position i the
classifier is adapted to the context (x_j, y_j), j < i, by `inner_steps` plain SGD steps on the mean cross-entropy
over the context, then applied to x_i:

    theta_i = SGD^k(theta; context j < i),     out_i = log_softmax(f(theta_i, x_i))

The empty context leaves theta unchanged. Adaptation is vmapped over positions and tasks, so one `predict` call
gives the whole curve, and differentiating `predict` gives the second-order meta-gradient (first-order: the inner
gradients are constants). `adapt` (`icl_meta.inner_loop`) is the inner loop, shared with meta-level meta-learning
(M2-ICL, `icl_meta.metameta`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from baselines.context import context_mask, query_rows, require_classification, require_input_dim
from baselines.mlp import init_mlp, mlp
from icl_meta.contracts import Learner, LearnerParams, TaskSpec
from icl_meta.errors import require_bool, require_int, require_number
from icl_meta.inner_loop import adapt
from icl_meta.learners import register

Array = jax.Array
CURVE_PASSES = 4  # passes of a whole-curve prediction (MAML.predict)


def context_cross_entropy(layers: Any, batch: tuple[Array, Array, Array]) -> Array:
    """Mean cross-entropy of the MLP over the context examples (mask_N = 1), 0 for an empty context."""
    x_ND, y_N, mask_N = batch
    logp_NC = jax.nn.log_softmax(mlp(layers, x_ND, jax.nn.relu), axis=-1)
    nll_N = -jnp.take_along_axis(logp_NC, y_N[:, None], axis=-1)[:, 0]
    return jnp.sum(mask_N * nll_N) / jnp.maximum(mask_N.sum(), 1.0)


@register("maml")
@dataclasses.dataclass(frozen=True)
class MAML(Learner):
    # Capabilities (icl_meta.learners): classification only; an adaptation per loss position
    supports: ClassVar[tuple[str, ...]] = ("classification",)
    samples_loss_positions: ClassVar[bool] = True

    hidden: int = 32  # width of each hidden layer (ReLU)
    hidden_layers: int = 1
    inner_steps: int = 5
    inner_lr: float = 0.5
    first_order: bool = False  # True: first-order MAML (no second derivatives)

    def __post_init__(self) -> None:
        for field in ("hidden", "hidden_layers", "inner_steps"):
            value = getattr(self, field)
            require_int(value, f"maml: {field}")
        require_number(self.inner_lr, "maml: inner_lr", above=0)
        require_bool(self.first_order, "maml: first_order")

    def init(self, key: Array, spec: TaskSpec) -> LearnerParams:
        require_classification(self.name, spec)
        sizes = (spec.d, *[self.hidden] * self.hidden_layers, spec.classes)
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
        """Log-probabilities over the C classes [B, P, C].

        The whole curve (positions None) is computed in `CURVE_PASSES` passes over consecutive positions, each on
        the sequence cut after its last position: the adaptation at position i sees examples j < i only, so the
        cut examples would only be masked out (exact; 5/8 of the work for 4 passes)."""
        require_input_dim(self.name, params.spec, x)
        n = x.shape[1]
        if positions is None and n >= 2 * CURVE_PASSES:
            edges = [0, *(round(n * (g + 1) / CURVE_PASSES) for g in range(CURVE_PASSES))]
            passes = [self.predict(params, x[:, :b], y[:, :b], jnp.arange(a, b)) for a, b in itertools.pairwise(edges)]
            return jnp.concatenate(passes, axis=1)
        rows_P = query_rows(n, positions)

        def one(x_ND: Array, y_N: Array, mask_N: Array, xq_D: Array) -> Array:
            layers = self.adapted(params, x_ND, y_N, mask_N)
            return jax.nn.log_softmax(mlp(layers, xq_D, jax.nn.relu), axis=-1)

        over_positions = jax.vmap(one, in_axes=(None, None, 0, 0))
        over_tasks = jax.vmap(over_positions, in_axes=(0, 0, None, 0))
        return over_tasks(x, y, context_mask(rows_P, n), x[:, rows_P])
