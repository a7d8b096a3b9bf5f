r"""Discrete-time SGD on a quadratic with additive gradient noise, many replicas at once.

Each step every replica sees :math:`\hat g = H(w - w^*) + \xi`, :math:`\xi = L z`,
:math:`L L^\top = C`, and applies an optax update (``optax.sgd(lr, momentum, nesterov)`` by default,
after coupled weight decay and an optional fixed preconditioner).  This is the simulation partner
of :mod:`sgdtheory.quadratic`; it never imports it (DESIGN.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import math
import warnings

import jax
import jax.numpy as jnp
import optax

from sgdtheory import _checks
from sgdtheory._linalg import psd_sqrt
from sgdtheory.simulate import _engine
from sgdtheory.simulate._engine import Stats, check_run_args, scan_replicas, warn_divergence
from sgdtheory.simulate.optimizers import build_optimizer

__all__ = ["quadratic_sgd", "draw_noise", "NOISE_KINDS", "PRNG_IMPLS", "NoiseLawWarning"]

NOISE_KINDS = ("gaussian", "rademacher")
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


class NoiseLawWarning(UserWarning):
    """A non-Gaussian noise law was asked for where the result depends on more than its covariance."""


def _sign_bits(key, shape, dtype):
    """Rademacher signs from packed random bits: one 32-bit word gives 32 signs (32x fewer random
    bits than ``jax.random.rademacher``, which spends a uniform draw per sign)."""
    total = math.prod(shape)
    words = jax.random.bits(key, (-(-total // 32),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)[None, :]) & jnp.uint32(1)
    bits = bits.reshape(-1)[:total].reshape(shape)
    return (1 - 2 * bits.astype(jnp.int32)).astype(dtype)


def _auto_block(noise: str) -> int:
    """Steps of noise drawn at once.  Measured on a 2-core CPU (docs/performance.md): Gaussian
    draws cost per element, and blocks of 8 were 10-25 % slower than 1 at D = 10; packed
    Rademacher bits need blocks to fill their 32-bit words."""
    return 8 if noise == "rademacher" else 1


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
    noise_dtype=None,
    block: int | None = None,
    unroll: int = 1,
    prng_impl: str | None = None,
    devices=None,
    chunk_steps: int | None = None,
    progress=None,
    stop_on_divergence: bool = False,
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
      noise_dtype: dtype the standard noise is drawn (and multiplied by :math:`C^{1/2}`) in before
        it is cast to ``dtype``; ``jnp.float32`` noise into a float64 state is ~1.3x faster on CPU
        and changes :math:`C` by a relative ~1e-7 (default: ``dtype``).
      block: steps of noise drawn at once and statistics merged at once (default: 1 for
        Gaussian noise, where blocks were measured slower on CPU; 8 for Rademacher).  Static.
      unroll: ``lax.scan`` unroll of the steps inside a block.  Static.
      prng_impl: ``"threefry2x32"``, ``"rbg"`` or ``"unsafe_rbg"``: derive a key of that
        implementation from ``key`` (default: use ``key`` as given).  Results under ``rbg`` are not
        guaranteed equal across device counts.
      devices: shard the replicas across devices (``"all"``, an int or a list); same results for
        the same key whatever the device count (see :func:`~sgdtheory.simulate.run_replicas`).
      chunk_steps, progress, stop_on_divergence: run in chunks with a host ``progress(steps_done,
        steps, stats)`` call between chunks and an optional early stop after a chunk with a
        diverged replica; the statistics equal those of one long scan.  ``chunk_steps`` must be
        a multiple of ``block``.

    Validity of ``noise="rademacher"``: it has exactly the covariance :math:`C`, so every first-
    and second-moment prediction of these *linear* dynamics (means, covariances, losses,
    autocorrelations: all of :mod:`sgdtheory.quadratic`) is unchanged, and its smaller fourth
    moment and far cheaper random bits reach a given standard error sooner.  It is **not** valid
    for tails, histograms, escape times, or any optimizer that is nonlinear in the gradient (a
    custom ``optimizer=`` such as Adam): a :class:`NoiseLawWarning` is raised for ``optimizer=``
    and for ``record_every=`` (trajectories are used for distributions).

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
    if noise == "rademacher":
        if optimizer is not None:
            warnings.warn(
                "noise='rademacher' matches only the covariance of Gaussian noise; with a custom "
                "optax optimizer (nonlinear in the gradient) the moments depend on the whole noise "
                "law, so the results need not match Gaussian-noise theory.", NoiseLawWarning,
                stacklevel=2)
        if record_every is not None:
            warnings.warn(
                "noise='rademacher' is valid for first and second moments only; the recorded "
                "trajectory's distribution (tails, histograms, escape) is not that of Gaussian "
                "noise.", NoiseLawWarning, stacklevel=2)
    if prng_impl is not None and prng_impl not in PRNG_IMPLS:
        raise ValueError(f"prng_impl must be one of {PRNG_IMPLS}; got {prng_impl!r}.")
    if preconditioner is not None:
        p = _checks.square_matrix("preconditioner", preconditioner)
        if p.shape != h.shape:
            raise ValueError(f"preconditioner has shape {tuple(p.shape)}; expected {(d, d)}.")
        _checks.check_spd("preconditioner", p)
    ws = jnp.zeros(d) if w_star is None else _checks.check_vector("w_star", w_star, d)
    w0 = ws if init is None else _checks.check_vector("init", init, d)
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    if optimizer is None:
        # Hyper-parameters are traced arguments (a sweep over lr does not recompile); only the
        # structure of the optax chain is static.
        opt = _SgdSpec(not (isinstance(momentum, (int, float)) and momentum == 0), bool(nesterov),
                       not (isinstance(weight_decay, (int, float)) and weight_decay == 0))
        hyper = (jnp.asarray(lr, float), jnp.asarray(momentum, float), jnp.asarray(weight_decay, float))
    else:
        opt = build_optimizer(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                              preconditioner=preconditioner, optimizer=optimizer)
        hyper = None
    use_sam = not (isinstance(sam_radius, (int, float)) and sam_radius == 0)
    block = _auto_block(noise) if block is None else _checks.check_int("block", block, 1)
    unroll = _checks.check_int("unroll", unroll, 1)
    dtype = jnp.dtype(dtype)
    cfg = _Config(opt=opt, use_sam=use_sam, replicas=replicas, burn_in=burn_in, groups=groups,
                  threshold=float(divergence_threshold), noise=noise, dtype=dtype,
                  noise_dtype=dtype if noise_dtype is None else jnp.dtype(noise_dtype),
                  block=block, unroll=unroll, prng_impl=prng_impl,
                  devices=None if devices is None else _devices_key(devices))
    static = dict(cfg=cfg)
    args = (key, h, c, ws, w0, sam_radius, preconditioner, hyper)
    if chunk_steps is None:
        if progress is not None or stop_on_divergence:
            raise ValueError("progress= and stop_on_divergence= need chunk_steps=.")
        stats = _simulate_cfg(*args, steps=steps, record_every=record_every,
                          record_replicas=record_replicas, **static)
    else:
        if record_every is not None:
            raise ValueError("record_every= is not supported with chunk_steps=.")
        carry = _start(*args, **static)
        stats = _engine.run_chunked(
            carry, lambda cr, t0, n: _advance(cr, t0, *args[1:], length=n, cfg=cfg),
            steps=steps, replicas=replicas, burn_in=burn_in, chunk_steps=chunk_steps, block=block,
            progress=progress, stop_on_divergence=stop_on_divergence)
    warn_divergence(stats, divergence_threshold)
    return stats


def _devices_key(devices):
    """A hashable (static) form of ``devices``."""
    if isinstance(devices, (str, int)):
        return devices
    return tuple(devices)


class _SgdSpec(NamedTuple):
    """Static structure of the default optax chain (its hyper-parameters are traced)."""

    has_momentum: bool
    nesterov: bool
    has_weight_decay: bool


class _Config(NamedTuple):
    """Static configuration of one compiled simulator (hashable: a jit static argument)."""

    opt: Any
    use_sam: bool
    replicas: int
    burn_in: int
    groups: int
    threshold: float
    noise: str
    dtype: Any
    noise_dtype: Any
    block: int
    unroll: int
    prng_impl: str | None
    devices: Any


def _model(key, h, c, w_star, w0, sam_radius, preconditioner, hyper, cfg: _Config):
    """The quadratic model's (key, init_fn, step_fn, noise_fn, observe_fn) for the engine."""
    replicas, noise, dtype, noise_dtype = cfg.replicas, cfg.noise, cfg.dtype, cfg.noise_dtype
    opt, use_sam = cfg.opt, cfg.use_sam
    if isinstance(opt, _SgdSpec):  # the default chain, hyper-parameters traced
        has_mom, nesterov, has_wd = opt
        lr, momentum, weight_decay = hyper
        opt = build_optimizer(lr, momentum=momentum if has_mom else 0.0, nesterov=nesterov,
                              weight_decay=weight_decay if has_wd else 0.0,
                              preconditioner=preconditioner)
    d = h.shape[0]
    h = h.astype(dtype)
    chol = psd_sqrt(c).astype(noise_dtype)
    w_star = w_star.astype(dtype)
    p = None if preconditioner is None else jnp.asarray(preconditioner, dtype)
    if cfg.prng_impl is not None:
        n_words = {"threefry2x32": 2, "rbg": 4, "unsafe_rbg": 4}[cfg.prng_impl]
        key = jax.random.wrap_key_data(jax.random.bits(key, (n_words,), jnp.uint32),
                                       impl=cfg.prng_impl)

    def init_fn(_key):
        w = jnp.broadcast_to(w0.astype(dtype), (replicas, d))
        return w, jax.vmap(opt.init)(w)

    def noise_fn(k, n):
        # One draw and one (n R, D) x (D, D) product for n steps; chol is symmetric.
        if noise == "gaussian":
            z = jax.random.normal(k, (n, replicas, d), noise_dtype)
        else:
            z = _sign_bits(k, (n, replicas, d), noise_dtype)
        return (z @ chol).astype(dtype)

    def step_fn(xi, state):
        w, opt_state = state
        g = (w - w_star[None, :]) @ h + xi
        if use_sam:
            ascent = g if p is None else g @ p
            g = (w + sam_radius * ascent - w_star[None, :]) @ h + xi
        updates, opt_state = jax.vmap(opt.update)(g, opt_state, w)
        return optax.apply_updates(w, updates), opt_state

    def observe_fn(state):
        return state[0]

    return key, init_fn, step_fn, noise_fn, observe_fn


def _engine_opts(cfg: _Config):
    return dict(replicas=cfg.replicas, burn_in=cfg.burn_in, groups=cfg.groups,
                divergence_threshold=cfg.threshold, block=cfg.block, unroll=cfg.unroll,
                devices=cfg.devices)


@partial(jax.jit, static_argnames=("opt", "use_sam", "steps", "replicas", "burn_in", "groups",
                                   "record_every", "record_replicas", "threshold", "noise", "dtype"))
def _simulate(key, h, c, w_star, w0, sam_radius, preconditioner, *, opt, use_sam, steps, replicas,
              burn_in, groups, record_every, record_replicas, threshold, noise, dtype):
    """The original private entry point (kept for callers that lower it), default fast options."""
    cfg = _Config(opt=opt, use_sam=use_sam, replicas=replicas, burn_in=burn_in, groups=groups,
                  threshold=threshold, noise=noise, dtype=dtype, noise_dtype=dtype,
                  block=_auto_block(noise), unroll=1, prng_impl=None, devices=None)
    return _simulate_cfg(key, h, c, w_star, w0, sam_radius, preconditioner, None, cfg=cfg, steps=steps,
                         record_every=record_every, record_replicas=record_replicas)


@partial(jax.jit, static_argnames=("cfg", "steps", "record_every", "record_replicas"))
def _simulate_cfg(key, h, c, w_star, w0, sam_radius, preconditioner, hyper, *, cfg, steps, record_every,
              record_replicas):
    key, init_fn, step_fn, noise_fn, observe_fn = _model(key, h, c, w_star, w0, sam_radius,
                                                         preconditioner, hyper, cfg)
    return scan_replicas(key, init_fn, step_fn, observe_fn, steps=steps,
                         record_every=record_every, record_replicas=record_replicas,
                         noise_fn=noise_fn, **_engine_opts(cfg))


@partial(jax.jit, static_argnames=("cfg",))
def _start(key, h, c, w_star, w0, sam_radius, preconditioner, hyper, *, cfg):
    key, init_fn, _, _, observe_fn = _model(key, h, c, w_star, w0, sam_radius, preconditioner,
                                            hyper, cfg)
    return _engine.init_carry(key, init_fn, observe_fn, **_engine_opts(cfg))


@partial(jax.jit, static_argnames=("cfg", "length"))
def _advance(carry, t0, h, c, w_star, w0, sam_radius, preconditioner, hyper, *, cfg, length):
    # carry.key is already the run key (converted to cfg.prng_impl by _start).
    _, _, step_fn, noise_fn, observe_fn = _model(carry.key, h, c, w_star, w0, sam_radius,
                                                 preconditioner, hyper,
                                                 cfg._replace(prng_impl=None))
    return _engine.advance(carry, t0, length, step_fn, observe_fn, noise_fn=noise_fn,
                           **_engine_opts(cfg))
