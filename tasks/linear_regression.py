"""Noiseless linear regression (Garg et al.'s task; docs/papers.md §2.7), the meta-level curriculum's family.

x ~ N(0, sigma^2 I_d) with the coordinates >= active_dims set to exactly 0 (the curriculum grows active_dims),
w ~ N(0, I_d), y = x.w (+ optional Gaussian noise). `active_dims` may be a traced jnp integer, so a curriculum can
change it inside a jitted training step without recompiling.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_number
from tasks.base import register


@register("linear_regression")
@dataclasses.dataclass(frozen=True)
class LinearRegression(TaskFamily):
    """params: `w` float32 [B, d]. y is float32 [B, N].

    active_dims: the number of non-zero input coordinates (None = d); a Python int is validated, a jnp integer
        (possibly traced) is used as is.
    noise_std: std of the Gaussian noise added to y (0 = the reference).
    """

    num_classes: int | None = None
    active_dims: int | None = None  # or a (traced) jnp integer
    noise_std: float = 0.0

    # Exact for noiseless tasks (from i = d on); with noise ridge at lam = noise_std^2 would be, kept simple here.
    optimal_rule: ClassVar[str | None] = "least_squares"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.num_classes is None,
            f"linear_regression: num_classes must be None (a regression family), got {self.num_classes!r}",
        )
        if isinstance(self.active_dims, int | np.integer):
            require(
                not isinstance(self.active_dims, bool) and 1 <= self.active_dims <= self.d,
                f"linear_regression: active_dims must be None or an integer in 1..d={self.d}, got {self.active_dims!r}",
            )
        else:
            require(
                self.active_dims is None or isinstance(self.active_dims, jax.Array),
                f"linear_regression: active_dims must be None or an integer in 1..d={self.d}, got {self.active_dims!r}",
            )
        require_number(self.noise_std, "linear_regression: noise_std", at_least=0)

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        """y = x.w, without the noise."""
        return jnp.einsum("...nd,...d->...n", x, params["w"])

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        d = self.d
        k_x, k_w, k_noise = jax.random.split(key, 3)
        x_BND = self.sigma * jax.random.normal(k_x, (batch, n, d), jnp.float32)
        if self.active_dims is not None:
            # A mask rather than a slice, so active_dims may be traced.
            x_BND = jnp.where(jnp.arange(d) < self.active_dims, x_BND, 0.0)
        w_BD = jax.random.normal(k_w, (batch, d), jnp.float32)
        y_BN = self.labels(x_BND, {"w": w_BD})
        if self.noise_std > 0:
            y_BN = y_BN + self.noise_std * jax.random.normal(k_noise, (batch, n), jnp.float32)
        return Episode(x=x_BND, y=y_BN, params={"w": w_BD})
