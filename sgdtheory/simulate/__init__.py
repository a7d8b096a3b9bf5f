"""Discrete-time SGD simulators: many replicas in parallel, statistics streamed inside ``lax.scan``.

One engine (:func:`run_replicas`) and thin model front-ends.  Every front-end returns a
:class:`Stats` NamedTuple with means, covariances, standard errors from independent replica groups,
and the number of diverged replicas.  Simulators never import the theory modules: the crosscheck
pairs them.
"""

from sgdtheory.simulate._engine import (
    DivergenceWarning,
    Stats,
    default_groups,
    estimate,
    run_replicas,
    scan_replicas,
)
from sgdtheory.simulate.linreg import linreg_sgd, online_linreg_sgd
from sgdtheory.simulate.optimizers import build_optimizer, pnm, precondition
from sgdtheory.simulate.quadratic import NOISE_KINDS, draw_noise, quadratic_sgd
from sgdtheory.simulate.escape import escape_times, sde_escape_times, state_dependent_sgd  # noqa: E402

__all__ = [
    "escape_times",
    "sde_escape_times",
    "state_dependent_sgd",
    "DivergenceWarning",
    "NOISE_KINDS",
    "Stats",
    "build_optimizer",
    "default_groups",
    "draw_noise",
    "estimate",
    "linreg_sgd",
    "online_linreg_sgd",
    "pnm",
    "precondition",
    "quadratic_sgd",
    "run_replicas",
    "scan_replicas",
]
