"""The task-family registry, as the `tasks` package has always offered it (`tasks.get`, `tasks.register`, ...); it
lives in the core (`icl_meta.families`). Register a subclass of `icl_meta.contracts.TaskFamily` with
`@register("name")` in one new file under `tasks/`.
"""

from icl_meta.contracts import TaskFamily
from icl_meta.families import describe, evaluation_family, get, names, register, summary, with_hparams

__all__ = ["TaskFamily", "describe", "evaluation_family", "get", "names", "register", "summary", "with_hparams"]
