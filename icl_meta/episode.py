"""The two contracts everything hangs on: an Episode (a batch of tasks) and a Learner."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax
from flax import struct

Array = jax.Array


class Episode(NamedTuple):
    """A batch of B tasks, each a sequence of N examples.

    x: [B, N, d] float32 inputs.
    y: [B, N] int32 class ids (classification) or float32 targets (regression).
    params: dict of the task parameters that generated the batch (documented per family), so that tests can
        recompute every label and oracle algorithms can use the truth.
    """

    x: Array
    y: Array
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a learner must know about a task family: input dim and number of classes (None for regression)."""

    d: int
    num_classes: int | None

    @property
    def is_regression(self) -> bool:
        return self.num_classes is None


@struct.dataclass
class LearnerParams:
    """A trainable learner's weights (a pure nested dict of arrays) with the task spec they were built for.

    The spec is static (not a leaf), so `predict` knows d and C, and a checkpoint of another spec fails to restore.
    """

    weights: dict
    spec: TaskSpec = struct.field(pytree_node=False)


class Learner(Protocol):
    """A prequential learner: the output at position i uses only examples j < i and x_i.

    One `predict` call therefore yields the whole metric-vs-context-size curve (context sizes 0..N-1).
    Classification outputs are per-class scores [B, N, C'] with C' >= C (log-probabilities for trainable
    learners); outputs C..C'-1, if any, are never correct (the ICL model's padded label slots: C' = 2C).
    The prediction is the argmax over all C' outputs. Regression outputs are predictions [B, N].
    With `positions` (int[K]), only those positions are returned,
    [B, K, ...]; a learner may use it to skip work.
    """

    def init(self, key: Array, spec: TaskSpec) -> Any: ...

    def predict(self, params: Any, x: Array, y: Array, positions: Array | None = None) -> Array: ...
