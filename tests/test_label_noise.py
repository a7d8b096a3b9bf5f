"""Tests of label-noise SGD: linreg.dataset_stationary(label_noise_var=), sgdtheory.label_noise.

Oracles: a Kronecker solve over a brute-force enumeration of every batch (tiny N, both sampling
rules, the label noise drawn per slot), hand-written Jacobians, scipy's ODE solver, the exact
per-step identity D' = D(1 - lr^2 r^2) evaluated by hand; and simulation (linreg_sgd with label
noise, minibatch_sgd with an Online source of noisy targets, Monte Carlo label-noise gradients).
Statistical tolerances come from standard errors over independent replica groups: |z| below the
Student-t threshold z_threshold(G, m) at a false-alarm rate of 1e-4 per test (Bonferroni over the
m entries compared; about 4.5 for one entry and G = 32).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.integrate import solve_ivp

import sgdtheory as st
from sgdtheory import label_noise as ln
from sgdtheory import linreg, simulate
from sgdtheory.simulate import z_threshold

# ------------------------------------------------------------------------------------------------
# linreg.dataset_stationary with label noise
# ------------------------------------------------------------------------------------------------


def _data(n=5, d=2, seed=0, realisable=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ np.diag([1.0, 0.6, 0.4][:d])
    y = x @ np.array([1.0, -0.5, 0.3][:d])
    if not realisable:
        y = y + 0.4 * rng.normal(size=n)
    return x, y


def _enumerated_cov(x, y, lr, s, replacement, sigma2, wd=0.0):
    """Stationary mean and covariance by enumerating every batch (numpy, no library code).

    w' = M_B w + c_B + lr/S sum_b x_b eps_b, with M_B = I - lr (X_B^T X_B / S + wd) and
    c_B = lr X_B^T y_B / S; the label noise has covariance lr^2 sigma^2 / S^2 X_B^T X_B given B.
    """
    n, d = x.shape
    batches = (list(itertools.product(range(n), repeat=s)) if replacement
               else list(itertools.combinations(range(n), s)))
    ms, cs, ns = [], [], []
    for b in batches:
        xb, yb = x[list(b)], y[list(b)]
        ms.append(np.eye(d) - lr * (xb.T @ xb / s + wd * np.eye(d)))
        cs.append(lr * xb.T @ yb / s)
        ns.append(lr**2 * sigma2 / s**2 * xb.T @ xb)
    ms, cs, ns = np.array(ms), np.array(cs), np.array(ns)
    mean = np.linalg.solve(np.eye(d) - ms.mean(0), cs.mean(0))
    xi = np.einsum("bij,j->bi", ms, mean) + cs - mean  # zero-mean forcing about the mean
    src = np.einsum("bi,bj->ij", xi, xi) / len(batches) + ns.mean(0)
    kron = np.einsum("bik,bjl->ijkl", ms, ms).reshape(d * d, d * d) / len(batches)
    cov = np.linalg.solve(np.eye(d * d) - kron, src.reshape(-1)).reshape(d, d)
    return mean, cov


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
@pytest.mark.parametrize("wd", [0.0, 0.2])
def test_dataset_label_noise_matches_enumeration(sampling, wd):
    x, y = _data()
    s, sigma2 = 3, 0.7
    lr = 0.6 * float(linreg.dataset_max_lr(x, s, sampling=sampling, weight_decay=wd))
    th = linreg.dataset_stationary(x, y, lr, s, sampling=sampling, weight_decay=wd,
                                   label_noise_var=sigma2)
    mean, cov = _enumerated_cov(x, y, lr, s, sampling == "with_replacement", sigma2, wd)
    np.testing.assert_allclose(th.param_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(th.param_cov, cov, rtol=1e-9, atol=1e-13)


def test_dataset_label_noise_adds_sigma2_over_s_h_to_the_noise():
    x, y = _data()
    s, lr, sigma2 = 2, 0.4, 0.9
    for sampling in ("with_replacement", "without_replacement"):
        th = linreg.dataset_stationary(x, y, lr, s, sampling=sampling, label_noise_var=sigma2)
        # the defining equation Sigma = M Sigma M + lr^2 C holds with the reported noise_cov
        m = np.eye(2) - lr * x.T @ x / len(x)
        np.testing.assert_allclose(m @ th.param_cov @ m + lr**2 * th.noise_cov, th.param_cov,
                                   rtol=1e-10, atol=1e-14)
        # train_loss stays on the stored targets: 1/2 [mean r^2 + tr(H Sigma)]
        r = x @ np.asarray(th.param_mean) - y
        np.testing.assert_allclose(
            th.train_loss, 0.5 * (np.mean(r**2) + np.sum(x.T @ x / len(x) * th.param_cov)),
            rtol=1e-12)
    # sigma^2 = 0 is the old function
    a = linreg.dataset_stationary(x, y, lr, s)
    b = linreg.dataset_stationary(x, y, lr, s, label_noise_var=0.0)
    np.testing.assert_array_equal(a.param_cov, b.param_cov)


def test_dataset_label_noise_jit_equals_eager():
    x, y = _data()
    def f(s2):
        return linreg.dataset_stationary(x, y, 0.3, 2, label_noise_var=s2).param_cov

    np.testing.assert_allclose(jax.jit(f)(0.5), f(0.5), rtol=1e-12)
    # the covariance is affine in sigma^2 (a linear equation with a sigma^2-proportional source)
    np.testing.assert_allclose(f(1.0) - f(0.0), 2 * (f(0.5) - f(0.0)), rtol=1e-10, atol=1e-15)


@pytest.mark.slow  # ~3 s each on an idle 2-core machine; also crosscheck linreg/label-noise-dataset
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_dataset_label_noise_vs_simulation(sampling):
    x, y = _data(n=6, realisable=True)
    s, sigma2 = 3, 0.5
    lr = 0.6 * float(linreg.dataset_max_lr(x, s, sampling=sampling))
    th = linreg.dataset_stationary(x, y, lr, s, sampling=sampling, label_noise_var=sigma2)
    stats = simulate.linreg_sgd(jax.random.key(3), x, y, lr, s, sampling=sampling,
                                label_noise_var=sigma2, steps=3000, replicas=256, burn_in=300,
                                init=th.param_mean)
    table = stats.compare(th.param_cov)  # |z| < t-threshold over the 3 entries (alpha = 1e-4)
    assert table.agree, table
    mean_table = simulate.compare(th.param_mean, stats, of="mean")
    assert mean_table.agree, mean_table


def test_noisy_dataset_source_draws_fresh_noise_per_slot():
    x, y = _data(n=4)
    sample = simulate.linreg.noisy_dataset(x, y, 2.0, "without_replacement", 3)
    xb, yb = sample(jax.random.key(0), (5000, 3))
    idx = np.argmax((np.asarray(xb)[..., None, :] == x[None, None]).all(-1), axis=-1)
    assert all(len(set(r)) == 3 for r in idx[:200])  # distinct indices in a subset
    eps = np.asarray(yb) - y[idx]
    se = np.sqrt(2 * 2.0**2 / eps.size)  # SE of a Gaussian variance estimate
    assert abs(eps.var() - 2.0) < 4.5 * se
    assert abs(np.corrcoef(eps[:, 0], eps[:, 1])[0, 1]) < 4.5 / np.sqrt(len(eps))


def test_linreg_label_noise_errors():
    x, y = _data()
    with pytest.raises(ValueError, match="label_noise_var"):
        linreg.dataset_stationary(x, y, 0.1, 2, label_noise_var=-1.0)
    with pytest.raises(ValueError, match="scalar"):
        linreg.dataset_stationary(x, y, 0.1, 2, label_noise_var=jnp.ones(2))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="shuffle"):
        simulate.linreg_sgd(key, x, y, 0.1, 2, sampling="shuffle", label_noise_var=0.1, steps=10,
                            replicas=8, burn_in=1)
    with pytest.raises(ValueError, match="label_noise_var"):
        simulate.linreg_sgd(key, x, y, 0.1, 2, label_noise_var=-0.1, steps=10, replicas=8,
                            burn_in=1)
    with pytest.raises(ValueError, match="larger than the dataset"):
        simulate.linreg_sgd(key, x, y, 0.1, 9, sampling="without_replacement",
                            label_noise_var=0.1, steps=10, replicas=8, burn_in=1)


# ------------------------------------------------------------------------------------------------
# small-lr isotropic limit
# ------------------------------------------------------------------------------------------------


def test_small_lr_limit_is_the_lr_to_zero_limit_of_the_exact_solve():
    x, _ = _data()
    x[:, 1] = -2.0 * x[:, 0]  # rank 1: one direction never moves
    y = x @ np.array([1.0, -0.5])
    s, sigma2 = 2, 0.8
    for lr in (1e-4, 1e-5):
        exact = linreg.dataset_stationary(x, y, lr, s, label_noise_var=sigma2)
        small = ln.linreg_small_lr(x, lr, s, sigma2)
        # relative error O(lr h_max)
        np.testing.assert_allclose(exact.param_cov, small.param_cov, rtol=0,
                                   atol=20 * lr * np.max(np.linalg.eigvalsh(x.T @ x / 5)) * lr)
        np.testing.assert_allclose(exact.train_loss, small.train_loss, rtol=20 * lr)
    proj = np.asarray(small.param_cov) / (lr * sigma2 / (2 * s))
    np.testing.assert_allclose(proj @ proj, proj, atol=1e-10)  # a projector ...
    assert round(np.trace(proj)) == 1  # ... on the 1-D data span
    np.testing.assert_allclose(proj @ np.array([2.0, 1.0]), 0.0, atol=1e-10)


@pytest.mark.slow  # ~3 s (new shapes compile)
def test_small_lr_limit_error_at_larger_lr():
    """The number quoted in the docs: N=50, D=3, S=5 Gaussian data (seed 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x @ np.array([1.0, -0.5, 0.3])
    rel = []
    for lr in (0.02, 0.2, 0.5):
        exact = linreg.dataset_stationary(x, y, lr, 5, label_noise_var=1.0)
        small = ln.linreg_small_lr(x, lr, 5, 1.0)
        rel.append(float(exact.train_loss / small.train_loss - 1))
    np.testing.assert_allclose(rel, [0.0162, 0.190, 0.679], atol=5e-4)


@pytest.mark.slow  # ~3 s
def test_small_lr_limit_vs_simulation_small_lr():
    """At lr*h_max = 0.03 the limit is within ~1.5 % -- inside the MC error of this run."""
    x, y = _data(n=6, realisable=True)
    s, sigma2, lr = 2, 1.0, 0.03
    small = ln.linreg_small_lr(x, lr, s, sigma2)
    stats = simulate.linreg_sgd(jax.random.key(5), x, y, lr, s, label_noise_var=sigma2,
                                steps=3000, replicas=256, burn_in=500,
                                init=np.linalg.lstsq(x, y)[0])
    h = jnp.asarray(x.T @ x / len(x))
    val, se = simulate.estimate(stats, lambda m, c: 0.5 * jnp.sum(h * c))
    exact = linreg.dataset_stationary(x, y, lr, s, label_noise_var=sigma2).train_loss
    assert abs(val - exact) / se < z_threshold(stats.groups)
    assert abs(val - small.train_loss) / se < z_threshold(stats.groups)


# ------------------------------------------------------------------------------------------------
# diffusions and Gauss-Newton
# ------------------------------------------------------------------------------------------------


def _tanh_model(p, x):
    return p["v"] * jnp.tanh(p["w"] * x)


def _tanh_loss(p, ex):
    return 0.5 * (_tanh_model(p, ex[0]) - ex[1]) ** 2


_TX = jnp.array([0.5, -1.0, 1.5, 2.0, -0.3])
_TY = jnp.array([0.3, -0.2, 0.9, 0.4, 0.1])
_TP = {"v": jnp.array(1.3), "w": jnp.array(0.7)}


def test_gauss_newton_hand_computation():
    v, w = 1.3, 0.7
    x = np.asarray(_TX)
    # J_i = (df/dv, df/dw) = (tanh(w x), v x sech^2(w x)); ravel order of {"v", "w"}: v, w
    jac = np.stack([np.tanh(w * x), v * x / np.cosh(w * x) ** 2], axis=1)
    np.testing.assert_allclose(ln.gauss_newton(_tanh_model, _TP, _TX), jac.T @ jac / len(x),
                               rtol=1e-12)
    dif = ln.diffusions(_tanh_loss, _TP, (_TX, _TY), 2, 0.3)
    np.testing.assert_allclose(dif.label_cov, 0.3 / 2 * jac.T @ jac / len(x), rtol=1e-12)
    np.testing.assert_allclose(dif.total, dif.sampling_cov + dif.label_cov)


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_sampling_diffusion_matches_batch_enumeration(sampling):
    s = 2
    g = np.asarray(jax.vmap(jax.grad(_tanh_loss), (None, 0))(_TP, (_TX, _TY))["v"]), np.asarray(
        jax.vmap(jax.grad(_tanh_loss), (None, 0))(_TP, (_TX, _TY))["w"])
    g = np.stack(g, axis=1)
    n = len(g)
    batches = (list(itertools.product(range(n), repeat=s)) if sampling == "with_replacement"
               else list(itertools.combinations(range(n), s)))
    gb = np.array([g[list(b)].mean(0) for b in batches])
    cov = np.cov(gb.T, bias=True)
    dif = ln.diffusions(_tanh_loss, _TP, (_TX, _TY), s, 0.3, sampling=sampling)
    np.testing.assert_allclose(dif.sampling_cov, cov, rtol=1e-10, atol=1e-15)


def test_diffusions_vector_targets():
    def model(p, x):
        return jnp.stack([p[0] * x, p[0] * p[1] * x**2])

    loss = lambda p, ex: 0.5 * jnp.sum((model(p, ex[0]) - ex[1]) ** 2)  # noqa: E731
    p = jnp.array([0.8, -1.1])
    y = jnp.stack([_TY, -_TY], axis=1)
    dif = ln.diffusions(loss, p, (_TX, y), 3, 0.5)
    np.testing.assert_allclose(dif.label_cov, 0.5 / 3 * ln.gauss_newton(model, p, _TX), rtol=1e-12)


@pytest.mark.parametrize("sampling", [
    "with_replacement", pytest.param("without_replacement", marks=pytest.mark.slow)])
def test_diffusions_vs_monte_carlo_label_noise_gradients(sampling):
    """Empirical covariance of simulated minibatch gradients with fresh label noise per slot."""
    s, sigma2, n = 3, 0.4, len(_TX)
    draws, groups = 2**16, 32
    k_idx, k_eps = jax.random.split(jax.random.key(11))
    if sampling == "with_replacement":
        idx = jax.random.randint(k_idx, (draws, s), 0, n)
    else:
        idx = jax.lax.top_k(jax.random.uniform(k_idx, (draws, n)), s)[1]
    yb = _TY[idx] + jnp.sqrt(sigma2) * jax.random.normal(k_eps, (draws, s))
    batch_grad = jax.vmap(lambda xb, yy: jax.flatten_util.ravel_pytree(jax.grad(
        lambda p: jnp.mean(jax.vmap(_tanh_loss, (None, 0))(p, (xb, yy))))(_TP))[0])
    gb = np.asarray(batch_grad(_TX[idx], yb)).reshape(groups, draws // groups, 2)
    covs = np.array([np.cov(gr.T) for gr in gb])
    dif = ln.diffusions(_tanh_loss, _TP, (_TX, _TY), s, sigma2, sampling=sampling)
    est, se = covs.mean(0), covs.std(0, ddof=1) / np.sqrt(groups)
    z = (est - np.asarray(dif.total)) / se
    assert np.max(np.abs(z[np.triu_indices(2)])) < z_threshold(groups, 3), z
    # and the label part alone is significant: without it the check would fail
    z0 = (est - np.asarray(dif.sampling_cov)) / se
    assert np.max(np.abs(z0)) > z_threshold(groups, 3)


def test_diffusions_errors():
    with pytest.raises(ValueError, match="pair"):
        ln.diffusions(_tanh_loss, _TP, _TX, 1, 0.1)
    with pytest.raises(ValueError, match="leading axis"):
        ln.diffusions(_tanh_loss, _TP, (_TX[:3], _TY), 1, 0.1)
    with pytest.raises(ValueError, match="label_noise_var"):
        ln.diffusions(_tanh_loss, _TP, (_TX, _TY), 1, -0.1)
    with pytest.raises(ValueError, match="larger than the dataset"):
        ln.diffusions(_tanh_loss, _TP, (_TX, _TY), 6, 0.1, sampling="without_replacement")


# ------------------------------------------------------------------------------------------------
# product model f = a b
# ------------------------------------------------------------------------------------------------


def test_imbalance_identity_by_hand():
    rng = np.random.default_rng(0)
    a, b, y, lr = 1.7, -0.4, 0.8, 0.1
    for eps in rng.normal(size=5):
        r = a * b - y - eps
        a2, b2 = a - lr * b * r, b - lr * a * r
        np.testing.assert_allclose(a2**2 - b2**2, (a**2 - b**2) * (1 - lr**2 * r**2), rtol=1e-13)
    # conditional mean and variance by Gauss-Hermite quadrature over eps ~ N(0, sigma^2 / S)
    sigma2, s = 0.3, 2
    t, w = np.polynomial.hermite_e.hermegauss(40)
    r = a * b - y - np.sqrt(sigma2 / s) * t
    dnext = (a**2 - b**2) * (1 - lr**2 * r**2)
    mean = np.sum(w * dnext) / np.sum(w)
    var = np.sum(w * dnext**2) / np.sum(w) - mean**2
    step = ln.imbalance_step(a, b, y, lr, sigma2, s)
    np.testing.assert_allclose(step.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(step.var, var, rtol=1e-8)


def test_imbalance_path_matches_scipy_ode():
    d0, y, lr, sigma2, s = -3.75, 1.0, 0.05, 0.25, 2
    ks = np.array([0.0, 10.0, 1000.0, 4000.0])

    def rhs(_, d):
        return np.asarray(ln.imbalance_drift(d[0], y, lr, sigma2, s))[None]

    sol = solve_ivp(rhs, (0, ks[-1]), [d0], t_eval=ks, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ln.imbalance_path(d0, y, lr, sigma2, ks, s), sol.y[0], rtol=1e-8)
    lead = ln.imbalance_path(d0, y, lr, sigma2, ks, s, order="leading")
    np.testing.assert_allclose(lead, d0 * np.exp(-lr**2 * sigma2 / s * ks), rtol=1e-14)
    # jit and vmap agree with eager
    f = lambda k: ln.imbalance_path(d0, y, lr, sigma2, k, s)  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(jnp.asarray(ks)), f(ks), rtol=1e-12)
    assert float(ln.imbalance_path(0.0, y, lr, sigma2, 100.0)) == 0.0


def test_finite_lr_factor_at_the_reference_point():
    """landscape-and-classic.md B5: 2/(2 - lr h) = 1.119 at D = 3.75, y = 1, lr = 0.05."""
    ratio = ln.imbalance_drift(3.75, 1.0, 0.05, 0.25) / ln.imbalance_drift(
        3.75, 1.0, 0.05, 0.25, order="leading")
    np.testing.assert_allclose(ratio, 2 / (2 - 0.05 * 4.25), rtol=1e-14)
    assert abs(float(ratio) - 1.119) < 5e-4
    # the residual variance: sigma^2 + Var(ab - y) = sigma^2 2/(2 - lr h)
    v = ln.product_residual_var(3.75, 1.0, 0.05, 0.25)
    np.testing.assert_allclose(0.25 + v, 0.25 * float(ratio), rtol=1e-14)


def _noisy_one(k, shape):
    return 1.0 + 0.5 * jax.random.normal(k, shape)  # y = 1, sigma^2 = 0.25


def _prod_loss(p, t):
    return 0.5 * (p[0] * p[1] - t) ** 2


def _imb(p, opt_state):
    del opt_state
    return jnp.stack([p[0] ** 2 - p[1] ** 2])


def _run_product(key, init, steps, replicas, batch_size=1):
    return simulate.minibatch_sgd(
        key, _prod_loss, jnp.asarray(init),
        simulate.Online(_noisy_one, batch_size, vectorized=True),
        optax.sgd(jnp.asarray(0.05)), steps=steps, replicas=replicas, burn_in=steps - 1,
        observe=_imb, block=100 if steps % 100 == 0 else 1)


def test_imbalance_one_step_vs_simulation():
    a, b = 1.6, 0.9
    stats = _run_product(jax.random.key(2), [a, b], 1, 2**16, batch_size=2)
    step = ln.imbalance_step(a, b, 1.0, 0.05, 0.25, 2)
    z = (stats.mean[0] - step.mean) / stats.mean_stderr[0]
    assert abs(z) < z_threshold(stats.groups), z
    # the conditional variance (Gaussian noise): SE of a variance from the group spread
    v, se = simulate.estimate(stats, lambda m, c: c[0, 0])
    assert abs(v - step.var) / se < z_threshold(stats.groups)


def test_imbalance_path_vs_simulation_and_leading_order_fails():
    """landscape-and-classic.md B5: D(1000) = 1.8944 (ODE with 2/(2 - lr h)) vs 2.0072 (leading)."""
    stats = _run_product(jax.random.key(7), [2.0, 0.5], 1000, 2**13)
    ode = ln.imbalance_path(3.75, 1.0, 0.05, 0.25, 1000)
    lead = ln.imbalance_path(3.75, 1.0, 0.05, 0.25, 1000, order="leading")
    z = (stats.mean[0] - ode) / stats.mean_stderr[0]
    assert abs(z) < z_threshold(stats.groups), z
    assert abs(stats.mean[0] - lead) / stats.mean_stderr[0] > 10 * z_threshold(stats.groups)
    np.testing.assert_allclose((float(ode), float(lead)), (1.8944, 2.0072), atol=1e-4)


def test_implicit_regularizer_product_model_by_hand():
    a, b, sigma2, s = 2.0, 0.5, 0.25, 2
    f = lambda p, x: p[0] * p[1] * x  # noqa: E731
    drift = ln.implicit_regularizer_drift(f, jnp.array([a, b]), jnp.ones(3), sigma2, s)
    d, h = a**2 - b**2, a**2 + b**2
    # -(sigma^2/(4S)) * projection of grad tr G = (2a, 2b) on the tangent (a, -b)/sqrt(h)
    np.testing.assert_allclose(drift, -sigma2 / (4 * s) * 2 * d / h * np.array([a, -b]),
                               rtol=1e-12)
    # dD/dtau = grad D . drift = -(sigma^2/S) D: imbalance_drift's leading order / lr^2
    dd = 2 * a * drift[0] - 2 * b * drift[1]
    np.testing.assert_allclose(dd * 0.05**2,
                               ln.imbalance_drift(d, 1.0, 0.05, sigma2, s, order="leading"),
                               rtol=1e-12)


def test_implicit_regularizer_is_tangent_for_a_two_example_model():
    """f(x) = (u1 v1, u2 v2) . x on two examples: the drift is orthogonal to every grad f_i."""
    def f(p, x):
        return p[0] * p[1] * x[0] + p[2] * p[3] * x[1]

    xs = jnp.array([[1.0, 0.5], [-0.3, 1.2]])
    p = jnp.array([1.5, 0.4, 0.7, -1.1])
    drift = ln.implicit_regularizer_drift(f, p, xs, 0.3)
    jac = jax.vmap(lambda x: jax.grad(f)(p, x))(xs)
    np.testing.assert_allclose(jac @ drift, 0.0, atol=1e-12)
    # each pair (u_j, v_j) balances: d(u_j^2 - v_j^2)/dtau has the sign of -(u_j^2 - v_j^2)
    d1 = 2 * p[0] * drift[0] - 2 * p[1] * drift[1]
    d2 = 2 * p[2] * drift[2] - 2 * p[3] * drift[3]
    assert d1 < 0 < d2


def test_product_errors():
    with pytest.raises(ValueError, match="2/h"):
        ln.imbalance_path(30.0, 1.0, 0.1, 0.25, 10)
    with pytest.raises(ValueError, match="2/h"):
        ln.imbalance_drift(30.0, 1.0, 0.1, 0.25)
    with pytest.raises(ValueError, match="order"):
        ln.imbalance_path(3.0, 1.0, 0.01, 0.25, 10, order="second")
    with pytest.raises(ValueError, match="lr"):
        ln.imbalance_step(1.0, 1.0, 1.0, -0.1, 0.25)
    with pytest.raises(ValueError, match="label_noise_var"):
        ln.product_residual_var(1.0, 1.0, 0.1, -0.25)
    with pytest.raises(ValueError, match="scalar"):
        ln.imbalance_path(jnp.ones(2), 1.0, 0.01, 0.25, 10)


def test_product_traced_lr_past_bound_gives_nan():
    # h(D = 30, y = 1) = 30.07: the bound 2/h = 0.0665; eager 0.1 raises, traced 0.1 gives NaN
    with pytest.raises(ValueError, match="2/h"):
        ln.product_residual_var(30.0, 1.0, 0.1, 0.25)
    fns = (lambda lr: ln.product_residual_var(30.0, 1.0, lr, 0.25),
           lambda lr: ln.imbalance_drift(30.0, 1.0, lr, 0.25),
           lambda lr: ln.imbalance_path(30.0, 1.0, lr, 0.25, 10))
    for f in fns:
        assert np.isnan(float(jax.jit(f)(0.1)))
        np.testing.assert_allclose(jax.jit(f)(0.01), f(0.01), rtol=1e-12)
    # per element: only the points past their own bound are NaN
    out = np.asarray(jax.jit(lambda lr: ln.imbalance_drift(jnp.array([1.0, 30.0]), 1.0, lr, 0.25))(0.1))
    assert np.isfinite(out[0]) and np.isnan(out[1])
    # the leading-order law has no bound
    assert np.isfinite(float(jax.jit(
        lambda lr: ln.imbalance_drift(30.0, 1.0, lr, 0.25, order="leading"))(0.1)))


def test_examples_leading_axis_and_scalar_lr():
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="same leading axis N; got"):
        ln.diffusions(_tanh_loss, _TP, ({"a": _TX, "b": _TX[:3]}, _TY), 1, 0.1)
    with pytest.raises(ValueError, match="lr must be a scalar"):
        ln.linreg_small_lr(x, jnp.array([0.1, 0.2]), 2, 1.0)


def test_public_surface():
    assert st.label_noise is ln
    for name in ln.__all__:
        assert getattr(ln, name).__doc__


@pytest.mark.slow  # ~10 s: two runs of 2^14 replicas
def test_implicit_regularizer_flow_is_the_small_lr_limit_for_two_examples():
    """Two examples, f = u1 v1 x1 + u2 v2 x2 (a 2-D diagonal network), S = 1, sigma^2 = 1.

    Simulated D_j(k) - D_j(0) (D_j = u_j^2 - v_j^2) against the flow integrated to tau = lr^2 k:
    the relative error is first order in lr (measured 2.3 %, 1.3 %, 0.6 % at lr = 0.02, 0.01,
    0.005), so its Richardson extrapolation 2 r(lr/2) - r(lr) vanishes within the standard error.
    """
    def f(p, x):
        return p[0] * p[1] * x[0] + p[2] * p[3] * x[1]

    xs = jnp.array([[1.0, 0.5], [-0.3, 1.2]])
    p0 = jnp.array([1.5, 0.4, 0.7, -1.1])
    ys = jax.vmap(lambda x: f(p0, x))(xs)  # p0 interpolates: on the zero-loss manifold

    def sample(k, shape):
        k1, k2 = jax.random.split(k)
        idx = jax.random.randint(k1, shape, 0, 2)
        return xs[idx], ys[idx] + jax.random.normal(k2, shape)

    def imbalances(p, opt_state=None):
        return jnp.stack([p[0] ** 2 - p[1] ** 2, p[2] ** 2 - p[3] ** 2])

    drift = jax.jit(lambda p: ln.implicit_regularizer_drift(f, p, xs, 1.0))
    rel, se = [], []
    for i, (lr, k) in enumerate(((0.01, 2000), (0.005, 4000))):
        stats = simulate.minibatch_sgd(
            jax.random.key(20 + i), lambda p, ex: 0.5 * (f(p, ex[0]) - ex[1]) ** 2, p0,
            simulate.Online(sample, 1, vectorized=True), optax.sgd(jnp.asarray(lr)), steps=k,
            replicas=2**14, burn_in=k - 1, observe=imbalances, block=100)
        sol = solve_ivp(lambda t, p: np.asarray(drift(jnp.asarray(p))), (0, lr**2 * k),
                        np.asarray(p0), rtol=1e-10, atol=1e-12)
        flow = np.asarray(imbalances(sol.y[:, -1]) - imbalances(p0))
        rel.append((np.asarray(stats.mean - imbalances(p0))) / flow - 1)
        se.append(np.asarray(stats.mean_stderr) / np.abs(flow))
    rich = 2 * rel[1] - rel[0]
    rich_se = np.sqrt(4 * se[1] ** 2 + se[0] ** 2)
    assert np.all(np.abs(rich) / rich_se < z_threshold(32, 2)), (rel, rich, rich_se)
    assert np.all(np.abs(rel[0]) / se[0] > z_threshold(32, 2))  # the lr = 0.01 error is resolved
