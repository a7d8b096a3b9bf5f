"""The composable simulator: minibatch_sgd with user losses, data sources, optax optimizers and
statistics; presets as thin wrappers; no recompilation when only numbers change.

Statistical tolerances: |z| <= the two-sided Student-t quantile at a false-alarm rate of 1e-4 per
assertion, Bonferroni-corrected over the entries compared (sgdtheory.simulate.z_threshold), with
the standard error from independent replica groups.  Seeds are fixed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import sgdtheory as st
from sgdtheory import linreg
from sgdtheory import simulate as sim

_COMPILES = [0]


def _count(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


def compiles(fn):
    """Number of XLA compilations ``fn()`` triggers."""
    before = _COMPILES[0]
    jax.block_until_ready(fn())
    return _COMPILES[0] - before


def _data(n=12, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5]) + 0.4 * rng.normal(size=n)
    return jnp.asarray(x), jnp.asarray(y)


def _loss(w, ex):
    x, y = ex
    return 0.5 * (x @ w - y) ** 2


def _check_agree(table):
    assert table.agree, str(table)


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_user_loss_on_a_dataset_matches_exact_linreg_theory(sampling):
    x, y = _data()
    lr, s, wd = 0.15, 3, 0.05
    opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr))
    stats = sim.minibatch_sgd(jax.random.key(11), _loss, jnp.zeros(2), sim.Dataset((x, y), s, sampling),
                              opt, steps=6000, replicas=512, burn_in=500)
    theory = linreg.dataset_stationary(x, y, lr, s, replacement=sampling == "with_replacement",
                                       weight_decay=wd)
    _check_agree(stats.compare(theory.param_cov))
    _check_agree(stats.compare(theory.param_mean, of="mean"))


def test_pytree_params_and_custom_observe():
    """Params as a dict; observe a function of params and optimizer state (the momentum)."""
    x, y = _data()
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    loss = lambda p, ex: 0.5 * (ex[0] @ p["w"] + p["b"] - ex[1]) ** 2  # noqa: E731
    stats = sim.minibatch_sgd(jax.random.key(0), loss, params, sim.Dataset((x, y), 4),
                              optax.sgd(0.1, momentum=0.5), steps=300, replicas=64, burn_in=100,
                              observe=lambda p, s: jnp.concatenate([p["w"], s[0].trace["w"]]))
    assert stats.mean.shape == (4,)
    default = sim.minibatch_sgd(jax.random.key(0), loss, params, sim.Dataset((x, y), 4),
                                optax.sgd(0.1, momentum=0.5), steps=300, replicas=64, burn_in=100)
    # ravel_pytree order: sorted dict keys -> b, then w
    np.testing.assert_allclose(default.mean[1:], stats.mean[:2], rtol=1e-12)


def test_no_recompilation_when_only_numbers_change():
    """Three calls with new lr, momentum, weight decay and dataset values -- and a fresh lambda
    and a fresh optax object each time -- reuse one compiled simulator; so do the presets."""
    x, y = _data()
    runs = []
    for i, (lr, mu, wd) in enumerate([(0.1, 0.5, 0.01), (0.2, 0.6, 0.02), (0.05, 0.7, 0.03)]):
        opt = optax.chain(optax.add_decayed_weights(jnp.asarray(wd)),
                          optax.sgd(jnp.asarray(lr), momentum=jnp.asarray(mu)))
        runs.append(compiles(lambda: sim.minibatch_sgd(
            jax.random.key(i), lambda w, ex: 0.5 * (ex[0] @ w - ex[1]) ** 2, jnp.zeros(2),
            sim.Dataset((x, y * (1 + i)), 4), opt, steps=50, replicas=16, burn_in=5).cov))
    assert runs[1:] == [0, 0], runs
    h, c = jnp.diag(jnp.array([1.0, 0.5])), jnp.eye(2)
    q = [compiles(lambda: sim.quadratic_sgd(jax.random.key(0), h * (1 + i / 10), c, 0.3 + i / 10,
                                            momentum=0.2 + i / 10, weight_decay=0.01 * (i + 1),
                                            steps=50, replicas=16, burn_in=5).cov)
         for i in range(3)]
    assert q[1:] == [0, 0], q
    lin = [compiles(lambda: sim.linreg_sgd(jax.random.key(0), x, y + i, 0.1 * (i + 1), 4,
                                           momentum=0.1 * (i + 1), weight_decay=0.01 * (i + 1),
                                           steps=50, replicas=16, burn_in=5).cov)
           for i in range(3)]
    assert lin[1:] == [0, 0], lin
    onl = [compiles(lambda: sim.online_linreg_sgd(jax.random.key(0), jnp.eye(2), jnp.ones(2),
                                                  0.1 * (i + 1), 4, label_noise_var=0.5 * (i + 1),
                                                  steps=50, replicas=16, burn_in=5).cov)
           for i in range(3)]
    assert onl[1:] == [0, 0], onl
    def grad_with(curvature):  # a closure over an array: data to the program, not a constant
        return lambda v: v * curvature

    sd = [compiles(lambda: sim.state_dependent_sgd(jax.random.key(0), grad_with(jnp.asarray(1.0 + i)),
                                                   0.5 + i, lambda v: v, 0.0, 0.01 * (i + 1),
                                                   steps=50, replicas=16, burn_in=5).cov)
          for i in range(3)]
    assert sd[1:] == [0, 0], sd


def test_python_float_hyperparameters_are_program_constants():
    """optax.sgd(0.1) bakes 0.1 into the program: a new value compiles again (documented)."""
    x, y = _data()
    n = [compiles(lambda: sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2),
                                            sim.Dataset((x, y), 4), optax.sgd(lr), steps=20,
                                            replicas=16, burn_in=5).cov)
         for lr in (0.123, 0.456)]
    assert n[1] > 0


def test_presets_equal_the_generic_simulator():
    """linreg_sgd is minibatch_sgd with the squared loss: same key, same numbers."""
    x, y = _data()
    a = sim.linreg_sgd(jax.random.key(4), x, y, 0.1, 3, momentum=0.3, sampling="shuffle", steps=400,
                       replicas=64, burn_in=50)
    b = sim.minibatch_sgd(jax.random.key(4), sim.linreg.squared_loss, jnp.zeros(2),
                          sim.Dataset((x, y), 3, "shuffle"), optax.sgd(0.1, momentum=0.3),
                          steps=400, replicas=64, burn_in=50)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-13)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-13)


def test_online_source_vectorized_and_per_example_agree_in_law():
    a_cov, u = jnp.array([[1.0, 0.3], [0.3, 0.5]]), jnp.array([1.0, -0.5])
    lr, s, sigma2 = 0.2, 4, 1.0
    theory = linreg.online_stationary(a_cov, lr, s, label_noise_var=sigma2)
    a_half = jnp.linalg.cholesky(a_cov)

    def one(k):
        z = jax.random.normal(k, (3,))
        x = a_half @ z[:2]
        return x, x @ u + math.sqrt(sigma2) * z[2]

    stats = sim.minibatch_sgd(jax.random.key(2), _loss, u, sim.Online(one, s), optax.sgd(lr),
                              steps=3000, replicas=256, burn_in=300)
    _check_agree(stats.compare(theory.param_cov))


def test_histogram_and_exceedance_match_the_gaussian_stationary_law():
    """1-D SGD on a quadratic with Gaussian noise: the stationary law is exactly N(0, s2),
    s2 = lr c / (h (2 - lr h)); bins and tails are checked against scipy's normal law."""
    h, c, lr = 1.0, 1.0, 0.5
    s2 = lr * c / (h * (2 - lr * h))
    edges = np.linspace(-2.0, 2.0, 9)
    thr = np.array([0.5, 1.0, 1.5])
    stats = sim.quadratic_sgd(jax.random.key(8), jnp.eye(1) * h, jnp.eye(1) * c, lr, steps=4000,
                              replicas=512, burn_in=100, histogram=sim.histogram(edges),
                              exceedance=sim.exceedance(thr))
    law = scipy.stats.norm(scale=math.sqrt(s2))
    expected = np.diff(law.cdf(edges)) / np.diff(edges)
    hist = stats.histogram
    assert hist.coordinates == (0,)
    z = (np.asarray(hist.density[0]) - expected) / np.asarray(hist.density_stderr[0])
    assert np.all(np.abs(z) <= sim.z_threshold(stats.groups, z.size)), z
    np.testing.assert_allclose(float(hist.below[0]) + float(hist.above[0]),
                               2 * law.sf(2.0), atol=6 * float(np.max(hist.density_stderr)))
    exc = stats.exceedance
    ze = (np.asarray(exc.probability[0]) - 2 * law.sf(thr)) / np.asarray(exc.probability_stderr[0])
    assert np.all(np.abs(ze) <= sim.z_threshold(stats.groups, ze.size)), ze


def test_first_passage_on_the_engine_stops_early_and_censors():
    """x_t = t: every replica passes target 10.5 at step 11; the run stops long before 10**6."""
    stats = sim.minibatch_sgd(
        jax.random.key(0), None, jnp.zeros(1), sim.Online(lambda k, shape: jnp.zeros(shape + (1,)), 1,
                                                          vectorized=True),
        optax.sgd(1.0), gradient=lambda w, b: -jnp.ones_like(w), steps=10**6, replicas=16,
        burn_in=0, first_passage=sim.first_passage(0, 10.5, start=0.0), block=4)
    fp = stats.first_passage
    assert bool(jnp.all(fp.passed)) and set(np.asarray(fp.steps).tolist()) == {11}
    censored = sim.minibatch_sgd(
        jax.random.key(0), None, jnp.zeros(1), sim.Online(lambda k, shape: jnp.zeros(shape + (1,)), 1,
                                                          vectorized=True),
        optax.sgd(1.0), gradient=lambda w, b: -jnp.ones_like(w), steps=5, replicas=16, burn_in=0,
        first_passage=sim.first_passage(0, 10.5, start=0.0))
    assert not bool(jnp.any(censored.first_passage.passed))
    assert set(np.asarray(censored.first_passage.steps).tolist()) == {5}


def test_sam_weight_decay_convention_matches_theory():
    """weight_decay is part of the loss, so the SAM ascent sees it (theory and simulator agree;
    before the fix the simulator decayed after the ascent, ~15 % apart)."""
    h = jnp.array([[1.0, 0.2], [0.2, 0.5]])
    c = jnp.eye(2)
    lr, rho, wd = 0.3, 0.5, 0.4
    theory = st.stationary_covariance(h, c, lr, weight_decay=wd, optimizer=st.quadratic.usam(rho))
    stats = sim.quadratic_sgd(jax.random.key(3), h, c, lr, weight_decay=wd, sam_radius=rho,
                              steps=6000, replicas=512, burn_in=300, noise="rademacher")
    _check_agree(stats.compare(theory))


def test_lr_with_optimizer_is_an_error():
    h, c = jnp.eye(2), jnp.eye(2)
    with pytest.raises(ValueError, match="not both"):
        sim.quadratic_sgd(jax.random.key(0), h, c, 0.1, optimizer=optax.sgd(0.1), steps=10,
                          replicas=16, burn_in=1)
    x, y = _data()
    with pytest.raises(ValueError, match="not both"):
        sim.linreg_sgd(jax.random.key(0), x, y, 0.1, 2, optimizer=optax.sgd(0.1), steps=10,
                       replicas=16, burn_in=1)


@pytest.mark.parametrize("bad", [0, 1.5, np.zeros(3), "key"])
def test_an_integer_key_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="jax.random.key"):
        sim.quadratic_sgd(bad, jnp.eye(2), jnp.eye(2), 0.1, steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="jax.random.key"):
        sim.minibatch_sgd(bad, _loss, jnp.zeros(2), sim.Dataset(_data(), 2), optax.sgd(0.1),
                          steps=10, replicas=16, burn_in=1)


def test_legacy_uint32_keys_still_work():
    s = sim.quadratic_sgd(jax.random.PRNGKey(0), jnp.eye(1), jnp.eye(1), 0.1, steps=20, replicas=16,
                          burn_in=1)
    assert np.isfinite(float(s.cov[0, 0]))


@pytest.mark.parametrize("scale", [0.3, lambda x: 0.3, lambda x: jnp.asarray(0.3)])
def test_scalar_noise_scale_is_accepted(scale):
    """Documented as allowed: a scalar noise_scale (constant or returned by the function)."""
    x0 = jnp.zeros(2)
    s = sim.state_dependent_sgd(jax.random.key(0), lambda x: x, scale, lambda x: x, x0, 0.1,
                                steps=200, replicas=32, burn_in=20)
    assert s.cov.shape == (2, 2)
    et = sim.escape_times(jax.random.key(0), lambda x: x, scale, x0, 0.1, target=0.5, budget=500,
                          replicas=32)
    assert et.steps.shape == (32,)


def test_noise_scale_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="noise_scale"):
        sim.state_dependent_sgd(jax.random.key(0), lambda x: x, lambda x: jnp.ones(3),
                                lambda x: x, jnp.zeros(2), 0.1, steps=10, replicas=16, burn_in=1)


def test_divergence_can_raise_and_names_the_bound():
    h, c = jnp.diag(jnp.array([1.0, 3.0])), jnp.eye(2)
    with pytest.raises(sim.DivergenceError, match=r"2/h_max = 0.6667"):
        sim.quadratic_sgd(jax.random.key(0), h, c, 0.7, steps=200, replicas=16, burn_in=1,
                          on_divergence="raise")
    with pytest.warns(sim.DivergenceWarning, match=r"lr=1.4 >= 2\(1\+momentum\)/h_max = 0.7"):
        sim.quadratic_sgd(jax.random.key(0), h, c, 1.4, momentum=0.05, steps=400, replicas=16,
                          burn_in=1)
    with pytest.raises(ValueError, match="on_divergence"):
        sim.quadratic_sgd(jax.random.key(0), h, c, 0.1, steps=10, replicas=16, burn_in=1,
                          on_divergence="explode")


def test_stats_repr_is_compact_and_compare_reads():
    s = sim.quadratic_sgd(jax.random.key(0), jnp.eye(2), jnp.eye(2), 0.5, steps=200, replicas=64,
                          burn_in=20)
    text = repr(s)
    assert len(text) < 800 and "diverged=0" in text and "group_cov" not in text
    table = s.compare(st.stationary_covariance(jnp.eye(2), jnp.eye(2), 0.5))
    out = str(table)
    assert "cov[0,1]" in out and ("agree" in out.splitlines()[-1])
    loss = sim.compare(0.5 * 2 * (0.5 / 1.5), s, of=lambda m, c: 0.5 * jnp.trace(c), name="loss")
    assert loss.labels == ("loss",)
    with pytest.raises(ValueError, match="shape"):
        s.compare(jnp.eye(3))


def test_bad_data_and_options_are_clear_errors():
    x, y = _data()
    with pytest.raises(ValueError, match="larger than the dataset"):
        sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2),
                          sim.Dataset((x, y), 20, "without_replacement"), optax.sgd(0.1), steps=10,
                          replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2), sim.Dataset((x, y[:5]), 2),
                          optax.sgd(0.1), steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="sampling"):
        sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2), sim.Dataset((x, y), 2, "random"),
                          optax.sgd(0.1), steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="scalar"):
        sim.minibatch_sgd(jax.random.key(0), lambda w, ex: ex[0] * w, jnp.zeros(2),
                          sim.Dataset((x, y), 2), optax.sgd(0.1), steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="optax"):
        sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2), sim.Dataset((x, y), 2), 0.1,
                          steps=10, replicas=16, burn_in=1)
    with pytest.raises(ValueError, match="histogram edges"):
        sim.histogram([1.0, 0.0])
    with pytest.raises(ValueError, match="out of range"):
        sim.minibatch_sgd(jax.random.key(0), _loss, jnp.zeros(2), sim.Dataset((x, y), 2),
                          optax.sgd(0.1), steps=10, replicas=16, burn_in=1,
                          histogram=sim.histogram([0.0, 1.0], coordinates=5))


def test_chunked_generic_run_equals_one_long_scan():
    x, y = _data()
    kw = dict(steps=300, replicas=32, burn_in=10,
              exceedance=sim.exceedance([0.1, 0.5], (0, 1)))
    one = sim.minibatch_sgd(jax.random.key(5), _loss, jnp.zeros(2), sim.Dataset((x, y), 3),
                            optax.sgd(0.1), **kw)
    seen = []
    chunked = sim.minibatch_sgd(jax.random.key(5), _loss, jnp.zeros(2), sim.Dataset((x, y), 3),
                                optax.sgd(0.1), chunk_steps=64,
                                progress=lambda done, total, s: seen.append(done), **kw)
    assert seen == [64, 128, 192, 256, 300]
    np.testing.assert_allclose(one.cov, chunked.cov, rtol=1e-12)
    np.testing.assert_allclose(one.exceedance.probability, chunked.exceedance.probability)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_diagonal_and_mean_statistics_are_the_full_ones_restricted(noise):
    """statistics="diagonal" streams only the D variances (same key: the diagonal of the full run,
    to rounding); "mean" streams only the mean; compare() reads both."""
    h, c = jnp.array([[1.0, 0.3], [0.3, 0.5]]), jnp.eye(2)
    kw = dict(steps=500, replicas=64, burn_in=50, noise=noise)
    full = sim.quadratic_sgd(jax.random.key(2), h, c, 0.4, **kw)
    diag = sim.quadratic_sgd(jax.random.key(2), h, c, 0.4, statistics="diagonal", **kw)
    mean = sim.quadratic_sgd(jax.random.key(2), h, c, 0.4, statistics="mean", **kw)
    np.testing.assert_allclose(diag.cov, np.diag(full.cov), rtol=1e-12)
    np.testing.assert_allclose(diag.cov_stderr, np.diag(full.cov_stderr), rtol=1e-9)
    np.testing.assert_allclose(mean.mean, full.mean, rtol=1e-12)
    assert mean.cov is None and mean.cov_stderr is None
    theory = st.stationary_covariance(h, c, 0.4)
    table = diag.compare(theory)
    assert table.labels == ("var[0]", "var[1]")
    np.testing.assert_allclose(table.theory, np.diag(theory))
    with pytest.raises(ValueError, match="mean only"):
        mean.compare(theory)
    assert "var" in repr(diag)
    with pytest.raises(ValueError, match="statistics"):
        sim.quadratic_sgd(jax.random.key(2), h, c, 0.4, statistics="some", **kw)
