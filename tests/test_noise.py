"""sgdtheory.noise: exact minibatch covariances against enumeration of every batch, against sampled
minibatches (tolerance from the standard error of independent groups: |z| <= z_threshold), and the
literature's approximations shown failing where their docstrings say they fail."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from sgdtheory import linreg as L
from sgdtheory import noise as N
from sgdtheory.simulate import z_threshold


def _grads(n=6, p=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p)) + 0.5


def _enumerate(g, s, replacement):
    n = g.shape[0]
    it = (itertools.product(range(n), repeat=s) if replacement
          else itertools.combinations(range(n), s))
    means = np.array([g[list(b)].mean(axis=0) for b in it])
    d = means - means.mean(axis=0)
    return d.T @ d / len(means)


@pytest.mark.parametrize("s,replacement", [(1, True), (2, True), (3, True), (1, False), (2, False),
                                           (4, False), (6, False)])
def test_minibatch_covariance_matches_enumeration(s, replacement):
    g = _grads()
    np.testing.assert_allclose(N.minibatch_covariance(g, s, replacement=replacement),
                               _enumerate(g, s, replacement), rtol=1e-12, atol=1e-15)


def test_minibatch_covariance_matches_sampled_batches():
    g = _grads()
    rng = np.random.default_rng(1)
    groups, per = 32, 2000
    est = []
    for _ in range(groups):
        idx = np.argsort(rng.random((per, 6)), axis=1)[:, :2]  # uniform 2-subsets
        m = g[idx].mean(axis=1)
        est.append(np.cov(m.T, ddof=0)[0, 0])
    est = np.array(est)
    theory = float(N.minibatch_covariance(g, 2, replacement=False)[0, 0])
    z = (est.mean() - theory) / (est.std(ddof=1) / np.sqrt(groups))
    assert abs(z) <= z_threshold(groups), z


def test_gradient_noise_covariance_any_pytree_model():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(5, 2)))
    y = jnp.asarray(rng.normal(size=5))
    params = {"w1": jnp.asarray(rng.normal(size=(2, 3))), "b": jnp.zeros(3),
              "w2": jnp.asarray(rng.normal(size=3))}

    def loss(p, z):
        xi, yi = z
        return 0.5 * (jnp.tanh(xi @ p["w1"] + p["b"]) @ p["w2"] - yi) ** 2

    c = N.gradient_noise_covariance(loss, params, (x, y), 2, replacement=False)
    g = np.asarray(N.flatten_per_sample(N.per_sample_gradients(loss, params, (x, y))))
    assert c.shape == (12, 12)
    np.testing.assert_allclose(c, _enumerate(g, 2, False), rtol=1e-10, atol=1e-14)
    # per-sample gradients equal one-example grads
    import jax
    from jax.flatten_util import ravel_pytree
    g0 = ravel_pytree(jax.grad(loss)(params, (x[0], y[0])))[0]
    np.testing.assert_allclose(g[0], g0, rtol=1e-12)


def test_without_replacement_s2_equals_with_replacement_s3_when_n4():
    g = _grads(n=4)
    np.testing.assert_allclose(N.minibatch_covariance(g, 2, replacement=False),
                               N.minibatch_covariance(g, 3, replacement=True), rtol=1e-12)


def test_fisher_approximation_fails_away_from_minimum_exact_at_it():
    x = np.random.default_rng(3).normal(size=(8, 2))
    y = x @ np.array([1.0, -0.5]) + 0.3 * np.random.default_rng(4).normal(size=8)
    loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2  # noqa: E731
    w_min = jnp.asarray(np.linalg.lstsq(x, y, rcond=None)[0])
    for w, exact_expected in ((w_min, True), (w_min + 1.0, False)):
        g = N.flatten_per_sample(N.per_sample_gradients(loss, w, (jnp.asarray(x), jnp.asarray(y))))
        exact = N.minibatch_covariance(g, 2)
        fisher = N.fisher_approximation(g, 2)
        gbar = np.asarray(g).mean(axis=0)
        np.testing.assert_allclose(fisher - exact, np.outer(gbar, gbar) / 2, atol=1e-12)
        rel = np.linalg.norm(fisher - exact) / np.linalg.norm(exact)
        assert (rel < 1e-10) == exact_expected


def test_hessian_approximation_exact_only_at_online_minimum():
    a = np.array([[1.0, 0.3], [0.3, 0.5]])
    s, sig2 = 4, 1.0
    # at the minimum (Sigma -> 0, lr -> 0) the online noise is sigma^2 A / S = (2L/S) H exactly
    r = L.online_stationary(a, 1e-6, s, label_noise_var=sig2)
    np.testing.assert_allclose(N.hessian_approximation(a, r.train_loss, s), r.noise_cov, rtol=1e-5)
    # at large lr the stationary noise includes A Sigma A + tr(A Sigma) A: the approximation
    # (even with the true stationary loss) is off by > 10 %
    lr = 0.8 * float(L.online_max_lr(a, s))
    r = L.online_stationary(a, lr, s, label_noise_var=sig2)
    approx = N.hessian_approximation(a, r.train_loss, s)
    rel = np.linalg.norm(approx - r.noise_cov) / np.linalg.norm(r.noise_cov)
    assert rel > 0.1, rel
    # finite dataset at the OLS minimum: residuals correlate with inputs, approximation off
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 2)) * np.array([1.0, 3.0])
    y = np.abs(x[:, 1]) + 0.1 * rng.normal(size=6)  # heteroscedastic residuals
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    g = (x @ w - y)[:, None] * x
    exact = np.asarray(N.minibatch_covariance(g, 1))
    h = x.T @ x / 6
    approx = np.asarray(N.hessian_approximation(h, 0.5 * np.mean((x @ w - y) ** 2), 1))
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) > 0.1


def test_error_batch_larger_than_dataset_without_replacement():
    with pytest.raises(ValueError, match="larger than the dataset"):
        N.minibatch_covariance(_grads(n=3), 4, replacement=False)


def test_error_per_sample_leaves_disagree():
    with pytest.raises(ValueError, match="leading axis"):
        N.flatten_per_sample({"a": jnp.zeros((3, 2)), "b": jnp.zeros((4,))})


def test_error_negative_loss_in_hessian_approximation():
    with pytest.raises(ValueError, match="loss must be >= 0"):
        N.hessian_approximation(jnp.eye(2), -1.0, 2)


def test_sampling_name_gives_the_replacement_numbers():
    g = _grads()
    for rule, repl in (("with_replacement", True), ("without_replacement", False)):
        np.testing.assert_array_equal(N.minibatch_covariance(g, 2, sampling=rule),
                                      N.minibatch_covariance(g, 2, replacement=repl))
        assert N.batch_factor(5, 2, sampling=rule) == N.batch_factor(5, 2, repl)
    with pytest.raises(ValueError, match="not both"):
        N.minibatch_covariance(g, 2, sampling="with_replacement", replacement=True)
    with pytest.raises(ValueError, match="sampling must be one of"):
        N.minibatch_covariance(g, 2, sampling="without")
    x = jnp.array([[1.0], [2.0], [3.0]])
    y = jnp.array([1.0, 1.0, 4.0])
    loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2  # noqa: E731
    np.testing.assert_array_equal(
        N.gradient_noise_covariance(loss, jnp.zeros(1), (x, y), 2, sampling="without_replacement"),
        N.gradient_noise_covariance(loss, jnp.zeros(1), (x, y), 2, replacement=False))


def test_error_sample_minibatch_gradients_leaves_disagree():
    # N is no longer read from the first leaf: a shorter leaf would have been silently clamped
    import jax
    x, y = jnp.ones((5, 1)), jnp.ones(4)
    loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2  # noqa: E731
    with pytest.raises(ValueError, match=r"same leading axis N; got \[5, 4\]"):
        N.sample_minibatch_gradients(jax.random.key(0), loss, jnp.zeros(1), (x, y), 2, 3)
    with pytest.raises(ValueError, match="leading axis"):
        N.sample_minibatch_gradients(jax.random.key(0), loss, jnp.zeros(1), (x, jnp.ones(())), 2, 3)
