"""The pool that solves many independent design problems in one compiled, vmapped loop.

Holds the problems of a per-eigenvalue sweep (``_Sweep``: the validated arguments;
``_Starts``: each problem's start) and ``_solve_pool``: n problems run through ``width``
slots of one compiled segment loop vmapped over the slots (``_pool_step``, from
``problem._segment_impl``); between segments of ``POOL_SEGMENT_ITERS`` iterations a
finished problem leaves its slot and the next pending one takes it, so the cost is the sum
of the problems' iterations, not n times the slowest one's. Used by
``per_eigenvalue.design_per_eigenvalue``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.spectrum import Spectrum
from specdiff.design.problem import _Config, _Data, _init_state, _segment_impl, _unit_scale

POOL_SEGMENT_ITERS = 10


# --------------------------------------------------------------------------- compiled segment


def _pool_step_impl(state, data, refill, theta_new, alive, iters, cfg):
    """One segment of a pool of independent problems (vmapped over its slots).

    Slots flagged in ``refill`` first start a new problem from ``theta_new``; slots not
    ``alive`` (no problem) are marked done. Every live slot then runs up to ``iters`` more
    iterations of its own problem, counted from its own iteration number.
    """
    max_iter = state.history.shape[-1]
    fresh = jax.vmap(lambda t: _init_state(t, max_iter, cfg))(theta_new)

    def pick(new, old):
        return jnp.where(refill.reshape(refill.shape + (1,) * (old.ndim - 1)), new, old)

    state = jax.tree.map(pick, fresh, state)
    state = state._replace(done=state.done | ~alive)
    return jax.vmap(lambda s, d: _segment_impl(s, d, s.it + iters, cfg))(state, data)


_pool_step = jax.jit(_pool_step_impl, static_argnames="cfg")


def _batched_spectrum(lam, mean):
    """A Spectrum pytree whose leaves have a leading batch axis (n, 1), for vmap."""
    return jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(Spectrum([1.0])), [lam[:, None], mean[:, None]]
    )


def _default_pool_width(n: int, steps: int) -> int:
    """Problems in flight at once: small on CPU (a finished slot is refilled at once, so the
    cost is the sum of the problems' iterations, not n times the slowest one's), large on
    accelerators (which need wide batches to be busy), and never more than ~4·10⁶ / S."""
    cap = max(1, 4_000_000 // steps)
    width = 128 if jax.default_backend() == "cpu" else cap
    return max(1, min(n, width, cap))


# --------------------------------------------------------------------------- the problems


class _Sweep(NamedTuple):
    """A validated ``design_per_eigenvalue`` problem."""

    lam: np.ndarray  # (n,) eigenvalues in the working dtype
    mu: np.ndarray  # (n,) mean components
    dtype: np.dtype
    width: int  # pool slots
    ends: np.ndarray  # (2,) float64 log-SNR endpoints
    cfg: _Config
    max_iter: int
    floor: float | None  # as given (part of a checkpoint's run identity)


class _Starts(NamedTuple):
    """The best heuristic per eigenvalue: the start of its problem and its bar to beat."""

    names: list  # heuristic names, index h
    best: np.ndarray  # (n,) index of each eigenvalue's best heuristic
    theta: np.ndarray  # (n, P) its parameters
    loss: np.ndarray  # (n,) its divergence term


# --------------------------------------------------------------------------- the pool


def _solve_pool(sw: _Sweep, starts: _Starts, ckpt, bar):
    """Solve the n problems of ``sw`` from ``starts`` through a pool of ``sw.width`` slots.

    Every segment runs each live slot for ``POOL_SEGMENT_ITERS`` more iterations in one
    compiled, vmapped call; between segments, finished problems leave their slot and the
    next pending ones take it (all shapes fixed: one compilation). Problems are taken in
    order of increasing eigenvalue: small eigenvalues are the ill-conditioned, slow ones,
    and starting them first keeps the pool's tail short.

    Returns (best_theta (n, P), iterations (n,), converged (n,)).
    """
    theta_init, lam, mu = starts.theta, sw.lam, sw.mu
    cfg, width, max_iter = sw.cfg, sw.width, sw.max_iter
    dt = theta_init.dtype
    out = _empty_results(*theta_init.shape, dt)
    owner = np.full(width, -1, np.int64)  # the problem in each slot, -1 for none
    state = jax.vmap(lambda t: _init_state(t, int(max_iter), cfg))(
        jnp.asarray(theta_init[np.zeros(width, int)])
    )
    if ckpt is not None:
        out, owner, state = _resume_pool(ckpt, out, owner, state)
    queue = _pending(lam, out["finished"], owner)
    bar.update(int(out["finished"].sum()))
    ends_w = jnp.broadcast_to(jnp.asarray(sw.ends, dt), (width, 2))
    scale = _unit_scale(starts.loss, dt)
    while True:
        refill = _refill(owner, queue)
        alive = owner >= 0
        if not alive.any():
            break
        idx = np.where(alive, owner, 0)
        data = _Data(
            _batched_spectrum(jnp.asarray(lam[idx]), jnp.asarray(mu[idx])),
            ends_w,
            jnp.asarray(scale[idx, None]),
        )
        state = _pool_step(
            state,
            data,
            jnp.asarray(refill),
            jnp.asarray(theta_init[idx]),
            jnp.asarray(alive),
            POOL_SEGMENT_ITERS,
            cfg,
        )
        finished = _collect_finished(state, owner, alive, max_iter, out)
        if finished:
            bar.update(finished)
            if ckpt is not None:
                ckpt.save_finished(out)
        if ckpt is not None:
            ckpt.maybe_save_pool({"owner": owner, "state": state})
    return out["theta"], out["iters"], out["conv"]


def _empty_results(n: int, n_par: int, dt) -> dict:
    return {
        "theta": np.zeros((n, n_par), dt),
        "iters": np.zeros(n, np.int32),
        "conv": np.zeros(n, bool),
        "finished": np.zeros(n, bool),
    }


def _resume_pool(ckpt, out, owner, state):
    """Finished problems and the saved pool; slots whose problem has since finished emptied."""
    out = ckpt.restore_finished(out)
    restored = ckpt.store.restore({"owner": owner, "state": state})
    if restored is not None:
        owner = np.asarray(restored["owner"]).astype(np.int64)
        state = restored["state"]
        stale = owner >= 0
        stale[stale] = out["finished"][owner[stale]]
        owner[stale] = -1
    return out, owner, state


def _pending(lam, finished, owner) -> list[int]:
    """Problems neither finished nor in a slot, smallest eigenvalue last (``pop()`` first)."""
    in_pool = np.zeros(len(finished), bool)
    in_pool[owner[owner >= 0]] = True
    order = np.argsort(lam, kind="stable")
    queue = [int(i) for i in order if not finished[i] and not in_pool[i]]
    queue.reverse()
    return queue


def _refill(owner, queue) -> np.ndarray:
    """Give empty slots the next pending problems (in place); which slots got one."""
    refill = np.zeros(len(owner), bool)
    for j in np.flatnonzero(owner < 0):
        if not queue:
            break
        owner[j] = queue.pop()
        refill[j] = True
    return refill


def _collect_finished(state, owner, alive, max_iter, out) -> int:
    """Move the problems that finished this segment into ``out``, free their slots."""
    it = np.asarray(state.it)
    done = np.asarray(state.done)
    fin = alive & (done | (it >= max_iter))
    if fin.any():
        rows = owner[fin]
        out["theta"][rows] = np.asarray(state.best_theta)[fin]
        out["iters"][rows] = it[fin]
        out["conv"][rows] = done[fin] & np.isfinite(np.asarray(state.value)[fin])
        out["finished"][rows] = True
        owner[fin] = -1
    return int(fin.sum())
