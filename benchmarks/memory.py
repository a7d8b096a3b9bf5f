"""Workload (d): the simulator's compiled memory is O(R D + D^2), independent of the steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import sgdtheory as st
from benchmarks._common import problem


def memory(quick: bool):
    d, replicas = 10, 4096
    h, c = problem(d)
    hj, cj = jnp.asarray(h), jnp.asarray(c)
    rows = []
    for steps in ((10**3, 10**5) if quick else (10**3, 10**4, 10**5, 10**6)):
        # The public simulator under the user's own jit: compile it and ask XLA for its memory.
        run = jax.jit(lambda k, steps=steps: st.simulate.quadratic_sgd(
            k, hj, cj, 0.5, steps=steps, replicas=replicas, burn_in=10).cov)
        m = run.lower(jax.random.key(0)).compile().memory_analysis()
        temp = None if m is None else int(m.temp_size_in_bytes)
        rows.append(dict(workload="(d) compiled temp memory D=10 R=4096 f64", variant=f"steps={steps}",
                         temp_bytes=temp, state_bytes=replicas * d * 8,
                         temp_over_state=None if temp is None else temp / (replicas * d * 8)))
    return rows
