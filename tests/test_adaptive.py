"""sgdtheory.adaptive and optim.laprop: LaProp against a NumPy loop; Adam's update moments against
SciPy quadrature and vmapped optax.adam; the Adam/LaProp bounds against optax runs; the mean-field
fixed points (p1 Cor 9, Eq. 111, Thm 10) against the frozen-preconditioner Lyapunov solve of
sgdtheory.quadratic, finite differences, and simulations (interacting replicas, per-replica
EMA-Adam with minibatch_sgd, frozen preconditioner with quadratic_sgd).

Statistical tolerances: |z| < 4.5 with the standard error from 32 independent replica groups (or
ensembles); an approximation expected to fail must miss by |z| > 4.5.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate as si
from scipy.special import erf

import sgdtheory as st
from sgdtheory import adaptive as ad
from sgdtheory import optim
from sgdtheory.crosscheck.adaptive import (ema_adam_log_abs_w, mean_field_particles,
                                           simulate_update_moments)

Z = 4.5  # |z| threshold; SE from 32 replica groups


def _z(sim, se, theory):
    return (sim - theory) / se


# ------------------------------------------------------------------------------------------------
# LaProp
# ------------------------------------------------------------------------------------------------


def _laprop_numpy(grads, lr, b1, b2, eps):
    """Hand loop of Algorithm 1 (bias corrections 1-b2^t inside the root, 1-b1^t on momentum)."""
    m = np.zeros_like(grads[0])
    v = np.zeros_like(grads[0])
    out = []
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1 - b2) * g * g
        m = b1 * m + (1 - b1) * g / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(-lr * m / (1 - b1**t))
    return np.array(out)


@pytest.mark.parametrize("b1,b2,eps", [(0.9, 0.999, 1e-15), (0.99, 0.9, 1e-8), (0.0, 0.5, 1e-300)])
def test_laprop_matches_numpy_loop(b1, b2, eps):
    g = np.random.default_rng(0).standard_normal((40, 3)) * np.array([1.0, 1e-3, 50.0])
    got = ad.optimizer_updates(optim.laprop(0.03, b1, b2, eps), jnp.asarray(g))
    np.testing.assert_allclose(got, _laprop_numpy(g, 0.03, b1, b2, eps), rtol=1e-13, atol=1e-16)


def test_laprop_pytree_jit_and_first_step_sign():
    opt = optim.laprop(0.1)
    params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
    s = opt.init(params)
    g = {"a": jnp.array([3.0, -0.5]), "b": jnp.array(2.0)}
    u, s = jax.jit(opt.update)(g, s)
    np.testing.assert_allclose(u["a"], [-0.1, 0.1], rtol=1e-13)
    np.testing.assert_allclose(u["b"], -0.1, rtol=1e-13)
    assert int(s.count) == 1


@pytest.mark.slow
def test_laprop_runs_in_quadratic_sgd_and_is_rejected_by_linearize():
    st_q = st.simulate.quadratic_sgd(jax.random.key(0), jnp.eye(2), 0.1 * jnp.eye(2), None,
                                     optimizer=optim.laprop(0.01), steps=300, replicas=64,
                                     burn_in=100)
    assert np.all(np.isfinite(st_q.cov)) and int(st_q.diverged) == 0
    with pytest.raises(ValueError, match="not linear"):
        optim.linearize(optim.laprop(0.1))


@pytest.mark.slow
def test_laprop_runs_in_minibatch_sgd():
    x = jax.random.normal(jax.random.key(1), (16, 2))
    y = x @ jnp.array([1.0, -1.0])
    loss = lambda w, ex: 0.5 * (ex[0] @ w - ex[1]) ** 2  # noqa: E731
    sim = st.simulate.minibatch_sgd(jax.random.key(0), loss, jnp.zeros(2),
                                    st.simulate.Dataset((x, y), batch_size=4),
                                    optim.laprop(0.01), steps=1500, replicas=64, burn_in=1400)
    np.testing.assert_allclose(sim.mean, [1.0, -1.0], atol=0.05)


def test_laprop_errors_and_nonlinearity():
    for kw in ({"learning_rate": 0.0}, {"learning_rate": 0.1, "b1": 1.0},
               {"learning_rate": 0.1, "b2": -0.1}, {"learning_rate": 0.1, "eps": -1.0}):
        with pytest.raises(ValueError):
            optim.laprop(**kw)


# ------------------------------------------------------------------------------------------------
# Adam's update under Gaussian gradients
# ------------------------------------------------------------------------------------------------


def _first_step_scipy(mu, sig, eps):
    p = lambda g: math.exp(-0.5 * ((g - mu) / sig) ** 2) / (sig * math.sqrt(2 * math.pi))  # noqa: E731
    h = lambda g: g / (abs(g) + eps)  # noqa: E731
    pts = [0.0, mu]
    kw = dict(limit=400, epsabs=1e-14, epsrel=1e-13, points=pts)
    lo, hi = mu - 40 * sig, mu + 40 * sig
    m1 = si.quad(lambda g: h(g) * p(g), lo, hi, **kw)[0]
    m2 = si.quad(lambda g: h(g) ** 2 * p(g), lo, hi, **kw)[0]
    a1 = si.quad(lambda g: abs(h(g)) * p(g), lo, hi, **kw)[0]
    return m1, m2 - m1**2, a1, m2 - a1**2


def test_first_step_exact_against_scipy_and_closed_form():
    for mu, sig, eps in ((0.5, 1.0, 1e-3), (-2.0, 0.7, 0.05), (3.0, 0.1, 1e-8)):
        got = ad.adam_update_moments_first_step(mu, sig, eps)
        np.testing.assert_allclose(got, _first_step_scipy(mu, sig, eps), rtol=1e-9, atol=1e-12)
    got = ad.adam_update_moments_first_step(jnp.array([0.0, 0.5, 2.0]), 1.0, 0.0)
    e = erf(np.array([0.0, 0.5, 2.0]) / math.sqrt(2))
    np.testing.assert_allclose(got.mean, e, rtol=1e-14)
    np.testing.assert_allclose(got.var, 1 - e**2, rtol=1e-13)
    np.testing.assert_allclose(got.abs_var, 0.0, atol=1e-15)


def _adam_two_steps_numpy(g1, g2, b1, b2):
    m = (1 - b1) * g1
    v = (1 - b2) * g1 * g1
    m = b1 * m + (1 - b1) * g2
    v = b2 * v + (1 - b2) * g2 * g2
    return (m / (1 - b1**2)) / np.sqrt(v / (1 - b2**2))


def test_second_step_exact_against_2d_quadrature():
    # independent: angle integral with the radial density integrated by scipy, Adam's update by a
    # hand loop at (cos θ, sin θ) (u_2 is scale invariant)
    mu, sig, b1, b2 = 0.4, 1.3, 0.8, 0.95

    def dens(th):
        c, s = math.cos(th), math.sin(th)
        f = lambda r: r * math.exp(-0.5 * ((r * c - mu) ** 2 + (r * s - mu) ** 2) / sig**2)  # noqa: E731
        return si.quad(f, 0, np.inf, epsabs=1e-14, epsrel=1e-12)[0] / (2 * math.pi * sig**2)

    u = lambda th: _adam_two_steps_numpy(math.cos(th), math.sin(th), b1, b2)  # noqa: E731
    zeros = [math.atan2(-b1, 1.0) % (2 * math.pi), (math.atan2(-b1, 1.0) + math.pi) % (2 * math.pi)]
    kw = dict(limit=200, epsabs=1e-13, epsrel=1e-11, points=zeros)
    m1 = si.quad(lambda th: u(th) * dens(th), 0, 2 * math.pi, **kw)[0]
    m2 = si.quad(lambda th: u(th) ** 2 * dens(th), 0, 2 * math.pi, **kw)[0]
    a1 = si.quad(lambda th: abs(u(th)) * dens(th), 0, 2 * math.pi, **kw)[0]
    got = ad.adam_update_moments_second_step(mu, sig, b1, b2)
    np.testing.assert_allclose(got, (m1, m2 - m1**2, a1, m2 - a1**2), rtol=1e-9, atol=1e-12)


def test_ema_weight_sums_against_brute_force():
    for t in (1, 2, 7, 300):
        k = np.arange(1, t + 1)
        a = 0.1 * 0.9 ** (t - k) / (1 - 0.9**t)
        b = 0.05 * 0.95 ** (t - k) / (1 - 0.95**t)
        got = ad.ema_weight_sums(t, 0.9, 0.95)
        np.testing.assert_allclose(got, (np.sum(a * a), np.sum(b * b), np.sum(a * b)), rtol=1e-12)
    lim = ad.ema_weight_sums(jnp.inf, 0.9, 0.95)
    np.testing.assert_allclose(lim, ad.ema_weight_sums(5000, 0.9, 0.95), rtol=1e-12)


def test_update_moments_against_optax_adam_simulation():
    """optax.adam (eps=1e-8) vmapped over 2^14 replicas; exact t=1,2 agree, the delta method agrees
    at t=300 and misses at t=1 (-32 %); Var|u_t| is not monotone in t."""
    mu, sig = 0.5, 1.0
    res = simulate_update_moments(jax.random.key(3), optax.adam(1.0), mu, sig, (1, 2, 300),
                                  replicas=2**14)
    e1 = ad.adam_update_moments_first_step(mu, sig, 1e-8)
    e2 = ad.adam_update_moments_second_step(mu, sig)
    assert abs(_z(*res[1]["var"], float(e1.var))) < Z
    assert abs(_z(*res[1]["mean"], float(e1.mean))) < Z
    assert abs(_z(*res[2]["var"], float(e2.var))) < Z
    assert abs(_z(*res[2]["abs_var"], float(e2.abs_var))) < Z
    ap300 = ad.adam_update_moments(300, mu, sig)
    assert abs(_z(*res[300]["var"], float(ap300.var))) < Z
    assert abs(_z(*res[300]["mean"], float(ap300.mean))) < Z
    ap1 = ad.adam_update_moments(1, mu, sig)
    assert abs(_z(*res[1]["var"], float(ap1.var))) > Z  # the approximation fails at t = 1
    # the magnitude's variance rises from ~0 and falls again: not increasing in t
    assert float(e1.abs_var) < 1e-7 < res[300]["abs_var"][0] < float(e2.abs_var) - 5 * res[300]["abs_var"][1]


def test_update_moments_limits_and_bound():
    m = ad.adam_update_moments(jnp.inf, 0.0, 2.0, 0.9, 0.999)
    np.testing.assert_allclose(m.var, 0.1 / 1.9, rtol=1e-14)  # mu = 0: sigma^2/s * (1-b1)/(1+b1)
    np.testing.assert_allclose(m.mean, 0.0, atol=1e-15)
    for t in (1, 2, 10):  # the exact variances obey Var u_t <= sup|u_t|^2
        assert float(ad.adam_update_moments_second_step(0.3, 1.0).var) <= float(ad.adam_update_bound(0.9, 0.999, 2)) ** 2
        assert float(ad.adam_update_bound(0.9, 0.999, t)) <= float(ad.adam_update_bound(0.9, 0.999)) + 1e-12


def test_update_moment_errors():
    with pytest.raises(ValueError, match="std"):
        ad.adam_update_moments_first_step(0.0, 0.0)
    with pytest.raises(ValueError, match="eps"):
        ad.adam_update_moments_first_step(0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="b1"):
        ad.adam_update_moments_second_step(0.0, 1.0, b1=1.0)
    with pytest.raises(ValueError, match="t must"):
        ad.adam_update_moments(0, 0.0, 1.0)
    with pytest.raises(ValueError, match="b2"):
        ad.adam_update_moments(3, 0.0, 1.0, b2=1.5)


def test_update_moments_jit_vmap():
    f = jax.jit(jax.vmap(lambda t: ad.ema_weight_sums(t, 0.9, 0.999)[0]))
    ts = jnp.array([1.0, 5.0, 50.0])
    np.testing.assert_allclose(f(ts), [float(ad.ema_weight_sums(t, 0.9, 0.999)[0]) for t in ts],
                               rtol=1e-14)
    g = jax.jit(lambda mu: ad.adam_update_moments_second_step(mu, 1.0).var)
    np.testing.assert_allclose(g(0.5), ad.adam_update_moments_second_step(0.5, 1.0).var, rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# boundedness: Adam vs LaProp
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.99, 0.9)])
def test_adam_bound_attained_and_never_exceeded(b1, b2):
    t = 40
    bound = float(ad.adam_update_bound(b1, b2, t))
    # column 0: the worst case; the others: random signs and log-normal magnitudes (e^{3z})
    rng = np.random.default_rng(0)
    rnd = rng.standard_normal((t, 512)) * np.exp(3 * rng.standard_normal((t, 512)))
    g = np.concatenate([np.asarray(ad.adam_worst_case_gradients(b1, b2, t))[:, None], rnd], axis=1)
    u = np.asarray(ad.optimizer_updates(optax.adam(1.0, b1=b1, b2=b2, eps=0.0), g))
    np.testing.assert_allclose(abs(float(u[-1, 0])), bound, rtol=1e-12)
    assert float(np.max(np.abs(u[-1, 1:]))) <= bound * (1 + 1e-12)
    assert float(np.max(np.abs(u[-1, 1:]))) < 0.9 * bound  # random sequences stay well inside


def test_adam_bound_limits_and_condition():
    # t -> inf limit; r = b1^2/b2 >= 1 is unbounded and grows like r^(t/2)
    np.testing.assert_allclose(ad.adam_update_bound(0.9, 0.999), ad.adam_update_bound(0.9, 0.999, 1e5), rtol=1e-12)
    assert not np.isfinite(float(ad.adam_update_bound(0.99, 0.9)))
    r = 0.99**2 / 0.9
    np.testing.assert_allclose(ad.adam_update_bound(0.99, 0.9, 3001) / ad.adam_update_bound(0.99, 0.9, 3000),
                               math.sqrt(r), rtol=1e-12)
    assert bool(ad.adam_is_bounded(0.9, 0.999)) and not bool(ad.adam_is_bounded(0.95, 0.9))
    np.testing.assert_allclose(ad.adam_update_bound(0.9, 0.81, 3),  # r = 1: sqrt(t) growth
                               0.1 * math.sqrt(1 - 0.81**3) / ((1 - 0.9**3) * math.sqrt(0.19)) * math.sqrt(3),
                               rtol=1e-12)


def test_laprop_bound_approached_and_never_exceeded():
    b1, b2, t = 0.99, 0.9, 5
    bound = float(ad.laprop_update_bound(b1, b2, t))
    n = 60
    fast = np.zeros((n, 1))
    fast[:t, 0] = 1e12 ** np.arange(1.0, t + 1)  # each gradient dominates the EMA
    rng = np.random.default_rng(2)
    rnd = rng.standard_normal((n, 512)) * np.exp(3 * rng.standard_normal((n, 512)))
    u = np.asarray(ad.optimizer_updates(optim.laprop(1.0, b1, b2, eps=1e-300), np.concatenate([fast, rnd], 1)))
    np.testing.assert_allclose(abs(float(u[t - 1, 0])), bound, rtol=1e-10)
    # the bound at every step, summed in NumPy (checked against the function at two steps)
    bounds = np.array([(1 - b1) / (1 - b1**m) * sum(b1 ** (m - j) * math.sqrt((1 - b2**j) / (1 - b2))
                                                     for j in range(1, m + 1)) for m in range(1, n + 1)])
    np.testing.assert_allclose(bounds[[t - 1, n - 1]], [bound, float(ad.laprop_update_bound(b1, b2, n))],
                               rtol=1e-13)
    assert bool(np.all(np.abs(u[:, 1:]) <= bounds[:, None] * (1 + 1e-12)))
    assert float(ad.laprop_update_bound(b1, b2, 60)) <= float(ad.laprop_update_bound(b1, b2))


def test_impulse_response_adam_blows_up_laprop_does_not():
    b1, b2, t = 0.99, 0.9, 400
    g = np.zeros((t, 1))
    g[0, 0] = 2.0
    ts = np.arange(1.0, t + 1)
    imp = ad.impulse_updates(ts, b1, b2, eps=1e-15, g=2.0)
    ua = ad.optimizer_updates(optax.adam(1.0, b1=b1, b2=b2, eps=1e-15), g)[:, 0]
    ul = ad.optimizer_updates(optim.laprop(1.0, b1, b2, eps=1e-15), g)[:, 0]
    np.testing.assert_allclose(-ua, imp.adam, rtol=1e-10)
    np.testing.assert_allclose(-ul, imp.laprop, rtol=1e-10)
    assert float(jnp.max(jnp.abs(ua))) > 1e5  # Adam: lr x 1e5 after one spike (b1 > sqrt(b2))
    assert float(jnp.max(jnp.abs(ul))) <= 1.0
    safe = ad.impulse_updates(ts, 0.9, 0.999)  # b1 < sqrt(b2): bounded, decays
    assert float(jnp.max(jnp.abs(safe.adam))) <= float(ad.adam_update_bound(0.9, 0.999))


def test_bound_errors():
    with pytest.raises(ValueError, match="b1"):
        ad.adam_update_bound(1.2, 0.9)
    with pytest.raises(ValueError, match="b2"):
        ad.adam_update_bound(0.9, 0.0)
    with pytest.raises(ValueError, match="t must"):
        ad.laprop_update_bound(0.9, 0.9, t=0)
    with pytest.raises(ValueError, match="optax"):
        ad.optimizer_updates("adam", jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="leading time axis"):
        ad.optimizer_updates(optax.adam(0.1), jnp.ones(()))


# ------------------------------------------------------------------------------------------------
# mean-field fixed points
# ------------------------------------------------------------------------------------------------


def _frozen_heavy_ball_covariance(k, c, prec, mu, full=False):
    """Kronecker solve of X = M X M^T + B C B^T for x = (w, m) with the preconditioner frozen."""
    d = k.shape[0]
    eye = np.eye(d)
    m = np.block([[eye - prec @ k, -mu * prec], [k, mu * eye]])
    b = np.vstack([-prec, eye])
    x = np.linalg.lstsq(np.eye(4 * d * d) - np.kron(m, m), (b @ c @ b.T).reshape(-1), rcond=None)[0]
    return x.reshape(2 * d, 2 * d)[:d, :d] if full is False else x.reshape(2 * d, 2 * d)


def test_ngd_cor9_is_self_consistent_with_the_frozen_lyapunov_solve():
    # non-diagonal K with a commuting C; momentum; independent: a Kronecker solve of the frozen
    # heavy-ball dynamics w' = w - Λ m', m' = μ m + K w + η
    rng = np.random.default_rng(0)
    o, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    k = o @ np.diag([0.5, 1.0, 3.0]) @ o.T
    c = o @ np.diag([0.2, 1.0, 0.05]) @ o.T
    for mu in (0.0, 0.6):
        fp = ad.ngd_fixed_point(k, c, 0.2, momentum=mu)
        np.testing.assert_allclose(fp.preconditioner, 0.2 * np.linalg.inv(k @ np.asarray(fp.sigma) @ k),
                                   rtol=1e-10)
        sig = _frozen_heavy_ball_covariance(k, c, np.asarray(fp.preconditioner), mu)
        np.testing.assert_allclose(sig, fp.sigma, rtol=1e-10, atol=1e-13)


def test_eq111_and_thm10_fixed_points_and_slopes():
    kd = np.array([0.3, 2.0])
    k = np.diag(kd)
    for c, slope in ((0.1, -2.636363636), (0.5, -1.666666667), (3.0, 0.0)):
        fp = jax.tree_util.tree_map(np.asarray, ad.ngd_fixed_point_proportional(k, c, 0.1))
        np.testing.assert_allclose(np.diag(fp.sigma), 0.1 * (1 + c) / 2 / kd, rtol=1e-13)
        np.testing.assert_allclose(fp.jacobian[:, 0, 0], 1 - 4 / (1 + c), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fp.jacobian[0, 0, 0], slope, rtol=1e-9, atol=1e-12)
        assert bool(np.all(fp.attracting)) == (c > 1)
    fp = ad.ngd_fixed_point_proportional(k, 0.5, 0.1, momentum=0.5)
    np.testing.assert_allclose(np.diag(fp.sigma), 0.1 * (1.5 * 0.5 + 0.5) / (2 * 0.75) / kd, rtol=1e-13)
    for c in (0.0, 0.5, 2.0):
        fp = jax.tree_util.tree_map(np.asarray, ad.adam_like_fixed_point(k, c, 0.1))
        np.testing.assert_allclose(fp.sigma, 0.01 * (1 + c) / 4 * np.eye(2), rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(fp.jacobian[:, 0, 0], 1 - 2 / (1 + c), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind,kw", [("ngd", dict(noise_var=0.3)), ("ngd", dict(noise_c=0.5)),
                                     ("adam", dict(noise_c=0.5))])
def test_fixed_points_are_fixed_and_jacobian_matches_finite_differences(kind, kw):
    k, lam = 1.7, 0.1
    for mu in ((0.0, 0.4) if kind == "ngd" else (0.0,)):
        if kind == "adam":
            fp = ad.adam_like_fixed_point(jnp.eye(1) * k, kw["noise_c"], lam)
        elif "noise_var" in kw:
            fp = ad.ngd_fixed_point(jnp.eye(1) * k, jnp.eye(1) * kw["noise_var"], lam, momentum=mu)
        else:
            fp = ad.ngd_fixed_point_proportional(jnp.eye(1) * k, kw["noise_c"], lam, momentum=mu)
        a, ell = float(fp.sigma[0, 0]), float(fp.preconditioner[0, 0])
        fj = jax.jit(lambda x: ad.mean_field_map(x, k, lam, preconditioner=kind, momentum=mu, **kw))
        f = lambda x: np.asarray(fj(jnp.asarray(x)))  # noqa: E731
        # (E w^2, E wm, E m^2) of the frozen dynamics at Λ* (Kronecker solve, independent of _assemble)
        cn = kw.get("noise_var", 0.0) + kw.get("noise_c", 0.0) * k * k * a
        xx = _frozen_heavy_ball_covariance(np.eye(1) * k, np.eye(1) * cn, np.eye(1) * ell, mu, full=True)
        x = np.array([xx[0, 0], xx[0, 1], xx[1, 1]])
        np.testing.assert_allclose(x[0], a, rtol=1e-10)
        np.testing.assert_allclose(f(x), x, rtol=1e-9, atol=1e-14)
        h = 1e-6 * a
        fd = np.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(3)], axis=1)
        np.testing.assert_allclose(fp.jacobian[0], fd, rtol=1e-5, atol=1e-6)


def test_fixed_point_errors():
    k = jnp.diag(jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="commute"):
        ad.ngd_fixed_point(k, jnp.array([[1.0, 0.5], [0.5, 1.0]]), 0.1)
    with pytest.raises(ValueError, match="positive definite"):
        ad.ngd_fixed_point_proportional(jnp.diag(jnp.array([1.0, 0.0])), 0.5, 0.1)
    with pytest.raises(ValueError, match="momentum"):
        ad.ngd_fixed_point_proportional(k, 0.5, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="c must"):
        ad.adam_like_fixed_point(k, -0.1, 0.1)
    with pytest.raises(ValueError, match="lr"):
        ad.adam_like_fixed_point(k, 0.1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        ad.ngd_fixed_point(k, jnp.eye(3), 0.1)
    with pytest.raises(ValueError, match="preconditioner"):
        ad.mean_field_map(jnp.ones(3), 1.0, 0.1, preconditioner="sgd")
    with pytest.raises(ValueError, match="moments"):
        ad.mean_field_map(jnp.ones(2), 1.0, 0.1)


@pytest.mark.slow
def test_frozen_cor9_preconditioner_simulated_with_quadratic_sgd():
    """The self-consistency in simulation: SGD with Λ frozen at Λ(Σ*) has covariance Σ*."""
    fp = ad.ngd_fixed_point(jnp.eye(1), jnp.eye(1), 0.1)
    s = st.simulate.quadratic_sgd(jax.random.key(4), jnp.eye(1), jnp.eye(1), 1.0,
                                  preconditioner=fp.preconditioner, steps=3000, replicas=1024,
                                  burn_in=300)
    assert abs(_z(float(s.cov[0, 0]), float(s.cov_stderr[0, 0]), float(fp.sigma[0, 0]))) < Z


def test_mean_field_dynamics_simulated_stability():
    """Interacting replicas (32 ensembles x 2048): the NGD fixed point of Eq. 111 holds for c=3
    (slope 0) and is left for c=0.5 (slope -1.67: +29 %); Adam-like (Thm 10) holds for c=0.5."""
    for c, kind, expect in ((3.0, "ngd", True), (0.5, "ngd", False), (0.5, "adam", True)):
        fp = (ad.ngd_fixed_point_proportional if kind == "ngd" else ad.adam_like_fixed_point)(
            jnp.eye(1), c, 0.1)
        a = float(fp.sigma[0, 0])
        _, avg = mean_field_particles(jax.random.key(5), 1.0, 0.1, c, a, preconditioner=kind,
                                      steps=60, particles=2048, ensembles=32)
        z = _z(avg.mean(), avg.std(ddof=1) / math.sqrt(32), a)
        assert (abs(z) < Z) == expect, (c, kind, z)
        assert bool(fp.attracting[0]) == expect


def test_per_replica_ema_adam_collapses():
    """p1 Thm 10 predicts |w| = lr sqrt(1+c)/2 = 0.061; a per-replica EMA-Adam (b1=0, b2=0.99)
    with purely multiplicative noise collapses: mean log10|w| after 500 steps is far below."""
    a = 0.01 * 1.5 / 4
    s = ema_adam_log_abs_w(jax.random.key(6), 1.0, 0.1, 0.5, 0.99, math.sqrt(a), steps=500,
                           replicas=256)
    m, se = float(s.mean[0]), float(s.mean_stderr[0])
    assert m < -10 and _z(m, se, 0.5 * math.log10(a)) < -Z


def test_second_step_requires_scalars_and_zero_eps_guards():
    # a (k, 1) mean would broadcast against the quadrature nodes and be summed away
    with pytest.raises(ValueError, match="mean must be a scalar.*jax.vmap"):
        ad.adam_update_moments_second_step(jnp.zeros((2, 1)), 1.0)
    with pytest.raises(ValueError, match="std must be a scalar"):
        ad.adam_update_moments_second_step(0.0, jnp.ones(3))
    per = jax.vmap(ad.adam_update_moments_second_step)(jnp.array([0.0, 0.5]), jnp.ones(2))
    np.testing.assert_allclose(per.var[1], ad.adam_update_moments_second_step(0.5, 1.0).var,
                               rtol=1e-12)
    # LaProp with eps = 0 gives 0/0 on a coordinate with only zero gradients: rejected
    with pytest.raises(ValueError, match="eps must be > 0"):
        optim.laprop(0.1, eps=0.0)
    u = ad.optimizer_updates(optim.laprop(0.1), jnp.zeros((3, 2)))
    assert np.all(np.asarray(u) == 0.0)
    with pytest.raises(ValueError, match="g != 0"):
        ad.impulse_updates(1.0, eps=0.0, g=0.0)
    assert float(ad.impulse_updates(1.0, eps=1e-8, g=0.0).laprop) == 0.0
