r"""Exact standard-normal draws by a vectorised ziggurat: the simulators' Gaussian noise source.

Why: on CPU, ``jax.random.normal`` spends most of its time in the inverse-error-function transform,
not in the random bits: in ``python -m benchmarks`` (docs/performance.md, table (a); D = 10,
R = 4096, 1000 steps, float64) its 4.1e7 draws alone took 1.04 s (25 ns each) while NumPy's
*whole* simulation loop took 0.58 s, so a Gaussian simulator could never match a NumPy loop.  This
module keeps JAX's threefry bits and replaces the transform by the ziggurat of Marsaglia & Tsang
(J. Stat. Softw. 5(8), 2000) in Doornik's form (ZIGNOR, 2005: layer index and uniform from
independent bits): the same draws take 0.19 s (4.7 ns each).

The law is exactly :math:`N(0, 1)` up to floating point (no approximation of the density anywhere):

* The region under :math:`f(x) = e^{-x^2/2}`, :math:`x \ge 0`, is covered by ``C = 1024`` layers of
  equal area :math:`v`: a base strip :math:`[0, x_0] \times [0, f(r)]` (:math:`x_0 = v/f(r)`, its
  part beyond :math:`r = x_1` standing for the tail) and rectangles
  :math:`[0, x_i] \times [f(x_i), f(x_{i+1})]`, with :math:`f(x_{i+1}) = f(x_i) + v/x_i` and
  :math:`x_C = 0`.  :math:`r` solves :math:`f(x_{C-1}) + v/x_{C-1} = 1`; the tables are computed
  in float64 here (the top edge closes to ~4e-14).
* One random word gives a layer :math:`i`, a sign and a uniform :math:`u \in [0, 1)` from disjoint
  bits; :math:`x = u x_i`.  If :math:`u < x_{i+1}/x_i` the point lies under the curve whatever its
  height: accept (99.57 % of draws).  Otherwise (the *slow path*): in the base layer, return an
  exact tail draw :math:`-\Phi^{-1}(U\,Q(r))`, :math:`Q(r) = P(Z > r)`; in layer :math:`i \ge 1`
  accept if a uniform height in the layer lies under :math:`f(x)`, else restart with a fresh word.
* Vectorised: every element takes the fast test; the rare slow elements (~0.43 %) are found through
  16-element row bitmasks, gathered into a small buffer and finished in a ``lax.while_loop``; the
  buffer is sized from the binomial law with a 6-sigma margin, and any overflow is handled by
  further rounds of the same loop, so the output never depends on the buffer size.  Fresh words on
  the slow path come from threefry keyed by (element index, attempt), so a draw is a pure
  function of (key, size): identical under jit, vmap and chunking, independent across elements.

float64 uses 64-bit words (10 layer bits, 1 sign bit, a 53-bit uniform); float32 uses 32-bit words
(10 + 1 + 21 bits), so float32 draws lie on a grid of spacing :math:`x_i 2^{-21} \le 2.1\cdot 10^{-6}`
within each layer -- ~10x coarser than float32 resolution near :math:`|x| \approx 1`, invisible in
any moment or histogram.  Tests: ``tests/test_ziggurat.py`` (moments to the 8th, KS and
Anderson-Darling on 10^7 draws, a chi-square on the layer boundaries, the slow path against its exact
residual law, lag correlations, chunk invariance).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

__all__ = ["ziggurat_normal", "ziggurat_tables", "ZigguratTables"]

LAYERS = 1024
_ROW = 16  # elements per row bitmask (uint32 holds one row)
_PER_ROW = 4  # slow elements taken from one row per round (more wait for the next round)
_MAX_SIZE = 2 ** 30  # element indices are threefry counters c, c^2^30, c^2^31, c^(2^30+2^31)


class ZigguratTables(NamedTuple):
    """The layer tables (float64 NumPy arrays; see the module docstring for the construction)."""

    r: float  # right edge x_1 of the base rectangle: the tail starts here
    x: np.ndarray  # (C + 1,) layer widths x_0 > x_1 = r > ... > x_C = 0
    f: np.ndarray  # (C + 1,) exp(-x_i^2 / 2); f[C] = 1
    ratio: np.ndarray  # (C,) x_{i+1} / x_i: the fast-accept threshold of layer i
    tail_mass: float  # Q(r) = P(Z > r)
    residual: float  # top-edge closure f(x_{C-1}) + v / x_{C-1} - 1 (float64 round-off)


@functools.cache
def ziggurat_tables(layers: int = LAYERS) -> ZigguratTables:
    """Solve for the ziggurat with ``layers`` equal-area layers (computed once, in float64)."""
    from scipy.optimize import brentq
    from scipy.special import erfc

    def build(r):
        v = r * math.exp(-0.5 * r * r) + math.sqrt(math.pi / 2) * erfc(r / math.sqrt(2))
        xs = [v / math.exp(-0.5 * r * r), r]
        for i in range(1, layers - 1):
            y = math.exp(-0.5 * xs[i] ** 2) + v / xs[i]
            if y >= 1:  # the layers reached the top early: r too small
                return None, float(layers - i)
            xs.append(math.sqrt(-2 * math.log(y)))
        return xs, math.exp(-0.5 * xs[-1] ** 2) + v / xs[-1] - 1

    r = brentq(lambda s: build(s)[1], 2.0, 6.0, xtol=1e-15, rtol=8.9e-16, maxiter=400)
    xs, residual = build(r)
    x = np.array(xs + [0.0])
    f = np.exp(-0.5 * x * x)
    f[-1] = 1.0
    return ZigguratTables(r, x, f, x[1:] / x[:-1], 0.5 * float(erfc(r / math.sqrt(2))), residual)


class _Layout(NamedTuple):
    word: type  # jnp.uint64 or jnp.uint32
    width: int  # bits per word
    ubits: int  # bits of the uniform


def _layout(dtype) -> _Layout:
    if dtype == jnp.float64:
        return _Layout(jnp.uint64, 64, 53)
    return _Layout(jnp.uint32, 32, 21)


def _split(w, lay: _Layout, dtype):
    """Layer index (low 10 bits), sign (bit 10) and uniform u in [0, 1) (the top ``ubits``)."""
    i = (w & (LAYERS - 1)).astype(jnp.int32)
    neg = ((w >> 10) & 1) == 1
    u = (w >> (lay.width - lay.ubits)).astype(dtype) * (2.0 ** -lay.ubits)
    return i, neg, u


def _fresh(kd, e, lay: _Layout):
    """Two independent words per element index ``e`` (< 2^30) from threefry keyed by ``kd``."""
    c = e.astype(jnp.uint32)
    m = c.shape[0]
    hi = (jnp.uint32(0), jnp.uint32(1 << 31), jnp.uint32(1 << 30), jnp.uint32(3 << 30))
    if lay.width == 32:
        out = threefry_2x32(kd, jnp.concatenate([c ^ hi[0], c ^ hi[1]]))
        return out[:m], out[m:]
    out = threefry_2x32(kd, jnp.concatenate([c ^ h for h in hi]))
    out = out.astype(jnp.uint64)
    return (out[:m] << 32) | out[m:2 * m], (out[2 * m:3 * m] << 32) | out[3 * m:]


def _finish(kd0, w, e, dtype, tabs: ZigguratTables):
    r"""The slow path for fast-rejected words ``w`` of elements ``e``: the exact tail or wedge test,
    then fresh words (attempt ``t`` keyed by ``(kd0, t, e)``) until each element is accepted."""
    lay = _layout(dtype)
    x_t, f_t, ratio = (jnp.asarray(a, dtype) for a in (tabs.x, tabs.f, tabs.ratio))
    tail_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32

    def body(state):
        t, w, pending, value = state
        kd = threefry_2x32(kd0, jnp.stack([t, jnp.uint32(0x9E3779B9)]))
        w_unif, w_next = _fresh(kd, e, lay)
        i, neg, u = _split(w, lay, dtype)
        # a uniform in (0, 1] (never 0, so the tail quantile stays finite)
        u2 = ((w_unif >> (lay.width - lay.ubits)) + 1).astype(dtype) * (2.0 ** -lay.ubits)
        x = u * x_t[i]
        tail = -jax.scipy.special.ndtri(u2.astype(tail_dtype) * tabs.tail_mass)
        under = f_t[i] + u2 * (f_t[i + 1] - f_t[i]) < jnp.exp(-0.5 * x * x)
        ok = (i == 0) | under
        v = jnp.where(i == 0, tail.astype(dtype), x)
        i2, neg2, u3 = _split(w_next, lay, dtype)
        x2 = u3 * x_t[i2]
        v = jnp.where(ok, jnp.where(neg, -v, v), jnp.where(neg2, -x2, x2))
        done = pending & (ok | (u3 < ratio[i2]))
        return t + 1, jnp.where(ok, w, w_next), pending & ~done, jnp.where(done, v, value)

    state = (jnp.uint32(0), w, jnp.ones(e.shape, bool), jnp.zeros(e.shape, dtype))
    return jax.lax.while_loop(lambda s: jnp.any(s[2]), body, state)[3]


def _capacity(rows: int, tabs: ZigguratTables) -> int:
    """Slow rows finished per round: the binomial mean plus 6 standard deviations."""
    p = 1.0 - (1.0 - float(np.mean(1.0 - tabs.ratio))) ** _ROW
    return max(1, min(rows, int(rows * p + 6.0 * math.sqrt(rows * p * (1 - p)) + 8)))


def ziggurat_normal(key, shape=(), dtype=None, *, _capacity_rows: int | None = None) -> jax.Array:
    r"""Standard normal draws of ``shape``: exactly Gaussian in law, ~5x faster than
    ``jax.random.normal`` on CPU in float64 (see :mod:`sgdtheory._ziggurat` for the algorithm).

    Args:
      key: a JAX PRNG key (any implementation).
      shape: output shape (at most 2^30 elements per call).
      dtype: float64 (needs x64, the package default) or float32; float16/bfloat16 are drawn in
        float32 and rounded.  Default: float64 under x64, else float32.

    A pure function of ``(key, shape, dtype)``: the same values under jit, vmap, any chunking of a
    run into calls with the same keys, and the same size in any shape (the draw is flat, then
    reshaped).  Not the same stream as ``jax.random.normal``.

    Example:
      >>> import jax
      >>> z = ziggurat_normal(jax.random.key(0), (100_000,))
      >>> bool(abs(float(z.mean())) < 0.02 and abs(float(z.var()) - 1) < 0.02)
      True
    """
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    out_dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {out_dtype}.")
    dtype = jnp.dtype(jnp.float64) if out_dtype == jnp.float64 else jnp.dtype(jnp.float32)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 draws need jax_enable_x64 (sgdtheory enables it on import unless "
                         "SGDTHEORY_ENABLE_X64=0); ask for dtype=float32 instead.")
    n = math.prod(shape)
    if n > _MAX_SIZE:
        raise ValueError(f"at most 2**30 = {_MAX_SIZE} draws per call; got {n}: split the call "
                         "(in quadratic_sgd one call draws block x replicas x D: lower block=).")
    if n == 0:
        return jnp.zeros(shape, out_dtype)
    tabs = ziggurat_tables()
    lay = _layout(dtype)
    npad = -(-n // _ROW) * _ROW
    rows = npad // _ROW
    k_main, k_slow = jax.random.split(key)
    kd0 = jax.random.bits(k_slow, (2,), jnp.uint32)
    w = jax.random.bits(k_main, (npad,), lay.word)
    i, neg, u = _split(w, lay, dtype)
    fast = u < jnp.asarray(tabs.ratio, dtype)[i]
    x = u * jnp.asarray(tabs.x, dtype)[i]
    value = jnp.where(neg, -x, x)
    slow_bits = jnp.sum((~fast).reshape(rows, _ROW).astype(jnp.uint32)
                        << jnp.arange(_ROW, dtype=jnp.uint32)[None, :], axis=1)
    cap = _capacity(rows, tabs) if _capacity_rows is None else int(_capacity_rows)
    if cap < 1:
        raise ValueError(f"_capacity_rows must be >= 1; got {cap}.")

    def one_round(state):
        value, slow_bits = state
        row = jnp.nonzero(slow_bits, size=cap, fill_value=rows)[0]
        bits = slow_bits.at[row].get(mode="fill", fill_value=0)
        elems = []
        for _ in range(_PER_ROW):  # peel the lowest set bits of each row
            low = bits & (~bits + jnp.uint32(1))
            pos = jax.lax.population_count(low - jnp.uint32(1)).astype(jnp.int32)
            elems.append(jnp.where(bits != 0, row * _ROW + pos, npad))
            bits = bits & (bits - jnp.uint32(1))
        e = jnp.concatenate(elems)
        e_safe = jnp.minimum(e, npad - 1)  # padding slots compute a throwaway value
        v = _finish(kd0, w[e_safe], e_safe, dtype, tabs)
        return value.at[e].set(v, mode="drop"), slow_bits.at[row].set(bits, mode="drop")

    value, _ = jax.lax.while_loop(lambda s: jnp.any(s[1] != 0), one_round, (value, slow_bits))
    return value[:n].reshape(shape).astype(out_dtype)
