"""Figure 4 (meta-level curriculum) end to end at smoke scale: curves, histories, schedule, summary, reuse."""

import numpy as np
import pytest

from experiments import fig4_curriculum
from icl_meta.runs import read_json

SMOKE = fig4_curriculum.SCALES["smoke"]


@pytest.fixture(scope="module")
def fig4(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig4")
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root / "figures"), "--no-progress"]
    return root, argv, fig4_curriculum.main(argv)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_curves_cover_every_arm_seed_and_checkpoint(fig4):
    root, _, doc = fig4
    assert {"experiment", "scale", "config", "provenance", "curves", "histories", "summary", "wall_s"} <= set(doc)
    trained = [c for c in doc["curves"] if c["kind"] == "trained"]
    expected = {(a, s, c) for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds) for c in SMOKE.checkpoints}
    assert {(c["curriculum"], c["seed"], c["step"]) for c in trained} == expected and len(trained) == len(expected)
    for curve in doc["curves"]:
        assert curve["metric"] == "squared_error" and curve["positions"] == list(range(SMOKE.n))
        assert all(lo <= m + 1e-9 <= hi + 2e-9 for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"]))
    (ls,) = [c for c in doc["curves"] if c["kind"] == "reference"]
    assert ls["learner"] == "least_squares" and max(ls["mean"][SMOKE.d :]) < 1e-3  # noiseless: exact from i = d
    assert read_json(root / "figures" / "fig4_curriculum_smoke.json")["curves"] == doc["curves"]
    assert (root / "figures" / "fig4_curriculum_smoke.png").stat().st_size > 20_000


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_histories_follow_the_schedule(fig4):
    _, _, doc = fig4
    schedule = fig4_curriculum.curriculum(SMOKE, "dims").get("active_dims")
    for history in doc["histories"]:
        assert history["step"] == list(range(0, SMOKE.steps + 1, SMOKE.eval_every))
        if history["curriculum"] == "dims":  # logged: the value the last step trained with
            assert history["active_dims"] == [schedule(max(s - 1, 0)) for s in history["step"]]
        else:
            assert set(history["active_dims"]) == {SMOKE.d}
        assert history["train_loss"][0] is None and all(v > 0 for v in history["train_loss"][1:])
    rows = {(r["curriculum"], r["seed"]) for r in doc["summary"]}
    assert rows == {(a, s) for a in fig4_curriculum.ARMS for s in range(SMOKE.seeds)}
    claims = doc["claims"]
    plateaus = [r["plateau_steps"] for r in doc["summary"] if r["curriculum"] == "none"]
    assert claims["precondition"]["plateau_steps_none"] == plateaus
    for name in ("steps_to_half_d", f"error_pos_ge_d_step{SMOKE.checkpoints[0]}"):
        diff = claims[name]["difference_none_minus_dims"]
        assert diff["mean"] == pytest.approx(np.mean(claims[name]["none"]) - np.mean(claims[name]["dims"]))
        assert diff["lo"] <= diff["mean"] <= diff["hi"]
        assert claims[name]["holds"] == (diff["lo"] > 0 and not claims[name]["dims_censored"])


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
def test_rerun_reuses_the_runs_and_checkpoint_curves(fig4):
    root, argv, doc = fig4
    logs = {p: p.read_text() for p in (root / "runs").glob("*/metrics.jsonl")}
    again = fig4_curriculum.main(argv)
    assert {p: p.read_text() for p in logs} == logs
    assert again["curves"] == doc["curves"] and again["histories"] == doc["histories"]


def test_plateau_is_the_first_evaluation_at_or_under_0_9_d():
    history = {"step": [0, 10, 20, 30], "eval_squared_error": [1.0, 0.95, 0.9, 0.5]}
    assert fig4_curriculum.plateau_steps(history, 1) == 20
    assert fig4_curriculum.plateau_steps({"step": [0, 10], "eval_squared_error": [0.5, 0.95]}, 1) is None


def test_time_to_quality_is_the_first_evaluation_under_the_threshold():
    history = {"step": [0, 10, 20, 30], "eval_squared_error": [3.0, 1.6, 1.4, 1.5]}
    assert fig4_curriculum.time_to_quality(history, 1.5) == 20
    assert fig4_curriculum.time_to_quality(history, 1.0) is None
