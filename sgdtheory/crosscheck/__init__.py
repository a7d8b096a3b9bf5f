"""Theory-vs-simulation cross-checks: a public registry and the built-in checks.

Importing this package registers every built-in check (one module per theory module).  Run them
with ``sgdtheory crosscheck`` or :func:`run`.
"""

from sgdtheory.crosscheck._registry import (Z_MAX, Check, Comparison, register, registry, select,
                                            unregister)
from sgdtheory.crosscheck._runner import CheckResult, run
from sgdtheory.crosscheck._util import compare_matrix, compare_scalar, z_threshold

# Built-in checks register themselves on import.
from sgdtheory.crosscheck import quadratic as _quadratic  # noqa: F401,E402
from sgdtheory.crosscheck import escape as _escape  # noqa: F401,E402
from sgdtheory.crosscheck import linreg as _linreg  # noqa: F401,E402
from sgdtheory.crosscheck import local as _local  # noqa: F401,E402
from sgdtheory.crosscheck import tails as _tails  # noqa: F401,E402
from sgdtheory.crosscheck import adaptive as _adaptive  # noqa: F401,E402
from sgdtheory.crosscheck import label_noise as _label_noise  # noqa: F401,E402
from sgdtheory.crosscheck import flatness as _flatness  # noqa: F401,E402
from sgdtheory.crosscheck import decentralized as _decentralized  # noqa: F401,E402

__all__ = [
    "Z_MAX",
    "Check",
    "CheckResult",
    "Comparison",
    "compare_matrix",
    "compare_scalar",
    "register",
    "registry",
    "run",
    "select",
    "unregister",
    "z_threshold",
]
