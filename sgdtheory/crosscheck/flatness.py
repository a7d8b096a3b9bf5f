"""Cross-checks of :mod:`sgdtheory.flatness` and the minibatch-gradient order parameters of
:mod:`sgdtheory.noise` against simulated SGD.

* the landscape-shift model (online minibatches through ``minibatch_sgd`` + ``Online``): exact
  stationary covariance, and the variance–flatness exponent ψ measured the researcher's way (PCA of
  the simulated covariance, flatness by root solves on the loss, log–log fit) against the exact
  finite-α value; the α → 0 value ψ = 2 must be resolved as *different* at α k_max = 0.5;
* the Langevin counterpart (``quadratic_sgd`` with isotropic noise): ψ ≈ −2, the equilibrium sign;
* the alignment ratio R₂ of logistic-regression minibatch gradients drawn by the simulator's own
  samplers (``minibatch_sgd`` with a gradient-recording optax transform), both sampling rules,
  and from :func:`sgdtheory.noise.sample_minibatch_gradients`.

Standard errors come from independent replica groups (the simulators' ``Stats``) or independent
groups of sampled minibatches; thresholds are the registry's (t quantile, Bonferroni over matrix
entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import flatness as fl
from sgdtheory import noise, simulate
from sgdtheory.crosscheck._registry import Comparison, register
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar, z_threshold

# The minimal model: D curvatures log-spaced in [K_MIN, 1], a fixed random rotation.
_D, _K_MIN, _LR, _B, _S2, _T = 12, 0.02, 0.5, 4, 1.0, 0.01


def minimal_model(d: int = _D, k_min: float = _K_MIN, seed: int = 0):
    """Curvatures ``k``, rotation ``Q`` and ``K = Q diag(k) Q^T`` of the landscape-shift model."""
    k = np.logspace(np.log10(k_min), 0.0, d)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return k, q, q @ np.diag(k) @ q.T


def shift_loss(kmat):
    """Per-sample loss ½(θ−δ)ᵀK(θ−δ) of the landscape-shift model (``example`` = the shift δ)."""
    kj = jnp.asarray(kmat)
    return lambda th, delta: 0.5 * (th - delta) @ kj @ (th - delta)


@jax.jit
def measured_exponent(mean, cov, kmat, loss0):
    """ψ the researcher's way on L = ½θᵀKθ + L₀: PCA of ``cov`` (eigenvectors), flatness at
    ``mean`` along them (root solves on the loss), log–log fit.  Jitted once; K, L₀ are data."""
    var, vec = jnp.linalg.eigh(cov)
    loss_fn = lambda th: 0.5 * th @ kmat @ th + loss0  # noqa: E731
    width = fl.flatness(loss_fn, mean, vec.T).width
    return fl.variance_flatness_exponent(var, width).psi


def _budget(mode):
    return (256, 3_000, 800) if mode == "quick" else (1024, 20_000, 2_000)


def _exponent_rows(stats, k, q, kmat, l0, exact_var, limit, params):
    exact_psi = fl.variance_flatness_exponent(exact_var, fl.quadratic_flatness(k, l0)).psi
    kj, l0j = jnp.asarray(kmat), jnp.asarray(l0)
    fn = lambda m, c: measured_exponent(m, c, kj, l0j)  # noqa: E731
    return [
        compare_matrix("Σ", params, q @ np.diag(np.asarray(exact_var)) @ q.T, stats),
        compare_scalar("ψ (PCA + flatness + fit)", params, exact_psi, stats, fn,
                       note="exact finite-α fit"),
        compare_scalar("ψ, α→0 limit", params, limit, stats, fn, expect="disagree",
                       note=f"local ψ(k)={limit:+g}+2αk/(2−αk)"),
    ]


@register("flatness/landscape-shift-sgd",
          "landscape-shift model, online SGD (D=12, k∈[0.02,1], α=0.5, B=4): exact Σ and the "
          "variance–flatness exponent ψ≈2.09 (inverse relation); ψ=2 only as α→0",
          tags=("flatness",))
def _landscape_shift(key, mode):
    replicas, steps, burn = _budget(mode)
    k, q, kmat = minimal_model()
    l0 = 0.5 * _S2 * float(np.trace(kmat))
    data = simulate.Online(lambda kk, shape: np.sqrt(_S2) * jax.random.normal(kk, shape + (_D,)),
                           _B, vectorized=True)
    stats = simulate.minibatch_sgd(key, shift_loss(kmat), jnp.zeros(_D), data,
                                   optax.sgd(jnp.asarray(_LR)), steps=steps, replicas=replicas,
                                   burn_in=burn)
    exact = fl.landscape_shift_variances(k, _LR, _S2, _B)
    return _exponent_rows(stats, k, q, kmat, l0, exact, 2.0,
                          f"D={_D}, α·k_max={_LR}, B={_B}")


@register("flatness/langevin",
          "Langevin dynamics, isotropic T=0.01 on the same loss: exact Σ and ψ≈−1.90 "
          "(equilibrium sign, σ²∝F²); ψ=−2 only as α→0", tags=("flatness",))
def _langevin(key, mode):
    replicas, steps, burn = _budget(mode)
    k, q, kmat = minimal_model()
    l0 = 0.5 * _S2 * float(np.trace(kmat))
    stats = simulate.quadratic_sgd(key, kmat, (2.0 * _T / _LR) * np.eye(_D), _LR, steps=steps,
                                   replicas=replicas, burn_in=burn)
    exact = fl.langevin_variances(k, _LR, _T)
    return _exponent_rows(stats, k, q, kmat, l0, exact, -2.0,
                          f"D={_D}, α·k_max={_LR}, T={_T}")


# ---- alignment ratio ---------------------------------------------------------------------------


def logistic_problem(n: int = 200, d: int = 10, seed: int = 3):
    """A noisy logistic-regression dataset ``(x, y)`` and its per-example cross-entropy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w_true = rng.normal(size=d) / np.sqrt(d) * 2.0
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x @ w_true))).astype(float)

    def loss(w, ex):
        z = ex[0] @ w
        return jnp.logaddexp(0.0, z) - ex[1] * z

    return (jnp.asarray(x), jnp.asarray(y)), loss


def gradient_recorder() -> optax.GradientTransformation:
    """An optax transform that leaves the params where they are and keeps the last gradient as
    its state: ``minibatch_sgd(..., observe=lambda p, s: s)`` then streams minibatch gradients."""
    return optax.GradientTransformation(
        lambda params: jnp.zeros_like(params),
        lambda g, state, params=None: (jnp.zeros_like(g), g))


def _ratio(mean, cov):
    sig = jnp.sum(mean**2)
    return sig / (sig + jnp.trace(cov))


def trained_point(loss, ex, d, steps=10, lr=1.0):
    """Full-batch gradient descent from 0: after 10 steps R₂ has fallen from ~0.6 to ~0.05."""
    grad = jax.jit(jax.grad(lambda w: jnp.mean(jax.vmap(loss, (None, 0))(w, ex))))
    w = jnp.zeros(d)
    for _ in range(steps):
        w = w - lr * grad(w)
    return w


@register("noise/alignment-ratio",
          "logistic regression (N=200, D=10, S=50): exact R₂=|g|²/(|g|²+f_S tr C) vs minibatch "
          "gradients drawn by the simulator (both sampling rules) and by sample_minibatch_gradients",
          tags=("noise", "flatness"))
def _alignment(key, mode):
    n, d, s = 200, 10, 50
    ex, loss = logistic_problem(n, d)
    replicas, steps = (256, 200) if mode == "quick" else (1024, 1_000)
    rows = []
    points = {"w=0": jnp.zeros(d), "w=GD·10": trained_point(loss, ex, d)}
    for i, (where, w) in enumerate(points.items()):
        for j, sampling in enumerate(("with_replacement", "without_replacement")):
            exact = noise.gradient_order_parameters(loss, w, ex, s, sampling=sampling)
            stats = simulate.minibatch_sgd(
                jax.random.fold_in(key, 2 * i + j), loss, w, simulate.Dataset(ex, s, sampling),
                gradient_recorder(), steps=steps, replicas=replicas, burn_in=0,
                observe=lambda p, st: st)
            params = f"{where}, S={s}, {sampling}"
            rows.append(compare_scalar("R₂ (minibatch_sgd batches)", params, exact.alignment_ratio,
                                       stats, _ratio))
            if sampling == "without_replacement" and where == "w=0":
                wrong = noise.alignment_ratio(
                    noise.flatten_per_sample(noise.per_sample_gradients(loss, w, ex)), s,
                    sampling="with_replacement")
                rows.append(compare_scalar("R₂, with-replacement formula", params, wrong, stats,
                                           _ratio, expect="disagree",
                                           note="1/S instead of (N−S)/(S(N−1))"))
    # The sampled estimator R̂₂ of noise.minibatch_order_parameters, G groups of M batches.
    groups, m = (32, 64) if mode == "quick" else (32, 512)
    w = points["w=GD·10"]
    exact = noise.gradient_order_parameters(loss, w, ex, s, sampling="without_replacement")
    g = noise.sample_minibatch_gradients(jax.random.fold_in(key, 99), loss, w, ex, s, groups * m,
                                         sampling="without_replacement")
    per_group = [noise.minibatch_order_parameters(gg).alignment_ratio
                 for gg in np.split(np.asarray(g), groups)]
    pooled = noise.minibatch_order_parameters(g).alignment_ratio
    se = float(np.std(np.asarray(per_group), ddof=1) / np.sqrt(groups))
    rows.append(Comparison("R̂₂ (sample_minibatch_gradients)",
                           f"w=GD·10, S={s}, {groups}×{m} batches", float(exact.alignment_ratio),
                           float(pooled), se, z_max=z_threshold(groups)))
    return rows
