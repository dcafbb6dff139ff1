"""The design problem as the compiled optimiser sees it (SPEC §6).

Holds the static configuration (``_Config``) and the traced data (``_Data``) of one
problem, the monotone log-SNR parameterisation θ ↔ ρ, the objective and its unit scaling,
the parallel line search, the optimiser construction, the optimiser state (``_State``) and
the compiled segment loop (``_segment``), and the compiled start (``_start``: every
heuristic's loss in one batch, the start, the initial state) and finish (``_finish``: the
best point against the start, as a schedule). ``optimise.design_schedule`` runs one problem
through it, ``per_eigenvalue.design_per_eigenvalue`` a vmapped pool of them.

Parameterisation (monotone by construction, well conditioned in float32): the levels are
log-SNRs ρ_0 < … < ρ_{S−1} built from unconstrained θ as

    free:         ρ_0 = ρ_floor + softplus(θ_0 − ρ_floor),
                  ρ_k = ρ_0 + Σ_{1≤j≤k} (softplus(θ_j) + δ)
    first fixed:  ρ_0 = ρ_first, then increments as above
    last fixed:   ρ_{S−1} = ρ_last, increments counted backwards
    both fixed:   ρ_k = ρ_first + (ρ_last − ρ_first)·Σ_{j≤k} w_j,  w = (1 − nε)·softmax(θ) + ε

with δ = 1e-4 (ε = δ/(ρ_last − ρ_first)) a floor on each increment so that levels stay
distinct after rounding to float32, and ρ_floor = −30 (σ_0 ≤ 3.3·10⁶, ᾱ_0 ≥ 9·10⁻¹⁴) a
smooth floor on a free first level. Without it a VP design whose start mismatch vanishes
as ᾱ_0 → 0 (DPM-Solver++ on a VP start) drove ρ_0 to −693: σ_0 = 3.6·10¹⁵⁰, which a
float32 evaluation or any tool receiving the σ's turns into inf and NaN. Below ρ_floor
the start's mismatch is already under 10⁻¹³·λ. ᾱ = sigmoid(ρ) is never formed inside the loop: the
engine works in log-SNR throughout, so ᾱ → 0 and ᾱ → 1 are as well conditioned as ᾱ = ½.

The optimiser (optax L-BFGS with zoom line search, L-BFGS with the parallel line search,
or Adam) runs in a compiled ``lax.while_loop`` that stops at a given iteration
(``stop_at``, traced), so the host can look in between segments without recompiling.

Why this module is long: every compiled program of a design (start, segment, finish and
the three as one) and its placement on the selected devices (``_on_devices``: spectrum
sharded, state replicated) share the private ``_Config``/``_Data``/``_State`` types and
the objective; split apart they would only pass those types between modules.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdiff.core import sharded
from specdiff.core.checks import cumsum
from specdiff.core.divergence import divergence_terms
from specdiff.core.engine import _moments
from specdiff.core.schedule import Schedule
from specdiff.core.spectrum import Spectrum

MIN_INCREMENT = 1e-4
OPTIMIZERS = ("lbfgs", "adam")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one design problem (hashable: a jit cache key)."""

    steps: int
    process: str
    sampler: object
    metric: str
    mode: str  # "free" | "first" | "last" | "both"
    optimizer: str
    learning_rate: float
    floor: float | None
    tol: float
    patience: int
    mesh: object = None  # the spectrum sharded over it (set by _segment, _loss_of_rho)


class _Data(NamedTuple):
    spectrum: Spectrum
    ends: jax.Array  # (2,) ρ_first, ρ_last (unused entries are ignored)
    weights: jax.Array  # (d,)


class _State(NamedTuple):
    theta: jax.Array
    opt_state: object
    it: jax.Array
    value: jax.Array
    best_theta: jax.Array
    best_value: jax.Array
    stall: jax.Array
    done: jax.Array
    history: jax.Array


# --------------------------------------------------------------------------- θ ↔ ρ


def _n_params(steps: int, mode: str) -> int:
    return steps if mode == "free" else steps - 1


# A smooth lower bound on a free first log-SNR (see the module docstring).
RHO_FLOOR = -30.0


def theta_to_log_snr(theta, ends, steps: int, mode: str):
    """Map unconstrained parameters to a strictly increasing log-SNR grid (see module doc)."""
    if mode == "both":
        span = ends[1] - ends[0]
        n = steps - 1
        eps = MIN_INCREMENT / span
        w = (1 - n * eps) * jax.nn.softmax(theta) + eps
        inner = ends[0] + span * cumsum(w)[:-1]
        return jnp.concatenate([ends[:1], inner, ends[1:]])
    inc = jax.nn.softplus(theta[1:] if mode == "free" else theta) + MIN_INCREMENT
    if mode == "last":
        back = cumsum(inc, reverse=True)
        return jnp.concatenate([ends[1] - back, ends[1:]])
    start = RHO_FLOOR + jax.nn.softplus(theta[:1] - RHO_FLOOR) if mode == "free" else ends[:1]
    return jnp.concatenate([start, start + cumsum(inc)])


def _softplus_inv(y):
    y = jnp.maximum(y, 1e-12)
    return y + jnp.log(-jnp.expm1(-y))


def log_snr_to_theta(rho, ends, mode: str):
    """Inverse of ``theta_to_log_snr`` (increments below the floor are clipped to it)."""
    if mode == "both":
        span = ends[1] - ends[0]
        n = rho.shape[-1] - 1
        eps = MIN_INCREMENT / span
        w = jnp.diff(rho) / span
        return jnp.log(jnp.maximum((w - eps) / (1 - n * eps), 1e-12))
    inc = _softplus_inv(jnp.diff(rho) - MIN_INCREMENT)
    if mode != "free":
        return inc
    return jnp.concatenate([RHO_FLOOR + _softplus_inv(rho[:1] - RHO_FLOOR), inc])


# --------------------------------------------------------------------------- objective


def _loss_rho(rho, data: _Data, cfg: _Config):
    """The objective of a log-SNR grid: W2² for "w2" (smooth at its minimum), else the KL.

    With ``cfg.mesh`` the spectrum is sharded over its devices and the schedule replicated:
    one partial sum per device, then a ``psum`` (``core.sharded.weighted_divergence``).
    """
    sch = Schedule.from_log_snr(rho, cfg.process)
    if cfg.mesh is not None:
        return sharded.weighted_divergence(
            data.spectrum, sch, cfg.sampler, cfg.metric, cfg.floor, data.weights, cfg.mesh
        )
    mom = _moments(data.spectrum, sch, cfg.sampler, False)
    return jnp.sum(divergence_terms(data.spectrum, mom, cfg.metric, cfg.floor) * data.weights)


def _unit_scale(loss0, dtype):
    """1 / (the objective at the start), or 1 where that is 0 or not finite.

    The optimiser minimises the objective times this: the same problem at unit scale.
    optax L-BFGS's first step is −g·min(1, 1/|g|), which for a problem whose loss is 1e-6
    (a lone small eigenvalue) is too short to register in float32 otherwise.
    """
    loss0 = np.asarray(loss0, np.float64)
    ok = np.isfinite(loss0) & (loss0 > np.finfo(dtype).tiny)
    return np.where(ok, 1 / np.where(ok, loss0, 1), 1).astype(dtype)


def _loss(theta, data: _Data, cfg: _Config):
    """The objective in the optimiser's unconstrained parameters."""
    return _loss_of_rho_jit(theta_to_log_snr(theta, data.ends, cfg.steps, cfg.mode), data, cfg)


# The objective as its own compiled function: every program here calls it (inlined by XLA,
# so the numbers are those of ``_loss_rho``), and a program that evaluates it many times (the
# line search, the heuristics, the finish) traces it once per shape, not once per use.
_loss_of_rho_jit = jax.jit(_loss_rho, static_argnames="cfg")


def _on_devices(data: _Data, cfg: _Config):
    """(data, cfg) for the selected devices: with more than one, the spectrum and weights
    placed on the mesh (``core.sharded.place``) and the mesh in the static ``cfg``, so a
    different selection compiles anew; with one, both unchanged (the unsharded program)."""
    mesh = sharded.active_mesh()
    if mesh is None:
        return data, cfg
    data = _Data(
        sharded.place(data.spectrum, mesh),
        sharded.replicate(data.ends, mesh),
        sharded.place(data.weights, mesh),
    )
    return data, dataclasses.replace(cfg, mesh=mesh)


def _placed(impl, static=("cfg",)):
    """``impl`` compiled (``static`` by name) and called on the selected devices: its
    ``data`` placed by ``_on_devices`` (spectrum sharded, the mesh in ``cfg``), every other
    traced argument replicated; with one device, the unsharded program unchanged. The
    returned function takes ``impl``'s arguments, positional or by name."""
    compiled = jax.jit(impl, static_argnames=static)
    signature = inspect.signature(impl)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        data, cfg = _on_devices(bound.pop("data"), bound.pop("cfg"))
        fixed = {k: bound.pop(k) for k in static if k in bound}
        return compiled(data=data, cfg=cfg, **fixed, **sharded.replicate(bound, cfg.mesh))

    call.__doc__ = f"``{impl.__name__}`` on the selected devices (``_placed``)."
    return call


def _loss_of_rho(rho, data, cfg):
    """The compiled objective of a host log-SNR grid (the judge of "never worse")."""
    data, cfg = _on_devices(data, cfg)
    rho = sharded.replicate(jnp.asarray(rho, data.ends.dtype), cfg.mesh)
    return _loss_of_rho_jit(rho, data, cfg)


# --------------------------------------------------------------------------- optimiser


def scale_by_parallel_linesearch(
    direction_scales=(4.0, 2.0, 1.0, 0.5, 0.25, 1 / 16, 1 / 128),
    steepest_scales=(4.0, 1 / 4, 1 / 64),
):
    """Line search that tries many step sizes at once and keeps the best.

    Candidates: the proposed direction d times each of ``direction_scales``, and the
    steepest-descent direction −g·|d|/|g| times each of ``steepest_scales``; all are
    evaluated in one vmapped batch and the lowest value wins (no step if none decreases
    the objective). Unlike a sequential (zoom) line search it costs the same for every
    problem, which is what a vmapped batch of independent problems needs: a batched
    ``while_loop`` runs as long as its slowest member. The gradient candidates rescue
    iterations where the quasi-Newton direction is poor.
    """
    d_scales = np.asarray(direction_scales, np.float64)
    g_scales = np.asarray(steepest_scales, np.float64)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params, *, value, grad, value_fn, **extra):
        del extra
        dt = value.dtype
        gscale = optax.tree.norm(updates) / jnp.maximum(optax.tree.norm(grad), 1e-30)
        flat = jnp.concatenate(
            [  # θ is a single array: candidates (len(d_scales) + len(g_scales), P)
                jnp.asarray(d_scales, dt)[:, None] * updates[None],
                (-gscale * jnp.asarray(g_scales, dt))[:, None] * grad[None],
            ]
        )
        vals = jax.vmap(lambda u: value_fn(optax.apply_updates(params, u)))(flat)
        vals = jnp.where(jnp.isnan(vals), jnp.inf, vals)
        j = jnp.argmin(vals)
        step = jnp.where(vals[j] < value, flat[j], jnp.zeros_like(flat[j]))
        return step, state

    return optax.GradientTransformationExtraArgs(init, update)


# The line search of the per-eigenvalue pool ("lbfgs_parallel"): 5 candidates, not the
# default 10. Each candidate costs one objective evaluation, most of an iteration's time;
# on the 3072-eigenvalue benchmark (S = 100, float32) these 5 took ~0.6x the time of the
# 10 at the same total W2² (within float32 round-off). The steepest candidate is short:
# after a memory reset the direction is the steepest one, and with (…, 1/16) | (1/4) a
# float32 problem whose step had to be shorter than 1/16 stopped early (18% above the
# float64 optimum in tests/design/test_design.py).
POOL_DIRECTION_SCALES = (4.0, 1.0, 0.25, 1 / 16)
POOL_STEEPEST_SCALES = (1 / 64,)


def _optimizer(cfg: _Config):
    if cfg.optimizer == "lbfgs":
        return optax.lbfgs()
    if cfg.optimizer == "lbfgs_parallel":
        search = scale_by_parallel_linesearch(POOL_DIRECTION_SCALES, POOL_STEEPEST_SCALES)
        return optax.lbfgs(linesearch=search)
    return optax.adam(cfg.learning_rate)


# --------------------------------------------------------------------------- compiled loop


def _init_state(theta0, max_iter: int, cfg: _Config) -> _State:
    inf = jnp.asarray(jnp.inf, theta0.dtype)
    state = _State(
        theta=theta0,
        opt_state=_optimizer(cfg).init(theta0),
        it=jnp.zeros((), jnp.int32),
        value=inf,
        best_theta=theta0,
        best_value=inf,
        stall=jnp.zeros((), jnp.int32),
        done=jnp.asarray(theta0.size == 0),
        history=jnp.full((max_iter,), jnp.nan, theta0.dtype),
    )
    # Strong dtypes everywhere, as the loop returns them: no second compilation.
    return jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype), state)


def _propose(s: _State, opt, fun, cfg: _Config):
    """(value, grad, updates, opt_state) of one optimiser iteration at ``s.theta``."""
    if cfg.optimizer == "lbfgs":
        value, grad = optax.value_and_grad_from_state(fun)(s.theta, state=s.opt_state)
        updates, opt_state = opt.update(
            grad, s.opt_state, s.theta, value=value, grad=grad, value_fn=fun
        )
    elif cfg.optimizer == "lbfgs_parallel":
        value, grad = jax.value_and_grad(fun)(s.theta)
        updates, opt_state = opt.update(
            grad, s.opt_state, s.theta, value=value, grad=grad, value_fn=fun
        )
        # No candidate decreased the loss: the curvature memory is misleading (in
        # float32 a stale pair can make every L-BFGS candidate fail). Forget it, so the
        # next iteration starts again from a scaled steepest-descent step.
        stuck = jnp.all(updates == 0)
        opt_state = jax.tree.map(
            lambda fresh, old: jnp.where(stuck, fresh, old), opt.init(s.theta), opt_state
        )
    else:
        value, grad = jax.value_and_grad(fun)(s.theta)
        updates, opt_state = opt.update(grad, s.opt_state, s.theta)
    return value, grad, updates, opt_state


def _stopping(s: _State, value, grad, cfg: _Config):
    """(stall count, done) after an iteration that evaluated ``value`` and ``grad``.

    Converged: no relative progress for ``patience`` iterations, or the loss is already
    negligible against where it started (some problems reach exactly 0, e.g. one eigenvalue
    whose variance can be matched: their relative decrease never stalls).
    """
    rel = (s.value - value) / jnp.maximum(jnp.abs(value), jnp.finfo(value.dtype).tiny)
    stall = jnp.where(rel < cfg.tol, s.stall + 1, 0)
    gnorm = optax.tree.norm(grad)
    start = jnp.where(s.it == 0, value, s.history[0])
    negligible = value <= (cfg.tol * cfg.tol) * start
    done = (stall >= cfg.patience) | negligible | ~jnp.isfinite(value) | (gnorm == 0)
    return stall, done


def _segment_impl(state: _State, data: _Data, stop_at, cfg: _Config) -> _State:
    """Iterate until converged or iteration ``min(stop_at, max_iter)``, keeping the best."""
    opt = _optimizer(cfg)
    fun = lambda th: _loss(th, data, cfg)  # noqa: E731
    max_iter = state.history.shape[0]

    def cond(s):
        return (~s.done) & (s.it < jnp.minimum(stop_at, max_iter))

    def body(s):
        value, grad, updates, opt_state = _propose(s, opt, fun, cfg)
        better = value < s.best_value
        stall, done = _stopping(s, value, grad, cfg)
        return _State(
            theta=optax.apply_updates(s.theta, updates),
            opt_state=opt_state,
            it=s.it + 1,
            value=value,
            best_theta=jnp.where(better, s.theta, s.best_theta),
            best_value=jnp.where(better, value, s.best_value),
            stall=stall,
            done=done,
            history=s.history.at[s.it].set(value),
        )

    return jax.lax.while_loop(cond, body, state)


_segment = _placed(_segment_impl)


# --------------------------------------------------------------------------- start and finish


def _start_impl(grids, pick, data: _Data, cfg: _Config, max_iter: int):
    """Every candidate's loss, the start and the optimiser's initial state, in one program.

    Args:
      grids: (H, S) candidate log-SNR grids (the heuristics, then the start asked for if it
        is none of them).
      pick: the row to start from, or −1 for the lowest loss (NaN counts as +∞).

    Returns:
      (losses (H,), row, θ0, loss at θ0, scale, initial state, data at unit scale), where
      scale = 1/loss(θ0) (1 where that is 0 or not finite, as ``_unit_scale``).
    """
    losses = jax.vmap(lambda r: _loss_of_rho_jit(r, data, cfg))(grids)
    best = jnp.argmin(jnp.where(jnp.isnan(losses), jnp.inf, losses))
    row = jnp.where(pick < 0, best, pick)
    theta0 = log_snr_to_theta(grids[row], data.ends, cfg.mode)
    loss0 = _loss(theta0, data, cfg)
    ok = jnp.isfinite(loss0) & (loss0 > jnp.finfo(loss0.dtype).tiny)
    scale = jnp.where(ok, 1 / jnp.where(ok, loss0, 1), 1)
    state = _init_state(theta0, max_iter, cfg)
    return losses, row, theta0, loss0, scale, state, data._replace(weights=data.weights * scale)


_start = _placed(_start_impl, ("cfg", "max_iter"))


def _finish_impl(state: _State, theta0, data: _Data, cfg: _Config, l_init=None):
    """(schedule, loss): the best point seen, or the start if nothing improved on it.

    Both are judged by the same compiled loss, so "never worse than the start" holds
    exactly, also in float32 (``l_init``: the start's loss, if this program has it).
    """
    rho_best = theta_to_log_snr(state.best_theta, data.ends, cfg.steps, cfg.mode)
    rho_init = theta_to_log_snr(theta0, data.ends, cfg.steps, cfg.mode)
    l_best = _loss_of_rho_jit(rho_best, data, cfg)
    if l_init is None:
        l_init = _loss_of_rho_jit(rho_init, data, cfg)
    keep = l_best <= l_init
    rho = jnp.where(keep, rho_best, rho_init)
    return Schedule.from_log_snr(rho, cfg.process), jnp.where(keep, l_best, l_init)


_finish = _placed(_finish_impl)


def _start_and_run_impl(grids, pick, data: _Data, cfg: _Config, max_iter: int, stop_at):
    """``_start``, the loop to iteration ``stop_at`` and ``_finish``, as one program.

    Returns (``_start``'s outputs, the state, ``_finish``'s outcome for that state).
    """
    start = _start_impl(grids, pick, data, cfg, max_iter)
    state = _segment_impl(start[5], start[6], stop_at, cfg)
    return start, state, _finish_impl(state, start[2], data, cfg, start[3])


_start_and_run = _placed(_start_and_run_impl, ("cfg", "max_iter"))
