"""Figure 6 (M2-ICL vs ICL, domain adaptation) end to end at smoke scale: curves, summary, claims, step times, PNG,
reuse, --from-results, the diagnosis; and the claims decided on constructed numbers."""

import numpy as np
import pytest
import scipy.stats

from experiments import fig6_metameta as fig6
from experiments import spec
from icl_meta import claims as claims_lib
from icl_meta.errors import ConfigError
from icl_meta.runs import read_json

SMOKE = fig6.SCALES["smoke"]
T10 = ("T10a_vs_icl_adapted", "T10a_vs_icl", "T10b_advantage_positive", "T10_advantage_small_at_largest_t")


@pytest.fixture(scope="module")
def fig(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig6")
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root / "figures"), "--no-progress"]
    return root, argv, fig6.main(argv)


def claims_by_id(doc):
    return {c["id"]: c for c in doc["claims"]}


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_curves_cover_every_learner_and_pool(fig):
    root, _, doc = fig
    keys = {"experiment", "scale", "config", "provenance", "curves", "histories", "summary", "step_times", "claims"}
    assert keys <= set(doc)
    keys = [(c["learner"], c["adapt_tasks"], c["seed"]) for c in doc["curves"] if c["kind"] == "trained"]
    seeds = range(SMOKE.seeds)
    assert sorted(keys) == sorted((name, t, s) for name in fig6.LEARNERS for t in SMOKE.pools for s in seeds)
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
    for name, seed in ((name, seed) for name in ("m2icl", "icl") for seed in seeds):
        means = [c["mean"] for c in doc["curves"] if c["learner"] == name and c["seed"] == seed]
        assert all(m == means[0] for m in means)
    assert read_json(root / "figures" / "fig6_metameta_smoke.json")["curves"] == doc["curves"]
    assert (root / "figures" / "fig6_metameta_smoke.png").stat().st_size > 20_000


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_runs_summary_claims_and_step_times(fig):
    root, _, doc = fig
    runs = doc["config"]["runs"]
    assert runs["m2icl_seed0"]["objective"]["name"] == "m2icl" and runs["icl_seed0"]["objective"] is None
    assert read_json(root / "runs" / "m2icl_seed0" / "config.json")["objective"] == runs["m2icl_seed0"]["objective"]
    assert "objective" not in read_json(root / "runs" / "icl_seed0" / "config.json")
    assert {h["arm"] for h in doc["histories"]} == set(fig6.ARMS)
    assert all(h["steps"] == SMOKE.steps and h["step"][-1] == SMOKE.steps for h in doc["histories"])
    rows = doc["summary"]["rows"]
    assert [(r["seed"], r["adapt_tasks"]) for r in rows] == [(s, t) for s in range(SMOKE.seeds) for t in SMOKE.pools]
    for row in rows:
        relative = (row["icl_adapted"] - row["m2icl_adapted"]) / row["icl_adapted"]
        assert row["relative_advantage"] == pytest.approx(relative, abs=2e-4)
        mean, lo, hi = row["difference_vs_icl_adapted"]
        assert lo <= mean <= hi
    # The preconditions' numbers, recomputed from the saved curve and history.
    pre = doc["preconditions"]
    assert set(pre) == {f"{arm}_seed{s}" for arm in fig6.ARMS for s in range(SMOKE.seeds)}
    assert "query_after_fall" not in pre["icl_seed0"]
    for record in pre.values():
        curve = record["training_domains_curve"]
        assert record["last_over_first_position"] == pytest.approx(curve["mean"][-1] / curve["mean"][0], abs=1e-4)
    meta = next(h for h in doc["histories"] if h["arm"] == "m2icl" and h["seed"] == 0)
    query = meta["objective_query_after"]
    assert pre["m2icl_seed0"]["query_after_fall"] == pytest.approx(1 - query[-1] / query[0], abs=1e-4)
    # The claims: every T10 claim's estimate and interval recomputed from the curves (paired over seeds), its
    # preconditions the seeds' count and the runs' claims.
    got = claims_by_id(doc)
    small, large = SMOKE.pools[0], SMOKE.pools[-1]
    assert set(got) == {*T10, f"T10b_shrinks_t{small}_t{large}", "T10c_m2icl_unadapted_worse"}
    mean = {
        (c["learner"], c["adapt_tasks"], c["seed"]): float(np.mean(c["mean"]))
        for c in doc["curves"]
        if c["kind"] == "trained"
    }
    seeds = range(SMOKE.seeds)

    def adv(t, s):
        return (mean["icl_adapted", t, s] - mean["m2icl_adapted", t, s]) / mean["icl_adapted", t, s]

    def check(claim_id, per_seed):
        values = np.array([per_seed(s) for s in seeds])
        half = scipy.stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        claim = got[claim_id]
        assert claim["estimate"] == pytest.approx(values.mean(), abs=1e-9) and claim["n"] == len(values)
        assert claim["interval"] == pytest.approx([values.mean() - half, values.mean() + half], abs=1e-9)

    check("T10a_vs_icl_adapted", lambda s: mean["icl_adapted", small, s] - mean["m2icl_adapted", small, s])
    check("T10a_vs_icl", lambda s: mean["icl", small, s] - mean["m2icl_adapted", small, s])
    check("T10b_advantage_positive", lambda s: adv(small, s))
    check(f"T10b_shrinks_t{small}_t{large}", lambda s: adv(small, s) - adv(large, s))
    check("T10c_m2icl_unadapted_worse", lambda s: mean["m2icl", small, s] - mean["icl", small, s])
    largest = np.array([adv(large, s) for s in seeds])
    half = scipy.stats.t.ppf(0.975, len(largest) - 1) * largest.std(ddof=1) / np.sqrt(len(largest))
    small_claim = got["T10_advantage_small_at_largest_t"]
    assert small_claim["estimate"] == pytest.approx(max(abs(largest.mean() - half), abs(largest.mean() + half)))
    assert rows[0]["relative_advantage"] == pytest.approx(adv(small, 0), abs=2e-4)
    for record in doc["claims"]:
        assert claims_lib.problems(record) == []
        ids = {p["id"]: p for p in record["preconditions"]}
        assert {
            "T10_seeds_for_an_interval",
            "m2icl_seed0_learns_in_context",
            "m2icl_seed0_meta_objective_falls",
            "icl_seed0_learns_in_context",
            "icl_seed1_learns_in_context",
        } <= set(ids)
        assert ids["m2icl_seed0_learns_in_context"]["estimate"] == pytest.approx(
            pre["m2icl_seed0"]["last_over_first_position"], abs=1e-4
        )
        assert ids["m2icl_seed0_meta_objective_falls"]["estimate"] == pytest.approx(
            pre["m2icl_seed0"]["query_after_fall"], abs=1e-4
        )
    times = doc["step_times"]
    assert all(times[k] > 0 for k in ("m2icl_second_order", "m2icl_first_order", "icl"))
    assert times["second_order_over_icl"] == pytest.approx(times["m2icl_second_order"] / times["icl"], rel=0.02)


def constructed(m2_adapted, icl_adapted, *, m2=5.0, icl=4.0, ratio=0.2, fall=0.5, spread=(0.0, 0.001), swing=None):
    """A results document with the numbers the claims read: per seed, each learner's curve flat at its value per pool
    size plus the seed's `spread` (the same for every learner: the paired differences barely vary over seeds); with
    `swing`, seed s's m2icl_adapted also moves by swing[s]."""
    pools, seeds = (16, 64, 256), range(len(spread))
    curves = [
        {"learner": name, "adapt_tasks": t, "seed": s, "kind": "trained", "mean": [value + spread[s]] * 2}
        for s in seeds
        for t, a, b in zip(pools, m2_adapted, icl_adapted, strict=True)
        for name, value in (
            ("m2icl_adapted", a + (swing or [0.0] * len(spread))[s]),
            ("m2icl", m2),
            ("icl_adapted", b),
            ("icl", icl),
        )
    ]
    curves.append({"learner": "least_squares", "adapt_tasks": None, "kind": "reference", "mean": [1.0, 0.0]})
    histories = []
    for s in seeds:
        histories.append({"arm": "m2icl", "seed": s, "objective_query_after": [10.0, None, 10.0 * (1 - fall)]})
        histories.append({"arm": "icl", "seed": s})
    pre = {f"{arm}_seed{s}": {"training_domains_curve": {"mean": [1.0, 0.7, ratio]}} for arm in ("m2icl", "icl")
           for s in seeds}  # fmt: skip
    config = {"seeds": list(seeds), "settings": {"pools": list(pools), "test_domains": 24}}
    return {"config": config, "curves": curves, "histories": histories, "preconditions": pre}


def held(doc):
    return {c.id: c.held for c in fig6.Fig6MetaMeta().claims(doc)}


def test_t10_claims_on_constructed_numbers():
    good = held(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0)))  # relative advantage 0.5, 0.25, 0.02
    assert all(good.values()) and set(good) == {*T10, "T10b_shrinks_t16_t64", "T10b_shrinks_t64_t256",
                                                "T10c_m2icl_unadapted_worse"}  # fmt: skip
    claims = {c.id: c for c in fig6.Fig6MetaMeta().claims(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0)))}
    assert claims["T10b_shrinks_t16_t64"].estimate == pytest.approx(0.25, abs=1e-3)
    assert claims["T10_advantage_small_at_largest_t"].estimate == pytest.approx(0.02, abs=2e-3)
    # Beats icl_adapted but not icl at t=16; the advantage grows from 16 to 64; 5% at the largest t is not below 5%.
    bad = held(constructed((4.5, 1.0, 1.9), (5.0, 2.0, 2.0)))
    assert bad["T10a_vs_icl_adapted"] and not bad["T10a_vs_icl"] and bad["T10b_advantage_positive"]
    assert not bad["T10b_shrinks_t16_t64"] and bad["T10b_shrinks_t64_t256"]
    assert not bad["T10_advantage_small_at_largest_t"]
    # A disadvantage that grows is no shrinking: the shrink claims are not tested without an advantage at t=16.
    worse = held(constructed((2.1, 2.2, 2.3), (2.0, 2.0, 2.0), m2=3.0, icl=4.0))
    assert not worse["T10a_vs_icl_adapted"] and not worse["T10b_advantage_positive"]
    assert worse["T10b_shrinks_t16_t64"] is None and worse["T10b_shrinks_t64_t256"] is None
    assert not worse["T10c_m2icl_unadapted_worse"]
    # Seeds that disagree: the mean advantage at t=16 is positive (0.5, 0.5, -0.7: mean 0.1), its interval is not.
    split = held(constructed((1.5, 1.5, 1.96), (2.0, 2.0, 2.0), spread=(0.0, 0.0, 0.0), swing=(-0.5, -0.5, 0.7)))
    assert not split["T10a_vs_icl_adapted"] and not split["T10b_advantage_positive"]
    # One seed gives no interval: nothing is tested.
    assert set(held(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0), spread=(0.0,))).values()) == {None}
    # A precondition that fails leaves every claim untested: ICL does not learn in context; the meta-objective stalls.
    assert set(held(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0), ratio=0.6)).values()) == {None}
    assert set(held(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0), fall=0.2)).values()) == {None}
    assert all(held(constructed((1.0, 1.5, 1.96), (2.0, 2.0, 2.0), ratio=0.5, fall=0.3)).values())  # at the bounds


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_rerun_reuses_runs_and_adaptation_results(fig):
    root, argv, doc = fig
    runs = root / "runs"
    files = {p: p.read_text() for p in [*runs.glob("*/metrics.jsonl"), *runs.glob("*/adaptation_t*.json")]}
    assert len(files) == 2 * SMOKE.seeds * (1 + len(SMOKE.pools))
    again = fig6.main(argv)
    assert {p: p.read_text() for p in files} == files
    assert again["curves"] == doc["curves"] and again["step_times"] == doc["step_times"]
    assert again["summary"] == doc["summary"] and again["claims"] == doc["claims"]


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_from_results_redecides_the_claims(fig):
    root, argv, _ = fig
    saved = read_json(root / "figures" / "fig6_metameta_smoke.json")
    again = fig6.main([*argv, "--from-results"])
    assert again["claims"] == saved["claims"] and again["wall_s"] == saved["wall_s"]
    assert again["curves"] == saved["curves"] and again["summary"] == saved["summary"]


def test_reproduce_knows_fig6():
    assert spec.discover()["fig6"] == [fig6.Fig6MetaMeta]
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
    got = claims_by_id(doc)
    assert set(got) == {"m2icl_learns_in_context", "m2icl_meta_objective_falls", "icl_task_scale_1_learns_in_context"}
    assert got["m2icl_meta_objective_falls"]["estimate"] == pytest.approx(1 - query[-1] / query[0])
    assert got["icl_task_scale_1_learns_in_context"]["estimate"] == pytest.approx(curve["mean"][-1] / curve["mean"][0])
    assert all(c["held"] is not None and c["held"] == claims_lib.decide(c) for c in doc["claims"])
    assert (tmp_path / "fig6_diagnostics_smoke.png").stat().st_size > 20_000
    assert (tmp_path / "fig6_diagnostics_smoke.json").exists() and not (tmp_path / "fig6_metameta_smoke.json").exists()


def test_diagnose_needs_a_positive_step_count(tmp_path):
    with pytest.raises(ConfigError, match="--diagnose"):
        fig6.main(["--scale", "smoke", "--out", str(tmp_path), "--figures", str(tmp_path), "--diagnose", "0"])
