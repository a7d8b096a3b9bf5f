r"""The optax chain the simulator presets build; the project's optax transforms live in
:mod:`sgdtheory.optim` (re-exported here for backward compatibility: ``simulate.pnm`` and
``simulate.precondition`` are ``optim.pnm`` and ``optim.precondition``)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from sgdtheory import _checks
from sgdtheory.optim import PNMState, pnm, precondition

__all__ = ["precondition", "pnm", "PNMState", "build_optimizer", "preset_optimizer",
           "check_optimizer_alone"]


def build_optimizer(lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, preconditioner=None,
                    optimizer=None) -> optax.GradientTransformation:
    """The optax chain the simulators use: coupled weight decay, preconditioner, then the optimizer.

    ``optimizer`` (any ``optax.GradientTransformation``, learning rate included) replaces the
    default ``optax.sgd(lr, momentum, nesterov)``.  Pass hyperparameters as ``jnp`` arrays to reuse
    the compiled simulator across values (:mod:`sgdtheory.simulate.minibatch`).
    """
    parts = []
    if not _checks.is_zero(weight_decay):
        parts.append(optax.add_decayed_weights(weight_decay))
    if preconditioner is not None:
        parts.append(precondition(preconditioner))
    if optimizer is None:
        mom = None if _checks.is_zero(momentum) else momentum
        optimizer = optax.sgd(lr, momentum=mom, nesterov=nesterov)
    parts.append(optimizer)
    return optax.chain(*parts) if len(parts) > 1 else parts[0]


def check_optimizer_alone(lr, momentum=0.0, nesterov=False):
    """An optax ``optimizer=`` carries its own learning rate and momentum: refuse the keywords."""
    if lr is not None:
        raise ValueError("pass either lr (with momentum=, nesterov=) or an optax optimizer=, not "
                         f"both: the optimizer carries its own learning rate (got lr={lr!r}). Use "
                         "lr=None with optimizer=.")
    if not _checks.is_zero(momentum) or nesterov:
        raise ValueError("momentum= and nesterov= configure the default optax.sgd; with "
                         "optimizer= build them into it (optax.sgd(lr, momentum, nesterov=True)).")


def preset_optimizer(lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, preconditioner=None,
                     optimizer=None) -> optax.GradientTransformation:
    """The presets' optimizer from their keywords: validated, then :func:`build_optimizer` with
    every non-default number as an array (data to the compiled program: a sweep over ``lr``,
    ``momentum`` or ``weight_decay`` does not recompile).  With ``optimizer=`` the keywords
    ``lr``, ``momentum`` and ``nesterov`` must be left at their defaults."""
    if optimizer is None:
        if lr is None or jnp.ndim(lr) != 0:
            raise ValueError("lr must be a scalar (or pass an optax optimizer).")
        _checks.check_positive("lr", lr)
        _checks.check_momentum(momentum)
        lr = jnp.asarray(lr, float)
    else:
        check_optimizer_alone(lr, momentum, nesterov)
    as_data = lambda v: v if _checks.is_zero(v) else jnp.asarray(v, float)  # noqa: E731
    return build_optimizer(lr, momentum=as_data(momentum), nesterov=nesterov,
                           weight_decay=as_data(weight_decay), preconditioner=preconditioner,
                           optimizer=optimizer)
