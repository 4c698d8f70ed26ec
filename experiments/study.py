"""Deprecated: moved to `icl_meta.study` (the command line and the experiments reach it without climbing a layer).
Every name still resolves here, with a DeprecationWarning, until the next minor version (CHANGELOG.md)."""

from icl_meta import study
from icl_meta.deprecation import moved_to

__getattr__ = moved_to(__name__, study)
