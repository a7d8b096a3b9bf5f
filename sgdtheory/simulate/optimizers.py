r"""The optax chain the simulator presets build; the project's optax transforms live in
:mod:`sgdtheory.optim` (re-exported here for backward compatibility: ``simulate.pnm`` and
``simulate.precondition`` are ``optim.pnm`` and ``optim.precondition``)."""

from __future__ import annotations

import optax

from sgdtheory.optim import PNMState, pnm, precondition

__all__ = ["precondition", "pnm", "PNMState", "build_optimizer"]


def build_optimizer(lr, *, momentum=0.0, nesterov=False, weight_decay=0.0, preconditioner=None,
                    optimizer=None) -> optax.GradientTransformation:
    """The optax chain the simulators use: coupled weight decay, preconditioner, then the optimizer.

    ``optimizer`` (any ``optax.GradientTransformation``, learning rate included) replaces the
    default ``optax.sgd(lr, momentum, nesterov)``.  Pass hyperparameters as ``jnp`` arrays to reuse
    the compiled simulator across values (:mod:`sgdtheory.simulate.minibatch`).
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
