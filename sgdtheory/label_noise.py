r"""Label-noise SGD: the two diffusions of Xiong et al., the small-lr limit of regression, and the
implicit regulariser on a zero-loss manifold (exact per-step law of the product model ``f = ab``).

**Setting.** Squared loss :math:`\ell_i(\theta) = \tfrac12(f(x_i;\theta) - y_i)^2` (the convention
throughout), minibatches of ``S`` examples, and every sampled example's target replaced each step by
:math:`y_i + \varepsilon` with fresh :math:`\varepsilon`, :math:`\mathbb E\varepsilon = 0`,
:math:`\operatorname{Var}\varepsilon = \sigma^2`, one independent draw per batch slot.  The gradient
is affine in the target, so the minibatch gradient is
:math:`\hat g = \hat g_0 - \frac1S\sum_b\nabla f_b\,\varepsilon_b` with :math:`\hat g_0` the
noiseless minibatch gradient, and (law of total covariance; :math:`\varepsilon` independent of the
batch, mean zero) **exactly**

.. math:: \operatorname{Cov}\hat g = \underbrace{f_S\,C_0(\theta)}_{\Sigma_1}
          + \underbrace{\frac{\sigma^2}{S}\,G(\theta)}_{\Sigma_2},\qquad
          G = \frac1N\sum_i\nabla f_i\nabla f_i^\top,

with :math:`C_0` the per-example covariance of the noiseless gradients, :math:`f_S` the batch
factor (:func:`sgdtheory.noise.batch_factor`) and :math:`G` the Gauss--Newton matrix; the two
diffusions of Xiong et al. (2023)'s SDE :math:`d\theta = -\nabla L\,dt + \sqrt\eta\,
(\Sigma_1^{1/2}dW_1 + \Sigma_2^{1/2}dW_2)`, :math:`t = \eta k` (Itô).  :func:`diffusions`
computes both for any JAX model.  At an interpolating minimum :math:`\Sigma_1 = 0` and only the
label-noise diffusion is left; it drives SGD *along* the zero-loss manifold towards small
:math:`\mathrm{tr}\,G` (the implicit regulariser, :func:`implicit_regularizer_drift`).

**Product model** :math:`f = ab` (one input :math:`x = 1`, target ``y``).  One step with the batch
mean :math:`\bar r = ab - y - \bar\varepsilon` is :math:`a' = a - \eta b\bar r`,
:math:`b' = b - \eta a\bar r`, so the imbalance :math:`D = a^2 - b^2` obeys the exact identity
:math:`D' = D(1 - \eta^2\bar r^2)` and :math:`\mathbb E[D'\mid a,b] = D(1 - \eta^2[(ab-y)^2 +
\sigma^2/S])` (:func:`imbalance_step`).  Near the manifold :math:`ab = y` the normal fluctuation is
an Ornstein--Uhlenbeck process of curvature :math:`h = a^2 + b^2 = \sqrt{D^2 + 4y^2}` (= tr H on
the manifold), :math:`\operatorname{Var}(ab - y) \approx \eta\sigma^2h/(S(2-\eta h))`, hence the
slow law (:func:`imbalance_drift`, :func:`imbalance_path`)

.. math:: \frac{dD}{dk} = -\eta^2\,\frac{\sigma^2}{S}\,\frac{2}{2 - \eta h(D)}\,D
          \;\approx\; -\eta^2\frac{\sigma^2}{S}D\quad(\eta h\to 0).

Derivations and measured errors: ``docs/theory/label_noise.md``.

References:
  Xiong, Li, Yu, Zhu, Wu & Dou, "Doubly stochastic models: learning with unbiased label noises and
  inference stability" (arXiv:2304.00320); journal version "Stochastic gradient descent with random
  label noises: doubly stochastic models and inference stabilizer", Mach. Learn.: Sci. Technol. 5,
  015039 (2024): the two diffusion terms.
  Blanc, Gupta, Valiant & Valiant, "Implicit regularization for deep neural networks driven by an
  Ornstein-Uhlenbeck like process", COLT 2020 (arXiv:1904.09080).
  Damian, Ma & Lee, "Label noise SGD provably prefers flat global minimizers", NeurIPS 2021
  (arXiv:2106.06530).
  Li, Wang & Arora, "What happens after SGD reaches zero loss? A mathematical framework", ICLR 2022
  (arXiv:2110.06914): the limiting flow :math:`-\tfrac14\nabla_\Gamma\mathrm{tr}\nabla^2L`
  (their normalisation, :math:`\sigma^2 = 1`, ``S = 1``; here
  :math:`-\frac{\sigma^2}{4S}\nabla_\Gamma\mathrm{tr}\nabla^2L` in :math:`\tau = \eta^2k`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks
from sgdtheory._mean_square import batch_factor, resolve_sampling
from sgdtheory.noise import minibatch_covariance

__all__ = [
    "LabelNoiseDiffusions",
    "diffusions",
    "gauss_newton",
    "SmallLrLimit",
    "linreg_small_lr",
    "ImbalanceStep",
    "imbalance_step",
    "product_curvature",
    "product_residual_var",
    "imbalance_drift",
    "imbalance_path",
    "implicit_regularizer_drift",
]

ORDERS = ("finite_lr", "leading")


# ----------------------------------------------------------------------------------------------
# the two diffusions, any model
# ----------------------------------------------------------------------------------------------


class LabelNoiseDiffusions(NamedTuple):
    r"""Per-step gradient-noise covariances of label-noise SGD (``(P, P)``, ``ravel_pytree`` order).

    Attributes:
      sampling_cov: :math:`\Sigma_1 = f_S C_0`, minibatch sampling of the noiseless gradients.
      label_cov: :math:`\Sigma_2 = \frac{\sigma^2}{S}G`, the label noise (``G`` the Gauss--Newton
        matrix for the squared loss).
      total: :math:`\Sigma_1 + \Sigma_2 = \operatorname{Cov}\hat g` (exact: no cross term).
    """

    sampling_cov: jax.Array
    label_cov: jax.Array
    total: jax.Array


def _split_examples(examples):
    if not (isinstance(examples, (tuple, list)) and len(examples) == 2):
        raise ValueError("examples must be a pair (inputs, targets) with a leading axis N on both; "
                         "the label noise is added to targets.")
    x, y = examples
    y = _checks.as_float_array(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"targets must have shape (N,) or (N, K); got {tuple(y.shape)}.")
    _checks.n_examples((y, x), "examples (targets, inputs)")  # one leading axis N on every leaf
    return x, y


def diffusions(loss: Callable[[Any, Any], jax.Array], params, examples, batch_size,
               label_noise_var, *, sampling=None, replacement=None) -> LabelNoiseDiffusions:
    r"""Both diffusion matrices of Xiong et al.'s label-noise SDE for any JAX model at ``params``.

    .. math:: \Sigma_1 = f_S\,\frac1N\sum_i(g_i-\bar g)(g_i-\bar g)^\top,\qquad
              \Sigma_2 = \frac{\sigma^2}{S}\,\frac1N\sum_i J_iJ_i^\top,\qquad
              J_i = -\frac{\partial\nabla_\theta\ell_i}{\partial y_i},

    with :math:`g_i` the noiseless per-example gradients. For the squared loss
    :math:`\ell = \tfrac12\|f(x;\theta) - y\|^2` (the convention here),
    :math:`J_i = \partial f(x_i)/\partial\theta` and :math:`\frac1N\sum_iJ_iJ_i^\top` is the
    Gauss--Newton matrix (:func:`gauss_newton`); :math:`\Sigma_2` is computed from ``loss`` itself
    (the mixed derivative), so no separate model function is needed.

    **Exact** for any loss whose gradient is affine in the target (the squared loss), both
    sampling rules, any ``N`` and ``S``: fresh noise is drawn per batch slot, so the label term is
    :math:`\frac{\sigma^2}{S^2}\mathbb E\sum_bJ_bJ_b^\top = \frac{\sigma^2}{S}G` whichever rule
    draws the slots, and it is uncorrelated with the sampling noise. For other losses
    :math:`\Sigma_2` is the leading order in :math:`\sigma`. In the SDE
    :math:`d\theta = -\nabla L\,dt + \sqrt\eta(\Sigma_1^{1/2}dW_1 + \Sigma_2^{1/2}dW_2)`,
    :math:`t = \eta k`; the per-step parameter noise is :math:`\eta^2(\Sigma_1+\Sigma_2)`.

    Args:
      loss: ``loss(params, (x, y)) -> scalar`` for ONE example, e.g.
        ``lambda p, ex: 0.5 * (model(p, ex[0]) - ex[1]) ** 2``.
      params: pytree of parameters (``P`` numbers after ``ravel_pytree``).
      examples: pair ``(inputs, targets)``; ``targets`` ``(N,)`` or ``(N, K)``, ``inputs`` any
        pytree with leading axis ``N``.
      batch_size: ``S``.
      label_noise_var: :math:`\sigma^2 \ge 0` (per target component).
      sampling: ``"with_replacement"`` (default) or ``"without_replacement"``; ``replacement``
        is the older spelling.

    Returns:
      :class:`LabelNoiseDiffusions`.

    Raises:
      ValueError: ``examples`` not a pair, mismatched leading axes, negative ``label_noise_var``,
        ``batch_size > N`` without replacement.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([1.0, 2.0]); y = jnp.array([1.0, 2.0])
      >>> loss = lambda p, ex: 0.5 * (p[0] * p[1] * ex[0] - ex[1]) ** 2
      >>> dif = diffusions(loss, jnp.array([1.0, 1.0]), (x, y), 1, 0.5)
      >>> dif.sampling_cov.round(4)   # an interpolating point: no sampling noise
      Array([[0., 0.],
             [0., 0.]], dtype=float64)
      >>> dif.label_cov.round(4)      # sigma^2 * mean(x^2) * [[b^2, ab], [ab, a^2]]
      Array([[1.25, 1.25],
             [1.25, 1.25]], dtype=float64)

    References:
      Xiong et al. (2023), arXiv:2304.00320 (the two diffusion terms); Ziyin, Liu, Mori & Ueda
      (2022), Prop. 1 (:math:`f_S`).
    """
    resolve_sampling(sampling, replacement)
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    x, y = _split_examples(examples)
    n = y.shape[0]
    s = _checks.check_int("batch_size", batch_size, 1)
    batch_factor(n, s, sampling=sampling, replacement=replacement)  # batch_size > N error first

    def flat_grad(p, xi, yi):
        return ravel_pytree(jax.grad(loss)(p, (xi, yi)))[0]

    @jax.jit  # one compiled program (op-by-op autodiff of a new model is ~10x slower)
    def both(p, x, y, sigma2):
        grads = jax.vmap(flat_grad, in_axes=(None, 0, 0))(p, x, y)  # (N, P)
        # J_i = -d(grad)/dy: (P,) per example, or (P, K) for vector targets
        jac = jax.vmap(jax.jacfwd(flat_grad, argnums=2), in_axes=(None, 0, 0))(p, x, y)
        jac = jac.reshape(n, grads.shape[1], -1)
        return grads, sigma2 / s * jnp.einsum("npk,nqk->pq", jac, jac) / n

    grads, label_cov = both(params, x, y, label_noise_var)
    sampling_cov = minibatch_covariance(grads, s, sampling=sampling, replacement=replacement)
    return LabelNoiseDiffusions(sampling_cov, label_cov, sampling_cov + label_cov)


def gauss_newton(model: Callable[[Any, Any], jax.Array], params, inputs) -> jax.Array:
    r"""Gauss--Newton matrix :math:`G = \frac1N\sum_iJ_i^\top J_i`, :math:`J_i = \partial f(x_i)/\partial\theta`.

    For the squared loss :math:`\frac1N\sum_i\tfrac12\|f(x_i)-y_i\|^2` it is the Hessian at any
    interpolating point (the residual term vanishes), and :math:`\frac{\sigma^2}{S}G` is the
    label-noise diffusion (:func:`diffusions`). **Exact** (automatic differentiation).

    Args:
      model: ``model(params, x) -> scalar or (K,)`` for ONE input.
      params: pytree (``P`` numbers, ``ravel_pytree`` order).
      inputs: pytree with leading axis ``N``.

    Returns:
      ``(P, P)`` PSD matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda p, x: p[0] * p[1] * x
      >>> gauss_newton(f, jnp.array([2.0, 0.5]), jnp.array([1.0, 1.0])).round(4)
      Array([[0.25, 1.  ],
             [1.  , 4.  ]], dtype=float64)
    """
    flat, unravel = ravel_pytree(params)
    return jax.jit(lambda p, x: _gauss_newton_flat(model, unravel, p, x))(flat, inputs)


def _gauss_newton_flat(model, unravel, p_flat, inputs):
    def out(p, xi):
        return jnp.reshape(model(unravel(p), xi), (-1,))

    jac = jax.vmap(jax.jacfwd(out), in_axes=(None, 0))(p_flat, inputs)  # (N, K, P)
    return jnp.einsum("nkp,nkq->pq", jac, jac) / jac.shape[0]


# ----------------------------------------------------------------------------------------------
# linear regression: the small-lr isotropic limit
# ----------------------------------------------------------------------------------------------


class SmallLrLimit(NamedTuple):
    r"""Small-lr limit of label-noise SGD on realisable linear regression.

    Attributes:
      param_cov: :math:`\frac{\eta\sigma^2}{2S}\Pi` (``Π`` the projector on the span of the inputs).
      train_loss: :math:`\tfrac12\mathrm{tr}(\hat H\Sigma) =
        \frac{\eta\sigma^2}{4S}\mathrm{tr}\hat H`
        (on the noiseless targets).
    """

    param_cov: jax.Array
    train_loss: jax.Array


def linreg_small_lr(inputs, lr, batch_size, label_noise_var) -> SmallLrLimit:
    r"""Small-lr limit of the stationary covariance of label-noise SGD on realisable regression.

    With noiseless realisable targets (:math:`y_i = x_i^\top w^*`, zero residuals) the exact
    equation of :func:`sgdtheory.linreg.dataset_stationary` has only the label-noise source; to
    first order in :math:`\eta` it reads :math:`\hat H\Sigma + \Sigma\hat H = \frac{\eta\sigma^2}{S}
    \hat H`, solved by

    .. math:: \Sigma \approx \frac{\eta\sigma^2}{2S}\,\Pi,\qquad
              \mathbb E L - L^* \approx \frac{\eta\sigma^2}{4S}\,\mathrm{tr}\hat H,

    isotropic on the data span (:math:`\Pi` projects on the span of the inputs, the directions the
    loss constrains; directions orthogonal to every input never move). **Approximation**
    (:math:`\eta\to0`, either sampling rule): relative error :math:`O(\eta h_{max})`. Measured against the exact
    solve on Gaussian data (``N = 50, D = 3, S = 5``, :math:`\hat H` eigenvalues 0.68-1.30, bound
    1.16): the exact covariance's eigenvalues are 1.3-1.9 % larger at :math:`\eta = 0.02`,
    15-23 % at :math:`\eta = 0.2`, 51-86 % at :math:`\eta = 0.5`; the excess loss 1.6 %, 19 %,
    68 % (``docs/theory/label_noise.md``).

    Args:
      inputs: ``(N, D)``.
      lr: :math:`\eta`.
      batch_size: ``S``.
      label_noise_var: :math:`\sigma^2`.

    Example:
      >>> import jax.numpy as jnp
      >>> lim = linreg_small_lr(jnp.eye(2), 0.1, 2, 1.0)
      >>> lim.param_cov.round(4)
      Array([[0.025, 0.   ],
             [0.   , 0.025]], dtype=float64)

    References:
      Xiong et al. (2023), arXiv:2304.00320 (linear-regression experiments); derived here.
    """
    x = _checks.as_float_array(inputs)
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (N, D); got {tuple(x.shape)}.")
    s = _checks.check_int("batch_size", batch_size, 1)
    if jnp.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar; got shape {jnp.shape(lr)}.")
    _checks.check_positive("lr", lr)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    n = x.shape[0]
    h = x.T @ x / n
    e, vecs = jnp.linalg.eigh(0.5 * (h + h.T))
    keep = e > 1e-12 * jnp.maximum(jnp.max(jnp.abs(e)), 1e-300)
    proj = (vecs * keep[None, :]) @ vecs.T
    scale = lr * label_noise_var / (2.0 * s)
    return SmallLrLimit(scale * proj, 0.5 * scale * jnp.trace(h))


# ----------------------------------------------------------------------------------------------
# product model f = a b
# ----------------------------------------------------------------------------------------------


class ImbalanceStep(NamedTuple):
    r"""Conditional law of the next imbalance :math:`D' = a'^2 - b'^2` given :math:`(a, b)`.

    Attributes:
      mean: :math:`\mathbb E[D'\mid a,b] = D(1-\eta^2[(ab-y)^2+\sigma^2/S])` (any noise law).
      var: :math:`\operatorname{Var}[D'\mid a,b] = D^2\eta^4(4\mu^2s^2 + 2s^4)`,
        :math:`\mu = ab-y`, :math:`s^2 = \sigma^2/S` (Gaussian label noise).
    """

    mean: jax.Array
    var: jax.Array


def _check_lr_noise(lr, label_noise_var, batch_size):
    _checks.check_positive("lr", lr)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    return _checks.check_int("batch_size", batch_size, 1)


def imbalance_step(a, b, target, lr, label_noise_var, batch_size=1) -> ImbalanceStep:
    r"""Exact one-step law of the imbalance :math:`D = a^2 - b^2` of the product model ``f = ab``.

    Loss :math:`\tfrac12(ab - y - \varepsilon)^2`; a batch of ``S`` copies of the one example with
    independent noises has mean residual :math:`\bar r = ab - y - \bar\varepsilon`,
    :math:`\operatorname{Var}\bar\varepsilon = \sigma^2/S`. From :math:`a' = a - \eta b\bar r`,
    :math:`b' = b - \eta a\bar r`:

    .. math:: D' = a'^2 - b'^2 = D\,(1 - \eta^2\bar r^2),\qquad
              \mathbb E[D'\mid a,b] = D\big(1 - \eta^2[(ab-y)^2 + \sigma^2/S]\big).

    **Exact** (the mean for any zero-mean noise; the variance for Gaussian noise). The imbalance is
    conserved by gradient flow and by noiseless SGD on the manifold: all its change is
    :math:`O(\eta^2)`.

    Args:
      a, b: parameters (arrays broadcast together).
      target: :math:`y`.
      lr: :math:`\eta`.
      label_noise_var: :math:`\sigma^2`.
      batch_size: ``S``.

    Example:
      >>> st = imbalance_step(2.0, 0.5, 1.0, 0.05, 0.25)
      >>> round(float(st.mean), 6)   # 3.75 * (1 - 0.0025 * 0.25)
      3.747656
    """
    s = _check_lr_noise(lr, label_noise_var, batch_size)
    a, b = jnp.asarray(a, float), jnp.asarray(b, float)
    d = a**2 - b**2
    mu = a * b - target
    s2 = label_noise_var / s
    return ImbalanceStep(d * (1.0 - lr**2 * (mu**2 + s2)),
                         d**2 * lr**4 * (4.0 * mu**2 * s2 + 2.0 * s2**2))


def product_curvature(imbalance, target):
    r"""Curvature :math:`h = a^2 + b^2 = \sqrt{D^2 + 4y^2}` of the product model on the manifold
    :math:`ab = y` (the nonzero Hessian eigenvalue, = :math:`\mathrm{tr}H`). **Exact**.

    Example:
      >>> float(product_curvature(3.75, 1.0))
      4.25
    """
    return jnp.sqrt(jnp.asarray(imbalance, float) ** 2 + 4.0 * jnp.asarray(target, float) ** 2)


def product_residual_var(imbalance, target, lr, label_noise_var, batch_size=1):
    r"""Quasi-stationary variance of the residual :math:`ab - y` near the manifold.

    Linearised normal dynamics :math:`u' = (1-\eta h)u + \eta\sqrt h\,\bar\varepsilon` (``u`` the
    normal coordinate, :math:`ab - y \approx \sqrt h\,u`) give

    .. math:: \operatorname{Var}(ab - y) \approx \frac{\eta\sigma^2}{S}\,\frac{h}{2-\eta h}.

    **Approximation** (frozen :math:`D`, linearised normal direction; its error is
    :math:`O(\eta\sigma^2)` relative, see ``docs/theory/label_noise.md``). Needs
    :math:`\eta h < 2`: a concrete ``lr`` past it raises ``ValueError``, a traced one (under
    ``jit``/``vmap``/``grad``) gives NaN.

    Example:
      >>> round(float(product_residual_var(3.75, 1.0, 0.05, 0.25)), 6)
      0.02972
    """
    s = _check_lr_noise(lr, label_noise_var, batch_size)
    h = product_curvature(imbalance, target)
    ok = _check_normal_stable(lr, h, "product_residual_var")
    return jnp.where(ok, lr * label_noise_var / s * h / (2.0 - lr * h), jnp.nan)


def _check_normal_stable(lr, h, where):
    """Eager: raise for a concrete ``lr >= 2/h``.  Returns the traced-safe predicate
    ``0 < lr h < 2`` (per element of ``h``): the callers return NaN where it is false."""
    _checks.check_lr_below(lr, 2.0 / jnp.max(jnp.asarray(h)),
                           f"2/h = 2/sqrt(D^2 + 4y^2) ({where})",
                           "are unstable in the normal direction")
    return (lr > 0) & (lr * h < 2.0)


def imbalance_drift(imbalance, target, lr, label_noise_var, batch_size=1, *, order="finite_lr"):
    r"""Drift per step of the imbalance :math:`D` of the product model near the manifold.

    .. math:: \frac{dD}{dk} = -\eta^2\,\frac{\sigma^2}{S}\,\frac{2}{2-\eta h}\,D
              \quad(\texttt{order="finite\_lr"}),\qquad
              \frac{dD}{dk} = -\eta^2\frac{\sigma^2}{S}D\quad(\texttt{order="leading"}),

    :math:`h = \sqrt{D^2+4y^2}`: :func:`imbalance_step`'s exact mean with :math:`(ab-y)^2` replaced
    by :func:`product_residual_var`, since :math:`\frac{\sigma^2}{S} +
    \frac{\eta\sigma^2h}{S(2-\eta h)} = \frac{\sigma^2}{S}\frac{2}{2-\eta h}`.
    **Approximation** (quasi-stationary normal fluctuations: time-scale separation
    :math:`\eta^2\sigma^2 \ll \eta h`). The leading-order law (Blanc et al. 2020; Damian et al.
    2021; Li, Wang & Arora 2022) drops the factor :math:`2/(2-\eta h)`: 1.119 at
    :math:`\eta = 0.05, D = 3.75, y = 1` (its drift is 11 % too slow there).  ``finite_lr`` needs
    :math:`\eta h < 2`: a concrete ``lr`` past it raises ``ValueError``, a traced one gives NaN.

    Example:
      >>> round(float(imbalance_drift(3.75, 1.0, 0.05, 0.25)), 7)
      -0.0026224
    """
    _checks.check_choice("order", order, ORDERS)
    s = _check_lr_noise(lr, label_noise_var, batch_size)
    d = jnp.asarray(imbalance, float)
    rate = lr**2 * label_noise_var / s
    if order == "leading":
        return -rate * d
    h = product_curvature(d, target)
    ok = _check_normal_stable(lr, h, "imbalance_drift")
    return jnp.where(ok, -rate * 2.0 / (2.0 - lr * h) * d, jnp.nan)


def _potential(absd, q, lr):
    """F(|D|) = 2 ln|D| - lr [h - q ln((q + h)/|D|)], dF/d|D| = (2 - lr h)/|D|."""
    h = jnp.sqrt(absd**2 + q**2)
    log_ratio = jnp.where(q > 0, jnp.log((q + h) / absd), 0.0)
    return 2.0 * jnp.log(absd) - lr * (h - q * log_ratio)


def imbalance_path(imbalance0, target, lr, label_noise_var, steps, batch_size=1, *,
                   order="finite_lr"):
    r"""Solution :math:`D(k)` of the imbalance ODE of :func:`imbalance_drift` from :math:`D(0)`.

    ``order="finite_lr"``: separating variables, with :math:`q = 2|y|` and
    :math:`c = 2\eta^2\sigma^2/S`,

    .. math:: F(|D|) = 2\ln|D| - \eta\Big[h(D) - q\ln\frac{q + h(D)}{|D|}\Big],\qquad
              F(|D(k)|) = F(|D_0|) - c\,k,

    solved for :math:`|D(k)|` by bisection (``F`` increases with :math:`|D|` while
    :math:`\eta h < 2`; 200 halvings of the bracket :math:`|D_0|e^{-ck/(2-\eta h_0)}\ldots
    |D_0|e^{-ck/(2-\eta q)}`, machine precision). ``order="leading"``:
    :math:`D_0e^{-\eta^2\sigma^2k/S}`. The sign of ``D`` is kept. **Approximation** as
    :func:`imbalance_drift`; with the finite-lr factor it agrees with simulated SGD to the
    Monte Carlo error (e.g. :math:`D(1000)` = 1.8944 vs 1.8939 ± 0.0003 at :math:`\eta=0.05`,
    :math:`\sigma^2=0.25`, :math:`D_0=3.75`, :math:`y=1`), where the leading order gives 2.0072.

    Args:
      imbalance0: :math:`D_0` (scalar).
      target: :math:`y`.
      lr, label_noise_var, batch_size: :math:`\eta`, :math:`\sigma^2`, ``S``.
      steps: ``k`` (scalar or array of step counts).
      order: ``"finite_lr"`` (default) or ``"leading"``.

    Raises:
      ValueError: unknown ``order``; (concrete) :math:`\eta \ge 2/h(D_0)` (a traced
        :math:`\eta` past it gives NaN).

    Example:
      >>> round(float(imbalance_path(3.75, 1.0, 0.05, 0.25, 1000)), 4)
      1.8944
      >>> round(float(imbalance_path(3.75, 1.0, 0.05, 0.25, 1000, order="leading")), 4)
      2.0072
    """
    _checks.check_choice("order", order, ORDERS)
    s = _check_lr_noise(lr, label_noise_var, batch_size)
    d0 = jnp.asarray(imbalance0, float)
    if d0.ndim != 0:
        raise ValueError("imbalance0 must be a scalar.")
    k = jnp.asarray(steps, float)
    c = 2.0 * lr**2 * label_noise_var / s
    if order == "leading":
        return d0 * jnp.exp(-0.5 * c * k)
    q = 2.0 * jnp.abs(jnp.asarray(target, float))
    h0 = jnp.sqrt(d0**2 + q**2)
    ok = _check_normal_stable(lr, h0, "imbalance_path")
    absd0 = jnp.maximum(jnp.abs(d0), 1e-300)
    goal = _potential(absd0, q, lr) - c * k
    lo = jnp.log(absd0) - c * k / (2.0 - lr * h0)  # the fastest rate, c/(2 - lr h0)
    hi = jnp.log(absd0) - c * k / (2.0 - lr * q)  # the slowest, c/(2 - lr q) (h >= q)

    def body(_, lohi):
        lo_, hi_ = lohi
        mid = 0.5 * (lo_ + hi_)
        above = _potential(jnp.exp(mid), q, lr) > goal
        return jnp.where(above, lo_, mid), jnp.where(above, mid, hi_)

    lo, hi = lax.fori_loop(0, 200, body, (lo, hi))
    out = jnp.sign(d0) * jnp.exp(0.5 * (lo + hi))
    return jnp.where(ok, jnp.where(d0 == 0, 0.0, out), jnp.nan)  # traced lr >= 2/h0: NaN


# ----------------------------------------------------------------------------------------------
# implicit regulariser on the zero-loss manifold, any model
# ----------------------------------------------------------------------------------------------


def implicit_regularizer_drift(model: Callable[[Any, Any], jax.Array], params, inputs,
                               label_noise_var, batch_size=1, *, rank_tol=1e-9):
    r"""Slow drift of label-noise SGD along the zero-loss manifold :math:`\Gamma`, any model.

    .. math:: \frac{d\theta}{d\tau} = -\frac{\sigma^2}{4S}\,\nabla_\Gamma\,\mathrm{tr}\,G(\theta)
              = -\frac{\sigma^2}{4S}\,P_\Gamma\nabla_\theta\,\mathrm{tr}\,G,\qquad \tau = \eta^2k,

    with :math:`G` the Gauss--Newton matrix (:func:`gauss_newton`; on :math:`\Gamma` it is
    :math:`\nabla^2L`, and :math:`P_\Gamma\nabla\mathrm{tr}\nabla^2L = P_\Gamma\nabla\mathrm{tr}G`
    there because the residual term's gradient is normal) and :math:`P_\Gamma` the projector on
    the tangent space, the null space of :math:`G`. Per step of lr :math:`\eta` the parameters
    move by :math:`\eta^2\,d\theta/d\tau`: SGD minimises the implicit regulariser
    :math:`R = \frac{\eta\sigma^2}{4S}\mathrm{tr}\,G` (per unit of gradient-flow time).

    **Approximation**: the leading order in :math:`\eta` (Blanc et al. 2020; Damian, Ma & Lee
    2021; the limiting flow of Li, Wang & Arora 2022 for label noise); ``params`` must lie on
    :math:`\Gamma` (zero residuals). For the product model it gives :math:`dD/dk = -\eta^2
    \frac{\sigma^2}{S}D`, which at finite :math:`\eta` misses the factor :math:`2/(2-\eta h)` of
    :func:`imbalance_drift` (1.12 in the example of ``docs/theory/label_noise.md``).

    Args:
      model: ``model(params, x) -> scalar or (K,)``.
      params: a point on the zero-loss manifold (pytree).
      inputs: pytree with leading axis ``N``.
      label_noise_var, batch_size: :math:`\sigma^2`, ``S``.
      rank_tol: eigenvalues of ``G`` below ``rank_tol * max`` count as tangent directions.

    Returns:
      :math:`d\theta/d\tau` as a pytree like ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda p, x: p[0] * p[1] * x
      >>> implicit_regularizer_drift(f, jnp.array([2.0, 0.5]), jnp.ones(1), 0.25).round(4)
      Array([-0.2206,  0.0551], dtype=float64)

    References:
      Blanc, Gupta, Valiant & Valiant, COLT 2020; Damian, Ma & Lee, NeurIPS 2021; Li, Wang & Arora,
      ICLR 2022.
    """
    s = _checks.check_int("batch_size", batch_size, 1)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def drift(p_flat, x, sigma2):
        g = _gauss_newton_flat(model, unravel, p_flat, x)
        grad_tr = jax.grad(lambda q: jnp.trace(_gauss_newton_flat(model, unravel, q, x)))(p_flat)
        e, vecs = jnp.linalg.eigh(0.5 * (g + g.T))
        tangent = e <= rank_tol * jnp.maximum(jnp.max(jnp.abs(e)), 1e-300)
        proj = (vecs * tangent[None, :]) @ vecs.T
        return -sigma2 / (4.0 * s) * (proj @ grad_tr)

    return unravel(drift(flat, inputs, label_noise_var))
