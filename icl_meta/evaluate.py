"""Per-position metrics for any Learner, with bootstrap intervals over tasks, as tidy curve records; and the greedy
answers of a next-token learner at one position per sequence (`greedy_answers`)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.contracts import Episode, Learner, TaskSpec


def metric_name(spec: TaskSpec) -> str:
    return "squared_error" if spec.is_regression else "accuracy"


def pointwise(spec: TaskSpec, out: jax.Array, y: jax.Array) -> jax.Array:
    """Per task and position: 1/0 correctness (classification) or squared error (regression)."""
    if spec.is_regression:
        return jnp.square(out - y)
    return (jnp.argmax(out, axis=-1) == y).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _scores(
    learner: Learner, params: Any, spec: TaskSpec, x: jax.Array, y: jax.Array, positions: jax.Array | None
) -> jax.Array:
    targets = y if positions is None else jnp.take(y, positions, axis=1)
    return pointwise(spec, learner.predict(params, x, y, positions), targets)


def default_chunk() -> int:
    """Tasks per evaluation call: 32 on CPU, where the intermediates of a small chunk stay in cache (MAML's
    adaptation at every position: 4.0 s for 2,048 tasks against 5.8 s in chunks of 512; the prefix protocol 2.3
    against 2.6 s), 512 on an accelerator, which needs the parallel work."""
    return 32 if jax.default_backend() == "cpu" else 512


def in_chunks(compute: Callable[[np.ndarray, np.ndarray], Any], episode: Episode, chunk: int | None = None) -> Any:
    """`compute(x, y)` (a pytree of arrays with the task axis first) on chunks of at most `chunk` tasks (None:
    `default_chunk()`), to bound memory, concatenated on the host as numpy arrays.

    Every chunk has one shape (the last is padded with copies of the last task, whose results are dropped), so
    `compute` compiles once; the chunks are sliced on the host (an eager slice of a device array compiles a program
    per offset) and all dispatched before the first is read back, so the host's work overlaps the device's."""
    b = episode.x.shape[0]
    chunk = min(chunk or default_chunk(), b)
    x, y = (np.pad(a, [(0, -b % chunk)] + [(0, 0)] * (a.ndim - 1), mode="edge") for a in (episode.x, episode.y))
    parts = [compute(x[s : s + chunk], y[s : s + chunk]) for s in range(0, b, chunk)]
    return jax.tree.map(lambda *p: np.concatenate([np.asarray(a) for a in p], 0)[:b], *parts)


def per_position(
    learner: Learner, params: Any, spec: TaskSpec, episode: Episode, chunk: int | None = None, positions: Any = None
) -> np.ndarray:
    """The metric of every task at every position, [B, N] (or at `positions` only, [B, P]), computed in chunks of
    tasks to bound memory."""
    positions_P = None if positions is None else jnp.asarray(positions, jnp.int32)
    return in_chunks(lambda x, y: _scores(learner, params, spec, x, y, positions_P), episode, chunk)


def bootstrap(values_BN: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, list]:
    """Mean over tasks at each position, with a percentile bootstrap interval (tasks resampled with replacement)."""
    values_BN = np.asarray(values_BN, np.float64)
    b = values_BN.shape[0]
    weights_RB = np.random.default_rng(seed).multinomial(b, np.full(b, 1.0 / b), size=resamples)
    means_RN = weights_RB @ values_BN / b
    alpha = (1.0 - level) / 2.0
    return {
        "mean": values_BN.mean(0).tolist(),
        "lo": np.quantile(means_RN, alpha, axis=0).tolist(),
        "hi": np.quantile(means_RN, 1.0 - alpha, axis=0).tolist(),
    }


def seed_interval(values: Any, level: float = 0.95) -> dict[str, float]:
    """Mean of a few runs' values (e.g. one per seed) with Student's t interval: {"mean", "lo", "hi", "n"}. With a
    handful of seeds a bootstrap interval collapses onto the extremes, and a sign-flip test cannot reach p < 0.05
    below 6 values; the t interval is the usual choice there (NaN for fewer than 2 values)."""
    import scipy.stats  # here: it takes ~1 s to import, and a training run never needs it

    values_R = np.asarray(values, np.float64).ravel()
    mean = float(values_R.mean()) if values_R.size else math.nan
    if values_R.size < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": int(values_R.size)}
    half = float(
        scipy.stats.t.ppf(0.5 + level / 2, values_R.size - 1) * values_R.std(ddof=1) / math.sqrt(values_R.size)
    )
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(values_R.size)}


def curve(values_BN: np.ndarray, **labels: Any) -> dict[str, Any]:
    """A tidy curve record: identifying labels, positions 0..N-1, mean and interval."""
    return {**labels, "positions": list(range(values_BN.shape[1])), **bootstrap(values_BN)}


def mean_over(record: dict[str, Any], start: int = 0, stop: int | None = None) -> float:
    """Mean of a curve's per-position means over positions [start, stop)."""
    return float(np.mean(record["mean"][start:stop]))


def curves_on(
    learner: Learner,
    params: Any,
    tests: Mapping[str, Episode],
    specs: Mapping[str, TaskSpec],
    *,
    train: str | None,
    kind: str = "trained",
    **labels: Any,
) -> list[dict[str, Any]]:
    """The learner's per-position curve on every test set (tidy records: train, test, learner, metric, kind, and
    `labels`; trained learners also record the seconds their evaluation took, `eval_s`). `train` is the training
    family's name (None for a closed-form rule, which nothing trains)."""
    curves = []
    for test, episode in tests.items():
        spec = specs[test]
        t0 = time.perf_counter()
        values = per_position(learner, params, spec, episode)
        timing = {"eval_s": round(time.perf_counter() - t0, 2)} if kind == "trained" else {}
        curves.append(
            curve(values, train=train, test=test, learner=learner.name, metric=metric_name(spec), kind=kind,
                  **timing, **labels)
        )  # fmt: skip
    return curves


@functools.partial(jax.jit, static_argnums=(0,))
def greedy_answers(learner: Learner, params: Any, x_BLD: jax.Array, query_B: jax.Array) -> jax.Array:
    """The greedy answer token of each sequence of a next-token learner (whose `predict` reads no `y`): the argmax
    over the vocabulary at its answer position `query_B` -> [B]."""
    logp_BLV = learner.predict(params, x_BLD, jnp.zeros(x_BLD.shape[:2], jnp.int32))
    return jnp.argmax(jnp.take_along_axis(logp_BLV, query_B[:, None, None], 1)[:, 0], -1)
