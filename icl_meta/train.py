"""Meta-training: one jitted step samples tasks on device, computes the loss over (a subset of) positions and
applies an optax update; `lax.scan` fuses K steps per dispatch.

Every batch is drawn from `fold_in(train_key, step)`, so a run, a resumed run and a test regenerate identical
batches; the held-out evaluation set comes from a different key stream.

What a step minimises is its `objective` (static): by default `Prequential`, the loss of a fresh batch at the step's
positions; meta-level meta-learning (`icl_meta.metameta.MetaObjective`) plugs in MAML over domains instead and
reuses everything else (Adam, scan, evaluation, checkpoints, resume, logging).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh
from tqdm.auto import tqdm

from icl_meta import evaluate
from icl_meta.checkpoint import Checkpointer
from icl_meta.contracts import DomainFamily, Episode, Learner, TaskFamily
from icl_meta.curriculum import CONTEXT, Curriculum
from icl_meta.errors import TrainingError, require, require_choice, require_int, require_number
from icl_meta.parallel import replicate, shard_batch
from icl_meta.runs import RunDir

POSITION_SAMPLING = ("uniform", "stratified")
TRAIN_STREAM, EVAL_STREAM, INIT_STREAM, TEST_STREAM = 0, 1, 2, 3  # TEST: the test sets of figure scripts
# A run checkpoints at an evaluation when this much wall time has passed since its last checkpoint, and at its end
# (so frequent evaluations do not mean frequent saves; an interrupted run loses at most this much work).
CHECKPOINT_INTERVAL_S = 30.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 20_000
    batch: int = 64
    n: int = 50  # examples per sequence
    lr: float = 3e-3
    loss_start: int = 0  # the loss (and the reported mean metric) covers positions [loss_start, loss_stop)
    loss_stop: int | None = None  # None: n
    positions_per_step: int | None = None  # a random subset of that many positions per step (unbiased); None: all
    # How the subset is drawn: "uniform" (any positions_per_step distinct ones) or "stratified" (one from each of
    # positions_per_step equal strata of the loss range, weighted by stratum size: unbiased, with less variance).
    position_sampling: str = "uniform"
    # Stratified only: the loss is computed in this many passes over consecutive strata, each on the sequence cut
    # after its strata's last position (exact, by the prequential contract): for learners whose cost grows with
    # positions x context length (the prefix protocol, MAML) the shorter passes do ~(1 + 1/groups) / 2 of the work.
    position_groups: int = 1
    scan_steps: int = 50  # steps fused into one dispatch
    eval_every: int = 500
    eval_tasks: int = 2048
    probe_tasks: int | None = 512  # evaluations before the last use the first that many held-out tasks (None: all)
    probe_positions: int | None = 16  # ... and that many positions spread over the loss range (None: all)
    stop_at: float | None = None  # stop once the held-out metric reaches this (accuracy >=, squared error <=)
    seed: int = 0
    grad_clip: float | None = None  # the reference uses none
    warmup_steps: int = 0  # the lr rises linearly from 0 over this many steps, then stays constant
    curriculum: Curriculum | None = None  # task-family parameters (and context length) as functions of the step

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "n", "scan_steps", "eval_every", "eval_tasks"):
            require_int(getattr(self, name), name)
        require_int(self.probe_tasks, "probe_tasks", none_ok=True)
        require_int(self.probe_positions, "probe_positions", none_ok=True)
        require_number(self.stop_at, "stop_at", none_ok=True)
        require_number(self.lr, "lr", above=0)
        require(0 <= self.loss_start < self.stop, f"loss_start must be in [0, {self.stop}), got {self.loss_start}")
        require(self.stop <= self.n, f"loss_stop must be <= n={self.n}, got {self.loss_stop}")
        if self.positions_per_step is not None:
            span = self.stop - self.loss_start
            require(
                1 <= self.positions_per_step <= span,
                f"positions_per_step must be in [1, {span}] (the loss range), got {self.positions_per_step}",
            )
        require_choice(self.position_sampling, "position_sampling", POSITION_SAMPLING)
        require(
            self.position_sampling == "uniform" or self.positions_per_step is not None,
            "position_sampling='stratified' draws positions_per_step positions: set positions_per_step",
        )
        require_int(self.position_groups, "position_groups", 1)
        if self.position_groups > 1:
            require(
                self.position_sampling == "stratified" and self.position_groups <= (self.positions_per_step or 0),
                f"position_groups={self.position_groups} needs position_sampling='stratified' and at most "
                f"positions_per_step={self.positions_per_step} groups",
            )
        require_int(self.warmup_steps, "warmup_steps", 0)
        if isinstance(self.curriculum, dict):  # read back from config.json
            object.__setattr__(self, "curriculum", Curriculum.from_dict(self.curriculum))
        require(
            self.curriculum is None or isinstance(self.curriculum, Curriculum),
            f"curriculum must be a Curriculum or None, got {self.curriculum!r}",
        )

    @property
    def stop(self) -> int:
        return self.n if self.loss_stop is None else self.loss_stop

    def step_settings(self) -> TrainConfig:
        """This config with the fields a training step does not read (seed, budget, evaluation) set to fixed
        values: runs that differ only in those share one compiled step."""
        return dataclasses.replace(
            self, steps=1, scan_steps=1, eval_every=1, eval_tasks=1, probe_tasks=1, probe_positions=1, stop_at=None,
            seed=0,
        )  # fmt: skip

    def probe(self) -> tuple[int, np.ndarray]:
        """The held-out tasks and positions of an intermediate evaluation: the first `probe_tasks` tasks and
        `probe_positions` positions spread evenly over [loss_start, stop) (all of them where None)."""
        tasks = self.eval_tasks if self.probe_tasks is None else min(self.probe_tasks, self.eval_tasks)
        span = np.arange(self.loss_start, self.stop)
        if self.probe_positions is not None and self.probe_positions < len(span):
            span = np.unique(np.linspace(self.loss_start, self.stop - 1, self.probe_positions).round().astype(int))
        return tasks, span


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    loss_sum: jax.Array  # summed since the last evaluation; checkpointed, so a resumed run logs the same loss


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam (torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8), with the warm-up and clip of `cfg`, on the
    parameters flattened into one vector: the same elementwise arithmetic as per leaf, in a few large ops instead of
    several per leaf (a small model has ~60 leaves), which shortens both the compile and the step."""
    lr = cfg.lr if cfg.warmup_steps == 0 else optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    adam = optax.adam(lr)
    if cfg.grad_clip is not None:
        adam = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adam)
    return optax.flatten(adam)


def stream_key(seed: int, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


def init_state(learner: Learner, family: TaskFamily, cfg: TrainConfig, params: Any = None) -> TrainState:
    """Step 0: the learner's initial parameters (from the INIT stream), or `params` (e.g. a previous stage's)."""
    if params is None:
        params = learner.init(stream_key(cfg.seed, INIT_STREAM), family.spec)
    else:  # a copy: the training step donates (deletes) the buffers it is given
        params = jax.tree_util.tree_map(lambda leaf: jnp.array(leaf, copy=True), params)
    require(params is not None, f"learner {getattr(learner, 'name', learner)!r} has no trainable parameters")
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer(cfg).init(params), jnp.zeros((), jnp.float32))


def loss_fn(
    learner: Learner,
    family: TaskFamily | DomainFamily,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    positions: jax.Array,
    weights_P: jax.Array | np.ndarray | None = None,
    groups: tuple[tuple[int, int, int], ...] | None = None,
):
    """Cross-entropy (classification; the learner returns log-probabilities) or MSE at the given positions,
    averaged over tasks and positions (weighted by `weights_P`, e.g. a curriculum's context mask), predicted in one
    call or in the truncated passes `groups` (`position_groups`)."""
    if groups is None:
        out = learner.predict(params, x, y, positions)
    else:
        require(
            getattr(learner, "truncation_invariant", True),
            f"position_groups > 1 needs a learner whose predictions do not depend on the sequence length; "
            f"{getattr(learner, 'name', learner)!r} here does not (e.g. the causal protocol with learned or rotary "
            "positions places query i at token N + i)",
        )
        passes = [learner.predict(params, x[:, :length], y[:, :length], positions[a:b]) for a, b, length in groups]
        out = jnp.concatenate(passes, axis=1)
    target = jnp.take(y, positions, axis=1)
    if family.spec.is_regression:
        loss_BP = jnp.square(out - target)
    else:
        loss_BP = -jnp.take_along_axis(out, target[..., None], axis=-1)[..., 0]
    if weights_P is None:
        return jnp.mean(loss_BP)
    return jnp.mean(loss_BP @ weights_P) / jnp.maximum(jnp.sum(weights_P), 1.0)


def step_positions(cfg: TrainConfig, key: jax.Array) -> jax.Array:
    """The step's loss positions, sorted: all of [loss_start, stop), or `positions_per_step` drawn as
    `position_sampling` says."""
    span = jnp.arange(cfg.loss_start, cfg.stop)
    if cfg.positions_per_step is None:
        return span
    if cfg.position_sampling == "stratified":
        edges = strata(cfg)
        offsets_P = jnp.floor(jax.random.uniform(key, (cfg.positions_per_step,)) * np.diff(edges)).astype(jnp.int32)
        return jnp.asarray(edges[:-1]) + jnp.minimum(offsets_P, np.diff(edges) - 1)
    return jnp.sort(jax.random.choice(key, span, (cfg.positions_per_step,), replace=False))


def strata(cfg: TrainConfig) -> np.ndarray:
    """[positions_per_step + 1] edges of the equal strata of [loss_start, stop) (sizes differ by at most one)."""
    require(cfg.positions_per_step is not None, "strata need positions_per_step")
    return np.linspace(cfg.loss_start, cfg.stop, (cfg.positions_per_step or 0) + 1).round().astype(int)


def stratum_weights(cfg: TrainConfig) -> np.ndarray | None:
    """The loss weight of each stratum's position, its size (None where all are equal): each position of the loss
    range then counts alike in expectation, as with uniform draws."""
    if cfg.positions_per_step is None or cfg.position_sampling != "stratified":
        return None
    sizes = np.diff(strata(cfg)).astype(np.float32)
    return None if np.all(sizes == sizes[0]) else sizes


def loss_groups(cfg: TrainConfig) -> tuple[tuple[int, int, int], ...] | None:
    """`position_groups` as (first, end) indices into the step's positions and the sequence length that covers
    them (their last stratum's end), or None for one pass over the whole sequence."""
    if cfg.position_groups == 1:
        return None
    edges = strata(cfg)
    bounds = np.linspace(0, len(edges) - 1, cfg.position_groups + 1).round().astype(int)
    return tuple((int(a), int(b), int(edges[b])) for a, b in itertools.pairwise(bounds))


class Objective(Protocol):
    """What one training step minimises: a hashable (static) object, so that it is part of the compiled step.

    `loss` is differentiated in `params`; it draws every random quantity from `key` (= fold_in(train_key, step)).
    `check` validates the objective against the family and config before training; `config` is what config.json
    records (None: nothing, the default objective).
    """

    def check(self, family: TaskFamily, cfg: TrainConfig) -> None: ...

    def loss(
        self,
        params: Any,
        key: jax.Array,
        step: jax.Array,
        *,
        learner: Learner,
        family: TaskFamily,
        cfg: TrainConfig,
        mesh: Mesh | None,
    ) -> jax.Array: ...

    def config(self) -> dict[str, Any] | None: ...

    def diagnostics(
        self, params: Any, key: jax.Array, *, learner: Learner, family: TaskFamily, cfg: TrainConfig
    ) -> dict[str, jax.Array]:
        """Scalars logged at every evaluation besides the held-out metric (prefixed `objective_`), computed on
        fixed draws from `key`; {} for none."""
        ...


@dataclasses.dataclass(frozen=True)
class Prequential:
    """The default objective: `cfg.batch` fresh tasks (at the curriculum's values), `loss_fn` at the step's positions
    (all of [loss_start, stop), or a random subset), weighted by the curriculum's context mask."""

    name: ClassVar[str] = "prequential"

    def check(self, family: TaskFamily, cfg: TrainConfig) -> None:
        if cfg.curriculum is not None:
            cfg.curriculum.check(family, cfg.n)
            require(
                cfg.position_sampling == "uniform" or cfg.curriculum.get(CONTEXT) is None,
                "stratified positions with a context-length curriculum would weight the positions below n(step) "
                "unequally; use position_sampling='uniform'",
            )

    def loss(
        self,
        params: Any,
        key: jax.Array,
        step: jax.Array,
        *,
        learner: Learner,
        family: TaskFamily,
        cfg: TrainConfig,
        mesh: Mesh | None,
    ) -> jax.Array:
        step_family = family
        if cfg.curriculum is not None:
            step_family = cfg.curriculum.family_at(family, step)
        episode = shard_batch(step_family.sample(jax.random.fold_in(key, 0), cfg.batch, cfg.n), mesh)
        positions = step_positions(cfg, jax.random.fold_in(key, 1))
        weights: jax.Array | np.ndarray | None = stratum_weights(cfg)
        mask = None if cfg.curriculum is None else cfg.curriculum.context_mask(step, positions)
        if mask is not None:
            weights = mask if weights is None else mask * weights
        return loss_fn(learner, family, params, episode.x, episode.y, positions, weights, loss_groups(cfg))

    def config(self) -> None:
        return None  # the default: config.json stays as it was before objectives existed

    def diagnostics(
        self, params: Any, key: jax.Array, *, learner: Learner, family: TaskFamily, cfg: TrainConfig
    ) -> dict[str, jax.Array]:
        return {}


PREQUENTIAL = Prequential()


def _steps(
    state: TrainState,
    train_key: jax.Array,
    *,
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    num_steps: int,
    mesh: Mesh | None = None,
    objective: Objective = PREQUENTIAL,
) -> tuple[TrainState, jax.Array]:
    opt = optimizer(cfg)
    objective_loss = functools.partial(objective.loss, learner=learner, family=family, cfg=cfg, mesh=mesh)

    def one_step(state: TrainState, _: None) -> tuple[TrainState, jax.Array]:
        key = jax.random.fold_in(train_key, state.step)
        loss, grads = jax.value_and_grad(objective_loss)(state.params, key, state.step)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, opt_state, state.loss_sum + loss), loss

    return jax.lax.scan(one_step, state, None, length=num_steps)


STEP_STATICS = ("learner", "family", "cfg", "num_steps", "mesh", "objective")


@functools.partial(jax.jit, static_argnames=STEP_STATICS, donate_argnames=("state",))
def train_steps(
    state: TrainState,
    train_key: jax.Array,
    *,
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    num_steps: int,
    mesh: Mesh | None = None,
    objective: Objective = PREQUENTIAL,
) -> tuple[TrainState, jax.Array]:
    """`num_steps` training steps in one compiled call; returns the new state and the loss of each step.
    Step s draws its tasks from fold_in(train_key, s); `cfg` is static (pass `cfg.step_settings()`)."""
    return _steps(
        state, train_key, learner=learner, family=family, cfg=cfg, num_steps=num_steps, mesh=mesh, objective=objective
    )


@functools.partial(jax.jit, static_argnames=STEP_STATICS, donate_argnames=("state_S",))
def train_steps_seeds(
    state_S: TrainState,
    train_key_S: jax.Array,
    *,
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    num_steps: int,
    mesh: Mesh | None = None,
    objective: Objective = PREQUENTIAL,
) -> tuple[TrainState, jax.Array]:
    """`train_steps` for S seeds at once: every leaf of the state and the train keys carry a leading seed axis
    (`jax.vmap` over the step; the K steps stay one `lax.scan`). Returns the new states and losses [S, num_steps]."""
    steps = functools.partial(
        _steps, learner=learner, family=family, cfg=cfg, num_steps=num_steps, mesh=mesh, objective=objective
    )
    return jax.vmap(steps)(state_S, train_key_S)


@functools.partial(jax.jit, static_argnames=("objective", "learner", "family", "cfg"))
def objective_diagnostics(
    objective: Objective, params: Any, key: jax.Array, *, learner: Learner, family: TaskFamily, cfg: TrainConfig
) -> dict[str, jax.Array]:
    return objective.diagnostics(params, key, learner=learner, family=family, cfg=cfg)


def eval_episode(family: TaskFamily, cfg: TrainConfig):
    """The fixed held-out set: one batch from the evaluation key stream (never used for training)."""
    return family.sample(stream_key(cfg.seed, EVAL_STREAM), cfg.eval_tasks, cfg.n)


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    curve: dict[str, Any]  # the learner's per-position curve on the held-out set at the last step
    history: list[dict[str, Any]]
    episode: Episode  # the held-out set


def params_finite(params: Any) -> bool:
    return not jax.tree_util.tree_leaves(params) or bool(_all_finite(params))


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    """One compiled check of every leaf (eager, each leaf's shape would compile its own pair of ops)."""
    return jnp.all(jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(tree)]))


def train(
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    run: RunDir | None = None,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    mesh: Mesh | None = None,
    until: int | None = None,
    objective: Objective = PREQUENTIAL,
    init_params: Any = None,
) -> TrainResult:
    """Train, evaluating every `cfg.eval_every` steps; with a run directory, log, checkpoint and resume, holding the
    directory's lock (a second writer is refused).

    `until` stops early at that step (as an interruption would); `--resume` later continues to `cfg.steps`
    and ends with the same parameters as an uninterrupted run. A non-default `objective` is recorded in
    config.json (key "objective"), so a resume with another objective is refused. `init_params` starts from
    those parameters instead of the learner's initialisation (a fine-tuning stage; a resume restores its checkpoint).
    """
    runs = None if run is None else [run]
    return train_seeds(
        learner, family, cfg, [cfg.seed], runs, [config], resume, progress, mesh, until, objective, init_params
    )[0]


def train_seeds(
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    seeds: Sequence[int],
    runs: Sequence[RunDir] | None = None,
    configs: Sequence[dict[str, Any] | None] | None = None,
    resume: bool = False,
    progress: bool = True,
    mesh: Mesh | None = None,
    until: int | None = None,
    objective: Objective = PREQUENTIAL,
    init_params: Any = None,
) -> list[TrainResult]:
    """`train` for several seeds of one configuration (`cfg` with its `seed` replaced by each of `seeds`), trained
    as one program: the parameters, optimizer states and train keys carry a leading seed axis (`train_steps_seeds`),
    so one compilation serves every seed, and each seed's result equals its own `train` run up to float reordering.

    Each seed keeps its own run directory (`runs[i]`, with config.json `configs[i]`): metrics, checkpoints and
    results, each resumable alone or with the others (a batched resume continues from the last step that every
    seed has checkpointed). `wall_s` in the metrics is the wall time of the whole batch. One seed is the plain,
    unbatched step. Several seeds take no `stop_at` (each seed would stop at its own step) and no device mesh."""
    seeds = [int(s) for s in seeds]
    require(len(seeds) >= 1 and len(set(seeds)) == len(seeds), f"seeds must be distinct and not empty, got {seeds}")
    require(
        runs is None or len(runs) == len(seeds), f"{len(seeds)} seeds need {len(seeds)} run directories, got {runs}"
    )
    if len(seeds) > 1:
        require(cfg.stop_at is None, "stop_at stops each seed at its own step: train several seeds without it")
        require(mesh is None, "several seeds train on one device (a seed axis) or on a mesh, not both yet")
    with contextlib.ExitStack() as held:
        for run in runs or ():
            held.enter_context(run.locked())
        return _train(learner, family, cfg, seeds, runs, configs, resume, progress, mesh, until, objective, init_params)


@dataclasses.dataclass
class _Seed:
    """One seed of a (possibly batched) run: its config, run directory, checkpoints, history and held-out set."""

    cfg: TrainConfig
    run: RunDir | None
    checkpointer: Checkpointer | None
    history: list[dict[str, Any]]
    episode: Episode
    values: np.ndarray | None = None  # the last full evaluation [B, N] ...
    values_step: int = -1  # ... and its step
    diagnosed: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)

    def log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.run is not None:
            self.run.log_metrics(record)


def _common_checkpoint(checkpointers: Sequence[Checkpointer]) -> int | None:
    """The last step that every seed's checkpoints hold (None: some seed has none, so all start afresh)."""
    held = [set(c.manager.all_steps()) for c in checkpointers]
    common = set.intersection(*held) if held else set()
    return max(common) if common else None


def _train(
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    seeds: list[int],
    runs: Sequence[RunDir] | None,
    configs: Sequence[dict[str, Any] | None] | None,
    resume: bool,
    progress: bool,
    mesh: Mesh | None,
    until: int | None,
    objective: Objective,
    init_params: Any,
) -> list[TrainResult]:
    spec = family.spec
    metric = evaluate.metric_name(spec)
    objective.check(family, cfg)
    batched = len(seeds) > 1
    members: list[_Seed] = []
    states = []
    run_configs = []
    for i in range(len(seeds)):
        config = dict((configs or [None] * len(seeds))[i] or {})
        if objective.config() is not None:
            config["objective"] = objective.config()
        run_configs.append(config)
    for checked, config in zip(runs or (), run_configs, strict=False):
        checked.check_start(config, resume=resume)  # every seed's directory before any is written
    for i, seed in enumerate(seeds):
        seed_cfg = dataclasses.replace(cfg, seed=seed)
        run = None if runs is None else runs[i]
        checkpointer = None
        if run is not None:
            run.start(run_configs[i], resume=resume)
            checkpointer = Checkpointer(run.checkpoint_dir)
        members.append(_Seed(seed_cfg, run, checkpointer, [], eval_episode(family, seed_cfg)))
        states.append(init_state(learner, family, seed_cfg, init_params))
    if runs is not None and resume:
        step = _common_checkpoint([m.checkpointer for m in members if m.checkpointer is not None])
        for i, member in enumerate(members):
            if member.checkpointer is not None:
                # A seed saved past the common step (a kill between the seeds' saves) drops those checkpoints: its
                # metrics go back to the common step too, and orbax would skip saving a step it already holds.
                member.checkpointer.delete_after(step)
                if step is not None:
                    states[i] = member.checkpointer.restore(states[i], step=step)
            if member.run is not None:
                member.run.truncate_metrics(int(states[i].step))  # lines logged after the last checkpoint are redone
    for member in members:
        member.history = member.run.metrics() if member.run is not None else []
    state = replicate(stack(states) if batched else states[0], mesh)

    def seed_state(i: int) -> TrainState:
        return jax.tree_util.tree_map(lambda leaf: leaf[i], state) if batched else state

    probe_tasks, probe_positions = cfg.probe()
    # A family that marks the positions to learn (a sequence family's loss mask) is scored at those positions only.
    masks = [np.asarray(m.episode.params["loss_mask"]) if "loss_mask" in m.episode.params else None for m in members]
    probes = [Episode(m.episode.x[:probe_tasks], m.episode.y[:probe_tasks], {}) for m in members]

    def evaluate_now(i: int, params: Any, step: int, loss: float | None, wall: float, full: bool) -> dict[str, Any]:
        """Seed i's evaluation on the probe (tasks and positions), or on every held-out task and position (`full`)."""
        member, mask = members[i], masks[i]
        episode, seed_cfg = member.episode, member.cfg
        if full:
            member.values, member.values_step = evaluate.per_position(learner, params, spec, episode), step
            scores = member.values[:, cfg.loss_start : cfg.stop]
            weights = None if mask is None else mask[:, cfg.loss_start : cfg.stop]
        else:
            scores = evaluate.per_position(learner, params, spec, probes[i], positions=probe_positions)
            weights = None if mask is None else mask[:probe_tasks][:, probe_positions]
        mean = scores.mean() if weights is None else (scores * weights).sum() / max(float(weights.sum()), 1.0)
        record = {
            "step": step,
            "loss": loss,
            f"eval_{metric}": float(mean),
            "eval_tasks": scores.shape[0],
            "eval_positions": scores.shape[1],
            "wall_s": round(wall, 3),
        }
        if cfg.curriculum is not None:  # the values the step just finished trained with
            record.update({f"curriculum_{k}": v for k, v in cfg.curriculum.values(max(step - 1, 0)).items()})
        if step not in member.diagnosed:  # once per step, also when a target is confirmed by a second evaluation
            diagnostics_key = jax.random.fold_in(stream_key(seed_cfg.seed, EVAL_STREAM), 1)  # the same draws each time
            scalars = objective_diagnostics(
                objective, params, diagnostics_key, learner=learner, family=family, cfg=cfg.step_settings()
            )
            member.diagnosed[step] = {f"objective_{k}": float(v) for k, v in scalars.items()}
        record.update(member.diagnosed[step])
        return record

    def reached(record: dict[str, Any]) -> bool:
        value = record[f"eval_{metric}"]
        return cfg.stop_at is not None and (value <= cfg.stop_at if spec.is_regression else value >= cfg.stop_at)

    start_step = int(states[0].step)
    train_keys = [stream_key(m.cfg.seed, TRAIN_STREAM) for m in members]
    train_key = jnp.stack(train_keys) if batched else train_keys[0]
    step_cfg = cfg.step_settings()
    step_fn = train_steps_seeds if batched else train_steps
    end_step = cfg.steps if until is None else min(until, cfg.steps)
    first = members[0].history
    if first and first[-1]["step"] == start_step and reached(first[-1]):
        end_step = start_step  # a run that stopped at its target stays stopped (one seed: stop_at needs one)
    wall_offset = first[-1]["wall_s"] if first else 0.0
    t0 = saved_at = time.perf_counter()
    for i, member in enumerate(members):
        if start_step == 0 and not member.history:
            member.log(evaluate_now(i, seed_state(i).params, 0, None, 0.0, full=False))
    label = "step" if not batched else f"step x {len(seeds)} seeds"
    bar = tqdm(total=cfg.steps, initial=start_step, unit=label, disable=not progress, dynamic_ncols=True)
    step = start_step
    while step < end_step:
        boundary = min((step // cfg.eval_every + 1) * cfg.eval_every, end_step)
        num = min(cfg.scan_steps, boundary - step)
        state, chunk_losses = step_fn(
            state, train_key, learner=learner, family=family, cfg=step_cfg, num_steps=num, mesh=mesh,
            objective=objective,
        )  # fmt: skip
        losses_SK = np.asarray(chunk_losses).reshape(len(seeds), num)
        all_finite = np.isfinite(losses_SK).all() and params_finite(state.params)  # one check of every seed
        for i, member in enumerate(members):
            finite = np.isfinite(losses_SK[i])
            if not all_finite and (not finite.all() or not params_finite(seed_state(i).params)):
                bad = step + (int(np.argmin(finite)) if not finite.all() else num)
                last = member.checkpointer.latest_step() if member.checkpointer else None
                kept = f"; the last checkpoint (step {last}) is kept" if last is not None else ""
                which = f" (seed {member.cfg.seed})" if batched else ""
                raise TrainingError(f"non-finite loss or parameters at step {bad}{which} (try a lower --lr){kept}")
        step += num
        bar.update(num)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            since_eval = step - (step - 1) // cfg.eval_every * cfg.eval_every
            loss_S = np.asarray(state.loss_sum).reshape(len(seeds)) / since_eval
            for i, member in enumerate(members):
                params = seed_state(i).params
                wall = wall_offset + time.perf_counter() - t0
                record = evaluate_now(i, params, step, float(loss_S[i]), wall, full=step == cfg.steps)
                if reached(record) and step < cfg.steps:  # confirmed on every task and position before stopping
                    record = evaluate_now(i, params, step, float(loss_S[i]), wall, full=True)
                    end_step = step if reached(record) else end_step
                member.log(record)
            state = state.replace(loss_sum=jnp.zeros_like(state.loss_sum))
            means = {k: np.mean([m.history[-1][k] for m in members]) for k in ("loss", f"eval_{metric}")}
            bar.set_postfix(loss=f"{means['loss']:.4f}", **{metric[:3]: f"{means[f'eval_{metric}']:.4f}"})
            if time.perf_counter() - saved_at >= CHECKPOINT_INTERVAL_S:
                for i, member in enumerate(members):
                    if member.checkpointer is not None:
                        member.checkpointer.save(step, seed_state(i))
                saved_at = time.perf_counter()
    bar.close()
    results = []
    for i, member in enumerate(members):
        if member.checkpointer is not None:
            if step > start_step and member.checkpointer.latest_step() != step:
                member.checkpointer.save(step, seed_state(i))
            member.checkpointer.close()
        seed_result = seed_state(i)
        if member.values is None or member.values_step != step:  # not fully evaluated at this step yet
            member.values = evaluate.per_position(learner, seed_result.params, spec, member.episode)
        curve = evaluate.curve(
            member.values, train=family.name, test=family.name, learner=learner.name, metric=metric, kind="trained",
            step=step,
        )  # fmt: skip
        results.append(TrainResult(state=seed_result, curve=curve, history=member.history, episode=member.episode))
    return results


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of one structure stacked leaf by leaf on a new leading (seed) axis."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)
