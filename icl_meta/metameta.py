"""Meta-level meta-learning, M2-ICL (docs/papers.md sections 2.8, 6.3 and 7.5): MAML over domains for the ICL learner.

Each meta-step draws one domain, `support` and `query` tasks of it, adapts ALL the learner's weights by `inner_steps`
full-batch SGD steps on the support tasks' loss (MSE over all positions: `train.loss_fn`), and returns the query tasks'
loss under the adapted weights; the trainer differentiates it (through the inner steps: second-order MAML, or
first-order) and applies its Adam step. So M2-ICL is `train.train(..., objective=MetaObjective(...))`: evaluation,
checkpoints, resume and logging are the ordinary trainer's. The inner loop is `icl_meta.inner_loop.adapt`.

Adaptation evaluation (the reference's `ft`, docs/papers.md §8 item 15): on each unseen test domain, plain SGD on all
parameters with minibatches drawn from a pool of t tasks of that domain, then the per-position squared error on fresh
query tasks of the same domain, with and without the adaptation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from icl_meta import evaluate
from icl_meta.contracts import DomainFamily, Episode, Learner, TaskFamily, is_domain_family
from icl_meta.errors import require, require_bool, require_int, require_number
from icl_meta.inner_loop import adapt
from icl_meta.parallel import shard_batch
from icl_meta.train import TrainConfig, loss_fn, loss_groups, step_positions, stratum_weights

DIAGNOSTIC_DOMAINS = 16  # domains per meta-training diagnostic (the same ones at every evaluation of a run)


@dataclasses.dataclass(frozen=True)
class MetaObjective:
    """The M2-ICL meta-objective (docs/papers.md §6.3: support 64, query 64, 5 inner SGD steps, lr 0.01, second order).

    Step keys: fold_in(key, 0) the domain, 1 the support tasks, 2 the query tasks, 3 the loss positions (the
    trainer's `step_positions`: all of [loss_start, stop) unless positions_per_step). `cfg.batch` is not used. The
    trainer's held-out metric stays the learner's unadapted error on `family.sample` (tasks of one training domain).
    """

    support: int = 64
    query: int = 64
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False

    name: ClassVar[str] = "m2icl"

    def __post_init__(self) -> None:
        for field in ("support", "query", "inner_steps"):
            require_int(getattr(self, field), f"m2icl: {field}")
        require_number(self.inner_lr, "m2icl: inner_lr", above=0)
        require_bool(self.first_order, "m2icl: first_order")

    def check(self, family: TaskFamily, cfg: TrainConfig) -> None:
        require(
            is_domain_family(family),
            f"m2icl: the task family must have domains (sample_domain, sample_tasks), e.g. domain_regression; "
            f"got {family.name!r}",
        )
        require(cfg.curriculum is None, "m2icl: a curriculum is not supported with the meta-objective")

    def loss(
        self,
        params: Any,
        key: jax.Array,
        step: jax.Array,
        *,
        learner: Learner,
        family: DomainFamily,
        cfg: TrainConfig,
        mesh: Mesh | None,
    ) -> jax.Array:
        return self._meta_loss(params, key, learner=learner, family=family, cfg=cfg, mesh=mesh)[0]

    def _meta_loss(
        self,
        params: Any,
        key: jax.Array,
        *,
        learner: Learner,
        family: DomainFamily,
        cfg: TrainConfig,
        mesh: Mesh | None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The query loss under the adapted weights, and what the diagnostics read besides: the support and query
        losses before adaptation and the support loss after it."""
        domain = family.sample_domain(jax.random.fold_in(key, 0))
        support = shard_batch(family.sample_tasks(jax.random.fold_in(key, 1), domain, self.support, cfg.n), mesh)
        query = shard_batch(family.sample_tasks(jax.random.fold_in(key, 2), domain, self.query, cfg.n), mesh)
        positions = step_positions(cfg, jax.random.fold_in(key, 3))
        weights_P, groups = stratum_weights(cfg), loss_groups(cfg)

        def task_loss(p: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
            return loss_fn(learner, family, p, batch[0], batch[1], positions, weights_P, groups)

        adapted, support_losses_S = adapt(
            task_loss,
            params,
            (support.x, support.y),
            steps=self.inner_steps,
            lr=self.inner_lr,
            first_order=self.first_order,
        )
        query_after = task_loss(adapted, (query.x, query.y))
        parts = {
            "support_before": support_losses_S[0] if self.inner_steps else task_loss(params, (support.x, support.y)),
            "support_after": task_loss(adapted, (support.x, support.y)),
            "query_before": task_loss(params, (query.x, query.y)),
            "target_variance": jnp.var(query.y),
        }
        return query_after, jax.lax.stop_gradient(parts)

    def diagnostics(
        self, params: Any, key: jax.Array, *, learner: Learner, family: TaskFamily, cfg: TrainConfig
    ) -> dict[str, jax.Array]:
        """Why the meta-objective moves or not, on `DIAGNOSTIC_DOMAINS` domains drawn from `key` as `loss` draws a
        step's: per domain the support loss before and after the inner steps, the query loss before and after them,
        the query tasks' target variance and the norm of the meta-gradient (through the inner steps, or first order,
        as trained). Returned as means over the domains, and the median ratios after / before (the losses of
        domains with a large weight scale dominate a mean: y = s x.w)."""
        require(is_domain_family(family), f"m2icl: {family.name!r} has no domains")
        domain_family: Any = family

        def one(k: jax.Array) -> dict[str, jax.Array]:
            meta = functools.partial(self._meta_loss, learner=learner, family=domain_family, cfg=cfg, mesh=None)
            (query_after, parts), grads = jax.value_and_grad(meta, has_aux=True)(params, k)
            return {**parts, "query_after": query_after, "meta_grad_norm": optax.global_norm(grads)}

        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(DIAGNOSTIC_DOMAINS))
        per_domain = jax.lax.map(one, keys)
        out = {name: jnp.mean(values) for name, values in per_domain.items()}
        out["support_after_over_before"] = jnp.median(per_domain["support_after"] / per_domain["support_before"])
        out["query_after_over_before"] = jnp.median(per_domain["query_after"] / per_domain["query_before"])
        return out

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


# ---------------------------------------------------------------------------------------------------------------------
# Adaptation evaluation


@functools.partial(jax.jit, static_argnames=("learner", "family", "steps", "lr", "batch"))
def finetune(
    learner: Learner,
    family: TaskFamily,
    params: Any,
    pool: Episode,
    *,
    steps: int,
    lr: float,
    batch: int,
    key: jax.Array,
) -> Any:
    """`steps` plain SGD steps on all parameters, each on min(batch, t) tasks drawn without replacement from the
    pool of t tasks (independently per step; the whole pool every step when t <= batch), loss MSE over all
    positions. Step k's minibatch comes from fold_in(key, k)."""
    require_int(steps, "finetune: steps")
    t, n = pool.x.shape[:2]
    m = min(batch, t)
    idx_SB = jax.vmap(lambda k: jax.random.choice(jax.random.fold_in(key, k), t, (m,), replace=False))(
        jnp.arange(steps)
    )
    positions = jnp.arange(n)

    def task_loss(p: Any, minibatch: tuple[jax.Array, jax.Array]) -> jax.Array:
        return loss_fn(learner, family, p, minibatch[0], minibatch[1], positions)

    adapted, _ = adapt(task_loss, params, (pool.x[idx_SB], pool.y[idx_SB]), steps=steps, lr=lr, per_step=True)
    return adapted


def domain_keys(key: jax.Array, domains: int) -> jax.Array:
    """Test domain i's key: fold_in(key, i), so the first k domains are the same for any number of domains."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(domains))


def domain_episodes(
    family: DomainFamily, key: jax.Array, *, pool: int, queries: int, n: int
) -> tuple[Episode, Episode]:
    """One test domain's adaptation pool and query tasks, both from its key (`domain_keys`)."""
    domain = family.sample_domain(jax.random.fold_in(key, 0))
    pool_episode = family.sample_tasks(jax.random.fold_in(key, 1), domain, pool, n)
    query = family.sample_tasks(jax.random.fold_in(key, 2), domain, queries, n)
    return pool_episode, query


@functools.partial(
    jax.jit, static_argnames=("learner", "family", "pool", "queries", "n", "steps", "lr", "batch", "domain_batch")
)
def _adaptation_errors(
    learner: Learner,
    family: DomainFamily,
    params: Any,
    keys_D: jax.Array,
    *,
    pool: int,
    queries: int,
    n: int,
    steps: int,
    lr: float,
    batch: int,
    domain_batch: int,
) -> tuple[jax.Array, jax.Array]:
    spec = family.spec

    def one_domain(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        pool_episode, query = domain_episodes(family, key, pool=pool, queries=queries, n=n)

        def errors_N(p: Any) -> jax.Array:  # mean over the query tasks
            return jnp.mean(evaluate.pointwise(spec, learner.predict(p, query.x, query.y), query.y), axis=0)

        before_N = errors_N(params)
        if steps == 0:
            return before_N, before_N
        adapted = finetune(
            learner, family, params, pool_episode, steps=steps, lr=lr, batch=batch, key=jax.random.fold_in(key, 3)
        )
        return before_N, errors_N(adapted)

    # vmap over chunks of domains: parallel where cheap, bounded memory for many domains or query tasks.
    return jax.lax.map(one_domain, keys_D, batch_size=domain_batch)


def evaluate_adaptation(
    learner: Learner,
    family: DomainFamily,
    params: Any,
    *,
    domains: int,
    pool: int,
    queries: int,
    n: int,
    steps: int,
    lr: float,
    batch: int,
    key: jax.Array,
    domain_batch: int = 8,
) -> dict[str, np.ndarray]:
    """Squared error per domain and position, [domains, N] (mean over the query tasks of each domain), on `domains` test
    domains of `family` (pass `family.test_domains()`), before and after fine-tuning (`finetune`, `steps` steps) on
    a pool of `pool` tasks of the domain: {"unadapted": [domains, N], "adapted": [domains, N]} (equal when steps = 0).

    Domain i, its pool, its query tasks and its minibatches come from fold_in(key, i) alone, so every learner, pool
    size and number of domains sees the same domains and query tasks."""
    for field, value in (("domains", domains), ("pool", pool), ("queries", queries), ("n", n), ("batch", batch)):
        require_int(value, f"evaluate_adaptation: {field}")
    require_int(steps, "evaluate_adaptation: steps", 0)
    require(is_domain_family(family), f"evaluate_adaptation: {family.name!r} has no domains")
    before, after = _adaptation_errors(
        learner, family, params, domain_keys(key, domains), pool=pool, queries=queries, n=n, steps=steps, lr=lr,
        batch=batch, domain_batch=min(domain_batch, domains),
    )  # fmt: skip
    return {"unadapted": np.asarray(before, np.float64), "adapted": np.asarray(after, np.float64)}
