"""Workload: sgdtheory.local.stationary (matrix-free GMRES in the eigenbasis of the mean Hessian)
vs the dense P^2 x P^2 Kronecker solve of the same equation, on a tanh network with P parameters
and N examples. The dense solve is O(P^6) time and O(P^4) memory: timed where it fits, else
extrapolated from the largest timed size by P^6 and declared infeasible."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import block
from sgdtheory import local

DENSE_MAX_P = 40


def _problem(p_target: int, n: int, seed: int = 0):
    """A 1-hidden-layer tanh net with d_in inputs and h hidden units, no output bias: P = h (d_in+1)."""
    d_in = 8 if p_target >= 100 else 3
    h = max(1, p_target // (d_in + 1))
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d_in)))
    y = jnp.sin(x[:, 0]) + 0.1 * jnp.asarray(rng.normal(size=n))
    params = {"W": jnp.asarray(rng.normal(size=(d_in, h)) / np.sqrt(d_in)),
              "v": jnp.asarray(rng.normal(size=h) / np.sqrt(h))}

    def loss(p, e):
        return 0.5 * (jnp.tanh(e[0] @ p["W"]) @ p["v"] - e[1]) ** 2

    return loss, params, (x, y)


def _train(loss, params, ex, wd, steps=3000):
    """Full-batch Adam on the regularised objective, so that Newton's polish starts in the basin."""
    import optax

    def objective(p):
        data = jnp.mean(jax.vmap(loss, (None, 0))(p, ex))
        return data + 0.5 * wd * sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(p))

    opt = optax.adam(1e-2)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, st = carry
            u, st = opt.update(jax.grad(objective)(p), st, p)
            return (optax.apply_updates(p, u), st), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

    return run(params)


def _dense(ex: local.Expansion, lr, f, wd):
    """The dense Kronecker solve of Sigma = E[M Sigma M] + lr^2 f Cov(g_i + H_i m) (SGD)."""
    h = np.asarray(ex.hessians)
    g = np.asarray(ex.grads)
    n, p, _ = h.shape
    hbar = h.mean(0)
    k = hbar + wd * np.eye(p)
    m = -np.linalg.solve(k, g.mean(0) + wd * np.asarray(ex.params))
    q = g + h @ m
    q = q - q.mean(0)
    c1 = q.T @ q / n
    d = h - hbar
    mbar = np.eye(p) - lr * k
    t = np.kron(mbar, mbar) + lr**2 * f * np.einsum("nij,nkl->ikjl", d, d).reshape(p * p, p * p) / n
    s = np.linalg.solve(np.eye(p * p) - t, (lr**2 * f * c1).reshape(-1))
    return s.reshape(p, p)


def local_bench(quick: bool):
    rows = []
    sizes = ((20, 200), (40, 400), (100, 500)) if quick else ((20, 200), (40, 400), (200, 1000))
    wd, s = 0.5, 8
    dense_ref = None
    for p_target, n in sizes:
        loss, params, ex = _problem(p_target, n)
        params = local.polish(loss, _train(loss, params, ex, wd), ex, weight_decay=wd)
        t0 = time.perf_counter()
        e = block(local.expand(loss, params, ex))
        t_expand = time.perf_counter() - t0
        p = e.params.shape[0]
        kmax = float(np.linalg.eigvalsh(np.asarray(e.hessians.mean(0)))[-1]) + wd
        lr = 0.2 / kmax  # well inside the gradient-descent edge; the solve does not need the bound
        f = 1.0 / s
        solve = lambda: local.stationary(loss, params, ex, lr, s, weight_decay=wd,  # noqa: E731
                                         expansion=e, check_stable=False).param_cov
        with _quiet():
            block(solve())  # compile
            t0 = time.perf_counter()
            cov = block(solve())
        t_solve = time.perf_counter() - t0
        row = dict(workload=f"(local) P={p} N={n}", variant="local.stationary (matrix-free)",
                   seconds=t_expand + t_solve, expand_seconds=t_expand, solve_seconds=t_solve)
        if p <= DENSE_MAX_P:
            t0 = time.perf_counter()
            ref = _dense(e, lr, f, wd)
            t_dense = time.perf_counter() - t0
            dense_ref = (p, t_dense)
            err = float(np.max(np.abs(np.asarray(cov) - ref)) / np.max(np.abs(ref)))
            row.update(max_rel_err_vs_dense=err)
            rows.append(row)
            rows.append(dict(workload=f"(local) P={p} N={n}", variant="dense Kronecker solve",
                             seconds=t_dense + t_expand, ratio_vs_matrix_free=(t_dense + t_expand)
                             / (t_expand + t_solve)))
        else:
            rows.append(row)
            p0, t0d = dense_ref
            rows.append(dict(workload=f"(local) P={p} N={n}",
                             variant="dense Kronecker solve (infeasible: extrapolated P^6)",
                             seconds=t0d * (p / p0) ** 6, memory_GB=8 * p**4 / 1e9))
    return rows


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", local.NotNearMinimumWarning)

    def __exit__(self, *a):
        return self._w.__exit__(*a)


if __name__ == "__main__":  # pragma: no cover
    import sys

    for r in local_bench("--full" not in sys.argv):
        print(r)
    del jax
