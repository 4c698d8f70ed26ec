"""icl-meta: in-context learners studied as learning algorithms (JAX)."""

from icl_meta.episode import Episode, Learner, TaskSpec
from icl_meta.errors import ConfigError

__all__ = ["ConfigError", "Episode", "Learner", "TaskSpec"]
__version__ = "0.1.0"
