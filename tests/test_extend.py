"""A task family defined right here runs through sampling, training, evaluation and plotting unchanged."""

import dataclasses
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

import baselines
import tasks
from experiments.cli import main
from icl_meta.contracts import Episode
from icl_meta.errors import require


@tasks.register("test_xor")
@dataclasses.dataclass(frozen=True)
class TestXor(tasks.TaskFamily):
    """XOR of two random half-planes through a random centre."""

    __test__ = False  # not a pytest class

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_classes == 2, f"test_xor: num_classes must be 2, got {self.num_classes!r}")

    def labels(self, x: jax.Array, params: dict) -> jax.Array:
        rel = x - params["center"][..., None, :]
        side_u = jnp.einsum("...nd,...d->...n", rel, params["u"]) > 0
        side_v = jnp.einsum("...nd,...d->...n", rel, params["v"]) > 0
        return (side_u ^ side_v).astype(jnp.int32)

    def _sample(self, key: jax.Array, batch: int, n: int) -> Episode:
        k_c, k_u, k_v, k_x = jax.random.split(key, 4)
        center_BD = jax.random.normal(k_c, (batch, self.d))
        u_BD, v_BD = jax.random.normal(k_u, (batch, self.d)), jax.random.normal(k_v, (batch, self.d))
        x_BND = center_BD[:, None] + self.sigma * jax.random.normal(k_x, (batch, n, self.d))
        params = {"center": center_BD, "u": u_BD, "v": v_BD}
        return Episode(x_BND, self.labels(x_BND, params), params)


def test_family_defined_in_a_test_module_trains_and_evaluates(tmp_path, capsys):
    family = tasks.get("test_xor", d=3)
    ep = jax.jit(family.sample, static_argnums=(1, 2))(jax.random.key(0), 200, 20)
    x, p = np.asarray(ep.x, np.float64), {k: np.asarray(v, np.float64) for k, v in ep.params.items()}
    rel = x - p["center"][:, None]
    expected = ((rel @ p["u"][..., None])[..., 0] > 0) ^ ((rel @ p["v"][..., None])[..., 0] > 0)
    np.testing.assert_array_equal(np.asarray(ep.y), expected.astype(np.int32))
    assert 0.45 < float(ep.y.mean()) < 0.55

    run = tmp_path / "xor"
    tiny = ["--n", "12", "--batch", "16", "--eval-tasks", "64", "--scan-steps", "5", "--eval-every", "10"]
    argv = ["train", "--task", "test_xor", "--steps", "20", *tiny, "--model-arg", "depth=1", "--protocol", "causal"]
    argv += ["--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    assert main(["eval", str(run), "--task-arg", "sigma=2", "--tasks", "64"]) == 0
    results = json.loads((run / "eval_test_xor_sigma2.json").read_text())
    assert results["curves"][0]["train"] == "test_xor" and results["config"]["task"]["sigma"] == 2
    assert (run / "results.png").exists() and (run / "eval_test_xor_sigma2.png").exists()
    assert "icl" in capsys.readouterr().out  # the summary table of the evaluation


def test_a_family_in_its_own_file_is_found_with_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_families.py").write_text(
        textwrap.dedent(
            """
            import dataclasses
            import jax, jax.numpy as jnp
            import tasks
            from icl_meta.contracts import Episode

            @tasks.register("ring_of_my_own")
            @dataclasses.dataclass(frozen=True)
            class Ring(tasks.TaskFamily):
                width: float = 0.5

                def _sample(self, key, batch, n):
                    x = self.sigma * jax.random.normal(key, (batch, n, self.d))
                    y = (jnp.abs(jnp.linalg.norm(x, axis=-1) - 1.0) < self.width).astype(jnp.int32)
                    return Episode(x, y, {})
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    assert main(["--import", "my_families", "list"]) == 0
    out = capsys.readouterr().out
    assert "ring_of_my_own" in out and "width: float = 0.5" in out
    assert main(["--import", "no_such_module", "list"]) == 2
    assert "--import no_such_module" in capsys.readouterr().err


def test_a_new_family_works_in_the_decision_region_tool():
    """The decision regions (Figure 3's) take any family with a label rule: no switch on the family's name."""
    from icl_meta.regions import decision_regions

    family = tasks.get("test_xor", d=2)
    ncm = baselines.get("ncm", num_classes=2)
    records, arrays = decision_regions(ncm, None, {"xor": family}, k=20, g=12, seed=0)
    assert records[0]["family"] == "xor" and arrays["xor_true"].shape == (12, 12)
    assert set(np.unique(arrays["xor_true"])) == {0, 1}  # both sides of the XOR rule on the grid


OUTSIDE_EXPERIMENT = '''
import dataclasses
from pathlib import Path

from experiments import spec
from icl_meta import evaluate, families, learners, study
from icl_meta.claims import Claim
from icl_meta.runs import results_document


@dataclasses.dataclass(frozen=True)
class NcmScale(spec.Scale):
    tasks: int
    n: int


@spec.register("ncm_of_my_own")
class NcmOfMyOwn(spec.Experiment):
    """The nearest-class-mean rule on prototype tasks, as an experiment from outside the repository."""

    scales = {"smoke": NcmScale(tasks=64, n=12), "cpu": NcmScale(tasks=512, n=30)}

    def run(self, ctx):
        fams = {"prototype": families.get("prototype")}
        tests = study.sample_test_sets(fams, ctx.scale.tasks, ctx.scale.n, ctx.seed)
        curves = study.reference_curves(tests, fams)
        doc = results_document(self.name, {"scale": ctx.scale_name, **ctx.scale.settings()}, curves, ctx.seed)
        ncm = next(c for c in curves if c["learner"] == "ncm")
        doc["ncm_mean"] = evaluate.mean_over(ncm, 2)
        return doc

    def claims(self, doc):
        return [Claim("ncm_learns", "ncm above chance from 2 examples on", doc["ncm_mean"], ">", 0.6)]

    def draw(self, doc, figures):
        Path(figures, f"{self.name}_{doc['scale']}.png").write_bytes(b"png")

    def report(self, doc):
        print(f"ncm mean {doc['ncm_mean']:.3f}")
'''


def test_an_experiment_in_its_own_file_is_discovered_and_run(tmp_path, monkeypatch, capsys):
    """One new file: `icl-meta reproduce` finds it by name (no list to edit), runs it through the shared skeleton,
    decides its claim in the one schema, and `--from-results` re-decides from the saved JSON."""
    from icl_meta.claims import problems

    (tmp_path / "my_experiment.py").write_text(OUTSIDE_EXPERIMENT)
    monkeypatch.chdir(tmp_path)
    argv = ["--import", "my_experiment", "reproduce", "ncm_of_my_own", "--scale", "smoke", "--figures", "out"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "ncm_of_my_own_smoke.json").read_text())
    (claim,) = doc["claims"]
    assert problems(claim) == [] and claim["estimate"] == doc["ncm_mean"] > 0.6 and claim["held"] is True
    assert "ncm_learns: holds" in out and (tmp_path / "out" / "ncm_of_my_own_smoke.png").exists()
    assert isinstance(doc["wall_s"], float)  # this run's own time, kept by --from-results
    assert main([*argv, "--from-results"]) == 0
    again = json.loads((tmp_path / "out" / "ncm_of_my_own_smoke.json").read_text())
    assert again["claims"] == doc["claims"] and again["wall_s"] == doc["wall_s"]
    assert main(["--import", "my_experiment", "list"]) == 0
    assert "ncm_of_my_own" in capsys.readouterr().out
    assert main(["reproduce", "no_such_experiment", "--scale", "smoke"]) == 2
    assert "unknown experiment 'no_such_experiment'" in capsys.readouterr().err


def test_reproduce_passes_an_experiments_own_options_and_bad_saved_results_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "fig2", "--scale", "smoke", "--learners", "no_such_learner"]) == 2
    assert "--learners: unknown no_such_learner; accepted:" in capsys.readouterr().err  # checked before any training
    (tmp_path / "fig2_single_smoke.json").write_text("[1, 2]")
    assert main(["reproduce", "fig2", "--scale", "smoke", "--figures", str(tmp_path), "--from-results"]) == 2
    assert "is not a results document" in capsys.readouterr().err
    (tmp_path / "fig2_single_smoke.json").write_text('{"experiment": "fig2_single"}')  # lacks what its claims read
    assert main(["reproduce", "fig2", "--scale", "smoke", "--figures", str(tmp_path), "--from-results"]) == 2
    assert "lacks what fig2_single's claims read" in capsys.readouterr().err
