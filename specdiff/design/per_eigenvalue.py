"""Per-eigenvalue design: ``design_per_eigenvalue``, one schedule per eigenvalue (SPEC §6).

Holds ``PerEigenvalueResult`` and ``design_per_eigenvalue``, in four stages, each streamed
over blocks of ``block_size`` problems (one compiled shape per stage, memory bounded by a
block): validate (into a ``pool._Sweep``), start (every heuristic's divergence terms, the
best per eigenvalue), solve (``pool.Runner``: ``pool.run_block`` per block, sharded over
the devices of ``current_mesh()``, with a progress bar and ``checkpoint.PoolCheckpoint``),
report (per eigenvalue the best point or the start, whichever is lower, in metric units).

A block runs in one compiled loop in which ``chunk_size`` slots per device advance one
iteration per tick, and a slot whose problem stops takes the next one at once: the cost
is the sum of the problems' iterations. Only a block's starts and results and the slots'
optimiser states are in memory at a time (besides the (n, S) answer). The block's problems
are dealt to the devices of ``current_mesh(devices)`` (``jax.shard_map``; one device runs
the same loop unsharded). Each problem's iterates depend only on that problem:
``block_size`` does not change the answer, ``chunk_size`` and the device count only by
round-off (another compiled program; in float64 the tests find the devices change nothing).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_int
from specdiff.core.divergence import divergence_terms
from specdiff.core.engine import _moments
from specdiff.core.mesh import current_mesh
from specdiff.core.schedule import Schedule
from specdiff.core.spectrum import Spectrum
from specdiff.design import one_eigenvalue as _one
from specdiff.design import pool as _pool
from specdiff.design.common import (
    _check_floor,
    _digest,
    _dtype,
    _ends_to_log_snr,
    _heuristic_candidates,
    _run_args,
    _to_metric_units,
    _tol,
    _validate_common,
)
from specdiff.design.pool import STOP_REASONS, _blocks, _Rules, _Starts, _Sweep
from specdiff.design.problem import (
    _Config,
    _Data,
    _loss_of_rho_jit,
    log_snr_to_theta,
    theta_to_log_snr,
)


@dataclasses.dataclass(frozen=True)
class PerEigenvalueResult:
    """The outcome of ``design_per_eigenvalue``: one schedule per eigenvalue.

    Attributes:
      eigenvalues: (n,) the eigenvalues, each designed for alone.
      log_snr: (n, S) the designed log-SNR grids (noisiest first).
      loss: (n,) each eigenvalue's divergence term at its schedule (metric units).
      heuristic_loss: (n,) the best heuristic's loss for that eigenvalue.
      heuristic_name: (n,) which heuristic that was (also the starting point).
      iterations: (n,) optimiser iterations run per problem.
      stop_reason: (n,) why each problem stopped, one of ``STOP_REASONS``: "converged"
        (the relative decrease stayed below ``tol`` for ``patience`` iterations, the loss
        became negligible against its start, or the gradient vanished), "stalled" (the
        best loss fell by less than ``stall_tol`` over ``stall_window`` iterations),
        "budget" (``max_iter`` reached), "nonfinite" (the loss at the start is not finite).
      converged: (n,) ``stop_reason == "converged"``.
    """

    eigenvalues: np.ndarray
    means: np.ndarray
    log_snr: np.ndarray
    loss: np.ndarray
    heuristic_loss: np.ndarray
    heuristic_name: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    process: str
    metric: str
    sampler: object
    stop_reason: np.ndarray = None

    @property
    def levels(self) -> np.ndarray:
        """(n, S) levels in the process's units (ᾱ for VP, σ for VE)."""
        r = self.log_snr
        return 1 / (1 + np.exp(-r)) if self.process == "vp" else np.exp(-0.5 * r)

    def schedule(self, i: int) -> Schedule:
        return Schedule.from_log_snr(self.log_snr[i], self.process)


# --------------------------------------------------------------------------- compiled batches


def _loss_of_rho_batch_impl(rho, lam, mean, ends, cfg):
    """(n,) objective of n one-eigenvalue problems at their log-SNR grids (n, S)."""

    def one(r, la, m):
        data = _Data(
            Spectrum.tree_unflatten(None, (la[None], m[None])), ends, jnp.ones_like(la)[None]
        )
        return _loss_of_rho_jit(r, data, cfg)

    return jax.vmap(one)(rho, lam, mean)


_loss_of_rho_batch = jax.jit(_loss_of_rho_batch_impl, static_argnames="cfg")


def _terms_batch_impl(rho, spectrum, cfg):
    """(H, d) divergence terms of H log-SNR grids (H, S) on one spectrum."""

    def terms(r):
        mom = _moments(spectrum, Schedule.from_log_snr(r, cfg.process), cfg.sampler, False)
        return divergence_terms(spectrum, mom, cfg.metric, cfg.floor)

    return jax.vmap(terms)(rho)


_terms_batch = jax.jit(_terms_batch_impl, static_argnames="cfg")


def _rho_batch_impl(theta, ends, steps, mode):
    return jax.vmap(lambda t: theta_to_log_snr(t, ends, steps, mode))(theta)


_rho_batch = jax.jit(_rho_batch_impl, static_argnames=("steps", "mode"))


def _theta_batch_impl(rho, ends, mode):
    return jax.vmap(lambda r: log_snr_to_theta(r, ends, mode))(rho)


_theta_batch = jax.jit(_theta_batch_impl, static_argnames="mode")


# --------------------------------------------------------------------------- the sweep


class _Options(NamedTuple):
    """The keyword-only arguments of ``design_per_eigenvalue`` that define the problems."""

    mean: object
    chunk_size: int | None
    block_size: int | None
    max_iter: int
    tol: float | None
    patience: int
    stall_window: int
    stall_tol: float
    floor: float | None
    dtype: object
    checkpoint_every: float


def design_per_eigenvalue(
    eigenvalues,
    steps: int,
    sampler,
    process: str = "vp",
    metric: str = "w2",
    endpoints=None,
    *,
    mean=None,
    chunk_size: int | None = None,
    max_iter: int = 500,
    tol: float | None = None,
    patience: int = 5,
    floor: float | None = None,
    dtype=None,
    checkpoint_dir=None,
    checkpoint_every: float = 30.0,
    progress: bool | None = None,
    block_size: int | None = None,
    stall_window: int = 100,
    stall_tol: float = 1e-2,
    devices=None,
) -> PerEigenvalueResult:
    """One designed schedule per eigenvalue (each problem has that eigenvalue alone).

    Each problem is SPEC §6 with one eigenvalue, solved by L-BFGS (parallel line search)
    from its best heuristic; how the problems are streamed, pooled and sharded is in the
    module docstring. A problem stops when it converges (``tol``, ``patience``), stalls
    (its best loss fell by less than a relative ``stall_tol`` over ``stall_window``
    iterations, checked at multiples of the window; 0 turns this off) or reaches
    ``max_iter``; ``stop_reason`` and ``iterations`` record which, and when. With
    ``checkpoint_dir``, finished problems are saved every ``pool.CHECKPOINT_TICKS`` ticks
    and the block in flight every ``checkpoint_every`` seconds (orbax); a rerun with the
    same arguments and device count resumes, recomputing nothing finished.

    Args: as ``design_schedule``; ``eigenvalues`` (n,), ``mean`` (n,) (m_i per direction);
    ``chunk_size`` slots per device (``pool.default_width``: ~3200 / S on CPU, 6400 / S for
    DDIM η = 0, whose objective is ``one_eigenvalue``'s; ~4·10⁶ / S
    on accelerators); ``block_size`` problems per compiled call (max(4096,
    32·chunk_size·devices)); ``devices`` a spec for ``current_mesh`` (default: the active
    selection); ``progress`` a tqdm bar of problems done out of n, with ETA.

    Returns:
      ``PerEigenvalueResult``.

    Example:
      >>> import specdiff as sd
      >>> res = sd.design_per_eigenvalue([4.0, 0.01], 8, sd.samplers.DDIM())
      >>> res.log_snr.shape
      (2, 8)
    """
    opts = _Options(
        mean, chunk_size, block_size, max_iter, tol, patience, stall_window, stall_tol,
        floor, dtype, checkpoint_every,
    )  # fmt: skip
    mesh = current_mesh(devices)
    sweep = _validate(eigenvalues, steps, sampler, process, metric, endpoints, opts, mesh)
    starts = _heuristic_starts(sweep)
    theta, iters, reason = _solve(sweep, starts, mesh, checkpoint_dir, checkpoint_every, progress)
    return _report(sweep, starts, theta, iters, reason)


def _validate(eigenvalues, steps, sampler, process, metric, endpoints, opts, mesh) -> _Sweep:
    """The checked arguments of ``design_per_eigenvalue``."""
    spec_all = Spectrum(eigenvalues, opts.mean)
    _validate_common(steps, sampler, process, metric, "lbfgs")
    steps = int(steps)
    check_int("max_iter", opts.max_iter)
    check_int("stall_window", opts.stall_window, 0)
    if not (isinstance(opts.stall_tol, (int, float)) and opts.stall_tol >= 0):
        raise ValueError(f"stall_tol must be a number >= 0, got {opts.stall_tol!r}")
    lam = np.asarray(spec_all.eigenvalues)
    dt = _dtype(opts.dtype, lam.dtype)
    _check_floor(metric, opts.floor, lam)
    every = opts.checkpoint_every
    if not (isinstance(every, (int, float)) and every >= 0):
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0, got {every!r}")
    # The width does not depend on the devices: each device runs the same loop shape as
    # one device would, so the devices cannot change the round-off either.
    n, devices = lam.size, mesh.devices.size
    mode, ends = _ends_to_log_snr(endpoints, process, steps)
    cfg = _Config(
        steps, process, sampler, metric, mode, "lbfgs_parallel", 0.0,
        None if opts.floor is None else float(opts.floor), _tol(opts.tol, dt), int(opts.patience),
    )  # fmt: skip
    fused = _one.applies(cfg, ends)
    if opts.chunk_size is None:
        width = _pool.default_width(n, steps, fused)
    else:
        check_int("chunk_size", opts.chunk_size)
        width = min(int(opts.chunk_size), n)
    if opts.block_size is None:
        block = max(4096, 32 * width * devices)
    else:
        check_int("block_size", opts.block_size)
        block = max(int(opts.block_size), width)
    block = -(-min(block, n) // devices) * devices  # equal shares, never more than needed
    rules = _Rules(int(opts.max_iter), int(opts.stall_window), float(opts.stall_tol), fused)
    return _Sweep(
        lam.astype(dt), np.asarray(spec_all.mean, dt), dt, width, block, ends, cfg, rules,
        opts.floor,
    )  # fmt: skip


def _heuristic_starts(sw: _Sweep) -> _Starts:
    """Per-eigenvalue losses of every heuristic are its divergence terms: pick the best."""
    cfg, n = sw.cfg, sw.lam.size
    cands = _heuristic_candidates(cfg.steps, cfg.mode, sw.ends)
    names = list(cands)
    rho_cands = jnp.asarray(np.stack([cands[nm] for nm in names]), sw.dtype)  # (H, S)
    best, loss = np.zeros(n, np.int64), np.zeros(n, sw.dtype)
    for ids, padded in _blocks(np.arange(n), sw.block):
        spec = Spectrum.tree_unflatten(
            None, (jnp.asarray(sw.lam[padded]), jnp.asarray(sw.mu[padded]))
        )
        terms = np.asarray(_terms_batch(rho_cands, spec, cfg))[:, : ids.size]  # (H, ids)
        best[ids] = np.argmin(terms, axis=0)
        loss[ids] = terms[best[ids], np.arange(ids.size)]
    theta = np.asarray(_theta_batch(rho_cands, jnp.asarray(sw.ends, sw.dtype), cfg.mode))
    return _Starts(names, theta, best, loss)


def _solve(sw: _Sweep, starts: _Starts, mesh, checkpoint_dir, checkpoint_every, progress):
    """Run every problem with a progress bar and, given ``checkpoint_dir``, checkpoints.

    Returns (best θ (n, P), iterations (n,), stop code (n,)).
    """
    from tqdm.auto import tqdm

    ckpt = None
    if checkpoint_dir is not None:
        from specdiff.design.checkpoint import PoolCheckpoint

        rules = dataclasses.asdict(sw.rules)
        run_args = _run_args(
            "design_per_eigenvalue", sw.cfg, sw.ends, sw.rules.budget, sw.dtype, sw.floor
        ) | {"chunk": sw.width, "block": sw.block, "devices": int(mesh.devices.size)}
        run_args |= {"eigenvalues": _digest(sw.lam, sw.mu), "stall": rules}
        ckpt = PoolCheckpoint(checkpoint_dir, run_args, checkpoint_every)
    n = sw.lam.size
    bar = tqdm(
        total=n,
        desc=f"per-eigenvalue S={sw.cfg.steps}",
        unit="problem",
        leave=False,
        disable=progress is False or (progress is None and n <= sw.width),
    )
    try:
        return _pool.Runner(sw, starts, mesh, ckpt, bar).run()
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()


def _report(sw: _Sweep, starts: _Starts, theta, iters, reason) -> PerEigenvalueResult:
    """Keep the best point; fall back to the start where nothing improved on it (both
    judged by the same compiled loss, so "never worse than the heuristic" holds exactly)."""
    cfg, n = sw.cfg, sw.lam.size
    ends_j = jnp.asarray(sw.ends, sw.dtype)
    rho_heur = np.asarray(_rho_batch(jnp.asarray(starts.theta), ends_j, cfg.steps, cfg.mode))
    log_snr = np.zeros((n, cfg.steps), sw.dtype)
    loss, loss_h = np.zeros(n, sw.dtype), np.zeros(n, sw.dtype)
    for ids, padded in _blocks(np.arange(n), sw.block):
        lam, mu = jnp.asarray(sw.lam[padded]), jnp.asarray(sw.mu[padded])
        rho_best = _rho_batch(jnp.asarray(theta[padded]), ends_j, cfg.steps, cfg.mode)
        rho_h = jnp.asarray(rho_heur[starts.best[padded]])
        lb = np.asarray(_loss_of_rho_batch(rho_best, lam, mu, ends_j, cfg))[: ids.size]
        lh = np.asarray(_loss_of_rho_batch(rho_h, lam, mu, ends_j, cfg))[: ids.size]
        use = lb < lh
        log_snr[ids] = np.where(
            use[:, None], np.asarray(rho_best)[: ids.size], rho_heur[starts.best[ids]]
        )
        loss[ids], loss_h[ids] = np.where(use, lb, lh), lh
    stop = np.asarray(STOP_REASONS)[reason]
    return PerEigenvalueResult(
        eigenvalues=sw.lam,
        means=sw.mu,
        log_snr=log_snr,
        loss=_to_metric_units(loss, cfg.metric),
        heuristic_loss=_to_metric_units(loss_h, cfg.metric),
        heuristic_name=np.asarray(starts.names)[starts.best],
        iterations=iters,
        converged=stop == "converged",
        process=cfg.process,
        metric=cfg.metric,
        sampler=cfg.sampler,
        stop_reason=stop,
    )
