"""The ICL transformer against a literal numpy re-implementation of the reference model, run prefix by prefix."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_meta.attention import CAUSAL_PAIRS, linear_attention
from icl_meta.contracts import TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.transformer import (
    PRESETS,
    ICLTransformer,
    count_params,
    make_tokens,
    preset,
    run_prefix,
)

SPEC = TaskSpec(d=2, num_classes=2)
ERF = np.vectorize(math.erf)


def np_forward(weights: dict, tokens_LT: np.ndarray, mask_LL: np.ndarray, attention: str) -> np.ndarray:
    """The reference ICLer on one sequence, written from docs/papers.md section 3 with explicit per-query loops."""
    w = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), weights)
    h = np.asarray(tokens_LT, np.float64)
    for layer in range(len(w["attention"])):
        att, ff = w["attention"][layer], w["feed_forward"][layer]
        q, k, v = (h @ att[name]["kernel"] for name in ("q", "k", "v"))
        out = np.zeros_like(h)
        for i in range(h.shape[0]):
            visible = np.flatnonzero(mask_LL[i])
            if attention == "linear":
                qi = np.exp(q[i] - q[i].max())
                qi = qi / qi.sum() / math.sqrt(q.shape[1])  # softmax over features, times e^-1/2
                kv = np.exp(k[visible] - k[visible].max(0))
                kv = kv / kv.sum(0)  # softmax over the (visible) sequence, per feature
                out[i] = qi @ (kv.T @ v[visible])  # q (k^T v)
            else:
                s = k[visible] @ q[i] / math.sqrt(q.shape[1])
                p = np.exp(s - s.max())
                out[i] = (p / p.sum()) @ v[visible]
        h = h + out
        up = h @ ff["up"]["kernel"] + ff["up"]["bias"]
        h = h + (0.5 * up * (1 + ERF(up / math.sqrt(2)))) @ ff["down"]["kernel"] + ff["down"]["bias"]
    return h @ w["read_out"]["kernel"]


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def batch():
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (3, 9, 2))
    y = jax.random.randint(ky, (3, 9), 0, 2)
    return x, y


def test_paper_preset_has_3432_parameters_and_pytorch_init():
    params = ICLTransformer(PRESETS["paper"]).init(jax.random.key(0), SPEC)
    assert count_params(params) == 3432
    w = params.weights
    assert set(w) == {"attention", "feed_forward", "read_out"}  # no embedding, no norm, no positions
    assert "bias" not in w["attention"][0]["q"] and "bias" not in w["read_out"]
    # PyTorch nn.Linear: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    for kernel, bias in [(w["feed_forward"][0]["up"]["kernel"], w["feed_forward"][0]["up"]["bias"])]:
        bound = 1 / math.sqrt(kernel.shape[0])
        assert float(jnp.abs(kernel).max()) <= bound and float(jnp.abs(bias).max()) <= bound
    kernels = np.concatenate([np.ravel(w["attention"][i]["q"]["kernel"]) * math.sqrt(6) for i in range(8)])
    assert abs(kernels.std() - 1 / math.sqrt(3)) < 0.06  # U(-1, 1) scaled: std 1/sqrt(3)


LITERAL_MASKS = {
    "prefix": lambda L: np.ones((L, L), bool),  # the reference: one bidirectional pass over x[:i+1] per prefix
    "causal": lambda L: np.tril(np.ones((L, L), bool)),  # a causal pass over [context 0..i-1, query i]
}


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("protocol", ["prefix", "causal"])
def test_protocol_equals_literal_per_prefix_loop(batch, protocol, attention):
    x, y = batch
    learner = ICLTransformer(preset("paper", attention=attention, protocol=protocol, depth=3))
    params = learner.init(jax.random.key(0), SPEC)
    logp = np.asarray(jax.jit(learner.predict)(params, x, y))
    ctx, qry = (np.asarray(t) for t in make_tokens(x, y, SPEC))
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):  # the query is the last token of each literal pass
            tokens = np.concatenate([ctx[b, :i], qry[b, i : i + 1]])
            logits = np_forward(params.weights, tokens, LITERAL_MASKS[protocol](i + 1), attention)[-1]
            np.testing.assert_allclose(logp[b, i], np_log_softmax(logits), atol=1e-5)


@pytest.mark.parametrize("protocol", ["prefix", "causal"])
def test_prediction_at_i_ignores_later_examples(batch, protocol):
    x, y = batch
    learner = ICLTransformer(preset("paper", protocol=protocol, depth=2))
    params = learner.init(jax.random.key(0), SPEC)
    predict = jax.jit(learner.predict)
    out = predict(params, x, y)
    i = 4  # change y_j for j >= i and x_j for j > i: positions <= i must not move
    x2 = x.at[:, i + 1 :].add(3.0)
    y2 = y.at[:, i:].set(1 - y[:, i:])
    out2 = predict(params, x2, y2)
    np.testing.assert_allclose(out[:, : i + 1], out2[:, : i + 1], atol=1e-6)
    assert float(jnp.abs(out[:, i + 1 :] - out2[:, i + 1 :]).max()) > 1e-4


@pytest.mark.parametrize("protocol", ["prefix", "causal"])
def test_positions_subset_equals_full_output(batch, protocol):
    x, y = batch
    learner = ICLTransformer(preset("paper", protocol=protocol, depth=2))
    params = learner.init(jax.random.key(0), SPEC)
    predict = jax.jit(learner.predict)
    full = predict(params, x, y)
    for positions in (jnp.array([0, 3, 8]), jnp.array([8, 0, 3, 7, 6])):  # sorted or not: prefix buckets by rank
        np.testing.assert_allclose(predict(params, x, y, positions), full[:, positions], atol=1e-6)


@pytest.mark.parametrize("buckets", [1, 3, 9])
def test_prefix_buckets_do_not_change_predictions(batch, buckets):
    x, y = batch
    learner = ICLTransformer(preset("paper", depth=2))
    params = learner.init(jax.random.key(0), SPEC)
    ctx, qry = make_tokens(x, y, SPEC)
    positions = jnp.array([1, 2, 4, 5, 8])

    @functools.partial(jax.jit, static_argnums=(1,))
    def prefix(positions_P, buckets_):
        return run_prefix(learner.network(params), ctx, qry, positions_P, buckets_)

    np.testing.assert_allclose(prefix(positions, buckets), prefix(positions, 1), atol=1e-6)
    one_pass = prefix(jnp.arange(9), buckets)  # every prefix: buckets of ranks are exact
    np.testing.assert_allclose(one_pass[:, positions], prefix(positions, buckets), atol=1e-6)


def test_causal_pairs_match_explicit_mask_and_stay_finite_for_large_logits():
    """The blocked causal kernel and its written-out gradient against the explicit [L, L] mask, in float64, for keys
    that spread little, by ~100 along the sequence, and by 60 between neighbours (one block); finite far beyond."""
    n = 7
    kq, kk, kv, kw = jax.random.split(jax.random.key(3), 4)
    q, v, w = (jax.random.normal(key, (2, 2 * n, 4)) for key in (kq, kv, kw))
    base = jax.random.normal(kk, (2, 2 * n, 4))
    position = jnp.concatenate([jnp.arange(n), jnp.arange(n)])[None, :, None]

    def loss(mask, a, b, c):
        return (linear_attention(a, b, c, mask) * w).sum()

    def explicit(a, b, c):  # float64: the reference
        return loss(CAUSAL_PAIRS.dense(2 * n), *(t.astype(jnp.float64) for t in (a, b, c)))

    # jitted: one compiled program each instead of one per operation
    fast_out = jax.jit(functools.partial(linear_attention, mask=CAUSAL_PAIRS))
    fast_grad = jax.jit(jax.grad(functools.partial(loss, CAUSAL_PAIRS), argnums=(0, 1, 2)))
    with jax.enable_x64(True):
        slow_out = jax.jit(lambda a, b, c: linear_attention(a, b, c, CAUSAL_PAIRS.dense(2 * n)))
        slow_grad = jax.jit(jax.grad(explicit, argnums=(0, 1, 2)))
        for k in (base, 6.0 * base, base + 14.0 * position, base + 60.0 * (position % 2)):
            fast = fast_out(q, k, v)
            slow = slow_out(*(t.astype(jnp.float64) for t in (q, k, v)))
            np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
            for got, want in zip(fast_grad(q, k, v), slow_grad(q, k, v), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    far = 300.0 * base  # gaps of hundreds inside a block: rows that underflow attend to nothing, nothing is NaN
    assert bool(jnp.isfinite(fast_out(q, far, v)).all())
    assert all(bool(jnp.isfinite(g).all()) for g in fast_grad(q, far, v))


def test_regression_readout_and_multiclass_shapes():
    x = jax.random.normal(jax.random.key(0), (2, 6, 3))
    reg = ICLTransformer(preset("paper", depth=2))
    predict = jax.jit(reg.predict)
    p = reg.init(jax.random.key(0), TaskSpec(d=3, num_classes=None))
    assert predict(p, x, jnp.ones((2, 6))).shape == (2, 6)
    p4 = reg.init(jax.random.key(0), TaskSpec(d=3, num_classes=4))
    out = predict(p4, x, jnp.zeros((2, 6), jnp.int32))
    assert out.shape == (2, 6, 8)  # log-probabilities over 2C outputs; the padded slots are never correct
    np.testing.assert_allclose(jnp.exp(out).sum(-1), 1.0, atol=1e-5)


def test_bad_model_config_and_input_dim():
    with pytest.raises(ConfigError, match="attention"):
        preset("paper", attention="cosine")
    with pytest.raises(ConfigError, match="preset"):
        preset("gpt5")
    learner = ICLTransformer(dataclasses.replace(PRESETS["paper"], depth=1))
    params = learner.init(jax.random.key(0), SPEC)
    with pytest.raises(ConfigError, match="d=3"):
        learner.predict(params, jnp.zeros((1, 4, 3)), jnp.zeros((1, 4), jnp.int32))
