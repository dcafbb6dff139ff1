"""Test configuration: XLA's CPU fusions compiled by its older emitter (about a quarter less
compilation time); float64 available everywhere (float32 tests pass explicit dtypes); one persistent
compilation cache for the whole run."""

import os
import shutil
import subprocess
import sys
import tempfile

# Most of the suite's time is XLA compiling programs that then run for milliseconds. XLA's
# CPU fusion emitters (its default) compile them more slowly than its older elemental
# emitter (the suite's times both ways: BUILD_NOTES, issue 13, twelfth pass). The programs compute
# the same mathematics (round-off may differ in the last bits), and every process of a run
# (xdist workers and the subprocesses the tests start, which append to XLA_FLAGS) compiles
# the same way. SPECDIFF_TEST_XLA_DEFAULTS=1 runs the suite at XLA's defaults instead. The
# flag is added only if this jaxlib accepts it (a fresh process is asked once per run).
_CODEGEN_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _compile_faster():
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("SPECDIFF_TEST_XLA_DEFAULTS") or "xla_cpu_use_fusion_emitters" in flags:
        return  # asked for XLA's defaults, or set already (by the controlling process)
    flags = f"{flags} {_CODEGEN_FLAG}".strip()
    probe = subprocess.run(
        [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"],
        env=os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = flags  # before any backend starts in this process


_compile_faster()

import jax  # noqa: E402
import pytest  # noqa: E402

# In-process CLI calls would enable the persistent compilation cache in the user's cache
# folder; the tests that check the cache point it at a temporary folder themselves.
os.environ.setdefault("SPECDIFF_CACHE_DIR", "off")

jax.config.update("jax_enable_x64", True)

# One run's compilation cache, shared by the xdist workers and the subprocesses they start:
# modules drop their compiled programs (below) and many compile the same ones again. It
# starts empty on every run (a fresh folder), so every program is still compiled once.
_RUN_CACHE = "SPECDIFF_TEST_RUN_CACHE"
_CREATED = pytest.StashKey[str]()  # the folder this process made, removed at the end


def pytest_configure(config):
    if not hasattr(config, "workerinput") and _RUN_CACHE not in os.environ:
        os.environ[_RUN_CACHE] = tempfile.mkdtemp(prefix="specdiff-tests-jax-")
        config.stash[_CREATED] = os.environ[_RUN_CACHE]
    path = os.environ[_RUN_CACHE]
    # Read by jax at import in subprocesses; set directly here (jax is imported already).
    os.environ.update(
        JAX_COMPILATION_CACHE_DIR=path,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    path = config.stash.get(_CREATED, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


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
