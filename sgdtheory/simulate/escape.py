r"""First-passage (escape) times of discrete-time SGD with state-dependent Gaussian noise.

Every replica runs :math:`x_{k+1} = x_k - \lambda\,(\nabla L(x_k) + s(x_k)\odot z_k)`,
:math:`z_k \sim N(0, I)` -- the noise is evaluated at the current iterate (Itô), Gaussian (escape
times depend on the whole noise law, so no Rademacher shortcut here).  :func:`sde_escape_times` is
the Euler--Maruyama scheme of :math:`dx = f dt + \sqrt{2D}\,dW` written the same way
(:math:`\nabla L = -f`, :math:`s = \sqrt{2D/\Delta t}`, :math:`\lambda = \Delta t`).

The first step at which ``sign * (x[coordinate] - target) >= 0`` is recorded per replica; replicas
that have not escaped after ``budget`` steps are **censored** (not dropped, not averaged).
:func:`summarize` estimates the mean escape time by the censored-exponential maximum likelihood
:math:`\hat\tau = \sum_i \min(T_i, K)/n_{esc}` (equal to the sample mean when nothing is censored,
when a distribution-free standard error is used instead) and :func:`kaplan_meier` gives the
survival curve.  The runs are :func:`~sgdtheory.simulate.minibatch_sgd` on the one scan engine with a
:func:`~sgdtheory.simulate.first_passage` statistic: no trajectory is stored, the noise of ``chunk``
steps is drawn at once, and the loop stops on the device once every replica has escaped.

This module never imports the theory modules.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import _checks
from sgdtheory._ziggurat import ziggurat_normal
from sgdtheory.simulate._engine import Stats, first_passage
from sgdtheory.simulate.data import Online
from sgdtheory.simulate.minibatch import minibatch_sgd

__all__ = [
    "EscapeTimes",
    "EscapeSummary",
    "escape_times",
    "sde_escape_times",
    "summarize",
    "kaplan_meier",
    "state_dependent_sgd",
]


class EscapeTimes(NamedTuple):
    """Per-replica first-passage steps.

    Attributes:
      steps: ``(R,)`` first step with the escape condition, or ``budget`` if censored.
      escaped: ``(R,)`` bool, False for censored replicas.
      budget: the step budget.
      lr: time per step (SDE time ``t = lr * steps``).
      diverged: replicas whose state became non-finite (counted as censored at that step).
    """

    steps: jax.Array
    escaped: jax.Array
    budget: int
    lr: float
    diverged: jax.Array


class EscapeSummary(NamedTuple):
    """Mean escape time (in steps and SDE time) with standard errors; see :func:`summarize`."""

    mean_steps: float
    mean_steps_stderr: float
    mean_time: float
    mean_time_stderr: float
    rate_per_step: float
    escaped: int
    replicas: int
    method: str


def _prep(x0):
    x0 = jnp.atleast_1d(_checks.as_float_array(x0))
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a scalar or a (d,) vector; got shape {x0.shape}.")
    return x0


def _noise_gradient(grad: Callable, noise_scale):
    r"""``gradient(x, batch)`` of the presets: :math:`\nabla L(x) + s(x)\odot z` with ``z = batch[0]``.

    ``noise_scale`` may be a function returning ``(d,)`` or a scalar, or a constant (scalar or
    ``(d,)``); it is broadcast to the shape of ``x``."""
    if callable(noise_scale):
        scale = noise_scale
    else:
        const = _checks.as_float_array(noise_scale)
        if const.ndim > 1:
            raise ValueError(f"noise_scale must be a function, a scalar or a (d,) vector; got shape "
                             f"{const.shape}.")
        scale = lambda x: const  # noqa: E731

    def gradient(x, batch):
        return grad(x) + jnp.broadcast_to(scale(x), x.shape) * batch[0]

    return gradient


def _standard_normal(d, dtype):
    def sample(k, shape):
        return ziggurat_normal(k, tuple(shape) + (d,), dtype)

    return sample


def _check_noise_scale_shape(noise_scale, x0):
    """A scale of the wrong shape is a clear error, not a broadcasting failure inside jit."""
    out = (jax.eval_shape(noise_scale, x0) if callable(noise_scale)
           else jax.ShapeDtypeStruct(jnp.shape(noise_scale), jnp.float64))
    if tuple(out.shape) not in ((), (1,), tuple(x0.shape)):
        raise ValueError(f"noise_scale must give a scalar or a {tuple(x0.shape)} vector (one "
                         f"standard deviation per coordinate); got shape {tuple(out.shape)}.")


def escape_times(key, grad: Callable, noise_scale, x0, lr, *, target, budget: int,
                 replicas: int, coordinate: int = 0, chunk: int = 256,
                 devices=None) -> EscapeTimes:
    r"""First-passage steps of discrete SGD with state-dependent Gaussian gradient noise.

    Update (all replicas, Itô): :math:`x \leftarrow x - \lambda(\nabla L(x) + s(x)\odot z)`,
    :math:`z \sim N(0, I)`.  The per-step gradient-noise covariance is :math:`\mathrm{diag}(s^2)`;
    the SDE limit has :math:`D = \lambda s^2/2`.  A replica stops at its first step with
    ``sign(target - x0[coordinate]) * (x[coordinate] - target) >= 0``; the run ends, on the device,
    once every replica has passed (checked every ``chunk`` steps) or after ``budget`` steps.

    This preset is :func:`~sgdtheory.simulate.minibatch_sgd` (an online source of standard normal
    ``z``, the gradient above, ``optax.sgd(lr)``) with a
    :func:`~sgdtheory.simulate.first_passage` statistic: the one scan engine, no second loop.

    Args:
      key: ``jax.random`` key, e.g. ``jax.random.key(0)``.
      grad: ``x -> grad L(x)`` for one replica, ``(d,) -> (d,)`` (a pure JAX function).
      noise_scale: ``x -> s(x)``, the noise standard deviation per coordinate (``(d,)`` or a
        scalar), or a constant scalar / ``(d,)`` vector.
      x0: start, scalar or ``(d,)`` (the same for every replica).
      lr: learning rate :math:`\lambda` (time per step).
      target: the escape threshold on ``x[coordinate]``.
      budget: step budget; replicas that have not escaped by then are censored.
      replicas: number of independent replicas.
      coordinate: which coordinate the target refers to.
      chunk: steps of noise drawn at once and between the early-stop tests (static).
      devices: shard the replicas across devices (see :func:`~sgdtheory.simulate.run_replicas`).

    Returns:
      :class:`EscapeTimes`: per-replica first-passage steps (``budget`` when censored), whether
      each replica escaped, and how many became non-finite (censored at that step, with a
      warning).  Summarise with :func:`summarize` or :func:`kaplan_meier`.

    Changing ``budget``, ``replicas``, ``coordinate`` or ``chunk`` recompiles; new ``grad`` /
    ``noise_scale`` functions with the same computation, ``x0``, ``lr`` and ``target`` do not.
    """
    _checks.check_key(key)
    budget = _checks.check_int("budget", budget, 1)
    replicas = _checks.check_int("replicas", replicas, 2)
    chunk = _checks.check_int("chunk", chunk, 1)
    _checks.check_positive("lr", lr)
    x0 = _prep(x0)
    coordinate = _checks.check_int("coordinate", coordinate, 0)
    if coordinate >= x0.shape[0]:
        raise ValueError(f"coordinate={coordinate} is out of range for x0 of dimension {x0.shape[0]}.")
    _check_noise_scale_shape(noise_scale, x0)
    passage = first_passage(coordinate, float(target), start=float(x0[coordinate]))
    groups = next((g for g in (32, 16, 8, 4, 2) if replicas % g == 0), 1)
    stats = minibatch_sgd(
        key, None, x0, Online(_standard_normal(x0.shape[0], x0.dtype), 1, vectorized=True),
        optax.sgd(jnp.asarray(lr, x0.dtype)), gradient=_noise_gradient(grad, noise_scale),
        steps=budget, replicas=replicas, burn_in=0, groups=groups, block=min(chunk, budget),
        divergence_threshold=math.inf, on_divergence="ignore", first_passage=passage,
        statistics="mean", devices=devices)
    nbad = stats.diverged
    if int(nbad) > 0:
        warnings.warn(f"{int(nbad)} of {replicas} replicas became non-finite; they are censored at "
                      "the step they diverged.", RuntimeWarning, stacklevel=2)
    fp = stats.first_passage
    return EscapeTimes(fp.steps, fp.passed, budget, float(lr), nbad)


def sde_escape_times(key, drift: Callable, diffusion: Callable, x0, dt, *, target, budget: int,
                     replicas: int, coordinate: int = 0, chunk: int = 256) -> EscapeTimes:
    r"""First-passage steps of the Euler--Maruyama scheme of :math:`dx = f\,dt + \sqrt{2D}\,dW` (Itô).

    :math:`x \leftarrow x + f(x)\Delta t + \sqrt{2D(x)\Delta t}\,z` -- the same loop as
    :func:`escape_times` with :math:`\nabla L = -f` and :math:`s = \sqrt{2D/\Delta t}`.

    Args:
      drift: ``x -> f(x)``, ``(d,) -> (d,)``.
      diffusion: ``x -> D(x)``, the diagonal of the diffusion matrix (``(d,)`` or a scalar; must be
        positive).
      dt: the time step :math:`\Delta t` (the ``lr`` of :func:`escape_times`).
      key, x0, target, budget, replicas, coordinate, chunk: as in :func:`escape_times`.

    Returns:
      :class:`EscapeTimes` (``lr`` = ``dt``, so ``summarize`` reports SDE time).
    """
    _checks.check_positive("dt", dt)
    dt = float(dt)
    return escape_times(key, lambda x: -drift(x), lambda x: jnp.sqrt(2.0 * diffusion(x) / dt), x0,
                        dt, target=target, budget=budget, replicas=replicas, coordinate=coordinate,
                        chunk=chunk)


def summarize(et: EscapeTimes) -> EscapeSummary:
    r"""Mean escape time with an honest treatment of censoring.

    * No replica censored: the sample mean of the first-passage steps, standard error
      :math:`\mathrm{sd}/\sqrt R` (distribution-free).
    * Some censored at the budget :math:`K`: the censored-exponential MLE
      :math:`\hat\tau = \sum_i \min(T_i, K)/n_{esc}`, standard error :math:`\hat\tau/\sqrt{n_{esc}}`
      (Fisher information of the exponential model).  Valid when escape is a rare event (times
      close to exponential, relaxation inside the well much faster than escape); check it
      against :func:`kaplan_meier`.  With no escapes at all, returns ``inf`` (only a lower bound
      :math:`\sum_i K/\ldots` is known) -- never the mean of the finished ones.
    """
    t = np.asarray(et.steps, dtype=float)
    esc = np.asarray(et.escaped)
    r, n = t.size, int(esc.sum())
    if n == r:
        m = float(t.mean())
        se = float(t.std(ddof=1) / math.sqrt(r))
        method = "sample mean (no censoring)"
    elif n == 0:
        m, se, method = math.inf, math.inf, "no escapes: censored at the budget"
    else:
        m = float(t.sum() / n)
        se = m / math.sqrt(n)
        method = f"censored-exponential MLE ({r - n} of {r} censored)"
    return EscapeSummary(m, se, m * et.lr, se * et.lr, 1.0 / m if m > 0 else math.inf, n, r, method)


def kaplan_meier(et: EscapeTimes):
    """Kaplan--Meier survival estimate: ``(times, survival)`` at the distinct escape steps.

    Censored replicas leave the risk set at the budget (or at divergence).  The restricted mean
    ``sum(diff([0, times, budget]) * [1, survival])`` is the mean of ``min(T, budget)``.
    """
    t = np.asarray(et.steps)
    esc = np.asarray(et.escaped)
    times = np.unique(t[esc])
    at_risk = np.array([np.sum(t >= u) for u in times])
    events = np.array([np.sum((t == u) & esc) for u in times])
    surv = np.cumprod(1.0 - events / np.maximum(at_risk, 1))
    return times, surv


def state_dependent_sgd(key, grad: Callable, noise_scale, observe: Callable, x0, lr, *,
                        steps: int, replicas: int, burn_in: int, groups: int | None = None,
                        divergence_threshold: float = 1e8, on_divergence: str = "warn",
                        histogram=None, exceedance=None, chunk_steps: int | None = None,
                        progress=None, statistics: str = "full", devices=None) -> Stats:
    r"""Stationary statistics of ``observe(x)`` under SGD with state-dependent Gaussian noise.

    Same update as :func:`escape_times`, :math:`x \leftarrow x - \lambda(\nabla L(x) +
    s(x)\odot z)`, streamed through the one scan engine (it is
    :func:`~sgdtheory.simulate.minibatch_sgd` with an online source of standard normals).

    Args:
      key: ``jax.random`` key.
      grad: ``x -> grad L(x)``, ``(d,) -> (d,)``.
      noise_scale: ``x -> s(x)`` (``(d,)`` or scalar), or a constant scalar / ``(d,)`` vector.
      observe: ``x -> (m,)`` vector whose statistics are streamed (e.g. ``x``, ``x**2``, or bin
        indicators); for a density use ``histogram=`` instead.
      x0: start, scalar or ``(d,)``.
      lr: learning rate :math:`\lambda`.
      steps: run length; ``replicas``, ``burn_in``, ``groups``, ``divergence_threshold``,
        ``on_divergence``, ``histogram``, ``exceedance``, ``chunk_steps``, ``progress``,
        ``statistics`` and ``devices`` are as in :func:`~sgdtheory.simulate.minibatch_sgd`.

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``observe(x)`` with replica-group standard errors.
    """
    _checks.check_key(key)
    _checks.check_positive("lr", lr)
    x0 = _prep(x0)
    _check_noise_scale_shape(noise_scale, x0)
    return minibatch_sgd(
        key, None, x0, Online(_standard_normal(x0.shape[0], x0.dtype), 1, vectorized=True),
        optax.sgd(jnp.asarray(lr, x0.dtype)), gradient=_noise_gradient(grad, noise_scale),
        observe=lambda x, _state: jnp.atleast_1d(observe(x)), steps=steps, replicas=replicas,
        burn_in=burn_in, groups=groups, divergence_threshold=divergence_threshold,
        on_divergence=on_divergence, histogram=histogram, exceedance=exceedance,
        chunk_steps=chunk_steps, progress=progress, statistics=statistics, devices=devices)
