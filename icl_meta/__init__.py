"""icl-meta: in-context learners studied as learning algorithms (JAX).

The core: the contracts (`contracts`), errors, registries, the ICL transformer, the trainer, evaluation, runs and
plotting. It imports no task family (`tasks`), no baseline learner (`baselines`) and no experiment (`experiments`);
those import the core, and the CLI (`icl_meta.cli`) and the figure scripts compose them.
"""

from icl_meta.contracts import Episode, Learner, TaskFamily, TaskSpec
from icl_meta.errors import ConfigError

__all__ = ["ConfigError", "Episode", "Learner", "TaskFamily", "TaskSpec"]
__version__ = "0.1.0"
