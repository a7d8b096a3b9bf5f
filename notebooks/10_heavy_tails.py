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
# # 10. Heavy tails: the stationary law of SGD beyond its covariance
#
# **Question.** Online SGD on 1-D linear regression, $e' = (1-\lambda h)e + \lambda b$ with
# $h = a\chi^2_S/S$: the stationary covariance is finite up to the mean-square bound
# $a\lambda = 2S/(S+2)$. But is the law Gaussian-like? No: it has power tails
# $P(|e|>t)\sim Ct^{-\beta}$ (Kesten 1973), with $\beta$ the positive root of $E|1-\lambda h|^\beta=1$.
# $\beta = 2$ exactly at the mean-square bound, and already for $\beta\le4$ a simulated variance has no
# valid standard error. Theory: `docs/theory/tails.md`.

# %%
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

import sgdtheory as st

T = st.linreg  # tail_index, lyapunov_exponent, online_kurtosis, stationary_density_1d, ...

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
STEPS = 4000 if QUICK else 40_000
print(f"quick mode: {QUICK}; steps={STEPS}")

# %% [markdown]
# ## Tail index against the learning rate, three stability layers
# Exact Kesten root vs the published estimate $2S/(a\lambda)-S$ (Ziyin et al. 2022, Prop. 7).

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for s in (1, 4):
    lrs = np.linspace(0.1, 2.2 if s == 4 else 1.6, 25)
    beta = [T.tail_index(1.0, lr, s) for lr in lrs]
    ax.plot(lrs, beta, label=f"exact, S={s}")
    ax.plot(lrs, [max(T.ziyin_tail_index(1.0, lr, s), 0) for lr in lrs], "--", label=f"Prop. 7, S={s}")
    ax.axvline(2 * s / (s + 2), color="gray", lw=0.5)
ax.axhline(2, color="k", lw=0.5)
ax.axhline(4, color="k", lw=0.5, ls=":")
ax.set(xlabel="a·λ", ylabel="tail index β", yscale="log", ylim=(0.1, 50))
ax.legend()
st.plot.show(fig)
for lr in (0.5, 1.0, 1.5, 3.0):
    r = T.tail_regime(1.0, lr, 4)
    print(f"S=4, aλ={lr}: {r.regime}; β={r.tail_index:.3f}; {r.finite_moments}")

# %% [markdown]
# ## Simulation: exceedance probabilities and the stationary density
# At $S=4$, $a\lambda=1$ ($\beta\approx3.50$) we compare the simulated $P(|e|>t)$ (a bounded functional,
# valid SE for any $\beta$) with the discrete-time density of `stationary_density_1d`, and fit the tail.

# %%
a, lr, s = 1.0, 1.0, 4
beta = T.tail_index(a, lr, s)
thr = np.geomspace(0.3, 30.0, 12)
stats = st.simulate.online_linreg_sgd(jax.random.key(0), np.eye(1), np.zeros(1), lr, s,
                                      label_noise_var=1.0, steps=STEPS, replicas=1024, burn_in=200,
                                      exceedance=st.simulate.exceedance(thr), divergence_threshold=1e12)
p_sim = np.asarray(stats.exceedance.probability)[0]
se_sim = np.asarray(stats.exceedance.probability_stderr)[0]
dens = T.stationary_density_1d(a, lr, s, label_noise_var=1.0, grid_step=0.04 if QUICK else 0.02)
p_th = dens.tail_probability(thr)
fit = T.exceedance_tail_index(thr[thr >= 4], p_sim[thr >= 4], se_sim[thr >= 4])
print(f"β exact {beta:.4f}; exceedance fit {fit.tail_index:.3f} ± {fit.stderr:.3f}; "
      f"Prop. 7 {T.ziyin_tail_index(a, lr, s):.3f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.errorbar(thr, p_sim, yerr=se_sim, fmt="o", label="simulation")
tt = np.geomspace(0.1, 100, 200)
ax.plot(tt, dens.tail_probability(tt), label="discrete-time density (Nyström)")
ax.plot(tt, 2 * dens.tail_constant * tt ** -beta / beta, ":", label=f"Kesten tail, β={beta:.2f}")
ax.set(xscale="log", yscale="log", xlabel="t", ylabel="P(|e| > t)", ylim=(1e-7, 1.5))
ax.legend()
st.plot.show(fig)

# %%
z = (p_th - p_sim) / se_sim
tol = 0.01 * p_th  # the quick-mode grid step 0.04 has ~0.5% discretisation error
z_ok = np.abs(p_th - p_sim) <= 4.5 * np.hypot(se_sim, tol)
assert np.all(z_ok[p_sim > 0]), z
assert abs(fit.tail_index - beta) < 0.2 * beta
print(f"OK: tail index {beta:.3f} (fit {fit.tail_index:.3f}); density matches {z_ok.sum()} exceedance "
      f"probabilities; max |z| = {np.max(np.abs(z[p_sim > 0])):.2f}")
