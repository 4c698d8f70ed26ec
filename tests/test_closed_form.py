"""Closed-form learners against literal numpy re-computations (a loop over tasks and positions)."""

from __future__ import annotations

from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import baselines
from icl_meta.contracts import TaskSpec
from icl_meta.errors import ConfigError

B, N, D, C = 3, 9, 3, 3


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x_BND = rng.normal(size=(B, N, D)).astype(np.float32)
    # Early contexts miss classes: task 0 sees class 2 only at position 6, task 1 starts with class 2, task 2 never
    # sees class 1 at all.
    y_BN = np.array(
        [
            [0, 1, 0, 1, 1, 0, 2, 1, 2],
            [2, 2, 0, 2, 0, 1, 0, 2, 1],
            [0, 0, 2, 0, 2, 2, 0, 2, 0],
        ],
        dtype=np.int32,
    )
    w_D = rng.normal(size=D)
    t_BN = (x_BND @ w_D + 0.1 * rng.normal(size=(B, N))).astype(np.float32)
    return x_BND, y_BN, t_BN


def _literal(score_fn, x_BND: np.ndarray, y_BN: np.ndarray) -> np.ndarray:
    """score_fn(context x [i, d] float64, context y [i], query x [d]) for every task and position i = 0..N-1."""
    x_BND = x_BND.astype(np.float64)
    return np.array([[score_fn(x[:i], y[:i], x[i]) for i in range(x.shape[0])] for x, y in zip(x_BND, y_BN)])


def _ncm(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> np.ndarray:
    protos = [xc[yc == k].mean(0) if np.any(yc == k) else np.zeros_like(xq) for k in range(C)]
    return np.array([-np.sum((xq - p) ** 2) for p in protos])


def _matching(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> np.ndarray:
    cos = [xq @ xj / (np.linalg.norm(xq) * np.linalg.norm(xj)) for xj in xc]
    return np.array([sum(c for c, yj in zip(cos, yc) if yj == k) for k in range(C)])


def _ave_label(num_classes: int):
    """The amortization rule with w_hat = context mean: class k iff s in (t_{k+1}, t_k], t_k = Phi^-1(1 - k/C)."""
    thresholds = [NormalDist().inv_cdf(1 - k / num_classes) for k in range(1, num_classes)]

    def label(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> int:
        w = xc.mean(0) if len(xc) else np.zeros_like(xq)
        s = np.sum(xq - w) / np.sqrt(len(xq))
        return sum(s <= t for t in thresholds)

    return label


def _knn(k: int):
    def votes(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> np.ndarray:
        nearest = np.argsort(np.sum((xc - xq) ** 2, axis=1), kind="stable")[:k]
        return np.bincount(yc[nearest], minlength=C).astype(float)

    return votes


def _ridge(lam: float):
    def fit(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> float:
        if len(xc) == 0:
            return 0.0
        w = np.linalg.pinv(xc) @ yc if lam == 0 else np.linalg.solve(xc.T @ xc + lam * np.eye(len(xq)), xc.T @ yc)
        return float(xq @ w)

    return fit


@pytest.mark.parametrize(
    "name, hparams, fn",
    [
        ("ncm", {}, _ncm),
        ("matching", {}, _matching),
        ("knn", {"k": 1}, _knn(1)),
        ("knn", {"k": 3}, _knn(3)),
        ("knn", {"k": 20}, _knn(20)),  # k > N: every context example votes
    ],
)
def test_classifier_scores_match_literal(data, name, hparams, fn) -> None:
    x, y, _ = data
    learner = baselines.get(name, num_classes=C, **hparams)
    assert learner.init(jax.random.key(0), TaskSpec(d=D, num_classes=C)) is None
    scores_BNC = np.asarray(jax.jit(learner.predict)(None, jnp.asarray(x), jnp.asarray(y)))
    expected_BNC = _literal(fn, x, y)
    assert scores_BNC.shape == (B, N, C)
    np.testing.assert_allclose(scores_BNC, expected_BNC, rtol=1e-5, atol=1e-5)
    # Position 0 has an empty context: every score ties, so the prediction is class 0.
    np.testing.assert_array_equal(scores_BNC[:, 0].argmax(-1), 0)


def test_averaging_matches_literal(data) -> None:
    x, y, _ = data
    for num_classes in (2, C):
        learner = baselines.get("averaging", num_classes=num_classes)
        scores_BNC = np.asarray(jax.jit(learner.predict)(None, jnp.asarray(x), jnp.asarray(y)))
        assert scores_BNC.shape == (B, N, num_classes)
        np.testing.assert_array_equal(scores_BNC.argmax(-1), _literal(_ave_label(num_classes), x, y))
        np.testing.assert_array_equal(scores_BNC.sum(-1), 1.0)  # one-hot


def _gradient_descent(steps: int, lr: float):
    """`steps` gradient steps on 1/(2i) sum (x_j.w - y_j)^2 from w = 0, step size lr / mean ||x_j||^2."""

    def fit(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> float:
        if len(xc) == 0:
            return 0.0
        w = np.zeros_like(xq)
        eta = lr / np.mean(np.sum(xc**2, axis=1))
        for _ in range(steps):
            w = w - eta * xc.T @ (xc @ w - yc) / len(xc)
        return float(xq @ w)

    return fit


def _mean_estimator(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> float:
    return 0.0 if len(xc) == 0 else float(xq @ np.mean(yc[:, None] * xc, axis=0))


REGRESSORS = [
    ("least_squares", {}, _ridge(0)),
    ("ridge", {"lam": 0.1}, _ridge(0.1)),
    ("gradient_descent", {"steps": 1}, _gradient_descent(1, 1.0)),
    ("gradient_descent", {"steps": 7, "lr": 0.5}, _gradient_descent(7, 0.5)),
    ("mean_estimator", {}, _mean_estimator),
]


@pytest.mark.parametrize("name, hparams, fn", REGRESSORS)
def test_regression_matches_literal(data, name, hparams, fn) -> None:
    x, _, t = data
    learner = baselines.get(name, **hparams)
    assert learner.init(jax.random.key(0), TaskSpec(d=D, num_classes=None)) is None
    pred_BN = np.asarray(jax.jit(learner.predict)(None, jnp.asarray(x), jnp.asarray(t)))
    assert pred_BN.shape == (B, N)
    np.testing.assert_allclose(pred_BN, _literal(fn, x, t), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pred_BN[:, 0], 0.0)


def test_ridge_limits(data) -> None:
    x, _, t = data
    ls = baselines.get("least_squares").predict(None, jnp.asarray(x), jnp.asarray(t))
    ridge0 = baselines.get("ridge", lam=0.0).predict(None, jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(ridge0, ls, rtol=1e-6, atol=1e-6)
    # The default lam=1e-3 is float32-sensitive on near-singular contexts, hence the looser tolerance.
    ridge = baselines.get("ridge").predict(None, jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(ridge, _literal(_ridge(1e-3), x, t), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("ncm", {"num_classes": C}),
        ("matching", {"num_classes": C}),
        ("averaging", {"num_classes": C}),
        ("knn", {"k": 2, "num_classes": C}),
        ("least_squares", {}),
        ("ridge", {}),
        ("gradient_descent", {"steps": 3}),
        ("mean_estimator", {}),
    ],
)
def test_positions_subset_equals_full(data, name, hparams) -> None:
    x, y, t = data
    learner = baselines.get(name, **hparams)
    targets = t if name in ("least_squares", "ridge", "gradient_descent", "mean_estimator") else y
    positions = jnp.array([0, 3, 8, 5, 1])
    predict = jax.jit(learner.predict)
    full = predict(None, jnp.asarray(x), jnp.asarray(targets))
    part = predict(None, jnp.asarray(x), jnp.asarray(targets), positions)
    np.testing.assert_allclose(part, full[:, positions], rtol=1e-6, atol=1e-6)


def test_gradient_descent_converges_to_least_squares_beyond_d(data) -> None:
    """From w = 0 the normalised steps converge to the minimum-norm fit; with i > d the fit is unique."""
    x, t = jnp.asarray(data[0]), jnp.asarray(data[2])
    gd = jax.jit(baselines.get("gradient_descent", steps=3000, lr=1.0).predict)(None, x, t)
    ls = baselines.get("least_squares").predict(None, x, t)
    np.testing.assert_allclose(gd[:, D + 2 :], ls[:, D + 2 :], rtol=1e-3, atol=1e-3)
    few = baselines.get("gradient_descent", steps=2).predict(None, x, t)
    assert np.max(np.abs(few[:, D + 2 :] - ls[:, D + 2 :])) > 1e-2  # two steps are not there yet


def test_least_squares_noiseless_error_curve() -> None:
    """Noiseless y = x.w, w ~ N(0, I): the error is ~0 once i >= d, and E = d - i before (the unseen directions)."""
    d, n, tasks = 5, 8, 10_000
    kx, kw = jax.random.split(jax.random.key(1))
    x_BND = jax.random.normal(kx, (tasks, n, d))
    y_BN = jnp.einsum("bnd,bd->bn", x_BND, jax.random.normal(kw, (tasks, d)))
    pred_BN = jax.jit(baselines.get("least_squares").predict)(None, x_BND, y_BN)
    err_N = np.asarray(jnp.mean((pred_BN - y_BN) ** 2, axis=0))
    np.testing.assert_allclose(err_N[:d], d - np.arange(d), rtol=0.1)
    assert np.all(err_N[d:] < 1e-3), err_N


def test_bad_hparams_and_names() -> None:
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        baselines.get("knn", k=0, num_classes=2)
    with pytest.raises(ConfigError, match="k must be"):
        baselines.get("knn", k=1.5, num_classes=2)
    with pytest.raises(ConfigError, match="lam must be"):
        baselines.get("ridge", lam=-1.0)
    with pytest.raises(ConfigError, match="gradient_descent: steps must be an integer >= 1, got 0"):
        baselines.get("gradient_descent", steps=0)
    with pytest.raises(ConfigError, match="gradient_descent: lr must be a finite number > 0"):
        baselines.get("gradient_descent", lr=0.0)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
        baselines.get("ncm", num_classes=1)
    with pytest.raises(ConfigError, match=r"unknown learner 'nope'; accepted: .*icl.*knn.*ncm"):
        baselines.get("nope")
    with pytest.raises(ConfigError, match=r"knn: unknown parameter\(s\) lam; accepted: k, num_classes"):
        baselines.get("knn", lam=1.0)
    with pytest.raises(ConfigError, match="num_classes=3"):
        baselines.get("ncm", num_classes=2).init(jax.random.key(0), TaskSpec(d=2, num_classes=3))
    for name in ("ncm", "matching", "averaging", "knn"):  # C is never guessed: labels >= a default C would be lost
        with pytest.raises(ConfigError, match=f"{name}: num_classes must be given"):
            baselines.get(name)
    with pytest.raises(ConfigError, match="regression"):
        baselines.get("ridge").init(jax.random.key(0), TaskSpec(d=2, num_classes=2))
    rules = {"ncm", "matching", "averaging", "knn", "least_squares", "ridge", "gradient_descent", "mean_estimator"}
    assert rules <= set(baselines.names())


def test_every_class_counts_at_three_classes(data) -> None:
    """With C=3 stated, the rule agrees with its numpy formula on every query (the guessed-C=2 bug agreed on 67%)."""
    x, y, _ = data
    assert set(np.unique(y)) == set(range(C)) and C == 3
    scores_BNC = np.asarray(baselines.get("ncm", num_classes=C).predict(None, jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_array_equal(scores_BNC.argmax(-1), _literal(_ncm, x, y).argmax(-1))
