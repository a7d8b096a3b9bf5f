"""Tests of sgdtheory.local: exact local theory of SGD for any JAX per-example loss.

Oracles: linreg.dataset_stationary (H_i = x_i x_i^T), a dense Kronecker solve with brute-force
enumeration of every batch (small N; SGD and heavy ball), the dense mean-square bound; and
simulation with minibatch_sgd, tolerances from the standard error (z_threshold, alpha = 1e-4).
"""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgdtheory as st
from sgdtheory import local, simulate
from sgdtheory.simulate import z_threshold

# ------------------------------------------------------------------------------------------------
# problems
# ------------------------------------------------------------------------------------------------


def _linreg(n=8, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ np.diag([1.0, 0.7, 0.4][:d])
    y = x @ np.array([1.0, -0.5, 0.3][:d]) + 0.5 * rng.normal(size=n)
    return x, y


def _lin_loss(p, ex):
    x, y = ex
    r = x @ p["w"] - y
    return 0.5 * r * r


def _quad_problem(n=4, d=3, seed=1):
    """Per-example losses exactly quadratic in the params with full-rank, non-commuting Hessians."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d, d))
    h = np.einsum("nij,nkj->nik", a, a) / d + 0.3 * np.eye(d)[None]
    b = rng.normal(size=(n, d))
    return jnp.asarray(h), jnp.asarray(b)


def _quad_loss(w, ex):
    h, b = ex
    return 0.5 * w @ h @ w + b @ w


def _batches(n, s, replacement):
    if replacement:
        return list(itertools.product(range(n), repeat=s))
    return list(itertools.combinations(range(n), s))


def _enumerated(h, g, lr, s, replacement, wd, theta, mu=0.0):
    """Dense Kronecker solve of the state map z <- M_B z + c_B, E over every batch."""
    h, g, theta = np.asarray(h), np.asarray(g), np.asarray(theta)
    n, d, _ = h.shape
    eye = np.eye(d)
    em, ec, emm, emc, ecc = 0, 0, 0, 0, 0
    bs = _batches(n, s, replacement)
    for bt in bs:
        kb = h[list(bt)].mean(0) + wd * eye
        ab = g[list(bt)].mean(0) + wd * theta
        if mu == 0:
            m = eye - lr * kb
            c = -lr * ab
        else:  # z = (delta, v): v' = mu v + K delta + a, delta' = delta - lr v'
            m = np.block([[eye - lr * kb, -lr * mu * eye], [kb, mu * eye]])
            c = np.concatenate([-lr * ab, ab])
        em, ec = em + m / len(bs), ec + c / len(bs)
        emm = emm + np.kron(m, m) / len(bs)
        emc, ecc = emc + np.einsum("ij,k->ijk", m, c) / len(bs), ecc + np.outer(c, c) / len(bs)
    k = em.shape[0]
    mean = np.linalg.solve(np.eye(k) - em, ec)
    # S2 = E[M S2 M^T] + E[M m c^T] + E[c m^T M^T] + E[c c^T]
    cross = np.einsum("ijk,j->ik", emc, mean)
    rhs = cross + cross.T + ecc
    s2 = np.linalg.solve(np.eye(k * k) - emm, rhs.reshape(-1)).reshape(k, k)
    cov = s2 - np.outer(mean, mean)
    rho = np.max(np.abs(np.linalg.eigvals(emm)))
    return theta + mean[:d], cov[:d, :d], rho


# ------------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling,s", [("with_replacement", 2), ("without_replacement", 3)])
@pytest.mark.parametrize("wd", [0.0, 0.2])
def test_matches_linreg_dataset_stationary(sampling, s, wd):
    x, y = _linreg()
    rep = sampling == "with_replacement"
    lr = 0.7 * float(st.linreg.dataset_max_lr(x, s, replacement=rep, weight_decay=wd))
    ref = st.linreg.dataset_stationary(x, y, lr, s, replacement=rep, weight_decay=wd)
    params = {"w": jnp.array([0.3, 0.1, -0.2])}  # not stationary: the exact affine mean is kept
    ex = (jnp.asarray(x), jnp.asarray(y))
    res = local.stationary(_lin_loss, params, ex, lr, s, sampling=sampling, weight_decay=wd)
    np.testing.assert_allclose(res.param_mean, ref.param_mean, atol=1e-12)
    np.testing.assert_allclose(res.param_cov, ref.param_cov, atol=1e-12 * np.abs(ref.param_cov).max())
    np.testing.assert_allclose(res.noise_cov, ref.noise_cov, atol=1e-11 * np.abs(ref.noise_cov).max())
    np.testing.assert_allclose(res.train_loss, ref.train_loss, rtol=1e-12)
    np.testing.assert_allclose(res.mean_params(params)["w"], ref.param_mean, atol=1e-12)
    bound = local.max_stable_lr(_lin_loss, params, ex, s, sampling=sampling, weight_decay=wd)
    np.testing.assert_allclose(bound, lr / 0.7, rtol=1e-10)


@pytest.mark.parametrize("sampling,s", [("with_replacement", 2), ("without_replacement", 2)])
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_matches_enumerated_kronecker(sampling, s, mu):
    h, b = _quad_problem()
    wd = 0.1
    theta = jnp.array([0.2, -0.1, 0.4])
    grads = np.einsum("nij,j->ni", np.asarray(h), np.asarray(theta)) + np.asarray(b)
    rep = sampling == "with_replacement"
    bound = local.max_stable_lr(_quad_loss, theta, (h, b), s, sampling=sampling, weight_decay=wd,
                                momentum=mu)
    lr = 0.6 * bound
    mean, cov, _ = _enumerated(h, grads, lr, s, rep, wd, theta, mu)
    res = local.stationary(_quad_loss, theta, (h, b), lr, s, sampling=sampling, weight_decay=wd,
                           momentum=mu)
    np.testing.assert_allclose(res.param_mean, mean, atol=1e-12)
    np.testing.assert_allclose(res.param_cov, cov, atol=1e-11 * np.abs(cov).max())
    # the bound: the spectral radius of E[M (x) M] crosses 1 there
    _, _, rho_below = _enumerated(h, grads, bound * (1 - 1e-6), s, rep, wd, theta, mu)
    _, _, rho_above = _enumerated(h, grads, bound * (1 + 1e-6), s, rep, wd, theta, mu)
    assert rho_below < 1.0 < rho_above


def test_lanczos_bound_matches_dense():
    """Past DENSE_BOUND_MAX_P curved directions max_stable_lr switches to matrix-free Lanczos; it
    must equal the dense eigen-solve of quadratic.mean_square_max_lr."""
    d = local.DENSE_BOUND_MAX_P + 4
    h, b = _quad_problem(n=5, d=d, seed=3)
    dense = float(st.quadratic.mean_square_max_lr(h, 2))
    lanczos = local.max_stable_lr(_quad_loss, jnp.zeros(d), (h, b), 2)
    np.testing.assert_allclose(lanczos, dense, rtol=1e-8)


def test_quadratic_approximation_is_additive_noise():
    x, y = _linreg()
    ex = (jnp.asarray(x), jnp.asarray(y))
    w = {"w": jnp.asarray(np.linalg.lstsq(x, y, rcond=None)[0])}
    qa = local.quadratic_approximation(_lin_loss, w, ex, 2, sampling="without_replacement")
    h_ref = x.T @ x / len(x)
    g = x * (x @ np.asarray(w["w"]) - y)[:, None]
    np.testing.assert_allclose(qa.hessian, h_ref, atol=1e-13)
    np.testing.assert_allclose(qa.noise_cov, st.noise.minibatch_covariance(g, 2, sampling="without_replacement"),
                               atol=1e-13)
    hess, c = qa  # unpacks as (H, C)
    lr = 0.5 * float(st.linreg.dataset_max_lr(x, 2))
    additive = st.quadratic.stationary_covariance(hess, local.quadratic_approximation(
        _lin_loss, w, ex, 2).noise_cov, lr)
    exact = local.stationary(_lin_loss, w, ex, lr, 2).param_cov
    # the additive picture drops the multiplicative noise: it underestimates the fluctuations
    assert float(jnp.trace(additive)) < 0.95 * float(jnp.trace(exact))


def test_jit_matches_eager():
    h, b = _quad_problem()
    theta = jnp.array([0.2, -0.1, 0.4])
    eager = local.stationary(_quad_loss, theta, (h, b), 0.3, 2, weight_decay=0.1)
    jitted = jax.jit(lambda lr: local.stationary(_quad_loss, theta, (h, b), lr, 2, weight_decay=0.1,
                                                 check_stable=False).param_cov)(0.3)
    np.testing.assert_allclose(jitted, eager.param_cov, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# flat directions, polish, errors
# ------------------------------------------------------------------------------------------------


def test_flat_directions_are_projected_and_reported():
    # N = 2 < D = 3, no weight decay: one direction orthogonal to every input does not move
    x, y = _linreg(n=2, d=3)
    ex = (jnp.asarray(x), jnp.asarray(y))
    lr = 0.5 * float(st.linreg.dataset_max_lr(x, 1))
    with pytest.warns(local.NotNearMinimumWarning, match="do not move"):
        res = local.stationary(_lin_loss, {"w": jnp.zeros(3)}, ex, lr, 1)
    ref = st.linreg.dataset_stationary(x, y, lr, 1)
    np.testing.assert_allclose(res.param_cov, ref.param_cov, atol=1e-12)
    assert int(res.flat.sum()) == 1 and float(res.flat_diffusion.max()) < 1e-25  # round-off

    # a flat direction WITH noise: l_i = h a^2/2 + z_i b, mean z = 0 -> b random-walks
    z = jnp.array([1.0, -1.0, 0.5, -0.5])

    def loss(p, zi):
        return 0.5 * 2.0 * p[0] ** 2 + zi * p[1]

    with pytest.warns(local.NotNearMinimumWarning, match="diffuses"):
        res = local.stationary(loss, jnp.zeros(2), z, 0.1, 1)
    i = int(np.argmax(np.asarray(res.flat)))
    np.testing.assert_allclose(res.flat_diffusion[i], 0.1**2 * float(jnp.mean(z**2)), rtol=1e-12)
    np.testing.assert_allclose(res.param_cov[1, 1], 0.0)


def _tanh_problem(seed=0, n=12):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(-2, 2, n))
    y = jnp.sin(x) + 0.1 * jnp.asarray(rng.normal(size=n))

    def loss(p, e):
        return 0.5 * (jnp.tanh(e[0] * p["w"] + p["b"]) @ p["v"] - e[1]) ** 2

    p = {"w": jnp.array([0.8, -0.5]), "b": jnp.array([0.1, 0.3]), "v": jnp.array([0.9, -0.4])}
    return loss, p, (x, y)


def test_polish_reaches_a_stationary_point():
    loss, p, ex = _tanh_problem()
    wd = 0.05
    opt = optax.adam(0.05)
    s = opt.init(p)

    def obj(q):
        return (jnp.mean(jax.vmap(loss, (None, 0))(q, ex))
                + 0.5 * wd * sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(q)))

    step = jax.jit(lambda q, s: (lambda g: (lambda u, s2: (optax.apply_updates(q, u), s2))(
        *opt.update(g, s)))(jax.grad(obj)(q)))
    for _ in range(500):
        p, s = step(p, s)
    q = local.polish(loss, p, ex, weight_decay=wd)
    g = jax.flatten_util.ravel_pytree(jax.grad(obj)(q))[0]
    assert float(jnp.max(jnp.abs(g))) < 1e-12
    res = local.stationary(loss, q, ex, 0.1, 2, weight_decay=wd)
    np.testing.assert_allclose(res.param_mean, jax.flatten_util.ravel_pytree(q)[0], atol=1e-10)


def test_errors():
    h, b = _quad_problem()
    theta = jnp.zeros(3)
    ex = (h, b)
    with pytest.raises(ValueError, match="batch_size"):
        local.stationary(_quad_loss, theta, ex, 0.1, 5, sampling="without_replacement")
    with pytest.raises(ValueError, match="shuffle"):
        local.stationary(_quad_loss, theta, ex, 0.1, 2, sampling="shuffle")
    bound = local.max_stable_lr(_quad_loss, theta, ex, 2)
    with pytest.raises(ValueError, match="local.max_stable_lr"):
        local.stationary(_quad_loss, theta, ex, 1.01 * bound, 2)
    with pytest.raises(ValueError, match="lr must be > 0"):
        local.stationary(_quad_loss, theta, ex, -0.1, 2)
    with pytest.raises(ValueError, match="lr must be a scalar"):
        local.stationary(_quad_loss, theta, ex, jnp.ones(2), 2)
    with pytest.raises(ValueError, match="momentum"):
        local.stationary(_quad_loss, theta, ex, 0.1, 2, momentum=1.0)
    with pytest.raises(ValueError, match="same leading axis"):
        local.stationary(_quad_loss, theta, (h, b[:3]), 0.1, 2)
    with pytest.raises(ValueError, match="scalar"):
        local.stationary(lambda w, e: w * e[1], theta, ex, 0.1, 2)
    with pytest.raises(ValueError, match="no arrays"):
        local.stationary(_quad_loss, {}, ex, 0.1, 2)
    with pytest.raises(ValueError, match="expansion does not match"):
        local.stationary(_quad_loss, theta, ex, 0.1, 2,
                         expansion=local.expand(_quad_loss, jnp.zeros(2), (h[:, :2, :2], b[:, :2])))
    # a saddle: negative mean curvature
    with pytest.raises(ValueError, match="not near a minimum"):
        local.stationary(_quad_loss, theta, (-h, b), 0.1, 2)
    with pytest.raises(ValueError, match="not near a minimum"):
        local.max_stable_lr(_quad_loss, theta, (-h, b), 2)
    with pytest.raises(ValueError, match="not near a minimum"):
        local.polish(_quad_loss, theta, (-h, b))
    with pytest.raises(ValueError, match="no convergence"):
        local.polish(lambda w, e: jnp.sum(jnp.cosh(w * e)), jnp.ones(2) * 30.0, jnp.ones((3, 2)),
                     max_steps=2)


def test_large_gradient_warns():
    loss, p, ex = _tanh_problem()
    # far from any minimum: the quadratic expansion's mean is not where the gradient vanishes
    with pytest.warns(local.NotNearMinimumWarning, match="third-order"):
        local.stationary(loss, p, ex, 0.05, 2, weight_decay=1.0)


# ------------------------------------------------------------------------------------------------
# simulation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling,mu", [("with_replacement", 0.0), ("without_replacement", 0.0),
                                         ("with_replacement", 0.5)])
def test_agrees_with_minibatch_sgd(sampling, mu):
    h, b = _quad_problem()
    wd = 0.1
    theta = jnp.array([0.2, -0.1, 0.4])
    s = 2
    bound = local.max_stable_lr(_quad_loss, theta, (h, b), s, sampling=sampling, weight_decay=wd,
                                momentum=mu)
    lr = 0.5 * bound
    th = local.stationary(_quad_loss, theta, (h, b), lr, s, sampling=sampling, weight_decay=wd,
                          momentum=mu)
    opt = optax.chain(optax.add_decayed_weights(jnp.asarray(wd)),
                      optax.sgd(jnp.asarray(lr), momentum=jnp.asarray(mu) if mu else None))
    sim = simulate.minibatch_sgd(jax.random.key(3), _quad_loss, th.param_mean,
                                 simulate.Dataset((h, b), s, sampling), opt, steps=3000,
                                 replicas=512, burn_in=500)
    zc = (np.asarray(sim.cov) - np.asarray(th.param_cov)) / np.asarray(sim.cov_stderr)
    zm = (np.asarray(sim.mean) - np.asarray(th.param_mean)) / np.asarray(sim.mean_stderr)
    # alpha = 1e-4 per comparison, Bonferroni over the 6 distinct covariance entries + 3 means
    zmax = z_threshold(sim.groups, 9)
    assert np.max(np.abs(zc[np.triu_indices(3)])) < zmax
    assert np.max(np.abs(zm)) < zmax


def test_low_rank_route_is_the_dense_equation_to_round_off():
    """P = 48 params, rank-2 per-example Hessians: local.stationary takes the factored route
    (H_i = Q_i B_i Q_i^T, ~4NP^2r flops per operator application instead of 2NP^3) and must give
    the dense enumerated Kronecker solve to round-off; full-rank Hessians keep the dense route."""
    from sgdtheory.local import _low_rank_factors

    rng = np.random.default_rng(7)
    n, d, wd = 12, 48, 0.3
    v = rng.normal(size=(n, d, 2)) / np.sqrt(d)
    h = jnp.asarray(np.einsum("nik,njk->nij", v, v))
    b = jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d))
    theta = jnp.zeros(d)
    q, _ = _low_rank_factors(h)
    assert q.shape == (n, d, 2)
    assert _low_rank_factors(_quad_problem(n=4, d=48)[0]) is None   # full rank: dense route
    lr = 0.5 * float(local.max_stable_lr(_quad_loss, theta, (h, b), 1, weight_decay=wd))
    res = local.stationary(_quad_loss, theta, (h, b), lr, 1, weight_decay=wd)
    mean, cov, _ = _enumerated(h, np.asarray(b), lr, 1, True, wd, theta)
    np.testing.assert_allclose(res.param_mean, mean, atol=1e-12)
    np.testing.assert_allclose(res.param_cov, cov, atol=1e-11 * np.abs(cov).max())
