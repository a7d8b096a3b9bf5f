"""Tests of sgdtheory.escape and sgdtheory.landscape against independent routes (closed forms,
scipy quadrature, the Fokker-Planck spectrum); simulation checks live in test_simulate_escape.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import sgdtheory  # noqa: F401
from sgdtheory import escape as es
from sgdtheory import fokker_planck as fp
from sgdtheory import landscape as ls


def _dw_drift(x):
    return -(x**3 - x)          # U = (x^2 - 1)^2 / 4: dU = 1/4, U''(+-1) = 2, U''(0) = -1


# ---------------------------------------------------------------- MFPT (the exact reference)
def test_mfpt_closed_forms_pure_diffusion_and_constant_drift():
    # f = 0: tau = ((b-a)^2 - (x0-a)^2) / (2D)
    t = es.mean_first_passage_time(lambda x: 0 * x, lambda x: 0.3 + 0 * x, 0.3, 1.0, reflecting=-1.0)
    assert abs(t / ((4 - 1.69) / 0.6) - 1) < 1e-10
    # constant drift mu toward b, D: tau = (b-x0)/mu - D/mu^2 (e^{-mu(x0-a)/D} - e^{-mu(b-a)/D})
    mu, d, a, x0, b = 0.7, 0.4, 0.0, 0.5, 2.0
    exact = (b - x0) / mu - d / mu**2 * (math.exp(-mu * (x0 - a) / d) - math.exp(-mu * (b - a) / d))
    t = es.mean_first_passage_time(lambda x: mu + 0 * x, lambda x: d + 0 * x, x0, b, reflecting=a)
    assert abs(t / exact - 1) < 1e-9


def test_mfpt_state_dependent_matches_scipy_nested_quad_to_1e6():
    # Mori's loss-proportional noise in the double well; independent route: scipy.integrate.quad
    # of the same double integral (adaptive Gauss-Kronrod).
    l0, eps = 0.25, 0.125
    f = _dw_drift
    d = lambda x: eps * 2.0 * (l0 + (x**2 - 1) ** 2 / 4)  # noqa: E731
    a, x0, b = -3.0, -1.0, 1.0
    psi = lambda x: scipy.integrate.quad(lambda z: f(z) / d(z), a, x)[0]  # noqa: E731
    inner = lambda y: scipy.integrate.quad(lambda z: math.exp(psi(z)) / d(z), a, y, limit=200)[0]  # noqa: E731
    ref = scipy.integrate.quad(lambda y: math.exp(-psi(y)) * inner(y), x0, b, limit=200, epsabs=0,
                               epsrel=1e-9)[0]
    t = es.mean_first_passage_time(f, d, x0, b, reflecting=a)
    assert abs(t / ref - 1) < 1e-6, (t, ref)


def test_mfpt_orientation_and_log_variant():
    t1 = es.mean_first_passage_time(_dw_drift, lambda x: 0.05 + 0 * x, -1.0, 1.0, reflecting=-4.0)
    t2 = es.mean_first_passage_time(_dw_drift, lambda x: 0.05 + 0 * x, 1.0, -1.0, reflecting=4.0)
    assert abs(t1 / t2 - 1) < 1e-9
    assert abs(t1 - 729.7) < 0.1  # the table in landscape-and-classic.md B2
    # a barrier of 400 T: the MFPT overflows float64 but its log does not
    lt = es.log_mean_first_passage_time(_dw_drift, lambda x: 0.25 / 800 + 0 * x, -1.0, 1.0,
                                        reflecting=-3.0)
    assert math.isfinite(lt) and lt > 790


def test_mfpt_inverse_matches_fp_slowest_rate():
    # Independent route: the smallest non-zero FP relaxation rate of a symmetric double well is
    # the sum of the two escape rates 2/MFPT(min -> other side), up to exp-small corrections.
    # Target at the saddle counts half the crossings; use MFPT(-1 -> +1), which includes the
    # relaxation into the other well (a ~1/(2*dU/T) relative correction at dU/T = 6.25).
    T = 0.04
    x = np.linspace(-2.2, 2.2, 1500)
    r = fp.relaxation_spectrum(_dw_drift, lambda x: T + 0 * x, x, 1)[0]
    t_sad = es.mean_first_passage_time(_dw_drift, lambda x: T + 0 * x, -1.0, 0.0, reflecting=-2.2)
    # exact relation for symmetric wells: rate to cross = 1/(2 tau(-1 -> 0)); lambda_1 = 2 * that
    assert abs(r * t_sad - 1.0) < 0.03, r * t_sad


# ---------------------------------------------------------------- Kramers
def test_kramers_asymptotic_to_exact_mfpt():
    # rel. error of Kramers vs exact decreases like T/dU; ~10 % at dU/T = 5 (12 % measured)
    errs = []
    for ratio in (5.0, 10.0, 20.0, 40.0):
        T = 0.25 / ratio
        tau = es.mean_first_passage_time(_dw_drift, lambda x: T + 0 * x, -1.0, 1.0, reflecting=-3.0)
        errs.append(1.0 - float(es.kramers_rate(0.25, 2.0, 1.0, T)) * tau)
    errs = np.array(errs)
    assert 0.08 < -errs[0] < 0.14 or 0.08 < errs[0] < 0.14, errs
    assert np.all(np.diff(np.abs(errs)) < 0)
    assert abs(errs[-1]) < 0.02
    # error ~ c T/dU: halving T roughly halves it
    assert np.all(np.abs(errs[1:] / errs[:-1] - 0.5) < 0.15)


def test_kramers_langer_reduces_to_kramers_and_log_is_consistent():
    k1 = es.kramers_rate(0.3, 2.0, 0.5, 0.07)
    k2 = es.kramers_langer_rate(0.3, jnp.array([[2.0]]), jnp.array([[-0.5]]), 0.07)
    assert abs(float(k1) / float(k2) - 1) < 1e-13
    # 2-D, separable: product structure; jit == eager
    hm = jnp.array([[2.0, 0.3], [0.3, 1.0]])
    hs = jnp.array([[-0.5, 0.1], [0.1, 1.5]])
    k = es.kramers_langer_rate(0.3, hm, hs, 0.07)
    ev_s = np.linalg.eigvalsh(np.asarray(hs))
    ref = -ev_s[0] / (2 * np.pi) * np.sqrt(np.linalg.det(hm) / abs(np.linalg.det(hs))) * np.exp(-0.3 / 0.07)
    assert abs(float(k) / ref - 1) < 1e-12
    kj = jax.jit(es.kramers_langer_rate)(0.3, hm, hs, 0.07)
    assert abs(float(kj) / float(k) - 1) < 1e-13
    assert abs(float(es.log_kramers_rate(500.0, 2.0, 1.0, 1.0)) - (0.5 * np.log(2) - np.log(2 * np.pi) - 500)) < 1e-10


def test_rate_per_step():
    assert float(es.rate_per_step(2.0, 0.01)) == pytest.approx(0.02)


# ---------------------------------------------------------------- Xie-Sato-Sugiyama
def _two_parabola(ha, hb, dl):
    c = math.sqrt(2 * hb * dl / (ha * (ha + hb)))
    b = c + ha * c / hb
    return c, b


def test_xss_ito_prefactor_vs_exact_ito_mfpt():
    # Piecewise-parabolic barrier, piecewise-constant D = (lr/2B)|H|: the exponent is exact;
    # the Itô prefactor Ha/(2 pi) is asymptotically exact, the paper's |Hb|/(2 pi) is off by Hb/Ha.
    ha, hb, dl = 2.0, 1.0, 0.4
    c, b = _two_parabola(ha, hb, dl)
    errs = []
    for k in (0.04, 0.02, 0.01):   # k = lr / (2B)
        f = lambda x: -jnp.where(x < c, ha * x, hb * (b - x))  # noqa: E731
        d = lambda x: jnp.where(x < c, k * ha, k * hb)  # noqa: E731
        # target well past the saddle (downhill side): the MFPT to it is the escape time
        tau = es.mean_first_passage_time(f, d, 0.0, b + 1.0, reflecting=-2.0, num=400001)
        ito = float(es.xie_sato_sugiyama_rate(dl, ha, hb, 2 * k, 1.0))
        din = float(es.xie_sato_sugiyama_rate(dl, ha, hb, 2 * k, 1.0, convention="d_inside"))
        errs.append(abs(ito * tau - 1))
        assert abs(din * tau - hb / ha) < 0.1  # the paper's prefactor: 2x too slow here
    assert np.all(np.diff(errs) < 0) and errs[-1] < 0.03, errs


def test_xss_conventions_and_path_s():
    r = {c: float(es.xie_sato_sugiyama_rate(0.4, 2.0, 1.0, 0.1, 2.0, convention=c)) for c in es.CONVENTIONS}
    assert r["ito"] / r["d_inside"] == pytest.approx(2.0)
    assert r["stratonovich"] / r["d_inside"] == pytest.approx(math.sqrt(2.0))
    s = 1.0 / 3.0
    assert float(es.xie_sato_sugiyama_rate(0.4, 2.0, 1.0, 0.1, 2.0, path_s=s)) == pytest.approx(r["ito"])
    with pytest.raises(ValueError, match="convention"):
        es.xie_sato_sugiyama_rate(0.4, 2.0, 1.0, 0.1, 2.0, convention="hanggi")


# ---------------------------------------------------------------- power law
def test_power_law_exponent_matches_fp_stationary_tail():
    phi = float(es.power_law_exponent(1.0, 0.25, 1.0))
    assert phi == 5.0
    x = np.linspace(-30, 30, 6001)
    p = fp.stationary_1d(lambda x: -x, lambda x: 0.25 * (0.5 + 0.5 * x * x), x)
    i, j = np.searchsorted(x, [10.0, 20.0])
    slope = np.log(p[j] / p[i]) / np.log(x[j] / x[i])
    # p ~ L^-phi (the 1/D factor included): log-slope -phi log(L_j/L_i)/log(x_j/x_i) -> -2 phi
    L = 0.5 + 0.5 * x * x
    expected = -phi * np.log(L[j] / L[i]) / np.log(x[j] / x[i])
    assert abs(slope - expected) < 1e-3 and abs(expected + 2 * phi) < 0.06


def test_power_law_density_matches_scipy_student_t():
    x = jnp.linspace(-3, 3, 13)
    p = ls.power_law_density(x, 0.5, 2.0, 0.1, 0.2)   # phi = 1 + 0.2/0.2 = 2
    nu = 3.0
    ref = scipy.stats.t.pdf(np.asarray(x), nu, scale=np.sqrt(2 * 0.5 / (2.0 * nu)))
    np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-12)


def test_power_law_escape_rate_vs_exact_mfpt_is_asymptotic():
    # table of ueda-papers.md section 4: formula 1/k = 100.5, 1608, 1247; quadrature 106.5, 1647, 1218
    rows = []
    for l0, eps in ((0.25, 0.125), (0.25, 0.0625), (0.1, 0.125)):
        d = lambda x, l0=l0, eps=eps: eps * 2.0 * (l0 + (x**2 - 1) ** 2 / 4)  # noqa: E731
        tau = es.mean_first_passage_time(_dw_drift, d, -1.0, 1.0, reflecting=-4.0)
        k = float(es.power_law_escape_rate(l0, l0 + 0.25, 2.0, 1.0, eps, 1.0))
        rows.append((1 / k, tau))
    np.testing.assert_allclose([r[0] for r in rows], [100.5, 1608, 1247], rtol=2e-3)
    np.testing.assert_allclose([r[1] for r in rows], [106.5, 1647, 1218], rtol=2e-3)
    errs = [abs(a / b - 1) for a, b in rows]
    assert max(errs) < 0.06
    # the 1-D case of the n-D formula
    k1 = es.power_law_escape_rate(0.25, 0.5, 2.0, 1.0, 0.125, 1.0)
    kn = es.power_law_escape_rate_nd(0.25, 0.5, jnp.array([[2.0]]), jnp.array([[-1.0]]), 0.125, 1.0)
    assert float(kn) == pytest.approx(float(k1), rel=1e-12)


def test_power_law_not_arrhenius():
    # Arrhenius in dL with the noise temperature at the minimum misses by x2 -- x80 (log-barrier).
    l0, eps = 0.1, 0.125
    tau = es.mean_first_passage_time(_dw_drift, lambda x: eps * 2 * (l0 + (x**2 - 1) ** 2 / 4), -1.0, 1.0,
                                     reflecting=-4.0)
    arr = float(es.kramers_rate(0.25, 2.0, 1.0, eps * 2 * l0))
    assert 1 / arr / tau > 50


def test_power_law_second_moment_discrete_vs_sde_formula():
    # exact discrete recursion m' = (1-lr h)^2 m + lr^2 (2h/B)(L0 + h m/2), iterated to convergence
    l0, h, lr, b = 0.5, 1.0, 0.4, 2.0
    m = 0.0
    for _ in range(2000):
        m = (1 - lr * h) ** 2 * m + lr**2 * (2 * h / b) * (l0 + h * m / 2)
    assert float(ls.power_law_second_moment(l0, h, lr, b)) == pytest.approx(m, rel=1e-12)
    # SDE: from the Student-t law, E x^2 = s^2 nu/(nu-2)
    phi = 1 + b / (lr * h)
    nu = 2 * phi - 1
    s2 = 2 * l0 / (h * nu)
    assert float(ls.power_law_second_moment(l0, h, lr, b, discrete=False)) == pytest.approx(s2 * nu / (nu - 2))
    with pytest.raises(ValueError, match="infinite"):
        ls.power_law_second_moment(l0, h, 1.5, 1.0)


# ---------------------------------------------------------------- Yang-Tang-Tu
def test_yang_tang_tu_density_vs_2d_fokker_planck_adiabatic_limit():
    # near-degenerate valley V = a x^2/2, lambda = l0/(1+x^2); as l0 grows (time-scale separation)
    # the exact 2-D FP marginal converges to the adiabatic closed form.
    a, dlt, kap = 0.2, 0.1, 3.0
    V = lambda x: 0.5 * a * x * x  # noqa: E731
    errs = []
    for l0 in (2.0, 8.0):
        lam = lambda x, l0=l0: l0 / (1 + x * x)  # noqa: E731
        drift = lambda x, y, lam=lam, l0=l0: (-(a * x - l0 * x / (1 + x * x) ** 2 * y * y), -lam(x) * y)  # noqa: E731
        diff = lambda x, y: (dlt / kap + 0 * x, 0 * x, dlt + 0 * x)  # noqa: E731
        gx = np.linspace(-3.0, 3.0, 121)
        ymax = 5 * math.sqrt(dlt * 10 / l0)
        gy = np.linspace(-ymax, ymax, 121)
        p = fp.stationary_2d(drift, diff, (gx, gy), max_peclet=20)
        px = p.sum(axis=1) * (gy[1] - gy[0])
        q = np.asarray(ls.yang_tang_tu_density(jnp.asarray(gx), V, lam, dlt, kap))
        hx = gx[1] - gx[0]
        errs.append((np.sum(gx**2 * px) * hx, np.sum(gx**2 * q) * hx))
    rel = [abs(s / t - 1) for s, t in errs]
    assert rel[1] < rel[0] and rel[1] < 0.01, errs


def test_yang_tang_tu_effective_loss_isotropic_is_loss():
    x, y = jnp.array([0.3, 1.0]), jnp.array([0.2, -0.5])
    V = lambda x: x**2  # noqa: E731
    lam = lambda x: 1 + x**2  # noqa: E731
    np.testing.assert_allclose(ls.yang_tang_tu_effective_loss(x, y, V, lam, 0.1, 1.0),
                               V(x) + 0.5 * lam(x) * y * y, rtol=1e-14)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("args", [(0.25, 2.0, 1.0, 0.0), (0.25, 2.0, 1.0, -1.0)])
def test_error_nonpositive_temperature(args):
    with pytest.raises(ValueError, match="temperature"):
        es.kramers_rate(*args)


def test_error_nonpositive_barrier():
    with pytest.raises(ValueError, match="barrier"):
        es.kramers_rate(0.0, 2.0, 1.0, 0.1)


def test_error_nonpositive_curvature_magnitude():
    with pytest.raises(ValueError, match="curvature_saddle"):
        es.kramers_rate(0.3, 2.0, -1.0, 0.1)


def test_error_saddle_without_one_negative_eigenvalue():
    hm = jnp.eye(2)
    for hs in (jnp.diag(jnp.array([1.0, 2.0])), jnp.diag(jnp.array([-1.0, -2.0])), jnp.diag(jnp.array([-1.0, 0.0]))):
        with pytest.raises(ValueError, match="exactly one negative eigenvalue"):
            es.kramers_langer_rate(0.3, hm, hs, 0.1)


def test_error_start_outside_interval():
    with pytest.raises(ValueError, match=r"start=2 must lie in the interval"):
        es.mean_first_passage_time(_dw_drift, lambda x: 0.1 + 0 * x, 2.0, 1.0, reflecting=-3.0)


def test_error_mfpt_nonpositive_diffusion():
    with pytest.raises(ValueError, match="diffusion must be > 0"):
        es.mean_first_passage_time(_dw_drift, lambda x: x, 0.5, 1.0, reflecting=-1.0)


def test_error_power_law_needs_positive_loss_and_barrier():
    with pytest.raises(ValueError, match="loss_min"):
        es.power_law_escape_rate(0.0, 0.5, 2.0, 1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="positive barrier"):
        es.power_law_escape_rate(0.5, 0.4, 2.0, 1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="isotropic"):
        es.power_law_escape_rate_nd(0.1, 0.3, jnp.diag(jnp.array([1.0, 2.0])),
                                    jnp.diag(jnp.array([-1.0, 2.0])), 0.1, 1.0)
    # the d-dimensional rate checks its losses the same way as the 1-D one
    h2, s2 = jnp.eye(2), jnp.diag(jnp.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match="positive barrier"):
        es.power_law_escape_rate_nd(0.5, 0.4, h2, s2, 0.1, 1.0)
    with pytest.raises(ValueError, match="interpolating minimum"):
        es.power_law_escape_rate_nd(0.0, 0.4, h2, s2, 0.1, 1.0)


def test_kramers_langer_vs_2d_fokker_planck_spectrum():
    # Independent route in 2-D: U = (x^2-1)^2/4 + k(y - c x^2)^2/2 (a curved valley, non-separable).
    # Minima (+-1, c): det H = 2k; saddle (0, 0): eigenvalues -1, k.  The slowest FP rate of the
    # symmetric double well is 2 k_escape (1 + O(T/dU)); the asymptotic error must shrink with T.
    k, c = 2.0, 0.4
    hm = jnp.array([[2 + 4 * k * c * c, -2 * k * c], [-2 * k * c, k]])
    hs = jnp.array([[-1.0, 0.0], [0.0, k]])

    def drift(x, y):
        return -(x**3 - x - 2 * k * c * x * (y - c * x * x)), -k * (y - c * x * x)

    rel = []
    for T in (0.25 / 5, 0.25 / 10):
        g = (np.linspace(-2.0, 2.0, 121), np.linspace(-1.2, 1.9, 94))
        r = fp.relaxation_spectrum(drift, lambda x, y, T=T: (T + 0 * x, 0 * x, T + 0 * x), g, 1,
                                   max_peclet=20)[0]
        rel.append(r / (2 * float(es.kramers_langer_rate(0.25, hm, hs, T))) - 1)
    # measured (grid-converged: 161x125 changes them by < 0.003): -0.111 at dU/T = 5, -0.056 at
    # 10 -- the O(T/dU) error halves with T, as for 1-D Kramers.
    assert abs(rel[1]) < 0.08 and abs(rel[1] / rel[0] - 0.5) < 0.1, rel
