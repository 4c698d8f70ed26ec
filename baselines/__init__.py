"""Learners to compare the ICL transformer with, registered by name: `baselines.get(name, **hparams)`.

A learner is a frozen dataclass of hyper-parameters implementing the `icl_meta.episode.Learner` protocol.
Register a new one with `@register("name")`; importing this package registers the closed-form algorithms.
"""

from __future__ import annotations

from typing import Any

from icl_meta.registry import Registry

_REGISTRY = Registry("learner")
register = _REGISTRY.register
names = _REGISTRY.names


def get(name: str, **hparams: Any) -> Any:
    """The learner registered as `name`, with hyper-parameters `hparams` (unknown keys are an error)."""
    return _REGISTRY.get(name, **hparams)


# Importing a module registers its learners (after `register` exists, hence at the bottom).
from baselines import closed_form, cnp, maml, matchnet, protonet  # noqa: E402, F401

__all__ = ["get", "names", "register"]
