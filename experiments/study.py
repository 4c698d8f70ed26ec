"""Deprecated: moved to `icl_meta.study` (the command line and the experiments reach it without climbing a layer).
Every name still resolves here, with a DeprecationWarning, until the next minor version (CHANGELOG.md)."""

from __future__ import annotations

import warnings
from typing import Any

from icl_meta import study as _study


def __getattr__(name: str) -> Any:
    if name.startswith("__") or not hasattr(_study, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"experiments.study.{name} moved to icl_meta.study.{name}; the old name goes in the next minor version",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_study, name)
