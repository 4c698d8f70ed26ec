"""An experiment is a spec: a registered subclass of `Experiment` says what is specific to it (its scales, how it
runs its jobs and analyses into a results document, the claims it decides from that document's numbers, what it
draws and prints), and one skeleton (`main`) does the rest: options, the run root, the wall time, the claims in the
one schema (`icl_meta.claims`), the results JSON, the PNGs and the closing lines.

    @register("fig9_thing")
    class Thing(Experiment):
        '''Figure 9: one line that says what it shows.'''

        figure = "fig9"  # `icl-meta reproduce fig9` (several experiments may share a figure: they run in `order`)
        scales = {"smoke": ThingScale(...), "cpu": ThingScale(...), "paper": ThingScale(...)}

        def run(self, ctx: Context) -> dict: ...  # train / evaluate / analyse: the results document
        def claims(self, doc: dict) -> list[Claim]: ...  # from the document's numbers, thresholds fixed here
        def draw(self, doc: dict, figures: Path) -> None: ...  # PNGs
        def report(self, doc: dict) -> None: ...  # printed tables

`icl-meta reproduce NAME` finds every experiment in the `experiments` package and in `--import`ed modules: nothing to
list anywhere. `--from-results` re-decides the claims, redraws and reprints from the saved JSON without running.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pkgutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from icl_meta import claims as claims_lib
from icl_meta import compile_cache, learners
from icl_meta.claims import Claim
from icl_meta.errors import ConfigError, guarded
from icl_meta.registry import Registry
from icl_meta.runs import read_json, write_json

SCALE_NAMES = ("smoke", "cpu", "paper")  # seconds; minutes on a laptop; the paper's size (a GPU job)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Base of every experiment's settings at one scale: a frozen dataclass whose subclasses add the fields."""

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Context:
    """What the skeleton hands an experiment's `run`: the parsed options and what follows from them."""

    args: argparse.Namespace
    scale_name: str
    scale: Any  # the experiment's Scale subclass
    seed: int
    root: Path  # its run directories
    figures: Path  # results JSON and PNGs
    progress: bool
    learners: tuple[str, ...]  # --learners (empty where the experiment takes none)
    seeds: int | None  # --seeds (None where not given or not taken)


class Experiment:
    """Base of every experiment; subclasses set the class attributes and override `run`, `claims`, `draw`, `report`
    (and `add_arguments`, `stem` where they need to)."""

    name: ClassVar[str]  # set by `register`: the results' stem, NAME_SCALE.json
    figure: ClassVar[str | None] = None  # the `reproduce` name (default: `name`)
    order: ClassVar[int] = 0  # among the experiments of one figure
    scales: ClassVar[Mapping[str, Scale]]
    learners: ClassVar[tuple[str, ...]] = ()  # the default --learners (any registered learner is accepted)
    takes_seeds: ClassVar[bool] = False  # a --seeds option (seeds per arm)

    @classmethod
    def reproduce_name(cls) -> str:
        return cls.figure or cls.name

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or sys.modules[cls.__module__].__doc__ or cls.name).strip().splitlines()[0]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The experiment's own options, beside the shared ones."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """Train, evaluate and analyse; return the results document (`icl_meta.runs.results_document` and more)."""
        raise NotImplementedError

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """The claims, decided from the document's numbers only (so `--from-results` re-decides them)."""
        return []

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        """The PNGs, from the document."""

    def report(self, doc: dict[str, Any]) -> None:
        """Printed tables, from the document."""

    def stem(self, args: argparse.Namespace) -> str:
        return f"{self.name}_{args.scale}"

    def timed_steps(self, scale: Scale) -> dict[str, tuple[Any, Any, Any, Any]]:
        """The training steps of this experiment at `scale` that `icl-meta bench` times with many seeds as one program
        (its seeds rows): {row name: (learner, task family, TrainConfig, objective)}; {} for none."""
        return {}

    def run_root(self, args: argparse.Namespace) -> Path:
        """Where its runs live: --out, or runs/FIGURE/SCALE."""
        return args.out or Path("runs") / self.reproduce_name() / args.scale


def import_module(module: str) -> None:
    """Import `module` (found beside where the command runs too) for what it registers; a one-line error if absent."""
    sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"--import {module}: {err}") from None


EXPERIMENTS = Registry("experiment")


def register(name: str) -> Callable[[type], type]:
    """Class decorator: the experiment `name` (its results stem); `icl-meta reproduce` finds it."""
    return EXPERIMENTS.register(name)


_discovered = False


def discover() -> dict[str, list[type[Experiment]]]:
    """Every registered experiment by `reproduce` name, in `order`: the modules of this package are imported once
    (a module given to --import has registered its own already)."""
    global _discovered
    if not _discovered:
        _discovered = True
        package = sys.modules[__package__ or "experiments"]
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    out: dict[str, list[type[Experiment]]] = {}
    for cls in EXPERIMENTS.classes().values():
        out.setdefault(cls.reproduce_name(), []).append(cls)
    return {name: sorted(group, key=lambda c: c.order) for name, group in sorted(out.items())}


def parser(experiment: Experiment) -> argparse.ArgumentParser:
    """The options every experiment shares (--scale, --seed, --out, --figures, --no-progress, --from-results, the
    compilation cache; --learners and --seeds where it takes them) and its own."""
    module = sys.modules[type(experiment).__module__]
    name = module.__spec__.name if module.__spec__ is not None else module.__name__  # not "__main__" under -m
    p = argparse.ArgumentParser(prog=f"python -m {name}", description=experiment.description())
    p.add_argument("--scale", choices=tuple(experiment.scales), default="cpu", help="problem size (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training runs and test sets (default 0)")
    if experiment.takes_seeds:
        p.add_argument("--seeds", type=int, default=None, help="seeds per arm, seed..seed+seeds-1 (default: scale's)")
    if experiment.learners:
        p.add_argument(
            "--learners",
            default=",".join(experiment.learners),
            help=f"comma-separated registered learners (default {','.join(experiment.learners)}; any registered "
            "learner, one from --import too)",
        )
    p.add_argument("--out", type=Path, default=None, help="run directories (default runs/FIGURE/SCALE)")
    p.add_argument("--figures", type=Path, default=Path("figures"), help="results and PNGs (default figures/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: re-decide the claims, redraw and reprint from the saved results JSON",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import a module first (one that registers learners or task families), repeatable",
    )
    compile_cache.add_options(p)
    experiment.add_arguments(p)
    return p


def parse_choices(text: str, accepted: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of `accepted` given to option `flag` (e.g. --regimes anchored,symmetric), duplicates
    dropped in order; a one-line error names the unknown and the accepted ones."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in accepted]
    if unknown or not names:
        raise ConfigError(f"{flag}: unknown {', '.join(unknown) or '(none given)'}; accepted: {', '.join(accepted)}")
    return names


def parse_learners(text: str) -> tuple[str, ...]:
    """A comma-separated list of registered learners (e.g. --learners icl,protonet); a one-line error names the
    accepted ones."""
    return parse_choices(text, learners.names(), "--learners")


def context(experiment: Experiment, args: argparse.Namespace) -> Context:
    seeds = getattr(args, "seeds", None)
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {seeds}")
    return Context(
        args=args,
        scale_name=args.scale,
        scale=experiment.scales[args.scale],
        seed=args.seed,
        root=experiment.run_root(args),
        figures=Path(args.figures),
        progress=not args.no_progress,
        learners=parse_learners(args.learners) if experiment.learners else (),
        seeds=seeds,
    )


def main(experiment: Experiment | type[Experiment], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The skeleton: parse, run (or read the saved results), decide the claims, write the JSON, draw, print."""
    if isinstance(experiment, type):
        experiment = experiment()
    args = parser(experiment).parse_args(argv)
    compile_cache.enable_from(args)
    for module in args.imports or []:
        import_module(module)
    path = Path(args.figures) / f"{experiment.stem(args)}.json"
    if args.from_results:
        doc = saved_results(path)
        doc.pop("claims", None)
        wall_s = doc.pop("wall_s", None)
    else:
        started = time.perf_counter()
        doc = experiment.run(context(experiment, args))
        wall_s = round(time.perf_counter() - started, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**doc, "claims": None, "wall_s": wall_s})  # the results are safe before any analysis
    try:
        decided = claims_lib.records(experiment.claims(doc))
    except (KeyError, IndexError, TypeError, StopIteration) as err:
        if not args.from_results:
            raise
        raise ConfigError(f"--from-results: {path} lacks what {experiment.name}'s claims read ({err!r})") from None
    doc["claims"] = decided
    doc["wall_s"] = wall_s
    write_json(path, doc)
    experiment.draw(doc, path.parent)
    experiment.report(doc)
    if decided:
        print("\nclaims:")
        print("\n".join(claims_lib.summary_lines(decided)))
    timing = "re-decided from the saved results" if args.from_results else f"wall time {wall_s:.0f} s"
    print(f"\n{timing}; wrote {path} and its PNGs")
    return doc


def saved_results(path: Path) -> dict[str, Any]:
    """The results document saved at `path`; a one-line ConfigError if there is none or it is not one."""
    import json

    if not path.exists():
        raise ConfigError(f"--from-results: no saved results at {path}")
    try:
        doc = read_json(path)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--from-results: {path} is not JSON ({err})") from None
    if not isinstance(doc, dict) or "experiment" not in doc:
        raise ConfigError(f"--from-results: {path} is not a results document")
    return doc


def script(experiment: type[Experiment]) -> None:
    """`if __name__ == "__main__": script(Thing)`: bad input as one line and an exit code, as the CLI does."""
    sys.exit(guarded(lambda: main(experiment)))


__all__ = [
    "Context",
    "Experiment",
    "Scale",
    "discover",
    "main",
    "parse_choices",
    "parse_learners",
    "register",
    "script",
]
