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
# # 3. Minibatch noise in linear regression
#
# **Question.** Real SGD noise comes from sampling minibatches, and its covariance depends on
# where the weights are. How do the batch size and the sampling rule (with vs without replacement)
# set the stationary loss of SGD on a linear regression — and where does the popular picture of a
# *fixed* (additive) noise covariance, measured at the minimum, break down?
#
# **Theory.** On a dataset $(x_i, y_i)_{i=1}^N$ with loss $\frac1N\sum_i \tfrac12(x_i^\top w-y_i)^2$,
# one SGD step with batch $B$ is the random affine map
# $w \leftarrow (I - \lambda \hat H_B) w + \lambda X_B^\top y_B / S$. Its gradient noise has
# covariance (a batch-mean of $S$ per-sample gradients $g_i = x_i(x_i^\top w - y_i)$)
#
# $$ C(w) = f_S \Big[\tfrac1N \textstyle\sum_i g_i g_i^\top - \bar g \bar g^\top\Big],\qquad
#    f_S = \frac1S \ \text{(with replacement)},\quad f_S = \frac{N-S}{S(N-1)} \ \text{(without)} . $$
#
# $C$ depends on $w$ (*multiplicative* noise). Averaging over the stationary distribution,
# the covariance $\Sigma$ solves the **linear** equation
# $\Sigma = (I-\lambda\hat H)\Sigma(I-\lambda\hat H) + \lambda^2 C(\Sigma)$, where
# $C(\Sigma) = f_S[\frac1N\sum_i (x_i^\top\Sigma x_i + r_i^2)x_ix_i^\top - \hat H\Sigma\hat H]$ and
# $r_i$ are the residuals at the minimum (`st.linreg.dataset_stationary`). The *additive* picture
# freezes $C$ at its value at the minimum, $C_0 = C(\Sigma = 0)$, and solves the quadratic theory of
# notebook 1 — it drops the $x_i^\top\Sigma x_i$ feedback: noise makes the weights fluctuate, which
# makes the noise larger.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scipy.stats

import sgdtheory as st
from sgdtheory import plot as sp

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
REPLICAS, STEPS, BURN_IN = (512, 2_000, 500) if QUICK else (4096, 20_000, 2_000)
t_start = time.perf_counter()
print(f"quick mode: {QUICK}; replicas={REPLICAS}, steps={STEPS}, burn_in={BURN_IN}")

rng = np.random.default_rng(0)
N, D = 16, 2
X = jnp.asarray(rng.normal(size=(N, D)) * np.array([1.0, 0.5]))
u = jnp.array([1.0, -0.5])
y = X @ u + 0.5 * jnp.asarray(rng.normal(size=N))
H_hat = X.T @ X / N
print("N =", N, " D =", D, " eigenvalues of X^T X / N:", np.round(np.asarray(jnp.linalg.eigvalsh(H_hat)), 4))

# %% [markdown]
# ## Batch size and sampling rule at a fixed learning rate
# The exact theory for both sampling rules, against minibatch SGD on the same dataset
# (`st.simulate.linreg_sgd`, which draws real index batches).

# %%
LR = 0.5 * float(st.linreg.dataset_max_lr(X, 1))
batch_sizes = np.array([2, 8]) if QUICK else np.array([1, 2, 4, 8, 12])
# the batch size is static (one theory solve per value, ~1 s each eagerly): quick mode draws the
# theory at the simulated batch sizes only
batch_fine = batch_sizes if QUICK else np.arange(1, N + 1)
train_loss = lambda m, c: 0.5 * jnp.mean((X @ m - y) ** 2) + 0.5 * jnp.trace(H_hat @ c)  # noqa: E731
curves, points = {}, {}
for replacement, rule in [(True, "with_replacement"), (False, "without_replacement")]:
    curves[rule] = np.array([float(st.linreg.dataset_stationary(X, y, LR, int(s), replacement=replacement)
                                   .train_loss) for s in batch_fine])
    sim, se = [], []
    for j, s in enumerate(batch_sizes):
        stats = st.simulate.linreg_sgd(jax.random.key(10 * j + replacement), X, y, LR, int(s),
                                       steps=STEPS, replicas=REPLICAS, burn_in=BURN_IN, sampling=rule)
        v, e = st.simulate.estimate(stats, train_loss)
        sim.append(float(v))
        se.append(float(e))
    points[rule] = (curves[rule][np.searchsorted(batch_fine, batch_sizes)], np.array(sim), np.array(se))
    for s, t, v, e in zip(batch_sizes, *points[rule]):
        print(f"{rule:20s} S = {s:2d}: theory {t:.6f}   SGD {v:.6f} ± {e:.1e}")
G = stats.groups
min_loss = 0.5 * float(jnp.mean((X @ jnp.linalg.solve(H_hat, X.T @ y / N) - y) ** 2))
print(f"loss at the minimum (full-batch GD limit): {min_loss:.5f}")

# %% [markdown]
# ## Where the fixed-noise picture fails: sweep the learning rate
# At batch size $S = 1$ (with replacement) we compare the exact multiplicative theory, the
# additive picture with $C_0$ measured at the minimum, and SGD, up to the mean-square stability
# edge $\lambda^*$ (`st.linreg.dataset_max_lr`). Note $\lambda^*$ is *below* the deterministic edge
# $2/h_{\max}$: multiplicative noise can destabilise SGD on its own.

# %%
S1 = 1
lr_ms = float(st.linreg.dataset_max_lr(X, S1))
lr_gd = 2 / float(jnp.linalg.eigvalsh(H_hat)[-1])
w_min = jnp.linalg.solve(H_hat, X.T @ y / N)
per_sample = X * (X @ w_min - y)[:, None]          # per-sample gradients at the minimum
C0 = st.noise.minibatch_covariance(per_sample, S1)  # additive picture: noise frozen at w_min
fr_fine = np.linspace(0.02, 0.97, 60)
fr_pts = np.array([0.2, 0.9]) if QUICK else np.array([0.1, 0.3, 0.5, 0.7, 0.9])
# theory on the fine grid and at the simulated points, in one vmapped call each
lrs_all = jnp.asarray(np.concatenate([fr_fine, fr_pts]) * lr_ms)
exact_all = np.asarray(jax.vmap(lambda l: st.linreg.dataset_stationary(X, y, l, S1).train_loss)(lrs_all))
additive_all = min_loss + np.asarray(jax.vmap(lambda l: st.stationary_loss(H_hat, C0, l))(lrs_all))
exact_lr, th_lr = exact_all[:fr_fine.size], exact_all[fr_fine.size:]
additive_lr, add_lr = additive_all[:fr_fine.size], additive_all[fr_fine.size:]
sim_lr, se_lr = [], []
for j, f in enumerate(fr_pts):
    stats = st.simulate.linreg_sgd(jax.random.key(500 + j), X, y, f * lr_ms, S1, steps=STEPS,
                                   replicas=REPLICAS, burn_in=BURN_IN)
    v, e = st.simulate.estimate(stats, train_loss)
    sim_lr.append(float(v))
    se_lr.append(float(e))
sim_lr, se_lr = np.array(sim_lr), np.array(se_lr)
print(f"mean-square edge lr* = {lr_ms:.4f}  vs deterministic edge 2/h_max = {lr_gd:.4f}")
for f, t, a, v, e in zip(fr_pts, th_lr, add_lr, sim_lr, se_lr):
    print(f"lr = {f:.1f} lr*: exact {t:.5f}  additive {a:.5f}  SGD {v:.5f} ± {e:.5f}")

# %% [markdown]
# ## The exact learning curve (online SGD, fresh Gaussian data)
# With fresh samples $x \sim \mathcal N(0, A)$ and labels $y = u^\top x + \varepsilon$ every step,
# the diagonal of $E_t = \mathbb E[e_t e_t^\top]$ ($e = w - u$) closes on itself (Gaussian fourth
# moments), so `st.linreg.learning_curve` gives the expected test loss
# $\tfrac12\operatorname{tr}(AE_t)$ after every step exactly. We record every replica's iterate
# every few steps and average the test loss over replicas.

# %%
A = jnp.diag(jnp.array([1.0, 0.25]))
sigma2, S_on, T = 0.25, 4, 200
lr_on = 0.1 * float(st.linreg.online_max_lr(A, S_on))
R_on = 1024 if QUICK else 8192
curve = st.linreg.learning_curve(A, lr_on, S_on, T, init_error_cov=jnp.zeros((2, 2)),
                                 init_error_mean=-u, label_noise_var=sigma2)
every = 10
stats = st.simulate.online_linreg_sgd(jax.random.key(99), A, u, lr_on, S_on, label_noise_var=sigma2,
                                      steps=T, replicas=R_on, burn_in=0, init=jnp.zeros(2),
                                      record_every=every, record_replicas=R_on)
e_t = np.asarray(stats.trajectory) - np.asarray(u)           # (T/every, R, D)
test_t = 0.5 * np.einsum("tri,ij,trj->tr", e_t, np.asarray(A), e_t)
t_rec = every * np.arange(1, test_t.shape[0] + 1)
sim_t, se_t = test_t.mean(axis=1), test_t.std(axis=1, ddof=1) / np.sqrt(R_on)
th_t = np.asarray(curve.test_loss)[t_rec]
print("steps      :", t_rec)
print("theory     :", np.round(th_t, 5))
print("SGD        :", np.round(sim_t, 5))
print("stationary test loss:", float(st.linreg.online_stationary(A, lr_on, S_on, label_noise_var=sigma2,
                                                                 true_weights=u).test_loss))

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
ax = axes[0]
for rule, color in [("with_replacement", "tab:blue"), ("without_replacement", "tab:orange")]:
    t, v, e = points[rule]
    sp.theory_vs_simulation(batch_sizes, curves[rule], v, e, x_theory=batch_fine, ax=ax,
                            label=rule.replace("_", " "), color=color)
ax.axhline(min_loss, color="k", ls=":", label="loss at the minimum")
ax.set_xlabel("batch size S")
ax.set_ylabel("stationary train loss")
ax.set_title(rf"$N={N}$, $\lambda = {LR:.3f}$")
ax.legend(fontsize=8)

ax = axes[1]
sp.theory_vs_simulation(fr_pts, exact_lr, sim_lr, se_lr, x_theory=fr_fine, ax=ax,
                        label="exact (multiplicative)")
ax.plot(fr_fine, additive_lr, "--", color="tab:gray", label=r"additive, $C_0$ at the minimum")
ax.set_yscale("log")
ax.set_xlabel(r"$\lambda / \lambda^*$ (mean-square edge)")
ax.set_ylabel("stationary train loss")
ax.set_title("S = 1: fixed-noise picture vs exact")
ax.legend(fontsize=8)

ax = axes[2]
sp.theory_vs_simulation(t_rec, np.asarray(curve.test_loss), sim_t, se_t,
                        x_theory=np.arange(T + 1), ax=ax, label="online")
ax.set_yscale("log")
ax.set_xlabel("step t")
ax.set_ylabel(r"test loss $\frac{1}{2}\mathbb{E}[e_t^\top A e_t]$")
ax.set_title(rf"learning curve, $S={S_on}$, $\sigma^2={sigma2}$")
ax.legend(fontsize=8)
fig.tight_layout()
st.plot.show(fig)  # shown in Jupyter; saved as a PNG when run headless

# %% [markdown]
# **Reading the plots.** Sampling without replacement is less noisy ($f_S$ vanishes at $S = N$,
# where SGD becomes gradient descent); with replacement a batch of $N$ still has noise. At small
# $\lambda$ the additive picture is fine, but as $\lambda$ approaches the mean-square edge it
# underestimates the loss more and more: the weight fluctuations feed back into the noise, and the
# true stationary state diverges at $\lambda^*$ while the additive one stays finite up to $2/h_{\max}$.
#
# ## The check
# $|z| \le z_{\max}$ for every comparison (two-sided Student-$t$ quantile at a false-alarm rate of
# $10^{-4}$, Bonferroni over the comparisons; $G-1$ degrees of freedom for the stationary runs and
# $R-1$ for the learning curve, whose replicas are independent). The additive picture must fail at
# the largest learning rate.

# %%
zs = [(points[r][1] - points[r][0]) / points[r][2] for r in points] + [(sim_lr - th_lr) / se_lr]
z_stat = np.concatenate(zs)
z_curve = (sim_t - th_t) / se_t
m = z_stat.size + z_curve.size
zmax_stat = float(scipy.stats.t.isf(1e-4 / (2 * m), G - 1))
zmax_curve = float(scipy.stats.t.isf(1e-4 / (2 * m), R_on - 1))
z_add = (sim_lr[-1] - add_lr[-1]) / se_lr[-1]
print(f"stationary: worst |z| = {np.max(np.abs(z_stat)):.2f} (z_max {zmax_stat:.2f}); "
      f"learning curve: worst |z| = {np.max(np.abs(z_curve)):.2f} (z_max {zmax_curve:.2f}); "
      f"additive picture at {fr_pts[-1]} lr*: z = {z_add:.1f}")
assert np.all(np.abs(z_stat) <= zmax_stat), "stationary theory and SGD disagree"
assert np.all(np.abs(z_curve) <= zmax_curve), "learning curve and SGD disagree"
assert abs(z_add) > zmax_stat, "the additive picture should fail near the mean-square edge"
print(f"OK; notebook ran in {time.perf_counter() - t_start:.1f} s")
