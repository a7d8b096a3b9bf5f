"""Cross-checks of :mod:`sgdtheory.local` against real SGD simulated with ``minibatch_sgd``.

* a linear model written as a plain per-example loss (the theory is exact there);
* a 1→3→1 tanh network with weight decay, Newton-polished to its minimum: the local theory at a
  small learning rate, the additive (fixed-C) approximation, and a learning rate where the
  second-order expansion fails (an expected disagreement);
* logistic regression (cross-entropy) with weight decay on a noisy, nearly separable dataset.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import linreg, local, quadratic, simulate
from sgdtheory.crosscheck._registry import register
from sgdtheory.crosscheck.linreg import regression_dataset
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar


def _budget(mode):
    return (256, 6_000, 2_000) if mode == "quick" else (2048, 40_000, 8_000)


def _sgd(lr, wd):
    return optax.chain(optax.add_decayed_weights(jnp.asarray(wd)), optax.sgd(jnp.asarray(lr)))


def _trace(m, c):
    return jnp.trace(c)


def _along(u):
    u = jnp.asarray(u)
    return lambda m, c: u @ c @ u


# ------------------------------------------------------------------------------------------------
# linear model
# ------------------------------------------------------------------------------------------------


def _lin_loss(p, ex):
    x, y = ex
    r = x @ p["w"] - y
    return 0.5 * r * r


@register("local/linear-model",
          "a linear model as a plain per-example loss (N=8, D=2, γ=0.2): local.stationary vs "
          "minibatch_sgd, both sampling rules", tags=("local",))
def _linear(key, mode):
    replicas, steps, burn = _budget(mode)
    x, y = regression_dataset()  # the dataset of the linreg rows
    ex = (jnp.asarray(x), jnp.asarray(y))
    params = {"w": jnp.zeros(2)}
    rows = []
    for sampling, s in (("with_replacement", 2), ("without_replacement", 3)):
        lr = 0.6 * local.max_stable_lr(_lin_loss, params, ex, s, sampling=sampling,
                                       weight_decay=0.2)
        th = local.stationary(_lin_loss, params, ex, lr, s, sampling=sampling, weight_decay=0.2)
        ref = linreg.dataset_stationary(x, y, lr, s, sampling=sampling, weight_decay=0.2)
        st = simulate.minibatch_sgd(key, _lin_loss, th.mean_params(params),
                                    simulate.Dataset(ex, s, sampling), _sgd(lr, 0.2), steps=steps,
                                    replicas=replicas, burn_in=burn)
        p = f"N=8, S={s}, {sampling.replace('_', ' ')}, γ=0.2, lr=0.6·max={lr:.3g}"
        err = float(np.max(np.abs(np.asarray(th.param_cov) - np.asarray(ref.param_cov))))
        rows += [compare_matrix("Σ", p, th.param_cov, st,
                                note=f"|local - linreg| = {err:.1e}"),
                 compare_matrix("E w", p, th.param_mean, st, which="mean")]
    return rows


# ------------------------------------------------------------------------------------------------
# a small tanh network
# ------------------------------------------------------------------------------------------------

MLP_WEIGHT_DECAY = 0.02


def _mlp_loss(p, e):
    out = jnp.tanh(e[0] * p["W"] + p["b"]) @ p["v"] + p["c"]
    return 0.5 * (out - e[1]) ** 2


@functools.lru_cache(maxsize=None)
def mlp_problem(n: int = 24, hidden: int = 3, noise: float = 0.1, wd: float = MLP_WEIGHT_DECAY,
                seed: int = 3):
    """A 1→3→1 tanh net fitted to N noisy points of sin(1.5x) by Adam, then Newton-polished.

    Returns ``(loss, params, examples)``; ``params`` is a minimum of the full-batch objective with
    weight decay ``wd`` to round-off.
    """
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2, 2, n))
    y = np.sin(1.5 * x) + noise * rng.normal(size=n)
    ex = (jnp.asarray(x), jnp.asarray(y))
    p = {"W": jnp.asarray(rng.normal(size=hidden)), "b": jnp.asarray(0.5 * rng.normal(size=hidden)),
         "v": jnp.asarray(rng.normal(size=hidden) / np.sqrt(hidden)), "c": jnp.asarray(0.0)}

    def obj(q):
        return (jnp.mean(jax.vmap(_mlp_loss, (None, 0))(q, ex))
                + 0.5 * wd * sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(q)))

    opt = optax.adam(0.02)

    @jax.jit
    def train(q):
        def body(carry, _):
            q, s = carry
            u, s = opt.update(jax.grad(obj)(q), s)
            return (optax.apply_updates(q, u), s), None

        return jax.lax.scan(body, (q, opt.init(q)), None, length=3000)[0][0]

    p = local.polish(_mlp_loss, train(p), ex, weight_decay=wd)
    return _mlp_loss, p, ex


def _mlp_run(key, mode, frac, s=1):
    replicas, steps, burn = _budget(mode)
    loss, p, ex = mlp_problem()
    wd = MLP_WEIGHT_DECAY
    e = local.expand(loss, p, ex)
    bound = local.max_stable_lr(loss, p, ex, s, weight_decay=wd, expansion=e)
    lr = frac * bound
    th = local.stationary(loss, p, ex, lr, s, weight_decay=wd, expansion=e, check_stable=False)
    qa = local.quadratic_approximation(loss, p, ex, s)
    add = quadratic.stationary_covariance(qa.hessian, qa.noise_cov, lr, weight_decay=wd)
    st = simulate.minibatch_sgd(key, loss, p, simulate.Dataset(ex, s, "with_replacement"),
                                _sgd(lr, wd), steps=steps, replicas=replicas, burn_in=burn)
    return lr, bound, th, add, st


@register("local/tanh-network",
          "1→3→1 tanh net, N=24, γ=0.02, S=1, Newton-polished minimum: at lr=0.03·max the exact "
          "local theory agrees with nonlinear SGD (trace, top eigen-directions); at lr=0.6·max the "
          "expansion fails (expected) and the additive fixed-C approximation is further off",
          tags=("local",))
def _tanh(key, mode):
    rows = []
    lr, bound, th, add, st = _mlp_run(key, mode, 0.03)
    p = f"P=10, N=24, S=1, lr=0.03·max={lr:.3g}"
    ev, uv = np.linalg.eigh(np.asarray(th.param_cov))
    rows.append(compare_scalar("tr Σ, local", p, jnp.trace(th.param_cov), st, _trace))
    for j in (1, 2):
        u = uv[:, -j]
        rows.append(compare_scalar(f"u{j}ᵀΣu{j} (top-{j} eigvec), local", p, ev[-j], st, _along(u)))
    rows.append(compare_scalar("tr Σ, additive fixed-C", p, jnp.trace(add), st, _trace,
                               note="indistinguishable at small lr"))
    lr, bound, th, add, st = _mlp_run(key, mode, 0.6)
    p = f"P=10, N=24, S=1, lr=0.6·max={lr:.3g}"
    rows.append(compare_scalar("tr Σ, local", p, jnp.trace(th.param_cov), st, _trace,
                               expect="disagree", note="third-order terms: expansion fails"))
    rows.append(compare_scalar("tr Σ, additive fixed-C", p, jnp.trace(add), st, _trace,
                               expect="disagree", note="further off than local"))
    return rows


# ------------------------------------------------------------------------------------------------
# logistic regression (cross-entropy)
# ------------------------------------------------------------------------------------------------


def _logistic_loss(w, e):
    x, y = e  # y in {0, 1}
    z = x @ w
    return jnp.logaddexp(0.0, z) - y * z


@register("local/logistic-regression",
          "cross-entropy: logistic regression with γ=0.05, N=40, D=3 (with bias), S=4, "
          "lr=0.05·max, at the polished minimum", tags=("local",))
def _logistic(key, mode):
    replicas, steps, burn = _budget(mode)
    rng = np.random.default_rng(1)
    n = 40
    x = np.concatenate([rng.normal(size=(n, 2)), np.ones((n, 1))], axis=1)
    logits = 3.0 * (x[:, 0] - 0.5 * x[:, 1])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logits))).astype(float)  # separable-with-noise
    ex = (jnp.asarray(x), jnp.asarray(y))
    wd = 0.05
    w = local.polish(_logistic_loss, jnp.zeros(3), ex, weight_decay=wd)
    s = 4
    lr = 0.05 * local.max_stable_lr(_logistic_loss, w, ex, s, weight_decay=wd)
    th = local.stationary(_logistic_loss, w, ex, lr, s, weight_decay=wd)
    st = simulate.minibatch_sgd(key, _logistic_loss, w, simulate.Dataset(ex, s, "with_replacement"),
                                _sgd(lr, wd), steps=steps, replicas=replicas, burn_in=burn)
    p = f"N=40, D=3, S=4, γ={wd}, lr=0.05·max={lr:.3g}"
    return [compare_matrix("Σ", p, th.param_cov, st),
            compare_scalar("tr Σ", p, jnp.trace(th.param_cov), st, _trace)]
