"""What ``design_schedule`` and ``design_per_eigenvalue`` share outside the compiled loop.

Argument checks (steps, process, metric, optimizer, sampler, dtype, tolerance, zero
eigenvalues under a KL), fixed endpoints turned into log-SNR and a parameterisation mode,
the heuristic schedules as starting points (moved onto the endpoints), the identity of a
resumable run (the arguments a checkpoint folder accepts) and metric units (W2, not W2²).
"""

from __future__ import annotations

import functools
import hashlib

import jax
import numpy as np

from specdiff.core.checks import check_choice, check_int
from specdiff.core.divergence import METRICS
from specdiff.core.engine import _check_schedule_sampler
from specdiff.core.schedule import PROCESSES, Schedule, _log_snr_from_levels
from specdiff.design import heuristics as _heur
from specdiff.design.problem import OPTIMIZERS, _Config


def _validate_common(steps, sampler, process, metric, optimizer):
    check_int("steps", steps)
    check_choice("process", process, PROCESSES)
    check_choice("metric", metric, METRICS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_schedule_sampler(_ANY_SCHEDULE, sampler)


# A schedule for ``_check_schedule_sampler``, which checks only the sampler here; built
# from host arrays (no JAX operation at import or per call).
_ANY_SCHEDULE = Schedule.tree_unflatten("vp", (np.array([0.5]), np.array([0.0])))


def _dtype(dtype, default):
    dt = np.dtype(default if dtype is None else dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 or "
            "jax.config.update('jax_enable_x64', True) before designing"
        )
    return dt


def _tol(tol, dt) -> float:
    """The relative-decrease tolerance: as given, else 1e-6 (float32) or 1e-10 (float64)."""
    return float(tol if tol is not None else (1e-6 if dt == np.float32 else 1e-10))


def _check_floor(metric, floor, eigenvalues) -> None:
    if metric != "w2" and floor is None and (np.asarray(eigenvalues) == 0).any():
        raise ValueError(
            f"metric {metric!r} is infinite for a zero eigenvalue; pass floor=... or use 'w2'"
        )


def _to_metric_units(x, metric):
    return np.sqrt(np.maximum(x, 0)) if metric == "w2" else np.asarray(x)


def _ends_to_log_snr(endpoints, process, steps):
    """(mode, ends (2,)) from ``endpoints=(first, last)`` in the schedule's own units."""
    if endpoints is None:
        return "free", np.zeros(2)
    if not isinstance(endpoints, (tuple, list)) or len(endpoints) != 2:
        raise ValueError(f"endpoints must be None or a pair (first, last), got {endpoints!r}")
    first, last = endpoints
    ends = np.zeros(2)
    for i, v in enumerate((first, last)):
        if v is None:
            continue
        try:
            Schedule([float(v)], process)
        except (TypeError, ValueError) as e:
            raise ValueError(f"endpoint {('first', 'last')[i]}: {e}") from None
        ends[i] = _log_snr_from_levels(np.float64(v), process, np)
    mode = {(True, True): "both", (True, False): "first", (False, True): "last"}.get(
        (first is not None, last is not None), "free"
    )
    if mode == "both":
        if steps == 1 and ends[0] != ends[1]:
            raise ValueError("with steps=1 the first and last endpoints must be the same level")
        if steps > 1 and not ends[1] > ends[0]:
            raise ValueError(
                "endpoints (first, last) must run from noisiest to cleanest: "
                f"got {endpoints!r} for process {process!r}"
            )
    return mode, ends


def _map_to_ends(rho, mode, ends):
    """A heuristic's log-SNR grid moved onto the fixed endpoints (same shape)."""
    if mode == "free":
        return rho
    if mode == "first":
        return rho - rho[0] + ends[0]
    if mode == "last":
        return rho - rho[-1] + ends[1]
    if rho.size == 1:
        return ends[:1].copy()
    return ends[0] + (rho - rho[0]) / (rho[-1] - rho[0]) * (ends[1] - ends[0])


def _heuristic_candidates(steps, mode, ends):
    """Every published heuristic's float64 log-SNR grid, on the endpoints if fixed.

    A heuristic's log-SNR grid is the same for every process; the grids are built on the
    host (no JAX operation) and cached per S, read-only.
    """
    return {name: _map_to_ends(rho, mode, ends) for name, rho in _heuristic_grids(int(steps))}


@functools.lru_cache(maxsize=32)
def _heuristic_grids(steps: int) -> tuple:
    out = []
    for name, rho in _heur._log_snr_grids(steps).items():
        rho.setflags(write=False)
        out.append((name, rho))
    return tuple(out)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a, np.float64).tobytes())
    return h.hexdigest()[:16]


def _run_args(kind, cfg: _Config, ends, max_iter, dt, floor) -> dict:
    """The arguments that define a resumable run (a checkpoint folder accepts only these)."""
    return {
        "kind": kind,
        "steps": cfg.steps,
        "process": cfg.process,
        "sampler": cfg.sampler.to_dict(),
        "metric": cfg.metric,
        "endpoints": list(ends),
        "mode": cfg.mode,
        "optimizer": cfg.optimizer,
        "max_iter": int(max_iter),
        "tol": cfg.tol,
        "patience": cfg.patience,
        "dtype": np.dtype(dt).name,
        "floor": floor,
    }
