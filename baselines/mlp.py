"""A small multi-layer perceptron as pure functions of a list of {"w": [in, out], "b": [out]} layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import jax
import jax.numpy as jnp

Array = jax.Array
Layers = list[dict[str, Array]]


def init_mlp(key: Array, sizes: Sequence[int]) -> Layers:
    """Layers sizes[0] -> sizes[1] -> ... initialised as PyTorch's nn.Linear: w, b ~ U(-1/sqrt(in), 1/sqrt(in))."""
    layers = []
    for layer_key, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes) - 1), pairwise(sizes), strict=True):
        w_key, b_key = jax.random.split(layer_key)
        bound = 1.0 / math.sqrt(fan_in)
        layers.append(
            {
                "w": jax.random.uniform(w_key, (fan_in, fan_out), jnp.float32, -bound, bound),
                "b": jax.random.uniform(b_key, (fan_out,), jnp.float32, -bound, bound),
            }
        )
    return layers


def mlp(layers: Layers, x: Array, activation: Callable[[Array], Array] = jax.nn.leaky_relu) -> Array:
    """Affine layers with `activation` between them (LeakyReLU(0.01) by default, as the reference's baselines)."""
    for layer in layers[:-1]:
        x = activation(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]
