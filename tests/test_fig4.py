"""Figure 4 (meta-level curriculum) end to end at smoke scale: curves, histories, schedule, summary, claims, reuse,
and --learners (a regression learner from outside the repository trained through it; a classification-only one
refused)."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, fig4_curriculum
from icl_meta import evaluate, families, learners, study
from icl_meta.claims import Claim, decide, problems
from icl_meta.contracts import LearnerParams
from icl_meta.errors import ConfigError, guarded
from icl_meta.runs import read_json

SMOKE = fig4_curriculum.SCALES["smoke"]


@learners.register("outside_ls")
@dataclasses.dataclass(frozen=True)
class OutsideLeastSquares:
    """A learner from outside the repository: least squares on the context, its prediction scaled by one trained
    number (a learner without parameters has nothing for Figure 4 to pre-train: the figure refuses it)."""

    supports: ClassVar[tuple[str, ...]] = ("regression",)

    def init(self, key, spec):
        return LearnerParams({"scale": jnp.ones(())}, spec)

    def predict(self, params, x, y, positions=None):
        return params.weights["scale"] * learners.build("least_squares").predict(None, x, y, positions)


def argv_for(root, *extra):
    return [
        "--scale",
        "smoke",
        "--out",
        str(root / "runs"),
        "--figures",
        str(root / "figures"),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def fig4(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig4")
    return root, argv_for(root), fig4_curriculum.main(argv_for(root))


def claims_by_id(doc):
    return {c["id"]: c for c in doc["claims"]}


def check_claims(doc, suffix=""):
    """Every claim follows the schema and its numbers are the paired differences of the summary's rows."""
    settings = doc["config"]["settings"]
    never, early = settings["steps"] + settings["eval_every"], settings["checkpoints"][0]
    learner = "icl" if not suffix else suffix[2:]
    rows = {(r["curriculum"], r["seed"]): r for r in doc["summary"] if r["learner"] == learner}
    seeds = sorted({s for _, s in rows})
    claims = claims_by_id(doc)
    assert all(problems(c) == [] for c in doc["claims"])
    for name, value in (
        (f"T9_steps_to_half_d{suffix}", lambda r: never if r["steps_to_half_d"] is None else r["steps_to_half_d"]),
        (f"T9_error_at_step_{early}{suffix}", lambda r: r[f"error_pos_ge_d_step{early}"]),
    ):
        diff = np.array([value(rows["none", s]) - value(rows["dims", s]) for s in seeds], float)
        claim = claims[name]
        assert claim["estimate"] == pytest.approx(diff.mean()) and claim["n"] == len(seeds)
        lo, hi = claim["interval"]
        assert lo <= claim["estimate"] <= hi and claim["compare"] == ">" and claim["threshold"] == 0
        seeds_pre, plateau = claim["preconditions"][:2]
        assert seeds_pre["id"] == f"T9_seeds_for_an_interval{suffix}" and seeds_pre["estimate"] == len(seeds)
        assert seeds_pre["held"] == (len(seeds) >= 2)  # one seed: no interval, so not tested rather than false
        assert plateau["id"] == f"T9_plateau_precondition{suffix}" and plateau["threshold"] == 3
        plateaus = [never if (p := rows["none", s]["plateau_steps"]) is None else p for s in seeds]
        assert plateau["estimate"] == pytest.approx(np.mean(plateaus) / settings["interval"])
        if claim["held"] is not None:
            assert claim["held"] == (lo > 0)
        assert claim["held"] == decide(claim)
        equivalent = claims[name.replace(suffix, "") + "_equivalent" + suffix]  # +-margin fixed in the code
        margin = (
            fig4_curriculum.EQUIVALENT_INTERVALS * settings["interval"]
            if "half_d" in name
            else fig4_curriculum.EQUIVALENT_ERROR * settings["d"]
        )
        assert equivalent["threshold"] == pytest.approx(margin) and equivalent["compare"] == "<"
        assert equivalent["estimate"] == pytest.approx(max(abs(lo), abs(hi)))
        assert equivalent["preconditions"] == claim["preconditions"]
        if claim["held"] is not None:
            assert equivalent["held"] == (-margin < lo and hi < margin)
    censored = claims[f"T9_steps_to_half_d{suffix}"]["preconditions"][2]
    reached = [rows["dims", s]["steps_to_half_d"] is not None for s in seeds]
    assert censored["estimate"] == np.mean(reached) and censored["held"] == all(reached)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_curves_cover_every_arm_seed_and_checkpoint(fig4):
    root, _, doc = fig4
    assert {"experiment", "scale", "config", "provenance", "curves", "histories", "summary", "wall_s"} <= set(doc)
    trained = [c for c in doc["curves"] if c["kind"] == "trained"]
    expected = {(a, s, c) for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds) for c in SMOKE.checkpoints}
    assert {(c["curriculum"], c["seed"], c["step"]) for c in trained} == expected and len(trained) == len(expected)
    assert {c["learner"] for c in trained} == {"icl"}
    assert set(doc["config"]["runs"]) == {f"{a}_seed{s}" for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds)}
    for curve in doc["curves"]:
        assert curve["metric"] == "squared_error" and curve["positions"] == list(range(SMOKE.n))
        assert all(lo <= m + 1e-9 <= hi + 2e-9 for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"]))
    (ls,) = [c for c in doc["curves"] if c["kind"] == "reference"]
    assert ls["learner"] == "least_squares" and max(ls["mean"][SMOKE.d :]) < 1e-3  # noiseless: exact from i = d
    assert read_json(root / "figures" / "fig4_curriculum_smoke.json")["curves"] == doc["curves"]
    assert (root / "figures" / "fig4_curriculum_smoke.png").stat().st_size > 20_000


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_icl_is_the_scales_gpt2(fig4):
    _, _, doc = fig4
    family = families.get("linear_regression", d=SMOKE.d)
    model = fig4_curriculum.build(SMOKE, family.spec, "icl")
    assert model == common.gpt2(SMOKE.width, SMOKE.depth, SMOKE.heads, SMOKE.n, positions=max(2 * SMOKE.n, 202))
    assert doc["config"]["runs"]["dims_seed0"]["learner"] == learners.to_config(model)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_histories_follow_the_schedule_and_the_claims_their_numbers(fig4):
    _, _, doc = fig4
    schedule = fig4_curriculum.curriculum(SMOKE, "dims").get("active_dims")
    for history in doc["histories"]:
        assert history["step"] == list(range(0, SMOKE.steps + 1, SMOKE.eval_every))
        if history["curriculum"] == "dims":  # logged: the value the last step trained with
            assert history["active_dims"] == [schedule(max(s - 1, 0)) for s in history["step"]]
        else:
            assert set(history["active_dims"]) == {SMOKE.d}
        assert history["train_loss"][0] is None and all(v > 0 for v in history["train_loss"][1:])
    rows = {(r["learner"], r["curriculum"], r["seed"]) for r in doc["summary"]}
    assert rows == {("icl", a, s) for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds)}
    for row in doc["summary"]:  # recomputed from the curves and histories
        (h,) = [h for h in doc["histories"] if (h["curriculum"], h["seed"]) == (row["curriculum"], row["seed"])]
        assert row["plateau_steps"] == fig4_curriculum.plateau_steps(h, SMOKE.d)
        assert row["steps_to_half_d"] == fig4_curriculum.time_to_quality(h, 0.5 * SMOKE.d)
        for c in doc["curves"]:
            if c["kind"] == "trained" and (c["curriculum"], c["seed"]) == (row["curriculum"], row["seed"]):
                assert row[f"error_pos_ge_d_step{c['step']}"] == pytest.approx(np.mean(c["mean"][SMOKE.d :]), abs=1e-4)
    early = f"T9_error_at_step_{SMOKE.checkpoints[0]}"
    ids = ["T9_steps_to_half_d", "T9_steps_to_half_d_equivalent", early, f"{early}_equivalent"]
    assert [c["id"] for c in doc["claims"]] == ids
    check_claims(doc)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_agreement_with_the_regression_rules_at_each_checkpoint(fig4):
    root, _, doc = fig4
    rules = {"least_squares", "ridge(0.1)", "ridge(1)", "ridge(10)", "gd(1)", "gd(3)", "gd(10)", "mean_estimator"}
    keys = [(r["curriculum"], r["seed"], r["step"], r["rule"]) for r in doc["agreement"]]
    arms_seeds_steps = [(a, s, c) for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds) for c in SMOKE.checkpoints]
    assert sorted(keys) == sorted((*k, rule) for k in arms_seeds_steps for rule in rules)
    assert all(r["metric"] == "normalised_squared_difference" for r in doc["agreement"])
    assert len(doc["agreement_closest"]) == len(fig4_curriculum.ARMS) * len(SMOKE.checkpoints)
    assert all(set(c["rule"]) <= rules for c in doc["agreement_closest"])
    assert (root / "figures" / "fig4_agreement_smoke.png").stat().st_size > 20_000


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_rerun_reuses_the_runs_and_from_results_redecides(fig4):
    root, argv, doc = fig4
    logs = {p: p.read_text() for p in (root / "runs").glob("*/metrics.jsonl")}
    again = fig4_curriculum.main(argv)
    assert {p: p.read_text() for p in logs} == logs
    assert again["curves"] == doc["curves"] and again["histories"] == doc["histories"]
    assert again["claims"] == doc["claims"]
    saved = fig4_curriculum.main([*argv, "--from-results"])
    assert saved["claims"] == doc["claims"] and saved["wall_s"] == again["wall_s"]


@pytest.mark.slow  # a whole figure at smoke scale
def test_a_regression_learner_from_outside_goes_through_the_figure(fig4, tmp_path):
    outside = fig4_curriculum.main(argv_for(tmp_path, "--learners", "outside_ls"))
    keys = {f"{a}_seed{s}__outside_ls" for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds)}
    assert {p.name for p in (tmp_path / "runs").iterdir()} == keys and set(outside["config"]["runs"]) == keys
    trained = [c for c in outside["curves"] if c["kind"] == "trained"]
    assert {c["learner"] for c in trained} == {"outside_ls"} and len(trained) == 2 * SMOKE.seeds * 2
    family = families.get("linear_regression", d=SMOKE.d)
    test = study.sample_test_sets({"x": family}, SMOKE.test_tasks, SMOKE.n, 0)["x"]
    model = learners.build("outside_ls")
    for curve in trained:  # recomputed from the parameters saved at the checkpoint
        path = (
            tmp_path / "runs" / f"{curve['curriculum']}_seed{curve['seed']}__outside_ls" / f"params_step{curve['step']}"
        )
        params = fig4_curriculum.load_params(path, model.init(jax.random.key(0), family.spec))
        assert float(params.weights["scale"]) != 1.0  # trained
        values = evaluate.per_position(model, params, family.spec, test)
        np.testing.assert_allclose(curve["mean"], values.mean(0), rtol=1e-5, atol=1e-7)
    assert {r["learner"] for r in outside["agreement"]} == {"outside_ls"}
    ids = [c["id"] for c in outside["claims"]]
    early = f"T9_error_at_step_{SMOKE.checkpoints[0]}"
    bare = ["T9_steps_to_half_d", "T9_steps_to_half_d_equivalent", early, f"{early}_equivalent"]
    assert ids == [f"{i}__outside_ls" for i in bare]
    check_claims(outside, "__outside_ls")
    # with the figure's own learner: one claim set each, the bare ids for icl
    _, _, doc = fig4
    both = fig4_curriculum.Fig4Curriculum().claims({**doc, "summary": doc["summary"] + outside["summary"]})
    assert [c.id for c in both] == [c["id"] for c in doc["claims"]] + ids


def test_a_learner_the_figure_cannot_train_is_refused_in_one_line(tmp_path, capsys):
    classifier = "handles classification tasks, not regression"
    for name, reason in (
        ("protonet", classifier),
        ("ncm", classifier),
        ("least_squares", "no parameters to pre-train"),
    ):
        with pytest.raises(ConfigError, match=reason) as err:
            fig4_curriculum.main(argv_for(tmp_path, "--learners", f"icl,{name}"))
        assert "\n" not in str(err.value) and name in str(err.value)
    assert not (tmp_path / "runs").exists()  # refused before anything was trained
    assert guarded(lambda: fig4_curriculum.main(argv_for(tmp_path, "--learners", "protonet"))) == 2  # as the script
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("icl-meta: error: learner 'protonet' handles classification")


def test_plateau_is_the_first_evaluation_at_or_under_0_9_d():
    history = {"step": [0, 10, 20, 30], "eval_squared_error": [1.0, 0.95, 0.9, 0.5]}
    assert fig4_curriculum.plateau_steps(history, 1) == 20
    assert fig4_curriculum.plateau_steps({"step": [0, 10], "eval_squared_error": [0.5, 0.95]}, 1) is None


def test_time_to_quality_is_the_first_evaluation_under_the_threshold():
    history = {"step": [0, 10, 20, 30], "eval_squared_error": [3.0, 1.6, 1.4, 1.5]}
    assert fig4_curriculum.time_to_quality(history, 1.5) == 20
    assert fig4_curriculum.time_to_quality(history, 1.0) is None


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [((100.0, 900.0), "helps"), ((-300.0, 400.0), "no practical difference"), ((-200.0, 900.0), "undecided")],
)
def test_t9_is_decided_by_its_interval_or_by_the_equivalence_margin(interval, verdict):
    pre = (Claim("T9_seeds_for_an_interval", "seeds", 8.0, ">=", 2.0),)
    margin = 500.0
    helps = Claim("T9_steps_to_half_d", "fewer", float(np.mean(interval)), ">", 0.0, interval, 8, preconditions=pre)
    same = Claim("T9_steps_to_half_d_equivalent", "same", max(map(abs, interval)), "<", margin, None, 8,
                 preconditions=pre)  # fmt: skip
    (line,) = fig4_curriculum.decisions([helps, same])
    assert verdict in line
    if verdict == "undecided":
        assert "a margin of 900 would decide it" in line
