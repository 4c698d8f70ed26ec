"""Meta-training: determinism, resume, logging, divergence handling (tiny configs; shapes shared across tests)."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import tasks
from icl_meta.checkpoint import Checkpointer
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError, TrainingError
from icl_meta.learners import build
from icl_meta.parallel import BATCH_AXIS, data_mesh, replicate, shard_batch
from icl_meta.runs import RunDir
from icl_meta.train import (
    EVAL_STREAM,
    PREQUENTIAL,
    TRAIN_STREAM,
    TrainConfig,
    eval_episode,
    init_state,
    loss_fn,
    loss_groups,
    params_finite,
    step_positions,
    strata,
    stratum_weights,
    stream_key,
    train,
    train_steps,
)
from icl_meta.transformer import ICLTransformer, preset

FAMILY = tasks.get("prototype")
LEARNER = ICLTransformer(preset("paper", depth=2, protocol="causal"))
CFG = TrainConfig(steps=30, batch=16, n=12, lr=3e-3, loss_start=2, scan_steps=5, eval_every=10, eval_tasks=64)


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(state.params)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("full"))
    result = train(LEARNER, FAMILY, CFG, run, {"train": "cfg"}, progress=False)
    return run, result


def test_same_seed_same_numbers(uninterrupted):
    _, first = uninterrupted
    second = train(LEARNER, FAMILY, CFG, progress=False)
    for a, b in zip(leaves(first.state), leaves(second.state), strict=True):
        np.testing.assert_array_equal(a, b)
    other = train(LEARNER, FAMILY, TrainConfig(**{**CFG.__dict__, "seed": 1}), progress=False)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(first.state), leaves(other.state), strict=True))


@pytest.mark.parametrize("stop_at", [20, 25])  # at a checkpoint, and between checkpoints (a graceful stop)
def test_resumed_run_equals_uninterrupted(uninterrupted, tmp_path, stop_at):
    full_run, full = uninterrupted
    run = RunDir(tmp_path / "run")
    train(LEARNER, FAMILY, CFG, run, {"train": "cfg"}, progress=False, until=stop_at)
    assert int(json.loads(run.metrics_path.read_text().splitlines()[-1])["step"]) <= stop_at
    resumed = train(LEARNER, FAMILY, CFG, run, {"train": "cfg"}, resume=True, progress=False)
    assert int(resumed.state.step) == CFG.steps
    for a, b in zip(leaves(full.state), leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    assert strip(run.metrics()) == strip(full_run.metrics())
    assert resumed.curve["mean"] == full.curve["mean"]


def test_run_directory_contents(uninterrupted):
    run, result = uninterrupted
    assert json.loads(run.config_path.read_text()) == {"train": "cfg"}
    rows = run.metrics()
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert rows[0]["loss"] is None and all(np.isfinite(r["loss"]) for r in rows[1:])
    assert all(0.0 <= r["eval_accuracy"] <= 1.0 for r in rows)
    assert result.curve["metric"] == "accuracy" and len(result.curve["mean"]) == CFG.n
    assert all(lo <= m <= hi for lo, m, hi in zip(result.curve["lo"], result.curve["mean"], result.curve["hi"]))


def test_eval_set_is_fixed_and_separate_from_training_stream():
    a, b = eval_episode(FAMILY, CFG), eval_episode(FAMILY, CFG)
    np.testing.assert_array_equal(a.x, b.x)
    step0 = jax.random.fold_in(stream_key(CFG.seed, TRAIN_STREAM), 0)  # as train_steps draws batch 0
    first_train_batch = FAMILY.sample(jax.random.fold_in(step0, 0), CFG.batch, CFG.n)
    assert not np.allclose(a.x[: CFG.batch], first_train_batch.x)
    same_stream = FAMILY.sample(stream_key(CFG.seed, EVAL_STREAM), CFG.eval_tasks, CFG.n)
    np.testing.assert_array_equal(a.x, same_stream.x)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 40})
    train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, progress=False, until=20)
    checkpoint_files = {p: p.read_bytes() for p in run.checkpoint_dir.rglob("*") if p.is_file()}
    metrics = run.metrics_path.read_text()
    wild = TrainConfig(**{**cfg.__dict__, "lr": 1e30})  # the same run continued with a diverging learning rate
    with pytest.raises(TrainingError, match=r"non-finite loss or parameters at step 2\d.*checkpoint \(step 20\)"):
        train(LEARNER, FAMILY, wild, run, {"train": "cfg"}, resume=True, progress=False)
    assert Checkpointer(run.checkpoint_dir).latest_step() == 20
    assert {p: p.read_bytes() for p in run.checkpoint_dir.rglob("*") if p.is_file()} == checkpoint_files
    assert run.metrics_path.read_text() == metrics and not run.results_path.exists()
    resumed = train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, resume=True, progress=False)  # still resumable
    assert int(resumed.state.step) == 40 and params_finite(resumed.state.params)


def test_sharded_step_matches_single_device():
    if len(jax.devices()) < 2:
        pytest.skip("needs >= 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 10})
    one = train(LEARNER, FAMILY, cfg, progress=False)
    two = train(LEARNER, FAMILY, cfg, progress=False, mesh=data_mesh(2))
    for a, b in zip(leaves(one.state), leaves(two.state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The batch really is split: each device holds half of the tasks.
    mesh = data_mesh(2)
    x = jax.jit(lambda k: shard_batch(FAMILY.sample(k, 16, 12), mesh).x)(jax.random.key(0))
    assert x.sharding.spec == PartitionSpec(BATCH_AXIS)
    assert {s.data.shape for s in x.addressable_shards} == {(8, 12, 2)}


@pytest.mark.parametrize("protocol", ["prefix"])  # causal: test_sharded_step_matches_single_device
def test_one_step_on_four_devices_matches_one_device(protocol):
    if len(jax.devices()) < 4:
        pytest.skip("needs >= 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    learner = ICLTransformer(preset("paper", depth=2, protocol=protocol))
    key = stream_key(CFG.seed, TRAIN_STREAM)
    cfg = TrainConfig(**{**CFG.__dict__, "positions_per_step": 3})  # one padded prefix pass: a small program
    results = []
    for mesh in (None, data_mesh(4)):
        state = replicate(init_state(learner, FAMILY, cfg), mesh)
        state, losses = train_steps(
            state, key, learner=learner, family=FAMILY, cfg=cfg.step_settings(), num_steps=1, mesh=mesh
        )
        results.append((np.asarray(losses), leaves(state)))
    (loss_one, params_one), (loss_four, params_four) = results
    np.testing.assert_allclose(loss_four, loss_one, rtol=1e-6)
    assert any(not np.allclose(a, b, atol=0) for a, b in zip(params_one, leaves(init_state(learner, FAMILY, cfg))))
    for a, b in zip(params_one, params_four, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_evaluations_before_the_last_probe_and_the_last_is_full():
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 20, "probe_tasks": 16, "probe_positions": 3})
    result = train(LEARNER, FAMILY, cfg, progress=False)
    tasks_, positions = cfg.probe()
    assert tasks_ == 16 and positions.tolist() == [2, 6, 11]  # spread over the loss range 2..11
    assert [(r["step"], r["eval_tasks"], r["eval_positions"]) for r in result.history] == [
        (0, 16, 3), (10, 16, 3), (20, 64, 10)
    ]  # fmt: skip
    full = np.asarray(result.curve["mean"])[cfg.loss_start : cfg.stop].mean()
    assert result.history[-1]["eval_accuracy"] == pytest.approx(full, abs=1e-6)


def test_stop_at_ends_the_run_at_the_first_full_evaluation_that_reaches_it(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 60, "stop_at": 0.0})  # reached at the first evaluation
    result = train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, progress=False)
    assert int(result.state.step) == 10 and [r["step"] for r in result.history] == [0, 10]
    assert result.history[-1]["eval_tasks"] == cfg.eval_tasks  # confirmed on every task
    again = train(LEARNER, FAMILY, cfg, run, {"train": "cfg"}, resume=True, progress=False)
    assert int(again.state.step) == 10 and len(again.history) == 2  # a stopped run stays stopped
    never = TrainConfig(**{**CFG.__dict__, "steps": 20, "stop_at": 1.01})
    assert int(train(LEARNER, FAMILY, never, progress=False).state.step) == 20


# ---------------------------------------------------------------------------------------------------------------------
# Stratified loss positions and truncated loss passes


@pytest.mark.parametrize(("start", "stop", "per_step"), [(2, 50, 8), (0, 50, 8), (1, 12, 3)])
def test_stratified_positions_take_one_from_each_stratum_and_cover_all_alike(start, stop, per_step):
    cfg = TrainConfig(n=stop, loss_start=start, positions_per_step=per_step, position_sampling="stratified")
    edges = strata(cfg)
    assert edges[0] == start and edges[-1] == stop and np.ptp(np.diff(edges)) <= 1
    draws = np.asarray(jax.vmap(lambda k: step_positions(cfg, k))(jax.random.split(jax.random.key(0), 4000)))
    assert np.all((draws >= edges[:-1]) & (draws < edges[1:]))  # position k lies in stratum k (so: sorted, distinct)
    # Within a stratum every position is as likely: frequency 1 / stratum size (binomial 4-sigma band).
    sizes = np.diff(edges)
    for k in range(per_step):
        counts = np.bincount(draws[:, k] - edges[k], minlength=sizes[k])
        expected = len(draws) / sizes[k]
        assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), (k, counts)
    # With the stratum-size weights the expected weighted mean of a per-position loss is the plain mean over the range.
    loss_N = np.random.default_rng(0).random(stop)
    weights = stratum_weights(cfg)
    weights = np.ones(per_step) if weights is None else weights
    expected_mean = sum(w * loss_N[a:b].mean() for w, a, b in zip(weights, edges[:-1], edges[1:])) / weights.sum()
    np.testing.assert_allclose(expected_mean, loss_N[start:stop].mean(), rtol=1e-6)


@pytest.mark.parametrize(
    "learner",
    [
        ICLTransformer(preset("paper", depth=2, protocol="prefix")),
        ICLTransformer(preset("paper", depth=2, protocol="causal")),
        "maml",
    ],
    ids=["prefix", "causal", "maml"],
)
def test_truncated_loss_passes_equal_one_pass(learner):
    """position_groups cuts the sequence after each group's last stratum: by the prequential contract the loss and
    its gradient are those of one pass over the whole sequence."""
    learner = build(learner) if isinstance(learner, str) else learner
    one, grouped = (
        TrainConfig(n=20, loss_start=2, positions_per_step=6, position_sampling="stratified", position_groups=g)
        for g in (1, 3)
    )
    groups = loss_groups(grouped)
    assert groups == ((0, 2, 8), (2, 4, 14), (4, 6, 20)) and loss_groups(one) is None
    ep = FAMILY.sample(jax.random.key(1), 8, 20)
    params = learner.init(jax.random.key(2), FAMILY.spec)
    positions = step_positions(one, jax.random.key(3))

    def loss(p, g):
        return loss_fn(learner, FAMILY, p, ep.x, ep.y, positions, None, g)

    (l1, g1), (l3, g3) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, g) for g in (None, groups))
    np.testing.assert_allclose(l3, l1, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g3), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_position_groups_need_stratified_positions():
    with pytest.raises(ConfigError, match="position_groups=2 needs position_sampling='stratified'"):
        TrainConfig(positions_per_step=8, position_groups=2)
    with pytest.raises(ConfigError, match="position_sampling must be one of uniform, stratified"):
        TrainConfig(positions_per_step=8, position_sampling="sobol")


def test_training_with_truncated_passes_equals_one_pass(tmp_path):
    """The default objective passes the stratum weights and the groups: three steps with 3 truncated passes give the
    parameters of three steps with one pass (float32 reordering only)."""
    learner = ICLTransformer(preset("paper", depth=2, protocol="prefix"))
    runs = [
        train(learner, FAMILY, TrainConfig(**{**CFG.__dict__, "steps": 3, "scan_steps": 3, "eval_every": 3,
              "positions_per_step": 5, "position_sampling": "stratified", "position_groups": g}), progress=False)
        for g in (1, 3)
    ]  # fmt: skip
    for a, b in zip(leaves(runs[0].state), leaves(runs[1].state), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(runs[0].state), leaves(init_state(
        learner, FAMILY, CFG)), strict=True))  # fmt: skip


def test_truncated_passes_refuse_learners_whose_outputs_depend_on_the_length():
    """The causal protocol with learned (or rotary) positions puts query i at token N + i: cutting the sequence
    moves it, so grouped passes would not be the same loss."""
    cfg = TrainConfig(n=12, loss_start=2, positions_per_step=4, position_sampling="stratified", position_groups=2)
    ep = FAMILY.sample(jax.random.key(1), 4, 12)
    for learner in (
        ICLTransformer(preset("softmax", depth=1, positions=24)),
        ICLTransformer(preset("softmax", depth=1, width=8, rotary=True)),
    ):
        assert not learner.truncation_invariant
        params = learner.init(jax.random.key(0), FAMILY.spec)
        with pytest.raises(ConfigError, match="do not depend on the sequence length"):
            loss_fn(learner, FAMILY, params, ep.x, ep.y, step_positions(cfg, jax.random.key(2)), None, loss_groups(cfg))
    assert ICLTransformer(preset("paper")).truncation_invariant


def test_stratified_positions_refused_without_a_count_or_with_a_context_curriculum():
    with pytest.raises(ConfigError, match="set positions_per_step"):
        TrainConfig(position_sampling="stratified")
    cfg = TrainConfig(
        n=12, positions_per_step=4, position_sampling="stratified", curriculum=Curriculum.of(n=Stepwise(4, 12, 2, 10))
    )
    with pytest.raises(ConfigError, match="context-length curriculum"):
        PREQUENTIAL.check(FAMILY, cfg)


def test_runs_written_before_position_sampling_existed_still_resume(tmp_path):
    run, cfg = RunDir(tmp_path / "old"), TrainConfig(steps=3)
    config = {"train": dataclasses.asdict(cfg)}
    old = json.loads(json.dumps(config))
    del old["train"]["position_sampling"], old["train"]["position_groups"]
    run.start(old, resume=False)
    run.start(config, resume=True)  # no ConfigError: the missing fields read as their neutral values
    stratified = dataclasses.replace(cfg, positions_per_step=4, position_sampling="stratified")
    with pytest.raises(ConfigError, match=r"train\.position_sampling"):
        run.start({"train": dataclasses.asdict(stratified)}, resume=True)


def test_default_objective_weights_unequal_strata_and_passes_its_groups():
    """Prequential.loss at one key equals the literal computation with the stratum sizes as weights (strata of 3 and
    4 positions here), and its grouped passes reach the learner (a length-dependent learner is refused in training)."""
    cfg = TrainConfig(n=12, batch=4, loss_start=2, positions_per_step=3, position_sampling="stratified")
    assert stratum_weights(cfg).tolist() == [3.0, 4.0, 3.0]
    learner = ICLTransformer(preset("paper", depth=1, protocol="causal"))
    params, key = learner.init(jax.random.key(0), FAMILY.spec), jax.random.key(9)
    got = PREQUENTIAL.loss(params, key, 0, learner=learner, family=FAMILY, cfg=cfg, mesh=None)
    ep = FAMILY.sample(jax.random.fold_in(key, 0), cfg.batch, cfg.n)
    positions = np.asarray(step_positions(cfg, jax.random.fold_in(key, 1)))
    out = np.asarray(learner.predict(params, ep.x, ep.y), np.float64)[:, positions]  # [B, P, O] log-probabilities
    nll = -np.take_along_axis(out, np.asarray(ep.y)[:, positions, None], axis=-1)[..., 0].mean(0)
    np.testing.assert_allclose(float(got), (nll * [3, 4, 3]).sum() / 10, rtol=1e-5)
    grouped = dataclasses.replace(cfg, steps=1, scan_steps=1, eval_every=1, eval_tasks=4, position_groups=2)
    with pytest.raises(ConfigError, match="do not depend on the sequence length"):
        train(ICLTransformer(preset("softmax", depth=1, positions=24)), FAMILY, grouped, progress=False)
