"""Cross-checks of :mod:`sgdtheory.quadratic` against :func:`sgdtheory.simulate.quadratic_sgd`.

Each check compares the exact stationary covariance (worst entry, Bonferroni-corrected threshold)
and the stationary loss ``tr(H Sigma)/2``.  Where the continuous-time (small-lr) formula should fail
(``lr * h_max`` of order 1) it is compared too, with ``expect="disagree"``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import quadratic as q
from sgdtheory import simulate
from sgdtheory.crosscheck._registry import register
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar

# A 2-D problem whose Hessian and noise covariance do not commute.
_H2 = np.array([[1.0, 0.3], [0.3, 0.4]])
_C2 = np.array([[0.5, -0.2], [-0.2, 1.0]])


def _random_problem(d: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    h = a @ a.T / d + 0.2 * np.eye(d)
    b = rng.normal(size=(d, d))
    c = b @ b.T / d
    return h, c


def _budget(mode, quick=(1024, 10_000), full=(4096, 50_000)):
    return quick if mode == "quick" else full


def _sim_and_compare(key, mode, h, c, lr, params, *, theory_kw=None, sim_kw=None, continuous=None,
                     continuous_expect="disagree", burn_in=2_000, budget=None):
    """Run the simulator and build the standard rows (covariance, loss, optional continuous)."""
    replicas, steps = budget or _budget(mode)
    theory_kw = dict(theory_kw or {})
    sim_kw = sim_kw or {}
    sig = q.stationary_covariance(h, c, theory_kw.pop("lr", lr), **theory_kw)
    # An optax optimizer carries its own learning rate: the simulator then takes lr=None.
    stats = simulate.quadratic_sgd(key, h, c, None if "optimizer" in sim_kw else lr, steps=steps,
                                   replicas=replicas, burn_in=burn_in, **sim_kw)
    hj = jnp.asarray(h)
    loss = lambda m, cv: 0.5 * jnp.sum(hj * cv)  # noqa: E731
    rows = [
        compare_matrix("Σ", params, sig, stats),
        compare_scalar("loss ½tr(HΣ)", params, 0.5 * np.sum(h * np.asarray(sig)), stats, loss),
    ]
    if continuous is not None:
        sig_c = q.stationary_covariance_continuous(h, c, lr, **continuous)
        rows.append(compare_scalar(
            "loss, continuous-time", params, 0.5 * np.sum(h * np.asarray(sig_c)), stats, loss,
            expect=continuous_expect, note="small-lr formula"))
    return rows


@register("quadratic/sgd-small-lr", "plain SGD, lr*h_max = 0.01: exact and continuous-time agree",
          tags=("quadratic",))
def _sgd_small(key, mode):
    lr = 0.01 / np.linalg.eigvalsh(_H2)[-1]
    # At lr*h_max = 0.01 the continuous-time formula is within 0.5 % of the exact one, below the
    # simulation's resolution (~1 %): here it must agree.
    return _sim_and_compare(key, mode, _H2, _C2, lr, "D=2, lr·h_max=0.01", continuous={},
                            continuous_expect="agree", burn_in=3_000)


@register("quadratic/sgd-large-lr",
          "plain SGD, lr*h_max = 1.6: exact agrees, continuous-time fails", tags=("quadratic",))
def _sgd_large(key, mode):
    lr = 1.6 / np.linalg.eigvalsh(_H2)[-1]
    return _sim_and_compare(key, mode, _H2, _C2, lr, "D=2, lr·h_max=1.6", continuous={})


@register("quadratic/momentum",
          "heavy ball mu=0.9 at lr*h_max = 2.75 > 2 (stable only with momentum)", tags=("quadratic",))
def _momentum(key, mode):
    lr = 2.75 / np.linalg.eigvalsh(_H2)[-1]
    return _sim_and_compare(key, mode, _H2, _C2, lr, "μ=0.9, lr·h_max=2.75",
                            theory_kw={"momentum": 0.9}, sim_kw={"momentum": 0.9},
                            continuous={"momentum": 0.9})


@register("quadratic/nesterov", "Nesterov momentum mu=0.5 (optax convention)", tags=("quadratic",))
def _nesterov(key, mode):
    opt = q.nesterov(0.5)
    lr = 0.8 * float(q.max_stable_lr(_H2, optimizer=opt))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "μ=0.5, lr=0.8·lr_max",
                            theory_kw={"optimizer": opt},
                            sim_kw={"momentum": 0.5, "nesterov": True})


@register("quadratic/weight-decay",
          "coupled weight decay gamma=0.3 moves the mean to (H+gamma)^-1 H w*", tags=("quadratic",))
def _weight_decay(key, mode):
    w_star = np.array([1.0, -2.0])
    gamma = 0.3
    lr = 0.8 * float(q.max_stable_lr(_H2, weight_decay=gamma))
    params = "γ=0.3, lr=0.8·lr_max"
    rows = _sim_and_compare(key, mode, _H2, _C2, lr, params,
                            theory_kw={"weight_decay": gamma},
                            sim_kw={"weight_decay": gamma, "w_star": w_star})
    replicas, steps = _budget(mode)
    stats = simulate.quadratic_sgd(jax.random.fold_in(key, 1), _H2, _C2, lr, steps=steps // 2,
                                   replicas=replicas, burn_in=2_000, weight_decay=gamma,
                                   w_star=w_star)
    mean = np.linalg.solve(_H2 + gamma * np.eye(2), _H2 @ w_star)
    rows.append(compare_matrix("E w", params, mean, stats, which="mean"))
    return rows


@register("quadratic/negative-weight-decay",
          "weight decay gamma=-0.1 (allowed while H + gamma I > 0)", tags=("quadratic",))
def _negative_weight_decay(key, mode):
    gamma = -0.1
    lr = 0.5 * float(q.max_stable_lr(_H2, weight_decay=gamma))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "γ=-0.1, lr=0.5·lr_max",
                            theory_kw={"weight_decay": gamma}, sim_kw={"weight_decay": gamma},
                            burn_in=4_000)


@register("quadratic/preconditioner", "SGD with a fixed non-diagonal SPD preconditioner P",
          tags=("quadratic",))
def _preconditioner(key, mode):
    p = np.array([[1.5, 0.4], [0.4, 0.8]])
    lr = 0.85 * float(q.max_stable_lr(_H2, preconditioner=p, momentum=0.3))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "P non-diag, μ=0.3, lr=0.85·lr_max",
                            theory_kw={"preconditioner": p, "momentum": 0.3},
                            sim_kw={"preconditioner": p, "momentum": 0.3})


@register("quadratic/noncommuting-10d", "D=10, random non-commuting H and C, lr = 0.8 lr_max",
          tags=("quadratic",))
def _ten_d(key, mode):
    h, c = _random_problem(10, 7)
    lr = 0.8 * float(q.max_stable_lr(h))
    budget = (1024, 8_000) if mode == "quick" else (4096, 40_000)
    return _sim_and_compare(key, mode, h, c, lr, "D=10, lr=0.8·lr_max", continuous={},
                            burn_in=3_000, budget=budget)


@register("quadratic/pnm", "positive-negative momentum (Xie et al. 2021), beta0=1, beta1=0.9",
          tags=("quadratic",))
def _pnm(key, mode):
    opt = q.pnm(1.0, 0.9)
    lr = 0.7 * float(q.max_stable_lr(_H2, optimizer=opt))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "β0=1, β1=0.9, lr=0.7·lr_max",
                            theory_kw={"optimizer": opt},
                            sim_kw={"optimizer": simulate.pnm(lr, 1.0, 0.9)}, burn_in=3_000)


@register("quadratic/usam", "unnormalized SAM, radius 0.5, same minibatch for both gradients",
          tags=("quadratic",))
def _usam(key, mode):
    opt = q.usam(0.5)
    lr = 0.8 * float(q.max_stable_lr(_H2, optimizer=opt))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "ρ=0.5, lr=0.8·lr_max",
                            theory_kw={"optimizer": opt}, sim_kw={"sam_radius": 0.5})


@register("quadratic/usam-weight-decay",
          "unnormalized SAM (radius 0.5) with weight decay γ=0.4: the decay is part of the loss, so "
          "the SAM ascent sees it, in theory and simulator alike", tags=("quadratic",))
def _usam_wd(key, mode):
    opt = q.usam(0.5)
    lr = 0.8 * float(q.max_stable_lr(_H2, optimizer=opt, weight_decay=0.4))
    return _sim_and_compare(key, mode, _H2, _C2, lr, "ρ=0.5, γ=0.4, lr=0.8·lr_max",
                            theory_kw={"optimizer": opt, "weight_decay": 0.4},
                            sim_kw={"sam_radius": 0.5, "weight_decay": 0.4})


@register("quadratic/optax-vocabulary",
          "one optax object in theory and simulator: chain(add_decayed_weights(0.1), "
          "sgd(lr, momentum=0.7, nesterov=True)), linearised exactly for the theory",
          tags=("quadratic", "composable"))
def _optax_vocabulary(key, mode):
    factory = lambda lr: optax.chain(optax.add_decayed_weights(0.1),  # noqa: E731
                                     optax.sgd(lr, momentum=0.7, nesterov=True))
    lr = 0.8 * float(q.max_stable_lr(_H2, optimizer=factory))
    opt = factory(lr)
    return _sim_and_compare(key, mode, _H2, _C2, lr, "Nesterov μ=0.7, γ=0.1 (chain), lr=0.8·lr_max",
                            theory_kw={"optimizer": opt, "lr": None},
                            sim_kw={"optimizer": opt})


@register("quadratic/damped-newton",
          "damped Newton with momentum μ=0.5 at lr=0.8·2(1+μ): the closed form "
          "(1+μ)/(1-μ)·λ/(2(1+μ)-λ)·H⁻¹CH⁻¹ against SGD preconditioned by H⁻¹", tags=("quadratic",))
def _damped_newton(key, mode):
    mu = 0.5
    lr = 0.8 * 2 * (1 + mu)
    replicas, steps = _budget(mode)
    sig = q.damped_newton_covariance(_H2, _C2, lr, momentum=mu)
    stats = simulate.quadratic_sgd(key, _H2, _C2, lr, momentum=mu,
                                   preconditioner=np.linalg.inv(_H2), steps=steps,
                                   replicas=replicas, burn_in=2_000)
    return [compare_matrix("Σ, closed form", "μ=0.5, lr=2.4", sig, stats)]


@register("quadratic/escape-efficiency",
          "escape efficiency E_d(t) = E[L(w_t)] from w_0 = w* (p1 Thm 7), lr·h_max = 1.6, at a few t; "
          "the continuous-time E_c(t) should fail", tags=("quadratic",))
def _escape_efficiency(key, mode):
    lr = 1.6 / np.linalg.eigvalsh(_H2)[-1]
    replicas = 8192 if mode == "quick" else 65_536
    hj = jnp.asarray(_H2)
    loss = lambda m, cv: 0.5 * jnp.sum(hj * (cv + jnp.outer(m, m)))  # noqa: E731  about w* = 0
    rows = []
    for i, t in enumerate((1, 8) if mode == "quick" else (1, 5, 30, 200)):
        stats = simulate.quadratic_sgd(jax.random.fold_in(key, i), _H2, _C2, lr, steps=t,
                                       burn_in=t - 1, replicas=replicas, noise="rademacher",
                                       block=1)
        params = f"lr·h_max=1.6, t={t}"
        rows.append(compare_scalar("E_d(t)", params, q.escape_efficiency(_H2, _C2, lr, t), stats,
                                   loss))
        rows.append(compare_scalar("E_c(t), continuous", params,
                                   q.escape_efficiency(_H2, _C2, lr, t, continuous=True), stats,
                                   loss, expect="disagree", note="p1 Cor 4: E_d >= E_c"))
    return rows


@register("quadratic/bayes-optimal-lr",
          "stationary covariance at the Bayes-optimal lr (p1 Thm 6) with C = (N-S)/(NS)·H, "
          "N/S = 4, H = [[1.05, 0.05], [0.05, 0.15]]: λ*·h_max = 0.69", tags=("quadratic",))
def _bayes_optimal_lr(key, mode):
    h = np.diag([1.0, 0.1]) + 0.05
    n, s = 4, 1
    lam = float(q.bayes_optimal_lr(h, n, s))
    c = (n - s) / (n * s) * h
    replicas, steps = (512, 2_500) if mode == "quick" else (4096, 40_000)
    stats = simulate.quadratic_sgd(key, h, c, lam, steps=steps, replicas=replicas, burn_in=500,
                                   noise="rademacher")
    params = f"N/S=4, λ*={lam:.4g}"
    hj = jnp.asarray(h)
    loss = lambda m, cv: 0.5 * jnp.sum(hj * cv)  # noqa: E731
    sig_c = q.stationary_covariance_continuous(h, c, lam)
    return [compare_matrix("Σ(λ*)", params, q.stationary_covariance(h, c, lam), stats),
            compare_scalar("loss at λ*, continuous-time Σ", params,
                           0.5 * np.sum(h * np.asarray(sig_c)), stats, loss, expect="disagree",
                           note="small-lr formula")]
