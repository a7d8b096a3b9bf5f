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
# # 8. Adaptive and second-order optimizers on one noisy quadratic
#
# **Question.** On the same quadratic $L=\frac12 w^\top Hw$ with gradient noise of covariance $C$,
# how do SGD, momentum, damped Newton, natural gradient and Adam/LaProp fluctuate, and which of
# the published formulas is a *stationary law* the dynamics reaches?
#
# Three labels (`docs/theory/quadratic.md`, `docs/theory/adaptive.md`):
# **exact** (a stationary covariance, checked here against simulation), **mean-field fixed point**
# (a self-consistent solution: we print whether it attracts), and **simulation only** (Adam,
# LaProp: no exact theory exists).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sgdtheory as st
from sgdtheory import adaptive, quadratic

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
REPLICAS, STEPS, BURN_IN = (1024, 4_000, 1_000) if QUICK else (8192, 40_000, 5_000)
print(f"quick mode: {QUICK}; replicas={REPLICAS}, steps={STEPS}, burn_in={BURN_IN}")

H = jnp.diag(jnp.array([1.0, 0.1]))      # a stiff and a flat direction
C = 0.5 * jnp.eye(2)                     # additive gradient noise
LR = 0.2

# %% [markdown]
# ## 1. Exact stationary covariances: SGD, heavy ball, damped Newton
# Damped Newton preconditions by $H^{-1}$: $\Sigma=\frac{1+\mu}{1-\mu}\frac{\lambda}{2(1+\mu)-\lambda}H^{-1}CH^{-1}$
# (Liu, Ziyin & Ueda 2021), stable for $\lambda<2(1+\mu)$ whatever $H$ is.

# %%
H_inv = jnp.linalg.inv(H)
cases = {
    "SGD": (dict(), quadratic.stationary_covariance(H, C, LR)),
    "heavy ball μ=0.5": (dict(momentum=0.5), quadratic.stationary_covariance(H, C, LR, momentum=0.5)),
    "damped Newton": (dict(preconditioner=H_inv), quadratic.damped_newton_covariance(H, C, LR)),
}
z_exact = []
rows = []
for name, (kw, theory) in cases.items():
    sim = st.simulate.quadratic_sgd(jax.random.key(0), H, C, LR, steps=STEPS, replicas=REPLICAS,
                                    burn_in=BURN_IN, **kw)
    d_th, d_sim = np.diag(np.asarray(theory)), np.diag(np.asarray(sim.cov))
    se = np.diag(np.asarray(sim.cov_stderr))
    z_exact += list((d_sim - d_th) / se)
    rows.append((name, d_th, d_sim, se))
    print(f"{name:18s} Var w1, w2: exact {d_th.round(4)} | simulated {d_sim.round(4)} ± {se.round(4)}")
print("largest |z| of the exact rows:", round(float(np.max(np.abs(z_exact))), 2))

# %% [markdown]
# ## 2. Natural gradient and the Adam-like preconditioner: mean-field fixed points
# With $\Lambda=\lambda\Sigma$-dependent preconditioners the stationary equation is self-consistent.
# For noise proportional to the covariance, $C=cK\Sigma K$ (p1 Eq. 111), NGD's fixed point has slope
# $1-4/(1+c)$: it **repels for $c<1$**; the Adam-like $\Lambda=\lambda E[gg^\top]^{-1/2}$ (p1 Thm 10)
# has slope $1-2/(1+c)$ and attracts for every $c>0$.

# %%
for c in (0.5, 3.0):
    ngd = adaptive.ngd_fixed_point_proportional(H, c, LR)
    adam_like = adaptive.adam_like_fixed_point(H, c, LR)
    print(f"c={c}: NGD Σ*={np.diag(np.asarray(ngd.sigma)).round(4)}, slope radius "
          f"{np.asarray(ngd.spectral_radius).round(3)}, attracting={np.asarray(ngd.attracting)} | "
          f"Adam-like radius {np.asarray(adam_like.spectral_radius).round(3)}, "
          f"attracting={np.asarray(adam_like.attracting)}")
ngd_repels = not bool(np.any(adaptive.ngd_fixed_point_proportional(H, 0.5, LR).attracting))
adam_attracts = bool(np.all(adaptive.adam_like_fixed_point(H, 0.5, LR).attracting))

# %% [markdown]
# ## 3. Adam and LaProp: simulation, and the boundedness of their updates
# No exact stationary law exists for Adam; the simulator runs it through optax like any optimizer.
# Its update is bounded only when $\beta_1<\sqrt{\beta_2}$ (Ziyin, Wang & Ueda, LaProp); LaProp's is
# bounded by $1/\sqrt{1-\beta_2}$ for any $\beta_1,\beta_2$. One gradient spike shows it.

# %%
for name, opt in (("Adam", optax.adam(0.01)), ("LaProp", st.optim.laprop(0.01))):
    sim = st.simulate.quadratic_sgd(jax.random.key(1), H, C, None, optimizer=opt, steps=STEPS,
                                    replicas=REPLICAS, burn_in=BURN_IN)
    print(f"{name:6s} lr=0.01: simulated Var w1, w2 = {np.diag(np.asarray(sim.cov)).round(5)}")

b1, b2 = 0.99, 0.9
t = jnp.arange(1, 401)
imp = adaptive.impulse_updates(t, b1, b2)
print(f"β1={b1}, β2={b2}: Adam bounded? {bool(adaptive.adam_is_bounded(b1, b2))}; "
      f"max |Adam update| after one spike = {float(jnp.max(jnp.abs(imp.adam))):.3g} lr; "
      f"max |LaProp update| = {float(jnp.max(jnp.abs(imp.laprop))):.3g} lr "
      f"(bound {float(adaptive.laprop_update_bound(b1, b2)):.3g})")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
names = [r[0] for r in rows]
x = np.arange(len(rows))
ax[0].bar(x - 0.2, [r[1][1] for r in rows], 0.4, label="exact")
ax[0].errorbar(x + 0.2, [r[2][1] for r in rows], yerr=[r[3][1] for r in rows], fmt="o", label="simulated")
ax[0].set_xticks(x, names)
ax[0].set(ylabel="Var of the flat coordinate w₂", title="exact stationary covariances")
ax[0].legend()
ax[1].semilogy(t, np.abs(np.asarray(imp.adam)) + 1e-300, label="Adam")
ax[1].semilogy(t, np.abs(np.asarray(imp.laprop)) + 1e-300, label="LaProp")
ax[1].set(xlabel="step after a gradient spike", ylabel="|update| / lr", title="β1=0.99 > √β2")
ax[1].legend()
plt.tight_layout()
st.plot.show(fig)

# %% [markdown]
# ## 4. The Bayes-optimal learning rate and the escape efficiency
# For $C=\frac{N-S}{NS}H$ the constant $\lambda$ that makes SGD's stationary law closest (KL) to the
# posterior $\mathcal N(0,(NH)^{-1})$ solves an exact equation (p1 Thm 6); Mandt et al.'s
# continuous-time answer $2SD/(N\operatorname{tr}H)$ is its small-$\lambda$ limit. The excess loss
# after $t$ steps from the minimum, $E_d(t)$ (p1 Thm 7), is never below its continuous-time
# counterpart $E_c(t)$ for plain SGD (proved in `docs/theory/quadratic.md`; with momentum it can be,
# at early $t$).

# %%
N_DATA = 200
for S, spectrum in ((10, (1.0, 0.1)), (10, (20.0, 0.1)), (100, (20.0, 0.1))):
    Hs = jnp.diag(jnp.array(spectrum))
    exact_lr = float(quadratic.bayes_optimal_lr(Hs, N_DATA, S))
    mandt = float(quadratic.bayes_optimal_lr(Hs, N_DATA, S, continuous=True))
    print(f"N={N_DATA}, S={S}, h={spectrum}: λ* = {exact_lr:.4g}, Mandt {mandt:.4g} "
          f"({100 * (mandt / exact_lr - 1):+.1f} %), λ*·h_max = {exact_lr * spectrum[0]:.3f}")

steps = jnp.arange(0, 60)
e_d = quadratic.escape_efficiency(H, C, 1.5, steps)
e_c = quadratic.escape_efficiency(H, C, 1.5, steps, continuous=True)
ordering = bool(jnp.all(e_d >= e_c - 1e-12))
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(steps, e_d, label="discrete E_d(t), lr=1.5")
ax.plot(steps, e_c, "--", label="continuous E_c(t)")
ax.set(xlabel="steps t from the minimum", ylabel="excess loss", title="escape efficiency")
ax.legend()
st.plot.show(fig)
print(f"E_d(t) >= E_c(t) for all t shown: {ordering}")

# %%
assert np.max(np.abs(z_exact)) < 4.5, "an exact covariance disagrees with simulation"
assert ngd_repels and adam_attracts and ordering
print("OK: exact covariances agree with simulation; NGD's c<1 fixed point repels, the Adam-like "
      "one attracts; LaProp's update stays bounded where Adam's does not")
