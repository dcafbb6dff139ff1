"""JAX's persistent compilation cache for the command line and the experiments.

A second run of the same command loads its compiled executables from disk instead of
compiling them again. The cache lives in ``$SPECDIFF_CACHE_DIR`` if set, else in
``$XDG_CACHE_HOME/specdiff/jax`` (``~/.cache/specdiff/jax``). ``SPECDIFF_CACHE_DIR=off``
(or ``0``, ``none``, empty) disables it. Library calls never enable it on their own: it is
process-wide JAX configuration, so only programs (the CLI, ``python -m experiments.…``)
turn it on.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "enable_compilation_cache"]

_OFF = {"", "0", "off", "none", "false", "no"}


def cache_dir() -> Path | None:
    """The cache folder the environment selects, or None when it is disabled."""
    value = os.environ.get("SPECDIFF_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specdiff" / "jax"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()``; returns the folder used.

    Every compilation is cached (the default thresholds skip compilations under a second,
    which are most of specdiff's: the sum of many small ones is what a cold start waits for).
    """
    import jax

    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
