"""sgdtheory.flatness and the minibatch-gradient order parameters of sgdtheory.noise.

Two routes for every function: an independent computation (NumPy eigh, SciPy brentq / linregress /
discrete Lyapunov solver, finite differences, exhaustive enumeration of minibatches) and simulated
discrete-time SGD (``minibatch_sgd`` with an ``Online`` landscape-shift source, ``quadratic_sgd``).
Statistical tolerances are t-quantile thresholds from the replica-group standard errors
(``z_threshold(groups, comparisons)``: false-alarm rate 1e-4 per test, Bonferroni over the
compared entries), never tuned.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sl
import scipy.optimize as so
import scipy.stats as ss

import sgdtheory as st
from sgdtheory import flatness as fl
from sgdtheory import noise
from sgdtheory.simulate import z_threshold

# ------------------------------------------------------------------------------------------------
# trajectory_pca
# ------------------------------------------------------------------------------------------------


def _correlated(t, p, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(p, p)) * np.linspace(2.0, 0.2, p)[None, :]
    return rng.normal(size=(t, p)) @ a.T + rng.normal(size=p)


def test_trajectory_pca_matches_numpy_eigh():
    x = _correlated(500, 5)
    for thin in (1, 3):
        xs = x[::thin]
        ev, evec = np.linalg.eigh(np.cov(xs.T, bias=True))  # 1/T normalisation, as Feng & Tu
        pca = fl.trajectory_pca(jnp.asarray(x), thin=thin)
        assert pca.samples == xs.shape[0]
        np.testing.assert_allclose(pca.variances, ev[::-1], rtol=1e-10)
        np.testing.assert_allclose(np.abs(np.asarray(pca.directions) @ evec[:, ::-1]),
                                   np.eye(5), atol=1e-8)
        np.testing.assert_allclose(pca.mean, xs.mean(0), rtol=1e-12)
    # Sign convention: the largest-magnitude entry of each direction is positive.
    d = np.asarray(fl.trajectory_pca(x).directions)
    assert np.all(d[np.arange(5), np.abs(d).argmax(1)] > 0)
    # Fewer snapshots than parameters: min(T, P) components.
    assert fl.trajectory_pca(x[:3]).variances.shape == (3,)


def test_trajectory_pca_jit():
    x = jnp.asarray(_correlated(64, 3))
    np.testing.assert_allclose(jax.jit(fl.trajectory_pca)(x).variances,
                               fl.trajectory_pca(x).variances, rtol=1e-12)


@pytest.mark.parametrize("bad, kw, match", [
    (np.zeros(5), {}, "shape"),
    (np.zeros((2, 2)), {"thin": 2}, "at least 2 snapshots"),
    (np.array([[0.0, 1.0], [np.nan, 0.0]]), {}, "NaN"),
    (np.zeros((4, 2)), {"thin": 0}, "thin must be >= 1"),
])
def test_trajectory_pca_errors(bad, kw, match):
    with pytest.raises(ValueError, match=match):
        fl.trajectory_pca(bad, **kw)


# ------------------------------------------------------------------------------------------------
# flatness
# ------------------------------------------------------------------------------------------------


def _nonquadratic(w, xp=jnp):
    return 0.7 + 0.5 * (2.0 * w[0] ** 2 + 0.3 * w[1] ** 2 + w[2] ** 2) + 0.4 * w[0] * w[1] \
        + 0.2 * (w[0] + w[2]) ** 4 + 0.1 * xp.sin(3.0 * w[1])


def _first_crossing_scipy(w0, u, level, tmax=50.0):
    """Independent route (NumPy + SciPy): dense scan for the first crossing, then brentq."""
    f = lambda t: _nonquadratic(w0[:, None] + u[:, None] * np.atleast_1d(t)[None, :], np)  # noqa: E731
    ts = np.linspace(0.0, tmax, 50_001)
    above = np.flatnonzero(f(ts) >= level)
    if above.size == 0:
        return np.inf
    j = above[0]
    return so.brentq(lambda t: f(t)[0] - level, ts[j - 1], ts[j], xtol=1e-14)


def test_flatness_matches_brentq_nonquadratic():
    w0 = np.array([0.1, -0.3, 0.2])  # not a minimum: the profiles are asymmetric
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(4, 3))
    res = fl.flatness(_nonquadratic, jnp.asarray(w0), dirs)
    l0 = float(_nonquadratic(w0, np))
    assert float(res.loss0) == pytest.approx(l0) and float(res.level) == pytest.approx(math.e * l0)
    for i, u in enumerate(dirs / np.linalg.norm(dirs, axis=1, keepdims=True)):
        r = _first_crossing_scipy(w0, u, math.e * l0)
        lft = _first_crossing_scipy(w0, -u, math.e * l0)
        np.testing.assert_allclose(res.right[i], r, rtol=1e-9)
        np.testing.assert_allclose(res.left[i], -lft, rtol=1e-9)
        np.testing.assert_allclose(res.width[i], r + lft, rtol=1e-9)


def test_flatness_pytree_jit_vmap_and_factor():
    params = {"a": jnp.array([0.0]), "b": jnp.array([0.0, 0.0])}
    loss = lambda p: 1.0 + 2.0 * p["a"][0] ** 2 + 0.5 * jnp.sum(p["b"] ** 2)  # noqa: E731
    dirs = jnp.eye(3)
    eager = fl.flatness(loss, params, dirs, factor=2.0)
    # L0 = 1, level 2: half-widths sqrt((2-1)/k_i) with k = 2, 0.5, 0.5 (loss = L0 + k w^2).
    np.testing.assert_allclose(eager.width, 2 * np.sqrt(1.0 / np.array([2.0, 0.5, 0.5])),
                               rtol=1e-12)
    jitted = jax.jit(lambda p, d: fl.flatness(loss, p, d, factor=2.0))(params, dirs)
    np.testing.assert_allclose(jitted.width, eager.width, rtol=1e-12)
    one = jax.vmap(lambda d: fl.flatness(loss, params, d, factor=2.0).width[0])(dirs)
    np.testing.assert_allclose(one, eager.width, rtol=1e-12)


def test_flatness_saturating_side_is_inf():
    # Right of 0 a parabola, left a saturating tanh^2: the level e*L0 is reached on one side only.
    loss = lambda w: 1.0 + jnp.where(w[0] > 0, w[0] ** 2, 0.5 * jnp.tanh(w[0]) ** 2)  # noqa: E731
    res = fl.flatness(loss, jnp.zeros(1), 5.0 * jnp.ones(1))  # one (P,) direction, not unit length
    assert float(res.right[0]) == pytest.approx(math.sqrt(math.e - 1.0), rel=1e-12)
    assert res.left[0] == -np.inf and res.width[0] == np.inf
    # ... and a max_distance too short for a finite crossing also says inf.
    short = fl.flatness(lambda w: 1.0 + w[0] ** 2, jnp.zeros(1), jnp.ones((1, 1)), max_distance=1.0)
    assert short.width[0] == np.inf


@pytest.mark.parametrize("kw, loss, match", [
    ({"factor": 1.0}, None, "factor must be > 1"),
    ({}, lambda w: 0.5 * jnp.sum(w ** 2), "L0 = 0"),
    ({"directions": jnp.ones((2, 3))}, None, r"shape \(m, P\)"),
    ({"directions": jnp.array([[1.0, 0.0], [0.0, 0.0]])}, None, "rows \\[1\\]"),
    ({}, lambda w: 1.0 + w, "scalar"),
    ({"max_distance": -1.0}, None, "max_distance must be > 0"),
])
def test_flatness_errors(kw, loss, match):
    kw = {"directions": jnp.eye(2), **kw}
    loss = loss or (lambda w: 1.0 + jnp.sum(w ** 2))
    with pytest.raises(ValueError, match=match):
        fl.flatness(loss, jnp.zeros(2), **kw)


# ------------------------------------------------------------------------------------------------
# variance_flatness_exponent
# ------------------------------------------------------------------------------------------------


def test_exponent_matches_scipy_linregress():
    rng = np.random.default_rng(2)
    f = np.exp(rng.uniform(0, 3, size=25))
    s2 = 0.3 * f ** -3.2 * np.exp(0.2 * rng.normal(size=25))
    fit = fl.variance_flatness_exponent(s2, f)
    ref = ss.linregress(np.log(f), np.log(s2))
    assert float(fit.psi) == pytest.approx(-ref.slope, rel=1e-12)
    assert float(fit.stderr) == pytest.approx(ref.stderr, rel=1e-10)
    assert float(fit.intercept) == pytest.approx(ref.intercept, rel=1e-12)
    jitted = jax.jit(fl.variance_flatness_exponent)(s2, f)
    assert float(jitted.psi) == pytest.approx(float(fit.psi), rel=1e-12)


@pytest.mark.parametrize("s2, f, match", [
    ([1.0, 2.0], [1.0, 2.0], "at least 3"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
    ([1.0, 2.0, 3.0], [1.0, np.inf, 2.0], r"flatness must be finite.*\[1\].*isfinite"),
    ([1.0, -2.0, 3.0], [1.0, 2.0, 3.0], "variances must be finite and > 0"),
])
def test_exponent_errors(s2, f, match):
    with pytest.raises(ValueError, match=match):
        fl.variance_flatness_exponent(np.array(s2), np.array(f))


# ------------------------------------------------------------------------------------------------
# exact minimal models: independent routes
# ------------------------------------------------------------------------------------------------

K4 = np.array([0.05, 0.15, 0.4, 1.0])


def _rotated(k, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(k), len(k))))
    return q, q @ np.diag(k) @ q.T


def test_quadratic_flatness_matches_root_solve():
    q, kmat = _rotated(K4)
    l0 = 0.37
    loss = lambda w: l0 + 0.5 * w @ jnp.asarray(kmat) @ w  # noqa: E731
    num = fl.flatness(loss, jnp.zeros(4), q.T).width
    np.testing.assert_allclose(num, fl.quadratic_flatness(K4, l0), rtol=1e-10)
    np.testing.assert_allclose(fl.quadratic_flatness(K4, l0, factor=3.0),
                               2 * np.sqrt(2 * 2.0 * l0 / K4), rtol=1e-14)


@pytest.mark.parametrize("lr", [0.1, 1.9])
def test_minimal_model_variances_match_scipy_lyapunov(lr):
    q, kmat = _rotated(K4)
    s2, b, temp = 0.7, 3, 0.05
    m = np.eye(4) - lr * kmat
    # Landscape shift: the minibatch gradient K(θ − mean δ) has noise covariance (s²/B) K².
    sig = sl.solve_discrete_lyapunov(m, lr ** 2 * (s2 / b) * kmat @ kmat)
    np.testing.assert_allclose(np.diag(q.T @ sig @ q), fl.landscape_shift_variances(K4, lr, s2, b),
                               rtol=1e-10)
    np.testing.assert_allclose(q.T @ sig @ q, np.diag(np.diag(q.T @ sig @ q)), atol=1e-12)
    sig = sl.solve_discrete_lyapunov(m, 2 * lr * temp * np.eye(4))  # Langevin: sqrt(2 lr T) ξ
    np.testing.assert_allclose(np.diag(q.T @ sig @ q), fl.langevin_variances(K4, lr, temp),
                               rtol=1e-10)


def test_local_exponent_matches_finite_differences():
    lr, h = 0.8, 1e-5
    for dyn, var in (("sgd", lambda k: fl.landscape_shift_variances(k, lr, 1.0, 1)),
                     ("langevin", lambda k: fl.langevin_variances(k, lr, 1.0))):
        k = jnp.asarray(K4)
        dlogs = (jnp.log(var(k * (1 + h))) - jnp.log(var(k * (1 - h))))
        dlogf = (jnp.log(fl.quadratic_flatness(k * (1 + h), 1.0))
                 - jnp.log(fl.quadratic_flatness(k * (1 - h), 1.0)))
        np.testing.assert_allclose(fl.local_exponent(K4, lr, dynamics=dyn), -dlogs / dlogf,
                                   rtol=1e-8)
    # The alpha -> 0 limits: +2 (SGD, inverse relation) and -2 (Langevin, equilibrium).
    np.testing.assert_allclose(fl.local_exponent(K4, 1e-9), 2.0, rtol=1e-8)
    np.testing.assert_allclose(fl.local_exponent(K4, 1e-9, dynamics="langevin"), -2.0, rtol=1e-8)


@pytest.mark.parametrize("call, match", [
    (lambda: fl.landscape_shift_variances(K4, 2.0, 1.0, 1), r"lr=2 >= 2/k_max = 2"),
    (lambda: fl.langevin_variances(K4, 2.5, 1.0), r"2/k_max = 2"),
    (lambda: fl.landscape_shift_variances(np.array([1.0, -0.1]), 0.1, 1.0, 1), "curvatures"),
    (lambda: fl.landscape_shift_variances(K4, 0.1, 0.0, 1), "shift_var must be > 0"),
    (lambda: fl.landscape_shift_variances(K4, 0.1, 1.0, 0), "batch_size must be >= 1"),
    (lambda: fl.langevin_variances(K4, 0.1, -1.0), "temperature must be > 0"),
    (lambda: fl.local_exponent(K4, 0.1, dynamics="adam"), "dynamics"),
    (lambda: fl.quadratic_flatness(K4, 0.0), "loss0 must be > 0"),
    (lambda: fl.quadratic_flatness(K4, 1.0, factor=0.5), "factor must be > 1"),
    (lambda: fl.quadratic_flatness(np.ones((2, 2)), 1.0), "1-D"),
])
def test_minimal_model_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_minimal_models_traced_lr_past_bound_give_nan():
    # eager lr >= 2/k_max raises (above); a traced one yields NaN, not a plausible number
    fns = (lambda lr: fl.landscape_shift_variances(K4, lr, 1.0, 1),
           lambda lr: fl.langevin_variances(K4, lr, 1.0),
           lambda lr: fl.local_exponent(K4, lr),
           lambda lr: fl.local_exponent(K4, lr, dynamics="langevin"))
    for f in fns:
        assert np.all(np.isnan(np.asarray(jax.jit(f)(2.5))))  # 2/k_max = 2
        np.testing.assert_allclose(jax.jit(f)(0.5), f(0.5), rtol=1e-12)
    with pytest.raises(ValueError, match="lr must be a scalar"):
        fl.langevin_variances(K4, np.array([0.1, 0.2]), 1.0)


# ------------------------------------------------------------------------------------------------
# exact minimal models against simulated SGD
# ------------------------------------------------------------------------------------------------

LR, B, S2, TEMP = 0.5, 2, 1.0, 0.01


def _psi_fn(kmat, l0):
    kj = jnp.asarray(kmat)

    @jax.jit
    def fn(mean, cov):  # the researcher's route: PCA, flatness by root solves, log-log fit
        var, vec = jnp.linalg.eigh(cov)
        width = fl.flatness(lambda w: l0 + 0.5 * w @ kj @ w, mean, vec.T).width
        return fl.variance_flatness_exponent(var, width).psi

    return fn


def _check_run(stats, q, kmat, l0, exact_var):
    # Variances along the eigenvectors of K (unbiased projections): 4 comparisons.
    proj = lambda m, c: jnp.einsum("ij,jk,ki->i", q.T, c, q)  # noqa: E731
    v, se = st.simulate.estimate(stats, proj)
    z = (np.asarray(v) - np.asarray(exact_var)) / np.asarray(se)
    assert np.all(np.abs(z) < z_threshold(stats.groups, 4)), z
    # The fitted exponent against the exact fit of the exact curves (same curvatures).
    exact_psi = float(fl.variance_flatness_exponent(exact_var, fl.quadratic_flatness(K4, l0)).psi)
    psi, psi_se = st.simulate.estimate(stats, _psi_fn(kmat, l0))
    assert abs(float(psi) - exact_psi) / float(psi_se) < z_threshold(stats.groups), (psi, exact_psi)
    return float(psi), float(psi_se)


def test_landscape_shift_sgd_simulation():
    """Landscape-shift SGD (minibatch_sgd with Online shifts): exact σ_i², and ψ > 0 (inverse)."""
    q, kmat = _rotated(K4)
    l0 = 0.5 * S2 * float(np.trace(kmat))
    kj = jnp.asarray(kmat)
    shift_loss = lambda th, d: 0.5 * (th - d) @ kj @ (th - d)  # noqa: E731
    data = st.simulate.Online(lambda key, shape: jax.random.normal(key, shape + (4,)), B,
                              vectorized=True)
    # Correlation time 1/(lr k_min) = 40 steps: burn-in 400, 1200 steps of statistics.
    sgd = st.simulate.minibatch_sgd(jax.random.key(0), shift_loss, jnp.zeros(4), data,
                                    optax.sgd(jnp.asarray(LR)), steps=1600, replicas=128,
                                    burn_in=400)
    psi, _ = _check_run(sgd, q, kmat, l0, fl.landscape_shift_variances(K4, LR, S2, B))
    assert psi > 1.5


@pytest.mark.slow
def test_langevin_simulation():
    """Langevin (quadratic_sgd, isotropic noise (2T/lr) I): exact σ_i², and ψ < 0 (equilibrium)."""
    q, kmat = _rotated(K4)
    l0 = 0.5 * S2 * float(np.trace(kmat))
    lang = st.simulate.quadratic_sgd(jax.random.key(1), kmat, (2 * TEMP / LR) * np.eye(4), LR,
                                     steps=2000, replicas=256, burn_in=400)
    psi, _ = _check_run(lang, q, kmat, l0, fl.langevin_variances(K4, LR, TEMP))
    assert psi < -1.5


def test_trajectory_pca_of_simulated_sgd():
    """PCA of single recorded trajectories estimates the exact principal variances."""
    q, kmat = _rotated(K4)
    # Same law as the landscape-shift model (Gaussian shifts): gradient noise (s²/B) K².
    steps, burn = 10_000, 400
    stats = st.simulate.quadratic_sgd(jax.random.key(2), kmat, (S2 / B) * kmat @ kmat, LR,
                                      steps=steps, replicas=8, burn_in=burn, record_every=1,
                                      record_replicas=8)
    traj = np.asarray(stats.trajectory)[burn:]  # (T, 8, 4)
    per_rep = np.array([np.asarray(fl.trajectory_pca(traj[:, r]).variances) for r in range(8)])
    exact = np.sort(np.asarray(fl.landscape_shift_variances(K4, LR, S2, B)))[::-1]
    # Independent replicas -> SE from their spread; the bias of a 9 600-step window (mean
    # subtraction, ~2 tau/T <= 0.8 % for tau = 40 steps) is well below the SE (~3 %).
    z = (per_rep.mean(0) - exact) / (per_rep.std(0, ddof=1) / np.sqrt(8))
    assert np.all(np.abs(z) < z_threshold(8, 4)), z


# ------------------------------------------------------------------------------------------------
# alignment ratio and the minibatch-gradient order parameters (sgdtheory.noise)
# ------------------------------------------------------------------------------------------------


def _logistic(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ rng.normal(size=d)))).astype(float)

    def loss(w, ex):
        z = ex[0] @ w
        return jnp.logaddexp(0.0, z) - ex[1] * z

    return (jnp.asarray(x), jnp.asarray(y)), loss


def _enumerate(g, s, sampling):
    """Every equally likely minibatch gradient: ordered S-tuples or S-subsets."""
    n = g.shape[0]
    idx = (itertools.product(range(n), repeat=s) if sampling == "with_replacement"
           else itertools.combinations(range(n), s))
    return np.array([g[list(i)].mean(0) for i in idx])


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
@pytest.mark.parametrize("s", [1, 2, 3, 6])
def test_alignment_ratio_matches_enumeration(sampling, s):
    ex, loss = _logistic(6, 3)
    w = jnp.array([0.3, -0.2, 0.1])
    g = np.asarray(noise.flatten_per_sample(noise.per_sample_gradients(loss, w, ex)))
    gb = _enumerate(g, s, sampling)
    # Independent batches: E[g.g'] = |E g_B|^2, E|g|^2 = mean over the enumerated batches.
    ref = np.sum(gb.mean(0) ** 2) / np.mean(np.sum(gb ** 2, axis=1))
    r2 = noise.alignment_ratio(g, s, sampling=sampling)
    assert float(r2) == pytest.approx(ref, rel=1e-12)
    # The same number through the exact minibatch covariance of noise.minibatch_covariance.
    tr = float(jnp.trace(noise.minibatch_covariance(g, s, sampling=sampling)))
    assert float(r2) == pytest.approx(np.sum(g.mean(0) ** 2) / (np.sum(g.mean(0) ** 2) + tr),
                                      rel=1e-12)
    op = noise.gradient_order_parameters(loss, w, ex, s, sampling=sampling)
    assert float(op.alignment_ratio) == pytest.approx(ref, rel=1e-12)
    assert float(op.rms_amplitude) ** 2 == pytest.approx(np.mean(np.sum(gb ** 2, 1)), rel=1e-12)
    assert float(jax.jit(lambda a: noise.alignment_ratio(a, s, sampling=sampling))(g)) == \
        pytest.approx(ref, rel=1e-12)


def test_sampled_order_parameters_match_enumeration():
    """Monte Carlo (sample_minibatch_gradients) against the exact expectations by enumeration."""
    ex, loss = _logistic(6, 3)
    w = jnp.array([0.3, -0.2, 0.1])
    g = np.asarray(noise.flatten_per_sample(noise.per_sample_gradients(loss, w, ex)))
    groups, m, s = 32, 256, 2
    for sampling in ("with_replacement", "without_replacement"):
        gb = _enumerate(g, s, sampling)
        norms = np.linalg.norm(gb, axis=1)
        exact = {  # independent batches may coincide: E cos = |E u|^2 over equally likely batches
            "alignment": np.sum((gb / norms[:, None]).mean(0) ** 2),
            "alignment_ratio": float(noise.alignment_ratio(g, s, sampling=sampling)),
            "amplitude": norms.mean(),
            "rms_amplitude": np.sqrt(np.mean(norms ** 2)),
        }
        draws = noise.sample_minibatch_gradients(jax.random.key(3), loss, w, ex, s, groups * m,
                                                 sampling=sampling)
        per = jax.vmap(noise.minibatch_order_parameters)(draws.reshape(groups, m, -1))
        for name, ref in exact.items():
            vals = np.asarray(getattr(per, name))
            z = (vals.mean() - ref) / (vals.std(ddof=1) / np.sqrt(groups))
            # 8 comparisons per test; ratio estimators carry an O(1/M) bias, << SE at M = 256.
            assert abs(z) < z_threshold(groups, 8), (sampling, name, vals.mean(), ref)


def test_alignment_ratio_against_minibatch_sgd_batches():
    """The simulator's own without-replacement sampler, read out by a gradient-recording optax
    transform (the parameters stay put; the optimizer state is the last minibatch gradient)."""
    n, d, s = 40, 5, 10
    ex, loss = _logistic(n, d, seed=1)
    w = jnp.full(d, 0.2)
    rec = optax.GradientTransformation(lambda p: jnp.zeros_like(p),
                                       lambda g, state, params=None: (jnp.zeros_like(g), g))
    stats = st.simulate.minibatch_sgd(jax.random.key(4), loss, w,
                                      st.simulate.Dataset(ex, s, "without_replacement"), rec,
                                      steps=100, replicas=256, burn_in=0, observe=lambda p, o: o)
    val, se = st.simulate.estimate(stats, lambda m, c: jnp.sum(m ** 2) / (jnp.sum(m ** 2)
                                                                         + jnp.trace(c)))
    exact = noise.gradient_order_parameters(loss, w, ex, s, sampling="without_replacement")
    wrong = noise.gradient_order_parameters(loss, w, ex, s, sampling="with_replacement")
    assert abs(float(val - exact.alignment_ratio)) / float(se) < z_threshold(stats.groups)
    assert abs(float(val - wrong.alignment_ratio)) / float(se) > z_threshold(stats.groups)


@pytest.mark.parametrize("call, match", [
    (lambda: noise.alignment_ratio(np.ones((4, 2)), 5, sampling="without_replacement"),
     "larger than the dataset"),
    (lambda: noise.alignment_ratio(np.zeros((4, 2)), 2), "every minibatch gradient is zero"),
    (lambda: noise.alignment_ratio(np.ones((4, 2)), 2, sampling="shuffle"), "no exact theory"),
    (lambda: noise.minibatch_order_parameters(np.ones((1, 3))), "M >= 2"),
    (lambda: noise.minibatch_order_parameters(np.array([[1.0, 0.0], [0.0, 0.0]])), r"\[1\] are zero"),
    (lambda: noise.sample_minibatch_gradients(0, lambda w, z: w @ z, jnp.zeros(2), jnp.ones((3, 2)),
                                              1, 2), "PRNG key"),
    (lambda: noise.sample_minibatch_gradients(jax.random.key(0), lambda w, z: w @ z, jnp.zeros(2),
                                              jnp.ones((3, 2)), 4, 2,
                                              sampling="without_replacement"),
     "larger than the dataset"),
])
def test_order_parameter_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
