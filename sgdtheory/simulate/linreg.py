r"""Minibatch SGD on linear regression, many replicas at once: real sampling from a dataset, or online.

* :func:`linreg_sgd`: a fixed dataset ``(X, y)``; each step every replica draws its own minibatch of
  indices and applies :math:`\hat g = \frac1S X_B^\top(X_B w - y_B)` (plus coupled weight decay)
  through an optax optimizer.
* :func:`online_linreg_sgd`: fresh Gaussian samples every step, :math:`x\sim\mathcal N(0,A)`,
  :math:`y = w^{*\top}x + \varepsilon`, optionally trained on :math:`x + n`, :math:`n\sim\mathcal N(0,B)`.

Sampling rules (``sampling=``):

* ``"with_replacement"``: ``S`` i.i.d. uniform indices (``jax.random.randint``).
* ``"without_replacement"``: a uniform ``S``-subset, independently every step: the indices of the
  ``S`` largest of ``N`` i.i.d. uniforms (``lax.top_k``; exchangeability makes the subset uniform).
  Measured on the 2-core CPU (1024 replicas, ``S = 4``, per step): ``top_k`` 0.8 / 1.5 / 6.9 ms at
  ``N`` = 8 / 64 / 512, against 1.4 / 10 / 162 ms for ``argsort`` of uniforms and 1.3 / 8.4 / 170 ms
  for a vmapped ``jax.random.permutation``; ``randint`` (with replacement) is 0.4-0.6 ms. For
  ``N`` in the thousands with small ``S`` the ``O(N)`` cost per replica-step dominates.
* ``"shuffle"``: epoch-wise random reshuffling, what a data loader does: each epoch a fresh random
  permutation (argsort of uniforms) is cut into ``N // S`` consecutive batches; the last
  ``N mod S`` examples of the permutation are dropped (``drop_last=True``). Consecutive batches
  within an epoch are *dependent* (disjoint), so the process is periodic, not a Markov chain with
  i.i.d. batches: neither i.i.d. rule describes it exactly; statistics here average over all
  phases of the epoch. The permutation costs one ``argsort`` per epoch (amortised over ``N // S``
  steps). Measured difference (``docs/theory/linreg.md`` Sec. 4): the stationary variance is 0.3-0.9
  of the i.i.d.-subset value and the mean shifts by ``O(lr)``.

The simulator never imports the theory (DESIGN.md); :mod:`sgdtheory.crosscheck.linreg` pairs them.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax import lax

from sgdtheory import _checks
from sgdtheory._linalg import psd_sqrt
from sgdtheory.simulate._engine import Stats, check_run_args, scan_replicas, warn_divergence
from sgdtheory.simulate.optimizers import build_optimizer

__all__ = ["linreg_sgd", "online_linreg_sgd", "SAMPLING_RULES"]

SAMPLING_RULES = ("with_replacement", "without_replacement", "shuffle")


def _draw_indices(key, sampling, replicas, n, s):
    if sampling == "with_replacement":
        return jax.random.randint(key, (replicas, s), 0, n)
    u = jax.random.uniform(key, (replicas, n))
    return lax.top_k(u, s)[1]


def linreg_sgd(key, inputs, targets, lr, batch_size, *, steps: int, replicas: int, burn_in: int,
               sampling: str = "with_replacement", weight_decay=0.0, momentum=0.0,
               optimizer: optax.GradientTransformation | None = None, init=None,
               dtype=jnp.float64, groups: int | None = None, record_every: int | None = None,
               record_replicas: int = 8, divergence_threshold: float = 1e8) -> Stats:
    r"""Simulate minibatch SGD on the squared loss :math:`\frac1N\sum_i\tfrac12(x_i^\top w-y_i)^2`.

    Args:
      key: ``jax.random`` key.
      inputs: ``(N, D)`` design matrix.
      targets: ``(N,)`` targets.
      lr: learning rate (ignored when ``optimizer`` is given).
      batch_size: ``S`` (static).
      steps, replicas, burn_in: run length, replicas (multiple of 8), steps discarded (static).
      sampling: ``"with_replacement"``, ``"without_replacement"`` or ``"shuffle"`` (module docstring).
      weight_decay: coupled L2 :math:`\gamma` (``optax.add_decayed_weights``).
      momentum: heavy-ball :math:`\mu` (optax convention).
      optimizer: any optax ``GradientTransformation`` replacing ``optax.sgd(lr, momentum)``.
      init: initial ``w`` (default 0: SGD then stays in the row space of ``X`` without weight decay).
      dtype, groups, record_every, record_replicas, divergence_threshold: as in
        :func:`sgdtheory.simulate.quadratic_sgd`.

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``w``.

    Raises:
      ValueError: shape mismatch of inputs/targets, unknown ``sampling``, ``batch_size > N``
        without replacement or with ``"shuffle"``.
    """
    x, y = _checks.check_dataset(inputs, targets)
    n, d = x.shape
    s = _checks.check_int("batch_size", batch_size, 1)
    if sampling not in SAMPLING_RULES:
        raise ValueError(f"sampling must be one of {SAMPLING_RULES}; got {sampling!r}.")
    if sampling != "with_replacement" and s > n:
        raise ValueError(
            f"batch_size={s} is larger than the dataset (N={n}): {sampling!r} sampling needs "
            "batch_size <= N.")
    if optimizer is None:
        if lr is None or jnp.ndim(lr) != 0:
            raise ValueError("lr must be a scalar (or pass an optax optimizer).")
        _checks.check_positive("lr", lr)
        _checks.check_momentum(momentum)
    w0 = jnp.zeros(d) if init is None else _checks.check_vector("init", init, d)
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    opt = build_optimizer(lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer)
    stats = _simulate_dataset(key, x, y, w0, opt=opt, s=s, sampling=sampling, steps=steps,
                              replicas=replicas, burn_in=burn_in, groups=groups,
                              record_every=record_every, record_replicas=record_replicas,
                              threshold=float(divergence_threshold), dtype=jnp.dtype(dtype))
    warn_divergence(stats, divergence_threshold)
    return stats


@partial(jax.jit, static_argnames=("opt", "s", "sampling", "steps", "replicas", "burn_in", "groups",
                                   "record_every", "record_replicas", "threshold", "dtype"))
def _simulate_dataset(key, x, y, w0, *, opt, s, sampling, steps, replicas, burn_in, groups,
                      record_every, record_replicas, threshold, dtype):
    n, d = x.shape
    x = x.astype(dtype)
    y = y.astype(dtype)
    nb = n // s  # batches per epoch (shuffle)

    def init_fn(k):
        w = jnp.broadcast_to(w0.astype(dtype), (replicas, d))
        perm = jnp.argsort(jax.random.uniform(k, (replicas, n)), axis=1)
        return w, jax.vmap(opt.init)(w), perm, jnp.zeros((), jnp.int32)

    def step_fn(k, state):
        w, opt_state, perm, pos = state
        if sampling == "shuffle":
            perm = lax.cond(pos == 0,
                            lambda: jnp.argsort(jax.random.uniform(k, (replicas, n)), axis=1),
                            lambda: perm)
            idx = lax.dynamic_slice_in_dim(perm, pos * s, s, axis=1)
            pos = (pos + 1) % nb
        else:
            idx = _draw_indices(k, sampling, replicas, n, s)
        xb = x[idx]  # (R, S, D)
        res = jnp.einsum("rsd,rd->rs", xb, w) - y[idx]
        g = jnp.einsum("rs,rsd->rd", res, xb) / s
        updates, opt_state = jax.vmap(opt.update)(g, opt_state, w)
        return optax.apply_updates(w, updates), opt_state, perm, pos

    return scan_replicas(key, init_fn, step_fn, lambda st: st[0], steps=steps, replicas=replicas,
                         burn_in=burn_in, groups=groups, record_every=record_every,
                         record_replicas=record_replicas, divergence_threshold=threshold)


def online_linreg_sgd(key, input_cov, w_star, lr, batch_size, *, label_noise_var, steps: int,
                      replicas: int, burn_in: int, input_noise_cov=None, weight_decay=0.0,
                      momentum=0.0, optimizer: optax.GradientTransformation | None = None,
                      init=None, dtype=jnp.float64, groups: int | None = None,
                      record_every: int | None = None, record_replicas: int = 8,
                      divergence_threshold: float = 1e8) -> Stats:
    r"""Simulate online minibatch SGD: fresh Gaussian examples every step.

    Each step every replica draws ``S`` examples :math:`x = A^{1/2}z`, :math:`y = w^{*\top}x +
    \sigma\epsilon`, trains on :math:`\tilde x = x + B^{1/2}z'` and applies
    :math:`\hat g = \frac1S\tilde X^\top(\tilde X w - y)` through optax (coupled weight decay first).

    Args:
      key: ``jax.random`` key.
      input_cov: ``(D, D)`` PSD :math:`A`.
      w_star: ``(D,)`` teacher weights :math:`u`.
      lr, batch_size: :math:`\lambda`, ``S`` (static).
      label_noise_var: :math:`\sigma^2 \ge 0`.
      steps, replicas, burn_in: as in :func:`linreg_sgd`.
      input_noise_cov: optional ``(D, D)`` PSD :math:`B`.
      weight_decay, momentum, optimizer, init, dtype, groups: as in :func:`linreg_sgd` (``init``
        defaults to ``w_star``), and so are record_every, record_replicas, divergence_threshold.

    Raises:
      ValueError: shapes, non-PSD covariances, negative ``label_noise_var``.
    """
    a = _checks.square_matrix("input_cov", input_cov)
    _checks.check_psd("input_cov", a)
    d = a.shape[0]
    u = _checks.check_vector("w_star", w_star, d)
    if input_noise_cov is None:
        b = jnp.zeros_like(a)
    else:
        b = _checks.square_matrix("input_noise_cov", input_noise_cov)
        if b.shape != a.shape:
            raise ValueError(f"input_noise_cov has shape {tuple(b.shape)}; expected {(d, d)}.")
        _checks.check_psd("input_noise_cov", b)
    _checks.check_nonnegative("label_noise_var", label_noise_var)
    s = _checks.check_int("batch_size", batch_size, 1)
    if optimizer is None:
        if lr is None or jnp.ndim(lr) != 0:
            raise ValueError("lr must be a scalar (or pass an optax optimizer).")
        _checks.check_positive("lr", lr)
        _checks.check_momentum(momentum)
    w0 = u if init is None else _checks.check_vector("init", init, d)
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    opt = build_optimizer(lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer)
    stats = _simulate_online(key, psd_sqrt(a), psd_sqrt(b), u, w0,
                             jnp.sqrt(jnp.asarray(label_noise_var, float)), opt=opt, s=s,
                             noisy=input_noise_cov is not None, steps=steps, replicas=replicas,
                             burn_in=burn_in, groups=groups, record_every=record_every,
                             record_replicas=record_replicas,
                             threshold=float(divergence_threshold), dtype=jnp.dtype(dtype))
    warn_divergence(stats, divergence_threshold)
    return stats


@partial(jax.jit, static_argnames=("opt", "s", "noisy", "steps", "replicas", "burn_in", "groups",
                                   "record_every", "record_replicas", "threshold", "dtype"))
def _simulate_online(key, a_half, b_half, u, w0, sigma, *, opt, s, noisy, steps, replicas, burn_in,
                     groups, record_every, record_replicas, threshold, dtype):
    d = u.shape[0]
    a_half = a_half.astype(dtype)
    b_half = b_half.astype(dtype)
    u = u.astype(dtype)

    def init_fn(_k):
        w = jnp.broadcast_to(w0.astype(dtype), (replicas, d))
        return w, jax.vmap(opt.init)(w)

    def step_fn(k, state):
        w, opt_state = state
        z = jax.random.normal(k, (replicas, s, (2 * d + 1) if noisy else (d + 1)), dtype)
        x = z[..., :d] @ a_half
        y = x @ u + sigma.astype(dtype) * z[..., d]
        if noisy:
            x = x + z[..., d + 1:] @ b_half
        res = jnp.einsum("rsd,rd->rs", x, w) - y
        g = jnp.einsum("rs,rsd->rd", res, x) / s
        updates, opt_state = jax.vmap(opt.update)(g, opt_state, w)
        return optax.apply_updates(w, updates), opt_state

    return scan_replicas(key, init_fn, step_fn, lambda st: st[0], steps=steps, replicas=replicas,
                         burn_in=burn_in, groups=groups, record_every=record_every,
                         record_replicas=record_replicas, divergence_threshold=threshold)
