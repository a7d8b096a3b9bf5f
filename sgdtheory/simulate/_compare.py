r"""Theory against simulation, as a small table: theory, simulation ± standard error, z, verdict.

The standard error of a simulated statistic comes from ``G`` independent replica groups and is
itself estimated, so :math:`z = (\text{sim} - \text{theory})/\text{se}` follows Student's t with
``G - 1`` degrees of freedom.  A row *agrees* when :math:`|z| \le z_{max}`, the two-sided t quantile
at a false-alarm rate ``alpha`` (default ``1e-4``) per table, Bonferroni-corrected over the rows
compared (4.46 for G = 32 and one number; 5.86 for 55 numbers).  A run with diverged replicas
answers another question (the survivors' statistics): its rows never agree.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import scipy.stats

__all__ = ["compare", "ComparisonTable", "z_threshold", "ALPHA"]

ALPHA = 1e-4


def z_threshold(groups: int, comparisons: int = 1, alpha: float = ALPHA) -> float:
    """|z| threshold for ``comparisons`` simultaneous t-tests with ``groups - 1`` degrees of freedom."""
    return float(scipy.stats.t.isf(alpha / (2 * comparisons), max(int(groups), 2) - 1))


class ComparisonTable(NamedTuple):
    """Rows of theory vs simulation; ``print(table)`` shows them, ``table.agree`` is the verdict.

    Attributes:
      labels: one label per row (``"cov[0,1]"``, ``"mean[2]"``, or the given name).
      theory, simulation, stderr, z: ``(n,)`` NumPy arrays.
      z_max: the |z| threshold (t quantile, Bonferroni over the rows).
      diverged: replicas that diverged in the run (rows are then invalid).
    """

    labels: tuple
    theory: np.ndarray
    simulation: np.ndarray
    stderr: np.ndarray
    z: np.ndarray
    z_max: float
    diverged: int

    @property
    def agree(self) -> bool:
        """Every row within ``z_max`` standard errors, finite, and no replica diverged."""
        ok = np.isfinite(self.z) & np.isfinite(self.stderr) & (self.stderr > 0)
        return bool(self.diverged == 0 and np.all(ok) and np.all(np.abs(self.z) <= self.z_max))

    @property
    def worst(self) -> int:
        """Index of the row with the largest |z|."""
        return int(np.argmax(np.where(np.isfinite(self.z), np.abs(self.z), np.inf)))

    def __str__(self) -> str:
        w = max([len("quantity")] + [len(s) for s in self.labels])
        head = f"{'quantity':<{w}}  {'theory':>11}  {'simulation':>11}  {'± se':>9}  {'z':>6}"
        rows = [head, "-" * len(head)]
        for lab, t, s, e, z in zip(self.labels, self.theory, self.simulation, self.stderr, self.z):
            rows.append(f"{lab:<{w}}  {t:>11.5g}  {s:>11.5g}  {e:>9.2g}  {z:>6.2f}")
        verdict = "agree" if self.agree else "DISAGREE"
        rows.append(f"{verdict}: max |z| = {np.max(np.abs(self.z)):.2f} (threshold {self.z_max:.2f}, "
                    f"{len(self.labels)} number(s), alpha {ALPHA:g})"
                    + (f"; {self.diverged} replicas diverged: invalid" if self.diverged else ""))
        return "\n".join(rows)

    __repr__ = __str__


def compare(theory, stats, *, of: str | Callable = "cov", name: str | None = None,
            alpha: float = ALPHA) -> ComparisonTable:
    r"""Tabulate a prediction against simulated :class:`~sgdtheory.simulate.Stats`.

    Args:
      theory: the prediction -- a ``(D, D)`` covariance (``of="cov"``, the default; the
        ``D(D+1)/2`` distinct entries are compared), a ``(D,)`` mean (``of="mean"``), or a scalar /
        array when ``of`` is a function.
      stats: the simulator's result.
      of: ``"cov"``, ``"mean"``, ``"var"`` (the diagonal of the covariance), or a function
        ``fn(mean, cov) -> value`` of the first two moments (e.g. a loss
        ``lambda m, c: 0.5 * jnp.trace(H @ c)``), whose standard error is the spread of ``fn`` over
        the replica groups (:func:`~sgdtheory.simulate.estimate`).
      name: row label for ``of=fn`` (default ``"fn"``).
      alpha: false-alarm rate of the whole table (Bonferroni over its rows).

    Returns:
      :class:`ComparisonTable` -- ``print`` it; ``.agree`` is the verdict.

    Example:
      >>> import jax, jax.numpy as jnp, sgdtheory as st
      >>> H = jnp.diag(jnp.array([1.0, 0.5])); C = jnp.eye(2)
      >>> sim = st.simulate.quadratic_sgd(jax.random.key(0), H, C, 0.5, steps=4000,
      ...                                 replicas=512, burn_in=500)
      >>> table = st.simulate.compare(st.stationary_covariance(H, C, 0.5), sim)
      >>> table.agree
      True
    """
    from sgdtheory.simulate._engine import estimate

    theory = np.asarray(theory, dtype=float)
    if stats.cov is None and not (of == "mean" or callable(of)):
        raise ValueError("these statistics hold the mean only (statistics='mean'); compare "
                         "of='mean' or run with statistics='full' / 'diagonal'.")
    if of == "cov" and np.ndim(stats.cov) == 1:
        if theory.ndim == 2:  # a covariance prediction against diagonal statistics
            theory = np.diag(theory)
        of = "var"
    if callable(of):
        value, se = estimate(stats, of)
        sim = np.atleast_1d(np.asarray(value, float)).ravel()
        se = np.atleast_1d(np.asarray(se, float)).ravel()
        t = np.broadcast_to(theory, np.shape(value)).ravel()
        label = name or "fn"
        labels = (label,) if sim.size == 1 else tuple(f"{label}[{i}]" for i in range(sim.size))
    elif of == "cov":
        d = np.shape(stats.cov)[0]
        if theory.shape != (d, d):
            raise ValueError(f"theory has shape {theory.shape}; a covariance of the simulated "
                             f"({d},) observable is ({d}, {d}). Use of='mean' or of=fn otherwise.")
        iu = np.triu_indices(d)
        t, sim, se = theory[iu], np.asarray(stats.cov)[iu], np.asarray(stats.cov_stderr)[iu]
        labels = tuple(f"cov[{i},{j}]" for i, j in zip(*iu))
    elif of in ("mean", "var"):
        d = np.shape(stats.mean)[0]
        if theory.shape != (d,):
            raise ValueError(f"theory has shape {theory.shape}; expected ({d},) for of={of!r}.")
        if of == "mean":
            sim, se = np.asarray(stats.mean), np.asarray(stats.mean_stderr)
        elif np.ndim(stats.cov) == 1:  # statistics="diagonal"
            sim, se = np.asarray(stats.cov), np.asarray(stats.cov_stderr)
        else:
            sim, se = np.diag(np.asarray(stats.cov)), np.diag(np.asarray(stats.cov_stderr))
        t = theory
        labels = tuple(f"{of}[{i}]" for i in range(d))
    else:
        raise ValueError(f"of must be 'cov', 'mean', 'var' or a function fn(mean, cov); got {of!r}.")
    sim = np.asarray(sim, float)
    se = np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (sim - t) / se, np.where(sim == t, 0.0, np.inf))
    zmax = z_threshold(stats.groups, len(labels), alpha)
    div = int(stats.diverged)
    return ComparisonTable(labels, np.asarray(t, float), sim, se, z, zmax, div)

