"""The learners the ICL transformer is compared with: MatchNet, ProtoNet, CNP, MAML and the closed-form algorithms,
one file each, registered by name in the one learner registry (`icl_meta.learners`).

Every module in this package is imported here, so a new learner is one new file with `@register("name")` on a
frozen dataclass implementing the `icl_meta.contracts.Learner` protocol; nothing else changes.
`get(name, **hparams)` builds any registered learner, the ICL transformer ("icl") included.
"""

from __future__ import annotations

import importlib
import pkgutil

from icl_meta.learners import build as get
from icl_meta.learners import names, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from baselines.closed_form import agreement_rules, references  # noqa: E402

__all__ = ["agreement_rules", "get", "names", "references", "register"]
