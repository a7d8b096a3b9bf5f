"""Run registered checks; used by the CLI and importable from notebooks."""

from __future__ import annotations

import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

import jax

from sgdtheory.crosscheck._registry import Comparison, select

__all__ = ["CheckResult", "run"]


@dataclass
class CheckResult:
    """Outcome of one check: its comparisons, run time, and the error if it raised."""

    name: str
    description: str
    comparisons: list = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        tested = [c for c in self.comparisons if not c.heavy_tailed]  # heavy-tailed: not tested
        return self.error is None and bool(tested) and all(c.passed for c in tested)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "passed": self.passed,
                "seconds": self.seconds, "error": self.error,
                "comparisons": [c.as_dict() for c in self.comparisons]}


def check_key(seed: int, name: str):
    """The key a check gets: ``fold_in(key(seed), crc32(name))`` -- stable across runs and order."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def run(pattern: str | None = None, *, mode: str = "quick", seed: int = 0, progress=None):
    """Run the checks matching ``pattern``; returns a list of :class:`CheckResult`.

    ``progress`` is a callable ``progress(i, n, name)`` called before each check (the CLI prints
    a progress line with it), or ``None``.
    """
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full'; got {mode!r}.")
    checks = select(pattern)
    results = []
    for i, check in enumerate(checks):
        if progress is not None:
            progress(i, len(checks), check.name)
        t0 = time.perf_counter()
        res = CheckResult(check.name, check.description)
        try:
            comps = check.fn(check_key(seed, check.name), mode)
            if not comps or not all(isinstance(c, Comparison) for c in comps):
                raise TypeError("a check must return a non-empty list of Comparison")
            res.comparisons = list(comps)
        except Exception as exc:  # a broken check is a failed check, reported, not a crash
            res.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        res.seconds = time.perf_counter() - t0
        results.append(res)
    if progress is not None:
        progress(len(checks), len(checks), "")
    return results
