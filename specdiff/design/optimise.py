"""Schedule design: the levels that minimise an exact divergence (SPEC §6).

Parameterisation (monotone by construction, well conditioned in float32): the levels are
log-SNRs ρ_0 < … < ρ_{S−1} built from unconstrained θ as

    free:         ρ_0 = θ_0,  ρ_k = ρ_0 + Σ_{1≤j≤k} (softplus(θ_j) + δ)
    first fixed:  ρ_0 = ρ_first, then increments as above
    last fixed:   ρ_{S−1} = ρ_last, increments counted backwards
    both fixed:   ρ_k = ρ_first + (ρ_last − ρ_first)·Σ_{j≤k} w_j,  w = (1 − nε)·softmax(θ) + ε

with δ = 1e-4 (ε = δ/(ρ_last − ρ_first)) a floor on each increment so that levels stay
distinct after rounding to float32. ᾱ = sigmoid(ρ) is never formed inside the loop: the
engine works in log-SNR throughout, so ᾱ → 0 and ᾱ → 1 are as well conditioned as ᾱ = ½.

The optimiser (optax L-BFGS with zoom line search, or Adam) runs in a compiled
``lax.while_loop``; the host sees it only at segment boundaries, where a tqdm bar is
updated and, for long runs, an orbax checkpoint is written. The best point evaluated is
returned, and the start is the best heuristic, so the result is never worse than it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdiff.core.checks import check_choice, check_int, cumsum, is_concrete
from specdiff.core.divergence import METRICS, divergence_terms
from specdiff.core.engine import _check_schedule_sampler, _moments
from specdiff.core.schedule import PROCESSES, Schedule, _log_snr_from_levels
from specdiff.core.spectrum import Spectrum
from specdiff.design import heuristics as _heur

MIN_INCREMENT = 1e-4
OPTIMIZERS = ("lbfgs", "adam")
SEGMENT_ITERS = 25
POOL_SEGMENT_ITERS = 10


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


def _n_params(steps: int, mode: str) -> int:
    return steps if mode == "free" else steps - 1


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
    start = theta[:1] if mode == "free" else ends[:1]
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
    return jnp.concatenate([rho[:1], inc]) if mode == "free" else inc


def _loss_rho(rho, data: _Data, cfg: _Config):
    """The objective of a log-SNR grid: W2² for "w2" (smooth at its minimum), else the KL."""
    sch = Schedule.from_log_snr(rho, cfg.process)
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
    return _loss_rho(theta_to_log_snr(theta, data.ends, cfg.steps, cfg.mode), data, cfg)


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


def _optimizer(cfg: _Config):
    if cfg.optimizer == "lbfgs":
        return optax.lbfgs()
    if cfg.optimizer == "lbfgs_parallel":
        return optax.lbfgs(linesearch=scale_by_parallel_linesearch())
    return optax.adam(cfg.learning_rate)


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


def _segment_impl(state: _State, data: _Data, stop_at, cfg: _Config) -> _State:
    opt = _optimizer(cfg)
    fun = lambda th: _loss(th, data, cfg)  # noqa: E731
    max_iter = state.history.shape[0]

    def cond(s):
        return (~s.done) & (s.it < jnp.minimum(stop_at, max_iter))

    def body(s):
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
        better = value < s.best_value
        rel = (s.value - value) / jnp.maximum(jnp.abs(value), jnp.finfo(value.dtype).tiny)
        stall = jnp.where(rel < cfg.tol, s.stall + 1, 0)
        gnorm = optax.tree.norm(grad)
        # Converged: no relative progress for `patience` iterations, or the loss is already
        # negligible against where it started (some problems reach exactly 0, e.g. one
        # eigenvalue whose variance can be matched: their relative decrease never stalls).
        start = jnp.where(s.it == 0, value, s.history[0])
        negligible = value <= (cfg.tol * cfg.tol) * start
        done = (stall >= cfg.patience) | negligible | ~jnp.isfinite(value) | (gnorm == 0)
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


_segment = jax.jit(_segment_impl, static_argnames="cfg")


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


@dataclasses.dataclass(frozen=True)
class DesignResult:
    """The outcome of ``design_schedule``.

    Attributes:
      schedule: the designed ``Schedule``.
      loss: its divergence (metric units: W2, not squared, for ``"w2"``).
      metric, sampler, process: what it was designed for.
      history: (iterations,) objective per iteration, in metric units.
      heuristics: loss of every heuristic compared (mapped to the endpoints if fixed).
      init: name of the starting point; init_loss its loss.
      converged: the stopping criterion was met before ``max_iter``.
      iterations: optimiser iterations run.
    """

    schedule: Schedule
    loss: float
    metric: str
    sampler: object
    process: str
    history: np.ndarray
    heuristics: dict
    init: str
    init_loss: float
    converged: bool
    iterations: int

    @property
    def best_heuristic(self) -> tuple[str, float]:
        name = min(self.heuristics, key=self.heuristics.get)
        return name, self.heuristics[name]


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


def _validate_common(steps, sampler, process, metric, optimizer):
    check_int("steps", steps)
    check_choice("process", process, PROCESSES)
    check_choice("metric", metric, METRICS)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_schedule_sampler(Schedule([0.5], "vp"), sampler)


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


def _heuristic_candidates(steps, process, mode, ends):
    out = {}
    for name, sch in _heur.heuristics(steps, process).items():
        out[name] = _map_to_ends(np.asarray(sch.log_snr, np.float64), mode, ends)
    return out


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


def _run_loop(step_fn, state, stop_total, progress, checkpoint, total_label):
    """Drive a compiled loop segment by segment: progress bar and checkpoints between."""
    from tqdm.auto import tqdm

    bar = None
    t0 = time.perf_counter()
    while True:
        it = int(np.max(np.asarray(state.it)))
        done = bool(np.all(np.asarray(state.done) | (np.asarray(state.it) >= stop_total)))
        if done:
            break
        state = step_fn(state, it + SEGMENT_ITERS)
        if checkpoint is not None:
            checkpoint(state)
        if progress is not False and bar is None and (progress or time.perf_counter() - t0 > 1.0):
            # Iterations run before the bar existed count as its start, not in its rate.
            now = int(np.max(np.asarray(state.it)))
            bar = tqdm(total=stop_total, initial=now, desc=total_label, leave=False)
        if bar is not None:
            bar.update(int(np.max(np.asarray(state.it))) - bar.n)
    if bar is not None:
        bar.close()
    return state


def design_schedule(
    spectrum: Spectrum,
    steps: int,
    sampler,
    process: str = "vp",
    metric: str = "w2",
    endpoints=None,
    init="best",
    *,
    optimizer: str = "lbfgs",
    learning_rate: float = 1e-2,
    max_iter: int = 1000,
    tol: float | None = None,
    patience: int = 5,
    weights=None,
    floor: float | None = None,
    dtype=None,
    key: jax.Array | None = None,
    checkpoint_dir=None,
    progress: bool | None = None,
) -> DesignResult:
    """The S-level schedule minimising the exact divergence for a spectrum and sampler.

    Args:
      spectrum: the data ``Spectrum``.
      steps: S, the number of sampler steps (denoiser calls).
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.
      process: ``"vp"`` or ``"ve"``.
      metric: ``"w2"``, ``"kl"`` or ``"reverse_kl"`` (SPEC §5).
      endpoints: None, or ``(first, last)`` fixing the first (noisiest) and/or last level
        in the schedule's own units (ᾱ for VP, σ for VE); either may be None.
      init: ``"best"`` (the best heuristic), a heuristic name, a ``Schedule``, or
        ``"random"`` (needs ``key``).
      optimizer: ``"lbfgs"`` (default) or ``"adam"`` (with ``learning_rate``).
      max_iter: iteration cap; tol: relative decrease per iteration below which the run
        counts as converged after ``patience`` iterations (default 1e-6 float32,
        1e-10 float64).
      weights: optional (d,) per-eigenvalue weights; floor: for the KLs (see ``divergence``).
      dtype: float32 or float64 (default: the spectrum's).
      key: a typed PRNG key, used by ``init="random"``.
      checkpoint_dir: if given, the optimiser state is saved there with orbax between
        segments, and a rerun with the same arguments resumes from it.
      progress: show a tqdm bar (None: only for runs longer than about a second).

    Returns:
      ``DesignResult``; ``result.loss <= min(result.heuristics.values())`` always.

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25, 0.01])
      >>> res = sd.design_schedule(spec, 10, sd.samplers.DDIM())
      >>> res.loss <= res.best_heuristic[1]
      True
    """
    if not isinstance(spectrum, Spectrum) or not is_concrete(spectrum.eigenvalues):
        raise ValueError("spectrum must be a concrete specdiff.Spectrum")
    _validate_common(steps, sampler, process, metric, optimizer)
    steps = int(steps)
    check_int("max_iter", max_iter)
    dt = _dtype(dtype, np.asarray(spectrum.eigenvalues).dtype)
    tol = float(tol if tol is not None else (1e-6 if dt == np.float32 else 1e-10))
    mode, ends = _ends_to_log_snr(endpoints, process, steps)
    if metric != "w2" and floor is None and (np.asarray(spectrum.eigenvalues) == 0).any():
        raise ValueError(
            f"metric {metric!r} is infinite for a zero eigenvalue; pass floor=... or use 'w2'"
        )
    spec = Spectrum(np.asarray(spectrum.eigenvalues, dt), np.asarray(spectrum.mean, dt))
    w = np.ones(spec.dim, dt) if weights is None else np.asarray(weights, dt)
    if w.shape != (spec.dim,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be {spec.dim} finite numbers >= 0")
    cfg = _Config(
        steps,
        process,
        sampler,
        metric,
        mode,
        optimizer,
        float(learning_rate),
        None if floor is None else float(floor),
        tol,
        int(patience),
    )
    data = _Data(spec, jnp.asarray(ends, dt), jnp.asarray(w))

    # Candidates: every heuristic (on the endpoints if fixed); the start is the best.
    cands = _heuristic_candidates(steps, process, mode, ends)
    cand_loss = {n: float(_loss_of_rho(r, data, cfg)) for n, r in cands.items()}
    if isinstance(init, Schedule):
        if init.num_steps != steps:
            raise ValueError(f"init schedule has {init.num_steps} steps, expected {steps}")
        init_name, rho0 = "schedule", _map_to_ends(np.asarray(init.log_snr, np.float64), mode, ends)
    elif init == "best":
        init_name = min(cand_loss, key=cand_loss.get)
        rho0 = cands[init_name]
    elif init == "random":
        if key is None:
            raise ValueError("init='random' needs key=jax.random.key(seed)")
        # A random monotone grid: log-normal increments around the uniform log-SNR one.
        base = cands["log_snr_uniform"]
        k1, k2 = jax.random.split(key)
        spacing = (base[-1] - base[0]) / max(steps - 1, 1)
        inc = spacing * np.exp(0.7 * np.asarray(jax.random.normal(k1, (steps - 1,)), float))
        start = base[0] + 2.0 * float(jax.random.normal(k2, ()))
        rho0 = start + np.concatenate([[0.0], np.cumsum(inc)])
        rho0 = _map_to_ends(rho0, mode, ends)
        init_name = "random"
    elif isinstance(init, str) and init in cands:
        init_name, rho0 = init, cands[init]
    else:
        raise ValueError(
            f"unknown init {init!r}; allowed: 'best', 'random', a Schedule, or one of "
            f"{', '.join(sorted(cands))}"
        )
    theta0 = log_snr_to_theta(jnp.asarray(rho0, dt), data.ends, mode)
    init_loss = float(
        _loss_of_rho(np.asarray(theta_to_log_snr(theta0, data.ends, steps, mode)), data, cfg)
    )
    state = _init_state(theta0, int(max_iter), cfg)

    ckpt = None
    if checkpoint_dir is not None:
        from specdiff.design.checkpoint import RunCheckpoint

        run_args = _run_args("design_schedule", cfg, ends, max_iter, dt, floor) | {
            "init": init_name,
            "rho0": _digest(rho0),
            "learning_rate": float(learning_rate),
            "spectrum": _digest(spec.eigenvalues, spec.mean),
            "weights": _digest(w),
        }
        store = RunCheckpoint(checkpoint_dir, run_args)
        restored = store.restore(state)
        if restored is not None:
            state = restored
        ckpt = lambda s: store.save(int(s.it), s)  # noqa: E731

    scale = float(_unit_scale(init_loss, dt))  # reported values stay in true units
    opt_data = data._replace(weights=data.weights * jnp.asarray(scale, dt))
    state = _run_loop(
        lambda s, stop: _segment(s, opt_data, stop, cfg),
        state,
        int(max_iter),
        progress,
        ckpt,
        f"design S={steps}",
    )
    if ckpt is not None:
        store.close()

    # The best point seen, or the start if nothing improved on it, judged by the same
    # compiled loss as the heuristics (so "never worse" holds exactly, also in float32).
    rho_best = np.asarray(theta_to_log_snr(state.best_theta, data.ends, steps, mode))
    rho_init = np.asarray(theta_to_log_snr(theta0, data.ends, steps, mode))
    l_best = float(_loss_of_rho(rho_best, data, cfg))
    l_init = float(_loss_of_rho(rho_init, data, cfg))
    rho, final = (rho_best, l_best) if l_best <= l_init else (rho_init, l_init)
    schedule = Schedule.from_log_snr(rho, process)
    final = float(_to_metric_units(final, metric))
    iters = int(state.it)
    hist = np.asarray(state.history)[:iters] / scale
    heur = {n: float(_to_metric_units(v, metric)) for n, v in cand_loss.items()}
    return DesignResult(
        schedule=schedule,
        loss=final,
        metric=metric,
        sampler=sampler,
        process=process,
        history=_to_metric_units(hist, metric),
        heuristics=heur,
        init=init_name,
        init_loss=float(_to_metric_units(init_loss, metric)),
        converged=bool(state.done) and bool(np.isfinite(float(state.value))),
        iterations=iters,
    )


_loss_of_rho_jit = jax.jit(_loss_rho, static_argnames="cfg")


def _loss_of_rho(rho, data, cfg):
    return _loss_of_rho_jit(jnp.asarray(rho, data.ends.dtype), data, cfg)


def _loss_of_rho_batch_impl(rho, data, cfg):
    return jax.vmap(lambda r, d: _loss_of_rho_jit(r, d, cfg))(rho, data)


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


@dataclasses.dataclass(frozen=True)
class PerEigenvalueResult:
    """The outcome of ``design_per_eigenvalue``: one schedule per eigenvalue.

    Attributes:
      eigenvalues: (n,) the eigenvalues, each designed for alone.
      log_snr: (n, S) the designed log-SNR grids (noisiest first).
      loss: (n,) each eigenvalue's divergence term at its schedule (metric units).
      heuristic_loss: (n,) the best heuristic's loss for that eigenvalue.
      heuristic_name: (n,) which heuristic that was (also the starting point).
      iterations, converged: (n,) per problem.
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

    @property
    def levels(self) -> np.ndarray:
        """(n, S) levels in the process's units (ᾱ for VP, σ for VE)."""
        r = self.log_snr
        return 1 / (1 + np.exp(-r)) if self.process == "vp" else np.exp(-0.5 * r)

    def schedule(self, i: int) -> Schedule:
        return Schedule.from_log_snr(self.log_snr[i], self.process)


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


class _PoolCheckpoint:
    """Checkpoints of a per-eigenvalue sweep, in two tiers.

    Finished problems are written to ``finished.npz`` (atomically) after every segment in
    which one finished, so nothing finished is ever recomputed. The in-flight optimiser
    states of the pool are saved with orbax every ``every`` seconds; on resume the slots
    are restored from there, those whose problem has meanwhile finished are emptied, and
    problems started after that save start again (every problem's iterates depend only on
    its own start, so the result is the same).
    """

    def __init__(self, directory, run_args, every: float):
        from specdiff.design.checkpoint import RunCheckpoint

        self.store = RunCheckpoint(directory, run_args)
        self.path = self.store.dir / "finished.npz"
        self.every = float(every)
        self.last = time.perf_counter()
        self.saves = self.store.latest_step() or 0

    def restore_finished(self, out):
        if not self.path.exists():
            return out
        from specdiff.core.io import read_npz

        got = read_npz(self.path, "checkpoint", tuple(out))
        for k in out:
            if got[k].shape != out[k].shape:
                raise ValueError(f"checkpoint file {str(self.path)!r} does not match this run")
        return {k: got[k].astype(out[k].dtype) for k in out}

    def save_finished(self, out):
        from specdiff.core.io import atomic_write

        with atomic_write(self.path, "wb") as f:
            np.savez(f, **out)

    def maybe_save_pool(self, pool):
        if time.perf_counter() - self.last >= self.every:
            self.saves += 1
            self.store.save(self.saves, pool)
            self.last = time.perf_counter()

    def close(self):
        self.store.close()


def _solve_pool(theta_init, loss_init, lam, mu, ends, cfg, width, max_iter, ckpt, bar):
    """Solve n independent problems through a pool of ``width`` slots.

    Every segment runs each live slot for ``POOL_SEGMENT_ITERS`` more iterations in one
    compiled, vmapped call; between segments, finished problems leave their slot and the
    next pending ones take it (all shapes fixed: one compilation). Problems are taken in
    order of increasing eigenvalue: small eigenvalues are the ill-conditioned, slow ones,
    and starting them first keeps the pool's tail short.

    Returns (best_theta (n, P), iterations (n,), converged (n,)).
    """
    n, n_par = theta_init.shape
    dt = theta_init.dtype
    out = {
        "theta": np.zeros((n, n_par), dt),
        "iters": np.zeros(n, np.int32),
        "conv": np.zeros(n, bool),
        "finished": np.zeros(n, bool),
    }
    owner = np.full(width, -1, np.int64)
    state = jax.vmap(lambda t: _init_state(t, int(max_iter), cfg))(
        jnp.asarray(theta_init[np.zeros(width, int)])
    )
    if ckpt is not None:
        out = ckpt.restore_finished(out)
        restored = ckpt.store.restore({"owner": owner, "state": state})
        if restored is not None:
            owner = np.asarray(restored["owner"]).astype(np.int64)
            state = restored["state"]
            stale = owner >= 0
            stale[stale] = out["finished"][owner[stale]]
            owner[stale] = -1
    in_pool = np.zeros(n, bool)
    in_pool[owner[owner >= 0]] = True
    order = np.argsort(lam, kind="stable")
    queue = [int(i) for i in order if not out["finished"][i] and not in_pool[i]]
    queue.reverse()  # pop() from the end
    bar.update(int(out["finished"].sum()))
    ends_w = jnp.broadcast_to(jnp.asarray(ends, dt), (width, 2))
    scale = _unit_scale(loss_init, dt)
    while True:
        refill = np.zeros(width, bool)
        for j in np.flatnonzero(owner < 0):
            if not queue:
                break
            owner[j] = queue.pop()
            refill[j] = True
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
            bar.update(int(fin.sum()))
            if ckpt is not None:
                ckpt.save_finished(out)
        if ckpt is not None:
            ckpt.maybe_save_pool({"owner": owner, "state": state})
    return out["theta"], out["iters"], out["conv"]


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
) -> PerEigenvalueResult:
    """One designed schedule per eigenvalue (each problem has that eigenvalue alone).

    The problems run through a pool of ``chunk_size`` slots, each slot one problem's
    optimiser (L-BFGS with a parallel line search), all slots in one compiled, vmapped
    loop. Between short segments a slot whose problem has converged takes the next pending
    problem, so the cost is the sum of the problems' iteration counts rather than n times
    the slowest one's. ``chunk_size`` (the memory bound) defaults to 128 on CPU and about
    4·10⁶ / S on accelerators (3072 × S = 1000 then fits in a few hundred MB). Each
    problem's iterates depend only on that problem, not on the pool.

    With ``checkpoint_dir``, every finished problem is saved as soon as its segment ends,
    and the in-flight optimiser states every ``checkpoint_every`` seconds (orbax); a rerun
    with the same arguments resumes, recomputing nothing finished.

    Args: as ``design_schedule``; ``eigenvalues`` (n,) and optional ``mean`` (n,) (the mean
    component m_i of each direction).

    Returns:
      ``PerEigenvalueResult``.

    Example:
      >>> import specdiff as sd
      >>> res = sd.design_per_eigenvalue([4.0, 0.01], 8, sd.samplers.DDIM())
      >>> res.log_snr.shape
      (2, 8)
    """
    spec_all = Spectrum(eigenvalues, mean)
    _validate_common(steps, sampler, process, metric, "lbfgs")
    steps = int(steps)
    check_int("max_iter", max_iter)
    lam = np.asarray(spec_all.eigenvalues)
    dt = _dtype(dtype, lam.dtype)
    tol = float(tol if tol is not None else (1e-6 if dt == np.float32 else 1e-10))
    if metric != "w2" and floor is None and (lam == 0).any():
        raise ValueError(
            f"metric {metric!r} is infinite for a zero eigenvalue; pass floor=... or use 'w2'"
        )
    if not (isinstance(checkpoint_every, (int, float)) and checkpoint_every >= 0):
        raise ValueError(
            f"checkpoint_every must be a number of seconds >= 0, got {checkpoint_every!r}"
        )
    lam = lam.astype(dt)
    mu = np.asarray(spec_all.mean, dt)
    n = lam.size
    if chunk_size is None:
        width = _default_pool_width(n, steps)
    else:
        check_int("chunk_size", chunk_size)
        width = min(int(chunk_size), n)
    mode, ends = _ends_to_log_snr(endpoints, process, steps)
    cfg = _Config(
        steps,
        process,
        sampler,
        metric,
        mode,
        "lbfgs_parallel",
        0.0,
        None if floor is None else float(floor),
        tol,
        int(patience),
    )

    # Per-eigenvalue losses of every heuristic are its divergence terms: pick the best.
    cands = _heuristic_candidates(steps, process, mode, ends)
    names = list(cands)
    rho_cands = jnp.asarray(np.stack([cands[nm] for nm in names]), dt)  # (H, S)
    terms = np.asarray(_terms_batch(rho_cands, Spectrum(lam, mu).anonymous(), cfg))  # (H, n)
    best = np.argmin(terms, axis=0)
    ends_j = jnp.asarray(ends, dt)
    theta_init = np.asarray(_theta_batch(rho_cands[best], ends_j, mode))

    ckpt = None
    if checkpoint_dir is not None:
        run_args = _run_args("design_per_eigenvalue", cfg, ends, max_iter, dt, floor) | {
            "chunk": width,
            "eigenvalues": _digest(lam, mu),
        }
        ckpt = _PoolCheckpoint(checkpoint_dir, run_args, checkpoint_every)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=n,
        desc=f"per-eigenvalue S={steps}",
        leave=False,
        disable=progress is False or (progress is None and n <= width),
    )
    try:
        theta, iters, conv = _solve_pool(
            theta_init, terms[best, np.arange(n)], lam, mu, ends, cfg, width, max_iter, ckpt, bar
        )
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    # Keep the best point; fall back to the start where nothing improved on it (both
    # judged by the same compiled loss, so "never worse than the heuristic" holds exactly).
    data_all = _Data(
        _batched_spectrum(jnp.asarray(lam), jnp.asarray(mu)),
        jnp.broadcast_to(ends_j, (n, 2)),
        jnp.ones((n, 1), dt),
    )
    rho_best = _rho_batch(jnp.asarray(theta), ends_j, steps, mode)
    rho_h = _rho_batch(jnp.asarray(theta_init), ends_j, steps, mode)
    loss_best = np.asarray(_loss_of_rho_batch(rho_best, data_all, cfg))
    loss_h = np.asarray(_loss_of_rho_batch(rho_h, data_all, cfg))
    use = loss_best < loss_h
    rho = np.where(use[:, None], np.asarray(rho_best), np.asarray(rho_h))
    loss = np.where(use, loss_best, loss_h)
    return PerEigenvalueResult(
        eigenvalues=lam,
        means=mu,
        log_snr=rho,
        loss=_to_metric_units(loss, metric),
        heuristic_loss=_to_metric_units(loss_h, metric),
        heuristic_name=np.asarray([names[b] for b in best]),
        iterations=iters,
        converged=conv,
        process=process,
        metric=metric,
        sampler=sampler,
    )
