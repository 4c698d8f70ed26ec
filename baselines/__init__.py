"""Learners to compare the ICL transformer with, registered by name: `baselines.get(name, **hparams)`.

A learner is a frozen dataclass of hyper-parameters implementing the `icl_meta.episode.Learner` protocol.
Register a new one with `@register("name")`; importing this package registers the closed-form algorithms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from icl_meta.errors import ConfigError

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a learner dataclass available as `baselines.get(name)`."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"learner {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **hparams: Any) -> Any:
    """The learner registered as `name`, with hyper-parameters `hparams` (unknown keys are an error)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown learner {name!r}; accepted: {', '.join(names())}")
    cls = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - fields)
    if unknown:
        accepted = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")
    return cls(**hparams)


# Importing a module registers its learners (after `register` exists, hence at the bottom).
from baselines import closed_form  # noqa: E402, F401

__all__ = ["get", "names", "register"]
