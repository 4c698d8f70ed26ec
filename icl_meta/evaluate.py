"""Per-position metrics for any Learner, with bootstrap intervals over tasks."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.episode import Episode, Learner, TaskSpec


def metric_name(spec: TaskSpec) -> str:
    return "squared_error" if spec.is_regression else "accuracy"


def pointwise(spec: TaskSpec, out: jax.Array, y: jax.Array) -> jax.Array:
    """Per task and position: 1/0 correctness (classification) or squared error (regression)."""
    if spec.is_regression:
        return jnp.square(out - y)
    return (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _scores(learner: Learner, params: Any, spec: TaskSpec, x: jax.Array, y: jax.Array) -> jax.Array:
    return pointwise(spec, learner.predict(params, x, y), y)


def per_position(learner: Learner, params: Any, spec: TaskSpec, episode: Episode, chunk: int = 512) -> np.ndarray:
    """The metric of every task at every position, [T, N], computed in chunks of tasks to bound memory."""
    t = episode.x.shape[0]
    parts = []
    for start in range(0, t, chunk):  # few chunks, each the same compiled shape except maybe the last
        sl = slice(start, min(start + chunk, t))
        parts.append(np.asarray(_scores(learner, params, spec, episode.x[sl], episode.y[sl])))
    return np.concatenate(parts, 0)


def bootstrap(values_TN: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, list]:
    """Mean over tasks at each position, with a percentile bootstrap interval (tasks resampled with replacement)."""
    values_TN = np.asarray(values_TN, np.float64)
    t = values_TN.shape[0]
    weights_RT = np.random.default_rng(seed).multinomial(t, np.full(t, 1.0 / t), size=resamples)
    means_RN = weights_RT @ values_TN / t
    alpha = (1.0 - level) / 2.0
    return {
        "mean": values_TN.mean(0).tolist(),
        "lo": np.quantile(means_RN, alpha, axis=0).tolist(),
        "hi": np.quantile(means_RN, 1.0 - alpha, axis=0).tolist(),
    }


def curve(values_TN: np.ndarray, **labels: Any) -> dict[str, Any]:
    """A tidy curve record: identifying labels, positions 0..N-1, mean and interval."""
    return {**labels, "positions": list(range(values_TN.shape[1])), **bootstrap(values_TN)}


def mean_over(record: dict[str, Any], start: int = 0, stop: int | None = None) -> float:
    """Mean of a curve's per-position means over positions [start, stop)."""
    return float(np.mean(record["mean"][start:stop]))
