"""Domain-structured linear regression for meta-level meta-learning (M2-ICL, docs/papers.md §2.8): tasks in domains.

`weights="code"` (the reference's `improving/meta_train.py`, the default): a domain is an input map A ~ N(0, 1)^{d x d},
a scalar bias b ~ N(0, 1) added to every coordinate and a weight scale s = task_scale * N(0, 1). A task of the domain
draws z ~ N(0, sigma^2 I_d), x = z A + b (row vector times matrix), w ~ N(0, I_d) and y = s (x . w): within a domain
x ~ N(b 1, sigma^2 A^T A) and s w ~ N(0, s^2 I). Meta-training uses task_scale 8, test domains task_scale 1
(docs/papers.md §8 item 14): `test_domains()`.

`weights="paper"`: the paper's text, "p_delta(tau) = N(mu_delta, Sigma_delta) with (mu_delta, Sigma_delta) ~ p(delta)":
x ~ N(0, sigma^2 I_d), w ~ N(mu, Sigma), y = x . w. p(delta) is not given anywhere; the one used here is INFERRED:
mu ~ N(0, I_d), Sigma = L L^T with L = N(0, 1)^{d x d} / sqrt(d) (so E[Sigma] = I). The paper tests on domains drawn
from the same p(delta), so this variant has no weight scale and ignores `task_scale`.

`sample(key, B, n)` draws ONE domain for the whole batch (the plain ICL baseline's training batch: docs/papers.md §8
item 16);
`sample_domain` and `sample_tasks` split the two levels for M2-ICL. Every method is pure and jittable.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from icl_meta.contracts import Episode, TaskFamily
from icl_meta.errors import require, require_choice, require_int, require_number
from tasks.base import register

WEIGHTS = ("code", "paper")
TEST_TASK_SCALE = 1.0  # the reference's test domains: task_scale ~ randn, no x8 (ceval.py)


@register("domain_regression")
@dataclasses.dataclass(frozen=True)
class DomainRegression(TaskFamily):
    """params (each with the batch axis first; the domain's repeated for every task of the batch):
    code: `w` [B, d], `A` [B, d, d], `b` [B], `s` [B]; paper: `w` [B, d], `mu` [B, d], `L` [B, d, d] (Sigma = L L^T).
    y is float32 [B, N].

    task_scale: the std of the code variant's weight scale s (8 in meta-training, 1 for test domains).
    weights: "code" (the reference's generator) or "paper" (w ~ N(mu, Sigma), with an inferred p(delta)).
    """

    d: int = 5
    num_classes: int | None = None
    task_scale: float = 8.0
    weights: str = "code"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.num_classes is None,
            f"domain_regression: num_classes must be None (a regression family), got {self.num_classes!r}",
        )
        require_number(self.task_scale, "domain_regression: task_scale", above=0)
        require_choice(self.weights, "domain_regression: weights", WEIGHTS)

    def test_domains(self) -> DomainRegression:
        """The family of the unseen test domains: task_scale 1 (the paper variant's test domains equal its own)."""
        return dataclasses.replace(self, task_scale=TEST_TASK_SCALE)

    def sample_domain(self, key: jax.Array) -> dict[str, jax.Array]:
        """One domain's parameters: {A [d, d], b [], s []} (code) or {mu [d], L [d, d]} (paper)."""
        d = self.d
        k_1, k_2, k_3 = jax.random.split(key, 3)
        if self.weights == "paper":
            mu_D = jax.random.normal(k_1, (d,), jnp.float32)
            L_DD = jax.random.normal(k_2, (d, d), jnp.float32) / math.sqrt(d)
            return {"mu": mu_D, "L": L_DD}
        A_DD = jax.random.normal(k_1, (d, d), jnp.float32)
        b = jax.random.normal(k_2, (), jnp.float32)
        s = self.task_scale * jax.random.normal(k_3, (), jnp.float32)
        return {"A": A_DD, "b": b, "s": s}

    def sample_tasks(self, key: jax.Array, domain: dict[str, jax.Array], batch: int, n: int) -> Episode:
        """B tasks of N examples each from `domain` (new weights per task; the domain's parameters in params)."""
        require_int(batch, f"{self.name}: batch")
        require_int(n, f"{self.name}: n")
        d = self.d
        k_x, k_w = jax.random.split(key)
        z_BND = self.sigma * jax.random.normal(k_x, (batch, n, d), jnp.float32)
        eps_BD = jax.random.normal(k_w, (batch, d), jnp.float32)
        if self.weights == "paper":
            x_BND = z_BND
            w_BD = domain["mu"] + eps_BD @ domain["L"].T  # N(mu, L L^T)
            y_BN = jnp.einsum("bnd,bd->bn", x_BND, w_BD)
        else:
            x_BND = z_BND @ domain["A"] + domain["b"]
            w_BD = eps_BD
            y_BN = domain["s"] * jnp.einsum("bnd,bd->bn", x_BND, w_BD)
        # The domain repeated per task: every param has the batch axis first (sharding, slicing).
        per_task = {k: jnp.broadcast_to(v, (batch, *v.shape)) for k, v in domain.items()}
        return Episode(x=x_BND, y=y_BN, params={"w": w_BD, **per_task})

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        """y = s (x . w) (code) or x . w (paper)."""
        y = jnp.einsum("...nd,...d->...n", x, params["w"])
        return y if self.weights == "paper" else params["s"][..., None] * y

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        k_domain, k_tasks = jax.random.split(key)
        return self.sample_tasks(k_tasks, self.sample_domain(k_domain), batch, n)
