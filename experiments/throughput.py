"""Training throughput: the reference's literal per-prefix loop vs the `prefix` and `causal` protocols, side by side.

    icl-meta bench                                # both presets, K in 1 10 100, then 1 -> 2 -> 4 devices (26 min CPU)
    python experiments/throughput.py --quick      # K in 1 10, shorter timings (~12 min on a 2-core CPU)
    python experiments/throughput.py --scale paper --presets gpt2   # the full GPT-2 preset (a GPU job)

Every row times the real training step (`train.train_steps`: tasks sampled inside the compiled step, forward,
backward, Adam) with K steps fused by `lax.scan`, after compilation, blocking on each call as the trainer does:

- `loop`: the reference's algorithm, one bidirectional pass of the same model over [context 0..i-1, query i] for
  every prefix length i in the loss, summed into one loss (here unrolled inside one compiled step; the reference
  runs the passes from Python and reaches ~0.6 steps/s, ~3,600 task-positions/s at batch 128 on a 2-core CPU);
- `prefix`: the paper-faithful protocol as one batched call with prefix lengths bucketed by rank;
- `causal`: one pass over [context ; queries] (the fast protocol);
- `interleaved` (GPT-2 preset only): Garg et al.'s one causal pass over x_1, y_1, x_2, ...

Presets. `paper`: the reference ICLer (linear attention, 3,432 parameters) on prototype tasks, d=2, C=2, N=50,
batch 128, loss over positions 2..49. `gpt2`: the GPT-2-style learner on linear regression, at `--scale cpu` the
Figure 4 size (width 64, 4 layers, 4 heads; d=5, N=11, batch 64), at `--scale paper` the full preset (256 wide,
12 layers, 8 heads; d=20, N=41, batch 64). Fields per row: steps_per_s, task_positions_per_s (batch x positions
in the loss x steps/s), compile_s, flops_per_step (XLA's cost analysis of one compiled step), peak_fraction
(achieved FLOP/s over a float32 matmul peak measured here with a 2048^3 matmul; 4096^3 on a GPU), speedup_vs_loop.
Device scaling: the `causal` and `prefix` rows of the paper preset at K=10 with the task batch sharded over 1, 2, 4
devices (on CPU virtual devices, in a child process started with XLA_FLAGS=--xla_force_host_platform_device_count).
Results: a table on stdout and `figures/throughput.json` (`figures/throughput_gpu.json` on a GPU), with the machine,
device and versions.

Expected result (2-core CPU, K=100, task-positions/s): paper preset loop 12,170, prefix 11,465 (0.94x), causal
50,810 (4.2x; 5.0x at K=1); causal 1.6x faster on 4 virtual devices than on 1. GPT-2 preset loop 7,482, prefix 1.1x,
causal 2.9x, interleaved 2.7x. The paper preset runs at 4-8% of the matmul peak (width 6: memory traffic and per-op
overhead), the GPT-2 preset at 32-40%. README "Throughput" discusses the bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

import tasks
from icl_meta.contracts import LearnerParams, TaskSpec
from icl_meta.errors import ConfigError, require
from icl_meta.parallel import data_mesh, init_distributed
from icl_meta.runs import provenance, write_json
from icl_meta.timing import compile_steps
from icl_meta.train import PREQUENTIAL, TrainConfig
from icl_meta.transformer import ICLTransformer, ModelConfig, make_tokens, preset


@dataclasses.dataclass(frozen=True)
class Preset:
    family: str
    family_args: dict[str, Any]
    model: str
    model_args: dict[str, Any]
    batch: int
    n: int
    loss_start: int
    protocols: tuple[str, ...]


PRESETS = {
    "smoke": {  # seconds: for the tests
        "paper": Preset(
            "prototype", {"d": 2, "num_classes": 2}, "paper", {"depth": 2}, 8, 8, 2, ("loop", "prefix", "causal")
        ),
        "gpt2": Preset(
            "linear_regression",
            {"d": 3},
            "gpt2",
            {"width": 16, "depth": 1, "heads": 2, "positions": 12},
            8,
            6,
            0,
            ("loop", "prefix", "causal", "interleaved"),
        ),
    },
    "cpu": {
        "paper": Preset("prototype", {"d": 2, "num_classes": 2}, "paper", {}, 128, 50, 2, ("loop", "prefix", "causal")),
        "gpt2": Preset(
            "linear_regression",
            {"d": 5},
            "gpt2",
            {"width": 64, "depth": 4, "heads": 4, "positions": 22},
            64,
            11,
            0,
            ("loop", "prefix", "causal", "interleaved"),
        ),
    },
    "paper": {
        "paper": Preset("prototype", {"d": 2, "num_classes": 2}, "paper", {}, 128, 50, 2, ("loop", "prefix", "causal")),
        "gpt2": Preset(
            "linear_regression", {"d": 20}, "gpt2", {}, 64, 41, 0, ("loop", "prefix", "causal", "interleaved")
        ),
    },
}


@dataclasses.dataclass(frozen=True)
class LiteralLoop:
    """The reference's per-prefix algorithm behind the Learner protocol: for each prefix length i in `positions`
    (static), one bidirectional pass over [context 0..i-1, query i], read at the query. Same model, parameters and
    outputs as the `prefix` protocol; about N/2 times the token work of one pass."""

    config: ModelConfig
    positions: tuple[int, ...]
    name: ClassVar[str] = "loop"

    @property
    def model(self) -> ICLTransformer:
        return ICLTransformer(dataclasses.replace(self.config, protocol="prefix"))

    def init(self, key: jax.Array, spec: TaskSpec) -> LearnerParams:
        return self.model.init(key, spec)

    def predict(self, params: LearnerParams, x: jax.Array, y: jax.Array, positions: jax.Array | None = None):
        require(positions is None or positions.shape == (len(self.positions),), "the loop's positions are static")
        net = self.model.network(params)
        ctx, qry = make_tokens(x, y, params.spec)
        outs = [
            net(jnp.concatenate([ctx[:, :i], qry[:, i : i + 1]], 1), jnp.ones((1, i + 1), bool))[:, -1]
            for i in self.positions  # the literal loop: one pass per prefix length
        ]
        out = jnp.stack(outs, axis=1)
        return out[..., 0] if params.spec.is_regression else jax.nn.log_softmax(out, axis=-1)


def learner_for(p: Preset, protocol: str):
    if protocol == "loop":
        return LiteralLoop(preset(p.model, **p.model_args), tuple(range(p.loss_start, p.n)))
    return ICLTransformer(preset(p.model, **p.model_args, protocol=protocol))


def matmul_peak(size: int) -> float:
    """FLOP/s of a float32 [size, size] @ [size, size] matmul, best of several timed calls."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def measure(
    name: str, p: Preset, protocol: str, k: int, peak: float, min_time: float, devices: int = 1, flops: float = 0.0
) -> dict[str, Any]:
    """One row; `flops` per step from an earlier K=1 compile, else from this one (K must be 1 then)."""
    family = tasks.get(p.family, **p.family_args)
    cfg = TrainConfig(batch=p.batch, n=p.n, loss_start=p.loss_start)
    require(p.batch % devices == 0, f"batch {p.batch} must be divisible by the {devices} devices")
    steps = compile_steps(learner_for(p, protocol), family, cfg, k, data_mesh(devices))
    flops = flops or steps.flops_per_step()
    steps_per_s, compile_s = steps.steps_per_second(min_time), steps.compile_s
    return {
        "preset": name,
        "protocol": protocol,
        "scan_steps": k,
        "devices": devices,
        "batch": p.batch,
        "n": p.n,
        "steps_per_s": round(steps_per_s, 3),
        "task_positions_per_s": round(steps_per_s * p.batch * (p.n - p.loss_start)),  # from the unrounded steps/s
        "compile_s": round(compile_s, 2),
        "flops_per_step": flops,
        "peak_fraction": round(flops * steps_per_s / peak, 5),
    }


def single_step_flops(p: Preset, protocol: str) -> float:
    cfg = TrainConfig(batch=p.batch, n=p.n, loss_start=p.loss_start)
    family = tasks.get(p.family, **p.family_args)
    return compile_steps(learner_for(p, protocol), family, cfg, 1).flops_per_step()


def protocol_rows(args: argparse.Namespace, peak: float) -> list[dict[str, Any]]:
    jobs = [
        (name, protocol, k)
        for name in args.presets
        for protocol in PRESETS[args.scale][name].protocols
        if protocol in args.protocols
        for k in sorted(args.scan_steps)
    ]
    rows: list[dict[str, Any]] = []
    for name, protocol, k in tqdm(jobs, unit="row", dynamic_ncols=True, disable=args.no_progress):
        p = PRESETS[args.scale][name]
        same = [r for r in rows if r["preset"] == name and r["protocol"] == protocol]
        flops = same[0]["flops_per_step"] if same else (0.0 if k == 1 else single_step_flops(p, protocol))
        rows.append(measure(name, p, protocol, k, peak, args.min_time, flops=flops))
        tqdm.write(format_row(rows[-1]))
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """task-positions/s over the literal loop's at the same preset, K and device count (None without a loop row)."""
    for row in rows:
        base = [
            r
            for r in rows
            if r["protocol"] == "loop" and all(r[f] == row[f] for f in ("preset", "scan_steps", "devices"))
        ]
        row["speedup_vs_loop"] = (
            round(row["task_positions_per_s"] / base[0]["task_positions_per_s"], 2) if base else None
        )


def scaling_rows(args: argparse.Namespace, peak: float) -> list[dict[str, Any]]:
    """The paper preset at K=10 on 1, 2, 4, ... devices, measured in one process."""
    p = PRESETS[args.scale]["paper"]
    rows = []
    for protocol in ("causal", "prefix"):
        flops = single_step_flops(p, protocol)
        for devices in args.devices:
            rows.append(measure("paper", p, protocol, 10, peak, args.min_time, devices=devices, flops=flops))
            print(format_row(rows[-1]), flush=True)
    for row in rows:
        one = next(r for r in rows if r["protocol"] == row["protocol"] and r["devices"] == args.devices[0])
        row["scaling_vs_fewest_devices"] = round(row["steps_per_s"] / one["steps_per_s"], 2)
    return rows


def scaling_in_child(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the scaling rows in a child process whose CPU exposes max(devices) virtual devices (the flag must be set
    before JAX starts); on an accelerator, in this process over its real devices."""
    if jax.default_backend() != "cpu" or os.environ.get("ICL_META_BENCH_CHILD"):
        require(max(args.devices) <= jax.device_count(), f"only {jax.device_count()} devices for --devices")
        return scaling_rows(args, matmul_peak(args.peak_size))
    out = Path(args.out).with_suffix(".scaling.tmp.json")
    env = dict(os.environ, ICL_META_BENCH_CHILD="1")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(args.devices)}"
    command = [sys.executable, "-m", "experiments.throughput", "--scaling-only", "--worker-out", str(out)]
    command += ["--scale", args.scale, "--min-time", str(args.min_time), "--peak-size", str(args.peak_size)]
    command += ["--devices", *map(str, args.devices)]
    subprocess.run(command, env=env, check=True)
    rows = json.loads(out.read_text())
    out.unlink()
    return rows


SEED_COUNTS = (1, 4, 8)


def seed_models(scale: str) -> dict[str, tuple[Any, Any, TrainConfig, Any]]:
    """The models of the seeds rows: (learner, family, config, objective) of the paper preset (causal and prefix),
    and every experiment's `timed_steps` (Figure 4's GPT-2 model, Figure 6's M2-ICL meta-step, the multimodal LM's
    ICL-tuning step, ...) at its `smoke` scale for `--scale smoke`, else at its `cpu` scale (the sizes trained with
    many seeds here)."""
    from experiments import spec

    p = PRESETS[scale]["paper"]
    paper_cfg = TrainConfig(batch=p.batch, n=p.n, loss_start=p.loss_start)
    models: dict[str, tuple[Any, Any, TrainConfig, Any]] = {
        f"paper_{protocol}": (learner_for(p, protocol), tasks.get(p.family, **p.family_args), paper_cfg, PREQUENTIAL)
        for protocol in ("causal", "prefix")
    }
    figure_scale = "smoke" if scale == "smoke" else "cpu"
    for group in spec.discover().values():
        for experiment in group:
            if figure_scale in experiment.scales:
                models.update(experiment().timed_steps(experiment.scales[figure_scale]))
    return models


def seed_rows(args: argparse.Namespace, peak: float, k: int = 10) -> list[dict[str, Any]]:
    """Per model and S in `--seed-counts` (default `SEED_COUNTS`): S seeds trained as one program
    (`train.train_steps_seeds`, K=10 fused steps), measured side by side in this process. `step_s` is the wall time
    of one step of all S seeds together, `per_seed_step_s` that over S, `per_seed_vs_one` the latter over the S=1
    row's; `bytes_per_step` (XLA's bytes accessed), `bytes_per_s` and `temp_mib` (the working set) show whether a
    step is bound by memory traffic."""
    rows: list[dict[str, Any]] = []
    models = seed_models(args.scale)
    unknown = sorted(set(args.seed_models or ()) - set(models))
    require(not unknown, f"--seed-models: unknown {', '.join(unknown)}; accepted: {', '.join(models)}")
    jobs = [(name, seeds) for name in (args.seed_models or models) for seeds in args.seed_counts]
    for name, seeds in tqdm(jobs, unit="row", dynamic_ncols=True, disable=args.no_progress):
        learner, family, cfg, objective = models[name]
        single = compile_steps(learner, family, cfg, 1, objective=objective, seeds=seeds)
        flops, traffic, temp = single.flops_per_step(), single.bytes_per_step(), single.temp_bytes()
        steps = compile_steps(learner, family, cfg, k, objective=objective, seeds=seeds)
        step_s = 1.0 / steps.steps_per_second(args.min_time)
        one = next((r for r in rows if r["model"] == name and r["seeds"] == 1), None)
        rows.append({
            "row": "seeds", "model": name, "seeds": seeds, "scan_steps": k, "batch": cfg.batch, "n": cfg.n,
            "step_s": round(step_s, 6), "per_seed_step_s": round(step_s / seeds, 6),
            "per_seed_vs_one": None if one is None else round(step_s / seeds / one["per_seed_step_s"], 3),
            "compile_s": round(steps.compile_s, 2), "flops_per_step": flops,
            "peak_fraction": round(flops / step_s / peak, 5), "bytes_per_step": traffic,
            "temp_mib": round(temp / 2**20, 1), "bytes_per_s": round(traffic / step_s),
        })  # fmt: skip
        tqdm.write(format_seed_row(rows[-1]))
    return rows


def format_seed_row(row: dict[str, Any]) -> str:
    ratio = "" if row["per_seed_vs_one"] is None else f"  per seed x{row['per_seed_vs_one']:.2f} of S=1"
    return (
        f"seeds {row['model']:<14} S={row['seeds']:<2} {1e3 * row['step_s']:9.2f} ms/step (all seeds) "
        f"{1e3 * row['per_seed_step_s']:8.2f} ms/seed-step  compile {row['compile_s']:5.1f} s "
        f"{100 * row['peak_fraction']:6.2f}% of peak{ratio}"
    )


# The reference implementation (PyTorch, one pass per prefix, batch 128), run unmodified on this project's 2-core CPU
# (measured once, not re-run): its training speed and its wall time to 0.925 mean accuracy over positions 2..49 on
# prototype tasks.
REFERENCE = {"task_positions_per_s": 7047, "time_to_quality_s": 200.0}
QUALITY = 0.925
# Time-to-quality recipes (icl-meta train options): the fast one the README recommends, and the paper-faithful ones.
RECIPES = {
    "fast": ["--protocol", "causal", "--batch", "64", "--lr", "1e-2", "--eval-every", "25", "--scan-steps", "25"],
    "paper": ["--positions-per-step", "8", "--batch", "64", "--lr", "3e-3", "--eval-every", "50", "--scan-steps", "50"],
}
# the paper-faithful recipe on one position per stratum, in 4 truncated passes (Figure 2's cpu scale)
RECIPES["strata"] = [*RECIPES["paper"], "--position-sampling", "stratified", "--position-groups", "4"]


def time_to_quality_rows(recipes: list[str], steps: int) -> list[dict[str, Any]]:
    """Wall seconds from process start to the first (full) evaluation at 0.925 on prototype tasks, compilation and
    evaluations included: `icl-meta train ... --stop-at 0.925` as a child process, first with an empty compilation
    cache, then again with the cache the first run filled."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            cache = Path(tmp) / f"cache_{recipe}"
            for state in ("cold", "warm"):
                out = Path(tmp) / f"{recipe}_{state}"
                command = [sys.executable, "-m", "experiments.cli", "--compile-cache", str(cache), "train", "--task",
                           "prototype", *RECIPES[recipe], "--steps", str(steps), "--stop-at", str(QUALITY),
                           "--no-progress", "--out", str(out)]  # fmt: skip
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                wall = time.perf_counter() - t0
                last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
                rows.append({
                    "row": "time_to_quality", "recipe": recipe, "cache": state, "options": RECIPES[recipe],
                    "wall_s": round(wall, 1), "steps": last["step"], "accuracy": round(last["eval_accuracy"], 4),
                    "reached": last["eval_accuracy"] >= QUALITY,
                    "vs_reference": round(REFERENCE["time_to_quality_s"] / wall, 1),
                })  # fmt: skip
                tqdm.write(format_quality(rows[-1]))
    return rows


def format_quality(row: dict[str, Any]) -> str:
    reached = f"{row['accuracy']:.3f} at step {row['steps']}" + ("" if row["reached"] else " (not reached)")
    return (
        f"time to {QUALITY}: {row['recipe']:<6} recipe, {row['cache']} compile cache: {row['wall_s']:6.1f} s "
        f"({reached}; the reference takes ~{REFERENCE['time_to_quality_s']:.0f} s: x{row['vs_reference']})"
    )


COMPILE_CHILD = """
import sys, time
from icl_meta import compile_cache
compile_cache.enable(sys.argv[1])
import tasks
from experiments.throughput import PRESETS, learner_for
from icl_meta.timing import compile_steps
from icl_meta.train import TrainConfig
p = PRESETS[sys.argv[2]]["paper"]
cfg = TrainConfig(batch=p.batch, n=p.n, loss_start=p.loss_start)
print(compile_steps(learner_for(p, sys.argv[3]), tasks.get(p.family, **p.family_args), cfg, 1).compile_s)
"""


def compile_rows(scale: str, protocols: list[str]) -> list[dict[str, Any]]:
    """The paper preset's train step (one step, batch 128, every position) compiled in a fresh process with an empty
    persistent compilation cache, then in another process with the cache the first one filled."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in protocols:
            times = {}
            for state in ("cold", "warm"):
                command = [sys.executable, "-c", COMPILE_CHILD, str(Path(tmp) / protocol), scale, protocol]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                times[state] = round(float(out.strip().splitlines()[-1]), 2)
            rows.append(
                {"row": "compile", "preset": "paper", "protocol": protocol, **{f"{k}_s": v for k, v in times.items()}}
            )
            tqdm.write(
                f"compile paper/{protocol}: {times['cold']:.1f} s with an empty cache, {times['warm']:.2f} s warm"
            )
    return rows


def format_row(row: dict[str, Any]) -> str:
    speedup = row.get("speedup_vs_loop")
    return (
        f"{row['preset']:<6} {row['protocol']:<12} K={row['scan_steps']:<4} dev={row['devices']} "
        f"{row['steps_per_s']:9.2f} steps/s {row['task_positions_per_s']:>10,} task-pos/s "
        f"compile {row['compile_s']:6.1f} s  {row['flops_per_step'] / 1e6:9.1f} MFLOP/step "
        f"{100 * row['peak_fraction']:6.2f}% of peak" + (f"  x{speedup} loop" if speedup is not None else "")
    )


def machine() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=tuple(PRESETS), default="cpu", help="the GPT-2 preset's size (default cpu)")
    parser.add_argument("--presets", nargs="+", choices=("paper", "gpt2"), default=["paper", "gpt2"])
    parser.add_argument("--protocols", nargs="+", default=["loop", "prefix", "causal", "interleaved"])
    parser.add_argument("--scan-steps", nargs="+", type=int, default=[1, 10, 100], help="K steps per compiled call")
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4], help="device counts of the scaling rows")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per row (default 3)")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size of the peak (2048 CPU, 4096 GPU)")
    parser.add_argument("--quick", action="store_true", help="K in 1 10 and 1 s per row")
    parser.add_argument("--no-scaling", action="store_true", help="skip the device-scaling rows")
    parser.add_argument("--no-quality", action="store_true", help="skip the time-to-quality and compile-cache rows")
    parser.add_argument("--no-seeds", action="store_true", help="skip the seeds-as-a-batch-axis rows")
    parser.add_argument("--seed-counts", nargs="+", type=int, default=list(SEED_COUNTS), help="S of the seeds rows")
    parser.add_argument("--seed-models", nargs="+", default=None, help="models of the seeds rows (default all)")
    parser.add_argument(
        "--seeds-only", action="store_true",
        help="only the seeds rows (and the peak), merged into an existing --out (its other rows kept)",
    )  # fmt: skip
    parser.add_argument("--recipes", nargs="+", choices=tuple(RECIPES), default=list(RECIPES), help="time-to-quality")
    parser.add_argument("--quality-steps", type=int, default=2000, help="step budget of a time-to-quality run")
    parser.add_argument("--scaling-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() first (multi-host)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default figures/throughput.json (_gpu on a GPU)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scan_steps, args.min_time = [1, 10], 1.0
    for name, values in (("--scan-steps", args.scan_steps), ("--devices", args.devices),
                         ("--seed-counts", args.seed_counts)):  # fmt: skip
        if min(values) < 1:
            raise ConfigError(f"{name} must be integers >= 1, got {values}")
    unknown = sorted(set(args.protocols) - {"loop", "prefix", "causal", "interleaved"})
    if unknown:
        raise ConfigError(f"unknown protocol(s) {', '.join(unknown)}; accepted: loop, prefix, causal, interleaved")
    args.devices, args.seed_counts = sorted(set(args.devices)), sorted(set(args.seed_counts))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.distributed:
        init_distributed()
    gpu = jax.default_backend() == "gpu"
    args.peak_size = args.peak_size or (4096 if gpu else 2048)
    args.out = args.out or Path("figures/throughput_gpu.json" if gpu else "figures/throughput.json")
    if args.scaling_only:
        write_json(args.worker_out, scaling_rows(args, matmul_peak(args.peak_size)))
        return
    t0 = time.perf_counter()
    jax.config.update("jax_enable_compilation_cache", False)  # the rows time real compiles
    if args.seeds_only:
        merge_seed_rows(args, t0)
        return
    quality = [] if args.no_quality else time_to_quality_rows(args.recipes, args.quality_steps)
    compiles = [] if args.no_quality else compile_rows(args.scale, ["causal", "prefix"])
    peak = matmul_peak(args.peak_size)
    print(f"{machine()['device']}: float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({args.peak_size}^3)", flush=True)
    rows = protocol_rows(args, peak)
    scaling = [] if args.no_scaling else scaling_in_child(args)
    seeds = [] if args.no_seeds else seed_rows(args, peak)
    print("\n" + "\n".join([*map(format_quality, quality), *map(format_row, rows + scaling)]))
    print("\n".join(map(format_seed_row, seeds)))
    document = {
        "experiment": "throughput",
        "command": " ".join(["python experiments/throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "scale": args.scale,
        "presets": {name: dataclasses.asdict(PRESETS[args.scale][name]) for name in args.presets},
        "peak_flops_per_s": peak,
        "peak_matmul_size": args.peak_size,
        "machine": machine(),
        "reference": REFERENCE,
        "time_to_quality": quality,
        "compile": compiles,
        "rows": rows,
        "scaling": scaling,
        "seeds": seeds,
        "runtime_s": round(time.perf_counter() - t0, 1),
        "provenance": provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, document)
    print(f"wrote {args.out} ({document['runtime_s']:.0f} s)")


def merge_seed_rows(args: argparse.Namespace, t0: float) -> None:
    """--seeds-only: measure the seeds rows (with this run's own matmul peak) and store them, with that peak, the
    machine and the time, under "seeds" in --out, keeping its other rows."""
    peak = matmul_peak(args.peak_size)
    print(f"{machine()['device']}: float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({args.peak_size}^3)", flush=True)
    rows = seed_rows(args, peak)
    document = json.loads(args.out.read_text()) if args.out.exists() else {"experiment": "throughput"}
    document["seeds"] = rows
    document["seeds_run"] = {"peak_flops_per_s": peak, "peak_matmul_size": args.peak_size, "machine": machine(),
                             "runtime_s": round(time.perf_counter() - t0, 1), "provenance": provenance()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, document)
    print(f"wrote the seeds rows to {args.out} ({document['seeds_run']['runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
