"""Cross-checks of :mod:`sgdtheory.linreg` against :mod:`sgdtheory.simulate.linreg`.

Online checks use a 2-D input covariance that is not diagonal and a teacher that is not an
eigenvector of it (so no commutation assumption is hidden).  Finite-dataset checks use a fixed
random dataset with N = 8, D = 2.  Learning rates are kept at 50-75 % of the exact mean-square
bound: nearer the edge the stationary law is heavy-tailed (Kesten) and finite runs underestimate
second moments (``docs/theory/linreg.md``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import linreg as lr_theory
from sgdtheory import quadratic as q
from sgdtheory import simulate
from sgdtheory.crosscheck._registry import register
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar

_A = np.array([[1.0, 0.3], [0.3, 0.5]])
_U = np.array([1.0, -0.5])
_B = np.array([[0.3, 0.1], [0.1, 0.2]])


def regression_dataset(n=8, d=2, seed=0):
    """The fixed finite dataset of the linreg and local rows: N=8, D=2, teacher (1, -0.5), noise 0.5."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ np.diag([1.0, 0.6])
    y = x @ _U + 0.5 * rng.normal(size=n)
    return x, y


def _budget(mode):
    return (256, 2_000, 400) if mode == "quick" else (4096, 20_000, 2_000)


def _loss_fns(a_cov, u):
    a = jnp.asarray(a_cov)
    uj = jnp.asarray(u)

    def test(m, c):
        e = m - uj
        return 0.5 * (jnp.sum(a * c) + e @ a @ e)

    return test


def _online(key, mode, s, lr_frac, params, *, sigma2=1.0, wd=0.0, b=None, momentum=0.0,
            extra=None):
    replicas, steps, burn = _budget(mode)
    bound = float(lr_theory.online_max_lr(_A, s, weight_decay=wd, input_noise_cov=b,
                                          momentum=momentum))
    lr = lr_frac * bound
    th = lr_theory.online_stationary(_A, lr, s, label_noise_var=sigma2, weight_decay=wd,
                                     true_weights=_U, input_noise_cov=b, momentum=momentum)
    st = simulate.online_linreg_sgd(key, _A, _U, lr, s, label_noise_var=sigma2, input_noise_cov=b,
                                    weight_decay=wd, momentum=momentum, steps=steps,
                                    replicas=replicas, burn_in=burn)
    p = f"{params}, lr={lr_frac}·max={lr:.3g}"
    rows = [
        compare_matrix("Σ", p, th.param_cov, st),
        compare_matrix("E w", p, th.param_mean, st, which="mean"),
        compare_scalar("test loss", p, th.test_loss, st, _loss_fns(_A, _U)),
    ]
    if extra is not None:
        rows += extra(lr, th, st, p)
    return rows


@register("linreg/online-label-noise",
          "online Gaussian regression, label noise, S=4, lr=0.75·max: exact multiplicative theory "
          "agrees; additive fixed-C (C=σ²A/S at the minimum) fails", tags=("linreg",))
def _online_label(key, mode):
    def extra(lr, th, st, p):
        s, sigma2 = 4, 1.0
        sig_add = q.stationary_covariance(_A, sigma2 * _A / s, lr)
        test = _loss_fns(_A, _U)
        return [compare_scalar("test loss, additive C=σ²A/S", p, 0.5 * np.sum(_A * np.asarray(
            sig_add)), st, test, expect="disagree", note="fixed-C Lyapunov")]

    return _online(key, mode, 4, 0.75, "D=2, S=4, σ²=1", extra=extra)


@register("linreg/online-batch1", "online regression, S=1 (strongest multiplicative noise)",
          tags=("linreg",))
def _online_s1(key, mode):
    return _online(key, mode, 1, 0.5, "D=2, S=1, σ²=1")


@register("linreg/online-weight-decay",
          "online regression with L2: γ=0.3 and negative γ=-0.15 (Ziyin et al. Thm 4)",
          tags=("linreg",))
def _online_wd(key, mode):
    rows = []
    for wd in (0.3, -0.15):
        def extra(lr, th, st, p, wd=wd):
            z = lr_theory.ziyin_weight_decay_test_loss(_A, lr, 4, wd, _U)
            return [compare_scalar("test loss, Ziyin Thm 4", p, z, st, _loss_fns(_A, _U))]

        rows += _online(key, mode, 4, 0.6, f"S=4, σ²=0, γ={wd}", sigma2=0.0, wd=wd, extra=extra)
    return rows


@register("linreg/online-input-noise",
          "online regression with input noise B: exact (corrected Thm 9) agrees; printed Eq. 134 "
          "fails", tags=("linreg",))
def _online_input(key, mode):
    def extra(lr, th, st, p):
        test = _loss_fns(_A, _U)
        return [
            compare_scalar("test loss, Thm 9 corrected", p,
                           lr_theory.ziyin_input_noise_test_loss(_A, _B, _U, lr, 8), st, test),
            compare_scalar("test loss, Eq. 134 printed", p,
                           lr_theory.ziyin_input_noise_test_loss(_A, _B, _U, lr, 8, printed=True),
                           st, test, expect="disagree", note="paper's printed form"),
        ]

    return _online(key, mode, 8, 0.7, "S=8, σ²=0, B≠0", sigma2=0.0, b=_B, extra=extra)


@register("linreg/online-momentum", "online regression, heavy ball μ=0.5, S=4 (Thm 3)",
          tags=("linreg",))
def _online_mom(key, mode):
    return _online(key, mode, 4, 0.6, "S=4, σ²=1, μ=0.5", momentum=0.5)


def _data_rows(key, mode, s, lr_frac, sampling, replacement, params, wd=0.0):
    replicas, steps, burn = _budget(mode)
    x, y = regression_dataset()
    bound = float(lr_theory.dataset_max_lr(x, s, replacement=replacement, weight_decay=wd))
    lr = lr_frac * bound
    th = lr_theory.dataset_stationary(x, y, lr, s, replacement=replacement, weight_decay=wd)
    st = simulate.linreg_sgd(key, x, y, lr, s, sampling=sampling, weight_decay=wd, steps=steps,
                             replicas=replicas, burn_in=burn, init=th.param_mean)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def train(m, c):
        r = xj @ m - yj
        return 0.5 * (jnp.mean(r**2) + jnp.sum((xj.T @ xj / x.shape[0]) * c))

    p = f"{params}, lr={lr_frac}·max={lr:.3g}"
    expect = "agree" if sampling != "shuffle" else "disagree"
    note = "" if sampling != "shuffle" else "epoch reshuffling ≠ i.i.d. subsets"
    rows = [compare_matrix("Σ", p, th.param_cov, st, expect=expect, note=note)]
    if sampling != "shuffle":
        # (under shuffling the train loss differs by only ~0.4 %, |z| ~ 4-5: too close to the
        # threshold to be a reliable "disagree" row; the covariance differs by ~60 %)
        rows.append(compare_scalar("train loss", p, th.train_loss, st, train))
    return rows


@register("linreg/dataset-with-replacement",
          "finite dataset N=8, D=2, i.i.d. indices, S=1, 3, 8", tags=("linreg",))
def _data_with(key, mode):
    rows = []
    for s, frac in ((1, 0.5), (3, 0.7), (8, 0.7)):
        rows += _data_rows(key, mode, s, frac, "with_replacement", True, f"N=8, S={s}, iid")
    return rows


@register("linreg/dataset-without-replacement",
          "finite dataset N=8, D=2, uniform S-subsets, S=2, 5, 7", tags=("linreg",))
def _data_without(key, mode):
    rows = []
    for s, frac in ((2, 0.7), (5, 0.7), (7, 0.7)):
        rows += _data_rows(key, mode, s, frac, "without_replacement", False, f"N=8, S={s}, subsets")
    return rows


@register("linreg/dataset-weight-decay",
          "finite dataset with L2 γ=0.2, both sampling rules", tags=("linreg",))
def _data_wd(key, mode):
    return (_data_rows(key, mode, 2, 0.7, "with_replacement", True, "N=8, S=2, iid, γ=0.2", wd=0.2)
            + _data_rows(key, mode, 2, 0.7, "without_replacement", False,
                         "N=8, S=2, subsets, γ=0.2", wd=0.2))


@register("linreg/dataset-shuffle",
          "epoch-wise reshuffling (N=8, S=4) is NOT the i.i.d.-subset theory (expected to differ)",
          tags=("linreg",))
def _data_shuffle(key, mode):
    return _data_rows(key, mode, 4, 0.7, "shuffle", False, "N=8, S=4, shuffle vs subsets theory")



def _user_loss(w, example):
    """A per-example loss written the way a user would, not the preset's."""
    x, y = example
    residual = jnp.dot(x, w) - y
    return 0.5 * residual * residual


@register("linreg/user-loss-minibatch-sgd",
          "a user-written per-example loss of a linear model through the generic minibatch_sgd "
          "(optax chain with weight decay γ=0.2) vs the exact finite-dataset theory, both sampling "
          "rules", tags=("linreg", "composable"))
def _user_loss_rows(key, mode):
    replicas, steps, burn = _budget(mode)
    x, y = regression_dataset()
    rows = []
    for sampling, s in (("with_replacement", 2), ("without_replacement", 3)):
        replacement = sampling == "with_replacement"
        bound = float(lr_theory.dataset_max_lr(x, s, replacement=replacement, weight_decay=0.2))
        lr = 0.7 * bound
        th = lr_theory.dataset_stationary(x, y, lr, s, replacement=replacement, weight_decay=0.2)
        opt = optax.chain(optax.add_decayed_weights(0.2), optax.sgd(lr))
        st = simulate.minibatch_sgd(key, _user_loss, jnp.asarray(th.param_mean),
                                    simulate.Dataset((jnp.asarray(x), jnp.asarray(y)), s, sampling),
                                    opt, steps=steps, replicas=replicas, burn_in=burn)
        p = f"N=8, S={s}, {sampling.replace('_', ' ')}, γ=0.2, lr=0.7·max={lr:.3g}"
        rows += [compare_matrix("Σ (minibatch_sgd)", p, th.param_cov, st),
                 compare_matrix("E w (minibatch_sgd)", p, th.param_mean, st, which="mean")]
    return rows


@register("linreg/damped-newton",
          "online regression, damped Newton (precondition A⁻¹) with momentum μ=0.5, S=4: the "
          "exact Σ = λσ²/(gS-λD)·A⁻¹ (Ziyin et al. 2022 App. D) vs optax chain(precondition, sgd)",
          tags=("linreg",))
def _damped_newton(key, mode):
    from sgdtheory.optim import precondition

    mu, s = 0.5, 4
    lr = 0.6 * float(lr_theory.damped_newton_max_lr(_A, s, momentum=mu))
    replicas, steps, burn = _budget(mode)
    th = lr_theory.damped_newton_stationary(_A, lr, s, label_noise_var=1.0, momentum=mu,
                                            w_star=_U)
    opt = optax.chain(precondition(np.linalg.inv(_A)), optax.sgd(lr, momentum=mu))
    st = simulate.online_linreg_sgd(key, _A, _U, None, s, label_noise_var=1.0, optimizer=opt,
                                    steps=steps, replicas=replicas, burn_in=burn)
    p = f"μ=0.5, S=4, lr=0.6·max={lr:.3g}"
    return [compare_matrix("Σ", p, th.param_cov, st),
            compare_scalar("test loss", p, th.test_loss, st, _loss_fns(_A, _U))]
