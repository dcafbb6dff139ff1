"""The compiled loop that solves blocks of independent design problems (issues 13 and 14).

Holds the validated sweep (``_Sweep``), its stopping rules (``_Rules``), its starts
(``_Starts``), ``Runner`` (the host loop over blocks, with checkpoints) and ``run_block``:
one compiled ``lax.while_loop`` in which ``width`` slots (one problem's optimiser each,
vmapped) advance one iteration per tick. A problem that stops (converged, stalled, out of
budget) writes its result into the block's output arrays inside the loop, and its slot
takes the next problem of the block in the same tick, so the cost is the sum of the
problems' iterations (plus one short tail per block), with no host round trip and no
segment floor. The loop ends when every problem of the block has stopped, or after
``limit`` ticks (checkpointed runs continue it from the returned ``_Pool``).

Over several devices (``specdiff.core.mesh.current_mesh()``) the block's problems are dealt
round-robin to the devices and ``run_block`` runs under ``jax.shard_map``: every device
runs its own loop over its own slots and problems, with no communication; padding rows
(to equal shares) are never started, so they change nothing. With one device it calls the
same loop directly, unsharded.

Every problem's iterates depend only on that problem: the answer does not depend on the
block or on the order in which problems are taken, and on the width or the device count
only through round-off (another compiled program: float32 sweeps of 256 problems on 1
and 2 devices differed in one problem, by 2e-6 in W2).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from specdiff.core import sharded
from specdiff.core.mesh import AXIS
from specdiff.design import one_eigenvalue as _one
from specdiff.design.problem import (
    _Config,
    _init_state,
    _n_params,
    _optimizer,
    _propose,
    _State,
    _stopping,
    _unit_scale,
)

# Why a problem stopped (``PerEigenvalueResult.stop_reason``), indexed by the stored code.
STOP_REASONS = ("converged", "stalled", "budget", "nonfinite")
_RUNNING = -1


@dataclasses.dataclass(frozen=True)
class _Rules:
    """When a problem stops besides convergence (static: a jit cache key).

    budget: the iteration budget (``max_iter``).
    window, stall_tol: stalled when, at a multiple of ``window`` iterations, the best loss
      has fallen by less than ``stall_tol`` (relative) since the previous multiple
      (``window`` = 0: never).
    """

    budget: int
    window: int
    stall_tol: float
    fused: bool = False  # the objective of ``one_eigenvalue`` (where it ``applies``)


class _Sweep(NamedTuple):
    """A validated ``design_per_eigenvalue`` problem."""

    lam: np.ndarray  # (n,) eigenvalues in the working dtype
    mu: np.ndarray  # (n,) mean components
    dtype: np.dtype
    width: int  # slots per device
    block: int  # problems per compiled call, all devices together
    ends: np.ndarray  # (2,) float64 log-SNR endpoints
    cfg: _Config
    rules: _Rules
    floor: float | None  # as given (part of a checkpoint's run identity)


# --------------------------------------------------------------------------- per slot


class _Slot(NamedTuple):
    """One slot: the optimiser state of its problem and that problem's data."""

    core: _State  # problem._State; its (1,) ``history`` holds the start value
    mark: jax.Array  # best value at the last multiple of the stall window
    lam: jax.Array  # ()
    mean: jax.Array  # ()
    scale: jax.Array  # () 1 / loss at the start (the optimiser works at unit scale)


def _new_slot(theta0, lam, mean, scale, cfg: _Config) -> _Slot:
    core = _init_state(theta0, 1, cfg)
    return _Slot(core, jnp.asarray(jnp.inf, theta0.dtype), lam, mean, scale)


def _iterate(slot: _Slot, ends, cfg: _Config, rules: _Rules):
    """One optimiser iteration of one slot (the body of ``problem._segment_impl``).

    Returns the new slot and its stop code: an index into ``STOP_REASONS``, or
    ``_RUNNING``. Priority: nonfinite, converged (``problem._stopping``), stalled, budget.
    """
    s = slot.core
    fun = _one.objective(slot.lam, slot.mean, slot.scale, ends, cfg, rules.fused)
    value, grad, updates, opt_state = _propose(s, _optimizer(cfg), fun, cfg)
    better = value < s.best_value
    stall, done = _stopping(s, value, grad, cfg)
    it = s.it + 1
    best = jnp.where(better, value, s.best_value)
    core = _State(
        theta=optax.apply_updates(s.theta, updates),
        opt_state=opt_state,
        it=it,
        value=value,
        best_theta=jnp.where(better, s.theta, s.best_theta),
        best_value=best,
        stall=stall,
        done=done,
        history=jnp.where(s.it == 0, value, s.history),
    )
    mark = jnp.where(s.it == 0, value, slot.mark)
    stalled = jnp.zeros((), bool)
    if rules.window > 0:
        at_mark = it % rules.window == 0
        stalled = at_mark & (mark - best < rules.stall_tol * jnp.abs(best))
        mark = jnp.where(at_mark, best, mark)
    code = jnp.select(
        [~jnp.isfinite(value), done, stalled, it >= rules.budget],
        [jnp.int8(c) for c in (3, 0, 1, 2)],
        jnp.int8(_RUNNING),
    )
    return slot._replace(core=core, mark=mark), code


# --------------------------------------------------------------------------- one device


class _Block(NamedTuple):
    """One device's share of a block: its problems (rows), hardest first."""

    theta0: jax.Array  # (B, P) starts
    lam: jax.Array  # (B,)
    mean: jax.Array  # (B,)
    scale: jax.Array  # (B,)
    count: jax.Array  # (1,) int32: rows 0..count−1 are problems, the rest padding


class _Pool(NamedTuple):
    """The loop's carry on one device (and what a checkpoint saves)."""

    slots: _Slot  # (W,) batched
    owner: jax.Array  # (W,) int32: the row each slot works on, −1 for none
    next: jax.Array  # (1,) int32: the next row to start
    theta: jax.Array  # (B, P) results: each problem's best point
    iters: jax.Array  # (B,) int32
    reason: jax.Array  # (B,) int8: index into STOP_REASONS, −1 while not stopped


def new_pool(block: _Block, width: int, cfg: _Config) -> _Pool:
    """An empty pool for a block (leading axes: devices × rows, devices × slots)."""
    rows, n_par = block.theta0.shape
    devices = block.count.shape[0]
    dt = block.theta0.dtype
    zero = jnp.zeros((), dt)
    one = jax.vmap(lambda t: _new_slot(t, zero, zero, zero + 1, cfg))
    return _Pool(
        slots=one(jnp.zeros((devices * width, n_par), dt)),
        owner=jnp.full((devices * width,), -1, jnp.int32),
        next=jnp.zeros((devices,), jnp.int32),
        theta=jnp.zeros((rows, n_par), dt),
        iters=jnp.zeros((rows,), jnp.int32),
        reason=jnp.full((rows,), _RUNNING, jnp.int8),
    )


def _refill(pool: _Pool, block: _Block, cfg: _Config) -> _Pool:
    """Give every empty slot the next row not yet started (if any)."""
    empty = pool.owner < 0
    row = pool.next[0] + jnp.cumsum(empty) - 1
    take = empty & (row < block.count[0])

    def fill(slots):
        i = jnp.clip(row, 0, block.lam.shape[0] - 1)
        fresh = jax.vmap(lambda *a: _new_slot(*a, cfg))(
            block.theta0[i], block.lam[i], block.mean[i], block.scale[i]
        )
        pick = lambda f, o: jnp.where(take.reshape((-1,) + (1,) * (o.ndim - 1)), f, o)  # noqa: E731
        return jax.tree.map(pick, fresh, slots)

    slots = jax.lax.cond(take.any(), fill, lambda s: s, pool.slots)
    return pool._replace(
        slots=slots,
        owner=jnp.where(take, row, pool.owner).astype(jnp.int32),
        next=pool.next + take.sum(dtype=jnp.int32),
    )


def _tick(pool: _Pool, block: _Block, ends, cfg: _Config, rules: _Rules) -> _Pool:
    """Refill, one iteration of every slot, then store what stopped and free its slot."""
    pool = _refill(pool, block, cfg)
    slots, code = jax.vmap(lambda s: _iterate(s, ends, cfg, rules))(pool.slots)
    stop = (pool.owner >= 0) & (code != _RUNNING)
    rows = jnp.where(stop, pool.owner, block.lam.shape[0])  # out of range: dropped
    return pool._replace(
        slots=slots,
        owner=jnp.where(stop, -1, pool.owner),
        theta=pool.theta.at[rows].set(slots.core.best_theta, mode="drop"),
        iters=pool.iters.at[rows].set(slots.core.it, mode="drop"),
        reason=pool.reason.at[rows].set(code, mode="drop"),
    )


def _run_local(pool: _Pool, block: _Block, ends, limit, cfg: _Config, rules: _Rules):
    """Ticks until every row has stopped or ``limit`` ticks ran; returns (pool, ticks)."""

    def cond(c):
        p, t = c
        busy = (p.owner >= 0).any() | (p.next[0] < block.count[0])
        return busy & (t < limit)

    def body(c):
        p, t = c
        return _tick(p, block, ends, cfg, rules), t + 1

    pool, _ = jax.lax.while_loop(cond, body, (pool, jnp.zeros((), jnp.int32)))
    return pool


_run_one = jax.jit(_run_local, static_argnames=("cfg", "rules"), donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("cfg", "rules", "mesh"), donate_argnums=0)
def _run_sharded(pool, block, ends, limit, cfg, rules, mesh):
    """``_run_local`` on every device of ``mesh`` at once, each on its own rows and slots."""
    run = functools.partial(_run_local, cfg=cfg, rules=rules)
    specs = (P(AXIS), P(AXIS), P(), P())
    return sharded._shard_map(run, mesh, specs, P(AXIS))(pool, block, ends, limit)


def run_block(pool: _Pool, block: _Block, ends, limit: int, cfg, rules, mesh=None):
    """Advance ``pool`` on ``block`` (sharded over ``mesh`` when it has several devices).

    Returns the advanced pool. The ``pool`` passed in is consumed (donated).
    """
    limit = jnp.asarray(min(int(limit), np.iinfo(np.int32).max), jnp.int32)
    ends = jnp.asarray(ends, block.theta0.dtype)
    if mesh is None or mesh.devices.size == 1:
        return _run_one(pool, block, ends, limit, cfg, rules)
    spread = NamedSharding(mesh, P(AXIS))
    pool, block = jax.device_put((pool, block), spread)
    return _run_sharded(pool, block, ends, limit, cfg, rules, mesh)


# --------------------------------------------------------------------------- host side

# Ticks per compiled call when checkpointing (between calls the host saves); otherwise a
# block runs in one call.
CHECKPOINT_TICKS = 200


class _Starts(NamedTuple):
    """The best heuristic per eigenvalue: the start of its problem and its bar to beat."""

    names: list  # heuristic names, index h
    theta: np.ndarray  # (H, P) each heuristic's parameters
    best: np.ndarray  # (n,) index of each eigenvalue's best heuristic
    loss: np.ndarray  # (n,) its divergence term


def _blocks(ids: np.ndarray, size: int):
    """(ids of a block, the same padded to ``size`` with its first id) over ``ids``."""
    for start in range(0, ids.size, size):
        part = ids[start : start + size]
        yield part, np.concatenate([part, np.full(size - part.size, part[0])])


def deal(ids: np.ndarray, devices: int, rows_per_device: int) -> np.ndarray:
    """Row → problem id (−1: padding) for problems ``ids`` (hardest first) dealt
    round-robin to ``devices`` devices of ``rows_per_device`` rows each."""
    rows = np.full((devices, rows_per_device), -1, np.int64)
    for j in range(devices):
        share = ids[j::devices]
        rows[j, : share.size] = share
    return rows.reshape(-1)


def default_width(n: int, steps: int, fused: bool = False) -> int:
    """Slots per device. On CPU about 3200 / S (a power of two in [8, 128]): the cost of a
    slot-iteration grows with the width once a tick's arrays (width × candidates × S)
    leave the cache, and a narrow pool has a short tail (3072 problems at S = 100:
    width 32 took 25% less CPU time than 128). With the ``fused`` objective (a tick is then
    mostly fixed per-operation cost) 6400 / S: width 64 took 0.7x the CPU time of 32 and
    0.66x that of 128. Accelerators: ~4·10⁶ / S (busy). Never more than n."""
    cap = max(1, 4_000_000 // steps)
    if jax.default_backend() == "cpu":
        per_step = 6400 if fused else 3200
        width = int(np.clip(2 ** round(np.log2(per_step / steps)), 8, 128))
    else:
        width = cap
    return max(1, min(n, width, cap))


class Runner:
    """The host loop of a sweep: blocks of pending problems through ``run_block``."""

    def __init__(self, sw: _Sweep, starts: _Starts, mesh, ckpt, bar):
        self.sw, self.starts, self.mesh, self.ckpt, self.bar = sw, starts, mesh, ckpt, bar
        self.devices = mesh.devices.size
        self.rows_per_device = sw.block // self.devices
        n, n_par = sw.lam.size, _n_params(sw.cfg.steps, sw.cfg.mode)
        self.out = {
            "theta": np.zeros((n, n_par), sw.dtype),
            "iters": np.zeros(n, np.int32),
            "reason": np.full(n, _RUNNING, np.int8),
            "finished": np.zeros(n, bool),
        }
        self.scale = _unit_scale(starts.loss, sw.dtype)
        self.limit = CHECKPOINT_TICKS if ckpt is not None else np.iinfo(np.int32).max

    def run(self):
        out = self.out
        if out["theta"].shape[1] == 0:  # nothing to optimise (one fixed level)
            out["reason"][:] = 0
            return out["theta"], out["iters"], out["reason"]
        in_flight = None
        if self.ckpt is not None:
            self.out = out = self.ckpt.restore_finished(out)
            in_flight = self.ckpt.store.restore(self._saved(self._block(np.zeros(1, np.int64))))
        self.bar.update(int(out["finished"].sum()))
        skip = np.zeros(out["finished"].size, bool)
        if in_flight is not None:
            rows = np.asarray(in_flight["rows"])
            skip[rows[rows >= 0]] = True
            self._finish(rows, in_flight["block"], in_flight["pool"])
        pending = np.argsort(self.sw.lam, kind="stable")  # small λ (the slow ones) first
        pending = pending[~out["finished"][pending] & ~skip[pending]]
        for ids, _ in _blocks(pending, self.sw.block):
            rows, block = self._block(ids)
            self._finish(rows, block, new_pool(block, self.sw.width, self.sw.cfg))
        return out["theta"], out["iters"], out["reason"]

    def _block(self, ids):
        """(rows: problem id per row, −1 padding; the ``_Block``) for problems ``ids``."""
        rows = deal(ids, self.devices, self.rows_per_device)
        src = np.where(rows >= 0, rows, ids[0])
        theta0 = self.starts.theta[self.starts.best[src]]
        lam, mu, scale = self.sw.lam[src], self.sw.mu[src], self.scale[src]
        count = (rows.reshape(self.devices, -1) >= 0).sum(1).astype(np.int32)
        return rows, _Block(*(jnp.asarray(a) for a in (theta0, lam, mu, scale)), count)

    def _saved(self, rows_block):
        """The structure of a saved block in flight (for orbax's restore)."""
        rows, block = rows_block
        return {
            "rows": rows,
            "block": block,
            "pool": new_pool(block, self.sw.width, self.sw.cfg),
        }

    def _finish(self, rows, block, pool):
        """Run one block to its end, storing what stops (and checkpointing, if asked)."""
        out, real = self.out, rows >= 0
        while True:
            pool = run_block(
                pool, block, self.sw.ends, self.limit, self.sw.cfg, self.sw.rules, self.mesh
            )
            reason = np.asarray(pool.reason)
            new = real & (reason >= 0) & ~out["finished"][np.maximum(rows, 0)]
            if new.any():
                ids = rows[new]
                out["theta"][ids] = np.asarray(pool.theta)[new]
                out["iters"][ids] = np.asarray(pool.iters)[new]
                out["reason"][ids] = reason[new]
                out["finished"][ids] = True
                self.bar.update(int(new.sum()))
                if self.ckpt is not None:
                    self.ckpt.save_finished(out)
            if (reason[real] >= 0).all():
                return
            if self.ckpt is not None:
                saved = {"rows": rows, "block": block, "pool": pool}
                self.ckpt.maybe_save_pool(saved)  # copied to the host only when written
