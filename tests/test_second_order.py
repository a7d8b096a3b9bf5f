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
