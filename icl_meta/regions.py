"""Decision regions: a learner's class at every point of a G x G grid over a 2-d input space, given one task's first
k examples as context, beside the task family's own rule there (any family with `labels`). Figure 3 draws them; any
2-d family and any learner work.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.contracts import Episode, Learner, TaskFamily
from icl_meta.errors import require
from icl_meta.train import TEST_STREAM, stream_key

EXTENT_POINTS = 200  # draws of a region task whose bounding square the grid covers (the context is its first k)


def region_grid(x_ND: np.ndarray, g: int, pad: float = 0.1) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """G x G points [G*G, 2], row-major with rows along y, over the square that bounds the points (padded by `pad` of
    its side on each side); and its extent (x0, x1, y0, y1) = the first and last coordinates."""
    x_ND = np.asarray(x_ND, np.float64)
    require(x_ND.shape[-1] == 2, f"decision regions need 2-d inputs, got d={x_ND.shape[-1]}")
    lo, hi = x_ND.min(0), x_ND.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + 2 * pad)
    xs, ys = np.linspace(centre[0] - half, centre[0] + half, g), np.linspace(centre[1] - half, centre[1] + half, g)
    gx_GG, gy_GG = np.meshgrid(xs, ys)  # [i, j] = (xs[j], ys[i])
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    return np.stack([gx_GG.ravel(), gy_GG.ravel()], -1).astype(np.float32), extent


def region_sequences(context_ND: jax.Array, labels_N: jax.Array, grid_QD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One sequence per grid point: the fixed context at positions 0..k-1, the grid point at k (its label a dummy 0,
    never seen by a prequential learner). Returns x [Q, k+1, D] and y [Q, k+1]."""
    p = grid_QD.shape[0]
    context_QND = jnp.broadcast_to(context_ND, (p, *context_ND.shape))
    x_QND = jnp.concatenate([context_QND, grid_QD[:, None, :]], axis=1)
    y_QN = jnp.concatenate([jnp.broadcast_to(labels_N, (p, labels_N.shape[0])), jnp.zeros((p, 1), labels_N.dtype)], 1)
    return x_QND, y_QN


@functools.partial(jax.jit, static_argnums=0)
def _query_classes(
    learner: Learner, params: Any, context_ND: jax.Array, labels_N: jax.Array, grid_QD: jax.Array
) -> jax.Array:
    """argmax class at position k of each grid point's sequence, over all outputs (padded slots included), [B]."""
    x_QND, y_QN = region_sequences(context_ND, labels_N, grid_QD)
    k = context_ND.shape[0]
    return jnp.argmax(learner.predict(params, x_QND, y_QN, positions=jnp.array([k]))[:, 0], axis=-1)


def predict_regions(
    learner: Learner,
    params: Any,
    context_ND: jax.Array,
    labels_N: jax.Array,
    grid_QD: np.ndarray,
    num_classes: int,
    chunk: int = 4096,
) -> np.ndarray:
    """The learner's class for every grid point given the fixed context, int [P]; an argmax into an output >= C (the
    ICL model's padded label slots) is returned as C, "invalid"."""
    p = grid_QD.shape[0]
    chunk = min(chunk, p)
    padded_QD = np.concatenate([grid_QD, np.zeros((-p % chunk, grid_QD.shape[1]), grid_QD.dtype)])  # one shape
    context_ND, labels_N = jnp.asarray(context_ND, jnp.float32), jnp.asarray(labels_N, jnp.int32)
    parts = [
        np.asarray(_query_classes(learner, params, context_ND, labels_N, jnp.asarray(padded_QD[s : s + chunk])))
        for s in range(0, p, chunk)
    ]
    return np.minimum(np.concatenate(parts)[:p], num_classes)


@functools.partial(jax.jit, static_argnums=(0, 2))
def sample_task(family: TaskFamily, key: jax.Array, n: int) -> Episode:
    """One task of n examples as one compiled program per family (op by op, every op would compile anew)."""
    return family.sample(key, 1, n)


@functools.partial(jax.jit, static_argnums=0)
def rule_labels(family: TaskFamily, task: Mapping[str, Any], x_QD: jax.Array) -> jax.Array:
    """The true class of points x [Q, D] under ONE task's rule (`task`: its Episode params without the batch axis)."""
    return family.labels(x_QD, dict(task))


def decision_regions(
    learner: Learner, params: Any, families: Mapping[str, TaskFamily], k: int, g: int, seed: int, chunk: int = 4096
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """For one seeded task per family: the rule's and the learner's classes on a G x G grid given the task's first k
    examples. Returns a compact record per family and the arrays (grids [G, G], context, extent) to draw them."""
    records: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for j, (name, family) in enumerate(families.items()):
        key = jax.random.fold_in(stream_key(seed, TEST_STREAM), 100 + j)
        episode = sample_task(family, key, max(k, EXTENT_POINTS))
        task = {p: v[0] for p, v in episode.params.items()}
        grid_QD, extent = region_grid(np.asarray(episode.x[0]), g)
        context_ND, labels_N, c = episode.x[0, :k], episode.y[0, :k], family.spec.classes  # classification only
        true_Q = np.asarray(rule_labels(family, task, jnp.asarray(grid_QD)))
        pred_Q = predict_regions(learner, params, context_ND, labels_N, grid_QD, c, chunk)
        agree, invalid = round(float(np.mean(pred_Q == true_Q)), 4), round(float(np.mean(pred_Q >= c)), 4)
        records.append({"family": name, "learner": learner.name, "context": k, "grid": g, "agreement": agree,
                        "invalid": invalid, "extent": [round(e, 4) for e in extent]})  # fmt: skip
        arrays |= {
            f"{name}_true": true_Q.reshape(g, g).astype(np.int8),
            f"{name}_pred": pred_Q.reshape(g, g).astype(np.int8),
            f"{name}_context_x": np.asarray(context_ND),
            f"{name}_context_y": np.asarray(labels_N),
            f"{name}_extent": np.asarray(extent),
        }
    return records, arrays
