"""Workload (d): the simulator's compiled memory is O(R D + D^2), independent of the steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks._common import problem


def memory(quick: bool):
    from sgdtheory.simulate.optimizers import build_optimizer
    from sgdtheory.simulate.quadratic import _simulate

    d, replicas = 10, 4096
    h, c = problem(d)
    rows = []
    for steps in ((10**3, 10**5) if quick else (10**3, 10**4, 10**5, 10**6)):
        lowered = _simulate.lower(
            jax.random.key(0), jnp.asarray(h), jnp.asarray(c), jnp.zeros(d), jnp.zeros(d), 0.0,
            None, opt=build_optimizer(0.5), use_sam=False, steps=steps, replicas=replicas,
            burn_in=10, groups=32, record_every=None, record_replicas=8, threshold=1e8,
            noise="gaussian", dtype=jnp.dtype(jnp.float64))
        m = lowered.compile().memory_analysis()
        temp = None if m is None else int(m.temp_size_in_bytes)
        rows.append(dict(workload="(d) compiled temp memory D=10 R=4096 f64", variant=f"steps={steps}",
                         temp_bytes=temp, state_bytes=replicas * d * 8,
                         temp_over_state=None if temp is None else temp / (replicas * d * 8)))
    return rows
