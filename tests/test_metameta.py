"""M2-ICL: `adapt` on the ICL learner's weights against hand-unrolled SGD (full batch and one batch per step), the
meta-gradient against central finite differences, fine-tuning, and meta-training's determinism and resume.

The training tests use Figure 6's smoke settings, so the meta-step compiled here is reused by tests/test_fig6.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from experiments import fig6_metameta as fig6
from icl_meta.contracts import Episode
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError
from icl_meta.inner_loop import adapt
from icl_meta.metameta import DIAGNOSTIC_DOMAINS, MetaObjective, finetune
from icl_meta.runs import RunDir, read_json
from icl_meta.train import TrainConfig, loss_fn, objective_diagnostics, train

SMOKE = fig6.SCALES["smoke"]
LEARNER, FAMILY = fig6.learner(SMOKE), fig6.family(SMOKE)
N = SMOKE.n
POSITIONS = jnp.arange(N)


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def tree_dot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def mse(params, batch):
    return loss_fn(LEARNER, FAMILY, params, batch[0], batch[1], POSITIONS)


@pytest.fixture(scope="module")
def params():
    return LEARNER.init(jax.random.key(0), FAMILY.spec)


@pytest.fixture(scope="module")
def batches():
    """Three batches of 4 tasks from one domain: x [3, 4, N, d], y [3, 4, N]."""
    sample = jax.jit(FAMILY.sample_tasks, static_argnums=(2, 3))
    domain = FAMILY.sample_domain(jax.random.key(1))
    eps = [sample(jax.random.key(2 + i), domain, 4, N) for i in range(3)]
    return jnp.stack([e.x for e in eps]), jnp.stack([e.y for e in eps])


@jax.jit
def adapt_and_unrolled(params, x, y):
    """adapt (full batch x[0]; and one batch per step, x[1] then x[2]) and the same two SGD steps written out."""
    lr = 0.01
    full, full_losses = adapt(mse, params, (x[0], y[0]), steps=2, lr=lr)
    per_step, step_losses = adapt(mse, params, (x[1:], y[1:]), steps=2, lr=lr, per_step=True)

    def sgd(p, batch):
        return jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(mse)(p, batch))

    p1 = sgd(params, (x[0], y[0]))
    q1 = sgd(params, (x[1], y[1]))
    return {
        "full": (full, sgd(p1, (x[0], y[0]))),
        "full_losses": (full_losses, jnp.stack([mse(params, (x[0], y[0])), mse(p1, (x[0], y[0]))])),
        "per_step": (per_step, sgd(q1, (x[2], y[2]))),
        "step_losses": (step_losses, jnp.stack([mse(params, (x[1], y[1])), mse(q1, (x[2], y[2]))])),
    }


@pytest.fixture(scope="module")
def unrolled(params, batches):
    return adapt_and_unrolled(params, *batches)


@pytest.mark.parametrize("case", ["full", "full_losses", "per_step", "step_losses"])
def test_adapt_equals_unrolled_sgd_on_icl_weights(unrolled, case):
    got, by_hand = unrolled[case]
    for a, b in zip(leaves(got), leaves(by_hand), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adapt_steps_move_the_weights(unrolled, params):
    full, per_step = unrolled["full"][0], unrolled["per_step"][0]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(leaves(full), leaves(params), strict=True) if a.size > 1)
    assert max(np.abs(a - b).max() for a, b in zip(leaves(full), leaves(per_step), strict=True)) > 1e-6


def test_adapt_per_step_needs_one_batch_per_step(params, batches):
    x, y = batches
    with pytest.raises(ConfigError, match="leading axis of steps=3"):
        adapt(mse, params, (x[1:], y[1:]), steps=3, lr=0.01, per_step=True)


def test_finetune_on_a_small_pool_is_full_batch_sgd(params, batches, unrolled):
    """With t <= batch every step takes the whole pool (in some order): the hand-unrolled full-batch SGD."""
    x, y = batches
    pool = Episode(x[0], y[0], {})
    tuned = finetune(LEARNER, FAMILY, params, pool, steps=2, lr=0.01, batch=8, key=jax.random.key(3))
    for a, b in zip(leaves(tuned), leaves(unrolled["full"][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_meta_gradient_matches_finite_differences():
    """float64: the second-order meta-gradient along a random direction equals central differences of the meta-loss;
    the first-order one does not."""
    family = FAMILY.test_domains()  # task_scale 1: moderate losses, so the inner steps stay in a smooth region
    cfg = TrainConfig(steps=1, batch=8, n=N)
    key, eps = jax.random.key(5), 1e-5

    def value_and_grad(objective):  # one compiled program per objective, reused for the shifted points
        loss = functools.partial(objective.loss, key=key, step=0, learner=LEARNER, family=family, cfg=cfg, mesh=None)
        return jax.jit(jax.value_and_grad(loss))

    with jax.enable_x64(True):
        p0 = jax.tree.map(lambda a: a.astype(jnp.float64), LEARNER.init(jax.random.key(4), family.spec))
        rng = np.random.default_rng(0)
        v = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p0)
        second = value_and_grad(MetaObjective(4, 4, 2, 0.1))
        _, g2 = second(p0)
        (plus, _), (minus, _) = (second(jax.tree.map(lambda w, d, s=s: w + s * eps * d, p0, v)) for s in (1, -1))
        _, g1 = value_and_grad(MetaObjective(4, 4, 2, 0.1, first_order=True))(p0)
        fd, d2, d1 = float((plus - minus) / (2 * eps)), float(tree_dot(g2, v)), float(tree_dot(g1, v))
    np.testing.assert_allclose(d2, fd, rtol=1e-6)
    assert abs(d1 - d2) > 1e-3 * abs(d2)


def test_meta_diagnostics_equal_a_direct_computation(params):
    """The logged diagnostics: the documented draws per domain, hand-unrolled SGD, the meta-gradient through it.
    Computed by the trainer's own compiled program, with the settings of the meta-training run below (shared)."""
    objective, cfg, key = fig6.objective(SMOKE, "m2icl"), fig6.train_config(SMOKE, 0), jax.random.key(7)
    assert objective == MetaObjective(4, 4, 2, 0.01)
    got = objective_diagnostics(objective, params, key, learner=LEARNER, family=FAMILY, cfg=cfg.step_settings())

    @jax.jit
    def direct(k):
        domain = FAMILY.sample_domain(jax.random.fold_in(k, 0))
        support = FAMILY.sample_tasks(jax.random.fold_in(k, 1), domain, 4, N)
        query = FAMILY.sample_tasks(jax.random.fold_in(k, 2), domain, 4, N)

        def query_after(p):
            for _ in range(2):
                g = jax.grad(mse)(p, (support.x, support.y))
                p = jax.tree.map(lambda w, d: w - 0.01 * d, p, g)
            return mse(p, (query.x, query.y)), p

        (after, adapted), grads = jax.value_and_grad(query_after, has_aux=True)(params)
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)))
        return {
            "support_before": mse(params, (support.x, support.y)),
            "support_after": mse(adapted, (support.x, support.y)),
            "query_before": mse(params, (query.x, query.y)),
            "query_after": after,
            "target_variance": jnp.var(query.y),
            "meta_grad_norm": norm,
        }

    rows = [direct(jax.random.fold_in(key, i)) for i in range(DIAGNOSTIC_DOMAINS)]
    for name in rows[0]:
        np.testing.assert_allclose(float(got[name]), np.mean([float(r[name]) for r in rows]), rtol=2e-4, err_msg=name)
    ratio = np.median([float(r["query_after"] / r["query_before"]) for r in rows])
    np.testing.assert_allclose(float(got["query_after_over_before"]), ratio, rtol=2e-4)
    assert float(got["support_after"]) < float(got["support_before"])  # two SGD steps at a small lr descend


def test_meta_objective_validation():
    for bad in ({"support": 0}, {"query": 2.0}, {"inner_steps": 0}, {"inner_lr": 0.0}, {"first_order": 1}):
        with pytest.raises(ConfigError, match="m2icl"):
            MetaObjective(**bad)
    cfg = TrainConfig(steps=1, batch=8, n=N)
    with pytest.raises(ConfigError, match="must have domains"):
        MetaObjective().check(tasks.get("linear_regression", d=2), cfg)
    curriculum = Curriculum.of(task_scale=Stepwise(1.0, 8.0, 1.0, 10))
    with pytest.raises(ConfigError, match="curriculum"):
        MetaObjective().check(FAMILY, TrainConfig(steps=1, batch=8, n=N, curriculum=curriculum))


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    """Figure 6's smoke M2-ICL run, uninterrupted, in a run directory."""
    run = RunDir(tmp_path_factory.mktemp("m2icl"))
    cfg, objective = fig6.train_config(SMOKE, 0), fig6.objective(SMOKE, "m2icl")
    result = train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, progress=False, objective=objective)
    return run, cfg, result


def test_meta_training_reproducible_and_recorded(meta_run):
    run, cfg, first = meta_run
    objective = fig6.objective(SMOKE, "m2icl")
    second = train(LEARNER, FAMILY, cfg, progress=False, objective=objective)
    for a, b in zip(leaves(first.state.params), leaves(second.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(first.state.step) == SMOKE.steps
    assert read_json(run.config_path) == {"train": "cfg", "objective": objective.config()}
    assert objective.config() == {"name": "m2icl", "support": 4, "query": 4, "inner_steps": 2, "inner_lr": 0.01,
                                  "first_order": False}  # fmt: skip
    rows = run.metrics()
    assert [r["step"] for r in rows] == [0, 2, 4] and all(np.isfinite(r["loss"]) for r in rows[1:])
    diagnosed = {"objective_query_after", "objective_support_before", "objective_meta_grad_norm"}
    assert all(diagnosed <= set(r) and np.isfinite(r["objective_query_after"]) for r in rows)
    plain = train(LEARNER, FAMILY, cfg, progress=False)  # the default objective: other numbers
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first.state.params), leaves(plain.state.params)))


def test_resumed_meta_run_equals_uninterrupted(meta_run, tmp_path):
    full_run, cfg, full = meta_run
    run, objective = RunDir(tmp_path / "run"), fig6.objective(SMOKE, "m2icl")
    train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, progress=False, until=2, objective=objective)
    resumed = train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, resume=True, progress=False, objective=objective)
    for a, b in zip(leaves(full.state.params), leaves(resumed.state.params), strict=True):
        np.testing.assert_array_equal(a, b)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    assert strip(run.metrics()) == strip(full_run.metrics())
    # Resuming with another objective (first order) or with none is refused before anything is written.
    for other in (MetaObjective(4, 4, 2, 0.01, first_order=True), None):
        kwargs = {} if other is None else {"objective": other}
        with pytest.raises(ConfigError, match="objective"):
            train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, resume=True, progress=False, **kwargs)
