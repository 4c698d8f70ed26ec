"""The throughput benchmark: its literal-loop baseline computes the same predictions as the protocols, and a smoke
run writes every field of every row (the speeds themselves are measured by `icl-meta bench`, never asserted)."""

import json

import jax
import numpy as np
import pytest

import tasks
from experiments import throughput
from icl_meta.errors import ConfigError

SMOKE = throughput.PRESETS["smoke"]


@pytest.mark.parametrize("name", ["paper", "gpt2"])
def test_literal_loop_equals_prefix_and_causal_protocols(name):
    p = SMOKE[name]
    family = tasks.get(p.family, **p.family_args)
    ep = family.sample(jax.random.key(0), 4, p.n)
    loop = throughput.learner_for(p, "loop")
    params = loop.init(jax.random.key(1), family.spec)
    literal = np.asarray(jax.jit(loop.predict)(params, ep.x, ep.y))
    positions = np.asarray(loop.positions)
    for protocol in ("prefix", "causal"):  # same parameter tree, so the same params
        out = jax.jit(throughput.learner_for(p, protocol).predict)(params, ep.x, ep.y)
        if protocol == "prefix":  # bidirectional passes: equal to the literal loop
            np.testing.assert_allclose(np.asarray(out)[:, positions], literal, atol=2e-5)
        else:  # causal attention inside the context: another function, same shapes
            assert out[:, positions].shape == literal.shape


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_smoke_benchmark_writes_every_row_and_field(tmp_path):
    out = tmp_path / "throughput.json"
    args = ["--scale", "smoke", "--presets", "paper", "--protocols", "loop", "causal", "--scan-steps", "1"]
    args += ["--min-time", "0", "--devices", "2", "--no-seeds"]
    quality = ["--recipes", "fast", "--quality-steps", "25"]  # not enough to reach 0.925: the row says so
    throughput.main([*args, *quality, "--peak-size", "512", "--no-progress", "--out", str(out)])
    doc = json.loads(out.read_text())
    (cold, warm) = doc["time_to_quality"]
    assert (cold["cache"], warm["cache"]) == ("cold", "warm") and cold["steps"] == warm["steps"] == 25
    assert not cold["reached"] and cold["accuracy"] == warm["accuracy"] and cold["wall_s"] > 0
    assert {(r["protocol"], r["cold_s"] > 0, r["warm_s"] > 0) for r in doc["compile"]} == {
        ("causal", True, True),
        ("prefix", True, True),
    }
    rows = doc["rows"]
    expected = {("paper", protocol, 1) for protocol in ("loop", "causal")}
    assert {(r["preset"], r["protocol"], r["scan_steps"]) for r in rows} == expected
    fields = {"preset", "protocol", "scan_steps", "steps_per_s", "task_positions_per_s", "compile_s"}
    for row in rows:
        assert fields | {"flops_per_step", "peak_fraction", "speedup_vs_loop"} <= set(row)
        assert row["steps_per_s"] > 0 and row["flops_per_step"] > 0 and 0 < row["peak_fraction"] < 1
        p = SMOKE[row["preset"]]
        per_step = p.batch * (p.n - p.loss_start)  # task-positions: rounded to an integer, from the unrounded steps/s
        rounding = 0.5 + 0.0005 * per_step  # (steps_per_s is rounded to 3 decimals)
        assert row["task_positions_per_s"] == pytest.approx(row["steps_per_s"] * per_step, rel=0, abs=rounding)
    assert all(r["speedup_vs_loop"] == 1.0 for r in rows if r["protocol"] == "loop")
    # The loop is the most work per step: every one-pass protocol does fewer FLOPs.
    flops = {r["protocol"]: r["flops_per_step"] for r in rows}
    assert flops["causal"] < flops["loop"]
    scaling = doc["scaling"]  # measured in a child process with 2 virtual CPU devices
    assert {(r["protocol"], r["devices"]) for r in scaling} == {("causal", 2), ("prefix", 2)}
    assert doc["machine"]["backend"] == "cpu" and doc["peak_flops_per_s"] > 0


@pytest.mark.slow  # compiles a meta-step per S
def test_seeds_rows_time_s_seeds_in_one_program_and_merge_into_the_document(tmp_path):
    out = tmp_path / "throughput.json"
    out.write_text(json.dumps({"experiment": "throughput", "rows": [{"kept": True}]}))
    argv = [
        "--scale",
        "smoke",
        "--seeds-only",
        "--seed-models",
        "fig6_m2icl",
        "paper_causal",
        "--seed-counts",
        "2",
        "1",
    ]
    throughput.main([*argv, "--min-time", "0", "--peak-size", "256", "--no-progress", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["rows"] == [{"kept": True}] and doc["seeds_run"]["peak_flops_per_s"] > 0
    rows = {(r["model"], r["seeds"]): r for r in doc["seeds"]}
    assert set(rows) == {(m, s) for m in ("fig6_m2icl", "paper_causal") for s in (1, 2)}
    for (model, seeds), row in rows.items():
        one = rows[model, 1]
        assert row["step_s"] > 0 and row["per_seed_step_s"] == pytest.approx(row["step_s"] / seeds, abs=1e-6)
        assert row["per_seed_vs_one"] == (None if seeds == 1 else pytest.approx(
            row["per_seed_step_s"] / one["per_seed_step_s"], rel=1e-2))  # fmt: skip
        assert row["bytes_per_step"] > 0 and row["temp_mib"] > 0
        assert row["bytes_per_s"] == pytest.approx(row["bytes_per_step"] / row["step_s"], rel=1e-3)
        # one program for S seeds does S seeds' arithmetic
        assert row["flops_per_step"] == pytest.approx(seeds * one["flops_per_step"], rel=0.15)
    with pytest.raises(ConfigError, match="seed-models"):
        throughput.main(["--seeds-only", "--seed-models", "nothing", "--out", str(out)])


def test_bad_benchmark_options():
    with pytest.raises(ConfigError, match="scan-steps"):
        throughput.main(["--scan-steps", "0"])
    with pytest.raises(ConfigError, match="protocol"):
        throughput.main(["--protocols", "sideways"])
    with pytest.raises(ConfigError, match="seed-counts"):
        throughput.main(["--seed-counts", "0"])
