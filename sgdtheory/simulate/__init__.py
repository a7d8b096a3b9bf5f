"""Discrete-time SGD simulators: many replicas in parallel, statistics streamed inside ``lax.scan``.

One engine (:func:`run_replicas`), one composable front-end (:func:`minibatch_sgd`: your per-example
loss, a :class:`Dataset` or :class:`Online` data source, any optax optimizer, your ``observe``) and
thin presets over it (:func:`quadratic_sgd`, :func:`linreg_sgd`, :func:`online_linreg_sgd`,
:func:`state_dependent_sgd`, :func:`escape_times`, :func:`sde_escape_times`).  Gaussian noise comes
from :func:`ziggurat_normal` (exact, ~5x cheaper than ``jax.random.normal`` on CPU).  Every run returns a
:class:`Stats` NamedTuple with means, covariances, standard errors from independent replica groups,
the number of diverged replicas and, on request, histograms, tail probabilities and first-passage
steps; :func:`compare` tabulates a prediction against it.  Simulators never import the theory
modules: the crosscheck pairs them.
"""

from sgdtheory.simulate._compare import ComparisonTable, compare, z_threshold
from sgdtheory.simulate._engine import (
    DivergenceError,
    DivergenceWarning,
    Exceedance,
    FirstPassage,
    Histogram,
    Stats,
    default_groups,
    estimate,
    exceedance,
    first_passage,
    histogram,
    run_replicas,
    scan_replicas,
)
from sgdtheory.simulate.data import SAMPLING_RULES, Dataset, Online
from sgdtheory.simulate.minibatch import minibatch_sgd
from sgdtheory.simulate.dpsgd import dpsgd
from sgdtheory.simulate.linreg import linreg_sgd, online_linreg_sgd
from sgdtheory.simulate.optimizers import build_optimizer, pnm, precondition
from sgdtheory.simulate.quadratic import NOISE_KINDS, NoiseLawWarning, draw_noise, quadratic_sgd
from sgdtheory._checks import check_key
from sgdtheory._ziggurat import ziggurat_normal
from sgdtheory.simulate.escape import (  # noqa: E402
    EscapeSummary,
    EscapeTimes,
    escape_times,
    kaplan_meier,
    sde_escape_times,
    state_dependent_sgd,
    summarize,
)

__all__ = [
    "ComparisonTable",
    "Dataset",
    "DivergenceError",
    "DivergenceWarning",
    "EscapeSummary",
    "EscapeTimes",
    "Exceedance",
    "FirstPassage",
    "Histogram",
    "NOISE_KINDS",
    "NoiseLawWarning",
    "Online",
    "SAMPLING_RULES",
    "Stats",
    "build_optimizer",
    "check_key",
    "compare",
    "default_groups",
    "dpsgd",
    "draw_noise",
    "escape_times",
    "estimate",
    "exceedance",
    "first_passage",
    "histogram",
    "kaplan_meier",
    "linreg_sgd",
    "minibatch_sgd",
    "online_linreg_sgd",
    "pnm",
    "precondition",
    "quadratic_sgd",
    "run_replicas",
    "scan_replicas",
    "sde_escape_times",
    "state_dependent_sgd",
    "summarize",
    "z_threshold",
    "ziggurat_normal",
]
