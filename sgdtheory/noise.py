r"""Minibatch gradient noise: exact covariances for any JAX loss, and the literature's approximations.

For a dataset of ``N`` examples with per-sample gradients :math:`g_i(w)`, mean
:math:`\bar g = \nabla L(w)` and population covariance

.. math:: C_1(w) = \frac1N\sum_{i=1}^N (g_i - \bar g)(g_i - \bar g)^\top ,

the minibatch gradient :math:`\hat g = \frac1S\sum_{b\in B} g_b` has :math:`\mathbb E\hat g = \bar g`
and, exactly,

.. math:: \operatorname{Cov}\hat g = f_S\, C_1, \qquad
          f_S = \begin{cases} 1/S & \text{i.i.d. indices (with replacement)}\\
                              \dfrac{N-S}{S(N-1)} & \text{a uniform $S$-subset (without replacement).}
                \end{cases}

With replacement the :math:`S` draws are independent, each with covariance :math:`C_1`. Without
replacement, :math:`\operatorname{Cov}(g_{b_1}, g_{b_2}) = -C_1/(N-1)` for two distinct positions
(the :math:`N` centred gradients sum to zero), so
:math:`\operatorname{Cov}\hat g = \frac{1}{S^2}[S C_1 - S(S-1) C_1/(N-1)] = \frac{N-S}{S(N-1)}C_1`.
The covariance is that of the gradient *actually used in one step* -- the ``C`` of
:mod:`sgdtheory.quadratic` -- so :math:`1/S` is never applied twice.

Conventions: per-sample loss ``loss_fn(params, example)``; ``params`` any pytree, flattened with
``jax.flatten_util.ravel_pytree`` (the order of the returned covariance's rows).

References:
  Ziyin, Liu, Mori & Ueda, "Strength of minibatch noise in SGD", ICLR 2022 (arXiv:2102.05375),
  Prop. 1 (with/without replacement), Sec. 2.
  Cochran, *Sampling Techniques*, 3rd ed. (1977), Thm 2.2 (finite-population correction).
  Jastrzebski et al., "Three factors influencing minima in SGD" (2017) and Zhu et al., "The
  anisotropic noise in SGD" (ICML 2019) -- the Hessian/Fisher approximations.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks
from sgdtheory._sampling import sample_indices
from sgdtheory._mean_square import batch_factor, resolve_sampling

__all__ = [
    "batch_factor",
    "per_sample_gradients",
    "flatten_per_sample",
    "minibatch_covariance",
    "gradient_noise_covariance",
    "hessian_approximation",
    "fisher_approximation",
]


def per_sample_gradients(loss_fn: Callable[[Any, Any], jax.Array], params, batch):
    r"""Gradients :math:`g_i = \nabla_w \ell(w; z_i)` of every example, by ``vmap(grad)``.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar`` for ONE example.
      params: any pytree of arrays.
      batch: pytree whose leaves have a leading axis ``N`` (the examples).

    Returns:
      A pytree like ``params`` with a leading axis ``N`` on every leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda w, z: 0.5 * (z[0] * w - z[1]) ** 2
      >>> g = per_sample_gradients(loss, jnp.array(1.0), jnp.array([[1.0, 0.0], [2.0, 1.0]]))
      >>> g.tolist()
      [1.0, 2.0]
    """
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)


def flatten_per_sample(per_sample_grads) -> jax.Array:
    """A per-sample gradient pytree (leading axis ``N``) as an ``(N, P)`` matrix (ravel order)."""
    leaves = jax.tree_util.tree_leaves(per_sample_grads)
    if not leaves:
        raise ValueError("per_sample_grads is empty.")
    n = leaves[0].shape[0] if leaves[0].ndim else None
    if n is None or any(leaf.ndim == 0 or leaf.shape[0] != n for leaf in leaves):
        raise ValueError("every leaf of per_sample_grads needs the same leading axis N (examples).")
    return jax.vmap(lambda t: ravel_pytree(t)[0])(per_sample_grads)


def minibatch_covariance(per_sample_grads, batch_size, *, sampling=None, replacement=None) -> jax.Array:
    r"""Exact covariance of the minibatch-mean gradient, :math:`f_S\,C_1` (module docstring).

    Args:
      per_sample_grads: ``(N, P)`` array, or a pytree with leading axis ``N`` (flattened).
      batch_size: ``S`` (static).
      sampling: ``"with_replacement"`` for i.i.d. indices (:math:`f_S = 1/S`, default) or
        ``"without_replacement"`` for a uniform ``S``-subset (:math:`f_S = (N-S)/(S(N-1))`, zero
        at ``S = N``: full-batch GD) -- the same names as the simulators' ``sampling=``.
      replacement: older spelling (``True``/``False``), same numbers; not together with
        ``sampling``.

    Returns:
      ``(P, P)`` covariance of the gradient used in one step.

    Raises:
      ValueError: ``batch_size > N`` without replacement, ``batch_size < 1``.

    References:
      Ziyin, Liu, Mori & Ueda (2022), Prop. 1; Cochran (1977), Thm 2.2.
    """
    g = per_sample_grads
    if not isinstance(g, jax.Array) or g.ndim != 2:
        g = flatten_per_sample(g) if not (hasattr(g, "ndim") and g.ndim == 2) else jnp.asarray(g)
    g = _checks.as_float_array(g)
    n = g.shape[0]
    f = batch_factor(n, batch_size, sampling=sampling, replacement=replacement)
    dev = g - jnp.mean(g, axis=0, keepdims=True)
    return f * (dev.T @ dev) / n


def gradient_noise_covariance(loss_fn, params, data, batch_size, *, sampling=None, replacement=None):
    r"""Per-step minibatch noise covariance of any model at ``params``: :math:`f_S C_1(w)`.

    The number to feed :func:`sgdtheory.quadratic.stationary_covariance` for a network near a
    minimum (there the noise is approximately constant; see :mod:`sgdtheory.linreg` for the exact
    state-dependent treatment of linear models).

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``.
      params: pytree of parameters (flattened in ``ravel_pytree`` order, ``P`` numbers).
      data: pytree with leading axis ``N``.
      batch_size, sampling, replacement: as in :func:`minibatch_covariance`.

    Returns:
      ``(P, P)`` covariance.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = jnp.array([1.0, 1.0, 4.0])
      >>> loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2
      >>> gradient_noise_covariance(loss, jnp.zeros(1), (x, y), 1).shape
      (1, 1)
    """
    resolve_sampling(sampling, replacement)  # option errors before any gradient is computed
    grads = per_sample_gradients(loss_fn, params, data)
    return minibatch_covariance(flatten_per_sample(grads), batch_size, sampling=sampling,
                                replacement=replacement)


def hessian_approximation(hessian, loss, batch_size) -> jax.Array:
    r"""The "noise ∝ Hessian" approximation :math:`C \approx \frac{2L}{S} H` (MSE loss).

    Derivation and regime: for squared loss :math:`\ell_i = \tfrac12 r_i^2`,
    :math:`g_i = r_i x_i`, so :math:`C_1 = \frac1N\sum r_i^2 x_i x_i^\top - \bar g\bar g^\top`. If the
    residuals are independent of the inputs and :math:`\bar g = 0`, this is
    :math:`\overline{r^2}\,\overline{xx^\top} = 2L\,H`. That holds **exactly only at the minimum of
    online regression with pure label noise** (:math:`C = \sigma^2 A/S`). It fails

    * away from the minimum: the exact online noise is
      :math:`\frac1S(A\Sigma A + \mathrm{tr}(A\Sigma)A + \sigma^2A)`
      (Ziyin et al. 2022, Lemma 1) -- the :math:`A\Sigma A` term is not proportional to ``L H``;
    * on a finite dataset: residuals at the OLS solution are correlated with the inputs
      (:math:`\frac1N\sum r_i^2 x_ix_i^\top \neq 2LH` in general);
    * for stability: it predicts :math:`\lambda a < 2`, the exact online bound is
      :math:`\lambda a < 2S/(S+2)`.

    Args:
      hessian: ``(D, D)`` Hessian of the (mean) loss.
      loss: the loss value :math:`L` (e.g. its stationary average).
      batch_size: ``S``.

    References:
      Jastrzebski et al. (2017), Sec. 3; Zhu et al. (ICML 2019); Ziyin, Liu, Mori & Ueda (2022),
      Sec. 4 (where the approximation is shown to fail).
    """
    h = _checks.square_matrix("hessian", hessian)
    _checks.check_nonnegative("loss", loss)
    s = _checks.check_int("batch_size", batch_size, 1)
    return (2.0 * loss / s) * h


def fisher_approximation(per_sample_grads, batch_size) -> jax.Array:
    r"""The empirical-Fisher approximation :math:`C \approx \frac1{S}\frac1N\sum_i g_i g_i^\top` (uncentred).

    It differs from the exact with-replacement covariance by :math:`\bar g\bar g^\top/S`: exact only
    where the mean gradient vanishes (a minimum, or the stationary mean with no weight decay),
    wrong away from it (the mean gradient is signal, not noise), and it ignores the
    finite-population factor of sampling without replacement.

    Args:
      per_sample_grads: ``(N, P)`` array or pytree with leading axis ``N``.
      batch_size: ``S``.
    """
    g = per_sample_grads
    if not (hasattr(g, "ndim") and g.ndim == 2):
        g = flatten_per_sample(g)
    g = _checks.as_float_array(g)
    s = _checks.check_int("batch_size", batch_size, 1)
    return (g.T @ g) / (g.shape[0] * s)


# --------------------------------------------------------------------------------------------
# Order parameters of the minibatch-gradient ensemble (Feng & Tu 2021, MLST; arXiv:2101.06509)
# --------------------------------------------------------------------------------------------

from typing import NamedTuple  # noqa: E402  (this section was appended to the module)

import numpy as np  # noqa: E402

__all__ += [
    "GradientOrderParameters",
    "MinibatchOrderParameters",
    "alignment_ratio",
    "gradient_order_parameters",
    "sample_minibatch_gradients",
    "minibatch_order_parameters",
]


class GradientOrderParameters(NamedTuple):
    r"""Exact order parameters of the minibatch-gradient ensemble (:func:`gradient_order_parameters`).

    Attributes:
      alignment_ratio: :math:`R_2 = |\bar g|^2/(|\bar g|^2 + f_S\operatorname{tr}C_1)`.
      mean_gradient_sq: :math:`|\bar g|^2`, the squared full-batch gradient (the signal).
      noise_trace: :math:`\operatorname{tr}\operatorname{Cov}\hat g = f_S\operatorname{tr}C_1`.
      rms_amplitude: :math:`\sqrt{\mathbb E|\hat g|^2} = \sqrt{|\bar g|^2 + f_S\operatorname{tr}C_1}`.
    """

    alignment_ratio: jax.Array
    mean_gradient_sq: jax.Array
    noise_trace: jax.Array
    rms_amplitude: jax.Array


class MinibatchOrderParameters(NamedTuple):
    r"""Order parameters estimated from ``M`` sampled minibatch gradients (:func:`minibatch_order_parameters`).

    Attributes:
      alignment: :math:`R = \frac{1}{M(M-1)}\sum_{\mu\ne\nu}\cos(g^\mu, g^\nu)`, mean pairwise cosine.
      alignment_ratio: :math:`\hat R_2 = \frac{\frac1{M(M-1)}\sum_{\mu\ne\nu} g^\mu\cdot g^\nu}
        {\frac1M\sum_\mu|g^\mu|^2}`, the sampled counterpart of :func:`alignment_ratio`.
      amplitude: :math:`A = \frac1M\sum_\mu |g^\mu|`, mean gradient amplitude.
      rms_amplitude: :math:`\sqrt{\frac1M\sum_\mu|g^\mu|^2}`.
    """

    alignment: jax.Array
    alignment_ratio: jax.Array
    amplitude: jax.Array
    rms_amplitude: jax.Array


def _as_grad_matrix(per_sample_grads) -> jax.Array:
    g = per_sample_grads
    if not (hasattr(g, "ndim") and g.ndim == 2):
        g = flatten_per_sample(g)
    return _checks.as_float_array(g)


def _order_parameters(g, batch_size, sampling, replacement) -> GradientOrderParameters:
    n = g.shape[0]
    f = batch_factor(n, batch_size, sampling=sampling, replacement=replacement)
    gbar = jnp.mean(g, axis=0)
    signal = jnp.sum(gbar**2)
    noise = f * jnp.mean(jnp.sum((g - gbar[None, :]) ** 2, axis=1))  # f_S tr C_1
    total = signal + noise
    tv = _checks.concrete_value(total)
    if tv is not None and not tv > 0:
        raise ValueError("every minibatch gradient is zero (|g|^2 + f_S tr C = 0): the alignment "
                         "of the minibatch gradients is undefined here.")
    return GradientOrderParameters(signal / total, signal, noise, jnp.sqrt(total))


def alignment_ratio(per_sample_grads, batch_size, *, sampling=None, replacement=None) -> jax.Array:
    r"""Exact alignment ratio of two independent minibatch gradients.

    For independent minibatches :math:`\mu\ne\nu` drawn by the same rule,
    :math:`\mathbb E[g^\mu\cdot g^\nu] = |\bar g|^2` (unbiased, independent) and
    :math:`\mathbb E|g^\mu|^2 = |\bar g|^2 + \operatorname{tr}\operatorname{Cov}\hat g`, with
    :math:`\operatorname{Cov}\hat g = f_S C_1` exactly (module docstring), so

    .. math:: R_2 = \frac{\mathbb E[g^\mu\cdot g^\nu]}{\mathbb E|g^\mu|^2}
              = \frac{|\bar g|^2}{|\bar g|^2 + f_S\operatorname{tr}C_1},\qquad
              f_S = \frac1S\ \text{(with replacement)},\quad \frac{N-S}{S(N-1)}\ \text{(without)} .

    **Exact** (derived here; :math:`\operatorname{tr}C_1 = \frac1N\sum_i|g_i-\bar g|^2`).
    :math:`R_2 \approx 1`: the minibatch gradients agree (signal-dominated, the fast-learning
    phase); :math:`R_2 \to 0`: noise-dominated (the exploration phase near a minimum).  It is the
    ratio form of Feng & Tu's alignment order parameter; their mean pairwise *cosine* ``R``
    (:func:`minibatch_order_parameters`) approaches :math:`R_2` when the minibatch-gradient norms
    concentrate (many parameters); the paper's exact normalisation was not available to us.

    Args:
      per_sample_grads: ``(N, P)`` array or a pytree with leading axis ``N``.
      batch_size: ``S``.
      sampling, replacement: as in :func:`minibatch_covariance`.

    Returns:
      Scalar :math:`R_2\in[0, 1]`.

    Raises:
      ValueError: ``batch_size > N`` without replacement, every minibatch gradient zero.

    Example:
      >>> import jax.numpy as jnp
      >>> g = jnp.array([[1.0, 0.0], [3.0, 0.0]])     # mean gradient 2, tr C_1 = 1
      >>> float(alignment_ratio(g, 1))               # 4 / (4 + 1)
      0.8
      >>> float(alignment_ratio(g, 2, sampling="without_replacement"))   # full batch: no noise
      1.0
    """
    return _order_parameters(_as_grad_matrix(per_sample_grads), batch_size, sampling,
                             replacement).alignment_ratio


def gradient_order_parameters(loss_fn, params, data, batch_size, *, sampling=None,
                              replacement=None) -> GradientOrderParameters:
    r"""Exact minibatch-gradient order parameters of any model at ``params``.

    Per-sample gradients by ``vmap(grad)``, then :func:`alignment_ratio`'s
    :math:`R_2 = |\bar g|^2/(|\bar g|^2 + f_S\operatorname{tr}C_1)` together with the signal
    :math:`|\bar g|^2`, the noise :math:`f_S\operatorname{tr}C_1` and the rms amplitude
    :math:`\sqrt{\mathbb E|\hat g|^2}` -- all **exact** for the stated sampling rule.  (The mean
    amplitude :math:`\mathbb E|\hat g|` has no closed form; estimate it with
    :func:`minibatch_order_parameters`.)

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``.
      params: pytree of parameters.
      data: pytree with leading axis ``N``.
      batch_size, sampling, replacement: as in :func:`minibatch_covariance`.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = jnp.array([1.0, 1.0, 4.0])
      >>> loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2
      >>> round(float(gradient_order_parameters(loss, jnp.zeros(1), (x, y), 1).alignment_ratio), 4)
      0.5034
    """
    resolve_sampling(sampling, replacement)
    grads = flatten_per_sample(per_sample_gradients(loss_fn, params, data))
    return _order_parameters(_checks.as_float_array(grads), batch_size, sampling, replacement)


def sample_minibatch_gradients(key, loss_fn, params, data, batch_size, num_batches, *,
                               sampling=None) -> jax.Array:
    r"""``num_batches`` independent minibatch gradients :math:`\hat g = \nabla\frac1S\sum_{b\in B}\ell_b`.

    Each minibatch is drawn independently: ``S`` i.i.d. uniform indices
    (``"with_replacement"``, default) or a uniform ``S``-subset (``"without_replacement"``).

    Args:
      key: a JAX PRNG key.
      loss_fn: ``loss_fn(params, example) -> scalar``.
      params: pytree (gradients flattened in ``ravel_pytree`` order).
      data: pytree with leading axis ``N``.
      batch_size: ``S`` (static).
      num_batches: ``M`` (static).
      sampling: ``"with_replacement"`` or ``"without_replacement"``.

    Returns:
      ``(M, P)`` array of minibatch gradients.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0], [2.0], [3.0]]); y = jnp.array([1.0, 1.0, 4.0])
      >>> loss = lambda w, z: 0.5 * (z[0] @ w - z[1]) ** 2
      >>> sample_minibatch_gradients(jax.random.key(0), loss, jnp.zeros(1), (x, y), 3, 5).shape
      (5, 1)
    """
    _checks.check_key(key)
    with_rep = resolve_sampling(sampling, None)
    s = _checks.check_int("batch_size", batch_size, 1)
    m = _checks.check_int("num_batches", num_batches, 1)
    n = _checks.n_examples(data, "data")  # every leaf: the same leading axis N (none clamped)
    batch_factor(n, s, sampling=sampling)  # batch_size > N without replacement raises here
    flat, unravel = ravel_pytree(params)
    keys = jax.random.split(key, m)

    def one(k, flat, data):
        idx = sample_indices(k, "with_replacement" if with_rep else "without_replacement", n, (s,))
        batch = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], data)
        mean_loss = lambda x: jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(unravel(x), batch))
        return jax.grad(mean_loss)(flat)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))(keys, flat, data)


def minibatch_order_parameters(minibatch_grads) -> MinibatchOrderParameters:
    r"""Feng & Tu's order parameters estimated from ``M`` independent minibatch gradients.

    .. math:: R = \frac{1}{M(M-1)}\sum_{\mu\ne\nu}\frac{g^\mu\cdot g^\nu}{|g^\mu||g^\nu|}
              = \frac{|\sum_\mu u^\mu|^2 - M}{M(M-1)},\qquad
              \hat R_2 = \frac{(|\sum_\mu g^\mu|^2 - \sum_\mu|g^\mu|^2)/(M(M-1))}
              {\sum_\mu |g^\mu|^2/M},\qquad A = \frac1M\sum_\mu|g^\mu|

    (:math:`u^\mu = g^\mu/|g^\mu|`).  Numerator and denominator of :math:`\hat R_2` are unbiased
    (U-statistics) for :math:`|\bar g|^2` and :math:`\mathbb E|\hat g|^2`, so :math:`\hat R_2`
    converges to the exact :func:`alignment_ratio` as ``M`` grows (a ratio: bias
    :math:`O(1/M)`).  ``R`` estimates :math:`\mathbb E\cos(g^\mu, g^\nu)` for independent batches
    (definitions reconstructed from Feng & Tu 2021's abstract: "alignment of SGD gradients and
    their mean amplitude"; the paper's exact normalisation was not available to us).

    Args:
      minibatch_grads: ``(M, P)`` array, ``M >= 2`` independent minibatch gradients (e.g. from
        :func:`sample_minibatch_gradients`).

    Raises:
      ValueError: not ``(M, P)`` with ``M >= 2``; a zero gradient (its cosine is undefined).

    Example:
      >>> import jax.numpy as jnp
      >>> op = minibatch_order_parameters(jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
      >>> round(float(op.alignment), 4), round(float(op.amplitude), 4)
      (0.4714, 1.4714)
    """
    g = _checks.as_float_array(minibatch_grads)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"minibatch_grads must be an (M, P) array with M >= 2 gradients; got shape "
                         f"{tuple(g.shape)}.")
    m = g.shape[0]
    norms = jnp.linalg.norm(g, axis=1)
    nv = _checks.concrete_value(norms)
    if nv is not None and np.any(nv == 0):
        raise ValueError(f"minibatch gradients {np.flatnonzero(nv == 0).tolist()} are zero: their "
                         "cosine (alignment) is undefined.")
    u = g / norms[:, None]
    cos = (jnp.sum(jnp.sum(u, axis=0) ** 2) - m) / (m * (m - 1))
    sq = jnp.sum(norms**2)
    cross = (jnp.sum(jnp.sum(g, axis=0) ** 2) - sq) / (m * (m - 1))
    return MinibatchOrderParameters(cos, cross / (sq / m), jnp.mean(norms), jnp.sqrt(sq / m))
