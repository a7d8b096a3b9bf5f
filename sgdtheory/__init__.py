"""sgdtheory: exactly solvable SGD theory, checked against simulated discrete-time SGD.

Analytic predictions are pure JAX functions (jit, vmap and grad work on them); compiled simulators
of real discrete-time SGD, thousands of replicas in parallel, check them with standard errors.

Modules
-------
    quadratic       exact stationary covariance of SGD, momentum, Nesterov, ... on a quadratic with
                    additive noise; stability edge ``max_stable_lr``; transients ``covariance_after``
    noise           per-sample gradients and exact minibatch-noise covariances (with/without replacement)
    linreg          exact discrete-time SGD on linear regression: online and fixed finite data sets
    local           any JAX model near a minimum: per-example second-order expansion -> exact SGD moments
    label_noise     label-noise SGD: the two diffusions, the product model's imbalance, the implicit regulariser
    escape          escape from a minimum: Kramers, exact 1-D mean first-passage times, SGD power laws
    decentralized   DPSGD: exact consensus spread and stability on a quadratic; effective learning rate
    landscape       stationary laws under landscape-dependent noise (power-law tails, valleys)
    flatness        variance–flatness relation: trajectory PCA, loss flatness, exponent ψ; exact minimal models
    fokker_planck   Itô Fokker--Planck equation in 1-D and 2-D: stationary and time-dependent densities
    adaptive        Adam/LaProp: update variance, boundedness; mean-field fixed points of NGD/Adam-like
    optim           one optimizer vocabulary: the optax transforms sgdtheory adds and the linearisation
                    of a linear optax optimizer that the theory solves
    simulate        jit/vmap-compiled simulators of discrete-time SGD that the theory is checked against
    crosscheck      the theory-vs-simulation checks behind ``sgdtheory crosscheck`` (loaded on first use)
    plot            optional matplotlib helpers; needs the ``plot`` extra (loaded on first use)

Example:
    >>> import jax.numpy as jnp, sgdtheory as st
    >>> H, C = jnp.diag(jnp.array([1.0, 0.2])), jnp.eye(2)   # Hessian, per-step noise covariance
    >>> st.stationary_covariance(H, C, lr=1.0).diagonal().round(4).tolist()  # lr c / (h (2 - lr h))
    [1.0, 2.7778]

Float64 policy
--------------
Theory must agree with SciPy to ~1e-10, which needs float64.  JAX computes in float32 unless
``jax_enable_x64`` is on, so **importing sgdtheory turns on** ``jax_enable_x64`` (JAX's documented
switch; it only makes float64 *available* -- arrays you create as float32 stay float32, and
``jnp.ones(3)`` becomes float64 as in NumPy).  To keep JAX's 32-bit default, set the environment
variable ``SGDTHEORY_ENABLE_X64=0`` before the import; theory functions then compute in float32
(about 1e-6 relative accuracy) and the simulators still accept ``dtype=jnp.float32``.
"""

import importlib as _importlib
import os as _os

import jax as _jax

X64_ENV_VAR = "SGDTHEORY_ENABLE_X64"
if _os.environ.get(X64_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off"):
    _jax.config.update("jax_enable_x64", True)

# (after the x64 switch, on purpose)
from sgdtheory import (adaptive, decentralized, escape, flatness, fokker_planck,  # noqa: E402
                       label_noise, landscape, linreg, local, noise, optim, quadratic, simulate)
from sgdtheory.quadratic import (  # noqa: E402
    LinearOptimizer,
    covariance_after,
    max_stable_lr,
    stationary_covariance,
    stationary_covariance_continuous,
    stationary_loss,
)
from sgdtheory.simulate import Stats  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "adaptive",
    "decentralized",
    "escape",
    "flatness",
    "fokker_planck",
    "label_noise",
    "landscape",
    "X64_ENV_VAR",
    "LinearOptimizer",
    "Stats",
    "covariance_after",
    "linreg",
    "local",
    "max_stable_lr",
    "noise",
    "optim",
    "quadratic",
    "simulate",
    "stationary_covariance",
    "stationary_covariance_continuous",
    "stationary_loss",
]

# Loaded on first attribute access (PEP 562), so that `import sgdtheory` stays light and matplotlib
# stays optional: `st.plot` imports matplotlib only when used, `st.crosscheck` registers its checks.
_LAZY_MODULES = ("crosscheck", "plot")


def __getattr__(name):
    if name in _LAZY_MODULES:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*__all__, *_LAZY_MODULES, "__version__"})
