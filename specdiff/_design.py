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

from specdiff import schedules as _heur
from specdiff._checks import check_choice, cumsum, is_concrete
from specdiff._divergence import METRICS, divergence_terms
from specdiff._engine import _check_schedule_sampler, _moments, output_moments
from specdiff._schedule import PROCESSES, Schedule, _log_snr_from_levels
from specdiff._spectrum import Spectrum

MIN_INCREMENT = 1e-4
OPTIMIZERS = ("lbfgs", "adam")
SEGMENT_ITERS = 25


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


def _loss(theta, data: _Data, cfg: _Config):
    """The objective in the optimiser's unconstrained parameters."""
    return _loss_rho(theta_to_log_snr(theta, data.ends, cfg.steps, cfg.mode), data, cfg)


def scale_by_parallel_linesearch(num_steps: int = 10, num_steepest: int = 6):
    """Line search that tries many step sizes at once and keeps the best.

    Candidates: the proposed direction d scaled by 4, 2, 1, ½, …, 2^{3−num_steps}, and the
    steepest-descent direction −g·|d|/|g| scaled by 4, 1, ¼, …, 4^{2−num_steepest}; all are
    evaluated in one vmapped batch and the lowest value wins (no step if none decreases
    the objective). Unlike a sequential (zoom) line search it costs the same for every
    problem, which is what a vmapped batch of independent problems needs: a batched
    ``while_loop`` runs as long as its slowest member. The gradient candidates rescue
    iterations where the quasi-Newton direction is poor.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params, *, value, grad, value_fn, **extra):
        del extra
        k = jnp.arange(num_steps, dtype=value.dtype)
        gscale = optax.tree.norm(updates) / jnp.maximum(optax.tree.norm(grad), 1e-30)
        flat = jnp.concatenate(
            [  # θ is a single array: candidates (2·num_steps, P)
                (2.0 ** (2 - k))[:, None] * updates[None],
                (-gscale * 4.0 ** (1 - k))[:, None] * grad[None],
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


def _segment_batch_impl(state, data, stop_at, cfg):
    return jax.vmap(lambda s, d: _segment_impl(s, d, stop_at, cfg))(state, data)


_segment_batch = jax.jit(_segment_batch_impl, static_argnames="cfg")


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
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
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
            bar = tqdm(total=stop_total, desc=total_label, leave=False)
        if bar is not None:
            bar.n = int(np.max(np.asarray(state.it)))
            bar.refresh()
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
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
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
        from specdiff._checkpoint import RunCheckpoint

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

    state = _run_loop(
        lambda s, stop: _segment(s, data, stop, cfg),
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
    hist = np.asarray(state.history)[:iters]
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
    progress: bool | None = None,
) -> PerEigenvalueResult:
    """One designed schedule per eigenvalue (each problem has that eigenvalue alone).

    All problems of a chunk run in one compiled, vmapped optimisation loop; chunks of
    ``chunk_size`` eigenvalues (default: about 4·10⁶ / S, so 3072 × S = 1000 takes one
    chunk of a few hundred MB) run one after another. With ``checkpoint_dir``, finished
    chunks and the running chunk's optimiser state are saved with orbax after every
    segment, and a rerun with the same arguments resumes.

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
    lam = np.asarray(spec_all.eigenvalues)
    dt = _dtype(dtype, lam.dtype)
    tol = float(tol if tol is not None else (1e-6 if dt == np.float32 else 1e-10))
    if metric != "w2" and floor is None and (lam == 0).any():
        raise ValueError(
            f"metric {metric!r} is infinite for a zero eigenvalue; pass floor=... or use 'w2'"
        )
    lam = lam.astype(dt)
    mu = np.asarray(spec_all.mean, dt)
    n = lam.size
    chunk = int(chunk_size) if chunk_size is not None else max(1, 4_000_000 // steps)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    chunk = min(chunk, n)
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
    spec_dt = Spectrum(lam, mu)
    terms = np.stack(
        [  # (H, n)
            np.asarray(
                divergence_terms(
                    spec_dt,
                    output_moments(
                        spec_dt, Schedule.from_log_snr(jnp.asarray(cands[nm], dt), process), sampler
                    ),
                    metric,
                    floor,
                )
            )
            for nm in names
        ]
    )
    best = np.argmin(terms, axis=0)
    rho_init = np.stack([cands[names[b]] for b in best])  # (n, S)
    ends_j = jnp.asarray(ends, dt)
    theta_init = np.asarray(
        jax.vmap(lambda r: log_snr_to_theta(r, ends_j, mode))(jnp.asarray(rho_init, dt))
    )

    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    lam_p = np.concatenate([lam, np.repeat(lam[-1:], pad)])
    mu_p = np.concatenate([mu, np.repeat(mu[-1:], pad)])
    th_p = np.concatenate([theta_init, np.repeat(theta_init[-1:], pad, 0)])

    def chunk_data(c):
        sl = slice(c * chunk, (c + 1) * chunk)
        return _Data(
            _batched_spectrum(jnp.asarray(lam_p[sl]), jnp.asarray(mu_p[sl])),
            jnp.broadcast_to(ends_j, (chunk, 2)),
            jnp.ones((chunk, 1), dt),
        )

    init_batch = jax.vmap(lambda t: _init_state(t, int(max_iter), cfg))
    out = {
        "log_snr": np.zeros((n_chunks * chunk, steps), dt),
        "iters": np.zeros(n_chunks * chunk, np.int32),
        "conv": np.zeros(n_chunks * chunk, bool),
        "next_chunk": np.zeros((), np.int32),
    }
    state = init_batch(jnp.asarray(th_p[:chunk]))
    store = None
    if checkpoint_dir is not None:
        from specdiff._checkpoint import RunCheckpoint

        run_args = _run_args("design_per_eigenvalue", cfg, ends, max_iter, dt, floor) | {
            "chunk": chunk,
            "eigenvalues": _digest(lam, mu),
        }
        store = RunCheckpoint(checkpoint_dir, run_args)
        restored = store.restore({"out": out, "state": state})
        if restored is not None:
            out = {k: np.asarray(v) for k, v in restored["out"].items()}
            state = restored["state"]
    save_count = [0 if store is None else (store.latest_step() or 0)]

    def save(st):
        save_count[0] += 1
        store.save(save_count[0], {"out": out, "state": st})

    from tqdm.auto import tqdm

    bar = tqdm(
        total=n,
        desc=f"per-eigenvalue S={steps}",
        leave=False,
        disable=progress is False or (progress is None and n_chunks == 1),
    )
    for c in range(int(out["next_chunk"]), n_chunks):
        data = chunk_data(c)
        if c != int(out["next_chunk"]) or state is None:
            state = init_batch(jnp.asarray(th_p[c * chunk : (c + 1) * chunk]))
        state = _run_loop(
            lambda s, stop, data=data: _segment_batch(s, data, stop, cfg),
            state,
            int(max_iter),
            False,
            save if store is not None else None,
            "",
        )
        # Keep the best point; fall back to the start where nothing improved on it
        # (both judged by the same compiled loss, so the comparison is exact).
        theta0 = jnp.asarray(th_p[c * chunk : (c + 1) * chunk])
        rho_best = jax.vmap(lambda t: theta_to_log_snr(t, ends_j, steps, mode))(state.best_theta)
        rho_0 = jax.vmap(lambda t: theta_to_log_snr(t, ends_j, steps, mode))(theta0)
        use = np.asarray(
            _loss_of_rho_batch(rho_best, data, cfg) < _loss_of_rho_batch(rho_0, data, cfg)
        )
        sl = slice(c * chunk, (c + 1) * chunk)
        out["log_snr"][sl] = np.where(use[:, None], np.asarray(rho_best), np.asarray(rho_0))
        out["iters"][sl] = np.asarray(state.it)
        out["conv"][sl] = np.asarray(state.done)
        out["next_chunk"] = np.asarray(c + 1, np.int32)
        state = (
            None
            if c + 1 == n_chunks
            else init_batch(jnp.asarray(th_p[(c + 1) * chunk : (c + 2) * chunk]))
        )
        if store is not None and state is not None:
            save(state)
        bar.update(min(chunk, n - c * chunk))
    bar.close()
    if store is not None:
        store.close()

    rho = out["log_snr"][:n]
    data_all = _Data(
        _batched_spectrum(jnp.asarray(lam), jnp.asarray(mu)),
        jnp.broadcast_to(ends_j, (n, 2)),
        jnp.ones((n, 1), dt),
    )
    loss = np.asarray(_loss_of_rho_batch(jnp.asarray(rho), data_all, cfg))
    rho_h = jax.vmap(lambda t: theta_to_log_snr(t, ends_j, steps, mode))(jnp.asarray(theta_init))
    loss_h = np.asarray(_loss_of_rho_batch(rho_h, data_all, cfg))
    return PerEigenvalueResult(
        eigenvalues=lam,
        means=mu,
        log_snr=rho,
        loss=_to_metric_units(loss, metric),
        heuristic_loss=_to_metric_units(loss_h, metric),
        heuristic_name=np.asarray([names[b] for b in best]),
        iterations=out["iters"][:n],
        converged=out["conv"][:n],
        process=process,
        metric=metric,
        sampler=sampler,
    )
