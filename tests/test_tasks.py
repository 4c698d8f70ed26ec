"""Task families: labels recomputed from Episode.params by independent numpy formulas, balance, determinism,
variants, and the errors for bad input.

Every family is sampled through `jax.jit(family.sample, static_argnums=(1, 2))`, once per family and shape (the
compiles dominate the runtime), and the big batches are shared between tests through a module-level cache.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from icl_meta.errors import ConfigError
from tasks.mixture import block_sizes
from tasks.radius import radius_scale

BIG = 20_000  # tasks for the balance statistics (standard error of a class fraction ~0.002)
CONFIGS = {"d2c2": dict(d=2, num_classes=2, n=50), "d5c4": dict(d=5, num_classes=4, n=40)}  # n a multiple of C
CLASSIFIERS = ("prototype", "pairwise", "amortization", "radius")
# Statistical tests draw "rbg" keys: the families are agnostic to the PRNG implementation, and XLA:CPU compiles
# rbg draws ~4x faster than the default (partitionable) threefry, which would make this file take minutes.
# The determinism test uses default keys.
KEY_IMPL = "rbg"
TOL = 1e-4  # float32 vs float64: a disagreement is allowed only this close to a decision boundary

_jitted: dict = {}
_episodes: dict = {}


def sample(family: tasks.TaskFamily, batch: int, n: int, seed: int = 0):
    """Episode as numpy arrays, through one jitted sampler per family (cached, so a shape compiles once)."""
    cache_key = (family, batch, n, seed)
    if cache_key not in _episodes:
        if family not in _jitted:
            _jitted[family] = jax.jit(family.sample, static_argnums=(1, 2))
        ep = _jitted[family](jax.random.key(seed, impl=KEY_IMPL), batch, n)
        _episodes[cache_key] = jax.tree.map(np.asarray, ep)
    return _episodes[cache_key]


def big(name: str, config: str, seed: int = 0, **hparams):
    c = dict(CONFIGS[config])
    n = c.pop("n")
    return sample(tasks.get(name, **c, **hparams), BIG, n, seed)


# ---------------------------------------------------------------- independent numpy label formulas (float64)


def _bisect(cdf, p: float, lo: float, hi: float) -> float:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _normal_quantile(p: float) -> float:
    return _bisect(lambda t: 0.5 * (1.0 + math.erf(t / math.sqrt(2.0))), p, -40.0, 40.0)


def _chi_cdf(r: float, d: int) -> float:
    """P(||z||_2 <= r), z ~ N(0, I_d), by the recursion P(a+1, y) = P(a, y) - y^a e^-y / Gamma(a+1)."""
    y = r * r / 2.0
    a, p = (1.0, 1.0 - math.exp(-y)) if d % 2 == 0 else (0.5, math.erf(math.sqrt(y)))
    while a < d / 2.0:
        p -= y**a * math.exp(-y) / math.gamma(a + 1.0)
        a += 1.0
    return p


def _threshold_class(value, thresholds_K):
    """class = number of (decreasing) thresholds >= value; margin = distance to the nearest threshold."""
    t = np.asarray(thresholds_K, np.float64)
    if t.size == 0:
        return np.zeros(value.shape, np.int32), np.full(value.shape, np.inf)
    return (value[..., None] <= t).sum(-1), np.abs(value[..., None] - t).min(-1)


def _argbest(score_NC, sign: float):
    """argmax of sign*score and the gap to the runner-up."""
    s = np.sort(sign * score_NC, axis=-1)
    return np.argmax(sign * score_NC, axis=-1), s[..., -1] - s[..., -2]


def proto_ref(x, params):
    w = params["prototypes"].astype(np.float64)
    dist = ((x.astype(np.float64)[:, :, None, :] - w[:, None]) ** 2).sum(-1)
    return _argbest(dist, -1.0)


def pairwise_ref(x, params, class_norm=3.0, unit_inputs=False):
    x = x.astype(np.float64)
    xhat = x / np.sqrt((x**2).sum(-1, keepdims=True))
    w = params["class_vectors"].astype(np.float64)
    what = w / (np.abs(w) ** class_norm).sum(-1, keepdims=True) ** (1.0 / class_norm)
    score = (xhat[:, :, None, None, :] * what[:, None]).sum((-1, -2))
    return _argbest(score, 1.0)


def amortization_ref(x, params, num_classes):
    d = x.shape[-1]
    s = (x.astype(np.float64) - params["center"].astype(np.float64)[:, None]).sum(-1) / math.sqrt(d)
    return _threshold_class(s, [_normal_quantile(1.0 - k / num_classes) for k in range(1, num_classes)])


def radius_ref(x, params, num_classes):
    d = x.shape[-1]
    chi_quantile = lambda p: _bisect(lambda r: _chi_cdf(r, d), p, 0.0, 100.0)  # noqa: E731
    q_K = [chi_quantile(1.0 - k / num_classes) / chi_quantile(0.5) for k in range(1, num_classes)]
    rel_norm = np.sqrt((x.astype(np.float64) ** 2).sum(-1)) / params["radius"].astype(np.float64)[:, None]
    return _threshold_class(rel_norm, q_K)


def reference_labels(name, x, params, num_classes, **hparams):
    if name == "prototype":
        return proto_ref(x, params)
    if name == "pairwise":
        return pairwise_ref(x, params, **hparams)
    if name == "amortization":
        return amortization_ref(x, params, num_classes)
    return radius_ref(x, params, num_classes)


def assert_labels_agree(y, y_ref, margin):
    """100% agreement, except possibly on points within float32 rounding of a decision boundary."""
    bad = y != y_ref
    assert bad.mean() <= 1e-5, f"{bad.sum()} of {bad.size} labels disagree"
    assert np.all(margin[bad] < TOL), f"disagreements away from the boundary: margins {margin[bad][:5]}"


# ---------------------------------------------------------------- labels, balance, shapes


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_labels_match_independent_formula(name, config):
    ep = big(name, config)
    y_ref, margin = reference_labels(name, ep.x, ep.params, CONFIGS[config]["num_classes"])
    assert_labels_agree(ep.y, y_ref, margin)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_class_balance(name, config):
    C = CONFIGS[config]["num_classes"]
    frac_C = np.bincount(big(name, config).y.ravel(), minlength=C) / big(name, config).y.size
    np.testing.assert_allclose(frac_C, 1.0 / C, atol=0.01)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_shapes_and_dtypes(name):
    c = CONFIGS["d5c4"]
    ep = big(name, "d5c4")
    B, N, d, C = BIG, c["n"], c["d"], c["num_classes"]
    assert ep.x.shape == (B, N, d) and ep.x.dtype == np.float32
    assert ep.y.shape == (B, N) and ep.y.dtype == np.int32
    assert ep.y.min() >= 0 and ep.y.max() < C
    expected = {
        "prototype": {"prototypes": ((B, C, d), np.float32), "generating_class": ((B, N), np.int32)},
        "pairwise": {"class_vectors": ((B, C, 1, d), np.float32)},
        "amortization": {"center": ((B, d), np.float32)},
        "radius": {"radius": ((B,), np.float32)},
    }[name]
    assert {k: (v.shape, v.dtype) for k, v in ep.params.items()} == expected


@pytest.mark.parametrize("name", [*CLASSIFIERS, "linear_regression", "mixture"])
def test_deterministic_in_key(name):
    family = tasks.get(name, num_classes=None) if name == "linear_regression" else tasks.get(name)
    run = jax.jit(family.sample, static_argnums=(1, 2))
    a, b, c = (run(jax.random.key(s), 6, 12) for s in (7, 7, 8))
    for leaf_a, leaf_b, leaf_c in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)
        if np.issubdtype(leaf_a.dtype, np.floating):
            assert not np.array_equal(leaf_a, leaf_c)
    assert not np.array_equal(a.x, c.x)


# ---------------------------------------------------------------- prototype


def test_prototype_label_agrees_with_generating_class_79_percent():
    ep = big("prototype", "d2c2")
    assert abs((ep.y == ep.params["generating_class"]).mean() - 0.79) < 0.01


def test_prototype_inputs_are_generated_around_their_prototype():
    ep = big("prototype", "d5c4")
    centre = np.take_along_axis(ep.params["prototypes"], ep.params["generating_class"][..., None], axis=1)
    np.testing.assert_allclose((ep.x - centre).std(), 1.0, atol=0.01)
    np.testing.assert_allclose((ep.x - centre).mean(), 0.0, atol=0.01)


def test_prototype_shared_permutation():
    gen = big("prototype", "d5c4").params["generating_class"]
    assert np.all(gen == gen[0])  # the same generating class at each position in every task
    assert np.all(np.bincount(gen[0], minlength=4) == 10)  # balanced: N/C points per prototype
    other = big("prototype", "d5c4", seed=1).params["generating_class"]
    assert not np.array_equal(other[0], gen[0])  # ... but a new permutation for a new key


def test_prototype_per_task_permutation():
    ep = sample(tasks.get("prototype", d=5, num_classes=4, permutation="per_task"), 256, 42)
    gen = ep.params["generating_class"]
    counts = np.stack([np.bincount(g, minlength=4) for g in gen])
    assert np.all(np.sort(counts, axis=1) == [10, 10, 11, 11])  # ceil(42/4)=11 reps, truncated to 42
    assert len({tuple(g) for g in gen}) > 250  # (almost) every task has its own order
    y_ref, margin = proto_ref(ep.x, ep.params)
    assert_labels_agree(ep.y, y_ref, margin)


@pytest.mark.parametrize("d, C", [(2, 2), (5, 4)])
def test_prototype_anchors(d, C):
    family = tasks.get("prototype", d=d, num_classes=C, anchors=True)
    ep = sample(family, 2000, 40)
    order = ep.y[:, :C]
    assert np.all(order == order[0]) and sorted(order[0]) == list(range(C))  # one class permutation per batch
    np.testing.assert_array_equal(ep.params["generating_class"][:, :C], order)  # labelled by generating class
    centre = np.take_along_axis(ep.params["prototypes"], order[..., None], axis=1)
    np.testing.assert_allclose((ep.x[:, :C] - centre).std(), 1.0, atol=0.03)  # fresh W_k + sigma*eps samples
    y_ref, margin = proto_ref(ep.x, ep.params)
    assert_labels_agree(ep.y[:, C:], y_ref[:, C:], margin[:, C:])
    assert (ep.y[:, :C] != y_ref[:, :C]).any()  # not the nearest-prototype rule there
    orders = {tuple(sample(family, 2000, 40, seed).y[0, :C]) for seed in range(1, 9)}
    assert len(orders) > 1


# ---------------------------------------------------------------- pairwise


@pytest.mark.parametrize("hparams", [dict(nc=3, class_norm=2.0), dict(nc=1, class_norm=2.0, unit_inputs=True)])
def test_pairwise_variants(hparams):
    ep = sample(tasks.get("pairwise", d=5, num_classes=4, sigma=2.0, **hparams), 512, 40)
    assert ep.params["class_vectors"].shape == (512, 4, hparams["nc"], 5)
    y_ref, margin = pairwise_ref(ep.x, ep.params, class_norm=hparams["class_norm"])
    assert_labels_agree(ep.y, y_ref, margin)
    norm = np.linalg.norm(ep.x, axis=-1)
    if hparams.get("unit_inputs"):  # sim0: points on the unit sphere
        np.testing.assert_allclose(norm, 1.0, atol=1e-5)
    else:  # x ~ N(0, sigma^2 I)
        np.testing.assert_allclose(ep.x.std(), 2.0, atol=0.03)


def test_pairwise_nc0_reproduces_the_all_class_0_bug():
    ep = sample(tasks.get("pairwise", nc=0), 4, 10)
    assert np.all(ep.y == 0)


# ---------------------------------------------------------------- amortization


def test_amortization_thresholds_do_not_depend_on_sigma():
    ep = sample(tasks.get("amortization", d=5, num_classes=4, sigma=3.0), 1000, 40)
    y_ref, margin = amortization_ref(ep.x, ep.params, 4)
    assert_labels_agree(ep.y, y_ref, margin)
    frac = np.bincount(ep.y.ravel(), minlength=4) / ep.y.size
    assert frac[0] > 0.3 and frac[3] > 0.3  # a wider spread puts more points in the outer classes


def test_amortization_prior_only_accuracy():
    """Predicting from sign(1'x) alone scores 0.745 for d=2 (docs/papers.md §2.9), since w ~ N(0, I)."""
    ep = big("amortization", "d2c2")
    guess = np.where(ep.x.sum(-1) > 0, 0, 1)
    assert abs((guess == ep.y).mean() - 0.745) < 0.01


@pytest.mark.parametrize("anchors", ["flipped", "consistent"])
def test_amortization_anchors(anchors):
    d = 2
    ep = sample(tasks.get("amortization", d=d, anchors=anchors), 20_000, 20)
    y_rule, margin = amortization_ref(ep.x, ep.params, 2)
    assert_labels_agree(ep.y[:, 2:], y_rule[:, 2:], margin[:, 2:])
    dx = (ep.x[:, :2] - ep.params["center"][:, None]).mean(-1)  # anchor minus centre, per coordinate
    if anchors == "consistent":
        assert_labels_agree(ep.y[:, :2], y_rule[:, :2], margin[:, :2])
        return
    first = ep.y[:, 0]
    assert np.all(first == first[0]) and np.all(ep.y[:, 1] == 1 - first[0])  # one coin per batch
    family = tasks.get("amortization", d=d, anchors=anchors)
    assert {int(sample(family, 20_000, 20, seed).y[0, 0]) for seed in range(1, 9)} == {0, 1}  # ... a fair one
    at_w_minus = 0 if first[0] == 0 else 1  # the anchor labelled 0 is drawn around w - 0.1
    np.testing.assert_allclose(dx[:, at_w_minus].mean(), -0.1, atol=0.003)
    np.testing.assert_allclose(dx[:, 1 - at_w_minus].mean(), 0.1, atol=0.003)
    np.testing.assert_allclose(dx[:, at_w_minus].std(), 0.1 / math.sqrt(d), rtol=0.03)  # N(., 0.1^2 I) noise
    # The rule contradicts a flipped anchor unless its noise crosses the centre: P = Phi(sqrt(d)) = 0.921 for d=2.
    expected = 0.5 * (1.0 + math.erf(math.sqrt(d) / math.sqrt(2.0)))
    assert abs((ep.y[:, :2] != y_rule[:, :2]).mean() - expected) < 0.01


# ---------------------------------------------------------------- radius


def test_radius_scale_d2():
    assert abs(radius_scale(2) - 0.849) < 1e-3
    assert abs(radius_scale(2) - 1.0 / math.sqrt(2.0 * math.log(2.0))) < 1e-9


def test_radius_inputs_and_radii():
    ep = big("radius", "d2c2")
    r = ep.params["radius"]
    assert r.min() >= 2.0 and r.max() <= 4.0 and abs(r.mean() - 3.0) < 0.02
    np.testing.assert_allclose((ep.x / r[:, None, None]).std(), 0.849, atol=0.005)


# ---------------------------------------------------------------- linear regression


def test_linear_regression_active_dims_and_noiseless_targets():
    ep = sample(tasks.get("linear_regression", d=6, active_dims=4), 256, 30)
    assert ep.x.shape == (256, 30, 6) and ep.x.dtype == np.float32
    assert ep.y.shape == (256, 30) and ep.y.dtype == np.float32 and ep.params["w"].shape == (256, 6)
    assert np.all(ep.x[..., 4:] == 0.0) and np.all(ep.x[..., :4] != 0.0)
    expected = (ep.x.astype(np.float64) * ep.params["w"].astype(np.float64)[:, None]).sum(-1)
    np.testing.assert_allclose(ep.y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ep.x[..., :4].std(), 1.0, atol=0.02)


def test_linear_regression_noise():
    ep = sample(tasks.get("linear_regression", d=6, noise_std=0.5, sigma=2.0), 256, 30)
    residual = ep.y - (ep.x * ep.params["w"][:, None]).sum(-1)
    np.testing.assert_allclose(residual.std(), 0.5, atol=0.01)
    np.testing.assert_allclose(ep.x.std(), 2.0, atol=0.03)


def test_linear_regression_traced_active_dims():
    family = tasks.get("linear_regression", d=6)
    run = jax.jit(lambda key, k: dataclasses.replace(family, active_dims=k).sample(key, 8, 10))
    for k in (2, 5):
        ep = run(jax.random.key(0), jnp.int32(k))
        nonzero = np.asarray(jnp.any(ep.x != 0.0, axis=(0, 1)))
        np.testing.assert_array_equal(nonzero, np.arange(6) < k)
    assert run._cache_size() == 1  # one compile serves every active_dims


# ---------------------------------------------------------------- mixture


def test_block_sizes():
    assert block_sizes(126, (1.0, 1.0, 1.0)) == (42, 42, 42)  # the reference's batch
    assert block_sizes(10, (1.0, 1.0, 1.0)) == (4, 3, 3)  # 3.33 each: the one leftover goes to the first
    assert block_sizes(7, (2.0, 1.0, 1.0)) == (3, 2, 2)  # quotas 3.5, 1.75, 1.75
    assert block_sizes(2, (1.0, 1.0, 1.0)) == (1, 1, 0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = tuple(rng.uniform(0.1, 5.0, size=rng.integers(1, 6)))
        b = int(rng.integers(1, 300))
        sizes = np.array(block_sizes(b, w))
        assert sizes.sum() == b and np.all(np.abs(sizes - b * np.array(w) / sum(w)) < 1)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_mixture_parts(config):
    c = dict(CONFIGS[config])
    n, C = c.pop("n"), c["num_classes"]
    family = tasks.get("mixture", **c)
    ep = sample(family, 126, n)
    assert ep.x.shape == (126, n, c["d"]) and ep.y.dtype == np.int32
    np.testing.assert_array_equal(ep.params["component"], np.repeat([0, 1, 2], 42))
    for j, (name, part) in enumerate(zip(["prototype", "pairwise", "amortization"], ep.params["parts"], strict=True)):
        rows = ep.params["component"] == j
        assert family.components[j].name == name and jax.tree.leaves(part)[0].shape[0] == rows.sum()
        y_ref, margin = reference_labels(name, ep.x[rows], part, C)
        assert_labels_agree(ep.y[rows], y_ref, margin)
    # The last block is its component sampled alone with fold_in(key, 2) (one check: each compile costs seconds).
    last = family.components[2]
    alone = jax.jit(last.sample, static_argnums=(1, 2))(jax.random.fold_in(jax.random.key(0, impl=KEY_IMPL), 2), 42, n)
    np.testing.assert_array_equal(ep.x[84:], alone.x)
    np.testing.assert_array_equal(ep.params["parts"][2]["center"], alone.params["center"])


def test_mixture_with_sigma_and_config_round_trip():
    family = tasks.get("mixture", components=("pairwise", tasks.get("amortization", anchors="flipped")), weights=[3, 1])
    shifted = family.with_sigma(3.0)
    assert [c.sigma for c in shifted.components] == [3.0, 3.0] and shifted.sigma == 3.0
    ep = sample(shifted, 400, 20)
    np.testing.assert_array_equal(ep.params["component"], np.repeat([0, 1], [300, 100]))
    np.testing.assert_allclose(ep.x[:300].std(), 3.0, atol=0.03)  # pairwise x ~ N(0, sigma^2 I)
    hparams = json.loads(json.dumps(shifted.hparams()))
    assert tasks.get("mixture", **hparams) == shifted


def test_with_sigma_scales_prototype_noise():
    ep = sample(tasks.get("prototype", d=5, num_classes=4).with_sigma(2.5), 2000, 40)
    centre = np.take_along_axis(ep.params["prototypes"], ep.params["generating_class"][..., None], axis=1)
    np.testing.assert_allclose((ep.x - centre).std(), 2.5, atol=0.02)


# ---------------------------------------------------------------- errors


BAD_INPUTS = [
    (lambda: tasks.get("prototype", d=0), "d must be"),
    (lambda: tasks.get("pairwise", num_classes=1), "num_classes"),
    (lambda: tasks.get("radius", num_classes=None), "num_classes"),
    (lambda: tasks.get("amortization", sigma=0.0), "sigma"),
    (lambda: tasks.get("prototype").sample(jax.random.key(0), 4, 0), "n must be"),
    (lambda: tasks.get("prototype").sample(jax.random.key(0), 0, 4), "batch must be"),
    (lambda: tasks.get("protoype"), "unknown task family 'protoype'"),
    (lambda: tasks.get("prototype", anchor=True), "unknown parameter.*anchor"),
    (lambda: tasks.get("prototype", permutation="random"), "permutation must be one of shared, per_task"),
    (lambda: tasks.get("prototype", anchors="yes"), "anchors must be True or False"),
    (lambda: tasks.get("amortization", anchors="flip"), "anchors must be one of none, flipped, consistent"),
    (lambda: tasks.get("amortization", anchors="flipped", num_classes=4), "anchors=.*num_classes=2"),
    (lambda: tasks.get("pairwise", nc=-1), "nc must be"),
    (lambda: tasks.get("pairwise", class_norm=0.5), "class_norm must be"),
    (lambda: tasks.get("radius", r_min=0.0), "r_min must be"),
    (lambda: tasks.get("radius", r_min=3.0, r_max=2.0), "r_max must be"),
    (lambda: tasks.get("linear_regression", num_classes=2), "num_classes must be None"),
    (lambda: tasks.get("linear_regression", d=3, active_dims=4), "active_dims must be"),
    (lambda: tasks.get("linear_regression", noise_std=-1.0), "noise_std must be"),
    (lambda: tasks.get("mixture", components=(tasks.get("prototype", d=3),)), "component prototype has d=3"),
    (lambda: tasks.get("mixture", components=("prototype", "radius"), weights=(1.0,)), "weights must be 2"),
    (lambda: tasks.get("mixture", weights=(1.0, 0.0, 1.0)), "weights must be"),
    (lambda: tasks.get("mixture", components=("prototype", "nope")), "unknown task family 'nope'"),
    (lambda: tasks.get("mixture", components=()), "components must be"),
]


@pytest.mark.parametrize("make, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_raises_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_sigma_shift_reaches_every_mixture_component_in_the_data():
    base = tasks.get(
        "mixture", components=({"name": "amortization", "anchors": "flipped"}, "prototype"), weights=(2, 1)
    )
    for shifted in (dataclasses.replace(base, sigma=3.0), base.with_sigma(3.0), tasks.with_hparams(base, sigma=3.0)):
        assert [c.sigma for c in shifted.components] == [3.0, 3.0]
        assert shifted.weights == base.weights and shifted.components[0].anchors == "flipped"
        ep = shifted.sample(jax.random.key(0), 3000, 8)
        amort = ep.params["parts"][0]["center"]  # rows 0..1999: x = center + sigma * eps (anchors at 0, 1)
        resid = np.asarray(ep.x[:2000, 2:] - amort[:, None])
        assert abs(resid.std() - 3.0) < 0.05


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"d": True}, "d must be an integer"),
        ({"d": 2.5}, "d must be an integer"),
        ({"sigma": "abc"}, "sigma must be a finite number > 0"),
        ({"sigma": float("inf")}, "sigma must be a finite number > 0"),
        ({"num_classes": 2.0}, "num_classes must be (None or )?an integer"),
    ],
)
def test_bad_hyperparameter_types_are_config_errors(hparams, message):
    with pytest.raises(ConfigError, match=message):
        tasks.get("prototype", **hparams)


def test_with_hparams_rebuilds_through_the_registry():
    fam = tasks.with_hparams(tasks.get("pairwise", nc=4), d=5)
    assert (fam.d, fam.nc) == (5, 4)
    with pytest.raises(ConfigError, match="unknown parameter"):
        tasks.with_hparams(fam, colour=1)


@pytest.mark.parametrize("name", sorted(set(tasks.names()) - {"mixture"}))
def test_every_family_owns_its_label_rule(name):
    """`labels(x, params)` reproduces a sampled batch's labels, and one task's labels from its own params."""
    family = tasks.get(name)
    ep = sample(family, 16, max(12, getattr(family, "min_length", 0)))  # a sequence family sets its length
    np.testing.assert_allclose(np.asarray(family.labels(ep.x, ep.params)), ep.y, rtol=1e-5, atol=1e-5)
    one = {k: v[3] for k, v in ep.params.items()}
    np.testing.assert_allclose(np.asarray(family.labels(ep.x[3], one)), ep.y[3], rtol=1e-5, atol=1e-5)


def test_a_mixture_has_no_single_label_rule():
    family = tasks.get("mixture")
    ep = sample(family, 6, 12)
    with pytest.raises(ConfigError, match="mixture: its tasks follow their components' rules"):
        family.labels(ep.x, ep.params)
