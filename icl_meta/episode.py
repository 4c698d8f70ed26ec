"""Deprecated: the contracts moved to `icl_meta.contracts` (Episode, TaskSpec, TaskFamily, Learner, ...). Every
name still resolves here, with a DeprecationWarning, until the next minor version (CHANGELOG.md)."""

from icl_meta import contracts
from icl_meta.deprecation import moved_to

__getattr__ = moved_to(__name__, contracts)
