# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Escape from a minimum: Kramers, the exact first-passage time, and SGD's power law
#
# **Question.** SGD sits in the left well of the double well $U(x) = (x^2-1)^2/4$ (minima at
# $\pm1$, barrier $\Delta U = 1/4$ at $x = 0$). How many steps until noise carries it over the
# barrier — and does the answer follow the classic Arrhenius law $e^{\Delta U/T}$ when the noise
# comes from minibatches?
#
# **Theory.** For small $\lambda$, SGD with per-step noise variance $C(x)$ is the Itô SDE
# $dx = -U'(x)\,dt + \sqrt{2D(x)}\,dW$ with $D = \lambda C/2$ and time $t = \lambda \times$ steps.
# Its mean first-passage time from $x_0$ to $b$ (reflecting wall at $a$) is exact in 1-D:
#
# $$ \tau(x_0) = \int_{x_0}^{b} e^{-\psi(y)} \int_a^{y} \frac{e^{\psi(z)}}{D(z)}\,dz\,dy,
#    \qquad \psi(x) = \int_a^x \frac{-U'}{D} $$
#
# (`st.escape.mean_first_passage_time`). Two approximations of it:
#
# * **Kramers** (constant $D = T$, $\Delta U/T \gg 1$):
#   $\tau \approx \dfrac{2\pi}{\sqrt{U''(x_{\min}) |U''(x_s)|}}\, e^{\Delta U / T}$ — Arrhenius.
# * **Loss-proportional noise** (Mori, Ziyin, Liu & Ueda 2022): minibatch noise near a minimum
#   scales with the loss, $C = 2h^*L/B$, so $D = \varepsilon h^* L$ with $\varepsilon = \lambda/B$.
#   The random time change $d\tau = L\,dt$ turns this into additive noise in the potential
#   $\ln L$, and the escape time becomes a **power law** in the loss ratio,
#   $\tau \propto (L_s/L^*)^{B/(\lambda h^*) + 1/2}$ — not $e^{\Delta L/(\varepsilon h^* L^*)}$.
#
# We check all three against simulated discrete-time SGD
# (`st.simulate.escape.escape_times`: thousands of replicas, each stopped at its first passage).

# %%
import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scipy.stats

import sgdtheory as st
from sgdtheory.simulate import escape as sim_escape

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
REPLICAS = 512 if QUICK else 4096
t_start = time.perf_counter()
print(f"quick mode: {QUICK}; replicas={REPLICAS}")


def grad_U(x):
    return x**3 - x


class ConstantNoise:
    """Noise std s(x) = s (hashable, so a sweep reuses one compiled simulator per value)."""

    def __init__(self, s):
        self.s = s

    def __call__(self, x):
        return self.s + 0 * x

    def __hash__(self):
        return hash(("const", self.s))

    def __eq__(self, other):
        return isinstance(other, ConstantNoise) and other.s == self.s


# %% [markdown]
# ## Part 1: additive noise — Kramers vs exact vs SGD
# Constant noise of temperature $T$ ($D = T$, so the per-step noise std is $\sqrt{2T/\lambda}$),
# $\lambda = 0.01$ ($\lambda U'' = 0.02$: the discrete-time bias is about 1 %).

# %%
LR = 0.01
ratios = np.array([1.5, 2.5]) if QUICK else np.array([1.5, 2.5, 3.5, 4.5])
ratio_fine = np.linspace(1.0, 5.0, 41)
drift = lambda x: -grad_U(x)  # noqa: E731


def tau_exact(T):
    return st.escape.mean_first_passage_time(drift, lambda x: T + 0 * x, -1.0, 1.0, reflecting=-4.0)


tau_ex_fine = np.array([tau_exact(0.25 / r) for r in ratio_fine])
tau_kr_fine = np.array([1 / float(st.escape.kramers_rate(0.25, 2.0, 1.0, 0.25 / r)) for r in ratio_fine])
sim_add, se_add, ex_add = [], [], []
for i, r in enumerate(ratios):
    T = 0.25 / r
    tau = tau_exact(T)
    et = sim_escape.escape_times(jax.random.key(i), grad_U, ConstantNoise(math.sqrt(2 * T / LR)),
                                 -1.0, LR, target=1.0, budget=int(12 * tau / LR), replicas=REPLICAS)
    s = sim_escape.summarize(et)
    sim_add.append(s.mean_time)
    se_add.append(s.mean_time_stderr)
    ex_add.append(tau)
    kr = 1 / float(st.escape.kramers_rate(0.25, 2.0, 1.0, T))
    print(f"ΔU/T = {r}: exact {tau:8.2f}  Kramers {kr:8.2f} ({kr / tau - 1:+.0%})  "
          f"SGD {s.mean_time:8.2f} ± {s.mean_time_stderr:.2f}  [{s.method}]")
sim_add, se_add, ex_add = map(np.array, (sim_add, se_add, ex_add))

# %% [markdown]
# ## Part 2: loss-proportional (minibatch-like) noise — the power law
# Now $L(x) = L^* + U(x)$ with $L^* = 0.25$ (a minimum that does not fit the data perfectly),
# noise $C(x) = 2h^* L(x)/B$ with $h^* = U''(-1) = 2$, $\lambda = 0.02$, and we vary the batch
# size $B$. The power law predicts $\ln\tau$ linear in $B/(\lambda h^*)$ with slope
# $\ln(L_s/L^*) = \ln 2 \approx 0.69$; Arrhenius in $\Delta L$ predicts slope
# $\Delta L / L^* = 1$.

# %%
L0, HSTAR, LR2 = 0.25, 2.0, 0.02
L = lambda x: L0 + (x**2 - 1) ** 2 / 4  # noqa: E731


class LossNoise:
    def __init__(self, b):
        self.b = b

    def __call__(self, x):
        return jnp.sqrt(2 * HSTAR * L(x) / self.b)

    def __hash__(self):
        return hash(("loss", self.b))

    def __eq__(self, other):
        return isinstance(other, LossNoise) and other.b == self.b


def tau_exact_loss(b):
    eps = LR2 / b
    return st.escape.mean_first_passage_time(drift, lambda x: eps * HSTAR * L(x), -1.0, 1.0,
                                             reflecting=-4.0)


def tau_power(b):
    return 1 / float(st.escape.power_law_escape_rate(L0, L0 + 0.25, HSTAR, 1.0, LR2, b))


def tau_arrhenius(b):
    return 1 / float(st.escape.kramers_rate(0.25, HSTAR, 1.0, LR2 / b * HSTAR * L0))


kappa_fine = np.linspace(1.0, 6.0, 26)          # B / (lr h*)
b_fine = kappa_fine * LR2 * HSTAR
pl_ex_fine = np.array([tau_exact_loss(b) for b in b_fine])
pl_pw_fine = np.array([tau_power(b) for b in b_fine])
pl_ar_fine = np.array([tau_arrhenius(b) for b in b_fine])
kappas = np.array([2.0, 4.0]) if QUICK else np.array([2.0, 3.0, 4.0, 5.0])
sim_pl, se_pl, ex_pl, ar_pl = [], [], [], []
for i, kap in enumerate(kappas):
    b = kap * LR2 * HSTAR
    tau = tau_exact_loss(b)
    et = sim_escape.escape_times(jax.random.key(100 + i), grad_U, LossNoise(b), -1.0, LR2,
                                 target=1.0, budget=int(12 * tau / LR2), replicas=REPLICAS)
    s = sim_escape.summarize(et)
    sim_pl.append(s.mean_time)
    se_pl.append(s.mean_time_stderr)
    ex_pl.append(tau)
    ar_pl.append(tau_arrhenius(b))
    print(f"B/(lr h*) = {kap}: exact {tau:9.2f}  power law {tau_power(b):9.2f}  "
          f"Arrhenius {tau_arrhenius(b):9.2f}  SGD {s.mean_time:9.2f} ± {s.mean_time_stderr:.2f}")
sim_pl, se_pl, ex_pl, ar_pl = map(np.array, (sim_pl, se_pl, ex_pl, ar_pl))
slope = np.polyfit(kappa_fine, np.log(pl_ex_fine), 1)[0]
print(f"slope of ln(tau_exact) vs B/(lr h*): {slope:.3f}  (power law: ln 2 = {math.log(2):.3f}; "
      f"Arrhenius: 1)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
ax = axes[0]
ax.plot(ratio_fine, tau_ex_fine, "-", label="exact MFPT")
ax.plot(ratio_fine, tau_kr_fine, "--", color="tab:gray", label="Kramers (asymptotic)")
ax.errorbar(ratios, sim_add, yerr=2 * se_add, fmt="o", color="tab:red", capsize=3, label="SGD (±2 se)")
ax.set_yscale("log")
ax.set_xlabel(r"$\Delta U / T$")
ax.set_ylabel(r"mean escape time (SDE units, $t = \lambda\,$steps)")
ax.set_title("additive noise: Arrhenius holds, Kramers is asymptotic")
ax.legend()
ax = axes[1]
ax.plot(kappa_fine, pl_ex_fine, "-", label="exact MFPT")
ax.plot(kappa_fine, pl_pw_fine, "-.", color="tab:green", label="power law (Mori et al.)")
ax.plot(kappa_fine, pl_ar_fine, "--", color="tab:gray", label=r"Arrhenius in $\Delta L$")
ax.errorbar(kappas, sim_pl, yerr=2 * se_pl, fmt="o", color="tab:red", capsize=3, label="SGD (±2 se)")
ax.set_yscale("log")
ax.set_xlabel(r"$B / (\lambda h^*)$")
ax.set_ylabel("mean escape time (SDE units)")
ax.set_title("loss-proportional noise: a power law in $L_s/L^*$")
ax.legend()
fig.tight_layout()
st.plot.show(fig)  # shown in Jupyter; saved as a PNG when run headless

# %% [markdown]
# **Reading the plots.** With additive noise, escape is Arrhenius; Kramers' formula is its
# large-barrier limit and is visibly off (about 20 % low, see the printed values) at
# $\Delta U/T \lesssim 3$, while the exact
# first-passage time matches SGD everywhere. With loss-proportional noise the escape time grows much
# more slowly with the batch size than Arrhenius predicts: the slope of $\ln \tau$ is $\ln(L_s/L^*)$,
# the power law of Mori et al.
#
# ## The check
# Escape times of independent replicas give standard errors $\mathrm{sd}/\sqrt R$ (or the censored
# exponential MLE's when some replicas hit the budget). The exact MFPT must agree with SGD,
# $|z| \le z_{\max}$ (normal two-sided quantile at $10^{-4}$, Bonferroni over the rows, plus the
# ~1 % discrete-time bias allowed for); Arrhenius must be off at the largest batch size.

# %%
sim_all = np.concatenate([sim_add, sim_pl])
se_all = np.concatenate([se_add, se_pl])
ex_all = np.concatenate([ex_add, ex_pl])
se_tot = np.hypot(se_all, 0.01 * ex_all)  # 1 % allowance for the Euler (discrete-time) bias
z = (sim_all - ex_all) / se_tot
z_max = float(scipy.stats.norm.isf(1e-4 / (2 * z.size)))
z_arr = (sim_pl[-1] - ar_pl[-1]) / se_tot[-1]
print(f"z (exact MFPT) = {np.round(z, 2)}, z_max = {z_max:.2f}; Arrhenius at the largest B: z = {z_arr:.1f}")
assert np.all(np.abs(z) <= z_max), "exact MFPT disagrees with simulated SGD"
assert abs(z_arr) > z_max, "Arrhenius should fail for loss-proportional noise"
assert abs(slope - math.log(2)) < abs(slope - 1.0), "the exact slope should be close to the power law's"
print(f"OK; notebook ran in {time.perf_counter() - t_start:.1f} s")
