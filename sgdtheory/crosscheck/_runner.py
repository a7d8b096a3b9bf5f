"""Run registered checks; used by the CLI and importable from notebooks."""

from __future__ import annotations

import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

import jax

from sgdtheory.crosscheck._registry import Comparison, select

__all__ = ["CheckResult", "run", "release_compiled_programs"]


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


def release_compiled_programs(max_mappings: int = 32_000) -> bool:
    """Clear JAX's compilation caches when this process holds more than ``max_mappings`` memory
    mappings; returns whether it did.

    Every XLA:CPU executable keeps a few mappings of JIT code, and Linux limits a process to
    ``vm.max_map_count`` (65 530 by default) of them: past it, LLVM's next allocation fails and
    the process dies with a segmentation fault inside a compile.  The whole test suite crossed it
    (a crash in ``backend_compile_and_load``); the quick crosscheck peaks at ~25 000.  Clearing
    after every check instead cost 39 % of the crosscheck's time (recompiling shared programs), so
    it happens only near the limit.  Linux only (reads ``/proc/self/maps``); elsewhere a no-op.
    """
    try:
        with open("/proc/self/maps", "rb") as f:
            count = sum(1 for _ in f)
    except OSError:
        return False
    if count < max_mappings:
        return False
    jax.clear_caches()
    return True


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
        release_compiled_programs()
    if progress is not None:
        progress(len(checks), len(checks), "")
    return results
