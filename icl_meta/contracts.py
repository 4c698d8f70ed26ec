"""The contracts everything hangs on: an Episode (a batch of tasks), a TaskFamily (what samples them), a Learner (what
predicts them, prequentially) and a DomainFamily (tasks that come in domains, for meta-level meta-learning).

Shape suffixes. An array's name ends with one capital letter per axis, `x_BND` = [tasks, examples, input dim]; each
letter means one thing everywhere in the project:

    A  anchors of a task                              M  reference vectors per class (pairwise tasks)
    B  tasks (a batch, or any set of them)            N  examples of a task sequence (positions 0..N-1)
    C  classes                                        O  output slots of a learner (2C for the ICL model, 1 regression)
    D  input dimension d                              P  query positions computed (a subset of 0..N-1)
    E  features per attention head                    Q  query points (of a grid; a task's held-out queries)
    F  frequencies of the rotary position code        R  bootstrap resamples
    G  side of a decision-region grid                 S  steps (of a scan, of SGD)
    H  attention heads                                T  every query of joint inference (the pool's, then Q)
    I  singular values of a context matrix            U  unlabeled examples (the pool of joint inference)
    J  jobs (training runs) of a study                V  vocabulary entries (tokens; the values of an attribute)
    K  nearest neighbours                             W  width of a token or of the residual stream
    L  tokens of one transformer sequence             X  latent features of an object (two-modality world)
                                                      Z  closed-form rules compared with a learner

A name may also end in a digit for an axis of fixed size (`has_image_BL1`, `values_3`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
from flax import struct

from icl_meta.errors import ConfigError, require_int, require_number

Array = jax.Array


class Episode(NamedTuple):
    """A batch of B tasks, each a sequence of N examples.

    x: [B, N, D] float32 inputs.
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

    @property
    def classes(self) -> int:
        """C, for a classification spec."""
        if self.num_classes is None:
            raise ConfigError("a regression task has no classes (num_classes=None)")
        return self.num_classes


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
    Classification outputs are per-class scores [B, N, O] with O >= C (log-probabilities for trainable
    learners); outputs C..O-1, if any, are never correct (the ICL model's padded label slots: O = 2C).
    The prediction is the argmax over all O outputs. Regression outputs are predictions [B, N].
    With `positions` (int [P]), only those positions are returned, [B, P, ...]; a learner may use it to skip work.
    `name` is set by the learner registry (`icl_meta.learners.register`). A learner whose prediction at position i
    also depends on the sequence length N (so cutting the sequence after i changes it) sets `truncation_invariant`
    False; the trainer's truncated loss passes (`TrainConfig.position_groups`) then refuse it.
    """

    name: ClassVar[str]

    def init(self, key: Array, spec: TaskSpec) -> Any: ...

    def predict(self, params: Any, x: Array, y: Array, positions: Array | None = None) -> Array: ...


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """Base of every task family: a frozen dataclass of hyper-parameters with a pure, jittable, vmappable
    `sample(key, batch, n) -> Episode`, deterministic in `key`, and the family's label rule `labels`.

    Common fields: `d` (input dim), `num_classes` (C; None for regression) and `sigma` (the input scale, which the
    distribution-shift experiments vary; see `with_sigma`). Subclasses add fields, implement `_sample` and `labels`,
    and register themselves by name (`tasks.register`), which sets `name`.
    """

    d: int = 2
    num_classes: int | None = 2
    sigma: float = 1.0

    name: ClassVar[str] = "?"
    # The first position in the reference code's training loss for this family (docs/papers.md section 4.2).
    reference_loss_start: ClassVar[int] = 0
    # The registered learner name of the family's optimal closed-form rule (e.g. "ncm") in its default setting, the
    # algorithm the paper pairs with it; None where no simple rule is. Variants can move the optimum (anchors add a
    # prior ncm ignores, noise makes ridge optimal for regression). The agreement analysis (icl_meta/agreement.py)
    # asks whether a learner agrees most with it. A name, not a learner: families import no learners.
    optimal_rule: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        require_int(self.d, f"{self.name}: d")
        require_int(self.num_classes, f"{self.name}: num_classes", 2, none_ok=True)
        require_number(self.sigma, f"{self.name}: sigma", above=0)

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(d=self.d, num_classes=self.num_classes)

    def sample(self, key: Array, batch: int, n: int) -> Episode:
        """B tasks of N examples each; pure and deterministic in `key`."""
        require_int(batch, f"{self.name}: batch")
        require_int(n, f"{self.name}: n")
        return self._sample(key, batch, n)

    def _sample(self, key: Array, batch: int, n: int) -> Episode:
        raise NotImplementedError

    def labels(self, x: Array, params: dict[str, Any]) -> Array:
        """The family's rule: the label of every input x [..., N, D] under task parameters `params` (an Episode's
        params, whose arrays carry the task axes of x without N: one task's, or a batch's) -> [..., N]. A sampled
        episode's labels follow it except where the family documents otherwise (anchors)."""
        raise ConfigError(f"task family {self.name!r} has no label rule (it does not define `labels`)")

    def with_sigma(self, sigma: float) -> TaskFamily:
        """The same family with input scale `sigma` (the distribution-shift knob, usable on any family)."""
        return dataclasses.replace(self, sigma=sigma)

    def hparams(self) -> dict[str, Any]:
        """The family's hyper-parameters as JSON-friendly values (for config.json)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, TaskFamily):
        return {"name": value.name, **value.hparams()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def family_fields(cls: type) -> list[tuple[str, str, Any]]:
    """(field, type, default) for each hyper-parameter of a family (or any dataclass) class."""
    hints = typing.get_type_hints(cls)
    return [(f.name, _type_name(hints.get(f.name, f.type)), f.default) for f in dataclasses.fields(cls)]


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


@runtime_checkable
class DomainFamily(Protocol):
    """A family whose tasks come in domains (meta-level meta-learning): `sample_domain(key)` draws one domain's
    parameters, `sample_tasks(key, domain, batch, n)` tasks of it, and `test_domains()` is the family of the
    unseen test domains."""

    name: ClassVar[str]

    @property
    def spec(self) -> TaskSpec: ...

    def sample_domain(self, key: Array) -> dict[str, Array]: ...

    def sample_tasks(self, key: Array, domain: dict[str, Array], batch: int, n: int) -> Episode: ...

    def test_domains(self) -> DomainFamily: ...


def is_domain_family(family: Any) -> bool:
    """Whether `family` has the two-level sampler M2-ICL needs (`sample_domain`, `sample_tasks`)."""
    return isinstance(family, DomainFamily)


__all__ = [
    "DomainFamily",
    "Episode",
    "Learner",
    "LearnerParams",
    "TaskFamily",
    "TaskSpec",
    "family_fields",
    "is_domain_family",
]
