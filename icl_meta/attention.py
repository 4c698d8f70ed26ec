"""Attention kernels over one head's queries, keys and values [..., L, E], under a mask.

A mask is a boolean array [..., L, L] (query i may see key j), [..., 1, L] (every query sees the same keys), or
`CAUSAL_PAIRS`, the structure of the one-pass layout of the `causal` protocol, which the kernels exploit instead of
materialising it.

- `linear`: the reference's softmax-kernel linear attention (q: softmax over features times E^-1/2; k: softmax over
  the visible keys), with a blocked dense kernel and its written-out gradient for the causal layout.
- `softmax`: standard scaled dot-product attention.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CausalPairs:
    """The mask of the one-pass layout [context 0..N-1, query 0..N-1] (L = 2N tokens): context token a sees context
    tokens 0..a; query i sees context tokens 0..i-1 and itself (a non-causal context would leak y_i into query i)."""

    def dense(self, length: int) -> np.ndarray:
        """The same mask as a boolean [L, L] array (a constant)."""
        n = length // 2
        i = np.arange(n)
        ctx_ctx, qry_ctx = i[None, :] <= i[:, None], i[None, :] < i[:, None]
        top = np.concatenate([ctx_ctx, np.zeros((n, n), bool)], 1)
        bottom = np.concatenate([qry_ctx, np.eye(n, dtype=bool)], 1)
        return np.concatenate([top, bottom], 0)


CAUSAL_PAIRS = CausalPairs()
Mask = jax.Array | np.ndarray | CausalPairs

EXACT_GAP = 87.0  # the causal kernel is exact while each row's largest visible key is this close to its block's shift


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


def block_size(n: int) -> int:
    """The positions per row block of `_causal_pairs_blocked`: the divisor of N nearest 8."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - 8), d))


def _block_rows(n: int) -> np.ndarray:
    """[blocks, 2c]: the rows of block b, the context and query tokens of positions bc .. (b+1)c - 1."""
    c = block_size(n)
    positions = np.arange(n).reshape(n // c, c)
    return np.concatenate([positions, n + positions], axis=1)


def _block_shifts(k_LE: jax.Array) -> jax.Array:
    """[..., blocks, E]: the largest key (per feature) any row of each block sees: the context keys up to the block's
    end and the block's own query keys."""
    n, e = k_LE.shape[-2] // 2, k_LE.shape[-1]
    c = block_size(n)
    per_block = (*k_LE.shape[:-2], n // c, c, e)
    context = jax.lax.cummax(jnp.max(k_LE[..., :n, :].reshape(per_block), axis=-2), axis=k_LE.ndim - 2)
    return jnp.maximum(context, jnp.max(k_LE[..., n:, :].reshape(per_block), axis=-2))


def _blocked_parts(q_LE: jax.Array, k_LE: jax.Array) -> tuple:
    """What `_causal_pairs_blocked` and its gradient share: per block b, the row mask [b, R, L], the shifted keys
    e = exp(k - M_b) [..., b, L, E] (keys above the shift are invisible to the block: 0), the normalisers z and
    r = q / z of the block's rows [..., b, R, E], and the masked weights W = sum_f r_f e_f [..., b, R, L]."""
    length = q_LE.shape[-2]
    rows_bR = _block_rows(length // 2)
    mask_bRL = CAUSAL_PAIRS.dense(length)[rows_bR].astype(q_LE.dtype)
    above_bLE = k_LE[..., None, :, :] - _block_shifts(k_LE)[..., :, None, :]
    e_bLE = jnp.exp(jnp.where(above_bLE > 0, -jnp.inf, above_bLE))
    z_bRE = jnp.einsum("brl,...ble->...bre", mask_bRL, e_bLE)
    # A row whose visible keys all lie more than EXACT_GAP below the shift underflows to z = 0: it attends to nothing.
    z_bRE = jnp.where(z_bRE > 0, z_bRE, jnp.inf)
    r_bRE = q_LE[..., rows_bR, :] / z_bRE
    w_bRL = jnp.einsum("...bre,...ble->...brl", r_bRE, e_bLE) * mask_bRL
    return rows_bR, mask_bRL, e_bLE, z_bRE, r_bRE, w_bRL


def _to_layout(t_bRE: jax.Array, rows_bR: np.ndarray) -> jax.Array:
    """Block rows [..., b, R, E] back to the layout's row order [..., L, E]."""
    t_LE = t_bRE.reshape(*t_bRE.shape[:-3], -1, t_bRE.shape[-1])
    return jnp.take(t_LE, np.argsort(rows_bR.reshape(-1)), axis=-2)


@jax.custom_vjp
def _linear_causal_pairs(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array) -> jax.Array:
    """Context token a sees context 0..a; query i sees context 0..i-1 and itself. q is already normalised.

    out_i = sum_j [j visible to i] (sum_f q_if e_jf / z_if) v_j with e = exp(k - M_b) and z_i = sum_j e_j, where the
    shift M_b is the largest key the rows of i's block see (softmax is shift-invariant): per block of rows, masked
    [R, L] matmuls, the FLOPs of one dense [L, L] pass (batch and positions are the large dimensions at width ~6).
    The gradient is written out (not differentiated through q / z): it never forms 1 / z^2, so both are exact while
    a row's largest visible key is within EXACT_GAP of its block's shift (e^-EXACT_GAP is float32's smallest normal).
    Keys may spread by far more over a sequence: only the gap inside a block of ~8 positions counts. Beyond it (a row
    whose weights relative to its block's largest key are below e^-87 for every visible key) the row attends to
    nothing (output and gradient 0) instead of returning NaN."""
    return _linear_causal_pairs_fwd(q_LE, k_LE, v_LE)[0]


def _linear_causal_pairs_fwd(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array) -> tuple[jax.Array, tuple]:
    rows_bR, _, e_bLE, z_bRE, r_bRE, w_bRL = _blocked_parts(q_LE, k_LE)
    out_LE = _to_layout(jnp.einsum("...brl,...le->...bre", w_bRL, v_LE), rows_bR)
    return out_LE, (v_LE, e_bLE, z_bRE, r_bRE, w_bRL)


def _linear_causal_pairs_bwd(residuals: tuple, g_LE: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    v_LE, e_bLE, z_bRE, r_bRE, w_bRL = residuals
    rows_bR = _block_rows(v_LE.shape[-2] // 2)
    mask_bRL = CAUSAL_PAIRS.dense(v_LE.shape[-2])[rows_bR].astype(v_LE.dtype)
    g_bRE = g_LE[..., rows_bR, :]
    dv_LE = jnp.einsum("...brl,...bre->...le", w_bRL, g_bRE)
    dw_bRL = jnp.einsum("...bre,...le->...brl", g_bRE, v_LE) * mask_bRL
    dq_bRE = jnp.einsum("...brl,...ble->...bre", dw_bRL, e_bLE) / z_bRE  # d out / d r, over z: bounded
    dz_bRE = -dq_bRE * r_bRE  # = -(d r) q / z^2, without forming z^2
    de_bLE = jnp.einsum("...brl,...bre->...ble", dw_bRL, r_bRE) + jnp.einsum("brl,...bre->...ble", mask_bRL, dz_bRE)
    dk_bLE = e_bLE * de_bLE  # the shift is a constant (softmax is shift-invariant)
    dk_LE = sum(dk_bLE[..., b, :, :] for b in range(dk_bLE.shape[-3]))  # a few adds: XLA's reduce over this axis crawls
    return _to_layout(dq_bRE, rows_bR), dk_LE, dv_LE


_linear_causal_pairs.defvjp(_linear_causal_pairs_fwd, _linear_causal_pairs_bwd)


def softmax_attention(q_LE: jax.Array, k_LE: jax.Array, v_LE: jax.Array, mask: Mask) -> jax.Array:
    visible = mask.dense(q_LE.shape[-2]) if isinstance(mask, CausalPairs) else mask
    scores_LL = (q_LE @ jnp.swapaxes(k_LE, -1, -2)) / math.sqrt(q_LE.shape[-1])
    return jax.nn.softmax(jnp.where(visible, scores_LL, -jnp.inf), axis=-1) @ v_LE


KERNELS = {"linear": linear_attention, "softmax": softmax_attention}
