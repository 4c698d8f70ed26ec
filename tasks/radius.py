"""Radius tasks ("rad", docs/papers.md §2.4): an in-context problem whose optimal algorithm is no meta-learner's.

Each task draws a radius r ~ U(r_min, r_max); inputs x ~ N(0, (c_d r sigma)^2 I_d) with c_d = 1/median(chi_d), so
||x|| / (c_d r) is chi_d-distributed at sigma=1 and the median of ||x|| is r: the classes are balanced in any d
(c_2 = 1/sqrt(2 ln 2) = 0.8493, the reference's 0.849). C=2: class 0 iff ||x||_2 > r. General C: shells cut at
r q_k, q_k = chi_d-quantile(1 - k/C) / median(chi_d), class 0 = the outermost shell. The thresholds do not depend
on sigma.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_number
from tasks.base import register


def _chi2_cdf(x: float, d: int) -> float:
    """P(chi^2_d <= x) = regularised lower incomplete gamma P(d/2, x/2), by its power series in log space."""
    if x <= 0.0:
        return 0.0
    a, z = d / 2.0, x / 2.0
    # P(a, z) = sum_{n>=0} exp(a log z - z - lgamma(a + n + 1) + n log z): Poisson-like terms, each <= 1, that rise
    # until n ~ z - a and then fall geometrically; summed with a running maximum so nothing over- or underflows.
    log_term = a * math.log(z) - z - math.lgamma(a + 1.0)
    log_max, total, n = log_term, 1.0, 0
    while True:
        n += 1
        log_term += math.log(z) - math.log(a + n)
        if log_term > log_max:
            total = total * math.exp(log_max - log_term) + 1.0
            log_max = log_term
        else:
            total += math.exp(log_term - log_max)
            if n > z - a and log_term - log_max < -40.0:
                break
    return min(1.0, math.exp(log_max + math.log(total)))


@functools.cache
def chi_quantile(d: int, p: float) -> float:
    """The p-quantile of chi_d (the norm of a standard normal d-vector), by bisection on the chi^2_d CDF."""
    lo, hi = 0.0, float(d) + 10.0
    while _chi2_cdf(hi, d) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _chi2_cdf(mid, d) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return math.sqrt(0.5 * (lo + hi))


def radius_scale(d: int) -> float:
    """c_d = 1/median(chi_d): the input scale per unit radius that puts half the inputs outside the radius."""
    return 1.0 / chi_quantile(d, 0.5)


@functools.cache
def radius_thresholds(d: int, num_classes: int) -> tuple[float, ...]:
    """q_1 > ... > q_{C-1}: class k iff r q_{k+1} < ||x|| <= r q_k (q_0 = inf, q_C = 0); q_1 = 1 for C=2."""
    median = chi_quantile(d, 0.5)
    return tuple(chi_quantile(d, 1.0 - k / num_classes) / median for k in range(1, num_classes))


def radius_labels(x_ND: jax.Array, radius: jax.Array, num_classes: int) -> jax.Array:
    """x [..., N, d], radius [...] -> int32 [..., N]; the class is the number of thresholds at or above ||x||."""
    norm_N = jnp.linalg.norm(x_ND, axis=-1)
    thresholds = jnp.asarray(radius_thresholds(x_ND.shape[-1], num_classes), jnp.float32)
    return jnp.sum(norm_N[..., None] <= radius[..., None, None] * thresholds, axis=-1).astype(jnp.int32)


@register("radius")
@dataclasses.dataclass(frozen=True)
class Radius(TaskFamily):
    """params: `radius` float32 [B]. r ~ U(r_min, r_max): U(2, 4) in the evaluation, U(1, 4) in the reference plot."""

    r_min: float = 2.0
    r_max: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes is not None, "radius: num_classes must be an integer >= 2, got None")
        require_number(self.r_min, "radius: r_min", above=0)
        require(
            isinstance(self.r_max, int | float) and self.r_min <= self.r_max < math.inf,
            f"radius: r_max must be a finite number >= r_min={self.r_min!r}, got {self.r_max!r}",
        )

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        return radius_labels(x, params["radius"], self.spec.classes)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        k_r, k_x = jax.random.split(key)
        r_B = jax.random.uniform(k_r, (batch,), jnp.float32, self.r_min, self.r_max)
        scale_B = radius_scale(self.d) * self.sigma * r_B
        x_BND = scale_B[:, None, None] * jax.random.normal(k_x, (batch, n, self.d), jnp.float32)
        y_BN = self.labels(x_BND, {"radius": r_B})
        return Episode(x=x_BND, y=y_BN, params={"radius": r_B})
