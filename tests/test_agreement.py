"""The agreement analysis (`icl_meta.agreement`): pointwise agreement against numpy, records, summaries, the own-rule
check, the families' optimal rules and the plots. `icl-meta eval --agreement` is tested in test_cli.py, on its run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import baselines
import tasks
from icl_meta import agreement, learners
from icl_meta.contracts import Episode, TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.plotting import plot_agreement, plot_agreement_curves

CLS = TaskSpec(d=2, num_classes=3)
REG = TaskSpec(d=3, num_classes=None)


@pytest.fixture(scope="module")
def cls_episode() -> Episode:
    rng = np.random.default_rng(0)
    x_BND = rng.normal(size=(5, 9, 2)).astype(np.float32)
    y_BN = rng.integers(0, 3, size=(5, 9)).astype(np.int32)
    return Episode(jnp.asarray(x_BND), jnp.asarray(y_BN), {})


@pytest.fixture(scope="module")
def reg_episode() -> Episode:
    return tasks.get("linear_regression", d=3, noise_std=0.1).sample(jax.random.key(0), 8, 10)


def _ncm_np(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> int:
    protos = [xc[yc == k].mean(0) if np.any(yc == k) else np.zeros_like(xq) for k in range(3)]
    return int(np.argmax([-np.sum((xq - p) ** 2) for p in protos]))


def _nn_np(xc: np.ndarray, yc: np.ndarray, xq: np.ndarray) -> int:
    return 0 if len(xc) == 0 else int(yc[np.argmin(np.sum((xc - xq) ** 2, axis=1))])


def test_argmax_agreement_matches_numpy(cls_episode):
    x, y = np.asarray(cls_episode.x, np.float64), np.asarray(cls_episode.y)
    expected_BN = np.array(
        [[_ncm_np(xb[:i], yb[:i], xb[i]) == _nn_np(xb[:i], yb[:i], xb[i]) for i in range(9)] for xb, yb in zip(x, y)]
    )
    ncm = learners.build("ncm", num_classes=3)
    rules = {"knn(1)": learners.build("knn", k=1, num_classes=3), "self": ncm}
    values = agreement.per_position(ncm, None, rules, CLS, cls_episode, chunk=2)  # 3 chunks, the last padded
    np.testing.assert_array_equal(values["knn(1)"], expected_BN.astype(np.float32))
    assert 0 < expected_BN.mean() < 1  # the case discriminates
    np.testing.assert_array_equal(values["self"], 1.0)
    part = agreement.per_position(ncm, None, rules, CLS, cls_episode, positions=[0, 4, 8])
    np.testing.assert_array_equal(part["knn(1)"], values["knn(1)"][:, [0, 4, 8]])


@pytest.mark.parametrize("own", ["ncm", "least_squares"])
def test_a_rule_agrees_with_itself_among_all_rules(cls_episode, reg_episode, own):
    spec, episode = (CLS, cls_episode) if own == "ncm" else (REG, reg_episode)
    rules = baselines.agreement_rules(spec)
    values = agreement.per_position(rules[own], None, rules, spec, episode)  # one program: every rule at once
    assert list(values) == list(rules) and all(v.shape == (episode.x.shape[0], 10 if own != "ncm" else 9)
                                               for v in values.values())  # fmt: skip
    np.testing.assert_array_equal(values[own], 0.0 if spec.is_regression else 1.0)
    others = np.stack([v for label, v in values.items() if label != own])
    assert np.all(others >= 0) and (spec.is_regression or np.all(others <= 1)) and np.any(others != values[own])


def test_normalised_squared_difference_matches_numpy(reg_episode):
    ls, me = baselines.get("least_squares"), baselines.get("mean_estimator")
    x, y = reg_episode.x, reg_episode.y
    diff_BN = (np.asarray(ls.predict(None, x, y), np.float64) - np.asarray(me.predict(None, x, y))) ** 2
    expected_BN = diff_BN / np.var(np.asarray(y, np.float64))
    records = agreement.curves_on(ls, None, {"mean_estimator": me}, {"lr": reg_episode}, {"lr": REG}, chunk=4, seed=4)
    (record,) = records
    assert record["metric"] == "normalised_squared_difference" and record["learner"] == "least_squares"
    assert record["rule"] == "mean_estimator" and record["test"] == "lr" and record["seed"] == 4
    assert record["target_var"] == pytest.approx(np.var(np.asarray(y, np.float64)))
    assert record["agreement_s"] >= 0 and record["positions"] == list(range(10))
    np.testing.assert_allclose(record["mean"], expected_BN.mean(0), rtol=1e-4, atol=1e-7)
    assert np.all(np.array(record["lo"]) <= np.array(record["mean"]) + 1e-12)
    assert record["mean"][0] == 0.0  # both predict 0 on the empty context


def _record(rule: str, mean: list[float], metric: str = "argmax_agreement", learner: str = "icl") -> dict:
    return {"learner": learner, "rule": rule, "test": "t", "metric": metric, "positions": list(range(len(mean))),
            "mean": mean, "lo": mean, "hi": mean, "agreement_s": 1.0}  # fmt: skip


def test_closest_rule_and_summary_on_constructed_records():
    records = [_record("a", [1.0, 0.5, 0.9]), _record("b", [1.0, 0.8, 0.7]), _record("a", [0.1, 0.2, 0.3], learner="x")]
    icl, other = agreement.closest_rule(records)
    assert icl["learner"] == "icl" and icl["rule"] == ["a", "b", "a"] and icl["value"] == [1.0, 0.8, 0.9]
    assert other["learner"] == "x" and other["rule"] == ["a", "a", "a"]
    sq = "normalised_squared_difference"
    reg = [_record("a", [0.0, 0.5], sq), _record("b", [0.1, 0.2], sq)]
    assert agreement.closest_rule(reg)[0]["rule"] == ["a", "b"]  # lower is closer
    rows = agreement.summary(records, 1, 3)
    assert [(r["learner"], r["rule"], r["positions"]) for r in rows] == [("icl", "a", "1-2"), ("icl", "b", "1-2"),
                                                                         ("x", "a", "1-2")]  # fmt: skip
    assert rows[0]["mean"] == pytest.approx(0.7) and "agreement_s" not in rows[0] and "lo" not in rows[0]
    with pytest.raises(ConfigError, match=r"stop must be an integer in 2\.\.3"):
        agreement.summary(records, 1, 1)


def test_own_rule_check_held_and_not_held():
    records = [_record("ncm", [0.9, 0.9]), _record("matching", [0.8, 0.95]), _record("knn(1)", [0.7, 0.7])]
    (check,) = agreement.own_rule_check(agreement.summary(records), "ncm")
    assert check["held"] and check["best_other"] == "matching"
    assert check["own_value"] == pytest.approx(0.9) and check["margin"] == pytest.approx(0.9 - 0.875)
    (check,) = agreement.own_rule_check(agreement.summary(records, 1), "ncm")
    assert not check["held"] and check["margin"] == pytest.approx(-0.05) and check["best_other_value"] == 0.95
    sq = "normalised_squared_difference"
    reg = [_record("least_squares", [0, 0.1], sq), _record("gd(1)", [0, 0.5], sq), _record("ridge(1)", [0, 0.3], sq)]
    (check,) = agreement.own_rule_check(agreement.summary(reg), "least_squares")
    assert check["held"] and check["best_other"] == "ridge(1)" and check["margin"] == pytest.approx(0.1)
    (check,) = agreement.own_rule_check(agreement.summary(reg), "gd(1)")
    assert not check["held"] and check["best_other"] == "least_squares"
    with pytest.raises(ConfigError, match="rule 'averaging' is not among the compared rules"):
        agreement.own_rule_check(agreement.summary(records), "averaging")


def test_rules_must_fit_the_task(cls_episode):
    ncm = learners.build("ncm", num_classes=3)
    with pytest.raises(ConfigError, match="num_classes=2"):
        agreement.per_position(ncm, None, {"ncm": learners.build("ncm", num_classes=2)}, CLS, cls_episode)
    with pytest.raises(ConfigError, match="regression"):
        agreement.per_position(ncm, None, {"ls": baselines.get("least_squares")}, CLS, cls_episode)
    with pytest.raises(ConfigError, match="no rules"):
        agreement.per_position(ncm, None, {}, CLS, cls_episode)


def test_agreement_rules_labels():
    assert list(baselines.agreement_rules(CLS)) == ["ncm", "matching", "averaging", "knn(1)", "knn(3)"]
    assert list(baselines.agreement_rules(REG)) == ["least_squares", "ridge(0.1)", "ridge(1)", "ridge(10)", "gd(1)",
                                                    "gd(3)", "gd(10)", "mean_estimator"]  # fmt: skip
    assert baselines.agreement_rules(REG)["gd(3)"] == baselines.get("gradient_descent", steps=3, lr=1.0)


def test_every_family_names_a_registered_optimal_rule():
    names = set(learners.names())
    optimal = {name: tasks.get(name).optimal_rule for name in tasks.names()}
    assert all(rule is None or rule in names for rule in optimal.values()), optimal
    assert optimal["prototype"] == "ncm" and optimal["pairwise"] == "matching" and optimal["radius"] is None
    assert optimal["amortization"] == "averaging" and optimal["linear_regression"] == "least_squares"
    for name, rule in optimal.items():  # the optimal rule is one of the compared labels
        assert rule is None or rule in baselines.agreement_rules(tasks.get(name).spec), name


def test_plots_write_pngs(tmp_path):
    records = [_record("ncm", [0.9, 0.9]), _record("matching", [0.8, 0.95]), _record("ncm", [0.5, 0.6], learner="x")]
    sq = "normalised_squared_difference"
    records += [{**_record("gd(1)", [0.0, 0.5], sq), "test": "lr"}, {**_record("ls", [0.0, 0.1], sq), "test": "lr"}]
    rows = agreement.summary(records)
    png = plot_agreement(rows, tmp_path / "heat.png", "agreement", optimal={"t": "ncm", "lr": None})
    assert png.stat().st_size > 10_000
    png = plot_agreement_curves(records, tmp_path / "curves.png", yscale="symlog")
    assert png.stat().st_size > 10_000
    with pytest.raises(ConfigError, match="no rows"):
        plot_agreement([], tmp_path / "none.png")


def test_seconds_count_each_group_once():
    records = [
        {"learner": "icl", "test": "a", "metric": agreement.AGREEMENT, "rule": r, "agreement_s": 2.0} for r in "xyz"
    ] + [{"learner": "icl", "test": "b", "metric": agreement.AGREEMENT, "rule": "x", "agreement_s": 0.5}]
    assert agreement.seconds(records) == 2.5
