"""Figure 4: meta-level curriculum learning speeds up pre-training.

    icl-meta reproduce fig4 --scale cpu
    python -m experiments.fig4_curriculum --scale cpu --seeds 3 [--learners icl,NAME]

A learner (default `icl`, the `gpt2` preset: pre-LN, learned positions, interleaved x/y tokens) is trained on
noiseless linear regression y = x.w in d dimensions, several seeds, with and without Garg et al.'s curriculum on the
non-zero input dimensions (`dims`: active_dims + 1 every `interval` steps from `start_dims` to d; `none`: always d).
Both are tested on the same held-out full-d tasks: held-out squared error and training loss vs step, the first step
with held-out error <= 0.5 d, the per-position error at two checkpoints against least squares (noiseless: max(d - i,
0)), and there the distance from each regression rule (`icl_meta.agreement`; fig4_agreement_SCALE.png). Claims:
`claims` below. --learners: any registered regression learner with trainable parameters (an in-context model gets
the scale's GPT-2 hyper-parameters, another its defaults); a learner other than `icl` has runs ARM_seedS__NAME and
claim ids ending in __NAME. Runs: `--out` (default runs/fig4/SCALE), resumed or reused; results and PNGs:
`--figures`/fig4_curriculum_SCALE.{json,png}.

Scales. smoke: d=3, 7 points, width 16, 1 layer, 30 steps, 2 seeds. cpu: d=8, 17 points, GPT-2 64 wide / 4 layers /
4 heads, batch 64, Adam 1e-3 (200 warm-up steps), dims 2 -> 8 (+1 every 250 steps), 5,000 steps, checkpoints 2,000
and 5,000, 8 seeds per arm, each arm's trained as one program (~70 min on 2 cores; 4 seeds took ~31 min). paper:
d=20, 41 points, GPT-2 256/12/8, Adam 1e-4, dims 5 -> 20 (+1 every 10k), 500k steps, checkpoints 200k and 500k (a GPU
job). Measured results: docs/results.md.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, spec
from icl_meta import agreement as agreement_lib
from icl_meta import evaluate, families, learners, study
from icl_meta.checkpoint import Checkpointer
from icl_meta.claims import Claim
from icl_meta.contracts import Episode, Learner, TaskFamily, TaskSpec
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import require
from icl_meta.plotting import draw_curves, plot_agreement_curves
from icl_meta.runs import RunDir, read_json, results_document, run_config
from icl_meta.train import PREQUENTIAL, TrainConfig

ARMS = ("dims", "none")  # Garg's lr_curri_dim.yaml and lr_curri_0.yaml
FAMILY = "linear_regression"
PLATEAU = 0.9  # held-out error / d above this: the plain run has not left the plateau yet
PRECONDITION_RATIO = 3.0  # the plain runs' plateau must last at least this many curriculum intervals
# Equivalence margins, fixed before the runs: T9 is decided either way, the curriculum helps (the paired interval of
# none - dims lies above 0) or it makes no practical difference (the interval lies inside +-margin).
EQUIVALENT_INTERVALS = 2  # steps to 0.5 d: +-2 curriculum intervals
EQUIVALENT_ERROR = 0.05  # error at the early checkpoint: +-0.05 d
AGREEMENT_LABELS = ("learner", "curriculum", "step", "rule")  # an agreement record's run, less its seed
PAIRED = "paired difference none - dims over seeds (same seed: same initialisation and test set), 95% t interval"


@dataclasses.dataclass(frozen=True)
class CurriculumScale(spec.Scale):
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


SCALES: dict[str, CurriculumScale] = {
    "smoke": CurriculumScale(
        d=3, n=7, width=16, depth=1, heads=2, batch=16, lr=1e-3, warmup=4, steps=30, start_dims=1, interval=8,
        checkpoints=(10, 30), eval_every=10, eval_tasks=64, test_tasks=64, seeds=2,
    ),
    "cpu": CurriculumScale(
        d=8, n=17, width=64, depth=4, heads=4, batch=64, lr=1e-3, warmup=200, steps=5000, start_dims=2, interval=250,
        checkpoints=(2000, 5000), eval_every=100, eval_tasks=1024, test_tasks=1280, seeds=8,
    ),
    "paper": CurriculumScale(
        d=20, n=41, width=256, depth=12, heads=8, batch=64, lr=1e-4, warmup=0, steps=500_000, start_dims=5,
        interval=10_000, checkpoints=(200_000, 500_000), eval_every=1000, eval_tasks=1280, test_tasks=1280, seeds=1,
    ),
}  # fmt: skip


def build(scale: CurriculumScale, task: TaskSpec, name: str) -> Learner:
    """The learner `name` for the regression tasks: an in-context model with the scale's GPT-2 hyper-parameters (for
    `icl`, `common.gpt2`'s model), any other with its defaults; one line where it cannot be trained on them."""
    learners.check_supports(learners.REGISTRY.cls(name), task)  # before building: a classifier may need its classes
    if common.in_context(name):
        gpt2 = {"width": scale.width, "depth": scale.depth, "heads": scale.heads, "positions": max(2 * scale.n, 202)}
        model = learners.build_for(task, name, preset="gpt2", **gpt2)
    else:
        model = learners.build_for(task, name)
    learners.check_supports(model, task)
    require(model.init(jax.random.key(0), task) is not None, f"learner {name!r} has no parameters to pre-train")
    return model


def curriculum(scale: CurriculumScale, arm: str) -> Curriculum | None:
    if arm == "none":
        return None
    return Curriculum.of(active_dims=Stepwise(scale.start_dims, scale.d, 1, scale.interval))


def train_config(scale: CurriculumScale, arm: str, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=scale.steps, batch=scale.batch, n=scale.n, lr=scale.lr, warmup_steps=scale.warmup,
        scan_steps=min(50, scale.eval_every), eval_every=scale.eval_every, eval_tasks=scale.eval_tasks, seed=seed,
        curriculum=curriculum(scale, arm),
    )  # fmt: skip


def run_arm(
    scale: CurriculumScale, model: Learner, arm: str, seeds: Sequence[int], paths: Sequence[Path], test: Episode,
    family: TaskFamily, progress: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Train the seeds' runs of one arm together (one program, `study.train_seed_runs`) to each checkpoint in turn,
    evaluating each seed's per-position curve there (saved in its run directory, so a re-run reuses it after later
    checkpoints have replaced the weights; the parameters are kept too), and the agreement with each regression rule
    at each checkpoint. Returns the curves, the agreement records and each run's history (step, training loss,
    held-out error, active dims)."""
    cfgs = [train_config(scale, arm, seed) for seed in seeds]
    configs = [run_config("fig4_curriculum", model, family, cfg) for cfg in cfgs]
    settings = [{"config": config, "test_tasks": test.x.shape[0]} for config in configs]
    for checkpoint in scale.checkpoints:
        todo = [i for i, path in enumerate(paths) if not common.is_cached(
            path / f"curve_step{checkpoint}.json", {**settings[i], "step": checkpoint})]  # fmt: skip
        if not todo:
            continue
        results = study.train_seed_runs(
            model, family, cfgs[0], [seeds[i] for i in todo], [paths[i] for i in todo], [configs[i] for i in todo],
            progress=progress, until=checkpoint,
        )  # fmt: skip
        for i, result in zip(todo, results, strict=True):
            require(
                int(result.state.step) == checkpoint, f"{paths[i]}: expected step {checkpoint}, at {result.state.step}"
            )
            save_params(paths[i] / f"params_step{checkpoint}", result.state.params)
            values = evaluate.per_position(model, result.state.params, family.spec, test)
            curve = evaluate.curve(
                values, train=FAMILY, test=FAMILY, learner=model.name, metric="squared_error", kind="trained",
                curriculum=arm, seed=seeds[i], step=checkpoint,
            )  # fmt: skip
            common.store(paths[i] / f"curve_step{checkpoint}.json", {**settings[i], "step": checkpoint}, curve)

    def agreement_at(path: Path, seed: int, checkpoint: int) -> list[dict[str, Any]]:
        saved = path / f"params_step{checkpoint}"
        require(saved.exists(), f"{saved} is missing (the run predates saved checkpoint parameters): delete {path}")
        params = load_params(saved, model.init(jax.random.key(0), family.spec))
        return study.agreement_curves(
            model, params, {FAMILY: test}, {FAMILY: family}, curriculum=arm, seed=seed, step=checkpoint
        )

    curves, agreement, histories = [], [], []
    for i, (seed, path) in enumerate(zip(seeds, paths, strict=True)):
        curves += [read_json(path / f"curve_step{c}.json")["value"] for c in scale.checkpoints]
        agree = {**settings[i], "agreement_tasks": study.AGREEMENT_TASKS}
        for c in scale.checkpoints:
            compute = functools.partial(agreement_at, path, seed, c)
            agreement += common.cached(path / f"agreement_step{c}.json", {**agree, "step": c}, compute)
        history = common.history_columns(
            RunDir(path).metrics(), step="step", train_loss="loss", eval_squared_error="eval_squared_error",
            active_dims="curriculum_active_dims",
        )  # fmt: skip
        history["active_dims"] = [scale.d if v is None else v for v in history["active_dims"]]
        histories.append({"learner": model.name, "curriculum": arm, "seed": seed, **history})
    return curves, agreement, histories


def save_params(path: Path, params: Any) -> None:
    """The parameters at a checkpoint, kept apart from the run's own (rolling) checkpoints for later analyses (a
    stale copy is replaced: orbax skips a step it already holds)."""
    shutil.rmtree(path, ignore_errors=True)
    checkpointer = Checkpointer(path, max_to_keep=1)
    checkpointer.save(0, params)
    checkpointer.close()


def load_params(path: Path, like: Any) -> Any:
    checkpointer = Checkpointer(path, create=False)
    params = checkpointer.restore(like)
    checkpointer.close()
    return params


def time_to_quality(history: dict[str, Any], threshold: float) -> int | None:
    """The first evaluated step whose held-out error is <= threshold (None: never within the run)."""
    pairs = zip(history["step"], history["eval_squared_error"], strict=True)
    return next((s for s, e in pairs if e <= threshold), None)


def plateau_steps(history: dict[str, Any], d: int) -> int | None:
    """The first evaluated step after step 0 with held-out error <= PLATEAU d: how long the run sat on the plateau
    (None: it never left it)."""
    pairs = zip(history["step"], history["eval_squared_error"], strict=True)
    return next((s for s, e in pairs if s > 0 and e <= PLATEAU * d), None)


def summarise(curves: list[dict[str, Any]], histories: list[dict[str, Any]], d: int) -> list[dict[str, Any]]:
    """Per learner, arm and seed: time-to-quality (error <= 0.5 d), the plateau (steps above 0.9 d) and the mean
    error over positions >= d (and over all) at each checkpoint."""
    rows = []
    for h in histories:
        run = (h["learner"], h["curriculum"], h["seed"])
        row = {"learner": run[0], "curriculum": run[1], "seed": run[2],
               "steps_to_half_d": time_to_quality(h, 0.5 * d), "plateau_steps": plateau_steps(h, d)}  # fmt: skip
        for c in curves:
            if (c["learner"], c.get("curriculum"), c.get("seed")) == run:
                row[f"error_pos_ge_d_step{c['step']}"] = round(evaluate.mean_over(c, d), 4)
                row[f"error_all_step{c['step']}"] = round(evaluate.mean_over(c), 4)
        rows.append(row)
    return rows


def decisions(claims: Sequence[Claim]) -> list[str]:
    """Per T9 comparison (followed in `claims` by its equivalence claim): the curriculum helps, no practical difference,
    or undecided with the margin that would have decided it -- or not tested where a precondition failed."""
    lines = []
    for claim, equivalent in itertools.pairwise(claims):
        base, _, tag = claim.id.partition("__")
        if equivalent.id != f"{base}_equivalent" + (f"__{tag}" if tag else "") or claim.interval is None:
            continue
        lo, hi = claim.interval
        if claim.held is None:
            verdict = "not tested (a precondition failed)"
        elif claim.held:
            verdict = f"the curriculum helps: {claim.estimate:.4g} [{lo:.4g}, {hi:.4g}]"
        elif hi < 0:
            verdict = f"the curriculum hurts: {claim.estimate:.4g} [{lo:.4g}, {hi:.4g}]"
        elif equivalent.held:
            verdict = f"no practical difference: [{lo:.4g}, {hi:.4g}] lies inside +-{equivalent.threshold:g}"
        else:
            verdict = (f"undecided: [{lo:.4g}, {hi:.4g}] crosses 0 and exceeds +-{equivalent.threshold:g}; a margin "
                       f"of {equivalent.estimate:.4g} would decide it")  # fmt: skip
        lines.append(f"{claim.id}: {verdict}")
    return lines


@spec.register("fig4_curriculum")
class Fig4Curriculum(spec.Experiment):
    """Figure 4: meta-level curriculum learning (active dims) speeds up pre-training on linear regression."""

    figure = "fig4"
    scales = SCALES
    learners = ("icl",)
    takes_seeds = True

    def timed_steps(self, scale: spec.Scale) -> dict[str, tuple[Any, Any, Any, Any]]:
        assert isinstance(scale, CurriculumScale)
        family = families.get(FAMILY, d=scale.d)
        return {"fig4_gpt2": (build(scale, family.spec, "icl"), family, train_config(scale, "none", 0), PREQUENTIAL)}

    def suffix(self, name: str) -> str:
        """'' for the figure's own learner (its run directories and claim ids predate --learners), else '__NAME'."""
        return "" if name == type(self).learners[0] else f"__{name}"

    def run(self, ctx: spec.Context) -> dict[str, Any]:
        scale = ctx.scale
        seeds = range(ctx.seed, ctx.seed + (ctx.seeds or scale.seeds))
        family = families.get(FAMILY, d=scale.d)
        models = {name: build(scale, family.spec, name) for name in ctx.learners}  # refused before any training
        tests = study.sample_test_sets({FAMILY: family}, scale.test_tasks, scale.n, ctx.seed)
        curves, agreement, histories, runs = [], [], [], {}
        for name, model in models.items():
            for arm in ARMS:
                keys = [f"{arm}_seed{seed}{self.suffix(name)}" for seed in seeds]
                print(f"{name}, curriculum {arm}, seeds {list(seeds)} (trained together): {scale.steps} steps -> "
                      f"{ctx.root / keys[0]}, ...")  # fmt: skip
                out = run_arm(scale, model, arm, seeds, [ctx.root / k for k in keys], tests[FAMILY], family,
                              ctx.progress)  # fmt: skip
                curves, agreement, histories = curves + out[0], agreement + out[1], histories + out[2]
                for seed, key in zip(seeds, keys, strict=True):
                    runs[key] = run_config(self.name, model, family, train_config(scale, arm, seed))
        curves += study.reference_curves(tests, {FAMILY: family})  # least squares on the same test tasks
        config = {"scale": ctx.scale_name, "seeds": list(seeds), "settings": scale.settings(), "runs": runs}
        doc = results_document(self.name, config, curves, ctx.seed)
        doc.update(histories=histories, summary=summarise(curves, histories, scale.d))
        closest = agreement_lib.closest_rule(common.seed_means(agreement, AGREEMENT_LABELS))
        doc.update(agreement=agreement, agreement_closest=closest, agreement_s=agreement_lib.seconds(agreement))
        return doc

    def claims(self, doc: dict[str, Any]) -> list[Claim]:
        """Per learner: the plateau precondition, then T9's two comparisons as paired differences none - dims over
        seeds. A run that never reached quality counts as reaching it one evaluation after its last step: for a plain
        run that understates the curriculum's advantage, for a curriculum run it would overstate it (so that claim
        also needs every curriculum run to reach quality)."""
        settings = doc["config"]["settings"]
        never, early = settings["steps"] + settings["eval_every"], settings["checkpoints"][0]
        out = []
        for name in dict.fromkeys(r["learner"] for r in doc["summary"]):
            by = {(r["curriculum"], r["seed"]): r for r in doc["summary"] if r["learner"] == name}
            seeds, tag = sorted({seed for _, seed in by}), self.suffix(name)
            plateau = evaluate.seed_interval(
                [never if (p := by["none", s]["plateau_steps"]) is None else p for s in seeds]
            )
            plateau_holds = Claim(
                f"T9_plateau_precondition{tag}",
                f"{name}: the plain runs' plateau (held-out error > {PLATEAU} d) lasts at least {PRECONDITION_RATIO:g} "
                f"curriculum intervals of {settings['interval']} steps",
                estimate=plateau["mean"] / settings["interval"], compare=">=", threshold=PRECONDITION_RATIO,
                n=len(seeds), method="seed mean of the first evaluated step with error <= 0.9 d (never: steps + "
                "eval_every), in curriculum intervals",
            )  # fmt: skip
            reached = [by["dims", s]["steps_to_half_d"] is not None for s in seeds]
            uncensored = Claim(
                f"T9_curriculum_reaches_half_d{tag}",
                f"{name}: every curriculum run reaches held-out error <= 0.5 d (else its time is censored)",
                estimate=float(np.mean(reached)), compare=">=", threshold=1.0, n=len(seeds),
                method="fraction of the curriculum runs (seeds)",
            )  # fmt: skip
            measures = (
                ("steps_to_half_d", "fewer steps to held-out error <= 0.5 d with the curriculum",
                 lambda row: never if row["steps_to_half_d"] is None else row["steps_to_half_d"], uncensored,
                 EQUIVALENT_INTERVALS * settings["interval"], "steps"),
                (f"error_at_step_{early}", f"lower error over positions >= d at step {early} with the curriculum",
                 lambda row: row[f"error_pos_ge_d_step{early}"], None, EQUIVALENT_ERROR * settings["d"], ""),
            )  # fmt: skip
            paired = Claim(  # one seed gives no interval: the claims are then not tested, rather than false
                f"T9_seeds_for_an_interval{tag}", f"{name}: at least 2 seeds per arm for a paired t interval",
                estimate=float(len(seeds)), compare=">=", threshold=2.0, n=len(seeds), method="seeds per arm",
            )  # fmt: skip
            for measure, statement, value, extra, margin, unit in measures:
                none = np.asarray([value(by["none", s]) for s in seeds], float)
                dims = np.asarray([value(by["dims", s]) for s in seeds], float)
                diff = evaluate.seed_interval(none - dims)
                pre = (paired, plateau_holds) if extra is None else (paired, plateau_holds, extra)
                out.append(Claim(
                    f"T9_{measure}{tag}", f"{name}: {statement}", estimate=diff["mean"], compare=">", threshold=0.0,
                    interval=(diff["lo"], diff["hi"]), n=diff["n"], method=PAIRED, preconditions=pre,
                ))  # fmt: skip
                out.append(Claim(
                    f"T9_{measure}_equivalent{tag}", f"{name}: the curriculum makes no practical difference to "
                    f"{measure.replace('_', ' ')}: none - dims within +-{margin:g}{' ' + unit if unit else ''} (the "
                    "margin fixed before the runs)", estimate=max(abs(diff["lo"]), abs(diff["hi"])), compare="<",
                    threshold=float(margin), n=diff["n"], method=f"the larger magnitude of the ends of the {PAIRED} "
                    "(equivalence: two one-sided tests at 2.5%)", preconditions=pre,
                ))  # fmt: skip
        return out

    def report(self, doc: dict[str, Any]) -> None:
        settings = doc["config"]["settings"]
        d, (first, last) = settings["d"], (settings["checkpoints"][0], settings["checkpoints"][-1])
        print(f"\nd={d}: steps to held-out error <= {0.5 * d:g}; mean squared error over positions >= d")
        print(f"{'learner':<12}{'curriculum':<12}{'seed':>6}{'plateau':>10}{'steps to 0.5d':>16}{f'@{first}':>12}"
              f"{f'@{last}':>12}")  # fmt: skip
        for row in doc["summary"]:
            plateau, reached = (("never" if v is None else v) for v in (row["plateau_steps"], row["steps_to_half_d"]))
            print(f"{row['learner']:<12}{row['curriculum']:<12}{row['seed']:>6}{plateau:>10}{reached:>16}"
                  f"{row[f'error_pos_ge_d_step{first}']:>12.3f}{row[f'error_pos_ge_d_step{last}']:>12.3f}")  # fmt: skip
        print("\nT9 decided? (the paired interval none - dims above 0: the curriculum helps; inside +-margin: no "
              "practical difference)")  # fmt: skip
        for line in decisions(self.claims(doc)):
            print(f"  {line}")
        print(f"\nclosest regression rule to the learner's predictions by context size (normalised squared "
              f"difference, seed mean; the analysis took {doc['agreement_s']:.0f} s when computed)")  # fmt: skip
        for closest in doc["agreement_closest"]:
            cells = " ".join(f"{i}:{rule}" for i, rule in zip(closest["positions"], closest["rule"], strict=True))
            print(f"  {closest['learner']:<10} {closest['curriculum']:<5} step {closest['step']:<7}{cells}")

    def draw(self, doc: dict[str, Any], figures: Path) -> None:
        """fig4_curriculum_SCALE.png: training loss and held-out error vs step (a thin line per seed, the seed mean
        thick; a line style per learner), the fraction of seeds that reached error <= 0.5 d by each step, the
        per-position error at the checkpoints (seed mean, band: min-max over seeds) against least squares;
        fig4_agreement_SCALE.png: the distance from each regression rule."""
        settings = doc["config"]["settings"]
        d, checkpoints, scale = settings["d"], settings["checkpoints"], doc["scale"]
        colors, styles = {"dims": "tab:blue", "none": "tab:orange"}, ("-", "--", ":", "-.")
        names = list(dict.fromkeys(h["learner"] for h in doc["histories"]))
        panels = 3 + len(checkpoints)
        fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 4.0), dpi=110)
        for ax, key, title in (
            (axes[0], "train_loss", "training loss (the curriculum's on its easier tasks)"),
            (axes[1], "eval_squared_error", f"held-out squared error, full {d}-d tasks"),
        ):
            for (i, name), arm in ((pair, arm) for pair in enumerate(names) for arm in ARMS):
                runs = [h for h in doc["histories"] if (h["learner"], h["curriculum"]) == (name, arm)]
                line = {"color": colors[arm], "ls": styles[i % len(styles)]}
                for h in runs:
                    steps, values = zip(*[(s, v) for s, v in zip(h["step"], h[key], strict=True) if v is not None])  # noqa: B905
                    ax.plot(steps, np.asarray(values) / d, lw=0.8, alpha=0.45, **line)
                steps = [s for s, v in zip(runs[0]["step"], runs[0][key], strict=True) if v is not None]
                mean = np.mean([[v for v in h[key] if v is not None] for h in runs], axis=0) / d
                ax.plot(steps, mean, lw=2.0, label=f"{name}, curriculum {arm} ({len(runs)} seeds)", **line)
            if key == "eval_squared_error":
                ax.axhline(0.5, color="0.4", ls=":", lw=1, label="0.5 d (time-to-quality)")
            ax.set(xlabel="training step", ylabel="squared error / d", title=title, ylim=(0, 1.3))
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for (i, name), arm in ((pair, arm) for pair in enumerate(names) for arm in ARMS):
            runs = [h for h in doc["histories"] if (h["learner"], h["curriculum"]) == (name, arm)]
            steps = np.asarray(runs[0]["step"])
            reached = [time_to_quality(h, 0.5 * d) for h in runs]
            fraction = [np.mean([r is not None and r <= step for r in reached]) for step in steps]
            axes[2].step(steps, fraction, where="post", color=colors[arm], ls=styles[i % len(styles)],
                         label=f"{name}, curriculum {arm} ({len(runs)} seeds)")  # fmt: skip
        axes[2].set(xlabel="training step", ylabel="fraction of seeds", ylim=(-0.02, 1.02),
                    title="steps to held-out error <= 0.5 d over seeds")  # fmt: skip
        axes[2].title.set_fontsize(9)
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=7)
        for ax, checkpoint in zip(axes[3:], checkpoints, strict=True):
            trained = [c for c in doc["curves"] if c["kind"] == "trained" and c["step"] == checkpoint]
            records = [{**c, "learner": f"{c['learner']}, curriculum {c['curriculum']}"}
                       for c in common.seed_means(trained, ("learner", "curriculum"))]  # fmt: skip
            records += [c for c in doc["curves"] if c["kind"] == "reference"]
            draw_curves(ax, records, f"step {checkpoint}: per-position error (band: min-max over seeds)")
            positions = records[0]["positions"]
            ax.plot(positions, [max(d - i, 0) for i in positions], "k:", lw=1, label="max(d - i, 0)")
            ax.set_ylim(0, 1.4 * d)
            ax.legend(fontsize=7)
        fig.suptitle(f"Figure 4: meta-level curriculum on active dims, linear regression d={d} (scale {scale})")
        fig.tight_layout()
        fig.savefig(figures / f"fig4_curriculum_{scale}.png")
        plt.close(fig)
        if doc.get("agreement"):
            records = [{**r, "learner": f"{r['learner']}, curriculum {r['curriculum']}, step {r['step']}"}
                       for r in common.seed_means(doc["agreement"], AGREEMENT_LABELS)]  # fmt: skip
            title = f"Figure 4: the learner's distance from each regression rule, d={d} (squared difference / Var(y)"
            plot_agreement_curves(
                records, figures / f"fig4_agreement_{scale}.png", f"{title}; scale {scale})", yscale="log"
            )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return spec.main(Fig4Curriculum, argv)


if __name__ == "__main__":
    spec.script(Fig4Curriculum)
