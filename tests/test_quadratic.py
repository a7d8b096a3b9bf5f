"""sgdtheory.quadratic against independent routes (SciPy, Kronecker solves, closed forms).

The simulation side of every function is in tests/test_simulate_quadratic.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as hst

import sgdtheory as st
from sgdtheory import quadratic as q


def random_problem(d, seed, shift=0.1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    h = a @ a.T / d + shift * np.eye(d)
    b = rng.normal(size=(d, d))
    return h, b @ b.T / d


def scipy_stationary(h, c, lr, opt):
    """Independent route: SciPy's discrete Lyapunov solver on the dense augmented state."""
    m, b = q.transition_matrices(h, lr, optimizer=opt)
    m, b = np.asarray(m), np.asarray(b)
    d = h.shape[0]
    return sl.solve_discrete_lyapunov(m, b @ c @ b.T)[:d, :d]


OPTIMIZERS = [q.sgd(), q.heavy_ball(0.5), q.heavy_ball(0.95), q.nesterov(0.7), q.pnm(1.0, 0.9),
              q.usam(0.3)]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o.name}{o.hyper}")
@pytest.mark.parametrize("method", ["eigh", "dense"])
def test_stationary_matches_scipy_noncommuting(opt, method):
    h, c = random_problem(6, 0)
    lr = 0.9 * float(q.max_stable_lr(h, optimizer=opt))
    sig = st.stationary_covariance(h, c, lr, optimizer=opt, method=method)
    ref = scipy_stationary(h, c, lr, opt)
    np.testing.assert_allclose(sig, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_sgd_closed_forms():
    # Commuting case: Sigma = lr C [H (2I - lr H)]^-1 (Liu, Ziyin & Ueda 2021, Cor 1 with mu = 0).
    h = np.diag([2.0, 0.5, 0.1])
    c = np.diag([1.0, 0.3, 2.0])
    lr = 0.7
    expected = lr * c @ np.linalg.inv(h @ (2 * np.eye(3) - lr * h))
    np.testing.assert_allclose(st.stationary_covariance(h, c, lr), expected, rtol=1e-13)
    # Thm 5: loss = lr/4 tr[(I - lr H/2)^-1 C] for any (non-commuting) H, C.
    h, c = random_problem(5, 3)
    lr = 0.5 * float(st.max_stable_lr(h))
    loss = lr / 4 * np.trace(np.linalg.solve(np.eye(5) - lr * h / 2, c))
    np.testing.assert_allclose(st.stationary_loss(h, c, lr), loss, rtol=1e-12)


def test_momentum_matches_kronecker_solve_of_liu_thm3():
    """Independent route: the vec/Kronecker solve of Liu, Ziyin & Ueda (2021) Thm 3 (matrix form)."""
    h, c = random_problem(4, 1)
    mu, lr = 0.6, 0.5 * float(st.max_stable_lr(h, momentum=0.6))
    d = 4
    eye = np.eye(d)
    lam = lr * eye
    # (1-mu)(ΛKΣ+ΣKΛ) - (1+mu^2)/(1-mu^2) ΛKΣKΛ + mu/(1-mu^2)(ΛKΛKΣ + ΣKΛKΛ) = Λ C Λ
    kron = lambda a, b: np.kron(a, b.T)  # noqa: E731  row-major vec(A X B) = (A kron B^T) vec X
    lk = lam @ h
    op = ((1 - mu) * (kron(lk, eye) + kron(eye, h @ lam))
          - (1 + mu**2) / (1 - mu**2) * kron(lk, h @ lam)
          + mu / (1 - mu**2) * (kron(lk @ lk, eye) + kron(eye, h @ lam @ h @ lam)))
    ref = np.linalg.solve(op, (lam @ c @ lam).reshape(-1)).reshape(d, d)
    np.testing.assert_allclose(st.stationary_covariance(h, c, lr, momentum=mu), ref, rtol=1e-9)


def test_preconditioner_and_weight_decay_in_original_coordinates():
    h, c = random_problem(5, 2)
    p, _ = random_problem(5, 9, shift=0.5)
    mu, gamma = 0.3, 0.05
    lr = 0.6 * float(st.max_stable_lr(h, momentum=mu, preconditioner=p, weight_decay=gamma))
    hg = h + gamma * np.eye(5)
    eye, zero = np.eye(5), np.zeros((5, 5))
    m = np.block([[eye - lr * p @ hg, -lr * mu * p], [hg, mu * eye]])
    b = np.vstack([-lr * p, eye])
    ref = sl.solve_discrete_lyapunov(m, b @ c @ b.T)[:5, :5]
    sig = st.stationary_covariance(h, c, lr, momentum=mu, preconditioner=p, weight_decay=gamma)
    np.testing.assert_allclose(sig, ref, rtol=1e-9)
    del zero


def test_continuous_matches_scipy_and_has_documented_error():
    h, c = random_problem(4, 5)
    lr = 0.01
    ref = sl.solve_continuous_lyapunov(h, lr * c)  # H S + S H^T = lr C
    np.testing.assert_allclose(st.stationary_covariance_continuous(h, c, lr), ref, rtol=1e-10)
    # Per eigen-direction ratio continuous/exact = 1 - lr h / (2 (1 + mu)).
    hd = np.diag([1.0])
    for mu, lrh in [(0.0, 0.5), (0.0, 1.5), (0.5, 2.5)]:
        ratio = (st.stationary_covariance_continuous(hd, np.eye(1), lrh, momentum=mu)
                 / st.stationary_covariance(hd, np.eye(1), lrh, momentum=mu))[0, 0]
        np.testing.assert_allclose(ratio, 1 - lrh / (2 * (1 + mu)), rtol=1e-12)


@pytest.mark.parametrize("opt", [q.sgd(), q.heavy_ball(0.8), q.pnm(0.5, 0.8)], ids=lambda o: o.name)
def test_covariance_after_matches_direct_recursion(opt):
    h, c = random_problem(4, 4)
    p, _ = random_problem(4, 8, shift=0.5)
    lr = 0.8 * float(q.max_stable_lr(h, optimizer=opt, preconditioner=p))
    init = np.diag([1.0, 2.0, 0.5, 0.1])
    steps = np.array([0, 1, 7, 100])
    out = st.covariance_after(h, c, lr, steps, init, optimizer=opt, preconditioner=p)
    # Direct recursion in original coordinates: x <- M x + B xi with w = P^(1/2) v.
    m, b = (np.asarray(a) for a in q.transition_matrices(h, lr, optimizer=opt, preconditioner=p))
    e, u = np.linalg.eigh(p)
    sp = (u * np.sqrt(e)) @ u.T
    k = opt.state_size
    t_big = sl.block_diag(sp, *([np.eye(4)] * (k - 1)))
    m_w, b_w = t_big @ m @ np.linalg.inv(t_big), t_big @ b @ sp  # noise enters as P^(1/2) xi
    x = np.zeros((4 * k, 4 * k))
    x[:4, :4] = init
    got = {}
    for t in range(101):
        got[t] = x[:4, :4].copy()
        x = m_w @ x @ m_w.T + b_w @ c @ b_w.T
    for i, t in enumerate(steps):
        np.testing.assert_allclose(out[i], got[int(t)], rtol=1e-8, atol=1e-12)
    far = st.covariance_after(h, c, lr, 10**7, init, optimizer=opt, preconditioner=p)
    np.testing.assert_allclose(far, st.stationary_covariance(h, c, lr, optimizer=opt,
                                                             preconditioner=p), rtol=1e-8)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o.name}{o.hyper}")
def test_max_stable_lr_is_the_spectral_radius_edge(opt):
    h, _ = random_problem(5, 6)
    lr_max = float(q.max_stable_lr(h, optimizer=opt))

    def rho(lr):
        return np.max(np.abs(np.linalg.eigvals(np.asarray(q.transition_matrices(h, lr, optimizer=opt)[0]))))

    assert rho(lr_max * (1 - 1e-6)) < 1 < rho(lr_max * (1 + 1e-6))


def test_jit_vmap_eager_agree_and_grad_matches_finite_differences():
    h, c = random_problem(4, 7)
    lrs = jnp.linspace(0.05, 0.5, 5)
    eager = np.stack([st.stationary_covariance(h, c, float(lr), momentum=0.4) for lr in lrs])
    f = lambda lr: st.stationary_covariance(h, c, lr, momentum=0.4)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(lrs[2]), eager[2], rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(f)(lrs), eager, rtol=1e-12)
    # vmap over momentum too
    g = lambda mu: st.stationary_loss(h, c, 0.2, momentum=mu)  # noqa: E731
    mus = jnp.array([0.0, 0.3, 0.6])
    np.testing.assert_allclose(jax.vmap(g)(mus), [float(g(float(m))) for m in mus], rtol=1e-12)
    # grad w.r.t. lr and momentum (eigh route) and w.r.t. lr (dense route, implicit differentiation)
    for fn in (lambda lr: st.stationary_loss(h, c, lr, momentum=0.4),
               lambda lr: jnp.sum(st.stationary_covariance(h, c, lr, momentum=0.4, method="dense")),
               lambda mu: st.stationary_loss(h, c, 0.2, momentum=mu)):
        x0, eps = 0.3, 1e-6
        fd = (fn(x0 + eps) - fn(x0 - eps)) / (2 * eps)
        np.testing.assert_allclose(jax.grad(fn)(x0), fd, rtol=1e-6)


def test_traced_unstable_lr_gives_nan_not_garbage():
    h = np.diag([1.0, 3.0])
    f = jax.jit(lambda lr: st.stationary_covariance(h, np.eye(2), lr))
    assert np.all(np.isnan(f(0.7)))  # 0.7 >= 2/3
    assert np.all(np.isfinite(f(0.6)))
    assert bool(jax.jit(lambda lr: q.is_stable(h, lr))(0.6)) and not bool(q.is_stable(h, 0.7))


def test_scales_to_d_1000():
    h, c = random_problem(1000, 11)
    lr = 0.5 * float(st.max_stable_lr(h))
    sig = np.asarray(st.stationary_covariance(h, c, lr))
    # Residual of the Lyapunov equation itself (independent of how it was solved).
    m = np.eye(1000) - lr * h
    resid = sig - m @ sig @ m.T - lr**2 * c
    assert np.abs(resid).max() < 1e-10 * np.abs(sig).max()


@settings(max_examples=25, deadline=None)
@given(seed=hst.integers(0, 10**6), frac=hst.floats(0.05, 0.95), d=hst.integers(1, 5))
def test_yaida_fluctuation_dissipation_identity(seed, frac, d):
    """Yaida (2019) FDR1 at stationarity for plain SGD on a quadratic:
    E[(w-w*)^T grad L] = (lr/2) E|g|^2  <=>  tr(H S) = (lr/2)(tr(H^2 S) + tr C)."""
    h, c = random_problem(d, seed)
    lr = frac * float(st.max_stable_lr(h))
    s = np.asarray(st.stationary_covariance(h, c, lr))
    np.testing.assert_allclose(np.trace(h @ s), lr / 2 * (np.trace(h @ h @ s) + np.trace(c)),
                               rtol=1e-9)


# ----------------------------------------------------------------------------- bad input
H2 = np.diag([1.0, 3.0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: st.stationary_covariance(np.ones((2, 3)), np.eye(2), 0.1), "square"),
        (lambda: st.stationary_covariance(np.array([[1.0, 0.5], [0.0, 1.0]]), np.eye(2), 0.1),
         "symmetric"),
        (lambda: st.stationary_covariance(H2, np.array([[1.0, 0.0], [0.0, -1.0]]), 0.1),
         "positive semidefinite"),
        (lambda: st.stationary_covariance(H2, np.eye(3), 0.1), "must match"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.0), "lr must be > 0"),
        (lambda: st.stationary_covariance(H2, np.eye(2), -0.1), "lr must be > 0"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, momentum=1.0), r"\[0, 1\)"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, momentum=-0.1), r"\[0, 1\)"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.7),
         re.escape("lr=0.7 >= 2/h_max = 0.6667")),
        (lambda: st.stationary_covariance(H2, np.eye(2), 1.4, momentum=0.5),
         re.escape("2(1+momentum)/h_max = 1")),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, weight_decay=-1.5), "positive definite"),
        (lambda: st.stationary_covariance(np.diag([1.0, 0.0]), np.eye(2), 0.1), "positive definite"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, preconditioner=-np.eye(2)),
         "positive definite"),
        (lambda: st.stationary_covariance(H2, np.eye(2), jnp.array([0.1, 0.2])), "scalar"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, method="lu"), "method"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, optimizer="adam"), "LinearOptimizer"),
        (lambda: st.stationary_covariance(H2, np.eye(2), 0.1, momentum=0.5, optimizer=q.sgd()),
         "either"),
        (lambda: st.stationary_covariance(np.array([[1.0, np.nan], [np.nan, 1.0]]), np.eye(2), 0.1),
         "NaN"),
        (lambda: st.covariance_after(H2, np.eye(2), 0.1, -1, np.eye(2)), ">= 0"),
        (lambda: st.covariance_after(H2, np.eye(2), 0.1, 1.5, np.eye(2)), "integer"),
        (lambda: st.covariance_after(H2, np.eye(2), 0.1, 3, np.eye(3)), "init_cov"),
        (lambda: q.pnm(-1.0, 0.5), "beta0"),
        (lambda: q.usam(-0.1), "radius"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shape_errors_raise_under_jit_too():
    with pytest.raises(ValueError, match="square"):
        jax.jit(lambda lr: st.stationary_covariance(np.ones((2, 3)), np.eye(2), lr))(0.1)
    with pytest.raises(ValueError, match="must match"):
        jax.jit(lambda lr: st.stationary_covariance(H2, np.eye(3), lr))(0.1)


# ----------------------------------------------------------------- review regressions (P1-P3)
@pytest.mark.parametrize("mu, frac", [(0.99, 0.9), (0.999, 0.9), (0.999, 0.99)])
def test_pair_solve_accurate_at_large_momentum(mu, frac):
    """The k = 2 pair solve is pivoted elimination: at momentum near 1 and lr near the edge it
    stays at LAPACK's accuracy (unpivoted Cramer's rule lost up to 4 digits here)."""
    h = np.diag(np.linspace(0.2, 1.0, 5))
    lr = frac * 2 * (1 + mu)
    c = np.eye(5) + 0.3 * np.ones((5, 5))
    sig = st.stationary_covariance(h, c, lr, momentum=mu)
    ref = scipy_stationary(h, c, lr, q.heavy_ball(mu))
    np.testing.assert_allclose(sig, ref, rtol=1e-8 if frac < 0.99 else 1e-7)


def test_pair_solve_float32_is_not_garbage():
    mu = 0.99
    h = np.diag(np.array([1.0, 1.5, 1.9]) * (1 + mu)).astype(np.float32)
    sig = np.asarray(st.stationary_covariance(h, np.eye(3, dtype=np.float32), np.float32(1.0),
                                              momentum=np.float32(mu)))
    assert sig.dtype == np.float32
    ref = scipy_stationary(h.astype(np.float64), np.eye(3), 1.0, q.heavy_ball(mu))
    np.testing.assert_allclose(np.diag(sig), np.diag(ref), rtol=1e-3)


def test_traced_hyperparameters_unstable_give_nan():
    h = np.diag([1.0, 2.0])
    # heavy ball at lr = 1.5 is stable iff 1.5 * 2 < 2 (1 + mu), i.e. mu > 0.5
    f = jax.vmap(lambda mu: st.stationary_covariance(h, np.eye(2), 1.5, momentum=mu)[1, 1])
    out = np.asarray(f(jnp.array([0.1, 0.3, 0.7])))
    assert np.all(np.isnan(out[:2])) and np.isfinite(out[2])
    np.testing.assert_allclose(out[2], st.stationary_covariance(h, np.eye(2), 1.5, momentum=0.7)[1, 1])
    g = jax.vmap(lambda mu: st.covariance_after(h, np.eye(2), 1.5, 10, np.zeros((2, 2)), momentum=mu))
    assert np.all(np.isnan(g(jnp.array([0.1]))))
    assert not bool(jax.jit(lambda mu: q.is_stable(h, 0.5, momentum=mu))(1.2))
    pnm_lr = jax.jit(lambda lr: st.stationary_covariance(h, np.eye(2), lr, optimizer=q.pnm(0.5, 0.9)))
    assert np.all(np.isnan(pnm_lr(50.0)))
    assert np.all(np.isfinite(pnm_lr(0.5 * float(q.max_stable_lr(h, optimizer=q.pnm(0.5, 0.9))))))


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o.name}{o.hyper}")
def test_is_stable_is_exact_at_the_edge(opt):
    h, _ = random_problem(4, 12)
    lr_max = float(q.max_stable_lr(h, optimizer=opt))
    assert bool(q.is_stable(h, lr_max * (1 - 1e-6), optimizer=opt))
    assert not bool(q.is_stable(h, lr_max * (1 + 1e-6), optimizer=opt))


def test_numeric_bound_lies_on_the_stable_side():
    """PNM's bound is found by root bracketing; the value returned must itself be stable."""
    h, _ = random_problem(4, 13)
    opt = q.pnm(1.0, 0.9)
    lr_max = float(q.max_stable_lr(h, optimizer=opt))
    m, _ = q.transition_matrices(h, lr_max, optimizer=opt)
    assert np.max(np.abs(np.linalg.eigvals(np.asarray(m)))) < 1


# --- one optimizer vocabulary: optax objects give the keyword forms' numbers -------------------------
import optax  # noqa: E402

from sgdtheory import optim  # noqa: E402

_P3 = np.array([[1.5, 0.4, 0.1], [0.4, 1.0, 0.0], [0.1, 0.0, 0.7]])
# (keyword form, optax form, factory form), all at lr = 0.2
OPTAX_CASES = [
    ("sgd", dict(lr=0.2), optax.sgd(0.2), lambda lr: optax.sgd(lr)),
    ("heavy_ball", dict(lr=0.2, momentum=0.9), optax.sgd(0.2, 0.9), lambda lr: optax.sgd(lr, 0.9)),
    ("nesterov", dict(lr=0.2, momentum=0.7, nesterov=True), optax.sgd(0.2, 0.7, nesterov=True),
     lambda lr: optax.sgd(lr, 0.7, nesterov=True)),
    ("decay-chain", dict(lr=0.2, momentum=0.5, weight_decay=0.3),
     optax.chain(optax.add_decayed_weights(0.3), optax.sgd(0.2, 0.5)),
     lambda lr: optax.chain(optax.add_decayed_weights(0.3), optax.sgd(lr, 0.5))),
    ("precondition", dict(lr=0.2, momentum=0.5, preconditioner=_P3),
     optax.chain(optim.precondition(_P3), optax.sgd(0.2, 0.5)),
     lambda lr: optax.chain(optim.precondition(_P3), optax.sgd(lr, 0.5))),
    ("pnm", dict(lr=0.2, optimizer=q.pnm(1.0, 0.9)), optim.pnm(0.2, 1.0, 0.9),
     lambda lr: optim.pnm(lr, 1.0, 0.9)),
    ("sam", dict(lr=0.2, momentum=0.5, sam_radius=0.3), optax.sgd(0.2, 0.5),
     lambda lr: optax.sgd(lr, 0.5)),
]


@pytest.mark.parametrize("name,kw,opt,factory", OPTAX_CASES, ids=[c[0] for c in OPTAX_CASES])
def test_optax_form_gives_the_keyword_numbers(name, kw, opt, factory):
    h, c = random_problem(3, 11, shift=0.3)
    extra = {"sam_radius": kw["sam_radius"]} if "sam_radius" in kw else {}
    ref = q.stationary_covariance(h, c, **kw)
    tol = dict(rtol=1e-12, atol=1e-14 * float(np.abs(ref).max()))
    for method in ("eigh", "dense"):
        np.testing.assert_allclose(q.stationary_covariance(h, c, optimizer=opt, method=method, **extra),
                                   ref, **tol)
    np.testing.assert_allclose(q.stationary_covariance(h, c, 0.2, optimizer=factory, **extra), ref, **tol)
    np.testing.assert_allclose(q.stationary_loss(h, c, optimizer=opt, **extra),
                               q.stationary_loss(h, c, **kw), rtol=1e-12)
    steps = jnp.array([0, 1, 7, 60])
    np.testing.assert_allclose(q.covariance_after(h, c, steps=steps, init_cov=np.eye(3), optimizer=opt, **extra),
                               q.covariance_after(h, c, kw["lr"], steps, np.eye(3),
                                                  **{k: v for k, v in kw.items() if k != "lr"}), **tol)
    assert bool(q.is_stable(h, optimizer=opt, **extra))
    kw_bound = {k: v for k, v in kw.items() if k != "lr"}
    bound = float(q.max_stable_lr(h, **kw_bound))
    got = float(q.max_stable_lr(h, optimizer=factory, **extra))
    if name in ("sgd", "heavy_ball", "nesterov", "decay-chain", "sam"):
        assert got == bound  # closed form read off the linearisation: identical numbers
    else:  # both numeric (bisection + brentq to ~1e-13); precondition: two different routes
        np.testing.assert_allclose(got, bound, rtol=1e-11)


def test_usam_equals_sam_radius_with_plain_sgd():
    h, c = random_problem(4, 5)
    for wd in (0.0, 0.2):
        lr = 0.7 * float(q.max_stable_lr(h, optimizer=q.usam(0.4), weight_decay=wd))
        a = q.stationary_covariance(h, c, lr, optimizer=q.usam(0.4), weight_decay=wd)
        b = q.stationary_covariance(h, c, lr, sam_radius=0.4, weight_decay=wd)
        np.testing.assert_array_equal(a, b)
        assert float(q.max_stable_lr(h, optimizer=q.usam(0.4), weight_decay=wd)) == float(
            q.max_stable_lr(h, sam_radius=0.4, weight_decay=wd))


def test_sam_with_weight_decay_keyword_puts_decay_in_the_ascent():
    # Convention: weight_decay= is coupled L2 in the loss, so the ascent step sees it:
    # g(w_adv) = (I + rho (H + gamma I)) g(w) -> usam on H + gamma I. Oracle: SciPy on hand-built M.
    h, c = random_problem(3, 8)
    rho, gam = 0.5, 0.3
    lr = 0.7 * float(q.max_stable_lr(h, sam_radius=rho, weight_decay=gam))
    sig = q.stationary_covariance(h, c, lr, sam_radius=rho, weight_decay=gam)
    hg = h + gam * np.eye(3)
    amp = np.eye(3) + rho * hg
    ref = sl.solve_discrete_lyapunov(np.eye(3) - lr * amp @ hg, lr**2 * amp @ c @ amp.T)
    np.testing.assert_allclose(sig, ref, rtol=1e-10)
    # decay inside the optax chain acts after the SAM evaluation: ascent without gamma
    sig2 = q.stationary_covariance(h, c, sam_radius=rho, optimizer=optax.chain(
        optax.add_decayed_weights(gam), optax.sgd(lr)))
    amp2 = np.eye(3) + rho * h
    ref2 = sl.solve_discrete_lyapunov(np.eye(3) - lr * (amp2 @ h + gam * np.eye(3)),
                                      lr**2 * amp2 @ c @ amp2.T)
    np.testing.assert_allclose(sig2, ref2, rtol=1e-10)


def test_optax_optimizer_errors():
    h, c = random_problem(3, 1)
    with pytest.raises(ValueError, match="carries its own learning rate"):
        q.stationary_covariance(h, c, 0.1, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="factory"):
        q.max_stable_lr(h, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="lr is required"):
        q.stationary_covariance(h, c)
    with pytest.raises(ValueError, match="spectral radius"):
        q.stationary_covariance(h, c, optimizer=optax.sgd(100.0))
    with pytest.raises(ValueError, match="precondition"):
        q.stationary_covariance(h, c, optimizer=optax.chain(optim.precondition(_P3), optax.sgd(0.1)),
                                preconditioner=np.eye(3))
    with pytest.raises(ValueError, match="not both"):
        q.stationary_covariance(h, c, momentum=0.5, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="already"):
        q.stationary_covariance(h, c, 0.1, optimizer=q.usam(0.2), sam_radius=0.1)


def test_nesterov_keyword_everywhere():
    h, c = random_problem(3, 2)
    opt = q.nesterov(0.6)
    assert float(q.max_stable_lr(h, momentum=0.6, nesterov=True)) == float(q.max_stable_lr(h, optimizer=opt))
    np.testing.assert_array_equal(q.stationary_covariance(h, c, 0.2, momentum=0.6, nesterov=True),
                                  q.stationary_covariance(h, c, 0.2, optimizer=opt))
    np.testing.assert_array_equal(q.transition_matrices(h, 0.2, momentum=0.6, nesterov=True)[0],
                                  q.transition_matrices(h, 0.2, optimizer=opt)[0])


def test_inject_hyperparams_max_stable_lr():
    h, _ = random_problem(3, 4)
    inj = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    assert float(q.max_stable_lr(h, optimizer=inj)) == float(q.max_stable_lr(h, momentum=0.9))
