"""Figure 6 (M2-ICL vs ICL, domain adaptation) end to end at smoke scale: curves, summary, step times, PNG, reuse."""

import pytest

from experiments import fig6_metameta as fig6
from icl_meta.cli import FIGURES
from icl_meta.errors import ConfigError
from icl_meta.runs import read_json

SMOKE = fig6.SCALES["smoke"]


@pytest.fixture(scope="module")
def fig(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig6")
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root / "figures"), "--no-progress"]
    return root, argv, fig6.main(argv)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_curves_cover_every_learner_and_pool(fig):
    root, _, doc = fig
    assert {"experiment", "scale", "config", "provenance", "curves", "histories", "summary", "step_times"} <= set(doc)
    keys = [(c["learner"], c["adapt_tasks"], c["seed"]) for c in doc["curves"] if c["kind"] == "trained"]
    assert sorted(keys) == sorted((name, t, 0) for name in fig6.LEARNERS for t in SMOKE.pools)
    (ls,) = [c for c in doc["curves"] if c["kind"] == "reference"]
    assert ls["learner"] == "least_squares" and max(ls["mean"][SMOKE.d :]) < 1e-3  # noiseless: exact from i = d
    for c in doc["curves"]:
        if c["kind"] == "reference":
            continue
        assert c["metric"] == "squared_error" and c["positions"] == list(range(SMOKE.n))
        assert c["domains"] == SMOKE.test_domains and c["test"] == "domain_regression_test"
        want_steps = 0 if not c["learner"].endswith("_adapted") else SMOKE.adapt_steps(c["learner"].split("_")[0])
        assert c["adapt_steps"] == want_steps
        assert all(lo <= m + 1e-9 <= hi + 2e-9 for lo, m, hi in zip(c["lo"], c["mean"], c["hi"]))
        assert all(m > 0 for m in c["mean"])
    # Without adaptation the pool size is irrelevant: the same curve in every panel.
    for name in ("m2icl", "icl"):
        means = [c["mean"] for c in doc["curves"] if c["learner"] == name]
        assert all(m == means[0] for m in means)
    assert read_json(root / "figures" / "fig6_metameta_smoke.json")["curves"] == doc["curves"]
    assert (root / "figures" / "fig6_metameta_smoke.png").stat().st_size > 20_000


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_runs_summary_and_step_times(fig):
    root, _, doc = fig
    runs = doc["config"]["runs"]
    assert runs["m2icl_seed0"]["objective"]["name"] == "m2icl" and runs["icl_seed0"]["objective"] is None
    assert read_json(root / "runs" / "m2icl_seed0" / "config.json")["objective"] == runs["m2icl_seed0"]["objective"]
    assert "objective" not in read_json(root / "runs" / "icl_seed0" / "config.json")
    assert {h["arm"] for h in doc["histories"]} == set(fig6.ARMS)
    assert all(h["steps"] == SMOKE.steps and h["step"][-1] == SMOKE.steps for h in doc["histories"])
    rows = doc["summary"]["rows"]
    assert [r["adapt_tasks"] for r in rows] == list(SMOKE.pools)
    for row in rows:
        relative = (row["icl_adapted"] - row["m2icl_adapted"]) / row["icl_adapted"]
        assert row["relative_advantage"] == pytest.approx(relative, abs=2e-4)
        mean, lo, hi = row["difference_vs_icl_adapted"]
        assert lo <= mean <= hi
    (check,) = doc["summary"]["checks"]
    assert set(check["relative_advantage_by_t"]) == {str(t) for t in SMOKE.pools}
    assert isinstance(check["a_m2icl_adapted_best_at_smallest_t"], bool)
    checks = doc["preconditions"]
    assert set(checks) == {"m2icl_seed0", "icl_seed0"} and "query_after_fall" not in checks["icl_seed0"]
    for check in checks.values():
        curve = check["training_domains_curve"]
        ratio = curve["mean"][-1] / curve["mean"][0]
        assert check["last_over_first_position"] == pytest.approx(ratio, abs=1e-4)
        assert check["learns_in_context"] == (check["last_over_first_position"] <= fig6.IN_CONTEXT_RATIO)
    fall = checks["m2icl_seed0"]["query_after_fall"]
    assert checks["m2icl_seed0"]["meta_objective_falls"] == (fall >= fig6.QUERY_FALL)
    times = doc["step_times"]
    assert all(times[k] > 0 for k in ("m2icl_second_order", "m2icl_first_order", "icl"))
    assert times["second_order_over_icl"] == pytest.approx(times["m2icl_second_order"] / times["icl"], rel=0.02)


def test_t10_checks():
    def by_t(m2_adapted, icl_adapted):
        return {t: {"m2icl_adapted": a, "icl_adapted": b, "m2icl": 5.0, "icl": 4.0}
                for t, a, b in zip((16, 64, 256), m2_adapted, icl_adapted)}  # fmt: skip

    good = fig6.t10_checks(by_t((1.0, 1.5, 1.96), (2.0, 2.0, 2.0)), 0)
    assert good["a_m2icl_adapted_best_at_smallest_t"] and good["b_advantage_shrinks_with_t"]
    assert good["relative_advantage_by_t"] == {"16": 0.5, "64": 0.25, "256": 0.02}
    assert good["advantage_at_largest_t_below_5pct"] and good["c_m2icl_unadapted_worse_than_icl"]
    bad = fig6.t10_checks(by_t((4.5, 1.0, 1.9), (5.0, 2.0, 2.0)), 0)  # beats icl_adapted, not icl; grows at t=64
    assert not bad["a_m2icl_adapted_best_at_smallest_t"] and not bad["b_advantage_shrinks_with_t"]
    worse = fig6.t10_checks(by_t((2.1, 2.2, 2.3), (2.0, 2.0, 2.0)), 0)  # a disadvantage that grows is no shrinking
    assert not worse["a_m2icl_adapted_best_at_smallest_t"] and not worse["b_advantage_shrinks_with_t"]


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_rerun_reuses_runs_and_adaptation_results(fig):
    root, argv, doc = fig
    runs = root / "runs"
    files = {p: p.read_text() for p in [*runs.glob("*/metrics.jsonl"), *runs.glob("*/adaptation_t*.json")]}
    assert len(files) == 2 * (1 + len(SMOKE.pools))
    again = fig6.main(argv)
    assert {p: p.read_text() for p in files} == files
    assert again["curves"] == doc["curves"] and again["step_times"] == doc["step_times"]
    assert again["summary"] == doc["summary"]


def test_reproduce_knows_fig6():
    assert FIGURES["fig6"] == ("experiments.fig6_metameta",)
    assert SMOKE.icl_batch == SMOKE.support + SMOKE.query  # the ICL arm sees as many tasks per step


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_diagnosis_logs_the_meta_training_and_the_preconditions(tmp_path, monkeypatch):
    variants = {"m2icl": ("m2icl", {}), "icl_task_scale_1": ("icl", {"task_scale": 1.0})}
    monkeypatch.setattr(fig6, "DIAGNOSES", variants)
    argv = ["--scale", "smoke", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path), "--no-progress"]
    doc = fig6.main([*argv, "--diagnose", "4"])
    assert set(doc["variants"]) == set(variants) and doc["steps"] == 4
    meta, plain = doc["variants"]["m2icl"], doc["variants"]["icl_task_scale_1"]
    assert meta["history"]["step"] == [0, 1, 2, 3, 4]  # an evaluation every steps // 10 (at least 1) steps
    for column in fig6.OBJECTIVE_COLUMNS:
        assert all(v is not None and v > 0 for v in meta["history"][column]), column
    query = meta["history"]["objective_query_after"]
    assert meta["query_after_fall"] == pytest.approx(1 - query[-1] / query[0], abs=1e-4)
    curve = plain["training_domains_curve"]
    assert plain["last_over_first_position"] == pytest.approx(curve["mean"][-1] / curve["mean"][0], abs=1e-4)
    assert "query_after_fall" not in plain and read_json(tmp_path / "runs" / "diagnose" / "icl_task_scale_1_steps4" /
                                                         "config.json")["task"]["task_scale"] == 1.0  # fmt: skip
    assert (tmp_path / "fig6_diagnostics_smoke.png").stat().st_size > 20_000


def test_diagnose_needs_a_positive_step_count(tmp_path):
    with pytest.raises(ConfigError, match="--diagnose"):
        fig6.main(["--scale", "smoke", "--out", str(tmp_path), "--figures", str(tmp_path), "--diagnose", "0"])
