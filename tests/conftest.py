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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory executables after each test module.

    Every CPU executable keeps memory mappings of its own; a worker that compiles the
    whole suite's thousands of programs reaches the kernel's limit on mappings
    (vm.max_map_count, 65530 here) and XLA then crashes inside a compilation. Programs are
    shared within a module, rarely across modules.
    """
    yield
    jax.clear_caches()
