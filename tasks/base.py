"""Task-family base class and the by-name registry.

A family is a frozen dataclass of hyper-parameters with a pure, jittable `sample(key, batch, n) -> Episode`.
Register a new one with `@register("name")` in one new file under `tasks/`; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

import jax

from icl_meta.episode import Episode, TaskSpec
from icl_meta.errors import ConfigError, require

_REGISTRY: dict[str, type[TaskFamily]] = {}


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """Base of every family. Subclasses add fields and implement `_sample`.

    Common fields: `d` (input dim), `num_classes` (C; None for regression) and `sigma` (the input scale,
    which the distribution-shift experiments vary; see `with_sigma`).
    """

    d: int = 2
    num_classes: int | None = 2
    sigma: float = 1.0

    name: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        require(isinstance(self.d, int) and self.d >= 1, f"{self.name}: d must be an integer >= 1, got {self.d!r}")
        if self.num_classes is not None:
            require(
                isinstance(self.num_classes, int) and self.num_classes >= 2,
                f"{self.name}: num_classes must be an integer >= 2, got {self.num_classes!r}",
            )
        require(self.sigma > 0, f"{self.name}: sigma must be > 0, got {self.sigma!r}")

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(d=self.d, num_classes=self.num_classes)

    def sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        """B tasks of N examples each; pure and deterministic in `key`."""
        require(isinstance(batch, int) and batch >= 1, f"{self.name}: batch must be an integer >= 1, got {batch!r}")
        require(isinstance(n, int) and n >= 1, f"{self.name}: n must be an integer >= 1, got {n!r}")
        return self._sample(key, batch, n)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        raise NotImplementedError

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


def register(name: str):
    """Class decorator: make a TaskFamily subclass available as `tasks.get(name)`."""

    def wrap(cls: type[TaskFamily]) -> type[TaskFamily]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task family {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **hparams: Any) -> TaskFamily:
    """The family registered as `name`, with hyper-parameters `hparams` (unknown keys are an error)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown task family {name!r}; accepted: {', '.join(names())}")
    cls = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - fields)
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    return cls(**hparams)


def describe(name: str) -> list[tuple[str, str, Any]]:
    """(field, type, default) for each hyper-parameter of the family `name`."""
    cls = _REGISTRY[name]
    hints = typing.get_type_hints(cls)
    return [(f.name, _type_name(hints.get(f.name, f.type)), f.default) for f in dataclasses.fields(cls)]


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
