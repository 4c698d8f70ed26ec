"""Multimodal in-context learning and ICL instruction tuning: the analog of "Towards Multimodal In-Context Learning
for Vision & Language Models" on the suite's own learner, in the synthetic two-modality world of `tasks/multimodal.py`
(SEEDS_EXTENSIONS sections 2, 4 and 5).

    icl-meta reproduce multimodal --scale cpu
    python -m experiments.multimodal --scale smoke --stages text,align,base,icl --benchmarks fs,zs

Training stages (each a run of the ordinary trainer with `MaskedNextToken`, started from its parent's checkpoint,
in runs/multimodal/SCALE/seedS/STAGE; a second call reuses or resumes them):

    text              stage A: a text LM that is a text in-context learner (text QA and text ICL episodes)
    align             stage B1: the image projector alone, on captions (LLaVA's alignment), from text
    base              stage B2: full fine-tuning on single-image QA, from align -> VLM-base (LLaVA-1.5's analog)
    interleaved_pP    B2 plus interleaved image-caption "web" sequences, P of them sharing a concept: VLM-interleaved
    icl               stage C from base: ICL instruction tuning (MC + QA + captions, coherent shots, 25% replay of
                      B2 data, curriculum: k <= 1 coarse MC first) -> VLM-ICL
    icl_*             its ablations: incoherent, no_replay, replay50, mc, qa, caption, mc_qa (single/partial mixes),
                      uniform (no curriculum), query_loss (loss on the query answer only), steps25/steps50 (less
                      ICL-tuning data)

Benchmarks (held-out concepts: the five benchmark families; fs, induction, remap and zs also as their text twin):
fs (2-way 1-shot MC with pseudo-names, accuracy averaged over the original and reversed option order), fs_2shot,
fs_4shot (8 demonstrations: more than tuning's 4), fs_4way, induction (Q_what: the demos reveal the attribute asked),
remap (open-ended pseudo-names), zs (single-image QA: zero-shot retention). Diagnostics on fs: shuffled demo images,
flipped demo answers (does the prediction follow?), recency (prediction = the last demo's answer) and option-order
bias. Greedy decoding: the argmax over the whole vocabulary at the answer position, batched and jitted.

Results: figures/multimodal_SCALE.json (tidy records per model, seed, benchmark, family, order and variant; the
tables; the four comparisons of SEEDS_EXTENSIONS 4.4 stated as held or not with t intervals over seeds; the text
twin and the relevance sweep; steps/s per stage and the evaluation share) and PNGs: ICL gain per benchmark family,
the data-mix table, zero-shot retention against replay, the premise panel (text twin, relevance sweep).

Expected runtime on 2 CPU cores: smoke ~1 min; cpu ~27 min (the text LM once, 11 stages x 3 seeds); cpu with
--ablations adds the full grid at one seed (~8 min); paper: wider models and longer stages, a GPU job.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import baselines
import tasks
from experiments import common, study
from icl_meta import evaluate
from icl_meta.contracts import Learner
from icl_meta.curriculum import Curriculum, Stepwise
from icl_meta.errors import ConfigError
from icl_meta.runs import RunDir, results_document, run_config
from icl_meta.sequence_loss import MaskedNextToken
from icl_meta.train import TEST_STREAM, TrainConfig, stream_key, train
from tasks.multimodal import BENCHMARK_FAMILIES, MultimodalConversations

FIGURE = "multimodal"
TRAIN_N = 40  # every training family fits (tasks.multimodal's min_length)
BENCH_N = 72  # every benchmark fits (fs_4shot: 50 tokens): one compiled prediction for all of them
CHUNK = 500  # episodes per compiled prediction
FAMILIES = tuple(BENCHMARK_FAMILIES)
MC_BENCHMARKS = ("fs", "fs_2shot", "fs_4shot", "fs_4way", "fs_tuning")
TWINS = ("fs", "induction", "remap", "zs")  # benchmarks also run as their text twin (the modality gap)
# The claims are evaluated on fs (paper B's benchmark) and on task induction (added after a first run in which only
# induction met the precondition; docs/results.md), each beside its preconditions.
CLAIM_BENCHMARKS = ("fs", "induction")
PRECONDITION = 0.6  # fs accuracy that counts as learning in context (chance 0.5)
ICL_BENCHMARKS = ("fs", "fs_4way", "induction", "remap")  # the held-out ICL score of the data-mix table

BENCHMARKS: dict[str, dict[str, Any]] = {
    "fs": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0),
    "fs_2shot": dict(mix=(("mc", 1.0),), ordered=True, shots_max=2, pseudo_fraction=1.0),
    "fs_4shot": dict(mix=(("mc", 1.0),), ordered=True, shots_max=4, pseudo_fraction=1.0),
    "fs_4way": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, ways=4, pseudo_fraction=1.0),
    "induction": dict(mix=(("qa", 1.0),), shots_min=2, shots_max=2, pseudo_fraction=0.0),
    "remap": dict(mix=(("qa", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0),
    "zs": dict(mix=(("image_qa", 1.0),), shots_max=0),
    # not held out: fs on the tuning concepts, the in-distribution check that ICL tuning taught ICL at all
    "fs_tuning": dict(mix=(("mc", 1.0),), ordered=True, shots_max=1, pseudo_fraction=1.0, concepts="tuning"),
}
VARIANTS = {"none": {}, "shuffle_images": {"shuffle_images": True}, "flip_answers": {"flip_answers": True}}

# ---------------------------------------------------------------------------------------------------------------------
# Stages


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage: its data (a multimodal family), its parent stage (None: from scratch), the weight groups
    it trains (None: all), its steps and curriculum."""

    name: str
    parent: str | None
    family: MultimodalConversations
    steps: int
    trainable: tuple[str, ...] | None = None
    curriculum: Curriculum | None = None


@dataclasses.dataclass(frozen=True)
class Scale:
    width: int
    depth: int
    heads: int
    batch: int
    lr: float
    steps: dict[str, int]  # text, align, base, interleaved, icl
    episodes: int  # benchmark episodes per family (a multiple of 100)
    seeds: int
    stages: tuple[str, ...]  # trained at every seed
    ablations: tuple[str, ...]  # with --ablations, at the first seed
    evals: int = 4  # evaluations per stage
    benchmarks: tuple[str, ...] = tuple(BENCHMARKS)  # the default of --benchmarks


# The text LM is trained once (with the first seed) and shared: every VLM of paper B starts from one pretrained LLM.
SHARED = ("text",)
MAIN = ("text", "align", "base", "interleaved_p0", "interleaved_p0.1", "interleaved_p0.3")
MAIN += ("icl", "icl_incoherent", "icl_no_replay", "icl_mc", "icl_qa", "icl_caption")
ABLATIONS = ("icl_mc_qa", "icl_replay50", "icl_uniform", "icl_query_loss", "icl_steps25", "icl_steps50")

SCALES: dict[str, Scale] = {
    "smoke": Scale(
        width=32, depth=1, heads=2, batch=16, lr=2e-3,
        steps={"text": 30, "align": 10, "base": 20, "interleaved": 10, "icl": 30}, episodes=100, seeds=1,
        stages=("text", "align", "base", "interleaved_p0", "icl", "icl_incoherent"), ablations=(), evals=1,
        benchmarks=("fs", "zs", "fs_tuning"),
    ),
    "cpu": Scale(
        width=64, depth=2, heads=4, batch=32, lr=1e-3,
        steps={"text": 15000, "align": 300, "base": 600, "interleaved": 600, "icl": 1000}, episodes=300, seeds=3,
        stages=MAIN, ablations=ABLATIONS,
    ),
    "paper": Scale(
        width=128, depth=3, heads=4, batch=64, lr=5e-4,
        steps={"text": 5000, "align": 1000, "base": 3000, "interleaved": 3000, "icl": 4000}, episodes=500, seeds=3,
        stages=MAIN + ABLATIONS, ablations=(),
    ),
}  # fmt: skip


def world_family(**fields: Any) -> MultimodalConversations:
    family = tasks.get("multimodal", **fields)
    assert isinstance(family, MultimodalConversations)
    return family


def icl_curriculum(steps: int) -> Curriculum:
    """C1 for the first half (k <= 1 demonstrations, coarse groups, MC only), then C2 (k <= 4, the full mix with
    fine-grained groups and pseudo-names). The schedule is this suite's choice: paper B does not publish its own."""
    half = max(steps // 2, 1)
    return Curriculum.of(
        shot_limit=Stepwise(1, 4, 3, half), mc_focus=Stepwise(1.0, 0.0, -1.0, half), fine=Stepwise(0.0, 0.5, 0.5, half)
    )


def interleaved(p_rel: float) -> MultimodalConversations:
    """B2's single-image QA plus web-like interleaved sequences, a fraction `p_rel` of them sharing a concept."""
    return world_family(mix=(("image_qa", 1.0), ("interleaved", 1.0)), concepts="all", p_rel=p_rel)


def stage_table(scale: Scale) -> dict[str, Stage]:
    """Every stage by name (the scale sets the steps)."""
    s = scale.steps
    icl_mix = (("mc", 1.0), ("qa", 1.0), ("icl_caption", 1.0))
    icl = world_family(mix=icl_mix, replay=0.25)
    table = [
        Stage("text", None, world_family(mix=(("image_qa", 1.0), ("mc", 1.0), ("qa", 1.0)), concepts="all", text=True),
              s["text"]),
        Stage("align", "text", world_family(mix=(("caption", 1.0),), concepts="all"), s["align"], ("projector",)),
        Stage("base", "align", world_family(mix=(("image_qa", 1.0),), concepts="all"), s["base"]),
        *(Stage(f"interleaved_p{p:g}", "align", interleaved(p), s["interleaved"]) for p in (0.0, 0.1, 0.3)),
    ]  # fmt: skip
    variants = {
        "icl": icl,
        "icl_incoherent": dataclasses.replace(icl, coherent=False),
        "icl_no_replay": dataclasses.replace(icl, replay=0.0),
        "icl_replay50": dataclasses.replace(icl, replay=0.5),
        "icl_mc": dataclasses.replace(icl, mix=(("mc", 1.0),)),
        "icl_qa": dataclasses.replace(icl, mix=(("qa", 1.0),)),
        "icl_caption": dataclasses.replace(icl, mix=(("icl_caption", 1.0),)),
        "icl_mc_qa": dataclasses.replace(icl, mix=(("mc", 1.0), ("qa", 1.0))),
        "icl_uniform": icl,
        "icl_query_loss": dataclasses.replace(icl, demo_loss=False),
        "icl_steps25": icl,
        "icl_steps50": icl,
    }
    fractions = {"icl_steps25": 0.25, "icl_steps50": 0.5}
    for name, family in variants.items():
        steps = max(int(s["icl"] * fractions.get(name, 1.0)), 1)
        curriculum = None if name == "icl_uniform" or family.mix == (("icl_caption", 1.0),) else icl_curriculum(steps)
        if family.mix == (("qa", 1.0),) and curriculum is not None:  # no MC to focus on: only the shots grow
            curriculum = Curriculum.of(shot_limit=Stepwise(1, 4, 3, max(steps // 2, 1)))
        table.append(Stage(name, "base", family, steps, curriculum=curriculum))
    return {stage.name: stage for stage in table}


def learner(scale: Scale) -> Learner:
    return baselines.get("multimodal_lm", width=scale.width, depth=scale.depth, heads=scale.heads)


def train_config(stage: Stage, scale: Scale, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=stage.steps, batch=scale.batch, n=TRAIN_N, lr=scale.lr, eval_every=max(stage.steps // scale.evals, 1),
        eval_tasks=256, probe_tasks=None, probe_positions=None, scan_steps=50, seed=seed, curriculum=stage.curriculum,
    )  # fmt: skip


def with_ancestors(names: Sequence[str], table: dict[str, Stage]) -> list[str]:
    """`names` and the stages they start from, parents first."""
    order: list[str] = []

    def visit(name: str) -> None:
        parent = table[name].parent
        if parent is not None:
            visit(parent)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def stage_dir(root: Path, name: str, seed: int) -> Path:
    """Where a stage's run lives: root/shared/NAME for the shared text LM, else root/seedSEED/NAME."""
    return root / "shared" / name if name in SHARED else root / f"seed{seed}" / name


def check_parents(requested: Sequence[str], table: dict[str, Stage], root: Path, seed: int) -> None:
    """Every parent of a requested stage is requested too, or has a checkpoint (else a one-line error, before
    anything is trained or written)."""
    for name in requested:
        parent = table[name].parent
        if parent is None or parent in requested:
            continue
        checkpoints = stage_dir(root, parent, seed) / "checkpoints"
        if not (checkpoints.exists() and any(checkpoints.iterdir())):
            raise ConfigError(
                f"stage {name} starts from stage {parent}, which has no checkpoint in {checkpoints.parent}: "
                f"add {parent} to --stages (or train it first)"
            )


def train_stage(
    stage: Stage, scale: Scale, root: Path, seed: int, base_seed: int, progress: bool
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume, or load) `stage` from its parent's last checkpoint; a shared stage with `base_seed`."""
    lm = learner(scale)
    cfg = train_config(stage, scale, base_seed if stage.name in SHARED else seed)
    objective = MaskedNextToken(trainable=stage.trainable)
    init = None if stage.parent is None else study.load_run(stage_dir(root, stage.parent, seed)).params
    run = RunDir(stage_dir(root, stage.name, seed))
    config = {**run_config(FIGURE, lm, stage.family, cfg), "stage": stage.name, "parent": stage.parent}
    t0 = time.perf_counter()
    result = train(
        lm, stage.family, cfg, run, config, resume=run.config_path.exists(), progress=progress,
        objective=objective, init_params=init,
    )  # fmt: skip
    last = result.history[-1]
    info = {
        "stage": stage.name, "parent": stage.parent, "seed": seed, "steps": int(result.state.step),
        "train_wall_s": last["wall_s"], "call_s": round(time.perf_counter() - t0, 1),
        "steps_per_s": round(stage.steps / last["wall_s"], 1) if last["wall_s"] else None,
        "query_accuracy": last.get("objective_query_accuracy"), "answer_accuracy": last["eval_accuracy"],
    }  # fmt: skip
    return result.state.params, info


# ---------------------------------------------------------------------------------------------------------------------
# Benchmarks


def benchmark_family(name: str) -> MultimodalConversations:
    """The benchmark `name` (optionally `_text`, its text twin) over the five held-out families (episode b of family
    b mod 5)."""
    base, text = (name[: -len("_text")], True) if name.endswith("_text") else (name, False)
    return world_family(**{"concepts": "benchmark", "text": text, **BENCHMARKS[base]})


def benchmark_names(selected: Sequence[str]) -> list[str]:
    """The selected benchmarks and the text twins of those in TWINS."""
    return [n for b in selected for n in ((b, f"{b}_text") if b in TWINS else (b,))]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_variant(family: MultimodalConversations, key: jax.Array, episodes: int, flags: jax.Array) -> Any:
    """One compiled sampler per benchmark for every option order and perturbation (traced flags, paired episodes)."""
    variant = copy.copy(family)
    for name, flag in zip(("reverse_options", "shuffle_images", "flip_answers"), flags, strict=True):
        object.__setattr__(variant, name, flag)
    return variant.sample(key, episodes, BENCH_N)


@functools.partial(jax.jit, static_argnums=(0,))
def greedy_answers(lm: Learner, params: Any, x_BLD: jax.Array, query_B: jax.Array) -> jax.Array:
    """The greedy answer token of each episode: the argmax over the vocabulary at its answer position."""
    logp_BLV = lm.predict(params, x_BLD, jnp.zeros(x_BLD.shape[:2], jnp.int32))
    return jnp.argmax(jnp.take_along_axis(logp_BLV, query_B[:, None, None], 1)[:, 0], -1)


@dataclasses.dataclass
class BenchmarkSet:
    """The episodes of one benchmark (one option order and variant), shared by every model of a seed."""

    benchmark: str
    order: str
    variant: str
    x: np.ndarray
    params: dict[str, np.ndarray]


def benchmark_sets(names: Sequence[str], episodes: int, seed: int) -> list[BenchmarkSet]:
    sets = []
    for name in names:
        family = benchmark_family(name)
        # one key per benchmark, whatever else is selected, shared with its text twin (paired episodes)
        key = jax.random.fold_in(stream_key(seed, TEST_STREAM), list(BENCHMARKS).index(name.removesuffix("_text")))
        orders = ("original", "reversed") if name.split("_text")[0] in MC_BENCHMARKS else ("original",)
        variants = tuple(VARIANTS) if name == "fs" else ("none",)
        for order in orders:
            for variant in variants if order == "original" else ("none",):
                flags = VARIANTS[variant] | {"reverse_options": order == "reversed"}
                values = jnp.asarray(
                    [flags.get(k, False) for k in ("reverse_options", "shuffle_images", "flip_answers")]
                )
                ep = _sample_variant(family, key, len(FAMILIES) * episodes, values)
                sets.append(BenchmarkSet(name, order, variant, np.asarray(ep.x), jax.tree.map(np.asarray, ep.params)))
    return sets


def evaluate_model(lm: Learner, params: Any, sets: Sequence[BenchmarkSet], **labels: Any) -> list[dict[str, Any]]:
    """Tidy records: accuracy, agreement with the demonstrations' labelling and with the last demo, per family."""
    records = []
    for s in sets:
        pred = np.concatenate(
            [np.asarray(greedy_answers(lm, params, s.x[i : i + CHUNK], s.params["query"][i : i + CHUNK]))
             for i in range(0, len(s.x), CHUNK)]
        )  # fmt: skip
        groups = list(enumerate(FAMILIES)) if (s.params["family"] >= 0).all() else [(-1, "tuning")]
        for f, family in groups:  # the held-out families, or one group of tuning concepts
            rows = s.params["family"] == f
            records.append({
                **labels, "benchmark": s.benchmark, "order": s.order, "variant": s.variant, "family": family,
                "accuracy": float(np.mean(pred[rows] == s.params["answer"][rows])),
                "follows_demos": float(np.mean(pred[rows] == s.params["demo_answer"][rows])),
                "recency": float(np.mean(pred[rows] == s.params["last_demo"][rows])),
                "letter_a": float(np.mean(pred[rows] == tasks.multimodal.LETTER0)),
                "episodes": int(rows.sum()),
            })  # fmt: skip
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Analysis


def accuracy(records: Sequence[dict[str, Any]], model: str, benchmark: str, family: str | None = None) -> np.ndarray:
    """Per seed: the accuracy of `model` on `benchmark` (variant none), averaged over option orders and over the
    families (or of one `family`) -> [seeds]."""
    rows = [
        r for r in records
        if r["model"] == model and r["benchmark"] == benchmark and r["variant"] == "none"
        and (family is None or r["family"] == family)
    ]  # fmt: skip
    seeds = sorted({r["seed"] for r in rows})
    return np.asarray([np.mean([r["accuracy"] for r in rows if r["seed"] == s]) for s in seeds])


def interval(values: Any) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in evaluate.seed_interval(values).items()}


def table(records: Sequence[dict[str, Any]], models: Sequence[str], benchmarks: Sequence[str]) -> dict[str, Any]:
    """model -> benchmark -> mean over seeds, families and orders, with the t interval over seeds."""
    return {m: {b: interval(accuracy(records, m, b)) for b in benchmarks} for m in models}


def _held(lo: float, mean: float, above: float = 0.0) -> bool:
    """The interval's bound is above `above`; with one seed there is no interval, and the mean decides."""
    return bool((lo if np.isfinite(lo) else mean) > above)


def preconditions(records: Sequence[dict[str, Any]], models: Sequence[str], benchmark: str) -> dict[str, Any]:
    """Whether the learners learn `benchmark` in context at this scale, the precondition of every comparison about
    ICL on it: the text LM on its text twin (stage A's premise) and VLM-ICL on its tuning-concept version where one
    exists (stage C taught it at all), each mean >= PRECONDITION."""
    out: dict[str, Any] = {}
    present = {r["benchmark"] for r in records}
    checks = (("text_lm_learns_in_context", "text", f"{benchmark}_text"),
              ("icl_tuning_teaches_icl", "icl", f"{benchmark}_tuning"))  # fmt: skip
    for name, model, twin in checks:
        if model in models and twin in present:
            value = interval(accuracy(records, model, twin))
            out[name] = {"model": model, "benchmark": twin, "accuracy": value, "held": value["mean"] >= PRECONDITION}
    return out


def claims(records: Sequence[dict[str, Any]], models: Sequence[str], benchmark: str = "fs") -> dict[str, Any]:
    """The four comparisons of SEEDS_EXTENSIONS 4.4 on `benchmark`, each held or not, with t intervals over seeds."""
    out: dict[str, Any] = {}
    present = {r["benchmark"] for r in records}
    bases = [m for m in models if m == "base" or m.startswith("interleaved_p")]
    b = benchmark
    if bases and "zs" in present:
        # 1. the base models fail in context (interval below PRECONDITION) while zero-shot is strong (mean >= 0.8)
        rows = {m: {b: interval(accuracy(records, m, b)), "zs": interval(accuracy(records, m, "zs"))} for m in bases}
        low = [m for m in bases if m in ("base", "interleaved_p0")] or bases
        held = all(not _held(rows[m][b]["hi"], rows[m][b]["mean"], PRECONDITION) for m in low)
        held = held and all(rows[m]["zs"]["mean"] >= 0.8 for m in low)
        out["base_fails_in_context"] = {
            "statement": f"VLM-base and VLM-interleaved (p_rel 0) fail on {b} (t interval below {PRECONDITION}) while "
            "zero-shot single-image QA is >= 0.8",
            "held": bool(held), "models": rows,
        }  # fmt: skip
    if "icl" in models and bases:
        best = max(bases, key=lambda m: float(accuracy(records, m, b).mean()))
        gains = {f: interval(accuracy(records, "icl", b, f) - accuracy(records, best, b, f)) for f in FAMILIES}
        means = [g["mean"] for g in gains.values()]
        out["icl_gains_every_family"] = {
            "statement": f"VLM-ICL beats the best base model ({best}) on {b} in every held-out family (interval above "
            "0) and by >= 0.10 on average",
            "held": all(_held(g["lo"], g["mean"]) for g in gains.values()) and float(np.mean(means)) >= 0.10,
            "best_base": best, "gains": gains,
            "max_gain": round(max(means), 4), "mean_gain": round(float(np.mean(means)), 4),
            "other_benchmarks": {
                other: interval(accuracy(records, "icl", other) - accuracy(records, best, other))
                for other in ("fs", "fs_2shot", "fs_4shot", "fs_4way", "induction", "remap")
                if other in present and other != b
            },
        }  # fmt: skip
    if {"icl", "base"} <= set(models) and "zs" in present:
        drop = interval(accuracy(records, "icl", "zs") - accuracy(records, "base", "zs"))
        entry = {"replay_zs_change": drop}
        held = drop["mean"] > -0.02
        statement = "with replay zero-shot QA drops < 2 points"
        if "icl_no_replay" in models:
            no = interval(accuracy(records, "icl_no_replay", "zs") - accuracy(records, "base", "zs"))
            entry["no_replay_zs_change"] = no
            held = held and (no["hi"] < 0 if np.isfinite(no["hi"]) else no["mean"] < 0)
            statement += "; without replay it drops (interval below 0)"
        out["replay_preserves_zero_shot"] = {"statement": statement, "held": bool(held), **entry}
    if {"icl", "icl_incoherent"} <= set(models):
        diff = interval(accuracy(records, "icl", b) - accuracy(records, "icl_incoherent", b))
        out["coherent_beats_incoherent"] = {
            "statement": f"coherent shots beat incoherent ones on {b} (interval above 0)",
            "held": _held(diff["lo"], diff["mean"]), "coherent_minus_incoherent": diff,
        }  # fmt: skip
    singles = [m for m in ("icl_mc", "icl_qa", "icl_caption") if m in models]
    if "icl" in models and singles:
        score = {m: icl_score(records, m) for m in ("icl", *singles)}
        diffs = {m: interval(score["icl"] - score[m]) for m in singles}
        out["full_mix_beats_single_types"] = {
            "statement": f"the full mix >= every single-type mix on the mean of {', '.join(ICL_BENCHMARKS)} (mean "
            "difference >= 0)",
            "held": all(d["mean"] >= 0 for d in diffs.values()), "full_minus_single": diffs,
        }  # fmt: skip
    return out


def claims_by_benchmark(records: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Preconditions and claims on each benchmark of CLAIM_BENCHMARKS that was run."""
    present = {r["benchmark"] for r in records}
    return {
        b: {"preconditions": preconditions(records, models, b), "claims": claims(records, models, b)}
        for b in CLAIM_BENCHMARKS
        if b in present
    }


def icl_score(records: Sequence[dict[str, Any]], model: str) -> np.ndarray:
    """Per seed: the mean accuracy over the held-out ICL benchmarks present."""
    present = [b for b in ICL_BENCHMARKS if b in {r["benchmark"] for r in records}]
    return np.mean([accuracy(records, model, b) for b in present], axis=0)


def premise(records: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """The informative parts (SEEDS_EXTENSIONS 4.6): the text twin (modality gap) and the relevance sweep."""
    out: dict[str, Any] = {}
    if "fs_text" in {r["benchmark"] for r in records}:
        out["modality_gap"] = {
            m: {"fs_text": interval(accuracy(records, m, "fs_text")), "fs": interval(accuracy(records, m, "fs")),
                "gap": interval(accuracy(records, m, "fs_text") - accuracy(records, m, "fs"))}
            for m in models
        }  # fmt: skip
    sweep = sorted((float(m.removeprefix("interleaved_p")), m) for m in models if m.startswith("interleaved_p"))
    if sweep:
        out["relevance_sweep"] = [{"p_rel": p, "fs": interval(accuracy(records, m, "fs"))} for p, m in sweep]
    return out


def diagnostics(records: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Demonstration reliance on fs, per model (means over seeds and families)."""

    def mean(model: str, variant: str, key: str, order: str = "original") -> float:
        rows = [r[key] for r in records if r["model"] == model and r["benchmark"] == "fs" and r["variant"] == variant
                and r["order"] == order]  # fmt: skip
        return round(float(np.mean(rows)), 4) if rows else float("nan")

    return {
        m: {
            "accuracy": mean(m, "none", "accuracy"),
            "shuffled_images_drop": round(mean(m, "none", "accuracy") - mean(m, "shuffle_images", "accuracy"), 4),
            "follows_flipped_demos": mean(m, "flip_answers", "follows_demos"),
            "recency": mean(m, "none", "recency"),
            "option_order_bias": round(abs(mean(m, "none", "accuracy") - mean(m, "none", "accuracy", "reversed")), 4),
        }
        for m in models
    }


# ---------------------------------------------------------------------------------------------------------------------
# Figures


def error_bars(stats: Sequence[dict[str, float]]) -> list[list[float]]:
    """matplotlib's yerr from seed intervals (none where one seed gives no interval)."""
    return [
        [s["mean"] - s["lo"] if np.isfinite(s["lo"]) else 0.0 for s in stats],
        [s["hi"] - s["mean"] if np.isfinite(s["hi"]) else 0.0 for s in stats],
    ]


def draw(doc: dict[str, Any], figures: Path) -> None:
    scale, records = doc["scale"], doc["records"]
    models = doc["models"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    shown = [m for m in ("base", "interleaved_p0", "interleaved_p0.3", "icl") if m in models]
    for ax, benchmark in zip(axes, ("fs", "remap"), strict=True):
        if benchmark not in doc["benchmarks"]:
            ax.set_axis_off()
            continue
        width = 0.8 / max(len(shown), 1)
        for i, m in enumerate(shown):
            stats = [interval(accuracy(records, m, benchmark, f)) for f in FAMILIES]
            means = [s["mean"] for s in stats]
            ax.bar(np.arange(len(FAMILIES)) + i * width, means, width, yerr=error_bars(stats), label=m, capsize=2)
        chance = 0.5 if benchmark == "fs" else None
        if chance:
            ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
        ax.set_xticks(np.arange(len(FAMILIES)) + width * (len(shown) - 1) / 2, FAMILIES)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{benchmark}: held-out families (mean over seeds, 95% t interval)")
        ax.set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figures / f"multimodal_gain_{scale}.png", dpi=120)
    plt.close(fig)

    benchmarks = [b for b in (*ICL_BENCHMARKS, "fs_2shot", "fs_4shot", "zs") if b in doc["benchmarks"]]
    rows = [m for m in models if m.startswith("icl")] + [m for m in models if m == "base"]
    grid = np.asarray([[float(accuracy(records, m, b).mean()) for b in benchmarks] for m in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(benchmarks) + 2.5, 0.45 * len(rows) + 1.5))
    if grid.size == 0:  # no tuned model or no ICL benchmark among those run
        grid = np.full((1, 1), np.nan)
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(benchmarks)), benchmarks, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title("ICL-tuning data mix: accuracy on held-out concepts (mean over seeds and families)")
    fig.tight_layout()
    fig.savefig(figures / f"multimodal_mix_{scale}.png", dpi=120)
    plt.close(fig)

    replay = [(0.0, "icl_no_replay"), (0.25, "icl"), (0.5, "icl_replay50")]
    replay = [(r, m) for r, m in replay if m in models]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if replay and "base" in models and {"zs", "fs"} <= set(doc["benchmarks"]):
        for ax, benchmark in zip(axes, ("zs", "fs"), strict=True):
            stats = [interval(accuracy(records, m, benchmark)) for _, m in replay]
            means = [s["mean"] for s in stats]
            ax.errorbar([r for r, _ in replay], means, yerr=error_bars(stats), marker="o", capsize=3, label="VLM-ICL")
            ax.axhline(float(accuracy(records, "base", benchmark).mean()), color="gray", ls="--", label="VLM-base")
            ax.set_xlabel("replay fraction of single-image QA")
            ax.set_ylabel(f"{benchmark} accuracy")
            ax.set_title({"zs": "zero-shot retention", "fs": "few-shot (fs)"}[benchmark])
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figures / f"multimodal_replay_{scale}.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    gap = doc["premise"].get("modality_gap", {})
    names = list(gap)
    axes[0].bar(np.arange(len(names)) - 0.2, [gap[m]["fs_text"]["mean"] for m in names], 0.4, label="text twin")
    axes[0].bar(np.arange(len(names)) + 0.2, [gap[m]["fs"]["mean"] for m in names], 0.4, label="image episode")
    axes[0].axhline(0.5, color="gray", ls="--", lw=1)
    axes[0].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[0].set_title("fs: text twin vs image (the modality gap)")
    axes[0].legend(fontsize=8)
    sweep = doc["premise"].get("relevance_sweep", [])
    if sweep:
        stats = [s["fs"] for s in sweep]
        means = [s["mean"] for s in stats]
        axes[1].errorbar([s["p_rel"] for s in sweep], means, yerr=error_bars(stats), marker="o", capsize=3)
        axes[1].axhline(0.5, color="gray", ls="--", lw=1)
        axes[1].set_xlabel("p_rel: interleaved sequences sharing a concept")
        axes[1].set_ylabel("fs accuracy")
        axes[1].set_title("VLM-interleaved: relevance sweep")
    fig.tight_layout()
    fig.savefig(figures / f"multimodal_premise_{scale}.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------------
# Main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0], SCALES, seeds=True)
    stage_names = ",".join(stage_table(SCALES["cpu"]))
    p.add_argument(
        "--stages",
        default=None,
        help=f"stages to train and evaluate (default: the scale's); a parent must be listed or trained: {stage_names}",
    )
    p.add_argument("--benchmarks", default=None, help=f"subset of {','.join(BENCHMARKS)} (default: the scale's)")
    p.add_argument("--ablations", action="store_true", help="also train the full ablation grid at the first seed")
    args = common.parse(p, argv)
    scale = SCALES[args.scale]
    table_ = stage_table(scale)
    requested = (
        common.parse_choices(args.stages, tuple(table_), "--stages") if args.stages is not None else scale.stages
    )
    selected = (
        common.parse_choices(args.benchmarks, tuple(BENCHMARKS), "--benchmarks")
        if args.benchmarks is not None
        else scale.benchmarks
    )
    seeds = [args.seed + i for i in range(args.seeds or scale.seeds)]
    root = common.run_root(args, FIGURE)
    ordered = [n for n in with_ancestors(requested, table_) if n in requested]  # parents first
    plan = {s: list(ordered) for s in seeds}
    if args.ablations:
        plan[seeds[0]] = with_ancestors([*plan[seeds[0]], *scale.ablations], table_)
    for seed, names in plan.items():
        check_parents(names, table_, root, seed)
    started = time.perf_counter()
    names = benchmark_names(selected)
    records: list[dict[str, Any]] = []
    stages_info: list[dict[str, Any]] = []
    eval_s = 0.0
    lm = learner(scale)
    for seed in seeds:
        sets = None
        for name in plan[seed]:
            params, info = train_stage(table_[name], scale, root, seed, seeds[0], not args.no_progress)
            t0 = time.perf_counter()
            sets = sets or benchmark_sets(names, scale.episodes, seed)
            records += evaluate_model(lm, params, sets, model=name, seed=seed)
            info["eval_s"] = round(time.perf_counter() - t0, 1)
            eval_s += info["eval_s"]
            stages_info.append(info)
            fs = f"; fs {accuracy(records, name, 'fs')[-1]:.3f}" if "fs" in selected else ""
            print(f"seed {seed} {name:>18}: {info['steps']} steps, {info['steps_per_s']} steps/s, "
                  f"training query accuracy {info['query_accuracy']:.3f}{fs}")  # fmt: skip
    models = list(dict.fromkeys(r["model"] for r in records))
    doc = results_document(FIGURE, {"scale": args.scale, **dataclasses.asdict(scale)}, [], seed=args.seed)
    doc.update(
        scale=args.scale, seeds=seeds, models=models, benchmarks=list(selected), records=records,
        table=table(records, models, names), claims=claims_by_benchmark(records, models),
        premise=premise(records, models),
        diagnostics=diagnostics(records, models), stages=stages_info,
        eval_share=round(eval_s / max(time.perf_counter() - started, 1e-9), 3),
    )  # fmt: skip
    print_summary(doc)
    return common.finish(doc, args.figures, f"multimodal_{args.scale}", draw, started)


def print_summary(doc: dict[str, Any]) -> None:
    print("\nmean accuracy over seeds and held-out families (option orders averaged):")
    benchmarks = [b for b in doc["table"][doc["models"][0]] if not b.endswith("_text") or b == "fs_text"]
    print(f"{'model':>18} " + " ".join(f"{b:>9}" for b in benchmarks))
    for m, row in doc["table"].items():
        print(f"{m:>18} " + " ".join(f"{row[b]['mean']:9.3f}" for b in benchmarks))
    for benchmark, found in doc["claims"].items():
        print(f"\non {benchmark}:")
        for name, pre in found["preconditions"].items():
            print(
                f"  precondition {name}: {'holds' if pre['held'] else 'DOES NOT HOLD'} ({pre['model']} on "
                f"{pre['benchmark']}: {pre['accuracy']['mean']:.3f}, needs >= {PRECONDITION})"
            )
        for name, claim in found["claims"].items():
            print(f"  {name}: {'HOLDS' if claim['held'] else 'does not hold'} - {claim['statement']}")


if __name__ == "__main__":
    common.script(main)
