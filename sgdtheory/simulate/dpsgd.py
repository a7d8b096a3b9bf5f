r"""Decentralized parallel SGD (DPSGD): ``n`` learners with their own minibatches and a mixing matrix.

:func:`dpsgd` runs ``replicas`` independent copies of ``n`` learners.  Learner ``k`` draws its own
minibatch :math:`B_{k,t}` and computes :math:`g_k = \nabla_\theta \frac1S\sum_{i\in B_{k,t}}
\ell(\theta_k, z_i)`; then, with a doubly-stochastic mixing matrix :math:`W`,

* ``order="mix_then_step"`` (D-PSGD, Lian et al. 2017, Alg. 1; the default):
  :math:`\theta_k' = \sum_j W_{kj}\theta_j - \alpha g_k(\theta_k)` -- the gradient is taken at
  the pre-mixing weights;
* ``order="gradient_then_mix"`` (local step, then gossip):
  :math:`\theta_k' = \sum_j W_{kj}(\theta_j - \alpha g_j(\theta_j))`.

It is a thin preset over :func:`~sgdtheory.simulate.minibatch_sgd` and its one scan engine: the
learners are one stacked pytree (leading axis ``n``), the per-learner gradients are one ``vmap``,
and the step above is an optax ``GradientTransformation``; each replica's step draws ``n * S``
examples, learner ``k`` using the ``k``-th block of ``S``.  For a :class:`Dataset` this means:
``"with_replacement"``: every learner's ``S`` indices i.i.d. uniform, independent across learners;
``"without_replacement"``: the ``n`` learners' batches are disjoint, jointly a uniform
``n S``-subset (needs ``n S <= N``); ``"shuffle"``: one permutation per epoch cut into consecutive
blocks of ``n S`` (an epoch is ``N // (n S)`` steps).  An :class:`Online` source gives every
learner fresh examples.

Statistics (default ``observe``): the ``2D`` vector :math:`(\bar\theta,\ s)` with
:math:`\bar\theta = \frac1n\sum_k\theta_k` and the per-coordinate consensus spread
:math:`s_i = \frac1n\sum_k(\theta_{k,i}-\bar\theta_i)^2`, streamed by the engine with
replica-group standard errors: ``stats.mean[D:]`` is the spread and ``stats.mean_stderr[D:]`` its
standard error; ``stats.cov[:D, :D]`` is the covariance of the learners' mean.

The mixing matrix must be square, non-negative and doubly stochastic (rows and columns sum to 1);
it need **not** be symmetric here (the theory in :mod:`sgdtheory.decentralized` does require it).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from sgdtheory import _checks
from sgdtheory.simulate._engine import Stats
from sgdtheory.simulate.data import Dataset, Online, check_data
from sgdtheory.simulate.minibatch import minibatch_sgd

__all__ = ["dpsgd", "consensus_observe", "DPSGD_ORDERS"]

DPSGD_ORDERS = _checks.DPSGD_ORDERS  # shared with sgdtheory.decentralized.ORDERS (one definition)


def consensus_observe(params) -> jax.Array:
    r"""The default statistic: ``(mean over learners, spread)`` of the flattened parameters, ``(2D,)``.

    ``params`` is the stacked pytree of the ``n`` learners (leading axis ``n``); the spread is
    :math:`\frac1n\sum_k(\theta_{k,i}-\bar\theta_i)^2` per coordinate.
    """
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(params)  # (n, D)
    mean = jnp.mean(flat, axis=0)
    spread = jnp.mean((flat - mean[None, :]) ** 2, axis=0)
    return jnp.concatenate([mean, spread])


def _dpsgd_update(w, lr, order, pin):
    """The DPSGD step as an optax transform on the stacked learners (``w``, ``lr`` are arrays)."""

    def mix(tree):
        return jax.tree_util.tree_map(lambda a: jnp.tensordot(w.astype(a.dtype), a, axes=1), tree)

    def update(grads, state, params):
        step = jax.tree_util.tree_map(lambda g: lr.astype(g.dtype) * g, grads)
        if order == "mix_then_step":
            new = jax.tree_util.tree_map(lambda m, s: m - s, mix(params), step)
        else:
            new = mix(jax.tree_util.tree_map(lambda p, s: p - s, params, step))
        if pin is not None:  # measurement device: shift every learner so the mean sits at `pin`
            new = jax.tree_util.tree_map(
                lambda a, c: a - jnp.mean(a, axis=0, keepdims=True) + c[None].astype(a.dtype),
                new, pin)
        return jax.tree_util.tree_map(lambda a, p: a - p, new, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def dpsgd(
    key,
    loss: Callable | None,
    params,
    data: Dataset | Online,
    mixing,
    lr,
    *,
    steps: int,
    replicas: int,
    burn_in: int,
    order: str = "mix_then_step",
    observe: Callable | None = None,
    gradient: Callable | None = None,
    pin_mean=None,
    divergence_hint: str | None = None,
    **engine: Any,
) -> Stats:
    r"""Simulate decentralized parallel SGD: ``n`` learners, own minibatches, mixing matrix ``W``.

    Update equations (``W`` doubly stochastic, :math:`g_k` learner ``k``'s minibatch gradient):

    .. math:: \text{mix\_then\_step:}\ \ \theta_k' = \sum_j W_{kj}\theta_j - \alpha\,g_k(\theta_k),
              \qquad
              \text{gradient\_then\_mix:}\ \ \theta_k' = \sum_j W_{kj}\bigl(\theta_j - \alpha\,g_j(\theta_j)\bigr).

    Args:
      key: a ``jax.random`` key.
      loss: ``loss(params, example) -> scalar`` for **one** learner (``None`` with ``gradient``).
      params: one learner's initial parameters (any pytree); every learner of every replica starts
        there (a consensus start).
      data: :class:`~sgdtheory.simulate.Dataset` or :class:`~sgdtheory.simulate.Online`;
        ``batch_size`` is the minibatch of **one** learner (see the module docstring for how the
        ``n`` learners share a sampling rule).
      mixing: ``(n, n)`` non-negative doubly-stochastic matrix (rows and columns sum to 1; symmetry
        not required).  ``n`` (its size) is static; its values are data.
      lr: the learning rate :math:`\alpha > 0` (a scalar; passed as data: changing it does not
        recompile).
      steps, replicas, burn_in: as in :func:`~sgdtheory.simulate.minibatch_sgd`.
      order: ``"mix_then_step"`` (default) or ``"gradient_then_mix"``.
      observe: ``observe(params) -> (m,) vector`` of the **stacked** learners (leading axis ``n``);
        default :func:`consensus_observe`: ``(mean over learners, per-coordinate spread)``.
      gradient: optional ``gradient(params, batch) -> grads`` of one learner (``batch`` has a
        leading axis ``S``), replacing ``jax.grad`` of the batch-mean ``loss``.
      pin_mean: optional pytree like ``params``: after every step the learners are shifted so that
        their mean is ``pin_mean`` -- not DPSGD itself but a measurement device for quantities
        conditional on the mean (the effective learning rate at a fixed point; the deviations
        then evolve exactly as in DPSGD with the mean frozen).
      divergence_hint: added to the divergence warning (default: the mix-then-step bound).
      **engine: forwarded to :func:`~sgdtheory.simulate.minibatch_sgd` (``statistics``,
        ``groups``, ``histogram``, ``exceedance``, ``first_passage``, ``on_divergence``,
        ``divergence_threshold``, ``record_every``, ``block``, ``chunk_steps``, ``dtype``, ...).

    Returns:
      :class:`~sgdtheory.simulate.Stats` of ``observe``.

    Example:
      >>> import jax, jax.numpy as jnp, sgdtheory as st
      >>> W = st.decentralized.ring_mixing(8)
      >>> noise = st.simulate.Online(lambda k, shape: jax.random.normal(k, shape), 1, vectorized=True)
      >>> loss = lambda w, z: 0.25 * w ** 2 + z * w           # h = 0.5, gradient noise variance 1
      >>> sim = st.simulate.dpsgd(jax.random.key(0), loss, jnp.array(0.0), noise, W, 0.1,
      ...                         steps=3000, replicas=512, burn_in=500)
      >>> theory = st.decentralized.consensus_spread(W, 0.5, 0.1, 1.0)
      >>> bool(abs(sim.mean[1] - theory) < 4.5 * sim.mean_stderr[1])   # spread: z < 4.5
      True
    """
    _checks.check_key(key)
    _checks.check_choice("order", order, DPSGD_ORDERS)
    if loss is None and gradient is None:
        raise ValueError("pass loss(params, example) (or gradient(params, batch)).")
    w_np = np.asarray(_checks.check_mixing(mixing, symmetric=False))
    n = w_np.shape[0]
    if jnp.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar; got shape {jnp.shape(lr)}.")
    _checks.check_positive("lr", lr)
    data, n_examples = check_data(data, engine.get("dtype"))
    s = data.batch_size
    if isinstance(data, Dataset):
        if data.sampling != "with_replacement" and n * s > n_examples:
            raise ValueError(
                f"{n} learners x batch_size {s} = {n * s} examples per step exceed the dataset "
                f"(N={n_examples}): {data.sampling!r} sampling gives the learners disjoint batches "
                "and needs n * batch_size <= N.")
        joint = Dataset(data.examples, n * s, data.sampling)
    else:
        joint = Online(data.sample, n * s, data.vectorized)

    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params holds no arrays.")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    stacked = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), params)
    pin = None
    if pin_mean is not None:
        pin = jax.tree_util.tree_map(jnp.asarray, pin_mean)
        if jax.tree_util.tree_structure(pin) != jax.tree_util.tree_structure(params) or any(
                a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(pin), leaves)):
            raise ValueError("pin_mean must have the structure and shapes of params.")

    def one_grad(p, batch):
        if gradient is not None:
            return gradient(p, batch)
        return jax.grad(lambda q: jnp.mean(jax.vmap(loss, (None, 0))(q, batch)))(p)

    def learners_grad(p_stacked, batch):
        per = jax.tree_util.tree_map(lambda a: a.reshape((n, s) + a.shape[1:]), batch)
        return jax.vmap(one_grad)(p_stacked, per)

    obs = observe or consensus_observe
    optimizer = _dpsgd_update(jnp.asarray(w_np), jnp.asarray(lr, dtype=float), order, pin)
    if divergence_hint is None and order == "mix_then_step" and np.allclose(w_np, w_np.T):
        om_min = float(np.linalg.eigvalsh(w_np)[0])
        divergence_hint = (f"mix_then_step on a quadratic is stable only for lr*h_max < 1 + ω_min "
                           f"= {1 + om_min:.4g} (sgdtheory.decentralized.max_stable_lr)")
    return minibatch_sgd(key, None, stacked, joint, optimizer, steps=steps, replicas=replicas,
                         burn_in=burn_in, observe=lambda p, st: obs(p), gradient=learners_grad,
                         divergence_hint=divergence_hint, **engine)
