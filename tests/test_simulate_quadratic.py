"""The quadratic simulator against the exact theory (statistical tests with fixed seeds).

Tolerance: the simulator's standard errors come from G = 32 independent replica groups, so
z = (sim - theory) / se is Student-t with G - 1 dof; we accept |z| <= z_threshold(G, m), the
two-sided t quantile at false-alarm rate 1e-4 per test, Bonferroni-corrected over the m compared
entries (crosscheck._util.z_threshold).  Nothing here is tuned to pass: seeds are fixed and the
thresholds follow from the standard error alone.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgdtheory as st
from sgdtheory import quadratic as q
from sgdtheory.crosscheck._util import z_threshold
from sgdtheory.simulate import DivergenceWarning

H = np.array([[1.0, 0.3], [0.3, 0.4]])
C = np.array([[0.5, -0.2], [-0.2, 1.0]])
RUN = dict(steps=6_000, replicas=512, burn_in=1_500)


def assert_cov_agrees(stats, theory):
    iu = np.triu_indices(theory.shape[0])
    z = (np.asarray(stats.cov) - np.asarray(theory))[iu] / np.asarray(stats.cov_stderr)[iu]
    assert np.all(np.abs(z) <= z_threshold(stats.groups, z.size)), z


CASES = [
    ("sgd", {}, {}),
    ("momentum", {"momentum": 0.9}, {"momentum": 0.9}),
    ("nesterov", {"optimizer": q.nesterov(0.5)}, {"momentum": 0.5, "nesterov": True}),
    ("sam", {"optimizer": q.usam(0.5)}, {"sam_radius": 0.5}),
    ("precond", {"preconditioner": np.array([[1.5, 0.4], [0.4, 0.8]])},
     {"preconditioner": np.array([[1.5, 0.4], [0.4, 0.8]])}),
    ("weight_decay", {"weight_decay": -0.1}, {"weight_decay": -0.1}),
]


@pytest.mark.parametrize("name, theory_kw, sim_kw", CASES, ids=[c[0] for c in CASES])
def test_stationary_covariance_matches_simulation(name, theory_kw, sim_kw):
    lr = 0.8 * float(q.max_stable_lr(H, **{k: v for k, v in theory_kw.items()
                                           if k != "momentum"}, momentum=theory_kw.get("momentum", 0.0)))
    theory = st.stationary_covariance(H, C, lr, **theory_kw)
    stats = st.simulate.quadratic_sgd(jax.random.key(hash(name) % 2**31), H, C, lr, **RUN, **sim_kw)
    assert int(stats.diverged) == 0
    assert_cov_agrees(stats, theory)


def test_pnm_optax_transform_matches_theory():
    opt = q.pnm(1.0, 0.9)
    lr = 0.7 * float(q.max_stable_lr(H, optimizer=opt))
    stats = st.simulate.quadratic_sgd(jax.random.key(3), H, C, None, **RUN,
                                      optimizer=st.simulate.pnm(lr, 1.0, 0.9))
    assert_cov_agrees(stats, st.stationary_covariance(H, C, lr, optimizer=opt))


def test_mean_with_weight_decay_and_offset_minimum():
    w_star = np.array([1.0, -2.0])
    lr = 0.5
    stats = st.simulate.quadratic_sgd(jax.random.key(4), H, C, lr, **RUN, weight_decay=0.3,
                                      w_star=w_star)
    mean = np.linalg.solve(H + 0.3 * np.eye(2), H @ w_star)
    z = (np.asarray(stats.mean) - mean) / np.asarray(stats.mean_stderr)
    assert np.all(np.abs(z) <= z_threshold(stats.groups, 2))


@pytest.mark.parametrize("t", [1, 5, 40])
def test_covariance_after_matches_simulation_at_fixed_time(t):
    """Statistics of the last step only (burn_in = t - 1) give Cov(w_t) over replicas."""
    lr, init = 0.9, np.zeros(2)
    stats = st.simulate.quadratic_sgd(jax.random.key(t), H, C, lr, steps=t, burn_in=t - 1,
                                      replicas=8192, init=init, momentum=0.5)
    theory = st.covariance_after(H, C, lr, t, np.zeros((2, 2)), momentum=0.5)
    assert_cov_agrees(stats, theory)


def test_rademacher_noise_same_covariance_smaller_error():
    lr = 1.0
    theory = st.stationary_covariance(H, C, lr)
    g = st.simulate.quadratic_sgd(jax.random.key(5), H, C, lr, **RUN)
    r = st.simulate.quadratic_sgd(jax.random.key(5), H, C, lr, **RUN, noise="rademacher")
    assert_cov_agrees(r, theory)
    assert_cov_agrees(g, theory)


def test_float32_simulation_agrees():
    lr = 1.0
    stats = st.simulate.quadratic_sgd(jax.random.key(6), H, C, lr, **RUN, dtype=jnp.float32)
    assert stats.cov.dtype == jnp.float64  # statistics accumulate in float64
    assert_cov_agrees(stats, st.stationary_covariance(H, C, lr))


def test_adam_runs_without_closed_form():
    stats = st.simulate.quadratic_sgd(jax.random.key(7), H, C, None, **RUN,
                                      optimizer=optax.adam(1e-2), w_star=np.array([1.0, 1.0]))
    assert int(stats.diverged) == 0 and np.all(np.isfinite(stats.cov))
    np.testing.assert_allclose(stats.mean, [1.0, 1.0], atol=0.2)


def test_divergence_is_detected_and_warned():
    lr = 1.05 * float(q.max_stable_lr(H))
    with pytest.warns(DivergenceWarning, match="diverged"):
        stats = st.simulate.quadratic_sgd(jax.random.key(8), H, C, lr, steps=2_000, replicas=64,
                                          burn_in=10)
    assert int(stats.diverged) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = st.simulate.quadratic_sgd(jax.random.key(8), H, C, 0.5, steps=200, replicas=64, burn_in=10)
    assert int(ok.diverged) == 0


def test_trajectory_recording_and_memory_independent_of_steps():
    stats = st.simulate.quadratic_sgd(jax.random.key(9), H, C, 0.5, steps=1_000, replicas=64,
                                      burn_in=100, record_every=100, record_replicas=4)
    assert stats.trajectory.shape == (10, 4, 2)
    assert st.simulate.quadratic_sgd(jax.random.key(9), H, C, 0.5, steps=1_000, replicas=64,
                                     burn_in=100).trajectory is None
    # The compiled program's temporary memory must not grow with the number of steps.
    def temp_bytes(steps):
        from sgdtheory.simulate.quadratic import _simulate
        from sgdtheory.simulate.optimizers import build_optimizer
        lowered = _simulate.lower(
            jax.random.key(0), jnp.asarray(H), jnp.asarray(C), jnp.zeros(2), jnp.zeros(2), 0.0, None,
            opt=build_optimizer(0.5), use_sam=False, steps=steps, replicas=64, burn_in=10, groups=8,
            record_every=None, record_replicas=8, threshold=1e8, noise="gaussian",
            dtype=jnp.dtype(jnp.float64))
        analysis = lowered.compile().memory_analysis()
        return None if analysis is None else analysis.temp_size_in_bytes
    small, big = temp_bytes(100), temp_bytes(100_000)
    if small is not None:
        # keys for all steps are split up front (16 bytes/step): allow that, nothing per replica-step
        assert big - small <= 16 * 100_000 + 4096


def test_estimate_gives_loss_with_stderr():
    lr = 1.0
    stats = st.simulate.quadratic_sgd(jax.random.key(10), H, C, lr, **RUN)
    value, se = st.simulate.estimate(stats, lambda m, c: 0.5 * jnp.sum(jnp.asarray(H) * c))
    theory = float(st.stationary_loss(H, C, lr))
    assert abs(float(value) - theory) <= z_threshold(stats.groups) * float(se)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=100, replicas=100, burn_in=10), "multiple of 8"),
        (dict(steps=100, replicas=64, burn_in=100), "burn_in"),
        (dict(steps=0, replicas=64, burn_in=0), "steps"),
        (dict(steps=100.5, replicas=64, burn_in=0), "integer"),
        (dict(steps=100, replicas=64, burn_in=10, noise="uniform"), "noise"),
        (dict(steps=100, replicas=64, burn_in=10, momentum=1.2), r"\[0, 1\)"),
        (dict(steps=100, replicas=64, burn_in=10, w_star=np.zeros(3)), "w_star"),
        (dict(steps=100, replicas=64, burn_in=10, preconditioner=np.eye(3)), "preconditioner"),
        (dict(steps=100, replicas=64, burn_in=10, groups=7), "divisible"),
    ],
)
def test_simulator_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, 0.1, **kwargs)


def test_simulator_bad_matrices():
    with pytest.raises(ValueError, match="positive semidefinite"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, -np.eye(2), 0.1, steps=10, replicas=8, burn_in=1)
    with pytest.raises(ValueError, match="shape"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, np.eye(3), 0.1, steps=10, replicas=8, burn_in=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, 0.0, steps=10, replicas=8, burn_in=1)


@pytest.mark.slow
@pytest.mark.parametrize("name, theory_kw, sim_kw", CASES, ids=[c[0] for c in CASES])
def test_stationary_covariance_long_runs(name, theory_kw, sim_kw):
    lr = 0.95 * float(q.max_stable_lr(H, **{k: v for k, v in theory_kw.items()
                                            if k != "momentum"}, momentum=theory_kw.get("momentum", 0.0)))
    theory = st.stationary_covariance(H, C, lr, **theory_kw)
    stats = st.simulate.quadratic_sgd(jax.random.key(100), H, C, lr, steps=100_000, replicas=4096,
                                      burn_in=10_000, **sim_kw)
    assert_cov_agrees(stats, theory)
