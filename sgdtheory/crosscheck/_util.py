r"""Helpers that turn simulator :class:`~sgdtheory.simulate.Stats` into :class:`Comparison` rows.

Tolerance.  A standard error from ``G`` independent replica groups is itself estimated, so
``z = (sim - theory)/se`` follows Student's t with ``G - 1`` degrees of freedom, not a Gaussian.
The threshold is the two-sided t quantile at a false-alarm rate of ``ALPHA = 1e-4`` per row,
Bonferroni-corrected when a row reports the worst of ``m`` matrix entries:
``z_max = t.isf(ALPHA / (2 m), G - 1)`` (4.46 for G = 32, m = 1; 5.86 for m = 55).
``G`` counts only the groups that hold data.  A run with diverged replicas answers a different
question (the statistics of the survivors), so every row built from it fails, with a note.
"""

from __future__ import annotations

from sgdtheory.crosscheck._registry import Comparison
from sgdtheory.simulate import Stats, estimate
from sgdtheory.simulate._compare import ALPHA, compare, z_threshold

__all__ = ["ALPHA", "z_threshold", "compare_scalar", "compare_matrix"]

def _diverged(stats: Stats, note: str):
    n = int(stats.diverged)
    if n == 0:
        return False, note
    return True, (note + "; " if note else "") + f"{n} replicas diverged: row invalid"

def compare_scalar(quantity, params, theory, stats: Stats, fn, *, expect="agree", note="",
                   tail_index=None, moment_order=2):
    """Compare ``theory`` with ``fn(mean, cov)`` estimated from ``stats`` (see :func:`estimate`)."""
    value, se = estimate(stats, fn)
    bad, note = _diverged(stats, note)
    return Comparison(quantity, params, float(theory), float(value),
                      float("nan") if bad else float(se), expect=expect,
                      z_max=z_threshold(max(stats.groups, 2)), note=note, tail_index=tail_index,
                      moment_order=moment_order)

def compare_matrix(quantity, params, theory, stats: Stats, *, which="cov", expect="agree", note="",
                   tail_index=None):
    """Compare a theory covariance (or mean vector) entry-wise; report the worst-|z| entry.

    The table is :func:`sgdtheory.simulate.compare`'s (``of=which``): the threshold is
    Bonferroni-corrected over the ``D(D+1)/2`` distinct entries (``D`` for a mean).
    """
    of = "cov" if which == "cov" else "mean"
    table = compare(theory, stats, of=of)
    k, m = table.worst, len(table.labels)
    label = f"{quantity}{table.labels[k][len(of):]}" + (f" (worst of {m})" if m > 1 else "")
    bad, note = _diverged(stats, note)
    return Comparison(label, params, table.theory[k], table.simulation[k],
                      float("nan") if bad else table.stderr[k], expect=expect, z_max=table.z_max,
                      note=note, tail_index=tail_index if of == "cov" else None)
