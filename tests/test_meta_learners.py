"""Trainable meta-learners (MatchNet, ProtoNet, CNP, MAML) against literal numpy re-computations of docs/papers.md §5
(a float64 loop over tasks and positions, from the weights read out of the params), plus the prequential contract,
the trainer's loss and its gradients, and bad inputs."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import baselines
import tasks
from icl_meta.contracts import LearnerParams, TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.inner_loop import adapt
from icl_meta.train import loss_fn

B, N, D, C = 3, 9, 3, 3
PAD = -9999.0  # the reference's score for the padded label slots (umix.py)
FLOOR = -math.log(math.e / (math.e + 1 + 2))  # CE(softmax(p), y) for C=2 at best (p = one-hot of y): about 0.744

# The configurations the contract tests run on every learner.
LEARNERS = {
    "matchnet-cosine": dict(name="matchnet", similarity="cosine"),
    "matchnet-dot": dict(name="matchnet", similarity="dot"),
    "protonet": dict(name="protonet"),
    "protonet-embed-query": dict(name="protonet", embed_query=True),
    "cnp": dict(name="cnp"),
    "maml": dict(name="maml", hidden=5, inner_steps=2, inner_lr=1.0),
}


def make(label, **overrides):
    """The learner `label` of LEARNERS, with some hyper-parameters overridden."""
    hparams = {**LEARNERS[label], **overrides}
    return baselines.get(hparams.pop("name"), **hparams)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x_BND = rng.normal(size=(B, N, D)).astype(np.float32)
    # Early contexts miss classes: task 0 sees only class 0 for four positions and never class 2; task 1 starts with
    # class 2 and never sees class 0; task 2 cycles through all classes.
    y_BN = np.array(
        [
            [0, 0, 0, 0, 1, 0, 1, 1, 0],
            [2, 2, 1, 2, 1, 1, 2, 1, 2],
            [1, 0, 2, 0, 2, 1, 0, 2, 1],
        ],
        dtype=np.int32,
    )
    return x_BND, y_BN


@pytest.fixture(scope="module")
def episode():
    """The trainer's setting: the reference's prototype family (d=2, C=2), 8 tasks of 20 examples."""
    family = tasks.get("prototype")
    return family, jax.jit(family.sample, static_argnums=(1, 2))(jax.random.key(0), 8, 20)


# ---------------------------------------------------------------------------------------------------------------------
# numpy float64 references, written from docs/papers.md section 5


def layers64(params, key):
    """The MLP `key` of the params as a list of (W [in, out], b [out]) float64 pairs."""
    return [(np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64)) for layer in params.weights[key]]


def leaky(z):
    return np.where(z > 0, z, 0.01 * z)


def relu(z):
    return np.maximum(z, 0.0)


def two_layer(layers, v, act=leaky):
    """Linear -> act -> Linear."""
    (w0, b0), (w1, b1) = layers
    return act(v @ w0 + b0) @ w1 + b1


def softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def padded(scores, double):
    """[s_0..s_{C-1}, PAD x C] -> log_softmax(softmax(.)) (the reference's loss quirk) or log_softmax(.)."""
    z = np.concatenate([scores, np.full(len(scores), PAD)])
    return log_softmax(softmax(z) if double else z)


def onehot(k, size):
    v = np.zeros(size)
    v[k] = 1.0
    return v


def matchnet_literal(params, x_BND, y_BN, similarity, double):
    g, num_classes = layers64(params, "embed"), params.spec.num_classes
    out = np.zeros((*y_BN.shape, 2 * num_classes))
    for b, (x, y) in enumerate(zip(x_BND.astype(np.float64), y_BN)):
        for i in range(len(x)):
            q = two_layer(g, x[i])
            s = np.zeros(num_classes)
            for j in range(i):
                e = two_layer(g, x[j])
                if similarity == "cosine":  # F.normalize: v / max(||v||, 1e-12)
                    sim = (q / max(np.linalg.norm(q), 1e-12)) @ (e / max(np.linalg.norm(e), 1e-12))
                else:
                    sim = q @ e
                s[y[j]] += sim
            out[b, i] = padded(s, double)
    return out


def protonet_literal(params, x_BND, y_BN, embed_query, double):
    g, num_classes = layers64(params, "embed"), params.spec.num_classes
    out = np.zeros((*y_BN.shape, 2 * num_classes))
    for b, (x, y) in enumerate(zip(x_BND.astype(np.float64), y_BN)):
        for i in range(len(x)):
            q = two_layer(g, x[i]) if embed_query else x[i]
            s = np.zeros(num_classes)
            for k in range(num_classes):
                members = [two_layer(g, x[j]) for j in range(i) if y[j] == k]
                proto = np.mean(members, axis=0) if members else np.zeros(x.shape[1])
                s[k] = -np.sum((proto - q) ** 2)
            out[b, i] = padded(s, double)
    return out


def cnp_literal(params, x_BND, y_BN):
    ff1, ff2, ff_o = layers64(params, "encode"), layers64(params, "aggregate"), layers64(params, "decode")
    two_c = 2 * params.spec.num_classes
    d = x_BND.shape[-1]
    out = np.zeros((*y_BN.shape, two_c))
    for b, (x, y) in enumerate(zip(x_BND.astype(np.float64), y_BN)):
        for i in range(len(x)):
            if i == 0:
                c = np.zeros(d + two_c)  # ff2 skipped
            else:
                r = [two_layer(ff1, np.concatenate([x[j], onehot(y[j], two_c)])) for j in range(i)]
                c = two_layer(ff2, np.mean(r, axis=0))
            out[b, i] = log_softmax(two_layer(ff_o, np.concatenate([c, x[i]])))
    return out


def ce_grads(w1, b1, w2, b2, xc, yc):
    """Hand backprop of mean_j CE(softmax(relu(x_j W1 + b1) W2 + b2), y_j)."""
    n = len(xc)
    z = xc @ w1 + b1
    h = relu(z)
    p = softmax(h @ w2 + b2)
    dlogits = (p - np.eye(w2.shape[1])[yc]) / n
    dw2, db2 = h.T @ dlogits, dlogits.sum(0)
    dz = (dlogits @ w2.T) * (z > 0)
    dw1, db1 = xc.T @ dz, dz.sum(0)
    return dw1, db1, dw2, db2


def maml_literal(params, x_BND, y_BN, steps, lr):
    (w1_0, b1_0), (w2_0, b2_0) = layers64(params, "mlp")
    out = np.zeros((*y_BN.shape, w2_0.shape[1]))
    for b, (x, y) in enumerate(zip(x_BND.astype(np.float64), y_BN)):
        for i in range(len(x)):
            w1, b1, w2, b2 = w1_0, b1_0, w2_0, b2_0
            for _ in range(steps if i > 0 else 0):  # the empty context leaves the network unchanged
                dw1, db1, dw2, db2 = ce_grads(w1, b1, w2, b2, x[:i], y[:i])
                w1, b1, w2, b2 = w1 - lr * dw1, b1 - lr * db1, w2 - lr * dw2, b2 - lr * db2
            out[b, i] = log_softmax(relu(x[i] @ w1 + b1) @ w2 + b2)
    return out


def init(learner, spec, seed):
    """Params with the structure of learner.init (only traced, so nothing compiles) and PyTorch-like uniform weights
    U(-1, 1) / sqrt(fan_in), drawn by numpy."""
    shapes = jax.eval_shape(lambda key: learner.init(key, spec), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.uniform(-1, 1, s.shape) / math.sqrt(s.shape[0]), s.dtype), shapes)


@functools.partial(jax.jit, static_argnums=0)
def jit_predict(learner, params, x, y, positions):
    return learner.predict(params, x, y, positions)


def predict(learner, params, x, y, positions=None):
    """Op by op, except MAML: its inner-loop scan would be traced and compiled again at every eager call."""
    run = jit_predict if learner.name == "maml" else type(learner).predict
    return np.asarray(run(learner, params, jnp.asarray(x), jnp.asarray(y), positions), np.float64)


def assert_log_probs(got, want):
    # rtol covers the padded slots near -1e4, where float32 spacing is ~1e-3; atol the O(1) class slots.
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# 1-3. MatchNet, ProtoNet, CNP against the literal formulas


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matchnet_literal(data, similarity, double):
    x, y = data
    learner = baselines.get("matchnet", similarity=similarity, double_softmax=double)
    params = init(learner, TaskSpec(D, C), 1)
    got = predict(learner, params, x, y)
    assert_log_probs(got, matchnet_literal(params, x, y, similarity, double))
    # Position 0: every class scores 0, so the C real slots tie and the argmax is class 0.
    np.testing.assert_allclose(got[:, 0, :C], got[:, 0, :1].repeat(C, 1), atol=1e-7)
    assert np.all(got.argmax(-1)[:, 0] == 0)


def test_matchnet_hidden_width(data):
    x, y = data
    learner = baselines.get("matchnet", similarity="cosine", hidden=5)
    params = init(learner, TaskSpec(D, C), 2)
    assert [layer["w"].shape for layer in params.weights["embed"]] == [(D, 5), (5, D)]
    assert_log_probs(predict(learner, params, x, y), matchnet_literal(params, x, y, "cosine", True))


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("embed_query", [False, True])
def test_protonet_literal(data, embed_query, double):
    x, y = data
    learner = baselines.get("protonet", embed_query=embed_query, double_softmax=double)
    params = init(learner, TaskSpec(D, C), 3)
    assert_log_probs(predict(learner, params, x, y), protonet_literal(params, x, y, embed_query, double))


def test_protonet_query_not_embedded_by_default(data):
    """The reference quirk: with embed_query False the output depends on the raw query, not on g(x_q)."""
    x, y = data
    learner = baselines.get("protonet")
    params = init(learner, TaskSpec(D, C), 3)
    got = predict(learner, params, x, y)
    assert np.max(np.abs(got - protonet_literal(params, x, y, True, True))) > 1e-3


def test_cnp_literal(data):
    x, y = data
    learner = baselines.get("cnp")
    params = init(learner, TaskSpec(D, C), 4)
    assert_log_probs(predict(learner, params, x, y), cnp_literal(params, x, y))


HALF = math.log(2 * math.exp(0.5) + 2)
DOUBLE_POSITION0 = [0.5 - HALF, 0.5 - HALF, -HALF, -HALF]  # log_softmax of the reference's softmax [.5, .5, 0, 0]


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("label", ["matchnet-cosine", "matchnet-dot", "protonet", "protonet-embed-query"])
def test_position0_splits_equally_and_predicts_class0(episode, label, double):
    family, ep = episode
    learner = make(label, double_softmax=double)
    params = init(learner, family.spec, 5)
    got = predict(learner, params, ep.x, ep.y)[:, 0]
    if double:
        np.testing.assert_allclose(got, np.tile(DOUBLE_POSITION0, (len(got), 1)), atol=1e-6)
    else:  # equal class scores (0 for MatchNet, -||q||^2 for ProtoNet): log(1/2) each, the padded slots near PAD
        np.testing.assert_allclose(got[:, :2], -math.log(2), atol=1e-6)
        assert np.all(got[:, 2:] < PAD / 2)
    assert np.all(got.argmax(-1) == 0)


def n_params(params):
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params.weights))


def test_parameter_counts():
    spec = TaskSpec(2, 2)
    cnp = init(baselines.get("cnp"), spec, 0)
    assert n_params(cnp) == 250  # the reference's Amortization(6, 6, 6, 8, 6, 4)
    shapes = {key: [layer["w"].shape for layer in layers] for key, layers in cnp.weights.items()}
    assert shapes == {"encode": [(6, 6), (6, 6)], "aggregate": [(6, 6), (6, 6)], "decode": [(8, 6), (6, 4)]}
    for label in ("matchnet-cosine", "protonet"):
        assert n_params(init(make(label), spec, 0)) == 12  # MatchNet(2, 2, 2), ProtoNet(2, 2, 2)


# ---------------------------------------------------------------------------------------------------------------------
# 4. MAML: hand-derived SGD steps, and the inner-loop core `adapt`


@pytest.mark.parametrize(("steps", "first_order"), [(1, False), (1, True), (2, False)])
def test_maml_literal(data, steps, first_order):
    x, y = data
    learner = baselines.get("maml", hidden=5, inner_steps=steps, inner_lr=1.0, first_order=first_order)
    params = init(learner, TaskSpec(D, C), 6)
    got = predict(learner, params, x, y)
    assert got.shape == (B, N, C)
    np.testing.assert_allclose(got, maml_literal(params, x, y, steps, 1.0), atol=1e-5)
    unadapted = maml_literal(params, x, y, 0, 1.0)
    np.testing.assert_allclose(got[:, 0], unadapted[:, 0], atol=1e-6)  # position 0: the initial network
    assert np.max(np.abs(got[:, 1:] - unadapted[:, 1:])) > 1e-2  # adaptation does something


def quadratic(p, batch):
    a, t = batch
    return 0.5 * a * sum(jnp.sum((p[k] - t[k]) ** 2) for k in p)


QUAD_P0 = {"u": jnp.array([1.0, -2.0, 3.0]), "v": jnp.array(0.5)}
QUAD_T = {"u": jnp.array([0.5, 0.0, -1.0]), "v": jnp.array(2.0)}


@pytest.mark.parametrize("first_order", [False, True])
def test_adapt_quadratic_closed_form(first_order):
    a, lr, steps = 3.0, 0.1, 4
    adapted, losses = adapt(quadratic, QUAD_P0, (a, QUAD_T), steps=steps, lr=lr, first_order=first_order)
    rate = 1 - lr * a
    dist2 = sum(float(np.sum((np.asarray(QUAD_P0[k]) - np.asarray(QUAD_T[k])) ** 2)) for k in QUAD_P0)
    for k in QUAD_P0:
        p0, t = np.asarray(QUAD_P0[k], np.float64), np.asarray(QUAD_T[k], np.float64)
        np.testing.assert_allclose(np.asarray(adapted[k]), t + rate**steps * (p0 - t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(losses), [0.5 * a * rate ** (2 * s) * dist2 for s in range(steps)], rtol=1e-5)

    # d sum(adapted) / d p0: (1 - lr a)^steps per coordinate through the steps; the identity with first_order.
    def total(p):
        out, _ = adapt(quadratic, p, (a, QUAD_T), steps=steps, lr=lr, first_order=first_order)
        return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(out))

    grads = jax.grad(total)(QUAD_P0)
    for k in QUAD_P0:
        np.testing.assert_allclose(np.asarray(grads[k]), np.full(QUAD_P0[k].shape, 1.0 if first_order else rate**steps))


def test_adapt_second_order_meta_gradient_matches_finite_differences():
    """f(p0) = sum(sin(adapt(p0))) for a non-quadratic inner loss: jax.grad (second order) against central differences
    in float64; first order is the outer gradient at the adapted point, and differs."""

    def inner(p, xs):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] * xs))) + 0.25 * jnp.sum(p["w"] ** 4) + jnp.sum(p["b"] * xs[:2]) ** 2

    with jax.enable_x64(True):
        xs = jnp.asarray([0.7, -1.3, 0.4], jnp.float64)
        p0 = {"w": jnp.asarray([0.3, -0.8, 1.1], jnp.float64), "b": jnp.asarray([0.2, -0.5], jnp.float64)}

        @functools.partial(jax.jit, static_argnums=1)
        def meta(p, first_order):
            out, _ = adapt(inner, p, xs, steps=3, lr=0.2, first_order=first_order)
            return jnp.sum(jnp.sin(out["w"])) + jnp.sum(jnp.sin(out["b"]))

        grads = jax.grad(meta, argnums=0)(p0, False)
        eps = 1e-6
        for k in p0:
            base = np.asarray(p0[k])
            fd = np.zeros_like(base)
            for idx in range(base.size):
                bump = np.zeros_like(base)
                bump[idx] = eps
                plus = float(meta({**p0, k: jnp.asarray(base + bump)}, False))
                minus = float(meta({**p0, k: jnp.asarray(base - bump)}, False))
                fd[idx] = (plus - minus) / (2 * eps)
            assert grads[k].dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(grads[k]), fd, rtol=1e-6, atol=1e-8)

        first = jax.grad(meta, argnums=0)(p0, True)
        adapted, _ = adapt(inner, p0, xs, steps=3, lr=0.2)
        for k in p0:
            np.testing.assert_allclose(np.asarray(first[k]), np.cos(np.asarray(adapted[k])), rtol=1e-12)
        assert max(float(jnp.max(jnp.abs(first[k] - grads[k]))) for k in p0) > 1e-2


# ---------------------------------------------------------------------------------------------------------------------
# 5. The prequential contract, for every learner


@pytest.mark.parametrize("label", list(LEARNERS))
def test_prequential_and_positions(data, label):
    x, y = data
    learner = make(label)
    params = init(learner, TaskSpec(D, C), 7)
    full = predict(learner, params, x, y)
    rng = np.random.default_rng(7)
    for i in (0, 3, N - 2):
        x2, y2 = x.copy(), y.copy()
        x2[:, i + 1 :] = rng.normal(size=x2[:, i + 1 :].shape)
        y2[:, i:] = (y2[:, i:] + 1) % C  # the query's own label is no input either
        changed = predict(learner, params, x2, y2)
        np.testing.assert_allclose(changed[:, : i + 1], full[:, : i + 1], rtol=1e-6, atol=1e-6)
        assert np.max(np.abs(changed[:, i + 1 :] - full[:, i + 1 :])) > 1e-4  # the later positions do see it

    rows = np.array([8, 0, 3, 3, 5])
    subset = predict(learner, params, x, y, jnp.asarray(rows))
    assert subset.shape == (B, len(rows), full.shape[-1])
    np.testing.assert_allclose(subset, full[:, rows], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# 6. The trainer's loss: finite gradients, and the double-softmax floor


ALL_POSITIONS = jnp.arange(20)  # position 0 (the empty context) included

# One compiled program per learner: faster than differentiating op by op (the learner and family are static).
loss_and_grad = jax.jit(jax.value_and_grad(loss_fn, argnums=2), static_argnums=(0, 1))


@pytest.mark.parametrize("label", ["matchnet-cosine", "protonet", "cnp", "maml"])
def test_loss_gradients_finite(episode, label):
    family, ep = episode
    learner = make(label)
    params = init(learner, family.spec, 8)
    loss, grads = loss_and_grad(learner, family, params, ep.x, ep.y, ALL_POSITIONS)
    assert np.isfinite(float(loss))
    leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert max(np.max(np.abs(g)) for g in leaves) > 0


def test_cosine_gradient_finite_at_zero_embedding(episode):
    family, ep = episode
    learner = make("matchnet-cosine")
    params = init(learner, family.spec, 8)
    embed = [dict(layer) for layer in params.weights["embed"]]
    embed[1] = {"w": jnp.zeros_like(embed[1]["w"]), "b": jnp.zeros_like(embed[1]["b"])}  # g(x) = 0 for every x
    params = LearnerParams({"embed": embed}, params.spec)
    _, grads = loss_and_grad(learner, family, params, ep.x, ep.y, ALL_POSITIONS)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("label", ["matchnet-cosine", "matchnet-dot", "protonet", "protonet-embed-query"])
def test_double_softmax_loss_floor(episode, label):
    family, ep = episode
    learner = make(label)
    params = init(learner, family.spec, 9)
    out = predict(learner, params, ep.x, ep.y)
    nll = -np.take_along_axis(out, np.asarray(ep.y)[..., None], axis=-1)[..., 0]
    assert np.all(nll >= FLOOR - 1e-5)
    assert float(loss_fn(learner, family, params, ep.x, ep.y, ALL_POSITIONS)) >= FLOOR - 1e-5


def test_double_softmax_loss_is_ce_of_probabilities(episode):
    """loss_fn = mean CE(softmax(p), y) with p = softmax(scores), recomputed in numpy from the literal scores."""
    family, ep = episode
    x, y = np.asarray(ep.x), np.asarray(ep.y)
    for double in (True, False):
        learner = baselines.get("matchnet", similarity="cosine", double_softmax=double)
        params = init(learner, family.spec, 10)
        ref = matchnet_literal(params, x, y, "cosine", double)
        want = -np.mean(np.take_along_axis(ref, y[..., None], axis=-1))
        got = float(loss_fn(learner, family, params, ep.x, ep.y, ALL_POSITIONS))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_double_softmax_floor_reached_and_single_softmax_below(episode):
    """Separable classes and a large dot-product embedding: the plain log-softmax loss goes to 0, the double-softmax
    loss to its floor log(1 + 3/e), once both classes are in the context."""
    family, ep = episode
    embed = [
        {"w": jnp.eye(2), "b": jnp.zeros(2)},
        {"w": 10.0 * jnp.eye(2), "b": jnp.zeros(2)},
    ]  # g(x) = 10 x for x >= 0
    params = LearnerParams({"embed": embed}, family.spec)
    y = np.random.default_rng(11).integers(0, 2, size=ep.y.shape).astype(np.int32)
    y[:, :2] = [0, 1]  # both classes in every context from position 2 on
    x = np.eye(2, dtype=np.float32)[y]  # class 0 at (1, 0), class 1 at (0, 1): dot similarity 100 or 0
    nll = {}
    for double in (True, False):
        learner = baselines.get("matchnet", similarity="dot", double_softmax=double)
        out = predict(learner, params, x, y)
        nll[double] = -np.take_along_axis(out, y[..., None], axis=-1)[:, 2:, 0]
    np.testing.assert_allclose(nll[True], FLOOR, rtol=1e-6)
    assert np.all(nll[False] < 1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# 7. Bad inputs


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("matchnet", {"similarity": "l2"}),
        ("matchnet", {"double_softmax": 1}),
        ("matchnet", {"hidden": 0}),
        ("matchnet", {"temperature": 1.0}),
        ("protonet", {"hidden": 2.5}),
        ("protonet", {"embed_query": "yes"}),
        ("cnp", {"hidden": True}),
        ("maml", {"inner_steps": 0}),
        ("maml", {"hidden_layers": 0}),
        ("maml", {"inner_lr": 0.0}),
        ("maml", {"inner_lr": float("nan")}),
        ("maml", {"first_order": None}),
    ],
)
def test_bad_hyperparameters(name, hparams):
    with pytest.raises(ConfigError):
        baselines.get(name, **hparams)


@pytest.mark.parametrize("label", ["matchnet-cosine", "protonet", "cnp", "maml"])
def test_bad_spec_and_input_dim(label):
    learner = make(label)
    with pytest.raises(ConfigError, match="classification"):
        learner.init(jax.random.key(0), TaskSpec(2, None))
    params = init(learner, TaskSpec(2, 2), 0)
    with pytest.raises(ConfigError, match="input dim"):
        learner.predict(params, jnp.zeros((1, 4, 3)), jnp.zeros((1, 4), jnp.int32))
