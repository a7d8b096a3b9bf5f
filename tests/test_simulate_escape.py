"""Simulation tests: escape times of discrete SGD / Euler-Maruyama against the exact MFPT, censoring,
Kaplan-Meier, and stationary statistics under state-dependent noise against the Fokker-Planck
solution and the exact discrete second moment.

Tolerances: |sim - theory| <= 4.5 standard errors (a false-alarm rate ~1e-5 per assertion for
Gaussian errors), where the standard error is sd/sqrt(R) over R independent replicas for escape
times (uncensored) or theta/sqrt(n_escaped) (censored exponential MLE), and the spread over 32
independent replica groups / sqrt(32) for stationary averages.  Discretisation biases are kept
well below one standard error by the choice of lr (stated per test)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdtheory  # noqa: F401
from sgdtheory import escape as es
from sgdtheory import fokker_planck as fp
from sgdtheory import landscape as ls
from sgdtheory.simulate import z_threshold
from sgdtheory.simulate import escape as se

Z = 4.5
T_DW = 0.125        # dU/T = 2 in the quartic double well


def _grad(x):
    return x**3 - x


def _noise_dw(x):
    return jnp.sqrt(2 * T_DW / 0.01) + 0 * x


def test_sgd_escape_time_matches_exact_mfpt():
    # lr*U''(min) = 0.02: the Euler bias of the escape rate is O(lr U'') ~ 1 %, below the 3 % se.
    et = se.escape_times(jax.random.key(1), _grad, _noise_dw, -1.0, 0.01, target=1.0, budget=200_000,
                         replicas=1024)
    s = se.summarize(et)
    assert s.escaped == 1024 and s.method.startswith("sample mean")
    tau = es.mean_first_passage_time(lambda x: -(x**3 - x), lambda x: T_DW + 0 * x, -1.0, 1.0,
                                     reflecting=-4.0)
    z = (s.mean_time - tau) / s.mean_time_stderr
    assert abs(z) < Z, (s, tau)
    # same key, same result (jit determinism)
    et2 = se.escape_times(jax.random.key(1), _grad, _noise_dw, -1.0, 0.01, target=1.0, budget=200_000,
                          replicas=1024)
    np.testing.assert_array_equal(np.asarray(et.steps), np.asarray(et2.steps))


def test_censoring_mle_and_kaplan_meier_are_honest():
    # A budget of ~1 mean time censors ~1/3 of the replicas; the mean of the finished ones would be
    # biased low by ~40 %; the censored-exponential MLE is not (escape here is close to exponential).
    tau = es.mean_first_passage_time(lambda x: -(x**3 - x), lambda x: T_DW + 0 * x, -1.0, 1.0,
                                     reflecting=-4.0)
    budget = int(tau / 0.01)
    et = se.escape_times(jax.random.key(2), _grad, _noise_dw, -1.0, 0.01, target=1.0, budget=budget,
                         replicas=1024)
    s = se.summarize(et)
    assert 0 < 1024 - s.escaped < 1024 and s.method.startswith("censored")
    assert abs(s.mean_time - tau) / s.mean_time_stderr < Z
    finished = np.asarray(et.steps)[np.asarray(et.escaped)].mean() * 0.01
    assert (tau - finished) / s.mean_time_stderr > Z  # the naive mean is visibly wrong
    # Kaplan-Meier restricted mean == mean of min(T, budget) (an identity)
    t, S = se.kaplan_meier(et)
    rmean = np.sum(np.diff(np.concatenate([[0], t, [budget]])) * np.concatenate([[1.0], S]))
    assert rmean == pytest.approx(np.asarray(et.steps, float).mean(), rel=1e-12)
    # KM survival at the budget vs exponential model exp(-budget/tau_hat)
    assert abs(S[-1] - math.exp(-budget / s.mean_steps)) < 0.06


def test_sde_escape_state_dependent_noise_matches_exact_mfpt():
    # Loss-proportional noise (Mori et al.): D = eps h* L, l0 = 0.25, eps = 0.125; dt = 0.005.
    l0, eps = 0.25, 0.125
    drift = lambda x: -(x**3 - x)  # noqa: E731
    diff = lambda x: eps * 2.0 * (l0 + (x**2 - 1) ** 2 / 4)  # noqa: E731
    et = se.sde_escape_times(jax.random.key(3), drift, diff, -1.0, 0.005, target=1.0, budget=400_000,
                             replicas=512)
    s = se.summarize(et)
    tau = es.mean_first_passage_time(drift, diff, -1.0, 1.0, reflecting=-4.0)
    assert abs(s.mean_time - tau) / s.mean_time_stderr < Z, (s, tau)


def test_power_law_second_moment_discrete_exact_vs_sde_formula():
    # lr*h = 0.4, B = 2: exact discrete E x^2 = 0.1667 vs SDE 0.1111 -- discrete time breaks the
    # SDE power law; the simulation resolves both (se ~ 1 %).
    l0, h, lr, b = 0.5, 1.0, 0.4, 2.0
    st = se.state_dependent_sgd(jax.random.key(4), lambda x: h * x,
                                lambda x: jnp.sqrt(2 * h * (l0 + 0.5 * h * x * x) / b),
                                lambda x: x * x, 0.0, lr, steps=6000, replicas=1024, burn_in=500)
    m, e = float(st.mean[0]), float(st.mean_stderr[0])
    exact = float(ls.power_law_second_moment(l0, h, lr, b))
    sde = float(ls.power_law_second_moment(l0, h, lr, b, discrete=False))
    assert abs(m - exact) / e < Z
    assert abs(m - sde) / e > Z


def test_stationary_histogram_matches_fp_under_state_dependent_noise():
    # Power-law SDE limit at lr*h = 0.02 (phi = 1 + B/(lr h) = 5 with B = 0.08): bin probabilities
    # from the 1-D FP stationary law; worst bin |z| with a Bonferroni threshold over 8 bins.
    l0, h, lr, b = 0.5, 1.0, 0.02, 0.08
    edges = np.array([-3.0, -1.5, -0.8, -0.3, 0.0, 0.3, 0.8, 1.5, 3.0])
    lo, hi = jnp.asarray(edges[:-1]), jnp.asarray(edges[1:])
    obs = lambda x: ((x[0] >= lo) & (x[0] < hi)).astype(x.dtype)  # noqa: E731
    st = se.state_dependent_sgd(jax.random.key(5), lambda x: h * x,
                                lambda x: jnp.sqrt(2 * h * (l0 + 0.5 * h * x * x) / b), obs, 0.0, lr,
                                steps=12000, replicas=512, burn_in=2000)
    x = np.linspace(-12, 12, 4801)
    p = fp.stationary_1d(lambda x: -h * x, lambda x: lr / b * h * (l0 + 0.5 * h * x * x), x)
    cdf = np.concatenate([[0], np.cumsum(p) * (x[1] - x[0])])
    xe = np.concatenate([x - (x[1] - x[0]) / 2, [x[-1] + (x[1] - x[0]) / 2]])
    prob = np.diff(np.interp(edges, xe, cdf))
    z = (np.asarray(st.mean) - prob) / np.asarray(st.mean_stderr)
    # t quantile (31 dof) at alpha = 1e-4 Bonferroni-corrected over 8 bins
    assert np.max(np.abs(z)) < z_threshold(st.groups, len(prob)), (z, prob, np.asarray(st.mean))


def test_errors():
    with pytest.raises(ValueError, match="target"):
        se.escape_times(jax.random.key(0), _grad, _noise_dw, 1.0, 0.01, target=1.0, budget=10, replicas=8)
    with pytest.raises(ValueError, match="lr"):
        se.escape_times(jax.random.key(0), _grad, _noise_dw, -1.0, 0.0, target=1.0, budget=10, replicas=8)
    with pytest.raises(ValueError, match="budget"):
        se.escape_times(jax.random.key(0), _grad, _noise_dw, -1.0, 0.01, target=1.0, budget=0, replicas=8)
