r"""optax pieces the simulators need beyond ``optax.sgd``: a fixed preconditioner and PNM.

Each is an ``optax.GradientTransformation`` (pure ``init``/``update`` functions), so it chains with
any other optax transformation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["precondition", "pnm", "build_optimizer"]


def precondition(matrix) -> optax.GradientTransformation:
    r"""Multiply every gradient by a fixed symmetric matrix :math:`P`: :math:`g \mapsto P g`.

    Chained before ``optax.sgd(lr, momentum)`` this gives :math:`m \leftarrow \mu m + P\hat g`,
    :math:`w \leftarrow w - \lambda m`, identical to :math:`w \leftarrow w - \lambda P m` because
    :math:`P` is constant.  Works on a single parameter vector (the simulators vmap replicas).
    """
    p = jnp.asarray(matrix)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g: p.astype(g.dtype) @ g, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


class PNMState(NamedTuple):
    """Buffers of positive-negative momentum: the last two momenta ``m_{t-1}, m_{t-2}``."""

    m1: optax.Updates
    m2: optax.Updates


def pnm(learning_rate, beta0: float = 1.0, beta1: float = 0.9) -> optax.GradientTransformation:
    r"""SGD with positive-negative momentum (Xie, Yuan, Zhu & Sugiyama, ICML 2021).

    .. math::
        m_t = \beta_1^2 m_{t-2} + (1-\beta_1^2) g_t,\qquad
        w \leftarrow w - \frac{\lambda}{\sqrt{(1+\beta_0)^2+\beta_0^2}}\,[(1+\beta_0)m_t - \beta_0 m_{t-1}]

    (the paper's odd/even buffers, written as the last two momenta).  Buffers start at zero.
    """
    norm = jnp.sqrt((1.0 + beta0) ** 2 + beta0**2)

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return PNMState(m1=zeros, m2=zeros)

    def update_fn(updates, state, params=None):
        del params
        m_new = jax.tree_util.tree_map(lambda g, m2: beta1**2 * m2 + (1 - beta1**2) * g, updates, state.m2)
        step = jax.tree_util.tree_map(
            lambda m, m1: -learning_rate * ((1 + beta0) * m - beta0 * m1) / norm, m_new, state.m1
        )
        return step, PNMState(m1=m_new, m2=state.m1)

    return optax.GradientTransformation(init_fn, update_fn)


def build_optimizer(lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, preconditioner=None,
                    optimizer=None) -> optax.GradientTransformation:
    """The optax chain the simulators use: coupled weight decay, preconditioner, then the optimizer.

    ``optimizer`` (any ``optax.GradientTransformation``, learning rate included) replaces the
    default ``optax.sgd(lr, momentum, nesterov)``.
    """
    parts = []
    if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
        parts.append(optax.add_decayed_weights(weight_decay))
    if preconditioner is not None:
        parts.append(precondition(preconditioner))
    if optimizer is None:
        mom = None if (isinstance(momentum, (int, float)) and momentum == 0) else momentum
        optimizer = optax.sgd(lr, momentum=mom, nesterov=nesterov)
    parts.append(optimizer)
    return optax.chain(*parts) if len(parts) > 1 else parts[0]
