"""Task-family base class and the by-name registry.

A family is a frozen dataclass of hyper-parameters with a pure, jittable `sample(key, batch, n) -> Episode`.
Register a new one with `@register("name")` in one new file under `tasks/`; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from typing import Any, ClassVar

import jax

from icl_meta.episode import Episode, TaskSpec
from icl_meta.errors import is_int, require
from icl_meta.registry import Registry


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
    # The first position in the reference code's training loss for this family (PAPER.md section 4.2).
    reference_loss_start: ClassVar[int] = 0

    def __post_init__(self) -> None:
        require(is_int(self.d) and self.d >= 1, f"{self.name}: d must be an integer >= 1, got {self.d!r}")
        if self.num_classes is not None:
            require(
                is_int(self.num_classes) and self.num_classes >= 2,
                f"{self.name}: num_classes must be an integer >= 2, got {self.num_classes!r}",
            )
        require(
            isinstance(self.sigma, int | float) and not isinstance(self.sigma, bool) and 0 < self.sigma < math.inf,
            f"{self.name}: sigma must be a finite number > 0, got {self.sigma!r}",
        )

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


def with_hparams(family: TaskFamily, **hparams: Any) -> TaskFamily:
    """The same family with some hyper-parameters changed, rebuilt through the registry (so unknown keys and bad
    values are ConfigErrors); `sigma` goes through `with_sigma`, which also reaches a mixture's components."""
    sigma = hparams.pop("sigma", None)
    if hparams:
        family = get(family.name, **{**family.hparams(), **hparams})
    return family if sigma is None else family.with_sigma(sigma)


def _jsonable(value: Any) -> Any:
    if isinstance(value, TaskFamily):
        return {"name": value.name, **value.hparams()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


_REGISTRY = Registry("task family")
register = _REGISTRY.register
names = _REGISTRY.names


def get(name: str, **hparams: Any) -> TaskFamily:
    """The family registered as `name`, with hyper-parameters `hparams` (unknown keys are an error)."""
    return _REGISTRY.get(name, **hparams)


def summary(name: str) -> str:
    """The first line of the family's module docstring (or class docstring)."""
    cls = _REGISTRY.cls(name)
    doc = sys.modules[cls.__module__].__doc__ or cls.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe(name: str) -> list[tuple[str, str, Any]]:
    """(field, type, default) for each hyper-parameter of the family `name`."""
    cls = _REGISTRY.cls(name)
    hints = typing.get_type_hints(cls)
    return [(f.name, _type_name(hints.get(f.name, f.type)), f.default) for f in dataclasses.fields(cls)]


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
