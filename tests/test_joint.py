"""Joint inference (icl_meta.joint): J against literal per-prefix computations, exact inference and unsupervised ICL
with a hand-made Bayes-optimal learner, the adapter's step 0, the gradient estimator against an exact gradient, the
demonstration sampler, and bad input."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import baselines
import tasks
from icl_meta import joint
from icl_meta.adapters import lora_apply, lora_init
from icl_meta.errors import ConfigError
from icl_meta.learners import build


def small_icl(protocol: str):
    # causal: no learned positions (with them, the query tokens' positions N+i depend on the sequence length N)
    positions = None if protocol == "causal" else 32
    return build("icl", preset="gpt2", width=16, depth=2, heads=2, positions=positions, protocol=protocol)


@pytest.fixture(scope="module")
def anchored():
    family = tasks.get("anchored_prototype", d=4, num_classes=3, sigma=0.5)
    return family, family.sample(jax.random.PRNGKey(0), 6, 7)


@pytest.mark.parametrize("protocol", ["causal", pytest.param("prefix", marks=pytest.mark.slow), "interleaved"])
def test_J_is_the_sum_of_one_prefix_at_a_time(anchored, protocol):
    family, ep = anchored
    learner = small_icl(protocol)
    params = learner.init(jax.random.PRNGKey(1), family.spec)
    C, n = 3, ep.x.shape[1]
    got = np.asarray(jax.jit(joint.joint_log_likelihood, static_argnums=(0, 4))(learner, params, ep.x, ep.y, C))
    literal = np.zeros(ep.x.shape[0])
    predict = jax.jit(learner.predict)  # one program per prefix length, not one per operation
    for i in range(n):  # prefix i alone: its last position's label-restricted log-probability of y_i
        out = np.asarray(predict(params, ep.x[:, : i + 1], ep.y[:, : i + 1]), np.float64)[:, -1, :C]
        log_p = out - np.log(np.exp(out).sum(-1, keepdims=True))
        literal += log_p[np.arange(len(literal)), np.asarray(ep.y[:, i])]
    np.testing.assert_allclose(got, literal, rtol=2e-5, atol=2e-5)


def test_J_of_orders_is_the_mean_over_permuted_sequences(anchored):
    family, ep = anchored
    learner = baselines.get("protonet", double_softmax=False)
    params = learner.init(jax.random.PRNGKey(2), family.spec)
    orders = joint.random_orders(jax.random.PRNGKey(3), 3, ep.x.shape[1])
    assert np.array_equal(np.asarray(orders[0]), np.arange(ep.x.shape[1]))
    got = joint.joint_log_likelihood(learner, params, ep.x, ep.y, 3, orders)
    each = [joint.joint_log_likelihood(learner, params, ep.x[:, o], ep.y[:, o], 3) for o in np.asarray(orders)]
    np.testing.assert_allclose(np.asarray(got), np.mean(each, axis=0), rtol=1e-6)


def bayes_for(family, sigma=None):
    return baselines.get(
        "gaussian_bayes",
        num_classes=family.num_classes,
        anchors=family.label_anchors().tolist(),
        prior_std=family.shift,
        noise_std=sigma or family.sigma,
    )


def test_exact_joint_inference_finds_the_true_labelling_with_the_bayes_learner():
    family = tasks.get("anchored_prototype", d=4, num_classes=2, sigma=0.2, shift=0.5, anchor_distance=4.0)
    ep = family.sample(jax.random.PRNGKey(4), 8, 8)
    learner = bayes_for(family)
    orders = joint.random_orders(jax.random.PRNGKey(5), 2, 8)
    found = joint.exact_joint_inference(learner, None, ep.x, 2, orders_KN=orders)
    assert np.array_equal(np.asarray(found["labels"]), np.asarray(ep.y))
    # the returned J is the J of the returned labelling, and the maximum over all 2^8 labellings
    direct = joint.joint_log_likelihood(learner, None, ep.x, found["labels"], 2, orders)
    np.testing.assert_allclose(np.asarray(found["J"]), np.asarray(direct), rtol=1e-5)
    assert found["J_all"].shape == (8, 256)
    # with the entropy term the score is J + gamma m H; a huge gamma forces a balanced labelling
    balanced = joint.exact_joint_inference(learner, None, ep.x, 2, gamma=100.0, orders_KN=orders)
    assert np.all(np.asarray(balanced["labels"]).sum(-1) == 4)


def test_exact_alignment_against_a_brute_force_recomputation():
    # noisy enough that the best labelling is not the true one, and the entropy term changes it
    family = tasks.get("anchored_prototype", d=4, num_classes=2, sigma=1.5, shift=0.5)
    ep = family.sample(jax.random.PRNGKey(20), 3, 4)
    x, true = ep.x, np.asarray(ep.y)
    learner, key, (b, m) = bayes_for(family), jax.random.PRNGKey(21), true.shape
    found = {"zeros": np.zeros((b, m), np.int32), "truth": true}
    got = joint.exact_alignment(learner, None, key, x, true, 2, found)
    # every labelling's J, one at a time, on the same two example orders
    labelings = np.array(list(itertools.product(range(2), repeat=m)), np.int32)
    orders = joint.random_orders(key, 2, m)

    def J(labels_Bm, x_BmD=x):
        return np.asarray(joint.joint_log_likelihood(learner, None, x_BmD, jnp.asarray(labels_Bm), 2, orders))

    j_BL = J(np.tile(labelings, (b, 1)), jnp.repeat(x, len(labelings), axis=0)).reshape(b, -1)  # one call
    h_L = np.array([-sum(p * np.log(p) for p in np.bincount(lab, minlength=2) / m if p > 0) for lab in labelings])
    for gamma in (0.0, 10.0):
        best = labelings[np.argmax(j_BL + gamma * m * h_L, axis=1)]
        assert got[f"accuracy_gamma{gamma:g}"] == pytest.approx((best == true).mean(), abs=1e-6)
        flipped = np.maximum((best == true).mean(1), (best != true).mean(1))  # C=2: the best renaming
        assert got[f"accuracy_perm_gamma{gamma:g}"] == pytest.approx(flipped.mean(), abs=1e-6)
        one_class = np.array([len(set(row)) == 1 for row in best])  # H < 0.5 log 2 with m=4: all in one class
        assert got[f"collapsed_gamma{gamma:g}"] == pytest.approx(one_class.mean(), abs=1e-6)
    assert got["accuracy_gamma0"] < got["accuracy_gamma10"] < 1.0
    assert got["J_best"] == pytest.approx(j_BL.max(1).mean() / m, abs=1e-5) and got["J_best"] > got["J_true"]
    assert got["J_true"] == pytest.approx(J(true).mean() / m, abs=1e-5) == pytest.approx(got["J_truth"], abs=1e-6)
    assert got["J_zeros"] == pytest.approx(J(found["zeros"]).mean() / m, abs=1e-5)
    zero_shot = np.argmax(np.asarray(joint.zero_shot(learner, None, x, 2)), -1)
    assert got["J_zero_shot"] == pytest.approx(J(zero_shot).mean() / m, abs=1e-5)
    assert got["true_within_1nat_per_point"] == pytest.approx(np.mean(j_BL.max(1) - J(true) <= m))
    acc_BL = (labelings[None] == true[:, None]).mean(-1)
    rank = lambda v: scipy.stats.rankdata(v)  # noqa: E731  average ranks: accuracy ties
    spearman = [np.corrcoef(rank(j_BL[i]), rank(acc_BL[i]))[0, 1] for i in range(b)]
    assert got["spearman_J_accuracy"] == pytest.approx(np.mean(spearman), abs=1e-6)
    assert 0.0 < got["spearman_J_accuracy"] <= 1.0  # the Bayes learner's J ranks accurate labellings higher


def test_balanced_random_labels_are_balanced_and_deterministic_in_the_key():
    key = jax.random.PRNGKey(22)
    labels = np.asarray(joint.balanced_random_labels(key, 5, 7, 3))
    assert labels.shape == (5, 7) and labels.dtype == np.int32
    for row in labels:  # 7 points, 3 classes: counts 3, 2, 2, a random permutation of 0 1 2 0 1 2 0
        np.testing.assert_array_equal(np.bincount(row, minlength=3), [3, 2, 2])
    assert len({tuple(row) for row in labels}) > 1  # each task its own order
    np.testing.assert_array_equal(labels, np.asarray(joint.balanced_random_labels(key, 5, 7, 3)))
    assert not np.array_equal(labels, np.asarray(joint.balanced_random_labels(jax.random.PRNGKey(23), 5, 7, 3)))
    # exactly the draws of one permutation per task, each with its own key of jax.random.split(key, B)
    keys = jax.random.split(key, 5)
    each = [np.asarray(jax.random.permutation(k, jnp.arange(7) % 3)) for k in keys]
    np.testing.assert_array_equal(labels, np.stack(each))


def test_labelling_entropy():
    y = jnp.array([[0, 0, 0, 0], [0, 1, 0, 1], [0, 1, 2, 3]])
    np.testing.assert_allclose(np.asarray(joint.labelling_entropy(y, 4)), [0.0, np.log(2), np.log(4)], atol=1e-6)


def test_unsupervised_icl_with_the_bayes_learner_reaches_095():
    # shift 0.75: zero-shot ~0.92 here; at larger shifts whole clusters sit nearer another class's anchor, and the
    # zero-shot labelling is a fixed point of the rounds even for this Bayes-optimal learner
    family = tasks.get("anchored_prototype", d=8, num_classes=3, sigma=0.3, shift=0.75)
    ep = family.sample(jax.random.PRNGKey(6), 16, 96)
    x_u, x_q, y_q = ep.x[:, :64], ep.x[:, 64:], np.asarray(ep.y[:, 64:])
    learner = bayes_for(family)
    zs_u = jnp.argmax(joint.zero_shot(learner, None, x_u, 3), -1)
    zs_q = jnp.argmax(joint.zero_shot(learner, None, x_q, 3), -1)
    out = joint.unsupervised_icl(
        learner, None, jax.random.PRNGKey(7), x_u, x_q, zs_u, zs_q, 3, joint.ICLConfig(rounds=3)
    )
    acc = (np.asarray(out["Q"]) == y_q).mean(axis=(1, 2))
    assert out["U"].shape == (4, 16, 64) and out["Q"].shape == (4, 16, 32)
    assert acc[-1] >= 0.95, acc
    assert acc[-1] > acc[0] + 0.02  # the zero-shot start is worse (prior only)


def test_demonstration_sampler_balances_classes_and_excludes_the_query():
    labels = jnp.array([0] * 45 + [1] * 5, jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(8), 400)
    idx = jax.vmap(lambda k: joint.sample_demos(k, labels, 6, True, jnp.int32(3), 2))(keys)
    idx = np.asarray(idx)
    assert not (idx == 3).any()
    assert all(len(set(row)) == 6 for row in idx)  # distinct demonstrations
    share_minority = (np.asarray(labels)[idx] == 1).mean()
    assert 0.35 < share_minority < 0.65  # 10% of the pool, about half of the demonstrations
    uniform = np.asarray(jax.vmap(lambda k: joint.sample_demos(k, labels, 6, False, jnp.int32(-1), 2))(keys))
    assert (np.asarray(labels)[uniform] == 1).mean() < 0.2


def test_adapter_starts_exactly_at_the_learner(anchored):
    family, ep = anchored
    learner = small_icl("causal")
    params = learner.init(jax.random.PRNGKey(9), family.spec)
    factors = lora_init(jax.random.PRNGKey(10), params, rank=2)
    adapted = lora_apply(params, factors)
    assert np.array_equal(
        np.asarray(learner.predict(adapted, ep.x, ep.y)), np.asarray(learner.predict(params, ep.x, ep.y))
    )
    moved = [None if f is None else {**f, "b": f["b"] + 0.1} for f in factors]
    assert not np.allclose(
        np.asarray(learner.predict(lora_apply(params, moved), ep.x, ep.y)),
        np.asarray(learner.predict(params, ep.x, ep.y)),
    )
    with pytest.raises(ConfigError, match="no weight matrices"):
        lora_init(jax.random.PRNGKey(0), None, 2)


def test_finetuning_step_0_is_zero_shot(anchored):
    family, ep = anchored
    learner = baselines.get("cnp")  # its empty-context prediction depends on x (ProtoNet's and MatchNet's: class 0)
    params = learner.init(jax.random.PRNGKey(11), family.spec)
    cfg = joint.FineTuneConfig(encoder="lora", steps=2, batch=2, n=4, eval_every=1)
    out = joint.unsupervised_finetune(learner, params, jax.random.PRNGKey(12), ep.x[:, :5], ep.x[:, 5:], 3, cfg)
    zs = np.asarray(jnp.argmax(joint.zero_shot(learner, params, ep.x, 3), -1))
    assert np.array_equal(np.asarray(out["U"][0]), zs[:, :5])
    assert np.array_equal(np.asarray(out["Q"][0]), zs[:, 5:])
    assert out["U"].shape == (3, 6, 5) and out["loss"].shape == (2,)


def test_rao_estimator_is_the_exact_gradient_for_one_position():
    """With N=1 and no entropy term the objective is sum_y pi(y) R(y), whose gradient the estimator gives exactly."""
    logits = jnp.array([[[0.3, -0.2, 0.5]], [[1.0, 0.0, -1.0]]])
    reward = jnp.array([[[-0.1, -2.0, -0.7]], [[-1.5, -0.2, -0.3]]])
    sampled = jnp.array([[2], [0]])

    def surrogate(z):
        return joint.surrogate_loss(jax.nn.log_softmax(z, -1), reward, reward, sampled, 0.0, "rao")

    def exact(z):
        return -jnp.mean(jnp.sum(jax.nn.softmax(z, -1) * reward, axis=(1, 2)))

    np.testing.assert_allclose(np.asarray(jax.grad(surrogate)(logits)), np.asarray(jax.grad(exact)(logits)), rtol=1e-6)


@pytest.mark.parametrize("estimator", ["rao", "reinforce"])
def test_estimators_are_unbiased_with_earlier_labels(estimator):
    """N=3, C=2: rewards that depend on the earlier sampled labels. The surrogate's gradient averaged over every
    labelling yhat (weighted by its probability) equals the exact gradient of E_yhat[sum_n R_n(yhat_n | yhat_<n)]."""
    n, C = 3, 2
    rng = np.random.default_rng(0)
    table = rng.normal(size=(C,) * n + (n, C))  # R_n(y | yhat_<n) read from the full labelling (only yhat_<n used)
    logits = jnp.asarray(rng.normal(size=(1, n, C)))
    labellings = list(itertools.product(range(C), repeat=n))

    def rewards(labels):  # [1, n, C]: position n's reward for every y, given the labels before n
        return jnp.asarray([[table[tuple(labels[:i]) + (0,) * (n - i)][i] for i in range(n)]], jnp.float32)

    def exact(z):
        pi = jax.nn.softmax(z, -1)[0]
        total = 0.0
        for y in labellings:
            p = jnp.prod(jnp.array([pi[i, y[i]] for i in range(n)]))
            total += p * sum(rewards(y)[0, i, y[i]] for i in range(n))
        return -total

    argmax = tuple(int(v) for v in np.argmax(np.asarray(logits[0]), -1))
    pi = np.asarray(jax.nn.softmax(logits, -1)[0])
    expected = 0.0
    for y in labellings:
        weight = np.prod([pi[i, y[i]] for i in range(n)])
        grad = jax.grad(
            lambda z, y=y: joint.surrogate_loss(
                jax.nn.log_softmax(z, -1), rewards(y), rewards(argmax), jnp.array([y]), 0.0, estimator
            )
        )(logits)
        expected = expected + weight * np.asarray(grad)
    np.testing.assert_allclose(expected, np.asarray(jax.grad(exact)(logits)), rtol=1e-4, atol=1e-6)


def test_entropy_term_is_the_entropy_of_the_mean_prediction():
    log_pi = jnp.log(jnp.array([[[0.9, 0.1], [0.9, 0.1]]]))
    zero = jnp.zeros((1, 2, 2))
    loss = joint.surrogate_loss(log_pi, zero, zero, jnp.zeros((1, 2), jnp.int32), 2.0, "rao")
    np.testing.assert_allclose(float(loss), -2.0 * -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), rtol=1e-6)


def test_regression_control_pseudo_labels_carry_no_information():
    """Ridge regression as the learner: zero-shot predicts 0, and unsupervised ICL, whose demonstrations carry the
    learner's own predictions (0), predicts 0 again: no gain where unlabeled inputs say nothing about y."""
    family = tasks.get("linear_regression", d=4)
    ep = family.sample(jax.random.PRNGKey(13), 8, 48)
    learner = baselines.get("ridge")
    x_u, x_q = ep.x[:, :32], ep.x[:, 32:]
    zs_u, zs_q = joint.zero_shot(learner, None, x_u, None), joint.zero_shot(learner, None, x_q, None)
    out = joint.unsupervised_icl(
        learner, None, jax.random.PRNGKey(14), x_u, x_q, zs_u, zs_q, None, joint.ICLConfig(rounds=2, demos=8, votes=2)
    )
    mse = ((np.asarray(out["Q"]) - np.asarray(ep.y[:, 32:])) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(mse, mse[0], rtol=1e-5)
    sup = joint.supervised_icl(
        learner, None, jax.random.PRNGKey(15), x_u, ep.y[:, :32], x_q, None, joint.ICLConfig(demos=8, votes=2)
    )
    assert ((np.asarray(sup[1]) - np.asarray(ep.y[:, 32:])) ** 2).mean() < 0.1 * mse[0]  # true labels do help


def test_bad_input_is_one_line(anchored):
    _family, ep = anchored
    learner = baselines.get("ncm", num_classes=3)
    with pytest.raises(
        ConfigError, match=r"N=16 is larger than the unlabeled set allows \(7 points, less the query: N <= 6\)"
    ):
        joint.unsupervised_icl(learner, None, jax.random.PRNGKey(0), ep.x, ep.x, ep.y, ep.y, 3)
    with pytest.raises(ConfigError, match="at most 6561"):
        joint.all_labelings(3, 9)
    with pytest.raises(ConfigError, match="needs a classifier"):
        joint.label_log_probs(baselines.get("ridge"), None, ep.x, ep.y.astype(jnp.float32), 3)
    with pytest.raises(ConfigError, match="sampling must be one of balanced, uniform"):
        joint.ICLConfig(sampling="weighted")
    with pytest.raises(ConfigError, match="encoder must be one of lora, linear"):
        joint.FineTuneConfig(encoder="mlp")
    with pytest.raises(ConfigError, match="regression"):
        joint.check_finetune(joint.FineTuneConfig(), 64, None)


def test_anchored_family_anchors_and_prior():
    family = tasks.get("anchored_prototype", d=8, num_classes=3)
    a = family.label_anchors()
    dists = [np.linalg.norm(a[i] - a[j]) for i in range(3) for j in range(i + 1, 3)]
    np.testing.assert_allclose(dists, 3.0, rtol=1e-5)
    assert np.array_equal(a, tasks.get("anchored_prototype", d=8, num_classes=3, sigma=0.4).label_anchors())
    assert not np.allclose(a, tasks.get("anchored_prototype", d=8, num_classes=3, anchor_seed=1).label_anchors())
    ep = family.sample(jax.random.PRNGKey(16), 4000, 2)
    offset = np.asarray(ep.params["prototypes"]) - a[None]
    np.testing.assert_allclose(offset.std(), family.shift, rtol=0.03)  # mu_c = a_c + shift * N(0, I) (no rotation)
    rotated = dataclasses.replace(family, rotation=0.3, shift=0.0).sample(jax.random.PRNGKey(17), 16, 2)
    norms = np.linalg.norm(np.asarray(rotated.params["prototypes"]), axis=-1)
    np.testing.assert_allclose(norms, np.linalg.norm(a, axis=-1)[None].repeat(16, 0), rtol=1e-4)  # a rotation
    zs = np.argmin(((np.asarray(ep.x)[:, :, None] - a[None, None]) ** 2).sum(-1), -1)
    assert 0.6 < (zs == np.asarray(ep.y)).mean() < 0.85  # the zero-shot prior: better than chance (1/3), imperfect
