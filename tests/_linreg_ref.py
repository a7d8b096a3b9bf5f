"""Independent numpy references for the linear-regression theory (shared by the linreg tests).

They build the exact second-moment map of the augmented state y = (w, [m,] 1) in vec (Kronecker)
form, from Gaussian moments written index by index (Isserlis) or from an enumeration of all
minibatches -- none of the closed forms of sgdtheory.linreg is used.
"""

import itertools

import numpy as np


def _stationary_second_moment(t_op, dim):
    """Y with Y = T(Y) and Y[-1, -1] = 1 (the constant component)."""
    n = dim * dim
    lhs = np.vstack([np.eye(n) - t_op, np.eye(n)[-1][None]])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    y = np.linalg.lstsq(lhs, rhs, rcond=None)[0].reshape(dim, dim)
    return 0.5 * (y + y.T)


def online_operator(a, lr, s, sigma2=0.0, wd=0.0, u=None, b=None, momentum=0.0):
    """E[R kron R] for y = (w, m, 1) (m dropped when momentum == 0) of online Gaussian SGD."""
    d = a.shape[0]
    u = np.zeros(d) if u is None else u
    b = np.zeros((d, d)) if b is None else b
    # v = (x~, y) jointly Gaussian with covariance omega
    om = np.zeros((d + 1, d + 1))
    om[:d, :d] = a + b
    om[:d, d] = om[d, :d] = a @ u
    om[d, d] = u @ a @ u + sigma2
    p = d + 1
    ew = om
    eww = (np.einsum("ij,kl->ijkl", om, om)
           + (np.einsum("ik,jl->ijkl", om, om) + np.einsum("il,jk->ijkl", om, om)) / s)
    use_m = momentum != 0
    dim = 2 * d + 1 if use_m else d + 1
    iw = np.arange(d)
    im = np.arange(d, 2 * d) if use_m else None
    one = dim - 1
    r0 = np.zeros((dim, dim))
    # m' = mu m + (H + wd) w - c ; w' = w - lr m'
    r0[one, one] = 1.0
    r0[iw, iw] = 1.0 - lr * wd
    if use_m:
        r0[np.ix_(im, im)] = momentum * np.eye(d)
        r0[np.ix_(im, iw)] = wd * np.eye(d)
        r0[np.ix_(iw, im)] = -lr * momentum * np.eye(d)
    coef = np.zeros((p, p, dim, dim))  # d R / d W_ij
    for i in range(d):
        for j in range(d):
            coef[i, j, iw[i], iw[j]] = -lr
            if use_m:
                coef[i, j, im[i], iw[j]] = 1.0
        coef[i, d, iw[i], one] = lr
        if use_m:
            coef[i, d, im[i], one] = -1.0
    er = r0 + np.einsum("ij,ijab->ab", ew, coef)
    t = (np.kron(r0, r0) + np.kron(er - r0, r0) + np.kron(r0, er - r0)
         + np.einsum("ijkl,ijab,klcd->acbd", eww, coef, coef).reshape(dim * dim, dim * dim))
    return t, dim, om


def online_reference(a, lr, s, **kw):
    t, dim, om = online_operator(a, lr, s, **kw)
    y = _stationary_second_moment(t, dim)
    d = a.shape[0]
    mean = y[:d, -1]
    cov = y[:d, :d] - np.outer(mean, mean)
    z = np.zeros((d + 1, d + 1))
    z[:d, :d] = y[:d, :d]
    z[:d, d] = z[d, :d] = -mean
    z[d, d] = 1.0
    train = 0.5 * np.sum(om * z)
    return mean, cov, train


def online_radius(a, lr, s, **kw):
    """Spectral radius of the homogeneous second-moment map (the mean-square stability test)."""
    t, dim, _ = online_operator(a, lr, s, **kw)
    k = dim - 1
    idx = np.array([i * dim + j for i in range(k) for j in range(k)])
    return np.max(np.abs(np.linalg.eigvals(t[np.ix_(idx, idx)])))


def batches(n, s, replacement):
    if replacement:
        return [list(c) for c in itertools.product(range(n), repeat=s)]
    return [list(c) for c in itertools.combinations(range(n), s)]


def dataset_operator(x, y, lr, s, replacement, wd=0.0):
    n, d = x.shape
    dim = d + 1
    bs = batches(n, s, replacement)
    t = np.zeros((dim * dim, dim * dim))
    for bb in bs:
        xb, yb = x[bb], y[bb]
        r = np.zeros((dim, dim))
        r[:d, :d] = np.eye(d) - lr * (xb.T @ xb / s + wd * np.eye(d))
        r[:d, d] = lr * xb.T @ yb / s
        r[d, d] = 1.0
        t += np.kron(r, r)
    return t / len(bs), dim


def dataset_reference(x, y, lr, s, replacement, wd=0.0):
    t, dim = dataset_operator(x, y, lr, s, replacement, wd)
    yy = _stationary_second_moment(t, dim)
    d = x.shape[1]
    mean = yy[:d, -1]
    cov = yy[:d, :d] - np.outer(mean, mean)
    r = x @ mean - y
    train = 0.5 * (np.mean(r**2) + np.sum((x.T @ x / x.shape[0]) * cov))
    return mean, cov, train


def dataset_radius(x, lr, s, replacement, wd=0.0):
    n, d = x.shape
    t = np.zeros((d * d, d * d))
    bs = batches(n, s, replacement)
    for bb in bs:
        xb = x[bb]
        m = np.eye(d) - lr * (xb.T @ xb / s + wd * np.eye(d))
        t += np.kron(m, m)
    return np.max(np.abs(np.linalg.eigvals(t / len(bs))))
