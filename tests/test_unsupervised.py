"""The unsupervised-ICL figure script (experiments/unsupervised.py): bad input, and the whole smoke scale."""

from __future__ import annotations

import json

import pytest

from experiments import unsupervised
from experiments.cli import main as cli_main
from icl_meta.errors import ConfigError


def test_unknown_method_or_regime_names_the_accepted_values():
    with pytest.raises(ConfigError, match="--methods: unknown magic; accepted: zero_shot, sup_icl, uicl"):
        unsupervised.main(["--methods", "uicl,magic", "--no-compile-cache"])
    with pytest.raises(ConfigError, match="--regimes: unknown vision; accepted: anchored, symmetric, regression"):
        unsupervised.main(["--regimes", "vision", "--no-compile-cache"])


def test_reproduce_lists_unsupervised(capsys):
    with pytest.raises(SystemExit):
        cli_main(["reproduce", "--help"])
    assert "unsupervised" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_scale_end_to_end(tmp_path):
    doc = unsupervised.main(
        ["--scale", "smoke", "--out", str(tmp_path / "runs"), "--figures", str(tmp_path / "fig"), "--no-progress"]
    )
    saved = json.loads((tmp_path / "fig" / "unsupervised_smoke.json").read_text())
    assert json.dumps(saved["claims"]) == json.dumps(doc["claims"])  # as text: a gap recovered may be NaN
    for png in ("rounds", "finetune", "methods"):
        assert (tmp_path / "fig" / f"unsupervised_smoke_{png}.png").stat().st_size > 0
    rows = {(r["regime"], r["method"], r["learner"], r["split"]) for r in doc["table"]}
    for method in ("zero_shot", "sup_icl", "uicl", "uft_lora", "uft_linear", "uft_linear_gamma0", "uicl_uniform"):
        assert ("anchored_sigma0.8", method, "icl", "Q") in rows
    for method in ("kmeans", "em", "kmeans_anchored"):
        assert ("anchored_sigma0.8", method, "classical", "Q") in rows
    assert {("anchored_sigma0.8", "uicl", who, "Q") for who in ("protonet", "matchnet", "cnp", "bayes")} <= rows
    assert ("regression", "uicl", "icl", "Q") in rows and ("symmetric", "uicl", "icl", "Q") in rows
    rounds = [c for c in doc["curves"] if c["axis"] == "round" and c["method"] == "uicl" and c["learner"] == "icl"]
    assert all(len(c["mean"]) == unsupervised.SCALES["smoke"].icl.rounds + 1 for c in rounds)
    steps = [c for c in doc["curves"] if c["axis"] == "step" and c["method"] == "uft_lora"]
    assert steps and steps[0]["ticks"][0] == 0 and steps[0]["ticks"][-1] == unsupervised.SCALES["smoke"].finetune.steps
    # round 0 of unsupervised ICL is the zero-shot labelling, and step 0 of fine-tuning (a zero adapter) too
    key = ("anchored_sigma0.8", "zero_shot", "Q")
    zero_shot = next(r for r in doc["table"] if (r["regime"], r["method"], r["split"]) == key)
    uicl_q = next(c for c in rounds if c["regime"] == "anchored_sigma0.8" and c["split"] == "Q")
    assert uicl_q["mean"][0] == pytest.approx(zero_shot["accuracy"], abs=1e-4)
    assert steps[1]["mean"][0] == pytest.approx(zero_shot["accuracy"], abs=1e-4)
    assert {c["claim"].split(":")[0] for c in doc["claims"]} >= {"1", "2", "3", "4", "5", "6a", "6b"}
    per_task = doc["per_task"]["anchored_sigma0.8"]["uicl|Q|accuracy"]
    assert len(per_task) == unsupervised.SCALES["smoke"].tasks
