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
survival curve.  State is ``(replicas, d)``; one key per chunk of steps; no trajectory is stored;
the loop stops early once every replica has escaped.

This module never imports the theory modules (DESIGN.md).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgdtheory import _checks
from sgdtheory.simulate._engine import Stats, check_run_args, scan_replicas, warn_divergence

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


def _prep(x0, replicas):
    x0 = jnp.atleast_1d(_checks.as_float_array(x0))
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a scalar or a (d,) vector; got shape {x0.shape}.")
    return x0


@partial(jax.jit, static_argnames=("grad", "noise_scale", "budget", "replicas", "coordinate",
                                   "chunk"))
def _run(key, x0, lr, target, sign, *, grad, noise_scale, budget, replicas, coordinate, chunk):
    d = x0.shape[0]
    g = jax.vmap(grad)
    s = jax.vmap(noise_scale)
    x = jnp.broadcast_to(x0, (replicas, d)).astype(x0.dtype)
    first = jnp.full((replicas,), budget, jnp.int32)
    done = jnp.zeros((replicas,), bool)
    bad = jnp.zeros((replicas,), bool)

    def step(carry, inp):
        x, first, done, bad = carry
        k, t = inp
        z = jax.random.normal(k, (replicas, d), x.dtype)
        xn = x - lr * (g(x) + jnp.broadcast_to(s(x), (replicas, d)) * z)
        live = ~done & (t <= budget)
        x = jnp.where(live[:, None], xn, x)
        fin = jnp.all(jnp.isfinite(x), axis=1)
        newbad = live & ~fin
        hit = live & fin & (sign * (x[:, coordinate] - target) >= 0)
        first = jnp.where(hit | newbad, t, first)
        return (x, first, done | hit | newbad, bad | newbad), None

    def cond(c):
        k0, _, _, done, _, _ = c
        return (k0 < budget) & ~jnp.all(done)

    def body(c):
        k0, x, first, done, bad, key = c
        key, sub = jax.random.split(key)
        ks = jax.random.split(sub, chunk)
        ts = k0 + 1 + jnp.arange(chunk, dtype=jnp.int32)
        (x, first, done, bad), _ = lax.scan(step, (x, first, done, bad), (ks, ts))
        return k0 + chunk, x, first, done, bad, key

    _, x, first, done, bad, _ = lax.while_loop(
        cond, body, (jnp.int32(0), x, first, done, bad, key))
    return first, done & ~bad, jnp.sum(bad)


def escape_times(key, grad: Callable, noise_scale: Callable, x0, lr, *, target, budget: int,
                 replicas: int, coordinate: int = 0, chunk: int = 256) -> EscapeTimes:
    r"""First-passage steps of discrete SGD with state-dependent Gaussian gradient noise.

    Update (all replicas, Itô): :math:`x \leftarrow x - \lambda(\nabla L(x) + s(x)\odot z)`.
    The per-step gradient-noise covariance is :math:`\mathrm{diag}(s^2)`; the SDE limit has
    :math:`D = \lambda s^2/2`.

    Args:
      key: ``jax.random`` key.
      grad: ``x -> grad L(x)`` for one replica, ``(d,) -> (d,)`` (a JAX function; vmapped here).
      noise_scale: ``x -> s(x)``, the noise standard deviation per coordinate, ``(d,)`` or scalar.
      x0: start, scalar or ``(d,)`` (the same for every replica).
      lr: learning rate :math:`\lambda` (time per step).
      target: escape when ``sign(target - x0[coordinate]) * (x[coordinate] - target) >= 0``.
      budget: step budget; replicas not escaped by then are censored.
      replicas: number of independent replicas.
      coordinate: which coordinate the target refers to.
      chunk: steps per scan chunk between early-stop tests (static).

    ``grad``, ``noise_scale``, ``budget``, ``replicas``, ``coordinate``, ``chunk`` are static:
    changing them recompiles (pass the same function objects across a sweep).
    """
    budget = _checks.check_int("budget", budget, 1)
    replicas = _checks.check_int("replicas", replicas, 2)
    chunk = _checks.check_int("chunk", chunk, 1)
    _checks.check_positive("lr", lr)
    x0 = _prep(x0, replicas)
    coordinate = _checks.check_int("coordinate", coordinate, 0)
    if coordinate >= x0.shape[0]:
        raise ValueError(f"coordinate={coordinate} is out of range for x0 of dimension {x0.shape[0]}.")
    sign = float(np.sign(float(target) - float(x0[coordinate])))
    if sign == 0:
        raise ValueError("x0 already sits on the target.")
    first, esc, nbad = _run(key, x0, jnp.asarray(lr, x0.dtype), jnp.asarray(target, x0.dtype),
                            jnp.asarray(sign, x0.dtype), grad=grad, noise_scale=noise_scale,
                            budget=budget, replicas=replicas, coordinate=coordinate, chunk=chunk)
    if int(nbad) > 0:
        warnings.warn(f"{int(nbad)} of {replicas} replicas became non-finite; they are censored at "
                      "the step they diverged.", RuntimeWarning, stacklevel=2)
    return EscapeTimes(first, esc, budget, float(lr), nbad)


def sde_escape_times(key, drift: Callable, diffusion: Callable, x0, dt, *, target, budget: int,
                     replicas: int, coordinate: int = 0, chunk: int = 256) -> EscapeTimes:
    r"""First-passage steps of the Euler--Maruyama scheme of :math:`dx = f\,dt + \sqrt{2D}\,dW` (Itô).

    :math:`x \leftarrow x + f(x)\Delta t + \sqrt{2D(x)\Delta t}\,z` -- the same loop as
    :func:`escape_times` with :math:`\nabla L = -f` and :math:`s = \sqrt{2D/\Delta t}`.  ``diffusion``
    returns the diagonal of :math:`D` (``(d,)`` or scalar) and must be positive.
    """
    _checks.check_positive("dt", dt)
    return escape_times(key, _Neg(drift), _Scale(diffusion, float(dt)), x0, dt, target=target,
                        budget=budget, replicas=replicas, coordinate=coordinate, chunk=chunk)


class _Neg:
    def __init__(self, f):
        self.f = f

    def __call__(self, x):
        return -self.f(x)

    def __hash__(self):
        return hash((_Neg, self.f))

    def __eq__(self, o):
        return isinstance(o, _Neg) and o.f is self.f


class _Scale:
    def __init__(self, dfn, dt):
        self.dfn, self.dt = dfn, dt

    def __call__(self, x):
        return jnp.sqrt(2.0 * self.dfn(x) / self.dt)

    def __hash__(self):
        return hash((_Scale, self.dfn, self.dt))

    def __eq__(self, o):
        return isinstance(o, _Scale) and o.dfn is self.dfn and o.dt == self.dt


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


def state_dependent_sgd(key, grad: Callable, noise_scale: Callable, observe: Callable, x0, lr, *,
                        steps: int, replicas: int, burn_in: int, groups: int | None = None,
                        divergence_threshold: float = 1e8) -> Stats:
    r"""Stationary statistics of ``observe(x)`` under SGD with state-dependent Gaussian noise.

    Same update as :func:`escape_times`; streams mean/covariance of ``observe`` (``(d,) -> (m,)``,
    e.g. bin indicators for a histogram, or ``x**2``) through the shared scan engine, with
    standard errors from independent replica groups.
    """
    steps, replicas, burn_in, groups, _, _ = check_run_args(steps, replicas, burn_in, groups)
    _checks.check_positive("lr", lr)
    x0 = _prep(x0, replicas)
    stats = _stat_run(key, x0, jnp.asarray(lr, x0.dtype), grad=grad, noise_scale=noise_scale,
                      observe=observe, steps=steps, replicas=replicas, burn_in=burn_in,
                      groups=groups, thr=float(divergence_threshold))
    warn_divergence(stats, divergence_threshold)
    return stats


@partial(jax.jit, static_argnames=("grad", "noise_scale", "observe", "steps", "replicas",
                                   "burn_in", "groups", "thr"))
def _stat_run(key, x0, lr, *, grad, noise_scale, observe, steps, replicas, burn_in, groups, thr):
    d = x0.shape[0]
    g, s, o = jax.vmap(grad), jax.vmap(noise_scale), jax.vmap(observe)

    def init_fn(k):
        return jnp.broadcast_to(x0, (replicas, d))

    def step_fn(k, x):
        z = jax.random.normal(k, (replicas, d), x.dtype)
        return x - lr * (g(x) + jnp.broadcast_to(s(x), (replicas, d)) * z)

    return scan_replicas(key, init_fn, step_fn, o, steps=steps, replicas=replicas,
                         burn_in=burn_in, groups=groups, divergence_threshold=thr)
