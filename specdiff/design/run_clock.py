"""A run's wall time less the time JAX spent compiling in this thread.

What "a run longer than about a second" should count when a design decides whether to show
a progress bar, or whether to finish a short run in the program it already has: a cold
call's compilation is not the run's length. Tracing, lowering and backend compilation are
subtracted; a function traced inside another's trace is counted in both, so the clock can
run short by up to the tracing time (a fraction of a second), never by a run's
arithmetic. Loads from the persistent cache count as run time.
"""

from __future__ import annotations

import threading
import time

import jax

__all__ = ["RunClock"]

_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_local = threading.local()
_lock = threading.Lock()
_listening = False


def _listener(event, duration, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
        _local.seconds = getattr(_local, "seconds", 0.0) + duration


def _compile_seconds() -> float:
    """Seconds this thread has spent compiling since the listener was registered."""
    global _listening
    if not _listening:
        with _lock:
            if not _listening:
                jax.monitoring.register_event_duration_secs_listener(_listener)
                _listening = True
    return getattr(_local, "seconds", 0.0)


class RunClock:
    """Started at creation; ``seconds()`` is the wall time since, less compilation."""

    def __init__(self):
        self._compiled = _compile_seconds()
        self._t0 = time.perf_counter()

    def seconds(self) -> float:
        compiled = _compile_seconds() - self._compiled
        return max(0.0, time.perf_counter() - self._t0 - compiled)
