"""Classical unsupervised baselines of the unsupervised-ICL analog (docs/papers.md section 9.3): k-means with k-means++
seeding, and EM for an isotropic Gaussian mixture with one shared variance (the prototype families' own generator,
so about the best any unsupervised method can do on them).

Pure jitted JAX functions vectorised over tasks (vmap over B, and over restarts within a task), not registered
learners. A cluster index is an arbitrary name, scored with `icl_meta.label_metrics.accuracy_perm`, except when a run
starts from given centers (e.g. the family's global anchors): cluster c then grows from center c, so its index IS the
label (`accuracy_raw`), the classical analog of "zero-shot init + unsupervised refinement".

Keys: `key` is one PRNG key (one draw for the whole batch) or a batch of B keys, one per task, so that a task's
result does not depend on the batch it came in. Initial centers: `init_CD` (shared by every task, e.g. the anchors) or
`init_BCD` (one set per task); with either there is one run from them, no restarts, and the key may be None.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

from icl_meta.errors import ConfigError, require, require_int, require_number

Array = jax.Array

_HI = lax.Precision.HIGHEST  # float32 sums on accelerators (TF32 would move centers visibly)
_Tree = TypeVar("_Tree")
EMPTY_MASS = 1e-6  # an EM component with less responsibility mass than this (in points) keeps its previous mean


class Mixture(NamedTuple):
    """A fitted isotropic Gaussian mixture with one shared variance per task (`gmm_em`)."""

    labels_BN: Array  # int32, argmax of the posterior
    means_BCD: Array
    var_B: Array  # the shared per-dimension variance
    weights_BC: Array  # mixing weights
    log_resp_BNC: Array  # log posterior of each component at each point
    log_likelihood_B: Array  # sum over points of log p(x_n), at the returned parameters


# ----------------------------------------------------------------------------------------------- one task at a time


def _sqdist(x_ND: Array, c_CD: Array) -> Array:
    """[N, C] squared distances, by differences (not the expanded form, which cancels badly near a center)."""
    return jnp.sum(jnp.square(x_ND[:, None, :] - c_CD[None, :, :]), axis=-1)


def _plus_plus(u_C: Array, x_ND: Array) -> Array:
    """k-means++ seeding from C uniforms in [0, 1): a uniform first center, then each next one drawn with probability
    proportional to the squared distance to the nearest center chosen so far (uniform if every point already is a
    center), by inverse CDF. The uniforms are drawn up front, once for all restarts and tasks: random-bit generation
    dominates the compile time, so the programs hold one draw."""
    n = x_ND.shape[0]
    num_classes = u_C.shape[0]
    first = x_ND[jnp.minimum((u_C[0] * n).astype(jnp.int32), n - 1)]
    centers_CD = jnp.zeros((num_classes, x_ND.shape[1]), x_ND.dtype).at[0].set(first)
    mind2_N = jnp.sum(jnp.square(x_ND - first), axis=-1)

    def pick(k: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        centers_CD, mind2_N = carry
        cdf_N = jnp.cumsum(jnp.where(jnp.sum(mind2_N) > 0, mind2_N, 1.0))
        index = jnp.minimum(jnp.sum(cdf_N <= u_C[k] * cdf_N[-1]), n - 1)  # the first i with cdf_i > target
        center_D = x_ND[index]
        return centers_CD.at[k].set(center_D), jnp.minimum(mind2_N, jnp.sum(jnp.square(x_ND - center_D), axis=-1))

    return lax.fori_loop(1, num_classes, pick, (centers_CD, mind2_N))[0]


def _lloyd(x_ND: Array, centers_CD: Array, iterations: int) -> tuple[Array, Array, Array]:
    """`iterations` Lloyd steps (assign to the nearest center, move each center to its points' mean; an empty cluster
    keeps its center), then the labels and inertia of the final centers: (labels_N, centers_CD, inertia)."""
    num_classes = centers_CD.shape[0]

    def step(c_CD: Array, _: None) -> tuple[Array, None]:
        onehot_NC = jax.nn.one_hot(jnp.argmin(_sqdist(x_ND, c_CD), axis=-1), num_classes, dtype=x_ND.dtype)
        counts_C = onehot_NC.sum(0)
        sums_CD = jnp.einsum("nc,nd->cd", onehot_NC, x_ND, precision=_HI)
        return jnp.where(counts_C[:, None] > 0, sums_CD / jnp.maximum(counts_C, 1.0)[:, None], c_CD), None

    centers_CD = lax.scan(step, centers_CD, None, length=iterations)[0]
    d2_NC = _sqdist(x_ND, centers_CD)
    return jnp.argmin(d2_NC, axis=-1).astype(jnp.int32), centers_CD, jnp.sum(jnp.min(d2_NC, axis=-1))


def _e_step(x_ND: Array, means_CD: Array, var: Array, weights_C: Array) -> tuple[Array, Array]:
    """Log posteriors [N, C] and the total log-likelihood, in log space."""
    d = x_ND.shape[1]
    log_joint_NC = jnp.log(weights_C) - 0.5 * _sqdist(x_ND, means_CD) / var - 0.5 * d * jnp.log(2 * math.pi * var)
    log_px_N = jax.nn.logsumexp(log_joint_NC, axis=-1)
    return log_joint_NC - log_px_N[:, None], jnp.sum(log_px_N)


def _m_step(x_ND: Array, log_resp_NC: Array, means_CD: Array, var_floor: Array) -> tuple[Array, Array, Array]:
    """Means (a component with no mass keeps its mean), then the shared variance about the new means, and weights."""
    n, d = x_ND.shape
    resp_NC = jnp.exp(log_resp_NC)
    mass_C = resp_NC.sum(0)
    sums_CD = jnp.einsum("nc,nd->cd", resp_NC, x_ND, precision=_HI)
    means_CD = jnp.where(mass_C[:, None] > EMPTY_MASS, sums_CD / jnp.maximum(mass_C, EMPTY_MASS)[:, None], means_CD)
    var = jnp.maximum(jnp.sum(resp_NC * _sqdist(x_ND, means_CD)) / (n * d), var_floor)
    return means_CD, var, mass_C / n


def _em(x_ND: Array, means_CD: Array, iterations: int, var_floor: Array) -> Mixture:
    """EM from `means_CD` with uniform weights and the variance of the nearest-mean partition, then a final E-step
    (labels, posteriors and log-likelihood at the returned parameters). Fields carry no task axis here."""
    n, d = x_ND.shape
    num_classes = means_CD.shape[0]
    var = jnp.maximum(jnp.sum(jnp.min(_sqdist(x_ND, means_CD), axis=-1)) / (n * d), var_floor)
    weights_C = jnp.full((num_classes,), 1.0 / num_classes, x_ND.dtype)

    def step(params: tuple[Array, Array, Array], _: None) -> tuple[tuple[Array, Array, Array], None]:
        means_CD, var, weights_C = params
        return _m_step(x_ND, _e_step(x_ND, means_CD, var, weights_C)[0], means_CD, var_floor), None

    means_CD, var, weights_C = lax.scan(step, (means_CD, var, weights_C), None, length=iterations)[0]
    log_resp_NC, loglik = _e_step(x_ND, means_CD, var, weights_C)
    labels_N = jnp.argmax(log_resp_NC, axis=-1).astype(jnp.int32)
    return Mixture(labels_N, means_CD, var, weights_C, log_resp_NC, loglik)


def _best(score_R: Array, tree: _Tree) -> _Tree:
    """The restart with the highest score (NaN counts as worst)."""
    best = jnp.argmax(jnp.where(jnp.isnan(score_R), -jnp.inf, score_R))
    return jax.tree.map(lambda leaf: leaf[best], tree)


# ------------------------------------------------------------------------------------------------ batched, jitted


def _is_single_key(key: Array) -> bool:
    """One key (typed, shape []; or raw uint32, shape [2]) rather than a batch of them."""
    return key.ndim == (0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1)


@functools.partial(jax.jit, static_argnames=("batch", "restarts", "num_classes"))
def _uniforms(key: Array, batch: int, restarts: int, num_classes: int) -> Array:
    """[B, R, C] uniforms for the k-means++ seedings: one draw from a single key, or one per task from B keys (then a
    task's draws, hence its result, do not depend on the batch it came in). A program of its own: the random-bit
    generator is slow to compile, and this way one compile serves k-means and EM at every input dim."""
    if _is_single_key(key):
        return jax.random.uniform(key, (batch, restarts, num_classes))
    return jax.vmap(lambda k: jax.random.uniform(k, (restarts, num_classes)))(key)


@functools.partial(jax.jit, static_argnames=("num_classes", "restarts", "iterations"))
def _kmeans_batch(
    u_BRC: Array | None, x_BND: Array, init_BCD: Array | None, num_classes: int, restarts: int, iterations: int
) -> tuple[Array, Array]:
    def task(u_RC: Array | None, x_ND: Array, init_CD: Array | None) -> tuple[Array, Array]:
        if init_CD is not None:
            return _lloyd(x_ND, init_CD, iterations)[:2]
        assert u_RC is not None
        seeds_RCD = jax.vmap(lambda u_C: _plus_plus(u_C.astype(x_ND.dtype), x_ND))(u_RC)
        labels_RN, centers_RCD, inertia_R = jax.vmap(lambda c: _lloyd(x_ND, c, iterations))(seeds_RCD)
        return _best(-inertia_R, (labels_RN, centers_RCD))

    return jax.vmap(task)(u_BRC, x_BND, init_BCD)


@functools.partial(jax.jit, static_argnames=("num_classes", "restarts", "iterations", "kmeans_iterations"))
def _gmm_batch(
    u_BRC: Array | None,
    x_BND: Array,
    init_BCD: Array | None,
    var_floor: Array,
    num_classes: int,
    restarts: int,
    iterations: int,
    kmeans_iterations: int,
) -> Mixture:
    def task(u_RC: Array | None, x_ND: Array, init_CD: Array | None) -> Mixture:
        if init_CD is not None:
            return _em(x_ND, init_CD, iterations, var_floor)
        assert u_RC is not None

        def restart(u_C: Array) -> Mixture:
            centers_CD = _lloyd(x_ND, _plus_plus(u_C.astype(x_ND.dtype), x_ND), kmeans_iterations)[1]
            return _em(x_ND, centers_CD, iterations, var_floor)

        fits = jax.vmap(restart)(u_RC)
        return _best(fits.log_likelihood_B, fits)

    return jax.vmap(task)(u_BRC, x_BND, init_BCD)


@jax.jit
def _assign_batch(x_BND: Array, centers_BCD: Array) -> Array:
    return jax.vmap(lambda x_ND, c_CD: jnp.argmin(_sqdist(x_ND, c_CD), axis=-1).astype(jnp.int32))(x_BND, centers_BCD)


@jax.jit
def _posterior_batch(x_BND: Array, means_BCD: Array, var_B: Array, weights_BC: Array) -> Array:
    return jax.vmap(lambda *args: _e_step(*args)[0])(x_BND, means_BCD, var_B, weights_BC)


# ------------------------------------------------------------------------------------------------ checked entries


def _points(x: Array, name: str, axes: str) -> Array:
    """`x` as a float array with one axis per letter of `axes` (e.g. "BND") and at least one point and dimension."""
    x = jnp.asarray(x)
    require(
        x.ndim == len(axes) and x.shape[-1] >= 1 and x.shape[-2] >= 1,
        f"{name} must be an array [{', '.join(axes)}] with N >= 1 and D >= 1, got shape {tuple(x.shape)}",
    )
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _seed_uniforms(key: Array | None, batch: int, restarts: int, num_classes: int, name: str) -> Array:
    """The seeding uniforms [B, R, C] from `key` checked: one PRNG key, or a batch of B keys (one per task)."""
    if key is None:
        raise ConfigError(f"{name}: key is required without initial centers (init_CD or init_BCD)")
    key = jnp.asarray(key)
    single_ndim = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    require(
        key.ndim == single_ndim or (key.ndim == single_ndim + 1 and key.shape[0] == batch),
        f"{name}: key must be one PRNG key or a batch of B={batch} keys, got shape {tuple(key.shape)}",
    )
    return _uniforms(key, batch, restarts, num_classes)


def _initial_centers(
    init_CD: Array | None, init_BCD: Array | None, x_BND: Array, num_classes: int, name: str
) -> Array | None:
    """The [B, C, D] initial centers, or None (k-means++ seeding)."""
    b, n, d = x_BND.shape
    require(init_CD is None or init_BCD is None, f"{name}: give at most one of init_CD and init_BCD, got both")
    if init_CD is None and init_BCD is None:
        require_int(num_classes, f"{name}: num_classes (k-means++ seeding, N={n} points)", high=n)
        return None
    if init_CD is not None:
        want: tuple[int, ...] = (num_classes, d)
        init = jnp.asarray(init_CD, x_BND.dtype)
        label = f"init_CD must have shape [C, D] = [{num_classes}, {d}]"
    else:
        init, want = jnp.asarray(init_BCD, x_BND.dtype), (b, num_classes, d)
        label = f"init_BCD must have shape [B, C, D] = [{b}, {num_classes}, {d}]"
    require(init.shape == want, f"{name}: {label}, got {tuple(init.shape)}")
    return jnp.broadcast_to(init, (b, num_classes, d))


def _check_counts(name: str, num_classes: int, restarts: int, iterations: int) -> None:
    require_int(num_classes, f"{name}: num_classes")
    require_int(restarts, f"{name}: restarts")
    require_int(iterations, f"{name}: iterations", 0)


def kmeans_plus_plus_init(key: Array, x_ND: Array, num_classes: int) -> Array:
    """k-means++ seeding of one task's points, [C, D] (distinct points of x unless fewer than C are distinct)."""
    x_ND = _points(x_ND, "kmeans_plus_plus_init: x_ND", "ND")
    require_int(num_classes, f"kmeans_plus_plus_init: num_classes (N={x_ND.shape[0]} points)", high=x_ND.shape[0])
    return _plus_plus_jit(key, x_ND, num_classes)


@functools.partial(jax.jit, static_argnames="num_classes")
def _plus_plus_jit(key: Array, x_ND: Array, num_classes: int) -> Array:
    return _plus_plus(jax.random.uniform(key, (num_classes,), x_ND.dtype), x_ND)


def kmeans(
    key: Array | None,
    x_BND: Array,
    num_classes: int,
    *,
    restarts: int = 10,
    iterations: int = 50,
    init_CD: Array | None = None,
    init_BCD: Array | None = None,
) -> tuple[Array, Array]:
    """k-means per task, (labels_BN int32, centers_BCD): `iterations` Lloyd steps from each of `restarts` k-means++
    seedings, keeping the run of lowest inertia; or one run from `init_CD`/`init_BCD` (restarts unused), whose
    cluster c started at center c. The labels are the nearest final center of each point."""
    x_BND = _points(x_BND, "kmeans: x_BND", "BND")
    _check_counts("kmeans", num_classes, restarts, iterations)
    init = _initial_centers(init_CD, init_BCD, x_BND, num_classes, "kmeans")
    u_BRC = None if init is not None else _seed_uniforms(key, x_BND.shape[0], restarts, num_classes, "kmeans")
    return _kmeans_batch(u_BRC, x_BND, init, num_classes, restarts, iterations)


def gmm_em(
    key: Array | None,
    x_BND: Array,
    num_classes: int,
    *,
    restarts: int = 10,
    iterations: int = 100,
    kmeans_iterations: int = 20,
    var_floor: float = 1e-6,
    init_CD: Array | None = None,
    init_BCD: Array | None = None,
) -> Mixture:
    """EM for an isotropic Gaussian mixture with one shared variance and free mixing weights, per task.

    Each of `restarts` runs seeds k-means++, takes `kmeans_iterations` Lloyd steps, and starts EM at those centers
    with uniform weights and the variance of the nearest-center partition (its inertia / (N D)); the run with the
    highest final log-likelihood is kept. With `init_CD`/`init_BCD` there is one run, EM starting at those means
    (component c stays the one nearest center c: no permutation matching). `iterations` EM steps (E then M), then a
    final E-step for the returned labels, posteriors and log-likelihood. The variance is floored at `var_floor`.
    """
    x_BND = _points(x_BND, "gmm_em: x_BND", "BND")
    _check_counts("gmm_em", num_classes, restarts, iterations)
    require_int(kmeans_iterations, "gmm_em: kmeans_iterations", 0)
    require_number(var_floor, "gmm_em: var_floor", above=0)
    init = _initial_centers(init_CD, init_BCD, x_BND, num_classes, "gmm_em")
    u_BRC = None if init is not None else _seed_uniforms(key, x_BND.shape[0], restarts, num_classes, "gmm_em")
    floor = jnp.asarray(var_floor, x_BND.dtype)
    return _gmm_batch(u_BRC, x_BND, init, floor, num_classes, restarts, iterations, kmeans_iterations)


def assign(x_BND: Array, centers_BCD: Array) -> Array:
    """The nearest center of each point, labels_BN int32: labels held-out query points with fitted centers."""
    x_BND = _points(x_BND, "assign: x_BND", "BND")
    centers_BCD = jnp.asarray(centers_BCD, x_BND.dtype)
    b, _, d = x_BND.shape
    require(
        centers_BCD.ndim == 3 and centers_BCD.shape[0] == b and centers_BCD.shape[2] == d and centers_BCD.shape[1] >= 1,
        f"assign: centers_BCD must have shape [B, C, D] = [{b}, C >= 1, {d}], got {tuple(centers_BCD.shape)}",
    )
    return _assign_batch(x_BND, centers_BCD)


def gmm_posterior(x_BND: Array, mixture: Mixture) -> Array:
    """log p(component | x) [B, N, C] of new points under a fitted mixture; its argmax labels held-out queries."""
    x_BND = _points(x_BND, "gmm_posterior: x_BND", "BND")
    b, _, d = x_BND.shape
    means_BCD = mixture.means_BCD
    require(
        means_BCD.shape[0] == b and means_BCD.shape[2] == d,
        f"gmm_posterior: x_BND must have B={means_BCD.shape[0]} tasks and D={means_BCD.shape[2]}, got "
        f"{tuple(x_BND.shape)}",
    )
    return _posterior_batch(x_BND, means_BCD, mixture.var_B, mixture.weights_BC)


__all__ = ["Mixture", "assign", "gmm_em", "gmm_posterior", "kmeans", "kmeans_plus_plus_init"]
