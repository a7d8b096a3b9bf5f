"""Workload (e): 2-D Fokker-Planck stationary solve (target <= 2 s at 256x256, mass to 1e-12).

Problem: a 2-D Ornstein-Uhlenbeck process with a non-normal drift and a full constant diffusion
matrix, whose stationary law is a known Gaussian -- so every run also reports the discretisation
error.  Baseline, same run: the null vector of the *same* sparse generator found by SciPy's
shift-invert ARPACK (``scipy.sparse.linalg.eigs(A, k=1, sigma=0)``), the other standard way to get
a stationary density from a sparse operator.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from sgdtheory import fokker_planck as fp

B = np.array([[1.0, 0.5], [-0.3, 0.8]])  # drift f = -B x (non-normal)
D = np.array([[0.3, 0.1], [0.1, 0.2]])  # constant diffusion matrix


def _problem(n):
    x = np.linspace(-3, 3, n)
    y = np.linspace(-3, 3, n)
    drift = lambda X, Y: (-(B[0, 0] * X + B[0, 1] * Y), -(B[1, 0] * X + B[1, 1] * Y))  # noqa: E731
    diffusion = lambda X, Y: (D[0, 0] + 0 * X, D[0, 1] + 0 * X, D[1, 1] + 0 * X)  # noqa: E731
    return drift, diffusion, fp.Grid2D(x, y)


def _gaussian(grid):
    # B S + S B^T = 2 D  (Ito OU dx = -Bx dt + sqrt(2D) dW)
    s = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)
    X, Y = np.meshgrid(grid.x, grid.y, indexing="ij")
    z = np.stack([X, Y], -1)
    q = np.einsum("...i,ij,...j->...", z, np.linalg.inv(s), z)
    return np.exp(-q / 2) / (2 * np.pi * np.sqrt(np.linalg.det(s)))


def fokker_planck(quick: bool):
    rows = []
    for n in ((128,) if quick else (128, 256)):
        drift, diffusion, grid = _problem(n)
        h = (grid.x[1] - grid.x[0]) * (grid.y[1] - grid.y[0])
        best_ours = best_base = np.inf
        for _ in range(2):
            t = time.perf_counter()
            p = fp.stationary_2d(drift, diffusion, grid)
            best_ours = min(best_ours, time.perf_counter() - t)
            t = time.perf_counter()
            a = fp.generator_2d(drift, diffusion, grid)
            _, v = spla.eigs(a.tocsc(), k=1, sigma=0)
            q = np.abs(v[:, 0].real).reshape(n, n)
            q /= q.sum() * h
            best_base = min(best_base, time.perf_counter() - t)
        exact = _gaussian(grid)
        rows.append(dict(workload=f"(e) 2-D Fokker-Planck stationary, {n}x{n}",
                         variant="ours: sparse LU with normalisation row", seconds=best_ours,
                         ratio_vs_baseline=best_base / best_ours,
                         mass_error=abs(p.sum() * h - 1), max_err_vs_gaussian=float(np.abs(p - exact).max())))
        rows.append(dict(workload=f"(e) 2-D Fokker-Planck stationary, {n}x{n}",
                         variant="baseline: scipy eigs shift-invert", seconds=best_base,
                         ratio_vs_baseline=1.0, mass_error=abs(q.sum() * h - 1),
                         max_err_vs_gaussian=float(np.abs(q - exact).max())))
    return rows
