"""A by-name registry of frozen-dataclass classes (task families, learners): `register`, `get`, `names`."""

from __future__ import annotations

import dataclasses
from typing import Any

from icl_meta.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "task family", "learner": used in error messages
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: make a dataclass available as `get(name)`; sets `cls.name`."""

        def wrap(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__qualname__}")
            cls.name = name
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
        """An instance of the class registered as `name` (unknown hyper-parameters are an error)."""
        cls = self.cls(name)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hparams) - fields)
        if unknown:
            accepted = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")
        return cls(**hparams)
