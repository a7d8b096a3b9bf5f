r"""Exact stationary theory of linear optimizers on a quadratic with additive gradient noise.

Conventions (``docs/conventions.md``): the loss is
:math:`L(w) = \tfrac12 (w - w^*)^\top H (w - w^*)`; each step sees the stochastic gradient
:math:`\hat g = \nabla L(w) + \gamma w + \xi` with :math:`\mathbb E\xi = 0`,
:math:`\operatorname{Cov}\xi = C` -- the covariance of the gradient *actually used in one step*
(already divided by the batch size) -- and :math:`\gamma` the coupled weight decay.  An optional
symmetric positive-definite preconditioner :math:`P` multiplies the update.  Momentum follows the
optax/PyTorch convention :math:`m \leftarrow \mu m + \hat g,\; w \leftarrow w - \lambda P m`.

Every optimizer here is *linear in its state*: with :math:`x = (w - w_\infty, \text{buffers})`,
one step is :math:`x \leftarrow M x + B\xi`, so the stationary covariance solves the discrete
Lyapunov equation

.. math:: X = M X M^\top + B C B^\top ,

which has a unique solution iff the spectral radius :math:`\rho(M) < 1`; :math:`\Sigma` is the
``w``-``w`` block of :math:`X`.  The preconditioner is removed by the change of variables
:math:`w = P^{1/2} v`, which turns the problem into the same optimizer on
:math:`H' = P^{1/2}(H + \gamma I)P^{1/2}` with noise :math:`C' = P^{1/2} C P^{1/2}`.  In the
eigenbasis of :math:`H'` the transition matrix splits into one :math:`k\times k` block per
eigenvalue (``k`` = number of state vectors: 1 for SGD, 2 for heavy ball/Nesterov, 3 for PNM), so
each pair of eigen-directions solves a :math:`k^2\times k^2` system
(:func:`sgdtheory._linalg.pairwise_stein`); for plain SGD this is Liu, Ziyin & Ueda (2021),
Thm 1 in closed form:

.. math:: \tilde\Sigma_{ij} = \frac{\lambda\,\tilde C_{ij}}{h_i + h_j - \lambda h_i h_j},
          \qquad \tilde C = U^\top C U .

A new linear optimizer is a :class:`LinearOptimizer`: a function returning ``(M, B)`` for a
curvature matrix ``h`` (called with ``(1, 1)`` blocks in the eigenbasis route and with the full
``(D, D)`` matrix in the dense route), plus optionally its closed-form stability bound.

**One optimizer vocabulary.**  Every function taking ``optimizer=`` also accepts an optax
``GradientTransformation`` -- the object the simulators take -- e.g.
``stationary_covariance(H, C, optimizer=optax.sgd(0.1, momentum=0.9, nesterov=True))``, with
``lr`` omitted (it is the optimizer's own; passing both raises), or a factory
``lambda lr: optax.sgd(lr, 0.9)`` where the learning rate is a free variable (:func:`max_stable_lr`).
It is turned into a :class:`LinearOptimizer` by :func:`sgdtheory.optim.linearize` (Jacobian of one
``update`` call; non-linear optimizers such as Adam raise ``ValueError``).  ``sam_radius=``
composes unnormalised SAM with any optimizer (:func:`with_sam`); the ``weight_decay=`` keyword is
coupled L2 in the loss, so the SAM ascent sees it, while ``optax.add_decayed_weights`` inside a
chain acts on the final gradient.

References:
  Liu, Ziyin & Ueda, "Noise and fluctuation of finite learning rate stochastic gradient descent",
  ICML 2021 (arXiv:2012.03636), Thms 1-3, Cor 1.
  Mandt, Hoffman & Blei, "Stochastic gradient descent as approximate Bayesian inference",
  JMLR 18 (2017) -- the continuous-time limit.
  Xie, Yuan, Zhu & Sugiyama, "Positive-negative momentum", ICML 2021 (arXiv:2103.17182).
  Foret et al., "Sharpness-aware minimization", ICLR 2021; Andriushchenko & Flammarion (2022)
  for the unnormalized variant.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgdtheory import _checks
from sgdtheory import optim as _optim
from sgdtheory._linalg import pair_blocks, pairwise_stein, solve_discrete_lyapunov, spectral_radius
from sgdtheory.optim import LinearOptimizer

__all__ = [
    "LinearOptimizer",
    "sgd",
    "heavy_ball",
    "nesterov",
    "pnm",
    "usam",
    "with_sam",
    "stationary_covariance",
    "stationary_covariance_continuous",
    "covariance_after",
    "max_stable_lr",
    "stationary_loss",
    "is_stable",
    "transition_matrices",
    "mean_square_max_lr",
    "damped_newton_covariance",
    "escape_efficiency",
    "bayes_optimal_lr",
    "bayes_kl",
]


def _eye(h):
    return jnp.eye(h.shape[0], dtype=h.dtype)


def sgd() -> LinearOptimizer:
    r"""Plain SGD: :math:`w \leftarrow w - \lambda \hat g`; :math:`M = I - \lambda H`, :math:`B = -\lambda I`.

    Stable iff :math:`0 < \lambda h < 2` for every eigenvalue.
    """

    def matrices(h, lr):
        eye = _eye(h)
        return eye - lr * h, -lr * eye

    return LinearOptimizer("sgd", 1, matrices, lambda h_max: 2.0 / h_max, "2/h_max", {})


def heavy_ball(momentum) -> LinearOptimizer:
    r"""Heavy-ball momentum, optax/PyTorch convention (``optax.sgd(lr, momentum)``).

    :math:`m \leftarrow \mu m + \hat g,\ w \leftarrow w - \lambda m`; state ``(w, m)``:

    .. math:: M = \begin{pmatrix} I - \lambda H & -\lambda\mu I \\ H & \mu I\end{pmatrix},\quad
              B = \begin{pmatrix} -\lambda I \\ I \end{pmatrix}.

    Stable iff :math:`0 < \lambda h < 2(1 + \mu)` (Liu, Ziyin & Ueda 2021, Sec. 4.5).
    """
    _checks.check_momentum(momentum)
    mu = momentum

    def matrices(h, lr):
        eye = _eye(h)
        m = jnp.block([[eye - lr * h, -lr * mu * eye], [h, mu * eye]])
        b = jnp.concatenate([-lr * eye, eye], axis=0)
        return m, b

    return LinearOptimizer(
        "heavy_ball", 2, matrices, lambda h_max: 2.0 * (1.0 + mu) / h_max, "2(1+momentum)/h_max",
        {"momentum": momentum},
    )


def nesterov(momentum) -> LinearOptimizer:
    r"""Nesterov momentum as in ``optax.sgd(lr, momentum, nesterov=True)``.

    :math:`m \leftarrow \mu m + \hat g,\ w \leftarrow w - \lambda(\hat g + \mu m)`, i.e.
    :math:`w \leftarrow w - \lambda[(1+\mu)\hat g + \mu^2 m_{\text{old}}]`; state ``(w, m)``:

    .. math:: M = \begin{pmatrix} I - \lambda(1+\mu) H & -\lambda\mu^2 I \\ H & \mu I\end{pmatrix},
              \quad B = \begin{pmatrix} -\lambda(1+\mu) I \\ I \end{pmatrix}.

    Characteristic polynomial per eigenvalue :math:`z^2 - (1+\mu)(1-\lambda h)z + \mu(1-\lambda h)`;
    the Jury conditions give stability iff :math:`0 < \lambda h < 2(1+\mu)/(1+2\mu)`.
    """
    _checks.check_momentum(momentum)
    mu = momentum

    def matrices(h, lr):
        eye = _eye(h)
        m = jnp.block([[eye - lr * (1 + mu) * h, -lr * mu**2 * eye], [h, mu * eye]])
        b = jnp.concatenate([-lr * (1 + mu) * eye, eye], axis=0)
        return m, b

    return LinearOptimizer(
        "nesterov", 2, matrices, lambda h_max: 2.0 * (1.0 + mu) / ((1.0 + 2.0 * mu) * h_max),
        "2(1+momentum)/((1+2 momentum) h_max)", {"momentum": momentum},
    )


def pnm(beta0, beta1) -> LinearOptimizer:
    r"""Positive-negative momentum (Xie, Yuan, Zhu & Sugiyama 2021, Algorithm "SGD-PNM").

    Two momentum buffers updated on alternate steps, written time-invariantly with the state
    :math:`(w, m_{t-1}, m_{t-2})`:

    .. math::
        m_t = \beta_1^2 m_{t-2} + (1 - \beta_1^2)\hat g_t,\qquad
        w \leftarrow w - \frac{\lambda}{\sqrt{(1+\beta_0)^2 + \beta_0^2}}
        \big[(1+\beta_0) m_t - \beta_0 m_{t-1}\big].

    ``beta0 >= 0`` sets the negative-momentum weight, ``beta1`` in [0, 1) the buffer decay.
    Stability has no simple closed form: :func:`max_stable_lr` finds it numerically.
    """
    _checks.check_nonnegative("beta0", beta0)
    _checks.check_momentum(beta1, "beta1")

    def matrices(h, lr):
        eye = _eye(h)
        zero = jnp.zeros_like(h)
        eta = lr / jnp.sqrt((1 + beta0) ** 2 + beta0**2)
        a = eta * (1 + beta0) * (1 - beta1**2)
        m = jnp.block(
            [
                [eye - a * h, eta * beta0 * eye, -eta * (1 + beta0) * beta1**2 * eye],
                [(1 - beta1**2) * h, zero, beta1**2 * eye],
                [zero, eye, zero],
            ]
        )
        b = jnp.concatenate([-a * eye, (1 - beta1**2) * eye, zero], axis=0)
        return m, b

    return LinearOptimizer("pnm", 3, matrices, None, "the PNM stability bound",
                           {"beta0": beta0, "beta1": beta1})


_nesterov_optimizer = nesterov  # the keyword nesterov= shadows the function name


def usam(radius) -> LinearOptimizer:
    r"""Unnormalized SAM on a quadratic with additive noise (same minibatch for both gradients).

    Ascent :math:`w_{adv} = w + \rho P\hat g(w)`, update :math:`w \leftarrow w - \lambda P \hat g(w_{adv})`.
    With :math:`\hat g(w) = H w + \xi` both evaluations share :math:`\xi`, so
    :math:`\hat g(w_{adv}) = (I + \rho H P)\hat g(w)`; in the preconditioned coordinates
    :math:`M = I - \lambda(I + \rho H)H`, :math:`B = -\lambda(I + \rho H)`.  Stable iff
    :math:`\lambda h(1 + \rho h) < 2` for every eigenvalue (``radius`` :math:`\rho \ge 0`).
    """
    _checks.check_nonnegative("radius", radius)

    def matrices(h, lr):
        eye = _eye(h)
        amp = eye + radius * h
        return eye - lr * amp @ h, -lr * amp

    return LinearOptimizer(
        "usam", 1, matrices, lambda h_max: 2.0 / (h_max * (1.0 + radius * h_max)),
        "2/(h_max (1 + radius h_max))", {"radius": radius},
    )



def with_sam(optimizer: LinearOptimizer, radius) -> LinearOptimizer:
    r"""Unnormalised SAM around any linear optimizer: it is fed :math:`\hat g(w + \rho P\hat g(w))`.

    On the quadratic with shared noise, :math:`\hat g(w + \rho P\hat g) = (I + \rho H P)\hat g`; in
    the preconditioned coordinates (:math:`h = P^{1/2}(H+\gamma I)P^{1/2}`) the fed gradient is
    :math:`(I + \rho h)(h v + \xi')`.  Every optimizer here has :math:`M(h) = A + B h E_0^\top` with
    :math:`B` independent of :math:`h`, so SAM gives

    .. math:: M_{SAM}(h) = M\big(h(I + \rho h)\big),\qquad B_{SAM} = B\,(I + \rho h),

    and a closed-form bound carries over: :math:`\lambda^*_{SAM}(h_{max}) =
    \lambda^*(h_{max}(1 + \rho h_{max}))`.  With plain :func:`sgd` this is :func:`usam` exactly
    (the same object is returned).  Weight decay given as the ``weight_decay=`` keyword is part of
    the loss, so the ascent step sees it (:math:`H + \gamma I` above); ``optax.add_decayed_weights``
    inside an optax chain is part of the optimizer and acts on the final gradient.
    """
    _checks.check_nonnegative("sam_radius", radius)
    if optimizer.name == "usam":
        raise ValueError("optimizer is already quadratic.usam (SAM); do not pass sam_radius as well.")
    if optimizer.name == "sgd" and optimizer.lr_mode == "argument":
        return usam(radius)
    base = optimizer

    def matrices(h, lr):
        amp = _eye(h) + radius * h
        m, _ = base.matrices(amp @ h, lr)
        _, b = base.matrices(h, lr)
        return m, b @ amp

    lr_bound = None
    if base.lr_bound is not None:
        lr_bound = lambda h_max: base.lr_bound(h_max * (1.0 + radius * h_max))  # noqa: E731
    return base._replace(
        name=f"{base.name}+sam", matrices=matrices, lr_bound=lr_bound,
        bound_expr=f"{base.bound_expr} at h_max (1 + sam_radius h_max)",
        hyper={**base.hyper, "sam_radius": radius})


def _resolve(lr, momentum, nesterov, optimizer, sam_radius, dim, *, need_lr=True) -> LinearOptimizer:
    """One optimizer vocabulary: keywords, a LinearOptimizer, an optax object or a factory."""
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"nesterov must be True or False; got {nesterov!r}.")
    if optimizer is not None:
        if _checks.is_concrete(momentum) and np.any(np.asarray(momentum) != 0):
            raise ValueError("pass either momentum= or optimizer=, not both.")
        if nesterov:
            raise ValueError("nesterov=True goes with momentum=, not with optimizer= "
                             "(use optax.sgd(lr, momentum, nesterov=True) as the optimizer).")
        opt = _optim.linearize(optimizer, dim=dim)
        if opt.lr_mode != "argument":
            if lr is not None:
                raise ValueError(
                    f"lr={lr!r} was passed together with an optax optimizer, which carries its own "
                    "learning rate: omit lr (or pass a factory, optimizer=lambda lr: optax.sgd(lr, ...), "
                    "to make the learning rate an argument).")
        elif lr is None and need_lr:
            raise ValueError(f"lr is required with optimizer {opt.name!r} (it takes the learning rate "
                             "as an argument).")
    else:
        if lr is None and need_lr:
            raise ValueError("lr is required (or pass an optax optimizer that carries its own learning "
                             "rate, e.g. optimizer=optax.sgd(0.1, momentum=0.9)).")
        if nesterov:
            opt = _nesterov_optimizer(momentum)
        elif _checks.is_concrete(momentum) and np.all(np.asarray(momentum) == 0):
            opt = sgd()
        else:
            opt = heavy_ball(momentum)
    if not _checks.is_zero(sam_radius):
        if jnp.ndim(sam_radius) != 0:
            raise ValueError(f"sam_radius must be a scalar; got shape {jnp.shape(sam_radius)}.")
        opt = with_sam(opt, sam_radius)
    return opt


class _Problem(NamedTuple):
    h_eff: jax.Array  # P^{1/2}(H + gamma I)P^{1/2}
    eig: jax.Array  # its eigenvalues, ascending (one eigendecomposition serves checks and solves)
    basis: jax.Array  # its eigenvectors
    c_eff: jax.Array  # P^{1/2} C P^{1/2}
    sqrt_p: jax.Array | None  # P^{1/2}, or None


def _prepare(hessian, noise_cov, weight_decay, preconditioner, lr=None, *, check_pd=True) -> _Problem:
    """Validate shapes/values and remove weight decay and preconditioner (see module docstring)."""
    h = _checks.square_matrix("hessian", hessian)
    _checks.check_symmetric("hessian", h)
    d = h.shape[0]
    c = None
    if noise_cov is not None:
        c = _checks.square_matrix("noise_cov", noise_cov)
        if c.shape != h.shape:
            raise ValueError(
                f"noise_cov has shape {tuple(c.shape)} but hessian has shape {tuple(h.shape)}; "
                "they must match."
            )
        _checks.check_psd("noise_cov", c)
    if lr is not None:
        if jnp.ndim(lr) != 0:
            raise ValueError(
                f"lr must be a scalar; got shape {jnp.shape(lr)}. To sweep learning rates use "
                "jax.vmap over lr."
            )
        _checks.check_positive("lr", lr)
    if jnp.ndim(weight_decay) != 0:
        raise ValueError(f"weight_decay must be a scalar; got shape {jnp.shape(weight_decay)}.")
    h = h + weight_decay * jnp.eye(d, dtype=h.dtype)
    sqrt_p = None
    if preconditioner is not None:
        p = _checks.square_matrix("preconditioner", preconditioner)
        if p.shape != (d, d):
            raise ValueError(
                f"preconditioner has shape {tuple(p.shape)} but hessian has shape {(d, d)}."
            )
        _checks.check_spd("preconditioner", p)
        e, u = jnp.linalg.eigh(0.5 * (p + p.T))
        sqrt_p = (u * jnp.sqrt(e)[None, :]) @ u.T
        h = sqrt_p @ h @ sqrt_p
        if c is not None:
            c = sqrt_p @ c @ sqrt_p
    h = 0.5 * (h + h.T)
    eig, basis = jnp.linalg.eigh(h)
    ev = _checks.concrete_value(eig) if check_pd else None
    if ev is not None:
        e_min = float(ev[0]) if d else 1.0
        if e_min <= 0:
            what = "hessian + weight_decay*I" + (" (preconditioned)" if preconditioner is not None else "")
            raise ValueError(
                f"{what} must be positive definite for a stationary state to exist; its smallest "
                f"eigenvalue is {e_min:.4g}. Along a flat or negative-curvature direction the "
                "noise accumulates without bound."
            )
    return _Problem(h, eig, basis, c, sqrt_p)


def _numeric_lr_bound(opt: LinearOptimizer, prob) -> float:
    """Largest lr with rho(M) < 1, by bracketing + bisection (eager): per eigen-block for an
    element-wise optimizer, on the full ``kD x kD`` matrix otherwise."""
    import scipy.optimize

    h_eigs = np.asarray(prob.eig)
    if opt.elementwise:
        blocks = jax.jit(jax.vmap(lambda hh, lr: opt.matrices(hh[None, None], lr)[0], in_axes=(0, None)))
        hs = jnp.asarray(h_eigs)

        def excess(lr):
            ms = np.asarray(blocks(hs, lr))
            return max(spectral_radius(mm) for mm in ms) - 1.0
    else:
        full = jax.jit(lambda lr: opt.matrices(prob.h_eff, lr)[0])

        def excess(lr):
            return spectral_radius(full(lr)) - 1.0

    lo = 1e-8 / float(np.max(h_eigs))
    if excess(lo) >= 0:
        return 0.0
    hi = 1.0 / float(np.max(h_eigs))
    for _ in range(200):
        if excess(hi) >= 0:
            break
        lo, hi = hi, 2 * hi
    else:  # pragma: no cover
        return float("inf")
    root = float(scipy.optimize.brentq(excess, lo, hi, xtol=1e-14 * hi, rtol=1e-13))
    # brentq may land a hair on the unstable side; the bound must be a stable-side value.
    while excess(root) >= 0:
        root *= 1 - 1e-12
    return root


def _bound(opt: LinearOptimizer, prob):
    """The optimizer's stability bound (largest stable lr) for the prepared problem."""
    if opt.lr_mode == "carried":
        raise ValueError(
            "max_stable_lr needs the learning rate as a free variable, but this optax optimizer "
            "carries a fixed one. Pass a factory, optimizer=lambda lr: optax.sgd(lr, momentum=0.9), "
            "or an optax.inject_hyperparams optimizer with a learning_rate hyperparameter.")
    if opt.lr_bound is not None and opt.elementwise:
        return opt.lr_bound(prob.eig[-1])
    ev = _checks.concrete_value(prob.eig)
    if ev is None or not _checks.is_concrete(prob.h_eff):
        raise ValueError(
            f"max_stable_lr for optimizer {opt.name!r} has no closed form and is computed "
            "numerically: call it outside jit/vmap/grad."
        )
    return jnp.asarray(_numeric_lr_bound(opt, prob))


def max_stable_lr(hessian, *, momentum=0.0, nesterov: bool = False, weight_decay=0.0,
                  preconditioner=None, optimizer=None, sam_radius=0.0):
    r"""Largest learning rate for which the optimizer has a stationary state.

    Plain SGD: :math:`2/h_{max}`; heavy ball: :math:`2(1+\mu)/h_{max}`; Nesterov:
    :math:`2(1+\mu)/((1+2\mu)h_{max})`; unnormalized SAM: :math:`2/(h_{max}(1+\rho h_{max}))`
    (``sam_radius`` composes with the others: :math:`h_{max} \to h_{max}(1 + \rho h_{max})`),
    where :math:`h_{max}` is the largest eigenvalue of :math:`P^{1/2}(H+\gamma I)P^{1/2}`.
    For optimizers without a closed form (PNM, optax optimizers, user-defined) the bound is found
    numerically from :math:`\rho(M) < 1` (eager only).  Stability is a property of :math:`M` alone:
    it does not depend on the noise.

    The learning rate is the free variable, so an optax optimizer must expose it: pass a
    **factory** ``optimizer=lambda lr: optax.sgd(lr, momentum=0.9)`` (the recommended form; any
    chain works, e.g. ``lambda lr: optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(lr))``),
    or an ``optax.inject_hyperparams`` optimizer, whose ``learning_rate`` hyperparameter is varied.
    A plain optax object (fixed learning rate) raises ``ValueError``.

    Example:
      >>> import jax.numpy as jnp, optax, sgdtheory as st
      >>> float(st.max_stable_lr(jnp.diag(jnp.array([1.0, 3.0]))))
      0.6666666666666666
      >>> round(float(st.max_stable_lr(jnp.diag(jnp.array([1.0, 3.0])),
      ...                              optimizer=lambda lr: optax.sgd(lr, momentum=0.5))), 10)
      1.0
    """
    opt = _resolve(None, momentum, nesterov, optimizer, sam_radius, _dim(hessian), need_lr=False)
    prob = _prepare(hessian, None, weight_decay, preconditioner)
    _check_route(opt, prob)
    return _bound(opt, prob)


def is_stable(hessian, lr=None, *, momentum=0.0, nesterov: bool = False, weight_decay=0.0,
              preconditioner=None, optimizer=None, sam_radius=0.0):
    r"""Whether a stationary state exists: :math:`\rho(M) < 1`, as a jit-/vmap-able boolean.

    Exact for any :class:`LinearOptimizer` and any (traced) learning rate and hyperparameters:
    every eigen-block :math:`M_i` is tested by the Schur--Cohn recursion on its characteristic
    polynomial, so momentum outside [0, 1), PNM and user-defined optimizers are all covered.  A
    non-element-wise optax optimizer (e.g. with :func:`sgdtheory.optim.precondition`) is tested on
    the eigenvalues of its full ``kD x kD`` matrix.  ``lr`` is omitted for an optax optimizer that
    carries its own.  Raises (eagerly) only for invalid input such as a non-symmetric Hessian.
    """
    opt = _resolve(lr, momentum, nesterov, optimizer, sam_radius, _dim(hessian))
    prob = _prepare(hessian, None, weight_decay, preconditioner, check_pd=False)
    _check_route(opt, prob)
    return _stable(opt, prob, lr)


def _check_stable(opt, prob, lr):
    if not (_checks.is_concrete(lr) and _checks.is_concrete(prob.h_eff)):
        return
    if opt.lr_mode != "argument" and lr is None:
        m = opt.matrices(prob.h_eff, None)[0] if not opt.elementwise else _blocks(opt, prob.eig, None)[0]
        mv = _checks.concrete_value(m)
        if mv is None:
            return
        rho = (spectral_radius(mv) if not opt.elementwise
               else max((spectral_radius(b) for b in mv), default=0.0))
        if not rho < 1:
            raise ValueError(
                f"the optimizer is unstable on this Hessian: the spectral radius of its transition "
                f"matrix is {rho:.6g} >= 1, so no stationary state exists. Lower its learning rate; "
                "max_stable_lr(hessian, optimizer=lambda lr: ...) gives the largest stable one.")
        return
    bound = _bound(opt, prob)
    _checks.check_lr_below(lr, bound, opt.bound_expr)


def _dim(hessian):
    shape = jnp.shape(hessian)
    return int(shape[0]) if len(shape) == 2 and shape[0] >= 1 else None


def _check_route(opt, prob):
    """A non-element-wise optimizer is linearised in the original coordinates."""
    if not opt.elementwise and prob.sqrt_p is not None:
        raise ValueError(
            "preconditioner= needs an element-wise optimizer (the same k x k block per coordinate); "
            "this optimizer is not element-wise (e.g. it contains sgdtheory.optim.precondition). "
            "Put the preconditioner into the optax chain instead: "
            "optax.chain(sgdtheory.optim.precondition(P), optimizer).")


def _charpoly(a):
    """Monic characteristic polynomials of a batch of ``k x k`` matrices (Faddeev--LeVerrier),
    coefficients highest degree first: ``det(zI - A) = z^k + c_1 z^{k-1} + ... + c_k``."""
    k = a.shape[-1]
    eye = jnp.eye(k, dtype=a.dtype)
    c = jnp.ones(a.shape[:-2], a.dtype)
    coeffs, mk = [c], jnp.zeros_like(a)
    for i in range(1, k + 1):
        mk = a @ mk + c[..., None, None] * jnp.broadcast_to(eye, a.shape)
        c = -jnp.trace(a @ mk, axis1=-2, axis2=-1) / i
        coeffs.append(c)
    return jnp.stack(coeffs, axis=-1)


@jax.jit
def _blocks_stable(m):
    """All eigen-blocks ``(D, k, k)`` have spectral radius < 1 (compiled once per shape)."""
    return jnp.all(_roots_inside_unit_disk(_charpoly(m)))


def _roots_inside_unit_disk(p):
    """Schur--Cohn test: all roots of the polynomial(s) ``p`` (highest degree first) have |z| < 1.

    Each step needs |r| < 1 for the reflection coefficient r = p_n / p_0 and recurses on
    (p - r p*)/z, of one degree less (p* = p with reversed coefficients)."""
    ok = jnp.ones(p.shape[:-1], bool)
    for deg in range(p.shape[-1] - 1, 0, -1):
        r = p[..., deg] / p[..., 0]
        ok = ok & (jnp.abs(r) < 1)
        p = p[..., :deg] - r[..., None] * p[..., deg:0:-1]
    return ok


def _stable(opt, prob, lr, m=None):
    """rho(M) < 1 (all eigen-blocks, or the full matrix of a non-element-wise optimizer), lr > 0
    (when the learning rate is an argument) and a positive-definite effective Hessian."""
    if opt.elementwise:
        if m is None:
            m, _ = _blocks(opt, prob.eig, lr)
        ok = _blocks_stable(m)
    else:
        if m is None:
            m, _ = opt.matrices(prob.h_eff, lr)
        finite = jnp.all(jnp.isfinite(m))
        rho = jnp.max(jnp.abs(jnp.linalg.eigvals(jnp.where(finite, m, 0.0))), initial=0.0)
        ok = finite & (rho < 1)
    if lr is not None:
        ok = ok & (lr > 0)
    return ok & (jnp.min(prob.eig, initial=jnp.inf) > 0)


def _nan_if_unstable(result, opt, prob, lr, m=None):
    """Where values may be traced (jit/vmap/grad over lr, momentum, weight decay, ...) the eager
    checks cannot run: an unstable configuration then yields NaN, never a meaningless matrix.
    The test is exact for every optimizer (:func:`is_stable`); concrete input was already checked."""
    return jnp.where(_stable(opt, prob, lr, m), result, jnp.nan)


def transition_matrices(hessian, lr=None, *, momentum=0.0, nesterov: bool = False, weight_decay=0.0,
                        preconditioner=None, optimizer=None, sam_radius=0.0):
    """The dense ``(M, B)`` of the optimizer in the preconditioned coordinates ``v = P^{-1/2} w``.

    ``optimizer`` may be an optax optimizer (then ``lr`` is omitted); its matrices come from
    :func:`sgdtheory.optim.linearize`.  Useful for custom analyses (e.g. the spectral radius,
    ``jnp.max(jnp.abs(jnp.linalg.eigvals(M)))``) and as the input of an independent solver.
    """
    opt = _resolve(lr, momentum, nesterov, optimizer, sam_radius, _dim(hessian))
    prob = _prepare(hessian, None, weight_decay, preconditioner, lr)
    _check_route(opt, prob)
    return opt.matrices(prob.h_eff, lr)


def _blocks(opt, h_eigs, lr):
    """Per-eigenvalue (k, k) transition blocks and (k,) noise-input vectors."""
    m, b = jax.vmap(lambda hh: opt.matrices(hh[None, None], lr))(h_eigs)
    return m, b[..., 0]


def _from_eigenbasis(sig_tilde, u, sqrt_p):
    sig = u @ sig_tilde @ u.T
    if sqrt_p is not None:
        sig = sqrt_p @ sig @ sqrt_p
    return 0.5 * (sig + sig.T)


def stationary_covariance(hessian, noise_cov, lr=None, *, momentum=0.0, nesterov: bool = False,
                          weight_decay=0.0, preconditioner=None, optimizer=None, sam_radius=0.0,
                          method: str = "eigh"):
    r"""Exact stationary covariance :math:`\Sigma = \operatorname{Cov}(w)` of discrete-time SGD.

    Solves :math:`X = M X M^\top + B C B^\top` for the optimizer's transition matrix :math:`M`
    (module docstring) and returns the ``w``-``w`` block.  For plain SGD,
    :math:`\Sigma = (I-\lambda H)\Sigma(I-\lambda H) + \lambda^2 C`, i.e.
    :math:`H\Sigma + \Sigma H - \lambda H\Sigma H = \lambda C` (Liu, Ziyin & Ueda 2021, Thm 1);
    :math:`H` and :math:`C` need not commute.  Exact for any noise distribution with covariance
    :math:`C` that does not depend on ``w`` (additive noise); for minibatch noise of a linear model,
    which is multiplicative, see :mod:`sgdtheory.linreg`.

    Args:
      hessian: ``(D, D)`` symmetric :math:`H`.
      noise_cov: ``(D, D)`` symmetric PSD :math:`C`, covariance of the per-step gradient noise.
      lr: scalar learning rate :math:`\lambda > 0`, below :func:`max_stable_lr`.  Omitted when
        ``optimizer`` is an optax object, which carries its own (passing both raises).
      momentum: heavy-ball :math:`\mu \in [0, 1)` (optax convention); not with ``optimizer``.
      nesterov: with ``momentum``, Nesterov momentum as ``optax.sgd(lr, momentum, nesterov=True)``.
      weight_decay: coupled L2 :math:`\gamma` (may be negative while :math:`H + \gamma I \succ 0`).
        It is part of the loss: the SAM ascent step sees it (``sam_radius``).
      preconditioner: optional ``(D, D)`` SPD :math:`P` (update :math:`-\lambda P m`).
      optimizer: the optimizer, in one vocabulary with the simulators: an optax
        ``GradientTransformation`` that is linear in (params, state, gradient) -- e.g.
        ``optax.sgd(0.1, momentum=0.9, nesterov=True)``,
        ``optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, 0.9))``,
        ``optax.chain(sgdtheory.optim.precondition(P), optax.sgd(0.1))``,
        ``sgdtheory.optim.pnm(0.1)`` -- linearised by :func:`sgdtheory.optim.linearize`; a factory
        ``lambda lr: optax...`` (then pass ``lr``); or a :class:`LinearOptimizer`
        (:func:`nesterov`, :func:`pnm`, :func:`usam`, ...).  Non-linear optimizers (Adam, RMSProp,
        sign-SGD, clipping) raise ``ValueError``: simulate them instead.
      sam_radius: unnormalised SAM radius :math:`\rho \ge 0` around any optimizer: the gradient
        fed to it is :math:`\hat g(w + \rho P\hat g(w)) = (I + \rho H_\gamma P)\hat g(w)` with
        the same noise draw, :math:`H_\gamma = H + \gamma I` (:func:`with_sam`); with plain SGD
        identical to ``optimizer=usam(rho)``.
      method: ``"eigh"`` (eigenbasis, O(D^3), default) or ``"dense"`` (doubling iteration on the
        full ``kD x kD`` transition matrix; any optimizer, O((kD)^3 log)).  A non-element-wise
        optax optimizer always takes the dense route.

    Returns:
      ``(D, D)`` stationary covariance of ``w``.

    Raises:
      ValueError: bad shapes, non-symmetric ``hessian``, non-PSD ``noise_cov``, ``lr <= 0``,
        momentum outside [0, 1), ``H + gamma I`` not positive definite, or ``lr`` at/past the
        stability bound (value checks only when the values are concrete, i.e. outside ``jit``).

    Example:
      >>> import jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.1])); C = jnp.eye(2)
      >>> st.stationary_covariance(H, C, 0.5).round(4)   # lam C / (h (2 - lam h)) on the diagonal
      Array([[0.3333, 0.    ],
             [0.    , 2.5641]], dtype=float64)
    """
    if method not in ("eigh", "dense"):
        raise ValueError(f"method must be 'eigh' or 'dense'; got {method!r}.")
    opt = _resolve(lr, momentum, nesterov, optimizer, sam_radius, _dim(hessian))
    prob = _prepare(hessian, noise_cov, weight_decay, preconditioner, lr)
    _check_route(opt, prob)
    _check_stable(opt, prob, lr)
    if method == "eigh" and opt.elementwise:
        e, u = prob.eig, prob.basis
        m, b = _blocks(opt, e, lr)
        c_tilde = u.T @ prob.c_eff @ u
        sig_tilde = pairwise_stein(m, b, c_tilde)
        return _nan_if_unstable(_from_eigenbasis(sig_tilde, u, prob.sqrt_p), opt, prob, lr, m)
    d = prob.h_eff.shape[0]
    m, b = opt.matrices(prob.h_eff, lr)
    x = solve_discrete_lyapunov(m, b @ prob.c_eff @ b.T)
    sig = x[:d, :d]
    if prob.sqrt_p is not None:
        sig = prob.sqrt_p @ sig @ prob.sqrt_p
    return _nan_if_unstable(0.5 * (sig + sig.T), opt, prob, lr, None if opt.elementwise else m)


def damped_newton_covariance(hessian, noise_cov, lr, *, momentum=0.0):
    r"""Exact stationary covariance of damped Newton, :math:`w \leftarrow w - \lambda H^{-1}m`,
    :math:`m \leftarrow \mu m + \hat g` -- **exact**, closed form.

    .. math:: \Sigma = \frac{1+\mu}{1-\mu}\,\frac{\lambda}{2(1+\mu)-\lambda}\,H^{-1}CH^{-1},
              \qquad 0 < \lambda < 2(1+\mu).

    Derivation: with :math:`w = H^{-1/2}v` the preconditioned problem has :math:`H' = I` and
    :math:`C' = H^{-1/2}CH^{-1/2}`, so every eigen-pair is the scalar heavy ball with :math:`h = 1`,
    whose stationary variance per unit noise is
    :math:`\lambda(1+\mu)/[(1-\mu)(2(1+\mu)-\lambda)]` (the :math:`2\times2` Lyapunov solve of
    :func:`heavy_ball`); mapping back gives :math:`H^{-1/2}C'H^{-1/2} = H^{-1}CH^{-1}`.  The
    stability bound :math:`\lambda < 2(1+\mu)` does not depend on :math:`H` (every direction has
    unit effective curvature).  Liu, Ziyin & Ueda (ICML 2021), Sec. 5 (second-order methods);
    identical to ``stationary_covariance(H, C, lr, momentum=mu, preconditioner=inv(H))`` (tested
    to round-off).

    Args:
      hessian: ``(D, D)`` symmetric positive-definite :math:`H`.
      noise_cov: ``(D, D)`` PSD :math:`C` (per-step gradient-noise covariance, additive).
      lr: :math:`\lambda \in (0, 2(1+\mu))`.
      momentum: :math:`\mu \in [0, 1)`.

    Example:
      >>> import jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([2.0, 0.5])); C = jnp.eye(2)
      >>> tuple(round(float(v), 6) for v in st.quadratic.damped_newton_covariance(H, C, 0.5).diagonal())
      (0.083333, 1.333333)
    """
    prob = _prepare(hessian, noise_cov, 0.0, None, lr)
    _checks.check_momentum(momentum)
    if _checks.is_concrete(lr) and _checks.is_concrete(momentum):
        _checks.check_lr_below(lr, 2.0 * (1.0 + momentum), "2(1+momentum)")
    e, u = prob.eig, prob.basis
    h_inv = (u / e[None, :]) @ u.T
    factor = (1.0 + momentum) / (1.0 - momentum) * lr / (2.0 * (1.0 + momentum) - lr)
    sig = factor * h_inv @ prob.c_eff @ h_inv
    ok = (lr > 0) & (lr < 2.0 * (1.0 + momentum)) & (momentum >= 0) & (momentum < 1)
    return jnp.where(ok, 0.5 * (sig + sig.T), jnp.nan)


def escape_efficiency(hessian, noise_cov, lr, steps, *, continuous: bool = False, momentum=0.0):
    r"""Escape efficiency: the expected excess loss after ``steps`` steps started at the minimum.

    With :math:`w_0 = w^*` (zero momentum buffer) and additive noise of covariance :math:`C`,
    :math:`E(t) = \mathbb E[L(w_t)] - L(w^*) = \tfrac12\operatorname{tr}(H\Sigma_t)`.  For plain SGD
    (:math:`A = I - \lambda H`) :math:`\Sigma_t = A\Sigma_{t-1}A + \lambda^2 C`, :math:`\Sigma_0 = 0`,
    so :math:`\Sigma_t = \Sigma_\infty - A^t\Sigma_\infty A^t`; only the diagonal of
    :math:`\tilde C = U^\top C U` in the eigenbasis of :math:`H` enters the trace -- **exact**
    (Liu, Ziyin & Ueda 2021, Thm 7):

    .. math:: E_d(t) = \frac{\lambda}{4}\operatorname{tr}\Big[\big(I - \tfrac{\lambda}{2}H\big)^{-1}
              \big(I - (I - \lambda H)^{2t}\big) C\Big]
              = \frac{\lambda}{2}\sum_i \tilde C_{ii}\,\frac{1 - (1-\lambda h_i)^{2t}}{2 - \lambda h_i}.

    ``continuous=True`` gives the Ornstein--Uhlenbeck counterpart at time :math:`\lambda t`
    (Zhu et al. 2019; Liu, Ziyin & Ueda 2021, Thm 7) -- **approximation** (small
    :math:`\lambda h_{max}`):

    .. math:: E_c(t) = \frac{\lambda}{4}\operatorname{tr}\big[(I - e^{-2\lambda H t}) C\big].

    Ordering (p1 Cor 4, **derived here** for every integer :math:`t \ge 0`): per eigen-direction
    with :math:`x = \lambda h \in (0, 2)`, :math:`E_d \ge E_c`.  For :math:`x \le 1`,
    :math:`0 \le 1 - x \le e^{-x}`; for :math:`x \ge 1/2` and :math:`t \ge 1`,
    :math:`2(1 - (1-x)^{2t}) \ge 2x(2-x) \ge (2-x) \ge (2-x)(1 - e^{-2xt})`.  Equality only at
    :math:`t = 0`.  **With momentum the ordering fails at small** :math:`t`: the heavy ball's
    overdamped limit (effective rate :math:`\lambda/(1-\mu)`, used for ``continuous=True``) grows
    like :math:`\lambda^2 t\,\mathrm{tr}(HC)/(2(1-\mu)^2)`, but the first discrete step gives
    :math:`\lambda^2\mathrm{tr}(HC)/2` whatever :math:`\mu` (momentum needs time to build up).

    With ``momentum`` the discrete value is :math:`\tfrac12\operatorname{tr}(H\Sigma_t)` from
    :func:`covariance_after` (exact, heavy ball, zero initial buffer).

    Args:
      hessian: ``(D, D)`` symmetric positive-definite :math:`H`.
      noise_cov: ``(D, D)`` PSD per-step noise covariance :math:`C`.
      lr: :math:`\lambda > 0`; for the discrete value below :math:`2(1+\mu)/h_{max}`.
      steps: a non-negative integer or a 1-D integer array (then the result has that shape).
      continuous: return :math:`E_c` instead of :math:`E_d`.
      momentum: heavy-ball :math:`\mu\in[0,1)` (optax convention).

    Returns:
      ``E(t)``: a scalar, or an array of the shape of ``steps``.  Under ``jit`` an unstable ``lr``
      gives NaN (discrete only).

    Example:
      >>> import jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.1])); C = jnp.eye(2)
      >>> st.quadratic.escape_efficiency(H, C, 1.5, jnp.array([1, 10, 1000])).round(4)
      Array([1.2375, 1.8897, 1.9054], dtype=float64)
      >>> st.quadratic.escape_efficiency(H, C, 1.5, jnp.array([1, 10, 1000]), continuous=True).round(4)
      Array([0.4535, 0.7313, 0.75  ], dtype=float64)
    """
    prob = _prepare(hessian, noise_cov, 0.0, None, lr)
    if noise_cov is None:
        raise ValueError("noise_cov is required.")
    _checks.check_momentum(momentum)
    steps = jnp.asarray(steps)
    if not jnp.issubdtype(steps.dtype, jnp.integer) or steps.ndim > 1:
        raise ValueError("steps must be a non-negative integer or a 1-D array of integers; got "
                         f"dtype {steps.dtype}, shape {steps.shape}.")
    _checks.check_nonnegative("steps", steps)
    e, u = prob.eig, prob.basis
    c_diag = jnp.einsum("ji,jk,ki->i", u, prob.c_eff, u)
    t = steps.astype(e.dtype)[..., None]
    lead = (1,) * steps.ndim + e.shape  # explicit broadcasting of (D,) against steps + (1,)
    eb, cb = e.reshape(lead), c_diag.reshape(lead)
    if continuous:
        rate = lr / (1.0 - momentum)
        return 0.25 * rate * jnp.sum(cb * -jnp.expm1(-2.0 * rate * eb * t), axis=-1)
    if _checks.is_concrete(momentum) and np.all(np.asarray(momentum) == 0):
        _checks.check_lr_below(lr, 2.0 / prob.eig[-1], "2/h_max")
        x = lr * eb
        decay = jnp.power((1.0 - x) ** 2, t)
        out = 0.5 * lr * jnp.sum(cb * (1.0 - decay) / (2.0 - x), axis=-1)
        return jnp.where((lr > 0) & (lr * e[-1] < 2.0), out, jnp.nan)
    d = e.shape[0]
    sig = covariance_after(hessian, noise_cov, lr, steps, jnp.zeros((d, d), e.dtype),
                           momentum=momentum)
    return 0.5 * jnp.einsum("ij,...ij->...", _checks.as_float_array(hessian), sig)


def _bayes_stationarity(lam, h, ratio):
    r""":math:`\sum_i (r x_i - 2)/(2 - x_i)^2`, :math:`x_i = \lambda h_i`, :math:`r = N/S`: the
    stationarity condition of :func:`bayes_kl` (``lambda * dKL/dlambda``; see :func:`bayes_optimal_lr`)."""
    x = lam * h
    return jnp.sum((ratio * x - 2.0) / (2.0 - x) ** 2)


def _bayes_root(h, ratio, iters: int = 80):
    """Root of _bayes_stationarity by bisection on its bracket, differentiated implicitly.

    Every term is <= 0 at lam = 2/(ratio h_max) and >= 0 at 2/(ratio h_min); the sum is +inf at
    2/h_max, so [2/(ratio h_max), min(2/(ratio h_min), 2/h_max)] brackets the root."""
    lo0 = 2.0 / (ratio * jnp.max(h))
    hi0 = jnp.minimum(2.0 / (ratio * jnp.min(h)), 2.0 / jnp.max(h))

    def f(lam):
        return _bayes_stationarity(lam, h, ratio)

    def solve(fn, _guess):
        def body(_, carry):
            lo, hi = carry
            mid = 0.5 * (lo + hi)
            neg = fn(mid) < 0
            return jnp.where(neg, mid, lo), jnp.where(neg, hi, mid)

        lo, hi = lax.fori_loop(0, iters, body, (lo0, hi0))
        return 0.5 * (lo + hi)

    return lax.custom_root(f, 0.5 * (lo0 + hi0), solve, lambda g, y: y / g(1.0))


def bayes_kl(hessian, n_data, batch_size, lr):
    r""":math:`\mathrm{KL}\big(\mathcal N(0,\Sigma(\lambda))\,\|\,\mathcal N(0,(NH)^{-1})\big)` for
    SGD with :math:`C = \frac{N-S}{NS}H` -- **exact** (the objective of :func:`bayes_optimal_lr`).

    .. math:: \mathrm{KL} = \tfrac12\sum_i\big(q_i - 1 - \log q_i\big),\qquad
              q_i = \frac{N-S}{S}\,\frac{\lambda h_i}{2 - \lambda h_i}.

    Arguments as in :func:`bayes_optimal_lr`, plus ``lr`` :math:`\in (0, 2/h_{max})` (NaN outside).

    Example:
      >>> import jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.1]))
      >>> tuple(round(float(st.quadratic.bayes_kl(H, 4, 1, lr)), 4) for lr in (0.6963, 0.9091))
      (0.7314, 0.8362)
    """
    h, n, s = _bayes_inputs(hessian, n_data, batch_size)
    c = (n - s) / s
    x = lr * h
    q = c * x / (2.0 - x)
    kl = 0.5 * jnp.sum(q - 1.0 - jnp.log(q))
    return jnp.where((lr > 0) & (lr * jnp.max(h) < 2.0), kl, jnp.nan)


def _bayes_inputs(hessian, n_data, batch_size):
    h = _checks.square_matrix("hessian", hessian)
    _checks.check_symmetric("hessian", h)
    eig = jnp.linalg.eigvalsh(0.5 * (h + h.T))
    ev = _checks.concrete_value(eig)
    if ev is not None and ev[0] <= 0:
        raise ValueError(f"hessian must be positive definite (the target posterior N(0, (N H)^-1) "
                         f"needs it); its smallest eigenvalue is {float(ev[0]):.4g}.")
    for name, v in (("n_data", n_data), ("batch_size", batch_size)):
        if jnp.ndim(v) != 0:
            raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(v)}.")
        _checks.check_positive(name, v)
    nv, sv = _checks.concrete_value(n_data), _checks.concrete_value(batch_size)
    if nv is not None and sv is not None and not float(sv) < float(nv):
        raise ValueError(f"batch_size={float(sv):.6g} must be smaller than n_data={float(nv):.6g}: "
                         "at S = N the minibatch gradient has no noise (C = (N-S)/(NS) H = 0), "
                         "so SGD collapses to a point and no learning rate matches the posterior.")
    n = jnp.asarray(n_data, eig.dtype)
    s = jnp.asarray(batch_size, eig.dtype)
    return eig, n, s


def bayes_optimal_lr(hessian, n_data, batch_size, *, continuous: bool = False):
    r"""Constant learning rate whose stationary SGD law is closest to the Laplace posterior.

    Noise model (Liu, Ziyin & Ueda 2021, Sec. 4.3, after Mandt et al. 2017): minibatches of ``S``
    out of ``N`` without replacement with the Hessian approximation :math:`C = \frac{N-S}{NS}H`, so
    the exact discrete stationary covariance is (p1 Thm 4)
    :math:`\Sigma(\lambda) = \lambda\frac{N-S}{NS}(2I-\lambda H)^{-1}`.  The learning rate minimising
    :math:`\mathrm{KL}(\mathcal N(0,\Sigma)\,\|\,\mathcal N(0,(NH)^{-1}))` (:func:`bayes_kl`) is the
    root in :math:`(0, 2/h_{max})` of p1 Thm 6,

    .. math:: \frac{N-2S}{S}\sum_i\frac{h_i}{2-\lambda h_i}
              + \frac{N-S}{S}\,\lambda\sum_i\frac{h_i^2}{(2-\lambda h_i)^2} = \frac{D}{\lambda}
              \iff \sum_i\frac{(N/S)\,\lambda h_i - 2}{(2-\lambda h_i)^2} = 0

    -- **exact** (the second form is derived here; the two agree term by term).  Equivalently
    :math:`\lambda^* = \frac{2S}{N}\,\sum_i w_i / \sum_i w_i h_i` with
    :math:`w_i = (2-\lambda^* h_i)^{-2}`: a weighted harmonic-type mean that leans on the sharp
    directions.  The KL is :math:`+\infty` at both ends of the interval, so a root exists; for
    :math:`N \ge 2S` every term is increasing in :math:`\lambda`, so it is unique (**derived here**);
    for :math:`S < N < 2S` uniqueness was checked on random spectra (3000 cases, ``N/S - 1`` down to
    1e-4; the test suite repeats a smaller grid).  It is found by 80 bisection steps in ``lax`` on
    the bracket :math:`[2S/(Nh_{max}), \min(2S/(Nh_{min}), 2/h_{max})]` (jit-/vmap-able) and
    differentiated implicitly (``lax.custom_root``): ``jax.grad`` with respect to ``H``, ``N`` or
    ``S`` works.

    ``continuous=True`` returns Mandt et al. (2017)'s small-learning-rate optimum

    .. math:: \lambda_M = \frac{2SD}{N\operatorname{tr}H},

    the limit :math:`w_i \to 1` of the equation above (**derived here**), and exact when
    :math:`H \propto I` (then the stationary law equals the posterior: KL = 0).  It overestimates
    :math:`\lambda^*` when the spectrum is wide and :math:`\lambda^* h_{max}` is not small: by
    13 % for :math:`h = (1, 0.1)` at :math:`N/S = 10` and by 31 % at :math:`N/S = 4`; at
    :math:`N/S = 1.5` it is 2.42, past the stability bound :math:`2/h_{max} = 2`, where SGD
    diverges (table in ``docs/theory/quadratic.md``).  Minimising the same KL with the continuous-time covariance
    :math:`\lambda\frac{N-S}{2NS}I` for this :math:`C` would give :math:`2SD/((N-S)\operatorname{tr}H)`
    instead, which is *not* the small-:math:`\lambda` limit of the exact optimum (it is off by
    :math:`N/(N-S)` even for :math:`H = I`); Mandt et al. used :math:`C = H/S`.

    Args:
      hessian: ``(D, D)`` symmetric positive-definite :math:`H` (Hessian of the *mean* loss).
      n_data: dataset size :math:`N`.
      batch_size: :math:`S`, with :math:`0 < S < N` (any scalars: ``n_data`` and ``batch_size``
        may be traced and differentiated).
      continuous: Mandt et al.'s :math:`\lambda_M` instead.

    Returns:
      The scalar learning rate.

    Raises:
      ValueError: bad shapes, non-symmetric or non-positive-definite ``hessian``,
        ``batch_size >= n_data``, non-positive sizes.

    Example:
      >>> import jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.1]))
      >>> round(float(st.quadratic.bayes_optimal_lr(H, 4, 1)), 6)
      0.696299
      >>> round(float(st.quadratic.bayes_optimal_lr(H, 4, 1, continuous=True)), 6)  # 2SD/(N tr H)
      0.909091
    """
    h, n, s = _bayes_inputs(hessian, n_data, batch_size)
    if continuous:
        return 2.0 * s * h.shape[0] / (n * jnp.sum(h))
    return _bayes_root(h, n / s)


def stationary_covariance_continuous(hessian, noise_cov, lr, *, momentum=0.0, weight_decay=0.0,
                                     preconditioner=None):
    r"""Small-learning-rate (continuous-time, Mandt et al. 2017) approximation -- **approximate**.

    Solves :math:`H\Sigma + \Sigma H = \lambda C/(1-\mu)` (in the preconditioned coordinates), the
    Ornstein-Uhlenbeck limit of SGD.  It drops the :math:`\lambda H\Sigma H` term of the exact
    equation, so along an eigen-direction its ratio to the exact answer is
    :math:`1 - \lambda h/(2(1+\mu))`: 5 % low at :math:`\lambda h = 0.1`, 25 % low at
    :math:`\lambda h = 0.5`, and with non-commuting :math:`H, C` even off-diagonal signs can be
    wrong at large :math:`\lambda`.  Use it only for :math:`\lambda h_{max} \ll 1`, or as the
    comparison that shows why the exact :func:`stationary_covariance` is needed.
    """
    _checks.check_momentum(momentum)
    prob = _prepare(hessian, noise_cov, weight_decay, preconditioner, lr)
    e, u = prob.eig, prob.basis
    c_tilde = u.T @ prob.c_eff @ u
    sig_tilde = lr * c_tilde / ((1.0 - momentum) * (e[:, None] + e[None, :]))
    return _from_eigenbasis(sig_tilde, u, prob.sqrt_p)


def _matrix_power(a, t, nbits: int = 40):
    """``a^t`` for a batch of small matrices and a (possibly traced) integer ``t >= 0``."""
    t = jnp.asarray(t, dtype=jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)

    def body(i, carry):
        result, base = carry
        bit = (t >> i) & 1
        result = jnp.where(bit == 1, result @ base, result)
        return result, base @ base

    result, _ = lax.fori_loop(0, nbits, body, (eye, a))
    return result


def covariance_after(hessian, noise_cov, lr=None, steps=None, init_cov=None, *, momentum=0.0,
                     nesterov: bool = False, weight_decay=0.0, preconditioner=None, optimizer=None,
                     sam_radius=0.0):
    r"""Exact covariance of ``w`` after ``steps`` steps (transient relaxation).

    :math:`X_t = M X_{t-1} M^\top + B C B^\top` with :math:`X_0` holding ``init_cov`` in the
    ``w``-block and zero optimizer buffers (optax initialises momentum to 0); in closed form
    :math:`X_t = M^t (X_0 - X_\infty) (M^t)^\top + X_\infty`, evaluated per eigen-pair.

    Args:
      steps: a non-negative integer or a 1-D integer array of step counts (then the result has a
        leading axis of that length).
      init_cov: ``(D, D)`` PSD covariance of the initial ``w`` (zeros for a deterministic start).

    The other arguments are as in :func:`stationary_covariance`; ``steps`` and ``init_cov`` are
    required (they have defaults only so that ``lr`` can be omitted for an optax optimizer:
    ``covariance_after(H, C, steps=100, init_cov=X0, optimizer=optax.sgd(0.1, 0.9))``).  A
    non-element-wise optimizer is propagated on the full ``kD x kD`` matrix.
    """
    if steps is None or init_cov is None:
        raise ValueError("covariance_after needs steps= and init_cov=.")
    opt = _resolve(lr, momentum, nesterov, optimizer, sam_radius, _dim(hessian))
    prob = _prepare(hessian, noise_cov, weight_decay, preconditioner, lr)
    _check_route(opt, prob)
    _check_stable(opt, prob, lr)
    d = prob.h_eff.shape[0]
    x0 = _checks.square_matrix("init_cov", init_cov)
    if x0.shape != (d, d):
        raise ValueError(f"init_cov has shape {tuple(x0.shape)}; expected {(d, d)}.")
    _checks.check_psd("init_cov", x0)
    steps = jnp.asarray(steps)
    if not jnp.issubdtype(steps.dtype, jnp.integer) or steps.ndim > 1:
        raise ValueError("steps must be a non-negative integer or a 1-D array of integers.")
    _checks.check_nonnegative("steps", steps)
    if not opt.elementwise:  # dense route, original coordinates (no keyword preconditioner)
        m, b = opt.matrices(prob.h_eff, lr)
        x_inf = solve_discrete_lyapunov(m, b @ prob.c_eff @ b.T)
        diff = jnp.zeros_like(x_inf).at[:d, :d].set(x0) - x_inf

        def at_dense(t):
            mt = _matrix_power(m[None], t)[0]
            x = mt @ diff @ mt.T + x_inf
            return 0.5 * (x[:d, :d] + x[:d, :d].T)

        out = at_dense(steps) if steps.ndim == 0 else jax.vmap(at_dense)(steps)
        return _nan_if_unstable(out, opt, prob, lr, m)
    e, u = prob.eig, prob.basis
    m, b = _blocks(opt, e, lr)
    c_tilde = u.T @ prob.c_eff @ u
    # Full k x k blocks of X_inf per eigen-pair (i, j): (D, D, k, k).
    x_inf = _pair_blocks(m, b, c_tilde)
    if prob.sqrt_p is not None:
        inv_sqrt = jnp.linalg.inv(prob.sqrt_p)
        x0 = inv_sqrt @ x0 @ inv_sqrt
    x0_tilde = u.T @ x0 @ u
    k = opt.state_size
    x0_blocks = jnp.zeros((d, d, k, k), dtype=x_inf.dtype).at[:, :, 0, 0].set(x0_tilde)
    diff = x0_blocks - x_inf

    def at(t):
        mt = _matrix_power(m, t)  # (D, k, k)
        blk = jnp.einsum("iab,ijbc,jdc->ijad", mt, diff, mt)[..., 0, 0]
        return _from_eigenbasis(blk + x_inf[..., 0, 0], u, prob.sqrt_p)

    out = at(steps) if steps.ndim == 0 else jax.vmap(at)(steps)
    return _nan_if_unstable(out, opt, prob, lr)


def _pair_blocks(m, b, c):
    """Full (D, D, k, k) stationary blocks X_ij = M_i X_ij M_j^T + c_ij b_i b_j^T."""
    return pair_blocks(m, b) * c[:, :, None, None]


def stationary_loss(hessian, noise_cov, lr=None, *, momentum=0.0, nesterov: bool = False,
                    weight_decay=0.0, preconditioner=None, optimizer=None, sam_radius=0.0):
    r"""Expected excess loss at stationarity, :math:`\mathbb E[L(w)] - L(w_\infty) = \tfrac12\operatorname{tr}(H\Sigma)`.

    Exact because :math:`L` is quadratic and :math:`\mathbb E w = w_\infty`.  Here :math:`H` is the
    Hessian of the unregularised loss; with weight decay :math:`w_\infty = (H+\gamma I)^{-1}Hw^*`
    and :math:`L(w_\infty) > 0` adds a deterministic bias not included here.  For plain SGD,
    :math:`\tfrac{\lambda}{4}\operatorname{tr}[(I - \lambda H/2)^{-1} C]` (Liu, Ziyin & Ueda 2021,
    Thm 5).  The arguments are those of :func:`stationary_covariance` (``optimizer`` may be an
    optax object, then ``lr`` is omitted).
    """
    sig = stationary_covariance(hessian, noise_cov, lr, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay, preconditioner=preconditioner,
                                optimizer=optimizer, sam_radius=sam_radius)
    return 0.5 * jnp.sum(_checks.as_float_array(hessian) * sig)


from sgdtheory._mean_square import mean_square_max_lr  # noqa: E402
