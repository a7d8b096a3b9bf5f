r"""The composable simulator: your loss, your data, any optax optimizer, your statistic.

:func:`minibatch_sgd` runs ``replicas`` independent copies of real discrete-time minibatch SGD

.. math:: \hat g_t = \nabla_\theta \frac1S \sum_{i \in B_t} \ell(\theta_t, z_i),\qquad
          (u_t, s_{t+1}) = \mathrm{update}(\hat g_t, s_t, \theta_t),\qquad
          \theta_{t+1} = \theta_t + u_t

on the one scan engine (:func:`~sgdtheory.simulate.run_replicas`) and streams the statistics of
``observe(params, opt_state)`` (default: the flattened params) -- mean, covariance, standard errors
from independent replica groups, and on request histograms, tail probabilities and first-passage
steps.  Nothing grows with ``steps``.

Compilation.  ``loss``, ``observe``, the optimizer's ``update`` and an online ``sample`` are traced
once and keyed by their program text (:mod:`sgdtheory.simulate._program`): a new ``lambda`` or a new
optax object with the same structure does **not** recompile, and arrays they close over
(datasets, Hessians, hyperparameters given as ``jnp`` arrays) are passed as data.  Python numbers
baked into a closure (``optax.sgd(0.1)``) are part of the program: pass ``jnp.asarray(0.1)`` (or use
``optax.inject_hyperparams``) to sweep a learning rate without recompiling.  ``steps``, ``replicas``,
``burn_in``, ``batch_size``, ``sampling``, ``groups``, ``block`` and the statistics requested are
static: changing them recompiles.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks
from sgdtheory.simulate import _engine
from sgdtheory.simulate._engine import Stats, check_run_args, scan_replicas, warn_divergence
from sgdtheory.simulate._program import Program, trace
from sgdtheory.simulate.data import (Dataset, Online, check_data, draw_indices, example_shapes,
                                     shuffle_init, shuffle_next)

__all__ = ["minibatch_sgd", "simulate_model", "Model"]


class Model(NamedTuple):
    """The static (hashable) description of one compiled simulator: programs and shapes.

    Built by :func:`minibatch_sgd`; front-ends that bring their own per-step gradient
    (``gradient=``) or noise source reuse it unchanged.
    """

    loss: Program | None
    gradient: Program | None
    update: Program
    observe: Program
    sample: Program | None  # Online, one example per key
    sample_sizes: tuple  # Online, vectorized: the step counts drawn at once (block, remainders)
    samples: tuple  # Online, vectorized: one Program per entry of sample_sizes
    kind: str  # "dataset" | "online"
    batch_size: int
    sampling: str | None
    n: int | None
    sam: bool
    replicas: int
    burn_in: int
    groups: int
    block: int
    unroll: int
    threshold: float
    devices: Any
    extras: Any
    stats_dtype: Any


def _default_observe(params, opt_state):
    del opt_state
    return ravel_pytree(params)[0]


def _devices_key(devices):
    if devices is None or isinstance(devices, (str, int)):
        return devices
    return tuple(devices)


def minibatch_sgd(
    key,
    loss: Callable | None,
    params,
    data: Dataset | Online,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    replicas: int,
    burn_in: int,
    observe: Callable | None = None,
    gradient: Callable | None = None,
    sam_radius=0.0,
    dtype=None,
    histogram=None,
    exceedance=None,
    first_passage=None,
    statistics: str = "full",
    groups: int | None = None,
    record_every: int | None = None,
    record_replicas: int = 8,
    divergence_threshold: float = 1e8,
    on_divergence: str = "warn",
    divergence_hint: str | None = None,
    block: int | None = None,
    unroll: int = 1,
    devices=None,
    chunk_steps: int | None = None,
    progress: Callable | None = None,
    stop_on_divergence: bool = False,
) -> Stats:
    r"""Simulate minibatch SGD with any per-example loss, data source and optax optimizer.

    Args:
      key: a ``jax.random`` key, e.g. ``jax.random.key(0)`` (the only source of randomness).
      loss: ``loss(params, example) -> scalar``, the per-example loss (the step uses the gradient
        of the batch mean).  May be ``None`` when ``gradient`` is given.
      params: initial parameters, any pytree of arrays (every replica starts here).
      data: :class:`~sgdtheory.simulate.Dataset` (a finite dataset: with/without replacement or
        epoch shuffling) or :class:`~sgdtheory.simulate.Online` (fresh examples every step).
      optimizer: any ``optax.GradientTransformation`` (``optax.sgd(lr, momentum)``, a chain with
        ``optax.add_decayed_weights``, ``optax.adam``, :mod:`sgdtheory.optim` transforms...).
      steps, replicas, burn_in: run length, independent replicas (split into >= 8 equal groups for
        the standard errors), steps discarded before statistics start.
      observe: ``observe(params, opt_state) -> (m,) vector`` whose statistics are streamed
        (default: the flattened params, in ``jax.flatten_util.ravel_pytree`` order).
      gradient: optional ``gradient(params, batch) -> grads`` replacing ``jax.grad`` of the batch
        mean of ``loss`` (``batch`` has a leading axis ``S``); for models with a hand-written
        gradient, such as additive-noise quadratics.
      sam_radius: unnormalised SAM radius :math:`\rho`: the gradient is taken at
        :math:`\theta + \rho\hat g(\theta)` with the same minibatch (0: plain gradient).
      dtype: cast params and floating data to this dtype (default: as given).  Statistics
        accumulate in float64 when x64 is enabled.
      histogram, exceedance, first_passage: optional streamed statistics
        (:func:`~sgdtheory.simulate.histogram`, :func:`~sgdtheory.simulate.exceedance`,
        :func:`~sgdtheory.simulate.first_passage`) of the observed vector.
      statistics: ``"full"`` (mean and covariance, default), ``"diagonal"`` (mean and the ``(D,)``
        variances, held in ``cov``/``cov_stderr``; the cost per step drops from D^2 to D) or
        ``"mean"`` (``cov`` is ``None``).
      groups: independent replica groups for the standard errors (default: 32, 16 or 8).
      block: steps of online examples drawn at once (default 1); see
        :func:`~sgdtheory.simulate.run_replicas` for it and for ``record_every``,
        ``record_replicas``, ``divergence_threshold``, ``unroll``, ``devices``, ``chunk_steps``,
        ``progress`` and ``stop_on_divergence``.
      on_divergence: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` when replicas diverge;
        ``divergence_hint`` is added to the message (e.g. the known stability bound).

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``observe``; ``stats.compare(theory)`` tabulates a
      prediction against it.

    Example:
      >>> import jax, jax.numpy as jnp, optax, sgdtheory as st
      >>> X = jax.random.normal(jax.random.key(1), (16, 2)); y = X @ jnp.array([1.0, -1.0])
      >>> loss = lambda w, ex: 0.5 * (ex[0] @ w - ex[1]) ** 2
      >>> sim = st.simulate.minibatch_sgd(
      ...     jax.random.key(0), loss, jnp.zeros(2), st.simulate.Dataset((X, y), batch_size=4),
      ...     optax.sgd(0.1), steps=2000, replicas=256, burn_in=500)
      >>> sim.mean.round(3)   # a noiseless teacher: SGD converges to it, no fluctuations left
      Array([ 1., -1.], dtype=float64)
    """
    _checks.check_key(key)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError("optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1)); "
                         f"got {type(optimizer).__name__}.")
    if loss is None and gradient is None:
        raise ValueError("pass loss(params, example) (or gradient(params, batch)).")
    _checks.check_nonnegative("sam_radius", sam_radius)
    if jnp.ndim(sam_radius) != 0:
        raise ValueError("sam_radius must be a scalar.")
    data, n = check_data(data, dtype)
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    _engine.check_on_divergence(on_divergence)
    extras = _engine.make_extras(histogram, exceedance, first_passage, statistics)
    block = 1 if block is None else _checks.check_int("block", block, 1)
    unroll = _checks.check_int("unroll", unroll, 1)
    if chunk_steps is None and (progress is not None or stop_on_divergence):
        raise ValueError("progress= and stop_on_divergence= need chunk_steps=.")
    if chunk_steps is not None and record_every is not None:
        raise ValueError("record_every= is not supported with chunk_steps=.")

    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params holds no arrays.")
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if dtype is not None else jnp.asarray(a), params)
    opt_state = optimizer.init(params)
    use_sam = not _checks.is_zero(sam_radius)
    k_shape = jax.eval_shape(lambda k: k, key)
    model, consts = build_model(
        loss, params, opt_state, data, n, optimizer, observe=observe, gradient=gradient,
        sam=use_sam, key_shape=k_shape, replicas=replicas, burn_in=burn_in, groups=groups,
        block=block, unroll=unroll, steps=steps, record_every=record_every,
        threshold=float(divergence_threshold), devices=_devices_key(devices), extras=extras)
    examples = data.examples if isinstance(data, Dataset) else None
    stats = simulate_model(key, model, params, opt_state, examples, consts,
                           jnp.asarray(sam_radius), steps=steps, record_every=record_every,
                           record_replicas=record_replicas, chunk_steps=chunk_steps,
                           progress=progress, stop_on_divergence=stop_on_divergence)
    warn_divergence(stats, divergence_threshold, on_divergence, divergence_hint)
    return stats


def _draw_sizes(steps, block, record_every=None):
    """Step counts the engine asks a block noise source for (see ``_engine.advance``)."""
    if record_every is not None:
        b = math.gcd(block, record_every)
        tail = steps - (steps // record_every) * record_every
        return tuple(sorted({b} | ({record_every % b} - {0}) | ({tail % b} - {0})))
    return tuple(sorted({block} | ({steps % block} - {0})))


def build_model(loss, params, opt_state, data, n, optimizer, *, observe, gradient, sam, key_shape,
                replicas, burn_in, groups, block, unroll, steps, threshold, devices,
                extras, record_every=None, stats_dtype=None):
    """Trace the user's callables into a hashable :class:`Model` and its captured arrays."""
    s = data.batch_size
    ex_shape = example_shapes(data, jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype))
    batch_shape = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((s,) + a.shape, a.dtype),
                                         ex_shape)
    consts = {}
    loss_p = grad_p = None
    if gradient is not None:
        grad_p, consts["gradient"] = trace(gradient, params, batch_shape, what="gradient")
    else:
        loss_p, consts["loss"] = trace(loss, params, ex_shape, what="loss")
        out = loss_p.out_shape
        if getattr(out, "shape", None) != ():
            raise ValueError(f"loss(params, example) must return a scalar; got shape "
                             f"{getattr(out, 'shape', out)}.")
    upd_p, consts["update"] = trace(optimizer.update, params, opt_state, params,
                                    what="optimizer.update")
    obs_p, consts["observe"] = trace(observe or _default_observe, params, opt_state, what="observe")
    out = obs_p.out_shape
    if not hasattr(out, "shape") or len(out.shape) != 1:
        raise ValueError("observe(params, opt_state) must return a 1-D vector; got "
                         f"{getattr(out, 'shape', out)}.")
    samp, sizes, progs = None, (), ()
    if isinstance(data, Online):
        key_aval = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype)
        if data.vectorized:
            # The engine draws `nsteps` steps at once: a block, and the shorter remainders at the
            # end of a run or before a recording point; one traced program per size.
            sizes = _draw_sizes(steps, block, record_every)
            traced = [trace(lambda k, m=m: data.sample(k, (m, replicas, s)), key_aval,
                            what="Online.sample") for m in sizes]
            progs = tuple(t[0] for t in traced)
            for m, t in zip(sizes, traced):
                consts[f"sample_{m}"] = t[1]
        else:
            samp, consts["sample"] = trace(data.sample, key_aval, what="Online.sample")
    if stats_dtype is None:
        stats_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    model = Model(loss_p, grad_p, upd_p, obs_p, samp, sizes, progs,
                  "dataset" if isinstance(data, Dataset) else "online", s,
                  getattr(data, "sampling", None), n, bool(sam), replicas, burn_in, groups, block,
                  unroll, threshold, devices, extras, jnp.dtype(stats_dtype))
    return model, consts


def _bind(model: Model, consts):
    """The model's callables, bound to their (traced) captured arrays."""
    out = {name: (getattr(model, name).bind(consts[name]) if getattr(model, name) else None)
           for name in ("loss", "gradient", "update", "observe", "sample")}
    out["draws"] = {m: p.bind(consts[f"sample_{m}"])
                    for m, p in zip(model.sample_sizes, model.samples)}
    return out


def _engine_fns(model: Model, params0, state0, examples, consts, sam_radius):
    """``(init_fn, step_fn, noise_fn, observe_fn)`` of the model for the scan engine."""
    f = _bind(model, consts)
    r, s = model.replicas, model.batch_size

    if f["gradient"] is not None:
        grad_fn = f["gradient"]
    else:
        loss_fn = f["loss"]

        def grad_fn(p, batch):
            return jax.grad(lambda q: jnp.mean(jax.vmap(loss_fn, (None, 0))(q, batch)))(p)

    def one_step(p, st, batch):
        g = grad_fn(p, batch)
        if model.sam:
            p_adv = jax.tree_util.tree_map(lambda a, b: a + sam_radius.astype(a.dtype) * b, p, g)
            g = grad_fn(p_adv, batch)
        u, st = f["update"](g, st, p)
        return optax.apply_updates(p, u), st

    step_all = jax.vmap(one_step)
    rep = lambda tree: jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (r,) + a.shape), tree)

    def init_fn(k):
        p, st = rep(params0), rep(state0)
        if model.kind == "dataset" and model.sampling == "shuffle":
            return p, st, shuffle_init(k, r, model.n)
        return p, st, None

    if model.kind == "dataset":
        def step_fn(k, state):
            p, st, shuf = state
            if model.sampling == "shuffle":
                idx, perm, pos = shuffle_next(k, *shuf, r, model.n, s)
                shuf = (perm, pos)
            else:
                idx = draw_indices(k, model.sampling, r, model.n, s)
            batch = jax.tree_util.tree_map(lambda a: a[idx], examples)  # (R, S, ...)
            p, st = step_all(p, st, batch)
            return p, st, shuf

        noise_fn = None
    else:
        def noise_fn(k, nsteps):
            if f["draws"]:
                return f["draws"][nsteps](k)
            keys = jax.random.split(k, nsteps * r * s)
            ex = jax.vmap(f["sample"])(keys)
            return jax.tree_util.tree_map(lambda a: a.reshape((nsteps, r, s) + a.shape[1:]), ex)

        def step_fn(batch, state):
            p, st, shuf = state
            p, st = step_all(p, st, batch)
            return p, st, shuf

    def observe_fn(state):
        return jax.vmap(f["observe"])(state[0], state[1])

    return init_fn, step_fn, noise_fn, observe_fn


def _opts(model: Model):
    return dict(replicas=model.replicas, burn_in=model.burn_in, groups=model.groups,
                divergence_threshold=model.threshold, block=model.block, unroll=model.unroll,
                devices=model.devices, extras=model.extras, stats_dtype=model.stats_dtype)


@partial(jax.jit, static_argnames=("model", "steps", "record_every", "record_replicas"))
def _run(key, params0, state0, examples, consts, sam_radius, *, model, steps, record_every,
         record_replicas):
    init_fn, step_fn, noise_fn, observe_fn = _engine_fns(model, params0, state0, examples, consts,
                                                         sam_radius)
    return scan_replicas(key, init_fn, step_fn, observe_fn, steps=steps, record_every=record_every,
                         record_replicas=record_replicas, noise_fn=noise_fn, **_opts(model))


@partial(jax.jit, static_argnames=("model",))
def _start(key, params0, state0, examples, consts, sam_radius, *, model):
    init_fn, _, _, observe_fn = _engine_fns(model, params0, state0, examples, consts, sam_radius)
    return _engine.init_carry(key, init_fn, observe_fn, **_opts(model))


@partial(jax.jit, static_argnames=("model", "length"))
def _advance(carry, t0, params0, state0, examples, consts, sam_radius, *, model, length):
    _, step_fn, noise_fn, observe_fn = _engine_fns(model, params0, state0, examples, consts,
                                                   sam_radius)
    return _engine.advance(carry, t0, length, step_fn, observe_fn, noise_fn=noise_fn,
                           **_opts(model))


def simulate_model(key, model: Model, params0, state0, examples, consts, sam_radius, *, steps,
                   record_every=None, record_replicas=8, chunk_steps=None, progress=None,
                   stop_on_divergence=False) -> Stats:
    """Run a built :class:`Model` (one long compiled scan, or chunks with a host ``progress``)."""
    args = (params0, state0, examples, consts, sam_radius)
    if chunk_steps is None:
        stats = _run(key, *args, model=model, steps=steps, record_every=record_every,
                     record_replicas=record_replicas)
    else:
        if chunk_steps % model.block:
            raise ValueError(f"chunk_steps={chunk_steps} must be a multiple of block={model.block}.")
        carry = _start(key, *args, model=model)
        stats = _engine.run_chunked(
            carry, lambda c, t0, n: _advance(c, t0, *args, model=model, length=n), steps=steps,
            replicas=model.replicas, burn_in=model.burn_in, chunk_steps=chunk_steps,
            block=model.block, progress=progress, stop_on_divergence=stop_on_divergence,
            extras=model.extras)
    return _engine.static_fields(stats, model.extras)

