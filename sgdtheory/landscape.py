r"""Exactly solvable stationary laws under landscape-dependent SGD noise.

A separate module from :mod:`sgdtheory.escape` because these are *stationary densities and
moments* (what a histogram of SGD iterates shows), not rates; :mod:`sgdtheory.escape` keeps the
rates and the exponent :func:`sgdtheory.escape.power_law_exponent` they share.

* **1-D power law** (Mori et al. 2022): :math:`L = L_0 + \tfrac12 h x^2`, per-step noise
  :math:`C = 2Lh/B`.  The Itô SDE has :math:`p \propto L^{-\varphi}`, :math:`\varphi = 1 + B/(\lambda h)`
  -- a Student-t law with :math:`\nu = 2\varphi - 1` degrees of freedom.  Discrete SGD has the exact
  second moment :math:`2\varepsilon L_0/(2 - \lambda h - \varepsilon h)`, :math:`\varepsilon=\lambda/B`,
  against the SDE's :math:`2\varepsilon L_0/(2 - \varepsilon h)`: the power law holds for
  :math:`\lambda h \ll 1` and discrete-time effects break it at :math:`\lambda h = O(1)`.
* **Yang--Tang--Tu valley** (PRL 130, 237101, 2023): :math:`L = V(x) + \tfrac12\lambda(x)y^2`,
  diffusion :math:`D_{yy} = \Delta`, :math:`D_{xx} = \Delta/\kappa`.  Adiabatic elimination of
  :math:`y` gives :math:`p(x) \propto e^{-\kappa V/\Delta} F^\kappa`, :math:`F = \lambda^{-1/2}`,
  and the effective loss :math:`L_{eff} = L + (\kappa - 1)V + \Delta(1-\kappa)\ln F` with
  :math:`P \propto e^{-L_{eff}/\Delta}`.  Exact only as the :math:`y` relaxation becomes fast;
  compare with :func:`sgdtheory.fokker_planck.stationary_2d` (no adiabatic assumption).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np

from sgdtheory import _checks
from sgdtheory.escape import power_law_exponent

__all__ = [
    "power_law_density",
    "power_law_second_moment",
    "yang_tang_tu_density",
    "yang_tang_tu_effective_loss",
]


def _pos(name, x):
    x = _checks.as_float_array(x)
    _checks.check_positive(name, x)
    return x


def power_law_density(x, loss_min, curvature, lr, batch_size):
    r"""Normalised stationary density :math:`p(x) \propto (L_0 + \tfrac12 h x^2)^{-\varphi}` (Itô SDE).

    .. math:: p(x) = \frac{\Gamma(\varphi)}{\Gamma(\varphi - \tfrac12)}
              \sqrt{\frac{h}{2\pi L_0}}\Big(1 + \frac{h x^2}{2 L_0}\Big)^{-\varphi},
              \qquad \varphi = 1 + \frac{B}{\lambda h}.

    Valid for the SDE limit (:math:`\lambda h \ll 1`); tails :math:`P(|x|>r) \sim r^{1-2\varphi}`.
    """
    l0 = _pos("loss_min", loss_min)
    h = _pos("curvature", curvature)
    phi = power_law_exponent(h, lr, batch_size)
    x = _checks.as_float_array(x)
    lognorm = (jss.gammaln(phi) - jss.gammaln(phi - 0.5)
               + 0.5 * (jnp.log(h) - jnp.log(2.0 * jnp.pi * l0)))
    return jnp.exp(lognorm - phi * jnp.log1p(h * x * x / (2.0 * l0)))


def power_law_second_moment(loss_min, curvature, lr, batch_size, *, discrete: bool = True):
    r"""Stationary :math:`\mathbb E x^2` under loss-proportional noise, discrete SGD or its SDE.

    Discrete SGD :math:`x' = x - \lambda(hx + \sqrt{2hL/B}\,z)` (exact):
    :math:`\mathbb E x^2 = 2\varepsilon L_0/(2 - \lambda h - \varepsilon h)`, finite iff
    :math:`\lambda h (1 + 1/B) < 2`.  SDE (``discrete=False``):
    :math:`2\varepsilon L_0/(2 - \varepsilon h)`, finite iff :math:`\varphi > 3/2`.
    Returns ``inf`` past the bound (under jit) and raises eagerly.
    """
    l0 = _pos("loss_min", loss_min)
    h = _pos("curvature", curvature)
    lr = _pos("lr", lr)
    b = _pos("batch_size", batch_size)
    eps = lr / b
    den = (2.0 - lr * h - eps * h) if discrete else (2.0 - eps * h)
    v = _checks.concrete_value(den)
    if v is not None and np.any(v <= 0):
        raise ValueError(
            "the stationary second moment is infinite here: "
            + ("lr*h*(1 + 1/B) >= 2" if discrete else "phi <= 3/2 (lr*h/B >= 2)")
            + f"; denominator = {v}.")
    return jnp.where(den > 0, 2.0 * eps * l0 / den, jnp.inf)


def yang_tang_tu_density(x, potential, curvature, sharp_diffusion, anisotropy):
    r"""Adiabatic marginal :math:`p(x) \propto e^{-\kappa V(x)/\Delta}\,\lambda(x)^{-\kappa/2}` on a grid.

    Model: :math:`L = V(x) + \tfrac12\lambda(x)y^2`, Itô SDE with constant diffusion
    :math:`D_{xx} = \Delta/\kappa`, :math:`D_{yy} = \Delta`.  Averaging the x-flux over
    :math:`p(y|x) = N(0, \Delta/\lambda)` gives :math:`\bar J_x = -p[V' + \Delta\lambda'/(2\lambda)]
    - (\Delta/\kappa)p'`; zero flux gives the formula (Yang, Tang & Tu 2023, Eq. 7 in the form
    :math:`L_{SGD} = \Delta(1-\kappa)\ln F`).

    Args:
      x: ``(N,)`` uniform grid; the result is normalised with ``sum(p) * h == 1``.
      potential, curvature: callables :math:`V(x)`, :math:`\lambda(x) > 0`.
      sharp_diffusion: :math:`\Delta > 0`.  anisotropy: :math:`\kappa > 0` (:math:`D_{yy}/D_{xx}`).
    """
    x = _checks.as_float_array(x)
    if x.ndim != 1 or x.shape[0] < 3:
        raise ValueError("x must be a 1-D grid of at least 3 points.")
    dlt = _pos("sharp_diffusion", sharp_diffusion)
    kap = _pos("anisotropy", anisotropy)
    lam = curvature(x)
    _checks.check_positive("curvature", lam)
    logp = -kap * potential(x) / dlt - 0.5 * kap * jnp.log(lam)
    p = jnp.exp(logp - jnp.max(logp))
    return p / (jnp.sum(p) * (x[1] - x[0]))


def yang_tang_tu_effective_loss(x, y, potential, curvature, sharp_diffusion, anisotropy):
    r"""Effective loss :math:`L_{eff} = V + \tfrac12\lambda y^2 + (\kappa-1)V - \tfrac{\Delta(1-\kappa)}{2}\ln\lambda`.

    :math:`P(x, y) \approx e^{-L_{eff}/\Delta}/Z` to leading order in the time-scale separation
    (Yang, Tang & Tu 2023, Eqs. 7 and 11; :math:`\ln F = -\tfrac12\ln\lambda`).
    """
    dlt = _pos("sharp_diffusion", sharp_diffusion)
    kap = _pos("anisotropy", anisotropy)
    v = potential(x)
    lam = curvature(x)
    return v + 0.5 * lam * y * y + (kap - 1.0) * v - 0.5 * dlt * (1.0 - kap) * jnp.log(lam)
