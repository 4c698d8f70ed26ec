"""The `icl-meta` command line: a train/eval round trip, and one clear line for each kind of bad input."""

import json
import subprocess
import sys

import pytest

from experiments.cli import main, parse_value

TINY = ["--n", "12", "--batch", "16", "--eval-tasks", "64", "--scan-steps", "5", "--eval-every", "10"]
TINY_MODEL = ["--model-arg", "depth=2", "--protocol", "causal"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        ["train", "--task", "prototype", "--steps", "20", *TINY, *TINY_MODEL, "--out", str(out), "--no-progress"]
    )
    assert code == 0
    return out


def test_train_writes_config_metrics_results_and_png(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["task"]["name"] == "prototype" and config["learner"]["name"] == "icl"
    assert config["learner"]["config"]["depth"] == 2
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [0, 10, 20]
    results = json.loads((trained_run / "results.json").read_text())
    assert {"experiment", "scale", "config", "provenance", "curves"} <= set(results)
    learners = [c["learner"] for c in results["curves"]]
    assert learners == ["icl", "ncm", "matching", "averaging", "knn"]
    for curve in results["curves"]:
        assert {"train", "test", "learner", "metric", "positions", "mean", "lo", "hi"} <= set(curve)
        assert curve["test"] == "prototype" and curve["metric"] == "accuracy"
        assert curve["train"] == ("prototype" if curve["kind"] == "trained" else None)  # references: nothing trained
        assert curve["positions"] == list(range(12)) and len(curve["mean"]) == 12
    assert (trained_run / "results.png").stat().st_size > 10_000


def test_train_seeds_writes_one_run_per_seed_equal_to_its_own_run(trained_run, capsys, tmp_path):
    """`--seeds 0,3`: one directory per seed, trained together; seed 0's equals the single run of seed 0."""
    out = tmp_path / "seeds"
    code, stdout, _ = run_cli(
        capsys, "train", "--task", "prototype", "--steps", "20", *TINY, *TINY_MODEL, "--seeds", "0,3", "--out",
        str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0 and "seed 3, step 20" in stdout
    configs = [json.loads((out / f"seed{s}" / "config.json").read_text()) for s in (0, 3)]
    assert [c["train"]["seed"] for c in configs] == [0, 3]
    assert configs[0] == json.loads((trained_run / "config.json").read_text())
    single, batched = (json.loads((d / "results.json").read_text())["curves"][0] for d in (trained_run, out / "seed0"))
    assert batched["mean"] == pytest.approx(single["mean"], abs=1e-6)
    code, _, err = run_cli(capsys, "train", "--task", "prototype", "--seeds", "1,x", "--out", str(tmp_path / "bad"))
    assert code == 2 and "--seeds takes integers" in err


def test_eval_on_another_family_and_shifted_sigma(trained_run, capsys):
    code, out, _ = run_cli(capsys, "eval", str(trained_run), "--task", "pairwise", "--tasks", "64")
    assert code == 0 and "icl" in out
    results = json.loads((trained_run / "eval_pairwise.json").read_text())
    assert {c["test"] for c in results["curves"]} == {"pairwise"} and results["curves"][0]["train"] == "prototype"
    out_file = trained_run / "shift.json"
    code, _, _ = run_cli(
        capsys, "eval", str(trained_run), "--task-arg", "sigma=3", "--tasks", "64", "--out", str(out_file)
    )
    assert code == 0 and json.loads(out_file.read_text())["config"]["task"]["sigma"] == 3
    assert out_file.with_suffix(".png").exists()


def test_eval_agreement_writes_records_summary_and_heat_map(trained_run, capsys):
    code, out, _ = run_cli(capsys, "eval", str(trained_run), "--tasks", "32", "--agreement", "--out",
                           str(trained_run / "agree.json"))  # fmt: skip
    assert code == 0 and "own rule ncm" in out and "closest rule at @0" in out
    doc = json.loads((trained_run / "agree.json").read_text())
    assert [r["rule"] for r in doc["agreement"]] == ["ncm", "matching", "averaging", "knn(1)", "knn(3)"]
    assert {(r["learner"], r["train"], r["test"]) for r in doc["agreement"]} == {("icl", "prototype", "prototype")}
    summary = doc["agreement_summary"]
    assert summary["positions"] == [2, 12] and summary["rows"][0]["rule"] == "ncm"
    assert len(summary["closest_rule"][0]["rule"]) == 12
    check = summary["own_rule"][0]
    assert check["own_rule"] == "ncm" and check["held"] == (check["margin"] > 0)
    assert (trained_run / "agree_agreement.png").stat().st_size > 10_000
    code, _, _ = run_cli(capsys, "eval", str(trained_run), "--tasks", "32", "--task", "radius", "--agreement")
    assert code == 0  # no optimal rule: no own-rule check
    assert json.loads((trained_run / "eval_radius.json").read_text())["agreement_summary"]["own_rule"] is None


def test_resume_extends_a_finished_run(trained_run, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    args = ["train", "--task", "prototype", *TINY, *TINY_MODEL, "--out", str(copy), "--no-progress", "--resume"]
    code, _, err = run_cli(capsys, *args, "--steps", "30", "--lr", "0.01")
    assert code == 2 and "train.lr differ" in err
    code, out, _ = run_cli(capsys, *args, "--steps", "30")
    assert code == 0 and "step 30" in out
    assert [json.loads(ln)["step"] for ln in (copy / "metrics.jsonl").read_text().splitlines()] == [0, 10, 20, 30]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "hexagon", "--out", "X"], "unknown task family 'hexagon'; accepted: amortization"),
        (["train", "--task", "prototype", "--learner", "gpt", "--out", "X"], "unknown learner 'gpt'; accepted:"),
        (["train", "--task", "prototype", "--task-arg", "d=0", "--out", "X"], "d must be an integer >= 1"),
        (["train", "--task", "prototype", "--task-arg", "num_classes=1", "--out", "X"], "num_classes must be"),
        (["train", "--task", "prototype", "--task-arg", "colour=3", "--out", "X"], "unknown parameter(s) colour"),
        (["train", "--task", "prototype", "--n", "0", "--out", "X"], "n must be an integer >= 1"),
        (["train", "--task", "prototype", "--batch", "0", "--out", "X"], "batch must be an integer >= 1"),
        (["train", "--task", "prototype", "--loss-start", "60", "--out", "X"], "loss_start must be in [0, 50)"),
        (["train", "--task", "prototype", "--learner", "ncm", "--out", "X"], "has no trainable parameters"),
        (["train", "--task", "prototype", "--model-arg", "depth", "--out", "X"], "--model-arg expects KEY=VALUE"),
        (["eval", "nowhere"], "is not a run directory"),
        (["train", "--task", "prototype", "--model-arg", "foo=1", "--out", "X"], "unknown model parameter(s) foo"),
        (["train", "--task", "prototype", "--model-arg", "depth=abc", "--out", "X"], "depth must be an integer"),
        (["train", "--task", "prototype", "--model-arg", "depth=2.5", "--out", "X"], "depth must be an integer"),
        (["train", "--task", "prototype", "--task-arg", "sigma=abc", "--out", "X"], "sigma must be a finite number"),
        (
            ["train", "--task", "prototype", "--learner", "foo", "--out", "X"],
            "accepted: averaging, cnp, gaussian_bayes,",
        ),
        (["train", "--task", "prototype", "--preset", "huge", "--out", "X"], "unknown model preset 'huge'"),
        (["train", "--task", "prototype", "--devices", "0", "--out", "X"], "devices must be between 1 and"),
    ],
)
def test_bad_input_gives_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("icl-meta: error: ") and message in err


def test_mismatched_checkpoint_is_refused(trained_run, capsys):
    code, _, err = run_cli(capsys, "eval", str(trained_run), "--task", "prototype", "--task-arg", "d=3")
    assert code == 2 and "trained for d=2, C=2" in err and "task prototype has d=3" in err
    code, _, err = run_cli(capsys, "eval", str(trained_run), "--task", "linear_regression")
    assert code == 2 and "C=None" in err


def test_existing_run_is_not_overwritten(trained_run, capsys):
    before = (trained_run / "results.json").read_text()
    code, _, err = run_cli(capsys, "train", "--task", "prototype", "--out", str(trained_run), "--no-progress")
    assert code == 2 and "already holds a run" in err
    assert (trained_run / "results.json").read_text() == before


def test_non_finite_loss_exits_with_one_line(capsys, tmp_path):
    argv = ["train", "--task", "prototype", "--steps", "20", *TINY, *TINY_MODEL, "--lr", "1e30"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "wild"), "--no-progress")
    assert code == 1 and err.count("\n") == 1 and "non-finite loss" in err
    assert (tmp_path / "wild" / "config.json").exists()


def test_list_via_console_script_shows_every_family_and_its_parameters():
    out = subprocess.run([sys.executable, "-m", "experiments.cli", "list"], capture_output=True, text=True, check=True)
    for family in ("prototype", "pairwise", "amortization", "radius", "linear_regression", "mixture"):
        assert family in out.stdout
    assert "anchors: bool = False" in out.stdout and "class_norm: float = 3.0" in out.stdout
    assert "icl, " in out.stdout and "paper" in out.stdout


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("True") is True
    assert parse_value("prototype,pairwise") == ("prototype", "pairwise") and parse_value("shared") == "shared"


def test_checkpoint_of_another_model_is_refused(trained_run, capsys, tmp_path):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(trained_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["learner"]["config"]["depth"] = 3  # the checkpoint holds a depth-2 model
    (copy / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "eval", str(copy), "--tasks", "64")
    assert code == 2 and err.count("\n") == 1 and "does not match the model" in err
