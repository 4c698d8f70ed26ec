"""Figure 3 end to end at smoke scale (curves, summary, figures, region records), and the decision-region helpers."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from experiments import fig3_generalization
from experiments.fig3_generalization import (
    EXTENT_POINTS,
    FAMILIES,
    RADIUS,
    SCALES,
    predict_regions,
    region_families,
    region_grid,
    region_sequences,
    rule_labels,
    sample_task,
)
from icl_meta import learners
from icl_meta.runs import read_json

CURVE_KEYS = {"train", "test", "learner", "metric", "kind", "positions", "mean", "lo", "hi", "part"}
REFERENCES = {"ncm", "matching", "averaging", "knn"}
LEARNERS = ("icl", "protonet")  # ICL draws the regions; the other learners take the same code path (and ~30 s more)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig3")
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root), "--no-progress"]
    return root, fig3_generalization.main([*argv, "--learners", ",".join(LEARNERS)])


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_smoke_run_writes_every_curve_summary_and_figure(smoke):
    root, doc = smoke
    settings = SCALES["smoke"]
    assert {"experiment", "scale", "config", "provenance", "curves", "summary", "regions", "run_summaries"} <= set(doc)
    assert doc["experiment"] == "fig3_generalization" and doc["scale"] == "smoke"
    assert read_json(root / "fig3_generalization_smoke.json")["curves"] == doc["curves"]
    for curve in doc["curves"]:
        assert CURVE_KEYS <= set(curve), curve.keys()
        assert curve["positions"] == list(range(settings.n)) and curve["metric"] == "accuracy"
        assert all(lo <= m + 1e-9 and m <= hi + 1e-9 for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"]))
        assert all(0.0 <= m <= 1.0 for m in curve["mean"])

    # (a): every learner and closed-form rule on every family at every sigma, once each
    shift = [(c["learner"], c["test"], c["sigma"]) for c in doc["curves"] if c["part"] == "shift"]
    names = [*LEARNERS, *REFERENCES]
    assert sorted(shift) == sorted(itertools.product(names, FAMILIES, settings.sigmas))
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
        assert record["learner"] == "icl" and record["context"] == 20 and record["grid"] == settings.grid
        assert 0.0 <= record["agreement"] <= 1.0 and len(record["extent"]) == 4
    with np.load(root / "fig3_regions_smoke.npz") as arrays:
        assert arrays["radius_pred"].shape == (settings.grid, settings.grid)
        assert arrays["prototype_context_x"].shape == (20, 2)
    for png in ("fig3_shift_smoke.png", "fig3_radius_smoke.png", "fig3_regions_smoke.png",
                "fig3_agreement_smoke.png", "fig3_agreement_shift_smoke.png"):  # fmt: skip
        assert (root / png).stat().st_size > 20_000

    # (d): agreement of every learner with every rule on every shifted set and on radius; the own-rule checks
    rules = {"ncm", "matching", "averaging", "knn(1)", "knn(3)"}
    shifted = [(r["learner"], r["test"], r["sigma"], r["rule"]) for r in doc["agreement"] if r["part"] == "shift"]
    ends = (settings.sigmas[0], settings.sigmas[-1])
    grid = itertools.product(LEARNERS, FAMILIES, settings.sigmas)
    measured = {(n, f, s) for n, f, s in grid if n in fig3_generalization.AGREEMENT_SWEEP or s in ends}
    assert sorted(shifted) == sorted((*key, rule) for key in measured for rule in rules)
    assert {r["rule"] for r in doc["agreement"] if r["part"] == RADIUS} == rules
    assert {(c["learner"], c["test"], c["sigma"]) for c in doc["own_rule"]} == measured


@pytest.mark.slow  # a whole figure (or benchmark) at smoke scale, or training to quality
def test_without_icl_the_regions_are_skipped(smoke, capsys):
    root, _ = smoke
    argv = ["--scale", "smoke", "--out", str(root / "runs"), "--figures", str(root / "sub"), "--no-progress"]
    doc = fig3_generalization.main([*argv, "--learners", "protonet"])  # reuses the fixture's finished run
    assert doc["regions"] == [] and "(c) skipped" in capsys.readouterr().out
    assert {c["learner"] for c in doc["curves"] if c["kind"] == "trained"} == {"protonet"}
    assert not (root / "sub" / "fig3_regions_smoke.png").exists()


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
