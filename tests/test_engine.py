"""The scan engine's statistics on synthetic i.i.d. data, where the exact answer is known."""

import jax
import jax.numpy as jnp
import numpy as np

from sgdtheory.crosscheck import Comparison
from sgdtheory.crosscheck import compare_scalar, z_threshold
from sgdtheory.simulate import run_replicas

SD = np.array([1.0, 2.0])


def _iid(offset, replicas=256, dtype=jnp.float64, dead_group=False, groups=8):
    """x_t = offset + N(0, diag(SD^2)) i.i.d. every step; optionally group 0 is NaN from the start."""
    def init(key):
        x = jnp.full((replicas, 2), offset, dtype)
        if dead_group:
            x = x.at[: replicas // groups].set(jnp.nan)
        return x

    def step(key, x):
        z = jax.random.normal(key, x.shape, dtype) * jnp.asarray(SD, dtype)[None, :]
        return jnp.where(jnp.isnan(x), x, jnp.asarray(offset, dtype) + z)

    return init, step


def test_float32_statistics_unbiased_far_from_zero():
    """Means are stored as offsets from a fixed shift, so float32 statistics at |mean| = 1e6 with
    std 1 are unbiased (absolute running means lost ~10 % of the variance here)."""
    init, step = _iid(1e6, dtype=jnp.float32)
    stats = run_replicas(jax.random.key(0), init, step, lambda x: x, steps=2000, replicas=256,
                         burn_in=10, groups=8, stats_dtype=jnp.float32)
    z = (np.diag(np.asarray(stats.cov)) - SD**2) / np.diag(np.asarray(stats.cov_stderr))
    assert np.all(np.abs(z) <= z_threshold(stats.groups, 2)), z
    assert np.all(np.abs(np.asarray(stats.mean) - 1e6) <= 1.0)


def test_empty_group_leaves_the_standard_error_honest():
    init, step = _iid(0.0, dead_group=True)
    stats = run_replicas(jax.random.key(1), init, step, lambda x: x, steps=500, replicas=256,
                         burn_in=10, groups=8, warn=False)
    assert int(stats.diverged) == 32 and stats.groups == 7
    se = float(stats.cov_stderr[0, 0])
    # i.i.d. N(0,1): Var of a group's variance estimate is 2/n; 7 groups of 224 * 490 samples
    expected = np.sqrt(2 / (224 * 490) / 7)
    assert 0.4 * expected < se < 2.5 * expected
    # ... and a comparison built from a run with diverged replicas is invalid, never a pass
    row = compare_scalar("var", "", 1.0, stats, lambda m, c: c[0, 0])
    assert not row.passed and "diverged" in row.note


def test_burn_in_discards_exactly_the_first_steps():
    def init(key):
        return jnp.zeros((16, 1))

    def step(key, x):
        return x + 1.0  # x_t = t

    stats = run_replicas(jax.random.key(2), init, step, lambda x: x, steps=11, replicas=16,
                         burn_in=3, groups=8)
    np.testing.assert_allclose(stats.mean, [np.mean(np.arange(4, 12))])
    assert float(stats.group_count.sum()) == 16 * 8


def test_invalid_comparisons_never_pass():
    assert not Comparison("v", "", 1.0, 1e6, float("inf")).passed
    assert not Comparison("v", "", 1.0, float("nan"), 0.1, expect="disagree").passed
    assert not Comparison("v", "", float("nan"), 1.0, 0.1, expect="disagree").passed
    assert not Comparison("v", "", 1.0, 1.0, 0.0).passed
