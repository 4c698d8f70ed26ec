"""The ICL transformer: a learner whose learning algorithm is a forward pass over the context.

Tokens are `[x_i ; onehot(y_i) padded to 2C]` (regression: `[x_i ; y_i]`); the query token has its label part
zeroed. Two context protocols compute all N predictions of a sequence in one call:

- `prefix` (paper-faithful): prediction i comes from a bidirectional pass over the tokens 0..i-1 plus the query
  token i, as the reference does with N separate forward passes. Here every prefix is one row of a padded batch
  [P, N] with a key mask; padded tokens are never keys, so each row equals its own literal pass.
- `causal` (fast): one pass over 2N tokens, the N context tokens followed by the N query tokens. A context token
  attends to the context tokens before it and itself; query i attends to context tokens 0..i-1 and itself.
  (A non-causal context would leak y_i into query i from layer 2 on.)

Attention kinds: `linear`, the paper's softmax-kernel linear attention (q: softmax over features times e^-1/2;
k: softmax over the sequence; no output projection for one head), and `softmax`, standard scaled dot-product.
The `paper` preset is the reference "ICLer": width d+2C (no embedding, no positions, no layer norm), 8 layers of
[attention + FF(4x, exact GELU)] with residuals, read-out Linear(width, 2C) without bias: 3,432 parameters for
d=2, C=2, initialised as PyTorch's nn.Linear.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from icl_meta.episode import LearnerParams, TaskSpec
from icl_meta.errors import ConfigError, is_int, require

ATTENTIONS = ("linear", "softmax")
PROTOCOLS = ("causal", "prefix")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    attention: str = "linear"
    protocol: str = "causal"
    depth: int = 8
    heads: int = 1
    width: int | None = None  # None: the residual stream is the raw token (the paper); else a Linear read-in
    ff_mult: int = 4

    def __post_init__(self) -> None:
        require(
            self.attention in ATTENTIONS, f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}"
        )
        require(self.protocol in PROTOCOLS, f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        for name in ("depth", "heads", "ff_mult"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        require(
            self.width is None or (is_int(self.width) and self.width >= 1),
            f"width must be None or an integer >= 1, got {self.width!r}",
        )


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(attention="linear", protocol="prefix", depth=8, heads=1, width=None, ff_mult=4),
    "softmax": ModelConfig(attention="softmax", depth=4, heads=2, width=32, ff_mult=4),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; accepted: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown model parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[name], **overrides)


def token_width(spec: TaskSpec) -> int:
    return spec.d + (1 if spec.is_regression else 2 * spec.num_classes)


def output_width(spec: TaskSpec) -> int:
    return 1 if spec.is_regression else 2 * spec.num_classes


# ---------------------------------------------------------------------------------------------------------------
# Modules


def torch_linear(fan_in: int, fan_out: int, *, use_bias: bool = True, rngs: nnx.Rngs) -> nnx.Linear:
    """nn.Linear with PyTorch's default init: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        fan_in,
        fan_out,
        use_bias=use_bias,
        kernel_init=nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
        bias_init=bias_init,
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Masked multi-head attention over [..., L, W] with a boolean mask [..., L, L] (query i, key j), or
    [..., 1, L] when every query sees the same keys."""

    def __init__(self, width: int, heads: int, kind: str, *, rngs: nnx.Rngs):
        require(width % heads == 0, f"width {width} must be divisible by heads {heads}")
        self.heads, self.kind = heads, kind
        self.q = torch_linear(width, width, use_bias=False, rngs=rngs)
        self.k = torch_linear(width, width, use_bias=False, rngs=rngs)
        self.v = torch_linear(width, width, use_bias=False, rngs=rngs)
        self.out = torch_linear(width, width, rngs=rngs) if heads > 1 else None  # the reference has none for 1 head

    def __call__(self, h_LW: jax.Array, mask_LL: jax.Array | str) -> jax.Array:
        q, k, v = (self._split_heads(f(h_LW)) for f in (self.q, self.k, self.v))  # [..., H, L, e]
        mask = mask_LL if isinstance(mask_LL, str) else mask_LL[..., None, :, :]  # broadcast over heads
        attend = linear_attention if self.kind == "linear" else softmax_attention
        o = attend(q, k, v, mask)
        o = jnp.moveaxis(o, -3, -2).reshape(h_LW.shape)  # [..., L, H*e]
        return o if self.out is None else self.out(o)

    def _split_heads(self, t_LW: jax.Array) -> jax.Array:
        t = t_LW.reshape(*t_LW.shape[:-1], self.heads, -1)
        return jnp.moveaxis(t, -2, -3)


CAUSAL_PAIRS = "causal_pairs"  # mask of the one-pass layout [context 0..N-1, query 0..N-1]; see causal_mask


def linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | str) -> jax.Array:
    """The reference's linear attention, generalised to a mask: q~ = softmax_features(q) e^-1/2 and, for each
    query i, the keys' sequence softmax is taken over the keys visible to i:
    out_i = sum_f q~_if sum_{j in V(i)} softmax_{j in V(i)}(k_jf) v_j.

    - mask [..., 1, L]: every query sees the same keys (a bidirectional pass): the reference's `q (k^T v)`.
    - CAUSAL_PAIRS: the causal one-pass layout, in O(N) by a scan of online-softmax prefix states.
    - mask [..., L, L]: any mask, with the softmax per (query, feature), [..., L, L, e] (slow; for tests).
    One shift for the whole sequence would not do: its normaliser underflows once key logits spread by ~40.
    """
    e = q.shape[-1]
    q = jax.nn.softmax(q, axis=-1) * e**-0.5
    if isinstance(mask, str):
        return _linear_causal_pairs(q, k, v)
    if mask.shape[-2] == 1:
        k = jax.nn.softmax(jnp.where(mask[..., 0, :, None], k, -jnp.inf), axis=-2)  # over the sequence
        return q @ (jnp.swapaxes(k, -1, -2) @ v)  # [..., L, e] @ [..., e, e]
    w = jax.nn.softmax(jnp.where(mask[..., None], k[..., None, :, :], -jnp.inf), axis=-2)  # [..., Lq, Lk, e]
    return jnp.einsum("...if,...ijf->...ij", q, w) @ v


def _combine(a: tuple, b: tuple) -> tuple:
    """Merge two online-softmax states (max m [.., e], normaliser z [.., e], sum S [.., e, e] of exp(k - m) v)."""
    (m1, z1, s1), (m2, z2, s2) = a, b
    m = jnp.maximum(m1, m2)
    w1, w2 = jnp.exp(m1 - m), jnp.exp(m2 - m)
    return m, w1 * z1 + w2 * z2, w1[..., None] * s1 + w2[..., None] * s2


def _linear_causal_pairs(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Context token a sees context 0..a; query i sees context 0..i-1 and itself. q is already normalised."""
    n = q.shape[-2] // 2
    axis = q.ndim - 2

    def own(k_: jax.Array, v_: jax.Array) -> tuple:  # the state of a single key
        return k_, jnp.ones_like(k_), jnp.broadcast_to(v_[..., None, :], (*v_.shape, v_.shape[-1]))

    m, z, s = jax.lax.associative_scan(_combine, own(k[..., :n, :], v[..., :n, :]), axis=axis)
    out_ctx = jnp.einsum("...f,...fg->...g", q[..., :n, :] / z, s)

    def exclusive(t: jax.Array, fill: float) -> jax.Array:  # the state before each position
        pad = jnp.full_like(jax.lax.slice_in_dim(t, 0, 1, axis=axis), fill)
        return jnp.concatenate([pad, jax.lax.slice_in_dim(t, 0, n - 1, axis=axis)], axis=axis)

    before = (exclusive(m, -1e30), exclusive(z, 0.0), exclusive(s, 0.0))  # finite "empty" max: no inf - inf
    _, zq, sq = _combine(before, own(k[..., n:, :], v[..., n:, :]))
    out_qry = jnp.einsum("...f,...fg->...g", q[..., n:, :] / zq, sq)
    return jnp.concatenate([out_ctx, out_qry], axis=-2)


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | str) -> jax.Array:
    if isinstance(mask, str):
        mask = causal_mask(q.shape[-2] // 2)
    scores = (q @ jnp.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    return jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1) @ v


class FeedForward(nnx.Module):
    def __init__(self, width: int, mult: int, *, rngs: nnx.Rngs):
        self.up = torch_linear(width, mult * width, rngs=rngs)
        self.down = torch_linear(mult * width, width, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(h), approximate=False))


class Network(nnx.Module):
    """Residual stack [attention, feed-forward] x depth over tokens [..., L, T] -> outputs [..., L, O]."""

    def __init__(self, config: ModelConfig, spec: TaskSpec, *, rngs: nnx.Rngs):
        t = token_width(spec)
        width = config.width or t
        self.read_in = torch_linear(t, width, rngs=rngs) if config.width else None
        self.attention = nnx.List(
            [Attention(width, config.heads, config.attention, rngs=rngs) for _ in range(config.depth)]
        )
        self.feed_forward = nnx.List([FeedForward(width, config.ff_mult, rngs=rngs) for _ in range(config.depth)])
        self.read_out = torch_linear(width, output_width(spec), use_bias=False, rngs=rngs)

    def __call__(self, tokens_LT: jax.Array, mask_LL: jax.Array | str) -> jax.Array:
        h = tokens_LT if self.read_in is None else self.read_in(tokens_LT)
        for attention, feed_forward in zip(self.attention, self.feed_forward, strict=True):
            h = h + attention(h, mask_LL)
            h = h + feed_forward(h)
        return self.read_out(h)


# ---------------------------------------------------------------------------------------------------------------
# Tokens and protocols


def make_tokens(x_BND: jax.Array, y_BN: jax.Array, spec: TaskSpec) -> tuple[jax.Array, jax.Array]:
    """Context tokens [x ; label] and query tokens [x ; 0], both [B, N, T]."""
    if spec.is_regression:
        label = y_BN[..., None].astype(x_BND.dtype)
    else:
        label = jax.nn.one_hot(y_BN, 2 * spec.num_classes, dtype=x_BND.dtype)  # padded to 2C, as the reference
    return jnp.concatenate([x_BND, label], -1), jnp.concatenate([x_BND, jnp.zeros_like(label)], -1)


def causal_mask(n: int) -> jax.Array:
    """[2N, 2N] mask of the one-pass layout [context 0..N-1, query 0..N-1]."""
    i = jnp.arange(n)
    ctx_ctx = i[None, :] <= i[:, None]
    qry_ctx = i[None, :] < i[:, None]
    eye = jnp.eye(n, dtype=bool)
    top = jnp.concatenate([ctx_ctx, jnp.zeros((n, n), bool)], 1)
    bottom = jnp.concatenate([qry_ctx, eye], 1)
    return jnp.concatenate([top, bottom], 0)


def run_causal(net: Network, ctx_BNT: jax.Array, qry_BNT: jax.Array) -> jax.Array:
    n = ctx_BNT.shape[1]
    out = net(jnp.concatenate([ctx_BNT, qry_BNT], 1), CAUSAL_PAIRS)
    return out[:, n:]  # [B, N, O]


def run_prefix(net: Network, ctx_BNT: jax.Array, qry_BNT: jax.Array, positions_P: jax.Array) -> jax.Array:
    """One bidirectional pass per prefix length i in `positions`, batched as [B, P, N] with a key mask."""
    n = ctx_BNT.shape[1]
    t = jnp.arange(n)
    i = positions_P[:, None]  # [P, 1]
    before, at = (t < i)[None, :, :, None], (t == i)[None, :, :, None]  # [1, P, N, 1]
    qry_BP1T = jnp.take(qry_BNT, positions_P, axis=1)[:, :, None]
    tokens_BPNT = jnp.where(before, ctx_BNT[:, None], jnp.where(at, qry_BP1T, 0.0))
    mask_P1N = (t <= i)[:, None, :]  # one row: every token of prefix i sees the keys 0..i (bidirectional)
    out_BPNO = net(tokens_BPNT, mask_P1N)
    return jnp.take_along_axis(out_BPNO, positions_P[None, :, None, None], axis=2)[:, :, 0]  # [B, P, O]


# ---------------------------------------------------------------------------------------------------------------
# The learner


@functools.cache
def _skeleton(config: ModelConfig, spec: TaskSpec) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: Network(config, spec, rngs=nnx.Rngs(0))))


@dataclasses.dataclass(frozen=True)
class ICLTransformer:
    """The ICL learner behind the Learner protocol: `init(key, spec)`, `predict(params, x, y, positions)`."""

    config: ModelConfig = PRESETS["paper"]
    name = "icl"

    def init(self, key: jax.Array, spec: TaskSpec) -> LearnerParams:
        _, state = nnx.split(Network(self.config, spec, rngs=nnx.Rngs(params=key)))
        return LearnerParams(weights=nnx.to_pure_dict(state), spec=spec)

    def network(self, params: LearnerParams) -> Network:
        graphdef, abstract = _skeleton(self.config, params.spec)
        state = jax.tree_util.tree_map(lambda leaf: leaf, abstract)  # a fresh copy to fill in
        nnx.replace_by_pure_dict(state, params.weights)
        return nnx.merge(graphdef, state)

    def predict(
        self, params: LearnerParams, x: jax.Array, y: jax.Array, positions: jax.Array | None = None
    ) -> jax.Array:
        """Log-probabilities over the 2C outputs [B, N|P, 2C] (outputs C..2C-1 are the padded label slots: never
        a correct answer, so an argmax there is an error, as in the reference), or regression predictions [B, N|P]."""
        spec = params.spec
        if x.shape[-1] != spec.d:
            raise ConfigError(f"input dim d={x.shape[-1]} does not match the model's d={spec.d}")
        net = self.network(params)
        ctx, qry = make_tokens(x, y, spec)
        if self.config.protocol == "prefix":
            positions_P = jnp.arange(x.shape[1]) if positions is None else jnp.asarray(positions)
            out = run_prefix(net, ctx, qry, positions_P)
        else:
            out = run_causal(net, ctx, qry)
            if positions is not None:
                out = jnp.take(out, jnp.asarray(positions), axis=1)
        if spec.is_regression:
            return out[..., 0]
        return jax.nn.log_softmax(out, axis=-1)


def count_params(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
