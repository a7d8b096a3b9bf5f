"""Tests of sgdtheory._tails (tail index, Lyapunov exponent, fourth moment, regimes, estimators).

Each function is checked against an independent route: closed-form polynomial moments at even
integer beta, the S = 2 thresholds in closed form, Monte Carlo of the Kesten identity with a
standard error, the full-matrix vs reduced d-D Monte Carlo, brute-force enumeration for datasets,
exact rational arithmetic for the fourth moment and a direct simulation where beta > 8.
Monte Carlo tolerances are |z| <= 4.5 (false alarm ~7e-6 per check) with fixed seeds.
"""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from sgdtheory import _tails as T
from sgdtheory import linreg

Z = 4.5


# ------------------------------------------------------------------ tail index: exact thresholds

@pytest.mark.parametrize("s", [1, 2, 4, 16])
def test_beta_two_at_mean_square_bound_1d(s):
    lr = 2 * s / (s + 2)
    assert T.tail_index(1.0, lr, s) == pytest.approx(2.0, abs=1e-9)
    # scaling: only a*lr matters
    assert T.tail_index(2.5, lr / 2.5, s) == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize("d,s", [(2, 1), (5, 4)])
def test_beta_two_at_mean_square_bound_dd(d, s):
    lr = 2 * s / (s + d + 1)
    assert T.tail_index(0.5 * np.eye(d), lr / 0.5, s) == pytest.approx(2.0, abs=1e-8)


def test_s2_thresholds_closed_form():
    # beta = 4  <=>  6u^3 - 6u^2 + 3u - 1 = 0 (S = 2, E R^k = 2^k k!)
    roots = np.roots([6, -6, 3, -1])
    u4 = float(roots[np.argmin(np.abs(roots.imag))].real)
    assert u4 == pytest.approx(0.626538293271, abs=1e-12)
    assert T.tail_index(1.0, u4, 2) == pytest.approx(4.0, abs=1e-9)
    assert T.tail_index(1.0, 1 / math.log(2), 2) == pytest.approx(1.0, abs=1e-9)


def _poly_moment_1d(c, s, n):
    er = T._chi2_moments(s, n)
    return sum(math.comb(n, j) * (-c) ** j * er[j] for j in range(n + 1))


@pytest.mark.parametrize("c,s", [(0.3, 1), (0.1, 4), (0.05, 8)])
def test_log_moment_matches_polynomial_1d(c, s):
    ker = T._Kernel(c, s, 1)
    for n in (2, 4, 6):
        assert math.exp(ker.log_moment(n)) == pytest.approx(_poly_moment_1d(c, s, n), rel=1e-10)


@pytest.mark.parametrize("c,s,d", [(0.2, 1, 2), (0.1, 4, 5)])
def test_log_moment_matches_polynomial_dd(c, s, d):
    # E[((1-cR)^2 + c^2 R Q)^2] and E[(...)^1] with R ~ chi2_S, Q ~ chi2_{d-1} independent
    k = d - 1
    er = T._chi2_moments(s, 4)
    e1mcr2_r = er[1] - 2 * c * er[2] + c * c * er[3]       # E[R (1-cR)^2]
    m2 = _poly_moment_1d(c, s, 2) + c * c * er[1] * k
    m4 = _poly_moment_1d(c, s, 4) + 2 * c * c * e1mcr2_r * k + c ** 4 * er[2] * k * (k + 2)
    ker = T._Kernel(c, s, d)
    assert math.exp(ker.log_moment(2.0)) == pytest.approx(m2, rel=1e-10)
    assert math.exp(ker.log_moment(4.0)) == pytest.approx(m4, rel=1e-10)


def test_published_table_and_prop7():
    # ueda-papers.md §3.6 (exact column) and Ziyin et al. Prop. 7 (paper column)
    for al, s, exact, paper in [(0.2, 1, 8.30, 9), (1.0, 4, 3.505, 4), (1.8, 16, 1.875, 1.78)]:
        assert T.tail_index(1.0, al, s) == pytest.approx(exact, abs=6e-3)
        assert T.ziyin_tail_index(1.0, al, s) == pytest.approx(paper, abs=6e-3)


# ---------------------------------------------------------------- Monte Carlo: Kesten identity

def _mc_norm(rng, a, lr, s, d, n, full):
    """||(I - lr H) e1|| from full data matrices (full=True) or from the reduction."""
    c = a * lr / s
    if full:
        out = np.empty(n)
        chunk = 20000
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            x = math.sqrt(a) * rng.standard_normal((m, s, d))
            h = np.einsum("nsi,nsj->nij", x, x) / s
            v = -lr * h[:, :, 0]
            v[:, 0] += 1.0
            out[i:i + m] = np.linalg.norm(v, axis=1)
        return out
    r = rng.chisquare(s, n)
    q = rng.chisquare(d - 1, n) if d > 1 else np.zeros(n)
    return np.sqrt((1 - c * r) ** 2 + c * c * r * q)


@pytest.mark.parametrize("a,lr,s,d", [(1.0, 1.0, 4, 1), (1.0, 0.3, 1, 1), (1.0, 0.5, 2, 3)])
def test_kesten_identity_monte_carlo(a, lr, s, d):
    beta = T.tail_index(a * np.eye(d) if d > 1 else a, lr, s)
    rng = np.random.default_rng(0)
    v = _mc_norm(rng, a, lr, s, d, 200_000, full=True) ** beta
    mean, se = v.mean(), v.std(ddof=1) / math.sqrt(v.size)
    assert abs(mean - 1.0) <= Z * se, (beta, mean, se)
    # and the Lyapunov exponent
    lv = np.log(_mc_norm(rng, a, lr, s, d, 200_000, full=True))
    g = T.lyapunov_exponent(a * np.eye(d) if d > 1 else a, lr, s)
    assert abs(lv.mean() - g) <= Z * lv.std(ddof=1) / math.sqrt(lv.size)


def test_dd_reduction_matches_full_matrices():
    """The reduction ||Me1||^2 = (1-cR)^2 + c^2 R Q against full data matrices: KS test and means."""
    rng = np.random.default_rng(1)
    for (a, lr, s, d) in [(1.0, 0.4, 3, 4), (2.0, 0.2, 1, 2)]:
        full = _mc_norm(rng, a, lr, s, d, 100_000, full=True)
        red = _mc_norm(rng, a, lr, s, d, 100_000, full=False)
        assert sps.ks_2samp(full, red).pvalue > 1e-4
        for p in (1.0, 2.0, 3.0):
            f, r = full ** p, red ** p
            se = math.hypot(f.std() / math.sqrt(f.size), r.std() / math.sqrt(r.size))
            assert abs(f.mean() - r.mean()) <= Z * se


def test_lyapunov_1d_small_and_dd_consistency():
    # gamma is the slope at 0 of log E|M|^beta
    for d in (1, 3):
        ker = T._Kernel(0.25, 2, d)
        eps = 1e-5
        slope = (ker.log_moment(eps) - ker.log_moment(2 * eps)) / (-eps)
        assert slope == pytest.approx(ker.lyapunov(), abs=1e-4)


# --------------------------------------------------------------------- regimes and edges

def test_regimes_three_layers():
    s = 4
    ms = 2 * s / (s + 2)
    r1 = T.tail_regime(1.0, 0.5 * ms, s)
    assert r1.mean_square_stable and r1.almost_surely_stable and r1.tail_index > 2
    assert r1.regime == "mean-square stable"
    r2 = T.tail_regime(1.0, 1.1 * ms, s)
    assert not r2.mean_square_stable and r2.almost_surely_stable and 0 < r2.tail_index < 2
    assert r2.regime == "a.s. stable, infinite variance"
    r3 = T.tail_regime(1.0, 3.0, s)
    assert r3.lyapunov_exponent > 0 and r3.regime == "no stationary law" and r3.tail_index == 0.0
    assert T.tail_index(1.0, 3.0, s) == 0.0
    assert "3.5" in T.tail_regime(1.0, 1.0, 4).finite_moments


def test_tail_index_near_as_edge_goes_to_zero():
    # bisect the a.s. edge (gamma = 0) for S = 1 and check beta -> 0 from below
    lo, hi = 1.0, 10.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if T.lyapunov_exponent(1.0, mid, 1) < 0 else (lo, mid)
    assert T.tail_index(1.0, 0.98 * lo, 1) < 0.2
    assert T.tail_index(1.0, 1.02 * hi, 1) == 0.0


@pytest.mark.parametrize("bad,match", [
    (dict(input_cov=np.diag([1.0, 2.0])), "isotropic"),
    (dict(input_cov=-1.0), "> 0"),
    (dict(input_cov=np.ones((2, 3))), "square"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=np.ones(2)), "scalar"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=1.5), "batch_size"),
])
def test_errors(bad, match):
    kw = dict(input_cov=1.0, lr=0.5, batch_size=2) | bad
    for fn in (T.tail_index, T.lyapunov_exponent, T.tail_regime):
        with pytest.raises(ValueError, match=match):
            fn(kw["input_cov"], kw["lr"], kw["batch_size"])


def test_small_lr_asymptote():
    """beta * a lr / S -> 1/(2 W(1/e)) = 1.7955607383 (neither SDE value 1 nor 2)."""
    from scipy.special import lambertw
    w = lambertw(1 / math.e).real
    gstar = 1 / (2 * w)
    for s in (1, 4):
        prev = None
        for al in (1e-2, 1e-3, 1e-4):
            b = T.tail_index(1.0, al, s)
            pred = gstar * s / al - (s - 1) / (2 * (1 + w)) * math.log(s / al)
            if prev is not None:   # the O(1) remainder settles
                assert abs((b - pred) - prev) < 0.05
            prev = b - pred
        assert b * al / s == pytest.approx(gstar, rel=2e-4)


# ------------------------------------------------------------------------------ finite dataset

def _data(n=6, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.7 * x + 0.3 * rng.normal(size=n)


def test_dataset_batch1_direct():
    x, y = _data()
    lr = 2.5 / np.max(x ** 2)
    b = T.dataset_tail_index(x, y, lr)
    assert np.isfinite(b) and b > 0
    assert np.mean(np.abs(1 - lr * x ** 2) ** b) == pytest.approx(1.0, abs=1e-10)
    assert T.dataset_tail_index(x[:, None], y, lr) == b
    # bounded law: every |1 - lr x^2| <= 1
    assert T.dataset_tail_index(x, y, 1.9 / np.max(x ** 2)) == math.inf
    # no stationary law
    assert T.dataset_tail_index(x, y, 100.0) == 0.0


def test_dataset_batches_enumeration():
    x, y = _data(5)
    lr = 3.0 / np.max(x ** 2)
    for s in (2, 3):
        b = T.dataset_tail_index(x, y, lr, s)
        # brute force over ordered tuples (with replacement)
        idx = np.array(np.meshgrid(*[range(5)] * s, indexing="ij")).reshape(s, -1).T
        m = np.abs(1 - lr * (x[idx] ** 2).mean(1))
        if np.all(m <= 1):
            assert b == math.inf
        else:
            assert np.mean(m ** b) == pytest.approx(1.0, abs=1e-10)
        bw = T.dataset_tail_index(x, y, lr, s, sampling="without_replacement")
        from itertools import combinations
        mw = np.abs(1 - lr * np.array([np.mean(x[list(c)] ** 2) for c in combinations(range(5), s)]))
        if np.all(mw <= 1):
            assert bw == math.inf
        else:
            assert np.mean(mw ** bw) == pytest.approx(1.0, abs=1e-10)


def test_dataset_errors():
    x, y = _data()
    with pytest.raises(ValueError, match="1-D"):
        T.dataset_tail_index(np.ones((6, 2)), y, 0.1)
    with pytest.raises(ValueError, match="targets"):
        T.dataset_tail_index(x, y[:3], 0.1)
    with pytest.raises(ValueError, match="sampling"):
        T.dataset_tail_index(x, y, 0.1, sampling="shuffle")
    with pytest.raises(ValueError, match="max_batches"):
        T.dataset_tail_index(x, y, 0.1, 4, max_batches=10)
    with pytest.raises(ValueError, match="N ="):
        T.dataset_tail_index(x, y, 0.1, 7, sampling="without_replacement")
    with pytest.raises(ValueError, match="lr"):
        T.dataset_tail_index(x, y, -1.0)


# -------------------------------------------------------------------------- fourth moment

def _fourth_rational(a, lr, s, s2):
    """Independent route: the moment recursion in exact rationals, from E over x of m^k b^j with
    x_i ~ N(0, a) i.i.d. written via Gaussian moments E x^{2n} = a^n (2n-1)!!."""
    a, lr, s2 = Fraction(a), Fraction(lr), Fraction(s2)
    # sums of S i.i.d. x^2: E (sum x^2)^j via chi-square moments with scale a
    er = [Fraction(1)]
    for j in range(1, 5):
        er.append(er[-1] * (s + 2 * (j - 1)))
    esum = [er[j] * a ** j for j in range(5)]            # E (sum x_i^2)^j
    def e_m_pow(k, extra=0):                               # E[(1 - lr/S sum)^k (sum)^extra]
        return sum(math.comb(k, j) * (-lr / s) ** j * esum[j + extra] for j in range(k + 1))
    em2, em4 = e_m_pow(2), e_m_pow(4)
    # b | x ~ N(0, s2 sum x^2 / S^2)
    eb2 = s2 * esum[1] / s ** 2
    eb4 = 3 * s2 ** 2 * esum[2] / s ** 4
    em2b2 = s2 / s ** 2 * e_m_pow(2, extra=1)
    e2 = lr ** 2 * eb2 / (1 - em2)
    e4 = (6 * lr ** 2 * em2b2 * e2 + lr ** 4 * eb4) / (1 - em4)
    return e2, e4


@pytest.mark.parametrize("a,lr,s,s2", [(1, Fraction(1, 10), 1, 1), (2, Fraction(1, 7), 3, Fraction(1, 2)),
                                       (1, Fraction(1, 2), 8, 3)])
def test_fourth_moment_rational(a, lr, s, s2):
    e2, e4 = _fourth_rational(a, lr, s, s2)
    assert T.online_fourth_moment(a, float(lr), s, label_noise_var=float(s2)) == pytest.approx(
        float(e4), rel=1e-13)
    assert T.online_second_moment_1d(a, float(lr), s, label_noise_var=float(s2)) == pytest.approx(
        float(e2), rel=1e-13)
    assert T.online_kurtosis(a, float(lr), s, label_noise_var=float(s2)) == pytest.approx(
        float(e4 / e2 ** 2), rel=1e-12)


def test_second_moment_matches_linreg():
    from sgdtheory import linreg
    for s, al in [(1, 0.3), (4, 1.0)]:
        th = linreg.online_stationary(np.eye(1) * 1.5, al / 1.5, s, label_noise_var=0.7)
        assert float(np.asarray(th.param_cov)[0, 0]) == pytest.approx(
            T.online_second_moment_1d(1.5, al / 1.5, s, label_noise_var=0.7), rel=1e-10)


def test_fourth_moment_infinite_iff_beta_le_4_never_negative():
    s = 2
    u4 = 0.626538293271
    assert math.isfinite(T.online_fourth_moment(1.0, 0.999 * u4, s, label_noise_var=1.0))
    assert T.online_fourth_moment(1.0, 1.001 * u4, s, label_noise_var=1.0) == math.inf
    for lr in np.linspace(0.05, 4.0, 60):
        m4 = T.online_fourth_moment(1.0, lr, s, label_noise_var=1.0)
        k = T.online_kurtosis(1.0, lr, s, label_noise_var=1.0)
        assert m4 > 0 and k >= 3.0 - 1e-12
        assert T.online_second_moment_1d(1.0, lr, s, label_noise_var=1.0) > 0
    assert T.online_fourth_moment(1.0, 0.3, s, label_noise_var=0.0) == 0.0
    with pytest.raises(ValueError, match="point mass"):
        T.online_kurtosis(1.0, 0.3, s, label_noise_var=0.0)
    with pytest.raises(ValueError, match="label_noise_var"):
        T.online_fourth_moment(1.0, 0.3, s, label_noise_var=-1.0)
    with pytest.raises(ValueError, match="isotropic"):
        T.online_fourth_moment(np.diag([1.0, 2.0]), 0.3, s, label_noise_var=1.0)


# --- d-D isotropic fourth moment ------------------------------------------------------------------


@pytest.mark.parametrize("d,s,c", [(2, 1, 0.1), (3, 2, 0.15), (5, 4, 0.08), (3, 1, 0.4)])
def test_dd_fourth_step_moment_equals_the_tail_kernel_quadrature(d, s, c):
    """E||Mu||^4 from the chi-square polynomial equals log E||M e1||^beta at beta = 4 from the
    tail-index kernel (an independent computation: 2-D Gauss-Legendre quadrature over (R, Q))."""
    mo = T._step_moments(1.0, c * s, s, d, 1.0)
    assert math.log(mo.em4) == pytest.approx(T._Kernel(c, s, d).log_moment(4.0), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("d,s", [(1, 3), (2, 1), (4, 3)])
def test_dd_second_moment_equals_linreg_trace(d, s):
    """E||e||^2 of the fourth-moment recursion equals tr(param_cov) of linreg.online_stationary
    (the Isserlis/Kronecker route, independent)."""
    a, lr, s2 = 1.3, 0.2, 0.7
    m2, m4 = T._online_moments(a * np.eye(d), lr, s, s2)
    tr = float(np.trace(np.asarray(linreg.online_stationary(a * np.eye(d), lr, s,
                                                            label_noise_var=s2).param_cov)))
    assert m2 == pytest.approx(tr, rel=1e-12)
    assert T.online_kurtosis(a * np.eye(d), lr, s, label_noise_var=s2) == pytest.approx(
        m4 / m2 ** 2, rel=1e-14)


@pytest.mark.parametrize("a,lr,s,d,s2", [(1.3, 0.2, 3, 4, 0.7), (0.5, 0.3, 1, 2, 2.0)])
def test_dd_step_moments_match_monte_carlo(a, lr, s, d, s2):
    """Every one-step constant against a Monte Carlo of the step itself (full Gaussian data
    matrices, 2e5 draws, fixed seed); |z| <= Z = 4.5 with z from the sample standard error."""
    rng = np.random.default_rng(11)
    n = 200_000
    x = math.sqrt(a) * rng.standard_normal((n, s, d))
    eps = math.sqrt(s2) * rng.standard_normal((n, s))
    u = np.zeros(d)
    u[0] = 1.0
    mu = u - (lr / s) * np.einsum("nsi,ns->ni", x, x @ u)
    b = np.einsum("nsi,ns->ni", x, eps) / s
    mu2, b2 = np.sum(mu * mu, axis=1), np.sum(b * b, axis=1)
    samples = dict(em2=mu2, em4=mu2 ** 2, eb2=b2, eb4=b2 ** 2, emb2=np.sum(mu * b, axis=1) ** 2,
                   em2b2=mu2 * b2)
    exact = T._step_moments(a, lr, s, d, s2)._asdict()
    for name, v in samples.items():
        z = (v.mean() - exact[name]) / (v.std(ddof=1) / math.sqrt(n))
        assert abs(z) <= Z, (name, v.mean(), exact[name], z)


def test_dd_fourth_moment_infinite_iff_beta_le_4_and_gaussian_limit():
    """inf exactly where the tail index crosses 4; as lr -> 0 the law is Gaussian, so the
    kurtosis E||e||^4/(E||e||^2)^2 tends to 1 + 2/d; it exceeds it at finite lr."""
    d, s = 3, 2
    import scipy.optimize as so
    lr4 = so.brentq(lambda lr: T._step_moments(1.0, lr, s, d, 1.0).em4 - 1.0, 0.1, 1.0, xtol=1e-15)
    assert T.tail_index(np.eye(d), lr4, s) == pytest.approx(4.0, rel=1e-6)
    assert math.isfinite(T.online_fourth_moment(np.eye(d), 0.999 * lr4, s, label_noise_var=1.0))
    assert T.online_fourth_moment(np.eye(d), 1.001 * lr4, s, label_noise_var=1.0) == math.inf
    assert T.online_kurtosis(np.eye(d), 1e-5, s, label_noise_var=1.0) == pytest.approx(1 + 2 / d, rel=1e-4)
    for lr in np.linspace(0.02, 0.99 * lr4, 12):
        assert T.online_kurtosis(np.eye(d), lr, s, label_noise_var=1.0) > 1 + 2 / d


@pytest.mark.parametrize("a,lr,s,d,seed", [(1.0, 0.1, 1, 1, 7), (1.0, 0.2, 2, 3, 8)])
def test_fourth_moment_simulation_beta_gt_8(a, lr, s, d, seed):
    """Direct NumPy simulation of e' = (I - lr H) e + lr b with Gaussian x: 1-D (beta ~ 17) and
    isotropic d = 3 (S = 2, beta ~ 15), both > 8 so the SE of a fourth moment is valid.  SE from
    32 independent replica groups (time-averaged within each); |z| <= Z = 4.5."""
    s2 = 1.0
    assert T.tail_index(a * np.eye(d), lr, s) > 8
    rng = np.random.default_rng(seed)
    reps, steps, burn = 4096, 1500, 300
    e = np.zeros((reps, d))
    acc2 = np.zeros(reps)
    acc4 = np.zeros(reps)
    for t in range(steps):
        x = math.sqrt(a) * rng.standard_normal((reps, s, d))
        eps = math.sqrt(s2) * rng.standard_normal((reps, s))
        resid = np.einsum("rsi,ri->rs", x, e) - eps
        e = e - lr / s * np.einsum("rsi,rs->ri", x, resid)
        if t >= burn:
            n2 = np.sum(e * e, axis=1)
            acc2 += n2
            acc4 += n2 * n2
    g2 = (acc2 / (steps - burn)).reshape(32, -1).mean(1)
    g4 = (acc4 / (steps - burn)).reshape(32, -1).mean(1)
    m2, m4 = T._online_moments(a * np.eye(d), lr, s, s2)
    assert m2 == pytest.approx(float(np.trace(np.asarray(
        linreg.online_stationary(a * np.eye(d), lr, s, label_noise_var=s2).param_cov))), rel=1e-12)
    assert m4 == T.online_fourth_moment(a * np.eye(d), lr, s, label_noise_var=s2)
    for g, th in ((g2, m2), (g4, m4)):
        se = g.std(ddof=1) / math.sqrt(g.size)
        assert abs(g.mean() - th) <= Z * se, (g.mean(), th, se)
    kurt = g4 / g2 ** 2
    kse = kurt.std(ddof=1) / math.sqrt(kurt.size)
    k = T.online_kurtosis(a * np.eye(d), lr, s, label_noise_var=s2)
    assert abs(g4.mean() / g2.mean() ** 2 - k) <= Z * kse


# ----------------------------------------------------------------------------- estimators

def test_hill_on_pareto():
    rng = np.random.default_rng(11)
    beta = 3.0
    x = rng.pareto(beta, size=(16, 20000)) + 1.0   # exact Pareto: Hill is unbiased
    h = T.hill_estimator(x, k=2000)
    assert h.groups == 16 and abs(h.tail_index - beta) <= Z * h.stderr
    h1 = T.hill_estimator(x.ravel(), k=5000)
    assert h1.groups == 1 and abs(h1.tail_index - beta) <= Z * h1.stderr
    assert T.hill_estimator(x.ravel()).k == int(math.isqrt(x.size))
    with pytest.raises(ValueError, match="k must"):
        T.hill_estimator(x.ravel(), k=0)
    with pytest.raises(ValueError, match="samples"):
        T.hill_estimator(np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        T.hill_estimator(np.array([1.0, np.inf, 2.0, 3.0]))


def test_exceedance_fit_exact_power_law():
    t = np.geomspace(2, 50, 8)
    p = 0.3 * t ** -2.7
    f = T.exceedance_tail_index(t, p, 0.01 * p)
    assert f.tail_index == pytest.approx(2.7, rel=1e-12)
    assert f.log_constant == pytest.approx(math.log(0.3), rel=1e-12)
    with pytest.raises(ValueError, match="two thresholds"):
        T.exceedance_tail_index(t, np.zeros_like(t), 0.01 * p)
    with pytest.raises(ValueError, match="lengths"):
        T.exceedance_tail_index(t, p[:3], p[:3])


# ------------------------------------------------------------------------------ 1-D density

@pytest.mark.parametrize("a,lr,s,s2,e", [(1, 0.5, 1, 0.5, 2.0), (2, 0.3, 3, 1.0, -1.5),
                                          (1, 0.4, 2, 1.0, 0.7)])
def test_kernel_normalised_and_one_step_mc(a, lr, s, s2, e):
    from scipy import integrate
    f = lambda y: math.exp(T._log_kernel(y, e, a, lr, s, s2))  # noqa: E731
    tot = sum(integrate.quad(f, lo, hi, limit=400, epsabs=0, epsrel=1e-11)[0]
              for lo, hi in [(-np.inf, e), (e, np.inf)])
    assert tot == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(5)
    n = 200_000
    x = math.sqrt(a) * rng.standard_normal((n, s))
    eps = math.sqrt(s2) * rng.standard_normal((n, s))
    new = e - lr / s * np.sum(x * (x * e - eps), axis=1)
    lo, hi = np.quantile(new, [0.2, 0.7])
    pts = [e] if lo < e < hi else None
    prob = integrate.quad(f, lo, hi, points=pts, limit=400)[0]
    pm = np.mean((new > lo) & (new < hi))
    assert abs(prob - pm) <= Z * math.sqrt(pm * (1 - pm) / n)


def _second_moment_from_density(dens):
    """E e^2 = ∫ 2t P(|e|>t) dt, power-law tail beyond tail_start added in closed form."""
    t = np.linspace(0, dens.tail_start, 20001)
    b = dens.tail_index
    return (np.trapezoid(2 * t * dens.tail_probability(t), t)
            + 2 * dens.tail_constant * dens.tail_start ** (2 - b) / (b * (b - 2)))


def test_density_second_moment_and_normalisation():
    from scipy import integrate
    dens = T.stationary_density_1d(1.0, 0.3, 1, label_noise_var=1.0, grid_step=0.04)
    m2 = T.online_second_moment_1d(1.0, 0.3, 1, label_noise_var=1.0)
    assert _second_moment_from_density(dens) == pytest.approx(m2, rel=1e-2)
    # the Nyström interpolant integrates to 1 (independent of the mass normalisation used)
    mass = sum(integrate.quad(lambda x: float(dens.pdf(x)), lo, hi, limit=200)[0]
               for lo, hi in [(-50, -5), (-5, 0), (0, 5), (5, 50)])
    assert mass + dens.tail_probability(50.0) == pytest.approx(1.0, abs=2e-3)
    assert dens.pdf(np.zeros((2, 3))).shape == (2, 3)
    # continuity of the matched tail
    l0 = dens.tail_start
    assert dens.pdf(0.999 * l0) == pytest.approx(dens.pdf(1.001 * l0), rel=0.05)


@pytest.mark.slow
def test_density_second_order_convergence():
    """Self-convergence of P(|e|>1): successive differences fall by ~4 per halving (O(h^2))."""
    vals = [float(T.stationary_density_1d(1.0, 1.0, 4, label_noise_var=1.0, grid_step=h)
                  .tail_probability(1.0)) for h in (0.08, 0.04, 0.02)]
    ratio = (vals[0] - vals[1]) / (vals[1] - vals[2])
    assert 3.5 < ratio < 4.5, vals


def test_density_against_simulation_exceedance():
    """P(|e|>t) and bin probabilities from the discrete-time density vs the simulator (bounded
    functionals: finite variance whatever beta); |z| <= 4.5 with replica-group SEs."""
    import jax
    from sgdtheory import simulate
    a, lr, s = 1.0, 1.0, 4        # beta = 3.5: heavy-tailed, second moments not SE-testable
    dens = T.stationary_density_1d(a, lr, s, label_noise_var=1.0, grid_step=0.02)
    thr = np.array([0.3, 1.0, 2.0, 5.0, 10.0])
    st = simulate.online_linreg_sgd(jax.random.key(0), np.eye(1), np.zeros(1), lr, s,
                                    label_noise_var=1.0, steps=3000, replicas=2048, burn_in=200,
                                    exceedance=simulate.exceedance(thr))
    p = np.asarray(st.exceedance.probability)[0]
    se = np.asarray(st.exceedance.probability_stderr)[0]
    z = (dens.tail_probability(thr) - p) / se
    assert np.all(np.abs(z) <= Z), z


def test_density_errors():
    with pytest.raises(ValueError, match="point mass"):
        T.stationary_density_1d(1.0, 0.3, 1, label_noise_var=0.0)
    with pytest.raises(ValueError, match="no stationary law"):
        T.stationary_density_1d(1.0, 5.0, 1, label_noise_var=1.0)
    with pytest.raises(ValueError, match="1-D"):
        T.stationary_density_1d(np.eye(2), 0.3, 1, label_noise_var=1.0)
    with pytest.raises(ValueError, match="grid_step"):
        T.stationary_density_1d(1.0, 0.3, 1, label_noise_var=1.0, grid_step=0.0)


# ------------------------------------------------------------------------ crosscheck helpers

def test_dd_beta_four_exact_polynomial_threshold():
    # d = 3, S = 2, a lr = 1/2: E||Me1||^4 = 1/2 + 1/4 + 1/4 = 1 exactly, so beta = 4
    assert T.tail_index(np.eye(3), 0.5, 2) == pytest.approx(4.0, abs=1e-8)


def test_second_moment_row_rule():
    from sgdtheory.crosscheck import registry
    from sgdtheory.crosscheck.tails import heavy_tailed_row, second_moment_row_allowed
    assert second_moment_row_allowed(4.01) and not second_moment_row_allowed(4.0)
    assert second_moment_row_allowed(8.5, order=4) and not second_moment_row_allowed(7.9, order=4)
    row = heavy_tailed_row("E e²", "S=4", 0.5, 0.49, 3.5)
    assert not row.passed and "SE not valid" in row.note and row.heavy_tailed
    assert row.verdict.startswith("heavy-tailed: SE not valid")
    # the registry's rule: a heavy-tailed row is neither a pass nor a failure; a check of only
    # such rows tested nothing and fails
    from sgdtheory.crosscheck import CheckResult, Comparison
    ok = Comparison("β", "", 3.5, 3.49, 0.02)
    assert CheckResult("c", "", [ok, row]).passed
    assert not CheckResult("c", "", [row]).passed
    light = Comparison("E e²", "", 1.0, 1.0, 0.1, tail_index=4.5)
    assert light.passed and not light.heavy_tailed
    names = set(registry())
    assert {"tails/kesten-identity", "tails/online-1d-tail", "tails/online-isotropic-tail",
            "tails/online-kurtosis"} <= names


def test_crosscheck_kesten_rows_quick():
    import jax
    from sgdtheory.crosscheck import registry
    rows = registry()["tails/kesten-identity"].fn(jax.random.key(0), "quick")
    assert all(r.passed for r in rows), [r.as_dict() for r in rows]
    assert any(r.expect == "disagree" for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tails/online-1d-tail", "tails/online-isotropic-tail",
                                  "tails/online-kurtosis"])
def test_crosscheck_rows_quick(name):
    import jax
    from sgdtheory.crosscheck import registry
    rows = registry()[name].fn(jax.random.key(1), "quick")
    assert rows and all(r.passed for r in rows), [r.as_dict() for r in rows]


# ------------------------------------------------------------------ tail_index under jit / grad


def test_tail_index_is_jittable_vmappable_and_matches_eager():
    eager = [linreg.tail_index(np.eye(3), lr, 2) for lr in (0.3, 0.5, 0.7)]
    traced = jax.vmap(jax.jit(lambda lr: linreg.tail_index(jnp.eye(3), lr, 2)))(
        jnp.array([0.3, 0.5, 0.7]))
    np.testing.assert_allclose(traced, eager, rtol=1e-13)
    # beta = 4 exactly where the fourth moment's bound sits (isotropic d = 3, S = 2: a lr = 0.5)
    assert abs(float(traced[1]) - 4.0) < 1e-9


@pytest.mark.parametrize("d, s, lr", [(1, 4, 1.0), (1, 1, 0.4), (3, 2, 0.5)])
def test_tail_index_gradient_matches_finite_differences_of_the_eager_root(d, s, lr):
    """Implicit-function-theorem derivative vs a central difference of the eager Brent root
    (an independent route: no custom_jvp involved).  The IFT partials are themselves central
    differences of the quadrature (~1e-6 relative, documented); tolerance 1e-5."""
    cov = 1.0 if d == 1 else np.eye(d)
    grad_lr = float(jax.grad(lambda x: linreg.tail_index(cov, x, s))(lr))
    h = 1e-4 * lr
    fd = (linreg.tail_index(cov, lr + h, s) - linreg.tail_index(cov, lr - h, s)) / (2 * h)
    assert grad_lr < 0
    assert abs(grad_lr / fd - 1) < 1e-5
    # beta depends on a and lr only through a*lr/S: d beta/da = (lr/a) d beta/dlr at a = 1
    grad_a = float(jax.grad(lambda a: linreg.tail_index(a * jnp.eye(d) if d > 1 else a, lr, s))(1.0))
    assert abs(grad_a / (lr * grad_lr) - 1) < 1e-10


def test_tail_index_traced_edge_cases():
    # beyond the a.s. edge beta = 0 with zero derivative; a traced lr <= 0 gives NaN (documented)
    assert float(jax.grad(lambda x: linreg.tail_index(1.0, x, 1))(3.0)) == 0.0
    assert np.isnan(float(jax.jit(lambda x: linreg.tail_index(1.0, x, 1))(-1.0)))
    with pytest.raises(ValueError, match="square"):
        jax.jit(lambda a: linreg.tail_index(a, 0.5, 1))(jnp.ones((2, 3)))


# --------------------------------------------------- Monte Carlo tail index (products of matrices)


def test_dataset_tail_index_mc_matches_the_exact_1d_root():
    """Population-dynamics estimate vs the exact finite-dataset root (1-D, enumeration):
    within 4.5 standard errors (SE from 6 independent runs)."""
    x = np.random.default_rng(0).normal(size=12)
    exact = linreg.dataset_tail_index(x, np.zeros(12), 1.2, 1)
    est = linreg.dataset_tail_index_mc(jax.random.key(1), x[:, None], 1.2, 1, repeats=6,
                                       particles=512, steps=150, burn_in=30)
    assert est.method.startswith("Monte Carlo")
    assert est.stderr > 0 and abs(est.tail_index - exact) < 4.5 * est.stderr, (est, exact)


@pytest.mark.slow
def test_online_tail_index_mc_matches_the_exact_isotropic_root():
    """Default sizes at the exact isotropic root beta = 4 (d = 3, S = 2, a lr = 0.5); measured
    4.013 +- 0.008.  Within 4.5 SE; the O(1/particles) bias (~0.3 %) is documented."""
    est = linreg.online_tail_index_mc(jax.random.key(0), np.eye(3), 0.5, 2, repeats=6)
    assert abs(est.tail_index - 4.0) < 4.5 * est.stderr, est


def test_tail_index_mc_edges_and_errors():
    # bounded law (lr max|x|^2 <= 2): inf without simulating
    x = np.array([[0.5, 0.1], [0.2, -0.3]])
    assert linreg.dataset_tail_index_mc(jax.random.key(0), x, 1.0).tail_index == math.inf
    with pytest.raises(ValueError, match="symmetric"):
        linreg.online_tail_index_mc(jax.random.key(0), np.array([[1.0, 0.5], [0.0, 1.0]]), 0.1, 1)
    with pytest.raises(ValueError, match="burn_in"):
        linreg.online_tail_index_mc(jax.random.key(0), np.eye(2), 0.1, 1, steps=10, burn_in=10)
    with pytest.raises(ValueError, match="batch_size"):
        linreg.dataset_tail_index_mc(jax.random.key(0), np.ones((3, 2)), 3.0, 4,
                                     sampling="without_replacement")
    with pytest.raises(ValueError, match="online_tail_index_mc"):
        linreg.tail_index(np.diag([1.0, 0.5]), 0.1, 1)
    with pytest.raises(ValueError, match="dataset_tail_index_mc"):
        linreg.dataset_tail_index(np.ones((3, 2)), np.ones(3), 0.1)


def test_tail_index_edges_of_no_contraction():
    # every multiplier is a reflection (lr x^2 = 2): nothing contracts, no stationary law (not inf)
    assert linreg.dataset_tail_index(np.ones(4), np.zeros(4), 2.0) == 0.0
    # a singular input covariance never contracts along its null direction: refused
    with pytest.raises(ValueError, match="positive definite"):
        linreg.online_tail_index_mc(jax.random.key(0), np.diag([1.0, 0.0]), 0.1, 1)
