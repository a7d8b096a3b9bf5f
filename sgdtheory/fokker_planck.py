r"""Fokker--Planck equations of SGD-like SDEs in 1-D and 2-D, **Itô convention throughout**.

The SDE is :math:`dx = f(x)\,dt + \sqrt{2D(x)}\,dW` (Itô: the noise is evaluated at the current
point, as in discrete SGD :math:`x_{k+1} = x_k - \lambda(\nabla L + \xi_k)`, whose SDE limit has
:math:`f = -\nabla L`, :math:`D = \lambda C/2`, time :math:`t = \lambda k`).  Its density obeys

.. math:: \partial_t p = -\nabla\cdot(f p) + \sum_{ij}\partial_i\partial_j (D_{ij} p)
          = -\nabla\cdot J, \qquad J_i = f_i p - \sum_j \partial_j (D_{ij} p),

with zero-flux (reflecting) boundaries.  Note the Itô form :math:`\partial_j(D_{ij}p)`: the
diffusion sits *inside* both derivatives.  The "D-inside" (Hänggi--Klimontovich) form
:math:`\nabla\cdot(D\nabla p)` differs by :math:`(\nabla\cdot D) p` and is *not* what SGD does.

Discretisation (finite volumes, cell-centred, uniform grids)
-----------------------------------------------------------
Write :math:`g = D p`.  Across a face of width :math:`h` the 1-D flux :math:`J = (f/D) g - g'` is
integrated exactly for constant :math:`a = f/D` on the face (Scharfetter--Gummel exponential
fitting):

.. math:: J_{i+1/2} = \frac1h\big[\,B(-a h)\, D_i p_i - B(a h)\, D_{i+1} p_{i+1}\big],
          \qquad B(z) = \frac{z}{e^z - 1}.

:math:`B > 0`, so the off-diagonal entries of the generator are positive and its columns sum to
zero: the scheme is conservative (mass is conserved to round-off) and :math:`e^{tA}` maps
non-negative densities to non-negative densities.  Its discrete zero-flux solution is
:math:`D_{i+1}p_{i+1} = D_i p_i\, e^{a h}`, i.e. the exact stationary law
:math:`p \propto e^{\int f/D}/D` with the integral by the midpoint rule -- second order.  In 2-D the
diagonal diffusions :math:`D_{xx}, D_{yy}` use the same exponential fitting along each axis and the
off-diagonal :math:`D_{xy}` enters the face fluxes by central differences (second order, still
exactly conservative; positivity is then guaranteed only while :math:`|D_{xy}|` is small against
the diagonal, see :func:`stationary_2d`).

The observed orders of convergence are measured in ``tests/test_fokker_planck.py`` and quoted in
``docs/theory/fokker_planck.md``.

Drift and diffusion are callables (JAX or NumPy functions) evaluated **once** on the grid; the
solvers themselves are NumPy/SciPy (sparse matrices, direct sparse solves, Krylov matrix
exponentials) and are not traceable by ``jit``.

References:
  D. L. Scharfetter & H. K. Gummel, IEEE Trans. Electron Devices 16, 64 (1969) (the flux, Eq. 9);
  J. S. Chang & G. Cooper, J. Comput. Phys. 6, 1 (1970);
  H. Risken, *The Fokker--Planck Equation*, 2nd ed. (1989), Eqs. (4.94)-(4.95) (Itô FPE) and
  (5.4)-(5.5) (1-D stationary solution).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "MAX_PECLET",
    "Grid2D",
    "generator_1d",
    "generator_2d",
    "stationary_1d",
    "evolve_1d",
    "stationary_2d",
    "evolve_2d",
    "relaxation_spectrum",
]

#: Default largest cell Péclet number :math:`|f| h / D` accepted (see :func:`generator_1d`).
MAX_PECLET = 10.0

# up to this many states the time evolution uses a dense matrix exponential (scaling and squaring)
_DENSE_MAX = 1500


class Grid2D(NamedTuple):
    """A rectangular grid: uniform cell centres ``x`` (nx,) and ``y`` (ny,); arrays are ``(nx, ny)``."""

    x: np.ndarray
    y: np.ndarray


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _uniform(name: str, grid) -> tuple[np.ndarray, float]:
    x = np.asarray(grid, dtype=float)
    if x.ndim != 1 or x.size < 3:
        raise ValueError(f"{name} must be a 1-D array of at least 3 cell centres; got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite entries.")
    dx = np.diff(x)
    h = (x[-1] - x[0]) / (x.size - 1)
    if h <= 0 or np.any(dx <= 0):
        raise ValueError(f"{name} must be strictly increasing.")
    if np.max(np.abs(dx - h)) > 1e-8 * h:
        raise ValueError(
            f"{name} must be a uniform grid of cell centres (e.g. np.linspace); its spacing varies "
            f"from {dx.min():.6g} to {dx.max():.6g}. The finite-volume fluxes here assume one "
            "spacing h; resample onto a uniform grid.")
    return x, float(h)


def _eval(fn: Callable, name: str, *args) -> np.ndarray:
    out = fn(*[jnp.asarray(a) for a in args])
    shape = np.broadcast_shapes(*[np.shape(a) for a in args])
    out = np.broadcast_to(np.asarray(out, dtype=float), shape)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} returned NaN or infinite values on the grid.")
    return out


def _positive(name: str, v: np.ndarray, where) -> None:
    if np.any(v <= 0):
        k = int(np.argmin(v))
        raise ValueError(
            f"{name} must be > 0 everywhere on the grid (the SDE needs a positive diffusion); its "
            f"minimum is {v.flat[k]:.4g} at {where(k)}.")


def _bern(z: np.ndarray) -> np.ndarray:
    """Bernoulli function z/(e^z - 1), stable for all z (B(0) = 1, B(z) -> 0 as z -> +inf)."""
    z = np.asarray(z, dtype=float)
    small = np.abs(z) < 1e-6
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        big = np.where(small, 1.0, z / np.expm1(np.where(small, 1.0, z)))
    return np.where(small, 1.0 - z / 2.0 + z * z / 12.0, np.where(np.isnan(big), 0.0, big))


def _peclet(pe: np.ndarray, h: float, xf: np.ndarray, max_peclet: float, axis: str = "x") -> None:
    m = float(np.max(np.abs(pe)))
    if m > max_peclet:
        k = int(np.argmax(np.abs(pe)))
        n_needed = math.ceil((xf[-1] - xf[0] + h) / (h * max_peclet / m))
        raise ValueError(
            f"grid too coarse to resolve the diffusion length D/|f| along {axis}: the cell Péclet "
            f"number |f|h/D reaches {m:.3g} at {axis}={xf[k]:.4g} (h={h:.4g}); it must be <= "
            f"max_peclet={max_peclet:g}, i.e. h <= {h * max_peclet / m:.3g} (about {n_needed} cells "
            "on this domain). Refine the grid, shrink the domain to where the density is not "
            "negligible, or pass a larger max_peclet (the scheme stays positive, but loses accuracy).")


# ----------------------------------------------------------------------------------------------
# 1-D
# ----------------------------------------------------------------------------------------------

def _faces_1d(drift, diffusion, grid, max_peclet):
    x, h = _uniform("grid", grid)
    xf = 0.5 * (x[:-1] + x[1:])
    d_c = _eval(diffusion, "diffusion", x)
    d_f = _eval(diffusion, "diffusion", xf)
    _positive("diffusion", d_c, lambda k: f"x={x[k]:.4g}")
    _positive("diffusion", d_f, lambda k: f"x={xf[k]:.4g}")
    f_f = _eval(drift, "drift", xf)
    a_h = f_f / d_f * h
    _peclet(a_h, h, xf, max_peclet)
    return x, h, d_c, a_h


def generator_1d(drift, diffusion, grid, *, max_peclet: float = MAX_PECLET) -> sp.csr_matrix:
    r"""The sparse ``(N, N)`` generator :math:`A` of the discretised Itô FPE, :math:`\dot p = A p`.

    Scharfetter--Gummel fluxes (module docstring); columns sum to zero (conservation), off-diagonals
    are positive (positivity).

    Args:
      drift: callable :math:`f(x)`, vectorised over an array of points.
      diffusion: callable :math:`D(x) > 0` (the SDE is :math:`dx = f dt + \sqrt{2D} dW`).
      grid: ``(N,)`` **uniform** cell centres; the domain is ``[grid[0] - h/2, grid[-1] + h/2]``
        with reflecting (zero-flux) walls.
      max_peclet: largest cell Péclet number :math:`|f|h/D` accepted.  The grid must resolve the
        diffusion length :math:`D/|f|`: ``h <= max_peclet * D/|f|`` on every face.

    Raises:
      ValueError: non-uniform grid, non-positive diffusion, grid too coarse (the message gives the
        spacing needed).
    """
    x, h, d_c, a_h = _faces_1d(drift, diffusion, grid, max_peclet)
    n = x.size
    right = _bern(-a_h) * d_c[:-1] / h**2   # i -> i+1
    left = _bern(a_h) * d_c[1:] / h**2      # i+1 -> i
    diag = np.zeros(n)
    diag[:-1] -= right
    diag[1:] -= left
    return sp.diags([left, diag, right], [1, 0, -1], shape=(n, n), format="csr")


def stationary_1d(drift, diffusion, grid, *, max_peclet: float = MAX_PECLET) -> np.ndarray:
    r"""Normalised stationary density of :math:`dx = f dt + \sqrt{2D}\,dW` (Itô), reflecting walls.

    .. math:: p(x) \propto \frac{1}{D(x)} \exp\Big(\int^x \frac{f(y)}{D(y)}\,dy\Big)

    (Risken 1989, Eq. 5.5), computed as the exact zero-flux solution of the Scharfetter--Gummel
    scheme, :math:`\log(D_{i+1}p_{i+1}) = \log(D_i p_i) + h f/D|_{i+1/2}` (midpoint rule: second
    order in ``h``), in log space so that densities spanning hundreds of decades do not overflow.

    Args:
      drift, diffusion, grid, max_peclet: as in :func:`generator_1d`.

    Returns:
      ``(N,)`` density at the cell centres, normalised so that ``sum(p) * h == 1``.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> x = np.linspace(-5, 5, 401)
      >>> p = stationary_1d(lambda x: -x, lambda x: 0.5 + 0 * x, x)   # OU: N(0, 1/2)
      >>> round(float(np.sum(x**2 * p) * (x[1] - x[0])), 4)
      0.5

    References:
      Risken (1989) Eq. (5.5); for SGD with loss-proportional noise this gives Mori et al.'s power
      law (see :mod:`sgdtheory.landscape`).
    """
    x, h, d_c, a_h = _faces_1d(drift, diffusion, grid, max_peclet)
    log_g = np.concatenate([[0.0], np.cumsum(a_h)])
    log_p = log_g - np.log(d_c)
    p = np.exp(log_p - log_p.max())
    return p / (p.sum() * h)


def _times(t) -> tuple[np.ndarray, bool]:
    tt = np.asarray(t, dtype=float)
    scalar = tt.ndim == 0
    tt = np.atleast_1d(tt)
    if tt.ndim != 1 or np.any(~np.isfinite(tt)) or np.any(tt < 0) or np.any(np.diff(tt) < 0):
        raise ValueError("t must be a non-negative time or a non-decreasing 1-D array of times.")
    return tt, scalar


def _evolve(a: sp.spmatrix, p0: np.ndarray, t, cell: float):
    tt, scalar = _times(t)
    p = p0.astype(float).copy()
    out, now = [], 0.0
    dense = a.shape[0] <= _DENSE_MAX
    for ti in tt:
        if ti > now:
            if dense:   # scaling and squaring: cost grows only like log(t * |A|)
                p = scipy.linalg.expm(a.toarray() * (ti - now)) @ p
            else:       # Krylov/Taylor: cost grows like t * |A|
                p = spla.expm_multiply(a * (ti - now), p)
            now = ti
        out.append(p.copy())
    res = np.stack(out)
    return res[0] if scalar else res


def _check_p0(p0, shape, cell):
    p0 = np.asarray(p0, dtype=float)
    if p0.shape != shape:
        raise ValueError(f"p0 must have the grid's shape {shape}; got {p0.shape}.")
    if np.any(p0 < 0) or not np.all(np.isfinite(p0)) or p0.sum() * cell <= 0:
        raise ValueError("p0 must be a non-negative density with positive mass.")
    return p0


def evolve_1d(drift, diffusion, grid, p0, t, *, max_peclet: float = MAX_PECLET) -> np.ndarray:
    r"""Time-dependent solution :math:`p(t) = e^{tA} p_0` of the discretised Itô FPE.

    The semi-discrete system is integrated *exactly* in time (no time-step error): a dense
    scaling-and-squaring ``scipy.linalg.expm`` up to 1500 cells (cost ~ log(t |A|)), else the
    Krylov/Taylor ``scipy.sparse.linalg.expm_multiply`` (Al-Mohy & Higham 2011);
    mass is conserved to round-off and positivity holds up to round-off (the generator is a
    Metzler matrix with zero column sums).

    Args:
      drift, diffusion, grid, max_peclet: as in :func:`generator_1d`.
      p0: ``(N,)`` initial density at the cell centres (need not be normalised; mass is kept).
      t: a time, or a non-decreasing 1-D array of times (SDE time; for SGD, ``t = lr * steps``).

    Returns:
      ``(N,)`` for scalar ``t``, else ``(len(t), N)``.
    """
    a = generator_1d(drift, diffusion, grid, max_peclet=max_peclet)
    x, h = _uniform("grid", grid)
    return _evolve(a, _check_p0(p0, x.shape, h), t, h)


# ----------------------------------------------------------------------------------------------
# 2-D
# ----------------------------------------------------------------------------------------------

def _diff2(diffusion, X, Y):
    out = diffusion(jnp.asarray(X), jnp.asarray(Y))
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise ValueError("diffusion(x, y) must return a tuple (D_xx, D_xy, D_yy) of arrays.")
    dxx, dxy, dyy = (np.broadcast_to(np.asarray(o, dtype=float), X.shape) for o in out)
    for n_, v in (("D_xx", dxx), ("D_xy", dxy), ("D_yy", dyy)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"diffusion's {n_} returned NaN or infinite values on the grid.")
    det = dxx * dyy - dxy**2
    if np.any(dxx <= 0) or np.any(dyy <= 0) or np.any(det <= 0):
        k = int(np.argmin(np.minimum(np.minimum(dxx, dyy), det)))
        raise ValueError(
            "the diffusion matrix must be positive definite everywhere on the grid (D_xx > 0, "
            f"D_yy > 0, D_xx D_yy - D_xy^2 > 0); at (x, y) = ({X.flat[k]:.4g}, {Y.flat[k]:.4g}) "
            f"D = [[{dxx.flat[k]:.4g}, {dxy.flat[k]:.4g}], [., {dyy.flat[k]:.4g}]].")
    return dxx, dxy, dyy


def _drift2(drift, X, Y):
    out = drift(jnp.asarray(X), jnp.asarray(Y))
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("drift(x, y) must return a tuple (f_x, f_y) of arrays.")
    fx, fy = (np.broadcast_to(np.asarray(o, dtype=float), X.shape) for o in out)
    if not (np.all(np.isfinite(fx)) and np.all(np.isfinite(fy))):
        raise ValueError("drift returned NaN or infinite values on the grid.")
    return fx, fy


def generator_2d(drift, diffusion, grid, *, max_peclet: float = MAX_PECLET) -> sp.csr_matrix:
    r"""Sparse generator of the 2-D Itô FPE on a rectangle with reflecting walls.

    State index ``k = i * ny + j`` (``p.reshape(nx, ny)`` recovers the ``(nx, ny)`` array).
    Face fluxes: exponential fitting (Scharfetter--Gummel) for :math:`f_x p - \partial_x(D_{xx}p)`
    across x-faces (and likewise in y), plus the cross term :math:`-\partial_y(D_{xy} p)` on x-faces
    (:math:`-\partial_x(D_{xy} p)` on y-faces) by central differences averaged over the two
    cells of the face (one-sided at the walls).  Every flux leaves one cell and enters its
    neighbour, so columns sum to zero exactly.

    Args:
      drift: callable ``(x, y) -> (f_x, f_y)``, vectorised over arrays.
      diffusion: callable ``(x, y) -> (D_xx, D_xy, D_yy)``, positive definite everywhere.
      grid: :class:`Grid2D` or a pair ``(x, y)`` of uniform 1-D cell-centre arrays.
      max_peclet: as in :func:`generator_1d`, applied to :math:`f_x h_x/D_{xx}` and
        :math:`f_y h_y/D_{yy}`.
    """
    gx, gy = grid
    x, hx = _uniform("grid x", gx)
    y, hy = _uniform("grid y", gy)
    nx, ny = x.size, y.size
    idx = np.arange(nx * ny).reshape(nx, ny)
    Xc, Yc = np.meshgrid(x, y, indexing="ij")
    dxx_c, dxy_c, dyy_c = _diff2(diffusion, Xc, Yc)
    rows, cols, vals = [], [], []

    def add(src_cell, c, lo, hi, h):
        # flux c * p[src] from cell lo to cell hi across a face of normal spacing h
        c = c.ravel() / h
        rows.extend([lo.ravel(), hi.ravel()])
        cols.extend([src_cell.ravel(), src_cell.ravel()])
        vals.extend([-c, c])

    def faces(idx_n, dnn_c, dxy_t, h_n, h_t, coord_f, f_n, dnn_f, axis):
        # Fluxes across the faces normal to one axis; every array is laid out (normal, tangent).
        nn, nt = idx_n.shape
        ah = f_n / dnn_f * h_n
        _peclet(ah.ravel(), h_n, np.repeat(coord_f, nt), max_peclet, axis)
        lo, hi = idx_n[:-1, :], idx_n[1:, :]
        add(lo, _bern(-ah) * dnn_c[:-1, :] / h_n, lo, hi, h_n)
        add(hi, -_bern(ah) * dnn_c[1:, :] / h_n, lo, hi, h_n)
        # cross term -d_t(D_xy p): central differences along the tangent (one-sided at walls),
        # averaged over the two cells of the face
        tp = np.minimum(np.arange(nt) + 1, nt - 1)
        tm = np.maximum(np.arange(nt) - 1, 0)
        w = (1.0 / (2.0 * h_t * (tp - tm)))[None, :] * np.ones((nn - 1, 1))
        for side in (slice(0, nn - 1), slice(1, nn)):
            g = dxy_t[side, :]
            add(idx_n[side, :][:, tp], -g[:, tp] * w, lo, hi, h_n)
            add(idx_n[side, :][:, tm], g[:, tm] * w, lo, hi, h_n)

    # x-faces: arrays already (x, y) = (normal, tangent)
    xf = 0.5 * (x[:-1] + x[1:])
    Xf, Yf = np.meshgrid(xf, y, indexing="ij")
    fx, _ = _drift2(drift, Xf, Yf)
    dxx_f, _, _ = _diff2(diffusion, Xf, Yf)
    faces(idx, dxx_c, dxy_c, hx, hy, xf, fx, dxx_f, "x")
    # y-faces: the same fluxes on the transposed arrays
    yf = 0.5 * (y[:-1] + y[1:])
    Xf, Yf = np.meshgrid(x, yf, indexing="ij")
    _, fy = _drift2(drift, Xf, Yf)
    _, _, dyy_f = _diff2(diffusion, Xf, Yf)
    faces(idx.T, dyy_c.T, dxy_c.T, hy, hx, yf, fy.T, dyy_f.T, "y")
    n = nx * ny
    a = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n))
    return a.tocsr()


def stationary_2d(drift, diffusion, grid, *, max_peclet: float = MAX_PECLET) -> np.ndarray:
    r"""Normalised stationary density of the 2-D Itô FPE (full 2x2 diffusion field), reflecting walls.

    Solves :math:`A p = 0` with one equation replaced by the normalisation
    :math:`\sum p\,h_x h_y = 1` (a direct sparse LU solve; :math:`A` has a one-dimensional kernel
    when the chain is irreducible).  Without detailed balance (anisotropic state-dependent noise,
    the Yang--Tang--Tu valley) the stationary state carries circulating currents; this solver does
    not assume detailed balance.

    With :math:`D_{xy} \ne 0` the central-difference cross fluxes can make small negative entries
    where the density is negligible; with :math:`D_{xy} = 0` the result is positive.

    Args:
      drift, diffusion, grid, max_peclet: as in :func:`generator_2d`.

    Returns:
      ``(nx, ny)`` density at the cell centres, ``sum(p) * hx * hy == 1`` to round-off.
    """
    a = generator_2d(drift, diffusion, grid, max_peclet=max_peclet)
    x, hx = _uniform("grid x", grid[0])
    y, hy = _uniform("grid y", grid[1])
    n = a.shape[0]
    # replace the equation of the cell with the largest outflow rate (well inside the mass)
    k = int(np.argmin(a.diagonal()))
    keep = np.ones(n)
    keep[k] = 0.0
    norm_row = sp.csr_matrix((np.full(n, hx * hy), (np.full(n, k), np.arange(n))), shape=(n, n))
    a = sp.diags(keep) @ a + norm_row
    b = np.zeros(n)
    b[k] = 1.0
    p = spla.spsolve(a.tocsc(), b, permc_spec="COLAMD")
    return p.reshape(x.size, y.size)


def evolve_2d(drift, diffusion, grid, p0, t, *, max_peclet: float = MAX_PECLET) -> np.ndarray:
    r"""Time-dependent solution :math:`p(t) = e^{tA}p_0` of the 2-D Itô FPE (exact in time).

    Args:
      drift, diffusion, grid, max_peclet: as in :func:`generator_2d`.
      p0: ``(nx, ny)`` initial density.
      t: a time or a non-decreasing 1-D array of times.

    Returns:
      ``(nx, ny)`` for scalar ``t``, else ``(len(t), nx, ny)``; mass conserved to round-off.
    """
    a = generator_2d(drift, diffusion, grid, max_peclet=max_peclet)
    x, hx = _uniform("grid x", grid[0])
    y, hy = _uniform("grid y", grid[1])
    p0 = _check_p0(p0, (x.size, y.size), hx * hy)
    out = _evolve(a, p0.ravel(), t, hx * hy)
    return out.reshape(out.shape[:-1] + (x.size, y.size))


def relaxation_spectrum(drift, diffusion, grid, num: int = 4, *,
                        max_peclet: float = MAX_PECLET) -> np.ndarray:
    r"""The ``num`` slowest non-zero relaxation rates :math:`-\mathrm{Re}\,\mu_k` of the FPE generator.

    The stationary mode (:math:`\mu_0 = 0`) is dropped, so ``rates[0]`` is the slowest relaxation
    rate; in a metastable double well it is the sum of the two escape rates (well-to-well), and
    with an absorbing region far away it approximates :math:`1/\text{MFPT}`.  Rates are per unit
    SDE time.

    1-D: the Scharfetter--Gummel generator satisfies discrete detailed balance, so it is similar
    to the symmetric tridiagonal matrix with off-diagonals :math:`\sqrt{A_{i,i+1}A_{i+1,i}}`;
    its eigenvalues come from ``scipy.linalg.eigh_tridiagonal`` (real, accurate even when the
    stationary density spans hundreds of decades).  2-D: shift-invert Arnoldi
    (``scipy.sparse.linalg.eigs``) near zero; the generator need not be symmetrisable (rates may
    then be complex, returned as such only if an imaginary part is significant).

    Args:
      drift, diffusion, grid, max_peclet: as in :func:`generator_1d` (1-D ``grid``) or
        :func:`generator_2d` (``grid`` a pair of arrays / :class:`Grid2D`).
      num: how many rates.

    Returns:
      ``(num,)`` rates in ascending order of real part.
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive integer; got {num!r}.")
    two_d = isinstance(grid, (tuple, list, Grid2D)) and len(grid) == 2 and np.ndim(grid[0]) == 1
    if not two_d:
        a = generator_1d(drift, diffusion, grid, max_peclet=max_peclet)
        n = a.shape[0]
        if num > n - 1:
            raise ValueError(f"num={num} exceeds the {n - 1} non-zero modes of this grid.")
        diag = a.diagonal()
        off = np.sqrt(a.diagonal(1) * a.diagonal(-1))
        w = scipy.linalg.eigh_tridiagonal(-diag, -off, eigvals_only=True,
                                          select="i", select_range=(0, num))
        return np.sort(w)[1:]
    a = generator_2d(drift, diffusion, grid, max_peclet=max_peclet)
    scale = float(np.max(np.abs(a.diagonal())))
    sigma = 1e-9 * scale
    mu = spla.eigs(a.tocsc(), k=num + 1, sigma=sigma, which="LM", return_eigenvectors=False,
                   tol=1e-12)
    mu = mu[np.argsort(-mu.real)]
    rates = -mu[1:]
    if np.max(np.abs(rates.imag)) <= 1e-8 * max(1.0, float(np.max(np.abs(rates.real)))):
        return np.sort(rates.real)
    return rates[np.argsort(rates.real)]
