r"""The one scan engine: replicas x steps, streamed statistics, divergence detection.

Every simulator front-end (quadratic, linear regression, SDE, ...) supplies three pure functions
over a **batched** state (leading axis = replicas):

* ``init_fn(key) -> state``
* ``step_fn(key, state) -> state``   -- one step of all replicas; draw noise with one key, as a
  ``(replicas, ...)`` array (much faster than splitting a key per replica)
* ``observe_fn(state) -> x``          -- the ``(replicas, D)`` vector whose statistics are streamed

and :func:`run_replicas` runs ``steps`` steps in ``jax.lax.scan``, discarding the first
``burn_in``.  Memory is O(replicas * D + groups * D^2) whatever ``steps`` is: no trajectory is
stored unless ``record_every`` asks for a thinned one.

Statistics and standard errors
------------------------------
Replicas are split into ``G`` equal groups.  Each step, every group's samples are merged into
that group's running mean and centred second moment by Chan et al.'s parallel Welford update
(numerically stable; no raw sums of squares).  Groups are statistically independent (disjoint
replicas), so the spread of the ``G`` group estimates gives an honest standard error even though
samples within one replica are autocorrelated in time (the batch-means method):
:math:`\mathrm{se}(\hat\theta) = \mathrm{sd}_g(\hat\theta_g)/\sqrt G`.  :func:`estimate` applies
the same rule to any function of the mean and covariance (e.g. a loss :math:`\tfrac12\mathrm{tr}(H\Sigma)`).

Divergence
----------
A replica whose observed vector becomes non-finite, or exceeds ``divergence_threshold`` in
absolute value, is frozen out of the statistics from that step on and counted in
``Stats.diverged``; :func:`run_replicas` warns when any replica diverged.  Nothing is hidden in a
NaN average.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgdtheory import _checks

__all__ = [
    "Stats",
    "DivergenceError",
    "Histogram",
    "Exceedance",
    "FirstPassage",
    "histogram",
    "exceedance",
    "first_passage",
    "make_extras",
    "STATISTICS",
    "check_on_divergence",
    "run_replicas",
    "scan_replicas",
    "check_run_args",
    "warn_divergence",
    "estimate",
    "default_groups",
    "DivergenceWarning",
    "Carry",
    "init_carry",
    "advance",
    "finish",
    "run_chunked",
]


class DivergenceWarning(RuntimeWarning):
    """Some replicas diverged (non-finite or past the divergence threshold)."""


class DivergenceError(RuntimeError):
    """Raised instead of :class:`DivergenceWarning` when ``on_divergence="raise"``."""


ON_DIVERGENCE = ("warn", "raise", "ignore")


def _coords(name, coordinates):
    c = (coordinates,) if isinstance(coordinates, (int, np.integer)) else tuple(coordinates)
    if not c:
        raise ValueError(f"{name}: coordinates must name at least one coordinate.")
    return tuple(_checks.check_int(f"{name} coordinate", i, 0) for i in c)


class HistogramSpec(NamedTuple):
    """Request a fixed-bin histogram of observed coordinates (see :func:`histogram`)."""

    edges: tuple
    coordinates: tuple


class ExceedanceSpec(NamedTuple):
    """Request tail probabilities :math:`P(|x_j| > t)` (see :func:`exceedance`)."""

    thresholds: tuple
    coordinates: tuple


class PassageSpec(NamedTuple):
    """Request first-passage steps (see :func:`first_passage`)."""

    coordinate: int
    target: float
    direction: float
    freeze: bool
    stop_when_all_passed: bool


def histogram(edges, coordinates=0) -> HistogramSpec:
    r"""Ask a simulator for a streamed histogram of the observed ``coordinates``.

    ``edges``: increasing bin edges (``B + 1`` numbers; changing them recompiles).  The result,
    :class:`Histogram`, holds the density :math:`\hat p_b = n_b/(n\,\Delta_b)` per coordinate and
    bin with replica-group standard errors, and the fractions below the first and above the last
    edge.  Memory: ``groups * len(coordinates) * (B + 2)`` counters, nothing grows with ``steps``.
    """
    e = np.asarray(edges, dtype=float).ravel()
    if e.size < 2 or not np.all(np.diff(e) > 0) or not np.all(np.isfinite(e)):
        raise ValueError("histogram edges must be at least two finite, strictly increasing numbers.")
    return HistogramSpec(tuple(float(v) for v in e), _coords("histogram", coordinates))


def exceedance(thresholds, coordinates=0) -> ExceedanceSpec:
    r"""Ask a simulator for tail probabilities :math:`P(|x_j| > t)` of the observed coordinates.

    ``thresholds``: non-negative numbers (changing them recompiles).  The result,
    :class:`Exceedance`, has the probabilities per coordinate and threshold with replica-group
    standard errors -- the statistic for heavy tails, where second moments are unreliable.
    """
    t = np.asarray(thresholds, dtype=float).ravel()
    if t.size < 1 or np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError("exceedance thresholds must be finite, non-negative numbers.")
    return ExceedanceSpec(tuple(float(v) for v in t), _coords("exceedance", coordinates))


def first_passage(coordinate: int, target: float, *, start: float | None = None, direction=None,
                  freeze: bool = True, stop_when_all_passed: bool = True) -> PassageSpec:
    """Ask a simulator for each replica's first step with ``x[coordinate]`` at or past ``target``.

    The crossing direction is ``sign(target - start)`` (or ``direction=+1/-1``).  ``freeze`` stops
    a replica once it has passed (escape: it leaves the problem); ``stop_when_all_passed`` ends
    the run early, on the device, once every live replica has passed.  Replicas that never pass
    within ``steps`` are censored; a replica that diverges first is censored at that step.
    """
    coordinate = _checks.check_int("coordinate", coordinate, 0)
    if direction is None:
        if start is None:
            raise ValueError("first_passage needs start= (the crossing direction is "
                             "sign(target - start)) or direction=+1/-1.")
        direction = float(np.sign(float(target) - float(start)))
        if direction == 0:
            raise ValueError("the start already sits on the target.")
    direction = float(direction)
    if direction not in (1.0, -1.0):
        raise ValueError(f"direction must be +1 or -1; got {direction}.")
    return PassageSpec(coordinate, float(target), direction, bool(freeze), bool(stop_when_all_passed))


class Histogram(NamedTuple):
    """Streamed histogram of observed coordinates.

    Attributes:
      edges: ``(B + 1,)`` bin edges.
      coordinates: the observed coordinates, one row each below.
      density: ``(J, B)`` estimated density per bin, counts / (samples * bin width).
      density_stderr: ``(J, B)`` its standard error (spread over replica groups).
      below, above: ``(J,)`` fractions of samples below the first / at or above the last edge.
    """

    edges: jax.Array
    coordinates: tuple
    density: jax.Array
    density_stderr: jax.Array
    below: jax.Array
    above: jax.Array

    @property
    def centers(self) -> jax.Array:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


class Exceedance(NamedTuple):
    """Streamed tail probabilities :math:`P(|x_j| > t)` with replica-group standard errors."""

    thresholds: jax.Array
    coordinates: tuple
    probability: jax.Array
    probability_stderr: jax.Array


class FirstPassage(NamedTuple):
    """Per-replica first-passage steps: ``steps`` ``(R,)`` (the run length if censored) and
    ``passed`` ``(R,)`` (False for censored or diverged replicas)."""

    steps: jax.Array
    passed: jax.Array


STATISTICS = ("full", "diagonal", "mean")


class Extras(NamedTuple):
    """Which statistics a run streams (static: part of the program).  ``moments``: ``"full"``
    (mean and D x D covariance), ``"diagonal"`` (mean and the D variances) or ``"mean"``."""

    histogram: HistogramSpec | None = None
    exceedance: ExceedanceSpec | None = None
    first_passage: PassageSpec | None = None
    moments: str = "full"


def make_extras(histogram=None, exceedance=None, first_passage=None,
                statistics: str = "full") -> Extras | None:
    """Validate optional statistic requests; ``None`` when only the default full moments are asked
    for."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics must be one of {STATISTICS}; got {statistics!r}.")
    for name, val, typ in (("histogram", histogram, HistogramSpec),
                           ("exceedance", exceedance, ExceedanceSpec),
                           ("first_passage", first_passage, PassageSpec)):
        if val is not None and not isinstance(val, typ):
            raise ValueError(f"{name}= takes sgdtheory.simulate.{name}(...); got {type(val).__name__}.")
    if histogram is None and exceedance is None and first_passage is None and statistics == "full":
        return None
    return Extras(histogram, exceedance, first_passage, statistics)


class Stats(NamedTuple):
    """Streamed statistics of a simulated observable ``x`` (usually the parameters ``w``).

    Attributes:
      mean: ``(D,)`` average of ``x`` over replicas and post-burn-in steps.
      cov: ``(D, D)`` pooled covariance of ``x`` about ``mean``.
      mean_stderr: ``(D,)`` standard error of ``mean`` (batch means over replica groups).
      cov_stderr: ``(D, D)`` standard error of each entry of ``cov``.
      steps: total steps run per replica (burn-in included).
      replicas: number of replicas.
      burn_in: the first ``burn_in`` steps are discarded; statistics average steps
        ``burn_in + 1 .. steps`` (``burn_in = steps - 1``: the last step only).
      diverged: number of replicas that diverged (excluded from the statistics from then on).
      group_mean: ``(G, D)`` per-group means (independent replica groups).
      group_cov: ``(G, D, D)`` per-group covariances.
      group_count: ``(G,)`` samples per group.
      trajectory: ``(T, record_replicas, D)`` thinned trajectory, or ``None``.
      histogram: a :class:`Histogram` of chosen coordinates when ``histogram=`` was requested.
      exceedance: an :class:`Exceedance` (tail probabilities) when ``exceedance=`` was requested.
      first_passage: a :class:`FirstPassage` when ``first_passage=`` was requested.

    ``print(stats)`` shows a compact summary; :meth:`compare` tabulates a prediction against it.
    """

    mean: jax.Array
    cov: jax.Array
    mean_stderr: jax.Array
    cov_stderr: jax.Array
    steps: int
    replicas: int
    burn_in: int
    diverged: jax.Array
    group_mean: jax.Array
    group_cov: jax.Array
    group_count: jax.Array
    trajectory: jax.Array | None = None
    histogram: Any = None
    exceedance: Any = None
    first_passage: Any = None

    def __repr__(self) -> str:
        return _stats_repr(self)

    def compare(self, theory, of="cov", **kwargs):
        """``compare(theory, self, of=...)``: see :func:`sgdtheory.simulate.compare`."""
        from sgdtheory.simulate._compare import compare

        return compare(theory, self, of=of, **kwargs)

    @property
    def groups(self) -> int:
        """Replica groups that hold data; a group whose replicas all diverged before sampling is
        left out of the standard errors and of their degrees of freedom."""
        return int(jnp.sum(self.group_count > 0))


def default_groups(replicas: int) -> int:
    """Largest of 32, 16, 8 dividing ``replicas`` (the number of independent replica groups)."""
    for g in (32, 16, 8):
        if replicas % g == 0:
            return g
    raise ValueError(
        f"replicas={replicas}: standard errors need the replicas split into at least 8 equal "
        "groups; use a multiple of 8 (e.g. 1024, 4096) or pass groups= explicitly."
    )


def run_replicas(
    key: jax.Array,
    init_fn: Callable[[jax.Array], Any],
    step_fn: Callable[[jax.Array, Any], Any],
    observe_fn: Callable[[Any], jax.Array],
    *,
    steps: int,
    replicas: int,
    burn_in: int,
    groups: int | None = None,
    record_every: int | None = None,
    record_replicas: int = 8,
    divergence_threshold: float = 1e8,
    stats_dtype=None,
    warn: bool = True,
    noise_fn: Callable[[jax.Array, int], Any] | None = None,
    block: int = 1,
    unroll: int = 1,
    devices=None,
    chunk_steps: int | None = None,
    progress: Callable[[int, int, Stats], Any] | None = None,
    stop_on_divergence: bool = False,
    histogram: HistogramSpec | None = None,
    exceedance: ExceedanceSpec | None = None,
    first_passage: PassageSpec | None = None,
    on_divergence: str = "warn",
    statistics: str = "full",
) -> Stats:
    """Run ``steps`` steps of ``replicas`` replicas and stream the statistics of ``observe_fn``.

    ``steps``, ``replicas``, ``burn_in``, ``groups``, ``record_every``, ``block``, ``unroll``,
    ``devices`` and ``chunk_steps`` are static: changing them recompiles.  See the module docstring
    for the statistics and divergence rules.

    Performance options (defaults reproduce the original one-step-at-a-time engine):

    * ``noise_fn(key, n)`` -- draw the noise of ``n`` steps at once (a pytree with leading axis
      ``n``); ``step_fn`` is then called as ``step_fn(noise_t, state)`` with one step's slice.
      One big draw per ``block`` steps is much cheaper than ``block`` small ones.
    * ``block`` -- steps per block: noise is drawn and statistics are merged once per block.
    * ``unroll`` -- ``lax.scan`` unroll factor of the steps inside a block.
    * ``devices`` -- ``"all"`` (local), ``"global"`` (all processes after
      ``jax.distributed.initialize()``), an int (the first n local devices) or a sequence: the
      replica axis is sharded across them (:mod:`jax.sharding`); results are the same for the same
      key whatever the device count (threefry keys are partitionable) up to reduction rounding.
    * ``chunk_steps`` -- run in chunks of this many steps (a multiple of ``block``), calling
      ``progress(steps_done, steps, stats_so_far)`` between chunks on the host; statistics are
      those of one long scan.  ``stop_on_divergence`` ends the run after the first chunk in which a
      replica diverged (``Stats.steps`` then says how many steps ran).

    Optional statistics (each adds its own small cost, none grows with ``steps``):
    ``histogram=`` :func:`histogram`, ``exceedance=`` :func:`exceedance`, ``first_passage=``
    :func:`first_passage`.  ``statistics``: ``"full"`` (mean and covariance, default),
    ``"diagonal"`` (mean and the ``(D,)`` variances in ``cov``/``cov_stderr``: D numbers per replica
    group instead of D^2, so the cost follows) or ``"mean"`` (``cov`` is ``None``).
    ``on_divergence``: ``"warn"`` (default), ``"raise"``
    (:class:`DivergenceError`) or ``"ignore"``; ``warn=False`` is ``"ignore"``.
    """
    steps, replicas, burn_in, groups, record_every, record_replicas = check_run_args(
        steps, replicas, burn_in, groups, record_every, record_replicas)
    check_on_divergence(on_divergence)
    extras = make_extras(histogram, exceedance, first_passage, statistics)
    if chunk_steps is None:
        if progress is not None or stop_on_divergence:
            raise ValueError("progress= and stop_on_divergence= need chunk_steps=.")
        stats = scan_replicas(
            key, init_fn, step_fn, observe_fn, steps=steps, replicas=replicas, burn_in=burn_in,
            groups=groups, record_every=record_every, record_replicas=record_replicas,
            divergence_threshold=divergence_threshold, stats_dtype=stats_dtype,
            noise_fn=noise_fn, block=block, unroll=unroll, devices=devices, extras=extras)
    else:
        if record_every is not None:
            raise ValueError("record_every= is not supported with chunk_steps=.")
        opts = dict(replicas=replicas, burn_in=burn_in, groups=groups,
                    divergence_threshold=divergence_threshold, stats_dtype=stats_dtype,
                    noise_fn=noise_fn, block=block, unroll=unroll, devices=devices, extras=extras)
        start = jax.jit(lambda k: init_carry(k, init_fn, observe_fn, **opts))
        adv = jax.jit(lambda c, t0, n: advance(c, t0, n, step_fn, observe_fn, **opts),
                      static_argnums=2)
        stats = run_chunked(start(key), adv, steps=steps, replicas=replicas, burn_in=burn_in,
                            chunk_steps=chunk_steps, block=block, progress=progress,
                            stop_on_divergence=stop_on_divergence, extras=extras)
    warn_divergence(stats, divergence_threshold, on_divergence if warn else "ignore")
    return stats


def check_on_divergence(on_divergence: str) -> str:
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence must be one of {ON_DIVERGENCE}; got {on_divergence!r}.")
    return on_divergence


def check_run_args(steps, replicas, burn_in, groups=None, record_every=None, record_replicas=8):
    """Validate the static run arguments; returns them normalised (``groups`` resolved)."""
    steps = _checks.check_int("steps", steps, 1)
    replicas = _checks.check_int("replicas", replicas, 2)
    burn_in = _checks.check_int("burn_in", burn_in, 0)
    if burn_in >= steps:
        raise ValueError(f"burn_in={burn_in} must be smaller than steps={steps}.")
    # groups=1 is allowed (first-passage runs of any replica count) but gives no standard errors.
    groups = default_groups(replicas) if groups is None else _checks.check_int("groups", groups, 1)
    if replicas % groups:
        raise ValueError(f"replicas={replicas} is not divisible by groups={groups}.")
    if record_every is not None:
        record_every = _checks.check_int("record_every", record_every, 1)
        record_replicas = min(_checks.check_int("record_replicas", record_replicas, 1), replicas)
    return steps, replicas, burn_in, groups, record_every, record_replicas


def warn_divergence(stats: Stats, divergence_threshold: float = 1e8, on_divergence: str = "warn",
                    hint: str | None = None) -> None:
    """Report diverged replicas of a concrete ``stats``: a :class:`DivergenceWarning`
    (``on_divergence="warn"``), a :class:`DivergenceError` (``"raise"``) or nothing (``"ignore"``).

    ``hint`` names the stability bound when the caller knows it (e.g. ``"lr=0.7 >= 2/h_max =
    0.667"``); otherwise the message points to the theory functions that compute it.
    """
    check_on_divergence(on_divergence)
    if on_divergence == "ignore" or not _checks.is_concrete(stats.diverged):
        return
    n = int(stats.diverged)
    if n == 0:
        return
    msg = (f"{n} of {stats.replicas} replicas diverged (non-finite or |x| > "
           f"{divergence_threshold:g}); they are excluded from the statistics from the step they "
           "diverged on. ")
    msg += (f"The run is past the stability bound: {hint}." if hint else
            "The learning rate may be past the (mean-square) stability bound: compute it with "
            "sgdtheory.quadratic.max_stable_lr or sgdtheory.linreg.dataset_max_lr / "
            "online_max_lr.")
    if on_divergence == "raise":
        raise DivergenceError(msg)
    warnings.warn(msg, DivergenceWarning, stacklevel=3)


def scan_replicas(key, init_fn, step_fn, observe_fn, *, steps, replicas, burn_in, groups,
                  record_every=None, record_replicas=8, divergence_threshold=1e8,
                  stats_dtype=None, noise_fn=None, block=1, unroll=1, devices=None,
                  extras=None) -> Stats:
    """The traceable core of :func:`run_replicas` (no validation, no warning): call it inside a
    front-end's ``jax.jit`` with the static arguments already checked by :func:`check_run_args`.
    ``noise_fn``, ``block``, ``unroll`` and ``devices``: see :func:`run_replicas`."""
    opts = dict(replicas=replicas, burn_in=burn_in, groups=groups,
                divergence_threshold=divergence_threshold, stats_dtype=stats_dtype,
                noise_fn=noise_fn, block=block, unroll=unroll, devices=devices, extras=extras)
    carry = init_carry(key, init_fn, observe_fn, **opts)
    traj = None
    if record_every is None:
        carry = advance(carry, 0, steps, step_fn, observe_fn, **opts)
    else:
        # Blocks must not straddle a recording point.
        opts["block"] = math.gcd(_checks.check_int("block", block, 1), record_every)
        n_rec = steps // record_every

        def rec_block(c, b):
            c = advance(c, b * record_every, record_every, step_fn, observe_fn, **opts)
            return c, observe_fn(c.state)[:record_replicas]

        carry, traj = lax.scan(rec_block, carry, jnp.arange(n_rec))  # O(steps/record_every)
        if steps - n_rec * record_every:
            carry = advance(carry, n_rec * record_every, steps - n_rec * record_every, step_fn,
                            observe_fn, **opts)
    return finish(carry, steps, replicas, burn_in, extras)._replace(trajectory=traj)


class Carry(NamedTuple):
    """Everything a run carries between chunks: O(replicas * D + groups * D^2), never O(steps)."""

    key: jax.Array
    state: Any
    alive: jax.Array
    n: jax.Array
    mu: jax.Array  # per-group means as offsets from ``shift`` (precision: see advance)
    m2: jax.Array
    shift: jax.Array  # (D,) fixed once the first samples arrive
    hist: jax.Array  # (G, J, B + 2) histogram counts (under/overflow at the ends), or (G, 0, 0)
    exc: jax.Array  # (G, J, T) exceedance counts, or (G, 0, 0)
    first: jax.Array  # (R,) first-passage step (the run length while not passed)
    passed: jax.Array  # (R,) bool


def _mesh(devices):
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices not in ("all", "global"):
            raise ValueError("devices must be 'all', 'global', an int or a sequence of devices; "
                             f"got {devices!r}.")
        # "global": every device of every process after jax.distributed.initialize() (each
        # process runs the same program; the statistics come back replicated).
        devs = jax.local_devices() if devices == "all" else jax.devices()
    elif isinstance(devices, int):
        devs = jax.local_devices()[:devices]
        if len(devs) < devices:
            raise ValueError(f"devices={devices} but only {len(devs)} local devices exist.")
    else:
        devs = list(devices)
    return jax.sharding.Mesh(np.array(devs), ("replicas",))


def _shard(tree, mesh, replicas, axis=0):
    """Constrain every array with ``replicas`` along ``axis`` to be split over the mesh."""
    if mesh is None:
        return tree
    spec = jax.sharding.PartitionSpec(*([None] * axis + ["replicas"]))
    shd = jax.sharding.NamedSharding(mesh, spec)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def one(a):
        if a.ndim > axis and a.shape[axis] == replicas:
            return lax.with_sharding_constraint(a, shd)
        return lax.with_sharding_constraint(a, rep)

    return jax.tree_util.tree_map(one, tree)


def init_carry(key, init_fn, observe_fn, *, replicas, groups, stats_dtype=None, devices=None,
               extras=None, **_):
    """Initial :class:`Carry`: ``init_fn`` state, every replica alive, empty statistics."""
    if stats_dtype is None:
        stats_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    k_init, k_run = jax.random.split(key)
    state = _shard(init_fn(k_init), _mesh(devices), replicas)
    x0 = observe_fn(state)
    if x0.ndim != 2 or x0.shape[0] != replicas:
        raise ValueError(
            f"observe_fn must return a (replicas, D) = ({replicas}, D) array; got {x0.shape}."
        )
    d = x0.shape[1]
    ex = extras or Extras()
    for spec in (ex.histogram, ex.exceedance):
        if spec is not None and max(spec.coordinates) >= d:
            raise ValueError(f"coordinates {spec.coordinates} out of range for an observed vector "
                             f"of dimension {d}.")
    if ex.first_passage is not None and ex.first_passage.coordinate >= d:
        raise ValueError(f"first_passage coordinate {ex.first_passage.coordinate} out of range for "
                         f"an observed vector of dimension {d}.")
    hist_shape = ((groups, len(ex.histogram.coordinates), len(ex.histogram.edges) + 1)
                  if ex.histogram is not None else (groups, 0, 0))
    exc_shape = ((groups, len(ex.exceedance.coordinates), len(ex.exceedance.thresholds))
                 if ex.exceedance is not None else (groups, 0, 0))
    m2_shape = {"full": (groups, d, d), "diagonal": (groups, d), "mean": (groups, 0)}[ex.moments]
    return Carry(k_run, state, jnp.ones((replicas,), dtype=bool),
                 jnp.zeros((groups,), stats_dtype), jnp.zeros((groups, d), stats_dtype),
                 jnp.zeros(m2_shape, stats_dtype), jnp.zeros((d,), stats_dtype),
                 jnp.zeros(hist_shape, stats_dtype), jnp.zeros(exc_shape, stats_dtype),
                 jnp.zeros((replicas,), jnp.int32), jnp.zeros((replicas,), bool))


def advance(carry: Carry, t0, length: int, step_fn, observe_fn, *, replicas, burn_in, groups,
            divergence_threshold=1e8, stats_dtype=None, noise_fn=None, block=1, unroll=1,
            devices=None, extras=None) -> Carry:
    """Run steps ``t0+1 .. t0+length`` (``length`` static; ``t0`` may be traced and must be a
    multiple of ``block``).  Step ``t`` uses ``fold_in(key, t)`` (or, with ``noise_fn``, block
    ``t0/block + b`` uses ``fold_in(key, block_index)``), so splitting a run into chunks on block
    boundaries gives the same random numbers and the same statistics as one long scan."""
    block = max(1, int(block))  # never shrunk: block indices must match one long scan
    mesh = _mesh(devices)
    stats_dtype = carry.mu.dtype
    q = replicas // groups
    d = carry.mu.shape[1]
    moments = "full" if carry.m2.ndim == 3 else ("mean" if carry.m2.shape[1] == 0 else "diagonal")
    threshold = divergence_threshold
    k_run = carry.key
    ex = extras or Extras()
    hspec, espec, pspec = ex.histogram, ex.exceedance, ex.first_passage
    if hspec is not None:
        h_edges = jnp.asarray(hspec.edges, stats_dtype)
        h_coords = jnp.asarray(hspec.coordinates)
    if espec is not None:
        e_thr = jnp.asarray(espec.thresholds, stats_dtype)
        e_coords = jnp.asarray(espec.coordinates)

    def per_replica_where(mask, new, old):
        def one(a, b):
            if a.ndim and a.shape[0] == replicas:
                return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
            return a
        return jax.tree_util.tree_map(one, new, old)

    def run_block(c, b, nsteps):
        state, alive, n, mu, m2, shift, hist, exc, first, passed = c
        t_first = b * block  # steps t_first+1 .. t_first+nsteps
        # Shift for the block's raw sums: each group's alive mean at the block's start.
        x_start = observe_fn(state).astype(stats_dtype).reshape(groups, q, d)
        a_start = alive.reshape(groups, q) & jnp.all(jnp.isfinite(x_start), axis=-1)
        ref = (jnp.sum(jnp.where(a_start[..., None], x_start, 0.0), axis=1)
               / jnp.maximum(jnp.sum(a_start, axis=1), 1)[:, None].astype(stats_dtype))
        # The running means are stored as offsets from one fixed shift (all replicas' mean at the
        # start of the first block that contributes samples): every subtraction below is then
        # between nearby numbers, so float32 statistics stay unbiased even when |mean| >> std.
        n_alive = jnp.maximum(jnp.sum(a_start), 1).astype(stats_dtype)
        ref_all = jnp.sum(jnp.where(a_start[..., None], x_start, 0.0), axis=(0, 1)) / n_alive
        shift = jnp.where(jnp.sum(n) == 0, ref_all, shift)
        if noise_fn is not None:
            noise = _shard(noise_fn(jax.random.fold_in(k_run, b), nsteps), mesh, replicas, 1)
        else:
            noise = None

        def body(cc, i):
            st, al, fi, pa = cc
            t = t_first + i + 1
            st_old = st
            if noise is None:
                st = step_fn(jax.random.fold_in(k_run, t), st)
            else:
                st = step_fn(jax.tree_util.tree_map(lambda a: a[i], noise), st)
            if pspec is not None and pspec.freeze:
                st = per_replica_where(pa, st, st_old)
            st = _shard(st, mesh, replicas)
            x = observe_fn(st)
            ok = jnp.all(jnp.isfinite(x) & (jnp.abs(x) <= threshold), axis=1)
            if pspec is not None:
                live = al & ~pa
                hit = live & ok & (pspec.direction * (x[:, pspec.coordinate] - pspec.target) >= 0)
                fi = jnp.where(hit | (live & ~ok), jnp.asarray(t, fi.dtype), fi)
                pa = pa | hit
            al = al & ok
            use = al & (t > burn_in)  # steps 1..burn_in are discarded
            xs = x.astype(stats_dtype)
            xg = xs.reshape(groups, q, d) - ref[:, None, :]
            dev = jnp.where(use.reshape(groups, q)[..., None], xg, 0.0)
            out = (dev, use)
            if hspec is not None:
                out = out + (jnp.searchsorted(h_edges, xs[:, h_coords], side="right"),)
            if espec is not None:
                out = out + (jnp.abs(xs[:, e_coords])[..., None] > e_thr[None, None, :],)
            return (st, al, fi, pa), out

        (state, alive, first, passed), outs = lax.scan(
            body, (state, alive, first, passed), jnp.arange(nsteps),
            unroll=max(1, min(int(unroll), nsteps)))
        devs, uses = outs[0], outs[1]
        use_g = uses.reshape(nsteps, groups, q)
        if hspec is not None:
            nb_edges = len(hspec.edges) + 1
            onehot = jax.nn.one_hot(outs[2], nb_edges, dtype=stats_dtype)  # (n, R, J, B+2)
            onehot = onehot.reshape(nsteps, groups, q, *onehot.shape[2:])
            hist = hist + jnp.einsum("ngq,ngqjb->gjb", use_g.astype(stats_dtype), onehot)
        if espec is not None:
            flags = outs[-1].astype(stats_dtype).reshape(nsteps, groups, q, *outs[-1].shape[2:])
            exc = exc + jnp.einsum("ngq,ngqjt->gjt", use_g.astype(stats_dtype), flags)
        # One fused reduction per block: raw sums about `ref`, then a Chan merge.
        devs = devs.reshape(nsteps, groups, q, d)
        nb = jnp.sum(uses.reshape(nsteps, groups, q), axis=(0, 2)).astype(stats_dtype)
        s1 = jnp.sum(devs, axis=(0, 2))
        safe = jnp.maximum(nb, 1.0)
        mb = (ref - shift[None, :]) + s1 / safe[:, None]  # block means, as offsets
        n_new = n + nb
        frac = nb / jnp.maximum(n_new, 1.0)
        delta = mb - mu
        # `where`, not multiplication by a zero count: a group with no samples this block may
        # have a NaN reference (replicas that were already non-finite), and NaN * 0 = NaN.
        has = (nb > 0)
        mu = jnp.where(has[:, None], mu + delta * frac[:, None], mu)
        if moments == "full":
            m2b = (jnp.einsum("bgqd,bgqe->gde", devs, devs)
                   - jnp.einsum("gd,ge->gde", s1, s1) / safe[:, None, None])
            m2 = jnp.where(has[:, None, None],
                           m2 + m2b + jnp.einsum("gd,ge->gde", delta, delta)
                           * (n * frac)[:, None, None], m2)
        elif moments == "diagonal":  # D numbers per group instead of D^2: the cost follows
            m2b = jnp.einsum("bgqd,bgqd->gd", devs, devs) - s1 * s1 / safe[:, None]
            m2 = jnp.where(has[:, None], m2 + m2b + delta * delta * (n * frac)[:, None], m2)
        return (state, alive, n_new, mu, m2, shift, hist, exc, first, passed)

    c = tuple(carry)[1:]
    nblocks, rem = divmod(int(length), block)
    b0 = t0 // block
    early = pspec is not None and pspec.stop_when_all_passed

    def all_done(cc):
        return jnp.all(cc[-1] | ~cc[1])  # every replica passed or dead

    if nblocks and early:
        # A device-side loop that ends once every live replica has passed (escape runs).
        def w_cond(cb):
            cc, b = cb
            return (b < b0 + nblocks) & ~all_done(cc)

        def w_body(cb):
            cc, b = cb
            return run_block(cc, b, block), b + 1

        c, _ = lax.while_loop(w_cond, w_body, (c, jnp.asarray(b0)))
    elif nblocks:
        # The block index rides in the carry: no O(steps) index array is materialised.
        def outer(cb, _):
            cc, b = cb
            return (run_block(cc, b, block), b + 1), None

        (c, _), _ = lax.scan(outer, (c, jnp.asarray(b0)), None, length=nblocks)
    if rem:
        if early:
            c = lax.cond(all_done(c), lambda cc: cc,
                         lambda cc: run_block(cc, b0 + nblocks, rem), c)
        else:
            c = run_block(c, b0 + nblocks, rem)
    return Carry(k_run, *c)


def finish(carry: Carry, steps: int, replicas: int, burn_in: int, extras=None) -> Stats:
    """:class:`Stats` of a :class:`Carry` after ``steps`` steps."""
    stats = _finalize(carry.n, carry.mu, carry.m2, steps, replicas, burn_in, carry.alive,
                      carry.shift)
    if extras is None:
        return stats
    valid = carry.n > 0
    safe_n = jnp.maximum(carry.n, 1.0)
    n_tot = jnp.maximum(jnp.sum(carry.n), 1.0)
    upd = {}
    if extras.histogram is not None:
        spec = extras.histogram
        edges = jnp.asarray(spec.edges, carry.hist.dtype)
        width = jnp.diff(edges)
        frac_g = carry.hist / safe_n[:, None, None]  # (G, J, B + 2)
        frac = jnp.sum(carry.hist, axis=0) / n_tot
        upd["histogram"] = Histogram(
            edges, spec.coordinates, frac[:, 1:-1] / width[None, :],
            _group_se(frac_g[:, :, 1:-1], valid) / width[None, :],
            frac[:, 0], frac[:, -1])
    if extras.exceedance is not None:
        spec = extras.exceedance
        frac_g = carry.exc / safe_n[:, None, None]
        upd["exceedance"] = Exceedance(
            jnp.asarray(spec.thresholds, carry.exc.dtype), spec.coordinates,
            jnp.sum(carry.exc, axis=0) / n_tot, _group_se(frac_g, valid))
    if extras.first_passage is not None:
        upd["first_passage"] = FirstPassage(
            jnp.where(carry.first > 0, carry.first, steps).astype(jnp.int32), carry.passed)
    return stats._replace(**upd)


def static_fields(stats: Stats, extras=None) -> Stats:
    """Restore the static fields (coordinates) that a jitted run returns as arrays."""
    if extras is None:
        return stats
    upd = {}
    if stats.histogram is not None:
        upd["histogram"] = stats.histogram._replace(coordinates=extras.histogram.coordinates)
    if stats.exceedance is not None:
        upd["exceedance"] = stats.exceedance._replace(coordinates=extras.exceedance.coordinates)
    return stats._replace(**upd)


def run_chunked(carry: Carry, advance_fn, *, steps, replicas, burn_in, chunk_steps, block=1,
                progress=None, stop_on_divergence=False, extras=None) -> Stats:
    """Host loop over chunks: ``advance_fn(carry, t0, n)`` (jitted) runs ``n`` steps after ``t0``.

    Calls ``progress(steps_done, steps, stats)`` after every chunk (no per-step host callback);
    stops early after a chunk with a diverged replica when ``stop_on_divergence``.
    """
    chunk_steps = _checks.check_int("chunk_steps", chunk_steps, 1)
    if chunk_steps % max(1, int(block)):
        raise ValueError(f"chunk_steps={chunk_steps} must be a multiple of block={block}.")
    done = 0
    while done < steps:
        n = min(chunk_steps, steps - done)
        carry = advance_fn(carry, jnp.asarray(done), n)
        done += n
        if progress is not None or stop_on_divergence:
            stats = finish(carry, done, replicas, burn_in, extras)
            if progress is not None:
                progress(done, steps, stats)
            if stop_on_divergence and int(stats.diverged) > 0:
                break
        ps = extras.first_passage if extras is not None else None
        if ps is not None and ps.stop_when_all_passed and bool(
                jnp.all(carry.passed | ~carry.alive)):
            break
    return finish(carry, done, replicas, burn_in, extras)


def _group_se(values, valid):
    """Standard error of the mean of per-group ``values`` over the non-empty groups only:
    sd over the ``G_eff`` valid groups (ddof 1) / sqrt(G_eff); NaN when fewer than 2 are valid."""
    g_eff = jnp.sum(valid)
    mask = valid.reshape((-1,) + (1,) * (values.ndim - 1))
    safe = jnp.where(mask, values, 0.0)
    mean = jnp.sum(safe, axis=0) / jnp.maximum(g_eff, 1)
    var = (jnp.sum(jnp.where(mask, (safe - mean[None]) ** 2, 0.0), axis=0)
           / jnp.maximum(g_eff - 1, 1))
    se = jnp.sqrt(var / jnp.maximum(g_eff, 1))
    return jnp.where(g_eff >= 2, se, jnp.nan)


def _finalize(n, mu, m2, steps, replicas, burn_in, alive, shift) -> Stats:
    valid = n > 0  # a group whose replicas all diverged before sampling holds no data
    n_tot = jnp.sum(n)
    mu = jnp.where(valid[:, None], mu, 0.0)
    mean_off = jnp.sum(mu * n[:, None], axis=0) / n_tot
    dev = mu - mean_off[None, :]
    group_mean = jnp.where(valid[:, None], shift[None, :] + mu, jnp.nan)
    if m2.ndim == 3:  # full covariance
        m2 = jnp.where(valid[:, None, None], m2, 0.0)
        cov = (jnp.sum(m2, axis=0) + jnp.einsum("g,gd,ge->de", n, dev, dev)) / n_tot
        group_cov = jnp.where(valid[:, None, None], m2 / jnp.maximum(n, 1.0)[:, None, None],
                              jnp.nan)
        cov_se = _group_se(group_cov, valid)
    elif m2.shape[1]:  # diagonal: (D,) variances
        m2 = jnp.where(valid[:, None], m2, 0.0)
        cov = (jnp.sum(m2, axis=0) + jnp.einsum("g,gd->d", n, dev * dev)) / n_tot
        group_cov = jnp.where(valid[:, None], m2 / jnp.maximum(n, 1.0)[:, None], jnp.nan)
        cov_se = _group_se(group_cov, valid)
    else:  # mean only
        cov = group_cov = cov_se = None
    return Stats(
        mean=shift + mean_off, cov=cov, mean_stderr=_group_se(mu, valid),
        cov_stderr=cov_se, steps=steps,
        replicas=replicas, burn_in=burn_in, diverged=replicas - jnp.sum(alive),
        group_mean=group_mean, group_cov=group_cov, group_count=n,
    )


def estimate(stats: Stats, fn: Callable[[jax.Array, jax.Array], jax.Array]):
    """Value and standard error of ``fn(mean, cov)`` -- any function of the first two moments.

    The value uses the pooled moments; the standard error is the spread of ``fn`` over the
    independent, non-empty replica groups divided by ``sqrt(G)`` (batch means; delta-method free).

    Example:
      >>> loss, loss_se = estimate(stats, lambda m, c: 0.5 * jnp.trace(H @ c))  # doctest: +SKIP
    """
    value = fn(stats.mean, stats.cov)
    per_group = jax.vmap(fn)(stats.group_mean, stats.group_cov)
    return value, _group_se(per_group, stats.group_count > 0)


def _fmt_vec(a, digits=4):
    a = np.asarray(a)
    return np.array2string(a, precision=digits, suppress_small=False, max_line_width=100,
                           threshold=20)


def _stats_repr(s: Stats) -> str:
    """A compact summary (the per-group arrays stay available as attributes)."""
    try:
        d = int(np.shape(s.mean)[0])
        head = (f"Stats(D={d}, steps={s.steps}, burn_in={s.burn_in}, replicas={s.replicas}, "
                f"groups={s.groups}, diverged={int(s.diverged)})")
    except Exception:  # traced or malformed: fall back to the field names
        return f"Stats(<{', '.join(Stats._fields)}>)"
    lines = [head]
    if d <= 6:
        lines.append("  mean      " + _fmt_vec(s.mean).replace("\n", "\n            "))
        lines.append("  ± se      " + _fmt_vec(s.mean_stderr).replace("\n", "\n            "))
        if s.cov is not None:
            name = "cov       " if np.ndim(s.cov) == 2 else "var       "
            lines.append("  " + name + _fmt_vec(s.cov).replace("\n", "\n            "))
            lines.append("  ± se      " + _fmt_vec(s.cov_stderr).replace("\n", "\n            "))
    else:
        lines.append(f"  mean ({d},), cov ({d}, {d}) with standard errors: see .mean, .cov, "
                     ".mean_stderr, .cov_stderr")
    for name in ("histogram", "exceedance", "first_passage", "trajectory"):
        v = getattr(s, name)
        if v is not None:
            shape = np.shape(v.steps) if name == "first_passage" else (
                np.shape(v) if name == "trajectory" else np.shape(getattr(v, v._fields[2])))
            lines.append(f"  {name}: {type(v).__name__} {tuple(shape)}")
    lines.append("  compare with a prediction: stats.compare(theory) or "
                 "sgdtheory.simulate.compare(theory, stats)")
    return "\n".join(lines)
