"""Cross-checks of label-noise SGD (:mod:`sgdtheory.label_noise`, ``linreg.dataset_stationary(...,
label_noise_var=)``) against simulated SGD.

* ``linreg/label-noise-dataset`` (and ``-subsets``: without replacement): the exact
  finite-dataset covariance with fresh label noise, on realisable targets (N = 8, D = 2); the
  small-lr isotropic limit :math:`\\eta\\sigma^2/(2S)` fails at 0.6 of the stability bound
  (``expect="disagree"``).
* ``label-noise/product-imbalance``: the product model ``f = ab`` simulated with
  :func:`~sgdtheory.simulate.minibatch_sgd` and an :class:`~sgdtheory.simulate.Online` source of
  noisy targets: the exact one-step law of :math:`D = a^2 - b^2` (full mode), :math:`D(k)` against the
  finite-lr ODE (agrees) and against the leading-order law :math:`D_0e^{-\\eta^2\\sigma^2k}`
  (disagrees).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import label_noise as ln
from sgdtheory import linreg as lr_theory
from sgdtheory import simulate
from sgdtheory.crosscheck._registry import register
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar
from sgdtheory.crosscheck.linreg import regression_dataset

_U = np.array([1.0, -0.5])


def _budget(mode):
    return (256, 2_000, 400) if mode == "quick" else (4096, 20_000, 2_000)


def _label_dataset(key, mode, sampling):
    replicas, steps, burn = _budget(mode)
    x, _ = regression_dataset()
    y = x @ _U  # realisable: the only noise left at the minimum is the label noise
    s, sigma2, frac = 3, 0.5, 0.6
    lr = frac * float(lr_theory.dataset_max_lr(x, s, sampling=sampling))
    th = lr_theory.dataset_stationary(x, y, lr, s, sampling=sampling, label_noise_var=sigma2)
    st = simulate.linreg_sgd(key, x, y, lr, s, sampling=sampling, label_noise_var=sigma2,
                             steps=steps, replicas=replicas, burn_in=burn, init=th.param_mean)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def train(m, c):  # on the stored (noiseless) targets
        r = xj @ m - yj
        return 0.5 * (jnp.mean(r**2) + jnp.sum((xj.T @ xj / x.shape[0]) * c))

    small = ln.linreg_small_lr(x, lr, s, sigma2)
    p = f"N=8, S={s}, σ²={sigma2}, {sampling}, lr={frac}·max={lr:.3g}"
    return [
        compare_matrix("Σ", p, th.param_cov, st),
        compare_scalar("train loss", p, th.train_loss, st, train),
        compare_scalar("train loss, small-lr ησ²tr Ĥ/(4S)", p, small.train_loss, st, train,
                       expect="disagree", note="η→0 limit"),
    ]


@register("linreg/label-noise-dataset",
          "finite dataset N=8, D=2, realisable targets + fresh label noise σ²=0.5, S=3, i.i.d. "
          "indices: exact theory agrees; the small-lr limit ησ²/(2S)·I fails at 0.6·max",
          tags=("linreg", "label_noise"))
def _label_dataset_iid(key, mode):
    return _label_dataset(key, mode, "with_replacement")


@register("linreg/label-noise-dataset-subsets",
          "as linreg/label-noise-dataset with uniform S-subsets (without replacement)",
          tags=("linreg", "label_noise"))
def _label_dataset_subsets(key, mode):
    return _label_dataset(key, mode, "without_replacement")


_Y, _SIGMA2, _LR = 1.0, 0.25, 0.05
_A0, _B0 = 2.0, 0.5  # on the manifold ab = 1, D0 = 3.75, h0 = 4.25: finite-lr factor 1.119


def _noisy_target(k, shape):
    return _Y + jnp.sqrt(_SIGMA2) * jax.random.normal(k, shape)


def _product_loss(p, target):
    return 0.5 * (p[0] * p[1] - target) ** 2


def _imbalance(p, opt_state):
    del opt_state
    return jnp.stack([p[0] ** 2 - p[1] ** 2])


def _simulate_product(key, init, steps, replicas):
    """D = a^2 - b^2 after exactly ``steps`` steps (burn_in = steps - 1: the last step only)."""
    return simulate.minibatch_sgd(
        key, _product_loss, jnp.asarray(init), simulate.Online(_noisy_target, 1, vectorized=True),
        optax.sgd(jnp.asarray(_LR)), steps=steps, replicas=replicas, burn_in=steps - 1,
        observe=_imbalance, block=100 if steps % 100 == 0 else 1)


def _d_of(m, c):
    del c
    return m[0]


@register("label-noise/product-imbalance",
          "product model f=ab, y=1, σ²=0.25, lr=0.05: D(k) vs the finite-lr ODE (agrees) and the "
          "leading-order law D0·exp(-η²σ²k) (disagrees); full mode adds the exact one-step law "
          "of D=a²-b² and k=4000",
          tags=("label_noise",))
def _product(key, mode):
    k1, k2 = jax.random.split(key)
    rows = []
    if mode == "full":  # (quick mode: one compiled run; this row is also in tests/)
        # one step from a point off the manifold: the exact conditional mean
        a, b = 1.6, 0.9
        step = ln.imbalance_step(a, b, _Y, _LR, _SIGMA2)
        st1 = _simulate_product(k1, [a, b], 1, 2**20)
        rows.append(compare_scalar("E[D' | a, b] (one step)", f"a={a}, b={b}, y=1, lr=0.05",
                                   step.mean, st1, _d_of, moment_order=1))
    horizons = (1000,) if mode == "quick" else (1000, 4000)
    replicas = 2**14 if mode == "quick" else 2**16
    for k, steps in zip(jax.random.split(k2, len(horizons)), horizons):
        st = _simulate_product(k, [_A0, _B0], steps, replicas)
        p = f"D0=3.75, y=1, σ²=0.25, lr=0.05, k={steps}"
        rows += [
            compare_scalar("D(k), finite-lr ODE", p,
                           ln.imbalance_path(3.75, _Y, _LR, _SIGMA2, steps), st, _d_of,
                           moment_order=1),
            compare_scalar("D(k), leading order", p,
                           ln.imbalance_path(3.75, _Y, _LR, _SIGMA2, steps, order="leading"), st,
                           _d_of, expect="disagree", note="drops 2/(2-ηh)", moment_order=1),
        ]
    return rows
