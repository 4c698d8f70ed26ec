"""Moved public names keep working for one minor version: an old module's `__getattr__` resolves each name to its
new module, with a DeprecationWarning that says where it went (CHANGELOG.md lists every move)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any


def moved_to(old: str, new: ModuleType) -> Callable[[str], Any]:
    """`__getattr__ = moved_to(__name__, icl_meta.study)`: a module-level `__getattr__` for the old module `old`."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or not hasattr(new, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new.__name__}.{name}; the old name goes in the next minor version",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(new, name)

    return __getattr__
