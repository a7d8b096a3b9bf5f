r"""Adaptive optimizers: Adam's update statistics, Adam vs LaProp boundedness, and the mean-field
fixed points of natural-gradient and Adam-like preconditioners.

Three groups of results, each labelled as in the docs page (``docs/theory/adaptive.md``):

**Adam's update under Gaussian gradients** (Zhang & Ziyin, "On the Distributional Properties of
Adaptive Gradients", UAI 2021, arXiv:2105.07222).  For i.i.d. gradients
:math:`g_k \sim \mathcal N(\mu, \sigma^2)` (one coordinate), the bias-corrected update in units
of the learning rate is :math:`u_t = \hat m_t/(\sqrt{\hat v_t} + \epsilon)` (the ``optax.adam``
convention; the parameter moves by :math:`-\lambda u_t`).

* :func:`adam_update_moments_first_step` -- **exact**: :math:`u_1 = g/(|g|+\epsilon)`.
* :func:`adam_update_moments_second_step` -- **exact** at :math:`\epsilon = 0` (a 1-D integral over
  the direction of :math:`(g_1, g_2)`, since :math:`u_2` is scale invariant).
* :func:`adam_update_moments` -- **approximation** (delta method, derived here), any :math:`t`
  including :math:`t\to\infty`; good when :math:`\hat v_t` has concentrated (small
  :math:`\sum_k b_k^2`, i.e. :math:`t \gg 1` and :math:`1 - \beta_2 \ll 1`), off at small
  :math:`t` (numbers in the docs).
* the variance is bounded: :math:`\operatorname{Var} u_t \le \sup|u_t|^2 =` :func:`adam_update_bound`
  ``**2`` (**exact**), finite for all :math:`t` iff :math:`\beta_1 < \sqrt{\beta_2}`.

**Boundedness of Adam and LaProp** (Ziyin, Wang & Ueda, arXiv:2002.04839):
:func:`adam_update_bound` and :func:`laprop_update_bound` are the exact suprema of
:math:`|u_t|` over all gradient sequences (derived here), :func:`adam_worst_case_gradients` attains
Adam's, and :func:`impulse_updates` is the closed-form response to one gradient spike, which grows
without bound for Adam when :math:`\beta_1 > \sqrt{\beta_2}` and never exceeds one for LaProp.

**Mean-field fixed points** (Liu, Ziyin & Ueda, ICML 2021, arXiv:2012.03636: Cor 9, Eq. 111,
Thm 10).  With a preconditioner built from the second moments of the *ensemble*
(:math:`\Lambda = \lambda(K\Sigma K)^{-1}` or :math:`\lambda\,\mathbb E[gg^\top]^{-1/2}`) the
second moments follow a deterministic map :math:`\Sigma_{t+1} = f(\Sigma_t)` (the mean-field
map, :func:`mean_field_map`); the paper's covariances are its **fixed points**, not stationary
covariances of a per-replica optimizer.  Each function returns the fixed point *and* the Jacobian
of :math:`f` there: the fixed point attracts iff the spectral radius is below one.  Findings
(tests and docs): the adaptive-NGD fixed point with :math:`C = cK\Sigma K` has slope
:math:`1 - 4/(1+c)` and is **unstable for** :math:`c < 1`; the Adam-like one has slope
:math:`1 - 2/(1+c)` (attracting for :math:`c > 0`), yet a per-replica EMA-Adam with purely
multiplicative noise collapses to :math:`|w| \to 0` instead of Thm 10's value.

This module never imports :mod:`sgdtheory.simulate` (the crosscheck pairs them).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import erf, ndtr

from sgdtheory import _checks

__all__ = [
    "UpdateMoments",
    "adam_update_moments_first_step",
    "adam_update_moments_second_step",
    "adam_update_moments",
    "ema_weight_sums",
    "adam_update_bound",
    "laprop_update_bound",
    "adam_is_bounded",
    "adam_worst_case_gradients",
    "ImpulseUpdates",
    "impulse_updates",
    "optimizer_updates",
    "MeanFieldFixedPoint",
    "mean_field_map",
    "ngd_fixed_point",
    "ngd_fixed_point_proportional",
    "adam_like_fixed_point",
]


def _f(x):
    return _checks.as_float_array(x)


def _check_t(t):
    """A step t >= 1 (or +inf for the limit), when concrete."""
    v = _checks.concrete_value(t)
    if v is not None and (np.any(np.isnan(v)) or np.any(v < 1)):
        raise ValueError(f"t must be a step >= 1 (or jnp.inf); got {v}.")


def _check_betas(b1, b2):
    _checks.check_momentum(b1, "b1")
    _checks.check_momentum(b2, "b2")


# ----------------------------------------------------------------------------------------------
# Adam's update under i.i.d. Gaussian gradients
# ----------------------------------------------------------------------------------------------


class UpdateMoments(NamedTuple):
    r"""Moments of the update :math:`u_t` (units of the learning rate) and of its magnitude.

    Attributes:
      mean: :math:`\mathbb E u_t`.
      var: :math:`\operatorname{Var} u_t`.
      abs_mean: :math:`\mathbb E |u_t|`.
      abs_var: :math:`\operatorname{Var} |u_t|` (the variance of the update's magnitude).
    """

    mean: jax.Array
    var: jax.Array
    abs_mean: jax.Array
    abs_var: jax.Array


def _moments(mean, second, abs_mean):
    return UpdateMoments(mean, second - mean**2, abs_mean, second - abs_mean**2)


# Gauss-Legendre nodes on [-1, 1] (static): log-spaced piece near 0 and a linear piece beyond.
_GL_LOG = np.polynomial.legendre.leggauss(256)
_GL_LIN = np.polynomial.legendre.leggauss(512)


def _gl(lo, hi, nodes):
    x, w = (jnp.asarray(a) for a in nodes)
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    return mid + half * x, half * w


def _first_step_one(mu, sig, eps):
    # eps = 0: closed form
    e0 = erf(mu / (sig * jnp.sqrt(2.0)))
    exact0 = _moments(e0, jnp.ones_like(e0), jnp.ones_like(e0))
    # eps > 0: E h(g) over g > 0 of [p(g) -+ p(-g)]
    es = jnp.where(eps > 0, eps, 1.0)
    lo, mid = es * 1e-12, jnp.maximum(sig / 4, es * 1e-6)
    hi = jnp.abs(mu) + 40 * sig
    y, wy = _gl(jnp.log(lo), jnp.log(mid), _GL_LOG)
    g1, w1 = jnp.exp(y), wy * jnp.exp(y)
    g2, w2 = _gl(mid, hi, _GL_LIN)
    g, w = jnp.concatenate([g1, g2]), jnp.concatenate([w1, w2])
    dens = lambda x: jnp.exp(-0.5 * ((x - mu) / sig) ** 2) / (sig * jnp.sqrt(2 * jnp.pi))  # noqa: E731
    p_pos, p_neg = dens(g), dens(-g)
    h = g / (g + es)
    m1 = jnp.sum(w * h * (p_pos - p_neg))
    m2 = jnp.sum(w * h * h * (p_pos + p_neg))
    a1 = jnp.sum(w * h * (p_pos + p_neg))
    quad = _moments(m1, m2, a1)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(eps > 0, b, a), exact0, quad)


_first_step_core = jax.jit(jax.vmap(_first_step_one))


def adam_update_moments_first_step(mean, std, eps=1e-8) -> UpdateMoments:
    r"""Exact moments of Adam's first update :math:`u_1 = g/(|g| + \epsilon)`, :math:`g\sim\mathcal N(\mu,\sigma^2)`.

    At :math:`t = 1` both bias corrections are exact, :math:`\hat m_1 = g` and
    :math:`\hat v_1 = g^2`, so the update is a (softened) sign:

    .. math:: u_1 = \operatorname{sign}(g)\,\frac{|g|}{|g|+\epsilon},\qquad
              \epsilon = 0:\ \ \mathbb E u_1 = \operatorname{erf}\!\Big(\frac{\mu}{\sigma\sqrt2}\Big),\
              \operatorname{Var} u_1 = 1 - \operatorname{erf}^2\!\Big(\frac{\mu}{\sigma\sqrt2}\Big),\
              \operatorname{Var}|u_1| = 0 .

    **Exact** (derived here); for :math:`\epsilon > 0` the two 1-D Gaussian integrals are done by
    Gauss--Legendre quadrature (a log-spaced piece resolving the scale :math:`\epsilon` and a linear
    piece up to :math:`|\mu| + 40\sigma`; agrees with ``scipy.integrate.quad`` to ~1e-12).  Independent
    of :math:`\beta_1, \beta_2`.

    Args:
      mean, std: :math:`\mu` and :math:`\sigma > 0` of the gradient (scalars or broadcastable arrays).
      eps: Adam's :math:`\epsilon \ge 0` (``optax.adam`` default ``1e-8``).

    Returns:
      :class:`UpdateMoments`.

    Example:
      >>> m = adam_update_moments_first_step(0.0, 1.0, eps=0.0)
      >>> float(m.var), float(m.abs_var)
      (1.0, 0.0)

    Reference: arXiv:2105.07222 (the update at the first step; the abstract's statement is about
    the variance of the update's magnitude, which starts at :math:`\approx 0` here).
    """
    mu, sig, eps = _f(mean), _f(std), _f(eps)
    _checks.check_positive("std", sig)
    _checks.check_nonnegative("eps", eps)
    mu, sig, eps = jnp.broadcast_arrays(mu, sig, eps)

    shape = mu.shape
    out = _first_step_core(mu.reshape(-1), sig.reshape(-1), eps.reshape(-1))
    return UpdateMoments(*(a.reshape(shape) for a in out))


def adam_update_moments_second_step(mean, std, b1=0.9, b2=0.999) -> UpdateMoments:
    r"""Exact moments of Adam's second update :math:`u_2 = \hat m_2/\sqrt{\hat v_2}` (:math:`\epsilon = 0`).

    .. math:: u_2 = \frac{\sqrt{1+\beta_2}}{1+\beta_1}\,
              \frac{\beta_1 g_1 + g_2}{\sqrt{\beta_2 g_1^2 + g_2^2}}

    depends only on the direction :math:`\theta` of :math:`(g_1, g_2) \sim \mathcal N((\mu,\mu),
    \sigma^2 I)`, whose density is

    .. math:: p(\theta) = \frac{e^{-|m|^2/2}}{2\pi}\Big[1 + a\sqrt{2\pi}\,e^{a^2/2}\,\Phi(a)\Big],
              \qquad m = \tfrac{\mu}{\sigma}(1, 1),\ a = m\cdot(\cos\theta, \sin\theta),

    so every moment is a 1-D integral over :math:`\theta`, done by Gauss--Legendre quadrature
    (1024 nodes) on each of the two arcs between the zeros of :math:`u_2` (spectrally accurate:
    ~1e-12 for :math:`|\mu|/\sigma \lesssim 20`).  **Exact** (derived here).
    Adam's :math:`\epsilon` changes the result by :math:`O(\epsilon/\sigma)`.

    Args:
      mean, std: :math:`\mu`, :math:`\sigma > 0` of the i.i.d. Gaussian gradients (scalars; an
        array raises ``ValueError``: map over values with ``jax.vmap``).
      b1, b2: Adam's :math:`\beta_1, \beta_2 \in [0, 1)` (scalars).

    Returns:
      :class:`UpdateMoments`.

    Example:
      >>> m = adam_update_moments_second_step(0.0, 1.0, b1=0.9, b2=0.999)
      >>> round(float(m.var), 4), round(float(m.abs_var), 4)
      (0.5014, 0.095)
    """
    mu, sig, b1, b2 = _f(mean), _f(std), _f(b1), _f(b2)
    for name, v in (("mean", mu), ("std", sig), ("b1", b1), ("b2", b2)):
        if v.ndim != 0:  # an array would broadcast against the quadrature nodes and be summed away
            raise ValueError(f"{name} must be a scalar; got shape {tuple(v.shape)}. For several "
                             f"values use jax.vmap(adam_update_moments_second_step).")
    _checks.check_positive("std", sig)
    _check_betas(b1, b2)
    return _second_step(mu, sig, b1, b2)


_GL_ARC = np.polynomial.legendre.leggauss(1024)


@jax.jit
def _second_step(mu, sig, b1, b2):
    # u_2 changes sign where b1 cos(th) + sin(th) = 0: Gauss-Legendre on the two arcs between
    # these zeros, where u_2 and |u_2| are smooth (spectral accuracy for every moment)
    th0 = jnp.arctan2(-b1, 1.0)
    t1, w1 = _gl(th0, th0 + jnp.pi, _GL_ARC)
    t2, w2 = _gl(th0 + jnp.pi, th0 + 2 * jnp.pi, _GL_ARC)
    th, w = jnp.concatenate([t1, t2]), jnp.concatenate([w1, w2])
    c, s = jnp.cos(th), jnp.sin(th)
    u = jnp.sqrt(1 + b2) / (1 + b1) * (b1 * c + s) / jnp.sqrt(b2 * c * c + s * s)
    r = mu / sig
    a = r * (c + s)
    dens = (jnp.exp(-(r * r))
            + a * jnp.sqrt(2 * jnp.pi) * jnp.exp(0.5 * a * a - r * r) * ndtr(a)) / (2 * jnp.pi)
    w = w * dens
    return _moments(jnp.sum(w * u), jnp.sum(w * u * u), jnp.sum(w * jnp.abs(u)))


def ema_weight_sums(t, b1=0.9, b2=0.999):
    r"""The three sums of the bias-corrected EMA weights that set Adam's update statistics.

    With :math:`\hat m_t = \sum_k a_k g_k`, :math:`a_k = (1-\beta_1)\beta_1^{t-k}/(1-\beta_1^t)`
    and :math:`\hat v_t = \sum_k b_k g_k^2`, :math:`b_k = (1-\beta_2)\beta_2^{t-k}/(1-\beta_2^t)`
    (each summing to one):

    .. math:: \sum a_k^2 = \frac{(1-\beta_1)(1+\beta_1^t)}{(1+\beta_1)(1-\beta_1^t)},\quad
              \sum b_k^2 = \frac{(1-\beta_2)(1+\beta_2^t)}{(1+\beta_2)(1-\beta_2^t)},\quad
              \sum a_k b_k = \frac{(1-\beta_1)(1-\beta_2)(1-(\beta_1\beta_2)^t)}
                                  {(1-\beta_1\beta_2)(1-\beta_1^t)(1-\beta_2^t)} .

    **Exact** (geometric sums).  ``t`` may be ``jnp.inf`` (the stationary limits).

    Example:
      >>> tuple(round(float(x), 6) for x in ema_weight_sums(jnp.inf, 0.9, 0.999))
      (0.052632, 0.0005, 0.000991)
    """
    t, b1, b2 = _f(t), _f(b1), _f(b2)
    _check_betas(b1, b2)
    _check_t(t)
    fin = jnp.isfinite(t)
    tt = jnp.where(fin, t, 1.0)
    p1, p2, p12 = (jnp.where(fin, b**tt, 0.0) for b in (b1, b2, b1 * b2))
    a2 = (1 - b1) * (1 + p1) / ((1 + b1) * (1 - p1))
    bb = (1 - b2) * (1 + p2) / ((1 + b2) * (1 - p2))
    ab = (1 - b1) * (1 - b2) * (1 - p12) / ((1 - b1 * b2) * (1 - p1) * (1 - p2))
    return a2, bb, ab


def _folded_mean(m, v):
    s = jnp.sqrt(v)
    z = m / s
    return m * (1 - 2 * ndtr(-z)) + 2 * s * jnp.exp(-0.5 * z * z) / jnp.sqrt(2 * jnp.pi)


def adam_update_moments(t, mean, std, b1=0.9, b2=0.999) -> UpdateMoments:
    r"""Delta-method moments of Adam's update :math:`u_t = \hat m_t/\sqrt{\hat v_t}` under i.i.d. Gaussian gradients.

    Write :math:`s = \mu^2+\sigma^2 = \mathbb E g^2`, :math:`\hat m_t = \mu + \delta m`,
    :math:`\hat v_t = s + \delta v` with :math:`\operatorname{Var}\delta m = \sigma^2\sum a_k^2`,
    :math:`\operatorname{Var}\delta v = (2\sigma^4 + 4\mu^2\sigma^2)\sum b_k^2`,
    :math:`\operatorname{Cov}(\delta m,\delta v) = 2\mu\sigma^2\sum a_k b_k`
    (:func:`ema_weight_sums`).  Expanding :math:`u = \hat m/\sqrt{\hat v}` to second order:

    .. math::
        \operatorname{Var} u_t \approx \frac{\sigma^2}{s}\sum a_k^2
          + \frac{\mu^2\sigma^2(\sigma^2+2\mu^2)}{2 s^3}\sum b_k^2
          - \frac{2\mu^2\sigma^2}{s^2}\sum a_k b_k,\qquad
        \mathbb E u_t \approx \frac{\mu}{\sqrt s} - \frac{\mu\sigma^2}{s^{3/2}}\sum a_k b_k
          + \frac{3\mu(2\sigma^4+4\mu^2\sigma^2)}{8 s^{5/2}}\sum b_k^2,

    and :math:`\mathbb E|u_t|` from a Gaussian :math:`u_t` (folded normal).  As
    :math:`t\to\infty`: :math:`\operatorname{Var}u_\infty \approx \frac{\sigma^2}{s}\frac{1-\beta_1}
    {1+\beta_1}` plus :math:`O(1-\beta_2)` terms -- bounded, as arXiv:2105.07222 states.

    **Approximation** (derived here; the paper's own formula was not available to us).  Regime:
    :math:`\hat v_t` concentrated, :math:`\sum b_k^2 \ll 1` (:math:`t \gg 1`, :math:`1-\beta_2 \ll 1`)
    and :math:`\sigma\sqrt{\sum a_k^2} \ll \sqrt s`.  It is poor at the first steps, where
    :math:`\hat v_t` is built from one or two gradients: at :math:`\mu = 2\sigma`, :math:`t = 1` it
    gives 0.024 against the exact 0.0889 (:func:`adam_update_moments_first_step`); with
    :math:`\beta = (0.9, 0.999)` it is within 1 % of simulation for :math:`t \gtrsim 50`
    (docs/theory/adaptive.md lists the numbers).

    Args:
      t: step (1, 2, ...; ``jnp.inf`` for the limit).
      mean, std: :math:`\mu`, :math:`\sigma > 0`.
      b1, b2: :math:`\beta_1, \beta_2 \in [0, 1)`.

    Returns:
      :class:`UpdateMoments` (``abs_*`` under the Gaussian-:math:`u` closure).

    Example:
      >>> m = adam_update_moments(jnp.inf, 0.0, 1.0, 0.9, 0.999)
      >>> round(float(m.var), 4)   # (1 - b1)/(1 + b1)
      0.0526
    """
    mu, sig, t, b1, b2 = _f(mean), _f(std), _f(t), _f(b1), _f(b2)
    _checks.check_positive("std", sig)
    _check_betas(b1, b2)
    _check_t(t)
    return _delta_moments(t, mu, sig, b1, b2)


@jax.jit
def _delta_moments(t, mu, sig, b1, b2):
    a2, bb, ab = ema_weight_sums(t, b1, b2)
    s = mu * mu + sig * sig
    s2 = sig * sig
    var = s2 / s * a2 + mu * mu * s2 * (s2 + 2 * mu * mu) / (2 * s**3) * bb - 2 * mu * mu * s2 / s**2 * ab
    mean_u = (mu / jnp.sqrt(s) - mu * s2 / s**1.5 * ab
              + 3 * mu * (2 * s2 * s2 + 4 * mu * mu * s2) / (8 * s**2.5) * bb)
    return _moments(mean_u, var + mean_u**2, _folded_mean(mean_u, var))


# ----------------------------------------------------------------------------------------------
# boundedness: Adam vs LaProp
# ----------------------------------------------------------------------------------------------


def adam_is_bounded(b1, b2):
    r"""Whether Adam's update is bounded uniformly in time: :math:`\beta_1 < \sqrt{\beta_2}`
    (:math:`\beta_1^2 < \beta_2`).  See :func:`adam_update_bound`.

    Example:
      >>> bool(adam_is_bounded(0.9, 0.999)), bool(adam_is_bounded(0.99, 0.9))
      (True, False)
    """
    b1, b2 = _f(b1), _f(b2)
    _check_betas(b1, b2)
    return b1 * b1 < b2


def adam_update_bound(b1=0.9, b2=0.999, t=None):
    r"""The supremum of Adam's :math:`|\hat m_t/\sqrt{\hat v_t}|` over all gradient sequences (:math:`\epsilon = 0`).

    By Cauchy--Schwarz on :math:`\sum_k \beta_1^{t-k}g_k = \sum_j (\beta_1/\sqrt{\beta_2})^j
    \cdot \sqrt{\beta_2}^{\,j} g_{t-j}`, with :math:`r = \beta_1^2/\beta_2`:

    .. math:: \sup_{g_1..g_t} |u_t| = \frac{(1-\beta_1)\sqrt{1-\beta_2^t}}{(1-\beta_1^t)\sqrt{1-\beta_2}}
              \sqrt{\frac{1-r^t}{1-r}}
              \ \xrightarrow{t\to\infty}\ \frac{1-\beta_1}{\sqrt{(1-\beta_2)(1-\beta_1^2/\beta_2)}}
              \ \ (r < 1),\quad \infty\ \ (r \ge 1),

    attained by :func:`adam_worst_case_gradients` (:math:`g_{t-j} \propto (\beta_1/\beta_2)^j`).
    So Adam's update is bounded for all :math:`t` iff :math:`\beta_1 < \sqrt{\beta_2}` -- the
    condition of Ziyin, Wang & Ueda (arXiv:2002.04839, Sec. 3); beyond it the bound grows as
    :math:`r^{t/2}`.  **Exact** (derived here; :math:`\epsilon > 0` only lowers :math:`|u_t|`).
    Since :math:`|u_t|` is bounded, so is its variance under any gradient law:
    :math:`\operatorname{Var} u_t \le` ``adam_update_bound(b1, b2, t)**2``.

    Args:
      b1, b2: :math:`\beta_1, \beta_2 \in [0, 1)` (:math:`\beta_2 > 0`).
      t: the step (``None``: the supremum over all steps, :math:`t \to \infty`).

    Example:
      >>> round(float(adam_update_bound(0.9, 0.999)), 4), float(adam_update_bound(0.99, 0.9))
      (7.2703, inf)
    """
    b1, b2 = _f(b1), _f(b2)
    _check_betas(b1, b2)
    _checks.check_positive("b2", b2)
    r = b1 * b1 / b2
    if t is None:
        return jnp.where(r < 1, (1 - b1) / jnp.sqrt((1 - b2) * jnp.abs(1 - r)), jnp.inf)
    t = _f(t)
    _check_t(t)
    geo = jnp.where(jnp.abs(r - 1) < 1e-12, t, (1 - r**t) / jnp.where(r == 1, 1.0, 1 - r))
    return (1 - b1) * jnp.sqrt(1 - b2**t) / ((1 - b1**t) * jnp.sqrt(1 - b2)) * jnp.sqrt(geo)


def laprop_update_bound(b1=0.9, b2=0.999, t=None):
    r"""The supremum of LaProp's :math:`|m_t/(1-\beta_1^t)|` (units of the learning rate, :math:`\epsilon = 0`).

    Each normalised gradient obeys :math:`|g_k|/\sqrt{\hat\nu_k} \le \sqrt{(1-\beta_2^k)/(1-\beta_2)}`
    (equality when :math:`g_k` dominates :math:`\nu_k`), and the momentum is an average with
    weights summing to one, so

    .. math:: \sup |u_t| = \frac{1-\beta_1}{1-\beta_1^t}\sum_{k=1}^t \beta_1^{t-k}
              \sqrt{\frac{1-\beta_2^k}{1-\beta_2}} \ \le\ \frac{1}{\sqrt{1-\beta_2}}
              \quad\text{for every } \beta_1, \beta_2,

    approached (not attained) by sequences with :math:`|g_k|/|g_{k-1}| \to \infty`.  **Exact**
    (derived here; the boundedness is the LaProp paper's point, arXiv:2002.04839).

    Args:
      b1, b2: :math:`\beta_1, \beta_2 \in [0, 1)`.
      t: the step, a Python int (``None``: :math:`t\to\infty`, :math:`1/\sqrt{1-\beta_2}`).

    Example:
      >>> round(float(laprop_update_bound(0.99, 0.9)), 4), float(laprop_update_bound(0.9, 0.9, t=1))
      (3.1623, 1.0)
    """
    b1, b2 = _f(b1), _f(b2)
    _check_betas(b1, b2)
    if t is None:
        return 1 / jnp.sqrt(1 - b2)
    t = _checks.check_int("t", t, 1)
    k = jnp.arange(1, t + 1, dtype=b1.dtype)
    terms = b1 ** (t - k) * jnp.sqrt((1 - b2**k) / (1 - b2))
    return (1 - b1) / (1 - b1**t) * jnp.sum(terms)


def adam_worst_case_gradients(b1, b2, steps: int):
    r"""The gradient sequence :math:`g_k = (\beta_1/\beta_2)^{t-k}`, :math:`k = 1..t`, whose Adam
    update at step :math:`t` equals :func:`adam_update_bound` (the Cauchy--Schwarz equality case).

    For :math:`\beta_1 > \beta_2` it *decays* in time: a gradient that shrinks geometrically, as
    near a minimum, is exactly what makes Adam's update grow when :math:`\beta_1 > \sqrt{\beta_2}`.

    Args:
      b1, b2: :math:`\beta_1, \beta_2 \in (0, 1)`.
      steps: :math:`t` (static).

    Returns:
      ``(steps,)`` array.

    Example:
      >>> adam_worst_case_gradients(0.5, 0.25, 3)
      Array([4., 2., 1.], dtype=float64)
    """
    b1, b2 = _f(b1), _f(b2)
    _check_betas(b1, b2)
    _checks.check_positive("b1", b1)
    _checks.check_positive("b2", b2)
    steps = _checks.check_int("steps", steps, 1)
    k = jnp.arange(1, steps + 1, dtype=b1.dtype)
    return (b1 / b2) ** (steps - k)


class ImpulseUpdates(NamedTuple):
    """Updates (units of the learning rate) after a single gradient spike; see :func:`impulse_updates`."""

    adam: jax.Array
    laprop: jax.Array


def impulse_updates(t, b1=0.9, b2=0.999, eps=0.0, g=1.0) -> ImpulseUpdates:
    r"""Closed-form updates after one gradient spike :math:`g_1 = g`, :math:`g_k = 0` for :math:`k > 1`.

    .. math::
        u^{\rm Adam}_t = \frac{(1-\beta_1)\beta_1^{t-1} g/(1-\beta_1^t)}
                              {|g|\sqrt{(1-\beta_2)\beta_2^{t-1}/(1-\beta_2^t)} + \epsilon},\qquad
        u^{\rm LaProp}_t = \frac{(1-\beta_1)\beta_1^{t-1}}{1-\beta_1^t}\,
                           \frac{g}{|g| + \epsilon}.

    At :math:`\epsilon = 0` Adam's update grows like :math:`(\beta_1/\sqrt{\beta_2})^{t}` when
    :math:`\beta_1 > \sqrt{\beta_2}` -- the divergence LaProp removes -- until :math:`\epsilon`
    takes over; LaProp's never exceeds one.  **Exact** (derived here).

    Args:
      t: step(s) :math:`\ge 1` (array allowed).
      b1, b2: :math:`\beta_1, \beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0` (the same for both optimizers here; ``optax.adam`` default 1e-8,
        :func:`sgdtheory.optim.laprop` default 1e-15).
      g: the spike :math:`g \ne 0` (``g = 0`` with ``eps = 0`` raises ``ValueError``: 0/0).

    Returns:
      :class:`ImpulseUpdates` (the parameter moves by ``-lr *`` these).

    Example:
      >>> u = impulse_updates(jnp.array([1.0, 200.0]), 0.99, 0.9)
      >>> float(u.adam[1]) > 1e2, float(u.laprop[1]) < 1.0
      (True, True)
    """
    t, b1, b2, eps, g = _f(t), _f(b1), _f(b2), _f(eps), _f(g)
    _check_betas(b1, b2)
    _checks.check_nonnegative("eps", eps)
    gv, ev = _checks.concrete_value(g), _checks.concrete_value(eps)
    if gv is not None and ev is not None and np.any((gv == 0) & (ev == 0)):
        raise ValueError("impulse_updates needs a spike g != 0 when eps = 0 (the updates are then "
                         "0/0); pass g != 0 or eps > 0.")
    _check_t(t)
    m_hat = (1 - b1) * b1 ** (t - 1) / (1 - b1**t) * g
    v_hat = (1 - b2) * b2 ** (t - 1) / (1 - b2**t) * g * g
    adam = m_hat / (jnp.sqrt(v_hat) + eps)
    lap = (1 - b1) * b1 ** (t - 1) / (1 - b1**t) * g / (jnp.abs(g) + eps)
    return ImpulseUpdates(adam, lap)


def optimizer_updates(optimizer: optax.GradientTransformation, grads, params=None):
    r"""The updates an optax optimizer returns along a fixed gradient sequence (one ``lax.scan``).

    Args:
      optimizer: any ``optax.GradientTransformation``.
      grads: ``(T, ...)`` array: the gradient at each of ``T`` steps.
      params: parameters passed to ``update`` (default zeros shaped like one gradient; held fixed).

    Returns:
      ``(T, ...)`` updates (for ``optax.adam(lr)``: :math:`-\lambda u_t`).

    Example:
      >>> import optax
      >>> u = optimizer_updates(optax.adam(1.0, eps=0.0), jnp.ones((3, 1)))
      >>> u[:, 0].round(6)
      Array([-1., -1., -1.], dtype=float64)
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError("optimizer must be an optax.GradientTransformation; got "
                         f"{type(optimizer).__name__}.")
    grads = _f(grads)
    if grads.ndim < 1:
        raise ValueError("grads must have a leading time axis (T, ...).")
    p = jnp.zeros_like(grads[0]) if params is None else params
    state = optimizer.init(p)

    def step(s, g):
        u, s = optimizer.update(g, s, p)
        return s, u

    return jax.lax.scan(step, state, grads)[1]


# ----------------------------------------------------------------------------------------------
# mean-field fixed points of adaptive preconditioners
# ----------------------------------------------------------------------------------------------


class MeanFieldFixedPoint(NamedTuple):
    r"""A fixed point of the mean-field second-moment map and its local stability.

    Attributes:
      sigma: ``(D, D)`` the fixed point :math:`\Sigma^*` (a **mean-field fixed point**, not a
        stationary covariance of a per-replica optimizer).
      preconditioner: ``(D, D)`` :math:`\Lambda(\Sigma^*)`.
      jacobian: ``(D, 3, 3)``: per eigendirection :math:`k_i` of :math:`K`, the Jacobian of the
        mean-field map (:func:`mean_field_map`) of :math:`(\mathbb E w^2, \mathbb E wm,
        \mathbb E m^2)` at the fixed point.  With ``momentum = 0`` only ``[:, 0, 0]`` is nonzero:
        the slope :math:`f'(\Sigma^*)` of the 1-D map.
      spectral_radius: ``(D,)`` the largest :math:`|\text{eigenvalue}|` of each Jacobian.
      attracting: ``(D,)`` bool, ``spectral_radius < 1`` (the fixed point attracts the
        mean-field dynamics in that direction; ``False``: it repels, the paper's covariance is not
        reached).
    """

    sigma: jax.Array
    preconditioner: jax.Array
    jacobian: jax.Array
    spectral_radius: jax.Array
    attracting: jax.Array


_KINDS = ("ngd", "adam")


def mean_field_map(moments, curvature, lr, *, preconditioner: str = "ngd", momentum=0.0,
                   noise_var=0.0, noise_c=0.0):
    r"""One step of the mean-field second-moment map of heavy ball with an adaptive preconditioner (one eigendirection).

    Heavy ball on :math:`\tfrac12 k w^2` (p1 Eq. 5): :math:`g = kw + \eta`,
    :math:`m' = \mu m + g`, :math:`w' = w - \ell m'`, with the preconditioner evaluated at the
    *current ensemble* second moment :math:`a = \mathbb E w^2`:

    .. math:: \ell = \frac{\lambda}{k^2 a}\ \ (\texttt{"ngd"}: \Lambda = \lambda (K\Sigma K)^{-1}),
              \qquad \ell = \frac{\lambda}{\sqrt{k^2 a + C}}\ \ (\texttt{"adam"}: \Lambda = \lambda\,
              \mathbb E[g g^\top]^{-1/2}),

    noise variance :math:`C = C_0 + c\,k^2 a` (constant plus :math:`\Sigma`-proportional), and
    :math:`x = (\mathbb E w^2, \mathbb E wm, \mathbb E m^2) \mapsto x'` exactly for this linear
    step with :math:`\ell` frozen.  Its fixed points are the paper's covariances (p1 Cor 9,
    Eq. 111, Thm 10).  **Mean-field** (derived here): a per-replica optimizer that estimates its
    own :math:`\mathbb E g^2` follows a different (random) dynamics.

    Args:
      moments: ``(3,)`` array :math:`(\mathbb E w^2, \mathbb E wm, \mathbb E m^2)`.
      curvature: :math:`k > 0`.
      lr: :math:`\lambda > 0`.
      preconditioner: ``"ngd"`` or ``"adam"``.
      momentum: :math:`\mu \in [0, 1)`.
      noise_var: constant noise variance :math:`C_0 \ge 0`.
      noise_c: :math:`c \ge 0` of the proportional noise :math:`c k^2 \mathbb E w^2`.

    Returns:
      ``(3,)`` the next moments.

    Example:
      >>> x = jnp.array([0.075, 0.0, 0.0])            # Eq. 111 fixed point for c=0.5, lr=0.1, k=1
      >>> mean_field_map(x, 1.0, 0.1, noise_c=0.5)[0].round(10)
      Array(0.075, dtype=float64)
    """
    if preconditioner not in _KINDS:
        raise ValueError(f"preconditioner must be one of {_KINDS}; got {preconditioner!r}.")
    x = _f(moments)
    if x.shape != (3,):
        raise ValueError(f"moments must have shape (3,) = (E w^2, E w m, E m^2); got {tuple(x.shape)}.")
    return _mf_step(x, _f(curvature), _f(lr), _f(momentum), _f(noise_var), _f(noise_c), preconditioner)


def _mf_step(x, k, lam, mu, c0, c, kind):
    a, b, d = x[0], x[1], x[2]
    cn = c0 + c * k * k * a
    ell = lam / (k * k * a) if kind == "ngd" else lam / jnp.sqrt(k * k * a + cn)
    q = 1 - ell * k
    a1 = q * q * a - 2 * q * ell * mu * b + ell * ell * mu * mu * d + ell * ell * cn
    b1 = q * k * a + (q * mu - ell * mu * k) * b - ell * mu * mu * d - ell * cn
    d1 = k * k * a + 2 * k * mu * b + mu * mu * d + cn
    return jnp.stack([a1, b1, d1])


def _frozen_moments(a, k, ell, mu, cn):
    """Stationary (E w m, E m^2) of heavy ball with frozen ell, given E w^2 = a (consistent)."""
    # the stationary point of the frozen (linear) 3x3 moment map: x = M x + r
    q = 1 - ell * k
    m = jnp.array([[q * q, -2 * q * ell * mu, ell * ell * mu * mu],
                   [q * k, q * mu - ell * mu * k, -ell * mu * mu],
                   [k * k, 2 * k * mu, mu * mu]])
    rhs = jnp.stack([ell * ell * cn, -ell * cn, cn])
    # pinv: finite also where the frozen map is marginal (C = 0 makes l*k = 2, w -> -w)
    x = jnp.linalg.pinv(jnp.eye(3) - m) @ rhs
    return x[1], x[2]


def _validate(hessian, lr, momentum):
    k_mat = _checks.square_matrix("hessian", hessian)
    _checks.check_spd("hessian", k_mat)
    _checks.check_positive("lr", lr)
    _checks.check_momentum(momentum)
    return k_mat


def _assemble(a, kv, u, lam, mu, c0, c, kind):
    """Fixed point a_i per direction -> MeanFieldFixedPoint."""
    def per(ai, ki, c0i):
        cn = c0i + c * ki * ki * ai
        ell = lam / (ki * ki * ai) if kind == "ngd" else lam / jnp.sqrt(ki * ki * ai + cn)
        b, d = _frozen_moments(ai, ki, ell, mu, cn)
        x = jnp.stack([ai, b, d])
        jac = jax.jacfwd(lambda y: _mf_step(y, ki, lam, mu, c0i, c, kind))(x)
        return ell, jac

    ells, jacs = jax.vmap(per)(a, kv, c0)
    rad = jnp.max(jnp.abs(jnp.linalg.eigvals(jacs)), axis=-1)
    sigma = (u * a[None, :]) @ u.T
    prec = (u * ells[None, :]) @ u.T
    return MeanFieldFixedPoint(sigma, prec, jacs, rad, rad < 1)


def ngd_fixed_point(hessian, noise_cov, lr, momentum=0.0) -> MeanFieldFixedPoint:
    r"""Mean-field fixed point of natural-gradient descent :math:`\Lambda = \lambda(K\Sigma K)^{-1}` with constant noise (p1 Cor 9).

    For heavy ball with :math:`\Lambda = \lambda (K\Sigma K)^{-1}` and a constant noise covariance
    :math:`C` commuting with :math:`K`:

    .. math:: \Sigma^* = \tfrac12 K^{-1}\Big[Q + \frac{\lambda}{2(1+\mu)} I\Big],\qquad
              Q = \Big[\frac{\lambda^2}{4(1+\mu)^2} I + \frac{2\lambda}{1-\mu} C K^{-1}\Big]^{1/2}

    (Liu, Ziyin & Ueda 2021, Cor 9; the root of the self-consistency
    :math:`\Sigma = \Sigma_{\rm stat}(\Lambda(\Sigma))`).  **Mean-field fixed point**: the
    returned Jacobian of :func:`mean_field_map` says whether it attracts.  With :math:`\mu = 0`
    the slope is :math:`1 - 4x + x^2`, :math:`x = \lambda/(k\Sigma^*) \in (0, 2]` (derived here),
    i.e. it attracts only when :math:`x < 2 - \sqrt 2`, i.e. :math:`C > 4.12\,\lambda k`;
    otherwise the adaptive iteration oscillates away from it.

    Args:
      hessian: ``(D, D)`` SPD :math:`K`.
      noise_cov: ``(D, D)`` PSD :math:`C` with :math:`KC = CK`.
      lr: :math:`\lambda > 0`.
      momentum: :math:`\mu \in [0, 1)`.

    Returns:
      :class:`MeanFieldFixedPoint`.

    Raises:
      ValueError: shapes, :math:`K` not SPD, :math:`C` not PSD or not commuting with :math:`K`.

    Example:
      >>> fp = ngd_fixed_point(jnp.eye(1), jnp.eye(1), 0.1)
      >>> round(float(fp.sigma[0, 0]), 6), round(float(fp.jacobian[0, 0, 0]), 4), bool(fp.attracting[0])
      (0.25, -0.44, True)
    """
    k_mat = _validate(hessian, lr, momentum)
    c_mat = _checks.square_matrix("noise_cov", noise_cov)
    if c_mat.shape != k_mat.shape:
        raise ValueError(f"noise_cov has shape {tuple(c_mat.shape)} but hessian has {tuple(k_mat.shape)}.")
    _checks.check_psd("noise_cov", c_mat)
    kc, ck = _checks.concrete_value(k_mat @ c_mat), _checks.concrete_value(c_mat @ k_mat)
    if kc is not None and ck is not None:
        scale = max(1.0, float(np.max(np.abs(kc))))
        if float(np.max(np.abs(kc - ck))) > 1e-10 * scale:
            raise ValueError(
                "noise_cov must commute with hessian (KC = CK) for p1 Cor 9; max |KC - CK| = "
                f"{float(np.max(np.abs(kc - ck))):.3g}.")
    return _ngd_core(k_mat, c_mat, _f(lr), _f(momentum))


@jax.jit
def _ngd_core(k_mat, c_mat, lam, mu):
    kv, u = jnp.linalg.eigh(k_mat)
    ci = jnp.maximum(jnp.einsum("ij,ik,kj->j", u, c_mat, u), 0.0)  # u_i^T C u_i
    q = jnp.sqrt(lam**2 / (4 * (1 + mu) ** 2) + 2 * lam / (1 - mu) * ci / kv)
    a = (q + lam / (2 * (1 + mu))) / (2 * kv)
    return _assemble(a, kv, u, lam, mu, ci, jnp.zeros_like(lam), "ngd")


def ngd_fixed_point_proportional(hessian, c, lr, momentum=0.0) -> MeanFieldFixedPoint:
    r"""Mean-field fixed point of NGD with :math:`\Sigma`-proportional noise :math:`C = cK\Sigma K` (p1 Eq. 111).

    .. math:: \Sigma^* = \frac{\lambda[(1+\mu)c + 1 - \mu]}{2(1-\mu^2)} K^{-1},
              \qquad (\mu = 0)\ \ f'(\Sigma^*) = 1 - \frac{4}{1+c} .

    **Mean-field fixed point** (p1 Eq. 111; the slope is derived here).  With :math:`\mu = 0`
    the 1-D map is :math:`f(a) = a - 2\lambda/k + (1+c)\lambda^2/(k^2 a)`, so the fixed point is
    **unstable for** :math:`c < 1` (:math:`c = 0.1`: slope :math:`-2.64`; :math:`c = 0.5`:
    :math:`-1.67`) and attracting for :math:`c > 1`.  With the preconditioner frozen at its
    fixed-point value the (linear, homogeneous) second-moment map has leading eigenvalue exactly
    one: every multiple of :math:`\Sigma^*` is then stationary, so the paper's covariance is
    selected only by the adaptive feedback, whose stability is what this function reports.

    Args:
      hessian: ``(D, D)`` SPD :math:`K`.
      c: :math:`c \ge 0`.
      lr: :math:`\lambda > 0`.
      momentum: :math:`\mu \in [0, 1)`.

    Returns:
      :class:`MeanFieldFixedPoint`.

    Example:
      >>> fp = ngd_fixed_point_proportional(jnp.eye(1), 0.5, 0.1)
      >>> round(float(fp.sigma[0, 0]), 6), round(float(fp.jacobian[0, 0, 0]), 4), bool(fp.attracting[0])
      (0.075, -1.6667, False)
    """
    k_mat = _validate(hessian, lr, momentum)
    _checks.check_nonnegative("c", c)
    lam, mu, c = _f(lr), _f(momentum), _f(c)
    if c.ndim != 0:
        raise ValueError("c must be a scalar.")
    return _ngd_prop_core(k_mat, c, lam, mu)


@jax.jit
def _ngd_prop_core(k_mat, c, lam, mu):
    kv, u = jnp.linalg.eigh(k_mat)
    a = lam * ((1 + mu) * c + 1 - mu) / (2 * (1 - mu * mu) * kv)
    return _assemble(a, kv, u, lam, mu, jnp.zeros_like(kv), c, "ngd")


def adam_like_fixed_point(hessian, c, lr) -> MeanFieldFixedPoint:
    r"""Mean-field fixed point of the Adam-like preconditioner :math:`\Lambda = \lambda\,\mathbb E[gg^\top]^{-1/2}` (p1 Thm 10).

    With :math:`C = cK\Sigma K` and no momentum, :math:`\mathbb E[gg^\top] = (1+c)K\Sigma K` and

    .. math:: \Sigma^* = \frac{\lambda^2(1+c)}{4} I,\qquad
              f(a) = a - \frac{2\lambda\sqrt a}{\sqrt{1+c}} + \lambda^2,\quad
              f'(\Sigma^*) = 1 - \frac{2}{1+c} .

    **Mean-field fixed point** (p1 Thm 10; the map and slope are derived here): attracting for
    every :math:`c > 0` (marginal at :math:`c = 0`) -- *in mean field*, where the preconditioner
    uses the ensemble's :math:`\mathbb E g^2`.  A per-replica Adam (EMA of its own :math:`g^2`)
    with this purely multiplicative noise is scale invariant and collapses, :math:`|w|\to 0`
    (median :math:`\log_{10}|w| \approx -22` after :math:`10^3` steps with :math:`\beta_2 = 0.99`,
    :math:`\lambda = 0.1`, :math:`c = 0.5`, against :math:`\log_{10}\sqrt{\Sigma^*} = -1.21`):
    the fixed point is not a stationary covariance of Adam.

    Args:
      hessian: ``(D, D)`` SPD :math:`K` (the fixed point does not depend on it).
      c: :math:`c \ge 0`.
      lr: :math:`\lambda > 0`.

    Returns:
      :class:`MeanFieldFixedPoint`.

    Example:
      >>> fp = adam_like_fixed_point(jnp.eye(1), 0.5, 0.1)
      >>> round(float(fp.sigma[0, 0]), 6), round(float(fp.jacobian[0, 0, 0]), 4)
      (0.00375, -0.3333)
    """
    k_mat = _validate(hessian, lr, 0.0)
    _checks.check_nonnegative("c", c)
    lam, c = _f(lr), _f(c)
    if c.ndim != 0:
        raise ValueError("c must be a scalar.")
    return _adam_like_core(k_mat, c, lam)


@jax.jit
def _adam_like_core(k_mat, c, lam):
    kv, u = jnp.linalg.eigh(k_mat)
    a = jnp.full_like(kv, lam * lam * (1 + c) / 4)
    return _assemble(a, kv, u, lam, jnp.zeros_like(lam), jnp.zeros_like(kv), c, "adam")
