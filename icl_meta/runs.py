"""A run directory: config.json (written first), metrics.jsonl, results.json, checkpoints, provenance, and the lock
that keeps one writer per directory."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax

from icl_meta import learners
from icl_meta.contracts import Learner, TaskFamily
from icl_meta.errors import ConfigError


def provenance(seed: int | None = None) -> dict[str, Any]:
    import flax
    import numpy
    import optax

    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "seed": seed,
    }


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Atomic write: a crash never leaves a half-written results file behind."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclasses.dataclass
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock while writing it: a writer in another process gets a one-line ConfigError
        naming the holder's pid. Re-entrant within a process. The lock is an flock on `run.lock`, which the
        operating system releases when its process ends, so the lock file of a dead process is simply taken over;
        the file is removed on release."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a directory")
        key = str(self.path.resolve())
        if key in _HELD:  # this process holds it already
            _HELD[key][1] += 1
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            _HELD[key] = [_acquire(self.lock_path), 1]
        try:
            yield
        finally:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                fd, _ = _HELD.pop(key)
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()
                os.close(fd)  # closing releases the flock

    def check_start(self, config: dict[str, Any], resume: bool) -> None:
        """Raise the ConfigError that `start` would, writing nothing: a new run needs a free directory, a resumed one
        a config.json that matches."""
        if resume:
            if not self.config_path.exists():
                raise ConfigError(f"--resume: no run at {self.path} (config.json missing)")
            changed = _differences(_comparable(read_json(self.config_path)), _comparable(config))
            if changed:
                raise ConfigError(
                    f"--resume: {', '.join(changed)} differ from {self.config_path}; resume with the same settings"
                )
            return
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a directory")
        if self.config_path.exists():
            raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")

    def start(self, config: dict[str, Any], resume: bool) -> None:
        """Create the directory and write config.json first; on resume, the saved config must match (only the step
        budget may change)."""
        self.check_start(config, resume)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config)

    def log_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines beyond a restored checkpoint, so a resumed run's log equals an uninterrupted one's."""
        if not self.metrics_path.exists():
            return
        lines = [ln for ln in self.metrics_path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln)["step"] <= after_step]
        self.metrics_path.write_text("".join(ln + "\n" for ln in kept))

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(ln) for ln in self.metrics_path.read_text().splitlines() if ln.strip()]


_HELD: dict[str, list[int]] = {}  # run directories this process has locked: [fd, depth]


def _acquire(path: Path) -> int:
    """An fd holding an exclusive flock on `path`, which holds this process's pid; ConfigError if another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{path.parent} is being written by another process (pid {holder}, lock {path.name}); "
                "wait for it to finish or stop it"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it between our open and our lock: try again
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def run_config(experiment: str, learner: Learner, family: TaskFamily, train: Any) -> dict[str, Any]:
    """The config.json of a training run (what `icl-meta train` and the figure scripts write; a resume must match
    it): the experiment, the task family, the learner and the training config (a dataclass)."""
    return {
        "experiment": experiment,
        "task": {"name": family.name, **family.hparams()},
        "learner": learners.to_config(learner),
        "train": dataclasses.asdict(train),
    }


def _differences(saved: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the values that differ between two configs, e.g. ['train.lr']."""
    if isinstance(saved, dict) and isinstance(new, dict):
        return [
            d for k in sorted(set(saved) | set(new)) for d in _differences(saved.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if saved == new else [prefix.rstrip(".")]


# Settings added after runs were first written, with the value that means "off" (dotted paths into config.json):
# a config.json without them equals one with them off, so older runs still resume and load.
NEUTRAL_SETTINGS = {
    "train.warmup_steps": 0,
    "train.curriculum": None,
    "learner.config.block": "paper",
    "learner.config.positions": None,
    "learner.config.scan_layers": False,
    "learner.config.rotary": False,
    "train.probe_tasks": None,
    "train.probe_positions": None,
    "train.stop_at": None,
    "train.position_sampling": "uniform",
    "train.position_groups": 1,
}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config without its step budget (a run may be resumed with more steps: batches are keyed by step) and
    without the settings of NEUTRAL_SETTINGS that hold their neutral value."""
    config = json.loads(json.dumps(config))  # a deep copy, with tuples as lists (as in the file)
    if isinstance(config.get("train"), dict):
        config["train"].pop("steps", None)
    for path, neutral in NEUTRAL_SETTINGS.items():
        *parents, key = path.split(".")
        node: Any = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and node[key] == neutral:
            del node[key]
    return config


def results_document(
    experiment: str, config: dict[str, Any], curves: list[dict[str, Any]], seed: int | None = None
) -> dict[str, Any]:
    """The tidy results schema shared by every results.json (docs/reference.md, "Run directory")."""
    return {
        "experiment": experiment,
        "scale": config.get("scale"),
        "config": config,
        "provenance": provenance(seed),
        "curves": curves,
    }
