"""Cross-checks of :mod:`sgdtheory.adaptive`.

* Adam's update under i.i.d. Gaussian gradients: ``optax.adam`` itself, vmapped over many replicas
  (standard errors from independent replica groups), against the exact first- and second-step
  moments and the delta-method approximation (which must fail at ``t = 1`` and hold at large ``t``);
* Adam vs LaProp boundedness: the worst-case sequence and the single-spike response, run through
  ``optax.adam`` and :func:`sgdtheory.optim.laprop` (deterministic: the "standard error" is the
  float64 round-off scale);
* mean-field fixed points: interacting replicas that share the preconditioner of the *ensemble*
  moments (the mean-field dynamics) stay at an attracting fixed point and leave an unstable one;
  a per-replica EMA-Adam with purely multiplicative noise, run with
  :func:`sgdtheory.simulate.minibatch_sgd`, collapses far below p1 Thm 10's value.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import adaptive, optim, simulate
from sgdtheory.crosscheck._registry import Comparison, register
from sgdtheory.crosscheck._util import compare_scalar, z_threshold

__all__ = ["simulate_update_moments", "mean_field_particles", "ema_adam_log_abs_w"]


# ------------------------------------------------------------------------------------------------
# simulators used by the rows (and by tests/test_adaptive.py)
# ------------------------------------------------------------------------------------------------


def simulate_update_moments(key, optimizer, mean, std, ts, *, replicas: int, groups: int = 32):
    """Moments of ``-optimizer.update`` (one coordinate, i.i.d. N(mean, std^2) gradients) at steps ``ts``.

    Returns a dict ``{name: (value, stderr)}`` per step for ``var``, ``abs_var``, ``mean``:
    ``result[t]["var"]``.  Replicas are vmapped; per-step group sums are streamed (nothing of size
    ``replicas * steps`` is stored); the standard error is the spread of the ``groups`` independent
    group estimates over ``sqrt(groups)``.
    """
    ts = tuple(int(t) for t in ts)
    steps = max(ts)
    if replicas % groups:
        raise ValueError(f"replicas={replicas} must be a multiple of groups={groups}.")
    per = replicas // groups
    mean, std = jnp.asarray(mean, float), jnp.asarray(std, float)

    @jax.jit
    def run(key):
        state = jax.vmap(lambda _: optimizer.init(jnp.zeros(())))(jnp.arange(replicas))

        def step(state, k):
            g = mean + std * jax.random.normal(k, (replicas,))
            u, state = jax.vmap(lambda gi, si: optimizer.update(gi, si, jnp.zeros(())))(g, state)
            u = -u.reshape(groups, per)
            sums = jnp.stack([u.mean(1), (u * u).mean(1), jnp.abs(u).mean(1)], axis=-1)
            return state, sums

        return jax.lax.scan(step, state, jax.random.split(key, steps))[1]  # (steps, G, 3)

    sums = np.asarray(run(key))
    out = {}
    for t in ts:
        m1, m2, a1 = sums[t - 1, :, 0], sums[t - 1, :, 1], sums[t - 1, :, 2]
        corr = per / (per - 1)
        var_g, avar_g = (m2 - m1**2) * corr, (m2 - a1**2) * corr
        se = lambda x: float(np.std(x, ddof=1) / math.sqrt(groups))  # noqa: E731
        out[t] = {"var": (float(var_g.mean()), se(var_g)), "abs_var": (float(avar_g.mean()), se(avar_g)),
                  "mean": (float(m1.mean()), se(m1))}
    return out


def mean_field_particles(key, curvature, lr, c, a0, *, preconditioner: str, steps: int,
                         particles: int, ensembles: int):
    r"""Interacting-replica (McKean--Vlasov) simulation of the mean-field dynamics, one direction.

    ``ensembles`` independent ensembles of ``particles`` replicas start from
    :math:`w \sim \mathcal N(0, a_0)`; at every step all replicas of an ensemble share
    :math:`\ell_t = \lambda/(k^2 \bar a_t)` (``"ngd"``) or :math:`\lambda/\sqrt{(1+c)k^2\bar a_t}`
    (``"adam"``), :math:`\bar a_t` the ensemble's mean of :math:`w^2`, and each replica takes
    :math:`w \leftarrow w - \ell_t (k w + \eta)` with :math:`\eta \sim \mathcal N(0, c k^2 \bar a_t)`:
    p1's :math:`C = cK\Sigma K` with :math:`\Sigma` the ensemble covariance.  Given
    :math:`\ell_t` each replica is linear with Gaussian noise, so the law stays Gaussian and
    :math:`\bar a_t` follows :func:`sgdtheory.adaptive.mean_field_map` up to
    :math:`O(1/\sqrt{\rm particles})`.  (Noise proportional to each replica's *own* :math:`w^2`
    has the same second-moment map but a heavy-tailed law -- tail index exactly 2 at the fixed
    point -- so a finite ensemble's :math:`\bar a_t` would not concentrate.)
    Returns ``(final, average)``: per ensemble, :math:`\bar a_T` and the average of
    :math:`\bar a_t` over the second half of the run, each ``(ensembles,)``.
    """
    if preconditioner not in ("ngd", "adam"):
        raise ValueError(f"preconditioner must be 'ngd' or 'adam'; got {preconditioner!r}.")
    final, average = _particles(key, jnp.asarray(float(curvature)), jnp.asarray(float(lr)),
                                jnp.asarray(float(c)), jnp.asarray(float(a0)), preconditioner,
                                int(steps), int(particles), int(ensembles))
    return np.asarray(final), np.asarray(average)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _particles(key, k, lam, c, a0, preconditioner, steps, particles, ensembles):
    k0, k1 = jax.random.split(key)
    w = jnp.sqrt(a0) * jax.random.normal(k0, (ensembles, particles))

    def step(w, kk):
        a = jnp.mean(w * w, axis=1, keepdims=True)
        ell = lam / (k * k * a) if preconditioner == "ngd" else lam / jnp.sqrt((1 + c) * k * k * a)
        eta = jnp.sqrt(c * k * k * a) * jax.random.normal(kk, w.shape)
        return w - ell * (k * w + eta), a[:, 0]

    w, traj = jax.lax.scan(step, w, jax.random.split(k1, steps))
    return jnp.mean(w * w, axis=1), jnp.mean(traj[steps // 2:], axis=0)


def ema_adam_log_abs_w(key, curvature, lr, c, b2, w0, *, steps: int, replicas: int):
    r"""Per-replica EMA-Adam (``optax.adam(lr, b1=0, b2, eps=0)``, i.e. bias-corrected RMSProp) on
    :math:`\tfrac12 k w^2` with purely multiplicative noise :math:`g = kw(1+\sqrt c z)`, simulated
    with :func:`sgdtheory.simulate.minibatch_sgd`; the :class:`~sgdtheory.simulate.Stats` of
    :math:`\log_{10}|w|` at the last step."""
    k, sc = jnp.asarray(float(curvature)), jnp.asarray(math.sqrt(float(c)))

    def gradient(w, batch):
        return k * w * (1 + sc * batch[0])

    data = simulate.Online(lambda kk: jax.random.normal(kk, (1,)), batch_size=1)
    return simulate.minibatch_sgd(
        key, None, jnp.full((1,), float(w0)), data, optax.adam(jnp.asarray(lr), b1=0.0, b2=b2, eps=0.0),
        gradient=gradient, steps=steps, replicas=replicas, burn_in=steps - 1,
        observe=lambda w, s: jnp.log10(jnp.abs(w)), on_divergence="ignore")


def _exact_row(quantity, params, theory, value, note=""):
    """A deterministic comparison: the 'standard error' is the float64 round-off scale."""
    se = 1e-9 * max(1.0, abs(float(theory)))
    return Comparison(quantity, params, float(theory), float(value), se, note=note or "deterministic")


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------


@register("adaptive/adam-update-variance",
          "optax.adam on i.i.d. N(μ,σ²) gradients (β=(0.9,0.999)): exact t=1, t=2 moments agree; "
          "the delta-method approximation fails at t=1 and holds at t=300", tags=("adaptive",))
def _adam_variance(key, mode):
    replicas = 2**14 if mode == "quick" else 2**18
    mu, sig, b1, b2 = 0.5, 1.0, 0.9, 0.999
    res = simulate_update_moments(key, optax.adam(1.0, b1=b1, b2=b2), mu, sig, (1, 2, 300),
                                  replicas=replicas)
    zm = z_threshold(32)
    params = f"μ={mu},σ={sig}"
    e1 = adaptive.adam_update_moments_first_step(mu, sig, eps=1e-8)
    e2 = adaptive.adam_update_moments_second_step(mu, sig, b1, b2)
    rows = []
    for name, ex, t in (("t=1 exact", e1, 1), ("t=2 exact (ε=0)", e2, 2)):
        v, se = res[t]["var"]
        rows.append(Comparison(f"Var u, {name}", params, float(ex.var), v, se, z_max=zm))
    v, se = res[2]["abs_var"]
    rows.append(Comparison("Var|u|, t=2 exact (ε=0)", params, float(e2.abs_var), v, se, z_max=zm))
    for t, expect in ((1, "disagree"), (300, "agree")):
        ap = adaptive.adam_update_moments(t, mu, sig, b1, b2)
        v, se = res[t]["var"]
        rows.append(Comparison(f"Var u, t={t} delta method", params, float(ap.var), v, se,
                               expect=expect, z_max=zm,
                               note=f"{float(ap.var) / v - 1:+.1%} vs simulation"))
    return rows


@register("adaptive/update-bounds",
          "Adam's sup|u_t| attained by the worst-case sequence; one gradient spike: Adam grows "
          "like (β1/√β2)^t when β1>√β2, LaProp stays ≤ 1", tags=("adaptive",))
def _bounds(key, mode):
    del key, mode
    rows = []
    for b1, b2, t in ((0.9, 0.999, 50), (0.99, 0.9, 60)):
        g = adaptive.adam_worst_case_gradients(b1, b2, t)[:, None]
        u = adaptive.optimizer_updates(optax.adam(1.0, b1=b1, b2=b2, eps=0.0), g)
        rows.append(_exact_row("|u_t| Adam, worst case", f"β=({b1},{b2}),t={t}",
                               adaptive.adam_update_bound(b1, b2, t), jnp.abs(u[-1, 0])))
    b1, b2, t = 0.99, 0.9, 400
    g = jnp.zeros((t, 1)).at[0, 0].set(1.0)
    imp = adaptive.impulse_updates(jnp.arange(1.0, t + 1), b1, b2, eps=1e-15)
    ua = adaptive.optimizer_updates(optax.adam(1.0, b1=b1, b2=b2, eps=1e-15), g)[:, 0]
    ul = adaptive.optimizer_updates(optim.laprop(1.0, b1, b2, eps=1e-15), g)[:, 0]
    rows.append(_exact_row("max|u| Adam, one spike", f"β=({b1},{b2}),T={t}",
                           jnp.max(jnp.abs(imp.adam)), jnp.max(jnp.abs(ua)),
                           note=f"Adam reaches {float(jnp.max(jnp.abs(ua))):.3g} x lr"))
    rows.append(_exact_row("max|u| LaProp, one spike", f"β=({b1},{b2}),T={t}",
                           jnp.max(jnp.abs(imp.laprop)), jnp.max(jnp.abs(ul)),
                           note=f"bound {float(adaptive.laprop_update_bound(b1, b2)):.3g}"))
    return rows


def _time_average_row(quantity, params, theory, averages, expect, note):
    n = len(averages)
    return Comparison(quantity, params, theory, float(averages.mean()),
                      float(averages.std(ddof=1) / math.sqrt(n)), expect=expect,
                      z_max=z_threshold(n), note=note)


def _particle_budget(mode):
    return (2048, 32) if mode == "quick" else (8192, 64)


def _mean_field_row(key, mode, fp, preconditioner, label, lam, k, c, expect, note, steps=60):
    """E w² of interacting replicas (steps/2..steps) against the fixed point ``fp`` (1-D)."""
    particles, ensembles = _particle_budget(mode)
    a_star = float(fp.sigma[0, 0])
    _, avg = mean_field_particles(key, k, lam, c, a_star, preconditioner=preconditioner,
                                  steps=steps, particles=particles, ensembles=ensembles)
    slope = round(float(fp.jacobian[0, 0, 0]), 12) + 0.0  # no "-0"
    if callable(note):
        note = note(float(avg.mean()) / a_star - 1)
    return _time_average_row(f"E w², steps {steps // 2}-{steps} ({label})",
                             f"c={c},slope={slope:+.3g}", a_star, avg, expect, note)


@register("adaptive/ngd-mean-field",
          "NGD Λ=λ(KΣK)⁻¹ with C=cKΣK, interacting replicas (mean-field dynamics): E w² stays at "
          "p1 Eq. 111 for c=3 (slope 0), leaves it for c=0.5 (slope -1.67)", tags=("adaptive",))
def _ngd_mean_field(key, mode):
    lam, k = 0.1, 1.0
    repelling = lambda off: f"repelling: {off:+.0%} off the fixed point"  # noqa: E731
    return [_mean_field_row(jax.random.fold_in(key, kk), mode,
                            adaptive.ngd_fixed_point_proportional(jnp.eye(1) * k, c, lam), "ngd",
                            "NGD", lam, k, c, expect,
                            "attracting" if expect == "agree" else repelling)
            for c, kk, expect in ((3.0, 0, "agree"), (0.5, 1, "disagree"))]


@register("adaptive/adam-like-mean-field",
          "Adam-like Λ=λE[ggᵀ]^(-1/2), C=cKΣK, c=0.5: mean-field replicas stay at p1 Thm 10 "
          "(slope -1/3); a per-replica EMA-Adam (minibatch_sgd) collapses |w|→0", tags=("adaptive",))
def _adam_like_mean_field(key, mode):
    lam, k, c = 0.1, 1.0, 0.5
    k1, k2 = jax.random.split(key)
    fp = adaptive.adam_like_fixed_point(jnp.eye(1) * k, c, lam)
    a_star = float(fp.sigma[0, 0])
    rows = [_mean_field_row(k1, mode, fp, "adam", "Adam-like, mean field", lam, k, c, "agree",
                            "attracting")]
    st = ema_adam_log_abs_w(k2, k, lam, c, 0.99, math.sqrt(a_star),
                            steps=500 if mode == "quick" else 2000, replicas=256)
    rows.append(compare_scalar("mean log10|w|, per-replica EMA-Adam β2=0.99", f"c={c},λ={lam}",
                               0.5 * math.log10(a_star), st, lambda m, cv: m[0], expect="disagree",
                               note="collapse |w|→0: Thm 10's value is not reached",
                               moment_order=1))
    return rows
