"""Figure 3 end to end at smoke scale (curves, summary, figures, region records, claims recomputed from the numbers,
--from-results), a learner defined here going through it, and the decision-region helpers."""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from experiments import common, fig3_generalization
from experiments.fig3_generalization import FAMILIES, RADIUS, SCALES, region_families
from icl_meta import claims as claims_lib
from icl_meta import learners
from icl_meta.errors import ConfigError
from icl_meta.regions import EXTENT_POINTS, predict_regions, region_grid, region_sequences, rule_labels, sample_task
from icl_meta.runs import read_json

CURVE_KEYS = {"train", "test", "learner", "metric", "kind", "positions", "mean", "lo", "hi", "part"}
REFERENCES = {"ncm", "matching", "averaging", "knn"}
RULES = {"ncm", "matching", "averaging", "knn(1)", "knn(3)"}
LEARNERS = ("icl", "protonet")  # ICL draws the regions; the other learners take the same code path (and ~30 s more)
SMOKE = SCALES["smoke"]


@learners.register("outside_fig3")
@dataclasses.dataclass(frozen=True)
class OutsideNearest:
    """A learner from outside the repository: the 1-nearest-neighbour rule, its vote scaled by one trainable inverse
    temperature (classification only; no context: uniform, so class 0 as the 1-NN rule)."""

    supports: ClassVar[tuple[str, ...]] = ("classification",)
    num_classes: int

    def init(self, key, spec):
        if spec.is_regression or spec.num_classes != self.num_classes:
            raise ConfigError(f"outside_fig3: needs {self.num_classes}-class tasks")
        return {"log_beta": jnp.zeros(())}

    def predict(self, params, x, y, positions=None):
        n = x.shape[1]
        rows_P = jnp.arange(n) if positions is None else jnp.asarray(positions, jnp.int32)
        context_PN = jnp.arange(n)[None, :] < rows_P[:, None]
        dist_BPN = jnp.where(context_PN, jnp.sum((x[:, rows_P, None, :] - x[:, None, :, :]) ** 2, -1), jnp.inf)
        label_BP = jnp.take_along_axis(y, jnp.argmin(dist_BPN, axis=-1), axis=-1)
        vote_BPC = jax.nn.one_hot(label_BP, self.num_classes) * context_PN.any(-1)[None, :, None]
        return jax.nn.log_softmax(jnp.exp(params["log_beta"]) * vote_BPC, axis=-1)


def argv_for(figures, runs, *extra):
    return ["--scale", "smoke", "--out", str(runs), "--figures", str(figures), "--no-progress", *extra]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig3")
    return root, fig3_generalization.main(argv_for(root, root / "runs", "--learners", ",".join(LEARNERS)))


def acc(doc, learner, test, sigma=None):
    (row,) = [r for r in doc["summary"] if r["learner"] == learner and r["test"] == test and r.get("sigma") == sigma]
    return row["mean"]


def expected_claims(doc):
    """Every claim's estimate and each precondition's, recomputed here from the summary rows, the radius curves and
    the own-rule checks: {id: (estimate, threshold, {precondition id: estimate})}."""
    names, sigmas = doc["config"]["learners"], SMOKE.sigmas
    learns = {(n, f): np.mean([acc(doc, n, t, sigmas[0]) for t in ([f] if f else FAMILIES)]) for n in names
              for f in (*FAMILIES, None)}  # fmt: skip

    def pre(name, *fams):
        return {f"{name}_learns_{f or 'unshifted'}": learns[name, f] for f in fams}

    out = {}
    for fam, rule in zip(FAMILIES, ("ncm", "matching", "averaging"), strict=True):
        drift = max(abs(acc(doc, rule, fam, s) - acc(doc, rule, fam, sigmas[0])) for s in sigmas)
        out[f"T7_{rule}_{fam}_flat"] = (drift, 0.03, {})
    for name in filter(common.in_context, names):
        for fam in FAMILIES:
            out[f"T7_{name}_{fam}_no_rise"] = (acc(doc, name, fam, 3.0) - acc(doc, name, fam, 1.0), 0.0, pre(name, fam))
        drop = np.mean([acc(doc, name, f, 1.0) - acc(doc, name, f, 3.0) for f in FAMILIES])
        out[f"T7_{name}_drop"] = (drop, 0.03, pre(name, *FAMILIES))
    for name in names:
        out[f"T8_{name}_below_1nn"] = (acc(doc, "knn", RADIUS) - acc(doc, name, RADIUS), 0.1, pre(name, None))
        if common.in_context(name):
            out[f"T8_{name}_no_rise"] = (0.0, 0.03, pre(name, None))  # n=12: both windows are positions 2..11
        else:
            out[f"T8_{name}_near_chance"] = (acc(doc, name, RADIUS), 0.56, pre(name, None))
    for check in doc["own_rule"]:
        key = f"rule_{check['learner']}_{check['test']}_sigma{check['sigma']:g}"
        out[key] = (check["margin"], 0.0, pre(check["learner"], check["test"]))
    return out


def check_claims(doc, root, argv):
    """The claims in the one schema, each estimate and precondition as recomputed here, re-decided the same from
    the saved results alone."""
    expected = expected_claims(doc)
    assert [c["id"] for c in doc["claims"]] == list(expected)
    for record in doc["claims"]:
        assert claims_lib.problems(record) == []
        estimate, threshold, preconditions = expected[record["id"]]
        assert record["estimate"] == pytest.approx(estimate, abs=1e-9) and record["threshold"] == threshold
        assert {p["id"]: p["estimate"] for p in record["preconditions"]} == pytest.approx(preconditions, abs=1e-9)
        assert all(p["threshold"] == 0.55 for p in record["preconditions"])
    again = fig3_generalization.main([*argv, "--from-results"])
    assert again["claims"] == doc["claims"] and again["summary"] == doc["summary"]
    assert read_json(root / "fig3_generalization_smoke.json")["claims"] == doc["claims"]


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_smoke_run_writes_every_curve_summary_and_figure(smoke):
    root, doc = smoke
    assert {"experiment", "scale", "config", "provenance", "curves", "summary", "regions", "run_summaries"} <= set(doc)
    assert doc["experiment"] == "fig3_generalization" and doc["scale"] == "smoke"
    assert read_json(root / "fig3_generalization_smoke.json")["curves"] == doc["curves"]
    for curve in doc["curves"]:
        assert CURVE_KEYS <= set(curve), curve.keys()
        assert curve["positions"] == list(range(SMOKE.n)) and curve["metric"] == "accuracy"
        assert all(lo <= m + 1e-9 and m <= hi + 1e-9 for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"]))
        assert all(0.0 <= m <= 1.0 for m in curve["mean"])

    # (a): every learner and closed-form rule on every family at every sigma, once each
    shift = [(c["learner"], c["test"], c["sigma"]) for c in doc["curves"] if c["part"] == "shift"]
    names = [*LEARNERS, *REFERENCES]
    assert sorted(shift) == sorted(itertools.product(names, FAMILIES, SMOKE.sigmas))
    assert all(c["train"] == "mixture" for c in doc["curves"] if c["kind"] == "trained")
    # (b): the radius curves, with the 1-NN reference
    radius = {c["learner"] for c in doc["curves"] if c["part"] == RADIUS}
    assert radius == set(names) and all(c["test"] == RADIUS for c in doc["curves"] if c["part"] == RADIUS)

    assert len(doc["summary"]) == len(doc["curves"])
    for row, curve in zip(doc["summary"], doc["curves"], strict=True):
        assert row["learner"] == curve["learner"] and row.get("sigma") == curve.get("sigma")
        start = 2 if curve["part"] == RADIUS else 0
        assert row["mean"] == pytest.approx(np.mean(curve["mean"][start:]), abs=1e-4)

    # (c): one compact record per region family, no grids in the JSON
    assert [r["family"] for r in doc["regions"]] == list(region_families())
    for record in doc["regions"]:
        assert record["learner"] == "icl" and record["context"] == 20 and record["grid"] == SMOKE.grid
        assert 0.0 <= record["agreement"] <= 1.0 and len(record["extent"]) == 4
    with np.load(root / "fig3_regions_smoke.npz") as arrays:
        assert arrays["radius_pred"].shape == (SMOKE.grid, SMOKE.grid)
        assert arrays["prototype_context_x"].shape == (20, 2)
        for record in doc["regions"]:  # the record's agreement is the saved grids'
            fam = record["family"]
            assert record["agreement"] == round(float(np.mean(arrays[f"{fam}_pred"] == arrays[f"{fam}_true"])), 4)
    for png in ("fig3_shift_smoke.png", "fig3_radius_smoke.png", "fig3_regions_smoke.png",
                "fig3_agreement_smoke.png", "fig3_agreement_shift_smoke.png"):  # fmt: skip
        assert (root / png).stat().st_size > 20_000

    # (d): agreement of every learner with every rule on every shifted set (an in-context model at every sigma, the
    # others at the ends) and on radius; the summary rows are the records' means; the own-rule checks
    shifted = [(r["learner"], r["test"], r["sigma"], r["rule"]) for r in doc["agreement"] if r["part"] == "shift"]
    ends = (SMOKE.sigmas[0], SMOKE.sigmas[-1])
    grid = itertools.product(LEARNERS, FAMILIES, SMOKE.sigmas)
    measured = {(n, f, s) for n, f, s in grid if common.in_context(n) or s in ends}
    assert sorted(shifted) == sorted((*key, rule) for key in measured for rule in RULES)
    assert {r["rule"] for r in doc["agreement"] if r["part"] == RADIUS} == RULES
    assert len(doc["agreement_summary"]) == len(doc["agreement"])
    for record in doc["agreement"]:
        start = 2 if record["part"] == RADIUS else 0
        (row,) = [r for r in doc["agreement_summary"] if all(r.get(k) == record.get(k)
                  for k in ("learner", "test", "sigma", "rule"))]  # fmt: skip
        assert row["mean"] == pytest.approx(np.mean(record["mean"][start:])) and row["positions"] == f"{start}-11"
    assert {(c["learner"], c["test"], c["sigma"]) for c in doc["own_rule"]} == measured
    optimal = dict(zip(FAMILIES, ("ncm", "matching", "averaging"), strict=True))
    for check in doc["own_rule"]:
        group = (check["learner"], check["test"], check["sigma"])
        rows = {
            r["rule"]: r["mean"] for r in doc["agreement_summary"] if (r["learner"], r["test"], r.get("sigma")) == group
        }
        own = optimal[check["test"]]
        best = max((r for r in rows if r != own), key=rows.get)
        assert check["own_rule"] == own and check["best_other"] == best
        assert check["margin"] == pytest.approx(rows[own] - rows[best])

    check_claims(doc, root, argv_for(root, root / "runs", "--learners", ",".join(LEARNERS)))


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_without_an_in_context_model_the_regions_are_skipped(smoke, capsys):
    root, _ = smoke
    doc = fig3_generalization.main(argv_for(root / "sub", root / "runs", "--learners", "protonet"))
    assert doc["regions"] == [] and "(c) skipped" in capsys.readouterr().out
    assert {c["learner"] for c in doc["curves"] if c["kind"] == "trained"} == {"protonet"}
    assert not (root / "sub" / "fig3_regions_smoke.png").exists()
    assert not any(c["id"].startswith("T7_protonet") for c in doc["claims"])  # T7 is an in-context model's


@pytest.mark.slow  # a whole figure at smoke scale (its protonet run reused from the fixture)
def test_a_learner_defined_outside_goes_through_figure_3(smoke, capsys):
    """A learner registered in this module (a 1-NN rule with one trainable temperature) is trained on the mixture
    and tested under shift and on radius tasks beside protonet: its accuracy is the 1-NN rule's on every test set,
    it agrees with the 1-NN rule everywhere, and the claims about it are decided from those numbers."""
    root, _ = smoke
    argv = argv_for(root / "outside", root / "runs", "--learners", "outside_fig3,protonet")
    doc = fig3_generalization.main(argv)
    printed = capsys.readouterr().out
    assert doc["config"]["learners"] == ["outside_fig3", "protonet"]
    assert (root / "runs" / "mixture__outside_fig3" / "config.json").exists()
    trained = {(c["learner"], c["test"], c.get("sigma")) for c in doc["curves"] if c["kind"] == "trained"}
    tests = [*itertools.product(FAMILIES, SMOKE.sigmas), (RADIUS, None)]
    assert trained == {(n, t, s) for n in ("outside_fig3", "protonet") for t, s in tests}
    for test, sigma in tests:  # the same argmax as the closed-form 1-NN rule on every task and position
        means = {c["learner"]: c["mean"] for c in doc["curves"] if (c["test"], c.get("sigma")) == (test, sigma)}
        assert means["outside_fig3"] == means["knn"] and acc(doc, "outside_fig3", test, sigma) > 0.6
    agreement = [r for r in doc["agreement_summary"] if r["learner"] == "outside_fig3" and r["rule"] == "knn(1)"]
    assert len(agreement) == 2 * len(FAMILIES) + 1 and all(r["mean"] == 1.0 for r in agreement)
    assert doc["regions"] == [] and not any(c["id"].startswith("T7_outside") for c in doc["claims"])
    check_claims(doc, root / "outside", argv)
    held = {c["id"]: c["held"] for c in doc["claims"]}
    assert held["T8_outside_fig3_below_1nn"] is False  # it IS the 1-NN rule: estimate 0
    assert held["T8_outside_fig3_near_chance"] is False  # 1-NN learns radius tasks
    for fam, sigma in itertools.product(FAMILIES, SMOKE.sigmas):  # it runs 1-NN, not the family's optimal rule
        assert held[f"rule_outside_fig3_{fam}_sigma{sigma:g}"] is False
    assert sum(line.startswith("outside_fig3 ") for line in printed.splitlines()) == 2  # a row in (a) and (b)


def test_a_regression_only_learner_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"least_squares.*regression"):
        fig3_generalization.main(argv_for(tmp_path, tmp_path / "runs", "--learners", "least_squares"))


def test_rule_labels_reproduce_every_region_familys_labels():
    for j, (name, family) in enumerate(region_families().items()):
        episode = sample_task(family, jax.random.key(j), EXTENT_POINTS)  # the smoke run compiled these shapes
        task = {k: v[0] for k, v in episode.params.items()}
        np.testing.assert_array_equal(rule_labels(family, task, episode.x[0]), episode.y[0], err_msg=name)
        assert 0 < int(episode.y[0].sum()) < EXTENT_POINTS  # both classes occur


def test_radius_rule_on_the_grid_is_the_disc():
    family = tasks.get("radius", r_min=2.0, r_max=4.0)
    grid_PD, _ = region_grid(np.array([[-9.0, -7.0], [8.0, 6.0]]), 41)
    got = np.asarray(rule_labels(family, {"radius": jnp.float32(3.1)}, jnp.asarray(grid_PD)))
    np.testing.assert_array_equal(got, (np.linalg.norm(grid_PD, axis=-1) <= 3.1).astype(int))  # class 1 inside
    assert 0 < got.sum() < got.size


def test_region_grid_is_row_major_over_the_bounding_square():
    points = np.array([[0.0, 1.0], [2.0, 5.0]])
    grid_PD, (x0, x1, y0, y1) = region_grid(points, 5, pad=0.1)
    assert grid_PD.shape == (25, 2)
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(4.0 * 1.2)  # the longer side, padded 10% each side
    assert (x0 + x1) / 2 == pytest.approx(1.0) and (y0 + y1) / 2 == pytest.approx(3.0)
    grid_GGD = grid_PD.reshape(5, 5, 2)
    assert np.all(np.diff(grid_GGD[..., 0], axis=1) > 0) and np.all(np.diff(grid_GGD[..., 0], axis=0) == 0)
    assert np.all(np.diff(grid_GGD[..., 1], axis=0) > 0) and np.all(np.diff(grid_GGD[..., 1], axis=1) == 0)


def test_region_sequences_put_the_context_first_and_the_grid_point_last():
    context_KD = jnp.arange(6.0).reshape(3, 2)
    labels_K = jnp.array([1, 0, 1], jnp.int32)
    grid_PD = jnp.array([[10.0, 11.0], [12.0, 13.0]])
    x_PSD, y_PS = region_sequences(context_KD, labels_K, grid_PD)
    assert x_PSD.shape == (2, 4, 2) and y_PS.shape == (2, 4)
    for p in range(2):
        np.testing.assert_array_equal(x_PSD[p, :3], context_KD)
        np.testing.assert_array_equal(x_PSD[p, 3], grid_PD[p])
        np.testing.assert_array_equal(y_PS[p], [1, 0, 1, 0])


def test_ncm_given_the_prototypes_predicts_the_voronoi_rule():
    family = tasks.get("prototype")
    episode = family.sample(jax.random.key(3), 1, 50)
    prototypes_CD = episode.params["prototypes"][0]
    grid_PD, _ = region_grid(np.asarray(episode.x[0]), 30)
    ncm = learners.build("ncm", num_classes=2)
    pred = predict_regions(ncm, None, prototypes_CD, jnp.array([0, 1]), grid_PD, 2, chunk=128)  # 900 = 7 chunks + 4
    true = np.asarray(rule_labels(family, {"prototypes": prototypes_CD}, jnp.asarray(grid_PD)))
    assert 0 < true.sum() < true.size  # the boundary crosses the grid
    assert np.sum(pred != true) <= 2  # at most a tie on the bisector
    swapped = predict_regions(ncm, None, prototypes_CD, jnp.array([1, 0]), grid_PD, 2)
    assert np.sum(swapped == true) <= 2  # the labels, not the order, decide


@dataclasses.dataclass(frozen=True)
class _PaddedSlot:
    """A fake ICL-like learner with 2C outputs whose argmax is the padded slot 3 for points right of x=0."""

    name = "padded"

    def predict(self, params, x, y, positions=None):
        query = x[:, positions]  # [B, K, d]
        right = (query[..., 0] > 0)[..., None]
        return jnp.where(right, jnp.array([0.0, 0.0, 0.0, 1.0]), jnp.array([0.0, 1.0, 0.0, 0.0]))


def test_an_argmax_into_a_padded_slot_is_its_own_invalid_class():
    grid_PD, _ = region_grid(np.array([[-1.0, -1.0], [1.0, 1.0]]), 8)
    pred = predict_regions(_PaddedSlot(), None, jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32), grid_PD, 2, chunk=5)
    np.testing.assert_array_equal(pred, np.where(grid_PD[:, 0] > 0, 2, 1))
