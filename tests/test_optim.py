"""sgdtheory.optim: the linearisation of optax optimizers against the hand-written blocks of
sgdtheory.quadratic, an independent SciPy Lyapunov solve, and the numerical non-linearity checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as hst

from sgdtheory import optim
from sgdtheory import quadratic as q

LR = 0.13
HS = jnp.array([0.05, 0.7, 2.0, 9.0])


def _blocks(lin, lr=None):
    return jax.vmap(lambda h: lin.matrices(h[None, None], lr))(HS)


HAND = [
    ("sgd", optax.sgd(LR), q.sgd()),
    ("heavy_ball", optax.sgd(LR, momentum=0.9), q.heavy_ball(0.9)),
    ("nesterov", optax.sgd(LR, momentum=0.7, nesterov=True), q.nesterov(0.7)),
    ("pnm", optim.pnm(LR, 1.0, 0.9), q.pnm(1.0, 0.9)),
    ("pnm-b0.5", optim.pnm(LR, 0.5, 0.6), q.pnm(0.5, 0.6)),
]


@pytest.mark.parametrize("name,opt,hand", HAND, ids=[c[0] for c in HAND])
def test_blocks_reproduce_hand_written(name, opt, hand):
    lin = optim.linearize(opt)
    assert lin.elementwise and lin.lr_mode == "carried" and lin.state_size == hand.state_size
    (m, b), (mh, bh) = _blocks(lin), _blocks(hand, LR)
    np.testing.assert_allclose(m, mh, rtol=0, atol=1e-13)
    np.testing.assert_allclose(b, bh, rtol=0, atol=1e-13)
    # the dense (D x D) form too
    h = jnp.array([[2.0, 0.3], [0.3, 0.5]])
    for x, y in zip(lin.matrices(h, None), hand.matrices(h, LR)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-13)


def test_factory_and_inject_hyperparams_vary_the_learning_rate():
    fac = optim.linearize(lambda lr: optax.sgd(lr, momentum=0.9))
    inj = optim.linearize(optax.inject_hyperparams(optax.sgd)(learning_rate=0.5, momentum=0.9))
    assert fac.lr_mode == "argument" and inj.lr_mode == "injected"
    for lr in (0.01, 0.3):
        for lin in (fac, inj):
            np.testing.assert_allclose(_blocks(lin, lr)[0], _blocks(q.heavy_ball(0.9), lr)[0],
                                       rtol=0, atol=1e-13)
    np.testing.assert_allclose(_blocks(inj)[0], _blocks(q.heavy_ball(0.9), 0.5)[0], atol=1e-13)
    assert fac.hyper == {"kind": "heavy_ball", "momentum": 0.9, "weight_decay": 0.0}


def test_chain_with_decayed_weights_is_sgd_on_h_plus_gamma():
    lin = optim.linearize(optax.chain(optax.add_decayed_weights(0.25), optax.sgd(LR, momentum=0.5)))
    m, b = _blocks(lin)
    mh, bh = jax.vmap(lambda h: q.heavy_ball(0.5).matrices((h + 0.25)[None, None], LR))(HS)
    np.testing.assert_allclose(m, mh, atol=1e-13)
    np.testing.assert_allclose(b, bh, atol=1e-13)
    assert lin.hyper["kind"] == "heavy_ball" and abs(lin.hyper["weight_decay"] - 0.25) < 1e-15


def test_precondition_is_detected_as_not_elementwise():
    p = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.5]])
    lin = optim.linearize(optax.chain(optim.precondition(p), optax.sgd(LR, momentum=0.5)), dim=3)
    assert not lin.elementwise
    # a multiple of the identity IS element-wise
    assert optim.linearize(optax.chain(optim.precondition(2.0 * np.eye(3)), optax.sgd(LR)), dim=3).elementwise
    # an optimizer that only works for D = 5 parameters needs dim
    with pytest.raises(ValueError, match="dim="):
        optim.linearize(optim.precondition(np.eye(5) + 0.1))


NONLINEAR = [
    ("adam", optax.adam(0.1)),
    ("rmsprop", optax.rmsprop(0.1)),
    ("sign_sgd", optax.sign_sgd(0.1)),
    ("sign-chain", optax.chain(optax.scale_by_sign(), optax.sgd(0.1))),
    ("clip_by_global_norm", optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, 0.9))),
    ("clip-large", optax.chain(optax.clip_by_global_norm(1e3), optax.sgd(0.1))),
]


@pytest.mark.parametrize("name,opt", NONLINEAR, ids=[c[0] for c in NONLINEAR])
def test_nonlinear_optimizers_raise(name, opt):
    with pytest.raises(ValueError, match=r"not linear in \(params, state, gradient\).*minibatch_sgd"):
        optim.linearize(opt)
    with pytest.raises(ValueError, match="not linear"):
        q.stationary_covariance(np.eye(2), np.eye(2), optimizer=opt)


def test_schedules_raise():
    with pytest.raises(ValueError, match="time-invariant"):
        optim.linearize(optax.sgd(optax.exponential_decay(0.1, 10, 0.5)))
    sched = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.1, 0.0, 100))
    with pytest.raises(ValueError, match="time-invariant"):
        optim.linearize(sched)


def test_bad_optimizer_types_raise():
    with pytest.raises(ValueError, match="GradientTransformation"):
        optim.linearize("sgd")
    with pytest.raises(ValueError, match="factory"):
        optim.linearize(lambda lr: lr)


def test_optax_chain_against_scipy_lyapunov():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    h = a @ a.T / 4 + 0.2 * np.eye(4)
    c = np.cov(rng.normal(size=(4, 50)))
    opt = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.2, momentum=0.6, nesterov=True))
    sig = q.stationary_covariance(h, c, optimizer=opt)
    # independent route: the dense M, B written by hand for Nesterov on H + 0.1 I, solved by SciPy
    hg, lr, mu, eye = h + 0.1 * np.eye(4), 0.2, 0.6, np.eye(4)
    m = np.block([[eye - lr * (1 + mu) * hg, -lr * mu**2 * eye], [hg, mu * eye]])
    b = np.vstack([-lr * (1 + mu) * eye, eye])
    ref = sl.solve_discrete_lyapunov(m, b @ c @ b.T)[:4, :4]
    np.testing.assert_allclose(sig, ref, rtol=1e-10, atol=1e-13)


def test_precondition_chain_against_scipy_lyapunov():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 3))
    h = a @ a.T / 3 + 0.2 * np.eye(3)
    c = np.eye(3) + 0.3
    p = np.array([[1.5, 0.4, 0.1], [0.4, 1.0, 0.0], [0.1, 0.0, 0.7]])
    opt = optax.chain(optim.precondition(p), optax.sgd(0.2, momentum=0.5))
    sig = q.stationary_covariance(h, c, optimizer=opt)
    eye = np.eye(3)
    m = np.block([[eye - 0.2 * p @ h, -0.2 * 0.5 * eye], [p @ h, 0.5 * eye]])
    b = np.vstack([-0.2 * p, p])
    ref = sl.solve_discrete_lyapunov(m, b @ c @ b.T)[:3, :3]
    np.testing.assert_allclose(sig, ref, rtol=1e-10, atol=1e-13)


def test_linearize_under_jit_and_vmap_over_the_learning_rate():
    h, c = np.diag([1.0, 0.3]), np.eye(2)
    lrs = jnp.array([0.1, 0.5, 50.0])
    f = jax.jit(jax.vmap(lambda lr: q.stationary_covariance(h, c, optimizer=optax.sgd(lr, 0.9))))
    ref = jax.vmap(lambda lr: q.stationary_covariance(h, c, lr, momentum=0.9))(lrs[:2])
    out = f(lrs)
    np.testing.assert_allclose(out[:2], ref, rtol=1e-13)
    assert np.all(np.isnan(out[2]))  # unstable under jit -> NaN, as for the keyword form
    # a traced non-linear optimizer cannot raise under vmap: every result is NaN
    g = jax.vmap(lambda lr: q.stationary_covariance(h, c, optimizer=optax.adam(lr)))
    assert np.all(np.isnan(g(jnp.array([0.01, 0.02]))))


@settings(deadline=None, max_examples=15)
@given(lr=hst.floats(0.01, 1.0), mu=hst.one_of(hst.just(0.0), hst.floats(1e-6, 0.95)),
       gamma=hst.one_of(hst.just(0.0), hst.floats(1e-6, 0.5)))  # no subnormals: XLA flushes them
def test_property_read_off_matches_construction(lr, mu, gamma):
    lin = optim.linearize(optax.chain(optax.add_decayed_weights(gamma), optax.sgd(lr, momentum=mu)))
    kind = lin.hyper["kind"]
    assert kind == "heavy_ball"
    assert abs(lin.hyper["lr"] - lr) <= 1e-15 * lr and lin.hyper["momentum"] == mu
    assert abs(lin.hyper["weight_decay"] - gamma) <= 1e-12 * max(1.0, gamma)
