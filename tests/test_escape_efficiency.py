"""Escape efficiency E(t) from the minimum and the Bayes-optimal constant learning rate
(sgdtheory.quadratic.escape_efficiency, bayes_optimal_lr, bayes_kl).

Oracles: hand loops of the covariance recursion in NumPy (plain SGD and the augmented heavy-ball
state), scipy's ODE solver for the Ornstein-Uhlenbeck counterpart, scipy.optimize.minimize_scalar on
a KL built from scipy.linalg.solve_discrete_lyapunov, finite differences for the implicit gradient.
Simulation tolerance: |z| <= the Student-t quantile at a false-alarm rate of 1e-4, Bonferroni over
the compared entries (simulate.z_threshold via Stats.compare), standard error from the replica
groups (32); fixed seeds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.optimize

import sgdtheory as st

q = st.quadratic
H = np.array([[1.0, 0.3], [0.3, 0.4]])
C = np.array([[0.5, -0.2], [-0.2, 1.0]])


def _loop_escape(h, c, lr, t_max, mu=0.0):
    """E_d(t) = tr(H Sigma_t)/2 for t = 0..t_max by iterating the (w, m) covariance by hand."""
    d = h.shape[0]
    eye = np.eye(d)
    m = np.block([[eye - lr * h, -lr * mu * eye], [h, mu * eye]])
    b = np.vstack([-lr * eye, eye])
    x = np.zeros((2 * d, 2 * d))
    out = [0.0]
    for _ in range(t_max):
        x = m @ x @ m.T + b @ c @ b.T
        out.append(0.5 * np.sum(h * x[:d, :d]))
    return np.array(out)


# ---------------------------------------------------------------- escape efficiency: exact


@pytest.mark.parametrize("frac", [0.3, 0.97])
def test_escape_matches_hand_loop_and_covariance_after(frac):
    lr = frac * 2 / np.linalg.eigvalsh(H)[-1]
    steps = np.arange(0, 60)
    got = np.asarray(q.escape_efficiency(H, C, lr, steps))
    np.testing.assert_allclose(got, _loop_escape(H, C, lr, 59), rtol=1e-11, atol=1e-14)
    sig = q.covariance_after(H, C, lr, steps, np.zeros((2, 2)))
    np.testing.assert_allclose(got, 0.5 * np.sum(H * np.asarray(sig), axis=(1, 2)), rtol=1e-11,
                               atol=1e-14)
    # t -> infinity: the stationary loss (p1 Thm 5); a scalar step gives a scalar
    big = q.escape_efficiency(H, C, lr, 100_000)
    assert jnp.ndim(big) == 0
    np.testing.assert_allclose(big, q.stationary_loss(H, C, lr), rtol=1e-10)


@pytest.mark.parametrize("mu", [0.5, pytest.param(0.9, marks=pytest.mark.slow)])
def test_escape_with_momentum_matches_hand_loop(mu):
    lr = 0.9 * 2 * (1 + mu) / np.linalg.eigvalsh(H)[-1]
    got = np.asarray(q.escape_efficiency(H, C, lr, np.arange(0, 40), momentum=mu))
    np.testing.assert_allclose(got, _loop_escape(H, C, lr, 39, mu), rtol=1e-10, atol=1e-14)


def test_continuous_counterpart_matches_ode_solution():
    lr, mu = 0.7, 0.3
    rate = lr / (1 - mu)

    def rhs(_, y):  # overdamped OU in tau = rate * t: dS/dtau = -HS - SH + rate C
        s = y.reshape(2, 2)
        return (-H @ s - s @ H + rate * C).ravel()

    ts = np.array([1, 3, 10, 40])
    sol = scipy.integrate.solve_ivp(rhs, (0, rate * ts[-1]), np.zeros(4), t_eval=rate * ts,
                                    rtol=1e-11, atol=1e-13)
    ref = [0.5 * np.sum(H * s.reshape(2, 2)) for s in sol.y.T]
    got = q.escape_efficiency(H, C, lr, ts, continuous=True, momentum=mu)
    np.testing.assert_allclose(got, ref, rtol=1e-7)


@pytest.mark.parametrize("frac", [0.05, 0.4, 0.6, 0.9, 0.999])
def test_discrete_exceeds_continuous_for_every_step_without_momentum(frac):
    # p1 Cor 4: E_d(t) >= E_c(t) for all integer t >= 0 (proved in the docstring, per direction)
    h = np.diag([1.0, 0.37, 0.02])
    c = np.array([[1.0, 0.4, 0.1], [0.4, 0.8, -0.3], [0.1, -0.3, 0.5]])
    lr = frac * 2.0
    t = np.arange(0, 400)
    ed = np.asarray(q.escape_efficiency(h, c, lr, t))
    ec = np.asarray(q.escape_efficiency(h, c, lr, t, continuous=True))
    assert ed[0] == ec[0] == 0.0
    assert np.all(ed[1:] > ec[1:])


def test_ordering_fails_early_with_momentum():
    # The heavy ball's first step injects lr^2 tr(HC)/2 whatever mu; its overdamped limit grows
    # at the rate lr/(1-mu): E_d(1) < E_c(1).  Late times: E_d >= E_c again.
    lr, mu = 0.2, 0.9
    ed = q.escape_efficiency(H, C, lr, np.array([1, 2000]), momentum=mu)
    ec = q.escape_efficiency(H, C, lr, np.array([1, 2000]), continuous=True, momentum=mu)
    np.testing.assert_allclose(ed[0], 0.5 * lr**2 * np.sum(H * C), rtol=1e-12)
    assert ed[0] < ec[0] and ed[1] > ec[1]


def test_escape_jit_vmap_and_traced_instability():
    f = jax.jit(lambda lr: q.escape_efficiency(H, C, lr, jnp.arange(5)))
    np.testing.assert_allclose(f(0.5), q.escape_efficiency(H, C, 0.5, jnp.arange(5)), rtol=1e-13)
    assert np.all(np.isnan(np.asarray(f(2.0 / np.linalg.eigvalsh(H)[-1] * 1.01))))
    lrs = jnp.array([0.1, 0.5, 1.0])
    v = jax.vmap(lambda lr: q.escape_efficiency(H, C, lr, 7))(lrs)
    np.testing.assert_allclose(v, [q.escape_efficiency(H, C, float(x), 7) for x in lrs], rtol=1e-13)


def test_escape_error_paths():
    with pytest.raises(ValueError, match="2/h_max"):
        q.escape_efficiency(H, C, 2.0, 3)
    with pytest.raises(ValueError, match="steps"):
        q.escape_efficiency(H, C, 0.5, 2.5)
    with pytest.raises(ValueError, match="steps"):
        q.escape_efficiency(H, C, 0.5, -1)
    with pytest.raises(ValueError, match="steps"):
        q.escape_efficiency(H, C, 0.5, np.ones((2, 2), int))
    with pytest.raises(ValueError, match="positive definite"):
        q.escape_efficiency(np.diag([1.0, -0.1]), C, 0.5, 3)
    with pytest.raises(ValueError, match="momentum"):
        q.escape_efficiency(H, C, 0.5, 3, momentum=1.0)
    with pytest.raises(ValueError, match="lr"):
        q.escape_efficiency(H, C, -0.5, 3)


@pytest.mark.parametrize("steps", [4, pytest.param((1, 25), marks=pytest.mark.slow)])
def test_escape_agrees_with_simulated_sgd_from_the_minimum(steps):
    # lr * h_max = 1.6: the discrete value is ~2-4x the continuous one at these t.
    lr = 1.6 / np.linalg.eigvalsh(H)[-1]
    hj = jnp.asarray(H)
    loss = lambda m, c: 0.5 * jnp.sum(hj * (c + jnp.outer(m, m)))  # noqa: E731  E[L] about w*=0
    for i, t in enumerate(np.atleast_1d(steps)):
        t = int(t)
        theory = float(q.escape_efficiency(H, C, lr, t))
        sim = st.simulate.quadratic_sgd(jax.random.key(100 + i), H, C, lr, steps=t, burn_in=t - 1,
                                        replicas=8192, noise="rademacher", block=1)
        table = sim.compare(theory, of=loss)
        assert table.agree, str(table)
        assert float(q.escape_efficiency(H, C, lr, t, continuous=True)) < 0.6 * theory


# ---------------------------------------------------------------- Bayes-optimal learning rate


def _scipy_kl(h, n, s, lr):
    """KL(N(0, Sigma) || N(0, (N H)^-1)) with Sigma from scipy's discrete Lyapunov solver."""
    d = h.shape[0]
    c = (n - s) / (n * s) * h
    a = np.eye(d) - lr * h
    sig = scipy.linalg.solve_discrete_lyapunov(a, lr**2 * c)
    prec = n * h
    _, logdet = np.linalg.slogdet(prec @ sig)
    return 0.5 * (np.trace(prec @ sig) - d - logdet)


def _random_spd(d, seed, spread):
    rng = np.random.default_rng(seed)
    o, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ev = np.exp(-spread * rng.uniform(size=d))
    ev[0] = 1.0
    return (o * ev) @ o.T


@pytest.mark.parametrize("n,s,seed,spread", [(1000, 10, 0, 3.0), (10, 1, 1, 2.0), (4, 1, 2, 4.0),
                                             (3, 2, 3, 1.0), (101, 100, 4, 5.0)])
def test_bayes_lr_minimises_the_scipy_kl(n, s, seed, spread):
    h = _random_spd(4, seed, spread)
    lam = float(q.bayes_optimal_lr(h, n, s))
    bound = 2 / np.linalg.eigvalsh(h)[-1]
    res = scipy.optimize.minimize_scalar(lambda x: _scipy_kl(h, n, s, x), bounds=(1e-9 * bound,
                                         bound * (1 - 1e-9)), method="bounded",
                                         options={"xatol": 1e-12 * bound})
    np.testing.assert_allclose(lam, res.x, rtol=1e-6)
    np.testing.assert_allclose(q.bayes_kl(h, n, s, lam), _scipy_kl(h, n, s, lam), rtol=1e-9,
                               atol=1e-12)
    # the printed stationarity equation of p1 Thm 6 holds at the root
    k = np.linalg.eigvalsh(h)
    lhs = ((n - 2 * s) / s * np.sum(k / (2 - lam * k))
           + (n - s) / s * lam * np.sum(k**2 / (2 - lam * k) ** 2))
    np.testing.assert_allclose(lhs, k.size / lam, rtol=1e-10)


def test_bayes_lr_continuous_is_mandt_and_exact_for_isotropic_h():
    h = _random_spd(3, 5, 2.0)
    np.testing.assert_allclose(q.bayes_optimal_lr(h, 50, 5, continuous=True),
                               2 * 5 * 3 / (50 * np.trace(h)), rtol=1e-14)
    for n, s in ((10, 1), (3, 2)):
        iso = 0.7 * np.eye(3)
        np.testing.assert_allclose(q.bayes_optimal_lr(iso, n, s), 2 * s / (n * 0.7), rtol=1e-12)
        np.testing.assert_allclose(q.bayes_optimal_lr(iso, n, s, continuous=True),
                                   2 * s / (n * 0.7), rtol=1e-12)
        assert abs(float(q.bayes_kl(iso, n, s, 2 * s / (n * 0.7)))) < 1e-12


def test_bayes_stationarity_has_a_single_root_on_random_spectra():
    # Uniqueness is proved for N >= 2S only; here a grid check for N/S - 1 in (1e-4, 3).
    rng = np.random.default_rng(7)
    lam = np.sort(np.concatenate([np.geomspace(1e-6, 1.0, 800), 2 - np.geomspace(1.0, 1e-10, 1500)]))
    for _ in range(150):
        d = int(rng.integers(1, 12))
        k = np.exp(-rng.uniform(0, 8, size=d))
        k[0] = 1.0
        ratio = 1 + np.exp(rng.uniform(np.log(1e-4), np.log(3.0)))
        x = lam[:, None] * k[None, :]
        g = np.sum((ratio * x - 2) / (2 - x) ** 2, axis=1)
        assert np.sum(np.diff(np.sign(g)) != 0) == 1


def test_bayes_lr_implicit_gradient_matches_finite_differences():
    h = np.diag([1.0, 0.3, 0.05])
    f = lambda n: q.bayes_optimal_lr(h, n, 2.0)  # noqa: E731
    eps = 1e-4
    fd = (float(f(6.0 + eps)) - float(f(6.0 - eps))) / (2 * eps)
    np.testing.assert_allclose(jax.grad(f)(6.0), fd, rtol=1e-6)
    gh = jax.grad(lambda hh: q.bayes_optimal_lr(hh, 6.0, 2.0))(jnp.asarray(h))
    dh = np.zeros((3, 3))
    dh[1, 1] = eps
    fd_h = (float(q.bayes_optimal_lr(h + dh, 6.0, 2.0)) - float(q.bayes_optimal_lr(h - dh, 6.0, 2.0)))
    np.testing.assert_allclose(gh[1, 1], fd_h / (2 * eps), rtol=1e-6)
    v = jax.jit(jax.vmap(lambda n: q.bayes_optimal_lr(h, n, 2.0)))(jnp.array([3.0, 6.0, 60.0]))
    np.testing.assert_allclose(v, [float(f(x)) for x in (3.0, 6.0, 60.0)], rtol=1e-13)


def test_bayes_lr_error_paths():
    with pytest.raises(ValueError, match="smaller than n_data"):
        q.bayes_optimal_lr(H, 10, 10)
    with pytest.raises(ValueError, match="positive definite"):
        q.bayes_optimal_lr(np.diag([1.0, 0.0]), 10, 2)
    with pytest.raises(ValueError, match="symmetric"):
        q.bayes_optimal_lr(np.array([[1.0, 0.5], [0.0, 1.0]]), 10, 2)
    with pytest.raises(ValueError, match="batch_size"):
        q.bayes_optimal_lr(H, 10, 0)
    with pytest.raises(ValueError, match="n_data"):
        q.bayes_optimal_lr(H, np.array([10, 20]), 2)


def test_stationary_covariance_at_bayes_lr_agrees_with_simulated_sgd():
    h = np.diag([1.0, 0.1]) + 0.05
    n, s = 4, 1
    lam = float(q.bayes_optimal_lr(h, n, s))  # lam * h_max = 0.69: continuous time is 35 % low here
    c = (n - s) / (n * s) * h
    theory = q.stationary_covariance(h, c, lam)
    np.testing.assert_allclose(theory, lam * (n - s) / (n * s) * np.linalg.inv(2 * np.eye(2) - lam * h),
                               rtol=1e-12)
    sim = st.simulate.quadratic_sgd(jax.random.key(31), h, c, lam, steps=4000, burn_in=200,
                                    replicas=512, noise="rademacher")
    assert sim.compare(theory).agree, str(sim.compare(theory))
