"""Every learner by name: the ICL transformer registers itself as "icl"; `baselines` registers the meta-learners and
the closed-form algorithms when it is imported (the CLI and the figure scripts import it).

`build(name, **hparams)` makes one, `to_config` / `from_config` write and read it in config.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from icl_meta.contracts import Learner, TaskSpec
from icl_meta.registry import Registry

REGISTRY = Registry("learner")
register = REGISTRY.register
names = REGISTRY.names


def build(name: str, **hparams: Any) -> Learner:
    """`build("icl", preset="paper", protocol="prefix")` or `build("knn", k=3, num_classes=2)`."""
    return REGISTRY.get(name, **hparams)


def build_for(spec: TaskSpec, name: str, **hparams: Any) -> Learner:
    """`build(name, **hparams)` for tasks of `spec`: a learner that must be told the number of classes (a closed-form
    classifier) gets the spec's unless `hparams` give it."""
    fields = {f.name for f in dataclasses.fields(REGISTRY.cls(name))}
    if "num_classes" in fields and "num_classes" not in hparams and not spec.is_regression:
        hparams["num_classes"] = spec.num_classes
    return build(name, **hparams)


def to_config(learner: Learner) -> dict[str, Any]:
    return {"name": learner.name, **dataclasses.asdict(learner)}  # type: ignore[call-overload]


def from_config(config: dict[str, Any]) -> Learner:
    config = dict(config)
    return build(config.pop("name"), **config)


# The ICL transformer is part of the core; importing it registers "icl" (after `register` exists, hence at the end).
from icl_meta import transformer  # noqa: E402, F401

__all__ = ["build", "build_for", "from_config", "names", "register", "to_config"]
