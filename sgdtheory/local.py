r"""Any JAX model near a point: per-example second-order expansion → exact SGD moments.

Near a point :math:`\theta^*` (usually a trained minimum) expand every per-example loss
:math:`\ell_i(\theta)` = ``loss(params, example_i)`` to second order,
:math:`g_i = \nabla\ell_i(\theta^*)`, :math:`H_i = \nabla^2\ell_i(\theta^*)`, and add coupled
weight decay :math:`\gamma` (``optax.add_decayed_weights``).  With :math:`\delta = \theta-\theta^*`,
one SGD step on a batch :math:`B` of ``S`` of the ``N`` examples is the random affine map

.. math:: \delta \leftarrow (I - \lambda K_B)\,\delta - \lambda a_B,\qquad
          K_B = \tfrac1S\textstyle\sum_{i\in B} H_i + \gamma I,\quad
          a_B = \tfrac1S\textstyle\sum_{i\in B} g_i + \gamma\theta^*.

Its stationary moments are solved exactly (derivation: ``docs/theory/local.md``): with
:math:`\bar K = \bar H + \gamma I`, :math:`f_S` the batch factor (:math:`1/S` with replacement,
:math:`(N-S)/(S(N-1))` for uniform ``S``-subsets), :math:`D_i = H_i - \bar H`,

.. math::
    m = -\bar K^{-1}(\bar g + \gamma\theta^*),\qquad
    \Sigma = \mathcal R_\lambda\Big(f_S\Big[\operatorname{Cov}_i\big(g_i + H_i m\big)
             + \tfrac1N\textstyle\sum_i D_i\,\Sigma\,D_i\Big]\Big),

where :math:`\mathcal R_\lambda(C)` is the stationary covariance of the optimizer on the quadratic
:math:`\bar K` with additive noise :math:`C` (plain SGD: :math:`\bar K\Sigma + \Sigma\bar K -
\lambda\bar K\Sigma\bar K = \lambda C`; heavy ball: the optax-convention pair solve).  The first
term is the minibatch noise of the quadratic model *at the stationary mean*, the second the
multiplicative noise the additive (fixed-``C``) picture drops.  In the eigenbasis of :math:`\bar K`
:math:`\mathcal R_\lambda` is a Hadamard product, so the equation is solved matrix-free (GMRES on
:math:`X - \Phi\circ f_S\mathcal D(X)`), each operator application costing :math:`2NP^3`
(two GEMMs) -- or :math:`\approx 4NP^2r` when every per-example Hessian has rank :math:`r < P/3`
(exact factors from a verified randomized range finder) -- instead of the :math:`O(P^6)` dense
Kronecker solve.

Validity.  Exact for every model whose per-example losses are quadratic in the params (linear
regression on fixed features, random features, a linearised/NTK model), for both sampling rules,
any ``N``, any ``S``, with weight decay and heavy-ball momentum.  For any other model (an MLP,
cross-entropy) it is the leading order of a small-fluctuation expansion: correct when the iterates
stay where the quadratic expansion holds (third-order terms :math:`\sim\nabla^3\ell\,\Sigma` small
against :math:`\bar H`), which fails first as the learning rate approaches the mean-square bound
(the stationary law gets heavy tails, Kesten) or when the fluctuations reach the basin's edge.

References:
  Liu, Ziyin & Ueda, "Noise and fluctuation of finite learning rate stochastic gradient descent",
  ICML 2021 (Thm 1: the discrete-time Lyapunov equation; heavy ball, Sec. 4.5).
  Ziyin, Liu, Mori & Ueda, "Strength of minibatch noise in SGD", ICLR 2022 (Prop. 1: minibatch
  covariances for both sampling rules; the exact multiplicative noise of linear regression).
  Wu, Ma & E, "How SGD selects the global minima in over-parameterized learning", NeurIPS 2018
  (mean-square stability, Eq. 9 in 1-D).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks, _linalg
from sgdtheory._mean_square import batch_factor, mean_square_max_lr, resolve_sampling

__all__ = [
    "LocalStationary",
    "QuadraticApproximation",
    "Expansion",
    "expand",
    "stationary",
    "quadratic_approximation",
    "max_stable_lr",
    "polish",
    "unravel",
    "NotNearMinimumWarning",
]

DENSE_BOUND_MAX_P = 40  # max_stable_lr: dense O(P^6) eigen-solve up to here, matrix-free beyond


class NotNearMinimumWarning(UserWarning):
    """The expansion point is not a clean minimum (flat directions, or a large gradient)."""


class Expansion(NamedTuple):
    """Per-example second-order expansion at ``params`` (flattened, ``ravel_pytree`` order).

    Attributes:
      params: ``(P,)`` the expansion point :math:`\\theta^*`.
      losses: ``(N,)`` :math:`\\ell_i(\\theta^*)`.
      grads: ``(N, P)`` :math:`g_i`.
      hessians: ``(N, P, P)`` :math:`H_i` (symmetrised).
    """

    params: jax.Array
    losses: jax.Array
    grads: jax.Array
    hessians: jax.Array


class LocalStationary(NamedTuple):
    r"""Stationary law of SGD in the local expansion (all in ``ravel_pytree(params)`` order).

    Attributes:
      param_mean: ``(P,)`` stationary mean :math:`\theta^* + m` of the params.
      param_cov: ``(P, P)`` stationary covariance :math:`\Sigma` (zero along flat directions).
      train_loss: expected training loss :math:`\mathbb E\,\frac1N\sum_i\ell_i(\theta)` to second
        order, :math:`\bar\ell + \bar g^\top m + \tfrac12(m^\top\bar Hm + \mathrm{tr}\,\bar H\Sigma)`
        (the data loss: the weight-decay penalty is not included).
      noise_cov: ``(P, P)`` exact per-step gradient-noise covariance at stationarity,
        :math:`f_S[\mathrm{Cov}_i(g_i + H_i m) + \frac1N\sum_i D_i\Sigma D_i]`.
      hessian_eigenvalues: ``(P,)`` eigenvalues of :math:`\bar K = \bar H + \gamma I`, ascending.
      eigenvectors: ``(P, P)`` the matching eigenvectors (columns).
      flat: ``(P,)`` bool, eigen-directions treated as flat (:math:`|k| \le` ``flat_rtol`` max).
      flat_drift: ``(P,)`` per-step mean displacement :math:`-\lambda u^\top a` along each flat
        eigen-direction ``u`` (0 elsewhere): nonzero means no stationary point at all.
      flat_diffusion: ``(P,)`` per-step variance growth :math:`\lambda^2 u^\top C u` along each flat
        direction (0 elsewhere): nonzero means SGD random-walks there (variance grows ∝ steps).
    """

    param_mean: jax.Array
    param_cov: jax.Array
    train_loss: jax.Array
    noise_cov: jax.Array
    hessian_eigenvalues: jax.Array
    eigenvectors: jax.Array
    flat: jax.Array
    flat_drift: jax.Array
    flat_diffusion: jax.Array

    def mean_params(self, params):
        """The stationary mean as a pytree shaped like ``params``."""
        return unravel(params, self.param_mean)

    def variance_params(self, params):
        """Marginal stationary variances, one per parameter, as a pytree shaped like ``params``."""
        return unravel(params, jnp.diagonal(self.param_cov))


class QuadraticApproximation(NamedTuple):
    """The additive-noise approximation at ``params``: ``(hessian, noise_cov)``.

    Attributes:
      hessian: ``(P, P)`` mean Hessian :math:`\\bar H` of the data loss (no weight decay).
      noise_cov: ``(P, P)`` exact minibatch-gradient covariance at ``params``, :math:`f_S C_1`.
    """

    hessian: jax.Array
    noise_cov: jax.Array


def unravel(params, vector):
    """A flat ``(P,)`` vector (``ravel_pytree(params)`` order) as a pytree shaped like ``params``."""
    return ravel_pytree(params)[1](vector)


# ------------------------------------------------------------------------------------------------
# expansion
# ------------------------------------------------------------------------------------------------


def _flat_loss(loss, params):
    flat, unr = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("params holds no arrays.")
    flat = _checks.as_float_array(flat)

    def f(w, example):
        return loss(unr(w), example)

    return flat, f


def expand(loss: Callable[[Any, Any], jax.Array], params, examples) -> Expansion:
    r"""Per-example values, gradients and Hessians of ``loss`` at ``params`` (flattened).

    ``vmap`` over examples of ``jax.hessian`` (forward-over-reverse): :math:`O(NP)` Hessian-vector
    products, :math:`NP^2` numbers stored.

    Args:
      loss: ``loss(params, example) -> scalar`` for one example.
      params: any pytree of arrays (``P`` numbers in all).
      examples: pytree with leading axis ``N``.

    Raises:
      ValueError: empty params/examples, inconsistent leading axes, non-scalar loss.
    """
    _checks.n_examples(examples)
    flat, f = _flat_loss(loss, params)
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], examples)
    out = jax.eval_shape(f, flat, one)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"loss(params, example) must return a scalar; got shape "
                         f"{getattr(out, 'shape', out)}.")
    return _expand(f, flat, examples)


@partial(jax.jit, static_argnums=0)
def _expand(f, flat, examples) -> Expansion:
    vg = jax.vmap(jax.value_and_grad(f), in_axes=(None, 0))
    hs = jax.vmap(jax.hessian(f), in_axes=(None, 0))
    losses, grads = vg(flat, examples)
    h = hs(flat, examples)
    h = 0.5 * (h + jnp.swapaxes(h, 1, 2))
    return Expansion(flat, losses, grads, h)


# ------------------------------------------------------------------------------------------------
# the solve
# ------------------------------------------------------------------------------------------------


def _eig(h, weight_decay, flat_rtol):
    hbar = jnp.mean(h, axis=0)
    n_p = hbar.shape[0]
    k, u = jnp.linalg.eigh(hbar + weight_decay * jnp.eye(n_p, dtype=hbar.dtype))
    scale = jnp.maximum(jnp.max(jnp.abs(k)), jnp.finfo(k.dtype).tiny)
    flat = jnp.abs(k) <= flat_rtol * scale
    return k, u, flat


def _pair_factor(k, flat, lr, momentum, use_momentum):
    r"""Unit-noise stationary pair factor :math:`\Phi_{ij}` (:math:`\Sigma = \Phi\circ\tilde C`)."""
    ks = jnp.where(flat, 1.0, k)
    if not use_momentum:
        a = 1.0 - lr * ks
        phi = lr**2 / (1.0 - jnp.outer(a, a))
    else:
        one = jnp.ones_like(ks)
        m = jnp.stack([jnp.stack([1.0 - lr * ks, -lr * momentum * one], -1),
                       jnp.stack([ks, momentum * one], -1)], -2)  # (P, 2, 2)
        b = jnp.stack([-lr * one, one], -1)
        phi = _linalg.pairwise_stein(m, b, jnp.ones((ks.shape[0], ks.shape[0]), ks.dtype))
    act = ~flat
    return jnp.where(act[:, None] & act[None, :], phi, 0.0)



def _d_op(dt, x):
    """:math:`\\frac1N\\sum_i D_i X D_i` for ``dt`` ``(N, P, P)``: two GEMMs, 2NP^3 flops."""
    y = jnp.einsum("nab,bc->nac", dt, x)
    return jnp.tensordot(y, dt, axes=([0, 2], [0, 1])) / dt.shape[0]


def _solve_core(ex: Expansion, k, u, flat, hbar_t, hess_vec, d_op, lr, f, weight_decay, momentum,
                use_momentum, tol):
    """The solve in the eigenbasis of the mean Hessian; ``hess_vec(m)`` gives every rotated
    per-example Hessian times ``m`` (``(N, P)``), ``d_op(x)`` the multiplicative-noise operator."""
    theta, losses, g, _ = ex
    n = g.shape[0]
    ks = jnp.where(flat, 1.0, k)
    gt = g @ u
    a_t = jnp.mean(gt, axis=0) + weight_decay * (u.T @ theta)
    mt = jnp.where(flat, 0.0, -a_t / ks)
    q = gt + hess_vec(mt)  # per-example gradients of the quadratic at the mean
    qc = q - jnp.mean(q, axis=0, keepdims=True)
    c1 = qc.T @ qc / n
    phi = _pair_factor(k, flat, lr, momentum, use_momentum)
    rhs = phi * (f * c1)

    def op(x):
        return x - phi * (f * d_op(x))

    # solve for the unit-norm right-hand side (GMRES's relative tolerance then means the same at any
    # noise scale, including the noiseless rhs = 0 of an interpolating model)
    rn = jnp.linalg.norm(rhs)
    rs = jnp.where(rn > 0, 1.0 / jnp.where(rn > 0, rn, 1.0), 0.0)
    y, _ = jax.scipy.sparse.linalg.gmres(op, rhs * rs, x0=rhs * rs, tol=tol, atol=0.0, restart=40,
                                         maxiter=25, solve_method="incremental")
    resid = jnp.where(rn > 0, jnp.linalg.norm(op(y) - rhs * rs), 0.0)
    x = 0.5 * (y + y.T) * rn
    noise_t = f * (c1 + d_op(x))
    train = (jnp.mean(losses) + jnp.mean(gt, axis=0) @ mt
             + 0.5 * (mt @ hbar_t @ mt + jnp.sum(hbar_t * x)))
    drift = jnp.where(flat, -lr * a_t, 0.0)
    diffusion = jnp.where(flat, lr**2 * jnp.diagonal(noise_t), 0.0)
    rot = lambda z: u @ z @ u.T  # noqa: E731
    res = LocalStationary(theta + u @ mt, rot(x), train, rot(noise_t), k, u, flat, drift, diffusion)
    return res, resid


@partial(jax.jit, static_argnames=("use_momentum", "flat_rtol", "tol"))
def _solve(ex: Expansion, lr, f, weight_decay, momentum, use_momentum, flat_rtol, tol):
    """Dense per-example Hessians: each operator application is two GEMMs, 2NP^3 flops."""
    h = ex.hessians
    k, u, flat = _eig(h, weight_decay, flat_rtol)
    ht = jnp.einsum("ai,nab,bj->nij", u, h, u)
    hbar_t = jnp.mean(ht, axis=0)
    dt = ht - hbar_t[None]
    return _solve_core(ex, k, u, flat, hbar_t, lambda m: jnp.einsum("nij,j->ni", ht, m),
                       lambda x: _d_op(dt, x), lr, f, weight_decay, momentum, use_momentum, tol)


@partial(jax.jit, static_argnames=("use_momentum", "flat_rtol", "tol"))
def _solve_factored(ex: Expansion, factors, lr, f, weight_decay, momentum, use_momentum, flat_rtol,
                    tol):
    """Low-rank per-example Hessians ``H_i = Q_i B_i Q_i^T`` (:func:`_low_rank_factors`): the same
    equation, each operator application ~4NP^2r flops instead of 2NP^3; H_i is never rotated."""
    q, b = factors
    k, u, flat = _eig(ex.hessians, weight_decay, flat_rtol)
    qt = jnp.einsum("ai,nak->nik", u, q)
    hbar_t = jnp.einsum("nai,nij,nbj->ab", qt, b, qt) / qt.shape[0]
    hbar_t = 0.5 * (hbar_t + hbar_t.T)

    def hess_vec(m):
        return jnp.einsum("nik,nk->ni", qt, jnp.einsum("nkl,nl->nk", b, jnp.einsum("nik,i->nk", qt, m)))

    n, p, r = qt.shape
    flat_q = jnp.transpose(qt, (1, 0, 2)).reshape(p, n * r)  # all factors side by side: one GEMM

    def d_op(x):
        t = jnp.transpose((x @ flat_q).reshape(p, n, r), (1, 0, 2))      # X Q_i, (N, P, r)
        w = jnp.einsum("nik,nkl,nlj->nij", b, jnp.einsum("nai,naj->nij", qt, t), b)
        v = jnp.transpose(jnp.einsum("nai,nij->naj", qt, w), (1, 0, 2)).reshape(p, n * r)
        return v @ flat_q.T / n - hbar_t @ x @ hbar_t

    return _solve_core(ex, k, u, flat, hbar_t, hess_vec, d_op, lr, f, weight_decay, momentum,
                       use_momentum, tol)


def _low_rank_factors(h, *, tol=1e-11, oversample=8, min_params=48):
    """Exact low-rank factors ``(Q, B)`` with ``H_i = Q_i B_i Q_i^T`` for every per-example Hessian
    (``Q_i`` ``(P, r)`` orthonormal, one common ``r``), or ``None`` (use the dense route).

    A randomized range finder (Halko, Martinsson & Tropp 2011): a fixed Gaussian sketch
    ``Y_i = H_i Omega`` with ``P // 3 + oversample`` columns; ``r`` is the largest numerical rank of
    the ``Y_i``.  Taken only if the sketch is not saturated (``r < P//3 + oversample/2``) and an
    independent Gaussian probe finds ``||(H_i - Q_i B_i Q_i^T) w|| <= tol ||H_i w||`` for every
    ``i`` -- so the factored operator is the dense one to round-off, never an approximation.
    Eager only (``r`` is a shape); ``None`` for traced Hessians or ``P < min_params``."""
    if not _checks.is_concrete(h) or h.ndim != 3:
        return None
    n, p, _ = h.shape
    kcols = p // 3 + oversample
    if p < min_params or kcols >= p:
        return None
    sketch_key, probe_key = jax.random.split(jax.random.key(0))
    omega = jax.random.normal(sketch_key, (p, kcols), h.dtype)
    uy, sy, _ = jnp.linalg.svd(jnp.einsum("nab,bk->nak", h, omega), full_matrices=False)
    scale = jnp.maximum(sy[:, :1], jnp.finfo(h.dtype).tiny)
    rank = int(jnp.max(jnp.sum(sy > 1e-12 * kcols * scale, axis=1)))
    if rank == 0 or rank > kcols - oversample // 2:
        return None
    q = uy[:, :, :rank]
    b = jnp.einsum("nai,nab,nbj->nij", q, h, q)
    b = 0.5 * (b + jnp.swapaxes(b, 1, 2))
    w = jax.random.normal(probe_key, (p, 4), h.dtype)
    hw = jnp.einsum("nab,bk->nak", h, w)
    rec = jnp.einsum("nai,nij,nbj,bk->nak", q, b, q, w)
    err = jnp.linalg.norm(hw - rec, axis=(1, 2))
    if not bool(jnp.all(err <= tol * jnp.maximum(jnp.linalg.norm(hw, axis=(1, 2)),
                                                  jnp.finfo(h.dtype).tiny))):
        return None
    return q, b


# ------------------------------------------------------------------------------------------------
# input checks shared by the public functions
# ------------------------------------------------------------------------------------------------


def _check_common(loss, params, examples, batch_size, sampling, weight_decay, momentum=0.0):
    replacement = resolve_sampling(sampling)
    n = _checks.n_examples(examples)
    f = batch_factor(n, batch_size, replacement)
    if jnp.ndim(weight_decay) != 0:
        raise ValueError("weight_decay must be a scalar.")
    if jnp.ndim(momentum) != 0:
        raise ValueError("momentum must be a scalar.")
    _checks.check_momentum(momentum)
    if not callable(loss):
        raise ValueError("loss must be a callable loss(params, example) -> scalar.")
    return replacement, n, f


def _check_minimum(k, flat, flat_rtol):
    kv = _checks.concrete_value(k)
    if kv is None:
        return
    scale = float(np.max(np.abs(kv)))
    if kv[0] < -flat_rtol * scale:
        raise ValueError(
            f"params is not near a minimum: the mean Hessian (+ weight decay) has a negative "
            f"eigenvalue {kv[0]:.4g} (largest |eigenvalue| {scale:.4g}); the point is a saddle or a "
            "maximum and SGD leaves it. Train further, then call sgdtheory.local.polish.")


def _warn_flat(res: LocalStationary, lr, grads):
    fl = _checks.concrete_value(res.flat)
    if fl is None or not fl.any() or _checks.concrete_value(lr) is None:
        return
    drift = np.abs(np.asarray(res.flat_drift))[fl]
    diff = np.asarray(res.flat_diffusion)[fl]
    # round-off level (relative to the largest per-step variance anywhere) counts as zero
    floor = 1e-12 * float(lr) ** 2 * max(float(np.max(np.abs(np.diagonal(np.asarray(
        res.noise_cov))))), float(np.max(np.mean(np.asarray(grads) ** 2, axis=0))))
    diff = np.where(diff > floor, diff, 0.0)
    warnings.warn(
        f"{int(fl.sum())} flat direction(s) of the mean Hessian (+ weight decay) (|eigenvalue| <= "
        f"flat_rtol * max): no restoring force there, so there is no stationary law along them. "
        f"They are projected out: param_cov is 0 and param_mean is params along them (result.flat, "
        f"result.eigenvectors[:, result.flat]). Per-step drift there: max {drift.max():.3g}; "
        f"per-step variance growth (random walk): max {diff.max():.3g}"
        + (" -- SGD diffuses along them without bound." if diff.max() > 0 else
           " -- no noise there either: they do not move.")
        + " With weight_decay > 0 every direction has curvature.",
        NotNearMinimumWarning, stacklevel=3)


def _full_grad(f, examples, weight_decay):
    def full(w):
        return jnp.mean(jax.vmap(f, in_axes=(None, 0))(w, examples)) + 0.5 * weight_decay * w @ w

    return jax.grad(full)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------


def stationary(loss: Callable[[Any, Any], jax.Array], params, examples, lr, batch_size, *,
               sampling: str = "with_replacement", weight_decay=0.0, momentum=0.0,
               flat_rtol: float = 1e-9, tol: float = 1e-12, expansion: Expansion | None = None,
               check_stable: bool = True) -> LocalStationary:
    r"""Exact stationary mean and covariance of SGD in the per-example quadratic expansion.

    .. math::
        m = -\bar K^{-1}(\bar g + \gamma\theta^*),\qquad
        \Sigma = \mathcal R_\lambda\Big(f_S\Big[\operatorname{Cov}_i(g_i + H_i m)
                 + \tfrac1N\textstyle\sum_i (H_i-\bar H)\Sigma(H_i-\bar H)\Big]\Big)

    (module docstring; ``docs/theory/local.md``).  ``params`` need not be stationary: the mean
    is the exact affine solution :math:`\theta^*+m`, the noise is evaluated there.

    Args:
      loss: ``loss(params, example) -> scalar`` for one example (regularisation may be included
        here; the weight decay below is the optimizer's coupled L2).
      params: any pytree: the expansion point :math:`\theta^*` (a trained minimum; see
        :func:`polish`).  Flattened with ``jax.flatten_util.ravel_pytree`` (``P`` numbers).
      examples: pytree with leading axis ``N``.
      lr: :math:`\lambda`, below :func:`max_stable_lr`.
      batch_size: ``S``.
      sampling: ``"with_replacement"`` (i.i.d. indices, :math:`f_S = 1/S`) or
        ``"without_replacement"`` (a uniform ``S``-subset per step, :math:`f_S=\frac{N-S}{S(N-1)}`).
        (``"shuffle"`` has dependent batches and no exact theory: ``ValueError``.)
      weight_decay: :math:`\gamma`, as ``optax.chain(optax.add_decayed_weights(gamma), ...)``.
      momentum: heavy-ball :math:`\mu\in[0,1)`, optax convention (``optax.sgd(lr, momentum)``:
        :math:`v\leftarrow\mu v+\hat g`, :math:`\theta\leftarrow\theta-\lambda v`); exact in the
        expansion (the multiplicative term enters only through the gradient, see the theory page).
        Nesterov is not supported.
      flat_rtol: eigen-directions of :math:`\bar K` with :math:`|k|\le` ``flat_rtol`` :math:`\max|k|`
        are flat: projected out with a :class:`NotNearMinimumWarning` (see
        :class:`LocalStationary` for what is reported there).
      tol: relative residual of the GMRES solve.
      expansion: a precomputed :func:`expand` result (skips the per-example Hessians).
      check_stable: compute :func:`max_stable_lr` and raise when ``lr`` is past it (costs one
        eigen-solve; ``False`` skips it).

    Returns:
      :class:`LocalStationary`.

    Raises:
      ValueError: bad shapes or options, ``batch_size > N`` without replacement, ``params`` not near
        a minimum (negative eigenvalue of :math:`\bar H+\gamma I`), ``lr >= max_stable_lr``, or a
        solve that did not converge.

    Cost: :math:`O(NP^2)` memory; per GMRES iteration :math:`2NP^3` flops, or :math:`\approx 4NP^2r`
    when every per-example Hessian has rank :math:`r < P/3` (found and verified automatically;
    P = 198, N = 1000, r = 44: 5.2 s in all on 2 CPU cores).

    Example:
      >>> import jax.numpy as jnp
      >>> from sgdtheory import local
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]); y = jnp.array([1., 0., 2., 0.])
      >>> loss = lambda w, ex: 0.5 * (ex[0] @ w - ex[1]) ** 2
      >>> res = local.stationary(loss, jnp.zeros(2), (X, y), 0.1, 1)
      >>> [round(float(v), 4) for v in res.param_mean]     # the least-squares solution
      [1.0, 0.6667]

    References:
      Liu, Ziyin & Ueda (2021), Thm 1; Ziyin, Liu, Mori & Ueda (2022), Prop. 1; Wu, Ma & E (2018).
    """
    _, n, f = _check_common(loss, params, examples, batch_size, sampling, weight_decay, momentum)
    if jnp.ndim(lr) != 0:
        raise ValueError("lr must be a scalar.")
    _checks.check_positive("lr", lr)
    if expansion is None:
        expansion = expand(loss, params, examples)
    _check_expansion(expansion, params, n)
    k, _, flat = _eig(expansion.hessians, weight_decay, flat_rtol)
    _check_minimum(k, flat, flat_rtol)
    if check_stable and _checks.is_concrete(lr) and _checks.is_concrete(k):
        bound = max_stable_lr(loss, params, examples, batch_size, sampling=sampling,
                              weight_decay=weight_decay, momentum=momentum, flat_rtol=flat_rtol,
                              expansion=expansion)
        _checks.check_lr_below(lr, bound, "local.max_stable_lr (mean-square stability of the local "
                               "affine map, rho(E[M_B (x) M_B]) < 1)", "are not mean-square stable")
    factors = _low_rank_factors(expansion.hessians)
    if factors is None:
        res, resid = _solve(expansion, lr, f, weight_decay, momentum, not _checks.is_zero(momentum),
                            float(flat_rtol), float(tol))
    else:
        res, resid = _solve_factored(expansion, factors, lr, f, weight_decay, momentum,
                                     not _checks.is_zero(momentum), float(flat_rtol), float(tol))
    rv = _checks.concrete_value(resid)
    if rv is not None and not rv <= max(100 * tol, 1e-9):
        raise ValueError(f"the matrix-free solve did not converge (relative residual {float(rv):.3g});"
                         " lr is probably too close to max_stable_lr.")
    _warn_flat(res, lr, expansion.grads)
    if _checks.is_concrete(res.param_mean):
        _check_expansion_quality(loss, params, examples, expansion, res, weight_decay)
    return res


def _check_expansion(ex: Expansion, params, n):
    p = ravel_pytree(params)[0].size
    if (ex.grads.shape != (n, p) or ex.hessians.shape != (n, p, p) or ex.params.shape != (p,)
            or ex.losses.shape != (n,)):
        raise ValueError(f"expansion does not match params/examples (P={p}, N={n}): grads "
                         f"{ex.grads.shape}, hessians {ex.hessians.shape}.")


def _check_expansion_quality(loss, params, examples, ex, res, weight_decay, rel=0.1):
    r"""Warn when the gradient at the predicted mean is not small against the gradient at params.

    For a quadratic loss :math:`\nabla F(\theta^*+m) = 0` to round-off; a residual above ``rel``
    times :math:`\|\nabla F(\theta^*)\|` means third-order terms matter over the shift ``m``.
    """
    shift = np.asarray(res.param_mean - ex.params)
    if not np.any(np.abs(shift) > 0):
        return
    _, f = _flat_loss(loss, params)
    grad = _full_grad(f, examples, weight_decay)
    g0 = np.asarray(jnp.mean(ex.grads, axis=0) + weight_decay * ex.params)
    g1 = np.asarray(grad(res.param_mean))
    if not np.isfinite(g1).all():
        return
    fl = np.asarray(res.flat)
    if fl.any():  # judge the curved subspace only
        uu = np.asarray(res.eigenvectors)[:, ~fl]
        g0, g1 = uu.T @ g0, uu.T @ g1
    n0, n1 = float(np.linalg.norm(g0)), float(np.linalg.norm(g1))
    if n1 > rel * n0 and n1 > 1e-8 * (1.0 + n0):
        warnings.warn(
            f"params is not near a minimum of the expansion's accuracy: the full-batch gradient "
            f"is {n0:.3g} at params and still {n1:.3g} at the predicted stationary mean "
            f"(|shift| = {np.linalg.norm(shift):.3g}); third-order terms matter over that distance. "
            "Move params to the minimum first (sgdtheory.local.polish).",
            NotNearMinimumWarning, stacklevel=3)


def quadratic_approximation(loss: Callable[[Any, Any], jax.Array], params, examples, batch_size, *,
                            sampling: str = "with_replacement") -> QuadraticApproximation:
    r"""The **additive-noise approximation** at ``params``: :math:`(\bar H, f_S C_1)`.

    :math:`\bar H = \frac1N\sum_i H_i` and the exact minibatch-gradient covariance at ``params``,
    :math:`f_S\,\mathrm{Cov}_i(g_i)` (:func:`sgdtheory.noise.minibatch_covariance`), held fixed.
    Feed them to :func:`sgdtheory.quadratic.stationary_covariance` (pass ``weight_decay=`` there).
    It drops the multiplicative part :math:`f_S\frac1N\sum_i D_i\Sigma D_i` of the noise (relative
    error :math:`O(\lambda f_S\|D\|^2/\bar h)`) and the shift of the mean; :func:`stationary` keeps
    both.

    Args:
      loss, params, examples, batch_size, sampling: as in :func:`stationary`.

    Returns:
      :class:`QuadraticApproximation` ``(hessian, noise_cov)``, both ``(P, P)``.
    """
    from sgdtheory import noise

    replacement, n, _ = _check_common(loss, params, examples, batch_size, sampling, 0.0)
    ex = expand(loss, params, examples)
    c = noise.minibatch_covariance(ex.grads, batch_size, replacement=replacement)
    return QuadraticApproximation(jnp.mean(ex.hessians, axis=0), c)


def _restricted(ex: Expansion, weight_decay, flat_rtol):
    """Eigenbasis pieces on the curved subspace (concrete; for the bound)."""
    k, u, flat = _eig(ex.hessians, weight_decay, flat_rtol)
    act = ~np.asarray(flat)
    ua = u[:, act]
    ht = jnp.einsum("ai,nab,bj->nij", ua, ex.hessians, ua)
    return k[act], ht


def max_stable_lr(loss: Callable[[Any, Any], jax.Array], params, examples, batch_size, *,
                  sampling: str = "with_replacement", weight_decay=0.0, momentum=0.0,
                  flat_rtol: float = 1e-9, expansion: Expansion | None = None):
    r"""Exact mean-square stability bound of the local affine map :math:`\delta\mapsto M_B\delta-\lambda a_B`.

    SGD is mean-square stable iff :math:`\rho(\mathbb E[M_B\otimes M_B]) < 1` on symmetric
    matrices, :math:`M_B = I-\lambda K_B`.  Plain SGD: :math:`\mathbb E[M_B\otimes M_B] = I-\lambda
    P+\lambda^2Q` with :math:`P=\bar K\oplus\bar K`, :math:`Q = \bar K\otimes\bar K +
    f_S\frac1N\sum_i D_i\otimes D_i`, so :math:`\lambda^* = 1/\mu_{\max}(P^{-1/2}QP^{-1/2})`:
    a dense eigen-solve (:func:`sgdtheory.quadratic.mean_square_max_lr`) for ``P <= 40`` curved
    directions, Lanczos (``scipy.sparse.linalg.eigsh``) on the matrix-free operator beyond.
    Heavy ball: by the regular-splitting theorem for positive maps the bound is where the Perron
    root of :math:`X\mapsto\Phi_\lambda\circ f_S\mathcal D(X)` reaches 1 (with
    :math:`\lambda\bar k_{\max} < 2(1+\mu)`); found by bisection, the Perron root by power
    iteration.  In 1-D: :math:`2a/(a^2+f_Ss^2)` (Wu, Ma & E 2018, Eq. 9).  Flat directions
    (:math:`|k|\le` ``flat_rtol`` max) are excluded.

    Args:
      loss, params, examples, batch_size, sampling, weight_decay, momentum, flat_rtol, expansion:
        as in :func:`stationary`.

    Returns:
      :math:`\lambda^*` (a float; eager only).

    Raises:
      ValueError: bad input, or ``params`` not near a minimum (negative curvature).
    """
    replacement, n, f = _check_common(loss, params, examples, batch_size, sampling, weight_decay,
                                      momentum)
    if expansion is None:
        expansion = expand(loss, params, examples)
    _check_expansion(expansion, params, n)
    k_all, _, flat = _eig(expansion.hessians, weight_decay, flat_rtol)
    _check_minimum(k_all, flat, flat_rtol)
    k, ht = _restricted(expansion, weight_decay, flat_rtol)
    p = k.shape[0]
    if p == 0:
        return float("inf")
    if _checks.is_zero(momentum):
        if p <= DENSE_BOUND_MAX_P:
            eye = jnp.eye(p, dtype=ht.dtype)[None]
            return float(mean_square_max_lr(ht + weight_decay * eye, batch_size,
                                            replacement=replacement))
        return _lanczos_bound(k, ht, f)
    return _momentum_bound(k, ht, f, float(momentum))


def _lanczos_bound(k, ht, f):
    import scipy.sparse.linalg as spla

    p = k.shape[0]
    dt = ht - jnp.mean(ht, axis=0)[None]
    s = 1.0 / jnp.sqrt(k[:, None] + k[None, :])
    kk = jnp.outer(k, k)

    @jax.jit
    def mv(y):
        y = y.reshape(p, p)
        y = 0.5 * (y + y.T)
        x = s * y
        out = s * (kk * x + f * _d_op(dt, x))
        return out.reshape(-1)

    op = spla.LinearOperator((p * p, p * p), matvec=lambda v: np.asarray(mv(jnp.asarray(v))),
                             dtype=np.float64)
    v0 = np.eye(p).reshape(-1)
    mu = spla.eigsh(op, k=1, which="LA", v0=v0, tol=1e-12, return_eigenvectors=False)[0]
    return float(1.0 / mu)


def _momentum_bound(k, ht, f, mu, iters=400, bisect=50):
    dt = ht - jnp.mean(ht, axis=0)[None]
    p = k.shape[0]
    flat = jnp.zeros(p, bool)

    @jax.jit
    def perron(lr):
        phi = _pair_factor(k, flat, lr, mu, True)

        def body(_, carry):
            x, _ = carry
            y = phi * (f * _d_op(dt, x))
            nrm = jnp.linalg.norm(y)
            return y / jnp.maximum(nrm, 1e-300), nrm

        _, r = lax.fori_loop(0, iters, body, (jnp.eye(p, dtype=k.dtype) / np.sqrt(p), 0.0))
        return r

    lo, hi = 0.0, 2.0 * (1.0 + mu) / float(jnp.max(k))
    if float(perron(hi * (1 - 1e-9))) < 1.0:
        return hi
    for _ in range(bisect):
        mid = 0.5 * (lo + hi)
        if float(perron(mid)) < 1.0:
            lo = mid
        else:
            hi = mid
    return lo


def polish(loss: Callable[[Any, Any], jax.Array], params, examples, *, weight_decay=0.0,
           max_steps: int = 50, flat_rtol: float = 1e-9, gtol: float = 1e-10):
    r"""Newton's method to a stationary point of the full-batch objective, to round-off.

    Minimises :math:`F(\theta)=\frac1N\sum_i\ell_i(\theta)+\frac\gamma2\|\theta\|^2` by
    :math:`\theta\leftarrow\theta-t\,\bar K^{+}\nabla F` (the pseudo-inverse on the curved
    directions; flat ones are left alone; :math:`t` halved until :math:`F` does not increase).
    Meant for a point already near a minimum (after training): it refuses saddles.

    Args:
      loss, params, examples, weight_decay: as in :func:`stationary`.
      max_steps: Newton iterations at most.
      flat_rtol: eigenvalues with :math:`|k|\le` ``flat_rtol`` max are not inverted.
      gtol: stop when :math:`\|\nabla F\|` on the curved directions is below ``gtol`` times
        :math:`(1 + \max|k|\,\|\theta\|)`.

    Returns:
      The polished params, a pytree shaped like ``params``.

    Raises:
      ValueError: a negative eigenvalue of :math:`\bar H+\gamma I` at ``params`` or at the end
        (not near a minimum), or no convergence in ``max_steps``.
    """
    _checks.n_examples(examples)
    w, f = _flat_loss(loss, params)
    p = w.shape[0]

    @jax.jit
    def obj(w_):
        return jnp.mean(jax.vmap(f, in_axes=(None, 0))(w_, examples)) + 0.5 * weight_decay * w_ @ w_

    grad = jax.jit(jax.grad(obj))
    hess = jax.jit(jax.hessian(obj))
    for it in range(max_steps + 1):
        g = np.asarray(grad(w))
        h = np.asarray(hess(w))
        k, u = np.linalg.eigh(0.5 * (h + h.T))
        scale = max(float(np.max(np.abs(k))), 1e-300)
        if k[0] < -flat_rtol * scale:
            raise ValueError(
                f"polish: not near a minimum: the Hessian of the full-batch objective has a negative "
                f"eigenvalue {k[0]:.4g} (largest |eigenvalue| {scale:.4g}) at step {it}; train "
                "further before polishing.")
        act = k > flat_rtol * scale
        gt = u.T @ g
        if np.linalg.norm(gt[act]) <= gtol * (1.0 + scale * float(np.linalg.norm(w))):
            return unravel(params, jnp.asarray(w))
        if it == max_steps:
            break
        step = u[:, act] @ (gt[act] / k[act])
        f0 = float(obj(w))
        t = 1.0
        for _ in range(30):
            w_new = w - t * jnp.asarray(step)
            if float(obj(w_new)) <= f0 + 1e-12 * abs(f0):
                break
            t *= 0.5
        w = w_new
    raise ValueError(f"polish: no convergence in {max_steps} Newton steps (|grad| = "
                     f"{np.linalg.norm(g):.3g}); params is probably not near a minimum.")

