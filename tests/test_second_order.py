"""Damped Newton's exact stationary covariance: closed form vs an independent Lyapunov solve
(scipy) and the general preconditioned route, vs simulated SGD, and its error paths.

Simulation tolerance: |z| <= the Student-t quantile at a false-alarm rate of 1e-4, Bonferroni over
the compared entries (simulate.z_threshold), standard error from 32 replica groups; fixed seed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import sgdtheory as st

H = np.array([[1.0, 0.3], [0.3, 0.4]])
C = np.array([[0.5, -0.2], [-0.2, 1.0]])


def _scipy_damped_newton(h, c, lr, mu):
    """Dense augmented state (w, m): m <- mu m + g, w <- w - lr H^{-1} m, g = H w + xi."""
    d = h.shape[0]
    p = np.linalg.inv(h)
    eye = np.eye(d)
    m = np.block([[eye - lr * p @ h, -lr * mu * p], [h, mu * eye]])
    b = np.vstack([-lr * p, eye])
    x = scipy.linalg.solve_discrete_lyapunov(m, b @ c @ b.T)
    return x[:d, :d]


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("frac", [0.1, 0.5, 0.95])
def test_closed_form_matches_scipy_and_the_preconditioned_route(mu, frac):
    lr = frac * 2 * (1 + mu)
    got = np.asarray(st.quadratic.damped_newton_covariance(H, C, lr, momentum=mu))
    np.testing.assert_allclose(got, _scipy_damped_newton(H, C, lr, mu), rtol=1e-9, atol=1e-12)
    general = st.stationary_covariance(H, C, lr, momentum=mu, preconditioner=np.linalg.inv(H))
    np.testing.assert_allclose(got, general, rtol=1e-12, atol=1e-14)


def test_closed_form_agrees_with_simulated_sgd():
    lr, mu = 1.2, 0.5
    theory = st.quadratic.damped_newton_covariance(H, C, lr, momentum=mu)
    sim = st.simulate.quadratic_sgd(jax.random.key(21), H, C, lr, momentum=mu,
                                    preconditioner=np.linalg.inv(H), steps=6000, replicas=512,
                                    burn_in=500, noise="rademacher")
    assert sim.compare(theory).agree, str(sim.compare(theory))


def test_error_paths_and_traced_instability():
    with pytest.raises(ValueError, match=r"2\(1\+momentum\)"):
        st.quadratic.damped_newton_covariance(H, C, 3.0, momentum=0.4)
    with pytest.raises(ValueError, match="positive definite"):
        st.quadratic.damped_newton_covariance(np.diag([1.0, -0.1]), C, 0.5)
    with pytest.raises(ValueError, match="momentum"):
        st.quadratic.damped_newton_covariance(H, C, 0.5, momentum=1.0)
    f = jax.jit(lambda lr: st.quadratic.damped_newton_covariance(H, C, lr, momentum=0.5))
    assert np.all(np.isnan(np.asarray(f(3.5)))) and np.all(np.isfinite(np.asarray(f(1.0))))


# ------------------------------------------------------------------------------------------------
# Damped Newton on online linear regression with minibatch (multiplicative) noise: Ziyin et al.
# (2022) App. D.  Oracle: the exact second-moment operator of the (w, m) state built from
# Isserlis' theorem in the ORIGINAL coordinates with a generic preconditioner P = A^{-1}, solved
# as one dense (2D)^2 x (2D)^2 system (no whitening, no isotropy argument).

A3 = np.array([[1.0, 0.3, 0.1], [0.3, 0.6, -0.2], [0.1, -0.2, 0.4]])


def _moment_operator(a, p, lr, mu, s):
    """T(X) = M0 X M0^T + B E[D X_ee D] B^T (D = K_B - A) and the source, as dense matrices."""
    d = a.shape[0]
    eye = np.eye(d)
    m0 = np.block([[eye - lr * p @ a, -lr * mu * p], [a, mu * eye]])
    b = np.vstack([-lr * p, eye])
    n = 2 * d

    def apply(x):
        xe = x[:d, :d]
        fluct = (a @ xe @ a + np.trace(a @ xe) * a) / s  # E[(K_B - A) X (K_B - A)], Gaussian x
        return m0 @ x @ m0.T + b @ fluct @ b.T

    t = np.zeros((n * n, n * n))
    for k in range(n * n):
        e = np.zeros(n * n)
        e[k] = 1.0
        t[:, k] = apply(e.reshape(n, n)).ravel()
    return t, b


def _vec_solve(a, lr, mu, s, sigma2):
    d = a.shape[0]
    t, b = _moment_operator(a, np.linalg.inv(a), lr, mu, s)
    q_src = b @ (sigma2 * a / s) @ b.T
    x = np.linalg.solve(np.eye(t.shape[0]) - t, q_src.ravel()).reshape(2 * d, 2 * d)
    return x[:d, :d], np.max(np.abs(np.linalg.eigvals(t)))


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("frac", [0.2, 0.9])
def test_linreg_damped_newton_matches_moment_operator_solve(mu, frac):
    s, sigma2 = 4, 0.7
    lr = frac * float(st.linreg.damped_newton_max_lr(A3, s, momentum=mu))
    r = st.linreg.damped_newton_stationary(A3, lr, s, label_noise_var=sigma2, momentum=mu)
    ref, rho = _vec_solve(A3, lr, mu, s, sigma2)
    assert rho < 1
    np.testing.assert_allclose(r.param_cov, ref, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(r.test_loss, 0.5 * np.sum(A3 * ref), rtol=1e-9)
    np.testing.assert_allclose(r.train_loss, 0.5 * (np.sum(A3 * ref) + sigma2), rtol=1e-9)
    noise = (A3 @ ref @ A3 + np.sum(A3 * ref) * A3 + sigma2 * A3) / s  # Lemma 1
    np.testing.assert_allclose(r.noise_cov, noise, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_linreg_damped_newton_bound_is_the_moment_operator_edge(mu):
    # Prop 5's dimension-dependent bound: spectral radius of the exact second-moment operator
    # crosses 1 there (checked at +-1 %), for D = 3 and S = 4 (bound 8(1-mu)/(4 + 4(1-mu)/(1+mu))).
    s = 4
    bound = float(st.linreg.damped_newton_max_lr(A3, s, momentum=mu))
    np.testing.assert_allclose(bound, 2 * (1 - mu) * s / (3 + 1 + s * (1 - mu) / (1 + mu)),
                               rtol=1e-15)
    assert bound < 2 * (1 + mu)  # below the deterministic (noise-free) bound
    p = np.linalg.inv(A3)
    rho = [np.max(np.abs(np.linalg.eigvals(_moment_operator(A3, p, f * bound, mu, s)[0])))
           for f in (0.99, 1.01)]
    assert rho[0] < 1 < rho[1]


def test_linreg_damped_newton_agrees_with_simulated_sgd():
    import optax

    mu, s = 0.5, 4
    lr = 0.6 * float(st.linreg.damped_newton_max_lr(A3, s, momentum=mu))
    u = np.array([1.0, -0.5, 0.2])
    r = st.linreg.damped_newton_stationary(A3, lr, s, label_noise_var=1.0, momentum=mu, w_star=u)
    opt = optax.chain(st.optim.precondition(np.linalg.inv(A3)), optax.sgd(lr, momentum=mu))
    sim = st.simulate.online_linreg_sgd(jax.random.key(5), A3, u, None, s, label_noise_var=1.0,
                                        optimizer=opt, steps=3000, burn_in=300, replicas=256)
    assert sim.compare(r.param_cov).agree, str(sim.compare(r.param_cov))
    assert sim.compare(r.param_mean, of="mean").agree


def test_linreg_damped_newton_error_paths():
    with pytest.raises(ValueError, match=r"2\(1-momentum\)S/\(D \+ 1"):
        st.linreg.damped_newton_stationary(A3, 1.2, 4, label_noise_var=1.0)
    with pytest.raises(ValueError, match="positive definite"):
        st.linreg.damped_newton_stationary(np.diag([1.0, 0.0]), 0.1, 4)
    with pytest.raises(ValueError, match="label_noise_var"):
        st.linreg.damped_newton_stationary(A3, 0.1, 4, label_noise_var=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        st.linreg.damped_newton_stationary(A3, 0.1, 0)
    with pytest.raises(ValueError, match="momentum"):
        st.linreg.damped_newton_max_lr(A3, 4, momentum=1.0)
    with pytest.raises(ValueError, match="w_star"):
        st.linreg.damped_newton_stationary(A3, 0.1, 4, w_star=np.ones(2))
    f = jax.jit(lambda lr: st.linreg.damped_newton_stationary(A3, lr, 4, label_noise_var=1.0).param_cov)
    assert np.all(np.isnan(np.asarray(f(1.2)))) and np.all(np.isfinite(np.asarray(f(0.3))))
