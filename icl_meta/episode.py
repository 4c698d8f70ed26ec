"""Deprecated: the contracts moved to `icl_meta.contracts` (Episode, TaskSpec, TaskFamily, Learner, ...). Every
name still resolves here, with a DeprecationWarning, until the next minor version (CHANGELOG.md)."""

from __future__ import annotations

import warnings
from typing import Any

from icl_meta import contracts as _contracts


def __getattr__(name: str) -> Any:
    if name.startswith("__") or not hasattr(_contracts, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"icl_meta.episode.{name} moved to icl_meta.contracts.{name}; the old name goes in the next minor version",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_contracts, name)
