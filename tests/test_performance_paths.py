"""Correctness of every fast path of the simulators against the exact theory (issue 7).

Statistical tolerances: ``|z| <= z_threshold(G, m)``, the two-sided Student-t quantile at a
false-alarm rate of 1e-4 per check with ``G - 1`` degrees of freedom (standard errors come from
``G`` independent replica groups), Bonferroni-corrected over the ``m = D(D+1)/2`` covariance
entries.  Exactness checks (chunking, sharding) compare two runs of the same random numbers.
No timing assertions here: speed is measured by ``python -m benchmarks``.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgdtheory as st
from sgdtheory.simulate import z_threshold
from sgdtheory.simulate import NoiseLawWarning

H = np.array([[1.0, 0.3, 0.0], [0.3, 0.6, 0.1], [0.0, 0.1, 0.25]])
C = np.array([[1.0, 0.2, 0.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.8]])
LR = 0.5
RUN = dict(steps=2_000, replicas=512, burn_in=300)


def assert_cov_matches(stats, theory):
    """Worst entry of the covariance within the Bonferroni-corrected t threshold."""
    theory = np.asarray(theory)
    iu = np.triu_indices(theory.shape[0])
    z = (np.asarray(stats.cov)[iu] - theory[iu]) / np.asarray(stats.cov_stderr)[iu]
    zmax = z_threshold(stats.groups, iu[0].size)
    assert np.all(np.abs(z) <= zmax), (z, zmax)
    assert int(stats.diverged) == 0


@pytest.mark.parametrize("opts", [
    dict(noise="rademacher"),
    pytest.param(dict(noise="rademacher", momentum=0.5), marks=pytest.mark.slow),
    dict(noise_dtype=jnp.float32),
    dict(noise="rademacher", dtype=jnp.float32),
    pytest.param(dict(prng_impl="rbg", noise_dtype=jnp.float32), marks=pytest.mark.slow),
    pytest.param(dict(block=1), marks=pytest.mark.slow),
    dict(block=7, unroll=2),
], ids=lambda o: ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in o.items()))
def test_fast_paths_match_stationary_covariance(opts):
    momentum = opts.pop("momentum", 0.0)
    stats = st.simulate.quadratic_sgd(jax.random.key(11), H, C, LR, **RUN, momentum=momentum,
                                      **opts)
    assert_cov_matches(stats, st.stationary_covariance(H, C, LR, momentum=momentum))


def test_rademacher_has_a_smaller_standard_error_at_large_lr():
    # One eigen-direction at lr*h = 1: w_{t+1} = -lr xi_t is the noise itself, so with signs
    # Var(w^2) = 0 while Gaussian noise gives 2 sigma^4 -- the per-sample gain is extreme there.
    h, c = np.eye(2), np.eye(2)
    g = st.simulate.quadratic_sgd(jax.random.key(5), h, c, 1.0, steps=200, replicas=256, burn_in=10)
    r = st.simulate.quadratic_sgd(jax.random.key(5), h, c, 1.0, steps=200, replicas=256, burn_in=10,
                                  noise="rademacher")
    assert np.all(np.diag(np.asarray(r.cov_stderr)) < 0.1 * np.diag(np.asarray(g.cov_stderr)))
    # Every sample has w_i^2 = 1 exactly: the second moment cov + mean^2 is 1 to rounding.
    np.testing.assert_allclose(np.diag(np.asarray(r.cov)) + np.asarray(r.mean) ** 2, 1.0, rtol=1e-12)


def test_rademacher_warns_where_its_noise_law_matters():
    with pytest.warns(NoiseLawWarning, match="optimizer"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, None, steps=20, replicas=16, burn_in=1,
                                  optimizer=optax.adam(1e-2), noise="rademacher")
    with pytest.warns(NoiseLawWarning, match="trajectory"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, LR, steps=20, replicas=16, burn_in=1,
                                  record_every=5, noise="rademacher")


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_chunked_run_equals_one_long_scan(noise):
    # 964 = 10 chunks of 96 + a last chunk of 4 steps, shorter than a block.
    kw = dict(steps=964, replicas=64, burn_in=100, block=8, noise=noise)
    whole = st.simulate.quadratic_sgd(jax.random.key(3), H, C, LR, **kw)
    seen = []
    chunked = st.simulate.quadratic_sgd(jax.random.key(3), H, C, LR, **kw, chunk_steps=96,
                                        progress=lambda done, total, s: seen.append((done, total)))
    assert seen[-1] == (964, 964) and [d for d, _ in seen[:3]] == [96, 192, 288]
    assert chunked.steps == whole.steps
    for a, b in [(chunked.cov, whole.cov), (chunked.mean, whole.mean),
                 (chunked.group_cov, whole.group_cov), (chunked.group_count, whole.group_count)]:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_chunk_must_align_with_blocks_and_progress_needs_chunks():
    with pytest.raises(ValueError, match="multiple of block"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, LR, steps=100, replicas=16, burn_in=1,
                                  block=8, chunk_steps=10)
    with pytest.raises(ValueError, match="chunk_steps"):
        st.simulate.quadratic_sgd(jax.random.key(0), H, C, LR, steps=100, replicas=16, burn_in=1,
                                  progress=print)


def test_early_stop_on_divergence():
    lr = 1.2 * st.max_stable_lr(H)
    with pytest.warns(st.simulate.DivergenceWarning):
        stats = st.simulate.quadratic_sgd(jax.random.key(0), H, C, lr, steps=100_000, replicas=16,
                                          burn_in=1, block=8, chunk_steps=800,
                                          stop_on_divergence=True, divergence_threshold=1e6)
    assert stats.steps < 100_000 and stats.steps % 800 == 0
    assert int(stats.diverged) > 0


def test_generic_engine_block_noise_and_chunks():
    """run_replicas with noise_fn/block/chunk_steps: same statistics as one scan, and theory."""
    d, lr, replicas = 2, 0.4, 512
    h = jnp.diag(jnp.array([1.0, 0.3]))

    def noise_fn(k, n):
        return jax.random.normal(k, (n, replicas, d))

    def step_fn(xi, w):
        return w - lr * (w @ h + xi)

    kw = dict(steps=2_000, replicas=replicas, burn_in=300, noise_fn=noise_fn, block=16)
    init = lambda k: jnp.zeros((replicas, d))  # noqa: E731
    one = st.simulate.run_replicas(jax.random.key(2), init, step_fn, lambda w: w, **kw)
    chunked = st.simulate.run_replicas(jax.random.key(2), init, step_fn, lambda w: w, **kw,
                                       chunk_steps=160)
    np.testing.assert_allclose(np.asarray(chunked.cov), np.asarray(one.cov), rtol=1e-12)
    assert_cov_matches(one, st.stationary_covariance(h, jnp.eye(d), lr))


SHARD_SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    import sgdtheory as st
    assert jax.device_count() == 2, jax.devices()
    H = np.array({H}); C = np.array({C})
    out = {{}}
    for noise in ("gaussian", "rademacher"):
        for devices in (None, 1, 2):
            s = st.simulate.quadratic_sgd(jax.random.key(7), H, C, 0.5, steps=400, replicas=256,
                                          burn_in=50, noise=noise, devices=devices)
            out[f"{{noise}}-{{devices}}"] = np.asarray(s.group_cov).tolist()
    c = st.simulate.quadratic_sgd(jax.random.key(7), H, C, 0.5, steps=400, replicas=256,
                                  burn_in=50, devices=2, chunk_steps=80)
    out["chunked-2"] = np.asarray(c.group_cov).tolist()
    print("JSON" + json.dumps(out))
""")


def test_sharded_replicas_give_the_same_results_on_two_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    script = SHARD_SCRIPT.format(H=H.tolist(), C=C.tolist())
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("JSON", 1)[1])
    for noise in ("gaussian", "rademacher"):
        ref = np.array(out[f"{noise}-None"])
        for devices in (1, 2):
            np.testing.assert_allclose(np.array(out[f"{noise}-{devices}"]), ref, rtol=1e-10,
                                       atol=1e-13)
    np.testing.assert_allclose(np.array(out["chunked-2"]), np.array(out["gaussian-None"]),
                               rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_rademacher_large_run_matches_theory_tightly():
    stats = st.simulate.quadratic_sgd(jax.random.key(99), H, C, LR, steps=20_000, replicas=4_096,
                                      burn_in=500, noise="rademacher", noise_dtype=jnp.float32)
    assert_cov_matches(stats, st.stationary_covariance(H, C, LR))
