"""Domain-structured linear regression (docs/papers.md §2.8): the stated distributions within and across domains, labels
recomputed from Episode.params, one domain per `sample` batch, the test domains, and bad input."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import tasks
from icl_meta.contracts import is_domain_family
from icl_meta.errors import ConfigError
from tasks.domains import DomainRegression

D = 3
TASKS, N = 4000, 10  # 40,000 inputs within one domain
DOMAINS = 20_000
# "rbg" keys: the family is agnostic to the PRNG implementation, and XLA:CPU compiles rbg draws several times faster
# than the default threefry (as tests/test_tasks.py does).
KEY_IMPL = "rbg"


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl=KEY_IMPL)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def tasks_of_domain(family, key, batch, n):
    domain = family.sample_domain(jax.random.fold_in(key, 0))
    return domain, family.sample_tasks(jax.random.fold_in(key, 1), domain, batch, n)


@functools.partial(jax.jit, static_argnums=0)
def many_domains(family, keys):
    return jax.vmap(family.sample_domain)(keys)


def np64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def check_moments(samples_MD, mean_D, cov_DD, z=5.0):
    """Sample mean and covariance within z standard errors of the given ones (Gaussian samples)."""
    m = len(samples_MD)
    var_D = np.diag(cov_DD)
    np.testing.assert_array_less(np.abs(samples_MD.mean(0) - mean_D), z * np.sqrt(var_D / m))
    # Var of a sample covariance entry (i, j): (S_ij^2 + S_ii S_jj) / m for Gaussian data.
    se_DD = np.sqrt((cov_DD**2 + np.outer(var_D, var_D)) / m)
    np.testing.assert_array_less(np.abs(np.cov(samples_MD.T) - cov_DD), z * se_DD)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_code_variant_within_a_domain(sigma):
    family = tasks.get("domain_regression", d=D, sigma=sigma)
    domain, ep = np64(tasks_of_domain(family, key(0), TASKS, N))
    A, b, s = domain["A"], domain["b"], domain["s"]
    x_MD = ep.x.reshape(-1, D)
    check_moments(x_MD, np.full(D, b), sigma**2 * A.T @ A)  # x = sigma z A + b
    check_moments(ep.params["w"], np.zeros(D), np.eye(D))  # w ~ N(0, I)
    # Every task carries its domain; y = s (x . w) exactly (float32 rounding only).
    for name, value in (("A", A), ("b", b), ("s", s)):
        np.testing.assert_array_equal(ep.params[name], np.broadcast_to(value, (TASKS, *np.shape(value))))
    y = ep.params["s"][:, None] * np.einsum("bnd,bd->bn", ep.x, ep.params["w"])
    np.testing.assert_allclose(ep.y, y, rtol=1e-5, atol=1e-4 * np.abs(y).max())
    assert ep.x.shape == (TASKS, N, D) and ep.y.shape == (TASKS, N)


@pytest.mark.parametrize(("task_scale", "test"), [(8.0, False), (8.0, True), (2.5, False)])
def test_code_variant_across_domains(task_scale, test):
    family = tasks.get("domain_regression", d=D, task_scale=task_scale)
    if test:
        family = family.test_domains()
    keys = jax.random.split(key(1), DOMAINS)
    domains = np64(many_domains(family, keys))
    se = 1 / np.sqrt(DOMAINS)
    scale = 1.0 if test else task_scale  # the test domains: s ~ N(0, 1), no x8
    assert abs(domains["s"].std() / scale - 1) < 5 * se / np.sqrt(2)
    assert abs(domains["s"].mean() / scale) < 5 * se
    for name in ("A", "b"):  # N(0, 1) entries
        values = domains[name].reshape(DOMAINS, -1)
        assert np.all(np.abs(values.mean(0)) < 5 * se) and np.all(np.abs(values.std(0) - 1) < 5 * se)
    assert domains["A"].shape == (DOMAINS, D, D) and domains["b"].shape == domains["s"].shape == (DOMAINS,)


def test_paper_variant():
    family = tasks.get("domain_regression", d=D, weights="paper", sigma=1.5)
    domain, ep = np64(tasks_of_domain(family, key(2), TASKS, N))
    mu, L = domain["mu"], domain["L"]
    check_moments(ep.params["w"], mu, L @ L.T)  # w ~ N(mu, Sigma = L L^T)
    check_moments(ep.x.reshape(-1, D), np.zeros(D), 1.5**2 * np.eye(D))
    np.testing.assert_allclose(ep.y, np.einsum("bnd,bd->bn", ep.x, ep.params["w"]), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ep.params["mu"], np.broadcast_to(mu, (TASKS, D)))
    # Across domains: mu ~ N(0, I), L ~ N(0, 1/d) entries (so E[Sigma] = I).
    domains = np64(many_domains(family, jax.random.split(key(3), DOMAINS)))
    se = 1 / np.sqrt(DOMAINS)
    assert np.all(np.abs(domains["mu"].std(0) - 1) < 5 * se)
    assert abs(domains["L"].std() * np.sqrt(D) - 1) < 5 * se
    sigma_mean = np.einsum("kij,klj->il", domains["L"], domains["L"]) / DOMAINS
    np.testing.assert_allclose(sigma_mean, np.eye(D), atol=0.05)


def test_sample_is_one_domain_per_batch_and_deterministic():
    family = tasks.get("domain_regression", d=D)
    sample = jax.jit(family.sample, static_argnums=(1, 2))
    ep = np64(sample(key(4), 16, 5))
    for name in ("A", "b", "s"):  # one domain shared by the whole batch ...
        assert np.all(ep.params[name] == ep.params[name][0])
    assert len(np.unique(ep.params["w"][:, 0])) == 16  # ... with one weight vector per task
    y = ep.params["s"][:, None] * np.einsum("bnd,bd->bn", ep.x, ep.params["w"])
    np.testing.assert_allclose(ep.y, y, rtol=1e-5, atol=1e-3)
    again, other = np64(sample(key(4), 16, 5)), np64(sample(key(5), 16, 5))
    np.testing.assert_array_equal(again.x, ep.x)
    assert not np.allclose(other.params["A"], ep.params["A"])


def test_family_registered_with_defaults_and_test_domains():
    family = tasks.get("domain_regression")
    assert isinstance(family, DomainRegression) and is_domain_family(family)
    assert family.hparams() == {"d": 5, "num_classes": None, "sigma": 1.0, "task_scale": 8.0, "weights": "code"}
    assert family.spec.is_regression
    test = family.test_domains()
    assert test.task_scale == 1.0 and test.hparams() == {**family.hparams(), "task_scale": 1.0}
    assert not is_domain_family(tasks.get("linear_regression"))


@pytest.mark.parametrize(
    "hparams",
    [{"weights": "both"}, {"task_scale": 0.0}, {"task_scale": float("inf")}, {"task_scale": True}, {"num_classes": 2}],
)
def test_bad_hyperparameters(hparams):
    with pytest.raises(ConfigError, match="domain_regression"):
        tasks.get("domain_regression", **hparams)


def test_bad_sizes():
    family = tasks.get("domain_regression", d=2)
    domain = family.sample_domain(key(0))
    for batch, n in ((0, 3), (2, 0), (2.0, 3)):
        with pytest.raises(ConfigError, match="must be an integer >= 1"):
            family.sample_tasks(key(1), domain, batch, n)
