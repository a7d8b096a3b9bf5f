"""Workload (c): exact stationary covariances vs scipy.linalg.solve_discrete_lyapunov."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import sgdtheory as st
from benchmarks._common import interleaved, problem


def _scipy_heavy_ball(h, c, lr, mu):
    """Dense 2D x 2D Stein solve of heavy ball: z=(w, m), m' = mu m + g, w' = w - lr m'."""
    d = h.shape[0]
    eye = np.eye(d)
    m = np.block([[eye - lr * h, -lr * mu * eye], [h, mu * eye]])
    b = np.vstack([-lr * eye, eye])
    return scipy.linalg.solve_discrete_lyapunov(m, b @ c @ b.T)[:d, :d]


def solvers(quick: bool):
    rows = []
    lr, mu = 0.5, 0.9
    dims = (100,) if quick else (100, 300, 1000)
    repeats = 2 if quick else 3
    for d in dims:
        h, c = problem(d)
        hj, cj = jnp.asarray(h), jnp.asarray(c)
        a = np.eye(d) - lr * h
        sgd_jit = jax.jit(lambda h_, c_: st.stationary_covariance(h_, c_, lr))
        hb_jit = jax.jit(lambda h_, c_: st.stationary_covariance(h_, c_, lr, momentum=mu))
        fns = {
            "scipy sgd": lambda: scipy.linalg.solve_discrete_lyapunov(a, lr**2 * c),
            "ours sgd (eager, checked)": lambda: st.stationary_covariance(hj, cj, lr),
            "ours sgd (jit)": lambda: sgd_jit(hj, cj),
            "ours heavy-ball (eager, checked)": lambda: st.stationary_covariance(hj, cj, lr, momentum=mu),
            "ours heavy-ball (jit)": lambda: hb_jit(hj, cj),
            "floor: one numpy eigh": lambda: np.linalg.eigh(h),
        }
        if d <= 300:  # the 2D x 2D dense Schur solve takes minutes at D = 1000 on 2 cores
            fns["scipy heavy-ball (2D dense)"] = lambda: _scipy_heavy_ball(h, c, lr, mu)
        times = interleaved(fns, repeats if d <= 300 else 1)
        err_sgd = float(np.max(np.abs(np.asarray(sgd_jit(hj, cj)) - fns["scipy sgd"]())))
        err_hb = None
        if "scipy heavy-ball (2D dense)" in fns:
            ref = fns["scipy heavy-ball (2D dense)"]()
            err_hb = float(np.max(np.abs(np.asarray(hb_jit(hj, cj)) - ref)) / np.max(np.abs(ref)))
        for name, t in times.items():
            base_name = "scipy heavy-ball (2D dense)" if "heavy" in name else "scipy sgd"
            base = times.get(base_name)
            rows.append(dict(workload=f"(c) exact solver D={d}", variant=name, seconds=t,
                             ratio_vs_baseline=None if base is None else base / t,
                             ratio_vs_floor=times["floor: one numpy eigh"] / t,
                             max_abs_err_sgd=err_sgd, max_rel_err_heavy_ball=err_hb))
    # vmap over 100 learning rates at D = 100.
    d = 100
    h, c = problem(d)
    hj, cj = jnp.asarray(h), jnp.asarray(c)
    lrs = jnp.linspace(0.05, 1.5, 100)
    # H and C are arguments (not closed-over constants XLA could fold at compile time).
    sweep = jax.jit(jax.vmap(lambda h_, c_, l: st.stationary_covariance(h_, c_, l),
                             in_axes=(None, None, 0)))
    fns = {
        "ours vmap 100 lr (jit)": lambda: sweep(hj, cj, lrs),
        "scipy loop 100 lr": lambda: [scipy.linalg.solve_discrete_lyapunov(
            np.eye(d) - float(l) * h, float(l) ** 2 * c) for l in lrs],
    }
    times = interleaved(fns, repeats)
    for name, t in times.items():
        rows.append(dict(workload="(c) vmap 100 lr D=100", variant=name, seconds=t,
                         ratio_vs_baseline=times["scipy loop 100 lr"] / t))
    return rows
