"""Test configuration: float64 on (as `import sgdtheory` does) and strict rank promotion, so a
silent broadcast of mismatched shapes fails a test instead of passing (diffrax's habit)."""

import jax

import sgdtheory  # noqa: F401  (turns on x64 by the package policy)

jax.config.update("jax_numpy_rank_promotion", "raise")
