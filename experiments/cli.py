"""`icl-meta`: list the task families, learners and experiments, train a learner, evaluate a saved run, reproduce an
experiment, measure throughput.

Bad input ends with one line `icl-meta: error: ...` naming the problem and the accepted values (exit 2);
a training failure such as a non-finite loss ends the same way (exit 1), leaving earlier files intact.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_meta import compile_cache

if TYPE_CHECKING:
    from icl_meta.contracts import Episode, TaskFamily
    from icl_meta.study import SavedRun


def parse_value(text: str) -> Any:
    """`3` -> 3, `0.5` -> 0.5, `True` -> True, `None` -> None, `a,b` -> ("a", "b"), anything else a string."""
    if "," in text and not text.strip().startswith(("(", "[")):
        return tuple(parse_value(part) for part in text.split(",") if part)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    from icl_meta.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icl-meta", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import a module first (e.g. one that registers task families outside tasks/), repeatable",
    )
    compile_cache.add_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="task families with their parameters, learners and model presets")

    train = sub.add_parser("train", help="meta-train a learner on a task family")
    train.add_argument("--task", required=True, help="task family name (see `icl-meta list`)")
    train.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="a task hyper-parameter, repeatable")
    train.add_argument("--learner", default="icl", help="learner name (default icl)")
    train.add_argument("--preset", help="model preset of a learner built from presets, e.g. icl (default: paper)")
    train.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="override a model/learner field")
    train.add_argument(
        "--protocol", choices=("causal", "prefix", "interleaved"), help="ICL context protocol (default: the preset's)"
    )
    train.add_argument("--attention", choices=("linear", "softmax"), help="ICL attention kind (default: the preset's)")
    for name, kind, default, text in (
        ("steps", int, 4000, "training steps"),
        ("batch", int, 64, "tasks per step"),
        ("n", int, 50, "examples per task sequence"),
        ("lr", float, 3e-3, "Adam learning rate"),
        (
            "loss-start",
            int,
            None,
            "first position in the loss and the reported mean; default the family's (the reference's)",
        ),
        ("loss-stop", int, None, "end (exclusive) of the loss positions; default n"),
        ("positions-per-step", int, None, "random subset of loss positions per step; default all"),
        ("position-groups", int, 1, "stratified: loss passes over truncated sequences (faster for prefix and MAML)"),
        ("scan-steps", int, 50, "steps fused into one compiled call"),
        ("eval-every", int, 500, "steps between evaluations and checkpoints"),
        ("eval-tasks", int, 2048, "held-out tasks of the last (full) evaluation"),
        ("probe-tasks", int, 512, "held-out tasks of the evaluations before the last"),
        ("probe-positions", int, 16, "positions of the evaluations before the last, spread over the loss range"),
        ("stop-at", float, None, "stop once the held-out metric reaches this (accuracy >=, squared error <=)"),
        ("seed", int, 0, "seed of every random stream"),
        ("grad-clip", float, None, "global gradient-norm clip; default none (as the reference)"),
        ("warmup-steps", int, 0, "linear learning-rate warm-up from 0"),
    ):
        train.add_argument(f"--{name}", type=kind, default=default, help=f"{text} (default {default})")
    train.add_argument(
        "--position-sampling", choices=("uniform", "stratified"), default="uniform",
        help="how --positions-per-step draws: any distinct positions, or one per equal stratum (default uniform)",
    )  # fmt: skip
    train.add_argument(
        "--curriculum",
        action="append",
        metavar="NAME=START:END:INC:INTERVAL",
        help="a meta-level curriculum on a task parameter or the context length n, e.g. active_dims=5:20:1:10000 "
        "(Garg et al.'s); repeatable",
    )
    train.add_argument(
        "--seeds", default=None, metavar="S,S,...",
        help="train these seeds together, as one program (a seed axis), each in --out/seedS (instead of --seed)",
    )  # fmt: skip
    train.add_argument("--out", required=True, type=Path, help="run directory (with --seeds: one per seed inside)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--devices", type=int, default=None, help="shard the task batch over this many devices")
    train.add_argument(
        "--distributed", action="store_true", help="join a multi-process job first (jax.distributed.initialize)"
    )
    train.add_argument(
        "--coordinator", metavar="HOST:PORT", help="with --distributed: the coordinator (default: the cluster's)"
    )
    train.add_argument("--num-processes", type=int, help="with --distributed: processes in the job")
    train.add_argument("--process-id", type=int, help="with --distributed: this process's id, 0..N-1")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="evaluate a saved run on any task family with the same d and C")
    ev.add_argument("run", type=Path, help="run directory written by `icl-meta train`")
    ev.add_argument("--task", help="task family (default: the training family)")
    ev.add_argument("--task-arg", action="append", metavar="KEY=VALUE", help="a task hyper-parameter, repeatable")
    ev.add_argument("--tasks", type=int, default=2048, help="held-out tasks (default 2048)")
    ev.add_argument("--n", type=int, default=None, help="examples per sequence (default: as trained)")
    ev.add_argument("--seed", type=int, default=1, help="seed of the evaluation set (default 1)")
    ev.add_argument("--out", type=Path, default=None, help="results JSON (default RUN/eval_TASK.json)")
    ev.add_argument(
        "--agreement",
        action="store_true",
        help="also the learner's per-position agreement with each closed-form rule (the 'agreement' rule set): "
        "under 'agreement' in the JSON, with a summary, and a heat map JSON_agreement.png",
    )
    rep = sub.add_parser(
        "reproduce",
        help="run an experiment (a figure's, or any registered one); its own options (--learners, --seeds, ...) "
        "follow: `python -m experiments.fig2_single --help` lists them",
    )
    rep.add_argument("figure", help="which: fig2, fig3, fig4, fig6, unsupervised, multimodal, or one from --import")
    rep.add_argument(
        "--scale",
        choices=("smoke", "cpu", "paper"),
        default="cpu",
        help="smoke (seconds), cpu (minutes on a laptop) or paper (GPU)",
    )
    rep.add_argument("--seed", type=int, default=0, help="seed of the runs and test sets (default 0)")
    rep.add_argument("--out", type=Path, default=None, help="run directories (default runs/FIGURE/SCALE)")
    rep.add_argument("--figures", type=Path, default=Path("figures"), help="results and PNGs (default figures/)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    rep.add_argument(
        "--from-results", action="store_true", help="run nothing: re-decide the claims and redraw from the saved JSON"
    )
    cl = sub.add_parser("claims", help="the claims of saved results JSONs, one line each, checked against the schema")
    cl.add_argument("results", nargs="+", type=Path, help="results JSON files (e.g. figures/*.json)")
    # Every option after `bench` goes to experiments/throughput.py (`icl-meta bench --help` lists them).
    sub.add_parser(
        "bench", help="training throughput of the context protocols (experiments/throughput.py)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra
    elif args.command == "reproduce":
        args.experiment_args = extra  # the experiment's own options (--learners, --seeds, ...), checked by it
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "devices", None) is not None and args.devices > 1:
        _force_host_devices(args.devices)  # must precede JAX's initialisation
    commands = {
        "list": cmd_list,
        "train": cmd_train,
        "eval": cmd_eval,
        "reproduce": cmd_reproduce,
        "claims": cmd_claims,
        "bench": cmd_bench,
    }

    def run() -> None:
        from experiments.spec import import_module

        compile_cache.enable_from(args)
        for module in args.imports or []:
            import_module(module)
        commands[args.command](args)

    from icl_meta.errors import guarded

    return guarded(run)


def compile_cache_argv(args: argparse.Namespace) -> list[str]:
    """The compile-cache options again, for a figure script run from this command."""
    if args.no_compile_cache:
        return ["--no-compile-cache"]
    return ["--compile-cache", str(args.compile_cache)] if args.compile_cache else []


def _force_host_devices(count: int) -> None:
    """On CPU, expose `count` virtual devices so the batch can be sharded over the cores."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def parse_curriculum(items: list[str] | None) -> Any:
    """`["active_dims=5:20:1:10000"]` -> Curriculum.of(active_dims=Stepwise(5, 20, 1, 10000)); None without items."""
    from icl_meta.curriculum import Curriculum, Stepwise
    from icl_meta.errors import ConfigError

    if not items:
        return None
    schedules = {}
    for name, text in parse_assignments(items, "--curriculum").items():
        parts = str(text).split(":")
        values = [parse_value(p) for p in parts]
        if len(parts) != 4 or not all(isinstance(v, int | float) for v in values):
            raise ConfigError(f"--curriculum {name}= expects START:END:INC:INTERVAL numbers, got {text!r}")
        schedules[name] = Stepwise(*values)
    return Curriculum.of(**schedules)


def cmd_list(args: argparse.Namespace) -> None:
    from experiments import spec
    from icl_meta import families, learners
    from icl_meta.transformer import PRESETS

    print("task families:")
    for name in families.names():
        fields = ", ".join(f"{f}: {t} = {d!r}" for f, t, d in families.describe(name))
        print(f"  {name:<18} {families.summary(name)}\n  {'':<18} {fields}")
    print("learners:", ", ".join(learners.names()))
    print("experiments (icl-meta reproduce NAME):")
    for name, group in spec.discover().items():
        print(f"  {name:<18} " + "; ".join(cls.description() for cls in group))
    print("icl presets:")
    for name, cfg in PRESETS.items():
        print(f"  {name:<18} " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()))


def cmd_train(args: argparse.Namespace) -> None:
    from icl_meta import families, learners, study
    from icl_meta.errors import ConfigError
    from icl_meta.parallel import data_mesh, init_distributed
    from icl_meta.report import write_report
    from icl_meta.runs import RunDir, run_config
    from icl_meta.train import TrainConfig, train_seeds

    if args.distributed:
        import jax

        init_distributed(args.coordinator, args.num_processes, args.process_id)
        if jax.process_count() > 1:  # the step shards over processes; the run directory does not yet
            raise ConfigError(
                "--distributed: the sharded training step runs across processes (icl_meta.parallel, "
                "docs/reference.md), but train's evaluation and checkpoints are single-process: use --devices"
            )
    family = families.get(args.task, **parse_assignments(args.task_arg, "--task-arg"))
    hparams = parse_assignments(args.model_arg, "--model-arg")
    given = (("preset", args.preset), ("protocol", args.protocol), ("attention", args.attention))
    hparams.update({k: v for k, v in given if v})  # a learner that takes no such option says so
    learner = learners.build_for(family.spec, args.learner, **hparams)
    learners.check_supports(learner, family.spec)
    cfg = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        n=args.n,
        lr=args.lr,
        loss_start=family.reference_loss_start if args.loss_start is None else args.loss_start,
        loss_stop=args.loss_stop,
        positions_per_step=args.positions_per_step,
        position_sampling=args.position_sampling,
        position_groups=args.position_groups,
        scan_steps=args.scan_steps,
        eval_every=args.eval_every,
        eval_tasks=args.eval_tasks,
        probe_tasks=args.probe_tasks,
        probe_positions=args.probe_positions,
        stop_at=args.stop_at,
        seed=args.seed,
        grad_clip=args.grad_clip,
        warmup_steps=args.warmup_steps,
        curriculum=parse_curriculum(args.curriculum),
    )
    mesh = data_mesh(args.devices) if args.devices is not None else None
    seeds = [cfg.seed] if args.seeds is None else parse_seeds(args.seeds)
    seed_cfgs = [dataclasses.replace(cfg, seed=seed) for seed in seeds]
    runs = [RunDir(args.out)] if args.seeds is None else [RunDir(args.out / f"seed{seed}") for seed in seeds]
    configs = [run_config("train", learner, family, c) for c in seed_cfgs]
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(run.locked())
        results = train_seeds(learner, family, cfg, seeds, runs, configs, resume=args.resume,
                              progress=not args.no_progress, mesh=mesh)  # fmt: skip
        for run, config, seed_cfg, result in zip(runs, configs, seed_cfgs, results, strict=True):
            curves = [result.curve, *study.reference_curves({family.name: result.episode}, {family.name: family})]
            write_report(run.results_path, "train", config, curves, seed_cfg.seed, (cfg.loss_start, cfg.stop))
    for seed_cfg, result in zip(seed_cfgs, results, strict=True):
        last = result.history[-1]
        metric = next(k for k in last if k.startswith("eval_"))
        print(f"seed {seed_cfg.seed}, step {last['step']}: {metric} {last[metric]:.4f} in {last['wall_s']:.0f} s")


def parse_seeds(text: str) -> list[int]:
    """--seeds 0,1,2,3 -> [0, 1, 2, 3] (distinct integers)."""
    from icl_meta.errors import ConfigError

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes integers separated by commas, e.g. 0,1,2,3; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds takes distinct integers, e.g. 0,1,2,3; got {text!r}")
    return seeds


def cmd_eval(args: argparse.Namespace) -> None:
    from icl_meta import evaluate, families, study
    from icl_meta.report import write_report
    from icl_meta.train import EVAL_STREAM, stream_key

    saved = study.load_run(args.run)
    overrides = parse_assignments(args.task_arg, "--task-arg")
    family = families.evaluation_family(saved.family, args.task, dict(overrides))
    n = args.n or saved.cfg.n
    tests = {family.name: family.sample(stream_key(args.seed, EVAL_STREAM), args.tasks, n)}
    labels: dict[str, Any] = {"sigma": family.sigma, "step": saved.step}
    curves = evaluate.curves_on(saved.learner, saved.params, tests, {family.name: family.spec},
                                train=saved.family.name, **labels)  # fmt: skip
    curves += study.reference_curves(tests, {family.name: family}, **labels)
    loss = (saved.cfg.loss_start, saved.cfg.stop)
    extra = eval_agreement(saved, family, tests, labels, loss) if args.agreement else None
    suffix = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    out = Path(args.out or Path(args.run) / f"eval_{family.name}{suffix}.json")
    report = {"train": saved.config, "task": {"name": family.name, **family.hparams()}, "tasks": args.tasks, "n": n}
    write_report(out, "eval", report, curves, args.seed, loss, extra)
    if extra is not None:
        from icl_meta.agreement import summary_lines
        from icl_meta.plotting import plot_agreement

        summarised = extra["agreement_summary"]
        start, stop = summarised["positions"]
        title = f"{saved.learner.name} trained on {saved.family.name}: agreement over positions {start}-{stop - 1}"
        png = plot_agreement(summarised["rows"], out.with_name(f"{out.stem}_agreement.png"), title,
                             optimal={family.name: family.optimal_rule})  # fmt: skip
        print("\n".join(summary_lines(summarised)))
        print(f"wrote the agreement analysis to {out} ('agreement') and {png}")


def eval_agreement(
    saved: SavedRun, family: TaskFamily, tests: dict[str, Episode], labels: dict[str, Any], loss: tuple[int, int]
) -> dict[str, Any]:
    """The saved learner's agreement with every rule of the "agreement" rule set on the whole test set: the records
    and their summary over the training loss's positions (clipped to the test sequences), results.json's extra keys."""
    from icl_meta import study

    everything = len(tests[family.name].y)
    found = study.agreement_analysis(saved.learner, saved.params, tests, {family.name: family}, loss,
                                     num_tasks=everything, train=saved.family.name, **labels)  # fmt: skip
    return {"agreement": found["agreement"], "agreement_summary": found["agreement_summary"][family.name]}


def cmd_reproduce(args: argparse.Namespace) -> None:
    from experiments import spec
    from icl_meta.errors import ConfigError

    found = spec.discover()
    if args.figure not in found:
        raise ConfigError(f"reproduce: unknown experiment {args.figure!r}; accepted: {', '.join(found)}")
    argv = ["--scale", args.scale, "--seed", str(args.seed), "--figures", str(args.figures)]
    argv += ["--out", str(args.out)] if args.out is not None else []
    argv += ["--no-progress"] if args.no_progress else []
    argv += ["--from-results"] if args.from_results else []
    argv += compile_cache_argv(args) + args.experiment_args
    for cls in found[args.figure]:
        if args.scale not in cls.scales:
            raise ConfigError(f"{cls.name}: no scale {args.scale!r}; accepted: {', '.join(cls.scales)}")
        print(f"== {cls.name} {' '.join(argv)}")
        spec.main(cls, argv)


def cmd_claims(args: argparse.Namespace) -> None:
    """Each file's claims as one line each (holds / does not hold / not tested); a file whose records depart from
    the schema, or whose `held` is not what its numbers give, is an error naming it."""
    from icl_meta import claims
    from icl_meta.errors import ConfigError
    from icl_meta.runs import read_json

    for path in args.results:
        if not path.exists():
            raise ConfigError(f"claims: no file {path}")
        doc = read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
            print(f"{path}: no claims (not an experiment's results)")
            continue
        records = doc["claims"]
        found = [problem for record in records for problem in claims.problems(record)]
        if found:
            raise ConfigError(f"claims: {path}: {'; '.join(found[:3])}")
        verdicts = [r["held"] for r in records]
        kinds = ((True, "hold"), (False, "do not"), (None, "untested"))
        counts = ", ".join(f"{verdicts.count(v)} {w}" for v, w in kinds)
        print(f"{path}: {len(records)} claims ({counts})")
        print("\n".join(claims.summary_lines(records)))


def cmd_bench(args: argparse.Namespace) -> None:
    from experiments import throughput

    throughput.main(args.bench_args)


if __name__ == "__main__":
    sys.exit(main())
