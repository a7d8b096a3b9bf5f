r"""Decentralized parallel SGD (DPSGD): consensus spread, stability and the effective learning rate.

``n`` learners hold parameters :math:`\theta_k`, each computes a stochastic gradient
:math:`g_k = \nabla L(\theta_k) + \xi_k` on its own data, and they average with a doubly-stochastic
mixing matrix :math:`W` (rows and columns sum to 1, entries :math:`\ge 0`).  Two orders of the
two operations are in use, and they are **not** equivalent:

* ``"mix_then_step"`` (D-PSGD of Lian et al. 2017, Alg. 1, the gradient taken at the pre-mixing
  weights; the form in which our reference notes write Zhang et al.'s analysis -- not checked
  against the paper's body, which we could not read):

  .. math:: \theta_k' = \sum_j W_{kj}\theta_j - \alpha\, g_k(\theta_k)

* ``"gradient_then_mix"`` (local step, then gossip):

  .. math:: \theta_k' = \sum_j W_{kj}\bigl(\theta_j - \alpha\, g_j(\theta_j)\bigr)

Both move the mean :math:`\bar\theta = \frac1n\sum_k\theta_k` the same way,
:math:`\bar\theta' = \bar\theta - \frac{\alpha}{n}\sum_k g_k(\theta_k)`, because
:math:`\mathbf 1^\top W = \mathbf 1^\top`.

**Quadratic theory (exact).**  On :math:`L = \tfrac12 h\theta^2` per coordinate with additive noise
of variance :math:`v` independent across learners and steps, and a *symmetric* :math:`W` with
eigenpairs :math:`(\omega_m, u_m)`, :math:`\omega_0 = 1`, :math:`u_0 = \mathbf 1/\sqrt n`, the mode
coordinates :math:`c_m = u_m^\top\theta` decouple:

.. math:: c_m' = a_m c_m - \alpha\, b_m \eta_m,\qquad \operatorname{Var}\eta_m = v,

with :math:`a_m = \omega_m - \alpha h,\ b_m = 1` (mix-then-step) or
:math:`a_m = (1-\alpha h)\omega_m,\ b_m = \omega_m` (gradient-then-mix).  Hence the stationary
**consensus spread** :math:`\sigma_\delta^2 = \mathbb E\,\frac1n\sum_k(\theta_k-\bar\theta)^2
= \frac1n\sum_{m\ge1}\operatorname{Var}c_m` is

.. math:: \sigma_\delta^2 = \frac1n\sum_{m\ge 1}\frac{\alpha^2 v}{1-(\omega_m-\alpha h)^2}
          \quad\text{(mix-then-step)},\qquad
          \sigma_\delta^2 = \frac1n\sum_{m\ge 1}\frac{\alpha^2\omega_m^2 v}{1-(1-\alpha h)^2\omega_m^2}
          \quad\text{(gradient-then-mix)},

and the mean mode has :math:`\operatorname{Var}\bar\theta = \alpha v/(n h(2-\alpha h))` in both
orders (synchronous SGD with noise :math:`v/n`).  **Stability**: mix-then-step needs
:math:`|\omega_m - \alpha h| < 1` for every mode, i.e. :math:`\alpha h < 1 + \omega_{min}`,
stricter than synchronous SGD's :math:`\alpha h < 2` (a ring with self-weight 1/3 and even
``n`` has :math:`\omega_{min} = -1/3`: :math:`\alpha h < 2/3`); gradient-then-mix needs only
:math:`\alpha h < 2`.  Between the two bounds, mix-then-step's spread grows without bound while
the mean stays stationary.

**Effective learning rate.**  The mean moves by
:math:`-\alpha g_{DP}` with :math:`g_{DP} = \frac1n\sum_k\nabla L(\bar\theta+\delta_k)`; we define
(**ours**: a projection; the paper's own definition could not be read, see the docs page)
:math:`\alpha_e = \alpha\,\mathbb E[g_{DP}]\cdot g/|g|^2` with :math:`g = \nabla L(\bar\theta)`.
Expanding to second order in :math:`\delta` (:math:`\sum_k\delta_k = 0` kills the first order),

.. math:: \alpha_e \approx \alpha\Bigl[1 + \frac{g\cdot\nabla\operatorname{tr}(H\Sigma_\delta)}{2|g|^2}\Bigr]
          \;\overset{1\text{-D}}{=}\; \alpha\Bigl[1 + \frac{L'''\sigma_\delta^2}{2L'}\Bigr].

References:
  Zhang, Liu, Feng, Cui, Kingsbury & Tu, "Loss landscape dependent self-adjusting learning rates in
  decentralized stochastic gradient descent", arXiv:2112.01433 (2021); earlier: "Why does
  decentralized training outperform synchronous training in the large batch setting?", ICLR 2021
  submission.
  Lian, Zhang, Zhang, Hsieh, Zhang & Liu, "Can decentralized algorithms outperform centralized
  algorithms?", NeurIPS 2017, Algorithm 1 (D-PSGD).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdtheory import _checks

__all__ = [
    "ORDERS",
    "ring_mixing",
    "check_mixing",
    "max_stable_lr",
    "consensus_spread",
    "consensus_spread_after",
    "mean_variance",
    "mean_variance_after",
    "effective_lr",
]

ORDERS = _checks.DPSGD_ORDERS  # ("mix_then_step", "gradient_then_mix"), shared with simulate.dpsgd


def _check_order(order: str) -> str:
    return _checks.check_choice("order", order, ORDERS)


def ring_mixing(n: int, self_weight: float = 1.0 / 3.0) -> jax.Array:
    r"""The ring mixing matrix: weight ``self_weight`` on oneself, :math:`(1-s)/2` on each neighbour.

    Its eigenvalues are :math:`\omega_m = s + (1-s)\cos(2\pi m/n)`; for even ``n`` the smallest is
    :math:`2s - 1` (:math:`-1/3` at :math:`s = 1/3`).  ``n = 2`` gives the two-learner average
    with weights :math:`(s, 1-s)`.

    Example:
      >>> import sgdtheory as st
      >>> st.decentralized.ring_mixing(4).round(4)
      Array([[0.3333, 0.3333, 0.    , 0.3333],
             [0.3333, 0.3333, 0.3333, 0.    ],
             [0.    , 0.3333, 0.3333, 0.3333],
             [0.3333, 0.    , 0.3333, 0.3333]], dtype=float64)
    """
    n = _checks.check_int("n", n, 1)
    s = float(self_weight)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"self_weight must lie in [0, 1]; got {s}.")
    if n == 1:
        return jnp.ones((1, 1))
    if n == 2:
        return jnp.array([[s, 1.0 - s], [1.0 - s, s]])
    eye = np.eye(n)
    w = s * eye + 0.5 * (1.0 - s) * (np.roll(eye, 1, axis=1) + np.roll(eye, -1, axis=1))
    return jnp.asarray(w)


check_mixing = _checks.check_mixing


def _prep(mixing, curvature, lr=None, noise_var=None):
    w = check_mixing(mixing)
    h = _checks.as_float_array(curvature)
    if h.ndim > 1:
        raise ValueError("curvature must be a scalar or a (D,) vector of per-coordinate curvatures; "
                         f"got shape {tuple(h.shape)}.")
    _checks.check_positive("curvature", h)
    if lr is not None:
        if jnp.ndim(lr) != 0:
            raise ValueError(f"lr must be a scalar; got shape {jnp.shape(lr)}.")
        _checks.check_positive("lr", lr)
    if noise_var is not None:
        nv = _checks.as_float_array(noise_var)
        if nv.ndim > 1 or (nv.ndim == 1 and h.ndim == 1 and nv.shape != h.shape):
            raise ValueError(f"noise_var must be a scalar or match curvature's shape {tuple(h.shape)}; "
                             f"got shape {tuple(nv.shape)}.")
        _checks.check_nonnegative("noise_var", nv)
    return w


def _modes(w):
    r"""Eigenvalues of W and each mode's weight in the spread, :math:`|P u_m|^2/n`, and in the mean,
    :math:`(u_m\cdot\mathbf 1)^2/n^2` (robust to a degenerate eigenvalue 1)."""
    n = w.shape[0]
    om, u = jnp.linalg.eigh(0.5 * (w + w.T))
    proj = jnp.sum(u, axis=0) ** 2 / n  # (u_m . 1)^2 / n, sums to 1
    return om, (1.0 - proj) / n, proj / n


def _coeffs(om, h, lr, order):
    """``(a_m, b_m^2)`` per mode (axis -1) and coordinate (leading axes of ``h``)."""
    h = jnp.asarray(h)
    om = jnp.reshape(om, (1,) * h.ndim + om.shape)  # explicit broadcasting: (..., n)
    h = h[..., None]
    if order == "mix_then_step":
        return om - lr * h, jnp.broadcast_to(jnp.ones_like(om), jnp.broadcast_shapes(om.shape, h.shape))
    return (1.0 - lr * h) * om, jnp.broadcast_to(om ** 2, jnp.broadcast_shapes(om.shape, h.shape))


def max_stable_lr(mixing, curvature, *, order: str = "mix_then_step"):
    r"""Largest learning rate for which DPSGD on the quadratic has a stationary state.

    .. math:: \alpha_{max} = \frac{1 + \omega_{min}}{h_{max}} \ \text{(mix-then-step)},\qquad
              \alpha_{max} = \frac{2}{h_{max}} \ \text{(gradient-then-mix)},

    **exact** (every mode :math:`|a_m| < 1`; for mix-then-step :math:`1+\omega_{min} \le 2` so the
    consensus modes bind, strictly below synchronous SGD's :math:`2/h` unless
    :math:`\omega_{min} = 1`).  A bipartite graph without self-weight (:math:`\omega_{min}=-1`)
    gives 0: mix-then-step is then unstable at every learning rate.

    Args:
      mixing: ``(n, n)`` symmetric doubly-stochastic matrix.
      curvature: scalar or ``(D,)`` per-coordinate curvatures :math:`h > 0`.
      order: ``"mix_then_step"`` (default) or ``"gradient_then_mix"``.

    Example:
      >>> import sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)          # self-weight 1/3: omega_min = -1/3
      >>> round(float(st.decentralized.max_stable_lr(W, 1.0)), 10)   # alpha h < 2/3
      0.6666666667
      >>> float(st.decentralized.max_stable_lr(W, 1.0, order="gradient_then_mix"))
      2.0
    """
    order = _check_order(order)
    w = _prep(mixing, curvature)
    h_max = jnp.max(jnp.asarray(curvature, dtype=w.dtype))
    if order == "gradient_then_mix":
        return 2.0 / h_max
    om_min = jnp.linalg.eigvalsh(0.5 * (w + w.T))[0]
    return jnp.clip(1.0 + om_min, 0.0, 2.0) / h_max


def _check_lr(w, curvature, lr, order, *, mean_only=False):
    """Eager: raise past the bound.  Returns ``ok``, the traced-safe predicate
    ``0 < lr < bound`` (the callers return NaN where it is false, e.g. under ``jit``)."""
    if mean_only:
        bound = 2.0 / jnp.max(jnp.asarray(curvature, dtype=w.dtype))
        _checks.check_lr_below(lr, bound, "2/h_max (the mean mode)", "diverge")
    else:
        bound = max_stable_lr(w, curvature, order=order)
        expr = "(1 + ω_min)/h_max" if order == "mix_then_step" else "2/h_max"
        _checks.check_lr_below(
            lr, bound, expr,
            f"of the consensus modes ({order}) diverge" if order == "mix_then_step" else "diverge")
    return (lr > 0) & (lr < bound)


def consensus_spread(mixing, curvature, lr, noise_var, *, order: str = "mix_then_step"):
    r"""Stationary consensus spread :math:`\sigma_\delta^2 = \mathbb E\,\frac1n\sum_k(\theta_k-\bar\theta)^2`.

    **Exact** for DPSGD on :math:`L=\tfrac12\sum_i h_i\theta_i^2` with additive gradient noise of
    variance :math:`v_i` per coordinate, independent across learners and steps (derived here; the
    mix-then-step form matches the reference notes' A4 formula):

    .. math:: \sigma_\delta^2 = \frac1n\sum_{m\ge1}\frac{\alpha^2 v}{1-(\omega_m-\alpha h)^2}
              \ \text{(mix-then-step)},\qquad
              \frac1n\sum_{m\ge1}\frac{\alpha^2\omega_m^2 v}{1-(1-\alpha h)^2\omega_m^2}
              \ \text{(gradient-then-mix)}.

    Args:
      mixing: ``(n, n)`` symmetric doubly-stochastic matrix :math:`W`.
      curvature: scalar :math:`h` or ``(D,)`` per-coordinate curvatures.
      lr: the learning rate :math:`\alpha` (scalar).
      noise_var: per-step gradient-noise variance :math:`v` of one learner (scalar or ``(D,)``).
      order: ``"mix_then_step"`` (D-PSGD, default) or ``"gradient_then_mix"``.

    Returns:
      The spread per coordinate (scalar, or ``(D,)``).

    Raises:
      ValueError: a bad mixing matrix, or ``lr`` at or past :func:`max_stable_lr`
        (:math:`(1+\omega_{min})/h_{max}` for mix-then-step).  A traced ``lr`` (under
        ``jit``/``vmap``/``grad``) past the bound gives NaN instead.

    Example:
      >>> import sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)
      >>> round(float(st.decentralized.consensus_spread(W, 0.5, 0.1, 1.0)), 6)
      0.012584
    """
    order = _check_order(order)
    w = _prep(mixing, curvature, lr, noise_var)
    ok = _check_lr(w, curvature, lr, order)
    om, spread_w, _ = _modes(w)
    a, b2 = _coeffs(om, curvature, lr, order)
    var = lr ** 2 * b2 / (1.0 - a ** 2)
    out = jnp.asarray(noise_var) * jnp.sum(jnp.reshape(spread_w, (1,) * (var.ndim - 1) + spread_w.shape) * var, axis=-1)
    return jnp.where(ok, out, jnp.nan)  # traced lr past the bound: NaN (concrete: raised above)


def _geometric(a2, t):
    r""":math:`\sum_{k<t} a^{2k}`, exact also at :math:`a^2 = 1` and for :math:`a^2 > 1`."""
    near = jnp.abs(1.0 - a2) < 1e-12
    safe = jnp.where(near, 0.5, a2)
    return jnp.where(near, 1.0 * t, (1.0 - safe ** t) / (1.0 - safe))


def consensus_spread_after(mixing, curvature, lr, noise_var, steps, *, order: str = "mix_then_step"):
    r"""Spread after ``steps`` steps from a consensus start (all learners equal): **exact**, any lr.

    .. math:: \mathbb E\,\sigma_\delta^2(t) = \frac1n\sum_{m\ge1}\alpha^2 b_m^2 v\,
              \frac{1 - a_m^{2t}}{1 - a_m^2},

    with :math:`a_m, b_m` as in the module docstring.  Valid past the stability bound, where it
    grows like :math:`a_{min}^{2t}` (mix-then-step, :math:`|\omega_{min}-\alpha h|>1`).

    Example:
      >>> import sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)       # lr h = 0.8 > 2/3: the spread grows
      >>> s = [float(st.decentralized.consensus_spread_after(W, 8.0, 0.1, 1.0, t)) for t in (50, 100)]
      >>> round(s[1] / s[0] / 1.1333333 ** 100, 2)    # ~ |omega_min - lr h|^(2 * 50)
      1.0
    """
    order = _check_order(order)
    w = _prep(mixing, curvature, lr, noise_var)
    steps = _checks.check_int("steps", steps, 0)
    om, spread_w, _ = _modes(w)
    a, b2 = _coeffs(om, curvature, lr, order)
    var = lr ** 2 * b2 * _geometric(a ** 2, steps)
    return jnp.asarray(noise_var) * jnp.sum(jnp.reshape(spread_w, (1,) * (var.ndim - 1) + spread_w.shape) * var, axis=-1)


def mean_variance(mixing, curvature, lr, noise_var, *, order: str = "mix_then_step"):
    r"""Stationary variance of the learners' mean :math:`\bar\theta`: **exact**, both orders.

    .. math:: \operatorname{Var}\bar\theta = \frac{\alpha^2 v/n}{1-(1-\alpha h)^2}
              = \frac{\alpha v}{n h (2-\alpha h)},

    synchronous SGD with the noise of all ``n`` learners averaged.  It exists for
    :math:`\alpha h < 2` -- also between the consensus bound and 2, where the spread of
    mix-then-step diverges.  ``mixing`` is validated; only ``n`` enters.  Concrete
    :math:`\alpha \ge 2/h_{max}` raises ``ValueError``; a traced one gives NaN.

    Example:
      >>> import sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)
      >>> round(float(st.decentralized.mean_variance(W, 8.0, 0.1, 1.0)), 6)   # past 2/3: still fine
      0.001302
    """
    _check_order(order)
    w = _prep(mixing, curvature, lr, noise_var)
    ok = _check_lr(w, curvature, lr, order, mean_only=True)
    n = w.shape[0]
    h = jnp.asarray(curvature, dtype=w.dtype)
    out = jnp.asarray(noise_var) * lr / (n * h * (2.0 - lr * h))
    return jnp.where(ok, out, jnp.nan)  # traced lr past 2/h_max: NaN (concrete: raised above)


def mean_variance_after(mixing, curvature, lr, noise_var, steps, *, order: str = "mix_then_step"):
    r"""Variance of :math:`\bar\theta` after ``steps`` steps from a deterministic start: **exact**.

    .. math:: \operatorname{Var}\bar\theta(t) = \frac{\alpha^2 v}{n}\,\frac{1-(1-\alpha h)^{2t}}{1-(1-\alpha h)^2}.

    Example:
      >>> import sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)
      >>> round(float(st.decentralized.mean_variance_after(W, 8.0, 0.1, 1.0, 100)), 6)
      0.001302
    """
    _check_order(order)
    w = _prep(mixing, curvature, lr, noise_var)
    steps = _checks.check_int("steps", steps, 0)
    n = w.shape[0]
    a = 1.0 - lr * jnp.asarray(curvature, dtype=w.dtype)
    return jnp.asarray(noise_var) * lr ** 2 / n * _geometric(a ** 2, steps)


def effective_lr(loss: Callable, point, lr, spread):
    r"""The landscape-dependent effective learning rate of DPSGD at the learners' mean (**ours**).

    Definition (ours: a projection of the mean DPSGD step on the gradient; the paper's precise
    definition was not available to us):
    :math:`\alpha_e = \alpha\,\mathbb E[g_{DP}]\cdot g/|g|^2`,
    :math:`g_{DP} = \frac1n\sum_k\nabla L(\bar\theta+\delta_k)`, :math:`g = \nabla L(\bar\theta)`.
    This function returns its second-order expansion in the deviations,

    .. math:: \alpha_e \approx \alpha\Bigl[1 + \frac{g\cdot\nabla\operatorname{tr}(H\Sigma_\delta)}{2|g|^2}\Bigr],
              \qquad 1\text{-D}: \ \alpha\Bigl[1+\frac{L'''\sigma_\delta^2}{2L'}\Bigr],

    an **approximation** (small spread: the next terms are :math:`O(\nabla^4 L\,\delta^3)` and
    :math:`O(\nabla^5 L\,\delta^4)`).  For a quartic loss the 1-D form is exact up to the
    learners' third moment, :math:`\alpha_e/\alpha = 1 + (L'''\sigma_\delta^2 + \tfrac13
    L''''\,\mathbb E\frac1n\sum_k\delta_k^3)/(2L')`.  :math:`\alpha_e<\alpha` where
    :math:`g\cdot\nabla\operatorname{tr}H\Sigma_\delta < 0` (1-D: :math:`L'''/L' < 0`): the
    curvature rises along the descent direction :math:`-g`, i.e. falls along the gradient (e.g.
    the walls of a sharp valley, curvature growing towards the bottom).

    Args:
      loss: ``loss(w) -> scalar``, the full-batch loss (``w`` a scalar or a ``(D,)`` vector).
      point: the learners' mean :math:`\bar\theta` (must not be a stationary point).
      lr: :math:`\alpha`.
      spread: :math:`\Sigma_\delta` -- a scalar (1-D, or isotropic), ``(D,)`` (diagonal) or
        ``(D, D)``; e.g. from :func:`consensus_spread` at :math:`h = L''(\bar\theta)`.

    Example:
      >>> import sgdtheory as st
      >>> L = lambda w: w ** 2 / 2 + w ** 4 / 4          # L'(1) = 2, L'''(1) = 6
      >>> round(float(st.decentralized.effective_lr(L, 1.0, 0.1, 0.01) / 0.1), 6)  # 1 + 6*0.01/4
      1.015
    """
    w0 = _checks.as_float_array(point)
    if w0.ndim > 1:
        raise ValueError(f"point must be a scalar or a (D,) vector; got shape {tuple(w0.shape)}.")
    s = _checks.as_float_array(spread)
    d = 1 if w0.ndim == 0 else w0.shape[0]
    if s.ndim == 0:
        sig = s * jnp.eye(d)
    elif s.ndim == 1 and s.shape == (d,):
        sig = jnp.diag(s)
    elif s.shape == (d, d):
        sig = s
    else:
        raise ValueError(f"spread must be a scalar, ({d},) or ({d}, {d}); got shape {tuple(s.shape)}.")
    _checks.check_nonnegative("spread diagonal", jnp.diagonal(sig))
    if jnp.ndim(lr) != 0:
        raise ValueError("lr must be a scalar.")
    _checks.check_positive("lr", lr)
    f = (lambda x: loss(x[0])) if w0.ndim == 0 else loss

    def parts(x0, sig):  # one compiled program (eager third derivatives dispatch op by op: slow)
        g = jax.grad(f)(x0)
        smooth = lambda x: 0.5 * jnp.sum(jax.hessian(f)(x) * sig)  # noqa: E731  (½ tr(H Σ))
        return jnp.sum(g * jax.grad(smooth)(x0)), jnp.sum(g * g)

    num, g2 = jax.jit(parts)(jnp.reshape(w0, (d,)), sig)
    gv = _checks.concrete_value(g2)
    if gv is not None and not gv > 0:
        raise ValueError("effective_lr is undefined at a stationary point (the gradient is 0).")
    return lr * (1.0 + num / g2)
