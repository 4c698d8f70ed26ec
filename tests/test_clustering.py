"""Clustering baselines against literal numpy re-computations (Lloyd and EM loops over points and clusters), and on
well-separated synthetic clusters. Few distinct shapes: every (shape, static count) pair is one compile."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from baselines.clustering import Mixture, assign, gmm_em, gmm_posterior, kmeans, kmeans_plus_plus_init
from icl_meta.errors import ConfigError
from icl_meta.label_metrics import accuracy_perm, accuracy_raw

B, N, D, C = 3, 30, 8, 3
FAST = {"restarts": 4, "iterations": 20}  # one static configuration shared by the key-driven calls


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Overlapping random data (soft EM responsibilities, non-trivial Lloyd moves) and initial centers: data points,
    plus one far-away center in task 2, whose cluster is empty from the start."""
    rng = np.random.default_rng(0)
    x_BND = rng.normal(size=(B, N, D)).astype(np.float32)
    init_BCD = np.stack([x[rng.choice(N, C, replace=False)] for x in x_BND])
    init_BCD[2, 1] = 50.0
    return x_BND, init_BCD


def separated(d: int, seed: int, b: int = B, n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_BND, y_BN, means_BCD): C=3 clusters per task, means ~ N(0, 4 I) at least 1 apart, sigma 0.1, every class
    present."""
    rng = np.random.default_rng(seed)
    means_BCD = 2.0 * rng.normal(size=(b, C, d))
    gaps = [np.linalg.norm(m[i] - m[j]) for m in means_BCD for i in range(C) for j in range(i)]
    assert min(gaps) > 1.0
    y_BN = np.stack([rng.permutation(np.arange(n) % C) for _ in range(b)])
    x_BND = np.take_along_axis(means_BCD, y_BN[:, :, None], axis=1) + 0.1 * rng.normal(size=(b, n, d))
    return x_BND.astype(np.float32), y_BN, means_BCD.astype(np.float32)


def _np_nearest(x_ND: np.ndarray, c_CD: np.ndarray) -> np.ndarray:
    return np.array([np.argmin([np.sum((xn - ck) ** 2) for ck in c_CD]) for xn in x_ND])


def _np_lloyd(x_ND: np.ndarray, c_CD: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    x_ND, c_CD = x_ND.astype(np.float64), c_CD.astype(np.float64).copy()
    for _ in range(iterations):
        labels = _np_nearest(x_ND, c_CD)
        for k in range(len(c_CD)):
            if np.any(labels == k):  # an empty cluster keeps its center
                c_CD[k] = x_ND[labels == k].mean(0)
    return _np_nearest(x_ND, c_CD), c_CD


def _np_e_step(x_ND, means_CD, var, weights_C) -> tuple[np.ndarray, float]:
    d = x_ND.shape[1]
    log_joint = np.array(
        [
            [
                np.log(w) - 0.5 * np.sum((xn - mu) ** 2) / var - 0.5 * d * np.log(2 * np.pi * var)
                for mu, w in zip(means_CD, weights_C)
            ]
            for xn in x_ND
        ]
    )
    top = log_joint.max(1, keepdims=True)
    log_px = top[:, 0] + np.log(np.exp(log_joint - top).sum(1))
    return log_joint - log_px[:, None], float(log_px.sum())


def _np_em(x_ND: np.ndarray, means_CD: np.ndarray, iterations: int, floor: float = 1e-6):
    """Literal EM, isotropic shared variance: start at the given means, uniform weights, the nearest-mean variance."""
    x_ND, means_CD = x_ND.astype(np.float64), means_CD.astype(np.float64).copy()
    n, d = x_ND.shape
    var = max(np.mean([min(np.sum((xn - mu) ** 2) for mu in means_CD) for xn in x_ND]) / d, floor)
    weights_C = np.full(len(means_CD), 1.0 / len(means_CD))
    for _ in range(iterations):
        resp_NC = np.exp(_np_e_step(x_ND, means_CD, var, weights_C)[0])
        mass_C = resp_NC.sum(0)
        for k in range(len(means_CD)):
            if mass_C[k] > 1e-6:
                means_CD[k] = resp_NC[:, k] @ x_ND / mass_C[k]
        spread = sum(
            resp_NC[i, k] * np.sum((x_ND[i] - means_CD[k]) ** 2) for i in range(n) for k in range(len(means_CD))
        )
        var = max(spread / (n * d), floor)
        weights_C = mass_C / n
    log_resp_NC, loglik = _np_e_step(x_ND, means_CD, var, weights_C)
    return means_CD, var, weights_C, log_resp_NC, loglik


def test_kmeans_matches_numpy_lloyd(blobs) -> None:
    x_BND, init_BCD = blobs
    labels_BN, centers_BCD = kmeans(None, x_BND, C, iterations=6, init_BCD=init_BCD)
    assert labels_BN.dtype == np.int32 and labels_BN.shape == (B, N) and centers_BCD.shape == (B, C, D)
    for b in range(B):
        want_labels, want_centers = _np_lloyd(x_BND[b], init_BCD[b], 6)
        np.testing.assert_array_equal(np.asarray(labels_BN[b]), want_labels)
        np.testing.assert_allclose(np.asarray(centers_BCD[b]), want_centers, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(centers_BCD[2, 1]), np.full(D, 50.0))  # the empty cluster stayed put
    np.testing.assert_array_equal(np.asarray(assign(x_BND, centers_BCD)), np.asarray(labels_BN))


def test_gmm_em_matches_numpy_em(blobs) -> None:
    x_BND, init_BCD = blobs
    init_BCD = init_BCD.copy()
    init_BCD[2, 1] = x_BND[2, 7]  # EM from a far center would only test the floor of the weights
    fit = gmm_em(None, x_BND, C, iterations=5, init_BCD=init_BCD)
    assert isinstance(fit, Mixture) and fit.labels_BN.dtype == np.int32
    for b in range(B):
        means, var, weights, log_resp, loglik = _np_em(x_BND[b], init_BCD[b], 5)
        np.testing.assert_allclose(np.asarray(fit.means_BCD[b]), means, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(fit.var_B[b]), var, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(fit.weights_BC[b]), weights, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(fit.log_resp_BNC[b]), log_resp, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(float(fit.log_likelihood_B[b]), loglik, rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(fit.labels_BN[b]), log_resp.argmax(1))
    np.testing.assert_allclose(np.asarray(gmm_posterior(x_BND, fit)), np.asarray(fit.log_resp_BNC), atol=1e-5)


@pytest.mark.parametrize("d", [2, 8])
def test_well_separated_clusters_are_recovered(d: int) -> None:
    x_BND, y_BN, _ = separated(d, seed=d)
    keys = jax.random.split(jax.random.key(d), B)  # batched keys, as in the vmap test: one compile for both at d=D
    labels_BN, _ = kmeans(keys, x_BND, C, **FAST)
    np.testing.assert_array_equal(accuracy_perm(labels_BN, y_BN, C), 1.0)
    fit = gmm_em(keys, x_BND, C, **FAST)
    np.testing.assert_array_equal(accuracy_perm(fit.labels_BN, y_BN, C), 1.0)
    assert np.all(np.asarray(fit.var_B) < 0.1**2 * 2)  # the fitted shared variance is about sigma^2
    # held-out points of the same tasks get the posterior argmax of their own cluster (up to the same renaming)
    np.testing.assert_array_equal(accuracy_perm(np.argmax(gmm_posterior(x_BND, fit), -1), y_BN, C), 1.0)


def test_anchored_runs_keep_label_identity() -> None:
    """F1a's baseline: tasks whose means are shifted global anchors; k-means and EM from the anchors name every
    cluster by its anchor, so raw accuracy (no permutation matching) is perfect."""
    x_BND, y_BN, means_BCD = separated(8, seed=8)
    anchors_CD = means_BCD[0]
    x_BND = x_BND - means_BCD[np.arange(B)[:, None], y_BN] + anchors_CD[y_BN]  # all tasks around the same anchors
    x_BND = x_BND + 0.1 * np.random.default_rng(1).normal(size=(B, 1, 8)).astype(np.float32)  # a task shift
    labels_BN, _ = kmeans(None, x_BND, C, init_CD=anchors_CD)
    np.testing.assert_array_equal(accuracy_raw(labels_BN, y_BN), 1.0)
    np.testing.assert_array_equal(accuracy_raw(gmm_em(None, x_BND, C, init_CD=anchors_CD).labels_BN, y_BN), 1.0)
    # the same run from a relabelled anchor set renames the clusters accordingly: the index IS the label
    shuffled = np.array([2, 0, 1])
    relabelled_BN, _ = kmeans(None, x_BND, C, init_CD=anchors_CD[shuffled])
    np.testing.assert_array_equal(shuffled[np.asarray(relabelled_BN)], y_BN)


def test_plus_plus_seeds_are_distinct_points() -> None:
    x_BND, y_BN, _ = separated(2, seed=2)
    seeds_CD = np.asarray(kmeans_plus_plus_init(jax.random.key(3), x_BND[0], C))
    hits = [np.flatnonzero(np.all(x_BND[0] == s, axis=1)) for s in seeds_CD]
    assert all(len(h) == 1 for h in hits) and len({int(h[0]) for h in hits}) == C
    assert len({int(y_BN[0, h[0]]) for h in hits}) == C  # D^2 sampling: one seed per far-apart cluster
    two_points = np.repeat(x_BND[0, :2], 15, axis=0)  # fewer distinct points than classes: no NaN, still points
    seeds = np.asarray(kmeans_plus_plus_init(jax.random.key(3), two_points, C))
    assert np.all([np.any(np.all(two_points == s, axis=1)) for s in seeds])


def test_vmap_over_tasks_equals_per_task_calls(blobs) -> None:
    x_BND, _ = blobs
    keys = jax.random.split(jax.random.key(7), B)
    labels_BN, centers_BCD = kmeans(keys, x_BND, C, **FAST)
    for b in range(B):
        labels_N, centers_CD = kmeans(keys[b : b + 1], x_BND[b : b + 1], C, **FAST)
        np.testing.assert_array_equal(np.asarray(labels_N[0]), np.asarray(labels_BN[b]))
        np.testing.assert_allclose(np.asarray(centers_CD[0]), np.asarray(centers_BCD[b]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda x, i: kmeans(jax.random.key(0), x, 0), "kmeans: num_classes must be an integer >= 1, got 0"),
        (lambda x, i: kmeans(jax.random.key(0), x, C, restarts=0), "kmeans: restarts must be an integer >= 1"),
        (lambda x, i: gmm_em(jax.random.key(0), x, C, restarts=0), "gmm_em: restarts must be an integer >= 1"),
        (lambda x, i: kmeans(None, x, C, init_CD=i[0, :2]), "init_CD must have shape [C, D] = [3, 8], got (2, 8)"),
        (lambda x, i: gmm_em(None, x, C, init_BCD=i[0]), "init_BCD must have shape [B, C, D] = [3, 3, 8], got (3, 8)"),
        (lambda x, i: kmeans(None, x, C, init_CD=i[0], init_BCD=i), "give at most one of init_CD and init_BCD"),
        (lambda x, i: kmeans(None, x, C), "kmeans: key is required without initial centers"),
        (lambda x, i: kmeans(jax.random.key(0), x, N + 1), "kmeans: num_classes (k-means++ seeding, N=30 points)"),
        (lambda x, i: kmeans(jax.random.split(jax.random.key(0), 2), x, C), "a batch of B=3 keys, got shape (2,)"),
        (lambda x, i: kmeans(jax.random.key(0), x[0], C), "kmeans: x_BND must be an array [B, N, D]"),
        (lambda x, i: gmm_em(None, x, C, init_BCD=i, var_floor=0.0), "gmm_em: var_floor must be a finite number > 0"),
        (lambda x, i: assign(x, i[:, :, :2]), "assign: centers_BCD must have shape [B, C, D] = [3, C >= 1, 8]"),
        (lambda x, i: kmeans_plus_plus_init(jax.random.key(0), x[0], 31), "must be an integer in 1..30, got 31"),
    ],
)
def test_bad_input_is_a_one_line_config_error(blobs, call, needle: str) -> None:
    x_BND, init_BCD = blobs
    with pytest.raises(ConfigError) as err:
        call(x_BND, init_BCD)
    assert needle in str(err.value) and "\n" not in str(err.value)
