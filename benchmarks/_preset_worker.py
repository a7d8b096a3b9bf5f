"""Worker for workload (f): times the simulator presets of whichever sgdtheory is on sys.path.

Run as ``python -m benchmarks._preset_worker REPEATS [--generic]``; prints one JSON object
``{workload: best seconds}``.  Only public names that exist in both the baseline revision and the
current tree are used, so the same file times both.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import sgdtheory as st
from benchmarks._common import interleaved, problem

D, R = 10, 4096


def workloads(quick: bool, generic: bool):
    steps = 300 if quick else 1000
    kw = dict(steps=steps, burn_in=steps // 10)
    h, c = problem(D)
    hj, cj = jnp.asarray(h), jnp.asarray(c)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(256, D)))
    y = x @ jnp.ones(D) + 0.5 * jnp.asarray(rng.normal(size=256))
    key = jax.random.key(0)
    sim = st.simulate
    w = {
        "quadratic_sgd gaussian": lambda: sim.quadratic_sgd(key, hj, cj, 0.5, replicas=R, **kw).cov,
        "quadratic_sgd rademacher": lambda: sim.quadratic_sgd(key, hj, cj, 0.5, replicas=R,
                                                              noise="rademacher", **kw).cov,
        "quadratic_sgd momentum 0.9": lambda: sim.quadratic_sgd(key, hj, cj, 0.1, momentum=0.9,
                                                                replicas=R, **kw).cov,
        "linreg_sgd N=256 S=8 iid": lambda: sim.linreg_sgd(key, x, y, 0.05, 8, replicas=1024,
                                                           **kw).cov,
        "linreg_sgd N=32 S=8 subsets": lambda: sim.linreg_sgd(
            key, x[:32], y[:32], 0.05, 8, sampling="without_replacement", replicas=1024, **kw).cov,
        "online_linreg_sgd S=8": lambda: sim.online_linreg_sgd(
            key, jnp.eye(D), jnp.ones(D), 0.05, 8, label_noise_var=1.0, replicas=1024, **kw).cov,
        "state_dependent_sgd d=1": lambda: sim.state_dependent_sgd(
            key, _grad, _scale, _obs, 0.0, 0.01, replicas=R, **kw).cov,
        "escape_times d=1 (no escape)": lambda: sim.escape_times(
            key, _grad, _scale, 0.0, 0.01, target=50.0, budget=steps, replicas=R).steps,
    }
    if generic:
        import optax

        def loss(wv, ex):
            return 0.5 * (ex[0] @ wv - ex[1]) ** 2

        data = sim.Dataset((x, y), 8)
        w["minibatch_sgd (user loss) N=256 S=8 iid"] = lambda: sim.minibatch_sgd(
            key, loss, jnp.zeros(D), data, optax.sgd(0.05), replicas=1024, **kw).cov
    return w, steps


def _grad(v):
    return v


def _scale(v):
    return 1.0 + 0.0 * v


def _obs(v):
    return v


if __name__ == "__main__":
    repeats, quick, generic = int(sys.argv[1]), "--quick" in sys.argv, "--generic" in sys.argv
    fns, steps = workloads(quick, generic)
    print(json.dumps({"steps": steps, "times": interleaved(fns, repeats)}))
