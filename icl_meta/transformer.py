"""The ICL transformer: a learner whose learning algorithm is a forward pass over the context.

Tokens are `[x_i ; onehot(y_i) padded to 2C]` (regression: `[x_i ; y_i]`); the query token has its label part
zeroed. Two context protocols compute all N predictions of a sequence in one call:

- `prefix` (paper-faithful): prediction i comes from a bidirectional pass over the tokens 0..i-1 plus the query
  token i, as the reference does with N separate forward passes. Here every prefix is one row of a padded batch
  [P, N] with a key mask; padded tokens are never keys, so each row equals its own literal pass.
- `causal` (fast): one pass over 2N tokens, the N context tokens followed by the N query tokens. A context token
  attends to the context tokens before it and itself; query i attends to context tokens 0..i-1 and itself.
  (A non-causal context would leak y_i into query i from layer 2 on.)
- `interleaved` (Garg et al.): one causal pass over x_1, y~_1, x_2, y~_2, ... with the prediction read at the x
  tokens. Both kinds of token are zero-padded to max(d, label width): x~ = [x, 0..], y~ = [y, 0..] (regression) or
  [onehot_2C(y), 0..], so for regression the tokens are exactly Garg's (y in the first of d coordinates).

Attention kinds (the kernels are in `icl_meta.attention`): `linear`, the paper's softmax-kernel linear attention (q:
softmax over features times E^-1/2; k: softmax over the sequence; no output projection for one head), and `softmax`,
standard scaled dot-product.
The `paper` preset is the reference "ICLer": width d+2C (no embedding, no positions, no layer norm), 8 layers of
[attention + FF(4x, exact GELU)] with residuals, read-out Linear(width, 2C) without bias: 3,432 parameters for
d=2, C=2, initialised as PyTorch's nn.Linear. The `gpt2` preset is Garg et al.'s GPT-2 backbone (docs/papers.md §6.1):
`block="gpt2"` (pre-LN blocks with a final LayerNorm, learned absolute positions, biases, tanh-GELU, GPT-2's N(0, 0.02)
init with the residual projections scaled by 1/sqrt(2 depth)), softmax attention, the `interleaved` protocol,
a Linear read-in to width 256 and a Linear read-out (PyTorch init): 9.5M parameters at 12 layers of width 256.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from icl_meta.attention import CAUSAL_PAIRS, KERNELS, CausalPairs, Mask
from icl_meta.contracts import LearnerParams, TaskSpec
from icl_meta.errors import ConfigError, require, require_bool, require_choice, require_int
from icl_meta.registry import LEARNERS

ATTENTIONS = tuple(KERNELS)
PROTOCOLS = ("causal", "prefix", "interleaved")
BLOCKS = ("paper", "gpt2")
GPT2_STD = 0.02  # GPT-2's initializer_range


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    attention: str = "linear"
    protocol: str = "causal"
    depth: int = 8
    heads: int = 1
    width: int | None = None  # None: the residual stream is the raw token (the paper); else a Linear read-in
    ff_mult: int = 4
    block: str = "paper"  # "paper": residual [attention, FF] without norms; "gpt2": pre-LN GPT-2 blocks
    positions: int | None = None  # learned absolute position embeddings (GPT-2's n_positions); None: none
    scan_layers: bool = False  # True: the identical layers as one lax.scan (one layer in the program)
    rotary: bool = False  # rotary position embeddings on queries and keys (RoPE: relative positions)

    def __post_init__(self) -> None:
        require_choice(self.attention, "attention", ATTENTIONS)
        require_choice(self.protocol, "protocol", PROTOCOLS)
        for name in ("depth", "heads", "ff_mult"):
            require_int(getattr(self, name), name)
        require_int(self.width, "width", none_ok=True)
        require_choice(self.block, "block", BLOCKS)
        require_int(self.positions, "positions", none_ok=True)
        require_bool(self.scan_layers, "scan_layers")
        require_bool(self.rotary, "rotary")


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(attention="linear", protocol="prefix", depth=8, heads=1, width=None, ff_mult=4),
    "softmax": ModelConfig(attention="softmax", depth=4, heads=2, width=32, ff_mult=4),
    # Garg et al.'s standard model: n_embd 256, n_layer 12, n_head 8, n_positions 2 x 101.
    "gpt2": ModelConfig(
        attention="softmax", protocol="interleaved", depth=12, heads=8, width=256, block="gpt2", positions=202
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; accepted: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown model parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[name], **overrides)


def label_width(spec: TaskSpec) -> int:
    return 1 if spec.is_regression else 2 * spec.classes


def token_width(spec: TaskSpec, protocol: str = "causal") -> int:
    if protocol == "interleaved":
        return max(spec.d, label_width(spec))
    return spec.d + label_width(spec)


output_width = label_width  # the read-out has one slot per label slot (the reference's 2C)


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


def gpt2_linear(fan_in: int, fan_out: int, *, std: float = GPT2_STD, rngs: nnx.Rngs) -> nnx.Linear:
    """GPT-2's Linear (Conv1D) init: kernel ~ N(0, std), bias 0."""
    return nnx.Linear(
        fan_in, fan_out, kernel_init=nnx.initializers.normal(std), bias_init=nnx.initializers.zeros, rngs=rngs
    )


class Attention(nnx.Module):
    """Masked multi-head attention over [..., L, W] with a mask (see `icl_meta.attention`).

    `residual_std` None: the paper's attention (PyTorch init, no biases, no output projection for one head);
    else GPT-2's (biases, N(0, 0.02) init, an output projection initialised with N(0, residual_std))."""

    def __init__(
        self, width: int, heads: int, kind: str, *, residual_std: float | None = None, rotary: bool = False,
        rngs: nnx.Rngs,
    ):  # fmt: skip
        require(width % heads == 0, f"width {width} must be divisible by heads {heads}")
        require(not rotary or (width // heads) % 2 == 0, f"rotary needs an even head width, got {width // heads}")
        self.heads, self.kind, self.rotary = heads, kind, rotary
        if residual_std is None:
            self.q, self.k, self.v = (torch_linear(width, width, use_bias=False, rngs=rngs) for _ in range(3))
            self.out = torch_linear(width, width, rngs=rngs) if heads > 1 else None  # the reference: none for 1 head
        else:
            self.q, self.k, self.v = (gpt2_linear(width, width, rngs=rngs) for _ in range(3))
            self.out = gpt2_linear(width, width, std=residual_std, rngs=rngs)

    def __call__(self, h_LW: jax.Array, mask: Mask) -> jax.Array:
        q_HLE, k_HLE, v_HLE = (
            rearrange(f(h_LW), "... l (h e) -> ... h l e", h=self.heads) for f in (self.q, self.k, self.v)
        )
        if self.rotary:
            q_HLE, k_HLE = rotate(q_HLE), rotate(k_HLE)
        head_mask = mask if isinstance(mask, CausalPairs) else mask[..., None, :, :]  # broadcast over heads
        o_HLE = KERNELS[self.kind](q_HLE, k_HLE, v_HLE, head_mask)
        o_LW = rearrange(o_HLE, "... h l e -> ... l (h e)")
        return o_LW if self.out is None else self.out(o_LW)


def rotate(x_HLE: jax.Array, base: float = 10_000.0) -> jax.Array:
    """Rotary position embedding (Su et al.; GPT-NeoX's half-split layout) by position along L: the dot product of a
    rotated query and key depends on their positions' difference only."""
    half = x_HLE.shape[-1] // 2
    angle_LF = jnp.arange(x_HLE.shape[-2])[:, None] * base ** (-jnp.arange(half) / half)[None]
    cos, sin = jnp.cos(angle_LF), jnp.sin(angle_LF)
    x1, x2 = x_HLE[..., :half], x_HLE[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class FeedForward(nnx.Module):
    """Linear(W, mult W) -> GELU -> Linear(mult W, W): the paper's (PyTorch init, exact GELU) or, with
    `residual_std`, GPT-2's (N(0, 0.02) init, the down projection N(0, residual_std), tanh GELU)."""

    def __init__(self, width: int, mult: int, *, residual_std: float | None = None, rngs: nnx.Rngs):
        self.approximate = residual_std is not None
        if residual_std is None:
            self.up = torch_linear(width, mult * width, rngs=rngs)
            self.down = torch_linear(mult * width, width, rngs=rngs)
        else:
            self.up = gpt2_linear(width, mult * width, rngs=rngs)
            self.down = gpt2_linear(mult * width, width, std=residual_std, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(h), approximate=self.approximate))


class Network(nnx.Module):
    """Residual stack [attention, feed-forward] x depth over tokens [..., L, W] -> outputs [..., L, O].

    block "paper": h += attention(h); h += FF(h). block "gpt2": h += attention(LN(h)); h += FF(LN(h)), then a final LN.
    """

    def __init__(
        self,
        config: ModelConfig,
        spec: TaskSpec,
        *,
        rngs: nnx.Rngs,
        tokens: int | None = None,
        outputs: int | None = None,
    ):
        """`tokens` and `outputs` override the token and read-out widths the spec and protocol imply (a learner that
        embeds its own tokens, e.g. the multimodal language model)."""
        t = tokens or token_width(spec, config.protocol)
        width = config.width or t
        gpt2 = config.block == "gpt2"
        residual_std = GPT2_STD / math.sqrt(2 * config.depth) if gpt2 else None
        self.read_in = torch_linear(t, width, rngs=rngs) if config.width else None
        self.positions = (
            nnx.Embed(config.positions, width, embedding_init=nnx.initializers.normal(GPT2_STD), rngs=rngs)
            if config.positions
            else None
        )
        self.attention = nnx.List(
            [
                Attention(
                    width, config.heads, config.attention, residual_std=residual_std, rotary=config.rotary, rngs=rngs
                )
                for _ in range(config.depth)
            ]
        )
        self.feed_forward = nnx.List(
            [FeedForward(width, config.ff_mult, residual_std=residual_std, rngs=rngs) for _ in range(config.depth)]
        )
        norms = [nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs) for _ in range(2 * config.depth + 1)] if gpt2 else None
        self.norms: nnx.List | None = None if norms is None else nnx.List(norms)
        self.read_out = torch_linear(width, outputs or output_width(spec), use_bias=gpt2, rngs=rngs)
        self.scan_layers = config.scan_layers

    def __call__(self, tokens_LW: jax.Array, mask: Mask) -> jax.Array:
        h = tokens_LW if self.read_in is None else self.read_in(tokens_LW)
        if self.positions is not None:
            length = h.shape[-2]
            if length > self.positions.num_embeddings:
                raise ConfigError(
                    f"{length} tokens exceed the model's {self.positions.num_embeddings} learned positions "
                    "(raise the model's `positions`)"
                )
            h = h + self.positions.embedding[:length]
        norms = self.norms
        layers = [
            (
                attention,
                feed_forward,
                None if norms is None else norms[2 * i],
                None if norms is None else norms[2 * i + 1],
            )
            for i, (attention, feed_forward) in enumerate(zip(self.attention, self.feed_forward, strict=True))
        ]
        if self.scan_layers and len(layers) > 1:
            h = _scan_layers(layers, h, mask)
        else:
            for layer in layers:
                h = _apply_layer(layer, h, mask)
        return self.read_out(h if norms is None else norms[-1](h))


Layer = tuple[Attention, "FeedForward", nnx.LayerNorm | None, nnx.LayerNorm | None]


def _apply_layer(layer: Layer, h: jax.Array, mask: Mask) -> jax.Array:
    """h += attention(norm(h)); h += FF(norm(h)) (no norms in the paper's block)."""
    attention, feed_forward, attention_norm, ff_norm = layer
    h = h + attention(h if attention_norm is None else attention_norm(h), mask)
    return h + feed_forward(h if ff_norm is None else ff_norm(h))


def _scan_layers(layers: list[Layer], h: jax.Array, mask: Mask) -> jax.Array:
    """The identical layers as one `lax.scan` over their stacked weights: the program (and its compile time) holds
    one layer instead of `depth`. The parameters keep their per-layer layout, so checkpoints do not change."""
    graphdef, _ = nnx.split(layers[0])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.split(layer)[1] for layer in layers))

    def body(h: jax.Array, state: nnx.State) -> tuple[jax.Array, None]:
        return _apply_layer(nnx.merge(graphdef, state), h, mask), None

    return jax.lax.scan(body, h, stacked)[0]


# ---------------------------------------------------------------------------------------------------------------
# Tokens and protocols


def label_features(y_BN: jax.Array, spec: TaskSpec, dtype: Any = jnp.float32) -> jax.Array:
    """[B, N, label_width]: the target itself (regression) or onehot(y) padded to 2C slots, as the reference."""
    if spec.is_regression:
        return y_BN[..., None].astype(dtype)
    return jax.nn.one_hot(y_BN, label_width(spec), dtype=dtype)


def make_tokens(x_BND: jax.Array, y_BN: jax.Array, spec: TaskSpec) -> tuple[jax.Array, jax.Array]:
    """Context tokens [x ; label] and query tokens [x ; 0], both [B, N, W]."""
    label_BNO = label_features(y_BN, spec, x_BND.dtype)
    return jnp.concatenate([x_BND, label_BNO], -1), jnp.concatenate([x_BND, jnp.zeros_like(label_BNO)], -1)


def interleaved_tokens(x_BND: jax.Array, y_BN: jax.Array, spec: TaskSpec) -> jax.Array:
    """[B, 2N, W]: x~_1, y~_1, x~_2, y~_2, ..., each zero-padded to W = max(d, label width)."""
    w = token_width(spec, "interleaved")
    label_BNO = label_features(y_BN, spec, x_BND.dtype)

    def pad(a: jax.Array) -> jax.Array:
        return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, w - a.shape[-1])])

    return rearrange([pad(x_BND), pad(label_BNO)], "two b n w -> b (n two) w")


def run_causal(net: Network, ctx_BNW: jax.Array, qry_BNW: jax.Array) -> jax.Array:
    n = ctx_BNW.shape[1]
    out_BLO = net(jnp.concatenate([ctx_BNW, qry_BNW], 1), CAUSAL_PAIRS)
    return out_BLO[:, n:]  # [B, N, O]


def run_interleaved(net: Network, x_BND: jax.Array, y_BN: jax.Array, spec: TaskSpec) -> jax.Array:
    """One causal pass over the interleaved sequence; the output at x~_i sees x_1, y_1, ..., x_i: [B, N, O]."""
    tokens_BLW = interleaved_tokens(x_BND, y_BN, spec)
    length = tokens_BLW.shape[1]
    mask_LL = jnp.tril(jnp.ones((length, length), bool))
    return net(tokens_BLW, mask_LL)[:, ::2]


PREFIX_BUCKETS = 8  # more buckets: less padding, more (smaller) passes


def run_prefix(
    net: Network, ctx_BNW: jax.Array, qry_BNW: jax.Array, positions_P: jax.Array, buckets: int = PREFIX_BUCKETS
) -> jax.Array:
    """One bidirectional pass per prefix length i in `positions` (distinct), batched as [B, P, L] with a key mask.

    The positions are sorted and split by rank into `buckets` groups, each padded only to the length it needs: the
    k-th smallest of P distinct positions below N is at most N - P + k (exact when they are all of N - P..N-1), so
    the token work is about (1 + 1/buckets) x the literal loop's instead of 2x for one [P, N] padding. Works for
    traced positions (the bounds depend only on P and N). When bucketing would save less than 20% (a few positions
    out of many), one padded pass is used."""
    n, p = ctx_BNW.shape[1], positions_P.shape[0]
    order_P = jnp.argsort(positions_P)
    sorted_P = positions_P[order_P]
    bounds = np.linspace(0, p, min(buckets, p) + 1).round().astype(int)
    if np.sum(np.diff(bounds) * (n - p + bounds[1:])) > 0.8 * p * n:  # e.g. a few random positions: all need ~N
        bounds = np.array([0, p])  # one padded pass is then cheaper than several nearly as long
    outs = []
    for r0, r1 in itertools.pairwise(bounds):
        length = n - p + r1
        outs.append(_prefix_pass(net, ctx_BNW[:, :length], qry_BNW[:, :length], sorted_P[r0:r1]))
    out_BPO = jnp.concatenate(outs, axis=1)
    return jnp.take(out_BPO, jnp.argsort(order_P), axis=1)  # back to the callers' order


def _prefix_pass(net: Network, ctx_BLW: jax.Array, qry_BLW: jax.Array, positions_P: jax.Array) -> jax.Array:
    """Prefix i as row i of a [B, P, L] batch: context tokens 0..i-1, the query token at i, zeros after (never keys)."""
    length = ctx_BLW.shape[1]
    t = jnp.arange(length)
    i = positions_P[:, None]  # [P, 1]
    before, at = (t < i)[None, :, :, None], (t == i)[None, :, :, None]  # [1, P, L, 1]
    qry_BP1W = jnp.take(qry_BLW, positions_P, axis=1)[:, :, None]
    tokens_BPLW = jnp.where(before, ctx_BLW[:, None], jnp.where(at, qry_BP1W, 0.0))
    mask_P1L = (t <= i)[:, None, :]  # one row: every token of prefix i sees the keys 0..i (bidirectional)
    out_BPLO = net(tokens_BPLW, mask_P1L)
    return jnp.take_along_axis(out_BPLO, positions_P[None, :, None, None], axis=2)[:, :, 0]  # [B, P, O]


# ---------------------------------------------------------------------------------------------------------------
# The learner


@functools.cache
def _skeleton(module: type, config: ModelConfig, spec: TaskSpec) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: module(config, spec, rngs=nnx.Rngs(0))))


def bind(module: type, config: ModelConfig, params: LearnerParams) -> Any:
    """The module `module(config, spec)` holding the weights of `params` (its structure is built once, abstractly)."""
    graphdef, abstract = _skeleton(module, config, params.spec)
    state = jax.tree_util.tree_map(lambda leaf: leaf, abstract)  # a fresh copy to fill in
    nnx.replace_by_pure_dict(state, params.weights)
    return nnx.merge(graphdef, state)


@LEARNERS.register("icl")
@dataclasses.dataclass(frozen=True)
class ICLTransformer:
    """The ICL learner behind the Learner protocol: `init(key, spec)`, `predict(params, x, y, positions)`."""

    # Capabilities (icl_meta.learners.CAPABILITIES): a sequence model that learns in context, whose step cost grows
    # with the positions in the loss (one pass per prefix in the prefix protocol).
    in_context_model: ClassVar[bool] = True
    samples_loss_positions: ClassVar[bool] = True

    config: ModelConfig = PRESETS["paper"]

    @classmethod
    def from_hparams(cls, **hparams: Any) -> ICLTransformer:
        """`learners.build("icl", preset="paper", protocol="causal")` (a preset and overrides of its fields), or
        `config={...}`, the dict that config.json holds."""
        config = hparams.pop("config", None)
        if config is not None:
            return cls(ModelConfig(**{**config, **hparams}))
        return cls(preset(hparams.pop("preset", "paper"), **hparams))

    def init(self, key: jax.Array, spec: TaskSpec) -> LearnerParams:
        _, state = nnx.split(Network(self.config, spec, rngs=nnx.Rngs(params=key)))
        return LearnerParams(weights=nnx.to_pure_dict(state), spec=spec)

    @property
    def truncation_invariant(self) -> bool:
        """False for the causal protocol with learned or rotary positions: its query i sits at token N + i."""
        return not (self.config.protocol == "causal" and (self.config.positions or self.config.rotary))

    def network(self, params: LearnerParams) -> Network:
        return bind(Network, self.config, params)

    def predict(
        self, params: LearnerParams, x: jax.Array, y: jax.Array, positions: jax.Array | None = None
    ) -> jax.Array:
        """Log-probabilities over the 2C outputs [B, N|P, 2C] (outputs C..2C-1 are the padded label slots: never
        a correct answer, so an argmax there is an error, as in the reference), or regression predictions [B, N|P]."""
        spec = params.spec
        if x.shape[-1] != spec.d:
            raise ConfigError(f"input dim d={x.shape[-1]} does not match the model's d={spec.d}")
        net = self.network(params)
        if self.config.protocol == "prefix":
            positions_P = jnp.arange(x.shape[1]) if positions is None else jnp.asarray(positions)
            out = run_prefix(net, *make_tokens(x, y, spec), positions_P)
        else:
            out = (
                run_interleaved(net, x, y, spec)
                if self.config.protocol == "interleaved"
                else run_causal(net, *make_tokens(x, y, spec))
            )
            if positions is not None:
                out = jnp.take(out, jnp.asarray(positions), axis=1)
        if spec.is_regression:
            return out[..., 0]
        return jax.nn.log_softmax(out, axis=-1)


def count_params(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
