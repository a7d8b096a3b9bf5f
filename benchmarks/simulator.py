"""Workloads (a) throughput and (b) time to precision of the quadratic SGD simulator vs NumPy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import sgdtheory as st
from benchmarks._common import interleaved, problem, sym_sqrt
from sgdtheory.simulate import default_groups, draw_noise, quadratic_sgd, scan_replicas


def numpy_sgd(seed, h, chol, lr, steps, replicas, burn_in, groups, dtype=np.float64):
    """The baseline: a vectorised NumPy loop of the same update, noise law and statistics
    (w <- w - lr (H w + L z), z ~ N(0, I); per-group sums of w and w w^T after burn-in)."""
    rng = np.random.default_rng(seed)
    d = h.shape[0]
    q = replicas // groups
    w = np.zeros((replicas, d), dtype)
    s1 = np.zeros((groups, d))
    s2 = np.zeros((groups, d, d))
    for t in range(1, steps + 1):
        z = rng.standard_normal((replicas, d), dtype=dtype)
        g = w @ h
        g += z @ chol
        w -= lr * g
        if t >= burn_in:
            xg = w.reshape(groups, q, d)
            s1 += xg.sum(axis=1)
            s2 += np.matmul(xg.transpose(0, 2, 1), xg)
    n = (steps - burn_in + 1) * q
    mu = s1 / n
    cov = s2 / n - np.einsum("gd,ge->gde", mu, mu)
    return mu, cov


def generic_engine(key, h, chol, lr, steps, replicas, burn_in):
    """The pre-optimisation structure: per-step key, per-step draw and per-step statistics merge."""
    d = h.shape[0]
    h = jnp.asarray(h)
    chol = jnp.asarray(chol)

    def step(k, w):
        return w - lr * (w @ h + jax.random.normal(k, w.shape, w.dtype) @ chol)

    return scan_replicas(key, lambda k: jnp.zeros((replicas, d)), step, lambda w: w,
                         steps=steps, replicas=replicas, burn_in=burn_in,
                         groups=default_groups(replicas))


def noise_floor(key, steps, replicas, d, blk, dtype, kind="gaussian"):
    """Cost of the noise draws alone (same blocks as the simulator), summed so nothing is elided."""
    def body(acc, b):
        k = jax.random.fold_in(key, b)
        z = draw_noise(k, (blk, replicas, d), kind, dtype)
        return acc + jnp.sum(z), None  # the whole draw, so none of it is elided

    acc, _ = jax.lax.scan(body, jnp.zeros((), dtype), jnp.arange(steps // blk))
    return acc


def throughput(quick: bool):
    d, replicas = 10, 4096
    steps = 300 if quick else 1000
    burn_in = steps // 10
    repeats = 3 if quick else 5
    h, c = problem(d)
    lr = 0.5
    chol = sym_sqrt(c)
    key = jax.random.key(0)
    hj, cj = jnp.asarray(h), jnp.asarray(c)
    kw = dict(steps=steps, replicas=replicas, burn_in=burn_in)

    def ours(**opts):
        return lambda: quadratic_sgd(key, hj, cj, lr, **kw, **opts).cov

    gen = jax.jit(lambda k: generic_engine(k, h, chol, lr, steps, replicas, burn_in).cov)
    floor64 = jax.jit(lambda k: noise_floor(k, steps, replicas, d, 8, jnp.float64))
    floor32 = jax.jit(lambda k: noise_floor(k, steps, replicas, d, 8, jnp.float32))
    floor_erf = jax.jit(lambda k: noise_floor(k, steps, replicas, d, 1, jnp.float64, "gaussian_erfinv"))
    floor_rad = jax.jit(lambda k: noise_floor(k, steps, replicas, d, 8, jnp.float32, "rademacher"))
    variants = {
        "numpy f64 (baseline)": lambda: numpy_sgd(0, h, chol, lr, steps, replicas, burn_in, 32),
        "numpy f32 state+noise": lambda: numpy_sgd(0, h.astype(np.float32), chol.astype(np.float32),
                                                   lr, steps, replicas, burn_in, 32, np.float32),
        "jax naive (per-step key+merge)": lambda: gen(key),
        "gaussian (ziggurat) block=8 (default)": ours(),
        "gaussian (ziggurat) f32 state": ours(dtype=jnp.float32),
        "gaussian (ziggurat) block=1": ours(block=1),
        "gaussian (ziggurat) block=8 f32 noise": ours(noise_dtype=jnp.float32),
        "gaussian_erfinv block=1 (old default)": ours(noise="gaussian_erfinv", block=1),
        "gaussian_erfinv block=8 f32 noise": ours(noise="gaussian_erfinv", block=8,
                                                  noise_dtype=jnp.float32),
        "rademacher block=8": ours(noise="rademacher"),
        "floor: ziggurat f64 draws": lambda: floor64(key),
        "floor: ziggurat f32 draws": lambda: floor32(key),
        "floor: jax.random.normal f64 draws": lambda: floor_erf(key),
        "floor: rademacher bits": lambda: floor_rad(key),
    }
    if not quick:
        variants.update({
            "gaussian (ziggurat) block=8 unroll=2": ours(unroll=2),
            "gaussian (ziggurat) block=32": ours(block=32),
            "gaussian_erfinv block=8": ours(noise="gaussian_erfinv", block=8),
            "rademacher block=32": ours(block=32, noise="rademacher"),
        })
    times = interleaved(variants, repeats)
    base = times["numpy f64 (baseline)"]
    rows = []
    for name, t in times.items():
        rows.append(dict(workload=f"(a) sim D=10 R=4096 f64, {steps} steps", variant=name,
                         seconds=t,
                         rate=replicas * steps / t, ratio_vs_baseline=base / t,
                         ratio_vs_floor=times["floor: ziggurat f64 draws"] / t))
    return rows


def _rel_se_of_variance(group_cov):
    """Relative standard error of v = tr(Sigma)/D from independent group covariances ((G, D, D),
    or (G, D) variances with ``statistics="diagonal"``)."""
    g = np.asarray(group_cov)
    v = (np.trace(g, axis1=1, axis2=2) if g.ndim == 3 else np.sum(g, axis=1)) / g.shape[-1]
    return float(np.std(v, ddof=1) / math.sqrt(v.size) / np.mean(v))


def time_to_precision(quick: bool, target: float = 0.01):
    """Wall time to a ``target`` relative standard error on the stationary variance tr(Sigma)/D.

    Each method runs once for ``steps`` steps (timed, best of a few, after a warm-up) and its
    relative standard error ``r`` is measured from 32 independent replica groups; the time to the
    target is ``t_burn + t_sample (r / target)^2`` (the standard error falls as one over the square
    root of the post-burn-in samples).  ``r`` is itself estimated (32 groups: ~ +-12 %).
    """
    d, replicas, lr = 10, 4096, 0.5
    steps, burn_in = 1000, 300
    repeats = 2 if quick else 4
    h, c = problem(d)
    chol = sym_sqrt(c)
    hj, cj = jnp.asarray(h), jnp.asarray(c)
    key = jax.random.key(1)
    kw = dict(steps=steps, replicas=replicas, burn_in=burn_in)

    def ours(**opts):
        return lambda: quadratic_sgd(key, hj, cj, lr, **kw, **opts)

    methods = {
        "numpy gaussian f64 (baseline)": lambda: numpy_sgd(1, h, chol, lr, steps, replicas, burn_in, 32),
        "ours gaussian (ziggurat) f64": ours(),
        "ours gaussian (ziggurat) f32-noise": ours(noise_dtype=jnp.float32),
        "ours gaussian_erfinv f64 block=1 (old default)": ours(noise="gaussian_erfinv", block=1),
        "ours gaussian (ziggurat) f64, diagonal statistics": ours(statistics="diagonal"),
        "ours gaussian (ziggurat) f32-noise, diagonal": ours(statistics="diagonal",
                                                             noise_dtype=jnp.float32),
        "ours rademacher f64": ours(block=8, noise="rademacher"),
        "ours rademacher f64, diagonal statistics": ours(noise="rademacher", statistics="diagonal"),
        "ours rademacher f32 state": ours(block=8, noise="rademacher", dtype=jnp.float32),
    }
    times = interleaved(methods, repeats)
    rows = []
    base = None
    for name, f in methods.items():
        res = f()
        gcov = res.group_cov if isinstance(res, st.simulate.Stats) else res[1]
        r = _rel_se_of_variance(gcov)
        t = times[name]
        t_burn = t * burn_in / steps
        ttp = t_burn + (t - t_burn) * (r / target) ** 2
        base = ttp if base is None else base
        rows.append(dict(workload="(b) time to 1% rel. s.e. of tr(Sigma)/D, D=10 R=4096",
                         variant=name, seconds=ttp, run_seconds=t, rel_se_per_run=r,
                         ratio_vs_baseline=base / ttp))
    return rows
