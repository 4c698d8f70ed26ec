"""By-name registries of classes (task families, learners, experiments): `register`, `get`, `names`, `cls`.

Registries fill themselves: the first look-up imports every installed plugin, i.e. every module named in the
`icl_meta.plugins` entry-point group of an installed distribution (this project declares `tasks` and `baselines` in
pyproject.toml; another package can declare its own), then the modules named in $ICL_META_PLUGINS (comma-separated;
for a source tree that is not installed: `ICL_META_PLUGINS=tasks,baselines`). So nobody imports `tasks` or
`baselines` only for their side effects, and the core names no package above it. A module given to
`icl-meta --import` registers its classes when it is imported, like any plugin.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from importlib import metadata
from typing import Any

from icl_meta.errors import ConfigError

PLUGIN_GROUP = "icl_meta.plugins"
PLUGIN_VARIABLE = "ICL_META_PLUGINS"  # more plugin modules, comma-separated (e.g. for a source tree not installed)
_plugins: list[str] | None = None  # the modules loaded, once loaded


def plugin_modules() -> list[str]:
    """The plugin modules: the `icl_meta.plugins` entry points of installed distributions, then $ICL_META_PLUGINS."""
    found = [e.value for e in sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name)]
    extra = [m.strip() for m in os.environ.get(PLUGIN_VARIABLE, "").split(",") if m.strip()]
    return list(dict.fromkeys(found + extra))


def load_plugins() -> None:
    """Import every plugin module, once per process."""
    global _plugins
    if _plugins is not None:
        return
    _plugins = plugin_modules()  # set before importing: a plugin's own registrations look names up
    for module in _plugins:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"plugin {module!r} (an icl_meta.plugins entry point or ${PLUGIN_VARIABLE}): {err}"
            ) from None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "task family", "learner": used in error messages
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: make a class available as `get(name)`; sets `cls.name` (its one statement of its name)."""

        def wrap(cls: type) -> type:
            known = self._classes.get(name)
            if known is not None and known is not cls:
                if _same_definition(known, cls):  # a module run as __main__ and imported again: its first class stays
                    return known
                where = f"{known.__module__}.{known.__qualname__}"
                raise ConfigError(f"{self.kind} {name!r} is already registered by {where}")
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
            hint = "" if _plugins else f" (no plugin is installed: `pip install -e .`, or set {PLUGIN_VARIABLE})"
            raise ConfigError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names()) or '(none)'}{hint}")
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


def _same_definition(a: type, b: type) -> bool:
    """Two classes from one source: the same qualified name, one of them defined in a module run as `__main__`."""
    return a.__qualname__ == b.__qualname__ and "__main__" in (a.__module__, b.__module__)


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


LEARNERS = Registry("learner")
FAMILIES = Registry("task family")
