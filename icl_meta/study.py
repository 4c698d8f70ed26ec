"""Studies made of training runs: each (learner, training family) pair is one run directory, trained or resumed by
the ordinary trainer, then evaluated on test sets shared by every learner (identical tasks), beside the closed-form
algorithms (the registered "references" rule set); a saved run read back; the agreement analysis (which closed-form
rule a trained learner runs).

The command line and the experiments declare their jobs and test sets and call these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icl_meta import agreement, evaluate, families, learners
from icl_meta.checkpoint import Checkpointer
from icl_meta.contracts import Episode, Learner, TaskFamily
from icl_meta.errors import ConfigError
from icl_meta.runs import RunDir, read_json, run_config
from icl_meta.train import (
    PREQUENTIAL,
    TEST_STREAM,
    Objective,
    TrainConfig,
    TrainResult,
    init_state,
    stream_key,
    train,
    train_seeds,
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of a figure: `learner` trained on `family` (named `train` in the results) with `cfg`."""

    train: str
    learner: Learner
    family: TaskFamily
    cfg: TrainConfig

    def __post_init__(self) -> None:
        learners.check_supports(self.learner, self.family.spec)  # one line naming the task kinds it handles

    @property
    def key(self) -> str:
        """The run directory's name, e.g. `prototype__icl`."""
        return f"{self.train}__{self.learner.name}"


def train_seed_runs(
    learner: Learner,
    family: TaskFamily,
    cfg: TrainConfig,
    seeds: Sequence[int],
    paths: Sequence[Path],
    configs: Sequence[dict[str, Any]],
    progress: bool = True,
    until: int | None = None,
    objective: Objective = PREQUENTIAL,
) -> list[TrainResult]:
    """Train, resume or load the run of each seed (`cfg` with that seed) in `paths[i]`, the seeds whose runs stand at
    the same step together as one program (`train.train_seeds`): new runs together, runs continued from the same
    checkpoint together (e.g. after more seeds were asked for than a previous call trained). Results in seed order."""
    runs = [RunDir(path) for path in paths]
    groups: dict[tuple[bool, int | None], list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault((run.config_path.exists(), _checkpoint_step(run)), []).append(i)
    results: dict[int, TrainResult] = {}
    for (resume, _), members in groups.items():
        trained = train_seeds(
            learner, family, cfg, [seeds[i] for i in members], [runs[i] for i in members],
            [configs[i] for i in members], resume=resume, progress=progress, until=until, objective=objective,
        )  # fmt: skip
        results.update(zip(members, trained, strict=True))
    return [results[i] for i in range(len(runs))]


def _checkpoint_step(run: RunDir) -> int | None:
    if not run.checkpoint_dir.exists():
        return None
    checkpointer = Checkpointer(run.checkpoint_dir, create=False)
    step = checkpointer.latest_step()
    checkpointer.close()
    return step


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


@dataclasses.dataclass
class SavedRun:
    """A finished (or interrupted) run read back from its directory: its config.json and last checkpoint."""

    config: dict[str, Any]
    learner: Learner
    family: TaskFamily
    cfg: TrainConfig
    params: Any
    step: int


def load_run(path: Path) -> SavedRun:
    """The learner, training family, config and parameters of the last checkpoint of the run in `path`."""
    run = RunDir(path)
    if not run.config_path.exists():
        raise ConfigError(f"{run.path} is not a run directory (no config.json)")
    config = read_json(run.config_path)
    learner = learners.from_config(config["learner"])
    family = families.get(**config["task"])
    cfg = TrainConfig(**config["train"])
    checkpointer = Checkpointer(run.checkpoint_dir, create=False) if run.checkpoint_dir.exists() else None
    if checkpointer is None or checkpointer.latest_step() is None:
        raise ConfigError(f"{run.checkpoint_dir} holds no checkpoint")
    state = checkpointer.restore(init_state(learner, family, cfg))
    checkpointer.close()
    return SavedRun(config, learner, family, cfg, state.params, int(state.step))


def sample_test_sets(families: Mapping[str, TaskFamily], num_tasks: int, n: int, seed: int) -> dict[str, Episode]:
    """One held-out batch per test family, from the TEST key stream (never seen in training or run evaluation)."""
    return {name: family.sample(stream_key(seed, TEST_STREAM), num_tasks, n) for name, family in families.items()}


def evaluate_job(
    job: Job, params: Any, tests: Mapping[str, Episode], families: Mapping[str, TaskFamily], **labels: Any
) -> list[dict[str, Any]]:
    """Per-position curves of a trained learner on every test set (tidy records: train, test, learner, ...)."""
    specs = {name: family.spec for name, family in families.items()}
    return evaluate.curves_on(job.learner, params, tests, specs, train=job.train, **labels)


def reference_curves(
    tests: Mapping[str, Episode], families: Mapping[str, TaskFamily], **labels: Any
) -> list[dict[str, Any]]:
    """The closed-form algorithms (the "references" rule set) on every test set (`train` is None: nothing is
    trained)."""
    curves = []
    for test, episode in tests.items():
        spec = families[test].spec
        for ref in learners.rules("references", spec).values():
            curves += evaluate.curves_on(
                ref, None, {test: episode}, {test: spec}, train=None, kind="reference", **labels
            )
    return curves


AGREEMENT_TASKS = 512  # test tasks per set in the agreement analysis: intervals of about +-0.01, a quarter of the cost


def agreement_curves(
    learner: Learner,
    params: Any,
    tests: Mapping[str, Episode],
    families: Mapping[str, TaskFamily],
    num_tasks: int = AGREEMENT_TASKS,
    **labels: Any,
) -> list[dict[str, Any]]:
    """Which algorithm a trained learner runs: its per-position agreement (`icl_meta.agreement`) with every standard
    closed-form rule of each test family (the "agreement" rule set), on the first `num_tasks` tasks of each set.
    `labels` (e.g. train=job.train, sigma=3) go into every record."""
    records = []
    for test, episode in tests.items():
        spec = families[test].spec
        first = {test: Episode(episode.x[:num_tasks], episode.y[:num_tasks], {})}
        rules = learners.rules("agreement", spec)
        records += agreement.curves_on(learner, params, rules, first, {test: spec}, **labels)
    return records


def agreement_summaries(
    records: Sequence[dict[str, Any]],
    families: Mapping[str, TaskFamily],
    starts: Mapping[str, int],
    stops: Mapping[str, int | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per test family: `agreement.summarise` over positions starts[test]..stops[test] (default: to the end), with
    the family's optimal rule."""
    return {
        test: agreement.summarise(
            [r for r in records if r["test"] == test],
            starts[test],
            (stops or {}).get(test),
            optimal_rule=families[test].optimal_rule,
        )
        for test in dict.fromkeys(r["test"] for r in records)
    }


def agreement_analysis(
    learner: Learner,
    params: Any,
    tests: Mapping[str, Episode],
    families: Mapping[str, TaskFamily],
    positions: tuple[int, int | None] | None = None,
    num_tasks: int = AGREEMENT_TASKS,
    **labels: Any,
) -> dict[str, Any]:
    """The one entry point of the agreement analysis: a trained learner's per-position agreement with the
    "agreement" rule set on each test set (`agreement_curves`), and its summary per test family over `positions`
    (start, stop), clipped to the test sequences (default: from each family's reference start to the end), with
    its optimal rule. Returns {"agreement": records, "agreement_summary": {test: summary}}."""
    records = agreement_curves(learner, params, tests, families, num_tasks, **labels)
    starts, stops = {}, {}
    for test, episode in tests.items():
        n = episode.x.shape[1]
        start, stop = positions or (families[test].reference_loss_start, None)
        starts[test], stops[test] = min(start, n - 1), None if stop is None else min(stop, n)
    return {"agreement": records, "agreement_summary": agreement_summaries(records, families, starts, stops)}


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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Train (or resume, or load) every job in turn and evaluate it on every test set.

    Returns the curves, one summary per run (steps, training wall time, final held-out metric) and the trained
    parameters, one per job (for further analyses)."""
    curves: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    params_J = []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.learner.name} trained on {job.train}: {job.cfg.steps} steps -> {root / job.key}")
        params, info = train_job(job, root, progress)
        curves += evaluate_job(job, params, tests, families)
        runs.append(info)
        params_J.append(params)
    return curves, runs, params_J


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


def table_matrix(table: Iterable[dict[str, Any]], rows: Sequence[tuple[str, str | None]], tests: Sequence[str]):
    """A [rows, tests] array of `table_value`s: row (learner, train) tested on each test (NaN where absent)."""
    table = list(table)
    return np.array([[table_value(table, name, test, train=train) for test in tests] for name, train in rows])
