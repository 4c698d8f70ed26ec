"""Synthetic task families, one file each, registered by name. `tasks.get(name, **hparams)` returns one.

Every module in this package is imported here, so a new family is one new file with `@register("name")`.
"""

import importlib
import pkgutil

from tasks.base import TaskFamily, describe, evaluation_family, get, names, register, summary, with_hparams

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TaskFamily", "describe", "evaluation_family", "get", "names", "register", "summary", "with_hparams"]
