"""Figure 4: meta-level curriculum learning speeds up pre-training (PAPER.md sections 2.7, 7.2 and 8.5, target T9).

    icl-meta reproduce fig4 --scale cpu
    python -m experiments.fig4_curriculum --scale cpu --seeds 3

A GPT-2-style in-context learner (the `gpt2` preset: pre-LN, learned positions, interleaved x/y tokens, read-out at
the x tokens) is trained on noiseless linear regression y = x.w in d dimensions, with and without Garg et al.'s
curriculum on the number of non-zero input dimensions (`dims`: active_dims grows by 1 every `interval` steps from
`start_dims` to d; `none`: always d). Both are evaluated on the same held-out full-d tasks: the held-out squared error
vs step (every `eval_every` steps), the training loss vs step (the curriculum's is on its easier tasks), and the
per-position squared error at two checkpoints against least squares, whose noiseless error is max(d - i, 0) in
expectation. Time-to-quality: the first evaluated step with held-out error <= 0.5 d (the zero predictor's is d).
Several seeds per arm show the spread. Runs live in `--out` (default runs/fig4/SCALE) and are resumed or reused;
results and PNGs go to `--figures`: fig4_curriculum_SCALE.{json,png}.

Scales. cpu: d=5, 11 points, GPT-2 width 64 / 4 layers / 4 heads, batch 64, Adam 1e-3 with 200 warm-up steps, dims
2 -> 5 (+1 every 250 steps), 2,500 steps, checkpoints 1,000 and 2,500, 3 seeds. paper: the reference's d=20, 41
points, GPT-2 256/12/8, Adam 1e-4, dims 5 -> 20 (+1 every 10k), 500k steps, checkpoints 200k and 500k (a GPU job).

Expected runtime on a 2-core CPU: smoke ~40 s; cpu ~15-25 min (6 runs of 2,500 steps at 10-17 steps/s; measured
1,506 s while another job shared the machine).
Expected result (cpu): both arms leave the plateau (error/d ~1) inside the budget. T9 does NOT hold at this scale
(seeds 0-2, mean over seeds): steps to held-out error <= 0.5 d: dims 1,400 / 1,500 / 1,500, none 1,600 / 1,200 /
1,600 (means equal, 1,467); mean squared error over positions >= d at step 1,000: dims 3.01, none 2.41 (the
curriculum is worse there, 250 steps after it reached d=5); at step 2,500: dims 0.82, none 0.94, with a seed spread
(0.68-1.37 for none) as large as the gap; held-out error/d at the end: dims .37-.41, none .36-.46. At d=5 the plateau
of the plain run is short (~400 steps), so there is little for the curriculum to shorten; the paper's claim is for
d=20 (a plateau of many thousands of steps), which needs the paper scale.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import tasks
from experiments import common, study
from icl_meta import evaluate
from icl_meta.contracts import Episode, TaskFamily
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import require
from icl_meta.plotting import draw_curves
from icl_meta.runs import RunDir, results_document, run_config
from icl_meta.train import TrainConfig, train
from icl_meta.transformer import ICLTransformer

ARMS = ("dims", "none")  # Garg's lr_curri_dim.yaml and lr_curri_0.yaml
FAMILY = "linear_regression"


@dataclasses.dataclass(frozen=True)
class Scale:
    d: int
    n: int
    width: int
    depth: int
    heads: int
    batch: int
    lr: float
    warmup: int
    steps: int
    start_dims: int
    interval: int  # steps per +1 active dim
    checkpoints: tuple[int, ...]  # per-position curves at these steps
    eval_every: int
    eval_tasks: int
    test_tasks: int
    seeds: int


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        d=3, n=7, width=16, depth=1, heads=2, batch=16, lr=1e-3, warmup=4, steps=30, start_dims=1, interval=8,
        checkpoints=(10, 30), eval_every=10, eval_tasks=64, test_tasks=64, seeds=2,
    ),
    "cpu": Scale(
        d=5, n=11, width=64, depth=4, heads=4, batch=64, lr=1e-3, warmup=200, steps=2500, start_dims=2, interval=250,
        checkpoints=(1000, 2500), eval_every=100, eval_tasks=1024, test_tasks=1280, seeds=3,
    ),
    "paper": Scale(
        d=20, n=41, width=256, depth=12, heads=8, batch=64, lr=1e-4, warmup=0, steps=500_000, start_dims=5,
        interval=10_000, checkpoints=(200_000, 500_000), eval_every=1000, eval_tasks=1280, test_tasks=1280, seeds=1,
    ),
}  # fmt: skip


def learner(scale: Scale) -> ICLTransformer:
    return common.gpt2(scale.width, scale.depth, scale.heads, scale.n, positions=max(2 * scale.n, 202))


def curriculum(scale: Scale, arm: str) -> Curriculum | None:
    if arm == "none":
        return None
    return Curriculum.of(active_dims=Stepwise(scale.start_dims, scale.d, 1, scale.interval))


def train_config(scale: Scale, arm: str, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=scale.steps,
        batch=scale.batch,
        n=scale.n,
        lr=scale.lr,
        warmup_steps=scale.warmup,
        scan_steps=min(50, scale.eval_every),
        eval_every=scale.eval_every,
        eval_tasks=scale.eval_tasks,
        seed=seed,
        curriculum=curriculum(scale, arm),
    )


def run_arm(
    scale: Scale, arm: str, seed: int, root: Path, test: Episode, family: TaskFamily, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train one run to each checkpoint in turn, evaluating the per-position curve there (saved in the run
    directory, so a re-run reuses it after later checkpoints have replaced the weights). Returns the curves and
    the run's history (step, training loss, held-out error, active dims)."""
    model, cfg = learner(scale), train_config(scale, arm, seed)
    run = RunDir(root / f"{arm}_seed{seed}")
    config = run_config("fig4_curriculum", model, family, cfg)

    def curve_at(checkpoint: int) -> dict[str, Any]:
        result = train(model, family, cfg, run, config, resume=run.config_path.exists(), progress=progress,
                       until=checkpoint)  # fmt: skip
        require(int(result.state.step) == checkpoint, f"{run.path}: expected step {checkpoint}, at {result.state.step}")
        values = evaluate.per_position(model, result.state.params, family.spec, test)
        return evaluate.curve(
            values, train=FAMILY, test=FAMILY, learner="icl", metric="squared_error", kind="trained",
            curriculum=arm, seed=seed, step=checkpoint,
        )  # fmt: skip

    settings = {"config": config, "test_tasks": test.x.shape[0]}
    curves = [
        common.cached(run.path / f"curve_step{c}.json", {**settings, "step": c}, lambda c=c: curve_at(c))
        for c in scale.checkpoints
    ]
    history = common.history_columns(
        run.metrics(), step="step", train_loss="loss", eval_squared_error="eval_squared_error",
        active_dims="curriculum_active_dims",
    )  # fmt: skip
    history["active_dims"] = [scale.d if v is None else v for v in history["active_dims"]]
    return curves, {"curriculum": arm, "seed": seed, **history}


def time_to_quality(history: dict[str, Any], threshold: float) -> int | None:
    """The first evaluated step whose held-out error is <= threshold (None: never within the run)."""
    return next(
        (s for s, e in zip(history["step"], history["eval_squared_error"], strict=True) if e <= threshold), None
    )


def summarise(curves: list[dict[str, Any]], histories: list[dict[str, Any]], scale: Scale) -> list[dict[str, Any]]:
    """Per arm and seed: time-to-quality (error <= 0.5 d) and the mean error over positions >= d at each checkpoint."""
    rows = []
    for h in histories:
        row = {"curriculum": h["curriculum"], "seed": h["seed"], "steps_to_half_d": time_to_quality(h, 0.5 * scale.d)}
        for c in curves:
            if c.get("curriculum") == h["curriculum"] and c.get("seed") == h["seed"]:
                row[f"error_pos_ge_d_step{c['step']}"] = round(evaluate.mean_over(c, scale.d), 4)
                row[f"error_all_step{c['step']}"] = round(evaluate.mean_over(c), 4)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common.parse(common.parser(__doc__.splitlines()[0], SCALES, seeds=True), argv)
    scale = SCALES[args.scale]
    seeds = range(args.seed, args.seed + (args.seeds or scale.seeds))
    root = common.run_root(args, "fig4")
    t0 = time.perf_counter()
    family = tasks.get(FAMILY, d=scale.d)
    families = {FAMILY: family}
    tests = study.sample_test_sets(families, scale.test_tasks, scale.n, args.seed)
    curves, histories = [], []
    for arm in ARMS:
        for seed in seeds:
            print(f"curriculum {arm}, seed {seed}: {scale.steps} steps -> {root / f'{arm}_seed{seed}'}")
            arm_curves, history = run_arm(scale, arm, seed, root, tests[FAMILY], family, not args.no_progress)
            curves += arm_curves
            histories.append(history)
    curves += study.reference_curves(tests, families)  # least squares on the same test tasks
    summary = summarise(curves, histories, scale)
    config = {
        "scale": args.scale,
        "seeds": list(seeds),
        "settings": dataclasses.asdict(scale),
        "runs": {
            f"{arm}_seed{s}": run_config("fig4_curriculum", learner(scale), family, train_config(scale, arm, s))
            for arm in ARMS
            for s in seeds
        },
    }
    doc = results_document("fig4_curriculum", config, curves, args.seed)
    doc.update(histories=histories, summary=summary)
    common.finish(doc, args.figures, f"fig4_curriculum_{args.scale}", draw, t0)
    print_summary(summary, scale)
    return doc


def print_summary(summary: list[dict[str, Any]], scale: Scale) -> None:
    first, last = scale.checkpoints[0], scale.checkpoints[-1]
    print(f"\nd={scale.d}: steps to held-out error <= {0.5 * scale.d:g}; mean squared error over positions >= d")
    print(f"{'curriculum':<12}{'seed':>6}{'steps to 0.5d':>16}{f'@{first}':>12}{f'@{last}':>12}")
    for row in summary:
        reached = row["steps_to_half_d"]
        print(
            f"{row['curriculum']:<12}{row['seed']:>6}{'never' if reached is None else reached:>16}"
            f"{row[f'error_pos_ge_d_step{first}']:>12.3f}{row[f'error_pos_ge_d_step{last}']:>12.3f}"
        )


def draw(doc: dict[str, Any], figures: Path) -> None:
    """Four panels: training loss and held-out error vs step (one thin line per seed, the seed mean thick), and the
    per-position error at the two checkpoints (seed mean with the min-max band over seeds) against least squares."""
    settings = doc["config"]["settings"]
    d, checkpoints = settings["d"], settings["checkpoints"]
    colors = {"dims": "tab:blue", "none": "tab:orange"}
    fig, axes = plt.subplots(1, 2 + len(checkpoints), figsize=(4.8 * (2 + len(checkpoints)), 4.0), dpi=110)
    for ax, key, title in (
        (axes[0], "train_loss", "training loss (the curriculum's on its easier tasks)"),
        (axes[1], "eval_squared_error", f"held-out squared error, full {d}-d tasks"),
    ):
        for arm in ARMS:
            runs = [h for h in doc["histories"] if h["curriculum"] == arm]
            for h in runs:
                steps, values = zip(
                    *[(s, v) for s, v in zip(h["step"], h[key], strict=True) if v is not None], strict=True
                )
                ax.plot(steps, np.asarray(values) / d, color=colors[arm], lw=0.8, alpha=0.45)
            steps = [s for s, v in zip(runs[0]["step"], runs[0][key], strict=True) if v is not None]
            mean = np.mean([[v for v in h[key] if v is not None] for h in runs], axis=0) / d
            ax.plot(steps, mean, color=colors[arm], lw=2.0, label=f"curriculum {arm} ({len(runs)} seeds)")
        if key == "eval_squared_error":
            ax.axhline(0.5, color="0.4", ls=":", lw=1, label="0.5 d (time-to-quality)")
        ax.set(xlabel="training step", ylabel="squared error / d", title=title, ylim=(0, 1.3))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, checkpoint in zip(axes[2:], checkpoints, strict=True):
        records = []
        for arm in ARMS:
            runs = [c for c in doc["curves"] if c.get("curriculum") == arm and c["step"] == checkpoint]
            means = np.asarray([c["mean"] for c in runs])
            records.append(
                {"learner": f"icl, curriculum {arm}", "metric": "squared_error", "positions": runs[0]["positions"],
                 "mean": means.mean(0).tolist(), "lo": means.min(0).tolist(), "hi": means.max(0).tolist()}
            )  # fmt: skip
        records += [c for c in doc["curves"] if c["kind"] == "reference"]
        draw_curves(ax, records, f"step {checkpoint}: per-position error (band: min-max over seeds)")
        positions = records[0]["positions"]
        ax.plot(positions, [max(d - i, 0) for i in positions], "k:", lw=1, label="max(d - i, 0)")
        ax.set_ylim(0, 1.4 * d)
        ax.legend(fontsize=7)
    fig.suptitle(f"Figure 4: meta-level curriculum on active dims, linear regression d={d} (scale {doc['scale']})")
    fig.tight_layout()
    fig.savefig(figures / f"fig4_curriculum_{doc['scale']}.png")
    plt.close(fig)


if __name__ == "__main__":
    common.script(main)
