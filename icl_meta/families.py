"""Every task family by name: `get(name, **hparams)` makes one, `register` (a class decorator) adds one. The families
themselves live one file each under `tasks/` (or in any plugin or `--import`ed module); the registry finds them
(`icl_meta.registry.load_plugins`). The TaskFamily base class is a contract (`icl_meta.contracts.TaskFamily`).
"""

from __future__ import annotations

import sys
from typing import Any

from icl_meta.contracts import TaskFamily, family_fields
from icl_meta.errors import ConfigError
from icl_meta.registry import FAMILIES

_REGISTRY = FAMILIES
register = _REGISTRY.register
names = _REGISTRY.names


def get(name: str, **hparams: Any) -> TaskFamily:
    """The family registered as `name`, with hyper-parameters `hparams` (unknown keys are an error)."""
    return _REGISTRY.get(name, **hparams)


def with_hparams(family: TaskFamily, **hparams: Any) -> TaskFamily:
    """The same family with some hyper-parameters changed, rebuilt through the registry (so unknown keys and bad
    values are ConfigErrors); `sigma` goes through `with_sigma`, which also reaches a mixture's components."""
    sigma = hparams.pop("sigma", None)
    if hparams:
        family = get(family.name, **{**family.hparams(), **hparams})
    return family if sigma is None else family.with_sigma(sigma)


def evaluation_family(trained_on: TaskFamily, name: str | None, hparams: dict[str, Any]) -> TaskFamily:
    """The family to evaluate a learner trained on `trained_on` on: the training family with `hparams` changed, or the
    family `name` with the training family's d (and C, for classification) unless `hparams` say otherwise. It must
    have the training family's d and C (a ConfigError says how to set them otherwise)."""
    if name is None or name == trained_on.name:
        family = with_hparams(trained_on, **hparams)
    else:
        fill: dict[str, Any] = {"d": trained_on.d}
        defaults = {field: default for field, _, default in describe(name)}
        if defaults.get("num_classes") is not None:
            fill["num_classes"] = trained_on.num_classes
        family = get(name, **{**fill, **hparams})
    if family.spec != trained_on.spec:
        raise ConfigError(
            f"the run was trained for d={trained_on.d}, C={trained_on.num_classes} ({trained_on.name}); "
            f"task {family.name} has d={family.d}, C={family.num_classes} "
            "(set them with --task-arg d=... --task-arg num_classes=...)"
        )
    return family


def summary(name: str) -> str:
    """The first line of the family's module docstring (or class docstring)."""
    cls = _REGISTRY.cls(name)
    doc = sys.modules[cls.__module__].__doc__ or cls.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe(name: str) -> list[tuple[str, str, Any]]:
    """(field, type, default) for each hyper-parameter of the family `name`."""
    return family_fields(_REGISTRY.cls(name))


__all__ = ["describe", "evaluation_family", "get", "names", "register", "summary", "with_hparams"]
