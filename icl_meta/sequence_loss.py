"""A training objective for sequence families whose episodes say which next tokens to learn: the cross-entropy of the
learner's next-token prediction at the positions of `episode.params["loss_mask"]` (e.g. the assistant's answers of a
conversation, LLaVA's convention), optionally training only some top-level weight groups (the others frozen: their
gradient is zero, so Adam leaves them exactly as they were).

It plugs into the ordinary trainer (`train(..., objective=MaskedNextToken(...))`): scan, on-device data, checkpoints,
resume, metrics log and progress bar are the trainer's. Its diagnostics, logged at every evaluation as
`objective_*`, are the accuracy and loss of the query answer (`params["query"]`, `params["answer"]`) and the
accuracy over all trained tokens, on a fixed held-out batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from icl_meta.contracts import Episode, Learner, TaskFamily
from icl_meta.errors import ConfigError, require
from icl_meta.parallel import shard_batch

DIAGNOSTIC_TASKS = 256
REQUIRED = ("loss_mask", "query", "answer")


@dataclasses.dataclass(frozen=True)
class MaskedNextToken:
    """The objective; `trainable` names the weight groups that learn (None: all). Which answers are in the mask is
    the family's choice (the multimodal family's `demo_loss`)."""

    trainable: tuple[str, ...] | None = None

    name: ClassVar[str] = "masked_next_token"

    def __post_init__(self) -> None:
        if self.trainable is not None:
            object.__setattr__(self, "trainable", tuple(self.trainable))
            require(len(self.trainable) > 0, "masked_next_token: trainable needs at least one weight group (or None)")

    def check(self, family: TaskFamily, cfg: Any) -> None:
        if cfg.curriculum is not None:
            cfg.curriculum.check(family, cfg.n)
        shapes = jax.eval_shape(lambda: family.sample(jax.random.key(0), 1, cfg.n))
        missing = [k for k in REQUIRED if k not in shapes.params]
        require(
            not missing,
            f"the {family.name} family's episodes lack {', '.join(missing)}: {self.name} needs a family whose "
            f"episodes carry {', '.join(REQUIRED)} (e.g. multimodal)",
        )

    def _weights(self, params: Any) -> Any:
        if self.trainable is None:
            return params
        groups = params.weights
        unknown = sorted(set(self.trainable) - set(groups))
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown weight group(s) {', '.join(unknown)}; accepted: {', '.join(sorted(groups))}"
            )
        frozen = {k: v if k in self.trainable else jax.lax.stop_gradient(v) for k, v in groups.items()}
        return params.replace(weights=frozen)

    def loss(
        self, params: Any, key: jax.Array, step: jax.Array, *, learner: Learner, family: TaskFamily, cfg: Any,
        mesh: Mesh | None,
    ) -> jax.Array:  # fmt: skip
        step_family = family if cfg.curriculum is None else cfg.curriculum.family_at(family, step)
        episode = shard_batch(step_family.sample(jax.random.fold_in(key, 0), cfg.batch, cfg.n), mesh)
        return masked_loss(learner, self._weights(params), episode)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": None if self.trainable is None else list(self.trainable)}

    def diagnostics(
        self, params: Any, key: jax.Array, *, learner: Learner, family: TaskFamily, cfg: Any
    ) -> dict[str, jax.Array]:
        episode = family.sample(key, DIAGNOSTIC_TASKS, cfg.n)
        logp_BLV = learner.predict(params, episode.x, episode.y)
        query_BV = jnp.take_along_axis(logp_BLV, episode.params["query"][:, None, None], axis=1)[:, 0]
        answer_B = episode.params["answer"]
        mask_BL = episode.params["loss_mask"]
        correct_BL = jnp.argmax(logp_BLV, -1) == episode.y
        return {
            "query_accuracy": jnp.mean(jnp.argmax(query_BV, -1) == answer_B),
            "query_loss": -jnp.mean(jnp.take_along_axis(query_BV, answer_B[:, None], -1)),
            "answer_token_accuracy": jnp.sum(correct_BL * mask_BL) / jnp.maximum(jnp.sum(mask_BL), 1.0),
            "loss": masked_nll(logp_BLV, episode),
        }


def masked_loss(learner: Learner, params: Any, episode: Episode) -> jax.Array:
    """Mean next-token cross-entropy over the positions of the episode's loss mask."""
    return masked_nll(learner.predict(params, episode.x, episode.y), episode)


def masked_nll(logp_BLV: jax.Array, episode: Episode) -> jax.Array:
    """`masked_loss` from the learner's log-probabilities (one prediction serves several diagnostics)."""
    nll_BL = -jnp.take_along_axis(logp_BLV, episode.y[..., None], -1)[..., 0]
    mask_BL = episode.params["loss_mask"]
    return jnp.sum(nll_BL * mask_BL) / jnp.maximum(jnp.sum(mask_BL), 1.0)
