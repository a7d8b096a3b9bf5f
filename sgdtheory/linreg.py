r"""Exact discrete-time SGD theory of linear regression: online Gaussian data and finite datasets.

The gradient noise of minibatch SGD on a linear model is *multiplicative*: its covariance depends on
where the weights are. For linear regression it is exactly quadratic in the weights, so the second
moments close and the stationary state is the solution of a *linear* (self-consistent) equation --
not the additive-noise Lyapunov equation of :mod:`sgdtheory.quadratic` with a fixed ``C``.
Full derivations: ``docs/theory/linreg.md``.

**Online model** (fresh samples every step). Inputs :math:`x\sim\mathcal N(0, A)`, targets
:math:`y = u^\top x + \varepsilon`, :math:`\operatorname{Var}\varepsilon = \sigma^2`; optionally the model
is trained on :math:`\tilde x = x + n`, :math:`n\sim\mathcal N(0, B)`. With :math:`K = A + B` the
regression of :math:`y` on :math:`\tilde x` is exactly :math:`y = v^\top\tilde x + \eta` with
:math:`Kv = Au` and :math:`\eta` Gaussian, independent of :math:`\tilde x`, of variance
:math:`s^2 = \sigma^2 + u^\top A u - v^\top K v`. Per step (batch ``S``, lr :math:`\lambda`, coupled
weight decay :math:`\gamma`, optional heavy-ball momentum :math:`\mu`):
:math:`\hat g = (\hat K_B + \gamma)w - \frac1S\sum_b \tilde x_b y_b`, with
:math:`\hat K_B = \frac1S\sum_b\tilde x_b\tilde x_b^\top`. The Gaussian fourth moment (Isserlis)
:math:`\mathbb E[\tilde x\tilde x^\top M\tilde x\tilde x^\top] = 2KMK + \mathrm{tr}(KM)K` gives, with
:math:`w_\infty = (K+\gamma)^{-1}Au`, :math:`b = w_\infty - v` and :math:`\Sigma = \operatorname{Cov} w`,
the stationary gradient-noise covariance

.. math:: C(\Sigma) = \frac1S\left[K\Sigma K + \mathrm{tr}(K\Sigma)K + Kbb^\top K
          + (b^\top K b + s^2)K\right].

The stationary covariance solves :math:`X = MXM^\top + B_{opt} C(\Sigma) B_{opt}^\top` for the
optimizer's transition matrices (:mod:`sgdtheory.quadratic`) on :math:`K+\gamma I`; in the
eigenbasis of :math:`K` each pair of directions decouples except for the rank-one
:math:`\mathrm{tr}(K\Sigma)` term, which is solved self-consistently (closed form, ``O(D^2)``).

**Finite dataset.** SGD on a fixed dataset is the random affine map
:math:`w \leftarrow (I - \lambda(\hat H_B+\gamma))w + \lambda X_B^\top y_B/S`; its batch moments
follow in closed form from per-sample statistics with the factor ``f_S`` of
:func:`sgdtheory.noise.batch_factor` (no enumeration of batches), and the stationary covariance is
one ``D^2 x D^2`` linear solve.

References:
  Ziyin, Liu, Mori & Ueda, "Strength of minibatch noise in SGD", ICLR 2022 (arXiv:2102.05375):
  Lemma 1, Thms 2-4, 6, 8, 9, Props 1, 3, 8, 9, Cors 1, 4.
  Wu, Ma & E, NeurIPS 2018 (mean-square stability).
  Isserlis, Biometrika 12 (1918) (Gaussian fourth moments).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgdtheory import _checks
from sgdtheory import optim as _optim
from sgdtheory._linalg import pairwise_stein
from sgdtheory._mean_square import batch_factor, mean_square_max_lr, resolve_sampling
from sgdtheory.quadratic import heavy_ball

__all__ = [
    "OnlineStationary",
    "DatasetStationary",
    "LearningCurve",
    "online_stationary",
    "online_max_lr",
    "online_is_stable",
    "learning_curve",
    "dataset_stationary",
    "dataset_max_lr",
    "ZiyinLabelNoise",
    "ziyin_label_noise",
    "ziyin_weight_decay_test_loss",
    "ziyin_input_noise_test_loss",
    "ziyin_weight_decay_1d_test_loss",
    "ziyin_negative_weight_decay_is_optimal",
]


class OnlineStationary(NamedTuple):
    """Stationary state of online SGD on Gaussian linear regression.

    Attributes:
      param_mean: ``(D,)`` stationary mean :math:`w_\\infty = (K+\\gamma I)^{-1}Au`.
      param_cov: ``(D, D)`` stationary covariance :math:`\\Sigma` of ``w``.
      noise_cov: ``(D, D)`` stationary per-step gradient-noise covariance :math:`C(\\Sigma)`.
      train_loss: :math:`\\mathbb E[\\tfrac12(w^\\top\\tilde x - y)^2]` (data loss seen by the
        optimizer, noises included; the L2 penalty is NOT included).
      test_loss: :math:`\\tfrac12\\mathbb E[(w-u)^\\top A(w-u)]` (clean, no label noise).
    """

    param_mean: jax.Array
    param_cov: jax.Array
    noise_cov: jax.Array
    train_loss: jax.Array
    test_loss: jax.Array


class DatasetStationary(NamedTuple):
    """Stationary state of SGD on a fixed finite dataset.

    Attributes:
      param_mean: ``(D,)`` stationary mean (ridge solution; minimum-norm OLS when rank-deficient).
      param_cov: ``(D, D)`` stationary covariance.
      noise_cov: ``(D, D)`` stationary-averaged per-step gradient-noise covariance.
      train_loss: :math:`\\mathbb E[\\frac1N\\sum_i\\tfrac12(x_i^\\top w - y_i)^2]` (no L2 penalty;
        on the stored targets: without label noise).
    """

    param_mean: jax.Array
    param_cov: jax.Array
    noise_cov: jax.Array
    train_loss: jax.Array


class LearningCurve(NamedTuple):
    """Expected losses after ``t = 0..steps`` steps (arrays of length ``steps + 1``)."""

    train_loss: jax.Array
    test_loss: jax.Array


# ----------------------------------------------------------------------------------------------
# one vocabulary: the teacher w_star and optax optimizers
# ----------------------------------------------------------------------------------------------


def _teacher(true_weights, w_star):
    """``w_star`` (the simulators' name) or the older ``true_weights``; not both."""
    if true_weights is not None and w_star is not None:
        raise ValueError("pass w_star= (or its older name true_weights=), not both.")
    return w_star if w_star is not None else true_weights


def _from_optimizer(lr, momentum, weight_decay, optimizer, *, allow_momentum: bool, where: str,
                    need_lr: bool = True):
    """``(lr, momentum, weight_decay)`` from the keywords or from an optax ``optimizer``.

    The optimizer is linearised (:func:`sgdtheory.optim.linearize`) and its blocks are compared
    with the supported templates: plain SGD and (if ``allow_momentum``) heavy-ball momentum, each
    optionally after ``optax.add_decayed_weights`` (coupled decay, added to ``weight_decay``).
    """
    if optimizer is None:
        if lr is None and need_lr:
            raise ValueError(f"{where}: lr is required (or pass optimizer=optax.sgd(lr, ...)).")
        return lr, momentum, weight_decay
    if not _checks.is_zero(momentum):
        raise ValueError("pass either momentum= or optimizer=, not both.")
    lin = _optim.linearize(optimizer)
    kind, mu = lin.hyper.get("kind"), lin.hyper.get("momentum", 0.0)
    if kind in ("heavy_ball", "nesterov") and mu == 0:
        kind = "sgd"
    supported = ("sgd", "heavy_ball") if allow_momentum else ("sgd",)
    if not lin.elementwise or kind not in supported:
        forms = ("optax.sgd(lr) or optax.sgd(lr, momentum)" if allow_momentum else "optax.sgd(lr)")
        got = kind if kind is not None else "none of these (read off its linearisation)"
        raise ValueError(
            f"{where} supports optimizer= {forms}, optionally after optax.add_decayed_weights(gamma) "
            f"(or a factory lambda lr: ... of that form); got {got}. The multiplicative-noise "
            "algebra here is derived for these updates only: simulate other optimizers with "
            "sgdtheory.simulate.linreg_sgd(..., optimizer=...).")
    if lin.lr_mode == "argument":
        if lr is None and need_lr:
            raise ValueError(f"{where}: the optimizer is a factory lr -> optax optimizer; pass lr.")
    elif not need_lr:
        raise ValueError(
            f"{where} needs the learning rate as a free variable, but this optax optimizer carries "
            "a fixed one: pass a factory, optimizer=lambda lr: optax.sgd(lr, ...).")
    elif lr is not None:
        raise ValueError(f"lr={lr!r} was passed together with an optax optimizer, which carries its "
                         "own learning rate: omit lr.")
    else:
        lr = lin.hyper["lr"]
    return lr, (0.0 if kind == "sgd" else mu), weight_decay + lin.hyper["weight_decay"]


# ----------------------------------------------------------------------------------------------
# online model
# ----------------------------------------------------------------------------------------------


class _Online(NamedTuple):
    k: jax.Array  # eigenvalues of K
    u: jax.Array  # eigenvectors of K
    a_cov: jax.Array  # A
    kk: jax.Array  # K
    w_inf: jax.Array
    bt: jax.Array  # b in the eigenbasis
    s2: jax.Array  # effective label-noise variance
    active: jax.Array  # directions that move (k > 0 or gamma != 0)
    uw: jax.Array  # teacher u


def _prepare_online(input_cov, label_noise_var, weight_decay, true_weights, input_noise_cov):
    a = _checks.square_matrix("input_cov", input_cov)
    _checks.check_psd("input_cov", a)
    a = 0.5 * (a + a.T)
    d = a.shape[0]
    if input_noise_cov is None:
        bn = jnp.zeros_like(a)
    else:
        bn = _checks.square_matrix("input_noise_cov", input_noise_cov)
        if bn.shape != a.shape:
            raise ValueError(
                f"input_noise_cov has shape {tuple(bn.shape)} but input_cov has {tuple(a.shape)}.")
        _checks.check_psd("input_noise_cov", bn)
        bn = 0.5 * (bn + bn.T)
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    if true_weights is None:
        wd = _checks.concrete_value(weight_decay)
        if input_noise_cov is not None or wd is None or np.any(wd != 0):
            raise ValueError(
                "w_star (the teacher u in y = u^T x + noise; older name true_weights) is required when "
                "weight_decay != 0 "
                "or input_noise_cov is given: the stationary state then depends on it.")
        uw = jnp.zeros(d, a.dtype)
    else:
        uw = _checks.check_vector("w_star", true_weights, d)
    kk = a + bn
    k, vecs = jnp.linalg.eigh(kk)
    scale = jnp.maximum(jnp.max(jnp.abs(k)), 1e-300)
    pos = k > 1e-12 * scale
    k = jnp.where(pos, k, 0.0)
    au = vecs.T @ (a @ uw)
    vt = jnp.where(pos, au / jnp.where(pos, k, 1.0), 0.0)
    kg = k + weight_decay
    active = pos | (jnp.abs(kg) > 1e-12 * scale)
    wt = jnp.where(active, au / jnp.where(active, kg, 1.0), 0.0)
    bt = wt - vt
    s2 = label_noise_var + uw @ a @ uw - jnp.sum(k * vt**2)
    s2 = jnp.maximum(s2, 0.0)
    return _Online(k, vecs, a, kk, vecs @ wt, bt, s2, active, uw), d


def _use_momentum(momentum) -> bool:
    """Static: plain SGD (closed-form pair factors) unless a non-zero momentum is given."""
    if _checks.is_zero(momentum):
        return False
    _checks.check_momentum(momentum)
    return True


def _pair_factor(a_eff, active, lr, momentum, use_mom):
    """f_ij = [X_ij]_ww for unit noise, X = M_i X M_j^T + b_i b_j^T (0 for inactive directions).

    Plain SGD: f_ij = lr / (a_i + a_j - lr a_i a_j). Heavy ball: the 4x4 pair solve of
    :func:`sgdtheory._linalg.pairwise_stein` on the blocks of :func:`sgdtheory.quadratic.heavy_ball`.
    Also returns whether every moving direction is deterministically stable.
    """
    a_safe = jnp.where(active, a_eff, 1.0)
    mask = jnp.outer(active, active)
    if not use_mom:
        den = a_safe[:, None] + a_safe[None, :] - lr * jnp.outer(a_safe, a_safe)
        f = lr / jnp.where(mask, den, 1.0)
        det_ok = jnp.all(jnp.where(active, jnp.abs(1.0 - lr * a_safe) < 1.0, True))
        return jnp.where(mask, f, 0.0), det_ok
    opt = heavy_ball(momentum)
    m, b = jax.vmap(lambda hh: opt.matrices(hh[None, None], lr))(a_safe)
    f = pairwise_stein(m, b[..., 0], jnp.ones((a_eff.shape[0],) * 2, a_eff.dtype))
    # heavy-ball block [[1 - lr a, -lr mu], [a, mu]]: both eigenvalues inside the unit circle iff
    # det = mu < 1 and |trace| < 1 + det (Jury criterion)
    tr = 1.0 - lr * a_safe + momentum
    det_ok = jnp.all(jnp.where(active, (jnp.abs(tr) < 1.0 + momentum) & (a_safe > 0), True))
    return jnp.where(mask, f, 0.0), det_ok


@partial(jax.jit, static_argnames=("use_mom",))
def _online_solve(p: _Online, lr, s, weight_decay, momentum, use_mom):
    k, bt = p.k, p.bt
    f, det_ok = _pair_factor(k + weight_decay, p.active, lr, momentum, use_mom)
    den = 1.0 - f * jnp.outer(k, k) / s
    psi = f / (s * jnp.where(den > 0, den, 1.0))
    dpsi = jnp.diag(psi)
    t = jnp.sum(k**2 * dpsi)
    c = jnp.sum(k * bt**2) + p.s2
    tau = (c * t + jnp.sum(dpsi * k**3 * bt**2)) / (1.0 - t)
    kb = k * bt
    sig_t = psi * (jnp.diag((tau + c) * k) + jnp.outer(kb, kb))
    stable = det_ok & jnp.all(jnp.diag(den) > 0) & (t < 1.0) & (t >= 0.0)
    return sig_t, tau, c, stable


@partial(jax.jit, static_argnames=("use_mom", "iters"))
def _online_bound(p, s, weight_decay, momentum, use_mom, iters: int = 200):
    a_eff = jnp.where(p.active, p.k + weight_decay, jnp.inf)
    hi0 = 2.0 * (1.0 + momentum) / jnp.max(jnp.where(p.active, p.k + weight_decay, 0.0))

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        ok = _online_solve(p, mid, s, weight_decay, momentum, use_mom)[3]
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, hi = lax.fori_loop(0, iters, body, (jnp.zeros_like(hi0), hi0))
    return jnp.where(jnp.min(a_eff) > 0, lo, 0.0)


def online_max_lr(input_cov, batch_size, *, weight_decay=0.0, input_noise_cov=None, momentum=0.0,
                  optimizer=None):
    r"""Largest learning rate with a finite stationary state for online Gaussian linear regression.

    Exact mean-square stability of the second-moment map (``docs/theory/linreg.md``, Sec. 3). For
    plain SGD (:math:`a_i = k_i + \gamma`, :math:`k_i` the eigenvalues of :math:`K = A + B`):

    .. math:: g_i(\lambda) = 2a_i - \lambda a_i^2 - \tfrac{\lambda}{S}k_i^2 > 0\ \forall i
              \quad\text{and}\quad t(\lambda) = \frac{\lambda}{S}\sum_i \frac{k_i^2}{g_i(\lambda)} < 1.

    Without weight decay this is :math:`\lambda\kappa(\lambda) < S`,
    :math:`\kappa = \mathrm{tr}[A(2I - \lambda(1+1/S)A)^{-1}]` (Ziyin et al. 2022, Thm 2); in 1-D,
    :math:`\lambda a < 2S/(S+2)`. :math:`t` increases with :math:`\lambda`, so the bound is found by
    bisection (200 halvings, machine precision). With momentum the same bisection uses the exact
    pair factors of the heavy-ball transition matrix. It does not depend on the label noise.

    Args:
      input_cov: ``(D, D)`` PSD input covariance :math:`A`.
      batch_size: ``S``.
      weight_decay: :math:`\gamma` (may be negative; the bound is 0 if :math:`K+\gamma I` is not
        positive on the moving directions).
      input_noise_cov: optional ``(D, D)`` PSD :math:`B` (inputs seen are :math:`x+n`).
      momentum: heavy-ball :math:`\mu\in[0,1)`.
      optimizer: instead of ``momentum``/``weight_decay``, a factory
        ``lambda lr: optax.sgd(lr, momentum)`` (optionally chained after
        ``optax.add_decayed_weights``); the learning rate is the free variable, so a fixed optax
        object raises ``ValueError``.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(online_max_lr(jnp.eye(1), 10)), 6)   # 2S/(S+2)
      1.666667
    """
    _, momentum, weight_decay = _from_optimizer(None, momentum, weight_decay, optimizer,
                                                allow_momentum=True, where="online_max_lr",
                                                need_lr=False)
    s = _checks.check_int("batch_size", batch_size, 1)
    a = _checks.square_matrix("input_cov", input_cov)
    p, _ = _prepare_online(a, 0.0, weight_decay, jnp.zeros(a.shape[0]), input_noise_cov)
    return _online_bound(p, float(s), weight_decay, momentum, _use_momentum(momentum))


def online_is_stable(input_cov, lr=None, batch_size=None, *, weight_decay=0.0, input_noise_cov=None,
                     momentum=0.0, optimizer=None):
    """Predicate (jit-safe): does online SGD at ``lr`` have a finite stationary second moment?

    ``optimizer`` as in :func:`online_stationary` (then ``lr`` is omitted for an optax object).
    """
    lr, momentum, weight_decay = _from_optimizer(lr, momentum, weight_decay, optimizer,
                                                 allow_momentum=True, where="online_is_stable")
    s = _checks.check_int("batch_size", batch_size, 1)
    a = _checks.square_matrix("input_cov", input_cov)
    p, _ = _prepare_online(a, 0.0, weight_decay, jnp.zeros(a.shape[0]), input_noise_cov)
    return _online_solve(p, lr, float(s), weight_decay, momentum, _use_momentum(momentum))[3]


def online_stationary(input_cov, lr=None, batch_size=None, *, label_noise_var=0.0, weight_decay=0.0,
                      w_star=None, true_weights=None, input_noise_cov=None, momentum=0.0,
                      optimizer=None) -> OnlineStationary:
    r"""Exact stationary state of online minibatch SGD on Gaussian linear regression.

    Model (module docstring): :math:`x\sim\mathcal N(0,A)`, :math:`y=u^\top x+\varepsilon`, training
    inputs :math:`\tilde x = x + n`, :math:`n\sim\mathcal N(0,B)`, :math:`K=A+B`, batch ``S``, fresh
    samples each step. For plain SGD, in the eigenbasis of :math:`K` (eigenvalues :math:`k_i`,
    :math:`a_i = k_i+\gamma`, :math:`\tilde b = U^\top b`):

    .. math::
        \tilde\Sigma_{ij} = \frac{\lambda}{S}\,
          \frac{\delta_{ij}(\tau + c)k_i + k_ik_j\tilde b_i\tilde b_j}
               {a_i + a_j - \lambda a_ia_j - \frac{\lambda}{S}k_ik_j},\qquad
        c = b^\top K b + s^2,\quad \tau = \mathrm{tr}(K\Sigma) = \frac{c\,t + \frac{\lambda}{S}
          \sum_i k_i^3\tilde b_i^2/g_i}{1-t},

    with :math:`g_i, t` as in :func:`online_max_lr`. With :math:`\gamma = 0`, :math:`B = 0` this is
    Ziyin et al. (2022) Thm 2/8: :math:`\Sigma = \frac{\lambda\sigma^2/S}{1-\lambda\kappa/S}G^{-1}`,
    :math:`G = 2I-\lambda(1+1/S)A`. With momentum the per-pair factor
    :math:`\lambda/(a_i+a_j-\lambda a_ia_j)` is replaced by the heavy-ball pair solution (exact;
    cf. Thm 3). Exact in discrete time (no small-lr expansion).

    Args:
      input_cov: ``(D, D)`` PSD :math:`A`.
      lr: learning rate :math:`\lambda`.
      batch_size: ``S`` (static).
      label_noise_var: :math:`\sigma^2\ge 0`.
      weight_decay: coupled L2 :math:`\gamma` (may be negative if stable).
      w_star: ``(D,)`` teacher :math:`u` (the simulators' name); required when
        ``weight_decay != 0`` or ``input_noise_cov`` is given (default 0 otherwise).
      true_weights: older name of ``w_star`` (same numbers; not both).
      input_noise_cov: optional ``(D, D)`` PSD :math:`B`.
      momentum: heavy-ball :math:`\mu` (optax convention).
      optimizer: instead of ``lr``/``momentum``: ``optax.sgd(lr)`` or ``optax.sgd(lr, momentum)``,
        optionally after ``optax.add_decayed_weights(gamma)`` (coupled decay, added to
        ``weight_decay``); then ``lr`` is omitted.  A factory ``lambda lr: ...`` takes ``lr``.
        The form is read off the optimizer's linearisation (:func:`sgdtheory.optim.linearize`);
        other optimizers (Nesterov, preconditioners, Adam, ...) raise ``ValueError``.

    Returns:
      :class:`OnlineStationary`. Under ``jit`` with an unstable ``lr`` the covariance and losses
      are NaN, as in :mod:`sgdtheory.quadratic` (check with :func:`online_is_stable`).

    Raises:
      ValueError: non-PSD covariances, negative noise variance, shapes, missing ``w_star``,
        or (concrete) an unstable ``lr``, with a learning rate that is stable in the message.

    Example:
      >>> import jax.numpy as jnp
      >>> r = online_stationary(jnp.eye(1), 0.5, 10, label_noise_var=1.0)
      >>> round(float(r.param_cov[0, 0]), 6)   # lr sigma^2 / (2S - lr a (S+2)) = 0.5/14
      0.035714

    References:
      Ziyin, Liu, Mori & Ueda (2022): Lemma 1 (noise), Thm 2/8 (label noise), Thm 3 (momentum),
      Thm 4 / Prop 3 (L2), Thm 9 / Prop 9 (input noise; corrected, see
      :func:`ziyin_input_noise_test_loss`).
    """
    lr, momentum, weight_decay = _from_optimizer(lr, momentum, weight_decay, optimizer,
                                                 allow_momentum=True, where="online_stationary")
    s = _checks.check_int("batch_size", batch_size, 1)
    if jnp.ndim(lr) != 0:
        raise ValueError("lr must be a scalar.")
    _checks.check_positive("lr", lr)
    p, d = _prepare_online(input_cov, label_noise_var, weight_decay, _teacher(true_weights, w_star),
                           input_noise_cov)
    use_mom = _use_momentum(momentum)
    sig_t, tau, c, stable = _online_solve(p, lr, float(s), weight_decay, momentum, use_mom)
    if _checks.is_concrete(stable) and _checks.is_concrete(lr) and not bool(stable):
        _raise_online_unstable(p, lr, float(s), weight_decay, momentum, use_mom)
    sig = p.u @ sig_t @ p.u.T
    sig = 0.5 * (sig + sig.T)
    kk = p.kk
    b = p.u @ p.bt
    kb = kk @ b
    noise = (kk @ sig @ kk + tau * kk + jnp.outer(kb, kb) + c * kk) / s
    e = p.w_inf - p.uw
    test = 0.5 * jnp.sum(p.a_cov * sig) + 0.5 * e @ p.a_cov @ e
    train = 0.5 * (tau + c)
    nan = jnp.nan
    return OnlineStationary(
        param_mean=p.w_inf,
        param_cov=jnp.where(stable, sig, nan),
        noise_cov=jnp.where(stable, noise, nan),
        train_loss=jnp.where(stable, train, nan),
        test_loss=jnp.where(stable, test, nan),
    )


def _raise_online_unstable(p, lr, s, weight_decay, momentum, use_mom):
    """The ``ValueError`` for a concrete unstable ``lr``, naming a learning rate that IS stable.

    The bisection of :func:`online_max_lr` and the direct solve can disagree by an ulp at the edge
    (different compilation, different rounding), so the bound is stepped down until the same
    solve that flagged ``lr`` certifies it; it is printed with enough digits to differ from ``lr``
    and rounded so that the printed number is itself stable.
    """
    lr_v = float(lr)
    bound = float(_online_bound(p, s, weight_decay, momentum, use_mom))
    candidate = min(bound, lr_v)
    for _ in range(64):
        if candidate <= 0 or bool(_online_solve(p, candidate, s, weight_decay, momentum, use_mom)[3]):
            break
        candidate = min(np.nextafter(candidate, 0.0), candidate * (1 - 1e-12))
    if candidate <= 0:
        raise ValueError(
            f"lr={lr_v:.6g}: online SGD is not mean-square stable at any learning rate here "
            "(K + weight_decay I is not positive on the moving directions).")
    digits = 4  # enough digits that the printed bound differs from lr and is itself stable
    while digits < 17 and (f"{candidate:.{digits}g}" == f"{lr_v:.{digits}g}"
                           or float(f"{candidate:.{digits}g}") > candidate):
        digits += 1
    raise ValueError(
        f"lr={lr_v:.{digits}g} >= online_max_lr = {candidate:.{digits}g}: the second moments "
        f"are not mean-square stable at this learning rate (no stationary state exists). "
        f"Use lr < {candidate:.{digits}g}.")


def learning_curve(input_cov, lr, batch_size, steps, *, init_error_cov, label_noise_var=0.0,
                   weight_decay=0.0, w_star=None, true_weights=None,
                   init_error_mean=None) -> LearningCurve:
    r"""Exact expected train/test loss after every step of online SGD (Gaussian inputs).

    With :math:`e = w - u`, :math:`E_t = \mathbb E[e_te_t^\top]`, :math:`m_t = \mathbb E e_t` and
    :math:`a_i = k_i + \gamma` in the eigenbasis of :math:`A`, only the diagonal of :math:`E_t` is
    needed for the losses and it closes on itself:

    .. math::
        E'_{ii} = (1-\lambda a_i)^2E_{ii} + \tfrac{\lambda^2}{S}\big(k_i^2E_{ii} + k_i\,\mathrm{tr}(AE)\big)
          - 2\lambda\gamma(1-\lambda a_i)m_iu_i + \lambda^2\gamma^2u_i^2 + \tfrac{\lambda^2\sigma^2}{S}k_i,
        \qquad m' = (1-\lambda a)m - \lambda\gamma u,

    so a step costs ``O(D)``. A diagonal (concrete) :math:`A` skips the eigendecomposition and the
    ``O(D^3)`` PSD checks (then ``init_error_cov`` is only used through its diagonal, which is all
    the losses need), so ``D`` in the thousands costs milliseconds per hundred steps.
    train loss :math:`=\tfrac12(\mathrm{tr}(AE_t)+\sigma^2)`, test loss :math:`=\tfrac12\mathrm{tr}(AE_t)`.

    Args:
      input_cov: ``(D, D)`` PSD :math:`A`.
      lr, batch_size: :math:`\lambda`, ``S``.
      steps: number of steps (static; output length ``steps + 1``).
      init_error_cov: ``(D, D)`` PSD covariance of :math:`e_0 = w_0 - u`.
      label_noise_var: :math:`\sigma^2`.
      weight_decay: :math:`\gamma`; ``w_star`` :math:`u` is then required.
      w_star: ``(D,)`` teacher :math:`u` (``true_weights`` is its older name; not both).
      init_error_mean: ``(D,)`` mean of :math:`e_0` (default 0).

    References:
      Ziyin, Liu, Mori & Ueda (2022), Lemma 1 (the noise); the recursion is derived in
      ``docs/theory/linreg.md`` Sec. 4.
    """
    s = _checks.check_int("batch_size", batch_size, 1)
    steps = _checks.check_int("steps", steps, 0)
    a = _checks.square_matrix("input_cov", input_cov)
    d = a.shape[0]
    av = _checks.concrete_value(a)
    diagonal = av is not None and not np.any(av - np.diag(np.diag(av)))
    if diagonal:  # fast path: no eigendecomposition, O(D) checks
        if np.any(np.diag(av) < 0):
            raise ValueError("input_cov must be positive semidefinite (a covariance); its smallest "
                             f"eigenvalue is {np.min(np.diag(av)):.4g} < 0.")
    else:
        _checks.check_psd("input_cov", a)
    e0 = _checks.square_matrix("init_error_cov", init_error_cov)
    if e0.shape != a.shape:
        raise ValueError(f"init_error_cov has shape {tuple(e0.shape)}; expected {(d, d)}.")
    if not diagonal:
        _checks.check_psd("init_error_cov", e0)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    _checks.check_positive("lr", lr)
    true_weights = _teacher(true_weights, w_star)
    if true_weights is None:
        wd = _checks.concrete_value(weight_decay)
        if wd is None or np.any(wd != 0):
            raise ValueError("w_star (the teacher u; older name true_weights) is required when "
                             "weight_decay != 0.")
        uw = jnp.zeros(d)
    else:
        uw = _checks.check_vector("w_star", true_weights, d)
    m0 = jnp.zeros(d) if init_error_mean is None else _checks.check_vector(
        "init_error_mean", init_error_mean, d)
    if diagonal:
        k, ut, mt = jnp.diag(a), uw, m0
        diag = jnp.diag(e0) + m0**2
    else:
        k, vecs = jnp.linalg.eigh(0.5 * (a + a.T))
        ut = vecs.T @ uw
        mt = vecs.T @ m0
        diag = jnp.sum(vecs * ((e0 + jnp.outer(m0, m0)) @ vecs), axis=0)
    ak = k + weight_decay
    lam, g = lr, weight_decay

    def step(carry, _):
        ed, m = carry
        tr = jnp.sum(k * ed)
        ed_new = ((1 - lam * ak) ** 2 * ed + lam**2 / s * (k**2 * ed + k * tr)
                  - 2 * lam * g * (1 - lam * ak) * m * ut + lam**2 * g**2 * ut**2
                  + lam**2 * label_noise_var * k / s)
        m_new = (1 - lam * ak) * m - lam * g * ut
        return (ed_new, m_new), tr

    (ed, _), trs = lax.scan(step, (diag, mt), None, length=steps)
    trs = jnp.concatenate([trs, jnp.sum(k * ed)[None]])
    return LearningCurve(train_loss=0.5 * (trs + label_noise_var), test_loss=0.5 * trs)


# ----------------------------------------------------------------------------------------------
# finite dataset
# ----------------------------------------------------------------------------------------------


def _prepare_dataset(inputs, targets):
    return _checks.check_dataset(inputs, targets)


def _dataset_basis(x, weight_decay):
    n, d = x.shape
    h = x.T @ x / n
    e, vecs = jnp.linalg.eigh(0.5 * (h + h.T))
    scale = jnp.maximum(jnp.max(jnp.abs(e)), 1e-300)
    e = jnp.where(e > 1e-12 * scale, e, 0.0)
    active = (e > 0) | (jnp.abs(e + weight_decay) > 1e-12 * scale)
    return h, e, vecs, active


def dataset_max_lr(inputs, batch_size, *, sampling=None, replacement=None, weight_decay=0.0,
                   optimizer=None):
    r"""Exact mean-square stability threshold of SGD on a fixed dataset (:func:`mean_square_max_lr`
    with per-sample Hessians :math:`x_ix_i^\top + \gamma I`, restricted to the directions that move).

    ``sampling`` is ``"with_replacement"`` (default) or ``"without_replacement"`` (``replacement=``
    is the older spelling); ``optimizer`` may be a factory ``lambda lr: optax.sgd(lr)``, optionally
    after ``optax.add_decayed_weights`` (plain SGD only, as :func:`dataset_stationary`)."""
    replacement = resolve_sampling(sampling, replacement)
    _, _, weight_decay = _from_optimizer(None, 0.0, weight_decay, optimizer, allow_momentum=False,
                                         where="dataset_max_lr", need_lr=False)
    x = _checks.as_float_array(inputs)
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (N, D); got {tuple(x.shape)}.")
    _, e, vecs, active = _dataset_basis(x, weight_decay)
    act = np.asarray(active)
    xt = (x @ vecs)[:, act]
    r = xt.shape[1]
    hs = jnp.einsum("ni,nj->nij", xt, xt) + weight_decay * jnp.eye(r)[None]
    return mean_square_max_lr(hs, batch_size, replacement=replacement)


def dataset_stationary(inputs, targets, lr=None, batch_size=None, *, sampling=None, replacement=None,
                       weight_decay=0.0, optimizer=None, label_noise_var=0.0) -> DatasetStationary:
    r"""Exact stationary mean and covariance of SGD on a fixed finite dataset (any ``N >= 1``).

    With :math:`\hat H = X^\top X/N`, :math:`\hat H_\gamma = \hat H+\gamma I`, mean
    :math:`m = \hat H_\gamma^{-1}X^\top y/N`, residuals :math:`r_i = x_i^\top m - y_i` and
    :math:`f_S` the batch factor (:func:`sgdtheory.noise.batch_factor`), the stationary covariance
    solves the linear equation (derivation: ``docs/theory/linreg.md`` Sec. 5)

    .. math::
        \Sigma = (I-\lambda\hat H_\gamma)\Sigma(I-\lambda\hat H_\gamma) + \lambda^2 C(\Sigma),\quad
        C(\Sigma) = f_S\Big[\frac1N\sum_i (x_i^\top\Sigma x_i + r_i^2)\,x_ix_i^\top
                    - \hat H\Sigma\hat H - \gamma^2 mm^\top\Big],

    solved in vec form (``D^2 x D^2``; meant for ``D`` up to ~40). Directions orthogonal to every
    input (``N < D`` without weight decay) do not move; their covariance is reported as 0 (SGD
    started at the mean). ``train_loss`` :math:`= \tfrac12[\frac1N\sum r_i^2 + \mathrm{tr}(\hat H\Sigma)]`.

    **Label noise** (``label_noise_var`` :math:`=\sigma^2`; exact, derived in
    ``docs/theory/label_noise.md``): every sampled example gets a fresh target
    :math:`y_i + \varepsilon`, :math:`\mathbb E\varepsilon = 0`, :math:`\operatorname{Var}\varepsilon
    = \sigma^2`, independently for each of the ``S`` slots of the batch and each step (a repeated
    index gets its own draw). The step gains :math:`\frac\lambda S\sum_b x_b\varepsilon_b`, which is
    uncorrelated with everything else and has covariance :math:`\frac{\lambda^2\sigma^2}{S^2}
    \mathbb E\sum_b x_bx_b^\top = \frac{\lambda^2\sigma^2}{S}\hat H` for *both* sampling rules (each
    slot is marginally uniform), so :math:`C(\Sigma)` gains :math:`\frac{\sigma^2}{S}\hat H` (included
    in ``noise_cov``); the mean and :func:`dataset_max_lr` do not change. ``train_loss`` stays the
    loss on the stored (noiseless) targets ``y``; the loss on noisy targets is larger by
    :math:`\sigma^2/2`. The two-diffusion form (Xiong et al. 2023, arXiv:2304.00320) is
    :func:`sgdtheory.label_noise.diffusions`.

    Args:
      inputs: ``(N, D)``.
      targets: ``(N,)``.
      lr: :math:`\lambda`.
      batch_size: ``S`` (static).
      sampling: ``"with_replacement"`` (i.i.d. indices, default) or ``"without_replacement"``
        (a uniform ``S``-subset per step), as in the simulators.
      replacement: older spelling (``True``/``False``); not together with ``sampling``.
      weight_decay: coupled L2 :math:`\gamma`.
      optimizer: instead of ``lr``/``weight_decay``: ``optax.sgd(lr)``, optionally after
        ``optax.add_decayed_weights(gamma)`` (``lr`` then omitted; a factory takes ``lr``).  Only
        plain SGD: momentum raises ``ValueError`` (the finite-dataset algebra is derived for it).
      label_noise_var: :math:`\sigma^2 \ge 0`, variance of the fresh label noise (default 0).

    Raises:
      ValueError: shape mismatch, ``batch_size > N`` without replacement, negative or non-scalar
        ``label_noise_var``, or (concrete) ``lr >= dataset_max_lr`` (value in the message).

    References:
      Ziyin, Liu, Mori & Ueda (2022), Prop. 1/8 (noise, both sampling rules), Thm 6 (its
      high-dimensional approximation); Wu, Ma & E (2018) (stability); Xiong et al. (2023),
      arXiv:2304.00320 (label noise as a second diffusion).
    """
    replacement = resolve_sampling(sampling, replacement)
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    lr, _, weight_decay = _from_optimizer(lr, 0.0, weight_decay, optimizer, allow_momentum=False,
                                          where="dataset_stationary")
    x, y = _prepare_dataset(inputs, targets)
    n, d = x.shape
    f = batch_factor(n, batch_size, replacement)
    if jnp.ndim(lr) != 0:
        raise ValueError("lr must be a scalar.")
    _checks.check_positive("lr", lr)
    if _checks.is_concrete(lr) and _checks.is_concrete(weight_decay) and _checks.is_concrete(x):
        bound = dataset_max_lr(x, batch_size, replacement=replacement, weight_decay=weight_decay)
        _checks.check_lr_below(lr, bound, "dataset_max_lr (mean-square stability)",
                               "are not mean-square stable")
    h, e, vecs, active = _dataset_basis(x, weight_decay)
    xt = x @ vecs
    a = e + weight_decay
    mt = jnp.where(active, (xt.T @ y / n) / jnp.where(active, a, 1.0), 0.0)
    r = xt @ mt - y
    lam = lr
    mdiag = 1.0 - lam * a
    outer = jnp.einsum("ni,nj->nij", xt, xt)
    hd = jnp.diag(e)
    cov4 = jnp.einsum("nij,nkl->ikjl", outer, outer) / n - jnp.einsum("ij,kl->ikjl", hd, hd)
    # vec row-major (ij): T[(ij),(kl)] = E[M_ik M_jl]
    t_op = jnp.einsum("ik,jl->ijkl", jnp.diag(mdiag), jnp.diag(mdiag)) + lam**2 * f * cov4
    t_op = t_op.reshape(d * d, d * d)
    rhs = lam**2 * f * (jnp.einsum("n,ni,nj->ij", r**2, xt, xt) / n
                        - weight_decay**2 * jnp.outer(mt, mt))
    label = label_noise_var / batch_size * hd  # fresh label noise: sigma^2/S * H (both rules)
    rhs = rhs + lam**2 * label
    mask = jnp.outer(active, active).reshape(-1)
    op = jnp.eye(d * d) - t_op
    op = jnp.where(mask[:, None] & mask[None, :], op, jnp.eye(d * d))
    vec = jnp.linalg.solve(op, jnp.where(mask, rhs.reshape(-1), 0.0))
    sig_t = vec.reshape(d, d)
    sig_t = 0.5 * (sig_t + sig_t.T)
    quad = jnp.einsum("ni,ij,nj->n", xt, sig_t, xt)
    noise_t = f * (jnp.einsum("n,ni,nj->ij", quad + r**2, xt, xt) / n - hd @ sig_t @ hd
                   - weight_decay**2 * jnp.outer(mt, mt)) + label
    train = 0.5 * (jnp.mean(r**2) + jnp.sum(e * jnp.diag(sig_t)))
    rot = lambda z: vecs @ z @ vecs.T  # noqa: E731
    return DatasetStationary(param_mean=vecs @ mt, param_cov=rot(sig_t), noise_cov=rot(noise_t),
                             train_loss=train)


# ----------------------------------------------------------------------------------------------
# Ziyin, Liu, Mori & Ueda (2022) closed forms
# ----------------------------------------------------------------------------------------------


class ZiyinLabelNoise(NamedTuple):
    """Thm 2/3/8 of Ziyin et al. (2022): covariance and losses (label noise, scalar lr)."""

    param_cov: jax.Array
    train_loss: jax.Array
    test_loss: jax.Array


def ziyin_label_noise(input_cov, lr, batch_size, label_noise_var, *, momentum=0.0):
    r"""Ziyin, Liu, Mori & Ueda (2022), Thms 2, 3, 8: online label-noise regression, heavy ball.

    .. math::
        G_\mu = 2(1-\mu)I - \Big(\frac{1-\mu}{1+\mu} + \frac1S\Big)\lambda A,\quad
        t = \lambda\,\mathrm{tr}(AG_\mu^{-1}),\quad
        \Sigma = \frac{\lambda\sigma^2}{S}\frac{1}{1-t/S}G_\mu^{-1},\quad
        L_{train} = \tfrac12\sigma^2/(1 - t/S),\quad L_{test} = \tfrac12\mathrm{tr}(A\Sigma).

    Exact (agrees with :func:`online_stationary` to round-off, tested); valid while
    :math:`G_\mu\succ 0` and :math:`t < S`. Provided as the paper's printed route beside the general one.
    """
    a = _checks.square_matrix("input_cov", input_cov)
    s = _checks.check_int("batch_size", batch_size, 1)
    mu = momentum
    g = 2 * (1 - mu) * jnp.eye(a.shape[0]) - ((1 - mu) / (1 + mu) + 1.0 / s) * lr * a
    gi = jnp.linalg.inv(g)
    t = lr * jnp.trace(a @ gi)
    sig = lr * label_noise_var / s / (1 - t / s) * gi
    return ZiyinLabelNoise(sig, 0.5 * label_noise_var / (1 - t / s), 0.5 * jnp.sum(a * sig))


def ziyin_weight_decay_test_loss(input_cov, lr, batch_size, weight_decay, true_weights):
    r"""Ziyin et al. (2022), Thm 4 (Γ = γI, no label noise): stationary test loss with L2.

    .. math::
        K = A+\gamma I,\ G = 2I-\lambda(K + K^{-1}A^2/S),\ \mathrm{den} = 1-\tfrac{\lambda}{S}
        \mathrm{tr}(A^2K^{-1}G^{-1}),\ \kappa = \mathrm{tr}(A^2K^{-1}G^{-1})/\mathrm{den},\
        r = \gamma^2\mathrm{tr}(A^3K^{-3}G^{-1}uu^\top)/\mathrm{den},

    .. math:: L_{test} = \frac{\lambda}{2S}\big(\gamma^2\mathrm{tr}(AK^{-2}uu^\top)\kappa + r\big)
              + \tfrac12\gamma^2\mathrm{tr}(AK^{-2}uu^\top).

    Exact for any ``u`` (tested against :func:`online_stationary`). The paper's covariance formula
    (Eq. 12) additionally needs ``u`` to be an eigenvector of ``A`` -- it is 8-47 % off otherwise
    (ueda-papers.md §3.3), so only the test loss is offered here.
    """
    a = _checks.square_matrix("input_cov", input_cov)
    s = _checks.check_int("batch_size", batch_size, 1)
    u = _checks.check_vector("true_weights", true_weights, a.shape[0])
    eye = jnp.eye(a.shape[0])
    k = a + weight_decay * eye
    ki = jnp.linalg.inv(k)
    g = 2 * eye - lr * (k + ki @ a @ a / s)
    gi = jnp.linalg.inv(g)
    tr1 = jnp.trace(a @ a @ ki @ gi)
    den = 1 - lr / s * tr1
    kappa = tr1 / den
    uu = jnp.outer(u, u)
    r = weight_decay**2 * jnp.trace(a @ a @ a @ ki @ ki @ ki @ gi @ uu) / den
    bias = weight_decay**2 * jnp.trace(a @ ki @ ki @ uu)
    return lr / (2 * s) * (bias * kappa + r) + 0.5 * bias


def ziyin_input_noise_test_loss(input_cov, input_noise_cov, true_weights, lr, batch_size, *,
                                printed: bool = False):
    r"""Ziyin et al. (2022), Thm 9: online regression with input noise, test loss (no label noise).

    With :math:`K = A+B`, :math:`G' = 2I-\lambda(1+1/S)K`, :math:`t' = \frac\lambda S\mathrm{tr}(KG'^{-1})`,
    :math:`s^2 = u^\top(A - AK^{-1}A)u`, :math:`B' = K^{-1}B`:

    .. math:: L_{test} = \frac{\lambda s^2}{2S}\frac{\mathrm{tr}(AG'^{-1})}{1-t'}
              + \tfrac12 u^\top B'^\top A B' u \quad\text{(corrected, exact)}

    ``printed=True`` returns the paper's Eq. 134/147, which has :math:`\kappa' =
    \mathrm{tr}(KG'^{-1})/(1-t')` in place of :math:`\mathrm{tr}(AG'^{-1})/(1-t')`: exact only when
    :math:`B = 0`; e.g. 14 % high at :math:`\lambda=0.8, S=8` in ueda-papers.md §3.4 and in
    ``tests/test_linreg.py``.
    """
    a = _checks.square_matrix("input_cov", input_cov)
    b = _checks.square_matrix("input_noise_cov", input_noise_cov)
    s = _checks.check_int("batch_size", batch_size, 1)
    u = _checks.check_vector("true_weights", true_weights, a.shape[0])
    eye = jnp.eye(a.shape[0])
    k = a + b
    ki = jnp.linalg.inv(k)
    gi = jnp.linalg.inv(2 * eye - lr * (1 + 1.0 / s) * k)
    t = lr / s * jnp.trace(k @ gi)
    s2 = u @ (a - a @ ki @ a) @ u
    bp = ki @ b
    bias = 0.5 * u @ bp.T @ a @ bp @ u
    trace = jnp.trace(k @ gi) if printed else jnp.trace(a @ gi)
    return lr * s2 / (2 * s) * trace / (1 - t) + bias


def ziyin_weight_decay_1d_test_loss(a, lr, batch_size, weight_decay, true_weight):
    r"""Ziyin et al. (2022), Cor. 4: 1-D online regression with L2, no label noise, :math:`k = a+\gamma`:

    .. math:: L_{test} = \frac{a\gamma^2u^2}{2k}\,\frac{2-\lambda k}{2k - \lambda(k^2 + 2a^2/S)}.

    Exact (equals :func:`online_stationary` in 1-D; derivation in ``docs/theory/linreg.md`` Sec. 3.3).
    """
    s = _checks.check_int("batch_size", batch_size, 1)
    k = a + weight_decay
    return (a * weight_decay**2 * true_weight**2 / (2 * k) * (2 - lr * k)
            / (2 * k - lr * (k**2 + 2 * a**2 / s)))


def ziyin_negative_weight_decay_is_optimal(a, lr, batch_size):
    r"""Ziyin et al. (2022), Cor. 1 (1-D, no label noise): the test-loss-optimal weight decay is
    negative iff :math:`\frac{2}{1+2/S} < a\lambda < \sqrt{S/2}` (``S != 2``).

    Checked in ``tests/test_linreg.py`` against a grid minimisation of the exact test loss.
    """
    s = _checks.check_int("batch_size", batch_size, 1)
    x = a * lr
    return (x > 2.0 / (1.0 + 2.0 / s)) & (x < np.sqrt(s / 2.0))


# The law beyond moments (tail index, higher moments, density): sgdtheory/_tails.py, public here.
from sgdtheory import _tails  # noqa: E402
from sgdtheory._tails import *  # noqa: E402,F401,F403

__all__ += list(_tails.__all__)


# --- Damped Newton (preconditioner A^{-1}) on online regression: Ziyin et al. (2022), App. D ---

_DNM_BOUND_EXPR = "2(1-momentum)S/(D + 1 + S(1-momentum)/(1+momentum))"


def _dnm_inputs(input_cov, batch_size, momentum):
    a = _checks.square_matrix("input_cov", input_cov)
    _checks.check_symmetric("input_cov", a)
    _checks.check_spd("input_cov", a)
    s = _checks.check_int("batch_size", batch_size, 1)
    _checks.check_momentum(momentum)
    return 0.5 * (a + a.T), s


def damped_newton_max_lr(input_cov, batch_size, *, momentum=0.0):
    r"""Largest stable learning rate of damped Newton on online regression -- **exact**.

    .. math:: \lambda_{max} = \frac{2(1-\mu)S}{D + 1 + S(1-\mu)/(1+\mu)}

    (Ziyin, Liu, Mori & Ueda 2022, App. D, Prop. 5; derivation in
    :func:`damped_newton_stationary`).  It depends on the dimension :math:`D` but not on the
    spectrum of :math:`A` (the preconditioner whitens it); always below the deterministic bound
    :math:`2(1+\mu)`, which it approaches only for :math:`S \gg D`.

    Args:
      input_cov: ``(D, D)`` symmetric positive-definite :math:`A` (only ``D`` enters).
      batch_size: ``S`` (static).
      momentum: heavy-ball :math:`\mu\in[0,1)`.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(damped_newton_max_lr(jnp.eye(10), 4)), 6)   # 8/(11 + 4)
      0.533333
    """
    a, s = _dnm_inputs(input_cov, batch_size, momentum)
    d = a.shape[0]
    return 2.0 * (1.0 - momentum) * s / (d + 1.0 + s * (1.0 - momentum) / (1.0 + momentum))


def damped_newton_stationary(input_cov, lr, batch_size, *, label_noise_var=0.0, momentum=0.0,
                             w_star=None) -> OnlineStationary:
    r"""Exact stationary state of online minibatch SGD preconditioned by :math:`A^{-1}` (damped Newton).

    Update (optax convention): :math:`m \leftarrow \mu m + \hat g`,
    :math:`w \leftarrow w - \lambda A^{-1} m`, with the minibatch gradient of the online model
    (module docstring: :math:`x\sim\mathcal N(0,A)`, :math:`y = u^\top x + \varepsilon`,
    :math:`\operatorname{Var}\varepsilon = \sigma^2`, batch ``S``).  **Exact**:

    .. math:: \Sigma = \frac{\lambda\sigma^2}{gS - \lambda D}\,A^{-1},\qquad
              g = 2(1-\mu) - \Big(\frac{1-\mu}{1+\mu} + \frac1S\Big)\lambda,

    finite and positive iff :math:`\lambda <` :func:`damped_newton_max_lr`
    :math:`= 2(1-\mu)S/(D + 1 + S(1-\mu)/(1+\mu))` (Ziyin, Liu, Mori & Ueda 2022, App. D,
    Prop. 5; the same expression as the paper's, re-derived here).

    Derivation (**derived here**).  With :math:`v = A^{1/2}(w - u)` and :math:`z = A^{-1/2}x \sim
    \mathcal N(0, I)` the dynamics is heavy ball with unit curvature in every direction and the
    gradient noise :math:`\xi = (\hat Z_B - I)v - \frac1S\sum_b z_b\varepsilon_b`, whose covariance
    given the state is :math:`\frac1S(vv^\top + |v|^2 I + \sigma^2 I)` (Isserlis) and whose mean is
    zero, so the second moments obey the additive-noise Lyapunov equation with
    :math:`C = \frac1S(\Sigma_v + \mathrm{tr}(\Sigma_v)I + \sigma^2 I)`.  Everything is rotation
    invariant, so :math:`\Sigma_v = sI`, :math:`C = \frac{(D+1)s + \sigma^2}{S}I`, and the scalar heavy
    ball with :math:`h = 1` (:func:`sgdtheory.quadratic.damped_newton_covariance`) gives
    :math:`s = F\,\frac{(D+1)s + \sigma^2}{S}` with :math:`F = \frac{\lambda(1+\mu)}{(1-\mu)(2(1+\mu)-\lambda)}`.  Solving,
    :math:`s = F\sigma^2/(S - (D+1)F)`, which is the formula above; :math:`S > (D+1)F` is the
    bound.  Back in :math:`w`: :math:`\Sigma = s A^{-1}`, :math:`\mathrm{tr}(A\Sigma) = sD`.

    Args:
      input_cov: ``(D, D)`` symmetric positive-definite :math:`A`.
      lr: :math:`\lambda`, below :func:`damped_newton_max_lr`.
      batch_size: ``S`` (static).
      label_noise_var: :math:`\sigma^2 \ge 0` (the only source: at :math:`\sigma^2 = 0`,
        :math:`\Sigma = 0`).
      momentum: heavy-ball :math:`\mu\in[0,1)`.
      w_star: ``(D,)`` teacher :math:`u` (the stationary mean; default 0).

    Returns:
      :class:`OnlineStationary`: mean :math:`u`, covariance :math:`sA^{-1}`, gradient-noise
      covariance :math:`\frac{(D+1)s+\sigma^2}{S}A`, train loss :math:`\tfrac12(sD + \sigma^2)`, test
      loss :math:`\tfrac12 sD`.  NaN under ``jit`` for an unstable ``lr``.

    Raises:
      ValueError: shapes, non-SPD ``input_cov``, negative ``label_noise_var``, momentum outside
        [0, 1), or (concrete) ``lr`` at/past the bound, named with its value.

    Example:
      >>> import jax.numpy as jnp
      >>> r = damped_newton_stationary(jnp.diag(jnp.array([2.0, 0.5])), 0.5, 8, label_noise_var=1.0)
      >>> r.param_cov.diagonal().round(6)   # lam sigma^2 / (gS - lam D) A^{-1}
      Array([0.02381 , 0.095238], dtype=float64)
    """
    a, s = _dnm_inputs(input_cov, batch_size, momentum)
    d = a.shape[0]
    if jnp.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar; got shape {jnp.shape(lr)}.")
    _checks.check_positive("lr", lr)
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    u = jnp.zeros(d, a.dtype) if w_star is None else _checks.check_vector("w_star", w_star, d)
    bound = damped_newton_max_lr(a, s, momentum=momentum)
    _checks.check_lr_below(lr, bound, _DNM_BOUND_EXPR)
    g = 2.0 * (1.0 - momentum) - ((1.0 - momentum) / (1.0 + momentum) + 1.0 / s) * lr
    var = lr * label_noise_var / (g * s - lr * d)
    e, vec = jnp.linalg.eigh(a)
    a_inv = (vec / e[None, :]) @ vec.T
    ok = (lr > 0) & (lr < bound)
    nan = jnp.nan
    return OnlineStationary(
        param_mean=u,
        param_cov=jnp.where(ok, var * 0.5 * (a_inv + a_inv.T), nan),
        noise_cov=jnp.where(ok, ((d + 1.0) * var + label_noise_var) / s * a, nan),
        train_loss=jnp.where(ok, 0.5 * (var * d + label_noise_var), nan),
        test_loss=jnp.where(ok, 0.5 * var * d, nan),
    )


__all__ += ["damped_newton_stationary", "damped_newton_max_lr"]
