"""The ziggurat Gaussian source (``sgdtheory._ziggurat``, noise="gaussian"): its tables against an
independent construction, its law against N(0, 1) on 10^7 draws, its slow path against the exact
residual law, independence across elements and calls, and invariance to buffer size, vmap, shape
and chunking.

Statistical thresholds: z-scores use the exact standard errors of the normal law (e.g.
SE of the k-th sample moment = sqrt((m_2k - m_k^2) / n)) and fail beyond 5; goodness-of-fit tests
fail below p = 1e-3 (fixed seeds: each check is deterministic, and a correct source passes each
with probability 0.999 over seeds).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import ndtr

import sgdtheory as st
from sgdtheory import _ziggurat as zig
from sgdtheory._ziggurat import ziggurat_normal, ziggurat_tables

N_BIG = 10_000_000


@pytest.fixture(scope="module")
def draws64():
    return np.asarray(ziggurat_normal(jax.random.key(20261130), (N_BIG,), jnp.float64))


def _normal_moment(k):
    return 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))


def test_tables_have_equal_areas_by_quadrature():
    """Independent check: every layer's area (base strip + tail by quadrature; rectangles by
    width x height) equals v, and the layers tile [0, inf) x [0, 1]."""
    t = ziggurat_tables()
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    tail, _ = integrate.quad(f, t.r, np.inf, epsabs=1e-15, epsrel=1e-13)
    v = t.r * f(t.r) + tail
    areas = t.x[:-1][1:] * (t.f[2:] - t.f[1:-1])  # layers 1 .. C-1
    assert abs(t.x[0] * f(t.r) - v) < 1e-14  # base strip width x_0 = v / f(r)
    np.testing.assert_allclose(areas, v, rtol=2e-11)
    assert t.x[-1] == 0.0 and abs(t.residual) < 1e-12  # the top layer closes at f = 1
    assert np.all(np.diff(t.x) < 0)
    assert abs(t.tail_mass / stats.norm.sf(t.r) - 1) < 1e-12
    # 1024 layers: the fast test accepts 99.57 % of words
    assert abs(float(np.mean(t.ratio)) - 0.99572) < 1e-5


@pytest.mark.parametrize("k", range(1, 9))
def test_moments_to_the_eighth(draws64, k):
    n = draws64.size
    se = math.sqrt((_normal_moment(2 * k) - _normal_moment(k) ** 2) / n)
    z = (float(np.mean(draws64 ** k)) - _normal_moment(k)) / se
    assert abs(z) < 5, (k, z)


def test_ks_and_anderson_darling_on_1e7_draws(draws64):
    assert stats.kstest(draws64, "norm").pvalue > 1e-3
    # Anderson-Darling with the law fully specified (case 0): A^2 > 5.97 has p < 1e-3.
    x = np.sort(draws64)
    n = x.size
    logcdf = stats.norm.logcdf(x)
    logsf = stats.norm.logsf(x)
    i = np.arange(1, n + 1)
    a2 = -n - np.sum((2 * i - 1) * (logcdf + logsf[::-1])) / n
    assert a2 < 5.97, a2


def test_chi_square_on_the_layer_boundaries(draws64):
    """Bins at +-x_i (the places a wrong table or a lost wedge would show), plus both tails."""
    t = ziggurat_tables()
    edges = np.unique(np.concatenate([-t.x[1:], t.x[1:]]))
    counts = np.histogram(draws64, np.concatenate([[-np.inf], edges, [np.inf]]))[0]
    cdf = np.concatenate([[0.0], ndtr(edges), [1.0]])
    expected = N_BIG * np.diff(cdf)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, counts.size - 1) > 1e-3
    # the tail beyond r alone (P = 2 Q(r) = 5.4e-5): Poisson z
    beyond = int(np.sum(np.abs(draws64) > t.r))
    mean = N_BIG * 2 * t.tail_mass
    assert abs(beyond - mean) / math.sqrt(mean) < 5


def test_slow_path_follows_the_exact_residual_law():
    """Words that fail the fast test are finished by the tail/wedge/restart path.  Their outputs
    must follow G = (N(0,1) - fast-accepted part) / P(slow), computed here from the tables."""
    t = ziggurat_tables()
    lay = zig._layout(jnp.float64)
    w = jax.random.bits(jax.random.key(7), (4_000_000,), jnp.uint64)
    i, _, u = zig._split(w, lay, jnp.float64)
    slow = np.asarray(u >= jnp.asarray(t.ratio)[i])
    ws = w[np.flatnonzero(slow)]
    e = jnp.arange(ws.shape[0], dtype=jnp.int32)
    out = np.asarray(zig._finish(jnp.array([3, 4], jnp.uint32), ws, e, jnp.float64, t))
    p_slow = 1 - float(np.mean(t.ratio))

    def g_cdf(x):
        ax = np.abs(x)[:, None]
        fast_half = np.sum(np.minimum(ax, t.x[1:][None, :]) / t.x[:-1][None, :], axis=1) / (
            2 * len(t.ratio))
        fast_cdf = (1 - p_slow) / 2 + np.sign(x) * fast_half
        return (ndtr(x) - fast_cdf) / p_slow

    assert out.size > 15_000
    assert stats.kstest(out, g_cdf).pvalue > 1e-3
    # and it is not the plain normal (the test has power): most of G's mass sits in the wedges
    assert stats.kstest(out, "norm").pvalue < 1e-6


def test_no_correlation_across_elements_and_calls():
    """Adjacent elements within a draw and the same element in successive calls (the engine's
    fold_in keys): linear and squared correlations within 5 SE = 5 / sqrt(n) of zero."""
    key = jax.random.key(11)
    draw = jax.jit(lambda k: st.simulate.draw_noise(k, (8, 4096, 10), "gaussian", jnp.float64))
    a = np.asarray(draw(jax.random.fold_in(key, 0))).ravel()
    b = np.asarray(draw(jax.random.fold_in(key, 1))).ravel()
    n = a.size
    for x, y in ((a[:-1], a[1:]), (a, b), (a[:-10], a[10:]), (a[:-40960], a[40960:])):
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(x.size)
        assert abs(np.corrcoef(x * x, y * y)[0, 1]) < 5 / math.sqrt(x.size)
    assert n == 8 * 4096 * 10


def test_same_values_whatever_the_buffer_vmap_or_shape():
    key = jax.random.key(3)
    z = ziggurat_normal(key, (40_000,))
    # a one-row buffer forces ~170 rounds of the slow path; the values must not change
    np.testing.assert_array_equal(z, ziggurat_normal(key, (40_000,), _capacity_rows=1))
    np.testing.assert_array_equal(z.reshape(200, 200), ziggurat_normal(key, (200, 200)))
    for n in (1, 17, 1001):  # sizes that are not a multiple of the 16-element rows
        np.testing.assert_array_equal(ziggurat_normal(key, n),
                                      ziggurat_normal(key, (n,), _capacity_rows=1))
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: ziggurat_normal(k, (1000,)))(keys)
    np.testing.assert_array_equal(batched[1], ziggurat_normal(keys[1], (1000,)))
    np.testing.assert_array_equal(jax.jit(lambda k: ziggurat_normal(k, (1000,)))(keys[2]),
                                  batched[2])


def test_float32_draws():
    z = np.asarray(ziggurat_normal(jax.random.key(5), (2_000_000,), jnp.float32))
    assert z.dtype == np.float32
    assert stats.kstest(z, "norm").pvalue > 1e-3
    for k in (2, 4):
        se = math.sqrt((_normal_moment(2 * k) - _normal_moment(k) ** 2) / z.size)
        assert abs((np.mean(z.astype(float) ** k) - _normal_moment(k)) / se) < 5


def test_bad_input():
    with pytest.raises(ValueError, match="floating dtype"):
        ziggurat_normal(jax.random.key(0), (3,), jnp.int32)
    with pytest.raises(ValueError, match="2\\*\\*30"):
        ziggurat_normal(jax.random.key(0), (2 ** 16, 2 ** 15))
    with pytest.raises(ValueError, match="_capacity_rows"):
        ziggurat_normal(jax.random.key(0), (10,), _capacity_rows=0)
    assert ziggurat_normal(jax.random.key(0), (0, 3)).shape == (0, 3)


def test_chunked_simulation_equals_one_scan():
    h, c = jnp.diag(jnp.array([1.0, 0.5])), jnp.eye(2)
    kw = dict(steps=64, replicas=64, burn_in=8)
    one = st.simulate.quadratic_sgd(jax.random.key(1), h, c, 0.3, **kw)
    chunked = st.simulate.quadratic_sgd(jax.random.key(1), h, c, 0.3, chunk_steps=16, **kw)
    np.testing.assert_allclose(one.cov, chunked.cov, rtol=1e-12)
