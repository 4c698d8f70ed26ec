"""Orbax save / restore of a train state; a resumed run continues bit-for-bit from its last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from icl_meta.errors import ConfigError


class Checkpointer:
    def __init__(self, directory: Path, max_to_keep: int = 2, create: bool = True):
        self.manager = ocp.CheckpointManager(
            Path(directory).resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> Any:
        """Restore into the structure of `like` (a state of the same shapes, e.g. a freshly initialised one)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as err:  # shapes or structure differ from the model to restore into
            raise ConfigError(
                f"the checkpoint at step {step} in {self.manager.directory} does not match the model "
                f"and task of its config.json ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from None

    def delete_after(self, step: int | None) -> None:
        """Delete every checkpoint after `step` (all of them for None)."""
        for saved in self.manager.all_steps():
            if step is None or saved > step:
                self.manager.delete(saved)

    def close(self) -> None:
        self.manager.close()
