r"""Discrete-time SGD on a quadratic with additive gradient noise, many replicas at once.

Each step every replica sees :math:`\hat g = H(w - w^*) + \xi`, :math:`\xi = L z`,
:math:`L L^\top = C`, and applies an optax update (``optax.sgd(lr, momentum, nesterov)`` by default,
after coupled weight decay and an optional fixed preconditioner).  This is the simulation partner
of :mod:`sgdtheory.quadratic`; it never imports it (DESIGN.md).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import _checks
from sgdtheory._linalg import psd_sqrt
from sgdtheory.simulate._engine import Stats, check_run_args, scan_replicas, warn_divergence
from sgdtheory.simulate.optimizers import build_optimizer

__all__ = ["quadratic_sgd", "draw_noise", "NOISE_KINDS"]

NOISE_KINDS = ("gaussian", "rademacher")


def draw_noise(key, shape, kind: str, dtype):
    r"""Standardised noise :math:`z` with :math:`\mathbb E z = 0`, :math:`\operatorname{Cov} z = I`.

    ``"gaussian"``: standard normal.  ``"rademacher"``: independent :math:`\pm 1` signs -- the same
    covariance (so :math:`\xi = L z` has covariance :math:`C` exactly), far cheaper random bits and
    a smaller fourth moment, hence smaller standard errors on second moments.  It is valid for
    predictions that depend only on the noise covariance (means and covariances of *linear*
    dynamics, i.e. everything in :mod:`sgdtheory.quadratic`), **not** for tails, histograms or
    escape times, which depend on the whole noise law.
    """
    if kind == "gaussian":
        return jax.random.normal(key, shape, dtype)
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    raise ValueError(f"noise must be one of {NOISE_KINDS}; got {kind!r}.")


def quadratic_sgd(
    key,
    hessian,
    noise_cov,
    lr,
    *,
    steps: int,
    replicas: int,
    burn_in: int,
    momentum=0.0,
    nesterov: bool = False,
    weight_decay=0.0,
    preconditioner=None,
    sam_radius=0.0,
    optimizer: optax.GradientTransformation | None = None,
    w_star=None,
    init=None,
    noise: str = "gaussian",
    dtype=jnp.float64,
    groups: int | None = None,
    record_every: int | None = None,
    record_replicas: int = 8,
    divergence_threshold: float = 1e8,
) -> Stats:
    r"""Simulate discrete-time SGD on :math:`L(w) = \tfrac12 (w-w^*)^\top H (w-w^*)` with noise :math:`C`.

    Args:
      key: a ``jax.random`` key (the only source of randomness).
      hessian: ``(D, D)`` symmetric :math:`H`.
      noise_cov: ``(D, D)`` PSD covariance :math:`C` of the per-step gradient noise.
      lr: learning rate :math:`\lambda` (ignored when ``optimizer`` is given; may then be ``None``).
      steps, replicas, burn_in: run length, number of independent replicas, steps discarded
        (static: changing them recompiles).  ``replicas`` must split into >= 8 equal groups.
      momentum, nesterov: heavy-ball momentum in the optax convention, Nesterov variant.
      weight_decay: coupled L2 :math:`\gamma` (``optax.add_decayed_weights``), may be negative.
      preconditioner: optional fixed ``(D, D)`` SPD :math:`P` (update :math:`-\lambda P m`).
      sam_radius: unnormalized SAM radius :math:`\rho`: the gradient is taken at
        :math:`w + \rho P\hat g(w)` with the *same* noise draw (same minibatch).
      optimizer: any ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-2)``) replacing
        ``optax.sgd(lr, momentum, nesterov)``; weight decay and preconditioner still chain first.
      w_star: the minimiser :math:`w^*` (default 0).
      init: initial ``w`` for every replica (default :math:`w^*`); buffers start at optax's init.
      noise: ``"gaussian"`` or ``"rademacher"`` (see :func:`draw_noise` for when the latter is valid).
      dtype: simulation dtype (``jnp.float32`` is faster; statistics still accumulate in float64).
      groups, record_every, record_replicas, divergence_threshold: see
        :func:`sgdtheory.simulate.run_replicas`.

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``w`` (mean, covariance, standard errors, divergence).

    Example:
      >>> import jax, jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.1])); C = jnp.eye(2)
      >>> s = st.simulate.quadratic_sgd(jax.random.key(0), H, C, 0.5, steps=2000,
      ...                               replicas=1024, burn_in=500)
      >>> s.cov.shape
      (2, 2)
    """
    h = _checks.square_matrix("hessian", hessian)
    _checks.check_symmetric("hessian", h)
    d = h.shape[0]
    c = _checks.square_matrix("noise_cov", noise_cov)
    if c.shape != h.shape:
        raise ValueError(f"noise_cov has shape {tuple(c.shape)} but hessian has {tuple(h.shape)}.")
    _checks.check_psd("noise_cov", c)
    if optimizer is None:
        if lr is None or jnp.ndim(lr) != 0:
            raise ValueError("lr must be a scalar (or pass an optax optimizer).")
        _checks.check_positive("lr", lr)
        _checks.check_momentum(momentum)
    _checks.check_nonnegative("sam_radius", sam_radius)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}; got {noise!r}.")
    if preconditioner is not None:
        p = _checks.square_matrix("preconditioner", preconditioner)
        if p.shape != h.shape:
            raise ValueError(f"preconditioner has shape {tuple(p.shape)}; expected {(d, d)}.")
        _checks.check_spd("preconditioner", p)
    ws = jnp.zeros(d) if w_star is None else _checks.check_vector("w_star", w_star, d)
    w0 = ws if init is None else _checks.check_vector("init", init, d)
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    opt = build_optimizer(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                          preconditioner=preconditioner, optimizer=optimizer)
    use_sam = not (isinstance(sam_radius, (int, float)) and sam_radius == 0)
    stats = _simulate(key, h, c, ws, w0, sam_radius, preconditioner, opt=opt, use_sam=use_sam,
                      steps=steps, replicas=replicas, burn_in=burn_in, groups=groups,
                      record_every=record_every, record_replicas=record_replicas,
                      threshold=float(divergence_threshold), noise=noise, dtype=jnp.dtype(dtype))
    warn_divergence(stats, divergence_threshold)
    return stats


@partial(jax.jit, static_argnames=("opt", "use_sam", "steps", "replicas", "burn_in", "groups",
                                   "record_every", "record_replicas", "threshold", "noise", "dtype"))
def _simulate(key, h, c, w_star, w0, sam_radius, preconditioner, *, opt, use_sam, steps, replicas,
              burn_in, groups, record_every, record_replicas, threshold, noise, dtype):
    d = h.shape[0]
    h = h.astype(dtype)
    chol = psd_sqrt(c).astype(dtype)
    w_star = w_star.astype(dtype)
    p = None if preconditioner is None else jnp.asarray(preconditioner, dtype)

    def init_fn(_key):
        w = jnp.broadcast_to(w0.astype(dtype), (replicas, d))
        return w, jax.vmap(opt.init)(w)

    def step_fn(k, state):
        w, opt_state = state
        xi = draw_noise(k, (replicas, d), noise, dtype) @ chol  # chol symmetric
        g = (w - w_star[None, :]) @ h + xi
        if use_sam:
            ascent = g if p is None else g @ p
            g = (w + sam_radius * ascent - w_star[None, :]) @ h + xi
        updates, opt_state = jax.vmap(opt.update)(g, opt_state, w)
        return optax.apply_updates(w, updates), opt_state

    def observe_fn(state):
        return state[0]

    return scan_replicas(key, init_fn, step_fn, observe_fn, steps=steps, replicas=replicas,
                         burn_in=burn_in, groups=groups, record_every=record_every,
                         record_replicas=record_replicas, divergence_threshold=threshold)
