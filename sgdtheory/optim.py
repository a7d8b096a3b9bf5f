r"""One optimizer vocabulary: the optax transforms we add, and the linearisation that turns any
*linear* optax optimizer into the exact dynamics used by the theory.

Theory and simulation take the same optimizer objects.  A simulator calls ``optimizer.update``;
a theory function (:mod:`sgdtheory.quadratic`, :mod:`sgdtheory.linreg`) calls :func:`linearize`,
which reads off the optimizer's linear dynamics on a quadratic from ONE ``update`` call.

**The linearisation.**  On :math:`L(w) = \tfrac12 (w - w_\infty)^\top h (w - w_\infty)` with additive
noise, measure :math:`w` from the minimum and stack it with the optimizer's float state leaves
that are shaped like the parameters (momentum buffers):
:math:`x = (w, s_1, \dots, s_{k-1})`.  One step is

.. math:: g = h w + \xi,\qquad (u, s') = \texttt{update}(g, s, w),\qquad w' = w + u .

If ``update`` is linear in :math:`(w, s, g)` this is :math:`x' = A x + G g` with constant
:math:`A` (``kD x kD``) and :math:`G` (``kD x D``), hence

.. math:: x' = M(h)\,x + B\,\xi,\qquad M(h) = A + G\,h\,E_0^\top,\quad B = G ,

(:math:`E_0` selects the ``w`` block) -- exactly the :class:`LinearOptimizer` form, so every solver
of :mod:`sgdtheory.quadratic` applies unchanged.  :math:`A` and :math:`G` come from
``jax.jacfwd`` of the step map at the origin.  Everything else in the state is held fixed: integer
leaves (step counts) and leaves not shaped like the parameters (e.g. the ``hyperparams`` of
``optax.inject_hyperparams``).

Three numerical checks, never a check by name, run once when the values are concrete:

* **linearity**: superposition :math:`F(a x + b y) = aF(x) + bF(y)` (which includes homogeneity
  and :math:`F(0) = 0`) at random points of scale :math:`10^{-6}\dots 10^{6}`, to a relative
  tolerance :math:`\sqrt{\epsilon}`.  Adam, RMSProp, sign-SGD and gradient clipping fail it and
  raise ``ValueError`` -- no exact Lyapunov theory applies to them; simulate them instead.
* **time invariance**: the Jacobians with the integer leaves set to 0, 1, 10, 10^3, 10^6 agree
  (a learning-rate schedule fails and raises ``ValueError``);
* **element-wise**: every ``D x D`` block of :math:`A, G` is a multiple of the identity, i.e. the
  optimizer acts as :math:`(k\times k)\otimes I_D` (``optax.sgd``, momentum, Nesterov,
  ``add_decayed_weights``, :func:`pnm`).  Then :math:`M(h)` is a ``k x k`` block per eigenvalue
  of :math:`h`, obtained from the Jacobian of a one-dimensional problem, and the eigenbasis routes
  apply.  Otherwise (e.g. :func:`precondition` with a non-scalar matrix) the optimizer is
  linearised on the full ``D``-dimensional problem and the theory uses the dense route on the
  ``kD x kD`` matrix.

Under ``jit``/``vmap`` with *traced* hyperparameters (e.g. ``vmap`` over the ``lr`` of
``optax.sgd(lr)``) the checks cannot raise: the optimizer is then treated as element-wise and a
failed check turns the transition matrix into NaN, so every result is NaN (house rule: never a
silent wrong number).  Linearise outside the transformation, or pass a factory
``lambda lr: optax.sgd(lr, 0.9)`` whose structure is checked once at a concrete learning rate.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdtheory import _checks

__all__ = ["LinearOptimizer", "precondition", "PNMState", "pnm", "linearize"]


class LinearOptimizer(NamedTuple):
    """An optimizer whose one step on a quadratic is linear in its state.

    Attributes:
      name: short name, used in messages.
      state_size: ``k``, the number of ``D``-vectors in the state; the first is ``w - w_inf``.
      matrices: ``matrices(h, lr) -> (M, B)`` for a symmetric curvature matrix ``h`` of shape
        ``(n, n)``: ``M`` is ``(k n, k n)`` and ``B`` is ``(k n, n)``, so that one step is
        ``x <- M x + B xi`` with ``xi`` the gradient noise.  Must be built from ``h`` with jnp
        operations only (it is vmapped over eigenvalues and differentiated).
      lr_bound: optional ``lr_bound(h_max) -> lr*``: the closed-form largest stable learning rate
        for a spectrum in ``(0, h_max]``; ``None`` means "find it numerically".
      bound_expr: how the bound reads in error messages, e.g. ``"2(1+mu)/h_max"``.
      hyper: the hyperparameters, for display.
      elementwise: ``True`` when ``M, B`` act as ``(k x k) ⊗ I`` (the same ``k x k`` block for
        every coordinate), so the eigenbasis routes apply; ``False`` sends every solver to the
        dense ``kD x kD`` route (``matrices`` then needs the full ``(D, D)`` curvature).
      lr_mode: ``"argument"``: ``matrices`` takes the learning rate (hand-written optimizers,
        factories ``lambda lr: optax...``); ``"carried"``: the optimizer carries its own learning
        rate (an optax object), ``lr`` is ``None``; ``"injected"``: carried, but ``matrices(h, lr)``
        with a number overrides the ``learning_rate`` hyperparameter of ``optax.inject_hyperparams``.
    """

    name: str
    state_size: int
    matrices: Callable[[jax.Array, Any], tuple[jax.Array, jax.Array]]
    lr_bound: Callable[[Any], Any] | None = None
    bound_expr: str = "the stability bound"
    hyper: dict = {}
    elementwise: bool = True
    lr_mode: str = "argument"


# ----------------------------------------------------------------------------------------------
# optax transforms of the project
# ----------------------------------------------------------------------------------------------


def precondition(matrix) -> optax.GradientTransformation:
    r"""Multiply every gradient by a fixed symmetric matrix :math:`P`: :math:`g \mapsto P g`.

    Chained before ``optax.sgd(lr, momentum)`` this gives :math:`m \leftarrow \mu m + P\hat g`,
    :math:`w \leftarrow w - \lambda m`, identical to :math:`w \leftarrow w - \lambda P m` because
    :math:`P` is constant.  Works on a single parameter vector (the simulators vmap replicas).
    Not element-wise (unless :math:`P \propto I`): the theory linearises it on the full problem.
    """
    p = jnp.asarray(matrix)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g: p.astype(g.dtype) @ g, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


class PNMState(NamedTuple):
    """Buffers of positive-negative momentum: the last two momenta ``m_{t-1}, m_{t-2}``."""

    m1: optax.Updates
    m2: optax.Updates


def pnm(learning_rate, beta0: float = 1.0, beta1: float = 0.9) -> optax.GradientTransformation:
    r"""SGD with positive-negative momentum (Xie, Yuan, Zhu & Sugiyama, ICML 2021).

    .. math::
        m_t = \beta_1^2 m_{t-2} + (1-\beta_1^2) g_t,\qquad
        w \leftarrow w - \frac{\lambda}{\sqrt{(1+\beta_0)^2+\beta_0^2}}\,[(1+\beta_0)m_t - \beta_0 m_{t-1}]

    (the paper's odd/even buffers, written as the last two momenta).  Buffers start at zero.
    Its linearisation (:func:`linearize`) equals :func:`sgdtheory.quadratic.pnm`.
    """
    norm = jnp.sqrt((1.0 + beta0) ** 2 + beta0**2)

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return PNMState(m1=zeros, m2=zeros)

    def update_fn(updates, state, params=None):
        del params
        m_new = jax.tree_util.tree_map(lambda g, m2: beta1**2 * m2 + (1 - beta1**2) * g, updates, state.m2)
        step = jax.tree_util.tree_map(
            lambda m, m1: -learning_rate * ((1 + beta0) * m - beta0 * m1) / norm, m_new, state.m1
        )
        return step, PNMState(m1=m_new, m2=state.m1)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# linearisation
# ----------------------------------------------------------------------------------------------

_COUNTS = (1, 10, 1000, 10**6)  # integer leaves are set to these to test time invariance
_SCALES = (1e-6, 1e-2, 1e2, 1e6)  # scales of the random points of the superposition test
_PROBE_LR = 0.01  # learning rate at which a factory's structure is checked
_PROBE_DIM = 3  # dimension of the probe problem (element-wise optimizers)
_MAX_FULL_PROBE = 16  # up to this D the checks run on the D-dimensional problem itself

_NONLINEAR_HELP = (
    "so no exact Lyapunov theory applies. Simulate it instead: pass it as optimizer= to "
    "sgdtheory.simulate.quadratic_sgd (quadratic loss with additive noise) or "
    "sgdtheory.simulate.minibatch_sgd (any model); the theory accepts linear optimizers (SGD, "
    "heavy-ball or Nesterov momentum, add_decayed_weights, precondition, pnm, chains of them)."
)


def _tol(dtype) -> float:
    return float(np.sqrt(np.finfo(dtype).eps))


def _is_injected(node) -> bool:
    """An ``optax.inject_hyperparams`` state node holding a ``learning_rate`` hyperparameter."""
    hp = getattr(node, "hyperparams", None)
    return isinstance(hp, dict) and "learning_rate" in hp and hasattr(node, "_replace")


def _find_injected(state):
    """The ``inject_hyperparams`` state nodes of ``state`` that hold a ``learning_rate``."""
    nodes = []

    def visit(node):
        if _is_injected(node):
            nodes.append(node)
        return node

    jax.tree_util.tree_map(visit, state, is_leaf=_is_injected)
    return nodes


def _set_injected_lr(state, lr):
    def replace(node):
        if _is_injected(node):
            hp = dict(node.hyperparams)
            hp["learning_rate"] = jnp.asarray(lr, dtype=jnp.result_type(hp["learning_rate"]))
            return node._replace(hyperparams=hp)
        return node

    return jax.tree_util.tree_map(replace, state, is_leaf=_is_injected)


class _Template(NamedTuple):
    leaves: list  # the initial state's leaves (held fixed unless dynamic)
    treedef: Any
    dyn: tuple  # indices of the dynamic leaves (float, shaped like the parameters)
    ints: tuple  # indices of the integer leaves


def _template(opt, n, dtype, lr=None, dyn=None) -> _Template:
    """The initial state of ``opt`` for ``n`` parameters (``lr`` overrides an injected lr)."""
    state = opt.init(jnp.zeros((n,), dtype))
    if lr is not None:
        state = _set_injected_lr(state, lr)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    ints = tuple(i for i, leaf in enumerate(leaves)
                 if jnp.issubdtype(jnp.result_type(leaf), jnp.integer))
    shaped = tuple(i for i, leaf in enumerate(leaves)
                   if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and jnp.shape(leaf) == (n,))
    if dyn is None:
        dyn = shaped
    elif any(jnp.shape(leaves[i]) != (n,) for i in dyn):
        raise ValueError(
            "the optimizer's state has a different structure for a different number of parameters; "
            "the linearisation needs float state leaves shaped like the parameters.")
    return _Template(leaves, treedef, dyn, ints)


def _step_map(opt, tpl: _Template, ints=None, increment: bool = False):
    """``(x, g) -> x'`` with ``x = (w, dynamic state leaves)`` of shape ``(k, n)``.

    ``increment=True`` returns ``(w' - w, s')`` instead (what the superposition test measures, so
    that the identity part of ``w' = w + u`` does not dilute a nonlinearity of ``u``)."""
    leaves = list(tpl.leaves)
    if ints is not None:
        for i in tpl.ints:
            leaves[i] = jnp.asarray(ints, dtype=jnp.result_type(tpl.leaves[i]))

    def step(x, g):
        w = x[0]
        new = list(leaves)
        for j, i in enumerate(tpl.dyn):
            new[i] = x[j + 1].astype(jnp.result_type(leaves[i]))
        upd, state = opt.update(g, jax.tree_util.tree_unflatten(tpl.treedef, new), w)
        out, treedef = jax.tree_util.tree_flatten(state)
        if treedef != tpl.treedef:
            raise ValueError("the optimizer's update returned a state of a different structure "
                             "than its init; it cannot be linearised.")
        first = upd if increment else w + upd
        return jnp.stack([first] + [out[i].astype(x.dtype) for i in tpl.dyn])

    return step


def _jacobians(step, k, n, dtype):
    """``A`` ``(k, n, k, n)`` and ``G`` ``(k, n, n)`` of the step map at the origin."""
    return jax.jacfwd(step, argnums=(0, 1))(jnp.zeros((k, n), dtype), jnp.zeros((n,), dtype))


def _rel(num, den):
    return num / jnp.maximum(den, jnp.finfo(jnp.result_type(den)).tiny)


def _superposition_residual(step, k, n, dtype):
    """max over random point pairs of |F(a x + b y) - a F(x) - b F(y)| / scale (0 if linear)."""
    rng = np.random.default_rng(20240601)
    a, b = 0.7, -1.9
    xs, ys = [], []
    for s in _SCALES:
        xs.append(s * rng.standard_normal((k + 1, n)))
        ys.append(s * rng.standard_normal((k + 1, n)))
    xs, ys = jnp.asarray(np.stack(xs), dtype), jnp.asarray(np.stack(ys), dtype)
    zs = a * xs + b * ys
    pts = jnp.concatenate([xs, ys, zs, jnp.zeros((1, k + 1, n), dtype)])
    out = jax.vmap(lambda p: step(p[:k], p[k]))(pts)
    m = len(_SCALES)
    fx, fy, fz, f0 = out[:m], out[m:2 * m], out[2 * m:3 * m], out[3 * m]
    norm = lambda v: jnp.sqrt(jnp.sum(v**2, axis=(-2, -1)))  # noqa: E731
    res = _rel(norm(fz - a * fx - b * fy), abs(a) * norm(fx) + abs(b) * norm(fy) + norm(fz))
    res0 = _rel(jnp.sqrt(jnp.sum(f0**2)), jnp.min(norm(fx)))  # F(0) = 0 relative to the smallest scale
    worst = jnp.maximum(jnp.max(res), res0)
    return jnp.where(jnp.isfinite(worst), worst, jnp.inf)


def _blocks_residual(ja, jg):
    """How far every ``n x n`` block is from a multiple of the identity (relative)."""
    k, n = ja.shape[0], ja.shape[1]
    blocks = jnp.concatenate([jnp.moveaxis(ja, 2, 1).reshape(k * k, n, n),
                              jg.reshape(k, n, n)])
    diag = jnp.trace(blocks, axis1=1, axis2=2) / n
    dev = blocks - diag[:, None, None] * jnp.eye(n, dtype=blocks.dtype)[None]
    return _rel(jnp.max(jnp.abs(dev)), jnp.max(jnp.abs(blocks)))


class _Analysis(NamedTuple):
    k: int
    dyn: tuple
    probe_dim: int
    elementwise: bool
    gate: Any  # None (checks passed eagerly) or a traced boolean


def _smoke(opt, n, dtype):
    state = opt.init(jnp.zeros((n,), dtype))
    opt.update(jnp.ones((n,), dtype), state, jnp.ones((n,), dtype))


def _analyse(opt, dim, dtype, what) -> _Analysis:
    """Check linearity, time invariance and element-wise structure of ``opt`` (module docstring)."""
    # ensure_compile_time_eval: inside an outer jit the checks still run eagerly on the optimizer's
    # concrete hyperparameters; only genuinely traced hyperparameters give traced residuals.
    with jax.ensure_compile_time_eval():
        return _analyse_eager(opt, dim, dtype, what)


def _analyse_eager(opt, dim, dtype, what) -> _Analysis:
    dims = [_PROBE_DIM] if dim is None else ([dim] if dim <= _MAX_FULL_PROBE else [_PROBE_DIM, dim])
    n, err = None, None
    for cand in dims:
        try:
            _smoke(opt, cand, dtype)
        except Exception as e:  # noqa: BLE001 - a shape error of the user's transform
            err = e
            continue
        n = cand
        break
    if n is None:
        hint = "" if dim is not None else " Pass dim=D (the number of parameters) to linearize."
        raise ValueError(
            f"could not apply {what} to a parameter vector of length {dims[-1]} "
            f"({type(err).__name__}: {err}).{hint}")
    tpl = _template(opt, n, dtype)
    k = 1 + len(tpl.dyn)
    step = _step_map(opt, tpl)
    lin = _superposition_residual(_step_map(opt, tpl, increment=True), k, n, dtype)
    ja, jg = _jacobians(step, k, n, dtype)
    ti = jnp.zeros((), dtype)
    if tpl.ints:
        scale = jnp.maximum(jnp.max(jnp.abs(ja)), jnp.max(jnp.abs(jg)))
        for c in _COUNTS:
            ja_c, jg_c = _jacobians(_step_map(opt, tpl, ints=c), k, n, dtype)
            diff = jnp.maximum(jnp.max(jnp.abs(ja_c - ja)), jnp.max(jnp.abs(jg_c - jg)))
            ti = jnp.maximum(ti, jnp.where(jnp.isfinite(diff), _rel(diff, scale), jnp.inf))
    iso = _blocks_residual(ja, jg)
    tol = _tol(dtype)
    if all(_checks.is_concrete(v) for v in (lin, ti, iso)):
        lin_v, ti_v, iso_v = float(lin), float(ti), float(iso)
        if not lin_v <= tol:
            raise ValueError(
                f"{what} is not linear in (params, state, gradient): superposition fails at random "
                f"points (relative residual {lin_v:.3g} > {tol:.1g}), " + _NONLINEAR_HELP)
        if not ti_v <= tol:
            raise ValueError(
                f"{what} is not time-invariant: its one-step dynamics change with the step count "
                f"(relative change {ti_v:.3g} between count 0 and later counts), e.g. a learning-rate "
                "schedule. The stationary theory needs constant hyperparameters: use a constant "
                "learning rate, or simulate the schedule with sgdtheory.simulate.quadratic_sgd.")
        return _Analysis(k, tpl.dyn, n, bool(iso_v <= tol), None)
    gate = (lin <= tol) & (ti <= tol) & (iso <= tol)
    return _Analysis(k, tpl.dyn, n, True, gate)


def _coefficients(opt, dyn, k, n, dtype, lr=None):
    """Scalar blocks of an element-wise optimizer, ``A`` ``(k, k)`` and ``G`` ``(k,)``: the
    ``[0, 0]`` entries of the Jacobian blocks of the ``n``-dimensional probe problem (the one whose
    blocks were checked to be multiples of the identity)."""
    tpl = _template(opt, n, dtype, lr=lr, dyn=dyn)
    ja, jg = _jacobians(_step_map(opt, tpl), k, n, dtype)
    return ja[:, 0, :, 0], jg[:, 0, 0]


def _full(opt, dyn, k, n, dtype, lr=None):
    """``A`` ``(kn, kn)`` and ``G`` ``(kn, n)`` of the ``n``-dimensional problem."""
    tpl = _template(opt, n, dtype, lr=lr, dyn=dyn)
    ja, jg = _jacobians(_step_map(opt, tpl), k, n, dtype)
    return ja.reshape(k * n, k * n), jg.reshape(k * n, n)


_KINDS_HELP = ("plain SGD (optax.sgd(lr)), heavy-ball or Nesterov momentum (optax.sgd(lr, momentum, "
               "nesterov)), each optionally after optax.add_decayed_weights(weight_decay)")


def _identify(a, g):
    """Read ``(kind, lr, momentum, weight_decay)`` off concrete scalar blocks, or ``None``.

    Templates (coupled decay :math:`\\gamma` added to the gradient first, buffer normalised so that
    it receives the gradient with weight 1): SGD ``w' = (1 - lr gamma) w - lr g``; heavy ball
    ``m' = gamma w + mu m + g, w' = w - lr m'``; Nesterov ``w' = w - lr (g_d + mu m')``.
    """
    a, g = np.asarray(a, float), np.asarray(g, float)
    close = lambda x, y: abs(x - y) <= 1e-12 * max(1.0, abs(x), abs(y))  # noqa: E731
    if g.shape == (1,):
        lam = -g[0]
        if not lam > 0:
            return None
        return ("sgd", float(lam), 0.0, float((1.0 - a[0, 0]) / lam))
    if g.shape == (2,) and g[1] != 0:
        s = g[1]
        a00, a01, a10, mu = a[0, 0], a[0, 1] * s, a[1, 0] / s, a[1, 1]
        gam = a10
        lam = -g[0]
        if lam > 0 and close(a00, 1 - lam * gam) and close(a01, -lam * mu):
            return ("heavy_ball", float(lam), float(mu), float(gam))
        lam = -g[0] / (1 + mu)
        if lam > 0 and close(a00, 1 - lam * (1 + mu) * gam) and close(a01, -lam * mu**2):
            return ("nesterov", float(lam), float(mu), float(gam))
    return None


def _closed_bound(kind, mu, gam):
    """Closed-form largest stable lr of an identified optimizer (coupled decay ``gam >= 0``)."""
    if kind == "sgd":
        return (lambda h_max: 2.0 / (h_max + gam)), "2/(h_max + weight_decay)"
    if kind == "heavy_ball":
        return ((lambda h_max: 2.0 * (1.0 + mu) / (h_max + gam)),
                "2(1+momentum)/(h_max + weight_decay)")
    return ((lambda h_max: 2.0 * (1.0 + mu) / ((1.0 + 2.0 * mu) * (h_max + gam))),
            "2(1+momentum)/((1+2 momentum)(h_max + weight_decay))")


def _describe(matrices, lr_mode, dtype):
    """``(hyper, lr_bound, bound_expr)`` of an element-wise linearised optimizer (concrete only)."""
    def blocks(lr):
        m0, b = matrices(jnp.zeros((1, 1), dtype), lr)
        return _checks.concrete_value(m0), _checks.concrete_value(b)

    with jax.ensure_compile_time_eval():
        if lr_mode == "carried":
            m0, b = blocks(None)
            if m0 is None or b is None:
                return {}, None, "the numerical stability bound"
            ident = _identify(m0, b[:, 0])
            if ident is None:
                return {}, None, "the numerical stability bound"
            kind, lam, mu, gam = ident
            return ({"kind": kind, "lr": lam, "momentum": mu, "weight_decay": gam}, None,
                    "the numerical stability bound")
        idents = []
        for lr in (_PROBE_LR, 0.37):
            m0, b = blocks(lr)
            ident = None if m0 is None or b is None else _identify(m0, b[:, 0])
            if ident is None or abs(ident[1] - lr) > 1e-13 * lr:
                return {}, None, "the numerical stability bound"
            idents.append(ident)
    (k1, _, mu1, g1), (k2, _, mu2, g2) = idents
    if k1 != k2 or mu1 != mu2 or abs(g1 - g2) > 1e-12 * max(1.0, abs(g1)):
        return {}, None, "the numerical stability bound"
    hyper = {"kind": k1, "momentum": mu1, "weight_decay": g1}
    if lr_mode == "injected":
        with jax.ensure_compile_time_eval():
            m0, b = blocks(None)
        ident = None if m0 is None or b is None else _identify(m0, b[:, 0])
        if ident is not None:
            hyper["lr"] = ident[1]
    if g1 < 0:  # h + gamma may be negative for small h: only the numerical bound is safe
        return hyper, None, "the numerical stability bound"
    bound, expr = _closed_bound(k1, mu1, g1)
    return hyper, bound, expr


def linearize(optimizer, *, dim: int | None = None) -> LinearOptimizer:
    r"""The exact linear dynamics :math:`x \leftarrow M(h)x + B\xi` of an optax optimizer.

    Reads off :math:`M(h) = A + G h E_0^\top`, :math:`B = G` from the Jacobian of ONE
    ``optimizer.update`` call on a quadratic of curvature :math:`h` (module docstring), after
    checking numerically that the update is linear in (params, state, gradient), time-invariant
    and whether it is element-wise.

    Args:
      optimizer: one of

        * an ``optax.GradientTransformation`` that carries its learning rate, e.g.
          ``optax.sgd(0.1, momentum=0.9, nesterov=True)`` or
          ``optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, 0.9))``
          (``lr_mode="carried"``; an ``optax.inject_hyperparams`` optimizer with a
          ``learning_rate`` hyperparameter gives ``lr_mode="injected"``, whose ``matrices(h, lr)``
          can vary it);
        * a factory ``lambda lr: optax.sgd(lr, momentum=0.9)`` (``lr_mode="argument"``: the
          learning rate is a free variable, as for the hand-written optimizers; the checks run at
          ``lr = 0.01``);
        * a :class:`LinearOptimizer`, returned unchanged.
      dim: the number of parameters ``D`` of the problem, if known.  The checks run on a
        ``D``-dimensional probe when ``D <= 16`` and on a 3-dimensional one otherwise (falling back
        to ``D`` when the optimizer only works for ``D`` parameters, e.g. ``precondition(P)``).
        Needed for an optimizer that only accepts ``D`` parameters.

    Returns:
      A :class:`LinearOptimizer`; ``elementwise`` says which solver route applies.

    Raises:
      ValueError: the update is not linear (Adam, RMSProp, sign-SGD, clipping, ...), not
        time-invariant (schedules), or cannot be applied to a parameter vector.

    Example:
      >>> import optax, numpy as np, jax.numpy as jnp
      >>> lin = linearize(optax.sgd(0.1, momentum=0.9))
      >>> m, b = lin.matrices(jnp.array([[2.0]]), None)   # [[1 - lr h, -lr mu], [h, mu]]
      >>> np.round(np.asarray(m), 6).tolist(), np.round(np.asarray(b), 6).tolist()
      ([[0.8, -0.09], [2.0, 0.9]], [[-0.1], [1.0]])
    """
    if isinstance(optimizer, LinearOptimizer):
        return optimizer
    dtype = jnp.result_type(float)
    if isinstance(optimizer, optax.GradientTransformation):
        factory = None
        base = optimizer
        injected = _find_injected(base.init(jnp.zeros((1,), dtype)))
        lr_mode = "injected" if len(injected) == 1 else "carried"
        what = "the optimizer"
    elif callable(optimizer):
        factory = optimizer
        base = factory(_PROBE_LR)
        if not isinstance(base, optax.GradientTransformation):
            raise ValueError(
                "optimizer must be an optax.GradientTransformation, a factory lr -> "
                f"optax.GradientTransformation, or a LinearOptimizer; the callable returned "
                f"{type(base).__name__}.")
        lr_mode = "argument"
        what = "the optimizer returned by the factory"
    else:
        raise ValueError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1, momentum=0.9)), "
            "a factory lambda lr: optax.sgd(lr, ...), or a sgdtheory LinearOptimizer; got "
            f"{type(optimizer).__name__}.")
    if dim is not None and (not isinstance(dim, (int, np.integer)) or dim < 1):
        raise ValueError(f"dim must be a positive integer; got {dim!r}.")
    info = _analyse(base, dim, dtype, what)
    k, dyn, gate = info.k, info.dyn, info.gate

    def resolve(lr):
        if lr_mode == "argument":
            if lr is None:
                raise ValueError("this optimizer is a factory lr -> optax optimizer: pass lr.")
            return factory(lr), None
        if lr_mode == "injected":
            return base, lr
        return base, None

    def gated(m):
        return m if gate is None else jnp.where(gate, m, jnp.nan)

    if info.elementwise:
        def matrices(h, lr=None):
            opt, inj = resolve(lr)
            a, g = _coefficients(opt, dyn, k, info.probe_dim, h.dtype, inj)
            n = h.shape[0]
            eye = jnp.eye(n, dtype=h.dtype)
            e0 = jnp.zeros((k,), h.dtype).at[0].set(1.0)
            m = jnp.kron(a, eye) + jnp.kron(jnp.outer(g, e0), h)
            return gated(m), jnp.kron(g[:, None], eye)
    else:
        def matrices(h, lr=None):
            opt, inj = resolve(lr)
            n = h.shape[0]
            a, g = _full(opt, dyn, k, n, h.dtype, inj)
            m = a.at[:, :n].add(g @ h)
            return gated(m), g

    hyper, lr_bound, bound_expr = {}, None, "the numerical stability bound"
    if info.elementwise and gate is None:
        hyper, lr_bound, bound_expr = _describe(matrices, lr_mode, dtype)
    return LinearOptimizer(
        name="optax" if factory is None else "optax factory", state_size=k, matrices=matrices,
        lr_bound=lr_bound, bound_expr=bound_expr, hyper=hyper,
        elementwise=info.elementwise, lr_mode=lr_mode)


# ----------------------------------------------------------------------------------------------
# LaProp (Ziyin, Wang & Ueda 2020)
# ----------------------------------------------------------------------------------------------


class LaPropState(NamedTuple):
    """State of :func:`laprop`: the step count, the momentum of the *normalised* gradients and the
    EMA of the squared gradients."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def laprop(learning_rate, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-15) -> optax.GradientTransformation:
    r"""LaProp: normalise the gradient first, then apply momentum (Ziyin, Wang & Ueda 2020).

    .. math::
        \nu_t = \beta_2\nu_{t-1} + (1-\beta_2) g_t^2,\qquad
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\,\frac{g_t}{\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon},
        \qquad w_t = w_{t-1} - \lambda\,\frac{m_t}{1-\beta_1^t},

    element-wise, buffers starting at zero.  Adam applies momentum to the raw gradient and
    normalises the momentum, :math:`\hat m_t/(\sqrt{\hat\nu_t}+\epsilon)`; LaProp's momentum
    averages already-normalised gradients, so each update is bounded by
    :math:`\lambda/\sqrt{1-\beta_2}` for every :math:`\beta_1, \beta_2`, whereas Adam's is bounded
    only when :math:`\beta_1 < \sqrt{\beta_2}` (:func:`sgdtheory.adaptive.laprop_update_bound`,
    :func:`sgdtheory.adaptive.adam_update_bound`).

    The defaults (``b1=0.9, b2=0.999, eps=1e-15``) are those of the authors' reference
    implementation (github.com/Z-T-WANG/LaProp-Optimizer, ``laprop.py``), whose bias corrections
    are :math:`1-\beta_2^t` inside the square root and :math:`1-\beta_1^t` on the momentum for a
    constant learning rate.  (For a varying learning rate the reference code accumulates
    :math:`\lambda_t`-weighted steps; this transform takes a constant ``learning_rate``.)

    Args:
      learning_rate: constant :math:`\lambda > 0`.
      b1: momentum :math:`\beta_1 \in [0, 1)`.
      b2: second-moment decay :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon > 0`, added to the bias-corrected root mean square (0 is rejected:
        a coordinate whose gradients were all zero would get 0/0; use e.g. 1e-300 for "no eps").

    Returns:
      An ``optax.GradientTransformation`` (nonlinear in the gradient: :func:`linearize` rejects it;
      simulate it with :func:`sgdtheory.simulate.minibatch_sgd` or ``quadratic_sgd(optimizer=)``).

    Example:
      >>> import jax.numpy as jnp
      >>> opt = laprop(0.1)
      >>> state = opt.init(jnp.zeros(2))
      >>> u, state = opt.update(jnp.array([3.0, -0.5]), state)
      >>> u.round(6)          # the first step is -lr * sign(g)
      Array([-0.1,  0.1], dtype=float64)

    References:
      L. Ziyin, Z. T. Wang, M. Ueda, "LaProp: Separating Momentum and Adaptivity in Adam",
      arXiv:2002.04839 (2020), Algorithm 1.
    """
    _checks.check_positive("learning_rate", learning_rate)
    _checks.check_momentum(b1, "b1")
    _checks.check_momentum(b2, "b2")
    # eps = 0 would give 0/0 = NaN for a coordinate whose gradients so far were all zero
    _checks.check_positive("eps", eps)

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return LaPropState(count=jnp.zeros([], jnp.int32), mu=zeros,
                           nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_int32_increment(state.count)
        t = count.astype(jnp.result_type(float))
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)

        def momentum(m, g, v):
            c2 = (1 - b2**t).astype(v.dtype)
            return b1 * m + (1 - b1) * g / (jnp.sqrt(v / c2) + eps)

        mu = jax.tree_util.tree_map(momentum, state.mu, updates, nu)
        step = jax.tree_util.tree_map(
            lambda m: (-learning_rate / (1 - b1**t)).astype(m.dtype) * m, mu)
        return step, LaPropState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


__all__ += ["LaPropState", "laprop"]
