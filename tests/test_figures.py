"""The figure scripts end to end at smoke scale: files, keys, curve records, and reuse of finished runs."""

from __future__ import annotations

import itertools
import json

import pytest

from experiments import common, fig2_mixture, fig2_single
from icl_meta import cli
from icl_meta.errors import guarded
from icl_meta.runs import read_json

CURVE_KEYS = {"train", "test", "learner", "metric", "kind", "positions", "mean", "lo", "hi"}
REFERENCES = {"ncm", "matching", "averaging", "knn"}


def check_document(doc: dict, experiment: str, tests: tuple[str, ...], n: int) -> None:
    assert {"experiment", "scale", "config", "provenance", "curves", "summary", "wall_s"} <= set(doc)
    assert doc["experiment"] == experiment and doc["scale"] == "smoke"
    for curve in doc["curves"]:
        assert CURVE_KEYS <= set(curve), curve.keys()
        assert curve["positions"] == list(range(n))
        assert all(lo <= m + 1e-9 and m <= hi + 1e-9 for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"]))
        assert all(0.0 <= m <= 1.0 for m in curve["mean"]) and curve["metric"] == "accuracy"
    for test in tests:
        refs = {c["learner"] for c in doc["curves"] if c["test"] == test and c["kind"] == "reference"}
        assert refs == REFERENCES
    assert len(doc["summary"]) == len(doc["curves"])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig2")
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root / "figures"), "--no-progress"]
    return root, argv, fig2_single.main(argv)


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_fig2_single_writes_every_curve_and_figure(single):
    root, _, doc = single
    check_document(doc, "fig2_single", common.FAMILIES, common.SINGLE_SCALES["smoke"].n)
    trained = {(c["train"], c["test"], c["learner"]) for c in doc["curves"] if c["kind"] == "trained"}
    grid = itertools.product(common.FAMILIES, common.FAMILIES, common.LEARNERS)
    assert trained == set(grid)  # the 3x3 cross table for every learner
    assert read_json(root / "figures" / "fig2_single_smoke.json")["curves"] == doc["curves"]
    for png in ("fig2_single_smoke.png", "fig2_cross_smoke.png"):
        assert (root / "figures" / png).stat().st_size > 10_000
    for job in common.single_jobs(common.SINGLE_SCALES["smoke"], common.LEARNERS, seed=0):
        run = root / "runs" / job.key
        assert (run / "config.json").exists() and (run / "checkpoints").is_dir()


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_fig2_single_rerun_reuses_finished_runs(single):
    root, argv, doc = single
    lines = {p: p.read_text() for p in (root / "runs").glob("*/metrics.jsonl")}
    again = fig2_single.main([*argv, "--learners", "protonet,icl"])
    assert {p: p.read_text() for p in lines} == lines  # nothing retrained
    trained = [c for c in again["curves"] if c["kind"] == "trained"]
    assert {c["learner"] for c in trained} == {"protonet", "icl"}
    first = {(c["train"], c["test"], c["learner"]): c["mean"] for c in doc["curves"]}
    for c in trained:
        assert c["mean"] == first[(c["train"], c["test"], c["learner"])]


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_fig2_mixture_smoke(tmp_path):
    argv = ["--scale", "smoke", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path), "--no-progress"]
    doc = fig2_mixture.main(argv)
    check_document(doc, "fig2_mixture", fig2_mixture.TESTS, common.MIXTURE_SCALES["smoke"].n)
    trained = {(c["train"], c["test"], c["learner"]) for c in doc["curves"] if c["kind"] == "trained"}
    assert trained == set(itertools.product(["mixture"], fig2_mixture.TESTS, common.LEARNERS))
    assert doc["config"]["variant"] == {"start": 2, "sim_nc": 1, "ave_anchors": "none"}
    assert all(cfg["train"]["loss_start"] == 2 for cfg in doc["config"]["runs"].values())
    for name in ("fig2_mixture_smoke.json", "fig2_mixture_smoke.png", "fig2_mixture_table_smoke.png",
                 "fig2_agreement_smoke.png"):  # fmt: skip
        assert (tmp_path / name).exists()
    # Which rule each learner runs: every learner against every rule on each family's test set, once.
    pairs = [(r["learner"], r["test"], r["rule"]) for r in doc["agreement"]]
    rules = ("ncm", "matching", "averaging", "knn(1)", "knn(3)")
    assert sorted(pairs) == sorted(itertools.product(common.LEARNERS, common.FAMILIES, rules))
    for test, summary in doc["agreement_summary"].items():
        own = {check["learner"]: check for check in summary["own_rule"]}
        assert set(own) == set(common.LEARNERS) and {c["own_rule"] for c in own.values()} == {
            {"prototype": "ncm", "pairwise": "matching", "amortization": "averaging"}[test]
        }
        for check in own.values():
            assert check["margin"] == pytest.approx(check["own_value"] - check["best_other_value"])
    assert 0 < doc["agreement_s"] < doc["wall_s"]
    assert json.loads((tmp_path / "fig2_mixture_smoke.json").read_text())["experiment"] == "fig2_mixture"


def test_fig2_mixture_reference_variant_builds_the_reference_families():
    training = common.training_mixture(sim_nc=0, ave_anchors="flipped")
    assert [c.name for c in training.components] == ["prototype", "pairwise", "amortization"]
    assert training.components[1].nc == 0 and training.components[2].anchors == "flipped"
    tests = fig2_mixture.test_families("reference", training)
    assert tests["prototype"].anchors is True and tests["amortization"].anchors == "flipped"
    assert tests["mixture"].components[1].unit_inputs is True


def test_reproduce_rejects_an_unknown_figure_and_learner(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "fig9"])
    assert guarded(lambda: fig2_single.main(["--learners", "icl,gpt"])) == 2
    assert "unknown gpt" in capsys.readouterr().err
