"""Every learner by name, and what a learner can do.

The ICL transformer registers itself as "icl"; the meta-learners and closed-form algorithms of `baselines` (or of any
plugin or `--import`ed module) register with `@register("name")`, and the registry finds them
(`icl_meta.registry.load_plugins`). `build(name, **hparams)` makes one, `to_config` / `from_config` write and read it
in config.json.

Capabilities are class attributes, read with `capability(learner, name)`; a learner that does not set one has the
default of `CAPABILITIES`, so a learner from outside the repository works in every tool without declaring any.
Tools ask for a capability, never for a learner's name.

Rule sets: `rules(kind, spec)` gives the closed-form learners of a kind for tasks of `spec` ("references": drawn
beside every trained learner; "agreement": what a learner's predictions are compared with), as registered by
`register_rules(kind)` (the closed-form rules of `baselines` register both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from icl_meta import transformer  # noqa: F401  (the ICL transformer registers itself as "icl")
from icl_meta.contracts import Learner, TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.registry import LEARNERS, load_plugins

REGISTRY = LEARNERS
register = REGISTRY.register
names = REGISTRY.names

CAPABILITIES: dict[str, Any] = {
    # A sequence model that learns only in context (the ICL transformer): the figures train it with the reference's
    # settings for its ICL model (loss from the family's reference start, pairwise tasks with one reference vector)
    # and measure its agreement with the closed-form rules at every shift.
    "in_context_model": False,
    # Its training step costs more with every position in the loss (a pass per prefix, an adaptation per position):
    # the figures train it on a sample of positions per step, one per stratum, in truncated passes.
    "samples_loss_positions": False,
    # Its prediction at position i does not depend on the sequence length N (so cutting the sequence after i keeps
    # it): the trainer's truncated loss passes require it.
    "truncation_invariant": True,
    # The task kinds it handles.
    "supports": ("classification", "regression"),
}


def capability(learner: Learner | type, name: str) -> Any:
    """The learner's (or learner class's) value of capability `name`, or its default in `CAPABILITIES`."""
    if name not in CAPABILITIES:
        raise ConfigError(f"unknown learner capability {name!r}; accepted: {', '.join(CAPABILITIES)}")
    return getattr(learner, name, CAPABILITIES[name])


def task_kind(spec: TaskSpec) -> str:
    return "regression" if spec.is_regression else "classification"


def check_supports(learner: Learner, spec: TaskSpec) -> None:
    """A ConfigError naming the learner and the task kinds it handles, unless it handles tasks of `spec`."""
    supported = capability(learner, "supports")
    if task_kind(spec) not in supported:
        raise ConfigError(f"learner {learner.name!r} handles {' and '.join(supported)} tasks, not {task_kind(spec)}")


def needs_classes(name: str) -> bool:
    """Whether the learner registered as `name` must be told the number of classes (a closed-form classifier)."""
    return "num_classes" in {f.name for f in dataclasses.fields(REGISTRY.cls(name))}


def build(name: str, **hparams: Any) -> Learner:
    """`build("icl", preset="paper", protocol="prefix")` or `build("knn", k=3, num_classes=2)`."""
    return REGISTRY.get(name, **hparams)


def build_for(spec: TaskSpec, name: str, **hparams: Any) -> Learner:
    """`build(name, **hparams)` for tasks of `spec`: a learner that must be told the number of classes (a closed-form
    classifier) gets the spec's unless `hparams` give it."""
    if needs_classes(name) and "num_classes" not in hparams and not spec.is_regression:
        hparams["num_classes"] = spec.num_classes
    return build(name, **hparams)


def to_config(learner: Learner) -> dict[str, Any]:
    return {"name": learner.name, **dataclasses.asdict(learner)}  # type: ignore[call-overload]


def from_config(config: dict[str, Any]) -> Learner:
    config = dict(config)
    return build(config.pop("name"), **config)


RuleSet = Callable[[TaskSpec], dict[str, Learner]]
RULE_KINDS = ("references", "agreement")
_RULE_SETS: dict[str, RuleSet] = {}


def register_rules(kind: str) -> Callable[[RuleSet], RuleSet]:
    """Function decorator: `fn(spec) -> {label: learner}` is the rule set `kind` (one of RULE_KINDS)."""
    if kind not in RULE_KINDS:
        raise ValueError(f"unknown rule set {kind!r}; accepted: {', '.join(RULE_KINDS)}")

    def wrap(fn: RuleSet) -> RuleSet:
        known = _RULE_SETS.get(kind)
        if known is not None and known.__qualname__ != fn.__qualname__:  # the same one imported twice is fine
            raise ConfigError(f"rule set {kind!r} is already registered by {known.__module__}.{known.__qualname__}")
        _RULE_SETS[kind] = fn
        return fn

    return wrap


def rules(kind: str, spec: TaskSpec) -> dict[str, Learner]:
    """The closed-form learners of rule set `kind` for tasks of `spec`, by label (empty when none is registered)."""
    if kind not in RULE_KINDS:
        raise ConfigError(f"unknown rule set {kind!r}; accepted: {', '.join(RULE_KINDS)}")
    load_plugins()
    fn = _RULE_SETS.get(kind)
    return fn(spec) if fn is not None else {}


__all__ = [
    "CAPABILITIES",
    "build",
    "build_for",
    "capability",
    "check_supports",
    "from_config",
    "names",
    "needs_classes",
    "register",
    "register_rules",
    "rules",
    "to_config",
]
