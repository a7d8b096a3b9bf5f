"""Oracle tests of sgdtheory.linreg: vec-form (Kronecker) moment maps built index by index from
Gaussian moments, and enumeration of every minibatch on tiny datasets (tests/_linreg_ref.py).
Simulation tests of the same functions live in tests/test_simulate_linreg.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _linreg_ref import (dataset_radius, dataset_reference, online_radius, online_reference)

from sgdtheory import linreg as L
from sgdtheory import quadratic as st_quadratic
from sgdtheory.quadratic import mean_square_max_lr

A = np.array([[1.0, 0.3], [0.3, 0.5]])
U = np.array([1.0, -0.5])
B = np.array([[0.3, 0.1], [0.1, 0.2]])


def _data(n=5, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, x @ U + 0.5 * rng.normal(size=n)


ONLINE_CASES = [
    dict(s=1, frac=0.5, sigma2=1.0),
    dict(s=4, frac=0.9, sigma2=1.0),
    dict(s=4, frac=0.7, sigma2=0.3, wd=0.3),
    dict(s=4, frac=0.7, sigma2=0.0, wd=-0.15),
    dict(s=8, frac=0.7, sigma2=0.2, b=B),
    dict(s=3, frac=0.7, sigma2=0.5, wd=0.1, b=B),
    dict(s=4, frac=0.8, sigma2=1.0, momentum=0.5),
    dict(s=2, frac=0.6, sigma2=0.5, momentum=0.9, wd=0.2),
]


@pytest.mark.parametrize("case", ONLINE_CASES)
def test_online_stationary_matches_kronecker_solve(case):
    s, frac = case["s"], case["frac"]
    kw = dict(wd=case.get("wd", 0.0), b=case.get("b"), momentum=case.get("momentum", 0.0))
    lr = frac * float(L.online_max_lr(A, s, weight_decay=kw["wd"], input_noise_cov=kw["b"],
                                      momentum=kw["momentum"]))
    r = L.online_stationary(A, lr, s, label_noise_var=case["sigma2"], weight_decay=kw["wd"],
                            true_weights=U, input_noise_cov=kw["b"], momentum=kw["momentum"])
    mean, cov, train = online_reference(A, lr, s, sigma2=case["sigma2"], u=U, **kw)
    np.testing.assert_allclose(r.param_mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.param_cov, cov, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(r.train_loss, train, rtol=1e-8)
    e = mean - U
    np.testing.assert_allclose(r.test_loss, 0.5 * (np.sum(A * cov) + e @ A @ e), rtol=1e-8)


@pytest.mark.parametrize("kw", [dict(), dict(wd=0.3), dict(b=B), dict(momentum=0.5),
                                dict(wd=-0.15, momentum=0.3)])
@pytest.mark.parametrize("s", [1, 5])
def test_online_max_lr_is_the_spectral_radius_crossing(kw, s):
    lam = float(L.online_max_lr(A, s, weight_decay=kw.get("wd", 0.0), input_noise_cov=kw.get("b"),
                                momentum=kw.get("momentum", 0.0)))
    assert online_radius(A, lam * (1 - 1e-6), s, **kw) < 1.0
    assert online_radius(A, lam * (1 + 1e-6), s, **kw) > 1.0


def test_online_max_lr_1d_and_batch_dependence():
    for s in (1, 2, 10, 100):
        np.testing.assert_allclose(L.online_max_lr(jnp.eye(1) * 2.0, s), 2 * s / (s + 2) / 2.0,
                                   rtol=1e-12)
    # larger batches allow larger learning rates, approaching 2/a_max
    vals = [float(L.online_max_lr(A, s)) for s in (1, 4, 16, 256)]
    assert np.all(np.diff(vals) > 0) and vals[-1] < 2 / np.linalg.eigvalsh(A)[-1]


def test_online_noise_cov_is_lemma1_at_stationarity():
    s, lr, sig2 = 4, 0.6, 0.7
    r = L.online_stationary(A, lr, s, label_noise_var=sig2)
    cov = np.asarray(r.param_cov)
    np.testing.assert_allclose(r.noise_cov, (A @ cov @ A + np.trace(A @ cov) * A + sig2 * A) / s,
                               rtol=1e-12)
    # and the additive-noise Lyapunov equation with THIS (self-consistent) C is exactly satisfied
    m = np.eye(2) - lr * A
    np.testing.assert_allclose(m @ cov @ m + lr**2 * np.asarray(r.noise_cov), cov, rtol=1e-10)


def test_learning_curve_matches_iterated_kronecker_map():
    from _linreg_ref import online_operator
    s, lr, sig2, wd = 3, 0.5, 0.4, 0.2
    e0, m0 = np.array([[0.5, 0.1], [0.1, 0.3]]), np.array([0.3, -0.2])
    curve = L.learning_curve(A, lr, s, 25, init_error_cov=e0, init_error_mean=m0,
                             label_noise_var=sig2, weight_decay=wd, true_weights=U)
    t, dim, _ = online_operator(A, lr, s, sigma2=sig2, wd=wd, u=U)
    y = np.zeros((dim, dim))
    w_mean = U + m0
    y[:2, :2] = e0 + np.outer(w_mean, w_mean)
    y[:2, 2] = y[2, :2] = w_mean
    y[2, 2] = 1.0
    for k in range(26):
        e2 = y[:2, :2] - np.outer(y[:2, 2], U) - np.outer(U, y[:2, 2]) + np.outer(U, U)
        np.testing.assert_allclose(curve.test_loss[k], 0.5 * np.sum(A * e2), rtol=1e-10)
        np.testing.assert_allclose(curve.train_loss[k], 0.5 * (np.sum(A * e2) + sig2), rtol=1e-10)
        y = (t @ y.reshape(-1)).reshape(dim, dim)
    # converges to the stationary losses
    long = L.learning_curve(A, lr, s, 3000, init_error_cov=e0, label_noise_var=sig2,
                            weight_decay=wd, true_weights=U)
    st = L.online_stationary(A, lr, s, label_noise_var=sig2, weight_decay=wd, true_weights=U)
    np.testing.assert_allclose(long.test_loss[-1], st.test_loss, rtol=1e-9)


def test_learning_curve_large_diagonal_is_cheap():
    d = 2000
    a = jnp.diag(jnp.linspace(0.01, 1.0, d))
    c = L.learning_curve(a, 0.01, 8, 100, init_error_cov=jnp.eye(d), label_noise_var=0.1)
    assert c.test_loss.shape == (101,) and np.all(np.diff(np.asarray(c.test_loss)) < 0)


DATA_CASES = [(1, True, 0.0), (2, True, 0.0), (3, True, 0.2), (2, False, 0.0), (3, False, 0.0),
              (4, False, 0.3), (5, False, 0.0), (5, True, -0.1)]


@pytest.mark.parametrize("s,replacement,wd", DATA_CASES)
def test_dataset_stationary_matches_enumeration(s, replacement, wd):
    x, y = _data()
    lr = 0.8 * float(L.dataset_max_lr(x, s, replacement=replacement, weight_decay=wd))
    r = L.dataset_stationary(x, y, lr, s, replacement=replacement, weight_decay=wd)
    mean, cov, train = dataset_reference(x, y, lr, s, replacement, wd)
    np.testing.assert_allclose(r.param_mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.param_cov, cov, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(r.train_loss, train, rtol=1e-9)


def test_dataset_full_batch_without_replacement_is_gd():
    x, y = _data()
    r = L.dataset_stationary(x, y, 0.5, 5, replacement=False)
    np.testing.assert_allclose(r.param_cov, 0.0, atol=1e-15)
    np.testing.assert_allclose(r.param_mean, np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-10)


def test_dataset_overparameterized_interpolates():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3))
    y = rng.normal(size=2)
    r = L.dataset_stationary(x, y, 0.5 * float(L.dataset_max_lr(x, 1)), 1)
    np.testing.assert_allclose(r.param_cov, 0.0, atol=1e-14)
    np.testing.assert_allclose(r.train_loss, 0.0, atol=1e-20)
    np.testing.assert_allclose(r.param_mean, np.linalg.pinv(x) @ y, rtol=1e-10)


@pytest.mark.parametrize("s,replacement,wd", DATA_CASES[:6])
def test_mean_square_max_lr_is_enumerated_radius_crossing(s, replacement, wd):
    x, _ = _data()
    lam = float(L.dataset_max_lr(x, s, replacement=replacement, weight_decay=wd))
    assert dataset_radius(x, lam * (1 - 1e-7), s, replacement, wd) < 1.0
    assert dataset_radius(x, lam * (1 + 1e-7), s, replacement, wd) > 1.0


def test_mean_square_max_lr_wu_ma_e_1d():
    h = np.array([0.5, 1.0, 2.5, 4.0])
    a, s2 = h.mean(), h.var()
    for s, rep in [(1, True), (3, True), (2, False), (3, False)]:
        f = 1 / s if rep else (4 - s) / (s * 3)
        np.testing.assert_allclose(mean_square_max_lr(h.reshape(4, 1, 1), s, replacement=rep),
                                   2 * a / (a**2 + s2 * f), rtol=1e-12)
    # full batch without replacement is gradient descent: 2/h_max of the mean
    np.testing.assert_allclose(mean_square_max_lr(h.reshape(4, 1, 1), 4, replacement=False),
                               2 / a, rtol=1e-12)


# --- Ziyin, Liu, Mori & Ueda (2022) closed forms --------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_ziyin_label_noise_is_exact(momentum):
    lr = 0.7 * float(L.online_max_lr(A, 4, momentum=momentum))
    z = L.ziyin_label_noise(A, lr, 4, 0.8, momentum=momentum)
    r = L.online_stationary(A, lr, 4, label_noise_var=0.8, momentum=momentum)
    np.testing.assert_allclose(z.param_cov, r.param_cov, rtol=1e-10)
    np.testing.assert_allclose(z.test_loss, r.test_loss, rtol=1e-10)
    if momentum == 0:
        np.testing.assert_allclose(z.train_loss, r.train_loss, rtol=1e-10)


@pytest.mark.parametrize("wd", [0.3, -0.15, 1.0])
def test_ziyin_weight_decay_test_loss_is_exact_for_any_teacher(wd):
    lr = 0.7 * float(L.online_max_lr(A, 4, weight_decay=wd))
    np.testing.assert_allclose(L.ziyin_weight_decay_test_loss(A, lr, 4, wd, U),
                               L.online_stationary(A, lr, 4, weight_decay=wd, true_weights=U).test_loss,
                               rtol=1e-10)


def test_ziyin_input_noise_printed_formula_is_wrong_corrected_is_exact():
    a, b, u = np.diag([1.0, 0.5]), np.diag([0.5, 0.25]), np.array([1.0, 1.0])
    lr, s = 0.8, 8
    exact = float(L.online_stationary(a, lr, s, input_noise_cov=b, true_weights=u).test_loss)
    corrected = float(L.ziyin_input_noise_test_loss(a, b, u, lr, s))
    printed = float(L.ziyin_input_noise_test_loss(a, b, u, lr, s, printed=True))
    np.testing.assert_allclose(corrected, exact, rtol=1e-10)
    assert printed / exact - 1 > 0.05  # the printed Eq. 134/147 overestimates (K in place of A)
    # with B = 0 the two coincide
    z = np.zeros((2, 2))
    np.testing.assert_allclose(L.ziyin_input_noise_test_loss(a, z, u, lr, s, printed=True),
                               L.ziyin_input_noise_test_loss(a, z, u, lr, s), rtol=1e-12)


def test_additive_hessian_noise_prediction_is_wrong_at_large_lr():
    from sgdtheory.quadratic import stationary_covariance
    s, sig2 = 4, 1.0
    lr = 0.8 * float(L.online_max_lr(A, s))
    exact = L.online_stationary(A, lr, s, label_noise_var=sig2).param_cov
    add = stationary_covariance(A, sig2 * A / s, lr)
    assert np.trace(np.asarray(exact)) > 1.5 * np.trace(np.asarray(add))
    small = 0.01  # at small lr the two agree to O(lr) (~1 %)
    ex = L.online_stationary(A, small, s, label_noise_var=sig2).test_loss
    ad = 0.5 * np.sum(A * np.asarray(stationary_covariance(A, sig2 * A / s, small)))
    np.testing.assert_allclose(ad, ex, rtol=0.02)


def test_jit_eager_vmap_agree():
    f = lambda lr: L.online_stationary(A, lr, 4, label_noise_var=1.0, weight_decay=0.2,  # noqa
                                       true_weights=U).param_cov
    lrs = jnp.array([0.2, 0.4, 0.6])
    eager = np.stack([f(float(v)) for v in lrs])
    np.testing.assert_allclose(jax.jit(f)(0.4), eager[1], rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(f)(lrs), eager, rtol=1e-12)
    x, y = _data()
    g = lambda lr: L.dataset_stationary(x, y, lr, 2).param_cov  # noqa
    np.testing.assert_allclose(jax.jit(g)(0.3), g(0.3), rtol=1e-12)


def test_unstable_lr_under_jit_gives_nan_like_quadratic():
    # Regression: linreg returned inf here while quadratic returns NaN (the README promises NaN).
    r = jax.jit(lambda lr: L.online_stationary(A, lr, 4, label_noise_var=1.0))(5.0)
    assert not bool(L.online_is_stable(A, 5.0, 4))
    for leaf in (r.param_cov, r.noise_cov, r.train_loss, r.test_loss):
        assert np.all(np.isnan(leaf))
    stable = jax.jit(lambda lr: L.online_stationary(A, lr, 4, label_noise_var=1.0))(0.1)
    assert np.all(np.isfinite(stable.param_cov))
    q_nan = jax.jit(lambda lr: st_quadratic.stationary_covariance(A, np.eye(2), lr))(5.0)
    assert np.all(np.isnan(q_nan))


# --- bad input: one test per error path ------------------------------------------------------------

def test_error_lr_beyond_online_bound_names_value():
    bound = float(L.online_max_lr(A, 4))
    with pytest.raises(ValueError, match="online_max_lr = ") as err:
        L.online_stationary(A, 1.01 * bound, 4, label_noise_var=1.0)
    named = float(str(err.value).split("online_max_lr = ")[1].split(":")[0])
    assert bound * (1 - 1e-5) <= named <= bound  # the value, printed so that it is itself stable


def test_error_lr_beyond_dataset_bound_names_value():
    x, y = _data()
    bound = float(L.dataset_max_lr(x, 2))
    with pytest.raises(ValueError, match=f"= {bound:.4g}"):
        L.dataset_stationary(x, y, 1.01 * bound, 2)


def test_error_batch_larger_than_dataset_without_replacement():
    x, y = _data()
    with pytest.raises(ValueError, match="larger than the dataset"):
        L.dataset_stationary(x, y, 0.1, 6, replacement=False)


def test_error_mismatched_inputs_targets():
    x, y = _data()
    with pytest.raises(ValueError, match="targets must have shape"):
        L.dataset_stationary(x, y[:-1], 0.1, 2)


def test_error_non_psd_input_cov():
    with pytest.raises(ValueError, match="positive semidefinite"):
        L.online_stationary(np.diag([1.0, -0.1]), 0.1, 4, label_noise_var=1.0)


def test_error_non_psd_input_noise_cov():
    with pytest.raises(ValueError, match="positive semidefinite"):
        L.online_stationary(A, 0.1, 4, input_noise_cov=np.diag([0.1, -0.1]), true_weights=U)


def test_error_negative_label_noise():
    with pytest.raises(ValueError, match="label_noise_var must be >= 0"):
        L.online_stationary(A, 0.1, 4, label_noise_var=-1.0)


def test_error_missing_teacher_with_weight_decay():
    with pytest.raises(ValueError, match="true_weights"):
        L.online_stationary(A, 0.1, 4, weight_decay=0.1)


def test_ziyin_cor4_1d_weight_decay_is_exact():
    for a, g, lr, s in [(1.0, 0.3, 0.8, 4), (2.0, -0.3, 0.4, 16), (0.5, 1.0, 0.5, 1)]:
        np.testing.assert_allclose(
            L.ziyin_weight_decay_1d_test_loss(a, lr, s, g, 1.3),
            L.online_stationary(np.eye(1) * a, lr, s, weight_decay=g,
                                true_weights=np.array([1.3])).test_loss, rtol=1e-10)


@pytest.mark.parametrize("s", [4, 16, 64])
def test_ziyin_cor1_negative_weight_decay_criterion_vs_grid(s):
    """Sign of the grid argmin of the exact test loss over gamma vs Cor. 1's criterion."""
    a = 1.0
    crit_lo, crit_hi = 2 / (1 + 2 / s), np.sqrt(s / 2)
    for lr in np.linspace(0.3, 1.9, 9):
        if abs(lr - crit_lo) < 0.05 or abs(lr - crit_hi) < 0.05:
            continue
        gammas = np.linspace(-0.6, 1.0, 321)
        losses = []
        for g in gammas:
            k = a + g
            ok = k > 0 and 2 * k - lr * (k**2 + 2 * a**2 / s) > 0 and (2 - lr * k) > 0
            losses.append(L.ziyin_weight_decay_1d_test_loss(a, lr, s, g, 1.0) if ok else np.inf)
        best = gammas[int(np.argmin(losses))]
        if not np.isfinite(np.min(losses)):
            continue
        assert (best < 0) == bool(L.ziyin_negative_weight_decay_is_optimal(a, lr, s)), (lr, best)


def test_grad_of_test_loss_matches_finite_difference():
    f = lambda lr: L.online_stationary(A, lr, 4, label_noise_var=1.0, weight_decay=0.2,  # noqa
                                       true_weights=U).test_loss
    g = jax.grad(f)(0.4)
    h = 1e-6
    np.testing.assert_allclose(g, (f(0.4 + h) - f(0.4 - h)) / (2 * h), rtol=1e-6)


def test_singular_input_cov_flat_direction_does_not_move():
    a = np.diag([1.0, 0.0])
    r = L.online_stationary(a, 0.5, 4, label_noise_var=1.0)
    mean, cov, train = online_reference(np.diag([1.0, 1e-300]), 0.5, 4, sigma2=1.0)
    assert np.all(np.isfinite(np.asarray(r.param_cov)))
    np.testing.assert_allclose(r.param_cov[0, 0], cov[0, 0], rtol=1e-9)
    np.testing.assert_allclose(r.param_cov[1], 0.0, atol=1e-15)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), s=st.integers(1, 6), frac=st.floats(0.05, 0.95),
       wd=st.floats(-0.05, 0.5), sig2=st.floats(0.0, 2.0), noisy=st.booleans())
def test_property_online_equals_kronecker(seed, s, frac, wd, sig2, noisy):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(3, 3))
    a = m @ m.T / 3 + 0.2 * np.eye(3)
    b = np.diag(rng.uniform(0, 0.3, 3)) if noisy else None
    u = rng.normal(size=3)
    lr = frac * float(L.online_max_lr(a, s, weight_decay=wd, input_noise_cov=b))
    r = L.online_stationary(a, lr, s, label_noise_var=sig2, weight_decay=wd, true_weights=u,
                            input_noise_cov=b)
    mean, cov, train = online_reference(a, lr, s, sigma2=sig2, wd=wd, u=u, b=b)
    # the reference gets Sigma as E[ww^T] - mean mean^T: round-off ~1e-12 of the raw second moment
    atol = 1e-11 * (1.0 + mean @ mean)
    np.testing.assert_allclose(r.param_cov, cov, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(r.train_loss, train, rtol=1e-7, atol=atol)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), s=st.integers(1, 3),
       rep=st.booleans(), frac=st.floats(0.05, 0.95))
def test_property_dataset_equals_enumeration(seed, n, s, rep, frac):
    s = min(s, n)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=n)
    lr = frac * float(L.dataset_max_lr(x, s, replacement=rep))
    r = L.dataset_stationary(x, y, lr, s, replacement=rep)
    mean, cov, train = dataset_reference(x, y, lr, s, rep)
    atol = 1e-11 * (1.0 + mean @ mean)  # round-off of E[ww^T] - mean mean^T in the reference
    np.testing.assert_allclose(r.param_cov, cov, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(r.train_loss, train, rtol=1e-7, atol=atol)


# --- one vocabulary: optax optimizers, sampling=, w_star= --------------------------------------------
import optax  # noqa: E402


@pytest.mark.parametrize("kw,opt", [
    (dict(lr=0.3), optax.sgd(0.3)),
    (dict(lr=0.3, momentum=0.6), optax.sgd(0.3, momentum=0.6)),
    (dict(lr=0.3, weight_decay=0.2), optax.chain(optax.add_decayed_weights(0.2), optax.sgd(0.3))),
    (dict(lr=0.3, momentum=0.5, weight_decay=0.1),
     optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.3, momentum=0.5))),
], ids=["sgd", "heavy_ball", "decay", "decay+momentum"])
def test_online_optax_form_gives_the_keyword_numbers(kw, opt):
    ref = L.online_stationary(A, batch_size=4, label_noise_var=0.5, true_weights=U, **kw)
    got = L.online_stationary(A, batch_size=4, label_noise_var=0.5, w_star=U, optimizer=opt)
    for x, y in zip(got, ref):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-16)
    fac_kw = {k: v for k, v in kw.items() if k != "lr"}
    mu, wd = kw.get("momentum", 0.0), kw.get("weight_decay", 0.0)
    factory = lambda lr: optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=mu))  # noqa: E731
    assert float(L.online_max_lr(A, 4, optimizer=factory)) == float(L.online_max_lr(A, 4, **fac_kw))
    assert bool(L.online_is_stable(A, batch_size=4, optimizer=opt))


def test_online_unsupported_optimizers_raise():
    for opt in (optax.sgd(0.3, momentum=0.5, nesterov=True), optax.adam(0.1)):
        with pytest.raises(ValueError, match="supports optimizer=|not linear"):
            L.online_stationary(A, batch_size=4, optimizer=opt)
    with pytest.raises(ValueError, match="carries its own"):
        L.online_stationary(A, 0.3, 4, optimizer=optax.sgd(0.3))
    with pytest.raises(ValueError, match="free variable"):
        L.online_max_lr(A, 4, optimizer=optax.sgd(0.3))


def test_dataset_optax_form_and_sampling_names():
    x, y = _data()
    for rule, repl in (("with_replacement", True), ("without_replacement", False)):
        ref = L.dataset_stationary(x, y, 0.2, 2, replacement=repl, weight_decay=0.1)
        got = L.dataset_stationary(x, y, batch_size=2, sampling=rule, optimizer=optax.chain(
            optax.add_decayed_weights(0.1), optax.sgd(0.2)))
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)
        assert float(L.dataset_max_lr(x, 2, sampling=rule)) == float(L.dataset_max_lr(x, 2, replacement=repl))
        assert float(mean_square_max_lr(np.einsum("ni,nj->nij", x, x), 2, sampling=rule)) == float(
            mean_square_max_lr(np.einsum("ni,nj->nij", x, x), 2, replacement=repl))
    with pytest.raises(ValueError, match="not both"):
        L.dataset_stationary(x, y, 0.2, 2, sampling="with_replacement", replacement=True)
    with pytest.raises(ValueError, match="shuffle"):
        L.dataset_max_lr(x, 2, sampling="shuffle")
    with pytest.raises(ValueError, match="sampling must be one of"):
        L.dataset_stationary(x, y, 0.2, 2, sampling="iid")
    with pytest.raises(ValueError, match="supports optimizer= optax.sgd"):
        L.dataset_stationary(x, y, batch_size=2, optimizer=optax.sgd(0.2, momentum=0.5))


def test_w_star_and_true_weights_are_one_name():
    a = L.online_stationary(A, 0.3, 4, weight_decay=0.2, w_star=U)
    b = L.online_stationary(A, 0.3, 4, weight_decay=0.2, true_weights=U)
    np.testing.assert_array_equal(a.test_loss, b.test_loss)
    with pytest.raises(ValueError, match="not both"):
        L.online_stationary(A, 0.3, 4, w_star=U, true_weights=U)
    c1 = L.learning_curve(A, 0.3, 4, 5, init_error_cov=np.eye(2), weight_decay=0.2, w_star=U)
    c2 = L.learning_curve(A, 0.3, 4, 5, init_error_cov=np.eye(2), weight_decay=0.2, true_weights=U)
    np.testing.assert_array_equal(c1.test_loss, c2.test_loss)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_unstable_message_names_a_real_stable_bound(momentum):
    # Regression: at the edge the bisection and the direct solve could disagree by an ulp and the
    # message read "lr=x >= online_max_lr = x". Walk lr up from the bound past the edge.
    bound = float(L.online_max_lr(A, 4, momentum=momentum))
    lr, raised = bound, 0
    for _ in range(400):
        lr = float(np.nextafter(lr, np.inf)) if raised == 0 and _ < 200 else lr * (1 + 1e-9)
        try:
            L.online_stationary(A, lr, 4, label_noise_var=1.0, momentum=momentum)
        except ValueError as e:
            raised += 1
            named = float(str(e).split("online_max_lr = ")[1].split(":")[0])
            assert named < lr, str(e)
            assert bool(L.online_is_stable(A, named, 4, momentum=momentum)), str(e)
            lhs = str(e).split(" >= ")[0].removeprefix("lr=")
            assert lhs != f"{named:.{len(lhs)}g}" and float(lhs) != named
            if raised >= 3:
                break
    assert raised >= 1
