r"""Minibatch SGD on linear regression, many replicas at once: real sampling from a dataset, or online.

* :func:`linreg_sgd`: a fixed dataset ``(X, y)``; each step every replica draws its own minibatch of
  indices and applies :math:`\hat g = \frac1S X_B^\top(X_B w - y_B)` (plus coupled weight decay)
  through an optax optimizer.
* :func:`online_linreg_sgd`: fresh Gaussian samples every step, :math:`x\sim\mathcal N(0,A)`,
  :math:`y = w^{*\top}x + \varepsilon`, optionally trained on :math:`x + n`, :math:`n\sim\mathcal N(0,B)`.

Both are thin wrappers over :func:`~sgdtheory.simulate.minibatch_sgd` with :func:`squared_loss`.
The sampling rules (``sampling=``: ``"with_replacement"``, ``"without_replacement"``,
``"shuffle"``) and their measured costs are described in :mod:`sgdtheory.simulate.data`; under
``"shuffle"`` the stationary variance is 0.3-0.9 of the i.i.d.-subset value and the mean shifts by
``O(lr)`` (``docs/theory/linreg.md`` Sec. 4).

The simulator never imports the theory; :mod:`sgdtheory.crosscheck.linreg` pairs them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sgdtheory import _checks
from sgdtheory._sampling import sample_indices
from sgdtheory._linalg import psd_sqrt
from sgdtheory._ziggurat import ziggurat_normal
from sgdtheory.simulate._engine import Stats
from sgdtheory.simulate.data import SAMPLING_RULES, Dataset, Online
from sgdtheory.simulate.minibatch import minibatch_sgd
from sgdtheory.simulate.optimizers import preset_optimizer

__all__ = ["linreg_sgd", "online_linreg_sgd", "SAMPLING_RULES", "squared_loss", "squared_loss_gradient", "gaussian_teacher",
           "noisy_dataset"]


def squared_loss(w, example):
    r"""Per-example squared loss of a linear model, :math:`\tfrac12(x^\top w - y)^2`, with
    ``example = (x, y)``; the loss both presets hand to :func:`~sgdtheory.simulate.minibatch_sgd`."""
    x, y = example
    return 0.5 * (x @ w - y) ** 2


def squared_loss_gradient(w, batch):
    r"""The batch gradient of :func:`squared_loss`, :math:`\frac1S X_B^\top(X_B w - y_B)`, written
    out (one matrix-vector product each way instead of per-example gradients); equal to
    ``jax.grad`` of the batch mean to rounding (tested)."""
    x, y = batch
    return (x @ w - y) @ x / x.shape[0]


def linreg_sgd(key, inputs, targets, lr, batch_size, *, steps: int, replicas: int, burn_in: int,
               sampling: str = "with_replacement", label_noise_var=0.0, weight_decay=0.0,
               momentum=0.0, optimizer: optax.GradientTransformation | None = None, init=None,
               dtype=jnp.float64, groups: int | None = None, record_every: int | None = None,
               record_replicas: int = 8, divergence_threshold: float = 1e8,
               on_divergence: str = "warn", histogram=None, exceedance=None,
               chunk_steps: int | None = None, progress=None, devices=None,
               statistics: str = "full") -> Stats:
    r"""Simulate minibatch SGD on the squared loss :math:`\frac1N\sum_i\tfrac12(x_i^\top w-y_i)^2`.

    Args:
      key: ``jax.random`` key.
      inputs: ``(N, D)`` design matrix.
      targets: ``(N,)`` targets.
      lr: learning rate (ignored when ``optimizer`` is given).
      batch_size: ``S`` (static).
      steps, replicas, burn_in: run length, replicas (multiple of 8), steps discarded (static).
      sampling: ``"with_replacement"``, ``"without_replacement"`` or ``"shuffle"`` (module docstring).
      label_noise_var: :math:`\sigma^2 \ge 0`: every sampled example's target gets fresh Gaussian
        noise, :math:`y_i + \sigma\epsilon`, each step, one independent draw per batch slot (a
        repeated index gets its own draw).  With ``label_noise_var > 0`` the batches come from the
        :class:`~sgdtheory.simulate.Online` source :func:`noisy_dataset`, which draws the indices
        by the same i.i.d. rule (``"shuffle"`` is not supported then: it needs a ``Dataset``'s
        epoch state).
      weight_decay: coupled L2 :math:`\gamma` (``optax.add_decayed_weights``).
      momentum: heavy-ball :math:`\mu` (optax convention).
      optimizer: any optax ``GradientTransformation`` replacing ``optax.sgd(lr, momentum)``.
      init: initial ``w`` (default 0: SGD then stays in the row space of ``X`` without weight decay).
      dtype: simulation dtype; ``groups``, ``record_every``, ``record_replicas``,
        ``divergence_threshold``, ``on_divergence``, ``histogram``, ``exceedance``,
        ``chunk_steps``, ``progress``, ``devices`` and ``statistics`` are as in
        :func:`sgdtheory.simulate.minibatch_sgd`.

    This preset is :func:`~sgdtheory.simulate.minibatch_sgd` with :func:`squared_loss` on
    ``Dataset((inputs, targets), batch_size, sampling)`` (with label noise: the ``Online`` source
    :func:`noisy_dataset`) and ``optax.chain(add_decayed_weights, sgd)``; ``lr``, ``momentum``,
    ``weight_decay``, ``label_noise_var`` and the data are arrays to the compiled program (a sweep
    does not recompile).

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``w``.

    Raises:
      ValueError: shape mismatch of inputs/targets, unknown ``sampling``, ``batch_size > N``
        without replacement or with ``"shuffle"``, negative or non-scalar ``label_noise_var``,
        label noise together with ``"shuffle"``.
    """
    _checks.check_key(key)
    x, y = _checks.check_dataset(inputs, targets)
    d = x.shape[1]
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    noisy = not _checks.is_zero(label_noise_var)
    opt = preset_optimizer(lr, momentum=momentum, weight_decay=weight_decay,
                           optimizer=optimizer)
    w0 = jnp.zeros(d) if init is None else _checks.check_vector("init", init, d)
    dtype = jnp.dtype(dtype)
    if noisy:
        data = Online(noisy_dataset(x, y, label_noise_var, sampling, batch_size, dtype=dtype),
                      batch_size, vectorized=True)
    else:
        data = Dataset((x, y), batch_size, sampling)
    return minibatch_sgd(
        key, squared_loss, w0.astype(dtype), data, opt,
        gradient=squared_loss_gradient if noisy else None, dtype=dtype, steps=steps, replicas=replicas, burn_in=burn_in, groups=groups,
        record_every=record_every, record_replicas=record_replicas,
        divergence_threshold=divergence_threshold, on_divergence=on_divergence,
        divergence_hint=None, histogram=histogram, exceedance=exceedance,
        chunk_steps=chunk_steps, progress=progress, devices=devices, statistics=statistics)


def online_linreg_sgd(key, input_cov, w_star, lr, batch_size, *, label_noise_var=0.0, steps: int,
                      replicas: int, burn_in: int, input_noise_cov=None, weight_decay=0.0,
                      momentum=0.0, optimizer: optax.GradientTransformation | None = None,
                      init=None, dtype=jnp.float64, groups: int | None = None,
                      record_every: int | None = None, record_replicas: int = 8,
                      divergence_threshold: float = 1e8, on_divergence: str = "warn",
                      histogram=None, exceedance=None, chunk_steps: int | None = None,
                      progress=None, devices=None, statistics: str = "full") -> Stats:
    r"""Simulate online minibatch SGD: fresh Gaussian examples every step.

    Each step every replica draws ``S`` examples :math:`x = A^{1/2}z`, :math:`y = w^{*\top}x +
    \sigma\epsilon`, trains on :math:`\tilde x = x + B^{1/2}z'` and applies
    :math:`\hat g = \frac1S\tilde X^\top(\tilde X w - y)` through optax (coupled weight decay first).

    Args:
      key: ``jax.random`` key.
      input_cov: ``(D, D)`` PSD :math:`A`.
      w_star: ``(D,)`` teacher weights :math:`u`.
      lr, batch_size: :math:`\lambda`, ``S`` (static).
      label_noise_var: :math:`\sigma^2 \ge 0` (default 0, as in the theory).
      steps, replicas, burn_in: as in :func:`linreg_sgd`.
      input_noise_cov: optional ``(D, D)`` PSD :math:`B`.
      weight_decay, momentum, optimizer, init, dtype, groups: as in :func:`linreg_sgd` (``init``
        defaults to ``w_star``), and so are record_every, record_replicas, divergence_threshold,
        on_divergence, histogram, exceedance, chunk_steps, progress, devices, statistics.

    This preset is :func:`~sgdtheory.simulate.minibatch_sgd` with :func:`squared_loss` on an
    :class:`~sgdtheory.simulate.Online` source (:func:`gaussian_teacher`).

    Raises:
      ValueError: shapes, non-PSD covariances, negative ``label_noise_var``.
    """
    _checks.check_key(key)
    a = _checks.square_matrix("input_cov", input_cov)
    _checks.check_psd("input_cov", a)
    d = a.shape[0]
    u = _checks.check_vector("w_star", w_star, d)
    if input_noise_cov is None:
        b = None
    else:
        b = _checks.square_matrix("input_noise_cov", input_noise_cov)
        if b.shape != a.shape:
            raise ValueError(f"input_noise_cov has shape {tuple(b.shape)}; expected {(d, d)}.")
        _checks.check_psd("input_noise_cov", b)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    if jnp.ndim(label_noise_var) != 0:
        raise ValueError("label_noise_var must be a scalar.")
    opt = preset_optimizer(lr, momentum=momentum, weight_decay=weight_decay,
                           optimizer=optimizer)
    w0 = u if init is None else _checks.check_vector("init", init, d)
    dtype = jnp.dtype(dtype)
    source = gaussian_teacher(a, u, label_noise_var, input_noise_cov=b, dtype=dtype)
    return minibatch_sgd(
        key, squared_loss, w0.astype(dtype), Online(source, batch_size, vectorized=True), opt,
        gradient=squared_loss_gradient,
        dtype=dtype, steps=steps, replicas=replicas, burn_in=burn_in, groups=groups,
        record_every=record_every, record_replicas=record_replicas,
        divergence_threshold=divergence_threshold, on_divergence=on_divergence,
        histogram=histogram, exceedance=exceedance, chunk_steps=chunk_steps, progress=progress,
        devices=devices, statistics=statistics)


def noisy_dataset(inputs, targets, label_noise_var, sampling="with_replacement", batch_size=1, *,
                  dtype=jnp.float64):
    r"""A vectorised :class:`~sgdtheory.simulate.Online` source: minibatches of a fixed dataset whose
    targets get fresh Gaussian label noise.

    ``sample(key, shape)``, ``shape = (..., S)``, draws independently for every leading index ``S``
    indices by ``sampling`` (``"with_replacement"``: i.i.d. uniform; ``"without_replacement"``: a
    uniform ``S``-subset, the ``S`` largest of ``N`` uniforms, as :class:`Dataset`) and returns
    ``(X[idx], y[idx] + sigma * z)``, ``z`` standard normal, one per slot.

    Raises:
      ValueError: unknown or ``"shuffle"`` sampling, ``batch_size > N`` without replacement.
    """
    x, y = _checks.check_dataset(inputs, targets)
    n = x.shape[0]
    s = _checks.check_int("batch_size", batch_size, 1)
    if sampling == "shuffle":
        raise ValueError("label noise needs an i.i.d. sampling rule ('with_replacement' or "
                         "'without_replacement'): 'shuffle' keeps epoch state, which an Online "
                         "source does not have.")
    if sampling not in SAMPLING_RULES:
        raise ValueError(f"sampling must be one of {SAMPLING_RULES}; got {sampling!r}.")
    if sampling == "without_replacement" and s > n:
        raise ValueError(f"batch_size={s} is larger than the dataset (N={n}): "
                         "'without_replacement' sampling needs batch_size <= N.")
    x, y = x.astype(dtype), y.astype(dtype)
    sigma = jnp.sqrt(jnp.asarray(label_noise_var, float)).astype(dtype)

    def sample(k, shape):
        shape = tuple(shape)
        k_idx, k_eps = jax.random.split(k)
        idx = sample_indices(k_idx, sampling, n, shape)
        eps = ziggurat_normal(k_eps, shape, dtype)
        return x[idx], y[idx] + sigma * eps

    return sample


def gaussian_teacher(input_cov, w_star, label_noise_var=0.0, *, input_noise_cov=None,
                     dtype=jnp.float64):
    r"""A vectorised :class:`~sgdtheory.simulate.Online` source of ``(x, y)`` examples.

    :math:`x = A^{1/2}z`, :math:`y = w^{*\top}x + \sigma\epsilon`, and the model is trained on
    :math:`\tilde x = x + B^{1/2}z'` when ``input_noise_cov`` :math:`B` is given.  Returns
    ``sample(key, shape) -> (x, y)`` with leading axes ``shape`` (one normal draw for all of them).
    """
    d = jnp.shape(input_cov)[0]
    a_half = psd_sqrt(jnp.asarray(input_cov, float)).astype(dtype)
    b_half = None if input_noise_cov is None else psd_sqrt(jnp.asarray(input_noise_cov, float)).astype(dtype)
    u = jnp.asarray(w_star, dtype)
    sigma = jnp.sqrt(jnp.asarray(label_noise_var, float)).astype(dtype)
    width = 2 * d + 1 if b_half is not None else d + 1

    def sample(k, shape):
        z = ziggurat_normal(k, tuple(shape) + (width,), dtype)
        x = z[..., :d] @ a_half
        y = x @ u + sigma * z[..., d]
        if b_half is not None:
            x = x + z[..., d + 1:] @ b_half
        return x, y

    return sample
