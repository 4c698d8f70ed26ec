"""Seeds as a batch axis: S seeds trained as one program equal S separate runs (up to float reordering), for every
objective; a batched run resumes bit-for-bit; each seed keeps its own run directory."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import baselines
import tasks
from experiments import fig4_curriculum as fig4
from experiments import fig6_metameta as fig6
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError
from icl_meta.runs import RunDir
from icl_meta.sequence_loss import MaskedNextToken
from icl_meta.train import TrainConfig, train, train_seeds, train_steps_seeds
from icl_meta.transformer import ICLTransformer, preset

FAMILY = tasks.get("prototype")
LEARNER = ICLTransformer(preset("paper", depth=2, protocol="causal"))
CFG = TrainConfig(steps=30, batch=16, n=12, lr=3e-3, loss_start=2, scan_steps=5, eval_every=10, eval_tasks=64)
SEEDS = (0, 1, 2)
# The vmapped step may reorder float sums. Parameters are compared as one vector (the norm of the difference against
# the norm of the parameters): a leaf that stays near 0 (a bias whose gradient is float noise, ~5e-6) moves by Adam's
# normalised steps whatever the noise, so its own relative difference says nothing about the run.
RTOL = 1e-5


def assert_close_trees(a, b, rtol: float = RTOL) -> None:
    pairs = list(zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))
    assert all(np.shape(x) == np.shape(y) for x, y in pairs)
    difference = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64) - np.asarray(y))) for x, y in pairs))
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x, _ in pairs))
    assert difference <= rtol * norm, f"relative difference {difference / norm:.2e} > {rtol:g}"


def assert_equal_trees(a, b) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def strip_wall(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def check_equals_separate_runs(learner, family, cfg, batched, **kwargs) -> None:
    """Each seed of a batched run against its own run: parameters, per-evaluation metrics and the final curve."""
    assert len(batched) == len(SEEDS)
    for seed, result in zip(SEEDS, batched, strict=True):
        alone = train(learner, family, dataclasses.replace(cfg, seed=seed), progress=False, **kwargs)
        assert int(result.state.step) == int(alone.state.step) == cfg.steps
        assert_close_trees(alone.state.params, result.state.params)
        np.testing.assert_allclose(result.curve["mean"], alone.curve["mean"], rtol=RTOL, atol=1e-6)
        for mine, theirs in zip(result.history, alone.history, strict=True):
            assert mine["step"] == theirs["step"]
            for key in theirs:
                if key.startswith(("eval_", "objective_")) or (key == "loss" and theirs[key] is not None):
                    np.testing.assert_allclose(mine[key], theirs[key], rtol=RTOL, atol=1e-6, err_msg=key)
    # different seeds train different models
    first, second = (jax.tree_util.tree_leaves(r.state.params)[0] for r in batched[:2])
    assert not np.allclose(np.asarray(first), np.asarray(second))


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    runs = [RunDir(root / f"seed{s}") for s in SEEDS]
    configs = [{"train": "cfg", "seed": s} for s in SEEDS]
    results = train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, progress=False)
    return runs, results


def test_seeds_in_one_program_equal_separate_runs(batched_run):
    _, results = batched_run
    check_equals_separate_runs(LEARNER, FAMILY, CFG, results)


def test_every_seed_has_its_own_run_directory(batched_run):
    runs, results = batched_run
    for seed, run, result in zip(SEEDS, runs, results, strict=True):
        assert json.loads(run.config_path.read_text()) == {"train": "cfg", "seed": seed}
        assert [r["step"] for r in run.metrics()] == [0, 10, 20, 30]
        assert run.metrics() == result.history
        assert sorted(int(p.name) for p in run.checkpoint_dir.iterdir() if p.name.isdigit())[-1] == CFG.steps
        assert not run.lock_path.exists()  # released


def test_one_compilation_serves_every_seed():
    cfg = dataclasses.replace(CFG, steps=10, eval_every=5, scan_steps=5, eval_tasks=16)
    train_seeds(LEARNER, FAMILY, cfg, (3, 4, 5), progress=False)
    compiled = train_steps_seeds._cache_size()
    train_seeds(LEARNER, FAMILY, cfg, (6, 7, 8), progress=False)  # other seeds, same shapes: no new program
    assert train_steps_seeds._cache_size() == compiled


@pytest.mark.parametrize("until", [20, 25])  # at a checkpoint, and between checkpoints (a graceful stop)
def test_batched_resume_equals_uninterrupted(batched_run, tmp_path, until):
    full_runs, full = batched_run
    runs = [RunDir(tmp_path / f"seed{s}") for s in SEEDS]
    configs = [{"train": "cfg", "seed": s} for s in SEEDS]
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, progress=False, until=until)
    resumed = train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, resume=True, progress=False)
    for run, full_run, mine, theirs in zip(runs, full_runs, resumed, full, strict=True):
        assert_equal_trees(mine.state.params, theirs.state.params)
        assert strip_wall(run.metrics()) == strip_wall(full_run.metrics())
        assert mine.curve["mean"] == theirs.curve["mean"]


def test_batched_resume_continues_from_the_last_step_every_seed_saved(batched_run, tmp_path):
    """A run killed while saving its seeds' checkpoints one after another: one seed holds a later step than the
    others. The resume restarts every seed from the last step they all hold and still ends bit-identical."""
    full_runs, full = batched_run
    runs = [RunDir(tmp_path / f"seed{s}") for s in SEEDS]
    configs = [{"train": "cfg", "seed": s} for s in SEEDS]
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, progress=False, until=10)
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, resume=True, progress=False, until=20)
    for run in runs[1:]:  # seeds 1 and 2 never saved step 20
        shutil.rmtree(run.checkpoint_dir / "20")
    resumed = train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, resume=True, progress=False)
    for run, full_run, mine, theirs in zip(runs, full_runs, resumed, full, strict=True):
        assert_equal_trees(mine.state.params, theirs.state.params)
        assert strip_wall(run.metrics()) == strip_wall(full_run.metrics())


def test_a_seed_resumed_alone_after_a_batched_resume_from_an_earlier_step_logs_every_evaluation(batched_run, tmp_path):
    """Seed 0 saved step 20, seeds 1 and 2 did not; the batched resume goes back to step 10 for all and stops at 15.
    Seed 0's later checkpoint is gone with its log lines, so resumed alone it continues from 15, not from a stale 20
    whose log line was cut."""
    full_runs, _ = batched_run
    runs = [RunDir(tmp_path / f"seed{s}") for s in SEEDS]
    configs = [{"train": "cfg", "seed": s} for s in SEEDS]
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, progress=False, until=10)
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, resume=True, progress=False, until=20)
    for run in runs[1:]:
        shutil.rmtree(run.checkpoint_dir / "20")
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, resume=True, progress=False, until=15)
    assert sorted(int(p.name) for p in runs[0].checkpoint_dir.iterdir() if p.name.isdigit()) == [10, 15]
    train(LEARNER, FAMILY, CFG, runs[0], configs[0], resume=True, progress=False)
    mine, theirs = strip_wall(runs[0].metrics()), strip_wall(full_runs[0].metrics())
    assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [0, 10, 20, 30]
    for a, b in zip(mine, theirs, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(a["eval_accuracy"], b["eval_accuracy"], rtol=RTOL)


def test_no_directory_is_written_when_one_seed_cannot_start(tmp_path):
    taken = RunDir(tmp_path / "seed2")
    taken.start({"train": "other"}, resume=False)
    runs = [RunDir(tmp_path / "seed1"), taken]
    with pytest.raises(ConfigError, match="already holds a run"):
        train_seeds(LEARNER, FAMILY, CFG, [1, 2], runs, [{"train": "cfg"}] * 2, progress=False)
    assert not runs[0].config_path.exists()


def test_a_seed_of_a_batched_run_resumes_alone(batched_run, tmp_path):
    """Each seed's directory is an ordinary run: continued by itself with `train`, it ends where a run of that seed
    alone would (up to the batched steps' float reordering)."""
    runs = [RunDir(tmp_path / f"seed{s}") for s in SEEDS]
    configs = [{"train": "cfg", "seed": s} for s in SEEDS]
    train_seeds(LEARNER, FAMILY, CFG, SEEDS, runs, configs, progress=False, until=20)
    alone = train(LEARNER, FAMILY, dataclasses.replace(CFG, seed=1), runs[1], configs[1], resume=True, progress=False)
    assert_close_trees(alone.state.params, batched_run[1][1].state.params)


def test_curriculum_runs_batched():
    """Figure 4's GPT-2 model on regression with its active-dims curriculum, and a context-length curriculum."""
    scale = fig4.SCALES["smoke"]
    family = tasks.get("linear_regression", d=scale.d)
    model = fig4.build(scale, family.spec, "icl")
    curriculum = Curriculum.of(active_dims=Stepwise(1, scale.d, 1, 10), n=Stepwise(3, scale.n, 2, 10))
    cfg = dataclasses.replace(fig4.train_config(scale, "dims", 0), curriculum=curriculum)
    check_equals_separate_runs(model, family, cfg, train_seeds(model, family, cfg, SEEDS, progress=False))


def test_meta_objective_runs_batched():
    scale = fig6.SCALES["smoke"]
    learner, family, objective = fig6.learner(scale), fig6.family(scale), fig6.objective(scale, "m2icl")
    cfg = fig6.train_config(scale, 0)
    batched = train_seeds(learner, family, cfg, SEEDS, progress=False, objective=objective)
    check_equals_separate_runs(learner, family, cfg, batched, objective=objective)


def test_masked_next_token_runs_batched():
    lm = baselines.get("multimodal_lm", width=16, depth=1, heads=2)
    family = tasks.get("multimodal", mix=(("caption", 1.0), ("mc", 1.0)), concepts="all")
    cfg = TrainConfig(steps=6, batch=4, n=40, lr=1e-2, eval_every=3, eval_tasks=8, scan_steps=3,
                      probe_tasks=None, probe_positions=None)  # fmt: skip
    objective = MaskedNextToken(trainable=None)
    batched = train_seeds(lm, family, cfg, SEEDS, progress=False, objective=objective)
    check_equals_separate_runs(lm, family, cfg, batched, objective=objective)


def test_bad_seed_lists_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="distinct"):
        train_seeds(LEARNER, FAMILY, CFG, [1, 1], progress=False)
    with pytest.raises(ConfigError, match="run directories"):
        train_seeds(LEARNER, FAMILY, CFG, [1, 2], [RunDir(tmp_path / "a")], progress=False)
    with pytest.raises(ConfigError, match="stop_at"):
        train_seeds(LEARNER, FAMILY, dataclasses.replace(CFG, stop_at=0.9), [1, 2], progress=False)
