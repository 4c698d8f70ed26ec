"""Staged training: a model trained as a chain of runs, each an ordinary training run (`icl_meta.train.train`)
started from its parent run's last checkpoint, with a masked next-token objective that may train only some weight
groups (`icl_meta.sequence_loss.MaskedNextToken(trainable=...)`; e.g. LLaVA's projector-only alignment, then full
instruction tuning).

A `Stage` names its data (a task family), its parent (None: from scratch), its steps, the weight groups it trains and
an optional curriculum. The runs live in ROOT/seedS/STAGE, or ROOT/shared/STAGE for a stage trained once and shared
by every seed (`shared`); a finished run is reused and an interrupted one resumed.

    table = {s.name: s for s in (Stage("pretrain", None, family_a, 1000), Stage("tune", "pretrain", family_b, 200))}
    order = with_ancestors(["tune"], table)  # parents first: ["pretrain", "tune"]
    check_parents(order, table, root, seed)  # a missing parent checkpoint is one line, before any training
    for name in order:
        params, info = train_stage(table[name], learner, cfg, root, seed, figure="fig9")
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_meta import study
from icl_meta.contracts import Learner, TaskFamily
from icl_meta.curriculum import Curriculum
from icl_meta.errors import ConfigError, require
from icl_meta.runs import RunDir, run_config
from icl_meta.sequence_loss import MaskedNextToken
from icl_meta.train import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class Stage:
    """A training stage: its data, its parent (None: from scratch), the weight groups it trains (None: all)."""

    name: str
    parent: str | None
    family: TaskFamily
    steps: int
    trainable: tuple[str, ...] | None = None
    curriculum: Curriculum | None = None


def with_ancestors(names: Sequence[str], table: Mapping[str, Stage]) -> list[str]:
    """`names` and the stages they start from, parents first."""
    order: list[str] = []
    for name in names:
        chain = [name]
        while (parent := table[chain[-1]].parent) is not None:
            chain.append(parent)
        order += [n for n in reversed(chain) if n not in order]
    return order


def stage_dir(root: Path, name: str, seed: int, shared: Collection[str] = ()) -> Path:
    """The run directory of stage `name` at `seed`: ROOT/shared/NAME for a stage in `shared`, else ROOT/seedS/NAME."""
    return root / "shared" / name if name in shared else root / f"seed{seed}" / name


def check_parents(
    requested: Sequence[str],
    table: Mapping[str, Stage],
    root: Path,
    seed: int,
    shared: Collection[str] = (),
    flag: str = "--stages",
) -> None:
    """Every parent of a requested stage is requested too, or has a checkpoint (else one line, before training;
    `flag` is the option that lists the stages)."""
    for name in requested:
        parent = table[name].parent
        if parent is None or parent in requested:
            continue
        checkpoints = stage_dir(root, parent, seed, shared) / "checkpoints"
        if not (checkpoints.exists() and any(checkpoints.iterdir())):
            raise ConfigError(
                f"stage {name} starts from stage {parent}, which has no checkpoint in {checkpoints.parent}: "
                f"add {parent} to {flag} (or train it first)"
            )


def train_stage(
    stage: Stage,
    learner: Learner,
    cfg: TrainConfig,
    root: Path,
    seed: int,
    *,
    figure: str,
    shared: Collection[str] = (),
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or load) `stage` with `cfg` (its steps and curriculum are the stage's) in its run directory
    at `seed`, from its parent's last checkpoint; its config.json is `figure`'s run config plus the stage and parent.
    Returns the trained parameters and a summary (steps, timing, the held-out query and answer accuracy)."""
    require(
        cfg.steps == stage.steps and cfg.curriculum is stage.curriculum,
        f"stage {stage.name}: the training config's steps and curriculum must be the stage's",
    )
    init = None if stage.parent is None else study.load_run(stage_dir(root, stage.parent, seed, shared)).params
    run = RunDir(stage_dir(root, stage.name, seed, shared))
    config = {**run_config(figure, learner, stage.family, cfg), "stage": stage.name, "parent": stage.parent}
    t0 = time.perf_counter()
    result = train(learner, stage.family, cfg, run, config, resume=run.config_path.exists(), progress=progress,
                   objective=MaskedNextToken(trainable=stage.trainable), init_params=init)  # fmt: skip
    last = result.history[-1]
    info = {
        "stage": stage.name, "parent": stage.parent, "seed": seed, "steps": int(result.state.step),
        "train_wall_s": last["wall_s"], "call_s": round(time.perf_counter() - t0, 1),
        "steps_per_s": round(stage.steps / last["wall_s"], 1) if last["wall_s"] else None,
        "query_accuracy": last.get("objective_query_accuracy"), "answer_accuracy": last["eval_accuracy"],
    }  # fmt: skip
    return result.state.params, info


__all__ = ["Stage", "check_parents", "stage_dir", "train_stage", "with_ancestors"]
