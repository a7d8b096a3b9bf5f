"""Input validation shared by every module.

House rule (STYLE.md): *static* facts (shapes, ranks, option names) raise ``ValueError`` always, also
under ``jit``/``vmap``/``grad``; *value* conditions (symmetry, positive semidefiniteness, a learning
rate inside the stability bound) raise eagerly whenever the values are concrete, and are skipped
when they are traced (the caller can then use a predicate such as
:func:`sgdtheory.quadratic.max_stable_lr`).  Messages are written for a student: they say what was
expected, what was received and, for stability, the value of the bound.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_zero",
    "is_concrete",
    "concrete_value",
    "as_float_array",
    "square_matrix",
    "check_symmetric",
    "check_psd",
    "check_spd",
    "check_vector",
    "check_positive",
    "check_nonnegative",
    "check_momentum",
    "check_lr_below",
    "check_int",
    "check_key",
    "check_dataset",
    "check_mixing",
    "n_examples",
    "DPSGD_ORDERS",
    "check_choice",
]


def is_zero(x: Any) -> bool:
    """Static test for a hyperparameter left at its default 0 (a Python/NumPy number, not an array:
    an array is data, and may change between calls without recompiling)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and x == 0


def is_concrete(x: Any) -> bool:
    """True when ``x`` has a concrete value (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_value(x: Any):
    """``x`` as a NumPy value when concrete, else ``None``."""
    if not is_concrete(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic array types
        return None


def as_float_array(x: Any) -> jax.Array:
    """``x`` as a floating JAX array (integers promoted to the default float dtype)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def square_matrix(name: str, x: Any) -> jax.Array:
    """Check that ``x`` is a 2-D square matrix (a shape check: also applies under jit)."""
    x = as_float_array(x)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(
            f"{name} must be a square (D, D) matrix; got an array of shape {tuple(x.shape)}."
        )
    return x


def check_vector(name: str, x: Any, dim: int) -> jax.Array:
    """Check that ``x`` is a vector of length ``dim``."""
    x = as_float_array(x)
    if x.shape != (dim,):
        raise ValueError(f"{name} must have shape ({dim},); got shape {tuple(x.shape)}.")
    return x


def check_dataset(inputs: Any, targets: Any) -> tuple[jax.Array, jax.Array]:
    """Check a regression dataset: ``inputs`` of shape (N, D) and ``targets`` of shape (N,)."""
    x = as_float_array(inputs)
    y = as_float_array(targets)
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (N, D); got {tuple(x.shape)}.")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"targets must have shape (N,) = ({x.shape[0]},) to match inputs of shape "
            f"{tuple(x.shape)}; got {tuple(y.shape)}.")
    return x, y


def _scale(v: np.ndarray) -> float:
    return float(max(1.0, np.max(np.abs(v)))) if v.size else 1.0


def check_symmetric(name: str, x: jax.Array, rtol: float = 1e-8) -> None:
    """Raise if a concrete matrix is not symmetric to relative tolerance ``rtol``."""
    v = concrete_value(x)
    if v is None:
        return
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite entries.")
    asym = float(np.max(np.abs(v - v.T))) if v.size else 0.0
    if asym > rtol * _scale(v):
        raise ValueError(
            f"{name} must be symmetric; max |{name} - {name}^T| = {asym:.3g}. "
            f"A Hessian or covariance is symmetric: pass (M + M.T) / 2 if the asymmetry is round-off."
        )


def check_psd(name: str, x: jax.Array, rtol: float = 1e-10) -> None:
    """Raise if a concrete matrix is not symmetric positive semidefinite."""
    check_symmetric(name, x)
    v = concrete_value(x)
    if v is None or v.size == 0:
        return
    # Fast path: min eig(v) > -rtol*scale  <=>  v + rtol*scale*I admits a Cholesky factor
    # (several times cheaper than eigvalsh at large D); eigvalsh only to report a failure.
    scale = _scale(v)
    try:
        np.linalg.cholesky(v + rtol * scale * np.eye(v.shape[0]))
        return
    except np.linalg.LinAlgError:
        pass
    eig = np.linalg.eigvalsh(v)
    if eig[0] < -rtol * _scale(eig):
        raise ValueError(
            f"{name} must be positive semidefinite (a covariance); its smallest eigenvalue is "
            f"{eig[0]:.4g} < 0."
        )


def check_spd(name: str, x: jax.Array, rtol: float = 1e-12) -> None:
    """Raise if a concrete matrix is not symmetric positive definite."""
    check_symmetric(name, x)
    v = concrete_value(x)
    if v is None or v.size == 0:
        return
    eig = np.linalg.eigvalsh(v)
    if eig[0] <= rtol * _scale(eig):
        raise ValueError(
            f"{name} must be positive definite; its smallest eigenvalue is {eig[0]:.4g}."
        )


def check_positive(name: str, x: Any) -> None:
    """Raise if a concrete scalar (or every entry of an array) is not > 0."""
    v = concrete_value(x)
    if v is None:
        return
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be > 0; got {_fmt(v)}.")


def check_nonnegative(name: str, x: Any) -> None:
    """Raise if a concrete scalar (or every entry of an array) is negative."""
    v = concrete_value(x)
    if v is None:
        return
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"{name} must be >= 0; got {_fmt(v)}.")


def check_momentum(x: Any, name: str = "momentum") -> None:
    """Raise if a concrete momentum is outside [0, 1)."""
    v = concrete_value(x)
    if v is None:
        return
    if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v >= 1):
        raise ValueError(f"{name} must lie in [0, 1); got {_fmt(v)}.")


def check_int(name: str, x: Any, minimum: int = 0) -> int:
    """A static integer argument (shapes, step counts): must be a Python/NumPy int >= minimum."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {x!r}.")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {x}.")
    return int(x)


def check_key(key: Any, name: str = "key") -> jax.Array:
    """Check that ``key`` is exactly one JAX PRNG key; returns it as a JAX array.

    Accepted: a typed key (``jax.random.key(0)``, shape ``()``) or a legacy raw key
    (``jax.random.PRNGKey(0)``: ``uint32`` of shape ``(2,)`` for the default threefry
    implementation).  A batch of keys, an integer seed, a float or an array of another dtype or
    shape raises ``ValueError`` naming what was received.  Only the dtype and shape are inspected,
    so the check is the same eagerly and under ``jit``/``vmap`` (under ``vmap`` the shape is that of
    one element of the mapped batch).

    Example:
      >>> import jax
      >>> check_key(jax.random.key(0)).shape
      ()
      >>> check_key(0)
      Traceback (most recent call last):
      ...
      ValueError: key must be a JAX PRNG key such as jax.random.key(0); got int 0. ...
    """
    hint = ("Make one with jax.random.key(seed) (or the legacy jax.random.PRNGKey(seed)); "
            "use jax.random.split for independent runs.")
    if not isinstance(key, (jax.Array, np.ndarray)):
        if isinstance(key, (int, float, complex, np.generic)):
            got = f"{type(key).__name__} {key}"  # e.g. "int 0", "float 1.5", "int64 3"
        else:
            got = f"an object of type {type(key).__name__}"
        raise ValueError(f"{name} must be a JAX PRNG key such as jax.random.key(0); got {got}. {hint}")
    dtype, shape = key.dtype, tuple(key.shape)
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return key
        raise ValueError(
            f"{name} must be exactly one PRNG key; got a batch of keys of shape {shape}. Pass one "
            f"key per call (jax.vmap over a batch of keys if you want several runs).")
    legacy = _legacy_key_shape()
    if np.dtype(dtype) == np.uint32 and shape == legacy:
        return jnp.asarray(key)
    if np.dtype(dtype) == np.uint32 and len(shape) > 1 and shape[-1:] == legacy[-1:]:
        raise ValueError(
            f"{name} must be exactly one PRNG key; got a batch of legacy keys of shape {shape}. "
            f"Pass one key per call (jax.vmap over a batch of keys if you want several runs).")
    raise ValueError(
        f"{name} must be a JAX PRNG key such as jax.random.key(0); got {_article(np.dtype(dtype).name)} "
        f"array of shape {shape} (a legacy raw key is uint32 of shape {legacy}). {hint}")


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeio" else "a ") + word  # "an int32", "a uint32", "a float64"


_LEGACY_KEY_SHAPES: dict[str, tuple[int, ...]] = {}


def _legacy_key_shape() -> tuple[int, ...]:
    """Shape of ``jax.random.PRNGKey(0)`` under the configured default PRNG implementation."""
    impl = str(jax.config.jax_default_prng_impl)
    if impl not in _LEGACY_KEY_SHAPES:
        _LEGACY_KEY_SHAPES[impl] = tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)
    return _LEGACY_KEY_SHAPES[impl]


def check_lr_below(lr: Any, bound: Any, bound_expr: str, what: str = "is unstable") -> None:
    """Raise when a concrete learning rate is at or past a stability bound.

    The message names the bound and its value, e.g. ``lr=0.7 >= 2/h_max = 0.6667``.
    """
    lr_v, b_v = concrete_value(lr), concrete_value(bound)
    if lr_v is None or b_v is None:
        return
    lr_v, b_v = np.asarray(lr_v), np.asarray(b_v)
    if np.any(lr_v >= b_v):
        raise ValueError(
            f"lr={_fmt(lr_v)} >= {bound_expr} = {_fmt(b_v)}: the dynamics {what} at this learning "
            f"rate (no stationary state exists). Use lr < {_fmt(b_v)}."
        )


def _fmt(v: Any) -> str:
    v = np.asarray(v)
    if v.ndim == 0:
        return f"{float(v):.4g}"
    return np.array2string(v, precision=4, threshold=6)


def check_mixing(mixing, *, symmetric: bool = True, rtol: float = 1e-8) -> jax.Array:
    r"""Validate a mixing matrix: square, finite, non-negative, rows and columns summing to 1.

    ``symmetric=True`` (the theory's requirement: its spectral formulas use real eigenpairs with
    :math:`u_0 = \mathbf 1/\sqrt n`) also demands :math:`W = W^\top`.  Value checks are eager
    (skipped under ``jit``); the shape check always applies.  Returns ``W`` as a float array.
    """
    w = as_float_array(mixing)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError(f"mixing must be a square (n, n) matrix; got shape {tuple(w.shape)}.")
    v = concrete_value(w)
    if v is None:
        return w
    if not np.all(np.isfinite(v)):
        raise ValueError("mixing contains NaN or infinite entries.")
    if np.any(v < -rtol):
        raise ValueError(f"mixing must be non-negative; its smallest entry is {v.min():.4g}.")
    rows, cols = v.sum(axis=1), v.sum(axis=0)
    if np.max(np.abs(rows - 1)) > rtol or np.max(np.abs(cols - 1)) > rtol:
        raise ValueError(
            "mixing must be doubly stochastic (every row and every column sums to 1); row sums "
            f"{np.array2string(rows, precision=4, threshold=6)}, column sums "
            f"{np.array2string(cols, precision=4, threshold=6)}.")
    if symmetric:
        check_symmetric("mixing", w, rtol)
    return w


def n_examples(examples: Any, name: str = "examples") -> int:
    """The number ``N`` of examples in a pytree whose every leaf has the leading axis ``N``.

    A shape check (also under ``jit``): raises ``ValueError`` when the pytree holds no arrays, a
    leaf is a scalar, the leaves disagree on ``N`` (no leaf is silently truncated or clamped), or
    ``N = 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> n_examples((jnp.zeros((5, 2)), jnp.zeros(5)))
      5
      >>> n_examples((jnp.zeros((5, 2)), jnp.zeros(4)))
      Traceback (most recent call last):
      ...
      ValueError: every leaf of examples needs the same leading axis N; got [5, 4].
    """
    leaves = jax.tree_util.tree_leaves(examples)
    if not leaves:
        raise ValueError(f"{name} holds no arrays (a pytree with leading axis N is expected).")
    shapes = [jnp.shape(a) for a in leaves]
    if any(len(s) == 0 for s in shapes):
        raise ValueError(f"every leaf of {name} needs a leading axis N (the examples).")
    n = shapes[0][0]
    if any(s[0] != n for s in shapes):
        raise ValueError(f"every leaf of {name} needs the same leading axis N; got "
                         f"{[s[0] for s in shapes]}.")
    if n < 1:
        raise ValueError(f"{name} is empty (N = 0).")
    return int(n)


#: The two orders of decentralized SGD (:mod:`sgdtheory.decentralized`,
#: :func:`sgdtheory.simulate.dpsgd`): gossip then local step, or local step then gossip.
DPSGD_ORDERS = ("mix_then_step", "gradient_then_mix")


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """Raise unless ``value`` is one of ``choices`` (a static option); returns ``value``.

    Example:
      >>> check_choice("order", "mix_then_step", DPSGD_ORDERS)
      'mix_then_step'
      >>> check_choice("order", "gossip", DPSGD_ORDERS)
      Traceback (most recent call last):
      ...
      ValueError: order must be one of ('mix_then_step', 'gradient_then_mix'); got 'gossip'.
    """
    try:
        ok = value in choices
    except TypeError:  # an unhashable/array value
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}.")
    return value
