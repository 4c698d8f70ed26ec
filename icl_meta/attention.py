"""Attention kernels over one head's queries, keys and values [..., L, E], under a mask.

A mask is a boolean array [..., L, L] (query i may see key j), [..., 1, L] (every query sees the same keys), or
`CAUSAL_PAIRS`, the structure of the one-pass layout of the `causal` protocol, which the kernels exploit instead of
materialising it.

- `linear`: the reference's softmax-kernel linear attention (q: softmax over features times E^-1/2; k: softmax over
  the visible keys), in a dense and an online-softmax scan form for the causal layout.
- `softmax`: standard scaled dot-product attention.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CausalPairs:
    """The mask of the one-pass layout [context 0..N-1, query 0..N-1] (L = 2N tokens): context token a sees context
    tokens 0..a; query i sees context tokens 0..i-1 and itself (a non-causal context would leak y_i into query i)."""

    def dense(self, length: int) -> jax.Array:
        """The same mask as a boolean [L, L] array."""
        n = length // 2
        i = jnp.arange(n)
        ctx_ctx, qry_ctx = i[None, :] <= i[:, None], i[None, :] < i[:, None]
        top = jnp.concatenate([ctx_ctx, jnp.zeros((n, n), bool)], 1)
        bottom = jnp.concatenate([qry_ctx, jnp.eye(n, dtype=bool)], 1)
        return jnp.concatenate([top, bottom], 0)


CAUSAL_PAIRS = CausalPairs()
Mask = jax.Array | CausalPairs

SAFE_SPREAD = 30.0  # the dense path's weights and their gradients (~exp(2 x spread)) stay far from float32 limits


def linear_attention(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array, mask: Mask) -> jax.Array:
    """The reference's linear attention, generalised to a mask: q~ = softmax_features(q) E^-1/2 and, for each query
    i, the keys' sequence softmax is taken over the keys visible to i:
    out_i = sum_f q~_if sum_{j in V(i)} softmax_{j in V(i)}(k_jf) v_j.

    - mask [..., 1, L]: every query sees the same keys (a bidirectional pass): the reference's `q (k^T v)`.
    - CAUSAL_PAIRS: the causal one-pass layout (see `_linear_causal_pairs`).
    - mask [..., L, L]: any mask, with the softmax per (query, feature), [..., L, L, E] (slow; for tests).
    """
    e = q_LE.shape[-1]
    q_LE = jax.nn.softmax(q_LE, axis=-1) * e**-0.5
    if isinstance(mask, CausalPairs):
        return _linear_causal_pairs(q_LE, k_LE, v_LE)
    if mask.shape[-2] == 1:
        k_LE = jax.nn.softmax(jnp.where(mask[..., 0, :, None], k_LE, -jnp.inf), axis=-2)  # over the sequence
        return q_LE @ (jnp.swapaxes(k_LE, -1, -2) @ v_LE)  # [..., L, E] @ [..., E, E]
    w_LLE = jax.nn.softmax(jnp.where(mask[..., None], k_LE[..., None, :, :], -jnp.inf), axis=-2)
    return jnp.einsum("...if,...ijf->...ij", q_LE, w_LLE) @ v_LE


def _linear_causal_pairs(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array) -> jax.Array:
    """Context token a sees context 0..a; query i sees context 0..i-1 and itself. q is already normalised.

    Fast path: one shift per sequence and feature and dense masked matmuls, exact while every key feature spreads
    by less than SAFE_SPREAD over the sequence (beyond ~44, a normaliser's square underflows in the backward pass).
    Otherwise (trained weights can produce logits hundreds apart) the whole batch takes the scan of per-prefix
    online-softmax states, which is exact for any spread."""
    spread = jnp.max(k_LE, axis=-2) - jnp.min(k_LE, axis=-2)
    return jax.lax.cond(jnp.all(spread < SAFE_SPREAD), _causal_pairs_dense, _causal_pairs_scan, q_LE, k_LE, v_LE)


def _causal_pairs_dense(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array) -> jax.Array:
    """out_i = sum_j [j visible to i] (sum_f q_if e_jf / z_if) v_j with e = exp(k - max_seq k), z_i = sum_j e_j:
    three [L, L]-sized matmuls per sequence (batch and positions are the large dimensions at width ~6)."""
    mask_LL = CAUSAL_PAIRS.dense(q_LE.shape[-2]).astype(q_LE.dtype)
    e_LE = jnp.exp(k_LE - jax.lax.stop_gradient(jnp.max(k_LE, axis=-2, keepdims=True)))  # softmax: shift-invariant
    z_LE = jnp.einsum("ij,...jf->...if", mask_LL, e_LE)
    weights_LL = (q_LE / z_LE) @ jnp.swapaxes(e_LE, -1, -2)
    return (weights_LL * mask_LL) @ v_LE


def _combine(a: tuple, b: tuple) -> tuple:
    """Merge two online-softmax states (max m [.., E], normaliser z [.., E], sum S [.., E, E] of exp(k - m) v)."""
    (m1, z1, s1), (m2, z2, s2) = a, b
    m = jnp.maximum(m1, m2)
    w1, w2 = jnp.exp(m1 - m), jnp.exp(m2 - m)
    return m, w1 * z1 + w2 * z2, w1[..., None] * s1 + w2[..., None] * s2


def _causal_pairs_scan(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array) -> jax.Array:
    """The same in O(N) memory by an associative scan of online-softmax prefix states; safe for any spread."""
    n = q_LE.shape[-2] // 2
    axis = q_LE.ndim - 2

    def own(k: jax.Array, v: jax.Array) -> tuple:  # the state of a single key
        return k, jnp.ones_like(k), jnp.broadcast_to(v[..., None, :], (*v.shape, v.shape[-1]))

    m, z, s = jax.lax.associative_scan(_combine, own(k_LE[..., :n, :], v_LE[..., :n, :]), axis=axis)
    out_ctx = jnp.einsum("...f,...fg->...g", q_LE[..., :n, :] / z, s)

    def exclusive(t: jax.Array, fill: float) -> jax.Array:  # the state before each position
        pad = jnp.full_like(jax.lax.slice_in_dim(t, 0, 1, axis=axis), fill)
        return jnp.concatenate([pad, jax.lax.slice_in_dim(t, 0, n - 1, axis=axis)], axis=axis)

    before = (exclusive(m, -1e30), exclusive(z, 0.0), exclusive(s, 0.0))  # finite "empty" max: no inf - inf
    _, zq, sq = _combine(before, own(k_LE[..., n:, :], v_LE[..., n:, :]))
    out_qry = jnp.einsum("...f,...fg->...g", q_LE[..., n:, :] / zq, sq)
    return jnp.concatenate([out_ctx, out_qry], axis=-2)


def softmax_attention(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array, mask: Mask) -> jax.Array:
    if isinstance(mask, CausalPairs):
        mask = mask.dense(q_LE.shape[-2])
    scores_LL = (q_LE @ jnp.swapaxes(k_LE, -1, -2)) / math.sqrt(q_LE.shape[-1])
    return jax.nn.softmax(jnp.where(mask, scores_LL, -jnp.inf), axis=-1) @ v_LE


KERNELS = {"linear": linear_attention, "softmax": softmax_attention}
