"""Simulation checks of sgdtheory.linreg with the replica simulators.

Tolerance: every comparison is a z-score against the standard error from independent replica
groups, |z| <= z_threshold(groups, m) (Student t, alpha = 1e-4, Bonferroni over the m matrix
entries) -- never a hand-picked relative tolerance.  Learning rates stay at <= 75 % of the exact
mean-square bound, where the stationary law is not heavy-tailed enough to bias finite runs.
Fixed seeds; budgets small enough for 2 CPU cores (larger runs are marked slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdtheory import linreg as L
from sgdtheory.simulate import z_threshold
from sgdtheory.simulate import estimate, linreg_sgd, online_linreg_sgd

A = np.array([[1.0, 0.3], [0.3, 0.5]])
U = np.array([1.0, -0.5])
B = np.array([[0.3, 0.1], [0.1, 0.2]])


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return x, x @ U + 0.5 * rng.normal(size=n)


def _assert_cov(stats, theory):
    iu = np.triu_indices(theory.shape[0])
    z = (np.asarray(stats.cov)[iu] - np.asarray(theory)[iu]) / np.asarray(stats.cov_stderr)[iu]
    assert np.max(np.abs(z)) <= z_threshold(stats.groups, len(z)), z


def _assert_scalar(stats, theory, fn):
    v, se = estimate(stats, fn)
    z = (float(v) - float(theory)) / float(se)
    assert abs(z) <= z_threshold(stats.groups), (v, theory, z)


@pytest.mark.parametrize("kw", [dict(s=4, sigma2=1.0), dict(s=4, sigma2=0.0, wd=0.3),
                                dict(s=8, sigma2=0.0, b=B)])
def test_online_stationary_against_simulation(kw):
    s, wd, b = kw["s"], kw.get("wd", 0.0), kw.get("b")
    lr = 0.6 * float(L.online_max_lr(A, s, weight_decay=wd, input_noise_cov=b))
    th = L.online_stationary(A, lr, s, label_noise_var=kw["sigma2"], weight_decay=wd,
                             true_weights=U, input_noise_cov=b)
    st = online_linreg_sgd(jax.random.key(0), A, U, lr, s, label_noise_var=kw["sigma2"],
                           input_noise_cov=b, weight_decay=wd, steps=1000, replicas=256,
                           burn_in=200)
    _assert_cov(st, th.param_cov)
    aj, uj = jnp.asarray(A), jnp.asarray(U)
    _assert_scalar(st, th.test_loss, lambda m, c: 0.5 * (jnp.sum(aj * c) + (m - uj) @ aj @ (m - uj)))


@pytest.mark.parametrize("sampling,replacement,s", [("with_replacement", True, 1),
                                                    pytest.param("with_replacement", True, 3,
                                                                 marks=pytest.mark.slow),
                                                    ("without_replacement", False, 4)])
def test_dataset_stationary_against_simulation(sampling, replacement, s):
    x, y = _data()
    lr = 0.7 * float(L.dataset_max_lr(x, s, replacement=replacement))
    th = L.dataset_stationary(x, y, lr, s, replacement=replacement)
    st = linreg_sgd(jax.random.key(1), x, y, lr, s, sampling=sampling, steps=1000, replicas=256,
                    burn_in=200, init=th.param_mean)
    _assert_cov(st, th.param_cov)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    _assert_scalar(st, th.train_loss, lambda m, c: 0.5 * (jnp.mean((xj @ m - yj) ** 2)
                                                          + jnp.sum(xj.T @ xj / 6 * c)))


def test_learning_curve_against_simulation():
    """All replicas start at w0 (init_error_cov = 0); statistics of the last step only."""
    s, lr, sig2, steps = 2, 0.3, 0.5, 30
    w0 = U + np.array([0.8, -0.6])
    curve = L.learning_curve(A, lr, s, steps, init_error_cov=np.zeros((2, 2)),
                             init_error_mean=w0 - U, label_noise_var=sig2)
    st = online_linreg_sgd(jax.random.key(10), A, U, lr, s, label_noise_var=sig2, steps=steps,
                           replicas=2048, burn_in=steps - 1, init=w0)
    aj, uj = jnp.asarray(A), jnp.asarray(U)
    _assert_scalar(st, curve.test_loss[steps],
                   lambda m, c: 0.5 * (jnp.sum(aj * c) + (m - uj) @ aj @ (m - uj)))


def test_shuffle_differs_from_iid_subsets():
    x, y = _data(n=6)
    lr = 0.7 * float(L.dataset_max_lr(x, 3, replacement=False))
    th = L.dataset_stationary(x, y, lr, 3, replacement=False)
    st = linreg_sgd(jax.random.key(3), x, y, lr, 3, sampling="shuffle", steps=1000, replicas=256,
                    burn_in=200, init=th.param_mean)
    z = (np.trace(np.asarray(st.cov)) - np.trace(np.asarray(th.param_cov))) / np.sqrt(
        np.sum(np.diag(np.asarray(st.cov_stderr)) ** 2))
    assert abs(z) > z_threshold(st.groups)  # epoch reshuffling is not i.i.d. subsets


def test_simulator_jit_and_divergence_reporting():
    import warnings
    x, y = _data()
    bound = float(L.dataset_max_lr(x, 1))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        st = linreg_sgd(jax.random.key(4), x, y, 1.5 * bound, 1, steps=600, replicas=64,
                        burn_in=10)
    assert int(st.diverged) > 0 and any("diverged" in str(m.message) for m in w)


@pytest.mark.slow
@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_online_momentum_against_simulation_slow(momentum):
    lr = 0.6 * float(L.online_max_lr(A, 4, momentum=momentum))
    th = L.online_stationary(A, lr, 4, label_noise_var=1.0, momentum=momentum)
    st = online_linreg_sgd(jax.random.key(5), A, U, lr, 4, label_noise_var=1.0, momentum=momentum,
                           steps=20000, replicas=1024, burn_in=3000)
    _assert_cov(st, th.param_cov)


# --- bad input ----------------------------------------------------------------------------------

def test_error_sim_batch_larger_than_dataset():
    x, y = _data()
    with pytest.raises(ValueError, match="larger than the dataset"):
        linreg_sgd(jax.random.key(0), x, y, 0.1, 7, sampling="without_replacement", steps=10,
                   replicas=16, burn_in=1)


def test_error_sim_mismatched_inputs_targets():
    x, y = _data()
    with pytest.raises(ValueError, match="targets must have shape"):
        linreg_sgd(jax.random.key(0), x, y[:3], 0.1, 2, steps=10, replicas=16, burn_in=1)


def test_error_sim_unknown_sampling():
    x, y = _data()
    with pytest.raises(ValueError, match="sampling must be one of"):
        linreg_sgd(jax.random.key(0), x, y, 0.1, 2, sampling="bogus", steps=10, replicas=16,
                   burn_in=1)


def test_error_sim_non_psd_and_negative_noise():
    with pytest.raises(ValueError, match="positive semidefinite"):
        online_linreg_sgd(jax.random.key(0), np.diag([1.0, -1.0]), U, 0.1, 2, label_noise_var=1.0,
                          steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="label_noise_var must be >= 0"):
        online_linreg_sgd(jax.random.key(0), A, U, 0.1, 2, label_noise_var=-1.0, steps=10,
                          replicas=16, burn_in=1)
