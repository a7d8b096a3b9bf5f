r"""Discrete-time SGD on a quadratic with additive gradient noise, many replicas at once.

Each step every replica sees :math:`\hat g = H(w - w^*) + \xi`, :math:`\xi = L z`,
:math:`L L^\top = C`, and applies an optax update (``optax.sgd(lr, momentum, nesterov)`` by default,
after coupled weight decay and an optional fixed preconditioner).  This is the simulation partner
of :mod:`sgdtheory.quadratic`; it never imports it (the crosscheck pairs them).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import _checks
from sgdtheory._linalg import psd_sqrt
from sgdtheory._ziggurat import ziggurat_normal
from sgdtheory.simulate._engine import Stats, warn_divergence
from sgdtheory.simulate.data import Online
from sgdtheory.simulate.minibatch import minibatch_sgd
from sgdtheory.simulate.optimizers import preset_optimizer

__all__ = ["quadratic_sgd", "draw_noise", "NOISE_KINDS", "PRNG_IMPLS", "NoiseLawWarning"]

#: Noise laws ``quadratic_sgd(noise=...)`` accepts; every kind with "gaussian" in its name is exactly
#: Gaussian in law (they differ only in the stream and the cost).
NOISE_KINDS = ("gaussian", "gaussian_erfinv", "rademacher")
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
    """Steps of noise drawn at once.  Measured on a 2-core CPU (docs/performance.md): the ziggurat
    and packed Rademacher bits gain from blocks of 8 (one row-mask pass and one (8R x D)(D x D)
    product per block; packed words need blocks to fill); ``jax.random.normal`` costs per element
    and was 10-25 % slower in blocks of 8 at D = 10."""
    return 1 if noise == "gaussian_erfinv" else 8


def draw_noise(key, shape, kind: str, dtype):
    r"""Standardised noise :math:`z` with :math:`\mathbb E z = 0`, :math:`\operatorname{Cov} z = I`.

    * ``"gaussian"`` (the default): exact standard normals from a vectorised ziggurat over JAX's
      threefry bits (:func:`ziggurat_normal`; ~5x cheaper than ``jax.random.normal`` per float64
      draw on CPU).
    * ``"gaussian_erfinv"``: ``jax.random.normal`` (inverse-CDF transform) -- the same law, another
      stream; the default before the ziggurat, kept to reproduce earlier runs.
    * ``"rademacher"``: independent :math:`\pm 1` signs -- the same covariance (so :math:`\xi = L z`
      has covariance :math:`C` exactly), far cheaper random bits and a smaller fourth moment, hence
      smaller standard errors on second moments.  It is valid for predictions that depend only on
      the noise covariance (means and covariances of *linear* dynamics, i.e. everything in
      :mod:`sgdtheory.quadratic`), **not** for tails, histograms or escape times, which depend on
      the whole noise law.  The signs come from packed random bits, 32 per 32-bit word.

    These are the draws :func:`quadratic_sgd` makes, one call per block of steps.
    """
    if kind == "gaussian":
        return ziggurat_normal(key, tuple(shape), dtype)
    if kind == "gaussian_erfinv":
        return jax.random.normal(key, shape, dtype)
    if kind == "rademacher":
        return _sign_bits(key, tuple(shape), dtype)
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
    histogram=None,
    exceedance=None,
    first_passage=None,
    on_divergence: str = "warn",
    statistics: str = "full",
) -> Stats:
    r"""Simulate discrete-time SGD on :math:`L(w) = \tfrac12 (w-w^*)^\top H (w-w^*)` with noise :math:`C`.

    Args:
      key: a ``jax.random`` key (the only source of randomness).
      hessian: ``(D, D)`` symmetric :math:`H`.
      noise_cov: ``(D, D)`` PSD covariance :math:`C` of the per-step gradient noise.
      lr: learning rate :math:`\lambda`; must be ``None`` when ``optimizer`` is given (the optax
        optimizer carries its own learning rate).
      steps, replicas, burn_in: run length, number of independent replicas, steps discarded
        (static: changing them recompiles).  ``replicas`` must split into >= 8 equal groups.
      momentum, nesterov: heavy-ball momentum in the optax convention, Nesterov variant.
      weight_decay: coupled L2 :math:`\gamma`, part of the loss (so the SAM ascent sees it), may be
        negative.
      preconditioner: optional fixed ``(D, D)`` SPD :math:`P` (update :math:`-\lambda P m`).
      sam_radius: unnormalized SAM radius :math:`\rho`: the gradient is taken at
        :math:`w + \rho P\hat g(w)` with the *same* noise draw (same minibatch).
      optimizer: any ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-2)``) replacing
        ``optax.sgd(lr, momentum, nesterov)`` (then ``lr=None``, no ``momentum``/``nesterov``);
        weight decay and preconditioner still apply first.
      w_star: the minimiser :math:`w^*` (default 0).
      init: initial ``w`` for every replica (default :math:`w^*`); buffers start at optax's init.
      noise: one of :data:`NOISE_KINDS`: ``"gaussian"`` (exact, ziggurat), ``"gaussian_erfinv"``
        (``jax.random.normal``) or ``"rademacher"`` (see :func:`draw_noise` for when it is valid).
      dtype: simulation dtype (``jnp.float32`` is faster; statistics still accumulate in float64).
      groups, record_every, record_replicas, divergence_threshold: see
        :func:`sgdtheory.simulate.run_replicas`.
      noise_dtype: dtype the standard noise is drawn (and multiplied by :math:`C^{1/2}`) in before
        it is cast to ``dtype``; ``jnp.float32`` noise into a float64 state changes :math:`C` by a
        relative ~1e-7 and gains little with the default ziggurat (~1 % on a 2-core CPU; ~1.3x
        with ``"gaussian_erfinv"``; docs/performance.md) (default: ``dtype``).
      block: steps of noise drawn at once and statistics merged at once (default: 8, or 1 for
        ``"gaussian_erfinv"``, where blocks were measured slower on CPU, and where ``chunk_steps``
        is not a multiple of 8).  Static.
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
      histogram, exceedance, first_passage: optional streamed statistics of ``w``
        (:func:`~sgdtheory.simulate.histogram` etc.).
      on_divergence: ``"warn"`` (default; the message names the stability bound for the default
        optimizer), ``"raise"`` or ``"ignore"``.
      statistics: ``"full"`` (default), ``"diagonal"`` (``cov`` and ``cov_stderr`` are the ``(D,)``
        variances and their standard errors; D instead of D^2 numbers per step) or ``"mean"``
        (``cov`` is ``None``).

    This preset is :func:`~sgdtheory.simulate.minibatch_sgd` with an online source of noise
    vectors :math:`\xi = C^{1/2}z` (a batch of one) and the gradient
    :math:`H(w - w^*) + \gamma w + \xi`; every number (``lr``, ``momentum``, ``weight_decay``,
    :math:`H`, :math:`C`, ...) is data to the compiled program, so a sweep does not recompile.

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
    _checks.check_key(key)
    h = _checks.square_matrix("hessian", hessian)
    _checks.check_symmetric("hessian", h)
    d = h.shape[0]
    c = _checks.square_matrix("noise_cov", noise_cov)
    if c.shape != h.shape:
        raise ValueError(f"noise_cov has shape {tuple(c.shape)} but hessian has {tuple(h.shape)}.")
    _checks.check_psd("noise_cov", c)
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
    p = None
    if preconditioner is not None:
        p = _checks.square_matrix("preconditioner", preconditioner)
        if p.shape != h.shape:
            raise ValueError(f"preconditioner has shape {tuple(p.shape)}; expected {(d, d)}.")
        _checks.check_spd("preconditioner", p)
    ws = jnp.zeros(d) if w_star is None else _checks.check_vector("w_star", w_star, d)
    w0 = ws if init is None else _checks.check_vector("init", init, d)
    if block is None:
        block = _auto_block(noise)
        if chunk_steps is not None and int(chunk_steps) % block:
            block = 1
    else:
        block = _checks.check_int("block", block, 1)
    dtype = jnp.dtype(dtype)
    noise_dtype = dtype if noise_dtype is None else jnp.dtype(noise_dtype)
    if prng_impl is not None:
        n_words = {"threefry2x32": 2, "rbg": 4, "unsafe_rbg": 4}[prng_impl]
        key = jax.random.wrap_key_data(jax.random.bits(key, (n_words,), jnp.uint32),
                                       impl=prng_impl)

    # Every number enters as an array captured by the callables below, so a sweep over lr,
    # momentum, weight decay, H, C or the SAM radius reuses one compiled simulator.
    opt = preset_optimizer(lr, momentum=momentum, nesterov=nesterov, optimizer=optimizer,
                           preconditioner=None if p is None else p.astype(dtype))
    gradient = _quadratic_gradient(h.astype(dtype),
                                   None if w_star is None else ws.astype(dtype),
                                   None if _checks.is_zero(weight_decay) else jnp.asarray(weight_decay, dtype),
                                   None if _checks.is_zero(sam_radius) else jnp.asarray(sam_radius, dtype),
                                   None if p is None else p.astype(dtype))
    chol = psd_sqrt(c).astype(noise_dtype)
    stats = minibatch_sgd(
        key, None, w0.astype(dtype), Online(_noise_source(chol, noise, noise_dtype, dtype), 1,
                                            vectorized=True),
        opt, gradient=gradient, steps=steps, replicas=replicas, burn_in=burn_in, groups=groups,
        record_every=record_every, record_replicas=record_replicas,
        divergence_threshold=divergence_threshold, on_divergence="ignore", block=block,
        unroll=unroll, devices=devices, chunk_steps=chunk_steps, progress=progress,
        stop_on_divergence=stop_on_divergence, histogram=histogram, exceedance=exceedance,
        first_passage=first_passage, statistics=statistics)
    hint = None
    if (_checks.is_concrete(stats.diverged) and int(stats.diverged) > 0 and optimizer is None
            and p is None and _checks.is_zero(sam_radius)):
        hint = _sgd_bound_hint(h, lr, momentum, nesterov, weight_decay)
    warn_divergence(stats, divergence_threshold, on_divergence, hint)
    return stats


def _sgd_bound_hint(h, lr, momentum, nesterov, weight_decay):
    """The deterministic stability bound of optax.sgd on a quadratic, for the divergence message."""
    h_max = float(np.max(np.linalg.eigvalsh(np.asarray(h, float)))) + float(weight_decay)
    mu = float(momentum)
    if nesterov:
        bound, expr = 2 * (1 + mu) / ((1 + 2 * mu) * h_max), "2(1+momentum)/((1+2 momentum) h_max)"
    elif mu:
        bound, expr = 2 * (1 + mu) / h_max, "2(1+momentum)/h_max"
    else:
        bound, expr = 2 / h_max, "2/h_max"
    rel = ">=" if float(lr) >= bound else "<"
    return f"lr={float(lr):.4g} {rel} {expr} = {bound:.4g}" + (
        "" if rel == ">=" else " (below the bound: raise divergence_threshold?)")


def _quadratic_gradient(h, w_star, weight_decay, sam_radius, p):
    r"""The per-replica stochastic gradient :math:`\hat g(w) = H(w - w^*) + \gamma w + \xi` (one
    noise draw ``xi`` per step, the batch of one), with unnormalised SAM evaluated at
    :math:`w + \rho P\hat g(w)` with the *same* ``xi``.  Weight decay is part of the loss, so the
    SAM ascent sees it (the convention of :func:`sgdtheory.quadratic.usam`)."""

    # With w* = 0 (the default) the subtraction is skipped: it is one more kernel per step
    # (measured ~10 % of a D = 10 Rademacher run).  A nonzero w* is subtracted before the product,
    # as before, not folded into a constant H w* (which would cancel when |w*| >> |w - w*|).
    centre = (lambda v: v) if w_star is None else (lambda v: v - w_star)

    def grad(w, batch):
        xi = batch[0]
        g = centre(w) @ h + xi
        if weight_decay is not None:
            g = g + weight_decay * w
        if sam_radius is not None:
            w_adv = w + sam_radius * (g if p is None else g @ p)
            g = centre(w_adv) @ h + xi
            if weight_decay is not None:
                g = g + weight_decay * w_adv
        return g

    return grad


def _noise_source(chol, noise, noise_dtype, dtype):
    r"""Vectorised Online source of :math:`\xi = L z`: one draw and one matmul for many steps."""

    def sample(k, shape):
        full = tuple(shape) + (chol.shape[0],)
        z = draw_noise(k, full, noise, noise_dtype)
        return (z @ chol).astype(dtype)  # chol is symmetric

    return sample
