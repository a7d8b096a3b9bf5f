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
# # 7. Your own model: exact local theory of SGD around a trained network
#
# **Question.** You trained a small network. Keep running SGD at a fixed learning rate $\lambda$:
# how much do the weights fluctuate around the minimum?
#
# **Theory.** Expand every per-example loss to second order at the minimum $\theta^*$
# ($g_i$, $H_i$). SGD then is the random affine map
# $\delta \leftarrow (I-\lambda\hat H_B)\delta - \lambda\hat g_B$, whose stationary covariance
# `sgdtheory.local.stationary` solves exactly, *keeping the multiplicative noise*
# $\frac{f_S}{N}\sum_i (H_i-\bar H)\Sigma(H_i-\bar H)$ (`docs/theory/local.md`). We compare it with
# the additive (fixed-$C$) approximation, with continuous time ($\bar H\Sigma+\Sigma\bar H=\lambda C$),
# and with simulated nonlinear SGD, and watch the local theory break as $\lambda$ grows.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sgdtheory as st
from sgdtheory import local
from sgdtheory.crosscheck.local import MLP_WEIGHT_DECAY, mlp_problem

QUICK = os.environ.get("SGDTHEORY_QUICK", "0") == "1"
REPLICAS, STEPS, BURN_IN = (256, 6_000, 2_000) if QUICK else (2048, 40_000, 8_000)
t_start = time.perf_counter()
print(f"quick mode: {QUICK}; replicas={REPLICAS}, steps={STEPS}, burn_in={BURN_IN}")

# %% [markdown]
# A 1→3→1 tanh network on 24 noisy points of $\sin(1.5x)$, weight decay $\gamma=0.02$, trained by
# Adam and then Newton-polished (`local.polish`) to a minimum of the full-batch objective.

# %%
loss, params, examples = mlp_problem()
wd, S = MLP_WEIGHT_DECAY, 1
exp = local.expand(loss, params, examples)
lr_max = local.max_stable_lr(loss, params, examples, S, weight_decay=wd, expansion=exp)
k = np.linalg.eigvalsh(np.asarray(exp.hessians.mean(0))) + wd
print("curvatures of H̄ + γI:", np.round(k, 4))
print(f"mean-square bound lr* = {lr_max:.4f}  (gradient-descent edge 2/k_max = {2 / k[-1]:.4f})")

# %% [markdown]
# Theory (three ways) and simulation over a range of learning rates.

# %%
qa = local.quadratic_approximation(loss, params, examples, S)
fracs = [0.03, 0.1, 0.3, 0.6] if QUICK else [0.03, 0.06, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75]
rows = []
for frac in fracs:
    lr = frac * lr_max
    exact = local.stationary(loss, params, examples, lr, S, weight_decay=wd, expansion=exp,
                             check_stable=False)
    additive = st.quadratic.stationary_covariance(qa.hessian, qa.noise_cov, lr, weight_decay=wd)
    continuous = st.stationary_covariance_continuous(qa.hessian, qa.noise_cov, lr, weight_decay=wd)
    opt = optax.chain(optax.add_decayed_weights(jnp.asarray(wd)), optax.sgd(jnp.asarray(lr)))
    sim = st.simulate.minibatch_sgd(jax.random.key(0), loss, params,
                                    st.simulate.Dataset(examples, S, "with_replacement"), opt,
                                    steps=STEPS, replicas=REPLICAS, burn_in=BURN_IN)
    tr, se = st.simulate.estimate(sim, lambda m, c: jnp.trace(c))
    rows.append((frac, float(jnp.trace(exact.param_cov)), float(jnp.trace(additive)),
                 float(jnp.trace(continuous)), float(tr), float(se)))
    print(f"lr = {frac:4.2f} lr*: tr Σ local {rows[-1][1]:.5f} | additive {rows[-1][2]:.5f} | "
          f"continuous {rows[-1][3]:.5f} | SGD {rows[-1][4]:.5f} ± {rows[-1][5]:.1e}")
rows = np.array(rows)

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.errorbar(rows[:, 0], rows[:, 4] / rows[:, 0], 2 * rows[:, 5] / rows[:, 0], fmt="ko",
            label="simulated nonlinear SGD (±2 se)")
ax.plot(rows[:, 0], rows[:, 1] / rows[:, 0], "C0-", label="exact local theory")
ax.plot(rows[:, 0], rows[:, 2] / rows[:, 0], "C1--", label="additive fixed-C")
ax.plot(rows[:, 0], rows[:, 3] / rows[:, 0], "C2:", label="continuous time")
ax.set_xlabel("lr / lr*")
ax.set_ylabel("tr Σ / (lr / lr*)")
ax.legend()
st.plot.show(fig)

# %% [markdown]
# **Reading.** At small $\lambda$ all three agree with SGD. As $\lambda$ grows the multiplicative
# noise (kept by the local theory) raises the fluctuations above the additive and continuous-time
# pictures. Already at ~0.1-0.3 lr* the network's third-order terms add a few percent (SGD slightly
# above the local prediction); by ~0.6 lr* SGD's fluctuations are 12 % *below* it: there the
# second-order expansion, not the noise model, is what fails (SGD itself stays bounded).

# %%
z_small = (rows[0, 4] - rows[0, 1]) / rows[0, 5]
z_big = (rows[-1, 4] - rows[-1, 1]) / rows[-1, 5]
zmax = st.simulate.z_threshold(sim.groups, 2)
print(f"z at lr = {fracs[0]} lr*: {z_small:.2f};  at {fracs[-1]} lr*: {z_big:.1f}  (z_max {zmax:.2f})")
assert abs(z_small) < zmax, "local theory should agree with SGD at small lr"
assert abs(z_big) > zmax, "the local expansion should fail at large lr"
assert abs(rows[-1, 2] - rows[-1, 4]) > abs(rows[-1, 1] - rows[-1, 4]), "additive should be further off"
print(f"OK: exact local theory agrees with nonlinear SGD at small lr and fails where expected; "
      f"notebook ran in {time.perf_counter() - t_start:.1f} s")
