"""icl-meta: in-context learners studied as learning algorithms (JAX).

The core: the contracts (`contracts`), errors, the registries (`families`, `learners`; they fill themselves from the
installed plugins), the claims schema (`claims`), the ICL transformer, the trainer, evaluation, studies of runs
(`study`), runs and plotting. It imports no task family (`tasks`), no baseline learner (`baselines`) and no experiment
(`experiments`); those import the core, and the command line (`experiments.cli`) and the experiments compose them.
"""

from icl_meta.contracts import Episode, Learner, TaskFamily, TaskSpec
from icl_meta.errors import ConfigError

__all__ = ["ConfigError", "Episode", "Learner", "TaskFamily", "TaskSpec"]
__version__ = "0.3.0"
