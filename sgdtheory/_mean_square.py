r"""Exact mean-square stability threshold of SGD with random per-sample curvature.

Kept in its own private module so that :mod:`sgdtheory.quadratic` can re-export
:func:`mean_square_max_lr` without importing :mod:`sgdtheory.linreg` or :mod:`sgdtheory.noise`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sgdtheory import _checks

__all__ = ["mean_square_max_lr", "batch_factor", "resolve_sampling", "SAMPLING_RULES"]

SAMPLING_RULES = ("with_replacement", "without_replacement")


def resolve_sampling(sampling=None, replacement=None) -> bool:
    """The sampling rule as ``with_replacement: bool`` from ``sampling=`` (preferred) or the older
    ``replacement=`` (kept working, same numbers); default with replacement.

    Raises:
      ValueError: both given, or an unknown rule (``"shuffle"`` is a simulator-only rule: epoch-wise
        reshuffling has dependent batches and no exact i.i.d.-batch theory).
    """
    if sampling is not None and replacement is not None:
        raise ValueError("pass either sampling= or replacement= (the older name), not both; "
                         f"got sampling={sampling!r}, replacement={replacement!r}.")
    if sampling is None:
        return True if replacement is None else bool(replacement)
    if sampling == "with_replacement":
        return True
    if sampling == "without_replacement":
        return False
    extra = (" 'shuffle' (epoch-wise reshuffling) has dependent batches and no exact theory here; "
             "simulate it with sgdtheory.simulate.linreg_sgd(..., sampling='shuffle')."
             if sampling == "shuffle" else "")
    raise ValueError(f"sampling must be one of {SAMPLING_RULES}; got {sampling!r}.{extra}")


def batch_factor(n, batch_size, replacement=None, *, sampling=None):
    r"""Variance factor of a minibatch mean: :math:`1/S` with replacement, :math:`(N-S)/(S(N-1))` without.

    With replacement the ``S`` indices are i.i.d. uniform on ``{1..N}``; without replacement they
    are a uniformly random ``S``-subset (simple random sampling), whose mean has covariance
    :math:`\frac{N-S}{N-1}\frac{C_1}{S}` for per-sample population covariance :math:`C_1`
    (Cochran 1977, Thm 2.2; Ziyin, Liu, Mori & Ueda 2022, Prop. 1).

    Args:
      n: number of samples ``N``.
      batch_size: ``S``.
      replacement: older spelling of ``sampling`` (``True`` = with replacement).
      sampling: ``"with_replacement"`` (default) or ``"without_replacement"``.

    Raises:
      ValueError: ``batch_size < 1``, or ``batch_size > n`` without replacement.
    """
    replacement = resolve_sampling(sampling, replacement)
    n = _checks.check_int("number of samples N", n, 1)
    s = _checks.check_int("batch_size", batch_size, 1)
    if replacement:
        return 1.0 / s
    if s > n:
        raise ValueError(
            f"batch_size={s} is larger than the dataset (N={n}): sampling without replacement needs "
            "batch_size <= N (use sampling='with_replacement' to draw indices i.i.d.)."
        )
    if n == 1:
        return 0.0
    return (n - s) / (s * (n - 1.0))


def mean_square_max_lr(per_sample_hessians, batch_size, *, sampling=None, replacement=None):
    r"""Largest learning rate for which SGD with random minibatch curvature is mean-square stable.

    SGD near a minimum with per-sample Hessians :math:`H_i` (i = 1..N) applies the random linear map
    :math:`\delta \leftarrow (I - \lambda H_B)\delta` with :math:`H_B` the minibatch mean. The second
    moment evolves by :math:`T_\lambda(\Sigma) = \mathbb E[(I-\lambda H_B)\Sigma(I-\lambda H_B)]`, i.e.
    in vec form :math:`T_\lambda = I - \lambda P + \lambda^2 Q` with
    :math:`P = \bar H\oplus\bar H`, :math:`Q = \bar H\otimes\bar H + f\,\mathrm{Cov}_i(H_i\otimes H_i)`
    and :math:`f` = :func:`batch_factor`. Since :math:`T_\lambda` is a positive map, its spectral
    radius is its largest eigenvalue, which crosses 1 exactly where :math:`(P - \lambda Q)v = 0`.
    Hence (for SPD :math:`\bar H`)

    .. math:: \lambda^* = 1/\mu_{\max}, \qquad \mu_{\max} = \max \operatorname{eig}(P^{-1/2} Q P^{-1/2})
              \text{ on symmetric matrices.}

    In 1-D this is Wu, Ma & E (2018), Eq. (9): :math:`\lambda^* = 2a/(a^2 + f s^2)` with
    :math:`a` the mean and :math:`s^2` the population variance of the :math:`h_i`.

    Args:
      per_sample_hessians: ``(N, D, D)`` symmetric per-sample Hessians (e.g. :math:`x_i x_i^\top`,
        plus :math:`\gamma I` for weight decay). Their mean must be positive definite.
      batch_size: ``S`` (static).
      sampling: ``"with_replacement"`` (i.i.d. indices, default) or ``"without_replacement"``
        (a uniform ``S``-subset).
      replacement: older spelling (``True``/``False``); passing both raises ``ValueError``.

    Returns:
      The threshold :math:`\lambda^*` (finite, since :math:`Q \succeq \bar H\otimes\bar H \ne 0`).
      For deterministic curvature (``f = 0``, e.g. ``S = N`` without replacement) it reduces to the
      gradient-descent bound :math:`2/h_{\max}`. Cost :math:`O(D^6)`: meant for ``D`` up to ~30.

    Raises:
      ValueError: wrong shape, ``batch_size > N`` without replacement, or (concrete) mean Hessian
        not positive definite.

    Example:
      >>> import jax.numpy as jnp
      >>> from sgdtheory.quadratic import mean_square_max_lr
      >>> h = jnp.array([1.0, 3.0]).reshape(2, 1, 1)
      >>> float(mean_square_max_lr(h, 1))   # 2a/(a^2+s^2) = 4/(4+1)
      0.8

    References:
      Wu, Ma & E, "How SGD selects the global minima in over-parameterized learning: a dynamical
      stability perspective", NeurIPS 2018, Sec. 3 (Eq. 9 in 1-D).
    """
    h = _checks.as_float_array(per_sample_hessians)
    if h.ndim != 3 or h.shape[1] != h.shape[2]:
        raise ValueError(
            f"per_sample_hessians must have shape (N, D, D); got {tuple(h.shape)}."
        )
    n, d, _ = h.shape
    f = batch_factor(n, batch_size, sampling=sampling, replacement=replacement)
    h = 0.5 * (h + jnp.swapaxes(h, 1, 2))
    hbar = jnp.mean(h, axis=0)
    _checks.check_spd("mean of per_sample_hessians", hbar)
    e, u = jnp.linalg.eigh(hbar)
    ht = jnp.einsum("ai,nab,bj->nij", u, h, u)  # eigenbasis of the mean
    dev = ht - jnp.diag(e)[None]
    # Q in the eigenbasis, vec row-major: Q[(ij),(kl)] = E[H_ik H_jl]
    q = jnp.einsum("ik,jl->ijkl", jnp.diag(e), jnp.diag(e)) + f * jnp.einsum(
        "nik,njl->ijkl", dev, dev) / n
    q = q.reshape(d * d, d * d)
    p = (e[:, None] + e[None, :]).reshape(d * d)
    ps = 1.0 / jnp.sqrt(p)
    qs = ps[:, None] * q * ps[None, :]
    # restrict to symmetric matrices: Pi = (I + K)/2 with K the commutation matrix
    perm = np.arange(d * d).reshape(d, d).T.reshape(-1)
    qs = 0.5 * (qs + qs[perm])
    qs = 0.5 * (qs + qs[:, perm])
    qs = 0.5 * (qs + qs.T)
    mu = jnp.linalg.eigvalsh(qs)[-1]
    return 1.0 / mu
