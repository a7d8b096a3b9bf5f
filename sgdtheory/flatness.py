r"""Variance–flatness relation: trajectory PCA, loss flatness along directions, and the exponent.

Feng & Tu (PNAS 2021) analyse the weights :math:`w(t)` visited by SGD during a window of ``T``
snapshots in the slow exploration phase:

1. **PCA of the trajectory** (:func:`trajectory_pca`): :math:`w(t) = \langle w\rangle_T +
   \sum_i \theta_i(t)\,p_i`, with the principal variances :math:`\sigma_i^2 = T^{-1}\sum_t
   \theta_i(t)^2` in decreasing order.
2. **Flatness along each direction** (:func:`flatness`): on the loss profile
   :math:`L_i(\delta) = L(w_0 + \delta\,p_i)` through the mean :math:`w_0 = \langle w\rangle_T`,
   find the nearest points :math:`\theta_i^l < 0 < \theta_i^r` where the loss reaches
   :math:`e\,L_0` (:math:`L_0 = L(w_0)`, ``e`` Euler's number); the flatness is the width
   :math:`F_i = \theta_i^r - \theta_i^l`.
3. **The relation** (:func:`variance_flatness_exponent`): :math:`\sigma_i^2 \propto F_i^{-\psi}`,
   ψ from a log–log least-squares fit. Feng & Tu report :math:`\psi \approx 4` for an MLP on
   MNIST: an *inverse* relation, flatter directions fluctuate less.  Equilibrium (Boltzmann)
   statistics give the opposite sign, :math:`\sigma_i^2 \propto T F_i^2` (ψ = −2).

**Exact minimal model** (derived here; the "landscape-shift" model of the team notes, which gives
the *sign* of the relation, not the paper's ψ ≈ 4).  Per-sample losses
:math:`\ell(\theta;\delta) = \tfrac12(\theta-\delta)^\top K(\theta-\delta)` with random shifts
:math:`\delta \sim N(0, s^2 I)`, :math:`K = Q\operatorname{diag}(k)Q^\top`, online minibatches of
``B``.  The loss is :math:`L(\theta) = \tfrac12\theta^\top K\theta + L_0`,
:math:`L_0 = \tfrac12 s^2\operatorname{tr}K`, and the minibatch gradient
:math:`K(\theta - \bar\delta_B)` carries noise of covariance :math:`(s^2/B)K^2` -- proportional to
the curvature *squared*.  Discrete SGD with learning rate α then has, exactly,

.. math:: \sigma_i^2 = \frac{\alpha k_i s^2}{B(2-\alpha k_i)},\qquad
          F_i = 2\sqrt{\frac{2(e-1)L_0}{k_i}}

(:func:`landscape_shift_variances`, :func:`quadratic_flatness`), so
:math:`\sigma_i^2 \propto F_i^{-2}/(1 - \alpha k_i/2)`: the local exponent is
:math:`\psi(k) = 4/(2-\alpha k)`, exactly 2 only as :math:`\alpha k\to0`
(:func:`local_exponent`).  Langevin dynamics with an isotropic temperature ``T``
(:math:`\theta \leftarrow \theta - \alpha\nabla L + \sqrt{2\alpha T}\,\xi`) on the same loss has
:math:`\sigma_i^2 = T/(k_i(1-\alpha k_i/2))` (:func:`langevin_variances`), local exponent
:math:`\psi(k) = -4(1-\alpha k)/(2-\alpha k) \to -2`.

References:
  Feng & Tu, "The inverse variance–flatness relation in stochastic gradient descent is critical
  for finding flat minima", PNAS 118(9) e2015617118 (2021) -- definitions of :math:`\sigma_i^2` and
  :math:`F_i` (as reported by a secondary source and the abstract: the primary text was not
  available to us).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks

__all__ = [
    "PCA",
    "Flatness",
    "Exponent",
    "trajectory_pca",
    "flatness",
    "variance_flatness_exponent",
    "quadratic_flatness",
    "landscape_shift_variances",
    "langevin_variances",
    "local_exponent",
]


class PCA(NamedTuple):
    """Principal components of a trajectory (:func:`trajectory_pca`).

    Attributes:
      variances: ``(m,)`` principal variances :math:`\\sigma_i^2`, decreasing
        (``m = min(T, P)``).
      directions: ``(m, P)`` orthonormal principal directions, one per row (``directions[i]`` is
        :math:`p_i`; sign fixed so that its largest-magnitude entry is positive).
      mean: ``(P,)`` the time average :math:`\\langle w\\rangle_T`.
      samples: ``T``, the number of snapshots used (after thinning).
    """

    variances: jax.Array
    directions: jax.Array
    mean: jax.Array
    samples: int


class Flatness(NamedTuple):
    """Loss widths along directions (:func:`flatness`).

    Attributes:
      width: ``(m,)`` :math:`F_i = \\theta_i^r - \\theta_i^l`; ``inf`` where either side never
        reaches the level within ``max_distance``.
      left: ``(m,)`` :math:`\\theta_i^l < 0` (``-inf`` where not reached).
      right: ``(m,)`` :math:`\\theta_i^r > 0` (``inf`` where not reached).
      loss0: :math:`L_0 = L(w_0)`.
      level: the level :math:`\\text{factor}\\cdot L_0`.
    """

    width: jax.Array
    left: jax.Array
    right: jax.Array
    loss0: jax.Array
    level: jax.Array


class Exponent(NamedTuple):
    """Fit of :math:`\\log\\sigma^2 = c - \\psi\\log F` (:func:`variance_flatness_exponent`).

    Attributes:
      psi: the exponent ψ (:math:`\\sigma^2 \\propto F^{-\\psi}`; ψ > 0 is the inverse relation).
      stderr: the ordinary-least-squares standard error of ψ from the fit residuals.
      intercept: :math:`c`.
    """

    psi: jax.Array
    stderr: jax.Array
    intercept: jax.Array


# --------------------------------------------------------------------------------------------
# Measurement tools
# --------------------------------------------------------------------------------------------


def trajectory_pca(trajectory, *, thin: int = 1) -> PCA:
    r"""Principal variances and directions of a trajectory of parameter snapshots.

    .. math:: w(t) = \langle w\rangle_T + \sum_i \theta_i(t)\,p_i,\qquad
              \sigma_i^2 = \frac1T\sum_{t=1}^T \theta_i(t)^2

    (Feng & Tu 2021: the time average over the window, normalised by ``T``, not ``T - 1``).
    Computed by a singular value decomposition of the centred ``(T, P)`` matrix:
    :math:`\sigma_i^2 = s_i^2/T`, :math:`p_i` the right singular vectors.  **Exact** (linear
    algebra); the variances estimate the stationary covariance's eigenvalues only when ``T`` is
    long against the slowest correlation time (otherwise they are biased low, and sample
    eigenvalues spread apart).

    Args:
      trajectory: ``(T, P)`` array, one flattened parameter vector per row (e.g. one replica of
        ``Stats.trajectory[:, r, :]``).
      thin: keep every ``thin``-th snapshot (static).

    Returns:
      :class:`PCA` with ``min(T, P)`` components.

    Raises:
      ValueError: not a 2-D array, fewer than 2 snapshots after thinning, non-finite entries.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = jax.random.normal(jax.random.key(0), (4000, 2)) * jnp.array([[2.0, 0.5]])
      >>> trajectory_pca(w).variances.round(1)
      Array([4.1, 0.2], dtype=float64)
    """
    x = _checks.as_float_array(trajectory)
    if x.ndim != 2:
        raise ValueError(f"trajectory must be a (T, P) array of snapshots; got shape {tuple(x.shape)}.")
    thin = _checks.check_int("thin", thin, 1)
    x = x[::thin]
    t = x.shape[0]
    if t < 2:
        raise ValueError(f"trajectory needs at least 2 snapshots after thinning (thin={thin}); "
                         f"got {t}.")
    v = _checks.concrete_value(x)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError("trajectory contains NaN or infinite entries (a diverged run?).")
    mean = jnp.mean(x, axis=0)
    _, s, vt = jnp.linalg.svd(x - mean[None, :], full_matrices=False)
    idx = jnp.argmax(jnp.abs(vt), axis=1)
    sign = jnp.sign(jnp.take_along_axis(vt, idx[:, None], axis=1))
    sign = jnp.where(sign == 0, 1.0, sign)
    return PCA(s**2 / t, vt * sign, mean, t)


def _first_crossing(profile, level, max_distance, num_points, iters):
    """Smallest ``t`` in (0, max_distance] where ``profile(t) >= level`` (inf if none)."""
    # Geometric grid: t_j from max_distance * 1e-6 to max_distance, and t = 0 in front.
    grid = max_distance * jnp.logspace(-6.0, 0.0, num_points)
    vals = jax.vmap(profile)(grid)
    hit = vals >= level
    any_hit = jnp.any(hit)
    j = jnp.argmax(hit)
    lo = jnp.where(j > 0, grid[jnp.maximum(j - 1, 0)], 0.0)
    hi = grid[j]

    def body(_, bracket):
        a, b = bracket
        m = 0.5 * (a + b)
        up = profile(m) >= level
        return jnp.where(up, a, m), jnp.where(up, m, b)

    lo, hi = lax.fori_loop(0, iters, body, (lo, hi))
    return jnp.where(any_hit, 0.5 * (lo + hi), jnp.inf)


@partial(jax.jit, static_argnames=("loss", "num_points", "iters"))
def _widths(loss, params, u, level, dmax, *, num_points, iters):
    """Compiled once per ``loss`` object and shapes (inlined under an outer ``jit``)."""
    flat, unravel = ravel_pytree(params)

    def side(direction):
        return _first_crossing(lambda t: loss(unravel(flat + t * direction)), level, dmax,
                               num_points, iters)

    right = jax.vmap(side)(u)
    left = -jax.vmap(side)(-u)
    return right - left, left, right


def flatness(loss: Callable[[Any], jax.Array], params, directions, *, factor: float = math.e,
             max_distance: float = 1e3, num_points: int = 256, iters: int = 60) -> Flatness:
    r"""Width of the loss along each direction at the level :math:`\text{factor}\cdot L_0`.

    Feng & Tu (2021) define the flatness along a unit direction :math:`p_i` through
    :math:`w_0` (the trajectory's mean) from the profile :math:`L_i(\delta) = L(w_0 + \delta p_i)`:
    :math:`\theta_i^l < 0 < \theta_i^r` are the points nearest to 0 where
    :math:`L_i = e\,L_0`, :math:`L_0 = L(w_0)`, and

    .. math:: F_i = \theta_i^r - \theta_i^l .

    On each side the profile is scanned on a geometric grid of ``num_points`` distances from
    ``1e-6 * max_distance`` to ``max_distance``; the first grid point at or above the level
    brackets the crossing, refined by ``iters`` bisection steps (``60`` reach float64
    resolution).  A side that never reaches the level within ``max_distance`` gives
    :math:`\theta^r = +\infty` (or :math:`\theta^l = -\infty`) and :math:`F_i = \infty`: the loss
    saturates in that direction (e.g. a flat valley, or a cross-entropy that tends to a
    constant), or ``max_distance`` is too short -- filter such directions before fitting ψ.  A
    bump narrower than one grid cell (~5.6 % of the distance at the defaults) can be missed.
    Pure JAX: ``jit``/``vmap`` work (``num_points`` and ``iters`` are static).

    Args:
      loss: ``loss(params) -> scalar``, the full (training) loss :math:`L`; must be positive at
        ``params``.
      params: the point :math:`w_0` (any pytree; flattened in ``ravel_pytree`` order).
      directions: ``(m, P)`` array, one direction per row (normalised to unit length here), or
        ``(P,)`` for one direction -- e.g. :attr:`PCA.directions`.
      factor: the level as a multiple of :math:`L_0` (Feng & Tu: ``e``); must be > 1.
      max_distance: largest distance searched on each side.
      num_points, iters: grid size and bisection steps.

    Returns:
      :class:`Flatness` (``width``, ``left``, ``right``, ``loss0``, ``level``).

    Raises:
      ValueError: wrong shapes, a zero direction, ``factor <= 1``, :math:`L_0 \le 0` or not
        finite (when concrete).

    Example:
      >>> import math, jax.numpy as jnp
      >>> L = lambda w: 1.0 + 0.5 * (4.0 * w[0] ** 2 + w[1] ** 2)   # L0 = 1, curvatures 4 and 1
      >>> F = flatness(L, jnp.zeros(2), jnp.eye(2)).width
      >>> F.round(6)   # 2 sqrt(2 (e - 1) L0 / k)
      Array([1.853797, 3.707594], dtype=float64)
      >>> float(flatness(lambda w: 1.0 + jnp.tanh(w[0] ** 2), jnp.zeros(1), jnp.ones((1, 1))).width[0])
      inf
    """
    flat, unravel = ravel_pytree(params)
    flat = _checks.as_float_array(flat)
    p = flat.shape[0]
    u = _checks.as_float_array(directions)
    if u.ndim == 1:
        u = u[None, :]
    if u.ndim != 2 or u.shape[1] != p:
        raise ValueError(f"directions must have shape (m, P) = (m, {p}) (one direction per row, "
                         f"P = number of parameters); got {tuple(jnp.shape(directions))}.")
    norms = jnp.linalg.norm(u, axis=1)
    nv = _checks.concrete_value(norms)
    if nv is not None and (not np.all(np.isfinite(nv)) or np.any(nv == 0)):
        raise ValueError("every direction must be a finite, non-zero vector; rows "
                         f"{np.flatnonzero(~np.isfinite(nv) | (nv == 0)).tolist()} are not.")
    u = u / norms[:, None]
    fv = _checks.concrete_value(factor)
    if fv is not None and not (np.isfinite(fv) and fv > 1):
        raise ValueError(f"factor must be > 1 (the level factor * L0 lies above L0); got {float(fv)}.")
    _checks.check_positive("max_distance", max_distance)
    num_points = _checks.check_int("num_points", num_points, 2)
    iters = _checks.check_int("iters", iters, 0)

    def f(x):
        return loss(unravel(x))

    loss0 = f(flat)
    if jnp.shape(loss0) != ():
        raise ValueError(f"loss(params) must return a scalar; got shape {jnp.shape(loss0)}.")
    l0 = _checks.concrete_value(loss0)
    if l0 is not None and not (np.isfinite(l0) and l0 > 0):
        raise ValueError(f"the loss at params must be finite and > 0 for the level factor * L0 to "
                         f"be meaningful; got L0 = {float(l0):.4g}.")
    level = factor * loss0
    dmax = jnp.asarray(max_distance, flat.dtype)

    try:  # the compiled profile scan is cached per (hashable) loss object
        hash(loss)
        static_loss = loss
    except TypeError:
        static_loss = lambda q: loss(q)  # noqa: E731
    width, left, right = _widths(static_loss, params, u, level, dmax, num_points=num_points,
                                 iters=iters)
    return Flatness(width, left, right, loss0, level)


def variance_flatness_exponent(variances, flatness) -> Exponent:
    r"""Exponent ψ of :math:`\sigma^2 \propto F^{-\psi}` by least squares on a log–log scale.

    .. math:: \log\sigma_i^2 = c - \psi\log F_i + \varepsilon_i,\qquad
              \hat\psi = -\frac{\sum_i (x_i-\bar x)(y_i - \bar y)}{\sum_i (x_i-\bar x)^2},\quad
              \operatorname{se}(\hat\psi) = \sqrt{\frac{\sum_i\hat\varepsilon_i^2/(m-2)}
              {\sum_i (x_i-\bar x)^2}}

    (:math:`x = \log F`, :math:`y = \log\sigma^2`).  ψ > 0 is Feng & Tu's inverse relation
    (SGD), ψ = −2 the equilibrium (Boltzmann) relation :math:`\sigma^2\propto TF^2`.  The standard
    error is that of the fit (scatter about a straight line, residuals treated as independent):
    it measures how well a power law describes the points, not the sampling error of ψ over
    repeated runs -- estimate that from independent runs.

    Args:
      variances: ``(m,)`` positive variances :math:`\sigma_i^2` (e.g. :attr:`PCA.variances`).
      flatness: ``(m,)`` positive, finite widths :math:`F_i` (e.g. :attr:`Flatness.width`).

    Returns:
      :class:`Exponent` (``psi``, ``stderr``, ``intercept``).

    Raises:
      ValueError: shapes differ, fewer than 3 points, or (when concrete) a non-positive or
        non-finite entry -- directions with :math:`F = \infty` must be dropped first.

    Example:
      >>> import jax.numpy as jnp
      >>> F = jnp.array([1.0, 2.0, 4.0, 8.0])
      >>> fit = variance_flatness_exponent(3.0 * F ** -2.0, F)
      >>> round(float(fit.psi), 6), round(float(fit.stderr), 6)
      (2.0, 0.0)
    """
    s2 = _checks.as_float_array(variances)
    fl = _checks.as_float_array(flatness)
    if s2.ndim != 1 or s2.shape != fl.shape:
        raise ValueError(f"variances and flatness must be 1-D arrays of the same length; got "
                         f"shapes {tuple(s2.shape)} and {tuple(fl.shape)}.")
    m = s2.shape[0]
    if m < 3:
        raise ValueError(f"fitting a slope with a standard error needs at least 3 points; got {m}.")
    for name, a in (("variances", s2), ("flatness", fl)):
        v = _checks.concrete_value(a)
        if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
            bad = np.flatnonzero(~(np.isfinite(v) & (v > 0))).tolist()
            raise ValueError(f"{name} must be finite and > 0 (entries {bad} are not); drop the "
                             "directions where the loss never reaches the level (F = inf) first, "
                             "e.g. keep = jnp.isfinite(F).")
    x, y = jnp.log(fl), jnp.log(s2)
    xc, yc = x - jnp.mean(x), y - jnp.mean(y)
    sxx = jnp.sum(xc**2)
    slope = jnp.sum(xc * yc) / sxx
    intercept = jnp.mean(y) - slope * jnp.mean(x)
    resid = yc - slope * xc
    se = jnp.sqrt(jnp.sum(resid**2) / (m - 2) / sxx)
    return Exponent(-slope, se, intercept)


# --------------------------------------------------------------------------------------------
# Exact minimal models
# --------------------------------------------------------------------------------------------


def _curvatures(curvatures):
    k = _checks.as_float_array(curvatures)
    if k.ndim != 1 or k.shape[0] < 1:
        raise ValueError(f"curvatures must be a non-empty 1-D array (the eigenvalues k_i of K); got "
                         f"shape {tuple(k.shape)}.")
    _checks.check_positive("curvatures", k)
    return k


def _check_lr(lr, k):
    """Eager checks (scalar lr, ``0 < lr < 2/k_max``); returns the traced-safe predicate ``ok``:
    the callers return NaN where it is false (a traced lr past the bound, e.g. under ``jit``)."""
    if jnp.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar; got shape {jnp.shape(lr)}.")
    _checks.check_positive("lr", lr)
    _checks.check_lr_below(lr, 2.0 / jnp.max(k), "2/k_max")
    return (lr > 0) & (lr * jnp.max(k) < 2.0)


def quadratic_flatness(curvatures, loss0, *, factor: float = math.e) -> jax.Array:
    r"""Flatness of :math:`L = L_0 + \tfrac12\sum_i k_i\theta_i^2` along its eigendirections.

    .. math:: F_i = 2\sqrt{\frac{2(\text{factor}-1)L_0}{k_i}} \;\propto\; k_i^{-1/2}

    **Exact** (solve :math:`L_0 + \tfrac12 k_i\delta^2 = \text{factor}\cdot L_0`); the profile of
    :func:`flatness` at the minimum of a quadratic.

    Args:
      curvatures: ``(m,)`` eigenvalues :math:`k_i > 0`.
      loss0: :math:`L_0 > 0`, the loss at the minimum.
      factor: level factor (``e`` in Feng & Tu 2021), > 1.

    Example:
      >>> import jax.numpy as jnp
      >>> quadratic_flatness(jnp.array([4.0, 1.0]), 1.0).round(6)
      Array([1.853797, 3.707594], dtype=float64)
    """
    k = _curvatures(curvatures)
    _checks.check_positive("loss0", loss0)
    fv = _checks.concrete_value(factor)
    if fv is not None and not (np.isfinite(fv) and fv > 1):
        raise ValueError(f"factor must be > 1; got {float(fv)}.")
    return 2.0 * jnp.sqrt(2.0 * (factor - 1.0) * loss0 / k)


def landscape_shift_variances(curvatures, lr, shift_var, batch_size: int) -> jax.Array:
    r"""Exact stationary variances of online SGD in the landscape-shift model.

    Per-sample loss :math:`\ell(\theta;\delta) = \tfrac12(\theta-\delta)^\top K(\theta-\delta)`,
    :math:`\delta` i.i.d. with mean 0 and covariance :math:`s^2 I`, minibatches of ``B`` fresh
    samples: :math:`\theta \leftarrow (I-\alpha K)\theta + \alpha K\bar\delta_B`.  Along the
    eigenvector of :math:`k_i` the noise per step has variance :math:`\alpha^2k_i^2 s^2/B`, so

    .. math:: \sigma_i^2 = \frac{\alpha^2 k_i^2 s^2/B}{1-(1-\alpha k_i)^2}
              = \frac{\alpha k_i s^2}{B(2-\alpha k_i)} ,

    **exact** for discrete time (derived here; any shift law with that covariance), valid for
    :math:`0 < \alpha k_i < 2`.  The stationary covariance is diagonal in the eigenbasis of
    :math:`K` (the noise :math:`(s^2/B)K^2` commutes with :math:`K`), so these are the principal
    variances of a long trajectory.

    Args:
      curvatures: ``(m,)`` eigenvalues :math:`k_i > 0` of :math:`K`.
      lr: learning rate α, below :math:`2/k_{max}`.
      shift_var: :math:`s^2`, the variance of each coordinate of the shift.
      batch_size: ``B``.

    Raises:
      ValueError: non-positive curvatures or ``shift_var``, ``lr >= 2/k_max`` (a traced ``lr``
        past the bound, under ``jit``/``vmap``/``grad``, gives NaN instead).

    Example:
      >>> import jax.numpy as jnp
      >>> landscape_shift_variances(jnp.array([1.0, 0.1]), 0.5, 1.0, 10).round(6)
      Array([0.033333, 0.002564], dtype=float64)
    """
    k = _curvatures(curvatures)
    ok = _check_lr(lr, k)
    _checks.check_positive("shift_var", shift_var)
    b = _checks.check_int("batch_size", batch_size, 1)
    return jnp.where(ok, lr * k * shift_var / (b * (2.0 - lr * k)), jnp.nan)


def langevin_variances(curvatures, lr, temperature) -> jax.Array:
    r"""Exact stationary variances of discrete Langevin dynamics with isotropic temperature.

    :math:`\theta \leftarrow \theta - \alpha\nabla L(\theta) + \sqrt{2\alpha T}\,\xi`,
    :math:`\xi\sim N(0, I)`, on :math:`L = L_0 + \tfrac12\theta^\top K\theta`:

    .. math:: \sigma_i^2 = \frac{2\alpha T}{1-(1-\alpha k_i)^2} = \frac{T}{k_i(1-\alpha k_i/2)}
              \;\xrightarrow{\alpha\to0}\; \frac{T}{k_i}\quad\text{(Boltzmann)}

    **exact** (derived here).  With :math:`F_i\propto k_i^{-1/2}` this is
    :math:`\sigma_i^2\propto F_i^{2}` at small α: the equilibrium relation, ψ = −2.  Simulate it
    with :func:`sgdtheory.simulate.quadratic_sgd` and gradient-noise covariance
    :math:`(2T/\alpha)I`.

    Args:
      curvatures: ``(m,)`` eigenvalues :math:`k_i > 0`.
      lr: step α, below :math:`2/k_{max}`.
      temperature: :math:`T > 0`.

    Example:
      >>> import jax.numpy as jnp
      >>> langevin_variances(jnp.array([1.0, 0.1]), 0.5, 0.01).round(6)
      Array([0.013333, 0.102564], dtype=float64)
    """
    k = _curvatures(curvatures)
    ok = _check_lr(lr, k)
    _checks.check_positive("temperature", temperature)
    return jnp.where(ok, temperature / (k * (1.0 - 0.5 * lr * k)), jnp.nan)


def local_exponent(curvatures, lr, *, dynamics: str = "sgd") -> jax.Array:
    r"""Local exponent :math:`\psi(k) = -\,d\log\sigma^2/d\log F` of the exact minimal models.

    With :math:`F\propto k^{-1/2}` (:func:`quadratic_flatness`),
    :math:`\psi = 2\,d\log\sigma^2/d\log k`:

    .. math:: \psi_{\rm SGD}(k) = \frac{4}{2-\alpha k} = 2 + \frac{2\alpha k}{2-\alpha k},\qquad
              \psi_{\rm Langevin}(k) = -\frac{4(1-\alpha k)}{2-\alpha k}
              = -2 + \frac{2\alpha k}{2-\alpha k}.

    **Exact** (derived here).  ψ = 2 (SGD) and ψ = −2 (Langevin) are the α → 0 limits; at
    finite α both shift up by :math:`2\alpha k/(2-\alpha k)`, so a log–log fit over a range of
    curvatures gives a weighted average (compute it exactly by fitting the exact
    :func:`landscape_shift_variances` / :func:`langevin_variances` against
    :func:`quadratic_flatness` with :func:`variance_flatness_exponent`).

    Args:
      curvatures: ``(m,)`` eigenvalues :math:`k_i > 0`.
      lr: α, below :math:`2/k_{max}`.
      dynamics: ``"sgd"`` (landscape-shift minibatch noise) or ``"langevin"`` (isotropic
        temperature).

    Example:
      >>> import jax.numpy as jnp
      >>> local_exponent(jnp.array([1e-6, 1.0]), 0.5).round(4)
      Array([2.    , 2.6667], dtype=float64)
      >>> local_exponent(jnp.array([1e-6, 1.0]), 0.5, dynamics="langevin").round(4)
      Array([-2.    , -1.3333], dtype=float64)
    """
    if dynamics not in ("sgd", "langevin"):
        raise ValueError(f"dynamics must be 'sgd' or 'langevin'; got {dynamics!r}.")
    k = _curvatures(curvatures)
    ok = _check_lr(lr, k)
    base = 2.0 if dynamics == "sgd" else -2.0
    return jnp.where(ok, base + 2.0 * lr * k / (2.0 - lr * k), jnp.nan)
