"""Test configuration: float64 available everywhere (float32 tests pass explicit dtypes)."""

import os

import jax
import pytest

# In-process CLI calls would enable the persistent compilation cache in the user's cache
# folder; the tests that check the cache point it at a temporary folder themselves.
os.environ.setdefault("SPECDIFF_CACHE_DIR", "off")

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)
