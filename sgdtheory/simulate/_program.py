r"""User callables as *programs*: traced once, hashed by their program text, captured arrays as data.

``jax.jit`` must treat a user's ``loss``, ``observe`` or optax ``update`` as static, and a static
argument is looked up by ``hash``/``==``: a fresh ``lambda`` (or a fresh ``optax.sgd(lr)``) is a new
object every call, so every call would recompile, and users used to write hashable wrapper classes
to avoid it.  Instead each callable is traced to a jaxpr on its example arguments
(:func:`trace`); the static part (:class:`Program`) is keyed by the printed jaxpr and the pytree
structures, and the arrays the callable closed over (``jnp.asarray(0.1)`` learning rates, datasets,
Hessians) come back as ordinary traced arguments.  Two callables that compute the same thing with
different *array* constants therefore share one compiled simulator; Python numbers baked into a
closure (``optax.sgd(0.1)``) are literals of the program text, so changing them recompiles -- pass
hyperparameters as arrays (or use ``optax.inject_hyperparams``) to sweep without recompiling.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.extend import core as jex_core

__all__ = ["Program", "trace"]


class Program:
    """The static half of a traced callable: its jaxpr and pytree structures (hashable by text)."""

    __slots__ = ("jaxpr", "in_tree", "out_tree", "const_avals", "out_shape", "_key")

    def __init__(self, jaxpr, in_tree, out_tree, const_avals, out_shape=None):
        self.jaxpr = jaxpr
        self.in_tree = in_tree
        self.out_tree = out_tree
        self.const_avals = const_avals
        self.out_shape = out_shape  # shape/dtype pytree of the output (not part of the key)
        self._key = (str(jaxpr), in_tree, out_tree, const_avals)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Program) and self._key == other._key

    def bind(self, consts) -> Callable:
        """The callable again, with its captured arrays ``consts`` (possibly traced)."""
        closed = jex_core.ClosedJaxpr(self.jaxpr, list(consts))
        fun = jex_core.jaxpr_as_fun(closed)

        def call(*args):
            leaves, tree = jax.tree_util.tree_flatten(args)
            if tree != self.in_tree:
                raise ValueError(f"argument structure {tree} differs from the traced {self.in_tree}.")
            return jax.tree_util.tree_unflatten(self.out_tree, fun(*leaves))

        return call


def trace(fn: Callable, *example_args: Any, what: str = "function") -> tuple[Program, tuple]:
    """Trace ``fn(*example_args)`` once: ``(program, consts)``; ``program.bind(consts)`` is ``fn``.

    ``example_args`` may be arrays or ``jax.ShapeDtypeStruct`` pytrees.  Raises ``ValueError`` with
    the callable's role (``what``) when ``fn`` cannot be traced (e.g. Python control flow on values).
    """
    try:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example_args)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            f"{what} must be a pure JAX function of its arguments (it is traced once and compiled); "
            f"tracing it failed with {type(err).__name__}: {err}") from err
    in_tree = jax.tree_util.tree_structure(example_args)
    out_tree = jax.tree_util.tree_structure(out_shape)
    consts = tuple(closed.consts)
    avals = tuple((tuple(getattr(c, "shape", ())), str(getattr(c, "dtype", type(c).__name__)))
                  for c in consts)
    return Program(closed.jaxpr, in_tree, out_tree, avals, out_shape), consts
