"""By-name registries of classes (task families, learners, experiments): `register`, `get`, `names`, `cls`.

Registries fill themselves: the first look-up imports every installed plugin, i.e. every module named in the
`icl_meta.plugins` entry-point group of an installed distribution (this project declares `tasks`, `baselines` and
`experiments` in pyproject.toml; another package can declare its own). So nobody imports `tasks` or `baselines` only
for their side effects, and the core names no package above it. A module given to `icl-meta --import` registers its
classes when it is imported, like any plugin.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib import metadata
from typing import Any

from icl_meta.errors import ConfigError

PLUGIN_GROUP = "icl_meta.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every module of the `icl_meta.plugins` entry-point group, once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # before importing: a plugin's own registrations look names up
    for entry in sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        importlib.import_module(entry.value)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "task family", "learner": used in error messages
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: make a class available as `get(name)`; sets `cls.name` (its one statement of its name)."""

        def wrap(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__qualname__}")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._classes)

    def classes(self) -> dict[str, type]:
        """Every registered class by name, in registration order."""
        load_plugins()
        return dict(self._classes)

    def cls(self, name: str) -> type:
        if name not in self._classes:
            load_plugins()
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


LEARNERS = Registry("learner")
FAMILIES = Registry("task family")
