"""A small decoder-only multimodal language model (LLaVA's layout at toy scale, docs/papers.md section 10.3): token
embeddings plus an image projector (a 2-layer MLP, LLaVA-1.5's) added at the positions that carry an image, then the
suite's own transformer stack (`icl_meta.transformer.Network`, GPT-2 blocks, causal softmax attention with rotary
position embeddings) and a read-out to the vocabulary. Rotary rather than GPT-2's learned absolute positions (an
option, `positions=`): a turn's answer must attend to its own object a fixed distance back, wherever the turn sits,
which relative positions express directly (docs/differences.md).

Inputs follow the multimodal task family (`tasks/multimodal.py`): x [B, L, V + I] is a one-hot token (V = the spec's
num_classes) and an image vector (I = d - V), zero at every position without an image. The output at position i
sees positions 0..i only, so as a next-token model (y_i = token i+1) it is a prequential learner: `predict` returns
log-probabilities over the vocabulary [B, L|P, V], and every tool of the suite (trainer, evaluation) applies.

The weights are three top-level groups, `embed`, `projector` and `network`, so a training stage can train some and
freeze the others (LLaVA's projector-only alignment: `icl_meta.sequence_loss.MaskedNextToken(trainable=...)`).

`evaluate_model` scores a model greedily on the family's benchmark sets (`tasks.multimodal.benchmark_sets`): per
held-out family, its accuracy and how often it follows the demonstrations' labelling, the last demonstration or
letter A (tidy records).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icl_meta.contracts import Learner, LearnerParams, TaskSpec
from icl_meta.errors import ConfigError, require, require_int
from icl_meta.evaluate import greedy_answers
from icl_meta.learners import register
from icl_meta.transformer import GPT2_STD, ModelConfig, Network, bind, gpt2_linear
from tasks.multimodal import BENCHMARK_FAMILIES, LETTER0, BenchmarkSet

GROUPS = ("embed", "projector", "network")


class MultimodalModel(nnx.Module):
    def __init__(self, config: ModelConfig, spec: TaskSpec, *, rngs: nnx.Rngs):
        vocab, width = spec.classes, config.width
        assert width is not None
        image_dim = spec.d - vocab
        self.embed = nnx.Embed(vocab, width, embedding_init=nnx.initializers.normal(GPT2_STD), rngs=rngs)
        self.projector = nnx.List([gpt2_linear(image_dim, width, rngs=rngs), gpt2_linear(width, width, rngs=rngs)])
        # The stack runs at the model width itself (no read-in): the embeddings are its tokens.
        self.network = Network(dataclasses.replace(config, width=None), spec, rngs=rngs, tokens=width, outputs=vocab)
        self.vocab = vocab

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        tokens_BLV, image_BLW = x_BLD[..., : self.vocab], x_BLD[..., self.vocab :]
        has_image_BL1 = jnp.any(image_BLW != 0, -1, keepdims=True)
        up, down = self.projector
        projected = down(jax.nn.gelu(up(image_BLW)))
        h_BLW = tokens_BLV @ self.embed.embedding[...] + jnp.where(has_image_BL1, projected, 0.0)
        length = h_BLW.shape[-2]
        return self.network(h_BLW, jnp.tril(jnp.ones((length, length), bool)))


@register("multimodal_lm")
@dataclasses.dataclass(frozen=True)
class MultimodalLM:
    """The learner: `width` d_model, `depth` GPT-2 blocks of `heads` heads (the layers as one scan), rotary positions
    and/or `positions` learned absolute ones."""

    width: int = 64
    depth: int = 2
    heads: int = 4
    positions: int | None = None  # learned absolute positions for sequences up to this long; None: rotary only
    rotary: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads"):
            require_int(getattr(self, name), f"multimodal_lm: {name}")
        require_int(self.positions, "multimodal_lm: positions", none_ok=True)
        require(self.width % self.heads == 0, f"multimodal_lm: width {self.width} must be divisible by heads")

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(
            attention="softmax", protocol="causal", depth=self.depth, heads=self.heads, width=self.width,
            block="gpt2", positions=self.positions, scan_layers=self.depth > 1, rotary=self.rotary,
        )  # fmt: skip

    def init(self, key: jax.Array, spec: TaskSpec) -> LearnerParams:
        if spec.is_regression or spec.d <= spec.classes:
            raise ConfigError(
                f"multimodal_lm needs token classes and image features (d > num_classes), got d={spec.d}, "
                f"num_classes={spec.num_classes}"
            )
        _, state = nnx.split(MultimodalModel(self.config, spec, rngs=nnx.Rngs(params=key)))
        return LearnerParams(weights=nnx.to_pure_dict(state), spec=spec)

    def predict(self, params: LearnerParams, x: jax.Array, y: jax.Array, positions: Any = None) -> jax.Array:
        """Next-token log-probabilities [B, L|P, V]; `y` is not read (position i sees tokens 0..i only)."""
        out = jax.nn.log_softmax(bind(MultimodalModel, self.config, params)(x), -1)
        return out if positions is None else jnp.take(out, jnp.asarray(positions), axis=1)


def evaluate_model(
    lm: Learner, params: Any, sets: Sequence[BenchmarkSet], *, chunk: int = 500, **labels: Any
) -> list[dict[str, Any]]:
    """Tidy records (`labels` plus benchmark, order, variant, family): the greedy answer's accuracy, its agreement
    with the demonstrations' labelling, with the last demonstration and with letter A, per held-out family (or one
    group of tuning concepts); `chunk` episodes per prediction."""
    records = []
    for benchmark, order, variant, x, p in sets:
        pred = np.concatenate([np.asarray(greedy_answers(lm, params, x[i : i + chunk], p["query"][i : i + chunk]))
                               for i in range(0, len(x), chunk)])  # fmt: skip
        groups = list(enumerate(BENCHMARK_FAMILIES)) if (p["family"] >= 0).all() else [(-1, "tuning")]
        for f, family in groups:  # the held-out families, or one group of tuning concepts
            rows = p["family"] == f
            records.append({
                **labels, "benchmark": benchmark, "order": order, "variant": variant, "family": family,
                "accuracy": float(np.mean(pred[rows] == p["answer"][rows])),
                "follows_demos": float(np.mean(pred[rows] == p["demo_answer"][rows])),
                "recency": float(np.mean(pred[rows] == p["last_demo"][rows])),
                "letter_a": float(np.mean(pred[rows] == LETTER0)), "episodes": int(rows.sum()),
            })  # fmt: skip
    return records
