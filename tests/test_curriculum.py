"""Meta-level curriculum: schedule values, traced family parameters (no recompiles), the context-length mask,
bad input, config round trip and resume."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from icl_meta import runs
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError
from icl_meta.runs import RunDir
from icl_meta.train import TrainConfig, loss_fn, train, train_steps
from icl_meta.transformer import ICLTransformer, preset

GARG = Stepwise(start=5, end=20, inc=1, interval=10_000)  # lr_curri_dim.yaml


@pytest.mark.parametrize(
    ("step", "value"), [(0, 5), (1, 5), (9_999, 5), (10_000, 6), (19_999, 6), (20_000, 7), (149_999, 19), (150_000, 20)]
)
def test_garg_dims_schedule_values(step, value):
    assert GARG(step) == value and isinstance(GARG(step), int)
    assert GARG(10**7) == 20 and GARG.reached_at() == 150_000


def test_garg_schedule_matches_their_update_loop():
    """Garg's Curriculum.update(): step_count += 1; every `interval` counts, var += inc, capped at end."""
    schedule = Stepwise(start=2, end=5, inc=1, interval=3)
    var, expected = 2, []
    for step_count in range(1, 16):
        expected.append(var)  # the value the step trains with, before update()
        if step_count % 3 == 0:
            var = min(var + 1, 5)
    assert [schedule(s) for s in range(15)] == expected


def test_traced_values_equal_python_values():
    steps = jnp.arange(0, 40)
    for schedule in (Stepwise(2, 8, 1, 5), Stepwise(1.0, 0.25, -0.25, 7), Stepwise(3, 3, 0, 1), Stepwise(8, 2, -2, 4)):
        traced = np.asarray(jax.jit(jax.vmap(schedule))(steps))
        np.testing.assert_allclose(traced, [schedule(int(s)) for s in steps], rtol=0, atol=1e-7)
        assert traced.dtype == (np.int32 if schedule.integer else np.float32)


@pytest.mark.parametrize(
    "kwargs",
    [{"start": 2, "end": 5, "inc": -1}, {"start": 2, "end": 5, "interval": 0}, {"start": float("nan"), "end": 1}],
)
def test_bad_schedules_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Stepwise(**kwargs)


def test_curriculum_checks_against_the_family():
    family = tasks.get("linear_regression", d=8)
    Curriculum.of(active_dims=Stepwise(2, 8, 1, 10), n=Stepwise(5, 17, 2, 10)).check(family, n=17)
    with pytest.raises(ConfigError, match="active_dims"):
        Curriculum.of(active_dims=Stepwise(2, 9, 1, 10)).check(family, n=17)  # past d: the family's own check
    with pytest.raises(ConfigError, match="no parameter 'dims'"):
        Curriculum.of(dims=Stepwise(2, 8, 1, 10)).check(family, n=17)
    with pytest.raises(ConfigError, match="n must stay"):
        Curriculum.of(n=Stepwise(5, 20, 1, 10)).check(family, n=17)
    with pytest.raises(ConfigError, match="shape"):
        Curriculum.of(d=Stepwise(2, 8, 1, 10))
    with pytest.raises(ConfigError, match="sigma"):
        Curriculum.of(sigma=Stepwise(1.0, -1.0, -1.0, 10)).check(tasks.get("prototype"), n=17)


def test_truncated_dims_are_zero_padded_exactly_inside_jit():
    """Inside one compiled function, the step decides the active dims; the inactive coordinates are exactly 0, the
    active ones are the same draws as an untraced family with that many dims (only masking, no other change)."""
    family = tasks.get("linear_regression", d=6)
    curriculum = Curriculum.of(active_dims=Stepwise(2, 6, 1, 100))
    key = jax.random.key(3)
    traces = []

    @jax.jit
    def sample_at(step):
        traces.append(step)
        episode = curriculum.family_at(family, step).sample(key, 32, 9)
        return episode.x, episode.y

    for step, dims in [(0, 2), (99, 2), (100, 3), (250, 4), (399, 5), (400, 6), (10_000, 6)]:
        x, y = (np.asarray(a) for a in sample_at(jnp.int32(step)))
        assert np.all(x[..., dims:] == 0.0) and np.all(x[..., :dims] != 0.0)
        plain = tasks.get("linear_regression", d=6, active_dims=dims).sample(key, 32, 9)
        np.testing.assert_array_equal(x, np.asarray(plain.x))
        np.testing.assert_array_equal(y, np.asarray(plain.y))
    assert len(traces) == 1  # one compilation for every value


def test_a_curriculum_change_does_not_recompile_the_train_step():
    family = tasks.get("linear_regression", d=4)
    curriculum = Curriculum.of(active_dims=Stepwise(1, 4, 1, 3))
    cfg = TrainConfig(
        steps=12, batch=8, n=9, lr=1e-3, scan_steps=3, eval_every=12, eval_tasks=16, curriculum=curriculum
    )
    learner = ICLTransformer(preset("gpt2", width=8, depth=1, heads=1, positions=18))
    before = train_steps._cache_size()
    result = train(learner, family, cfg, progress=False)
    assert train_steps._cache_size() == before + 1  # 4 dispatches over 4 values of active_dims, one program
    assert result.history[-1]["curriculum_active_dims"] == 4


def test_context_length_mask_equals_training_on_shorter_sequences():
    """For a prequential learner, the loss over N positions masked at >= n equals the loss on the first n examples."""
    family = tasks.get("linear_regression", d=3)
    learner = ICLTransformer(preset("gpt2", width=8, depth=2, heads=2, positions=24))
    params = learner.init(jax.random.key(0), family.spec)
    episode = family.sample(jax.random.key(1), 8, 12)
    curriculum = Curriculum.of(n=Stepwise(4, 12, 2, 10))
    positions = jnp.arange(12)
    loss = jax.jit(functools.partial(loss_fn, learner, family))  # one program per shape, not one per operation
    for step, n in [(0, 4), (15, 6), (35, 10), (99, 12)]:
        mask = curriculum.context_mask(jnp.int32(step), positions)
        masked = loss(params, episode.x, episode.y, positions, mask)
        short = loss(params, episode.x[:, :n], episode.y[:, :n], jnp.arange(n))
        np.testing.assert_allclose(float(masked), float(short), rtol=2e-5)
    assert curriculum.context_mask(jnp.int32(0), positions) is not None
    assert Curriculum.of(active_dims=GARG).context_mask(jnp.int32(0), positions) is None


def test_train_config_round_trips_through_config_json():
    curriculum = Curriculum.of(active_dims=Stepwise(2, 8, 1, 1500), n=Stepwise(5, 17, 2, 1500))
    cfg = TrainConfig(steps=100, n=17, warmup_steps=10, curriculum=curriculum)
    saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert TrainConfig(**saved) == cfg
    with pytest.raises(ConfigError, match="curriculum"):
        TrainConfig(curriculum={"schedules": [["active_dims", {"start": 2}]]})


def test_configs_written_before_the_new_settings_still_resume():
    """A config.json without warmup_steps/curriculum equals one with them off, and differs from one with them on."""
    new = {"train": dataclasses.asdict(TrainConfig(steps=100))}
    old = {"train": {k: v for k, v in new["train"].items() if k not in ("warmup_steps", "curriculum")}}
    assert runs._differences(runs._comparable(old), runs._comparable(new)) == []
    warm = {"train": dataclasses.asdict(TrainConfig(steps=100, warmup_steps=5))}
    assert runs._differences(runs._comparable(old), runs._comparable(warm)) == ["train.warmup_steps"]
    model = {"learner": {"name": "icl", "config": dataclasses.asdict(preset("paper"))}}
    before = {"learner": {"name": "icl", "config": dataclasses.asdict(preset("paper"))}}
    for key in ("block", "positions"):  # ModelConfig fields added with the GPT-2 preset
        del before["learner"]["config"][key]
    assert runs._differences(runs._comparable(before), runs._comparable(model)) == []
    gpt2 = {"learner": {"name": "icl", "config": dataclasses.asdict(preset("paper", block="gpt2"))}}
    assert runs._differences(runs._comparable(before), runs._comparable(gpt2)) == ["learner.config.block"]


def test_resumed_curriculum_run_equals_uninterrupted(tmp_path):
    family = tasks.get("linear_regression", d=3)
    curriculum = Curriculum.of(active_dims=Stepwise(1, 3, 1, 4))
    cfg = TrainConfig(
        steps=12,
        batch=8,
        n=7,
        lr=1e-3,
        warmup_steps=4,
        scan_steps=2,
        eval_every=4,
        eval_tasks=16,
        curriculum=curriculum,
    )
    learner = ICLTransformer(preset("gpt2", width=8, depth=1, heads=1, positions=14))
    full = train(learner, family, cfg, RunDir(tmp_path / "full"), {"train": "c"}, progress=False)
    run = RunDir(tmp_path / "run")
    train(learner, family, cfg, run, {"train": "c"}, progress=False, until=6)
    resumed = train(learner, family, cfg, run, {"train": "c"}, resume=True, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(full.state.params), jax.tree_util.tree_leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["curriculum_active_dims"] for r in resumed.history] == [1, 1, 2, 3]  # steps 0, 4, 8, 12
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
