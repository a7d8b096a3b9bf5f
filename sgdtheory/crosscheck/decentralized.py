"""Cross-checks of :mod:`sgdtheory.decentralized` against :func:`sgdtheory.simulate.dpsgd`.

Rows: the exact consensus spread and mean-mode variance on a ring of 8 learners (self-weight 1/3,
so the mix-then-step bound is lr*h < 2/3) for both orders; past that bound (lr*h = 0.8) the exact
*transient* spread from a consensus start (it grows like 1.133^(2t)) while the mean stays
stationary, and the gradient-then-mix stationary spread -- finite there -- failing for
mix-then-step (``expect="disagree"``: the two orders differ); the effective learning rate on a
quartic, measured with the mean pinned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sgdtheory import decentralized as dc
from sgdtheory import simulate
from sgdtheory.crosscheck._registry import register
from sgdtheory.crosscheck._util import compare_scalar

_N, _LR, _V = 8, 0.1, 1.0
_W = dc.ring_mixing(_N)
# Additive Gaussian gradient noise of variance 1 for every learner: loss(w, z) = h w^2/2 + z w.
_NOISE = simulate.Online(lambda k, shape: jax.random.normal(k, shape), 1, vectorized=True)


def _quadratic_run(key, h, order, *, steps, replicas, burn_in):
    h_arr = jnp.asarray(h)  # data, not a literal: one compiled program for every h
    loss = lambda w, z: 0.5 * h_arr * w ** 2 + z * w  # noqa: E731
    return simulate.dpsgd(key, loss, jnp.asarray(0.0), _NOISE, _W, jnp.asarray(_LR), steps=steps,
                          replicas=replicas, burn_in=burn_in, order=order,
                          on_divergence="ignore")


def _spread_rows(key, mode, h, order):
    replicas, steps = (512, 2000) if mode == "quick" else (4096, 20_000)
    stats = _quadratic_run(key, h, order, steps=steps, replicas=replicas, burn_in=300)
    p = f"ring n=8, {order}, lr·h={_LR * h:g}"
    return [
        compare_scalar("consensus spread σ_δ²", p, dc.consensus_spread(_W, h, _LR, _V, order=order),
                       stats, lambda m, c: m[1]),
        compare_scalar("Var of learners' mean", p, dc.mean_variance(_W, h, _LR, _V), stats,
                       lambda m, c: c[0, 0]),
    ]


@register("decentralized/spread-mix-then-step",
          "DPSGD ring n=8, mix-then-step (D-PSGD), lr*h = 0.5 < 2/3: exact spread and mean variance",
          tags=("decentralized",))
def _spread_mts(key, mode):
    return _spread_rows(key, mode, 5.0, "mix_then_step")


@register("decentralized/spread-gradient-then-mix",
          "DPSGD ring n=8, gradient-then-mix, lr*h = 1.5 (past the mix-then-step bound, stable "
          "here): exact spread and mean variance", tags=("decentralized",))
def _spread_gtm(key, mode):
    return _spread_rows(key, mode, 15.0, "gradient_then_mix")


@register("decentralized/past-consensus-bound",
          "mix-then-step at lr*h = 0.8 > 1 + omega_min = 2/3: the spread grows (exact transient) "
          "while the learners' mean stays stationary", tags=("decentralized",))
def _past_bound(key, mode):
    h, t = 8.0, 60  # |omega_min - lr h| = 1.1333: the spread grows ~ 1.1333^(2t) ~ 3e3 by t = 60
    replicas = 4096 if mode == "quick" else 32_768
    stats = _quadratic_run(key, h, "mix_then_step", steps=t, replicas=replicas, burn_in=t - 1)
    p = f"ring n=8, lr·h=0.8, step t={t}"
    return [
        compare_scalar("spread at step t (exact transient)", p,
                       dc.consensus_spread_after(_W, h, _LR, _V, t), stats, lambda m, c: m[1],
                       note=f"×{float(dc.consensus_spread_after(_W, h, _LR, _V, t) / dc.consensus_spread_after(_W, h, _LR, _V, t // 2)):.3g} since t/2"),
        compare_scalar("Var of mean at step t (exact)", p,
                       dc.mean_variance_after(_W, h, _LR, _V, t), stats, lambda m, c: c[0, 0]),
        compare_scalar("spread vs gradient-then-mix stationary", p,
                       dc.consensus_spread(_W, h, _LR, _V, order="gradient_then_mix"), stats,
                       lambda m, c: m[1], expect="disagree",
                       note="the other order's (finite) spread: the orders differ"),
    ]


def _quartic(w):
    return 0.5 * w ** 2 + 0.25 * w ** 4


@register("decentralized/effective-lr",
          "effective learning rate (ours: projection) on L = w^2/2 + w^4/4 at mean 1, pinned mean",
          tags=("decentralized",))
def _effective_lr(key, mode):
    replicas, steps = (512, 2500) if mode == "quick" else (2048, 20_000)
    dl = jax.grad(_quartic)
    loss = lambda w, z: _quartic(w) + z * w  # noqa: E731
    obs = lambda p: jnp.stack([jnp.mean(jax.vmap(dl)(p)), jnp.mean((p - jnp.mean(p)) ** 2)])  # noqa: E731
    g, h = 2.0, 4.0  # L'(1), L''(1)
    rows = []
    for i, lr in enumerate((0.03, 0.1)):
        stats = simulate.dpsgd(jax.random.fold_in(key, i), loss, jnp.asarray(1.0), _NOISE, _W,
                               jnp.asarray(lr), steps=steps, replicas=replicas, burn_in=300,
                               pin_mean=jnp.asarray(1.0), observe=obs)
        p = f"ring n=8, lr={lr:g}, w̄=1"
        s_lin = dc.consensus_spread(_W, h, lr, _V)  # linearised: the quadratic theory at h = L''
        small = lr < 0.05
        # alpha_e / alpha measured = E[g_DP] / L'(w̄) (the mean pinned at w̄ = 1).
        rows.append(compare_scalar(
            "α_e/α (2nd order, σ_δ² at h=L'')", p, dc.effective_lr(_quartic, 1.0, lr, s_lin) / lr,
            stats, lambda m, c: m[0] / g, expect="agree" if small else "disagree",
            note=("small spread: O(σ⁴) terms below the SE" if small else
                  "O(σ⁴) terms resolved: σ_δ² at h=L'' is 0.6% low")))
        if small:
            rows.append(compare_scalar("σ_δ² at pinned mean vs h=L''", p, s_lin, stats,
                                       lambda m, c: m[1]))
    return rows
