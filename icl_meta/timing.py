"""Seconds per training step, after compilation: the one timing helper of the throughput benchmark and the figure
scripts. A step is compiled ahead of time (`lower().compile()`, so the compile time is measured apart), then called
as the trainer calls it, blocking on every call."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from icl_meta.contracts import Learner, TaskFamily
from icl_meta.errors import require
from icl_meta.parallel import replicate
from icl_meta.train import (
    PREQUENTIAL,
    TRAIN_STREAM,
    Objective,
    TrainConfig,
    init_state,
    stack,
    stream_key,
    train_steps,
    train_steps_seeds,
)


@dataclasses.dataclass
class CompiledSteps:
    """`num_steps` fused training steps compiled for one configuration, with a state to run them from."""

    compiled: Any
    state: Any
    key: jax.Array
    num_steps: int
    compile_s: float

    def flops_per_step(self) -> float:
        """XLA's FLOP count of a single compiled step (of several fused ones, XLA may count the scan body once)."""
        return self._cost("flops")

    def bytes_per_step(self) -> float:
        """XLA's count of the bytes a single compiled step's operations read and write (an upper bound on its memory
        traffic: what stays in cache is counted too)."""
        return self._cost("bytes accessed")

    def temp_bytes(self) -> int:
        """The compiled program's temporary buffers (its working set beside the arguments)."""
        return int(self.compiled.memory_analysis().temp_size_in_bytes)

    def _cost(self, key: str) -> float:
        require(self.num_steps == 1, "costs per step come from a compiled single step (compile_steps(..., 1))")
        analysis = self.compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        return float(analysis.get(key, float("nan")))

    def steps_per_second(self, min_time: float = 0.0, min_calls: int = 2) -> float:
        """One warm-up call, then calls, each blocked on, for at least `min_calls` and `min_time` seconds."""
        self.state, losses = self.compiled(self.state, self.key)
        jax.block_until_ready(losses)
        calls, t0 = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - t0 < min_time:
            self.state, losses = self.compiled(self.state, self.key)
            jax.block_until_ready(losses)
            calls += 1
        require(bool(jnp.isfinite(losses).all()), "non-finite loss while timing")
        return calls * self.num_steps / (time.perf_counter() - t0)


def compile_steps(
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    num_steps: int,
    mesh: Mesh | None = None,
    objective: Objective = PREQUENTIAL,
    seeds: int = 1,
) -> CompiledSteps:
    """`train.train_steps` for `num_steps` fused steps, compiled ahead of time and timed; with `seeds` > 1,
    `train.train_steps_seeds` for that many seeds at once (a step then trains every seed)."""
    require(seeds == 1 or mesh is None, "several seeds are timed on one device")
    if seeds == 1:
        state, key, step = (
            replicate(init_state(learner, family, cfg), mesh),
            stream_key(cfg.seed, TRAIN_STREAM),
            train_steps,
        )
    else:
        configs = [dataclasses.replace(cfg, seed=cfg.seed + i) for i in range(seeds)]
        state = stack([init_state(learner, family, c) for c in configs])
        key, step = stack([stream_key(c.seed, TRAIN_STREAM) for c in configs]), train_steps_seeds
    t0 = time.perf_counter()
    lowered = step.lower(
        state, key, learner=learner, family=family, cfg=cfg.step_settings(), num_steps=num_steps, mesh=mesh,
        objective=objective,
    )  # fmt: skip
    compiled = lowered.compile()
    return CompiledSteps(compiled, state, key, num_steps, time.perf_counter() - t0)
