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
# # 9. Landscape-dependent noise: label noise, decentralized SGD and the variance–flatness relation
#
# **Question.** SGD's noise is not a fixed temperature: it depends on where the parameters are.
# Where does that take them? Three exactly solvable faces of it:
#
# 1. **label-noise SGD** drifts along a manifold of zero loss toward its flattest point
#    (`docs/theory/label_noise.md`);
# 2. **decentralized SGD** (DPSGD) adds a spread between learners whose stability bound is stricter
#    than synchronous SGD's (`docs/theory/decentralized.md`);
# 3. the **variance–flatness relation**: along the principal directions of SGD's fluctuations the
#    variance *falls* as the loss gets flatter, $\sigma^2\propto F^{-\psi}$ with $\psi>0$ -- the
#    opposite sign of equilibrium (Langevin) dynamics (`docs/theory/flatness.md`).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sgdtheory as st

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
LN_REPLICAS = 4096 if QUICK else 65_536
DP_REPLICAS, DP_STEPS = (512, 2_000) if QUICK else (4096, 20_000)
FL_REPLICAS, FL_STEPS = (256, 3_000) if QUICK else (1024, 20_000)
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. Label-noise SGD drifts along the zero-loss manifold of $f = ab$ toward balance
#
# Fit $f=ab$ to $y=1$ with fresh label noise $\varepsilon\sim\mathcal N(0,\sigma^2)$ every step. Every
# point of the hyperbola $ab=1$ has zero loss, yet SGD does not stay put: the imbalance
# $D=a^2-b^2$ obeys exactly $D' = D\,(1-\eta^2\bar r^2)$ (the residual $\bar r$ includes the noise),
# so $D$ shrinks and SGD slides toward the flattest point $a=b$, where $\operatorname{tr}H=a^2+b^2$ is
# smallest — the implicit regulariser $-\frac{\sigma^2}{4}\nabla_\Gamma\operatorname{tr}H$. Its
# speed needs the finite-$\eta$ factor $2/(2-\eta h)$ (`docs/theory/label_noise.md`): the
# leading-order law $D_0e^{-\eta^2\sigma^2k}$ is visibly off.

# %%
ln = st.label_noise
Y, SIGMA2, LR_LN, D0 = 1.0, 0.25, 0.05, 3.75          # start at a=2, b=0.5 (ab = 1)
noisy_target = st.simulate.Online(lambda k, shape: Y + jnp.sqrt(SIGMA2) * jax.random.normal(k, shape),
                                  1, vectorized=True)
product_loss = lambda p, target: 0.5 * (p[0] * p[1] - target) ** 2   # noqa: E731
imbalance = lambda p, opt_state: jnp.stack([p[0] ** 2 - p[1] ** 2])   # noqa: E731

ks = np.array([250, 500, 1000, 2000]) if QUICK else np.array([250, 500, 1000, 2000, 3000, 4000])
d_sim, d_se = [], []
for k in ks:
    sim = st.simulate.minibatch_sgd(jax.random.key(int(k)), product_loss, jnp.array([2.0, 0.5]),
                                    noisy_target, optax.sgd(jnp.asarray(LR_LN)), steps=int(k),
                                    replicas=LN_REPLICAS, burn_in=int(k) - 1, observe=imbalance,
                                    block=50)
    d_sim.append(float(sim.mean[0]))
    d_se.append(float(sim.mean_stderr[0]))
k_grid = np.linspace(0, ks[-1], 60)
d_finite = [float(ln.imbalance_path(D0, Y, LR_LN, SIGMA2, int(k))) for k in k_grid]
d_leading = [float(ln.imbalance_path(D0, Y, LR_LN, SIGMA2, int(k), order="leading")) for k in k_grid]
ln_z = [(s - float(ln.imbalance_path(D0, Y, LR_LN, SIGMA2, int(k)))) / e
        for s, e, k in zip(d_sim, d_se, ks)]
lead_off = d_leading[-1] / d_finite[-1] - 1
print("k:", ks.tolist())
print("D(k) simulated:", np.round(d_sim, 4).tolist())
print("z vs finite-lr ODE:", np.round(ln_z, 2).tolist())
print(f"leading-order law at k={ks[-1]}: {100 * lead_off:+.1f} % vs the finite-lr ODE")

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(k_grid, d_finite, label="finite-η ODE, factor 2/(2-ηh)")
ax.plot(k_grid, d_leading, "--", label="leading order D₀exp(-η²σ²k)")
ax.errorbar(ks, d_sim, yerr=d_se, fmt="o", label="label-noise SGD (minibatch_sgd)")
ax.set(xlabel="step k", ylabel="imbalance D = a² - b²", title="drift toward balance on ab = 1")
ax.legend()
st.plot.show(fig)

# %% [markdown]
# ## 2. Decentralized SGD: the learners' spread and a stricter stability bound
#
# $n$ learners on a ring (self-weight 1/3), each with its own noisy gradient, mix their parameters
# with a doubly-stochastic $W$ (D-PSGD, Lian et al. 2017: $\theta_k' = \sum_j W_{kj}\theta_j - \alpha g_k$).
# On a quadratic of curvature $h$ with gradient-noise variance $v$ the exact spread of the learners
# around their mean is $\sigma_\delta^2 = \frac1n\sum_{m\ge1}\alpha^2v/(1-(\omega_m-\alpha h)^2)$, and
# it is stable only for $\alpha h < 1+\omega_{\min}$ (here $2/3$), while synchronous SGD is stable up
# to $\alpha h<2$ (`docs/theory/decentralized.md`).

# %%
dc = st.decentralized
W = dc.ring_mixing(8)
LR, V = 0.1, 1.0
noise_src = st.simulate.Online(lambda k, shape: jax.random.normal(k, shape), 1, vectorized=True)
bound = float(dc.max_stable_lr(W, 1.0))   # lr bound at h = 1
print(f"mix-then-step bound: lr*h < {bound:.4f}   (synchronous SGD: 2)")

hs = np.array([1.0, 2.5, 4.0, 5.5, 6.3])
spread_theory, spread_sim, spread_se = [], [], []
for h in hs:
    h_arr = jnp.asarray(h)
    quad = lambda w, z, h_arr=h_arr: 0.5 * h_arr * w ** 2 + z * w   # noqa: E731
    sim = st.simulate.dpsgd(jax.random.key(1), quad, jnp.asarray(0.0), noise_src, W, jnp.asarray(LR),
                            steps=DP_STEPS, replicas=DP_REPLICAS, burn_in=300)
    spread_theory.append(float(dc.consensus_spread(W, h, LR, V)))
    spread_sim.append(float(sim.mean[1]))
    spread_se.append(float(sim.mean_stderr[1]))
    print(f"lr*h = {LR * h:.2f}: spread theory {spread_theory[-1]:.5f} | "
          f"DPSGD {spread_sim[-1]:.5f} ± {spread_se[-1]:.1e}")
dp_z = np.abs(np.array(spread_sim) - spread_theory) / np.array(spread_se)

# Past the bound (lr*h = 0.8 > 2/3) the spread grows from a consensus start while the mean stays put.
t_grid = np.arange(1, 61)
grow = [float(dc.consensus_spread_after(W, 8.0, LR, V, t)) for t in t_grid]
mean_var = [float(dc.mean_variance_after(W, 8.0, LR, V, t)) for t in t_grid]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
ax[0].errorbar(LR * hs, spread_sim, yerr=spread_se, fmt="o", label="DPSGD simulation")
ax[0].plot(LR * hs, spread_theory, "-", label="exact spread")
ax[0].axvline(bound, color="gray", lw=0.8)
ax[0].set(xlabel="lr·h", ylabel="consensus spread σ_δ²", yscale="log",
          title="spread diverges at lr·h = 1 + ω_min")
ax[0].legend()
ax[1].semilogy(t_grid, grow, label="spread (exact transient)")
ax[1].semilogy(t_grid, mean_var, label="Var of learners' mean")
ax[1].set(xlabel="step t", title="lr·h = 0.8: past the bound")
ax[1].legend()
plt.tight_layout()
st.plot.show(fig)

# %% [markdown]
# ## 3. Variance–flatness: SGD fluctuates *less* where the loss is flatter (the inverse relation)
#
# Feng & Tu (PNAS 2021) measured, along the principal directions of an SGD trajectory, the variance
# $\sigma_i^2$ and the flatness $F_i$ (the width of the loss at $L=e\,L_0$), and found
# $\sigma_i^2\propto F_i^{-\psi}$ with $\psi>0$: the *inverse* of equilibrium. The minimal exact
# model: minibatch noise that shifts the landscape, $\ell(\theta,\delta)=\frac12(\theta-\delta)^\top
# K(\theta-\delta)$, gives $\sigma_i^2 = \alpha k_is^2/(B(2-\alpha k_i))$, so $\sigma^2\propto k$ while
# $F\propto k^{-1/2}$: $\psi\to 2$ as $\alpha\to0$. Langevin dynamics at a fixed temperature gives
# $\sigma^2\propto 1/k$: $\psi\to-2$. At finite $\alpha$ the exact fitted exponents differ from
# $\pm2$ (`docs/theory/flatness.md`).

# %%
from sgdtheory.crosscheck.flatness import measured_exponent, minimal_model, shift_loss

fl = st.flatness
k, q, kmat = minimal_model()               # D = 12 curvatures in [0.02, 1], random rotation
ALPHA, B, S2, TEMP = 0.5, 4, 1.0, 0.01
l0 = 0.5 * S2 * float(np.trace(kmat))
shifts = st.simulate.Online(lambda kk, shape: np.sqrt(S2) * jax.random.normal(kk, shape + (12,)), B,
                            vectorized=True)
sgd_stats = st.simulate.minibatch_sgd(jax.random.key(3), shift_loss(kmat), jnp.zeros(12), shifts,
                                      optax.sgd(jnp.asarray(ALPHA)), steps=FL_STEPS,
                                      replicas=FL_REPLICAS, burn_in=FL_STEPS // 4)
lan_stats = st.simulate.quadratic_sgd(jax.random.key(4), kmat, (2 * TEMP / ALPHA) * np.eye(12), ALPHA,
                                      steps=FL_STEPS, replicas=FL_REPLICAS, burn_in=FL_STEPS // 4)
flat_exact = fl.quadratic_flatness(k, l0)
psi = {}
fig, ax = plt.subplots(figsize=(6, 4))
for name, stats, exact_var in (
        ("SGD (landscape shift)", sgd_stats, fl.landscape_shift_variances(k, ALPHA, S2, B)),
        ("Langevin", lan_stats, fl.langevin_variances(k, ALPHA, TEMP))):
    fn = lambda m, c: measured_exponent(m, c, jnp.asarray(kmat), jnp.asarray(l0))   # noqa: E731
    measured, se = st.simulate.estimate(stats, fn)
    exact_psi = float(fl.variance_flatness_exponent(exact_var, flat_exact).psi)
    psi[name] = (float(measured), float(se), exact_psi)
    var_sim = np.einsum("ij,ik,kj->j", q, np.asarray(stats.cov), q)   # along K's eigenvectors
    ax.loglog(flat_exact, var_sim, "o", label=f"{name}: simulated")
    ax.loglog(flat_exact, exact_var, "-", color=ax.lines[-1].get_color(), label=f"{name}: exact")
    print(f"{name:22s} ψ measured (PCA + flatness + fit) = {float(measured):+.4f} ± {float(se):.4f}; "
          f"exact finite-α fit {exact_psi:+.4f}; α→0 limit {'+2' if 'SGD' in name else '-2'}")
ax.set(xlabel="flatness F_i (width at L = e·L0)", ylabel="variance σ_i² along PC i",
       title="inverse (SGD) vs equilibrium (Langevin) relation")
ax.legend(fontsize=8)
st.plot.show(fig)
flat_z = [abs(m - e) / s for m, s, e in psi.values()]

# %%
assert max(abs(z) for z in ln_z) < 4.5, "label-noise SGD disagrees with the finite-lr ODE"
assert lead_off > 0.05, "the leading-order law should be visibly off here"
assert float(np.max(dp_z)) < 4.5, "DPSGD spread disagrees with the exact formula"
assert max(flat_z) < 4.5, "a measured exponent disagrees with the exact finite-alpha fit"
assert psi["SGD (landscape shift)"][0] > 0 > psi["Langevin"][0]
print(f"OK: label-noise drift, DPSGD spread and both variance-flatness exponents agree with the exact "
      f"theory (largest |z|: {max(max(abs(z) for z in ln_z), float(np.max(dp_z)), max(flat_z)):.2f})")
