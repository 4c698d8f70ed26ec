"""The `gpt2` preset (Garg et al.'s GPT-2 in-context regression model, docs/papers.md §6.1) against an independent
float64 numpy GPT-2 written from the specification: interleaved tokens, Linear read-in, learned absolute positions,
pre-LN blocks (causal multi-head softmax attention, tanh-GELU MLP), final LayerNorm, Linear read-out at the x tokens.
Plus the prequential contract, `positions`, the parameter count and GPT-2's init, a short learning check, and the
least-squares reference curve (docs/papers.md section 2.7) on the same task family."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import baselines
import tasks
from icl_meta.contracts import TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.train import TrainConfig, train
from icl_meta.transformer import ICLTransformer, count_params, preset

B, N, D = 4, 7, 3
WIDTH, DEPTH, HEADS = 16, 2, 2
LN_EPS = 1e-5


def tiny(**overrides) -> ICLTransformer:
    return ICLTransformer(
        preset("gpt2", **{"width": WIDTH, "depth": DEPTH, "heads": HEADS, "positions": 2 * N, **overrides})
    )


# ---------------------------------------------------------------------------------------------------------------
# The numpy GPT-2, from the specification. Parameter names, read off the params tree: `read_in`, `read_out`,
# `positions.embedding` (wpe), `attention[l].{q,k,v,out}` (c_attn split in three, attn.c_proj),
# `feed_forward[l].{up,down}` (mlp.c_fc, mlp.c_proj), `norms[2l]` (ln_1), `norms[2l+1]` (ln_2), `norms[2 depth]` (ln_f).


def np_linear(h: np.ndarray, p: dict) -> np.ndarray:
    return h @ p["kernel"] + p["bias"]  # flax kernels are [in, out]


def np_layer_norm(h: np.ndarray, p: dict) -> np.ndarray:
    mu = h.mean(-1, keepdims=True)
    var = np.square(h - mu).mean(-1, keepdims=True)  # biased variance, as torch.nn.LayerNorm
    return (h - mu) / np.sqrt(var + LN_EPS) * p["scale"] + p["bias"]


def np_gelu_new(u: np.ndarray) -> np.ndarray:
    """HuggingFace's `gelu_new`: the tanh approximation."""
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u**3)))


def np_tokens(x_ND: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """[2N, d]: x_1, [y_1, 0, ..., 0], x_2, [y_2, 0, ..., 0], ..."""
    n, d = x_ND.shape
    tokens = np.zeros((2 * n, d))
    tokens[0::2] = x_ND
    tokens[1::2, 0] = y_N
    return tokens


def np_causal_attention(a_LW: np.ndarray, p: dict, heads: int) -> np.ndarray:
    """GPT-2's attention with an explicit loop over heads and query tokens: token t attends to tokens 0..t."""
    q, k, v = (np_linear(a_LW, p[name]) for name in ("q", "k", "v"))
    length, width = a_LW.shape
    e = width // heads
    merged = np.zeros((length, width))
    for head in range(heads):
        cols = slice(head * e, (head + 1) * e)
        for t in range(length):
            scores = k[: t + 1, cols] @ q[t, cols] / math.sqrt(e)
            probs = np.exp(scores - scores.max())
            merged[t, cols] = (probs / probs.sum()) @ v[: t + 1, cols]
    return np_linear(merged, p["out"])


def np_gpt2(weights: dict, x_ND: np.ndarray, y_N: np.ndarray, heads: int) -> np.ndarray:
    """Predictions [N] for one sequence: read_out(ln_f(GPT2(read_in(tokens) + wpe))) at the x tokens."""
    w = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), weights)
    tokens = np_tokens(np.asarray(x_ND, np.float64), np.asarray(y_N, np.float64))
    h = np_linear(tokens, w["read_in"]) + w["positions"]["embedding"][: len(tokens)]
    depth = len(w["attention"])
    for layer in range(depth):
        h = h + np_causal_attention(np_layer_norm(h, w["norms"][2 * layer]), w["attention"][layer], heads)
        ff = w["feed_forward"][layer]
        h = h + np_linear(np_gelu_new(np_linear(np_layer_norm(h, w["norms"][2 * layer + 1]), ff["up"])), ff["down"])
    out = np_linear(np_layer_norm(h, w["norms"][2 * depth]), w["read_out"])
    return out[0::2, 0]


def np_predict(weights: dict, x_BND, y_BN, heads: int = HEADS) -> np.ndarray:
    return np.stack([np_gpt2(weights, xb, yb, heads) for xb, yb in zip(np.asarray(x_BND), np.asarray(y_BN))])


def perturb(params, key: jax.Array, embed_scale: float = 1.0):
    """The params with every leaf redrawn away from GPT-2's init (non-zero biases, LayerNorm scales != 1, larger
    kernels), so that a wrong or missing term anywhere changes the output; `embed_scale` scales the read-in and the
    position embeddings (the input of the first LayerNorm)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params.weights)
    new = []
    for i, (path, leaf) in enumerate(leaves):
        name = path[-1].key
        z = jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
        if name == "kernel":
            new.append(z / math.sqrt(leaf.shape[0]))
        elif name == "scale":
            new.append(1.0 + 0.3 * z)
        else:  # biases and position embeddings
            new.append(0.3 * z)
        if path[0].key in ("read_in", "positions"):
            new[-1] = new[-1] * embed_scale
    return params.replace(weights=jax.tree_util.tree_unflatten(treedef, new))


def episode(key: jax.Array, b: int = B, n: int = N, d: int = D):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (b, n, d)), jax.random.normal(ky, (b, n))


@pytest.fixture(scope="module")
def model():
    learner = tiny()
    return learner, perturb(learner.init(jax.random.key(0), TaskSpec(D, None)), jax.random.key(1))


# ---------------------------------------------------------------------------------------------------------------
# The forward pass


@pytest.mark.parametrize(
    "d, embed_scale",
    [(D, 1.0), (1, 1.0), (D, 3e-3)],  # 3e-3: the first LayerNorm's input variance ~1e-5, so its eps matters
)
def test_predict_matches_numpy_gpt2(d, embed_scale):
    learner = tiny()
    params = perturb(learner.init(jax.random.key(2), TaskSpec(d, None)), jax.random.key(3), embed_scale)
    x, y = episode(jax.random.key(4), d=d)
    with jax.default_matmul_precision("highest"):
        out = jax.jit(learner.predict)(params, x, y)  # one program, not one per operation
    assert out.shape == (B, N)
    expected = np_predict(params.weights, x, y)
    assert np.abs(expected).max() > 0.3  # a non-degenerate output
    np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-5, atol=2e-5)


def test_predict_at_init_matches_numpy_gpt2():
    """The unperturbed init (zero biases, unit LayerNorms) through the same reference."""
    learner = tiny()
    params = learner.init(jax.random.key(5), TaskSpec(D, None))
    x, y = episode(jax.random.key(6))
    with jax.default_matmul_precision("highest"):
        out = learner.predict(params, x, y)
    np.testing.assert_allclose(np.asarray(out), np_predict(params.weights, x, y), rtol=2e-5, atol=2e-5)


def test_prequential(model):
    """Prediction i sees x_1, y_1, ..., x_i: the future and y_i itself do not matter, x_i and the past do."""
    learner, params = model
    x, y = episode(jax.random.key(7))
    x2, y2 = episode(jax.random.key(8))
    full = np.asarray(learner.predict(params, x, y))
    for i in (0, 2, 5, N - 1):
        future_x = x.at[:, i + 1 :].set(x2[:, i + 1 :])
        future_y = y.at[:, i:].set(y2[:, i:])  # y_i included
        out = np.asarray(learner.predict(params, future_x, future_y))
        np.testing.assert_allclose(out[:, : i + 1], full[:, : i + 1], rtol=0, atol=1e-6)
        changes = {"x_i": (x.at[:, i].set(x2[:, i]), y)}
        if i > 0:
            changes["x_0"] = (x.at[:, 0].set(x2[:, 0]), y)
            changes["y_i-1"] = (x, y.at[:, i - 1].set(y2[:, i - 1]))
        for label, (xc, yc) in changes.items():
            delta = np.abs(np.asarray(learner.predict(params, xc, yc))[:, i] - full[:, i])
            assert delta.min() > 1e-4 and delta.max() > 1e-2, f"changing {label} barely changed prediction {i}: {delta}"


def test_truncated_sequence_gives_the_same_predictions(model):
    """Positions are absolute from the first token: a prefix of the sequence gives a prefix of the predictions;
    in particular prediction 0 is a function of x_0 alone."""
    learner, params = model
    x, y = episode(jax.random.key(9))
    full = np.asarray(learner.predict(params, x, y))
    for n in (1, 3):
        np.testing.assert_allclose(np.asarray(learner.predict(params, x[:, :n], y[:, :n])), full[:, :n], atol=1e-5)
    np.testing.assert_allclose(full[:, 0], np_predict(params.weights, x[:, :1], jnp.zeros((B, 1)))[:, 0], atol=1e-4)


def test_positions_selects_columns(model):
    learner, params = model
    x, y = episode(jax.random.key(10))
    full = np.asarray(learner.predict(params, x, y))
    cols = [0, 3, 4, N - 1]
    out = learner.predict(params, x, y, positions=jnp.array(cols))
    assert out.shape == (B, len(cols))
    np.testing.assert_allclose(np.asarray(out), full[:, cols], rtol=0, atol=1e-6)


def test_more_tokens_than_positions_is_a_config_error():
    spec = TaskSpec(D, None)
    x, y = episode(jax.random.key(11))
    exact = tiny(positions=2 * N)  # 2N tokens: exactly enough embeddings
    assert exact.predict(exact.init(jax.random.key(0), spec), x, y).shape == (B, N)
    short = tiny(positions=2 * N - 1)
    with pytest.raises(ConfigError, match="positions"):
        short.predict(short.init(jax.random.key(0), spec), x, y)


# ---------------------------------------------------------------------------------------------------------------
# Size and initialisation of the full preset


def gpt2_param_count(d: int, width: int, depth: int, positions: int, ff_mult: int = 4) -> int:
    """GPT2Model without wte (wpe, blocks, ln_f), plus read_in Linear(d, width) and read_out Linear(width, 1)."""
    layer_norm = 2 * width
    attention = 3 * (width * width + width) + (width * width + width)  # c_attn (q, k, v) and c_proj
    mlp = (width * ff_mult * width + ff_mult * width) + (ff_mult * width * width + width)  # c_fc and c_proj
    block = 2 * layer_norm + attention + mlp
    return positions * width + depth * block + layer_norm + (d * width + width) + (width + 1)


@pytest.fixture(scope="module")
def full_params():
    learner = ICLTransformer(preset("gpt2"))
    assert (learner.config.width, learner.config.depth, learner.config.heads) == (256, 12, 8)
    assert learner.config.positions == 202
    return learner.init(jax.random.key(0), TaskSpec(20, None))


def test_parameter_count(full_params):
    expected = gpt2_param_count(d=20, width=256, depth=12, positions=202)
    assert expected == 9_534_977
    assert count_params(full_params.weights) == expected  # about 9.5M, as docs/papers.md section 6.1
    tiny_params = tiny().init(jax.random.key(0), TaskSpec(D, None))
    assert count_params(tiny_params.weights) == gpt2_param_count(D, WIDTH, DEPTH, 2 * N)


def assert_normal(a, std: float, label: str) -> None:
    """An untruncated N(0, std) sample (each matrix here has >= 50k entries)."""
    a = np.asarray(a, np.float64).ravel()
    assert abs(a.mean()) < 5 * std / math.sqrt(a.size), label
    assert abs(a.std() / std - 1) < 0.03, f"{label}: std {a.std():.5f}, expected {std:.5f}"
    kurtosis = np.mean((a / a.std()) ** 4)
    assert 2.85 < kurtosis < 3.15, f"{label}: kurtosis {kurtosis:.3f} (a normal's is 3)"
    assert np.abs(a).max() > 3.5 * std, f"{label}: looks truncated"


def assert_torch_uniform(a, fan_in: int, label: str, tol: float) -> None:
    """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    a = np.asarray(a, np.float64).ravel()
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(a).max() <= bound and np.all(a != 0), label
    if a.size > 1:
        assert abs(a.std() / (bound / math.sqrt(3)) - 1) < tol, f"{label}: std {a.std():.5f}"


def test_gpt2_init(full_params):
    w = full_params.weights
    residual_std = 0.02 / math.sqrt(2 * 12)
    for layer in range(12):
        att, ff = w["attention"][layer], w["feed_forward"][layer]
        for name in ("q", "k", "v"):
            assert_normal(att[name]["kernel"], 0.02, f"attention[{layer}].{name}")
        assert_normal(ff["up"]["kernel"], 0.02, f"feed_forward[{layer}].up")
        assert_normal(att["out"]["kernel"], residual_std, f"attention[{layer}].out")
        assert_normal(ff["down"]["kernel"], residual_std, f"feed_forward[{layer}].down")
        for p in (*att.values(), *ff.values()):
            assert not np.any(np.asarray(p["bias"]))
    assert_normal(w["positions"]["embedding"], 0.02, "positions")
    assert len(w["norms"]) == 2 * 12 + 1
    for norm in w["norms"].values():
        assert np.all(np.asarray(norm["scale"]) == 1) and not np.any(np.asarray(norm["bias"]))
    # Independent draws: no two layers or projections share a matrix.
    q0 = np.asarray(w["attention"][0]["q"]["kernel"])
    assert not np.allclose(q0, w["attention"][1]["q"]["kernel"]) and not np.allclose(
        q0, w["attention"][0]["k"]["kernel"]
    )
    assert w["read_in"]["kernel"].shape == (20, 256) and w["read_out"]["kernel"].shape == (256, 1)
    assert_torch_uniform(w["read_in"]["kernel"], 20, "read_in.kernel", tol=0.05)
    assert_torch_uniform(w["read_in"]["bias"], 20, "read_in.bias", tol=0.2)
    assert_torch_uniform(w["read_out"]["kernel"], 256, "read_out.kernel", tol=0.2)
    assert_torch_uniform(w["read_out"]["bias"], 256, "read_out.bias", tol=0.2)


# ---------------------------------------------------------------------------------------------------------------
# Learning, and the least-squares reference on the same tasks


def squared_errors(pred_TN, y_TN) -> np.ndarray:
    """[T, N] in float64."""
    return np.square(np.asarray(pred_TN, np.float64) - np.asarray(y_TN, np.float64))


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_tiny_gpt2_learns_linear_regression():
    """A context-free predictor cannot beat squared error d at any position (the zero predictor's); least squares
    (the Bayes-optimal predictor here: the posterior mean of w ~ N(0, I) given noiseless data) gets
    (2 + 1 + 0 + 0 + 0) / 5 = 0.3 d on average at n=5, d=2. After 2000 steps seeds 0-5 are at 0.4-0.48 d on average,
    0.18-0.29 d at positions >= d, and 1.0-1.14 times least squares' error at positions < d on the same tasks (well
    below it would mean a leak of y_i into prediction i)."""
    d, steps = 2, 2000
    learner = ICLTransformer(preset("gpt2", width=32, depth=2, heads=4, positions=10))
    cfg = TrainConfig(steps=steps, batch=64, n=5, lr=3e-3, warmup_steps=50, eval_every=steps, eval_tasks=512, seed=0)
    result = train(learner, tasks.get("linear_regression", d=d), cfg, progress=False)
    assert result.history[-1]["step"] == steps
    assert result.history[-1]["eval_squared_error"] < 0.6 * d
    curve = np.asarray(result.curve["mean"])
    assert curve[d:].mean() < 0.4 * d  # where least squares is exact
    x, y = result.episode.x, result.episode.y
    least_squares = squared_errors(baselines.get("least_squares").predict(None, x, y), y).mean(0)
    assert np.all(curve[:d] > 0.9 * least_squares[:d]), (curve, least_squares)


def test_least_squares_reference_curve():
    """Noiseless linear regression, min-norm least squares: error 0 once i >= d examples pin w down, and
    E[(x.w_perp)^2] = E|w_perp|^2 = d - i for i < d (the part of w orthogonal to the span of i Gaussian inputs)."""
    d, n, t = 5, 11, 4096
    family = tasks.get("linear_regression", d=d)
    ep = family.sample(jax.random.key(12), t, n)
    learner = baselines.get("least_squares")
    pred = np.asarray(learner.predict(None, ep.x, ep.y))
    assert pred.shape == (t, n) and np.all(pred[:, 0] == 0)  # the empty context predicts 0
    err_TN = squared_errors(pred, ep.y)
    mean, sem = err_TN.mean(0), err_TN.std(0) / math.sqrt(t)
    for i in range(d):
        assert abs(mean[i] - (d - i)) < 5 * sem[i], f"position {i}: {mean[i]:.3f} +- {sem[i]:.3f}, expected {d - i}"
    assert np.all(mean[d:] < 1e-6 * d), mean[d:]
