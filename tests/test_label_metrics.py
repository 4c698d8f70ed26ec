"""Labelling metrics against brute force, hand computations and sklearn's documented values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from icl_meta import evaluate
from icl_meta.errors import ConfigError
from icl_meta.evaluate import bootstrap
from icl_meta.label_metrics import (
    accuracy_perm,
    accuracy_raw,
    ari,
    ari_per_task,
    best_permutation,
    collapsed,
    confusion,
    gap_recovered,
    marginal_entropy,
    nmi,
    nmi_per_task,
    paired_difference,
    scores,
    summary,
)


def _random_labellings(seed: int, b: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, c, size=(b, n)), rng.integers(0, c, size=(b, n))


def test_confusion_counts() -> None:
    conf = confusion([0, 1, 1, 2, 2, 2], [0, 0, 1, 2, 2, 1], 3)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 1, 1], [0, 0, 2]])  # rows true, columns predicted


def test_accuracy_perm_is_invariant_under_relabelling_of_predictions() -> None:
    pred_BN, true_BN = _random_labellings(0, 40, 25, 4)
    rng = np.random.default_rng(1)
    shuffles_BC = np.stack([rng.permutation(4) for _ in range(40)])
    shuffled_BN = np.take_along_axis(shuffles_BC, pred_BN, axis=1)
    np.testing.assert_allclose(accuracy_perm(shuffled_BN, true_BN, 4), accuracy_perm(pred_BN, true_BN, 4))
    perm_BC = best_permutation(pred_BN, true_BN, 4)
    assert np.all(np.sort(perm_BC, axis=1) == np.arange(4))  # one-to-one
    renamed_BN = np.take_along_axis(perm_BC, pred_BN, axis=1)
    np.testing.assert_allclose(accuracy_raw(renamed_BN, true_BN), accuracy_perm(pred_BN, true_BN, 4))


def test_accuracy_perm_equals_raw_when_names_are_already_best() -> None:
    _, true_BN = _random_labellings(2, 30, 40, 3)
    np.testing.assert_array_equal(accuracy_perm(true_BN, true_BN, 3), 1.0)
    np.testing.assert_array_equal(accuracy_raw(true_BN, true_BN), 1.0)
    noisy_BN = true_BN.copy()
    flip = np.random.default_rng(3).random(true_BN.shape) < 0.15  # a few errors: the identity stays the best naming
    noisy_BN[flip] = (noisy_BN[flip] + 1) % 3
    np.testing.assert_allclose(accuracy_perm(noisy_BN, true_BN, 3), accuracy_raw(noisy_BN, true_BN))
    assert accuracy_raw(noisy_BN, true_BN).max() < 1.0
    np.testing.assert_array_equal(best_permutation(noisy_BN, true_BN, 3), np.tile(np.arange(3), (30, 1)))
    np.testing.assert_array_equal(accuracy_raw((true_BN + 1) % 3, true_BN), 0.0)  # all named wrong...
    np.testing.assert_array_equal(accuracy_perm((true_BN + 1) % 3, true_BN, 3), 1.0)  # ...but all found


@pytest.mark.parametrize("c", [3, 4])
def test_accuracy_perm_against_brute_force(c: int) -> None:
    pred_BN, true_BN = _random_labellings(c, 60, 12, c)
    brute_B = [
        max(np.mean(np.asarray(perm)[pred] == true) for perm in itertools.permutations(range(c)))
        for pred, true in zip(pred_BN, true_BN)
    ]
    np.testing.assert_allclose(accuracy_perm(pred_BN, true_BN, c), brute_B)


def test_nmi_and_ari_of_identical_and_independent_partitions() -> None:
    true = np.random.default_rng(4).integers(0, 3, size=500)
    renamed = np.array([7, -1, 3])[true]  # any integer ids
    assert nmi(renamed, true) == pytest.approx(1.0) and ari(renamed, true) == pytest.approx(1.0)
    pred_N, true_N = _random_labellings(5, 1, 20000, 3)
    assert abs(ari(pred_N[0], true_N[0])) < 0.005 and nmi(pred_N[0], true_N[0]) < 0.005


def test_ari_hand_values() -> None:
    """sklearn's documented adjusted_rand_score examples; over unordered pairs of [0,0,1,1] vs [0,0,1,2]: tp=1 (the
    pair 01), fn=1 (23), fp=0, tn=4, so ARI = 2 (1*4 - 0) / ((1+1)(1+4) + (1+0)(0+4)) = 8/14."""
    assert ari([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.5714285714285715, abs=1e-15)
    assert ari([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714285715, abs=1e-15)
    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert ari([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    assert ari([0, 0, 0, 0], [5, 5, 5, 5]) == 1.0  # nothing split: sklearn's 1


def test_nmi_hand_values() -> None:
    """pred [0,0,1,1], true [0,0,1,2]: H(T) = 1.5 ln 2, H(P) = ln 2, I = H(T) - H(T|P) = 1.5 ln 2 - 0.5 ln 2 = ln 2.
    Arithmetic normalisation (the default, sklearn's): ln 2 / ((1.5 + 1) ln 2 / 2) = 0.8."""
    pred, true = [0, 0, 1, 1], [0, 0, 1, 2]
    assert nmi(pred, true) == pytest.approx(0.8, abs=1e-12)
    assert nmi(pred, true, average="geometric") == pytest.approx(1 / math.sqrt(1.5), abs=1e-12)
    assert nmi(pred, true, average="min") == pytest.approx(1.0, abs=1e-12)
    assert nmi(pred, true, average="max") == pytest.approx(1 / 1.5, abs=1e-12)
    assert nmi([1, 1, 1], [0, 0, 0]) == 1.0 and nmi([0, 1, 0, 1], [0, 0, 1, 1]) == 0.0  # sklearn's limit cases


def test_per_task_nmi_and_ari_equal_single_task_calls() -> None:
    pred_BN, true_BN = _random_labellings(6, 20, 15, 4)
    pred_BN[0] = 2  # one-cluster predictions, and a task with classes missing from both
    pred_BN[1], true_BN[1] = pred_BN[1] % 2, true_BN[1] % 2
    for average in ("arithmetic", "geometric"):
        want = [nmi(p, t, average=average) for p, t in zip(pred_BN, true_BN)]
        np.testing.assert_allclose(nmi_per_task(pred_BN, true_BN, 4, average=average), want, atol=1e-12)
        np.testing.assert_allclose(nmi(pred_BN, true_BN, average=average), want, atol=1e-12)  # a batch at once
    want = [ari(p, t) for p, t in zip(pred_BN, true_BN)]
    np.testing.assert_allclose(ari_per_task(pred_BN, true_BN, 4), want)
    np.testing.assert_allclose(ari(pred_BN, true_BN), want)
    np.testing.assert_allclose(ari(pred_BN * 10 - 3, true_BN), want)  # any ids, one renaming for the batch


def test_marginal_entropy_and_collapse() -> None:
    labels_BN = np.array([[1] * 12, [0, 1, 2] * 4, [0] * 11 + [1], [0] * 8 + [1] * 4])
    np.testing.assert_allclose(marginal_entropy(labels_BN, 3), [0.0, math.log(3), 0.2868, 0.6365], atol=1e-4)
    # collapse: entropy < 0.5 log 3 = 0.549
    np.testing.assert_array_equal(collapsed(labels_BN, 3), [True, False, True, False])
    two_BN = np.array([[0] * 9 + [1], [0] * 8 + [1] * 2])  # H = 0.325 and 0.500 against 0.5 log 2 = 0.347
    np.testing.assert_array_equal(collapsed(two_BN, 2), [True, False])


def test_scores_of_a_hand_made_labelling_against_a_numpy_recomputation() -> None:
    true_BN = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2]])
    # task 0: the true clusters under other names; task 1: collapsed onto class 0; task 2: one point wrong
    pred_BN = np.array([[1, 1, 0, 0, 2, 2], [0, 0, 0, 0, 0, 1], [0, 1, 2, 0, 1, 1]])
    got = scores(pred_BN, true_BN, 3)
    assert list(got) == ["accuracy", "accuracy_perm", "nmi", "collapsed"]

    def nmi_by_hand(p: np.ndarray, t: np.ndarray) -> float:  # I(T; P) / mean(H(T), H(P)) from the joint histogram
        joint_CC = np.array([[np.mean((t == i) & (p == j)) for j in range(3)] for i in range(3)])
        pt, pp = joint_CC.sum(1), joint_CC.sum(0)
        nz = joint_CC > 0
        mi = np.sum(joint_CC[nz] * np.log(joint_CC[nz] / np.outer(pt, pp)[nz]))
        h = [-np.sum(q[q > 0] * np.log(q[q > 0])) for q in (pt, pp)]
        return mi / np.mean(h)

    best_perm = [
        max(np.mean(np.array(perm)[p] == t) for perm in itertools.permutations(range(3)))
        for p, t in zip(pred_BN, true_BN, strict=True)
    ]
    hist_BC = np.stack([np.bincount(p, minlength=3) / 6 for p in pred_BN])
    entropy_B = [-np.sum(h[h > 0] * np.log(h[h > 0])) for h in hist_BC]
    np.testing.assert_allclose(got["accuracy"], (pred_BN == true_BN).mean(1))
    np.testing.assert_allclose(got["accuracy"], [2 / 6, 2 / 6, 5 / 6])
    np.testing.assert_allclose(got["accuracy_perm"], best_perm)
    np.testing.assert_allclose(got["accuracy_perm"], [1.0, 3 / 6, 5 / 6])  # task 1: renaming 1 -> 2 finds one more
    np.testing.assert_allclose(got["nmi"], [nmi_by_hand(p, t) for p, t in zip(pred_BN, true_BN, strict=True)])
    assert got["nmi"][0] == pytest.approx(1.0)
    np.testing.assert_array_equal(got["collapsed"], (np.array(entropy_B) < 0.5 * np.log(3)).astype(float))
    np.testing.assert_array_equal(got["collapsed"], [0.0, 1.0, 0.0])
    # regression: only the squared error, averaged over each task's points
    pred_BN2, true_BN2 = np.array([[0.5, 1.0, -1.0], [2.0, 2.0, 2.0]]), np.array([[0.0, 1.0, 1.0], [2.0, 2.0, 3.0]])
    regression = scores(pred_BN2, true_BN2, None)
    assert list(regression) == ["squared_error"]
    np.testing.assert_allclose(regression["squared_error"], [(0.25 + 0 + 4) / 3, 1 / 3])


def test_gap_recovered_arithmetic() -> None:
    assert gap_recovered(0.8, 0.5, 0.9) == pytest.approx(0.75)
    assert gap_recovered([0.7, 0.9], [0.4, 0.6], [0.9, 0.9]) == pytest.approx((0.8 - 0.5) / (0.9 - 0.5))
    assert gap_recovered(0.5, 0.5, 0.9) == 0.0 and gap_recovered(0.95, 0.5, 0.9) == pytest.approx(1.125)
    assert math.isnan(gap_recovered(0.8, 0.6, 0.6)) and math.isnan(gap_recovered(0.8, 0.6, 0.6 + 1e-12))
    assert math.isnan(gap_recovered(0.8, math.nan, 0.9))


def test_summary_reuses_the_task_bootstrap() -> None:
    values_B = np.random.default_rng(7).random(32)
    record = bootstrap(values_B[:, None], 500, 0.9, 3)
    assert summary(values_B, 500, 0.9, 3) == {k: pytest.approx(record[k][0]) for k in ("mean", "lo", "hi")}


def test_paired_difference() -> None:
    rng = np.random.default_rng(8)
    base_B = rng.random(40)
    same = paired_difference(base_B, base_B)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}
    noise_B = 0.1 * rng.normal(size=20)
    symmetric = paired_difference(base_B + np.concatenate([noise_B, -noise_B]), base_B)  # mean difference exactly 0
    assert symmetric["lo"] < 0 < symmetric["hi"] and symmetric["mean"] == pytest.approx(0, abs=1e-15)
    assert symmetric["p"] > 0.9
    shifted = paired_difference(base_B + 0.05 + 0.01 * rng.normal(size=40), base_B, resamples=999)
    assert 0 < shifted["lo"] < shifted["mean"] < shifted["hi"] and shifted["mean"] == pytest.approx(0.05, abs=0.01)
    assert shifted["p"] == 1 / 1000  # no sign pattern is as extreme: the smallest p the test can give
    flipped = paired_difference(base_B, base_B + 0.05 + 0.01 * rng.normal(size=40))
    assert flipped["hi"] < 0 and flipped["p"] < 0.01


def test_seeds_by_tasks_get_a_crossed_bootstrap() -> None:
    """[S, B] values (seeds x the same tasks): one seed is the task bootstrap; a spread between seeds widens the
    interval beyond the task bootstrap of the pooled values; the interval is the quantiles of resampled sub-tables."""
    rng = np.random.default_rng(9)
    tasks_B = rng.random(30)
    assert summary(tasks_B[None], 500, 0.9, 3) == summary(tasks_B, 500, 0.9, 3)
    values_SB = tasks_B + np.array([[-0.2], [0.0], [0.2]]) + 0.01 * rng.normal(size=(3, 30))
    crossed, pooled = summary(values_SB), summary(values_SB.reshape(-1))
    assert crossed["mean"] == pytest.approx(values_SB.mean()) and pooled["mean"] == pytest.approx(values_SB.mean())
    assert crossed["hi"] - crossed["lo"] > 2 * (pooled["hi"] - pooled["lo"])
    # the same resampling written out: seeds and tasks drawn independently, the sub-table's mean
    draws = np.random.default_rng((0, 2))
    seeds_RS = draws.multinomial(3, np.full(3, 1 / 3), size=1000)
    tasks_RB = draws.multinomial(30, np.full(30, 1 / 30), size=1000)
    means_R = [seeds_RS[r] @ values_SB @ tasks_RB[r] / 90 for r in range(1000)]
    assert crossed["lo"] == pytest.approx(np.quantile(means_R, 0.025))
    assert crossed["hi"] == pytest.approx(np.quantile(means_R, 0.975))
    # paired: the same resampling on the differences, the sign-flip test on the seed means per task
    other_SB = values_SB - 0.05
    paired = paired_difference(values_SB, other_SB)
    assert paired["mean"] == pytest.approx(0.05) and paired["lo"] == pytest.approx(0.05)
    assert paired["p"] == paired_difference(values_SB.mean(0), other_SB.mean(0))["p"]


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: accuracy_perm([[0, 1]], [[0, 1]], 0), "num_classes must be an integer >= 1, got 0"),
        (lambda: accuracy_perm([[0, 3]], [[0, 1]], 3), "pred must hold class ids in 0..2, got values in 0..3"),
        (lambda: accuracy_raw([[0, 1]], [[0, 1, 1]]), "pred and true must have one shape, got (1, 2) and (1, 3)"),
        (lambda: accuracy_raw([0, 1], [0, 1]), "pred must be an array [B, N] with N >= 1, got (2,)"),
        (lambda: nmi([0.5, 1.0], [0, 1]), "pred must hold integer class ids, got dtype float64"),
        (lambda: nmi([0, 1], [0, 1], average="mean"), "nmi: average must be one of arithmetic, geometric, min, max"),
        (lambda: paired_difference([1.0, 2.0], [1.0]), "a_B and b_B must have one shape, got (2,) and (1,)"),
        (lambda: paired_difference([1.0], [1.0], level=1.0), "paired_difference: level must be a number in (0, 1)"),
        (lambda: summary([1.0], resamples=0), "summary: resamples must be an integer >= 1, got 0"),
        (lambda: summary(np.ones((2, 2, 2))), "summary: values_B must be an array [B] (tasks) or [S, B]"),
        (lambda: gap_recovered(1, 0, 1, min_gap=-1), "gap_recovered: min_gap must be a finite number >= 0"),
    ],
)
def test_bad_input_is_a_one_line_config_error(call, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_seed_interval_is_students_t_interval():
    """A few runs' mean with the t interval, against the textbook formula with the t quantile from a table."""
    values = [1.0, 2.0, 4.0, 5.0]
    got = evaluate.seed_interval(values)
    half = 3.182446305284263 * np.std(values, ddof=1) / 2.0  # t_{0.975, 3}
    assert got["n"] == 4 and got["mean"] == pytest.approx(3.0)
    assert (got["lo"], got["hi"]) == pytest.approx((3.0 - half, 3.0 + half))
    single = evaluate.seed_interval([2.5])
    assert single["mean"] == 2.5 and np.isnan(single["lo"]) and np.isnan(single["hi"])
