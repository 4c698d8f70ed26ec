"""Prequential bookkeeping shared by every baseline: which positions are queried, which examples are context,
and how class scores become the log-probabilities the trainer's cross-entropy expects."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_meta.contracts import TaskSpec
from icl_meta.errors import ConfigError, require, require_int

Array = jax.Array

PAD_SCORE = -9999.0  # the reference's score for the padded label slots C..2C-1 (umix.py; test.py uses -99999)


def query_rows(n: int, positions: Array | None) -> Array:
    """The query positions to compute, [P]: all of 0..N-1 or the requested subset."""
    return jnp.arange(n) if positions is None else jnp.asarray(positions, jnp.int32)


def context_mask(rows_P: Array, n: int, dtype=jnp.float32) -> Array:
    """[P, N]: 1 where example j is in the context of query position rows_P[p], i.e. j < rows_P[p]."""
    return (jnp.arange(n)[None, :] < rows_P[:, None]).astype(dtype)


def l2_normalize(e: Array) -> Array:
    """torch's F.normalize, e / max(||e||, 1e-12), with a finite gradient at e = 0 (jnp.linalg.norm has none)."""
    return e * jax.lax.rsqrt(jnp.maximum(jnp.sum(e * e, axis=-1, keepdims=True), 1e-24))


def padded_log_probs(scores_BPC: Array, double_softmax: bool) -> Array:
    """Scores over C classes -> log-probabilities over the 2C slots of the reference (slots C..2C-1 at PAD_SCORE).

    `double_softmax` keeps the reference's loss quirk (docs/papers.md section 5.4): its MatchNet and ProtoNet return
    probabilities p = softmax(scores), and F.cross_entropy applies log-softmax to them again, so the loss is
    CE(softmax(p), y), floored near 0.744 for C=2. Without it the log-probabilities are log_softmax(scores).
    The argmax, hence the accuracy, is the same either way.
    """
    padded_BPO = jnp.concatenate([scores_BPC, jnp.full_like(scores_BPC, PAD_SCORE)], axis=-1)
    if double_softmax:
        padded_BPO = jax.nn.softmax(padded_BPO, axis=-1)
    return jax.nn.log_softmax(padded_BPO, axis=-1)


def require_classification(learner: str, spec: TaskSpec) -> None:
    require(not spec.is_regression, f"{learner}: needs a classification task, got a regression task (num_classes=None)")


def require_input_dim(learner: str, spec: TaskSpec, x: Array) -> None:
    if x.shape[-1] != spec.d:
        raise ConfigError(f"{learner}: input dim d={x.shape[-1]} does not match the learner's d={spec.d}")


def require_hidden(learner: str, hidden: int | None) -> None:
    """An optional hidden width: None (the reference's size) or an integer >= 1."""
    require_int(hidden, f"{learner}: hidden", none_ok=True)
