"""The one claims schema (icl_meta/claims.py): how a claim is decided, and every committed results JSON checked
against the schema with each `held` recomputed from its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icl_meta.claims import Claim, decide, problems, summary_lines

FIGURES = Path(__file__).resolve().parent.parent / "figures"
NOT_EXPERIMENTS = {"throughput.json", "demo_prototype.json"}  # the benchmark's and the README demo's outputs


def test_the_bound_of_the_interval_decides():
    above = Claim("a", "gain above 0", estimate=0.3, compare=">", threshold=0.0, interval=(0.1, 0.5), n=4)
    assert above.held is True
    straddles = Claim("b", "gain above 0", estimate=0.3, compare=">", threshold=0.0, interval=(-0.1, 0.7), n=4)
    assert straddles.held is False  # the estimate alone would say yes: the lower end decides
    below = Claim("c", "error below 0.6", estimate=0.5, compare="<", threshold=0.6, interval=(0.4, 0.65))
    assert below.held is False  # the upper end decides for <
    assert Claim("d", "at least 3", estimate=3.0, compare=">=", threshold=3.0).held is True
    assert Claim("e", "more than 3", estimate=3.0, compare=">", threshold=3.0).held is False
    assert Claim("f", "no estimate", estimate=float("nan"), compare=">", threshold=0.0).held is False


def test_a_failed_precondition_leaves_the_claim_untested():
    learns = Claim("pre", "accuracy above chance + 0.05", estimate=0.52, compare=">", threshold=0.55)
    claim = Claim("c", "gain above 0", estimate=0.3, compare=">", threshold=0.0, preconditions=(learns,))
    record = claim.record()
    assert record["held"] is None and record["preconditions"][0]["held"] is False
    learns_now = Claim("pre", "accuracy above chance + 0.05", estimate=0.9, compare=">", threshold=0.55)
    assert Claim("c", "gain", estimate=0.3, compare=">", threshold=0.0, preconditions=(learns_now,)).held is True


def test_problems_finds_a_tampered_or_malformed_record():
    record = Claim("c", "gain above 0", estimate=0.3, compare=">", threshold=0.0, interval=(-0.1, 0.7)).record()
    assert problems(record) == []
    assert json.loads(json.dumps(record)) == record  # plain JSON
    assert problems({**record, "held": True}) == ["claim c: held is True, its numbers give False"]
    assert problems({**record, "interval": [0.7, -0.1]}) == ["claim c: interval lo > hi"]
    assert problems({k: v for k, v in record.items() if k != "threshold"}) == ["claim: missing threshold"]
    assert problems({**record, "compare": "~"})[0] == "claim c: compare '~'"
    with pytest.raises(ValueError, match="compare"):
        Claim("x", "bad", estimate=1.0, compare="=>", threshold=0.0)


def test_summary_lines_say_the_verdict():
    records = [
        Claim("a", "gain above 0", estimate=0.3, compare=">", threshold=0.0, interval=(0.1, 0.5), n=4).record(),
        Claim("b", "x", 1.0, ">", 0.0, preconditions=(Claim("p", "learns", 0.4, ">", 0.55),)).record(),
    ]
    lines = summary_lines(records)
    assert lines[0].startswith("  a: holds: 0.3 [0.1, 0.5] > 0 (n=4)")
    assert lines[1].startswith("  b: not tested") and "precondition failed: learns" in lines[2]


def committed_results() -> list[Path]:
    return sorted(p for p in FIGURES.glob("*.json") if p.name not in NOT_EXPERIMENTS)


def test_there_are_committed_results():
    names = {p.name for p in committed_results()}
    assert {"fig2_single_cpu.json", "fig4_curriculum_cpu.json", "multimodal_cpu.json"} <= names


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: p.name)
def test_every_committed_result_follows_the_schema(path):
    doc = json.loads(path.read_text())
    assert isinstance(doc.get("claims"), list), f"{path.name}: no claims list"
    ids = [record.get("id") for record in doc["claims"]]
    assert len(ids) == len(set(ids)), f"{path.name}: repeated claim ids"
    found = [p for record in doc["claims"] for p in problems(record)]
    assert found == [], f"{path.name}: {found}"
    for record in doc["claims"]:
        assert record["held"] == decide(record)  # recomputed from its numbers
    assert isinstance(doc.get("wall_s"), int | float) and doc["wall_s"] > 0


def test_the_claims_command_prints_each_verdict_and_refuses_a_tampered_file(tmp_path, capsys):
    from experiments.cli import main

    assert main(["claims", str(FIGURES / "fig4_curriculum_cpu.json")]) == 0
    out = capsys.readouterr().out
    assert "4 claims (1 hold, 1 do not, 2 untested)" in out and "T9_error_at_step_2000: holds" in out
    doc = json.loads((FIGURES / "fig4_curriculum_cpu.json").read_text())
    doc["claims"][0]["held"] = not doc["claims"][0]["held"]
    (tmp_path / "tampered.json").write_text(json.dumps(doc))
    assert main(["claims", str(tmp_path / "tampered.json")]) == 2
    assert "its numbers give" in capsys.readouterr().err
