"""Synthetic task families, one file each, registered by name. `tasks.get(name, **hparams)` returns one."""

# Importing a module registers its families.
from tasks import amortization, linear_regression, mixture, pairwise, prototype, radius  # noqa: F401
from tasks.base import TaskFamily, describe, get, names, register

__all__ = ["TaskFamily", "describe", "get", "names", "register"]
