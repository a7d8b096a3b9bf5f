"""Test configuration: float64 on (as `import sgdtheory` does) and strict rank promotion, so a
silent broadcast of mismatched shapes fails a test instead of passing (diffrax's habit)."""

import jax
import pytest

import sgdtheory  # noqa: F401  (turns on x64 by the package policy)
from sgdtheory.crosscheck._runner import release_compiled_programs

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _stay_under_the_mapping_limit():
    """After each test, drop the compiled programs if the process nears Linux's limit of memory
    mappings (vm.max_map_count, 65 530): a whole-suite run compiles thousands of XLA programs,
    each holding a few mappings, and once crossed it segfaulted inside a compile
    (see ``release_compiled_programs``).  Below the threshold nothing is cleared."""
    yield
    release_compiled_programs()
