r"""The public registry of theory-vs-simulation cross-checks.

A check is a function ``fn(key, mode) -> list[Comparison]`` registered under a unique name with
:func:`register`; ``mode`` is ``"quick"`` (the default CLI run: seconds per check on 2 CPU cores)
or ``"full"`` (longer runs, tighter standard errors).  Each :class:`Comparison` pairs one analytic
number with its simulated estimate and standard error; the verdict is decided here, the same way
for every check:

* ``expect="agree"``: passes when :math:`|z| = |\text{sim} - \text{theory}|/\text{se} \le z_{max}`
  (default 4.5: a false alarm rate of ~7e-6 per comparison for Gaussian errors).
* ``expect="disagree"``: an approximation that *should* fail in this regime (e.g. the
  continuous-time formula at large learning rate) passes when :math:`|z| > z_{max}`.
* **Heavy tails.**  A row of a simulated moment of order ``k`` (``moment_order``, 2 for a
  variance) whose stationary law has tail index ``tail_index`` :math:`\beta \le 2k` has an
  estimator of infinite variance: its standard error is meaningless and so is its z.  Such a row
  is reported as "heavy-tailed: SE not valid" -- neither a pass nor a failure -- and a check made
  only of such rows fails (it tested nothing).  Compare the tails instead (tail index,
  exceedance probabilities).  Every row that passes ``tail_index=`` gets this rule.

Users add their own checks the same way::

    from sgdtheory.crosscheck import Comparison, register

    @register("mine/my-formula", "what it checks")
    def _(key, mode):
        ...
        return [Comparison("variance", "lr=0.1", theory, sim, se)]
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Comparison", "Check", "register", "unregister", "registry", "select", "Z_MAX"]

Z_MAX = 4.5


@dataclass(frozen=True)
class Comparison:
    """One theory number against one simulated estimate.

    Attributes:
      quantity: what is compared, e.g. ``"Var w_1"`` or ``"loss"``.
      params: the key parameters, e.g. ``"lr*h_max=1.6"``.
      theory: the analytic prediction.
      simulation: the simulated estimate.
      stderr: its standard error (from independent replica groups).
      expect: ``"agree"`` or ``"disagree"`` (an approximation expected to fail here).
      z_max: the |z| threshold.
      note: optional short remark shown in the table.
      tail_index: the stationary law's tail index :math:`\beta` when known (``None``: light tails
        or unknown); with ``moment_order`` it decides whether the row can be z-tested at all.
      moment_order: the order of the moment the row estimates (2 for a covariance or loss).
    """

    quantity: str
    params: str
    theory: float
    simulation: float
    stderr: float
    expect: str = "agree"
    z_max: float = Z_MAX
    note: str = ""
    tail_index: float | None = None
    moment_order: int = 2

    def __post_init__(self):
        if self.expect not in ("agree", "disagree"):
            raise ValueError(f"expect must be 'agree' or 'disagree'; got {self.expect!r}.")
        for f in ("theory", "simulation", "stderr"):
            object.__setattr__(self, f, float(getattr(self, f)))

    @property
    def z(self) -> float:
        diff = self.simulation - self.theory
        if self.stderr > 0:
            return diff / self.stderr
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)

    @property
    def rel_err(self) -> float:
        if self.theory == 0:
            return math.inf if self.simulation != 0 else 0.0
        return (self.simulation - self.theory) / abs(self.theory)

    @property
    def heavy_tailed(self) -> bool:
        """The estimator's variance is infinite (tail index <= 2 * moment order): no valid SE."""
        return self.tail_index is not None and not self.tail_index > 2 * self.moment_order

    @property
    def verdict(self) -> str:
        """``"ok"``, ``"FAIL"`` or ``"heavy-tailed: SE not valid"`` (not tested)."""
        if self.heavy_tailed:
            return f"heavy-tailed: SE not valid (β={self.tail_index:.3g} <= {2 * self.moment_order})"
        return "ok" if self.passed else "FAIL"

    @property
    def passed(self) -> bool:
        """Both verdicts need finite numbers and a finite, positive standard error: a NaN theory, a
        NaN simulation or an infinite error bar never passes, whichever way the row expects."""
        if self.heavy_tailed:  # not tested: never a pass (and not counted as a failure, see run)
            return False
        valid = (math.isfinite(self.simulation) and math.isfinite(self.theory)
                 and math.isfinite(self.stderr) and self.stderr > 0)
        if not valid:
            return False
        if self.expect == "agree":
            return abs(self.z) <= self.z_max
        return abs(self.z) > self.z_max

    def as_dict(self) -> dict:
        return {
            "quantity": self.quantity, "params": self.params, "theory": self.theory,
            "simulation": self.simulation, "stderr": self.stderr, "rel_err": self.rel_err,
            "z": self.z, "expect": self.expect, "z_max": self.z_max, "passed": self.passed,
            "note": self.note, "tail_index": self.tail_index, "heavy_tailed": self.heavy_tailed,
        }


@dataclass(frozen=True)
class Check:
    """A registered cross-check."""

    name: str
    description: str
    fn: Callable = field(repr=False)
    tags: tuple = ()


_REGISTRY: dict[str, Check] = {}


def register(name: str, description: str, *, tags: tuple = ()):
    """Decorator: register ``fn(key, mode) -> list[Comparison]`` as check ``name``."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"a crosscheck named {name!r} is already registered.")
        _REGISTRY[name] = Check(name, description, fn, tuple(tags))
        return fn

    return deco


def unregister(name: str) -> Check:
    """Remove check ``name`` from the registry (e.g. a temporary check in a notebook or a test);
    returns it.  Raises ``KeyError`` for an unknown name."""
    if name not in _REGISTRY:
        raise KeyError(f"no crosscheck named {name!r} is registered.")
    return _REGISTRY.pop(name)


def registry() -> dict[str, Check]:
    """All registered checks (built-ins are loaded by importing :mod:`sgdtheory.crosscheck`)."""
    return dict(_REGISTRY)


def select(pattern: str | None = None) -> list[Check]:
    """Checks whose name matches a glob ``pattern`` (or contains it as a substring)."""
    checks = list(_REGISTRY.values())
    if not pattern:
        return checks
    return [c for c in checks if fnmatch.fnmatch(c.name, pattern) or pattern in c.name]
