"""Composing a figure from training runs: each (learner, training family) pair is one run directory, trained or
resumed by the ordinary trainer, then evaluated on test sets shared by every learner (identical tasks).

The figure scripts in `experiments/` only declare their jobs and test sets and call these functions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_meta import evaluate, learners
from icl_meta.episode import Episode, Learner
from icl_meta.runs import RunDir
from icl_meta.train import TEST_STREAM, TrainConfig, stream_key, train
from tasks.base import TaskFamily


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of a figure: `learner` trained on `family` (named `train` in the results) with `cfg`."""

    train: str
    learner: Learner
    family: TaskFamily
    cfg: TrainConfig

    @property
    def key(self) -> str:
        """The run directory's name, e.g. `prototype__icl`."""
        return f"{self.train}__{self.learner.name}"


def run_config(experiment: str, learner: Learner, family: TaskFamily, cfg: TrainConfig) -> dict[str, Any]:
    """The config.json of a training run (what `icl-meta train` writes; a resume must match it)."""
    return {
        "experiment": experiment,
        "task": {"name": family.name, **family.hparams()},
        "learner": learners.to_config(learner),
        "train": dataclasses.asdict(cfg),
    }


def train_job(job: Job, root: Path, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train `job` in `root / job.key`, resuming whatever a previous call left there (a finished run is loaded,
    not retrained). Returns the final parameters and a summary: steps, training wall time, final held-out metric."""
    run = RunDir(Path(root) / job.key)
    config = run_config("train", job.learner, job.family, job.cfg)
    result = train(job.learner, job.family, job.cfg, run, config, resume=run.config_path.exists(), progress=progress)
    last = result.history[-1]
    metric = next(k for k in last if k.startswith("eval_"))
    info = {"train": job.train, "learner": job.learner.name, "steps": int(result.state.step)}
    return result.state.params, {**info, "train_wall_s": last["wall_s"], metric: last[metric]}


def test_sets(families: Mapping[str, TaskFamily], num_tasks: int, n: int, seed: int) -> dict[str, Episode]:
    """One held-out batch per test family, from the TEST key stream (never seen in training or run evaluation)."""
    return {name: family.sample(stream_key(seed, TEST_STREAM), num_tasks, n) for name, family in families.items()}


def evaluate_job(
    job: Job, params: Any, tests: Mapping[str, Episode], families: Mapping[str, TaskFamily], **labels: Any
) -> list[dict[str, Any]]:
    """Per-position curves of a trained learner on every test set (tidy records: train, test, learner, ...)."""
    curves = []
    for test, episode in tests.items():
        spec = families[test].spec
        t0 = time.perf_counter()
        values = evaluate.per_position(job.learner, params, spec, episode)
        curves.append(
            evaluate.curve(
                values,
                train=job.train,
                test=test,
                learner=job.learner.name,
                metric=evaluate.metric_name(spec),
                kind="trained",
                eval_s=round(time.perf_counter() - t0, 2),
                **labels,
            )
        )
    return curves


def reference_curves(
    tests: Mapping[str, Episode], families: Mapping[str, TaskFamily], **labels: Any
) -> list[dict[str, Any]]:
    """The closed-form algorithms on every test set (`train` is None: nothing is trained)."""
    curves = []
    for test, episode in tests.items():
        spec = families[test].spec
        for ref in learners.references(spec):
            values = evaluate.per_position(ref, None, spec, episode)
            curves.append(
                evaluate.curve(
                    values,
                    train=None,
                    test=test,
                    learner=ref.name,
                    metric=evaluate.metric_name(spec),
                    kind="reference",
                    **labels,
                )
            )
    return curves


def mean_table(curves: Iterable[dict[str, Any]], starts: Mapping[str, int]) -> list[dict[str, Any]]:
    """Mean of each curve over positions starts[test].. (the reference's reporting range of the test family)."""
    return [
        {
            "train": c["train"],
            "test": c["test"],
            "learner": c["learner"],
            "kind": c["kind"],
            "positions": f"{starts[c['test']]}-{c['positions'][-1]}",
            "mean": round(evaluate.mean_over(c, starts[c["test"]]), 4),
        }
        for c in curves
    ]


def run_grid(
    jobs: Sequence[Job],
    root: Path,
    tests: Mapping[str, Episode],
    families: Mapping[str, TaskFamily],
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train (or resume, or load) every job in turn and evaluate it on every test set.

    Returns the curves and one summary per run (steps, training wall time, final held-out metric)."""
    curves: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.learner.name} trained on {job.train}: {job.cfg.steps} steps -> {root / job.key}")
        params, info = train_job(job, root, progress)
        curves += evaluate_job(job, params, tests, families)
        runs.append(info)
    return curves, runs


def table_value(
    table: Iterable[dict[str, Any]], learner: str, test: str, train: str | None = None, **labels: Any
) -> float:
    """The mean of `learner` tested on `test` in a `mean_table`, trained on `train` if given (closed-form references,
    whose train is None, match any) and with the given labels (e.g. sigma=3; a label given as None matches rows
    without it); NaN when absent."""
    for row in table:
        if row["learner"] == learner and row["test"] == test and (train is None or row["train"] in (train, None)):
            if all(row.get(k) == v for k, v in labels.items()):
                return row["mean"]
    return float("nan")
