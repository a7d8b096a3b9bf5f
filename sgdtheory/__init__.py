"""sgdtheory: exactly solvable SGD theory, checked against simulated discrete-time SGD.

Float64 policy
--------------
Theory must agree with SciPy to ~1e-10, which needs float64.  JAX computes in float32 unless
``jax_enable_x64`` is on, so **importing sgdtheory turns on** ``jax_enable_x64`` (JAX's documented
switch; it only makes float64 *available* -- arrays you create as float32 stay float32, and
``jnp.ones(3)`` becomes float64 as in NumPy).  To keep JAX's 32-bit default, set the environment
variable ``SGDTHEORY_ENABLE_X64=0`` before the import; theory functions then compute in float32
(about 1e-6 relative accuracy) and the simulators still accept ``dtype=jnp.float32``.
"""

from __future__ import annotations

import os as _os

import jax as _jax

X64_ENV_VAR = "SGDTHEORY_ENABLE_X64"
if _os.environ.get(X64_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off"):
    _jax.config.update("jax_enable_x64", True)

from sgdtheory import escape, fokker_planck, landscape, linreg, noise, quadratic, simulate  # noqa: E402  (after the x64 switch, on purpose)
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
    "escape",
    "fokker_planck",
    "landscape",
    "X64_ENV_VAR",
    "LinearOptimizer",
    "Stats",
    "covariance_after",
    "linreg",
    "max_stable_lr",
    "noise",
    "quadratic",
    "simulate",
    "stationary_covariance",
    "stationary_covariance_continuous",
    "stationary_loss",
]
