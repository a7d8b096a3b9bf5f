"""Input checks shared by every module: ``check_key`` (what the simulators accept as a PRNG key)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdtheory.simulate import check_key


@pytest.mark.parametrize("make", [
    lambda: jax.random.key(0),                                   # typed key
    lambda: jax.random.PRNGKey(0),                               # legacy raw uint32 key
    lambda: np.asarray(jax.random.PRNGKey(0)),                   # the same, as a NumPy array
    lambda: jax.random.split(jax.random.key(0), 3)[1],           # one key out of a split
    lambda: jax.random.key(0, impl="rbg"),                       # any typed implementation
], ids=["typed", "legacy", "legacy-numpy", "split-one", "typed-rbg"])
def test_check_key_accepts_one_key(make):
    key = make()
    out = check_key(key)
    assert isinstance(out, jax.Array)
    # The key still works, and draws exactly what the original key draws.
    np.testing.assert_array_equal(jax.random.normal(out, (3,)), jax.random.normal(jnp.asarray(key), (3,)))


@pytest.mark.parametrize("bad, match", [
    (0, r"key must be a JAX PRNG key such as jax\.random\.key\(0\); got int 0\. "),
    (42, r"got int 42\. Make one with jax\.random\.key\(seed\)"),
    (1.5, r"got float 1\.5\."),
    (True, r"got bool True\."),
    (np.int64(3), r"got int64 3\."),
    (None, r"got an object of type NoneType\."),
    ("0", r"got an object of type str\."),
    ([0, 0], r"got an object of type list\."),
    (np.zeros(2), r"got a float64 array of shape \(2,\)"),
    (np.zeros(2, np.int32), r"got an int32 array of shape \(2,\)"),
    (jnp.zeros(3, jnp.uint32), r"got a uint32 array of shape \(3,\)"),
    (jnp.uint32(7), r"got a uint32 array of shape \(\)"),
    (jax.random.split(jax.random.key(0), 4), r"exactly one PRNG key; got a batch of keys of shape \(4,\)"),
    (jax.random.split(jax.random.PRNGKey(0), 4), r"exactly one PRNG key; got a batch of legacy keys"),
], ids=["int", "int-42", "float", "bool", "numpy-int", "none", "str", "list", "float-array",
        "int32-array", "uint32-wrong-shape", "uint32-scalar", "typed-batch", "legacy-batch"])
def test_check_key_rejects_everything_else(bad, match):
    with pytest.raises(ValueError, match=match):
        check_key(bad)


def test_check_key_message_names_the_argument():
    with pytest.raises(ValueError, match=r"^init_key must be a JAX PRNG key"):
        check_key(0, name="init_key")


def test_check_key_under_jit_and_vmap():
    """Traced keys are checked by dtype and shape only, with the same verdict as eagerly."""
    draw = jax.jit(lambda k: jax.random.normal(check_key(k), (2,)))
    np.testing.assert_array_equal(draw(jax.random.key(1)), jax.random.normal(jax.random.key(1), (2,)))
    np.testing.assert_array_equal(draw(jax.random.PRNGKey(1)),
                                  jax.random.normal(jax.random.PRNGKey(1), (2,)))
    keys = jax.random.split(jax.random.key(2), 5)
    assert jax.vmap(draw)(keys).shape == (5, 2)  # under vmap each traced element is one key
    with pytest.raises(ValueError, match="batch of keys"):
        jax.jit(check_key)(keys)
    with pytest.raises(ValueError, match=r"got a float64 array of shape \(2,\)"):
        jax.jit(check_key)(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"got an int64 array of shape \(\)"):
        jax.jit(check_key)(0)  # under jit a Python int arrives as a traced int64 scalar
