"""Timing helpers: every workload and its baseline are timed in the same run, interleaved, best-of-N
(the machine is shared, so the minimum is the least noisy estimate of the cost)."""

from __future__ import annotations

import time

import jax
import numpy as np


def block(x):
    return jax.tree_util.tree_map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def interleaved(fns: dict, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of each zero-argument callable, calls interleaved round-robin.

    Each callable is called once first (compilation / warm-up, not timed).
    """
    for f in fns.values():
        block(f())
    best = {k: np.inf for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            block(f())
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def problem(d: int, seed: int = 0):
    """A fixed D-dim quadratic: H with eigenvalues linspace(0.1, 1) in a random basis, C = I + uu^T/D."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    h = (q * np.linspace(0.1, 1.0, d)) @ q.T
    h = 0.5 * (h + h.T)
    u = rng.standard_normal((d, 1))
    c = np.eye(d) + u @ u.T / d
    return h, c


def sym_sqrt(c):
    """The symmetric square root C^{1/2} (the simulator's noise factor), by NumPy's eigh."""
    e, u = np.linalg.eigh(0.5 * (c + c.T))
    return (u * np.sqrt(np.clip(e, 0.0, None))) @ u.T
