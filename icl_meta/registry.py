"""A by-name registry of classes (task families, learners): `register`, `get`, `names`, `cls`."""

from __future__ import annotations

import dataclasses
from typing import Any

from icl_meta.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "task family", "learner": used in error messages
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: make a dataclass available as `get(name)`; sets `cls.name` (its one statement of its
        name)."""

        def wrap(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__qualname__}")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        return sorted(self._classes)

    def cls(self, name: str) -> type:
        if name not in self._classes:
            raise ConfigError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names())}")
        return self._classes[name]

    def get(self, name: str, **hparams: Any) -> Any:
        """An instance of the class registered as `name`: `cls.from_hparams(**hparams)` where the class defines it,
        else `cls(**hparams)`. Unknown or missing hyper-parameters are a ConfigError naming them."""
        cls = self.cls(name)
        factory = getattr(cls, "from_hparams", None)
        if factory is not None:
            return factory(**hparams)
        fields = dataclasses.fields(cls)
        unknown = sorted(set(hparams) - {f.name for f in fields})
        if unknown:
            accepted = ", ".join(sorted(f.name for f in fields)) or "(none)"
            raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")
        missing = [f.name for f in fields if f.name not in hparams and _required(f)]
        if missing:
            raise ConfigError(f"{name}: {', '.join(missing)} must be given (no default)")
        return cls(**hparams)


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
