"""Lyapunov/Stein solvers in JAX: jit-, vmap- and grad-safe.  Imports nothing of ours.

Two routes:

* :func:`solve_discrete_lyapunov` -- ``X = A X A^T + Q`` for any (non-symmetric) ``A`` with
  spectral radius < 1, by the doubling (Smith) iteration ``X <- X + A_k X A_k^T, A_k <- A_k^2``,
  wrapped in :func:`jax.lax.custom_linear_solve` so that derivatives come from implicit
  differentiation (the tangent solves the same Lyapunov equation) instead of unrolling the loop.
* :func:`pairwise_stein` -- the eigenbasis route for linear systems that decouple into small
  ``k x k`` blocks, one per eigenvalue of a symmetric matrix: block pair ``(i, j)`` solves
  ``X_ij = M_i X_ij M_j^T + c_ij b_i b_j^T``, a ``k^2 x k^2`` linear system.  With ``k = 1`` this is
  the closed form ``X_ij = c_ij b_i b_j / (1 - m_i m_j)``.  Cost O(D^2 k^6 + D^3) instead of the
  O(D^6) dense Kronecker solve.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "solve_discrete_lyapunov",
    "doubling_iterations",
    "pairwise_stein",
    "pair_blocks",
    "solve_elementwise",
    "psd_sqrt",
    "spectral_radius",
]

_MAX_DOUBLING = 64


def spectral_radius(a) -> float:
    """Spectral radius of a concrete square matrix (NumPy, eager)."""
    a = np.asarray(a)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(a))))


def doubling_iterations(a, tol: float = 1e-17) -> int:
    """Number of doubling steps so that ``rho(A)^(2^n) < tol`` (static; from a concrete ``A``).

    For a traced ``A`` (inside jit) the spectral radius is unknown and 48 steps are used, enough
    for ``rho <= 1 - 1e-12``.
    """
    if isinstance(a, jax.core.Tracer):
        return 48
    rho = spectral_radius(a)
    if rho == 0.0:
        return 1
    if rho >= 1.0:
        return _MAX_DOUBLING  # caller is expected to have rejected this already
    # rho^(2^n) < tol  <=>  2^n > log(tol)/log(rho); +3 for non-normal transients.
    n = math.ceil(math.log2(math.log(tol) / math.log(rho))) + 3
    return int(min(max(n, 1), _MAX_DOUBLING))


def _doubling(a: jax.Array, q: jax.Array, n: int) -> jax.Array:
    def body(_, carry):
        x, ak = carry
        return x + ak @ x @ ak.T, ak @ ak

    x, _ = lax.fori_loop(0, n, body, (q, a))
    return x


def solve_discrete_lyapunov(a: jax.Array, q: jax.Array, *, iterations: int | None = None):
    r"""Solve :math:`X = A X A^\top + Q` (discrete Lyapunov / Stein equation).

    Requires :math:`\rho(A) < 1` (not checked here; see :func:`spectral_radius`).  Differentiable
    in ``A`` and ``Q`` by implicit differentiation; vmap-able; the number of doubling steps is
    static (``iterations``, or chosen from the concrete spectral radius).
    """
    a = jnp.asarray(a)
    q = jnp.asarray(q)
    n = iterations if iterations is not None else doubling_iterations(a)

    def matvec(x):
        return x - a @ x @ a.T

    def solve(_matvec, b):
        return _doubling(a, b, n)

    def transpose_solve(_matvec, b):
        return _doubling(a.T, b, n)

    return lax.custom_linear_solve(matvec, q, solve, transpose_solve)


def pairwise_stein(m: jax.Array, b: jax.Array, c: jax.Array, *, index: int = 0) -> jax.Array:
    r"""Eigenbasis route: element ``index`` of every block-pair solution.

    Args:
      m: ``(D, k, k)`` per-eigenvalue transition blocks :math:`M_i`.
      b: ``(D, k)`` per-eigenvalue noise-input vectors :math:`b_i`.
      c: ``(D, D)`` noise covariance in the eigenbasis, :math:`\tilde C = U^\top C U`.
      index: which state component to return (0: the parameter ``w``).

    Returns:
      ``(D, D)`` matrix :math:`\tilde\Sigma_{ij} = c_{ij}\,[X^{(1)}_{ij}]_{\text{index},\text{index}}`
      where :math:`X^{(1)}_{ij} = M_i X^{(1)}_{ij} M_j^\top + b_i b_j^\top`.
    """
    if m.shape[-1] == 1:
        mi = m[:, 0, 0]
        bi = b[:, 0]
        return c * jnp.outer(bi, bi) / (1.0 - jnp.outer(mi, mi))
    return c * _pair_element(m, b, index)


def solve_elementwise(a: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve many small ``n x n`` systems laid out element-wise: ``a`` is ``(n, n, *S)``, ``rhs`` is
    ``(n, *S)``; returns ``x`` of shape ``(n, *S)`` with ``a[:, :, s] @ x[:, s] = rhs[:, s]``.

    Gaussian elimination with partial pivoting, unrolled over the (static, small) ``n`` and
    vectorised over ``S``: backward stable like LAPACK's ``gesv``, but O(n^3) whole-array operations
    instead of one LAPACK call per system.  (Cramer's rule, used before, cancelled catastrophically
    for nearly singular systems -- momentum close to 1 -- and gave wrong answers in float32.)
    """
    n = a.shape[0]
    a = jnp.asarray(a)
    x = jnp.asarray(rhs)
    for k in range(n):
        piv = jnp.argmax(jnp.abs(a[k:, k]), axis=0) + k  # (*S)
        # swap rows k and piv, element-wise
        sel_a = jnp.broadcast_to(piv[None, None], (1,) + a.shape[1:])
        row_p = jnp.take_along_axis(a, sel_a, axis=0)[0]
        row_k = a[k]
        rows = [a[r] if r < k else jnp.where((piv == r)[None], row_k, a[r]) for r in range(n)]
        rows[k] = row_p
        a = jnp.stack(rows)
        x_p = jnp.take_along_axis(x, piv[None], axis=0)[0]
        xs = [x[r] if r < k else jnp.where(piv == r, x[k], x[r]) for r in range(n)]
        xs[k] = x_p
        # eliminate below the pivot
        for r in range(k + 1, n):
            f = a[r, k] / a[k, k]
            xs[r] = xs[r] - f * xs[k]
            a = a.at[r].set(a[r] - f[None] * a[k])
        x = jnp.stack(xs)
    out = [None] * n
    for r in range(n - 1, -1, -1):
        acc = x[r]
        for c in range(r + 1, n):
            acc = acc - a[r, c] * out[c]
        out[r] = acc / a[r, r]
    return jnp.stack(out)


def _pair_system(mi, bi, mj, bj):
    r"""The ``k^2 x k^2`` systems :math:`(I - M_i \otimes M_j)\,\mathrm{vec}X = b_i \otimes b_j`
    (row-major vec) for every pair ``(i, j)``, laid out element-wise for :func:`solve_elementwise`:
    matrices ``(k^2, k^2, Di, Dj)`` and right-hand sides ``(k^2, Di, Dj)``."""
    k = mi.shape[-1]
    di, dj = mi.shape[0], mj.shape[0]
    # Built by broadcasting straight into the (a, c, e, f, i, j) layout: kron = Mi[i,a,e] Mj[j,c,f]
    # (an einsum to that layout transposed the large array and was 25 % slower at D = 1000).
    ti = jnp.transpose(mi, (1, 2, 0))[:, None, :, None, :, None]
    tj = jnp.transpose(mj, (1, 2, 0))[None, :, None, :, None, :]
    kron = (ti * tj).reshape(k * k, k * k, di, dj)
    a = jnp.eye(k * k, dtype=mi.dtype)[:, :, None, None] - kron
    rhs = (bi.T[:, None, :, None] * bj.T[None, :, None, :]).reshape(k * k, di, dj)
    return a, rhs


def pair_blocks(m: jax.Array, b: jax.Array) -> jax.Array:
    r"""Full ``(D, D, k, k)`` unit-noise solutions :math:`X_{ij} = M_i X_{ij} M_j^\top + b_i b_j^\top`."""
    d, k, _ = m.shape
    x = solve_elementwise(*_pair_system(m, b, m, b))
    return jnp.moveaxis(x.reshape(k, k, d, d), (0, 1), (2, 3))


@partial(jax.jit, static_argnames="index")
def _pair_element(m, b, index):
    """Element ``(index, index)`` of every unit-noise pair solution, ``(D, D)``.

    All pairs at once while the element-wise system fits in ~2^24 entries (heavy ball at
    D = 1000); beyond that one row ``i`` at a time with ``lax.map`` (memory O(D k^4)).  Either way
    the solver is :func:`solve_elementwise`: no per-pair LAPACK call (a batched ``solve`` was
    slower and was seen to hang XLA's CPU runtime on repeated calls at D = 1000).
    """
    d, k, _ = m.shape
    sel = index * k + index
    if d * d * k**4 <= 2**24:
        return solve_elementwise(*_pair_system(m, b, m, b))[sel]

    def row(args):
        mi, bi = args
        return solve_elementwise(*_pair_system(mi[None], bi[None], m, b))[sel, 0]

    return lax.map(row, (m, b))


def psd_sqrt(c: jax.Array) -> jax.Array:
    """Symmetric square root of a PSD matrix (eigenvalues clipped at 0), usable for singular ``c``."""
    c = 0.5 * (c + c.T)
    e, u = jnp.linalg.eigh(c)
    return (u * jnp.sqrt(jnp.clip(e, 0.0))[None, :]) @ u.T
