r"""The one scan engine: replicas x steps, streamed statistics, divergence detection.

Every simulator front-end (quadratic, linear regression, SDE, ...) supplies three pure functions
over a **batched** state (leading axis = replicas):

* ``init_fn(key) -> state``
* ``step_fn(key, state) -> state``   -- one step of all replicas; draw noise with one key, as a
  ``(replicas, ...)`` array (much faster than splitting a key per replica)
* ``observe_fn(state) -> x``          -- the ``(replicas, D)`` vector whose statistics are streamed

and :func:`run_replicas` runs ``steps`` steps in ``jax.lax.scan``, discarding the first
``burn_in``.  Memory is O(replicas * D + groups * D^2) whatever ``steps`` is: no trajectory is
stored unless ``record_every`` asks for a thinned one.

Statistics and standard errors
------------------------------
Replicas are split into ``G`` equal groups.  Each step, every group's samples are merged into
that group's running mean and centred second moment by Chan et al.'s parallel Welford update
(numerically stable; no raw sums of squares).  Groups are statistically independent (disjoint
replicas), so the spread of the ``G`` group estimates gives an honest standard error even though
samples within one replica are autocorrelated in time (the batch-means method):
:math:`\mathrm{se}(\hat\theta) = \mathrm{sd}_g(\hat\theta_g)/\sqrt G`.  :func:`estimate` applies
the same rule to any function of the mean and covariance (e.g. a loss :math:`\tfrac12\mathrm{tr}(H\Sigma)`).

Divergence
----------
A replica whose observed vector becomes non-finite, or exceeds ``divergence_threshold`` in
absolute value, is frozen out of the statistics from that step on and counted in
``Stats.diverged``; :func:`run_replicas` warns when any replica diverged.  Nothing is hidden in a
NaN average.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgdtheory import _checks

__all__ = [
    "Stats",
    "run_replicas",
    "scan_replicas",
    "check_run_args",
    "warn_divergence",
    "estimate",
    "default_groups",
    "DivergenceWarning",
]


class DivergenceWarning(RuntimeWarning):
    """Some replicas diverged (non-finite or past the divergence threshold)."""


class Stats(NamedTuple):
    """Streamed statistics of a simulated observable ``x`` (usually the parameters ``w``).

    Attributes:
      mean: ``(D,)`` average of ``x`` over replicas and post-burn-in steps.
      cov: ``(D, D)`` pooled covariance of ``x`` about ``mean``.
      mean_stderr: ``(D,)`` standard error of ``mean`` (batch means over replica groups).
      cov_stderr: ``(D, D)`` standard error of each entry of ``cov``.
      steps: total steps run per replica (burn-in included).
      replicas: number of replicas.
      burn_in: steps discarded before averaging.
      diverged: number of replicas that diverged (excluded from the statistics from then on).
      group_mean: ``(G, D)`` per-group means (independent replica groups).
      group_cov: ``(G, D, D)`` per-group covariances.
      group_count: ``(G,)`` samples per group.
      trajectory: ``(T, record_replicas, D)`` thinned trajectory, or ``None``.
    """

    mean: jax.Array
    cov: jax.Array
    mean_stderr: jax.Array
    cov_stderr: jax.Array
    steps: int
    replicas: int
    burn_in: int
    diverged: jax.Array
    group_mean: jax.Array
    group_cov: jax.Array
    group_count: jax.Array
    trajectory: jax.Array | None = None

    @property
    def groups(self) -> int:
        return int(self.group_mean.shape[0])


def default_groups(replicas: int) -> int:
    """Largest of 32, 16, 8 dividing ``replicas`` (the number of independent replica groups)."""
    for g in (32, 16, 8):
        if replicas % g == 0:
            return g
    raise ValueError(
        f"replicas={replicas}: standard errors need the replicas split into at least 8 equal "
        "groups; use a multiple of 8 (e.g. 1024, 4096) or pass groups= explicitly."
    )


def _merge(acc, x, alive):
    """Chan/Welford merge of one step's samples into each group's (n, mean, M2)."""
    n, mu, m2 = acc  # (G,), (G, D), (G, D, D)
    w = alive.astype(x.dtype)  # (G, q)
    nb = jnp.sum(w, axis=1)
    safe = jnp.maximum(nb, 1.0)
    xb = jnp.where(alive[..., None], x, 0.0)
    mb = jnp.sum(xb, axis=1) / safe[:, None]
    dev = jnp.where(alive[..., None], x - mb[:, None, :], 0.0)
    m2b = jnp.einsum("gqd,gqe->gde", dev, dev)
    n_new = n + nb
    frac = nb / jnp.maximum(n_new, 1.0)
    delta = mb - mu
    mu_new = mu + delta * frac[:, None]
    m2_new = m2 + m2b + jnp.einsum("gd,ge->gde", delta, delta) * (n * frac)[:, None, None]
    return n_new, mu_new, m2_new


def run_replicas(
    key: jax.Array,
    init_fn: Callable[[jax.Array], Any],
    step_fn: Callable[[jax.Array, Any], Any],
    observe_fn: Callable[[Any], jax.Array],
    *,
    steps: int,
    replicas: int,
    burn_in: int,
    groups: int | None = None,
    record_every: int | None = None,
    record_replicas: int = 8,
    divergence_threshold: float = 1e8,
    stats_dtype=None,
    warn: bool = True,
) -> Stats:
    """Run ``steps`` steps of ``replicas`` replicas and stream the statistics of ``observe_fn``.

    ``steps``, ``replicas``, ``burn_in``, ``groups`` and ``record_every`` are static: changing
    them recompiles.  See the module docstring for the statistics and divergence rules.
    """
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    stats = scan_replicas(key, init_fn, step_fn, observe_fn, steps=steps, replicas=replicas,
                          burn_in=burn_in, groups=groups, record_every=record_every,
                          record_replicas=record_replicas,
                          divergence_threshold=divergence_threshold, stats_dtype=stats_dtype)
    if warn:
        warn_divergence(stats, divergence_threshold)
    return stats


def check_run_args(steps, replicas, burn_in, groups=None, record_every=None, record_replicas=8):
    """Validate the static run arguments; returns them normalised (``groups`` resolved)."""
    steps = _checks.check_int("steps", steps, 1)
    replicas = _checks.check_int("replicas", replicas, 2)
    burn_in = _checks.check_int("burn_in", burn_in, 0)
    if burn_in >= steps:
        raise ValueError(f"burn_in={burn_in} must be smaller than steps={steps}.")
    groups = default_groups(replicas) if groups is None else _checks.check_int("groups", groups, 2)
    if replicas % groups:
        raise ValueError(f"replicas={replicas} is not divisible by groups={groups}.")
    if record_every is not None:
        record_every = _checks.check_int("record_every", record_every, 1)
        record_replicas = min(_checks.check_int("record_replicas", record_replicas, 1), replicas)
    return steps, replicas, burn_in, groups, record_every, record_replicas


def warn_divergence(stats: Stats, divergence_threshold: float = 1e8) -> None:
    """Warn (``DivergenceWarning``) when a concrete ``stats`` reports diverged replicas."""
    if _checks.is_concrete(stats.diverged) and int(stats.diverged) > 0:
        warnings.warn(
            f"{int(stats.diverged)} of {stats.replicas} replicas diverged (non-finite or |x| > "
            f"{divergence_threshold:g}); they are excluded from the statistics from the step they "
            "diverged on. The learning rate may be past the (mean-square) stability bound.",
            DivergenceWarning,
            stacklevel=3,
        )


def scan_replicas(key, init_fn, step_fn, observe_fn, *, steps, replicas, burn_in, groups,
                  record_every=None, record_replicas=8, divergence_threshold=1e8,
                  stats_dtype=None) -> Stats:
    """The traceable core of :func:`run_replicas` (no validation, no warning): call it inside a
    front-end's ``jax.jit`` with the static arguments already checked by :func:`check_run_args`."""
    if stats_dtype is None:
        stats_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    stats, traj = _run(key, init_fn, step_fn, observe_fn, steps, replicas, burn_in, groups,
                       record_every, record_replicas, divergence_threshold, stats_dtype)
    return stats._replace(trajectory=traj)


def _run(key, init_fn, step_fn, observe_fn, steps, replicas, burn_in, groups, record_every,
         record_replicas, threshold, stats_dtype):
    k_init, k_run = jax.random.split(key)
    state = init_fn(k_init)
    x0 = observe_fn(state)
    if x0.ndim != 2 or x0.shape[0] != replicas:
        raise ValueError(
            f"observe_fn must return a (replicas, D) = ({replicas}, D) array; got {x0.shape}."
        )
    d = x0.shape[1]
    q = replicas // groups
    alive0 = jnp.ones((replicas,), dtype=bool)
    acc0 = (
        jnp.zeros((groups,), stats_dtype),
        jnp.zeros((groups, d), stats_dtype),
        jnp.zeros((groups, d, d), stats_dtype),
    )

    def one_step(carry, t):
        # The step's key is derived from its index inside the scan, so nothing of size O(steps)
        # is ever materialised (memory independent of the run length).
        state, alive, acc = carry
        state = step_fn(jax.random.fold_in(k_run, t), state)
        x = observe_fn(state)
        ok = jnp.all(jnp.isfinite(x) & (jnp.abs(x) <= threshold), axis=1)
        alive = alive & ok
        xs = x.astype(stats_dtype).reshape(groups, q, d)
        use = alive & (t >= burn_in)
        acc = _merge(acc, xs, use.reshape(groups, q))
        return (state, alive, acc), None

    def run_steps(carry, start, length):
        def body(c, _):
            inner, t = c
            inner, _ = one_step(inner, t)
            return (inner, t + 1), None

        (carry, _), _ = lax.scan(body, (carry, start + 1), None, length=length)
        return carry

    carry = (state, alive0, acc0)
    traj = None
    if record_every is None:
        carry = run_steps(carry, 0, steps)
    else:
        n_rec = steps // record_every

        def block(carry, b):
            carry = run_steps(carry, b * record_every, record_every)
            return carry, observe_fn(carry[0])[:record_replicas]

        carry, traj = lax.scan(block, carry, jnp.arange(n_rec))  # O(steps/record_every): the output
        if steps - n_rec * record_every:
            carry = run_steps(carry, n_rec * record_every, steps - n_rec * record_every)
    _, alive, (n, mu, m2) = carry
    return _finalize(n, mu, m2, steps, replicas, burn_in, alive), traj


def _finalize(n, mu, m2, steps, replicas, burn_in, alive) -> Stats:
    g = n.shape[0]
    n_tot = jnp.sum(n)
    mean = jnp.sum(mu * n[:, None], axis=0) / n_tot
    dev = mu - mean[None, :]
    m2_tot = jnp.sum(m2, axis=0) + jnp.einsum("g,gd,ge->de", n, dev, dev)
    cov = m2_tot / n_tot
    group_cov = m2 / jnp.maximum(n, 1.0)[:, None, None]
    mean_se = jnp.std(mu, axis=0, ddof=1) / math.sqrt(g)
    cov_se = jnp.std(group_cov, axis=0, ddof=1) / math.sqrt(g)
    return Stats(
        mean=mean, cov=cov, mean_stderr=mean_se, cov_stderr=cov_se, steps=steps,
        replicas=replicas, burn_in=burn_in, diverged=replicas - jnp.sum(alive),
        group_mean=mu, group_cov=group_cov, group_count=n,
    )


def estimate(stats: Stats, fn: Callable[[jax.Array, jax.Array], jax.Array]):
    """Value and standard error of ``fn(mean, cov)`` -- any function of the first two moments.

    The value uses the pooled moments; the standard error is the spread of ``fn`` over the
    independent replica groups divided by ``sqrt(G)`` (batch means; delta-method free).

    Example:
      >>> loss, loss_se = estimate(stats, lambda m, c: 0.5 * jnp.trace(H @ c))  # doctest: +SKIP
    """
    value = fn(stats.mean, stats.cov)
    per_group = jax.vmap(fn)(stats.group_mean, stats.group_cov)
    se = jnp.std(per_group, axis=0, ddof=1) / math.sqrt(stats.groups)
    return value, se
